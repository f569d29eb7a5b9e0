//! Scenario tests on the simulated segment, with exact virtual-time assertions.
//!
//! Timing reference (1 s adverts, 1 ms one-way delay): Master_Down_Interval is
//! 3 s + (256 − p)/256 s: p=100 → 3.609375 s, p=200 → 3.218750 s, p=244 → 3.046875 s,
//! p=247 → 3.035156 s, p=250 → 3.023437 s, p=254 → 3.007812 s (whole microseconds).

use std::time::Duration;

use super::config::StartState;
use super::counters::DropReason;
use super::instance::{Action, GratuitousKind, Reason, State};
use super::packet::{Auth, Interval, Version};
use super::router::InstanceId;
use super::sim::{Sim, cfg, ll6, t, v4};
use super::track::{Observation, Rule, TrackerSpec};

const I0: InstanceId = InstanceId(0);
const I1: InstanceId = InstanceId(1);

fn pair(a_prio: u8, b_prio: u8, a_master: bool) -> Sim {
    let mut sim = Sim::new(1);
    let mut a = cfg(Version::V3, a_prio, v4(1));
    if a_master {
        a.start_state = StartState::Master;
    }
    sim.add_node("a", v4(1), vec![a]);
    sim.add_node("b", v4(2), vec![cfg(Version::V3, b_prio, v4(2))]);
    sim
}

fn drops(sim: &Sim, n: usize, r: DropReason) -> u64 {
    sim.nodes[n].router.get(I0).unwrap().counters().drops(r)
}

#[test]
fn election_by_priority() {
    let mut sim = pair(200, 100, false);
    sim.start_all();
    sim.run_to(30.0);
    assert_eq!(sim.entered(0, I0, State::Backup), vec![t(0, 0)]);
    assert_eq!(sim.entered(0, I0, State::Master), vec![t(3, 218_750)]);
    assert!(sim.entered(1, I0, State::Master).is_empty());
    assert_eq!(sim.masters(51), vec![0]);
    assert_eq!(sim.nodes[0].vips.len(), 1);
    assert!(sim.nodes[1].vips.is_empty());
    // One advert per second from the moment of election.
    let adv = sim.adverts(0);
    assert_eq!(adv[0], (t(3, 218_750), 200));
    assert_eq!(adv[1], (t(4, 218_750), 200));
    assert_eq!(adv.len(), 27);
    assert_eq!(sim.max_masters_since(51, Duration::ZERO), 1);
}

#[test]
fn election_ipv6_v3() {
    let mut sim = Sim::new(2);
    sim.add_node("a", ll6(1), vec![cfg(Version::V3, 150, ll6(1))]);
    sim.add_node("b", ll6(2), vec![cfg(Version::V3, 100, ll6(2))]);
    sim.start_all();
    sim.run_to(10.0);
    // p=150: 3 s + 106/256 s = 3.414062 s.
    assert_eq!(sim.entered(0, I0, State::Master), vec![t(3, 414_062)]);
    assert_eq!(sim.masters(51), vec![0]);
}

#[test]
fn tie_broken_by_higher_address() {
    let mut a = cfg(Version::V3, 100, v4(1));
    a.start_state = StartState::Master;
    let mut b = cfg(Version::V3, 100, v4(2));
    b.start_state = StartState::Master;
    let mut sim = Sim::new(3);
    sim.add_node("a", v4(1), vec![a]);
    sim.add_node("b", v4(2), vec![b]);
    sim.start_all();
    sim.run_to(20.0);
    assert_eq!(sim.entered(0, I0, State::Master), vec![t(0, 0)]);
    assert_eq!(sim.entered(0, I0, State::Backup), vec![t(0, 1000)]);
    assert_eq!(sim.entered(1, I0, State::Master), vec![t(0, 0)]);
    assert!(sim.entered(1, I0, State::Backup).is_empty());
    assert_eq!(sim.masters(51), vec![1]);
    match sim.nodes[0].log.iter().find_map(|(_, _, a)| match a {
        Action::StateChanged {
            to: State::Backup,
            reason,
            ..
        } => Some(reason.clone()),
        _ => None,
    }) {
        Some(Reason::EqualPriorityHigherAddress { from }) => assert_eq!(from, v4(2)),
        other => panic!("unexpected reason {other:?}"),
    }
    // The winner answered the loser's equal-priority advert at once with an advert, and
    // with no gratuitous burst (RFC 9568 §6.4.3 discards it; the advert is the nudge).
    assert!(sim.nodes[1].log.iter().any(
        |(t0, _, a)| *t0 == t(0, 1000) && matches!(a, Action::SendAdvert { priority: 100, .. })
    ));
    assert!(
        !sim.nodes[1]
            .log
            .iter()
            .any(|(t0, _, a)| *t0 == t(0, 1000) && matches!(a, Action::SendGratuitous { .. }))
    );
    assert_eq!(sim.max_masters_since(51, t(0, 1000)), 1);
}

