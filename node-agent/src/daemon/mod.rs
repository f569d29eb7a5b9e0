//! The protocol loop: the thin tokio shell around the sans-IO core, shared by `standalone` and
//! `run`.
//!
//! It owns the [`Router`] and turns its actions into I/O (adverts on raw sockets, VIPs through
//! the [`vips::VipWorker`], gratuitous ARP/NA, notify scripts, metrics, status), and turns the
//! world into the core's inputs (received packets, link events, tracker observations, timer
//! expiry, desired configuration, shutdown). Nothing here decides protocol behaviour.
//!
//! Inputs arrive on channels and are handled one at a time in [`Daemon::run`]; every handler
//! returns quickly (netlink writes, GARPs and scripts run in their own tasks), so adverts keep
//! their cadence whatever else happens.
//!
//! Mode-agnostic: the desired configuration comes in on a watch channel, and what only one
//! mode has (pod readiness, `VRRPNode.status` reports, transition events) through the
//! [`Hooks`] defined in [`hooks`]; `crate::modes` wires them. Nothing here talks to Kubernetes.
//!
//! - [`place`](mod@place): which interface and source address an instance uses on this host.
//! - [`resolved`]: the API's instance types ↔ the core's (config in, status out).
//! - [`vips`]: the worker that binds and announces VIPs off the protocol loop.
//! - [`handover`]: one agent per instance per host (claims), and the hand-over of a running
//!   instance between two agents on one host (a static pod's and the DaemonSet's).
//!
//! **Claims and adoption.** An instance runs only while this agent holds its claim
//! ([`handover::Claim`]). If another agent on the host holds it, the instance is *held*: not
//! run, reported with the reason, and retried every [`HELD_RETRY`]. An instance with
//! `adoptStatic` instead asks the holder to hand it over; when their adoption views agree the
//! instance continues here in the holder's state ([`crate::vrrp::Instance::start_inherited`]),
//! otherwise it is held with the differing fields as reason (`adoption` in the status). An
//! agent that handed an instance over holds it itself (it takes it back only once the claim is
//! free again, [`HANDED_OVER_RETRY`] at the earliest).

pub mod handover;
pub mod heap;
pub mod hooks;
pub mod place;
pub mod resolved;
pub mod takeover;
pub mod vips;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crds::vrrpnode::{Adoption, AdoptionPhase, InstanceStatus, TrackerStatus};
use crds::{ResolvedInstance, VRRPNodeStatus};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::metrics::{InstanceSnapshot, Telemetry, TrackerSnapshot};
use crate::net::{
    Family, Interface, NetEvent, NetEvents, Netlink, ReceivedPacket, RecordedVip, Vip, VipManager,
    VipRecord, VrrpSocket, VrrpSockets, sleep_until, strays,
};
use crate::notify::{Notifier, NotifyScripts, NotifyState, NotifyTarget};
use crate::reconcile::{Change, diff};
use crate::track::{Observation as TrackObservation, TrackerOptions, TrackerSet, Trackers};
use crate::vrrp::{
    Action, Delivery, GratuitousKind, InstanceConfig, InstanceId, Observation, Received, Router,
    State,
};
use crate::{Error, metrics};

use handover::{Claim, ClaimError, ClaimKey, ClaimRequest};
pub use hooks::{Hooks, PodsReady, TransitionSink};
use place::{Placement, place};
use resolved::{ConfigFromResolved, StateToCrd, ToStatus};
use vips::VipWorker;

/// A wake-up later than this is logged as keepalived's "timer expired late" and counted.
const LATE_WAKEUP: Duration = Duration::from_millis(50);

/// A dropped advert is logged at most this often per instance, sender and reason.
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

/// How long shutdown waits for STOP notify scripts.
const NOTIFY_FLUSH: Duration = Duration::from_secs(5);

/// How often a held instance tries its claim (and, with `adoptStatic`, the hand-over) again.
pub const HELD_RETRY: Duration = Duration::from_secs(2);

/// How long after handing an instance over this agent waits before it tries to take the
/// claim back (the successor binds it right after the reply; this only covers its death).
pub const HANDED_OVER_RETRY: Duration = Duration::from_secs(10);

/// An instance this agent does not run now because another agent on the host holds its claim.
struct Held {
    resolved: ResolvedInstance,
    /// Why, for status and logs.
    reason: String,
    /// For `adoptStatic` instances: how the hand-over went.
    adoption: Option<Adoption>,
    /// What the holder said about its instance, when it was asked.
    offer: Option<handover::Offer>,
    retry_at: Instant,
}

/// The result of a hand-over negotiation, back to the loop.
struct Negotiated {
    resolved: ResolvedInstance,
    key: ClaimKey,
    result: handover::Negotiation,
}

/// Daemon options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Node (host) name, for logs and events.
    pub node_name: String,
    /// State directory (VIP record).
    pub state_dir: PathBuf,
}

/// What the daemon does with one instance on this host.
struct InstanceIo {
    resolved: ResolvedInstance,
    placement: Placement,
    vips: Vec<Vip>,
    notify: NotifyScripts,
}

/// Why the loop woke up.
enum Input {
    Desired,
    DesiredClosed,
    /// Packets received on one interface, in arrival order (at most [`RX_BATCH`]).
    Packets(String, Vec<ReceivedPacket>),
    Net(Option<NetEvent>),
    Tracker(TrackObservation),
    Pods(PodsReady),
    Timer(crate::net::Wakeup),
    Milestone(String, vips::Milestone, Instant),
    Claim(ClaimRequest),
    Negotiated(Box<Negotiated>),
    RetryHeld,
    /// Address changes have settled: re-read the interfaces once.
    AddressesSettled,
    /// A publication held back by [`PUBLISH_EVERY`] is due.
    Publish,
    /// A burst is over: give the freed memory back ([`heap::TrimPolicy`]).
    Trim,
    /// A full batch of packets was served and no other input was ready.
    Yield,
    Shutdown,
}

/// Packets served in a row before every other input (timers first) gets a turn.
const PACKET_BATCH: u32 = 64;

/// Fairness between received packets and everything else in the protocol loop.
///
/// Packets come first, so that an advert that arrived before the master down timer fired
/// still counts. But a flood (valid or not, on any VRID of any interface) must not starve the
/// timers: the masters' own adverts would stop and backups elsewhere would take over. After
/// [`PACKET_BATCH`] packets in a row, the loop serves the other inputs once (due timers fire
/// then) before it reads packets again. A packet costs microseconds, so a due timer waits
/// at most a batch.
#[derive(Debug, Default)]
struct PacketBudget {
    served: u32,
}

impl PacketBudget {
    /// Whether the next turn may read a packet.
    fn allows_packet(&self) -> bool {
        self.served < PACKET_BATCH
    }
    /// A packet was served.
    #[cfg(test)]
    fn packet(&mut self) {
        self.packets(1);
    }
    /// `n` packets were served.
    fn packets(&mut self, n: usize) {
        self.served = self
            .served
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }
    /// Another input was served (or none was ready): packets may come again.
    fn other(&mut self) {
        self.served = 0;
    }
    /// Inside a run of packets (status publishing waits for its end).
    fn in_batch(&self) -> bool {
        self.served > 0
    }
}

