//! The Kubernetes-native tracker `track.pods`: how many pods matching a label selector are
//! Ready on this node.
//!
//! A reflector per tracker watches pods with a field selector on `spec.nodeName`, so only this
//! node's pods are sent; every change recounts and publishes the count (weight and quorum are
//! applied by the VRRP core like a process tracker's count).

use std::sync::Arc;

use crds::vrrpnode::ResolvedTrackPods;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;

use crate::daemon::PodsReady;

/// True when the pod is Ready and not being deleted.
pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Count the Ready pods.
pub fn count_ready<'a>(pods: impl IntoIterator<Item = &'a Arc<Pod>>) -> u32 {
    u32::try_from(pods.into_iter().filter(|p| is_ready(p)).count()).unwrap_or(u32::MAX)
}

/// The watcher configuration for a tracker on `node`.
pub fn watcher_config(node: &str, tracker: &ResolvedTrackPods) -> watcher::Config {
    let cfg = super::watch_config().fields(&format!("spec.nodeName={node}"));
    if tracker.selector.is_empty() {
        cfg
    } else {
        cfg.labels(&tracker.selector)
    }
}

/// Watch the tracker's pods on `node` and send the count on every change, until `tx` closes.
pub async fn run(
    client: Client,
    node: String,
    tracker: ResolvedTrackPods,
    tx: mpsc::Sender<PodsReady>,
) {
    let api: Api<Pod> = Api::namespaced(client, &tracker.namespace);
    let (reader, writer) = reflector::store();
    let mut stream = reflector(writer, watcher(api, watcher_config(&node, &tracker)))
        .backoff(super::watch_backoff())
        .boxed();
    let mut last = None;
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            tracing::debug!(tracker = %tracker.name, error = %e, "pod watch error; retrying");
            continue;
        }
        if reader.wait_until_ready().await.is_err() {
            return;
        }
        let ready = count_ready(reader.state().iter());
        if last != Some(ready) {
            last = Some(ready);
            if tx
                .send(PodsReady {
                    tracker: tracker.name.clone(),
                    ready,
                })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    fn pod(ready: bool, deleting: bool) -> Arc<Pod> {
        let mut p = Pod {
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        if deleting {
            p.metadata.deletion_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
            );
        }
        Arc::new(p)
    }

    #[test]
    fn counts_only_ready_pods_not_being_deleted() {
        let pods = [
            pod(true, false),
            pod(false, false),
            pod(true, true),
            pod(true, false),
            Arc::new(Pod::default()),
        ];
        assert_eq!(count_ready(pods.iter()), 2);
    }

    #[test]
    fn watch_is_scoped_to_the_node_and_selector() {
        let t = ResolvedTrackPods {
            name: "web".into(),
            namespace: "prod".into(),
            selector: "app=web".into(),
            weight: 0,
            quorum: 1,
        };
        let c = watcher_config("node-a", &t);
        assert_eq!(c.field_selector.as_deref(), Some("spec.nodeName=node-a"));
        assert_eq!(c.label_selector.as_deref(), Some("app=web"));
    }
}
