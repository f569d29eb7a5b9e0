//! Interop: our agent and real keepalived on the same VRID. Our agent is master under
//! keepalived backups and backup under a keepalived master, and the VIP fails over in both
//! directions; v2 with PASS auth (the user's configs), v3 at 100 ms, IPv4 and IPv6. Needs root
//! and the agent binary (see agent_standalone.rs).

use lab::DaemonKind::{Agent as A, Keepalived as K};
use lab::scenario::Variant;
use lab::suite;

/// Our agent on host 1 (master), keepalived on hosts 2 and 3 (backups).
const AGENT_MASTER: [lab::DaemonKind; 3] = [A, K, K];
/// keepalived on host 1 (master), our agent on host 2 (first backup), keepalived on host 3.
const AGENT_BACKUP: [lab::DaemonKind; 3] = [K, A, K];
/// keepalived as the master, our agents as both backups.
const ONE_KEEPALIVED: [lab::DaemonKind; 3] = [K, A, A];

#[test]
fn interop_v2_pass_agent_master_keepalived_backups_accept_our_adverts() {
    lab::skip_unless_root!("interop_v2_pass_agent_master_keepalived_backups_accept_our_adverts");
    // election() checks that keepalived stays BACKUP: it accepted our adverts (auth, interval,
    // VIP list); tshark checks the bytes.
    let c = suite::election(&AGENT_MASTER, Variant::v2_pass_1s()).unwrap();
    let (adv, text) = c.validate_adverts_from(0, 2).unwrap();
    assert_eq!(adv.version, 2);
    assert!(text.contains("12345"), "{text}");
    c.check_no_rejections().unwrap();
}

#[test]
fn interop_v2_pass_agent_master_crash_to_keepalived_and_back() {
    lab::skip_unless_root!("interop_v2_pass_agent_master_crash_to_keepalived_and_back");
    let (_, s) = suite::crash_failover(&AGENT_MASTER, Variant::v2_pass_1s()).unwrap();
    eprintln!("{s}");
}

#[test]
fn interop_v2_pass_agent_backup_takes_over_from_keepalived_and_yields() {
    lab::skip_unless_root!("interop_v2_pass_agent_backup_takes_over_from_keepalived_and_yields");
    let (_, s) = suite::crash_failover(&AGENT_BACKUP, Variant::v2_pass_1s()).unwrap();
    eprintln!("{s}");
}

#[test]
fn interop_v3_100ms_agent_master_valid_adverts() {
    lab::skip_unless_root!("interop_v3_100ms_agent_master_valid_adverts");
    let c = suite::election(&AGENT_MASTER, Variant::v3_100ms()).unwrap();
    let (adv, _) = c.validate_adverts_from(0, 5).unwrap();
    assert_eq!(adv.version, 3);
}

#[test]
fn interop_v3_100ms_agent_master_crash_failover() {
    lab::skip_unless_root!("interop_v3_100ms_agent_master_crash_failover");
    let (_, s) = suite::crash_failover(&AGENT_MASTER, Variant::v3_100ms()).unwrap();
    eprintln!("{s}");
}

#[test]
fn interop_v3_100ms_agent_backup_crash_failover() {
    lab::skip_unless_root!("interop_v3_100ms_agent_backup_crash_failover");
    let (_, s) = suite::crash_failover(&AGENT_BACKUP, Variant::v3_100ms()).unwrap();
    eprintln!("{s}");
}

#[test]
fn interop_v3_100ms_agent_master_sigterm_to_keepalived() {
    lab::skip_unless_root!("interop_v3_100ms_agent_master_sigterm_to_keepalived");
    let (_, s) = suite::sigterm_handover(&AGENT_MASTER, Variant::v3_100ms()).unwrap();
    eprintln!("{s}");
}

#[test]
fn interop_v3_100ms_keepalived_sigterm_to_agent() {
    lab::skip_unless_root!("interop_v3_100ms_keepalived_sigterm_to_agent");
    let (_, s) = suite::sigterm_handover(&AGENT_BACKUP, Variant::v3_100ms()).unwrap();
    eprintln!("{s}");
}

#[test]
fn interop_v3_ipv6_agent_master_valid_adverts_and_crash() {
    lab::skip_unless_root!("interop_v3_ipv6_agent_master_valid_adverts_and_crash");
    let c = suite::election(&AGENT_MASTER, Variant::v3_ipv6_100ms()).unwrap();
    let (adv, _) = c.validate_adverts_from(0, 5).unwrap();
    assert!(adv.src.starts_with("fe80:"), "{adv:?}");
    drop(c);
    let (_, s) = suite::crash_failover(&AGENT_MASTER, Variant::v3_ipv6_100ms()).unwrap();
    eprintln!("{s}");
}

#[test]
fn interop_v3_ipv6_agent_backup_crash_failover() {
    lab::skip_unless_root!("interop_v3_ipv6_agent_backup_crash_failover");
    let (_, s) = suite::crash_failover(&AGENT_BACKUP, Variant::v3_ipv6_100ms()).unwrap();
    eprintln!("{s}");
}

#[test]
fn interop_v3_100ms_partition_heal_one_master() {
    lab::skip_unless_root!("interop_v3_100ms_partition_heal_one_master");
    eprintln!(
        "{}",
        suite::partition_heal(&ONE_KEEPALIVED, Variant::v3_100ms()).unwrap()
    );
    eprintln!(
        "{}",
        suite::partition_heal(&AGENT_MASTER, Variant::v3_100ms()).unwrap()
    );
}

#[test]
fn interop_v3_100ms_nopreempt() {
    lab::skip_unless_root!("interop_v3_100ms_nopreempt");
    eprintln!(
        "{}",
        suite::nopreempt(&ONE_KEEPALIVED, Variant::v3_100ms()).unwrap()
    );
}

#[test]
fn interop_v3_100ms_link_down_moves() {
    lab::skip_unless_root!("interop_v3_100ms_link_down_moves");
    eprintln!(
        "{}",
        suite::link_down_moves(&AGENT_MASTER, Variant::v3_100ms()).unwrap()
    );
    eprintln!(
        "{}",
        suite::link_down_moves(&ONE_KEEPALIVED, Variant::v3_100ms()).unwrap()
    );
}

#[test]
fn interop_v3_100ms_script_tracker_on_agent_master() {
    lab::skip_unless_root!("interop_v3_100ms_script_tracker_on_agent_master");
    eprintln!(
        "{}",
        suite::script_tracker_fail_recover(&AGENT_MASTER, Variant::v3_100ms()).unwrap()
    );
}

/// The user's basic.conf exactly as they keep it (with its `// ...` remarks; only the VIP moved
/// to a documentation address) runs on our agent as master of two keepalived backups with the
/// matching v2 PASS configuration; then the agent's node dies and keepalived takes over.
#[test]
fn interop_users_basic_conf_on_agent_over_keepalived_backups() {
    lab::skip_unless_root!("interop_users_basic_conf_on_agent_over_keepalived_backups");
    let mut c = lab::Cluster::new(&AGENT_MASTER, Variant::v2_pass_1s()).unwrap();
    c.conf_text[0] = Some(include_str!("../fixtures/basic.conf").to_string());
    suite::elect(&mut c).unwrap();
    let (adv, _) = c.validate_adverts_from(0, 2).unwrap();
    assert_eq!((adv.version, adv.vrid, adv.priority), (2, 51, 255));
    let bound = c.variant.takeover_bound(244);
    let f = c.failover(1, bound, |c| c.kill_node(0)).unwrap();
    assert!(f.ping.recovered, "{:?}", f.ping);
}
