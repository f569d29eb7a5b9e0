//! The agent's config source in-cluster: a watch on its own `VRRPNode` only.
//!
//! The watch uses a field selector on the object's name, so the API server sends this node's
//! object and nothing else. Every spec received is cached on disk and published on a
//! `tokio::sync::watch` channel (unchanged specs are not re-published). An object with no
//! instances means "run nothing" at once. A deleted or unlisted object (someone ran
//! `kubectl delete vrrpnodes --all`, or a sweep by some tool) is ridden out: the last config
//! keeps running for [`ABSENT_GRACE`] while the operator restores the object, with the reason
//! logged and `kube_vrrp_config_held` at 1; only an absence longer than that stops every
//! instance ([`AbsenceGrace`]). API errors are logged once per outage, counted, and retried
//! with the watcher's backoff; the last published spec stays in force meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
    /// The API stall watchdog's verdicts: the watches start again with a fresh list after
    /// each stall ([`apiclient::watchdog`]).
    pub stalls: Option<watch::Receiver<apiclient::watchdog::Status>>,
}

/// Resolves when the stall watchdog reports the end of a stall (never without one).
pub async fn stall_ended(status: &mut Option<watch::Receiver<apiclient::watchdog::Status>>) {
    let Some(rx) = status else {
        return std::future::pending().await;
    };
    let seen = rx.borrow_and_update().recoveries;
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        if rx.borrow_and_update().recoveries != seen {
            return;
        }
    }
}

impl ApiHealth {
    /// The stall watchdog declared the API stalled (`true`) or answering again.
    pub fn stalled(&self, stalled: bool) {
        if let Some(t) = &self.telemetry {
            t.metrics().api_stalled(stalled);
        }
        if stalled {
            self.connected.store(false, Ordering::Relaxed);
            self.outages.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn up(&self) {
        if let Some(t) = &self.telemetry {
            t.metrics().api_up();
        }
        if !self.connected.swap(true, Ordering::Relaxed) && self.errors.load(Ordering::Relaxed) > 0
        {
            tracing::info!("Kubernetes API reachable again");
        }
    }
    /// `running`: how many instances the last config runs.
    fn down(&self, error: &watcher::Error, running: usize) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let new_outage = self.connected.swap(false, Ordering::Relaxed)
            || self.outages.load(Ordering::Relaxed) == 0;
        if let Some(t) = &self.telemetry {
            t.metrics().api_down(new_outage);
        }
        if new_outage {
            self.outages.fetch_add(1, Ordering::Relaxed);
            if running > 0 {
                tracing::warn!(error = %error, instances = running, "Kubernetes API unreachable; VRRP keeps running on the last config");
            } else {
                tracing::warn!(error = %error, "Kubernetes API unreachable; no config yet, so no instance runs until it answers");
            }
        } else {
            tracing::debug!(error = %error, "Kubernetes API still unreachable");
        }
    }
}

/// The watcher configuration for node `node`: its own object only.
pub fn watcher_config(node: &str) -> watcher::Config {
    super::watch_config().fields(&format!("metadata.name={node}"))
}

/// How long the last config keeps running while the node's VRRPNode is absent.
pub const ABSENT_GRACE: Duration = Duration::from_secs(30);

/// What the watch says about the node's own object.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// The object, with this spec.
    Spec(VRRPNodeSpec),
    /// No object: deleted, or not in a (re-)list.
    Absent,
}

/// What the watch stream means for the node's object (pure).
#[derive(Debug, Default)]
pub struct SpecTracker {
    listing: Option<Option<VRRPNodeSpec>>,
}

impl SpecTracker {
    /// Feed one watcher event; returns what it says about the object, when it decides.
    pub fn on_event(&mut self, node: &str, event: watcher::Event<VRRPNode>) -> Option<Seen> {
        let ours = |o: &VRRPNode| o.metadata.name.as_deref() == Some(node);
        match event {
            watcher::Event::Apply(o) if ours(&o) => Some(Seen::Spec(o.spec)),
            watcher::Event::Delete(o) if ours(&o) => Some(Seen::Absent),
            watcher::Event::Init => {
                self.listing = Some(None);
                None
            }
            watcher::Event::InitApply(o) if ours(&o) => {
                self.listing = Some(Some(o.spec));
                None
            }
            watcher::Event::InitDone => self
                .listing
                .take()
                .map(|l| l.map_or(Seen::Absent, Seen::Spec)),
            _ => None,
        }
    }
}

