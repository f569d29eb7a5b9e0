//! Table-driven conformance cases: one row per protocol rule listed in
//! `shared/reference/vrrp.md` (RFC 3768 / RFC 9568 MUSTs and keepalived behaviour we copy).
//!
//! Each row sets an instance up in a state (`given`), applies one input (`when`) one second
//! later, and checks the resulting state, adverts sent (by priority), VIP and gratuitous
//! actions, drop counters and the master down timer.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::checksum::V3Ipv4Checksum;
use super::config::{InstanceConfig, StartState};
use super::counters::DropReason;
use super::instance::{Action, State};
use super::packet::{Advert, Auth, Interval, MULTICAST_V4, Version};
use super::router::{Delivery, InstanceId, Received, Router};
use super::sim::cfg;
use super::timers::{master_down_interval, skew_time};
use super::track::{Observation, Rule, TrackerSpec};

const OWN: u8 = 10;

#[derive(Clone, Copy, Debug)]
enum Given {
    /// Not started.
    Init,
    /// Started as backup.
    Backup,
    /// Started with `state MASTER`.
    Master,
    /// Interface down after start.
    Fault,
}

#[derive(Clone, Copy, Debug)]
struct Adv {
    version: Version,
    vrid: u8,
    priority: u8,
    src: u8,
    ttl: u8,
    interval: u16,
    pass: Option<&'static [u8]>,
    other_vip: bool,
    no_pseudo_header: bool,
}

const ADV: Adv = Adv {
    version: Version::V3,
    vrid: 51,
    priority: 100,
    src: 20,
    ttl: 255,
    interval: 100,
    pass: None,
    other_vip: false,
    no_pseudo_header: false,
};

#[derive(Clone, Copy, Debug)]
enum When {
    Start,
    Advert(Adv),
    /// A valid v3 advert with bytes mangled by the function.
    Raw(fn(&mut Vec<u8>)),
    /// Jump to the master down timer / advert timer.
    Timeout,
    Shutdown,
    LinkDown,
    TrackerFails,
}

#[derive(Clone, Copy, Debug)]
enum Timer {
    /// Not checked.
    Any,
    /// No master down timer.
    None,
    /// Still the one armed at start (t0 + MDI).
    Unchanged,
    /// Reset at the input time to MDI (with this master interval, centiseconds).
    ResetMdi(u16),
    /// Set at the input time to Skew_Time.
    Skew,
}

struct Case {
    rule: &'static str,
    version: Version,
    priority: u8,
    preempt: bool,
    unicast: bool,
    /// `state MASTER` configured.
    start_master: bool,
    given: Given,
    when: When,
    state: State,
    adverts: &'static [u8],
    add_vips: bool,
    remove_vips: bool,
    garp: bool,
    drop: Option<DropReason>,
    router_drop: Option<DropReason>,
    timer: Timer,
}

const BASE: Case = Case {
    rule: "",
    version: Version::V3,
    priority: 100,
    preempt: true,
    unicast: false,
    start_master: false,
    given: Given::Backup,
    when: When::Start,
    state: State::Backup,
    adverts: &[],
    add_vips: false,
    remove_vips: false,
    garp: false,
    drop: None,
    router_drop: None,
    timer: Timer::Any,
};

fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
}

fn advert_bytes(a: &Adv) -> Vec<u8> {
    let vip = if a.other_vip { ip(201) } else { ip(200) };
    let advert = Advert {
        version: a.version,
        vrid: a.vrid,
        priority: a.priority,
        interval: Interval(a.interval),
        addresses: vec![vip],
        auth: a.pass.and_then(Auth::pass).unwrap_or_default(),
    };
    let mode = if a.no_pseudo_header {
        V3Ipv4Checksum::WithoutPseudoHeader
    } else {
        V3Ipv4Checksum::WithPseudoHeader
    };
    advert
        .to_bytes(ip(a.src), IpAddr::V4(MULTICAST_V4), mode)
        .unwrap()
}