/// The running agent.
pub struct Daemon {
    opts: Options,
    router: Router,
    io: BTreeMap<InstanceId, InstanceIo>,
    /// Instances that could not be placed on this host, with the reason (reported as FAULT).
    unplaced: BTreeMap<String, (ResolvedInstance, String)>,
    applied: Vec<ResolvedInstance>,
    /// `config_hash` of `applied`, reported as `appliedConfigHash`.
    applied_hash: String,
    netlink: Netlink,
    events: NetEvents,
    interfaces: Vec<Interface>,
    sockets: VrrpSockets,
    rx_tasks: BTreeMap<(u32, u8), JoinHandle<()>>,
    pkt_tx: mpsc::Sender<(String, Vec<ReceivedPacket>)>,
    pkt_rx: mpsc::Receiver<(String, Vec<ReceivedPacket>)>,
    vips: VipWorker,
    milestone_rx: mpsc::UnboundedReceiver<(String, vips::Milestone, Instant)>,
    takeovers: takeover::Takeovers,
    trackers: Trackers,
    tracker_set: TrackerSet,
    obs_rx: mpsc::Receiver<TrackObservation>,
    notifier: Notifier,
    telemetry: Telemetry,
    since: BTreeMap<String, (chrono::DateTime<chrono::Utc>, String)>,
    hooks: Hooks,
    /// Something beyond single instances changed: `/status` and the VRRPNode status are
    /// rebuilt.
    dirty: bool,
    /// Instances that may show differently (a packet for them arrived, they changed state,
    /// their takeover reached a milestone).
    dirty_instances: std::collections::BTreeSet<InstanceId>,
    /// When the last publication was made, and when a held-back one is due.
    last_publish: Option<Instant>,
    publish_at: Option<Instant>,
    /// When to return freed memory to the kernel after a burst.
    trim: heap::TrimPolicy,
    /// What each running instance showed when last published.
    published: BTreeMap<InstanceId, (InstanceSnapshot, InstanceStatus)>,
    /// Virtual MAC interfaces this agent created (deleted when no instance uses them).
    vmacs: std::collections::BTreeSet<String>,
    /// The nftables rules of keepalived's `no_accept` (None when nf_tables is unavailable).
    firewall: Option<crate::net::nft::Firewall>,
    /// The addresses the no_accept rules were last asked to drop.
    firewall_wanted: Option<std::collections::BTreeSet<std::net::IpAddr>>,
    /// The state each sync group was last notified in.
    group_states: BTreeMap<String, NotifyState>,
    /// When each (instance, sender, drop reason) was last logged.
    drop_logged: BTreeMap<(String, std::net::IpAddr, &'static str), Instant>,
    /// The VIP record could not be trusted at start (missing, corrupt or empty): sweep the
    /// configured VIPs once the first configuration with an instance is applied.
    sweep_pending: bool,
    /// When to re-read the interfaces after address changes (see [`ADDRESS_SETTLE`]).
    addresses_settle_at: Option<Instant>,
    /// The claims of the instances that run here, by instance name.
    claims: BTreeMap<String, Claim>,
    claim_tx: mpsc::Sender<ClaimRequest>,
    claim_rx: mpsc::Receiver<ClaimRequest>,
    /// Instances another agent on this host runs (see [`Held`]).
    held: BTreeMap<String, Held>,
    /// `adoptStatic` instances waiting for the hand-over negotiation, by name.
    negotiating: BTreeMap<String, ResolvedInstance>,
    negotiated_tx: mpsc::UnboundedSender<Negotiated>,
    negotiated_rx: mpsc::UnboundedReceiver<Negotiated>,
    /// How the adoption went for running `adoptStatic` instances.
    adoptions: BTreeMap<String, Adoption>,
}

fn family_key(f: Family) -> u8 {
    match f {
        Family::V4 => 4,
        Family::V6 => 6,
    }
}

impl Daemon {
    /// Prepare the daemon: netlink, link events, the VIP record (removing VIPs left by an
    /// earlier life), trackers. No instance runs until [`Daemon::run`] gets a configuration.
    pub async fn new(opts: Options, telemetry: Telemetry, hooks: Hooks) -> Result<Self, Error> {
        let netlink = Netlink::new()?;
        let events = netlink.events(true)?;
        let interfaces = netlink.interfaces().await?;
        let record = VipRecord::load(&opts.state_dir);
        let sweep_pending = !record.trusted();
        let manager = VipManager::new(netlink.clone(), record);
        let report = manager.cleanup_stale(&[]).await?;
        if !report.removed.is_empty() {
            tracing::info!(removed = ?report.removed, "removed VIPs left by an earlier run");
        }
        // Rules left by an earlier life are removed before anything runs.
        let firewall = match crate::net::nft::Firewall::open() {
            Ok(mut fw) => match fw.apply(&std::collections::BTreeSet::new()) {
                Ok(()) => Some(fw),
                Err(e) => {
                    tracing::warn!(error = %e, "nftables unavailable: `accept: false` (no_accept) cannot be enforced");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "nftables unavailable: `accept: false` (no_accept) cannot be enforced");
                None
            }
        };
        let (obs_tx, obs_rx) = mpsc::channel(256);
        let (pkt_tx, pkt_rx) = mpsc::channel(64);
        let (milestone_tx, milestone_rx) = mpsc::unbounded_channel();
        let vips = VipWorker::spawn(&manager, telemetry.clone(), milestone_tx).await?;
        let (claim_tx, claim_rx) = mpsc::channel(16);
        let (negotiated_tx, negotiated_rx) = mpsc::unbounded_channel();
        Ok(Self {
            opts,
            router: Router::new(),
            io: BTreeMap::new(),
            unplaced: BTreeMap::new(),
            applied: Vec::new(),
            applied_hash: crds::vrrpnode::config_hash(&[]),
            vips,
            milestone_rx,
            takeovers: takeover::Takeovers::default(),
            netlink,
            events,
            interfaces,
            sockets: VrrpSockets::new(),
            rx_tasks: BTreeMap::new(),
            pkt_tx,
            pkt_rx,
            trackers: Trackers::new(obs_tx, TrackerOptions::default()),
            tracker_set: TrackerSet::default(),
            obs_rx,
            notifier: Notifier::new(),
            telemetry,
            since: BTreeMap::new(),
            hooks,
            dirty: true,
            dirty_instances: std::collections::BTreeSet::new(),
            last_publish: None,
            publish_at: None,
            trim: heap::TrimPolicy::default(),
            published: BTreeMap::new(),
            drop_logged: BTreeMap::new(),
            firewall,
            firewall_wanted: None,
            vmacs: std::collections::BTreeSet::new(),
            group_states: BTreeMap::new(),
            sweep_pending,
            addresses_settle_at: None,
            claims: BTreeMap::new(),
            claim_tx,
            claim_rx,
            held: BTreeMap::new(),
            negotiating: BTreeMap::new(),
            negotiated_tx,
            negotiated_rx,
            adoptions: BTreeMap::new(),
        })
    }

    /// Run until `shutdown` resolves: follow `desired`, run VRRP, then leave (priority-0
    /// adverts, VIPs removed, STOP notifications).
    pub async fn run(
        mut self,
        mut desired: watch::Receiver<Vec<ResolvedInstance>>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), Error> {
        tokio::pin!(shutdown);
        let initial = desired.borrow_and_update().clone();
        self.apply(Instant::now(), initial).await;
        self.telemetry.set_ready(true);
        let mut desired_open = true;
        let mut budget = PacketBudget::default();
        loop {
            self.drain_actions().await;
            if self.sweep_pending && !self.io.is_empty() {
                self.sweep_pending = false;
                self.sweep_stray_vips().await;
            }
            // Not after every packet of a run: once the run ends (or the queue is empty).
            if !budget.in_batch() || self.pkt_rx.is_empty() {
                self.publish_due(Instant::now());
            }
            let deadline = self.router.poll_timeout();
            let retry = self.held.values().map(|h| h.retry_at).min();
            let input = tokio::select! {
                // Packets before timers, in batches (see [`PacketBudget`]).
                biased;
                () = &mut shutdown => Input::Shutdown,
                Some((ifname, pkts)) = self.pkt_rx.recv(), if budget.allows_packet() => {
                    Input::Packets(ifname, pkts)
                }
                wake = sleep_until_opt(deadline) => Input::Timer(wake),
                ev = self.events.next_event() => Input::Net(ev),
                Some(obs) = self.obs_rx.recv() => Input::Tracker(obs),
                Some(p) = recv_opt(&mut self.hooks.pods) => Input::Pods(p),
                Some((i, m, at)) = self.milestone_rx.recv() => Input::Milestone(i, m, at),
                Some(n) = self.negotiated_rx.recv() => Input::Negotiated(Box::new(n)),
                Some(req) = self.claim_rx.recv() => Input::Claim(req),
                _ = sleep_until_opt(retry) => Input::RetryHeld,
                _ = sleep_until_opt(self.addresses_settle_at) => Input::AddressesSettled,
                _ = sleep_until_opt(self.publish_at) => Input::Publish,
                _ = sleep_until_opt(self.trim.due()) => Input::Trim,
                changed = desired.changed(), if desired_open => {
                    if changed.is_ok() { Input::Desired } else { Input::DesiredClosed }
                }
                () = std::future::ready(()), if !budget.allows_packet() => Input::Yield,
            };
            let now = Instant::now();
            if let Input::Packets(_, pkts) = &input {
                budget.packets(pkts.len());
            } else {
                budget.other();
            }
            match input {
                Input::Shutdown => break,
                Input::Yield => {}
                Input::Packets(ifname, pkts) => {
                    for pkt in &pkts {
                        self.on_packet(now, &ifname, pkt);
                    }
                }
                Input::Timer(wake) => {
                    if wake.is_late(LATE_WAKEUP) {
                        tracing::warn!(
                            late_ms = wake.lateness().as_millis() as u64,
                            "timer expired late (the agent was not scheduled in time)"
                        );
                    }
                    self.telemetry
                        .metrics()
                        .timer_fired(wake.lateness(), wake.is_late(LATE_WAKEUP));
                    self.router.handle_timeout(now);
                }
                Input::Net(Some(ev)) => self.on_net_event(now, ev).await,
                Input::Net(None) => {
                    return Err(Error::Config("the netlink event stream ended".into()));
                }
                Input::Tracker(obs) => self.on_tracker(now, obs),
                Input::Pods(p) => {
                    self.router
                        .handle_tracker(now, &p.tracker, Observation::PodsReady(p.ready));
                    self.dirty = true;
                }
                Input::Desired => {
                    let next = desired.borrow_and_update().clone();
                    self.apply(now, next).await;
                }
                Input::DesiredClosed => desired_open = false,
                Input::Claim(req) => self.on_claim_request(now, req).await,
                Input::Negotiated(n) => self.on_negotiated(*n).await,
                Input::RetryHeld => self.retry_held(now).await,
                Input::AddressesSettled => {
                    self.addresses_settle_at = None;
                    self.refresh_interfaces().await;
                    self.retry_unplaced(now).await;
                    self.dirty = true;
                }
                // Published at the top of the loop.
                Input::Publish => {}
                Input::Trim => {
                    if self.trim.fire(now) {
                        heap::trim();
                    }
                }
                Input::Milestone(instance, m, at) => {
                    if let Some(took) = self.takeovers.reached(&instance, m, at) {
                        self.telemetry.metrics().takeover(took);
                        tracing::info!(instance = %instance, took_ms = took.as_millis(), "takeover complete: last advert heard → first gratuitous ARP/NA");
                    }
                    match self.find(&instance) {
                        Some(id) => {
                            self.dirty_instances.insert(id);
                        }
                        None => self.dirty = true,
                    }
                }
            }
        }
        self.leave().await;
        Ok(())
    }

