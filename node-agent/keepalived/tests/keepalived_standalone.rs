//! Standalone resolution: keepalived.conf × this host → the ResolvedInstances the agent runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crds::resolve::{InterfaceFacts, NodeFacts};
use crds::virtualip::InitialState;
use crds::vrrpnode::{ResolvedGarp, ResolvedTrackScript};
use keepalived::standalone::{load, resolve_config};
use keepalived::{MemFs, parse_with};

fn host() -> NodeFacts {
    NodeFacts {
        name: "lb-1".into(),
        interfaces: vec![
            InterfaceFacts {
                name: "eth0".into(),
                addresses: vec!["192.0.2.10/24".parse().unwrap()],
            },
            InterfaceFacts {
                name: "eth1".into(),
                addresses: vec!["198.51.100.10/24".parse().unwrap()],
            },
        ],
        addresses: vec![],
    }
}

#[test]
fn user_config_resolves_with_keepalived_defaults() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/notify.conf");
    let (instances, warnings) = load(&file, &host()).unwrap();
    assert_eq!(warnings.0.len(), 1, "{warnings}"); // the `//` remark
    assert_eq!(instances.len(), 1);
    let r = &instances[0];
    assert_eq!(r.name, "VI_1");
    assert_eq!(r.virtual_ip, None);
    assert_eq!(r.virtual_router_id, 51);
    assert_eq!(r.version, 2);
    assert_eq!(r.interface.as_deref(), Some("eth0"));
    assert_eq!(r.priority, 244);
    assert_eq!(r.initial_state, InitialState::Master);
    assert_eq!(r.advert_interval_ms, 1000);
    assert!(r.preempt);
    assert_eq!(r.preempt_delay_ms, 0);
    assert!(r.accept);
    assert_eq!(r.addresses, vec!["192.0.2.200/24".to_string()]);
    assert!(r.excluded_addresses.is_empty());
    assert_eq!(r.unicast_source, None);
    assert!(r.unicast_peers.is_empty());
    assert_eq!(r.auth_pass.as_deref(), Some("12345"));
    assert_eq!(
        r.track.scripts,
        vec![ResolvedTrackScript {
            name: "keepalived_check".into(),
            script: "/usr/local/bin/keepalived_check.sh".into(),
            interval_ms: 1000,
            timeout_ms: 5000,
            rise: 3,
            fall: 3,
            weight: 0,
            reverse: false,
            user: None,
        }]
    );
    assert_eq!(r.garp, ResolvedGarp::default());
    assert_eq!(
        r.notify.any.as_deref(),
        Some("/usr/local/bin/keepalived_notify.sh")
    );
    assert_eq!(r.sync_group, None);
}

const TWO: &str = r#"
global_defs {
    vrrp_garp_master_repeat 2
}
vrrp_instance inside {
    virtual_router_id 10
    advert_int 2.4
    nopreempt
    virtual_ipaddress {
        192.0.2.50/24
    }
    unicast_src_ip 192.0.2.10
    unicast_peer {
        192.0.2.10
        192.0.2.11
    }
}
vrrp_instance outside {
    interface eth1
    virtual_router_id 11
    priority 90
    virtual_ipaddress {
        2001:db8::50/64
    }
}
vrrp_sync_group G {
    group {
        inside
        outside
    }
}
"#;

#[test]
fn sync_groups_unicast_and_derived_values() {
    let parsed = parse_with("two.conf", TWO, &MemFs::default());
    assert!(!parsed.diagnostics.has_errors(), "{}", parsed.diagnostics);
    let (instances, _) = resolve_config(&parsed.config, &host()).unwrap();
    assert_eq!(instances.len(), 2);
    let (a, b) = (&instances[0], &instances[1]);
    // No interface given: the one whose subnet holds the address.
    assert_eq!(a.interface.as_deref(), Some("eth0"));
    assert_eq!(a.version, 2);
    assert_eq!(a.advert_interval_ms, 2000, "2.4 s rounds to 2 s for VRRPv2");
    assert_eq!(a.priority, 100);
    assert_eq!(a.initial_state, InitialState::Backup);
    assert!(!a.preempt);
    assert_eq!(a.unicast_source.as_deref(), Some("192.0.2.10"));
    assert_eq!(
        a.unicast_peers,
        vec!["192.0.2.11".to_string()],
        "this host's own address is not a peer"
    );
    assert_eq!(a.garp.master_repeat, 2);
    assert_eq!(a.sync_group.as_deref(), Some("G"));
    // IPv6 makes keepalived use VRRPv3.
    assert_eq!(b.version, 3);
    assert_eq!(b.priority, 90);
    assert_eq!(b.addresses, vec!["2001:db8::50/64".to_string()]);
    assert_eq!(b.sync_group.as_deref(), Some("G"));
    assert_eq!(b.auth_pass, None);
}

#[test]
fn errors_fail_the_whole_file_with_positions() {
    let fs = MemFs(BTreeMap::from([(PathBuf::from("x.conf"), String::new())]));
    let parsed = parse_with(
        "x.conf",
        "vrrp_instance A {\n  virtual_router_id 1\n  virtual_ipaddress {\n    192.0.2.1\n  }\n}\n",
        &fs,
    );
    assert!(resolve_config(&parsed.config, &host()).is_ok());
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("k.conf");
    std::fs::write(&f, "vrrp_instance A {\n  priority 0\n}\n").unwrap();
    let err = load(&f, &host()).unwrap_err();
    let lines: Vec<String> = err.0.iter().map(ToString::to_string).collect();
    let name = f.display().to_string();
    assert_eq!(
        lines,
        vec![
            format!("{name}:2:12: `priority` must be an integer from 1 to 255, not \"0\""),
            format!("{name}:1:1: vrrp_instance A has no virtual_router_id"),
            format!(
                "{name}:1:1: vrrp_instance A has no virtual_ipaddress; at least one address is needed"
            ),
        ]
    );
}
