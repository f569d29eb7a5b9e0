//! The issue-5 scenario list with three `kube-vrrp-agent standalone` peers. Needs root (skips
//! otherwise) and the agent binary (`cargo build -p kube-vrrp-agent`, or KUBE_VRRP_AGENT_BIN):
//! a missing binary is a failure, not a skip.
//!
//! The agent is driven only through its CLI contract: `standalone --config FILE --state-dir DIR
//! --metrics-addr 127.0.0.1:9741` inside the host's namespace, SIGKILL = crash, SIGTERM =
//! graceful stop (priority 0, VIPs removed once a successor speaks, exit 0), `/status` JSON
//! `{"instances":[{"name","state","effectivePriority","vips":[..],"masterAddress"}]}`.

use std::time::Duration;

use lab::DaemonKind::Agent as A;
use lab::scenario::{Cluster, Variant};
use lab::{suite, wait_until};

const AG: [lab::DaemonKind; 3] = [A, A, A];

fn instance_state(c: &Cluster, i: usize) -> (String, u32, Vec<String>) {
    let st = c.daemon(i).unwrap().status().unwrap().unwrap();
    let s = st.instance("VI_1").expect("VI_1 in /status");
    (s.state.clone(), s.effective_priority, s.vips.clone())
}

#[test]
fn agent_v3_100ms_election_status_and_valid_adverts() {
    lab::skip_unless_root!("agent_v3_100ms_election_status_and_valid_adverts");
    let c = suite::election(&AG, Variant::v3_100ms()).unwrap();
    let (adv, text) = c.validate_adverts_from(0, 5).unwrap();
    assert_eq!((adv.version, adv.priority), (3, 200));
    assert!(text.contains("Adver Int: 10"), "{text}");
    let (state, prio, vips) = instance_state(&c, 0);
    assert_eq!((state.as_str(), prio), ("MASTER", 200));
    assert!(
        vips.iter().any(|v| v.starts_with("192.0.2.200")),
        "{vips:?}"
    );
    for i in [1, 2] {
        let st = c.daemon(i).unwrap().status().unwrap().unwrap();
        let s = st.instance("VI_1").unwrap();
        assert_eq!(s.state, "BACKUP");
        assert_eq!(s.effective_priority, u32::from(c.priority(i)));
        assert_eq!(s.master_address.as_deref(), Some("192.0.2.11"), "{s:?}");
    }
}

#[test]
fn agent_v2_pass_1s_election_and_valid_adverts() {
    lab::skip_unless_root!("agent_v2_pass_1s_election_and_valid_adverts");
    let c = suite::election(&AG, Variant::v2_pass_1s()).unwrap();
    let (adv, text) = c.validate_adverts_from(0, 2).unwrap();
    assert_eq!((adv.version, adv.priority), (2, 255));
    assert!(text.contains("Simple Text Authentication"), "{text}");
    assert!(text.contains("12345"), "{text}");
}

#[test]
fn agent_v3_ipv6_election_and_valid_adverts() {
    lab::skip_unless_root!("agent_v3_ipv6_election_and_valid_adverts");
    let c = suite::election(&AG, Variant::v3_ipv6_100ms()).unwrap();
    let (adv, text) = c.validate_adverts_from(0, 5).unwrap();
    assert!(adv.src.starts_with("fe80:"), "{adv:?}");
    assert!(text.contains("ff02::12"), "{text}");
}

#[test]
fn agent_v2_pass_1s_crash_failover_and_preempt() {
    lab::skip_unless_root!("agent_v2_pass_1s_crash_failover_and_preempt");
    let (_, s) = suite::crash_failover(&AG, Variant::v2_pass_1s()).unwrap();
    eprintln!("{s}");
}

#[test]
fn agent_v3_100ms_crash_failover_and_preempt() {
    lab::skip_unless_root!("agent_v3_100ms_crash_failover_and_preempt");
    let (_, s) = suite::crash_failover(&AG, Variant::v3_100ms()).unwrap();
    eprintln!("{s}");
}

#[test]
fn agent_v3_ipv6_crash_failover_and_preempt() {
    lab::skip_unless_root!("agent_v3_ipv6_crash_failover_and_preempt");
    let (_, s) = suite::crash_failover(&AG, Variant::v3_ipv6_100ms()).unwrap();
    eprintln!("{s}");
}

#[test]
fn agent_v3_100ms_sigterm_handover() {
    lab::skip_unless_root!("agent_v3_100ms_sigterm_handover");
    let (_, s) = suite::sigterm_handover(&AG, Variant::v3_100ms()).unwrap();
    eprintln!("{s}");
}

#[test]
fn agent_v3_ipv6_sigterm_handover() {
    lab::skip_unless_root!("agent_v3_ipv6_sigterm_handover");
    let (_, s) = suite::sigterm_handover(&AG, Variant::v3_ipv6_100ms()).unwrap();
    eprintln!("{s}");
}