/// Rides out a short absence of the VRRPNode (pure): while instances run, an absent object
/// holds the last config until [`AbsenceGrace::deadline`]; the object's return (any spec)
/// ends the hold, the deadline stops everything.
#[derive(Debug, Default)]
pub struct AbsenceGrace {
    deadline: Option<Instant>,
}

impl AbsenceGrace {
    /// What to publish for `seen` at `now` (`None`: keep the current config). `running`: the
    /// current config has instances.
    pub fn on_seen(
        &mut self,
        now: Instant,
        seen: Seen,
        running: bool,
        grace: Duration,
    ) -> Option<VRRPNodeSpec> {
        match seen {
            Seen::Spec(spec) => {
                self.deadline = None;
                Some(spec)
            }
            Seen::Absent if !running || grace.is_zero() => {
                self.deadline = None;
                Some(VRRPNodeSpec::default())
            }
            Seen::Absent => {
                self.deadline.get_or_insert(now + grace);
                None
            }
        }
    }

    /// When the hold ends, if one is running.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether the last config is held for an absent object.
    pub fn holding(&self) -> bool {
        self.deadline.is_some()
    }

    /// At or after the deadline: the empty spec to publish (the hold is over).
    pub fn on_timeout(&mut self, now: Instant) -> Option<VRRPNodeSpec> {
        match self.deadline {
            Some(d) if d <= now => {
                self.deadline = None;
                Some(VRRPNodeSpec::default())
            }
            _ => None,
        }
    }
}

/// Follow `VRRPNode/<node>` and publish its spec on `tx` until `tx` has no receivers, and
/// whether the object exists on `exists` (the status writer waits for it).
pub async fn run(
    api: Api<VRRPNode>,
    node: String,
    cache: ConfigCache,
    tx: watch::Sender<VRRPNodeSpec>,
    exists: watch::Sender<bool>,
    health: Arc<ApiHealth>,
) {
    run_with_grace(api, node, cache, tx, exists, health, ABSENT_GRACE).await
}