#[test]
fn preemption_on() {
    let mut sim = pair(100, 200, true);
    sim.start(0);
    sim.run_to(10.0);
    sim.start(1);
    sim.run_to(30.0);
    assert_eq!(sim.entered(1, I0, State::Master), vec![t(13, 218_750)]);
    assert_eq!(sim.entered(0, I0, State::Backup), vec![t(13, 219_750)]);
    assert_eq!(sim.masters(51), vec![1]);
    assert!(
        sim.nodes[1]
            .router
            .get(I0)
            .unwrap()
            .counters()
            .lower_priority_ignored
            >= 3
    );
}

#[test]
fn preemption_off() {
    let mut sim = Sim::new(4);
    let mut a = cfg(Version::V3, 100, v4(1));
    a.start_state = StartState::Master;
    let mut b = cfg(Version::V3, 200, v4(2));
    b.preempt = false;
    sim.add_node("a", v4(1), vec![a]);
    sim.add_node("b", v4(2), vec![b]);
    sim.start(0);
    sim.run_to(10.0);
    sim.start(1);
    sim.run_to(60.0);
    assert!(sim.entered(1, I0, State::Master).is_empty());
    assert_eq!(sim.masters(51), vec![0]);
}

#[test]
fn preempt_delay_holds_then_preempts() {
    let mut sim = Sim::new(5);
    let mut a = cfg(Version::V3, 100, v4(1));
    a.start_state = StartState::Master;
    let mut b = cfg(Version::V3, 200, v4(2));
    b.preempt_delay = Duration::from_secs(10);
    sim.add_node("a", v4(1), vec![a]);
    sim.add_node("b", v4(2), vec![b]);
    sim.start(0);
    sim.run_to(10.0);
    sim.start(1);
    sim.run_to(40.0);
    // Lower-priority adverts are accepted until 20 s (last one arrives 19.001 s), then the
    // down timer runs out: 19.001 + 3.21875.
    assert_eq!(sim.entered(1, I0, State::Master), vec![t(22, 219_750)]);
    assert_eq!(sim.masters(51), vec![1]);
}

#[test]
fn priority_zero_handover_within_skew_time() {
    let mut sim = pair(200, 100, true);
    sim.start_all();
    sim.run_to(10.5);
    sim.shutdown(0);
    sim.run_to(20.0);
    // The prio-0 advert arrives at 10.501; Skew_Time(100) = 0.609375 s.
    assert_eq!(sim.entered(1, I0, State::Master), vec![t(11, 110_375)]);
    let log: Vec<&Action> = sim.nodes[0]
        .log
        .iter()
        .filter(|(t0, _, _)| *t0 == t(10, 500_000))
        .map(|(_, _, a)| a)
        .collect();
    assert!(matches!(
        log[0],
        Action::StateChanged {
            from: State::Master,
            to: State::Stop,
            reason: Reason::Shutdown,
            ..
        }
    ));
    assert!(matches!(log[1], Action::SendAdvert { priority: 0, .. }));
    // The VIPs stay until the new master has spoken (its advert arrives at 11.111375), then
    // for the release grace, 100 ms: no gap for clients while B takes over.
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(removed_at(&sim, 0), vec![t(11, 211_375)]);
    assert!(sim.nodes[0].vips.is_empty());
    assert_eq!(
        sim.nodes[1]
            .router
            .get(I0)
            .unwrap()
            .counters()
            .priority_zero_received,
        1
    );
    // The backup says why it took over.
    let from = sim.nodes[0].router.get(I0).unwrap().config().source;
    assert_eq!(master_reason(&sim, 1), Some(Reason::MasterLeft { from }));
    assert_eq!(
        Reason::MasterLeft { from }.to_string(),
        format!("master {from} left (priority 0 advert)")
    );
}

#[test]
fn crash_failover_at_master_down_interval() {
    let mut sim = pair(200, 100, true);
    sim.start_all();
    sim.run_to(10.5);
    sim.crash(0);
    sim.run_to(20.0);
    // Last advert from A left at 10.0 and arrived at 10.001; MDI(100) = 3.609375 s.
    assert_eq!(sim.entered(1, I0, State::Master), vec![t(13, 610_375)]);
    match sim.nodes[1].log.iter().rev().find_map(|(_, _, a)| match a {
        Action::StateChanged {
            to: State::Master,
            reason,
            priority,
            ..
        } => Some((reason.clone(), *priority)),
        _ => None,
    }) {
        Some((r, p)) => {
            assert_eq!(r, Reason::MasterDownTimerExpired);
            assert_eq!(r.to_string(), "master down timer expired");
            assert_eq!(p, 100);
        }
        None => panic!("no transition"),
    }
    // Becoming master: advert, VIPs, 5 GARPs at once and 5 more 5 s later.
    let garps: Vec<(Duration, u32, GratuitousKind)> = sim.nodes[1]
        .log
        .iter()
        .filter_map(|(t0, _, a)| match a {
            Action::SendGratuitous { repeat, kind, .. } => Some((*t0, *repeat, *kind)),
            _ => None,
        })
        .collect();
    assert_eq!(
        garps,
        vec![
            (t(13, 610_375), 5, GratuitousKind::Initial),
            (t(18, 610_375), 5, GratuitousKind::Delayed)
        ]
    );
}