fn config(c: &Case) -> InstanceConfig {
    let mut x = cfg(c.version, c.priority, ip(OWN));
    x.preempt = c.preempt;
    if c.version == Version::V2 {
        x.auth = Auth::pass(b"12345").unwrap();
    }
    if c.unicast {
        x.unicast_peers = vec![ip(20), ip(30)];
        x.allow_lower_ttl = true;
    }
    if c.start_master || matches!(c.given, Given::Master) {
        x.start_state = StartState::Master;
    }
    x.trackers = vec![TrackerSpec {
        name: "chk".into(),
        weight: 0,
        reverse: false,
        rule: Rule::Script { rise: 1, fall: 1 },
    }];
    x
}

fn run(c: &Case) {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(1);
    let mut r = Router::new();
    let id = r.add(config(c)).unwrap();
    r.handle_tracker(t0, "chk", Observation::ScriptResult(true));
    if !matches!(c.given, Given::Init) {
        r.start(t0);
    }
    if matches!(c.given, Given::Fault) {
        r.handle_link(t0, "eth0", false);
    }
    while r.poll_action().is_some() {}
    let inst = |r: &Router| r.get(id).unwrap().clone_state();
    let mut now = t1;
    let mut delivery = None;
    match c.when {
        When::Start => r.start(t1),
        When::Advert(a) => {
            let rx = Received {
                interface: "eth0",
                src: ip(a.src),
                dst: IpAddr::V4(MULTICAST_V4),
                ttl: a.ttl,
            };
            delivery = Some(r.handle_packet(t1, &rx, &advert_bytes(&a)));
        }
        When::Raw(f) => {
            let mut b = advert_bytes(&ADV);
            f(&mut b);
            let rx = Received {
                interface: "eth0",
                src: ip(20),
                dst: IpAddr::V4(MULTICAST_V4),
                ttl: 255,
            };
            delivery = Some(r.handle_packet(t1, &rx, &b));
        }
        When::Timeout => {
            now = r.poll_timeout().expect("a timer is armed");
            r.handle_timeout(now);
        }
        When::Shutdown => r.shutdown(t1),
        When::LinkDown => r.handle_link(t1, "eth0", false),
        When::TrackerFails => {
            r.handle_tracker(t1, "chk", Observation::ScriptResult(false));
        }
    }
    let mut adverts = Vec::new();
    let (mut add, mut remove, mut garp) = (false, false, false);
    while let Some(a) = r.poll_action() {
        assert_eq!(a.instance, InstanceId(0));
        match a.action {
            Action::SendAdvert {
                priority, src, dst, ..
            } => {
                assert_eq!(src, ip(OWN), "{}", c.rule);
                let want = if c.unicast {
                    dst == ip(20) || dst == ip(30)
                } else {
                    dst == IpAddr::V4(MULTICAST_V4)
                };
                assert!(want, "{}: destination {dst}", c.rule);
                if !c.unicast || dst == ip(20) {
                    adverts.push(priority);
                }
            }
            Action::AddVips(_) => add = true,
            Action::RemoveVips(_) => remove = true,
            Action::SendGratuitous { .. } => garp = true,
            Action::StateChanged { .. } => {}
        }
    }
    let (state, counters, timeout, eff) = inst(&r);
    assert_eq!(state, c.state, "{}: state", c.rule);
    assert_eq!(adverts, c.adverts, "{}: adverts sent", c.rule);
    assert_eq!(
        (add, remove, garp),
        (c.add_vips, c.remove_vips, c.garp),
        "{}: (add, remove, garp)",
        c.rule
    );
    match c.drop {
        Some(d) => assert_eq!(counters.drops(d), 1, "{}: drop {d}", c.rule),
        None => assert_eq!(counters.total_drops(), 0, "{}: unexpected drop", c.rule),
    }
    if let Some(delivery) = delivery {
        // What handle_packet reports is what the counters say.
        let want = match (c.drop, c.router_drop) {
            (Some(reason), _) => Delivery::Dropped {
                instance: Some(id),
                reason,
            },
            (None, Some(reason)) => Delivery::Dropped {
                instance: None,
                reason,
            },
            (None, None) => Delivery::Accepted(id),
        };
        assert_eq!(delivery, want, "{}: delivery", c.rule);
    }
    if let Some(d) = c.router_drop {
        assert_eq!(
            r.unclaimed_counters().drops(d),
            1,
            "{}: router drop {d}",
            c.rule
        );
    }
    let mdi = |cs| master_down_interval(c.version, eff, Interval(cs));
    let want = match c.timer {
        Timer::Any => return,
        Timer::None => None,
        Timer::Unchanged => Some(t0 + mdi(100)),
        Timer::ResetMdi(cs) => Some(now + mdi(cs)),
        Timer::Skew => Some(now + skew_time(c.version, eff, Interval(100))),
    };
    let timeout = if state == State::Backup {
        timeout
    } else {
        None
    };
    assert_eq!(timeout, want, "{}: master down timer", c.rule);
}