/// [`run`] with another grace period for an absent VRRPNode.
pub async fn run_with_grace(
    api: Api<VRRPNode>,
    node: String,
    cache: ConfigCache,
    tx: watch::Sender<VRRPNodeSpec>,
    exists: watch::Sender<bool>,
    health: Arc<ApiHealth>,
    grace_period: Duration,
) {
    let mut tracker = SpecTracker::default();
    let mut grace = AbsenceGrace::default();
    let held = |on: bool| {
        if let Some(t) = &health.telemetry {
            t.metrics().config_held(on);
        }
    };
    let watch = || {
        watcher(api.clone(), watcher_config(&node))
            .backoff(super::watch_backoff())
            .boxed()
    };
    let mut stream = watch();
    let mut stalls = health.stalls.clone();
    loop {
        let deadline = grace.deadline();
        tokio::select! {
            () = stall_ended(&mut stalls) => {
                tracing::info!(node = %node, "API stall over: watching the VRRPNode again with a fresh list");
                stream = watch();
            }
            item = stream.next() => {
                let Some(item) = item else { return };
                match item {
                    Ok(event) => {
                        // `Init` is the watcher's own marker before it asks the server anything.
                        if !matches!(event, watcher::Event::Init) {
                            health.up();
                        }
                        if let Some(seen) = tracker.on_event(&node, event) {
                            let present = matches!(seen, Seen::Spec(_));
                            exists.send_if_modified(|e| std::mem::replace(e, present) != present);
                            let running = tx.borrow().instances.len();
                            let was_holding = grace.holding();
                            match grace.on_seen(Instant::now(), seen, running > 0, grace_period) {
                                Some(spec) => {
                                    if was_holding {
                                        tracing::info!(node = %node, "VRRPNode is back; the held config ends");
                                        held(false);
                                    }
                                    publish(&cache, &tx, spec, health.telemetry.as_ref());
                                }
                                None if !was_holding => {
                                    tracing::warn!(node = %node, instances = running, grace_s = grace_period.as_secs(), reason = "VRRPNodeAbsent", "VRRPNode deleted or not listed: keeping the last config running for the grace period while the operator restores it");
                                    held(true);
                                }
                                None => {}
                            }
                        }
                    }
                    Err(e) => health.down(&e, tx.borrow().instances.len()),
                }
            }
            () = sleep_opt(deadline) => {
                if let Some(spec) = grace.on_timeout(Instant::now()) {
                    tracing::warn!(node = %node, grace_s = grace_period.as_secs(), "VRRPNode still absent after the grace period: stopping every instance");
                    held(false);
                    publish(&cache, &tx, spec, health.telemetry.as_ref());
                }
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

async fn sleep_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

fn publish(
    cache: &ConfigCache,
    tx: &watch::Sender<VRRPNodeSpec>,
    spec: VRRPNodeSpec,
    telemetry: Option<&crate::metrics::Telemetry>,
) {
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
            if let Some(t) = telemetry {
                t.metrics().state_write_failed("config_cache", 1);
            }
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

    fn count(seen: Option<Seen>) -> usize {
        match seen {
            Some(Seen::Spec(s)) => s.instances.len(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn list_without_our_object_means_absent() {
        let mut t = SpecTracker::default();
        assert_eq!(t.on_event("a", watcher::Event::Init), None);
        assert_eq!(
            t.on_event("a", watcher::Event::InitDone),
            Some(Seen::Absent)
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
        assert_eq!(count(t.on_event("a", watcher::Event::InitDone)), 1);
        assert_eq!(
            count(t.on_event("a", watcher::Event::Apply(node("a", &["x", "y"])))),
            2
        );
        assert_eq!(
            t.on_event("a", watcher::Event::Apply(node("b", &["z"]))),
            None,
            "other nodes are ignored"
        );
        assert_eq!(
            t.on_event("a", watcher::Event::Delete(node("a", &[]))),
            Some(Seen::Absent)
        );
    }

    #[test]
    fn a_short_absence_of_the_vrrpnode_keeps_the_last_config() {
        let grace = Duration::from_secs(30);
        let t0 = Instant::now();
        let mut g = AbsenceGrace::default();
        let spec = node("a", &["x"]).spec;
        // Deleted while instances run: nothing published, held until t0 + 30 s.
        assert_eq!(g.on_seen(t0, Seen::Absent, true, grace), None);
        assert!(g.holding());
        assert_eq!(g.deadline(), Some(t0 + grace));
        // A second absence (a re-list) does not extend the hold.
        assert_eq!(
            g.on_seen(t0 + Duration::from_secs(5), Seen::Absent, true, grace),
            None
        );
        assert_eq!(g.deadline(), Some(t0 + grace));
        assert_eq!(g.on_timeout(t0 + Duration::from_secs(29)), None);
        // Restored by the operator (the same spec): published (a no-op downstream), hold over.
        assert_eq!(
            g.on_seen(
                t0 + Duration::from_secs(2),
                Seen::Spec(spec.clone()),
                true,
                grace
            ),
            Some(spec.clone())
        );
        assert!(!g.holding());
        assert_eq!(g.on_timeout(t0 + grace), None, "no stop after a restore");
    }

    #[test]
    fn a_long_absence_stops_everything_and_nothing_running_needs_no_hold() {
        let grace = Duration::from_secs(30);
        let t0 = Instant::now();
        let mut g = AbsenceGrace::default();
        assert_eq!(g.on_seen(t0, Seen::Absent, true, grace), None);
        assert_eq!(g.on_timeout(t0 + grace), Some(VRRPNodeSpec::default()));
        assert!(!g.holding());
        // Nothing runs: an absent object is just "run nothing", at once.
        assert_eq!(
            g.on_seen(t0, Seen::Absent, false, grace),
            Some(VRRPNodeSpec::default())
        );
        assert!(!g.holding());
        // An object with no instances is not an absence: applied at once.
        let empty = node("a", &[]).spec;
        assert_eq!(
            g.on_seen(t0, Seen::Spec(empty.clone()), true, grace),
            Some(empty)
        );
        assert!(!g.holding());
    }

    #[test]
    fn unchanged_specs_are_not_republished_and_changes_are_cached() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ConfigCache::new(dir.path());
        let (tx, mut rx) = watch::channel(VRRPNodeSpec::default());
        rx.borrow_and_update();
        publish(&cache, &tx, VRRPNodeSpec::default(), None);
        assert!(!rx.has_changed().unwrap());
        assert!(cache.load().unwrap().is_none());
        let spec = node("a", &["x"]).spec;
        publish(&cache, &tx, spec.clone(), None);
        assert!(rx.has_changed().unwrap());
        assert_eq!(cache.load().unwrap(), Some(spec));
    }
}