#[test]
fn v3_backup_learns_master_interval() {
    let mut sim = Sim::new(6);
    let mut a = cfg(Version::V3, 200, v4(1));
    a.start_state = StartState::Master;
    a.advert_interval = Interval(50);
    sim.add_node("a", v4(1), vec![a]);
    sim.add_node("b", v4(2), vec![cfg(Version::V3, 100, v4(2))]);
    sim.start_all();
    sim.run_to(5.0);
    assert_eq!(
        sim.nodes[1].router.get(I0).unwrap().master_adver_interval(),
        Interval(50)
    );
    sim.run_to(10.2);
    sim.crash(0);
    sim.run_to(20.0);
    // Last advert at 10.0 (+1 ms); MDI with the learned 0.5 s: 1.5 s + 156/256 × 0.5 s.
    assert_eq!(sim.entered(1, I0, State::Master), vec![t(11, 805_687)]);
    // As master it advertises its own interval again.
    assert_eq!(
        sim.nodes[1].router.get(I0).unwrap().master_adver_interval(),
        Interval(100)
    );
}

#[test]
fn v2_interval_mismatch_dropped() {
    let mut sim = Sim::new(7);
    let mut a = cfg(Version::V2, 200, v4(1));
    a.start_state = StartState::Master;
    let mut b = cfg(Version::V2, 100, v4(2));
    b.advert_interval = Interval(200);
    sim.add_node("a", v4(1), vec![a]);
    sim.add_node("b", v4(2), vec![b]);
    sim.start_all();
    sim.run_to(10.0);
    // B hears nothing it accepts: master at 3 × 2 s + 0.609375 s.
    assert_eq!(sim.entered(1, I0, State::Master), vec![t(6, 609_375)]);
    assert!(drops(&sim, 1, DropReason::IntervalMismatch) >= 6);
    assert_eq!(
        sim.nodes[1]
            .router
            .get(I0)
            .unwrap()
            .counters()
            .adverts_received,
        0
    );
}

#[test]
fn v2_auth_mismatch_dropped() {
    let mut sim = Sim::new(8);
    let mut a = cfg(Version::V2, 200, v4(1));
    a.start_state = StartState::Master;
    a.auth = Auth::pass(b"secret1").unwrap();
    let mut b = cfg(Version::V2, 100, v4(2));
    b.auth = Auth::pass(b"secret2").unwrap();
    sim.add_node("a", v4(1), vec![a]);
    sim.add_node("b", v4(2), vec![b]);
    sim.start_all();
    sim.run_to(10.0);
    assert_eq!(sim.entered(1, I0, State::Master), vec![t(3, 609_375)]);
    assert!(drops(&sim, 1, DropReason::AuthMismatch) >= 3);
    assert!(drops(&sim, 0, DropReason::AuthMismatch) >= 1);
}

#[test]
fn v2_matching_auth_accepted() {
    let mut sim = Sim::new(9);
    let mut a = cfg(Version::V2, 200, v4(1));
    a.start_state = StartState::Master;
    a.auth = Auth::pass(b"12345").unwrap();
    let mut b = cfg(Version::V2, 100, v4(2));
    b.auth = Auth::pass(b"12345").unwrap();
    sim.add_node("a", v4(1), vec![a]);
    sim.add_node("b", v4(2), vec![b]);
    sim.start_all();
    sim.run_to(30.0);
    assert!(sim.entered(1, I0, State::Master).is_empty());
    assert_eq!(
        sim.nodes[1]
            .router
            .get(I0)
            .unwrap()
            .counters()
            .total_drops(),
        0
    );
}

#[test]
fn ttl_not_255_dropped() {
    let mut sim = pair(200, 100, true);
    sim.nodes[0].ttl = 254;
    sim.start_all();
    sim.run_to(10.0);
    assert_eq!(sim.entered(1, I0, State::Master), vec![t(3, 609_375)]);
    assert!(drops(&sim, 1, DropReason::Ttl) >= 3);
}

