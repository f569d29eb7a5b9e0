//! Events on the VirtualIP when this node becomes MASTER or enters FAULT.
//!
//! Published with kube's `events::Recorder` (events.k8s.io/v1, deduplicated into series), with
//! the node as the reporting instance so `kubectl describe vip` shows who said what.

use crds::vrrpnode::{ObjectRef, VrrpState};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::daemon::TransitionSink;

/// The event to publish for a transition into `to`, if any (pure).
/// Whether entering `to` publishes an Event (what [`transition_event`] returns one for).
pub fn gets_event(to: VrrpState) -> bool {
    matches!(to, VrrpState::Master | VrrpState::Fault)
}

pub fn transition_event(node: &str, to: VrrpState, reason: &str) -> Option<Event> {
    let (type_, event_reason, note) = match to {
        VrrpState::Master => (
            EventType::Normal,
            "BecameMaster",
            format!("node {node} is now MASTER: {reason}"),
        ),
        VrrpState::Fault => (
            EventType::Warning,
            "Fault",
            format!("node {node} entered FAULT: {reason}"),
        ),
        VrrpState::Backup | VrrpState::Init | VrrpState::Unknown => return None,
    };
    Some(Event {
        type_,
        reason: event_reason.into(),
        note: Some(note),
        action: "VRRPTransition".into(),
        secondary: None,
    })
}

/// The object reference of a VirtualIP.
pub fn virtualip_reference(vip: &ObjectRef) -> ObjectReference {
    ObjectReference {
        api_version: Some("kubevrrp.io/v1alpha1".into()),
        kind: Some("VirtualIP".into()),
        namespace: Some(vip.namespace.clone()),
        name: Some(vip.name.clone()),
        ..Default::default()
    }
}

/// Publishes transition events for one node.
#[derive(Clone)]
pub struct TransitionEvents {
    recorder: Recorder,
    client: Client,
    node: String,
}

impl TransitionEvents {
    /// Events reported by `kube-vrrp-agent` on `node`.
    pub fn new(client: Client, node: &str) -> Self {
        let reporter = Reporter {
            controller: super::FIELD_MANAGER.into(),
            instance: Some(node.into()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            node: node.into(),
        }
    }

    /// Publish the event for a transition (nothing for BACKUP/INIT). Failures are logged: an
    /// event is never worth blocking or retrying for.
    pub async fn publish(&self, vip: &ObjectRef, to: VrrpState, reason: &str) {
        let Some(event) = transition_event(&self.node, to, reason) else {
            return;
        };
        let reference = virtualip_reference(vip);
        let published = if crds::events::recorder_can_name(&vip.name) {
            self.recorder.publish(&event, &reference).await
        } else {
            // The Recorder's `{name}.{nanos}` would be over 253 characters.
            let e = crds::events::event(
                &reference,
                matches!(event.type_, EventType::Warning),
                &event.reason,
                event.note.as_deref(),
                &event.action,
                super::FIELD_MANAGER,
                &self.node,
                k8s_openapi::jiff::Timestamp::now(),
            );
            kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(
                self.client.clone(),
                &vip.namespace,
            )
            .create(&kube::api::PostParams::default(), &e)
            .await
            .map(|_| ())
        };
        if let Err(e) = published {
            tracing::debug!(error = %e, vip = %format!("{}/{}", vip.namespace, vip.name), "cannot publish event");
        }
    }
}

/// Transitions waiting for their Event, at most.
pub const EVENT_QUEUE: usize = 1024;

/// The [`TransitionSink`] for `run`: transitions queue up and one task publishes their Events
/// in order, one request at a time. (A task per transition, as before, made a takeover of 255
/// instances 255 requests at once, and the HTTP/1.1 client opened a TLS connection to the API
/// server for each: ~190 connections alive at once in the agent, found with heaptrack.) A
/// full queue drops the transition's Event, which is never worth waiting for.
pub struct EventQueue {
    tx: tokio::sync::mpsc::Sender<(ObjectRef, VrrpState, String)>,
}

impl EventQueue {
    /// Start the publishing task (on the current runtime).
    pub fn spawn(events: TransitionEvents) -> Self {
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<(ObjectRef, VrrpState, String)>(EVENT_QUEUE);
        tokio::spawn(async move {
            while let Some((vip, to, reason)) = rx.recv().await {
                events.publish(&vip, to, &reason).await;
            }
        });
        Self { tx }
    }
}

impl TransitionSink for EventQueue {
    /// Queues the Event, so the protocol loop never waits for the API.
    fn transition(&self, vip: &ObjectRef, to: VrrpState, reason: &str) {
        if !gets_event(to) {
            return;
        }
        if let Err(e) = self.tx.try_send((vip.clone(), to, reason.to_string())) {
            tracing::debug!(vip = %format!("{}/{}", vip.namespace, vip.name), error = %e, "transition Event dropped: the queue is full");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_and_fault_get_events_backup_does_not() {
        let e = transition_event("node-a", VrrpState::Master, "master down timer expired").unwrap();
        assert_eq!(e.reason, "BecameMaster");
        assert_eq!(
            e.note.as_deref(),
            Some("node node-a is now MASTER: master down timer expired")
        );
        let e = transition_event("node-a", VrrpState::Fault, "interface eth0 down").unwrap();
        assert!(matches!(e.type_, EventType::Warning));
        assert_eq!(e.reason, "Fault");
        assert!(transition_event("node-a", VrrpState::Backup, "x").is_none());
        for to in [
            VrrpState::Init,
            VrrpState::Backup,
            VrrpState::Master,
            VrrpState::Fault,
            VrrpState::Unknown,
        ] {
            assert_eq!(gets_event(to), transition_event("n", to, "r").is_some());
        }
    }
}