#[test]
fn agent_planned_handover_loses_no_probe_1s() {
    lab::skip_unless_root!("agent_planned_handover_loses_no_probe_1s");
    // At 1 s adverts Skew_Time(150) is 414 ms: a takeover after it would show.
    let v = Variant::v3(Duration::from_secs(1));
    let (f, s) = suite::planned_handover(v).unwrap();
    eprintln!("{s}");
    // Alone = the old master let go: B's advert + the 100 ms grace, then the 20 ms poll.
    assert!(f.takeover < Duration::from_millis(400), "{s}");
}

#[test]
fn agent_planned_handover_loses_no_probe_ipv6() {
    lab::skip_unless_root!("agent_planned_handover_loses_no_probe_ipv6");
    let (_, s) = suite::planned_handover(Variant::v3_ipv6_100ms()).unwrap();
    eprintln!("{s}");
}

#[test]
fn agent_v3_100ms_nopreempt() {
    lab::skip_unless_root!("agent_v3_100ms_nopreempt");
    eprintln!("{}", suite::nopreempt(&AG, Variant::v3_100ms()).unwrap());
}

#[test]
fn agent_v3_100ms_link_down_moves() {
    lab::skip_unless_root!("agent_v3_100ms_link_down_moves");
    eprintln!(
        "{}",
        suite::link_down_moves(&AG, Variant::v3_100ms()).unwrap()
    );
}

#[test]
fn agent_v3_100ms_link_down_reports_fault() {
    lab::skip_unless_root!("agent_v3_100ms_link_down_reports_fault");
    let mut c = suite::election(&AG, Variant::v3_100ms()).unwrap();
    c.lab.link_down(c.lab.host(0)).unwrap();
    c.set_excluded(0, true);
    c.wait_master(1, c.variant.takeover_bound(150)).unwrap();
    wait_until(Duration::from_secs(5), "h1 reports FAULT", || {
        (instance_state(&c, 0).0 == "FAULT").then_some(())
    })
    .unwrap();
    assert!(!c.lab.holds(c.lab.host(0), lab::VIP4), "FAULT holds no VIP");
    c.lab.link_up(c.lab.host(0)).unwrap();
    c.set_excluded(0, false);
    c.wait_master(0, Duration::from_secs(10)).unwrap();
}

#[test]
fn agent_v3_100ms_partition_heal_one_master() {
    lab::skip_unless_root!("agent_v3_100ms_partition_heal_one_master");
    eprintln!(
        "{}",
        suite::partition_heal(&AG, Variant::v3_100ms()).unwrap()
    );
}

#[test]
fn agent_v3_100ms_script_tracker_fail_recover() {
    lab::skip_unless_root!("agent_v3_100ms_script_tracker_fail_recover");
    eprintln!(
        "{}",
        suite::script_tracker_fail_recover(&AG, Variant::v3_100ms()).unwrap()
    );
}

#[test]
fn agent_v3_100ms_process_tracker() {
    lab::skip_unless_root!("agent_v3_100ms_process_tracker");
    eprintln!(
        "{}",
        suite::process_tracker(&AG, Variant::v3_100ms()).unwrap()
    );
}

/// kill -9 leaves the VIP bound (nobody removes it); the agent restarted with the same
/// --state-dir must remove it at start when it does not hold the mastership. The restart
/// happens with the link down (FAULT), so preemption cannot hide a missing cleanup.
#[test]
fn agent_kill9_restart_leaves_no_stale_vip() {
    lab::skip_unless_root!("agent_kill9_restart_leaves_no_stale_vip");
    let mut c = suite::election(&AG, Variant::v3_100ms()).unwrap();
    c.kill_node(0).unwrap();
    c.wait_master(1, c.variant.takeover_bound(150)).unwrap();
    assert!(
        c.lab.holds(c.lab.host(0), lab::VIP4),
        "after kill -9 the VIP is still bound (nothing removed it)"
    );
    c.start(0).unwrap();
    wait_until(
        Duration::from_secs(5),
        "the restarted agent to remove its stale VIP",
        || (!c.lab.holds(c.lab.host(0), lab::VIP4)).then_some(()),
    )
    .unwrap();
    c.lab.link_up(c.lab.host(0)).unwrap();
    c.set_excluded(0, false);
    c.wait_master(0, Duration::from_secs(10)).unwrap();
    c.assert_stable_master(0).unwrap();
}

/// Graceful stop of a backup: exit 0 and nothing changes for the master.
#[test]
fn agent_sigterm_of_backup_exits_zero() {
    lab::skip_unless_root!("agent_sigterm_of_backup_exits_zero");
    let mut c = suite::election(&AG, Variant::v3_100ms()).unwrap();
    c.stop(2).unwrap();
    c.assert_stable_master(0).unwrap();
}