#[test]
fn unicast_peers_and_lower_ttl() {
    let mut sim = Sim::new(10);
    let mut a = cfg(Version::V3, 200, v4(1));
    a.start_state = StartState::Master;
    a.unicast_peers = vec![v4(2)];
    let mut b = cfg(Version::V3, 100, v4(2));
    b.unicast_peers = vec![v4(1)];
    b.allow_lower_ttl = true;
    let mut c = cfg(Version::V3, 150, v4(3));
    c.unicast_peers = vec![v4(2)];
    c.start_state = StartState::Master;
    sim.add_node("a", v4(1), vec![a]);
    sim.add_node("b", v4(2), vec![b]);
    sim.add_node("c", v4(3), vec![c]);
    sim.nodes[0].ttl = 64;
    sim.start_all();
    sim.run_to(10.0);
    // B accepts A at TTL 64 and drops C (not a peer).
    assert!(sim.entered(1, I0, State::Master).is_empty());
    assert!(drops(&sim, 1, DropReason::UnknownPeer) >= 9);
    assert_eq!(drops(&sim, 1, DropReason::Ttl), 0);
}

fn tracker_sim(a_prio: u8, spec: TrackerSpec, b_prio: u8) -> Sim {
    let mut sim = Sim::new(11);
    let mut a = cfg(Version::V2, a_prio, v4(1));
    a.start_state = StartState::Master;
    a.auth = Auth::pass(b"12345").unwrap();
    a.trackers = vec![spec];
    let mut b = cfg(Version::V2, b_prio, v4(2));
    b.auth = Auth::pass(b"12345").unwrap();
    sim.add_node("a", v4(1), vec![a]);
    sim.add_node("b", v4(2), vec![b]);
    sim
}

#[test]
fn track_process_weight_10_moves_mastership() {
    // track-process.conf: priority 244, httpd weight 10 ⇒ 254 while httpd runs.
    let spec = TrackerSpec {
        name: "track_apache".into(),
        weight: 10,
        reverse: false,
        rule: Rule::Process { quorum: 1 },
    };
    let mut sim = tracker_sim(244, spec, 250);
    sim.with_router(0, |r, now| {
        assert_eq!(
            r.handle_tracker(now, "track_apache", Observation::ProcessCount(1)),
            1
        )
    });
    sim.start_all();
    assert_eq!(
        sim.nodes[0].router.get(I0).unwrap().effective_priority(),
        254
    );
    sim.run_to(10.5);
    assert_eq!(sim.masters(51), vec![0]);
    sim.with_router(0, |r, now| {
        r.handle_tracker(now, "track_apache", Observation::ProcessCount(0));
    });
    assert_eq!(
        sim.nodes[0].router.get(I0).unwrap().effective_priority(),
        244
    );
    sim.run_to(20.5);
    // Last 254 advert arrived at 10.001; MDI(250) = 3.023437 s.
    assert_eq!(sim.entered(1, I0, State::Master), vec![t(13, 24_437)]);
    assert_eq!(sim.entered(0, I0, State::Backup), vec![t(13, 25_437)]);
    // httpd returns: A (254) now ignores B's 250 adverts; its down timer was armed when it
    // accepted B's advert at 20.025437 with MDI(244) = 3.046875 s.
    sim.with_router(0, |r, now| {
        r.handle_tracker(now, "track_apache", Observation::ProcessCount(1));
    });
    sim.run_to(40.0);
    assert_eq!(
        sim.entered(0, I0, State::Master),
        vec![t(0, 0), t(23, 72_312)]
    );
    assert_eq!(sim.masters(51), vec![0]);
}

#[test]
fn track_interface_weight_5() {
    // track-interface.conf: 244 + 5 = 249 while ens9 is up.
    let spec = TrackerSpec {
        name: "ens9".into(),
        weight: 5,
        reverse: false,
        rule: Rule::Link,
    };
    let mut sim = tracker_sim(244, spec, 247);
    sim.with_router(0, |r, now| r.handle_link(now, "ens9", true));
    sim.start_all();
    sim.run_to(10.5);
    assert_eq!(sim.masters(51), vec![0]);
    assert_eq!(
        sim.nodes[0].router.get(I0).unwrap().effective_priority(),
        249
    );
    sim.with_router(0, |r, now| r.handle_link(now, "ens9", false));
    sim.run_to(20.0);
    assert_eq!(sim.entered(1, I0, State::Master), vec![t(13, 36_156)]);
    assert_eq!(sim.masters(51), vec![1]);
}

