//! Status reporting: the node's live state into `VRRPNode.status`, coalesced.
//!
//! [`Coalescer`] is the pure policy: write only on change, at most one write per
//! `min_interval`, the latest snapshot wins (a snapshot always carries every instance's last
//! transition, so nothing is lost by skipping intermediate ones), and after a failed write keep
//! the newest snapshot and retry with exponential backoff. [`run`] is the thin loop around it
//! that applies the status with server-side apply as field manager [`super::FIELD_MANAGER`].

use std::time::{Duration, Instant};

use crds::{VRRPNode, VRRPNodeStatus};
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio::sync::watch;

use super::FIELD_MANAGER;

/// Write policy for status snapshots.
#[derive(Debug)]
pub struct Coalescer {
    min_interval: Duration,
    max_backoff: Duration,
    backoff: Duration,
    last_written: Option<VRRPNodeStatus>,
    pending: Option<VRRPNodeStatus>,
    in_flight: Option<VRRPNodeStatus>,
    not_before: Option<Instant>,
    failures: u64,
    /// The last write found no VRRPNode: wait for it instead of retrying every
    /// `max_backoff` (a node no VirtualIP selects has none, possibly for good).
    absent: bool,
}

impl Coalescer {
    /// At most one write per `min_interval`; retries back off up to `max_backoff`.
    pub fn new(min_interval: Duration, max_backoff: Duration) -> Self {
        Self {
            min_interval,
            max_backoff,
            backoff: min_interval,
            last_written: None,
            pending: None,
            in_flight: None,
            not_before: None,
            failures: 0,
            absent: false,
        }
    }

    /// A new snapshot of the live state.
    pub fn offer(&mut self, status: VRRPNodeStatus) {
        let same_as_written =
            self.last_written.as_ref() == Some(&status) && self.in_flight.is_none();
        if same_as_written {
            self.pending = None;
        } else {
            self.pending = Some(status);
        }
    }

    /// The snapshot to write now, if any. The caller must report the outcome with
    /// [`Coalescer::written`] or [`Coalescer::failed`] before polling again.
    pub fn poll_write(&mut self, now: Instant) -> Option<VRRPNodeStatus> {
        if self.in_flight.is_some() || self.not_before.is_some_and(|t| now < t) {
            return None;
        }
        let next = self.pending.take()?;
        if self.last_written.as_ref() == Some(&next) {
            return None;
        }
        self.in_flight = Some(next.clone());
        Some(next)
    }

    /// When [`Coalescer::poll_write`] may next return something (None: nothing pending).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.pending.is_none() || self.in_flight.is_some() {
            return None;
        }
        self.not_before
    }

    /// The in-flight write succeeded at `now`.
    pub fn written(&mut self, now: Instant) {
        self.absent = false;
        self.last_written = self.in_flight.take();
        self.backoff = self.min_interval;
        self.not_before = Some(now + self.min_interval);
        if self.pending.is_some() && self.pending == self.last_written {
            self.pending = None;
        }
    }

    /// The in-flight write failed at `now`: keep the newest snapshot and back off.
    pub fn failed(&mut self, now: Instant) {
        let attempted = self.in_flight.take();
        if self.pending.is_none() {
            self.pending = attempted;
        }
        self.failures += 1;
        self.not_before = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(self.max_backoff);
    }

    /// The in-flight write failed at `now` because the VRRPNode does not exist: keep the
    /// newest snapshot for when it does ([`Coalescer::object_appeared`]), and meanwhile retry
    /// only every [`ABSENT_RETRY`] (in case the appearance is missed).
    pub fn failed_absent(&mut self, now: Instant) {
        self.failed(now);
        self.absent = true;
        self.backoff = self.min_interval;
        self.not_before = Some(now + ABSENT_RETRY);
    }

    /// The VRRPNode exists (again) at `now`: a write waiting for it goes out at once.
    pub fn object_appeared(&mut self, now: Instant) {
        if std::mem::take(&mut self.absent) {
            self.not_before = Some(now);
        }
    }

    /// Whether the last write found no VRRPNode and none has appeared since.
    pub fn waiting_for_object(&self) -> bool {
        self.absent
    }

    /// Failed writes so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// True when the last successful write equals the newest snapshot.
    pub fn is_idle(&self) -> bool {
        self.pending.is_none() && self.in_flight.is_none()
    }
}

