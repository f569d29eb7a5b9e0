//! The state machine of one VRRP instance (keepalived's `vrrp_instance`).
//!
//! Sans-IO: inputs carry `now`; outputs are [`Action`]s pulled with
//! [`Instance::poll_action`], and [`Instance::poll_timeout`] says when to call
//! [`Instance::handle_timeout`] next. After any `handle_*`/`start`/`shutdown` call, drain
//! `poll_action` until `None` and re-read `poll_timeout`.
//!
//! States: INIT → BACKUP / MASTER, FAULT (keepalived's), STOP after shutdown. Behaviour per
//! RFC 9568 §6.4 with keepalived's choices where the RFC leaves room:
//! - INIT: owner (priority 255) or `state MASTER` ⇒ MASTER at once; else BACKUP with the
//!   master down timer at Master_Down_Interval. Weight-0 trackers without a result hold INIT.
//! - BACKUP: down timer ⇒ MASTER. Priority-0 advert ⇒ timer = Skew_Time, or MASTER at once
//!   when the configuration knows every peer ([`InstanceConfig::peer_priorities`]) and this
//!   router outranks all of them but the one leaving (planned handover). Priority ≥ ours, or
//!   preempt off, or inside `preempt_delay` ⇒ learn the interval (v3) and reset the timer to
//!   Master_Down_Interval. Lower priority with preempt ⇒ ignored.
//! - MASTER: advert timer ⇒ advert. Higher priority, or equal priority from a higher
//!   address ⇒ BACKUP, keeping the VIPs bound for a short grace ([`RELEASE_GRACE`]) so the
//!   new master's gratuitous ARP / NA is out before they go. Priority 0 ⇒ advert at once. Lower priority (or equal from a lower
//!   address) ⇒ discarded (RFC 3768 / RFC 9568 §6.4.3), except that, like keepalived's
//!   "forcing new election", an advert is sent at once to make the other master yield —
//!   never a gratuitous burst. Immediate adverts (for priority 0 or a lower-priority master)
//!   are limited to one per advert interval per instance, so a flood of valid adverts is
//!   not amplified; the suppressed ones are counted
//!   ([`Counters::lower_priority_discarded`], [`Counters::priority_zero_rate_limited`]).
//! - FAULT (interface down, weight-0 tracker failed, sync group): leave MASTER with a
//!   priority-0 advert, hold no VIPs, send nothing; back to BACKUP when clear.
//! - shutdown: MASTER sends priority 0 and keeps its VIPs bound until it hears a new master
//!   (then for [`RELEASE_GRACE`] more) or [`linger_bound`] passes, so a
//!   planned handover loses no packet; with no peers at all (an empty
//!   [`InstanceConfig::peer_priorities`]) it removes them at once, as does
//!   [`Instance::shutdown_at_once`]. While the VIPs are held the instance is STOP on the wire
//!   (no adverts) and [`Instance::holds_vips`] says so.
//! - hand-over ([`Instance::hand_over`] / [`Instance::start_inherited`]): another process on
//!   the same host continues the instance. The old one stops without a priority-0 advert and
//!   leaves its VIPs bound; the new one starts directly in the state handed over (MASTER keeps
//!   the advert cadence, BACKUP the master it heard), with the trackers' observations, so the
//!   wire sees no change at all.
//!
//! Action order within one call: [`Action::StateChanged`] first, then the effects in the
//! order they are to be performed (advert, VIP changes, gratuitous ARP/NA).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::checksum::{ChecksumKind, V3Ipv4Checksum};
use super::config::{ConfigError, InstanceConfig, StartState};
use super::counters::{Counters, DropReason};
use super::packet::{Advert, Family, Interval, Version};
use super::timers::{master_down_interval, skew_time};
use super::track::{Effect, Observation, Tracker, TrackerKind, TrackerMemory, effective_priority};

/// Instance state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Not started, or held by weight-0 trackers without a result.
    Init,
    /// Backup.
    Backup,
    /// Master.
    Master,
    /// Fault (keepalived's extra state).
    Fault,
    /// Stopped by [`Instance::shutdown`].
    Stop,
}

impl std::fmt::Display for State {
    /// keepalived's words, as passed to notify scripts.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Init => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
            State::Fault => "FAULT",
            State::Stop => "STOP",
        })
    }
}

/// Why a state changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Start-up into BACKUP.
    Startup,
    /// Start-up as address owner.
    AddressOwner,
    /// Start-up with `state MASTER`.
    ConfiguredMaster,
    /// The master down timer fired.
    MasterDownTimerExpired,
    /// The master announced it was leaving (priority-0 advert) and Skew_Time passed.
    MasterLeft {
        /// The leaving master.
        from: IpAddr,
    },
    /// A higher-priority advert reached this master.
    HigherPriorityAdvert {
        /// Sender.
        from: IpAddr,
        /// Its priority.
        priority: u8,
    },
    /// An equal-priority advert from a higher address reached this master.
    EqualPriorityHigherAddress {
        /// Sender.
        from: IpAddr,
    },
    /// A weight-0 tracker failed.
    TrackerFailed {
        /// Kind.
        kind: TrackerKind,
        /// Name.
        name: String,
    },
    /// The instance's interface went down.
    InterfaceDown {
        /// Interface.
        interface: String,
    },
    /// Every fault condition cleared.
    FaultCleared,
    /// Moved together with a sync-group member.
    SyncGroup {
        /// Group.
        group: String,
        /// The member that moved first.
        member: String,
        /// The state it entered.
        state: State,
    },
    /// Shut down.
    Shutdown,
    /// Continued in the state another process on this host handed over
    /// ([`Instance::start_inherited`]).
    Inherited {
        /// The state taken over.
        state: State,
    },
    /// Handed over to another process on this host, which continues it
    /// ([`Instance::hand_over`]).
    HandedOver,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Startup => f.write_str("startup"),
            Reason::AddressOwner => f.write_str("address owner (priority 255)"),
            Reason::ConfiguredMaster => f.write_str("configured state MASTER"),
            Reason::MasterDownTimerExpired => f.write_str("master down timer expired"),
            Reason::MasterLeft { from } => {
                write!(f, "master {from} left (priority 0 advert)")
            }
            Reason::HigherPriorityAdvert { from, priority } => {
                write!(
                    f,
                    "received higher priority advert from {from} (priority {priority})"
                )
            }
            Reason::EqualPriorityHigherAddress { from } => {
                write!(
                    f,
                    "received advert with equal priority from higher address {from}"
                )
            }
            Reason::TrackerFailed { kind, name } => write!(f, "tracker {name} ({kind}) failed"),
            Reason::InterfaceDown { interface } => write!(f, "interface {interface} down"),
            Reason::FaultCleared => f.write_str("leaving FAULT state"),
            Reason::SyncGroup {
                group,
                member,
                state,
            } => {
                write!(f, "sync group {group}: member {member} entered {state}")
            }
            Reason::Shutdown => f.write_str("shutdown"),
            Reason::Inherited { state } => {
                write!(f, "took over the running instance in state {state}")
            }
            Reason::HandedOver => f.write_str("handed over to another agent on this host"),
        }
    }
}

impl Reason {
    /// Short machine label (for status `reason` fields and metrics).
    pub fn label(&self) -> &'static str {
        match self {
            Reason::Startup => "Startup",
            Reason::AddressOwner => "AddressOwner",
            Reason::ConfiguredMaster => "ConfiguredMaster",
            Reason::MasterDownTimerExpired => "MasterDownTimerExpired",
            Reason::MasterLeft { .. } => "MasterLeft",
            Reason::HigherPriorityAdvert { .. } => "HigherPriorityAdvert",
            Reason::EqualPriorityHigherAddress { .. } => "EqualPriorityHigherAddress",
            Reason::TrackerFailed { .. } => "TrackerFailed",
            Reason::InterfaceDown { .. } => "InterfaceDown",
            Reason::FaultCleared => "FaultCleared",
            Reason::SyncGroup { .. } => "SyncGroup",
            Reason::Shutdown => "Shutdown",
            Reason::Inherited { .. } => "Inherited",
            Reason::HandedOver => "HandedOver",
        }
    }
}