#[test]
fn track_script_rise_fall_3_fault_and_recovery() {
    // track-script.conf: weight 0 (FAULT on failure), rise 3, fall 3, interval 1 s.
    let spec = TrackerSpec {
        name: "keepalived_check".into(),
        weight: 0,
        reverse: false,
        rule: Rule::Script { rise: 3, fall: 3 },
    };
    let mut sim = tracker_sim(244, spec, 200);
    sim.start_all();
    // A weight-0 script without a result holds INIT.
    assert_eq!(sim.state(0), State::Init);
    sim.with_router(0, |r, now| {
        r.handle_tracker(now, "keepalived_check", Observation::ScriptResult(true));
    });
    assert_eq!(sim.state(0), State::Master);
    let script = |ok: bool| {
        move |r: &mut super::router::Router, now| {
            r.handle_tracker(now, "keepalived_check", Observation::ScriptResult(ok));
        }
    };
    for s in [10.5, 11.5, 12.5] {
        sim.run_to(s);
        sim.with_router(0, script(false));
    }
    assert_eq!(sim.entered(0, I0, State::Fault), vec![t(12, 500_000)]);
    assert!(sim.nodes[0].vips.is_empty());
    sim.run_to(20.0);
    // Priority-0 advert at 12.5 (+1 ms), Skew_Time(200) = 0.21875 s.
    assert_eq!(sim.entered(1, I0, State::Master), vec![t(12, 719_750)]);
    // No adverts while in FAULT.
    assert!(
        sim.adverts(0)
            .iter()
            .all(|(t0, p)| *t0 <= t(12, 500_000) || *p != 0 && *t0 > t(22, 0))
    );
    for s in [20.5, 21.5, 22.5] {
        sim.run_to(s);
        sim.with_router(0, script(true));
    }
    assert_eq!(sim.entered(0, I0, State::Backup), vec![t(22, 500_000)]);
    sim.run_to(40.0);
    // Back to BACKUP at 22.5, ignores B's lower adverts, master after MDI(244) = 3.046875 s.
    assert_eq!(
        sim.entered(0, I0, State::Master),
        vec![t(0, 0), t(25, 546_875)]
    );
    let fault_reason = sim.nodes[0].log.iter().find_map(|(_, _, a)| match a {
        Action::StateChanged {
            to: State::Fault,
            reason,
            ..
        } => Some(reason.to_string()),
        _ => None,
    });
    assert_eq!(
        fault_reason.as_deref(),
        Some("tracker keepalived_check (script) failed")
    );
}

#[test]
fn interface_fault_and_recovery() {
    let mut sim = pair(200, 100, true);
    sim.start_all();
    sim.run_to(10.5);
    sim.with_router(0, |r, now| r.handle_link(now, "eth0", false));
    assert_eq!(sim.state(0), State::Fault);
    assert!(sim.nodes[0].vips.is_empty());
    assert_eq!(sim.adverts(0).last(), Some(&(t(10, 500_000), 0)));
    sim.run_to(20.5);
    assert_eq!(sim.entered(1, I0, State::Master), vec![t(11, 110_375)]);
    assert_eq!(
        sim.adverts(0).last(),
        Some(&(t(10, 500_000), 0)),
        "no adverts in FAULT"
    );
    sim.with_router(0, |r, now| r.handle_link(now, "eth0", true));
    assert_eq!(sim.state(0), State::Backup);
    sim.run_to(40.0);
    assert_eq!(
        sim.entered(0, I0, State::Master),
        vec![t(0, 0), t(23, 718_750)]
    );
    assert_eq!(
        sim.entered(1, I0, State::Backup).last(),
        Some(&t(23, 719_750))
    );
    assert_eq!(sim.masters(51), vec![0]);
}

#[test]
fn sync_group_moves_together() {
    let mk = |prio: u8, src| {
        let mut a = cfg(Version::V3, prio, src);
        a.sync_group = Some("G".into());
        let mut b = cfg(Version::V3, prio, src);
        b.name = "VI_2".into();
        b.interface = "eth1".into();
        b.vrid = 52;
        b.vips = vec!["198.51.100.200/24".parse().unwrap()];
        b.sync_group = Some("G".into());
        vec![a, b]
    };
    let mut sim = Sim::new(12);
    sim.add_node("a", v4(1), mk(200, v4(1)));
    sim.add_node("b", v4(2), mk(100, v4(2)));
    sim.start_all();
    sim.run_to(10.5);
    assert_eq!(sim.masters(51), vec![0]);
    assert_eq!(sim.masters(52), vec![0]);
    assert_eq!(sim.entered(0, I0, State::Master), vec![t(3, 218_750)]);
    assert_eq!(sim.entered(0, I1, State::Master), vec![t(3, 218_750)]);
    // eth1 fails on A: VI_2 goes FAULT, VI_1 follows; both send priority 0.
    sim.with_router(0, |r, now| r.handle_link(now, "eth1", false));
    assert_eq!(sim.state_of(0, I0), State::Fault);
    assert_eq!(sim.state_of(0, I1), State::Fault);
    assert!(sim.nodes[0].vips.is_empty());
    sim.run_to(20.5);
    assert_eq!(sim.entered(1, I0, State::Master), vec![t(11, 110_375)]);
    assert_eq!(sim.entered(1, I1, State::Master), vec![t(11, 110_375)]);
    sim.with_router(0, |r, now| r.handle_link(now, "eth1", true));
    assert_eq!(sim.state_of(0, I0), State::Backup);
    assert_eq!(sim.state_of(0, I1), State::Backup);
    sim.run_to(40.0);
    assert_eq!(
        sim.entered(0, I0, State::Master).last(),
        Some(&t(23, 718_750))
    );
    assert_eq!(
        sim.entered(0, I1, State::Master).last(),
        Some(&t(23, 718_750))
    );
    assert_eq!(sim.masters(51), vec![0]);
    assert_eq!(sim.masters(52), vec![0]);
}