/// The server-side-apply body for a status.
pub fn apply_body(status: &VRRPNodeStatus) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "kubevrrp.io/v1alpha1",
        "kind": "VRRPNode",
        "status": status,
    })
}

/// The longest wait between retries of a failed status write. Short, so that the status of a
/// failover during an API outage reaches the API server within seconds of its return (the real
/// API server test measured 8.4 s with a 30 s cap); one small request every 2 s per node during
/// an outage is cheap.
pub const RETRY_AT_MOST: Duration = Duration::from_secs(2);

/// How often a status write is retried while the VRRPNode does not exist (the watch on it
/// normally says when it appears; this only covers a missed appearance).
pub const ABSENT_RETRY: Duration = Duration::from_secs(60);

/// Whether `e` says the object is not there (HTTP 404).
fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Writes `VRRPNode/<node>.status` from the snapshots on `rx` until the sender is dropped,
/// then flushes the newest snapshot once more (best effort). `exists` follows the node's
/// VRRPNode (the spec watch's view): a write that found no object waits until it is there.
pub async fn run(
    api: Api<VRRPNode>,
    node: String,
    mut rx: watch::Receiver<VRRPNodeStatus>,
    mut exists: watch::Receiver<bool>,
) {
    let mut policy = Coalescer::new(Duration::from_secs(1), RETRY_AT_MOST);
    policy.offer(rx.borrow_and_update().clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut open = true;
    loop {
        if let Some(status) = policy.poll_write(Instant::now()) {
            match api
                .patch_status(&node, &params, &Patch::Apply(apply_body(&status)))
                .await
            {
                Ok(_) => {
                    if policy.failures() > 0 {
                        tracing::info!(node, "status written again after the API came back");
                    }
                    policy.written(Instant::now());
                }
                Err(e) if not_found(&e) => {
                    if !policy.waiting_for_object() {
                        tracing::info!(
                            node,
                            "no VRRPNode for this node (no VirtualIP places an instance here, or it was deleted): its status is written once the operator creates it"
                        );
                    }
                    policy.failed_absent(Instant::now());
                }
                Err(e) => {
                    tracing::warn!(node, error = %e, failures = policy.failures() + 1, "cannot write VRRPNode status; will retry");
                    policy.failed(Instant::now());
                }
            }
            continue;
        }
        // Stopping: nothing left to write, or nowhere to write it.
        if !open && (policy.is_idle() || policy.waiting_for_object()) {
            return;
        }
        let deadline = policy.poll_timeout();
        tokio::select! {
            changed = rx.changed(), if open => match changed {
                Ok(()) => policy.offer(rx.borrow_and_update().clone()),
                Err(_) => open = false,
            },
            Ok(()) = exists.changed(), if policy.waiting_for_object() => {
                if *exists.borrow_and_update() {
                    policy.object_appeared(Instant::now());
                }
            }
            () = sleep_until(deadline) => {}
        }
        if !open && policy.poll_timeout().is_none() && policy.is_idle() {
            return;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::vrrpnode::{InstanceStatus, VrrpState};

    fn status(state: VrrpState, prio: u8) -> VRRPNodeStatus {
        VRRPNodeStatus {
            instances: vec![InstanceStatus {
                name: "default/web".into(),
                state: Some(state),
                effective_priority: Some(prio),
                ..Default::default()
            }],
            instance_count: 1,
            ..Default::default()
        }
    }

    #[test]
    fn writes_only_on_change() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::from_secs(1), Duration::from_secs(30));
        c.offer(status(VrrpState::Backup, 100));
        assert!(c.poll_write(t0).is_some());
        c.written(t0);
        c.offer(status(VrrpState::Backup, 100));
        assert_eq!(
            c.poll_write(t0 + Duration::from_secs(5)),
            None,
            "unchanged state is not written"
        );
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn at_most_one_write_per_interval_and_the_latest_wins() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::from_secs(1), Duration::from_secs(30));
        c.offer(status(VrrpState::Backup, 100));
        c.poll_write(t0).unwrap();
        c.written(t0);
        c.offer(status(VrrpState::Master, 100));
        c.offer(status(VrrpState::Fault, 100));
        c.offer(status(VrrpState::Backup, 90));
        assert_eq!(c.poll_write(t0 + Duration::from_millis(500)), None);
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(
            c.poll_write(t0 + Duration::from_secs(1)),
            Some(status(VrrpState::Backup, 90))
        );
    }

    #[test]
    fn a_failed_write_is_retried_with_backoff_and_newer_state_replaces_it() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::from_secs(1), Duration::from_secs(4));
        c.offer(status(VrrpState::Master, 100));
        c.poll_write(t0).unwrap();
        c.failed(t0);
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            c.poll_write(t1),
            Some(status(VrrpState::Master, 100)),
            "retried"
        );
        c.failed(t1);
        assert_eq!(
            c.poll_timeout(),
            Some(t1 + Duration::from_secs(2)),
            "backoff doubled"
        );
        c.offer(status(VrrpState::Backup, 100)); // newer state during the outage
        let t2 = t1 + Duration::from_secs(2);
        assert_eq!(
            c.poll_write(t2),
            Some(status(VrrpState::Backup, 100)),
            "latest state wins"
        );
        c.failed(t2);
        let t3 = t2 + Duration::from_secs(4);
        assert_eq!(c.poll_timeout(), Some(t3), "backoff capped at 4 s");
        assert!(c.poll_write(t3).is_some());
        c.written(t3);
        assert!(c.is_idle());
        assert_eq!(c.failures(), 3);
    }

    #[test]
    fn a_write_that_finds_no_object_waits_for_it_then_goes_out_at_once() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::from_secs(1), RETRY_AT_MOST);
        c.offer(status(VrrpState::Backup, 100));
        assert!(c.poll_write(t0).is_some());
        c.failed_absent(t0);
        assert!(c.waiting_for_object());
        // No retry every RETRY_AT_MOST while nothing is there: only the rare safety retry.
        let t1 = t0 + RETRY_AT_MOST * 10;
        assert_eq!(c.poll_write(t1), None);
        assert_eq!(c.poll_timeout(), Some(t0 + ABSENT_RETRY));
        // A newer snapshot meanwhile is kept, not written.
        c.offer(status(VrrpState::Master, 100));
        assert_eq!(c.poll_write(t1), None);
        // The operator creates the object: the newest snapshot goes out at once.
        let t2 = t1 + Duration::from_millis(300);
        c.object_appeared(t2);
        assert!(!c.waiting_for_object());
        assert_eq!(c.poll_timeout(), Some(t2));
        assert_eq!(c.poll_write(t2), Some(status(VrrpState::Master, 100)));
        c.written(t2);
        assert!(c.is_idle());
    }

    #[test]
    fn an_appearance_without_a_waiting_write_changes_nothing() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Duration::from_secs(1), RETRY_AT_MOST);
        c.offer(status(VrrpState::Backup, 100));
        assert!(c.poll_write(t0).is_some());
        c.failed(t0); // an outage, not an absent object: normal backoff
        c.object_appeared(t0);
        assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        // The safety retry while absent still happens.
        assert!(c.poll_write(t0 + Duration::from_secs(1)).is_some());
        c.failed_absent(t0 + Duration::from_secs(1));
        let t1 = t0 + Duration::from_secs(1) + ABSENT_RETRY;
        assert_eq!(c.poll_write(t1), Some(status(VrrpState::Backup, 100)));
    }

    #[test]
    fn apply_body_names_the_kind() {
        let b = apply_body(&status(VrrpState::Master, 200));
        assert_eq!(b["kind"], "VRRPNode");
        assert_eq!(b["apiVersion"], "kubevrrp.io/v1alpha1");
        assert_eq!(b["status"]["instances"][0]["state"], "MASTER");
        assert_eq!(b["status"]["instances"][0]["effectivePriority"], 200);
    }
}