impl super::instance::Instance {
    fn clone_state(&self) -> (State, super::counters::Counters, Option<Instant>, u8) {
        (
            self.state(),
            self.counters().clone(),
            self.master_down_at(),
            self.effective_priority(),
        )
    }
}

const CASES: &[Case] = &[
    // ---- receive checks ----
    Case {
        rule: "TTL/hop limit != 255 is dropped (multicast)",
        when: When::Advert(Adv { ttl: 254, ..ADV }),
        drop: Some(DropReason::Ttl),
        timer: Timer::Unchanged,
        ..BASE
    },
    Case {
        rule: "unicast peers may be accepted with a lower TTL when configured",
        unicast: true,
        when: When::Advert(Adv { ttl: 64, ..ADV }),
        timer: Timer::ResetMdi(100),
        ..BASE
    },
    Case {
        rule: "unicast: adverts from sources outside the peer list are dropped",
        unicast: true,
        when: When::Advert(Adv { src: 40, ..ADV }),
        drop: Some(DropReason::UnknownPeer),
        timer: Timer::Unchanged,
        ..BASE
    },
    Case {
        rule: "unicast: adverts go to each peer",
        unicast: true,
        given: Given::Master,
        when: When::Timeout,
        state: State::Master,
        adverts: &[100],
        ..BASE
    },
    Case {
        rule: "wrong version is dropped",
        when: When::Advert(Adv {
            version: Version::V2,
            ..ADV
        }),
        drop: Some(DropReason::VersionMismatch),
        timer: Timer::Unchanged,
        ..BASE
    },
    Case {
        rule: "truncated packets are dropped",
        when: When::Raw(|b| b.truncate(6)),
        drop: Some(DropReason::Truncated),
        timer: Timer::Unchanged,
        ..BASE
    },
    Case {
        rule: "a length that does not match the count is dropped",
        when: When::Raw(|b| b.push(0)),
        drop: Some(DropReason::CountMismatch),
        timer: Timer::Unchanged,
        ..BASE
    },
    Case {
        rule: "bad checksum is dropped",
        when: When::Raw(|b| b[7] ^= 1),
        drop: Some(DropReason::BadChecksum),
        timer: Timer::Unchanged,
        ..BASE
    },
    Case {
        rule: "type other than advertisement is dropped",
        when: When::Raw(|b| b[0] = 0x32),
        drop: Some(DropReason::BadType),
        timer: Timer::Unchanged,
        ..BASE
    },
    Case {
        rule: "unknown version number is dropped",
        when: When::Raw(|b| b[0] = 0x41),
        drop: Some(DropReason::BadVersion),
        timer: Timer::Unchanged,
        ..BASE
    },
    Case {
        rule: "VRID not configured on this interface is dropped",
        when: When::Advert(Adv { vrid: 52, ..ADV }),
        router_drop: Some(DropReason::UnknownVrid),
        timer: Timer::Unchanged,
        ..BASE
    },
    Case {
        rule: "v2: authentication mismatch is dropped",
        version: Version::V2,
        when: When::Advert(Adv {
            version: Version::V2,
            pass: Some(b"other"),
            ..ADV
        }),
        drop: Some(DropReason::AuthMismatch),
        timer: Timer::Unchanged,
        ..BASE
    },
    Case {
        rule: "v2: missing authentication is dropped",
        version: Version::V2,
        when: When::Advert(Adv {
            version: Version::V2,
            pass: None,
            ..ADV
        }),
        drop: Some(DropReason::AuthMismatch),
        timer: Timer::Unchanged,
        ..BASE
    },
    Case {
        rule: "v2: advert interval different from ours is dropped",
        version: Version::V2,
        when: When::Advert(Adv {
            version: Version::V2,
            pass: Some(b"12345"),
            interval: 200,
            ..ADV
        }),
        drop: Some(DropReason::IntervalMismatch),
        timer: Timer::Unchanged,
        ..BASE
    },
    Case {
        rule: "v2: matching authentication and interval is accepted",
        version: Version::V2,
        when: When::Advert(Adv {
            version: Version::V2,
            pass: Some(b"12345"),
            ..ADV
        }),
        timer: Timer::ResetMdi(100),
        ..BASE
    },
    Case {
        rule: "address list mismatch: accepted (keepalived 2.3+ warns)",
        when: When::Advert(Adv {
            other_vip: true,
            ..ADV
        }),
        timer: Timer::ResetMdi(100),
        ..BASE
    },
    Case {
        rule: "v3 IPv4 checksum without pseudo-header (RFC 9568) is accepted",
        when: When::Advert(Adv {
            no_pseudo_header: true,
            ..ADV
        }),
        timer: Timer::ResetMdi(100),
        ..BASE
    },
    Case {
        rule: "adverts are ignored in FAULT",
        given: Given::Fault,
        when: When::Advert(ADV),
        state: State::Fault,
        drop: Some(DropReason::NotRunning),
        timer: Timer::None,
        ..BASE
    },
    Case {
        rule: "our own looped-back advert is dropped",
        when: When::Advert(Adv { src: OWN, ..ADV }),
        drop: Some(DropReason::OwnAdvert),
        timer: Timer::Unchanged,
        ..BASE
    },
    // ---- Initialize ----
    Case {
        rule: "Initialize: priority 255 sends an advert, GARP, becomes master",
        priority: 255,
        given: Given::Init,
        when: When::Start,
        state: State::Master,
        adverts: &[255],
        add_vips: true,
        garp: true,
        ..BASE
    },
    Case {
        rule: "Initialize: state MASTER starts as master at once",
        given: Given::Init,
        when: When::Start,
        start_master: true,
        state: State::Master,
        adverts: &[100],
        add_vips: true,
        garp: true,
        ..BASE
    },
    Case {
        rule: "Initialize: otherwise backup with the down timer at Master_Down_Interval",
        given: Given::Init,
        when: When::Start,
        timer: Timer::ResetMdi(100),
        ..BASE
    },
    // ---- Backup ----
    Case {
        rule: "Backup: down timer fires: advert, GARP, master",
        when: When::Timeout,
        state: State::Master,
        adverts: &[100],
        add_vips: true,
        garp: true,
        ..BASE
    },
    Case {
        rule: "Backup: priority 0 sets the down timer to Skew_Time",
        when: When::Advert(Adv { priority: 0, ..ADV }),
        timer: Timer::Skew,
        ..BASE
    },
    Case {
        rule: "Backup: higher priority resets the down timer",
        when: When::Advert(Adv {
            priority: 200,
            ..ADV
        }),
        timer: Timer::ResetMdi(100),
        ..BASE
    },
    Case {
        rule: "Backup: equal priority resets the down timer",
        when: When::Advert(ADV),
        timer: Timer::ResetMdi(100),
        ..BASE
    },
    Case {
        rule: "Backup: lower priority with preempt off resets the down timer",
        preempt: false,
        when: When::Advert(Adv {
            priority: 50,
            ..ADV
        }),
        timer: Timer::ResetMdi(100),
        ..BASE
    },
    Case {
        rule: "Backup: lower priority with preempt on is ignored",
        when: When::Advert(Adv {
            priority: 50,
            ..ADV
        }),
        timer: Timer::Unchanged,
        ..BASE
    },
    Case {
        rule: "Backup (v3): learns Master_Adver_Interval from the advert",
        when: When::Advert(Adv {
            interval: 50,
            ..ADV
        }),
        timer: Timer::ResetMdi(50),
        ..BASE
    },
    Case {
        rule: "Backup: never binds VIPs on adverts",
        when: When::Advert(Adv {
            priority: 254,
            ..ADV
        }),
        timer: Timer::ResetMdi(100),
        ..BASE
    },
    // ---- Master ----
    Case {
        rule: "Master: advert timer sends an advert",
        given: Given::Master,
        when: When::Timeout,
        state: State::Master,
        adverts: &[100],
        ..BASE
    },
    Case {
        rule: "Master: higher priority makes it backup; the VIPs go after the release grace",
        given: Given::Master,
        when: When::Advert(Adv {
            priority: 150,
            ..ADV
        }),
        timer: Timer::ResetMdi(100),
        ..BASE
    },
    Case {
        rule: "Master: equal priority from a higher address makes it backup (VIPs after the grace)",
        given: Given::Master,
        when: When::Advert(Adv { src: 20, ..ADV }),
        timer: Timer::ResetMdi(100),
        ..BASE
    },
    Case {
        rule: "Master: equal priority from a lower address: stays, advertises at once, no GARP",
        given: Given::Master,
        when: When::Advert(Adv { src: 5, ..ADV }),
        state: State::Master,
        adverts: &[100],
        ..BASE
    },
    Case {
        rule: "Master: priority 0 makes it advertise at once",
        given: Given::Master,
        when: When::Advert(Adv { priority: 0, ..ADV }),
        state: State::Master,
        adverts: &[100],
        ..BASE
    },
    Case {
        rule: "Master: lower priority is discarded but for one advert at once, no GARP",
        given: Given::Master,
        when: When::Advert(Adv {
            priority: 50,
            ..ADV
        }),
        state: State::Master,
        adverts: &[100],
        ..BASE
    },
    Case {
        rule: "Master (v3): a higher-priority master's interval is learned",
        given: Given::Master,
        when: When::Advert(Adv {
            priority: 150,
            interval: 30,
            ..ADV
        }),
        timer: Timer::ResetMdi(30),
        ..BASE
    },
    Case {
        rule: "Shutdown of a master: priority 0, VIPs kept until a successor speaks (bounded)",
        given: Given::Master,
        when: When::Shutdown,
        state: State::Stop,
        adverts: &[0],
        ..BASE
    },
    Case {
        rule: "Shutdown of a backup sends nothing",
        when: When::Shutdown,
        state: State::Stop,
        timer: Timer::None,
        ..BASE
    },
    // ---- Fault ----
    Case {
        rule: "Fault (interface down) from master: priority 0, no VIPs",
        given: Given::Master,
        when: When::LinkDown,
        state: State::Fault,
        adverts: &[0],
        remove_vips: true,
        timer: Timer::None,
        ..BASE
    },
    Case {
        rule: "Fault (weight-0 tracker) from master: priority 0, no VIPs",
        given: Given::Master,
        when: When::TrackerFails,
        state: State::Fault,
        adverts: &[0],
        remove_vips: true,
        timer: Timer::None,
        ..BASE
    },
    Case {
        rule: "Fault from backup: nothing sent, no timer",
        when: When::TrackerFails,
        state: State::Fault,
        timer: Timer::None,
        ..BASE
    },
    Case {
        rule: "an owner in fault still faults (weights never apply, weight 0 does)",
        priority: 255,
        given: Given::Master,
        when: When::TrackerFails,
        state: State::Fault,
        adverts: &[0],
        remove_vips: true,
        ..BASE
    },
];

#[test]
fn conformance_table() {
    for c in CASES {
        run(c);
    }
    assert!(CASES.len() >= 40);
}