#[test]
fn partition_then_heal_converges() {
    let mut sim = pair(200, 100, true);
    sim.start_all();
    sim.run_to(10.5);
    sim.nodes[1].segment = 1;
    sim.run_to(20.5);
    // Partitioned: B takes over (dual master is expected while the segment is split).
    assert_eq!(sim.entered(1, I0, State::Master), vec![t(13, 610_375)]);
    assert_eq!(sim.masters(51), vec![0, 1]);
    sim.nodes[1].segment = 0;
    sim.run_to(60.0);
    // B's next advert (20.610375 s) reaches A, which answers the lower priority at once;
    // that advert reaches B 1 ms later and B yields.
    assert_eq!(
        sim.entered(1, I0, State::Backup).last(),
        Some(&t(20, 612_375))
    );
    // No dual master from one advert interval (+ delay) after the heal.
    assert_eq!(sim.max_masters_since(51, t(21, 501_000)), 1);
    assert_eq!(sim.masters(51), vec![0]);
}

#[test]
fn unknown_vrid_counted_by_router() {
    let mut sim = Sim::new(13);
    let mut a = cfg(Version::V3, 200, v4(1));
    a.vrid = 7;
    a.start_state = StartState::Master;
    sim.add_node("a", v4(1), vec![a]);
    sim.add_node("b", v4(2), vec![cfg(Version::V3, 100, v4(2))]);
    sim.start_all();
    sim.run_to(5.0);
    assert!(
        sim.nodes[1]
            .router
            .unclaimed_counters()
            .drops(DropReason::UnknownVrid)
            >= 5
    );
}

/// Hand node `n`'s instance 0 over to a fresh instance with configuration `cfg` in the same
/// router (as another process on that host would continue it); returns the new instance.
fn hand_over_to(sim: &mut Sim, n: usize, cfg: super::config::InstanceConfig) -> InstanceId {
    let mut id = None;
    sim.with_router(n, |r, now| {
        let inh = r.hand_over(now, I0).expect("instance 0 runs");
        let new = r.add(cfg).expect("the successor's config is valid");
        r.start_inherited(now, new, &inh);
        id = Some(new);
    });
    id.expect("handed over")
}

#[test]
fn hand_over_of_a_master_keeps_cadence_vips_and_the_backup_still() {
    let mut sim = pair(200, 100, true);
    sim.start_all();
    sim.run_to(10.3);
    let mut succ = cfg(Version::V3, 200, v4(1));
    succ.name = "default/api".into();
    let new = hand_over_to(&mut sim, 0, succ);
    sim.run_to(20.0);
    // The backup never noticed: no transition after its start-up.
    assert!(sim.entered(1, I0, State::Master).is_empty());
    assert_eq!(sim.max_masters_since(51, t(4, 0)), 1);
    // Adverts kept their one-second grid across the hand-over (10.0 by the old instance,
    // 11.0 by the new one), always at priority 200.
    let adverts = sim.adverts(0);
    let times: Vec<Duration> = adverts
        .iter()
        .map(|(t0, _)| *t0)
        .filter(|t0| *t0 >= t(9, 0))
        .collect();
    assert_eq!(times[..3], [t(9, 0), t(10, 0), t(11, 0)]);
    assert!(
        times.windows(2).all(|w| w[1] - w[0] == t(1, 0)),
        "{times:?}"
    );
    assert!(adverts.iter().all(|(_, p)| *p == 200), "{adverts:?}");
    // VIPs never removed; the successor re-binds (idempotent) and sends no gratuitous burst.
    let after: Vec<&Action> = sim.nodes[0]
        .log
        .iter()
        .filter(|(t0, _, _)| *t0 >= t(10, 300_000))
        .map(|(_, _, a)| a)
        .collect();
    assert!(!after.iter().any(|a| matches!(a, Action::RemoveVips(_))));
    assert!(
        !after
            .iter()
            .any(|a| matches!(a, Action::SendGratuitous { .. }))
    );
    assert!(matches!(
        after[0],
        Action::StateChanged {
            from: State::Master,
            to: State::Stop,
            reason: Reason::HandedOver,
            ..
        }
    ));
    assert!(matches!(
        after[1],
        Action::StateChanged {
            from: State::Init,
            to: State::Master,
            reason: Reason::Inherited {
                state: State::Master
            },
            ..
        }
    ));
    assert!(!sim.nodes[0].vips.is_empty());
    assert_eq!(sim.state_of(0, new), State::Master);
    assert_eq!(
        Reason::Inherited {
            state: State::Master
        }
        .to_string(),
        "took over the running instance in state MASTER"
    );
}