    /// After an untrusted VIP record: remove every configured VIP found bound on its
    /// interface that no instance of ours holds as MASTER now (an earlier life may have left
    /// it, unrecorded). Queued on the VIP worker after the masters' additions, so it never
    /// races them; a backup that becomes master later adds its VIPs after this removal.
    async fn sweep_stray_vips(&mut self) {
        let interfaces = match self.netlink.interfaces().await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list interfaces to sweep stray VIPs");
                return;
            }
        };
        let is_master = |id: &InstanceId| {
            self.router
                .get(*id)
                .is_some_and(|i| i.state() == State::Master)
        };
        let held: Vec<RecordedVip> = self
            .io
            .iter()
            .filter(|(id, _)| is_master(id))
            .flat_map(|(_, io)| io.vips.iter().map(RecordedVip::from))
            .collect();
        for (id, io) in &self.io {
            if is_master(id) {
                continue;
            }
            let configured: Vec<RecordedVip> = io.vips.iter().map(RecordedVip::from).collect();
            let found = strays(&configured, &held, &interfaces);
            if found.is_empty() {
                continue;
            }
            let vips: Vec<Vip> = io
                .vips
                .iter()
                .filter(|v| found.contains(&RecordedVip::from(*v)))
                .cloned()
                .collect();
            tracing::warn!(instance = %io.resolved.name, vips = ?found, "the VIP record was missing, empty or corrupt: removing configured VIPs bound without a master here");
            self.vips.remove(&io.resolved.name, vips);
        }
    }

    /// Leave: every master sends priority 0 and keeps its VIPs until it hears its successor
    /// (then [`crate::vrrp::RELEASE_GRACE`]; at most [`crate::vrrp::linger_bound`]), so a planned
    /// handover loses no packet; then the VIPs are removed and STOP notifications run.
    async fn leave(&mut self) {
        tracing::info!("stopping: leaving every VRRP instance");
        self.telemetry.set_ready(false);
        self.router.shutdown(Instant::now());
        self.drain_actions().await;
        if self.router.poll_timeout().is_some() {
            tracing::info!("masters hold their VIPs until a successor advertises");
        }
        // Only the instances holding VIPs have timers left: their release, or a successor's
        // advert (which shortens it). Nothing else is followed any more.
        while let Some(deadline) = self.router.poll_timeout() {
            tokio::select! {
                biased;
                Some((ifname, pkts)) = self.pkt_rx.recv() => {
                    let now = Instant::now();
                    for pkt in &pkts {
                        self.on_packet(now, &ifname, pkt);
                    }
                }
                _ = sleep_until_opt(Some(deadline)) => self.router.handle_timeout(Instant::now()),
            }
            self.drain_actions().await;
        }
        self.vips.flush().await;
        self.cleanup_vmacs().await;
        if !self.notifier.flush(NOTIFY_FLUSH).await {
            tracing::warn!("notify scripts still running at exit");
        }
        self.trackers.stop_all();
        self.claims.clear();
        self.publish_status();
    }

    /// Bring the running instances to `desired` (start, stop, update in place, restart).
    async fn apply(&mut self, now: Instant, desired: Vec<ResolvedInstance>) {
        let changes = diff(&self.applied, &desired);
        if changes.is_empty() && !self.applied.is_empty() {
            return;
        }
        match TrackerSet::from_instances(desired.iter()) {
            Ok(set) => {
                let report = self.trackers.apply(&set);
                if !report.started.is_empty() || !report.stopped.is_empty() {
                    tracing::info!(started = ?report.started, stopped = ?report.stopped, "trackers changed");
                }
                self.tracker_set = set;
            }
            Err(e) => {
                tracing::error!(error = %e, "tracker configuration rejected; trackers unchanged")
            }
        }
        for change in changes {
            match change {
                Change::Start(ri) => {
                    tracing::info!(instance = %ri.name, "starting instance");
                    self.start_instance(now, ri).await;
                }
                Change::Stop { name } => {
                    tracing::info!(instance = %name, "stopping instance: no longer configured");
                    self.stop_instance(now, &name, false);
                }
                Change::UpdateInPlace { new, fields } => {
                    tracing::info!(instance = %new.name, ?fields, "updating instance in place");
                    self.update_instance(now, new).await;
                }
                Change::Restart { new, fields } => {
                    tracing::info!(instance = %new.name, ?fields, "restarting instance: these fields cannot change on a running router");
                    self.stop_instance(now, &new.name, true);
                    self.drain_actions().await;
                    self.start_instance(now, new).await;
                }
            }
        }
        self.applied_hash = crds::vrrpnode::config_hash(&desired);
        self.trim.changed(now, desired.len());
        self.applied = desired;
        self.router.start(now);
        self.dirty = true;
        if !self.unused_vmacs().is_empty() {
            // The VIPs leave the virtual MAC interface before it goes.
            self.drain_actions().await;
            self.vips.flush().await;
            self.cleanup_vmacs().await;
        }
    }

    fn find(&self, name: &str) -> Option<InstanceId> {
        self.io
            .iter()
            .find(|(_, io)| io.resolved.name == name)
            .map(|(id, _)| *id)
    }

    /// Record `ri` as not runnable here for `reason`. Logged at ERROR once per reason: a retry
    /// after each address or link event that fails the same way is logged at debug only.
    fn unplace(
        &mut self,
        ri: ResolvedInstance,
        reason: String,
        previous: Option<String>,
        what: &str,
    ) {
        if previous.as_deref() == Some(reason.as_str()) {
            tracing::debug!(instance = %ri.name, %reason, "{what} (still)");
        } else {
            tracing::error!(instance = %ri.name, %reason, "{what}");
        }
        self.unplaced.insert(ri.name.clone(), (ri, reason));
    }

    async fn start_instance(&mut self, now: Instant, ri: ResolvedInstance) {
        let previous = self.unplaced.remove(&ri.name).map(|(_, why)| why);
        self.held.remove(&ri.name);
        self.negotiating.remove(&ri.name);
        if ri.use_vmac
            && let Err(reason) = self.ensure_vmac(&ri).await
        {
            self.unplace(
                ri,
                reason,
                previous,
                "cannot create the virtual MAC interface",
            );
            return;
        }
        let placement = match place(&ri, &self.interfaces) {
            Ok(p) => p,
            Err(reason) => {
                self.claims.remove(&ri.name);
                self.unplace(ri, reason, previous, "cannot run instance on this host");
                return;
            }
        };
        let key = ClaimKey::new(&placement.ifname, placement.family, ri.virtual_router_id);
        let own = self
            .claims
            .get(&ri.name)
            .is_some_and(|c| c.key() == &key && c.is_held());
        if !own {
            self.claims.remove(&ri.name);
            match Claim::acquire(&key, &ri.name, self.claim_tx.clone()) {
                Ok(claim) => {
                    self.claims.insert(ri.name.clone(), claim);
                }
                Err(ClaimError::Held) if ri.adopt_static => {
                    self.negotiate(&ri, &placement, key);
                    return;
                }
                Err(ClaimError::Held) => {
                    let reason = format!(
                        "{key} is run by another agent on this host; this instance runs once that agent stops, or takes it over with the VirtualIP annotation {}: \"true\"",
                        crds::virtualip::ADOPT_STATIC_ANNOTATION
                    );
                    tracing::warn!(instance = %ri.name, "{reason}");
                    self.hold(now, ri, reason, None, None, HELD_RETRY);
                    return;
                }
                Err(ClaimError::Io(e)) => {
                    // A safety net, not a precondition: run the instance anyway.
                    tracing::warn!(instance = %ri.name, claim = %key, error = %e, "cannot bind the instance's claim socket; running it without");
                }
            }
        }
        if ri.adopt_static && !self.adoptions.contains_key(&ri.name) {
            self.adoptions.insert(
                ri.name.clone(),
                Adoption {
                    phase: AdoptionPhase::NoStaticInstance,
                    message: Some(format!(
                        "no other agent on this node runs {key}; the instance runs here from the start"
                    )),
                },
            );
        }
        match self.add_instance(now, &ri) {
            Ok(_) => self.feed_interface_trackers(now),
            Err(reason) => {
                self.claims.remove(&ri.name);
                self.unplace(ri, reason, previous, "cannot run instance on this host");
            }
        }
    }

    /// keepalived's `use_vmac`: the macvlan `vrrp.VRID` with the RFC's virtual MAC on the
    /// instance's interface (private mode, up), and the sysctls keepalived sets so that only
    /// the virtual MAC answers ARP for the VIPs and the base interface keeps its own address.
    async fn ensure_vmac(&mut self, ri: &ResolvedInstance) -> Result<(), String> {
        let base = place(ri, &self.interfaces)?;
        let name = place::vmac_name(base.family, ri.virtual_router_id);
        if !self.interfaces.iter().any(|i| i.name == name) {
            let mac = place::virtual_mac(base.family, ri.virtual_router_id);
            self.netlink
                .add_macvlan(&name, base.ifindex, mac)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(instance = %ri.name, interface = %name, base = %base.ifname, "created the virtual MAC interface");
            self.vmacs.insert(name.clone());
        }
        for (ifname, key, value) in [
            (name.as_str(), "accept_local", "1"),
            (name.as_str(), "arp_ignore", "1"),
            (name.as_str(), "rp_filter", "0"),
            (base.ifname.as_str(), "arp_ignore", "1"),
            (base.ifname.as_str(), "arp_filter", "1"),
            // ARP requests the host sends from the base interface (e.g. to answer a client
            // that pinged a VIP) name the base's own address, so no client learns the
            // base MAC for a VIP.
            (base.ifname.as_str(), "arp_announce", "2"),
        ] {
            let path = format!("/proc/sys/net/ipv4/conf/{ifname}/{key}");
            if let Err(e) = std::fs::write(&path, value) {
                tracing::warn!(%path, error = %e, "cannot set a virtual MAC sysctl");
            }
        }
        self.refresh_interfaces().await;
        Ok(())
    }

    /// The virtual MAC interfaces this agent created that no running instance uses.
    fn unused_vmacs(&self) -> Vec<String> {
        let used: std::collections::BTreeSet<&str> = self
            .io
            .iter()
            .filter(|(id, _)| {
                self.router
                    .get(**id)
                    .is_some_and(|i| i.state() != State::Stop)
            })
            .map(|(_, io)| io.placement.vip_ifname.as_str())
            .collect();
        self.vmacs
            .iter()
            .filter(|n| !used.contains(n.as_str()))
            .cloned()
            .collect()
    }

    /// Delete the virtual MAC interfaces this agent created that no instance uses any more.
    async fn cleanup_vmacs(&mut self) {
        let unused = self.unused_vmacs();
        if unused.is_empty() {
            return;
        }
        self.refresh_interfaces().await;
        for name in unused {
            self.vmacs.remove(&name);
            let Some(index) = self
                .interfaces
                .iter()
                .find(|i| i.name == name)
                .map(|i| i.index)
            else {
                continue;
            };
            match self.netlink.delete_link(index).await {
                Ok(()) => tracing::info!(interface = %name, "deleted the virtual MAC interface"),
                Err(e) => {
                    tracing::warn!(interface = %name, error = %e, "cannot delete the virtual MAC interface")
                }
            }
        }
    }

    /// Park an instance another agent runs; it is retried after `retry`.
    fn hold(
        &mut self,
        now: Instant,
        ri: ResolvedInstance,
        reason: String,
        adoption: Option<Adoption>,
        offer: Option<handover::Offer>,
        retry: Duration,
    ) {
        self.held.insert(
            ri.name.clone(),
            Held {
                resolved: ri,
                reason,
                adoption,
                offer,
                retry_at: now + retry,
            },
        );
        self.dirty = true;
    }

    /// Ask the holder of `key` to hand `ri` over; the answer arrives as `Input::Negotiated`.
    fn negotiate(&mut self, ri: &ResolvedInstance, placement: &Placement, key: ClaimKey) {
        let view =
            crds::vrrpnode::adoption_view(ri, &placement.ifname, &placement.primary.to_string());
        let hash = crds::vrrpnode::adoption_hash(&view);
        tracing::info!(instance = %ri.name, claim = %key, "another agent on this host runs this VRID: asking it to hand the instance over");
        self.negotiating.insert(ri.name.clone(), ri.clone());
        let tx = self.negotiated_tx.clone();
        let resolved = ri.clone();
        tokio::spawn(async move {
            let result = handover::negotiate(&key, &view, &hash).await;
            let _ = tx.send(Negotiated {
                resolved,
                key,
                result,
            });
        });
        self.dirty = true;
    }

    /// A hand-over negotiation ended.
    async fn on_negotiated(&mut self, n: Negotiated) {
        let now = Instant::now();
        let name = n.resolved.name.clone();
        let wanted = self.applied.iter().find(|r| r.name == name).cloned();
        let current = self.negotiating.get(&name) == Some(&n.resolved);
        if current {
            self.negotiating.remove(&name);
        }
        match n.result {
            handover::Negotiation::Adopted {
                offer,
                inherited,
                at,
            } => {
                // The holder has stopped: whatever we want now, we run what it handed over.
                let ri = n.resolved;
                let claim = match Claim::acquire(&n.key, &name, self.claim_tx.clone()) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::warn!(instance = %name, claim = %n.key, error = ?e, "took the instance over but cannot bind its claim");
                        None
                    }
                };
                let id = match self.add_instance(now, &ri) {
                    Ok(id) => id,
                    Err(reason) => {
                        tracing::error!(instance = %name, %reason, "the other agent handed the instance over, but it cannot run here");
                        self.unplaced.insert(name, (ri, reason));
                        return;
                    }
                };
                if let Some(c) = claim {
                    self.claims.insert(name.clone(), c);
                }
                let scope = handover::tracker_scope(&ri);
                let inheritance = inherited.to_core(at, scope.as_deref());
                self.router.start_inherited(now, id, &inheritance);
                self.feed_interface_trackers(now);
                tracing::info!(instance = %name, from = %offer.instance, state = %inherited.state, priority = offer.effective_priority, "took over the running instance of the other agent on this host");
                self.adoptions.insert(
                    name.clone(),
                    Adoption {
                        phase: AdoptionPhase::Adopted,
                        message: Some(format!(
                            "took over the static instance {} in state {} (priority {}) without a state change",
                            offer.instance, inherited.state, offer.effective_priority
                        )),
                    },
                );
                self.drain_actions().await;
                match wanted {
                    Some(w) if w != ri => self.update_instance(now, w).await,
                    Some(_) => {}
                    None => self.stop_instance(now, &name, false),
                }
            }
            _ if !current => {}
            handover::Negotiation::Free => {
                if let Some(w) = wanted {
                    self.start_instance(now, w).await;
                }
            }
            handover::Negotiation::Mismatch { offer, differences } => {
                let message = format!(
                    "the static instance {} on this node differs in {}; nothing changed, it keeps running there",
                    offer.instance,
                    if differences.is_empty() {
                        "its configuration".to_string()
                    } else {
                        differences.join(", ")
                    }
                );
                tracing::warn!(instance = %name, "{message}");
                self.hold(
                    now,
                    n.resolved,
                    message.clone(),
                    Some(Adoption {
                        phase: AdoptionPhase::Mismatch,
                        message: Some(message),
                    }),
                    Some(offer),
                    HELD_RETRY,
                );
            }
            handover::Negotiation::Failed(why) => {
                tracing::warn!(instance = %name, reason = %why, "hand-over failed; nothing changed, retrying");
                self.hold(
                    now,
                    n.resolved,
                    why.clone(),
                    Some(Adoption {
                        phase: AdoptionPhase::Failed,
                        message: Some(why),
                    }),
                    None,
                    HELD_RETRY,
                );
            }
        }
        self.dirty = true;
    }

    /// Try the held instances whose time has come again.
    async fn retry_held(&mut self, now: Instant) {
        let due: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.retry_at <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let Some(h) = self.held.remove(&name) else {
                continue;
            };
            let placement = place(&h.resolved, &self.interfaces);
            let key = placement
                .as_ref()
                .map(|p| ClaimKey::new(&p.ifname, p.family, h.resolved.virtual_router_id));
            match key {
                // Still held and not ours to take over: only refresh the retry time, quietly.
                Ok(k) if !h.resolved.adopt_static => {
                    match Claim::acquire(&k, &name, self.claim_tx.clone()) {
                        Ok(claim) => {
                            tracing::info!(instance = %name, claim = %k, "the other agent released this VRID: starting the instance");
                            self.claims.insert(name.clone(), claim);
                            self.start_instance(now, h.resolved).await;
                        }
                        Err(_) => {
                            let mut h = h;
                            h.retry_at = now + HELD_RETRY;
                            self.held.insert(name, h);
                        }
                    }
                }
                _ => self.start_instance(now, h.resolved).await,
            }
        }
        self.router.start(now);
        self.dirty = true;
    }

    /// A request from one of our claims: describe an instance, or hand it over.
    async fn on_claim_request(&mut self, now: Instant, req: ClaimRequest) {
        match req {
            ClaimRequest::Describe { instance, reply } => {
                let _ = reply.send(self.offer(&instance));
            }
            ClaimRequest::HandOver {
                instance,
                hash,
                reply,
            } => {
                let result = self.hand_over(now, &instance, &hash).await;
                let _ = reply.send(result);
            }
        }
    }

    /// What we say about a running instance to an agent that wants to take it over.
    fn offer(&self, name: &str) -> Option<handover::Offer> {
        let id = self.find(name)?;
        let (inst, io) = (self.router.get(id)?, self.io.get(&id)?);
        let view = crds::vrrpnode::adoption_view(
            &io.resolved,
            &io.placement.ifname,
            &io.placement.primary.to_string(),
        );
        Some(handover::Offer {
            instance: name.to_string(),
            state: inst.state().to_crd().to_string(),
            effective_priority: inst.effective_priority(),
            hash: crds::vrrpnode::adoption_hash(&view),
            view,
        })
    }

    /// Stop a running instance without leaving and return what the successor continues from.
    async fn hand_over(
        &mut self,
        now: Instant,
        name: &str,
        hash: &str,
    ) -> Result<handover::Inherited, String> {
        let offer = self
            .offer(name)
            .ok_or_else(|| format!("instance {name} is not running"))?;
        if offer.hash != hash {
            return Err(format!(
                "instance {name} changed since it was described; describe it again"
            ));
        }
        let id = self
            .find(name)
            .ok_or_else(|| format!("instance {name} is not running"))?;
        let (resolved, vips) = match self.io.get(&id) {
            Some(io) => (io.resolved.clone(), io.vips.clone()),
            None => return Err(format!("instance {name} is not running")),
        };
        let inheritance = self
            .router
            .hand_over(now, id)
            .ok_or_else(|| format!("instance {name} is not running"))?;
        // The VIPs stay bound; they are the successor's now, so our record lets go of them
        // (durably, before the successor hears of it).
        self.vips.forget(name, vips);
        self.vips.flush().await;
        self.drain_actions().await;
        self.telemetry.metrics().remove_instance(name);
        // The claim's task releases the name itself, then answers; it must not be aborted.
        if let Some(claim) = self.claims.remove(name) {
            claim.detach();
        }
        let scope = handover::tracker_scope(&resolved);
        let inherited =
            handover::Inherited::from_core(&inheritance, Instant::now(), scope.as_deref());
        tracing::info!(instance = %name, state = %inherited.state, "handing the instance over to another agent on this host (no priority-0 advert, VIPs stay)");
        self.hold(
            now,
            resolved,
            "handed over to another agent on this host".into(),
            None,
            None,
            HANDED_OVER_RETRY,
        );
        Ok(inherited)
    }

    /// Place the instance, open its socket and add it to the router (not started).
    fn add_instance(&mut self, now: Instant, ri: &ResolvedInstance) -> Result<InstanceId, String> {
        let mut placement = place(ri, &self.interfaces)?;
        if ri.use_vmac {
            let name = place::vmac_name(placement.family, ri.virtual_router_id);
            let vmac = self
                .interfaces
                .iter()
                .find(|i| i.name == name)
                .ok_or_else(|| format!("the virtual MAC interface {name} does not exist"))?;
            placement = place::place_vmac(placement, vmac, ri.vmac_xmit_base)?;
        }
        let cfg = self.core_config(ri, &placement)?;
        let vips = build_vips(ri, &placement)?;
        let notify = NotifyScripts::from_resolved(&ri.notify).map_err(|e| e.to_string())?;
        self.ensure_socket(&placement).map_err(|e| e.to_string())?;
        let id = self.router.add(cfg).map_err(|e| e.to_string())?;
        let (link_up, ifname) = (placement.link_up, placement.ifname.clone());
        self.io.insert(
            id,
            InstanceIo {
                resolved: ri.clone(),
                placement,
                vips,
                notify,
            },
        );
        if !link_up {
            self.router.handle_link(now, &ifname, false);
        }
        Ok(id)
    }

    /// The core's configuration of `ri` placed on this host. Unicast peers that are this
    /// host's own addresses (one peer list written for every node) are left out with a
    /// warning: a node never advertises to itself.
    fn core_config(
        &self,
        ri: &ResolvedInstance,
        placement: &Placement,
    ) -> Result<InstanceConfig, String> {
        let (peers, own) = place::split_own_peers(ri, placement, &self.interfaces);
        if !own.is_empty() {
            tracing::warn!(instance = %ri.name, own = ?own, "unicast_peer lists this host's own address; it is not a peer and no advert is sent to it");
        }
        let mut local = ri.clone();
        local.unicast_peers = peers;
        let mtu = self
            .interfaces
            .iter()
            .find(|i| i.index == placement.ifindex)
            .and_then(|i| i.mtu)
            .unwrap_or(crds::validate::STANDARD_MTU);
        let moved = place::fit_advert(&mut local, placement.family, mtu);
        if !moved.is_empty() {
            tracing::warn!(instance = %ri.name, mtu, moved = ?moved, "({}) Number of VIPs ({}) exceeds maximum/space available in packet (max {} addresses) - excess moved to excluded addresses", ri.name, ri.addresses.len(), local.addresses.len());
        }
        InstanceConfig::from_resolved(&local, &placement.ifname, placement.primary)
            .map_err(|e| e.to_string())
    }

    /// Stop an instance (priority-0 advert and VIP removal when master). `keep_claim`: it is
    /// about to start again (a restart), so its claim is not released in between.
    fn stop_instance(&mut self, now: Instant, name: &str, keep_claim: bool) {
        self.unplaced.remove(name);
        self.held.remove(name);
        self.negotiating.remove(name);
        if !keep_claim {
            self.claims.remove(name);
            self.adoptions.remove(name);
        }
        if let Some(id) = self.find(name) {
            self.router.remove(now, id);
            self.telemetry.metrics().remove_instance(name);
            self.since.remove(name);
        }
    }

    async fn update_instance(&mut self, now: Instant, new: ResolvedInstance) {
        let Some(id) = self.find(&new.name) else {
            // Was unplaced before: try again from scratch.
            self.start_instance(now, new).await;
            return;
        };
        let Some(io) = self.io.get(&id) else { return };
        let placement = io.placement.clone();
        let new_vips = match build_vips(&new, &placement) {
            Ok(v) => v,
            Err(reason) => {
                tracing::error!(instance = %new.name, %reason, "configuration update rejected; the instance keeps its old configuration");
                return;
            }
        };
        let old_vips = io.vips.clone();
        let addresses_changed = old_vips != new_vips;
        if addresses_changed && let Some(io) = self.io.get_mut(&id) {
            // While the core's address changes are carried out, both the removed and the
            // added VIPs must be known by address.
            io.vips = old_vips
                .iter()
                .chain(new_vips.iter().filter(|v| !old_vips.contains(v)))
                .cloned()
                .collect();
        }
        let updated = self
            .core_config(&new, &placement)
            .and_then(|cfg| self.router.update(now, id, cfg).map_err(|e| e.to_string()));
        if addresses_changed {
            if matches!(updated, Ok(crate::vrrp::ConfigUpdate::Applied)) {
                self.drain_actions().await;
            }
            if let Some(io) = self.io.get_mut(&id) {
                io.vips = if matches!(updated, Ok(crate::vrrp::ConfigUpdate::Applied)) {
                    new_vips
                } else {
                    old_vips
                };
            }
        }
        match updated {
            Ok(crate::vrrp::ConfigUpdate::Applied) => {
                if let Some(io) = self.io.get_mut(&id) {
                    match NotifyScripts::from_resolved(&new.notify) {
                        Ok(n) => io.notify = n,
                        Err(e) => {
                            tracing::error!(instance = %new.name, error = %e, "notify scripts rejected; keeping the old ones")
                        }
                    }
                    io.resolved = new;
                }
                self.feed_interface_trackers(now);
            }
            Ok(crate::vrrp::ConfigUpdate::RestartRequired(fields)) => {
                tracing::info!(instance = %new.name, ?fields, "restarting instance: the core cannot change these in place");
                self.stop_instance(now, &new.name, true);
                self.drain_actions().await;
                self.start_instance(now, new).await;
            }
            Err(reason) => {
                tracing::error!(instance = %new.name, %reason, "configuration update rejected; the instance keeps its old configuration");
            }
        }
    }

    /// Tell the core the current state of every tracked interface.
    fn feed_interface_trackers(&mut self, now: Instant) {
        for (name, up) in self.link_states() {
            if self
                .router
                .tracks(crate::vrrp::TrackerKind::Interface, &name)
            {
                self.router
                    .handle_tracker(now, &name, Observation::Link(up));
            }
        }
    }

    /// Every interface's name and whether its link is up (keepalived's test).
    fn link_states(&self) -> Vec<(String, bool)> {
        self.interfaces
            .iter()
            .map(|i| (i.name.clone(), i.state.is_up()))
            .collect()
    }

    fn ensure_socket(&mut self, p: &Placement) -> Result<(), Error> {
        let (socket, new) = self.sockets.get_or_open(&p.ifname, p.ifindex, p.family)?;
        let key = (p.ifindex, family_key(p.family));
        if new || self.rx_tasks.get(&key).is_none_or(JoinHandle::is_finished) {
            let tx = self.pkt_tx.clone();
            let ifname = p.ifname.clone();
            self.rx_tasks
                .insert(key, tokio::spawn(receive_loop(socket, ifname, tx)));
        }
        Ok(())
    }

    fn on_packet(&mut self, now: Instant, ifname: &str, pkt: &ReceivedPacket) {
        if pkt.truncated {
            self.telemetry
                .metrics()
                .advert_dropped(ifname, crate::vrrp::DropReason::Truncated);
            return;
        }
        let rx = Received {
            interface: ifname,
            src: pkt.src,
            dst: pkt.dst,
            ttl: pkt.ttl,
        };
        let delivery = self.router.handle_packet(now, &rx, &pkt.payload);
        if let Delivery::Dropped {
            instance: Some(id),
            reason,
        } = delivery
        {
            self.log_drop(now, id, reason, pkt);
        }
        let name = match delivery {
            Delivery::Accepted(id) => self.io.get(&id).map(|io| io.resolved.name.as_str()),
            Delivery::Dropped { .. } => None,
        };
        self.telemetry.metrics().delivery(ifname, &delivery, name);
        // Only the instance the packet was for can show differently; a transition it causes
        // marks everything dirty on its own.
        if let Delivery::Accepted(id)
        | Delivery::Dropped {
            instance: Some(id), ..
        } = delivery
        {
            self.dirty_instances.insert(id);
        }
    }

    /// Log a dropped advert of one of our VRIDs in keepalived's words, at most once a minute
    /// per instance, sender and reason (keepalived logs each kind of error once).
    fn log_drop(
        &mut self,
        now: Instant,
        id: InstanceId,
        reason: crate::vrrp::DropReason,
        pkt: &ReceivedPacket,
    ) {
        use crate::vrrp::DropReason as R;
        let Some(io) = self.io.get(&id) else { return };
        let name = &io.resolved.name;
        let src = pkt.src;
        let text = match reason {
            R::UnknownPeer => format!("({name}) unicast source address {src} not a unicast peer"),
            R::Ttl => format!(
                "({name}) invalid TTL/HL from {src}. Received {} and expect 255",
                pkt.ttl
            ),
            R::AuthMismatch => format!("({name}) received an invalid passwd from {src}!"),
            R::IntervalMismatch => format!("({name}) advertisement interval mismatch from {src}"),
            R::VersionMismatch => format!("({name}) wrong version from {src}"),
            _ => return,
        };
        let key = (name.clone(), src, reason.label());
        if self
            .drop_logged
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < DROP_LOG_EVERY)
        {
            return;
        }
        self.drop_logged.insert(key, now);
        tracing::warn!(instance = %name, %src, reason = reason.label(), "{text}");
    }

    async fn on_net_event(&mut self, now: Instant, ev: NetEvent) {
        match ev {
            NetEvent::Link { ifname, state, .. } => {
                let up = state.is_up();
                tracing::info!(interface = %ifname, up, "link state changed");
                self.refresh_interfaces().await;
                self.router.handle_link(now, &ifname, up);
            }
            NetEvent::Overrun => {
                tracing::warn!("netlink events were lost; re-reading interfaces");
                self.refresh_interfaces().await;
                for (name, up) in self.link_states() {
                    self.router.handle_link(now, &name, up);
                }
            }
            NetEvent::LinkRemoved { .. } => {
                self.refresh_interfaces().await;
                self.retry_unplaced(now).await;
            }
            // Binding a bulk of VIPs (ours or another daemon's) brings one event per address:
            // re-reading every interface for each would cost O(addresses²) in this loop and
            // delay adverts, so the re-read waits until the changes settle.
            NetEvent::AddressAdded { .. } | NetEvent::AddressRemoved { .. } => {
                self.addresses_settle_at.get_or_insert(now + ADDRESS_SETTLE);
            }
        }
        self.dirty = true;
    }

    async fn refresh_interfaces(&mut self) {
        match self.netlink.interfaces().await {
            Ok(i) => self.interfaces = i,
            Err(e) => tracing::warn!(error = %e, "cannot list interfaces"),
        }
    }

    /// Instances that could not be placed may fit now that interfaces or addresses changed.
    async fn retry_unplaced(&mut self, now: Instant) {
        let waiting: Vec<ResolvedInstance> = self
            .unplaced
            .values()
            .filter(|(ri, _)| place(ri, &self.interfaces).is_ok())
            .map(|(ri, _)| ri.clone())
            .collect();
        for ri in waiting {
            let name = ri.name.clone();
            self.start_instance(now, ri).await;
            if !self.unplaced.contains_key(&name) {
                tracing::info!(instance = %name, "interface now available; instance started");
            }
        }
        self.router.start(now);
    }

    fn on_tracker(&mut self, now: Instant, obs: TrackObservation) {
        self.telemetry.metrics().observe(&obs);
        let (name, core_obs) = match &obs {
            TrackObservation::Script {
                tracker, success, ..
            } => (tracker.clone(), Observation::ScriptResult(*success)),
            TrackObservation::ProcessCount { tracker, count } => {
                (tracker.clone(), Observation::ProcessCount(*count))
            }
            // keepalived reads a missing or unreadable file as 0.
            TrackObservation::FileValue { tracker, value } => {
                (tracker.clone(), Observation::FileValue(value.unwrap_or(0)))
            }
            TrackObservation::Http {
                tracker, success, ..
            } => (tracker.clone(), Observation::HttpResult(*success)),
        };
        self.router.handle_tracker(now, &name, core_obs);
        self.dirty = true;
    }

    /// Perform every queued core action.
    async fn drain_actions(&mut self) {
        while let Some(ra) = self.router.poll_action() {
            let Some(io) = self.io.get(&ra.instance) else {
                continue;
            };
            let name = io.resolved.name.clone();
            match ra.action {
                Action::SendAdvert {
                    src, dst, bytes, ..
                } => {
                    let socket = self.sockets.get(io.placement.ifindex, io.placement.family);
                    // keepalived's unicast_ttl applies to unicast adverts only.
                    let ttl = if dst.is_multicast() {
                        crate::net::VRRP_TTL
                    } else {
                        io.resolved.unicast_ttl.unwrap_or(crate::net::VRRP_TTL)
                    };
                    match socket {
                        Some(s) => match s.send_with_ttl(src, dst, &bytes, ttl).await {
                            Ok(()) => self.telemetry.metrics().advert_sent(&name),
                            Err(e) => {
                                tracing::warn!(instance = %name, %dst, error = %e, "cannot send advert")
                            }
                        },
                        None => tracing::warn!(instance = %name, "no socket for advert"),
                    }
                }
                Action::AddVips(nets) => {
                    let vips = select_vips(&io.vips, &nets);
                    self.vips.add(&name, vips);
                    if self.takeovers.measuring(&name, vips::Milestone::Bound) {
                        self.vips.milestone(&name, vips::Milestone::Bound);
                    }
                }
                Action::RemoveVips(nets) => {
                    let vips = select_vips(&io.vips, &nets);
                    self.vips.remove(&name, vips);
                }
                Action::SendGratuitous {
                    addresses,
                    repeat,
                    kind,
                } => {
                    if matches!(kind, GratuitousKind::Initial) {
                        tracing::info!(instance = %name, "sending gratuitous ARP/NA for the virtual addresses");
                    }
                    // Queued behind the VIP additions, so nothing is announced before it is bound.
                    self.vips.announce(vips::Announcement {
                        instance: name.clone(),
                        ifindex: io.placement.vip_ifindex,
                        addresses,
                        repeat,
                    });
                    if self.takeovers.measuring(&name, vips::Milestone::Announced) {
                        self.vips.milestone(&name, vips::Milestone::Announced);
                    }
                }
                Action::StateChanged {
                    from,
                    to,
                    reason,
                    priority,
                } => {
                    self.on_state_changed(ra.instance, from, to, reason, priority);
                }
            }
        }
        let live: Vec<InstanceId> = self
            .io
            .keys()
            .copied()
            .filter(|id| self.router.get(*id).is_none())
            .collect();
        for id in live {
            if let Some(io) = self.io.remove(&id) {
                self.notifier
                    .forget(&NotifyTarget::Instance(io.resolved.name.clone()));
            }
        }
        self.close_unused_sockets();
        self.sync_firewall();
    }

    /// keepalived's `no_accept`: a master that is not the address owner (priority 255) and
    /// has `accept: false` drops the packets addressed to its VIPs.
    fn sync_firewall(&mut self) {
        let drop: std::collections::BTreeSet<std::net::IpAddr> = self
            .io
            .iter()
            .filter(|(id, io)| {
                !io.resolved.accept
                    && io.resolved.priority != 255
                    && self
                        .router
                        .get(**id)
                        .is_some_and(|i| i.state() == State::Master)
            })
            .flat_map(|(_, io)| io.vips.iter().map(|v| v.address().addr()))
            .collect();
        if self.firewall_wanted.as_ref() == Some(&drop) {
            return;
        }
        self.firewall_wanted = Some(drop.clone());
        match &mut self.firewall {
            Some(fw) => {
                if let Err(e) = fw.apply(&drop) {
                    tracing::error!(error = %e, addresses = ?drop, "cannot update the no_accept rules");
                }
            }
            None if !drop.is_empty() => {
                tracing::error!(addresses = ?drop, "accept is false but nftables is unavailable: traffic to these VIPs is not dropped");
            }
            None => {}
        }
    }

    fn on_state_changed(
        &mut self,
        id: InstanceId,
        from: State,
        to: State,
        reason: crate::vrrp::Reason,
        priority: u8,
    ) {
        let Some(io) = self.io.get(&id) else { return };
        let name = io.resolved.name.clone();
        // keepalived's words, which operators grep for.
        match to {
            State::Master => {
                tracing::info!(instance = %name, %reason, "({name}) Entering MASTER STATE")
            }
            State::Backup => {
                tracing::info!(instance = %name, %reason, "({name}) Entering BACKUP STATE")
            }
            State::Fault => {
                tracing::warn!(instance = %name, %reason, "({name}) Entering FAULT STATE")
            }
            State::Init => {
                tracing::info!(instance = %name, %reason, "({name}) Entering INIT STATE")
            }
            State::Stop => tracing::info!(instance = %name, %reason, "({name}) Stopped"),
        }
        if to == State::Master && from == State::Backup {
            let heard = self.router.get(id).and_then(|i| i.last_heard());
            self.takeovers.start(&name, Instant::now(), heard);
        } else {
            self.takeovers.end(&name);
        }
        let m = self.telemetry.metrics();
        m.transition(&name, from.to_crd(), to.to_crd(), reason.label());
        m.set_state(&name, to.to_crd());
        m.set_effective_priority(&name, priority);
        self.since
            .insert(name.clone(), (chrono::Utc::now(), reason.to_string()));
        let notify_state = match to {
            State::Master => Some(NotifyState::Master),
            State::Backup => Some(NotifyState::Backup),
            State::Fault => Some(NotifyState::Fault),
            State::Stop => Some(NotifyState::Stop),
            State::Init => None,
        };
        // A hand-over changes nothing on the node: no notify scripts on either side.
        let handover = matches!(
            reason,
            crate::vrrp::Reason::Inherited { .. } | crate::vrrp::Reason::HandedOver
        );
        if let Some(ns) = notify_state.filter(|_| !handover) {
            self.notifier.notify(&name, &io.notify, ns, priority);
        }
        if let (Some(events), Some(vip)) = (&self.hooks.events, &io.resolved.virtual_ip) {
            events.transition(vip, to.to_crd(), &reason.to_string());
        }
        if let Some(group) = io.resolved.sync_group.clone() {
            self.notify_group(&group);
        }
        self.dirty_instances.insert(id);
    }

    /// Run a sync group's own notify scripts when the group as a whole changed state (every
    /// member MASTER, every member BACKUP, any member FAULT, every member stopped), as
    /// keepalived does: `notify_*` as written, `notify` with `GROUP NAME STATE 0`.
    fn notify_group(&mut self, group: &str) {
        let mut members: Vec<(&String, State, &crds::vrrpnode::ResolvedNotify)> = self
            .io
            .iter()
            .filter(|(_, io)| io.resolved.sync_group.as_deref() == Some(group))
            .filter_map(|(id, io)| {
                let st = self.router.get(*id)?.state();
                Some((&io.resolved.name, st, &io.resolved.sync_group_notify))
            })
            .collect();
        members.sort_by(|a, b| a.0.cmp(b.0));
        let states: Vec<State> = members.iter().map(|m| m.1).collect();
        let Some(state) = group_state(&states) else {
            return;
        };
        if self.group_states.get(group) == Some(&state) {
            return;
        }
        self.group_states.insert(group.to_string(), state);
        tracing::info!(group, state = %state, "VRRP_Group({group}) entering {state} state");
        let Some(scripts) = members.iter().map(|m| m.2).find(|n| !n.is_empty()) else {
            return;
        };
        match NotifyScripts::from_resolved(scripts) {
            Ok(scripts) => self.notifier.notify_group(group, &scripts, state),
            Err(e) => tracing::error!(group, error = %e, "sync group notify scripts rejected"),
        }
    }

    fn close_unused_sockets(&mut self) {
        let in_use: Vec<(u32, u8)> = self
            .io
            .values()
            .map(|io| (io.placement.ifindex, family_key(io.placement.family)))
            .collect();
        let open: Vec<(u32, u8)> = self.rx_tasks.keys().copied().collect();
        for key in open {
            if !in_use.contains(&key) {
                if let Some(task) = self.rx_tasks.remove(&key) {
                    task.abort();
                }
                let fam = if key.1 == 4 { Family::V4 } else { Family::V6 };
                self.sockets.close(key.0, fam);
            }
        }
    }

    /// What `/status` and the VRRPNode status show for running instance `id`.
    fn instance_entry(&self, id: InstanceId) -> Option<(InstanceSnapshot, InstanceStatus)> {
        let io = self.io.get(&id)?;
        let inst = self.router.get(id)?;
        let mut st = inst.status();
        if let Some(t) = self.takeovers.get(&io.resolved.name) {
            st.previous_master = t.previous_master.map(|a| a.to_string());
            st.takeover = Some(t.timing());
        }
        st.adoption = self.adoptions.get(&io.resolved.name).cloned();
        let since = self.since.get(&io.resolved.name);
        st.last_transition_time =
            since.map(|(t, _)| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        let snapshot = InstanceSnapshot {
            name: io.resolved.name.clone(),
            state: st.state.unwrap_or(crds::vrrpnode::VrrpState::Init),
            effective_priority: inst.effective_priority(),
            base_priority: io.resolved.priority,
            vips: if inst.state() == State::Master {
                io.resolved.addresses.clone()
            } else {
                vec![]
            },
            master_address: st.master_address.clone(),
            trackers: st.trackers.iter().map(tracker_snapshot).collect(),
            since: st.last_transition_time.clone(),
            reason: st.reason.clone(),
        };
        Some((snapshot, st))
    }

    /// Publish now when something may have changed and the last publication is at least
    /// [`PUBLISH_EVERY`] old; otherwise hold it back until then.
    fn publish_due(&mut self, now: Instant) {
        if !self.dirty && self.dirty_instances.is_empty() {
            self.publish_at = None;
            return;
        }
        if let Some(last) = self.last_publish
            && now < last + PUBLISH_EVERY
        {
            self.publish_at = Some(last + PUBLISH_EVERY);
            return;
        }
        self.publish_at = None;
        if self.publish_status() {
            self.last_publish = Some(now);
        }
    }

    /// Publish `/status` and (in-cluster) the VRRPNode status when something changed; returns
    /// whether it did. Only the instances marked in `dirty_instances` are looked at again
    /// unless `dirty` says more changed, so a packet or a transition costs O(log n) until
    /// something shows differently.
    fn publish_status(&mut self) -> bool {
        let full = std::mem::take(&mut self.dirty);
        let ids: Vec<InstanceId> = if full {
            self.published.retain(|id, _| self.io.contains_key(id));
            self.io.keys().copied().collect()
        } else {
            std::mem::take(&mut self.dirty_instances)
                .into_iter()
                .collect()
        };
        self.dirty_instances.clear();
        let mut changed = full;
        let mut instances_changed = 0;
        for id in ids {
            let differs = match self.instance_entry(id) {
                Some(entry) => {
                    let differs = self.published.get(&id) != Some(&entry);
                    if differs {
                        self.published.insert(id, entry);
                    }
                    differs
                }
                None => self.published.remove(&id).is_some(),
            };
            changed |= differs;
            instances_changed += usize::from(differs);
        }
        self.trim.changed(Instant::now(), instances_changed);
        if !changed {
            return false;
        }
        let mut snapshots: Vec<InstanceSnapshot> =
            self.published.values().map(|(s, _)| s.clone()).collect();
        let mut statuses: Vec<InstanceStatus> =
            self.published.values().map(|(_, st)| st.clone()).collect();
        for (name, (ri, why)) in &self.unplaced {
            snapshots.push(InstanceSnapshot {
                name: name.clone(),
                state: crds::vrrpnode::VrrpState::Fault,
                effective_priority: 0,
                base_priority: ri.priority,
                vips: vec![],
                master_address: None,
                trackers: vec![],
                since: None,
                reason: Some(why.clone()),
            });
            statuses.push(InstanceStatus {
                name: name.clone(),
                state: Some(crds::vrrpnode::VrrpState::Fault),
                fault_reason: Some(why.clone()),
                reason: Some(why.clone()),
                ..Default::default()
            });
        }
        let waiting = self.negotiating.values().map(|ri| {
            let reason = "asking the other agent on this host to hand the instance over";
            (
                ri,
                None,
                reason.to_string(),
                Some(Adoption {
                    phase: AdoptionPhase::Pending,
                    message: Some(reason.into()),
                }),
            )
        });
        let held = self.held.values().map(|h| {
            (
                &h.resolved,
                h.offer.as_ref(),
                h.reason.clone(),
                h.adoption.clone(),
            )
        });
        for (ri, offer, reason, adoption) in held.chain(waiting) {
            // What runs here is the other agent's instance: report its state, as seen.
            let state = offer
                .and_then(|o| {
                    serde_json::from_value(serde_json::Value::String(o.state.clone())).ok()
                })
                .unwrap_or(crds::vrrpnode::VrrpState::Init);
            let priority = offer.map(|o| o.effective_priority);
            snapshots.push(InstanceSnapshot {
                name: ri.name.clone(),
                state,
                effective_priority: priority.unwrap_or(0),
                base_priority: ri.priority,
                vips: vec![],
                master_address: None,
                trackers: vec![],
                since: None,
                reason: Some(reason.clone()),
            });
            statuses.push(InstanceStatus {
                name: ri.name.clone(),
                state: Some(state),
                effective_priority: priority,
                reason: Some(reason),
                adoption,
                ..Default::default()
            });
        }
        snapshots.sort_by(|a, b| a.name.cmp(&b.name));
        statuses.sort_by(|a, b| a.name.cmp(&b.name));
        self.telemetry.set_instances(snapshots);
        if let Some(tx) = &self.hooks.status {
            let count = |s: crds::vrrpnode::VrrpState| {
                u32::try_from(statuses.iter().filter(|x| x.state == Some(s)).count())
                    .unwrap_or(u32::MAX)
            };
            let status = VRRPNodeStatus {
                instance_count: u32::try_from(statuses.len()).unwrap_or(u32::MAX),
                master_count: count(crds::vrrpnode::VrrpState::Master),
                fault_count: count(crds::vrrpnode::VrrpState::Fault),
                agent_version: Some(env!("CARGO_PKG_VERSION").into()),
                applied_config_hash: Some(self.applied_hash.clone()),
                instances: statuses,
            };
            tx.send_if_modified(|cur| {
                if *cur == status {
                    false
                } else {
                    *cur = status;
                    true
                }
            });
        }
        true
    }

    /// The node's name.
    pub fn node_name(&self) -> &str {
        &self.opts.node_name
    }
}

