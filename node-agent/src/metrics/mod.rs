//! Prometheus metrics and the agent's HTTP endpoints.
//!
//! - [`Metrics`]: every metric family the agent exports (prometheus-client, prefix
//!   `kube_vrrp_`), with one small method per event so the driver never touches label sets.
//! - [`Telemetry`]: what the HTTP endpoints read, shared between the driver and the server:
//!   the metrics, the readiness flag and the `/status` snapshot.
//! - [`http`]: the axum server for `/metrics`, `/healthz`, `/readyz` and `/status`.

pub mod http;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crds::vrrpnode::VrrpState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::track::{HttpOutcome, Observation, RunExit};
use crate::vrrp::{Delivery, DropReason};

pub use http::{Limits, bind, router, serve, serve_router};

/// Every state an instance can be in, for the one-hot state gauge.
const STATES: [VrrpState; 4] = [
    VrrpState::Init,
    VrrpState::Backup,
    VrrpState::Master,
    VrrpState::Fault,
];

/// Buckets of the timer lateness histogram, seconds.
/// Takeover buckets (seconds): from the last advert heard to the first GARP/NA.
const TAKEOVER_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 30.0,
];

const LATENESS_BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    instance: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    instance: String,
    from: String,
    to: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    interface: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InterfaceLabels {
    interface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabels {
    file: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnnounceLabels {
    instance: String,
    /// `garp` (IPv4 gratuitous ARP) or `na` (IPv6 unsolicited neighbour advertisement).
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScriptLabels {
    tracker: String,
    /// `success`, `failure` (non-zero exit or signal), `timeout` or `error` (could not start).
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrackerLabels {
    tracker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VipErrorLabels {
    instance: String,
    /// `add` or `remove`.
    op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// A VIP operation, for [`Metrics::vip_error`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VipOp {
    /// Adding an address.
    Add,
    /// Removing an address.
    Remove,
}

/// The agent's metric families.
pub struct Metrics {
    registry: Registry,
    state: Family<StateLabels, Gauge>,
    effective_priority: Family<InstanceLabels, Gauge>,
    transitions: Family<TransitionLabels, Counter>,
    adverts_sent: Family<InstanceLabels, Counter>,
    adverts_received: Family<InstanceLabels, Counter>,
    drops: Family<DropLabels, Counter>,
    unknown_vrid: Family<InterfaceLabels, Counter>,
    announcements: Family<AnnounceLabels, Counter>,
    script_results: Family<ScriptLabels, Counter>,
    http_results: Family<ScriptLabels, Counter>,
    process_counts: Family<TrackerLabels, Gauge>,
    file_values: Family<TrackerLabels, Gauge>,
    timer_lateness: Histogram,
    takeover: Histogram,
    late_wakeups: Counter,
    vip_errors: Family<VipErrorLabels, Counter>,
    api_connected: Gauge,
    api_errors: Counter,
    api_outages: Counter,
    api_stalled: Gauge,
    api_stalls: Counter,
    config_held: Gauge,
    config_held_total: Counter,
    state_write_errors: Family<FileLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn state_word(s: VrrpState) -> String {
    s.to_string()
}

impl Metrics {
    /// All families registered, no series yet.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kube_vrrp");
        let state = Family::<StateLabels, Gauge>::default();
        registry.register(
            "instance_state",
            "VRRP state per instance: 1 for the current state, 0 for the others",
            state.clone(),
        );
        let effective_priority = Family::<InstanceLabels, Gauge>::default();
        registry.register(
            "effective_priority",
            "Priority advertised now (base priority adjusted by trackers)",
            effective_priority.clone(),
        );
        let transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "transitions",
            "State transitions by from, to and reason",
            transitions.clone(),
        );
        let adverts_sent = Family::<InstanceLabels, Counter>::default();
        registry.register(
            "adverts_sent",
            "VRRP advertisements sent",
            adverts_sent.clone(),
        );
        let adverts_received = Family::<InstanceLabels, Counter>::default();
        registry.register(
            "adverts_received",
            "VRRP advertisements accepted by an instance (passed every receive check)",
            adverts_received.clone(),
        );
        let drops = Family::<DropLabels, Counter>::default();
        registry.register(
            "adverts_dropped",
            "Received VRRP packets dropped, by interface and the core's drop reason",
            drops.clone(),
        );
        let unknown_vrid = Family::<InterfaceLabels, Counter>::default();
        registry.register(
            "unknown_vrid_packets",
            "Received VRRP packets no instance is configured for (interface, family, VRID), whatever their drop reason",
            unknown_vrid.clone(),
        );
        let announcements = Family::<AnnounceLabels, Counter>::default();
        registry.register(
            "announcements_sent",
            "Gratuitous ARPs (kind=garp) and unsolicited neighbour advertisements (kind=na) sent",
            announcements.clone(),
        );
        let script_results = Family::<ScriptLabels, Counter>::default();
        registry.register(
            "script_results",
            "vrrp_script runs by tracker and result",
            script_results.clone(),
        );
        let http_results = Family::<ScriptLabels, Counter>::default();
        registry.register(
            "http_check_results",
            "track.http checks by tracker and result (success, status: another code, timeout, error: no response)",
            http_results.clone(),
        );
        let process_counts = Family::<TrackerLabels, Gauge>::default();
        registry.register(
            "tracked_processes",
            "Processes matching each vrrp_track_process",
            process_counts.clone(),
        );
        let file_values = Family::<TrackerLabels, Gauge>::default();
        registry.register(
            "tracked_file_value",
            "The number in each track_file (no series while the file is missing or not a number)",
            file_values.clone(),
        );
        let timer_lateness = Histogram::new(LATENESS_BUCKETS);
        registry.register_with_unit(
            "timer_lateness",
            "How late protocol timers fired",
            prometheus_client::registry::Unit::Seconds,
            timer_lateness.clone(),
        );
        let takeover = Histogram::new(TAKEOVER_BUCKETS);
        registry.register_with_unit(
            "takeover",
            "Takeovers as this node measured them: last advert heard from the old master to the first gratuitous ARP/NA sent",
            prometheus_client::registry::Unit::Seconds,
            takeover.clone(),
        );
        let late_wakeups = Counter::default();
        registry.register(
            "late_wakeups",
            "Protocol timer wake-ups late enough to be logged (keepalived's \"thread timer expired\")",
            late_wakeups.clone(),
        );
        let vip_errors = Family::<VipErrorLabels, Counter>::default();
        registry.register(
            "vip_errors",
            "Failed VIP additions and removals",
            vip_errors.clone(),
        );
        let api_connected = Gauge::default();
        registry.register(
            "api_connected",
            "1 while the Kubernetes API answers the agent's watch (in-cluster mode)",
            api_connected.clone(),
        );
        let api_errors = Counter::default();
        registry.register(
            "api_errors",
            "Kubernetes API watch errors",
            api_errors.clone(),
        );
        let api_outages = Counter::default();
        registry.register(
            "api_outages",
            "Times the Kubernetes API became unreachable (VRRP kept running on the last config)",
            api_outages.clone(),
        );
        let api_stalled = Gauge::default();
        registry.register(
            "api_stalled",
            "1 while the Kubernetes API does not answer (no data for 1.5 s, then GET /version \
             unanswered for 3 s): every API connection is dropped, VRRP runs on the last config",
            api_stalled.clone(),
        );
        let api_stalls = Counter::default();
        registry.register(
            "api_stalls",
            "Times the Kubernetes API stalled (stopped answering without closing connections)",
            api_stalls.clone(),
        );
        let config_held = Gauge::default();
        registry.register(
            "config_held",
            "1 while the agent keeps running its last config because its VRRPNode is absent \
             (deleted or not listed), for a grace period before it stops every instance",
            config_held.clone(),
        );
        let config_held_total = Counter::default();
        registry.register(
            "config_holds",
            "Times the agent's VRRPNode went absent while it ran instances (the last config held)",
            config_held_total.clone(),
        );
        let state_write_errors = Family::<FileLabels, Counter>::default();
        registry.register(
            "state_write_errors",
            "Failed writes of the agent's files in its state directory (disk full or read-only): \
             file=\"vip_record\" (the VIPs it added) or \"config_cache\" (the last VRRPNode spec)",
            state_write_errors.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register("build_info", "Agent version (always 1)", build);
        Self {
            registry,
            state,
            effective_priority,
            transitions,
            adverts_sent,
            adverts_received,
            drops,
            unknown_vrid,
            announcements,
            script_results,
            http_results,
            process_counts,
            file_values,
            timer_lateness,
            takeover,
            late_wakeups,
            vip_errors,
            api_connected,
            api_errors,
            api_outages,
            api_stalled,
            api_stalls,
            config_held,
            config_held_total,
            state_write_errors,
        }
    }

    /// `n` more writes of `file` (`vip_record`, `config_cache`) failed.
    pub fn state_write_failed(&self, file: &str, n: u64) {
        self.state_write_errors
            .get_or_create(&FileLabels { file: file.into() })
            .inc_by(n);
    }

    /// The VRRPNode went absent and the last config is held (`true`), or the hold ended.
    pub fn config_held(&self, held: bool) {
        if held && self.config_held.get() == 0 {
            self.config_held_total.inc();
        }
        self.config_held.set(i64::from(held));
    }

    /// The Kubernetes API answered.
    pub fn api_up(&self) {
        self.api_connected.set(1);
    }

    /// A Kubernetes API error; `new_outage` when it was reachable before.
    pub fn api_down(&self, new_outage: bool) {
        self.api_connected.set(0);
        self.api_errors.inc();
        if new_outage {
            self.api_outages.inc();
        }
    }

    /// The API stall watchdog's verdict: a stall also means "not connected".
    pub fn api_stalled(&self, stalled: bool) {
        if stalled {
            if self.api_stalled.get() == 0 {
                self.api_stalls.inc();
            }
            self.api_connected.set(0);
        }
        self.api_stalled.set(i64::from(stalled));
    }

    /// Record `instance`'s current state (1 for it, 0 for the other states).
    pub fn set_state(&self, instance: &str, state: VrrpState) {
        for s in STATES {
            let labels = StateLabels {
                instance: instance.to_owned(),
                state: state_word(s),
            };
            self.state.get_or_create(&labels).set(i64::from(s == state));
        }
    }

    /// Record `instance`'s effective priority.
    pub fn set_effective_priority(&self, instance: &str, priority: u8) {
        self.effective_priority
            .get_or_create(&InstanceLabels {
                instance: instance.to_owned(),
            })
            .set(i64::from(priority));
    }

    /// Count a transition and update the state gauge.
    pub fn transition(&self, instance: &str, from: VrrpState, to: VrrpState, reason: &str) {
        let labels = TransitionLabels {
            instance: instance.to_owned(),
            from: state_word(from),
            to: state_word(to),
            reason: reason.to_owned(),
        };
        self.transitions.get_or_create(&labels).inc();
        self.set_state(instance, to);
    }

    /// Count an advert sent by `instance`.
    pub fn advert_sent(&self, instance: &str) {
        self.adverts_sent
            .get_or_create(&InstanceLabels {
                instance: instance.to_owned(),
            })
            .inc();
    }

    /// Count an advert `instance` accepted (it passed every receive check).
    pub fn advert_received(&self, instance: &str) {
        self.adverts_received
            .get_or_create(&InstanceLabels {
                instance: instance.to_owned(),
            })
            .inc();
    }

    /// Count a packet received on `interface` and dropped for `reason`.
    pub fn advert_dropped(&self, interface: &str, reason: DropReason) {
        let labels = DropLabels {
            interface: interface.to_owned(),
            reason: reason.label().to_owned(),
        };
        self.drops.get_or_create(&labels).inc();
    }

    /// Count what became of a packet received on `interface` ([`crate::vrrp::Router::handle_packet`]):
    /// accepted by the instance named `instance` (`adverts_received`), or dropped
    /// (`adverts_dropped` by reason, and `unknown_vrid_packets` when no instance claims it).
    pub fn delivery(&self, interface: &str, delivery: &Delivery, instance: Option<&str>) {
        match delivery {
            Delivery::Accepted(_) => {
                if let Some(name) = instance {
                    self.advert_received(name);
                }
            }
            Delivery::Dropped { instance, reason } => {
                self.advert_dropped(interface, *reason);
                if instance.is_none() {
                    self.unknown_vrid(interface);
                }
            }
        }
    }

    /// Count a packet received on `interface` that no instance is configured for.
    pub fn unknown_vrid(&self, interface: &str) {
        self.unknown_vrid
            .get_or_create(&InterfaceLabels {
                interface: interface.to_owned(),
            })
            .inc();
    }

    /// Count `n` gratuitous ARPs sent for `instance`.
    pub fn garp_sent(&self, instance: &str, n: u64) {
        let labels = AnnounceLabels {
            instance: instance.to_owned(),
            kind: "garp".into(),
        };
        self.announcements.get_or_create(&labels).inc_by(n);
    }

    /// Count `n` unsolicited neighbour advertisements sent for `instance`.
    pub fn na_sent(&self, instance: &str, n: u64) {
        let labels = AnnounceLabels {
            instance: instance.to_owned(),
            kind: "na".into(),
        };
        self.announcements.get_or_create(&labels).inc_by(n);
    }

    /// Record what a tracker observation says: script runs are counted by result, process
    /// counts and file values are kept as gauges.
    pub fn observe(&self, obs: &Observation) {
        match obs {
            Observation::Script {
                tracker, detail, ..
            } => {
                let result = match detail.exit {
                    RunExit::Code(0) => "success",
                    RunExit::Code(_) | RunExit::Signal(_) => "failure",
                    RunExit::TimedOut => "timeout",
                    RunExit::SpawnFailed(_) => "error",
                };
                let labels = ScriptLabels {
                    tracker: tracker.clone(),
                    result: result.into(),
                };
                self.script_results.get_or_create(&labels).inc();
            }
            Observation::ProcessCount { tracker, count } => {
                let labels = TrackerLabels {
                    tracker: tracker.clone(),
                };
                self.process_counts
                    .get_or_create(&labels)
                    .set(i64::from(*count));
            }
            Observation::Http {
                tracker,
                detail,
                success,
            } => {
                let result = match detail.outcome {
                    HttpOutcome::Status(_) if *success => "success",
                    HttpOutcome::Status(_) => "status",
                    HttpOutcome::TimedOut => "timeout",
                    HttpOutcome::Failed(_) => "error",
                };
                let labels = ScriptLabels {
                    tracker: tracker.clone(),
                    result: result.into(),
                };
                self.http_results.get_or_create(&labels).inc();
            }
            Observation::FileValue { tracker, value } => {
                let labels = TrackerLabels {
                    tracker: tracker.clone(),
                };
                match value {
                    Some(v) => {
                        self.file_values.get_or_create(&labels).set(*v);
                    }
                    None => {
                        self.file_values.remove(&labels);
                    }
                }
            }
        }
    }

    /// Record a takeover: last advert heard → first gratuitous ARP/NA.
    pub fn takeover(&self, took: Duration) {
        self.takeover.observe(took.as_secs_f64());
    }

    /// Record how late a timer fired; `logged` when it was late enough to be logged.
    pub fn timer_fired(&self, lateness: Duration, logged: bool) {
        self.timer_lateness.observe(lateness.as_secs_f64());
        if logged {
            self.late_wakeups.inc();
        }
    }

    /// Count a failed VIP operation.
    pub fn vip_error(&self, instance: &str, op: VipOp) {
        let op = match op {
            VipOp::Add => "add",
            VipOp::Remove => "remove",
        };
        self.vip_errors
            .get_or_create(&VipErrorLabels {
                instance: instance.to_owned(),
                op: op.into(),
            })
            .inc();
    }

    /// Forget the gauges of an instance that no longer exists (after a reload). Counters stay,
    /// as Prometheus expects of counters.
    pub fn remove_instance(&self, instance: &str) {
        for s in STATES {
            self.state.remove(&StateLabels {
                instance: instance.to_owned(),
                state: state_word(s),
            });
        }
        self.effective_priority.remove(&InstanceLabels {
            instance: instance.to_owned(),
        });
    }

    /// The OpenMetrics text exposition (ends with `# EOF`).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// A tracker as shown in `/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerSnapshot {
    /// `interface`, `script`, `process`, `file` or `pods`.
    pub kind: String,
    /// The tracker's name.
    pub name: String,
    /// Whether it counts as up now.
    pub up: bool,
}

/// One instance as shown in `/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSnapshot {
    /// Instance name.
    pub name: String,
    /// Current state.
    pub state: VrrpState,
    /// Priority advertised now.
    pub effective_priority: u8,
    /// Configured priority.
    pub base_priority: u8,
    /// VIPs this node holds now (CIDR strings); empty unless master.
    pub vips: Vec<String>,
    /// Source address of the current master's adverts, if known.
    pub master_address: Option<String>,
    /// Trackers and whether each is up.
    pub trackers: Vec<TrackerSnapshot>,
    /// When the current state was entered (RFC 3339).
    pub since: Option<String>,
    /// Why the current state was entered.
    pub reason: Option<String>,
}

/// The `/status` document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// Every instance, in configuration order.
    pub instances: Vec<InstanceSnapshot>,
    /// Agent version.
    pub version: String,
}

impl Default for StatusSnapshot {
    fn default() -> Self {
        Self {
            instances: Vec::new(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

struct TelemetryInner {
    metrics: Metrics,
    ready: AtomicBool,
    status: RwLock<StatusSnapshot>,
}

/// What the HTTP endpoints serve, shared by the driver (writer) and the server (reader).
/// Cheap to clone.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<TelemetryInner>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Fresh metrics, not ready, empty status.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(TelemetryInner {
                metrics: Metrics::new(),
                ready: AtomicBool::new(false),
                status: RwLock::new(StatusSnapshot::default()),
            }),
        }
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Mark the agent ready (configuration loaded, sockets open) or not.
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Release);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Replace the `/status` instances (the version is kept).
    pub fn set_instances(&self, instances: Vec<InstanceSnapshot>) {
        self.update_status(|s| s.instances = instances);
    }

    /// Change the `/status` snapshot in place.
    pub fn update_status(&self, f: impl FnOnce(&mut StatusSnapshot)) {
        let mut guard = match self.inner.status.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard);
    }

    /// A copy of the `/status` snapshot.
    pub fn status(&self) -> StatusSnapshot {
        match self.inner.status.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::ScriptDetail;

    fn line_value(text: &str, prefix: &str) -> Option<String> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
    }

    #[test]
    fn families_and_values() {
        let m = Metrics::new();
        m.set_state("VI_1", VrrpState::Backup);
        m.transition(
            "VI_1",
            VrrpState::Backup,
            VrrpState::Master,
            "master_down_timer",
        );
        m.set_effective_priority("VI_1", 244);
        m.advert_sent("VI_1");
        m.advert_sent("VI_1");
        m.advert_received("VI_1");
        m.advert_dropped("eth0", DropReason::Ttl);
        m.advert_dropped("eth0", DropReason::UnknownVrid);
        m.unknown_vrid("eth0");
        m.garp_sent("VI_1", 5);
        m.na_sent("VI_1", 3);
        m.timer_fired(Duration::from_millis(3), false);
        m.timer_fired(Duration::from_millis(300), true);
        m.vip_error("VI_1", VipOp::Add);
        let ok = ScriptDetail {
            exit: RunExit::Code(0),
            duration: Duration::ZERO,
        };
        let to = ScriptDetail {
            exit: RunExit::TimedOut,
            duration: Duration::ZERO,
        };
        m.observe(&Observation::Script {
            tracker: "chk".into(),
            success: true,
            detail: ok,
        });
        m.observe(&Observation::Script {
            tracker: "chk".into(),
            success: false,
            detail: to,
        });
        m.observe(&Observation::FileValue {
            tracker: "tf".into(),
            value: Some(-7),
        });
        m.observe(&Observation::ProcessCount {
            tracker: "p".into(),
            count: 1,
        });
        let text = m.encode().unwrap();
        let v =
            |p: &str| line_value(&text, p).unwrap_or_else(|| panic!("no series {p} in\n{text}"));
        assert_eq!(
            v("kube_vrrp_instance_state{instance=\"VI_1\",state=\"MASTER\"}"),
            "1"
        );
        assert_eq!(
            v("kube_vrrp_instance_state{instance=\"VI_1\",state=\"BACKUP\"}"),
            "0"
        );
        assert_eq!(
            v(
                "kube_vrrp_transitions_total{instance=\"VI_1\",from=\"BACKUP\",to=\"MASTER\",reason=\"master_down_timer\"}"
            ),
            "1"
        );
        assert_eq!(v("kube_vrrp_effective_priority{instance=\"VI_1\"}"), "244");
        assert_eq!(v("kube_vrrp_adverts_sent_total{instance=\"VI_1\"}"), "2");
        assert_eq!(
            v("kube_vrrp_adverts_received_total{instance=\"VI_1\"}"),
            "1"
        );
        assert_eq!(
            v("kube_vrrp_adverts_dropped_total{interface=\"eth0\",reason=\"ttl\"}"),
            "1"
        );
        assert_eq!(
            v("kube_vrrp_adverts_dropped_total{interface=\"eth0\",reason=\"unknown_vrid\"}"),
            "1"
        );
        assert_eq!(
            v("kube_vrrp_unknown_vrid_packets_total{interface=\"eth0\"}"),
            "1"
        );
        assert_eq!(
            v("kube_vrrp_announcements_sent_total{instance=\"VI_1\",kind=\"garp\"}"),
            "5"
        );
        assert_eq!(
            v("kube_vrrp_announcements_sent_total{instance=\"VI_1\",kind=\"na\"}"),
            "3"
        );
        assert_eq!(
            v("kube_vrrp_script_results_total{tracker=\"chk\",result=\"success\"}"),
            "1"
        );
        assert_eq!(
            v("kube_vrrp_script_results_total{tracker=\"chk\",result=\"timeout\"}"),
            "1"
        );
        assert_eq!(v("kube_vrrp_timer_lateness_seconds_count"), "2");
        assert_eq!(
            v("kube_vrrp_timer_lateness_seconds_bucket{le=\"0.005\"}"),
            "1"
        );
        assert_eq!(v("kube_vrrp_late_wakeups_total"), "1");
        assert_eq!(
            v("kube_vrrp_vip_errors_total{instance=\"VI_1\",op=\"add\"}"),
            "1"
        );
        assert_eq!(
            v(&format!(
                "kube_vrrp_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )),
            "1"
        );
        assert_eq!(v("kube_vrrp_tracked_processes{tracker=\"p\"}"), "1");
        assert_eq!(v("kube_vrrp_tracked_file_value{tracker=\"tf\"}"), "-7");
        assert!(text.ends_with("# EOF\n"), "{text}");
        m.observe(&Observation::FileValue {
            tracker: "tf".into(),
            value: None,
        });
        let text = m.encode().unwrap();
        assert!(
            line_value(&text, "kube_vrrp_tracked_file_value{").is_none(),
            "{text}"
        );

        m.remove_instance("VI_1");
        let text = m.encode().unwrap();
        assert!(
            line_value(&text, "kube_vrrp_instance_state{instance=\"VI_1\"").is_none(),
            "{text}"
        );
        assert!(
            line_value(&text, "kube_vrrp_effective_priority{instance=\"VI_1\"}").is_none(),
            "{text}"
        );
    }

    #[test]
    fn deliveries_feed_received_dropped_and_unknown_vrid() {
        use crate::vrrp::packet::MULTICAST_V4;
        use crate::vrrp::{
            Advert, Auth, InstanceConfig, Interval, Received, Router, StartState, V3Ipv4Checksum,
            Version,
        };
        use std::net::{IpAddr, Ipv4Addr};
        use std::time::Instant;

        let own = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
        let peer = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20));
        let group = IpAddr::V4(MULTICAST_V4);
        let cfg = InstanceConfig {
            name: "VI_1".into(),
            interface: "eth0".into(),
            vrid: 51,
            version: Version::V3,
            priority: 100,
            start_state: StartState::Backup,
            advert_interval: Interval(100),
            preempt: true,
            preempt_delay: Duration::ZERO,
            accept: false,
            vips: vec!["192.0.2.200/24".parse().unwrap()],
            excluded: vec![],
            source: own,
            unicast_peers: vec![],
            allow_lower_ttl: false,
            auth: Auth::None,
            v3_ipv4_checksum: V3Ipv4Checksum::WithPseudoHeader,
            trackers: vec![],
            garp: Default::default(),
            sync_group: None,
            peer_priorities: None,
        };
        let mut r = Router::new();
        r.add(cfg).unwrap();
        let now = Instant::now();
        r.start(now);
        let bytes = |vrid| {
            Advert {
                version: Version::V3,
                vrid,
                priority: 150,
                interval: Interval(100),
                addresses: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200))],
                auth: Auth::None,
            }
            .to_bytes(peer, group, V3Ipv4Checksum::WithPseudoHeader)
            .unwrap()
        };
        let rx = |ttl| Received {
            interface: "eth0",
            src: peer,
            dst: group,
            ttl,
        };
        let m = Metrics::new();
        let mut feed = |ttl, b: &[u8]| {
            let d = r.handle_packet(now, &rx(ttl), b);
            m.delivery("eth0", &d, Some("VI_1"));
        };
        feed(255, &bytes(51)); // accepted
        feed(255, &bytes(51)); // accepted
        feed(64, &bytes(51)); // ttl
        feed(255, &bytes(52)); // unknown VRID, valid
        let mut bad = bytes(53);
        bad[6] ^= 0xff; // unknown VRID, bad checksum
        feed(255, &bad);
        let text = m.encode().unwrap();
        let v = |p: &str| line_value(&text, p);
        assert_eq!(
            v("kube_vrrp_adverts_received_total{instance=\"VI_1\"}").as_deref(),
            Some("2"),
            "only accepted adverts count as received\n{text}"
        );
        let dropped = |reason: &str| {
            v(&format!(
                "kube_vrrp_adverts_dropped_total{{interface=\"eth0\",reason=\"{reason}\"}}"
            ))
        };
        assert_eq!(dropped("ttl").as_deref(), Some("1"), "{text}");
        assert_eq!(dropped("unknown_vrid").as_deref(), Some("1"), "{text}");
        assert_eq!(dropped("bad_checksum").as_deref(), Some("1"), "{text}");
        assert_eq!(
            v("kube_vrrp_unknown_vrid_packets_total{interface=\"eth0\"}").as_deref(),
            Some("2"),
            "{text}"
        );
    }

    #[test]
    fn state_write_errors_per_file() {
        let m = Metrics::new();
        m.state_write_failed("vip_record", 2);
        m.state_write_failed("config_cache", 1);
        let text = m.encode().unwrap();
        assert_eq!(
            line_value(
                &text,
                "kube_vrrp_state_write_errors_total{file=\"vip_record\"}"
            )
            .as_deref(),
            Some("2")
        );
        assert_eq!(
            line_value(
                &text,
                "kube_vrrp_state_write_errors_total{file=\"config_cache\"}"
            )
            .as_deref(),
            Some("1")
        );
    }

    #[test]
    fn a_held_config_is_a_gauge_and_a_count() {
        let m = Metrics::new();
        let v = |m: &Metrics, p: &str| line_value(&m.encode().unwrap(), p);
        assert_eq!(v(&m, "kube_vrrp_config_held ").as_deref(), Some("0"));
        m.config_held(true);
        m.config_held(true);
        assert_eq!(v(&m, "kube_vrrp_config_held ").as_deref(), Some("1"));
        assert_eq!(v(&m, "kube_vrrp_config_holds_total ").as_deref(), Some("1"));
        m.config_held(false);
        m.config_held(true);
        assert_eq!(v(&m, "kube_vrrp_config_holds_total ").as_deref(), Some("2"));
    }

    #[test]
    fn status_json_shape() {
        let t = Telemetry::new();
        t.set_instances(vec![InstanceSnapshot {
            name: "VI_1".into(),
            state: VrrpState::Master,
            effective_priority: 254,
            base_priority: 244,
            vips: vec!["192.0.2.200/24".into()],
            master_address: Some("192.0.2.11".into()),
            trackers: vec![TrackerSnapshot {
                kind: "process".into(),
                name: "track_apache".into(),
                up: true,
            }],
            since: Some("2026-11-24T21:00:00Z".into()),
            reason: Some("master_down_timer".into()),
        }]);
        let json = serde_json::to_value(t.status()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "instances": [{
                    "name": "VI_1", "state": "MASTER", "effectivePriority": 254, "basePriority": 244,
                    "vips": ["192.0.2.200/24"], "masterAddress": "192.0.2.11",
                    "trackers": [{"kind": "process", "name": "track_apache", "up": true}],
                    "since": "2026-11-24T21:00:00Z", "reason": "master_down_timer"
                }],
                "version": env!("CARGO_PKG_VERSION"),
            })
        );
    }
}