#[test]
fn hand_over_of_a_backup_keeps_waiting_for_the_same_master() {
    let mut sim = pair(200, 100, true);
    sim.start_all();
    sim.run_to(10.3);
    let new = hand_over_to(&mut sim, 1, cfg(Version::V3, 100, v4(2)));
    assert_eq!(sim.state_of(1, new), State::Backup);
    let inst = sim.nodes[1].router.get(new).unwrap();
    assert_eq!(inst.master_address(), Some(v4(1)));
    sim.run_to(12.5);
    assert_eq!(
        sim.masters(51),
        vec![0],
        "no takeover while the master advertises"
    );
    // The master dies: the successor takes over one Master_Down_Interval after its last advert.
    sim.crash(0);
    sim.run_to(20.0);
    let log: Vec<Duration> = sim.nodes[1]
        .log
        .iter()
        .filter_map(|(t0, i, a)| match a {
            Action::StateChanged {
                to: State::Master, ..
            } if *i == new => Some(*t0),
            _ => None,
        })
        .collect();
    assert_eq!(log, vec![t(15, 610_375)]);
}

#[test]
fn hand_over_carries_tracker_results_so_the_priority_does_not_dip() {
    // A runs at 190 + 20 while its check is up, above B's 200; a successor that started its
    // check from scratch would advertise 190 and lose the mastership to B.
    let spec = TrackerSpec {
        name: "readyz".into(),
        weight: 20,
        reverse: false,
        rule: Rule::Http { rise: 2, fall: 2 },
    };
    let mut sim = tracker_sim(190, spec.clone(), 200);
    sim.start_all();
    sim.with_router(0, |r, now| {
        r.handle_tracker(now, "readyz", Observation::HttpResult(true));
    });
    sim.run_to(10.3);
    assert_eq!(sim.masters(51), vec![0]);
    let mut succ = cfg(Version::V2, 190, v4(1));
    succ.auth = Auth::pass(b"12345").unwrap();
    succ.trackers = vec![spec];
    let new = hand_over_to(&mut sim, 0, succ);
    assert_eq!(
        sim.nodes[0].router.get(new).unwrap().effective_priority(),
        210
    );
    sim.run_to(20.0);
    assert!(sim.entered(1, I0, State::Master).is_empty());
    assert_eq!(sim.masters(51), vec![0]);
    // The counter came along too: one failure (fall 2) does not yet take it down.
    sim.with_router(0, |r, now| {
        r.handle_tracker(now, "readyz", Observation::HttpResult(false));
    });
    assert_eq!(
        sim.nodes[0].router.get(new).unwrap().effective_priority(),
        210
    );
}

/// Why node `n` first became MASTER.
fn master_reason(sim: &Sim, n: usize) -> Option<Reason> {
    sim.nodes[n].log.iter().find_map(|(_, _, a)| match a {
        Action::StateChanged {
            to: State::Master,
            reason,
            ..
        } => Some(reason.clone()),
        _ => None,
    })
}

/// When node `n` removed VIPs.
fn removed_at(sim: &Sim, n: usize) -> Vec<Duration> {
    sim.nodes[n]
        .log
        .iter()
        .filter(|(_, _, a)| matches!(a, Action::RemoveVips(_)))
        .map(|(t, _, _)| *t)
        .collect()
}

/// When node `n` bound VIPs.
fn added_at(sim: &Sim, n: usize) -> Vec<Duration> {
    sim.nodes[n]
        .log
        .iter()
        .filter(|(_, _, a)| matches!(a, Action::AddVips(_)))
        .map(|(t, _, _)| *t)
        .collect()
}

/// Three routers A (200, master), B (150), C (100) whose configurations know each other's
/// priorities, as the operator plans them.
fn ranked_trio() -> Sim {
    ranked_trio_at(Interval(100))
}

/// [`ranked_trio`] advertising every `interval`.
fn ranked_trio_at(interval: Interval) -> Sim {
    let mut sim = Sim::new(1);
    let ranked = |priority, n, peers: [u8; 2]| {
        let mut c = cfg(Version::V3, priority, v4(n));
        c.advert_interval = interval;
        c.peer_priorities = Some(peers.to_vec());
        c
    };
    let mut a = ranked(200, 1, [150, 100]);
    a.start_state = StartState::Master;
    let b = ranked(150, 2, [200, 100]);
    let c = ranked(100, 3, [200, 150]);
    sim.add_node("a", v4(1), vec![a]);
    sim.add_node("b", v4(2), vec![b]);
    sim.add_node("c", v4(3), vec![c]);
    sim
}