/// A sync group's state from its members' (keepalived's rule): FAULT when any member is in
/// FAULT, else MASTER / BACKUP / STOP when every member is; `None` while they differ (the
/// group is changing) or before any member runs.
pub fn group_state(members: &[State]) -> Option<NotifyState> {
    let all = |s: State| !members.is_empty() && members.iter().all(|m| *m == s);
    if members.contains(&State::Fault) {
        Some(NotifyState::Fault)
    } else if all(State::Master) {
        Some(NotifyState::Master)
    } else if all(State::Backup) {
        Some(NotifyState::Backup)
    } else if all(State::Stop) {
        Some(NotifyState::Stop)
    } else {
        None
    }
}

fn tracker_snapshot(t: &TrackerStatus) -> TrackerSnapshot {
    TrackerSnapshot {
        kind: t.kind.clone(),
        name: t.name.clone(),
        up: t.up,
    }
}

/// The VIPs of an instance as netlink objects: virtual addresses first, then excluded ones.
fn build_vips(ri: &ResolvedInstance, p: &Placement) -> Result<Vec<Vip>, String> {
    ri.addresses
        .iter()
        .chain(ri.excluded_addresses.iter())
        .map(|a| {
            let net = crds::validate::parse_address(a)
                .ok_or_else(|| format!("address {a:?} is not an IP/CIDR"))?;
            Vip::new(&p.vip_ifname, p.vip_ifindex, net, None).map_err(|e| e.to_string())
        })
        .collect()
}