/// Why gratuitous ARP / NA is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GratuitousKind {
    /// The burst on becoming master.
    Initial,
    /// The second burst `garp_master_delay` later.
    Delayed,
    /// A periodic refresh (`garp_master_refresh`).
    Refresh,
}

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send `bytes` (a complete VRRP message, checksum filled for `src` → `dst`) as IP
    /// protocol 112 from `src` to `dst` with TTL / hop limit 255.
    SendAdvert {
        /// Source address (bind/`IP_PKTINFO`).
        src: IpAddr,
        /// Multicast group or one unicast peer.
        dst: IpAddr,
        /// The VRRP message.
        bytes: Vec<u8>,
        /// Priority carried (0 = leaving).
        priority: u8,
    },
    /// Bind these addresses (with prefix lengths) on the instance's interface.
    AddVips(Vec<IpNet>),
    /// Remove these addresses from the instance's interface.
    RemoveVips(Vec<IpNet>),
    /// Send `repeat` gratuitous ARPs (IPv4) or unsolicited NAs with Override (IPv6) for
    /// each address.
    SendGratuitous {
        /// Addresses to announce.
        addresses: Vec<IpAddr>,
        /// Packets per address.
        repeat: u32,
        /// Why.
        kind: GratuitousKind,
    },
    /// The state changed. `priority` is the effective priority, as keepalived's generic
    /// notify passes it (`INSTANCE VI_1 MASTER 244`).
    StateChanged {
        /// Previous state.
        from: State,
        /// New state.
        to: State,
        /// Why.
        reason: Reason,
        /// Effective priority at the change.
        priority: u8,
    },
}

/// Receive metadata from the IP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxInfo {
    /// IP source.
    pub src: IpAddr,
    /// IP destination (multicast group or our unicast address).
    pub dst: IpAddr,
    /// TTL / hop limit.
    pub ttl: u8,
    /// The checksum form the packet carried (from [`Advert::parse`]).
    pub checksum: ChecksumKind,
}

/// Result of [`Instance::update_config`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigUpdate {
    /// Applied in place, no state change.
    Applied,
    /// Not applied: these fields can only change by removing and re-adding the instance.
    RestartRequired(Vec<&'static str>),
}

/// What a process continuing an instance needs from the one that ran it
/// ([`Instance::hand_over`] → [`Instance::start_inherited`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inheritance {
    /// The state at the hand-over.
    pub state: State,
    /// MASTER: when the next advert is due (keeps the cadence across the hand-over).
    pub next_advert: Option<Instant>,
    /// BACKUP: the master heard last.
    pub master_address: Option<IpAddr>,
    /// Master_Adver_Interval in use (a v3 backup's learned interval).
    pub master_adver_interval: Interval,
    /// Every tracker's observations.
    pub trackers: Vec<TrackerMemory>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    MasterDown = 0,
    Advert = 1,
    GarpDelayed = 2,
    GarpRefresh = 3,
    /// A gratuitous burst held back by the per-instance rate limit.
    GarpDeferred = 4,
    /// VIPs still bound after leaving MASTER are released.
    Release = 5,
}

const TIMERS: [Timer; 6] = [
    Timer::MasterDown,
    Timer::Advert,
    Timer::GarpDelayed,
    Timer::GarpRefresh,
    Timer::GarpDeferred,
    Timer::Release,
];

/// How long a master that left keeps its VIPs bound once a new master advertises: the new
/// master's gratuitous ARP / NA follows its first advert by the time it takes to bind the
/// addresses, so withdrawing them at once would drop whatever neighbours still send to the
/// old MAC in between. That time is the host's (netlink, the kernel's address add: IPv6
/// costs most, and more on a loaded host), not the protocol's, so the grace does not shrink
/// with the advert interval: at 20 ms adverts a grace of one interval lost IPv6 probes
/// (failover-bench `--ipv6`, 5 in 10 handovers).
pub const RELEASE_GRACE: Duration = Duration::from_millis(100);

/// A master shutting down keeps its VIPs at most this many advert intervals while waiting to
/// hear a successor (and never less than [`RELEASE_GRACE`] plus one interval, see
/// [`linger_bound`]).
pub const LINGER_INTERVALS: u32 = 3;

/// How long a leaving master waits for a successor's advert before it removes its VIPs
/// anyway: [`LINGER_INTERVALS`] advert intervals, but long enough for a successor heard within
/// one interval to get its full [`RELEASE_GRACE`].
pub fn linger_bound(advert_interval: Interval) -> Duration {
    let iv = advert_interval.duration();
    (iv * LINGER_INTERVALS).max(RELEASE_GRACE + iv)
}

const NO_TIMERS: [Option<Instant>; TIMERS.len()] = [None; TIMERS.len()];

/// One VRRP instance.
#[derive(Debug)]
pub struct Instance {
    cfg: InstanceConfig,
    state: State,
    started: bool,
    trackers: Vec<Tracker>,
    link_up: bool,
    sync_hold: Option<Reason>,
    effective_priority: u8,
    master_adver_interval: Interval,
    master_address: Option<IpAddr>,
    /// The master that sent priority 0 and has not advertised since.
    master_left: Option<IpAddr>,
    /// The priority the master heard last advertised (BACKUP).
    master_priority: Option<u8>,
    /// VIPs are still bound after leaving MASTER, until [`Timer::Release`].
    holding: bool,
    /// The last master heard while BACKUP, and when (the evidence behind a takeover).
    last_heard: Option<(IpAddr, Instant)>,
    timers: [Option<Instant>; TIMERS.len()],
    preempt_allowed_at: Option<Instant>,
    /// When the last advert sent in reply to a received one went out, or the last periodic
    /// one while replies are being sent (the budget of immediate replies, one per interval).
    last_reply: Option<Instant>,
    /// When the last gratuitous ARP/NA burst went out (the per-instance rate limit).
    last_burst: Option<Instant>,
    /// The kind of the burst waiting for [`Timer::GarpDeferred`].
    deferred_burst: Option<GratuitousKind>,
    actions: VecDeque<Action>,
    counters: Counters,
    last_reason: Option<Reason>,
}

impl Instance {
    /// A new instance in INIT. The interface is assumed up until [`Instance::handle_link`]
    /// says otherwise; trackers start without a result.
    pub fn new(cfg: InstanceConfig) -> Result<Instance, ConfigError> {
        cfg.validate()?;
        let trackers: Vec<Tracker> = cfg.trackers.iter().cloned().map(Tracker::new).collect();
        Ok(Instance {
            effective_priority: effective_priority(cfg.priority, &trackers),
            master_adver_interval: cfg.advert_interval,
            trackers,
            cfg,
            state: State::Init,
            started: false,
            link_up: true,
            sync_hold: None,
            master_address: None,
            master_left: None,
            master_priority: None,
            holding: false,
            last_heard: None,
            timers: NO_TIMERS,
            preempt_allowed_at: None,
            last_reply: None,
            last_burst: None,
            deferred_burst: None,
            actions: VecDeque::new(),
            counters: Counters::default(),
            last_reason: None,
        })
    }

    // ---- read-only accessors ----