#[test]
fn planned_handover_the_ranked_successor_takes_over_at_once() {
    let mut sim = ranked_trio();
    sim.start_all();
    sim.run_to(10.5);
    sim.shutdown(0);
    sim.run_to(20.0);
    // B outranks everyone but A: MASTER on the priority-0 advert (10.501), no Skew_Time.
    assert_eq!(sim.entered(1, I0, State::Master), vec![t(10, 501_000)]);
    assert!(
        sim.entered(2, I0, State::Master).is_empty(),
        "C waits and hears B"
    );
    // A held the VIPs until B's first advert (10.502) plus the 100 ms grace, so B had bound
    // and announced them 101 ms before A let go.
    assert_eq!(added_at(&sim, 1), vec![t(10, 501_000)]);
    assert_eq!(removed_at(&sim, 0), vec![t(10, 602_000)]);
    assert_eq!(sim.masters(51), vec![1]);
    assert_eq!(
        master_reason(&sim, 1),
        Some(Reason::MasterLeft { from: v4(1) })
    );
}

#[test]
fn planned_handover_from_a_master_that_is_not_the_highest() {
    // B is master (A down at the start); when B leaves, C outranks everyone but B, except
    // that A (200) is still in its list: C must wait Skew_Time, as the RFC says, because A
    // might be alive. A is dead here, so C takes over after Skew_Time(100) = 609.375 ms.
    let mut sim = ranked_trio();
    sim.start(1);
    sim.start(2);
    sim.run_to(10.5);
    assert_eq!(sim.masters(51), vec![1]);
    sim.shutdown(1);
    sim.run_to(20.0);
    assert_eq!(sim.entered(2, I0, State::Master), vec![t(11, 110_375)]);
    // B let go only once C had spoken (11.111375) and the grace passed.
    assert_eq!(removed_at(&sim, 1), vec![t(11, 211_375)]);
}

#[test]
fn a_leaving_master_that_hears_no_successor_lets_go_after_three_intervals() {
    let mut sim = ranked_trio();
    sim.start(0);
    sim.run_to(10.5);
    sim.shutdown(0);
    sim.run_to(20.0);
    assert_eq!(removed_at(&sim, 0), vec![t(13, 500_000)]);
    assert!(sim.nodes[0].vips.is_empty());
    assert!(!sim.nodes[0].router.get(I0).unwrap().holds_vips());
    assert_eq!(
        sim.nodes[0].router.poll_timeout(),
        None,
        "nothing left to drive"
    );
}

#[test]
fn at_fast_adverts_a_leaving_master_still_holds_its_vips_the_full_grace() {
    // 20 ms adverts: binding and announcing the VIPs takes the new master the host's time,
    // not one interval, so A keeps them 100 ms after B's first advert (not 20 ms), even
    // though that is past three intervals after the shutdown.
    let mut sim = ranked_trio_at(Interval(2));
    sim.start_all();
    sim.run_to(10.5);
    sim.shutdown(0);
    sim.run_to(12.0);
    assert_eq!(sim.entered(1, I0, State::Master), vec![t(10, 501_000)]);
    assert_eq!(removed_at(&sim, 0), vec![t(10, 602_000)]);
}

#[test]
fn a_master_without_peers_removes_its_vips_at_once_on_shutdown() {
    let mut sim = Sim::new(1);
    let mut a = cfg(Version::V3, 200, v4(1));
    a.start_state = StartState::Master;
    a.peer_priorities = Some(vec![]);
    sim.add_node("a", v4(1), vec![a]);
    sim.start_all();
    sim.run_to(10.5);
    sim.shutdown(0);
    assert_eq!(removed_at(&sim, 0), vec![t(10, 500_000)]);
}

#[test]
fn a_preempted_master_keeps_its_vips_for_the_release_grace() {
    // A (100) is master; B (200) with preempt starts later and takes over at its Master_Down
    // timer; A yields on B's first advert and removes its VIPs 100 ms later.
    let mut sim = pair(100, 200, true);
    sim.start(0);
    sim.run_to(5.0);
    sim.start(1);
    sim.run_to(20.0);
    let b_master = sim.entered(1, I0, State::Master);
    assert_eq!(b_master.len(), 1);
    let a_backup = sim.entered(0, I0, State::Backup);
    assert_eq!(a_backup, vec![b_master[0] + Duration::from_millis(1)]);
    assert_eq!(
        removed_at(&sim, 0),
        vec![a_backup[0] + Duration::from_millis(100)]
    );
    assert_eq!(sim.masters(51), vec![1]);
}

#[test]
fn without_known_peers_a_priority_zero_advert_waits_skew_time() {
    // Only B knows its peers' priorities: A's list is unknown (None) ⇒ RFC.
    let mut sim = pair(150, 200, false);
    sim.start_all();
    sim.run_to(10.5);
    assert_eq!(sim.masters(51), vec![1]);
    sim.shutdown(1);
    sim.run_to(20.0);
    // Skew_Time(150) = 414.0625 ms after the advert arrives at 10.501.
    assert_eq!(
        sim.entered(0, I0, State::Master).last(),
        Some(&t(10, 915_062))
    );
}