/// The instance's VIPs the core named (by address), in the core's order.
fn select_vips(all: &[Vip], nets: &[ipnet::IpNet]) -> Vec<Vip> {
    nets.iter()
        .filter_map(|n| all.iter().find(|v| v.address().addr() == n.addr()).cloned())
        .collect()
}

/// Packets taken off a socket per wake-up and handed to the protocol loop together.
const RX_BATCH: usize = 64;

/// Read one interface's VRRP socket: wait for a packet, take whatever else is queued (up to
/// [`RX_BATCH`]) without waiting, and hand the batch over. Under a flood this wakes the
/// protocol loop once per batch instead of once per packet: the thread switches, not the
/// packets, were most of the cost.
async fn receive_loop(
    socket: Arc<VrrpSocket>,
    ifname: String,
    tx: mpsc::Sender<(String, Vec<ReceivedPacket>)>,
) {
    loop {
        match socket.recv().await {
            Ok(pkt) => {
                let mut batch = Vec::with_capacity(8);
                batch.push(pkt);
                while batch.len() < RX_BATCH {
                    match socket.try_recv() {
                        Ok(Some(p)) => batch.push(p),
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(interface = %ifname, error = %e, "VRRP receive failed");
                            break;
                        }
                    }
                }
                if tx.send((ifname.clone(), batch)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(interface = %ifname, error = %e, "VRRP receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// How long after an address change the interfaces are re-read (every change in between
/// joins that one re-read).
const ADDRESS_SETTLE: Duration = Duration::from_millis(50);

/// The shortest time between two publications of `/status` and the VRRPNode status: a burst
/// of changes (thousands of instances starting, a takeover of many) costs one rebuild per
/// interval instead of one per change; a lone change is published at once.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

async fn sleep_until_opt(deadline: Option<Instant>) -> crate::net::Wakeup {
    match deadline {
        Some(t) => sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Serve the metrics endpoints when an address is given.
pub async fn serve_metrics(
    addr: Option<std::net::SocketAddr>,
    telemetry: Telemetry,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Option<JoinHandle<()>>, Error> {
    let Some(addr) = addr else { return Ok(None) };
    let listener = metrics::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz, /status");
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = metrics::serve(listener, telemetry, shutdown).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::{NotifyState, PacketBudget, State, group_state, sleep_until_opt};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    /// The protocol loop's select shape (packets first, then a periodic timer) under a
    /// producer that keeps the packet queue full for 300 ms. Returns (timer fires, packets
    /// served, worst timer lateness).
    async fn flood_against_a_timer(batched: bool) -> (u32, u64, Duration) {
        let (tx, mut rx) = mpsc::channel::<u64>(1024);
        let stop = Arc::new(AtomicBool::new(false));
        let producing = stop.clone();
        let producer = tokio::spawn(async move {
            let mut n = 0u64;
            while !producing.load(Ordering::Relaxed) {
                while tx.try_send(n).is_ok() {
                    n += 1;
                }
                tokio::task::yield_now().await;
            }
        });
        enum In {
            Packet,
            Timer(crate::net::Wakeup),
            Yield,
        }
        let period = Duration::from_millis(10);
        let start = Instant::now();
        let end = start + Duration::from_millis(300);
        let mut next = start + period;
        let mut budget = PacketBudget::default();
        let (mut fires, mut packets, mut worst) = (0u32, 0u64, Duration::ZERO);
        while Instant::now() < end {
            let input = tokio::select! {
                biased;
                Some(_) = rx.recv(), if !batched || budget.allows_packet() => In::Packet,
                w = sleep_until_opt(Some(next.into_std())) => In::Timer(w),
                () = std::future::ready(()), if batched && !budget.allows_packet() => In::Yield,
            };
            match input {
                In::Packet => {
                    budget.packet();
                    packets += 1;
                }
                In::Timer(w) => {
                    budget.other();
                    fires += 1;
                    worst = worst.max(w.lateness());
                    next = (next + period).max(Instant::now());
                }
                In::Yield => budget.other(),
            }
        }
        stop.store(true, Ordering::Relaxed);
        drop(rx);
        producer.await.unwrap();
        (fires, packets, worst)
    }

    #[tokio::test]
    async fn a_packet_flood_does_not_starve_the_timers() {
        let (fires, packets, worst) = flood_against_a_timer(true).await;
        eprintln!("batched: {fires} timer fires, {packets} packets, worst lateness {worst:?}");
        assert!(packets > 10_000, "the flood ran ({packets} packets)");
        assert!(fires >= 15, "{fires} of 30 timer fires in 300 ms");
        assert!(
            worst < Duration::from_millis(50),
            "worst lateness {worst:?}"
        );
        // The same loop without the batch limit: the timer starves (what the issue saw).
        let (fires, packets, _) = flood_against_a_timer(false).await;
        eprintln!("unbatched: {fires} timer fires, {packets} packets");
        assert!(packets > 10_000);
        assert!(fires <= 2, "without batches the timer fired {fires} times");
    }

    #[test]
    fn a_group_changes_state_when_all_its_members_have() {
        use State::*;
        assert_eq!(group_state(&[]), None);
        assert_eq!(group_state(&[Master, Master]), Some(NotifyState::Master));
        assert_eq!(group_state(&[Backup, Backup]), Some(NotifyState::Backup));
        assert_eq!(group_state(&[Master, Backup]), None, "still moving");
        assert_eq!(group_state(&[Master, Fault]), Some(NotifyState::Fault));
        assert_eq!(group_state(&[Backup, Init]), None);
        assert_eq!(group_state(&[Stop, Stop]), Some(NotifyState::Stop));
    }
}