    /// Configuration.
    pub fn config(&self) -> &InstanceConfig {
        &self.cfg
    }
    /// Name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }
    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }
    /// Effective priority (base adjusted by trackers; 255 for an owner).
    pub fn effective_priority(&self) -> u8 {
        self.effective_priority
    }
    /// Master_Adver_Interval in use (learned from the master in v3 backups).
    pub fn master_adver_interval(&self) -> Interval {
        self.master_adver_interval
    }
    /// Current master: our source when MASTER, the last advertising master when BACKUP.
    pub fn master_address(&self) -> Option<IpAddr> {
        match self.state {
            State::Master => Some(self.cfg.source),
            State::Backup => self.master_address,
            _ => None,
        }
    }
    /// Why the last transition happened.
    pub fn last_reason(&self) -> Option<&Reason> {
        self.last_reason.as_ref()
    }
    /// Why the instance is (or would be) in FAULT, if it is.
    pub fn fault_reason(&self) -> Option<Reason> {
        if self.state == State::Fault {
            self.fault_cause()
        } else {
            None
        }
    }
    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    /// Trackers with their state.
    pub fn trackers(&self) -> &[Tracker] {
        &self.trackers
    }
    /// The last master this instance heard while BACKUP (address, when its last accepted
    /// advert arrived): after a takeover, the master that went silent.
    pub fn last_heard(&self) -> Option<(IpAddr, Instant)> {
        self.last_heard
    }
    /// Whether the VIPs are still bound although the instance left MASTER (a short grace
    /// after a new master spoke, or a shutdown waiting for a successor).
    pub fn holds_vips(&self) -> bool {
        self.holding
    }

    // ---- sans-IO driving ----

    /// The earliest deadline at which [`Instance::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.iter().flatten().min().copied()
    }

    /// Next action to perform.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Start the instance (idempotent; no effect after shutdown).
    pub fn start(&mut self, now: Instant) {
        if self.started || self.state == State::Stop {
            return;
        }
        self.started = true;
        self.preempt_allowed_at = Some(now + self.cfg.preempt_delay);
        self.reevaluate(now);
    }

    /// Handle expired timers (call at or after [`Instance::poll_timeout`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in TIMERS {
            let Some(deadline) = self.timers[t as usize] else {
                continue;
            };
            if deadline > now {
                continue;
            }
            self.timers[t as usize] = None;
            match (t, self.state) {
                (Timer::MasterDown, State::Backup) => {
                    let reason = match self.master_left.take() {
                        Some(from) => Reason::MasterLeft { from },
                        None => Reason::MasterDownTimerExpired,
                    };
                    self.become_master(now, reason)
                }
                (Timer::Advert, State::Master) => self.send_advert_on_schedule(now, deadline),
                (Timer::GarpDelayed, State::Master) => {
                    self.gratuitous(now, GratuitousKind::Delayed)
                }
                (Timer::GarpRefresh, State::Master) => {
                    self.gratuitous(now, GratuitousKind::Refresh);
                    self.timers[Timer::GarpRefresh as usize] =
                        Some(now + self.cfg.garp.master_refresh);
                }
                (Timer::GarpDeferred, State::Master) => {
                    if let Some(kind) = self.deferred_burst.take() {
                        self.gratuitous(now, kind);
                    }
                }
                (Timer::Release, _) => self.release_vips(),
                _ => {}
            }
        }
    }

    /// Handle a parsed advert for this instance's VRID. Runs the receive checks (TTL,
    /// version, family, own source, unicast peer list, v2 auth and interval) and counts
    /// every drop.
    ///
    /// Returns the drop reason (already counted) when the advert failed a check; `Ok` when
    /// it was accepted (counted in `adverts_received`, whatever the state machine then did
    /// with it).
    pub fn handle_advert(
        &mut self,
        now: Instant,
        rx: &RxInfo,
        advert: &Advert,
    ) -> Result<(), DropReason> {
        if let Err(reason) = self.check_advert(rx, advert) {
            self.counters.drop(reason);
            return Err(reason);
        }
        self.counters.adverts_received += 1;
        if advert.priority == 0 {
            self.counters.priority_zero_received += 1;
        }
        if matches!(
            (rx.checksum, self.cfg.v3_ipv4_checksum),
            (
                ChecksumKind::V3Ipv4WithoutPseudoHeader,
                V3Ipv4Checksum::WithPseudoHeader
            ) | (
                ChecksumKind::V3Ipv4WithPseudoHeader,
                V3Ipv4Checksum::WithoutPseudoHeader
            )
        ) {
            self.counters.checksum_other_form += 1;
        }
        if !self.same_addresses(&advert.addresses) {
            self.counters.address_list_mismatch += 1;
        }
        let ours = self.effective_priority;
        match self.state {
            State::Backup => {
                if advert.priority == 0 {
                    self.last_heard = Some((rx.src, now));
                    if self.master_address == Some(rx.src) && self.outranks_all_but_the_leaving() {
                        self.become_master(now, Reason::MasterLeft { from: rx.src });
                    } else {
                        let skew = skew_time(self.cfg.version, ours, self.master_adver_interval);
                        self.timers[Timer::MasterDown as usize] = Some(now + skew);
                        self.master_left = Some(rx.src);
                    }
                } else if !self.cfg.preempt
                    || advert.priority >= ours
                    || self.preempt_allowed_at.is_some_and(|t| now < t)
                {
                    self.master_address = Some(rx.src);
                    self.master_priority = Some(advert.priority);
                    self.master_left = None;
                    self.last_heard = Some((rx.src, now));
                    if self.cfg.version == Version::V3 {
                        self.master_adver_interval = advert.interval;
                    }
                    self.arm_master_down(now);
                } else {
                    self.counters.lower_priority_ignored += 1;
                }
            }
            State::Master => {
                if advert.priority == 0 {
                    if !self.reply_now(now) {
                        self.counters.priority_zero_rate_limited += 1;
                    }
                } else if advert.priority > ours
                    || (advert.priority == ours && rx.src > self.cfg.source)
                {
                    let reason = if advert.priority > ours {
                        Reason::HigherPriorityAdvert {
                            from: rx.src,
                            priority: advert.priority,
                        }
                    } else {
                        Reason::EqualPriorityHigherAddress { from: rx.src }
                    };
                    self.master_address = Some(rx.src);
                    self.master_priority = Some(advert.priority);
                    if self.cfg.version == Version::V3 {
                        self.master_adver_interval = advert.interval;
                    }
                    // Someone else answers for the VIPs now: ours go after a grace.
                    let release = now + RELEASE_GRACE;
                    self.become_backup_holding(now, reason, Some(release));
                } else if !self.reply_now(now) {
                    // RFC 9568 §6.4.3: discard. The one advert per interval above is the
                    // keepalived-style nudge to a lower-priority master; no GARP in reply.
                    self.counters.lower_priority_discarded += 1;
                }
            }
            // A master that left and holds its VIPs for a successor: the first advert of a
            // new master starts the short release grace.
            State::Stop if advert.priority > 0 => {
                self.hold_vips_until(now + RELEASE_GRACE);
            }
            // check_advert admits only BACKUP, MASTER and a STOP that holds VIPs.
            State::Init | State::Fault | State::Stop => {}
        }
        Ok(())
    }

    /// Feed a tracker observation for the tracker `(kind, name)`. Returns `false` if this
    /// instance has no such tracker (or the observation is of another kind).
    pub fn handle_tracker(&mut self, now: Instant, name: &str, obs: Observation) -> bool {
        let kind = obs.kind();
        let Some(t) = self
            .trackers
            .iter_mut()
            .find(|t| t.spec().kind() == kind && t.spec().name == name)
        else {
            return false;
        };
        if t.observe(obs) {
            self.effective_priority = effective_priority(self.cfg.priority, &self.trackers);
            self.reevaluate(now);
        }
        true
    }

    /// The instance's own interface went up or down.
    pub fn handle_link(&mut self, now: Instant, up: bool) {
        if self.link_up != up {
            self.link_up = up;
            self.reevaluate(now);
        }
    }

    /// Stop without leaving: another process on this host continues the instance from the
    /// returned [`Inheritance`]. No priority-0 advert, no VIP removal, no timers; the only
    /// action is the change to STOP (reason [`Reason::HandedOver`]), and the removal of VIPs
    /// still held from an earlier MASTER spell. Final.
    pub fn hand_over(&mut self, now: Instant) -> Inheritance {
        let inheritance = Inheritance {
            state: self.state,
            next_advert: self.timers[Timer::Advert as usize]
                .filter(|_| self.state == State::Master)
                .map(|t| t.max(now)),
            master_address: self.master_address,
            master_adver_interval: self.master_adver_interval,
            trackers: self.trackers.iter().map(Tracker::memory).collect(),
        };
        if self.state != State::Stop {
            let from = self.state;
            self.state = State::Stop;
            self.push_state_changed(from, State::Stop, Reason::HandedOver);
        }
        // VIPs held after leaving MASTER are not the successor's to keep.
        self.release_vips();
        self.timers = NO_TIMERS;
        self.deferred_burst = None;
        inheritance
    }

    /// Start in the state handed over by [`Instance::hand_over`] (of an instance with the same
    /// configuration in another process) instead of INIT. Trackers take over the predecessor's
    /// observations by kind and name. A MASTER sends its next advert when the predecessor's
    /// was due and binds its VIPs again (they are bound already: the driver records them),
    /// without a gratuitous burst, since nothing moved; a BACKUP waits Master_Down_Interval
    /// for the master it heard. No preempt delay applies: this is not a start-up. INIT,
    /// FAULT or STOP handed over start as [`Instance::start`] does; so does an instance
    /// already started. Fault conditions still apply afterwards as usual.
    pub fn start_inherited(&mut self, now: Instant, inh: &Inheritance) {
        if self.started || self.state == State::Stop {
            return;
        }
        for m in &inh.trackers {
            if let Some(t) = self
                .trackers
                .iter_mut()
                .find(|t| t.spec().kind() == m.kind && t.spec().name == m.name)
            {
                t.restore(m);
            }
        }
        self.effective_priority = effective_priority(self.cfg.priority, &self.trackers);
        self.started = true;
        self.preempt_allowed_at = Some(now);
        let reason = Reason::Inherited { state: inh.state };
        match inh.state {
            State::Master => {
                self.state = State::Master;
                self.push_state_changed(State::Init, State::Master, reason);
                let next = inh.next_advert.unwrap_or(now).max(now);
                let cap = now + self.cfg.advert_interval.duration();
                self.timers[Timer::Advert as usize] = Some(next.min(cap));
                self.actions.push_back(Action::AddVips(self.all_vips()));
                let g = self.cfg.garp;
                self.timers[Timer::GarpRefresh as usize] =
                    (!g.master_refresh.is_zero()).then(|| now + g.master_refresh);
            }
            State::Backup => {
                self.state = State::Backup;
                self.push_state_changed(State::Init, State::Backup, reason);
                self.master_address = inh.master_address;
                if self.cfg.version == Version::V3 {
                    self.master_adver_interval = inh.master_adver_interval;
                }
                if let Some(m) = inh.master_address {
                    self.last_heard = Some((m, now));
                }
                self.arm_master_down(now);
            }
            State::Init | State::Fault | State::Stop => {
                self.preempt_allowed_at = Some(now + self.cfg.preempt_delay);
            }
        }
        self.reevaluate(now);
    }

    /// Stop (keepalived on SIGTERM): a master sends a priority-0 advert and keeps its VIPs
    /// bound until a new master advertises (then [`RELEASE_GRACE`] more) or [`linger_bound`]
    /// passes, whichever is first; keep driving the
    /// instance (packets, [`Instance::poll_timeout`]) until [`Instance::holds_vips`] is false.
    /// With no peers configured at all it removes them at once. Final.
    pub fn shutdown(&mut self, now: Instant) {
        let alone = self.cfg.peer_priorities.as_ref().is_some_and(Vec::is_empty);
        self.stop(now, !alone);
    }

    /// Stop like [`Instance::shutdown`], but a master removes its VIPs right after its
    /// priority-0 advert (an instance being removed, which cannot be driven any longer).
    pub fn shutdown_at_once(&mut self, now: Instant) {
        self.stop(now, false);
    }

    fn stop(&mut self, now: Instant, linger: bool) {
        if self.state == State::Stop {
            return;
        }
        let from = self.state;
        self.state = State::Stop;
        self.push_state_changed(from, State::Stop, Reason::Shutdown);
        self.timers = NO_TIMERS;
        self.deferred_burst = None;
        if from == State::Master {
            self.send_advert(now, 0);
            self.holding = true;
            if linger {
                let wait = linger_bound(self.cfg.advert_interval);
                self.timers[Timer::Release as usize] = Some(now + wait);
                return;
            }
        }
        self.release_vips();
    }

    /// Apply a new configuration without a state flap. Identity fields (name, interface,
    /// VRID, version, family, source address, multicast/unicast mode) need a restart and are
    /// reported instead of applied. VIP changes on a master are applied with
    /// [`Action::RemoveVips`] / [`Action::AddVips`] and a gratuitous burst for new addresses.
    pub fn update_config(
        &mut self,
        now: Instant,
        cfg: InstanceConfig,
    ) -> Result<ConfigUpdate, ConfigError> {
        cfg.validate()?;
        let old = &self.cfg;
        let mut restart = Vec::new();
        if cfg.name != old.name {
            restart.push("name");
        }
        if cfg.interface != old.interface {
            restart.push("interface");
        }
        if cfg.vrid != old.vrid {
            restart.push("virtualRouterID");
        }
        if cfg.version != old.version {
            restart.push("version");
        }
        if cfg.family() != old.family() {
            restart.push("addresses (family)");
        }
        if cfg.source != old.source {
            restart.push("source address");
        }
        if cfg.unicast_peers.is_empty() != old.unicast_peers.is_empty() {
            restart.push("unicastPeers (multicast/unicast mode)");
        }
        if !restart.is_empty() {
            return Ok(ConfigUpdate::RestartRequired(restart));
        }
        // Trackers: keep the state of trackers that stay (same kind, name and rule).
        let mut trackers = Vec::with_capacity(cfg.trackers.len());
        for spec in &cfg.trackers {
            let kept = self
                .trackers
                .iter()
                .find(|t| t.spec().kind() == spec.kind() && t.spec().name == spec.name);
            trackers.push(match kept {
                Some(t) if t.spec().rule == spec.rule => {
                    let mut t = t.clone();
                    t.set_spec_weights(spec.weight, spec.reverse);
                    t
                }
                _ => Tracker::new(spec.clone()),
            });
        }
        let old_all = self.all_vips();
        if self.holding && cfg.vips.iter().chain(&cfg.excluded).ne(old_all.iter()) {
            // Release what is held under the old list rather than guess later.
            self.release_vips();
        }
        self.cfg = cfg;
        self.trackers = trackers;
        // A v3 backup keeps the interval it learned from the master; everyone else uses ours.
        if self.state != State::Backup || self.cfg.version == Version::V2 {
            self.master_adver_interval = self.cfg.advert_interval;
        }
        if self.state == State::Master {
            let new_all = self.all_vips();
            let removed: Vec<IpNet> = old_all
                .iter()
                .filter(|n| !new_all.contains(n))
                .copied()
                .collect();
            let added: Vec<IpNet> = new_all
                .iter()
                .filter(|n| !old_all.contains(n))
                .copied()
                .collect();
            if !removed.is_empty() {
                self.actions.push_back(Action::RemoveVips(removed));
            }
            if !added.is_empty() {
                self.actions.push_back(Action::AddVips(added.clone()));
                if self.cfg.garp.master_repeat > 0 {
                    self.burst(
                        now,
                        added.iter().map(|n| n.addr()).collect(),
                        self.cfg.garp.master_repeat,
                        GratuitousKind::Initial,
                    );
                }
            }
            if self.cfg.garp.master_refresh.is_zero() {
                self.timers[Timer::GarpRefresh as usize] = None;
            } else if self.timers[Timer::GarpRefresh as usize].is_none() {
                self.timers[Timer::GarpRefresh as usize] = Some(now + self.cfg.garp.master_refresh);
            }
        }
        self.effective_priority = effective_priority(self.cfg.priority, &self.trackers);
        self.reevaluate(now);
        Ok(ConfigUpdate::Applied)
    }

    // ---- crate-internal hooks for the router (sync groups) and the tests ----

    /// When the master down timer expires, if armed.
    #[cfg(test)]
    pub(crate) fn master_down_at(&self) -> Option<Instant> {
        self.timers[Timer::MasterDown as usize]
    }

    /// Own fault condition (interface, trackers), ignoring the sync group.
    pub(crate) fn own_fault_cause(&self) -> Option<Reason> {
        if !self.link_up {
            return Some(Reason::InterfaceDown {
                interface: self.cfg.interface.clone(),
            });
        }
        self.trackers
            .iter()
            .find(|t| t.effect() == Effect::Fault)
            .map(|t| Reason::TrackerFailed {
                kind: t.spec().kind(),
                name: t.spec().name.clone(),
            })
    }

    /// Count a drop detected outside the instance (parse failure of our VRID).
    pub(crate) fn count_drop(&mut self, reason: DropReason) {
        self.counters.drop(reason);
    }

    /// Set or clear the sync-group hold (another member is in fault).
    pub(crate) fn set_sync_hold(&mut self, now: Instant, hold: Option<Reason>) {
        if self.sync_hold != hold {
            self.sync_hold = hold;
            self.reevaluate(now);
        }
    }

    /// Follow a sync-group member into MASTER or BACKUP (only from BACKUP / MASTER).
    pub(crate) fn follow(&mut self, now: Instant, to: State, reason: Reason) {
        match (self.state, to) {
            (State::Backup, State::Master) => self.become_master(now, reason),
            (State::Master, State::Backup) => self.become_backup(now, reason),
            _ => {}
        }
    }

    // ---- internals ----

    fn check_advert(&self, rx: &RxInfo, advert: &Advert) -> Result<(), DropReason> {
        if !matches!(self.state, State::Backup | State::Master) && !self.holding {
            return Err(DropReason::NotRunning);
        }
        if Family::of(&rx.src) != self.cfg.family() {
            return Err(DropReason::FamilyMismatch);
        }
        if advert.vrid != self.cfg.vrid {
            return Err(DropReason::UnknownVrid);
        }
        if advert.version != self.cfg.version {
            return Err(DropReason::VersionMismatch);
        }
        let unicast = !self.cfg.unicast_peers.is_empty();
        if rx.ttl != 255 && !(unicast && self.cfg.allow_lower_ttl) {
            return Err(DropReason::Ttl);
        }
        if rx.src == self.cfg.source {
            return Err(DropReason::OwnAdvert);
        }
        if unicast && !self.cfg.unicast_peers.contains(&rx.src) {
            return Err(DropReason::UnknownPeer);
        }
        if self.cfg.version == Version::V2 {
            if advert.auth != self.cfg.auth {
                return Err(DropReason::AuthMismatch);
            }
            if advert.interval != self.cfg.advert_interval {
                return Err(DropReason::IntervalMismatch);
            }
        }
        Ok(())
    }

    fn same_addresses(&self, addrs: &[IpAddr]) -> bool {
        addrs.len() == self.cfg.vips.len()
            && self.cfg.vips.iter().all(|n| addrs.contains(&n.addr()))
    }

    fn fault_cause(&self) -> Option<Reason> {
        self.own_fault_cause().or_else(|| self.sync_hold.clone())
    }

    /// Decide the state from the fault conditions after any change of them.
    fn reevaluate(&mut self, now: Instant) {
        if !self.started || self.state == State::Stop {
            return;
        }
        if let Some(cause) = self.fault_cause() {
            if self.state != State::Fault {
                self.enter_fault(now, cause);
            }
            return;
        }
        match self.state {
            State::Fault => {
                self.preempt_allowed_at = Some(now + self.cfg.preempt_delay);
                if self.cfg.priority == 255 {
                    self.become_master(now, Reason::AddressOwner);
                } else {
                    self.become_backup(now, Reason::FaultCleared);
                }
            }
            State::Init => {
                if self.trackers.iter().any(|t| t.effect() == Effect::Pending) {
                    return;
                }
                if self.cfg.priority == 255 {
                    self.become_master(now, Reason::AddressOwner);
                } else if self.cfg.start_state == StartState::Master {
                    self.become_master(now, Reason::ConfiguredMaster);
                } else {
                    self.become_backup(now, Reason::Startup);
                }
            }
            _ => {}
        }
    }

    fn push_state_changed(&mut self, from: State, to: State, reason: Reason) {
        self.last_reason = Some(reason.clone());
        self.actions.push_back(Action::StateChanged {
            from,
            to,
            reason,
            priority: self.effective_priority,
        });
    }

    fn enter_fault(&mut self, now: Instant, cause: Reason) {
        let from = self.state;
        self.state = State::Fault;
        self.push_state_changed(from, State::Fault, cause);
        if from == State::Master {
            self.send_advert(now, 0);
            self.holding = true;
        }
        self.release_vips();
        self.timers = NO_TIMERS;
        self.deferred_burst = None;
        self.master_address = None;
        self.master_priority = None;
    }

    fn become_master(&mut self, now: Instant, reason: Reason) {
        let from = self.state;
        self.state = State::Master;
        self.counters.became_master += 1;
        self.master_adver_interval = self.cfg.advert_interval;
        self.push_state_changed(from, State::Master, reason);
        self.timers[Timer::MasterDown as usize] = None;
        // Back before the VIPs held were released: they stay (AddVips below is idempotent).
        self.holding = false;
        self.timers[Timer::Release as usize] = None;
        self.master_left = None;
        self.master_priority = None;
        self.send_advert_now(now);
        self.actions.push_back(Action::AddVips(self.all_vips()));
        self.gratuitous(now, GratuitousKind::Initial);
        let g = self.cfg.garp;
        self.timers[Timer::GarpDelayed as usize] =
            (!g.master_delay.is_zero() && g.master_repeat > 0).then(|| now + g.master_delay);
        self.timers[Timer::GarpRefresh as usize] =
            (!g.master_refresh.is_zero()).then(|| now + g.master_refresh);
    }

    fn become_backup(&mut self, now: Instant, reason: Reason) {
        self.become_backup_holding(now, reason, None);
    }

    /// To BACKUP; a master keeps its VIPs bound until `hold` when given, else removes them.
    fn become_backup_holding(&mut self, now: Instant, reason: Reason, hold: Option<Instant>) {
        self.master_left = None;
        let from = self.state;
        self.state = State::Backup;
        self.push_state_changed(from, State::Backup, reason);
        if from == State::Master {
            self.holding = true;
        }
        match hold {
            Some(at) if self.holding => self.hold_vips_until(at),
            _ => self.release_vips(),
        }
        self.timers[Timer::Advert as usize] = None;
        self.timers[Timer::GarpDelayed as usize] = None;
        self.timers[Timer::GarpRefresh as usize] = None;
        self.timers[Timer::GarpDeferred as usize] = None;
        self.deferred_burst = None;
        self.arm_master_down(now);
    }

    /// Release the VIPs held after leaving MASTER at `at`, or sooner if already due sooner.
    fn hold_vips_until(&mut self, at: Instant) {
        if !self.holding {
            return;
        }
        let t = &mut self.timers[Timer::Release as usize];
        *t = Some(t.map_or(at, |due| due.min(at)));
    }

    /// Remove the VIPs held after leaving MASTER, if any.
    fn release_vips(&mut self) {
        if std::mem::take(&mut self.holding) {
            self.timers[Timer::Release as usize] = None;
            self.actions.push_back(Action::RemoveVips(self.all_vips()));
        }
    }

    /// Planned handover: a priority-0 advert came from the master heard, and this router
    /// outranks every other one that could take over (the configuration knows their
    /// highest priorities; the one that left is taken out as the lowest entry that can have
    /// advertised the master's last priority), so waiting Skew_Time would only leave the
    /// virtual router without a master. Unknown peers, or a tie, keep RFC timing.
    fn outranks_all_but_the_leaving(&self) -> bool {
        let Some(peers) = &self.cfg.peer_priorities else {
            return false;
        };
        let mut others = peers.clone();
        others.sort_unstable();
        if let Some(p) = self.master_priority
            && let Some(i) = others.iter().position(|&c| c >= p)
        {
            others.remove(i);
        }
        others.iter().all(|&c| self.effective_priority > c)
    }

    fn arm_master_down(&mut self, now: Instant) {
        let mdi = master_down_interval(
            self.cfg.version,
            self.effective_priority,
            self.master_adver_interval,
        );
        self.timers[Timer::MasterDown as usize] = Some(now + mdi);
    }

    /// The periodic advert: the next one is due one interval after this one was *due*, not
    /// after the (possibly late) wake-up, so the cadence does not drift; after a wake-up more
    /// than an interval late, it restarts from now rather than sending a burst.
    fn send_advert_on_schedule(&mut self, now: Instant, deadline: Instant) {
        let interval = self.cfg.advert_interval.duration();
        self.send_advert(now, self.effective_priority);
        // While lower-priority adverts keep coming (a reply went out within the last two
        // intervals), this advert tells their sender as much as a reply would, so it spends
        // the reply budget: one advert per interval in all under a flood, whichever of the
        // timer and a hostile packet comes first at each interval. A lower-priority master
        // heard for the first time (a healed partition) is still answered at once.
        if self
            .last_reply
            .is_some_and(|t| now.saturating_duration_since(t) < 2 * interval)
        {
            self.last_reply = Some(now);
        }
        let next = deadline + interval;
        self.timers[Timer::Advert as usize] = Some(if next > now { next } else { now + interval });
    }

    /// An advert at once in reply to a received one, at most one per advert interval
    /// (by the instance's clock). Returns whether it was sent.
    fn reply_now(&mut self, now: Instant) -> bool {
        let interval = self.cfg.advert_interval.duration();
        if self
            .last_reply
            .is_some_and(|t| now.saturating_duration_since(t) < interval)
        {
            return false;
        }
        self.last_reply = Some(now);
        self.send_advert_now(now);
        true
    }

    fn send_advert_now(&mut self, now: Instant) {
        self.send_advert(now, self.effective_priority);
        self.timers[Timer::Advert as usize] = Some(now + self.cfg.advert_interval.duration());
    }

    fn send_advert(&mut self, _now: Instant, priority: u8) {
        let advert = Advert {
            version: self.cfg.version,
            vrid: self.cfg.vrid,
            priority,
            interval: self.cfg.advert_interval,
            addresses: self.cfg.advertised_addresses(),
            auth: self.cfg.auth,
        };
        for dst in self.cfg.destinations() {
            // Validation guarantees the advert is representable; a failure would be a bug,
            // and is skipped rather than sending a malformed packet.
            if let Ok(bytes) = advert.to_bytes(self.cfg.source, dst, self.cfg.v3_ipv4_checksum) {
                self.counters.adverts_sent += 1;
                if priority == 0 {
                    self.counters.priority_zero_sent += 1;
                }
                self.actions.push_back(Action::SendAdvert {
                    src: self.cfg.source,
                    dst,
                    bytes,
                    priority,
                });
            }
        }
    }

    fn gratuitous(&mut self, now: Instant, kind: GratuitousKind) {
        let repeat = match kind {
            GratuitousKind::Refresh => self.cfg.garp.master_refresh_repeat,
            _ => self.cfg.garp.master_repeat,
        };
        if repeat == 0 {
            return;
        }
        let addresses = self.all_vips().iter().map(|n| n.addr()).collect();
        self.burst(now, addresses, repeat, kind);
    }

    /// Queue a gratuitous burst, at most one per advert interval per instance: a burst asked
    /// for sooner is held back to the end of that interval, and every burst asked for in the
    /// meantime joins it (then for all the instance's addresses). A master flapped on purpose,
    /// or a spec churning its addresses, cannot turn into a stream of ARP/NA this way, and
    /// nothing is lost: the neighbours still hear one burst after the last change.
    fn burst(&mut self, now: Instant, addresses: Vec<IpAddr>, repeat: u32, kind: GratuitousKind) {
        let gap = self.cfg.advert_interval.duration();
        if let Some(last) = self.last_burst {
            let since = now.saturating_duration_since(last);
            if since < gap {
                self.counters.gratuitous_deferred += 1;
                // The strongest reason wins: an initial burst carries the master_repeat count.
                let pending = match (self.deferred_burst, kind) {
                    (Some(GratuitousKind::Initial), _) | (_, GratuitousKind::Initial) => {
                        GratuitousKind::Initial
                    }
                    (Some(GratuitousKind::Delayed), _) | (_, GratuitousKind::Delayed) => {
                        GratuitousKind::Delayed
                    }
                    _ => GratuitousKind::Refresh,
                };
                self.deferred_burst = Some(pending);
                self.timers[Timer::GarpDeferred as usize] = Some(last + gap);
                return;
            }
        }
        self.last_burst = Some(now);
        self.actions.push_back(Action::SendGratuitous {
            addresses,
            repeat,
            kind,
        });
    }

    fn all_vips(&self) -> Vec<IpNet> {
        self.cfg
            .vips
            .iter()
            .chain(self.cfg.excluded.iter())
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{cfg, v4};
    use std::time::Duration;

    #[test]
    fn the_linger_bound_leaves_room_for_the_full_grace() {
        let ms = Duration::from_millis;
        // Three intervals when they are longer than the grace plus one interval.
        assert_eq!(linger_bound(Interval(100)), ms(3000));
        assert_eq!(linger_bound(Interval(10)), ms(300));
        // At 50 ms: 150 ms equals 100 + 50. At 20 ms: 120, not 60.
        assert_eq!(linger_bound(Interval(5)), ms(150));
        assert_eq!(linger_bound(Interval(2)), ms(120));
        assert_eq!(linger_bound(Interval(1)), ms(110));
    }

    fn master(now: Instant) -> Instance {
        let mut c = cfg(Version::V3, 100, v4(1));
        c.start_state = StartState::Master;
        let mut i = Instance::new(c).unwrap();
        i.start(now);
        while i.poll_action().is_some() {}
        i
    }

    /// A valid v3 advert from 192.0.2.2 for VRID 51 with this priority.
    fn hostile(priority: u8) -> (RxInfo, Advert) {
        let rx = RxInfo {
            src: v4(2),
            dst: IpAddr::V4(crate::packet::MULTICAST_V4),
            ttl: 255,
            checksum: ChecksumKind::V3Ipv4WithPseudoHeader,
        };
        let advert = Advert {
            version: Version::V3,
            vrid: 51,
            priority,
            interval: Interval(100),
            addresses: vec![v4(200)],
            auth: Default::default(),
        };
        (rx, advert)
    }

    /// (adverts sent, gratuitous actions, other actions) drained from `i`.
    fn drain(i: &mut Instance) -> (usize, usize, usize) {
        let (mut adv, mut garp, mut other) = (0, 0, 0);
        while let Some(a) = i.poll_action() {
            match a {
                Action::SendAdvert { .. } => adv += 1,
                Action::SendGratuitous { .. } => garp += 1,
                _ => other += 1,
            }
        }
        (adv, garp, other)
    }

    /// Whether `i` queued a VIP removal, draining its actions.
    fn removes(i: &mut Instance) -> bool {
        std::iter::from_fn(|| i.poll_action()).any(|a| matches!(a, Action::RemoveVips(_)))
    }

    #[test]
    fn a_master_yielding_keeps_its_vips_for_the_grace_unless_it_faults() {
        let t0 = Instant::now();
        let (rx, adv) = hostile(150);
        // Preempted: held, released at +100 ms by the timer.
        let mut i = master(t0);
        i.handle_advert(t0, &rx, &adv).unwrap();
        assert_eq!(i.state(), State::Backup);
        assert!(i.holds_vips() && !removes(&mut i));
        let grace = t0 + Duration::from_millis(100);
        assert_eq!(i.poll_timeout(), Some(grace));
        i.handle_timeout(grace - Duration::from_millis(1));
        assert!(!removes(&mut i));
        i.handle_timeout(grace);
        assert!(removes(&mut i) && !i.holds_vips());
        // A fault inside the grace takes them at once; nothing is removed twice.
        let mut i = master(t0);
        i.handle_advert(t0, &rx, &adv).unwrap();
        while i.poll_action().is_some() {}
        i.handle_link(t0 + Duration::from_millis(10), false);
        assert!(removes(&mut i) && !i.holds_vips());
        i.handle_timeout(grace);
        assert!(!removes(&mut i));
    }

    #[test]
    fn master_again_inside_the_grace_keeps_the_vips() {
        let t0 = Instant::now();
        let mut c = cfg(Version::V3, 100, v4(1));
        c.start_state = StartState::Master;
        c.preempt_delay = Duration::ZERO;
        let mut i = Instance::new(c).unwrap();
        i.start(t0);
        while i.poll_action().is_some() {}
        let (rx, adv) = hostile(150);
        i.handle_advert(t0, &rx, &adv).unwrap();
        while i.poll_action().is_some() {}
        // The new master leaves inside the grace; with its peers known, this one takes over
        // at once on the priority-0 advert, before its release was due.
        let mut c2 = i.config().clone();
        c2.peer_priorities = Some(vec![150]);
        i.update_config(t0, c2).unwrap();
        while i.poll_action().is_some() {}
        let (rx0, adv0) = hostile(0);
        i.handle_advert(t0 + Duration::from_millis(50), &rx0, &adv0)
            .unwrap();
        assert_eq!(i.state(), State::Master);
        assert!(!i.holds_vips());
        assert!(!removes(&mut i), "the VIPs never left");
        i.handle_timeout(t0 + Duration::from_millis(100));
        assert!(!removes(&mut i));
    }

    #[test]
    fn the_successor_rule_needs_a_strict_lead_and_known_peers() {
        let t0 = Instant::now();
        let backup = |peers: Option<Vec<u8>>, heard: Option<u8>| {
            let mut c = cfg(Version::V3, 150, v4(1));
            c.peer_priorities = peers;
            let mut i = Instance::new(c).unwrap();
            i.start(t0);
            if let Some(p) = heard {
                let (rx, adv) = hostile(p);
                i.handle_advert(t0, &rx, &adv).unwrap();
            }
            while i.poll_action().is_some() {}
            let (rx0, adv0) = hostile(0);
            i.handle_advert(t0 + Duration::from_millis(10), &rx0, &adv0)
                .unwrap();
            i.state()
        };
        // Heard the master at 200: the 200 entry is taken out, 150 > 100 ⇒ at once.
        assert_eq!(backup(Some(vec![200, 100]), Some(200)), State::Master);
        // A tie with another peer ⇒ Skew_Time (RFC: the address decides, later).
        assert_eq!(backup(Some(vec![200, 150]), Some(200)), State::Backup);
        // Another peer could outrank it ⇒ Skew_Time.
        assert_eq!(backup(Some(vec![200, 180]), Some(200)), State::Backup);
        // The master's priority lowered by a tracker (190): its 200 entry is still the one
        // taken out (the lowest entry ≥ 190).
        assert_eq!(backup(Some(vec![200, 100]), Some(190)), State::Master);
        // Never heard the master: nobody is taken out, 200 > 150 ⇒ Skew_Time.
        assert_eq!(backup(Some(vec![200, 100]), None), State::Backup);
        // Unknown peers (keepalived.conf) ⇒ RFC.
        assert_eq!(backup(None, Some(200)), State::Backup);
        // A priority-0 advert from someone else than the master heard ⇒ RFC.
        let mut c = cfg(Version::V3, 150, v4(1));
        c.peer_priorities = Some(vec![200, 100]);
        let mut i = Instance::new(c).unwrap();
        i.start(t0);
        let (rx, adv) = hostile(200);
        i.handle_advert(t0, &rx, &adv).unwrap();
        let (mut other, adv0) = hostile(0);
        other.src = v4(3);
        i.handle_advert(t0 + Duration::from_millis(10), &other, &adv0)
            .unwrap();
        assert_eq!(i.state(), State::Backup);
    }

    #[test]
    fn lower_priority_flood_is_not_amplified() {
        let t0 = Instant::now();
        let mut i = master(t0);
        // Half an interval into mastership (the own advert timer stays in the future), 1000
        // valid lower-priority adverts, one per 0.4 ms: within one advert interval.
        let start = t0 + Duration::from_millis(300);
        let (rx, adv) = hostile(50);
        let mut sent = (0, 0, 0);
        for k in 0..1000u64 {
            i.handle_advert(start + Duration::from_micros(400 * k), &rx, &adv)
                .unwrap();
            let d = drain(&mut i);
            sent = (sent.0 + d.0, sent.1 + d.1, sent.2 + d.2);
        }
        assert_eq!(sent, (1, 0, 0), "(adverts, gratuitous, other)");
        assert_eq!(i.state(), State::Master);
        let c = i.counters();
        assert_eq!(c.adverts_received, 1000);
        assert_eq!(c.lower_priority_discarded, 999);
        assert_eq!(c.total_drops(), 0);
        // The same from a lower address at equal priority.
        let (mut rx_eq, adv_eq) = hostile(100);
        rx_eq.src = v4(0);
        i.handle_advert(start + Duration::from_millis(500), &rx_eq, &adv_eq)
            .unwrap();
        assert_eq!(drain(&mut i), (0, 0, 0));
        assert_eq!(i.counters().lower_priority_discarded, 1000);
    }

    #[test]
    fn priority_zero_flood_is_rate_limited() {
        let t0 = Instant::now();
        let mut i = master(t0);
        let start = t0 + Duration::from_millis(300);
        let (rx, adv) = hostile(0);
        let mut adverts = 0;
        for k in 0..1000u64 {
            i.handle_advert(start + Duration::from_micros(400 * k), &rx, &adv)
                .unwrap();
            let (a, g, o) = drain(&mut i);
            assert_eq!((g, o), (0, 0));
            adverts += a;
        }
        assert_eq!(adverts, 1);
        assert_eq!(i.counters().priority_zero_received, 1000);
        assert_eq!(i.counters().priority_zero_rate_limited, 999);
        assert_eq!(i.state(), State::Master);
    }

    #[test]
    fn a_sustained_flood_costs_one_advert_per_interval_in_all() {
        let t0 = Instant::now();
        let mut i = master(t0);
        let (rx, adv) = hostile(50);
        let (mut adverts, mut garps) = (0, 0);
        let mut now = t0;
        let end = t0 + Duration::from_secs(10);
        // One hostile advert per millisecond for 10 s, the timers served in between.
        while now < end {
            now += Duration::from_millis(1);
            if i.poll_timeout().is_some_and(|t| t <= now) {
                i.handle_timeout(now);
                let (a, g, _) = drain(&mut i);
                adverts += a;
                // Timer GARPs (the delayed burst at 5 s) are not replies.
                garps += g;
            }
            i.handle_advert(now, &rx, &adv).unwrap();
            let (a, g, _) = drain(&mut i);
            adverts += a;
            assert_eq!(g, 0, "no gratuitous burst in reply");
        }
        // One advert per interval in all (scheduled or immediate, never both), instead of
        // 10 000 adverts and GARP bursts.
        assert!(adverts <= 11, "{adverts} adverts");
        assert!(adverts >= 10, "{adverts} adverts");
        assert!(garps <= 1);
        assert_eq!(i.state(), State::Master);
    }

    /// Gratuitous actions drained from `i` (the rest is dropped).
    fn bursts(i: &mut Instance) -> Vec<(GratuitousKind, usize)> {
        let mut out = Vec::new();
        while let Some(a) = i.poll_action() {
            if let Action::SendGratuitous {
                kind, addresses, ..
            } = a
            {
                out.push((kind, addresses.len()));
            }
        }
        out
    }

    #[test]
    fn a_master_flapped_on_purpose_sends_at_most_one_burst_per_interval() {
        // A hostile peer makes a backup flap: a priority-0 advert (the backup takes over after
        // Skew_Time), then a higher-priority advert (it steps down), again and again, 10 s.
        let t0 = Instant::now();
        let mut i = Instance::new(cfg(Version::V3, 100, v4(1))).unwrap();
        i.start(t0);
        while i.poll_action().is_some() {}
        let interval = i.config().advert_interval.duration();
        let (rx, leave) = hostile(0);
        let (_, higher) = hostile(200);
        let mut now = t0;
        let end = t0 + Duration::from_secs(10);
        let (mut burst_at, mut masters, mut last_master) = (Vec::new(), 0, t0);
        let mut told = false;
        let step = |i: &mut Instance, now: Instant, burst_at: &mut Vec<Instant>| {
            for (kind, n) in bursts(i) {
                assert_eq!(n, 1, "{kind:?} names every VIP");
                burst_at.push(now);
            }
        };
        while now < end {
            now += Duration::from_millis(1);
            if i.poll_timeout().is_some_and(|t| t <= now) {
                let was = i.state();
                i.handle_timeout(now);
                if was != State::Master && i.state() == State::Master {
                    masters += 1;
                    last_master = now;
                }
                step(&mut i, now, &mut burst_at);
            }
            // 5 ms after each change, the hostile peer speaks: priority 0 to a backup (once:
            // a repeat would restart its Skew_Time), a higher priority to a master.
            if (now - t0).as_millis().is_multiple_of(5) {
                let adv = match i.state() {
                    State::Master => Some(&higher),
                    State::Backup if !told => Some(&leave),
                    _ => None,
                };
                if let Some(adv) = adv {
                    told = i.state() == State::Backup;
                    i.handle_advert(now, &rx, adv).unwrap();
                    step(&mut i, now, &mut burst_at);
                }
            }
        }
        // Skew_Time is 609 ms here (priority 100, 1 s interval): one flap per ~615 ms.
        assert!(
            masters >= 15,
            "the peer flapped the instance {masters} times"
        );
        assert!(
            burst_at.windows(2).all(|w| w[1] - w[0] >= interval),
            "bursts at least one interval apart"
        );
        assert!(
            burst_at.len() < masters,
            "{} bursts for {masters} takeovers in 10 s",
            burst_at.len()
        );
        assert!(burst_at.len() <= 11, "{} bursts in 10 s", burst_at.len());
        assert!(i.counters().gratuitous_deferred > 0);
        // Left as master at the end: the held-back burst still goes out after the last
        // takeover, within one interval.
        if i.state() != State::Master {
            i.handle_timeout(now + Duration::from_millis(700));
            assert_eq!(i.state(), State::Master);
            last_master = now + Duration::from_millis(700);
            now = last_master;
            step(&mut i, now, &mut burst_at);
        }
        let deadline = last_master + interval;
        while burst_at.last().is_none_or(|b| *b < last_master) && now < deadline {
            now += Duration::from_millis(1);
            if i.poll_timeout().is_some_and(|t| t <= now) {
                i.handle_timeout(now);
                step(&mut i, now, &mut burst_at);
            }
        }
        let last = *burst_at.last().unwrap();
        assert!(
            last >= last_master && last <= deadline,
            "a burst follows the last takeover within one interval"
        );
    }

    #[test]
    fn address_churn_on_a_master_is_announced_at_most_once_per_interval() {
        let t0 = Instant::now();
        let mut i = master(t0);
        let interval = i.config().advert_interval.duration();
        // A first takeover burst went out at t0. Ten spec updates 10 ms apart, each adding one
        // VIP: the first is held back to t0 + interval, the rest join it.
        let mut c = i.config().clone();
        let mut got = Vec::new();
        for k in 0..10u8 {
            c.vips
                .push(format!("198.51.100.{}/24", k + 1).parse().unwrap());
            let at = t0 + Duration::from_millis(10 * (u64::from(k) + 1));
            assert_eq!(
                i.update_config(at, c.clone()).unwrap(),
                ConfigUpdate::Applied
            );
            got.extend(bursts(&mut i));
        }
        assert_eq!(got, vec![], "held back");
        assert_eq!(i.counters().gratuitous_deferred, 10);
        i.handle_timeout(t0 + interval - Duration::from_millis(1));
        assert_eq!(bursts(&mut i), vec![]);
        i.handle_timeout(t0 + interval);
        assert_eq!(
            bursts(&mut i),
            vec![(GratuitousKind::Initial, 11)],
            "one burst naming every VIP"
        );
        // A later change, an interval after that burst, goes out at once.
        c.vips.pop();
        c.vips.push("203.0.113.1/24".parse().unwrap());
        i.update_config(t0 + interval * 2, c).unwrap();
        assert_eq!(bursts(&mut i), vec![(GratuitousKind::Initial, 1)]);
    }

    #[test]
    fn a_held_back_burst_is_dropped_when_mastership_is_lost() {
        let t0 = Instant::now();
        let mut i = master(t0);
        let mut c = i.config().clone();
        c.vips.push("198.51.100.1/24".parse().unwrap());
        i.update_config(t0 + Duration::from_millis(10), c).unwrap();
        assert_eq!(bursts(&mut i), vec![]);
        let (rx, higher) = hostile(200);
        i.handle_advert(t0 + Duration::from_millis(20), &rx, &higher)
            .unwrap();
        assert_eq!(i.state(), State::Backup);
        while i.poll_action().is_some() {}
        i.handle_timeout(t0 + Duration::from_millis(1000));
        assert_eq!(
            bursts(&mut i),
            vec![],
            "no ARP for addresses no longer held"
        );
    }

    #[test]
    fn the_reply_budget_renews_each_interval() {
        let t0 = Instant::now();
        let mut i = master(t0);
        let (rx, adv) = hostile(50);
        let t1 = t0 + Duration::from_millis(300);
        i.handle_advert(t1, &rx, &adv).unwrap();
        assert_eq!(drain(&mut i), (1, 0, 0));
        i.handle_advert(t1 + Duration::from_millis(999), &rx, &adv)
            .unwrap();
        assert_eq!(drain(&mut i), (0, 0, 0));
        i.handle_advert(t1 + Duration::from_millis(1000), &rx, &adv)
            .unwrap();
        assert_eq!(drain(&mut i), (1, 0, 0));
        // A higher-priority advert is never rate limited.
        let (rx, adv) = hostile(150);
        i.handle_advert(t1 + Duration::from_millis(1001), &rx, &adv)
            .unwrap();
        assert_eq!(i.state(), State::Backup);
    }

    #[test]
    fn late_wake_ups_do_not_slow_the_advert_cadence() {
        let t0 = Instant::now();
        let mut i = master(t0);
        let interval = i.config().advert_interval.duration();
        let first = i.poll_timeout().unwrap();
        // Every wake-up comes 7 ms late (the interval is 1 s here: cfg(.., 100, ..) is
        // centiseconds); the adverts stay on the original grid.
        let garp_delayed = t0 + Duration::from_secs(5);
        let mut due = first;
        for k in 0..10u32 {
            let late = due + Duration::from_millis(7);
            i.handle_timeout(late);
            while i.poll_action().is_some() {}
            let expected = first + interval * (k + 1);
            let next_advert = i.poll_timeout().unwrap();
            // The delayed GARP timer may come first; the advert timer is the other one.
            if next_advert != expected {
                assert_eq!(next_advert, garp_delayed, "round {k}");
                i.handle_timeout(garp_delayed);
                while i.poll_action().is_some() {}
                assert_eq!(i.poll_timeout().unwrap(), expected, "round {k}");
            }
            due = expected;
        }
        // More than an interval late: restart from now instead of sending a burst.
        let very_late = due + interval * 3;
        i.handle_timeout(very_late);
        while i.poll_action().is_some() {}
        assert_eq!(i.poll_timeout().unwrap(), very_late + interval);
    }

    #[test]
    fn update_in_place_does_not_flap() {
        let t0 = Instant::now();
        let mut i = master(t0);
        let mut c = i.config().clone();
        c.priority = 150;
        c.preempt = false;
        c.garp.master_repeat = 3;
        c.advert_interval = Interval(50);
        assert_eq!(i.update_config(t0, c).unwrap(), ConfigUpdate::Applied);
        assert_eq!(i.state(), State::Master);
        assert_eq!(i.effective_priority(), 150);
        assert_eq!(i.poll_action(), None);
        // The next advert uses the new interval and priority.
        i.handle_timeout(t0 + Duration::from_secs(1));
        match i.poll_action() {
            Some(Action::SendAdvert {
                priority: 150,
                bytes,
                ..
            }) => assert_eq!(&bytes[4..6], &[0, 50]),
            other => panic!("{other:?}"),
        }
        assert_eq!(i.poll_timeout(), Some(t0 + Duration::from_millis(1500)));
    }

    #[test]
    fn vip_change_on_master_adds_and_removes() {
        let t0 = Instant::now();
        let mut i = master(t0);
        let mut c = i.config().clone();
        c.vips = vec!["192.0.2.201/24".parse().unwrap()];
        // One advert interval after the takeover burst (a sooner one would be held back).
        let t1 = t0 + i.config().advert_interval.duration();
        assert_eq!(i.update_config(t1, c).unwrap(), ConfigUpdate::Applied);
        assert_eq!(
            i.poll_action(),
            Some(Action::RemoveVips(vec!["192.0.2.200/24".parse().unwrap()]))
        );
        assert_eq!(
            i.poll_action(),
            Some(Action::AddVips(vec!["192.0.2.201/24".parse().unwrap()]))
        );
        assert!(matches!(
            i.poll_action(),
            Some(Action::SendGratuitous {
                kind: GratuitousKind::Initial,
                ..
            })
        ));
        assert_eq!(i.state(), State::Master);
    }

    #[test]
    fn identity_changes_need_a_restart() {
        let t0 = Instant::now();
        let mut i = master(t0);
        let mut c = i.config().clone();
        c.vrid = 52;
        c.interface = "eth1".into();
        c.version = Version::V2;
        match i.update_config(t0, c).unwrap() {
            ConfigUpdate::RestartRequired(f) => {
                assert_eq!(f, vec!["interface", "virtualRouterID", "version"])
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(i.config().vrid, 51, "not applied");
        let mut bad = i.config().clone();
        bad.priority = 0;
        assert_eq!(i.update_config(t0, bad).unwrap_err().field, "priority");
    }

    #[test]
    fn tracker_state_survives_update_and_weight_change_applies() {
        let t0 = Instant::now();
        let mut c = cfg(Version::V3, 100, v4(1));
        c.trackers = vec![super::super::track::TrackerSpec {
            name: "p".into(),
            weight: 10,
            reverse: false,
            rule: super::super::track::Rule::Process { quorum: 1 },
        }];
        let mut i = Instance::new(c).unwrap();
        i.start(t0);
        assert!(i.handle_tracker(t0, "p", Observation::ProcessCount(1)));
        assert!(!i.handle_tracker(t0, "q", Observation::ProcessCount(1)));
        assert_eq!(i.effective_priority(), 110);
        let mut c = i.config().clone();
        c.trackers[0].weight = 20;
        i.update_config(t0, c).unwrap();
        assert_eq!(i.effective_priority(), 120);
        assert_eq!(i.trackers()[0].effect(), Effect::Delta(20));
        assert_eq!(i.state(), State::Backup);
    }

    #[test]
    fn garp_refresh_repeats() {
        let t0 = Instant::now();
        let mut c = cfg(Version::V3, 100, v4(1));
        c.start_state = StartState::Master;
        c.garp.master_refresh = Duration::from_secs(60);
        c.garp.master_refresh_repeat = 2;
        c.garp.master_delay = Duration::ZERO;
        let mut i = Instance::new(c).unwrap();
        i.start(t0);
        while i.poll_action().is_some() {}
        let mut refreshes = Vec::new();
        let mut now = t0;
        while now < t0 + Duration::from_secs(185) {
            now = i.poll_timeout().unwrap();
            i.handle_timeout(now);
            while let Some(a) = i.poll_action() {
                if let Action::SendGratuitous { kind, repeat, .. } = a {
                    refreshes.push((now - t0, kind, repeat));
                }
            }
        }
        let want = [60, 120, 180].map(|s| (Duration::from_secs(s), GratuitousKind::Refresh, 2));
        assert_eq!(refreshes, want);
    }

    #[test]
    fn reason_and_state_text() {
        assert_eq!(State::Master.to_string(), "MASTER");
        assert_eq!(State::Stop.to_string(), "STOP");
        let r = Reason::HigherPriorityAdvert {
            from: v4(2),
            priority: 200,
        };
        assert_eq!(
            r.to_string(),
            "received higher priority advert from 192.0.2.2 (priority 200)"
        );
        assert_eq!(
            Reason::InterfaceDown {
                interface: "eth0".into()
            }
            .to_string(),
            "interface eth0 down"
        );
    }
}
