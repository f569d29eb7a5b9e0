//! The agent's liveness Lease: `coordination.k8s.io/v1` Lease named after the node, in the
//! release namespace, renewed every [`LeaseSettings::renew_every`] (kubelet's heartbeat
//! pattern, and the agent's only periodic write).
//!
//! The operator judges an agent by when it *sees* this Lease change, never by comparing
//! `renewTime` with its own clock, so node clock skew does not matter. A renewal that fails
//! (API outage) is simply retried on the next tick; the data plane never waits for it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::FIELD_MANAGER;

/// Label the operator selects agent Leases by (`key=value`).
pub const LEASE_LABEL: (&str, &str) = ("app.kubernetes.io/component", "kube-vrrp-agent-lease");

/// How the Lease is kept.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Namespace of the Lease (the release namespace).
    pub namespace: String,
    /// The node name (Lease name and holder identity).
    pub node: String,
    /// Renewal period.
    pub renew_every: Duration,
    /// `leaseDurationSeconds` written into the Lease: the operator treats the agent as quiet
    /// after half of it and lost after all of it.
    pub duration: Duration,
}

/// The Lease object the agent applies at `now` (pure).
pub fn desired_lease(s: &LeaseSettings, now: Timestamp) -> serde_json::Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": s.node,
            "namespace": s.namespace,
            "labels": { LEASE_LABEL.0: LEASE_LABEL.1 },
        },
        "spec": {
            "holderIdentity": s.node,
            "leaseDurationSeconds": s.duration.as_secs().max(1),
            "renewTime": MicroTime(now),
        }
    })
}

/// Renew the Lease forever (until the task is aborted). Failures are logged once per outage.
pub async fn run(client: kube::Client, settings: LeaseSettings) {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut tick = tokio::time::interval(settings.renew_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let lease = desired_lease(&settings, Timestamp::now());
        match api
            .patch(&settings.node, &params, &Patch::Apply(&lease))
            .await
        {
            Ok(_) if failing => {
                tracing::info!(lease = %settings.node, namespace = %settings.namespace, "liveness Lease renewed again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing => {
                tracing::warn!(lease = %settings.node, namespace = %settings.namespace, error = %e, "cannot renew the liveness Lease; retrying every tick");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_names_the_node_and_its_duration() {
        let s = LeaseSettings {
            namespace: "kube-vrrp".into(),
            node: "n1".into(),
            renew_every: Duration::from_secs(2),
            duration: Duration::from_secs(10),
        };
        let l = desired_lease(&s, Timestamp::from_second(1_700_000_000).unwrap());
        assert_eq!(l["metadata"]["name"], "n1");
        assert_eq!(l["metadata"]["namespace"], "kube-vrrp");
        assert_eq!(
            l["metadata"]["labels"]["app.kubernetes.io/component"],
            "kube-vrrp-agent-lease"
        );
        assert_eq!(l["spec"]["holderIdentity"], "n1");
        assert_eq!(l["spec"]["leaseDurationSeconds"], 10);
        let lease: Lease = serde_json::from_value(l).unwrap();
        assert!(lease.spec.unwrap().renew_time.is_some());
    }
}
