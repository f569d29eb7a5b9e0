//! The agent's config source in-cluster: a watch on its own `VRRPNode` only.
//!
//! The watch uses a field selector on the object's name, so the API server sends this node's
//! object and nothing else. Every spec received is cached on disk and published on a
//! `tokio::sync::watch` channel (unchanged specs are not re-published). A deleted or absent
//! object means "run nothing". API errors are logged once per outage, counted, and retried with
//! the watcher's backoff; the last published spec stays in force meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crds::{VRRPNode, VRRPNodeSpec};
use futures::StreamExt;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use super::cache::ConfigCache;

/// Health of the API connection, shared with metrics.
#[derive(Debug, Default)]
pub struct ApiHealth {
    /// Where to export it, if anywhere.
    pub telemetry: Option<crate::metrics::Telemetry>,
    /// False while the API server cannot be reached.
    pub connected: AtomicBool,
    /// Watch errors seen.
    pub errors: AtomicU64,
    /// Outages (transitions from connected to not connected).
    pub outages: AtomicU64,
}

impl ApiHealth {
    fn up(&self) {
        if let Some(t) = &self.telemetry {
            t.metrics().api_up();
        }
        if !self.connected.swap(true, Ordering::Relaxed) && self.errors.load(Ordering::Relaxed) > 0
        {
            tracing::info!("Kubernetes API reachable again");
        }
    }
    fn down(&self, error: &watcher::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let new_outage = self.connected.swap(false, Ordering::Relaxed)
            || self.outages.load(Ordering::Relaxed) == 0;
        if let Some(t) = &self.telemetry {
            t.metrics().api_down(new_outage);
        }
        if new_outage {
            self.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %error, "Kubernetes API unreachable; VRRP keeps running on the last config");
        } else {
            tracing::debug!(error = %error, "Kubernetes API still unreachable");
        }
    }
}

/// The watcher configuration for node `node`: its own object only.
pub fn watcher_config(node: &str) -> watcher::Config {
    super::watch_config().fields(&format!("metadata.name={node}"))
}

/// What the watch stream means for the desired spec (pure).
#[derive(Debug, Default)]
pub struct SpecTracker {
    listing: Option<Option<VRRPNodeSpec>>,
}

impl SpecTracker {
    /// Feed one watcher event; returns the new desired spec when the event decides one.
    pub fn on_event(
        &mut self,
        node: &str,
        event: watcher::Event<VRRPNode>,
    ) -> Option<VRRPNodeSpec> {
        let ours = |o: &VRRPNode| o.metadata.name.as_deref() == Some(node);
        match event {
            watcher::Event::Apply(o) if ours(&o) => Some(o.spec),
            watcher::Event::Delete(o) if ours(&o) => Some(VRRPNodeSpec::default()),
            watcher::Event::Init => {
                self.listing = Some(None);
                None
            }
            watcher::Event::InitApply(o) if ours(&o) => {
                self.listing = Some(Some(o.spec));
                None
            }
            watcher::Event::InitDone => self.listing.take().map(Option::unwrap_or_default),
            _ => None,
        }
    }
}

/// Follow `VRRPNode/<node>` and publish its spec on `tx` until `tx` has no receivers.
pub async fn run(
    api: Api<VRRPNode>,
    node: String,
    cache: ConfigCache,
    tx: watch::Sender<VRRPNodeSpec>,
    health: Arc<ApiHealth>,
) {
    let mut tracker = SpecTracker::default();
    let mut stream = watcher(api, watcher_config(&node))
        .backoff(super::watch_backoff())
        .boxed();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                // `Init` is the watcher's own marker before it asks the server anything.
                if !matches!(event, watcher::Event::Init) {
                    health.up();
                }
                if let Some(spec) = tracker.on_event(&node, event) {
                    publish(&cache, &tx, spec);
                }
            }
            Err(e) => health.down(&e),
        }
        if tx.is_closed() {
            return;
        }
    }
}

fn publish(cache: &ConfigCache, tx: &watch::Sender<VRRPNodeSpec>, spec: VRRPNodeSpec) {
    let changed = tx.send_if_modified(|current| {
        if *current == spec {
            false
        } else {
            *current = spec.clone();
            true
        }
    });
    if changed {
        if let Err(e) = cache.store(&spec) {
            tracing::warn!(error = %e, "cannot cache the VRRPNode spec on disk");
        }
        tracing::info!(instances = spec.instances.len(), hash = %spec.config_hash, "new VRRPNode spec");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::ResolvedInstance;

    fn node(name: &str, instances: &[&str]) -> VRRPNode {
        let mut n = VRRPNode::new(
            name,
            VRRPNodeSpec {
                instances: instances
                    .iter()
                    .map(|i| ResolvedInstance {
                        name: (*i).into(),
                        ..Default::default()
                    })
                    .collect(),
                config_hash: String::new(),
            },
        );
        n.metadata.resource_version = Some("1".into());
        n
    }

    #[test]
    fn field_selector_names_the_node() {
        let c = watcher_config("node-a");
        assert_eq!(c.field_selector.as_deref(), Some("metadata.name=node-a"));
    }

    #[test]
    fn list_without_our_object_means_run_nothing() {
        let mut t = SpecTracker::default();
        assert_eq!(t.on_event("a", watcher::Event::Init), None);
        assert_eq!(
            t.on_event("a", watcher::Event::InitDone),
            Some(VRRPNodeSpec::default())
        );
    }

    #[test]
    fn list_then_changes_then_delete() {
        let mut t = SpecTracker::default();
        t.on_event("a", watcher::Event::Init);
        assert_eq!(
            t.on_event("a", watcher::Event::InitApply(node("a", &["x"]))),
            None
        );
        assert_eq!(
            t.on_event("a", watcher::Event::InitDone)
                .unwrap()
                .instances
                .len(),
            1
        );
        assert_eq!(
            t.on_event("a", watcher::Event::Apply(node("a", &["x", "y"])))
                .unwrap()
                .instances
                .len(),
            2
        );
        assert_eq!(
            t.on_event("a", watcher::Event::Apply(node("b", &["z"]))),
            None,
            "other nodes are ignored"
        );
        assert_eq!(
            t.on_event("a", watcher::Event::Delete(node("a", &[]))),
            Some(VRRPNodeSpec::default())
        );
    }

    #[test]
    fn unchanged_specs_are_not_republished_and_changes_are_cached() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ConfigCache::new(dir.path());
        let (tx, mut rx) = watch::channel(VRRPNodeSpec::default());
        rx.borrow_and_update();
        publish(&cache, &tx, VRRPNodeSpec::default());
        assert!(!rx.has_changed().unwrap());
        assert!(cache.load().unwrap().is_none());
        let spec = node("a", &["x"]).spec;
        publish(&cache, &tx, spec.clone());
        assert!(rx.has_changed().unwrap());
        assert_eq!(cache.load().unwrap(), Some(spec));
    }
}
