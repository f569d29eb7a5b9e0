//! The scenario list with real keepalived (Debian package) as every peer: proves the lab and
//! the scenarios themselves before our agent takes part. Needs root (skips otherwise).

use std::time::Duration;

use lab::DaemonKind::Keepalived as K;
use lab::scenario::Variant;
use lab::suite;

const KA: [lab::DaemonKind; 3] = [K, K, K];

#[test]
fn keepalived_v2_pass_1s_crash_failover_and_preempt() {
    lab::skip_unless_root!("keepalived_v2_pass_1s_crash_failover_and_preempt");
    let (f, s) = suite::crash_failover(&KA, Variant::v2_pass_1s()).unwrap();
    eprintln!("{s}");
    // Master_Down_Interval of priority 244 at 1 s is ~3.05 s, minus up to one interval.
    assert!(
        f.ping.max_gap >= Duration::from_millis(1900),
        "{:?}",
        f.ping
    );
}

#[test]
fn keepalived_v2_pass_adverts_are_valid() {
    lab::skip_unless_root!("keepalived_v2_pass_adverts_are_valid");
    let c = suite::election(&KA, Variant::v2_pass_1s()).unwrap();
    let (adv, text) = c.validate_adverts_from(0, 2).unwrap();
    assert_eq!((adv.version, adv.priority), (2, 255));
    assert!(text.contains("Simple Text Authentication"), "{text}");
    assert!(text.contains("12345"), "{text}");
}

#[test]
fn keepalived_v3_100ms_adverts_are_valid() {
    lab::skip_unless_root!("keepalived_v3_100ms_adverts_are_valid");
    let c = suite::election(&KA, Variant::v3_100ms()).unwrap();
    let (adv, text) = c.validate_adverts_from(0, 5).unwrap();
    assert_eq!((adv.version, adv.priority), (3, 200));
    assert!(text.contains("Adver Int: 10"), "{text}");
}

#[test]
fn keepalived_v3_ipv6_adverts_are_valid() {
    lab::skip_unless_root!("keepalived_v3_ipv6_adverts_are_valid");
    let c = suite::election(&KA, Variant::v3_ipv6_100ms()).unwrap();
    let (adv, text) = c.validate_adverts_from(0, 5).unwrap();
    assert_eq!(adv.version, 3);
    assert!(
        adv.src.starts_with("fe80:"),
        "source must be link-local: {adv:?}"
    );
    assert!(text.contains("ff02::12"), "{text}");
}

#[test]
fn keepalived_v3_100ms_crash_failover_and_preempt() {
    lab::skip_unless_root!("keepalived_v3_100ms_crash_failover_and_preempt");
    let (_, s) = suite::crash_failover(&KA, Variant::v3_100ms()).unwrap();
    eprintln!("{s}");
}

#[test]
fn keepalived_v3_100ms_sigterm_handover() {
    lab::skip_unless_root!("keepalived_v3_100ms_sigterm_handover");
    let (_, s) = suite::sigterm_handover(&KA, Variant::v3_100ms()).unwrap();
    eprintln!("{s}");
}

#[test]
fn keepalived_v3_100ms_nopreempt() {
    lab::skip_unless_root!("keepalived_v3_100ms_nopreempt");
    eprintln!("{}", suite::nopreempt(&KA, Variant::v3_100ms()).unwrap());
}

#[test]
fn keepalived_v3_100ms_link_down_moves() {
    lab::skip_unless_root!("keepalived_v3_100ms_link_down_moves");
    eprintln!(
        "{}",
        suite::link_down_moves(&KA, Variant::v3_100ms()).unwrap()
    );
}

#[test]
fn keepalived_v3_100ms_partition_heal_one_master() {
    lab::skip_unless_root!("keepalived_v3_100ms_partition_heal_one_master");
    eprintln!(
        "{}",
        suite::partition_heal(&KA, Variant::v3_100ms()).unwrap()
    );
}

#[test]
fn keepalived_v3_ipv6_crash_failover() {
    lab::skip_unless_root!("keepalived_v3_ipv6_crash_failover");
    let (_, s) = suite::crash_failover(&KA, Variant::v3_ipv6_100ms()).unwrap();
    eprintln!("{s}");
}

#[test]
fn keepalived_v3_ipv6_sigterm_handover() {
    lab::skip_unless_root!("keepalived_v3_ipv6_sigterm_handover");
    let (_, s) = suite::sigterm_handover(&KA, Variant::v3_ipv6_100ms()).unwrap();
    eprintln!("{s}");
}

#[test]
fn keepalived_v3_100ms_script_tracker_fail_recover() {
    lab::skip_unless_root!("keepalived_v3_100ms_script_tracker_fail_recover");
    eprintln!(
        "{}",
        suite::script_tracker_fail_recover(&KA, Variant::v3_100ms()).unwrap()
    );
}

// No keepalived variant of the process-tracker scenario: keepalived's vrrp_track_process
// listens to the kernel's process-event connector, which exists only in the initial network
// namespace ("Failed to set/clear process event listen - errno 111" inside a lab host), so
// keepalived never sees the process there. Our agent scans /proc and runs that scenario in
// agent_standalone.rs.

/// The user's basic.conf verbatim (VIP moved to 192.0.2.200) on host 1 with generated v2
/// PASS backups: keepalived itself accepts it (warning about the `//` remark on the VIP line)
/// and its backups accept its adverts. The agent runs the same fixture in agent_interop.rs.
#[test]
fn keepalived_runs_users_basic_conf_verbatim() {
    lab::skip_unless_root!("keepalived_runs_users_basic_conf_verbatim");
    let mut c = lab::Cluster::new(&KA, Variant::v2_pass_1s()).unwrap();
    c.conf_text[0] = Some(include_str!("../fixtures/basic.conf").to_string());
    suite::elect(&mut c).unwrap();
    let (adv, _) = c.validate_adverts_from(0, 2).unwrap();
    assert_eq!((adv.version, adv.vrid, adv.priority), (2, 51, 255));
}

/// The interop checks rely on spotting keepalived's "dropped an advert" log lines: a peer with
/// the wrong PASS password must be reported.
#[test]
fn keepalived_rejection_detector_catches_wrong_password() {
    lab::skip_unless_root!("keepalived_rejection_detector_catches_wrong_password");
    let mut c = lab::Cluster::new(&[K, K], Variant::v2_pass_1s()).unwrap();
    c.confs[1].instances[0].version = lab::AdvertVersion::V2Pass("wrong".into());
    c.start_all().unwrap();
    lab::wait_until(Duration::from_secs(10), "a rejection line", || {
        let r = c.keepalived_rejections();
        (!r.is_empty()).then_some(r)
    })
    .unwrap();
    assert!(c.check_no_rejections().is_err());
}
