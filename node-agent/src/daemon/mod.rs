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

pub mod hooks;
pub mod place;
pub mod resolved;
pub mod takeover;
pub mod vips;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crds::vrrpnode::TrackerStatus;
use crds::{ResolvedInstance, VRRPNodeStatus};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::metrics::{InstanceSnapshot, Telemetry, TrackerSnapshot};
use crate::net::{
    Family, Gratuitous, Interface, NetEvent, NetEvents, Netlink, ReceivedPacket, RecordedVip, Vip,
    VipManager, VipRecord, VrrpSocket, VrrpSockets, sleep_until, strays,
};
use crate::notify::{Notifier, NotifyScripts, NotifyState, NotifyTarget};
use crate::reconcile::{Change, diff};
use crate::track::{Observation as TrackObservation, TrackerOptions, TrackerSet, Trackers};
use crate::vrrp::{
    Action, Delivery, GratuitousKind, InstanceConfig, InstanceId, Observation, Received, Router,
    State,
};
use crate::{Error, metrics};

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
    Packet(String, ReceivedPacket),
    Net(Option<NetEvent>),
    Tracker(TrackObservation),
    Pods(PodsReady),
    Timer(crate::net::Wakeup),
    Milestone(String, vips::Milestone, Instant),
    Shutdown,
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
    pkt_tx: mpsc::Sender<(String, ReceivedPacket)>,
    pkt_rx: mpsc::Receiver<(String, ReceivedPacket)>,
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
    dirty: bool,
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
        let garp = Arc::new(Gratuitous::new(netlink.clone())?);
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
        let (pkt_tx, pkt_rx) = mpsc::channel(1024);
        let (milestone_tx, milestone_rx) = mpsc::unbounded_channel();
        Ok(Self {
            opts,
            router: Router::new(),
            io: BTreeMap::new(),
            unplaced: BTreeMap::new(),
            applied: Vec::new(),
            applied_hash: crds::vrrpnode::config_hash(&[]),
            vips: VipWorker::spawn(manager, Arc::clone(&garp), telemetry.clone(), milestone_tx),
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
            drop_logged: BTreeMap::new(),
            firewall,
            firewall_wanted: None,
            vmacs: std::collections::BTreeSet::new(),
            group_states: BTreeMap::new(),
            sweep_pending,
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
        loop {
            self.drain_actions().await;
            if self.sweep_pending && !self.io.is_empty() {
                self.sweep_pending = false;
                self.sweep_stray_vips().await;
            }
            self.publish_status();
            let deadline = self.router.poll_timeout();
            let input = tokio::select! {
                // Packets before timers: an advert that arrived before the master down timer
                // fired must count, or a busy moment would cause a spurious takeover. Each
                // packet costs microseconds, so timers are not starved.
                biased;
                () = &mut shutdown => Input::Shutdown,
                Some((ifname, pkt)) = self.pkt_rx.recv() => Input::Packet(ifname, pkt),
                wake = sleep_until_opt(deadline) => Input::Timer(wake),
                ev = self.events.next_event() => Input::Net(ev),
                Some(obs) = self.obs_rx.recv() => Input::Tracker(obs),
                Some(p) = recv_opt(&mut self.hooks.pods) => Input::Pods(p),
                Some((i, m, at)) = self.milestone_rx.recv() => Input::Milestone(i, m, at),
                changed = desired.changed(), if desired_open => {
                    if changed.is_ok() { Input::Desired } else { Input::DesiredClosed }
                }
            };
            let now = Instant::now();
            match input {
                Input::Shutdown => break,
                Input::Packet(ifname, pkt) => self.on_packet(now, &ifname, &pkt),
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
                Input::Milestone(instance, m, at) => {
                    if let Some(took) = self.takeovers.reached(&instance, m, at) {
                        self.telemetry.metrics().takeover(took);
                        tracing::info!(instance = %instance, took_ms = took.as_millis(), "takeover complete: last advert heard → first gratuitous ARP/NA");
                    }
                    self.dirty = true;
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

    /// Leave: every instance sends priority 0 if master, VIPs are removed, STOP notifications
    /// run.
    async fn leave(&mut self) {
        tracing::info!("stopping: leaving every VRRP instance");
        self.telemetry.set_ready(false);
        self.router.shutdown(Instant::now());
        self.drain_actions().await;
        self.vips.flush().await;
        self.cleanup_vmacs().await;
        if !self.notifier.flush(NOTIFY_FLUSH).await {
            tracing::warn!("notify scripts still running at exit");
        }
        self.trackers.stop_all();
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
                    self.stop_instance(now, &name);
                }
                Change::UpdateInPlace { new, fields } => {
                    tracing::info!(instance = %new.name, ?fields, "updating instance in place");
                    self.update_instance(now, new).await;
                }
                Change::Restart { new, fields } => {
                    tracing::info!(instance = %new.name, ?fields, "restarting instance: these fields cannot change on a running router");
                    self.stop_instance(now, &new.name);
                    self.drain_actions().await;
                    self.start_instance(now, new).await;
                }
            }
        }
        self.applied_hash = crds::vrrpnode::config_hash(&desired);
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

    async fn start_instance(&mut self, now: Instant, ri: ResolvedInstance) {
        self.unplaced.remove(&ri.name);
        if ri.use_vmac
            && let Err(reason) = self.ensure_vmac(&ri).await
        {
            tracing::error!(instance = %ri.name, %reason, "cannot create the virtual MAC interface");
            self.unplaced.insert(ri.name.clone(), (ri, reason));
            return;
        }
        match self.add_instance(now, &ri) {
            Ok(()) => self.feed_interface_trackers(now),
            Err(reason) => {
                tracing::error!(instance = %ri.name, %reason, "cannot run instance on this host");
                self.unplaced.insert(ri.name.clone(), (ri, reason));
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

    /// Place the instance, open its socket and add it to the router.
    fn add_instance(&mut self, now: Instant, ri: &ResolvedInstance) -> Result<(), String> {
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
        Ok(())
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

    fn stop_instance(&mut self, now: Instant, name: &str) {
        self.unplaced.remove(name);
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
        let updated = self
            .core_config(&new, &placement)
            .and_then(|cfg| self.router.update(now, id, cfg).map_err(|e| e.to_string()));
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
                self.stop_instance(now, &new.name);
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
        self.dirty = true;
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
            NetEvent::LinkRemoved { .. }
            | NetEvent::AddressAdded { .. }
            | NetEvent::AddressRemoved { .. } => {
                self.refresh_interfaces().await;
                self.retry_unplaced(now).await;
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
            tracing::info!(instance = %ri.name, "interface now available; starting instance");
            self.start_instance(now, ri).await;
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
        if let Some(ns) = notify_state {
            self.notifier.notify(&name, &io.notify, ns, priority);
        }
        if let (Some(events), Some(vip)) = (&self.hooks.events, &io.resolved.virtual_ip) {
            events.transition(vip, to.to_crd(), &reason.to_string());
        }
        if let Some(group) = io.resolved.sync_group.clone() {
            self.notify_group(&group);
        }
        self.dirty = true;
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

    /// Publish `/status` and (in-cluster) the VRRPNode status, when something changed.
    fn publish_status(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let mut snapshots = Vec::new();
        let mut statuses = Vec::new();
        for (id, io) in &self.io {
            let Some(inst) = self.router.get(*id) else {
                continue;
            };
            let mut st = inst.status();
            if let Some(t) = self.takeovers.get(&io.resolved.name) {
                st.previous_master = t.previous_master.map(|a| a.to_string());
                st.takeover = Some(t.timing());
            }
            let since = self.since.get(&io.resolved.name);
            st.last_transition_time =
                since.map(|(t, _)| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            snapshots.push(InstanceSnapshot {
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
            });
            statuses.push(st);
        }
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
            statuses.push(crds::vrrpnode::InstanceStatus {
                name: name.clone(),
                state: Some(crds::vrrpnode::VrrpState::Fault),
                fault_reason: Some(why.clone()),
                reason: Some(why.clone()),
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

async fn receive_loop(
    socket: Arc<VrrpSocket>,
    ifname: String,
    tx: mpsc::Sender<(String, ReceivedPacket)>,
) {
    loop {
        match socket.recv().await {
            Ok(pkt) => {
                if tx.send((ifname.clone(), pkt)).await.is_err() {
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
    use super::{NotifyState, State, group_state};

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
