//! A `vrrp_sync_group` in full: its own notify scripts and trackers, and keepalived's rule that
//! tracker weights do not apply inside a group unless `sync_group_tracking_weight` is set.

use keepalived::convert::{ConvertOptions, convert};
use keepalived::{MemFs, parse_with};

const CONF: &str = r#"vrrp_script chk_db {
    script "/usr/local/bin/chk_db"
}
vrrp_script chk_load {
    script "/usr/local/bin/chk_load"
    weight -20
}
vrrp_sync_group DB {
    group {
        VI_DB VI_REPL
    }
    notify_master "/usr/local/bin/db-master.sh now"
    notify_fault /usr/local/bin/db-fault.sh
    notify /usr/local/bin/db-group.sh
    track_interface {
        eth9
    }
    track_script {
        chk_db
    }
    TRACKING_WEIGHT
}
vrrp_instance VI_DB {
    interface eth0
    virtual_router_id 10
    priority 150
    virtual_ipaddress {
        192.0.2.10/24
    }
    track_interface {
        eth1 weight 10
    }
    track_script {
        chk_load
    }
}
vrrp_instance VI_REPL {
    interface eth1
    virtual_router_id 11
    priority 150
    virtual_ipaddress {
        198.51.100.10/24
    }
}
"#;

fn conv(tracking_weight: bool) -> (keepalived::convert::Conversion, Vec<String>) {
    let text = CONF.replace(
        "TRACKING_WEIGHT",
        if tracking_weight {
            "sync_group_tracking_weight"
        } else {
            ""
        },
    );
    let p = parse_with("g.conf", &text, &MemFs::default());
    assert!(!p.diagnostics.has_errors(), "{}", p.diagnostics);
    let c = convert(&p.config, &ConvertOptions::default());
    assert!(!c.diagnostics.has_errors(), "{}", c.diagnostics);
    let lines = c.diagnostics.0.iter().map(ToString::to_string).collect();
    (c, lines)
}

#[test]
fn group_notify_scripts_go_to_every_member() {
    let (c, _) = conv(false);
    for item in &c.items {
        let s = &item.virtual_ip.spec;
        assert_eq!(s.sync_group.as_deref(), Some("DB"));
        let n = s.sync_group_notify.as_ref().unwrap();
        assert_eq!(n.master.as_deref(), Some("/usr/local/bin/db-master.sh now"));
        assert_eq!(n.fault.as_deref(), Some("/usr/local/bin/db-fault.sh"));
        assert_eq!(n.any.as_deref(), Some("/usr/local/bin/db-group.sh"));
        assert_eq!(n.backup, None);
        assert!(crds::validate::validate_spec(s).is_empty());
    }
}

#[test]
fn group_trackers_are_every_members_and_weights_follow_keepalived() {
    let (c, lines) = conv(false);
    let db = &c.items[0].virtual_ip.spec;
    let t = db.track.as_ref().unwrap();
    let ifs: Vec<(&str, Option<i16>)> = t
        .interfaces
        .iter()
        .map(|x| (x.name.as_str(), x.weight))
        .collect();
    assert_eq!(ifs, vec![("eth1", Some(0)), ("eth9", Some(0))]);
    let scripts: Vec<&str> = t.scripts.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(scripts, vec!["chk_db"], "the weighted chk_load is dropped");
    assert!(
        lines.iter().any(|l| l.starts_with(
            "g.conf:31:9: warning: vrrp_instance VI_DB: track_interface eth1: weight ignored"
        )),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("g.conf:34:9: warning: vrrp_instance VI_DB: track_script chk_load with a weight is ignored because vrrp_sync_group DB has no sync_group_tracking_weight")),
        "{lines:#?}"
    );
    // The other member tracks the group's trackers too.
    let repl = c.items[1].virtual_ip.spec.track.as_ref().unwrap();
    assert_eq!(repl.interfaces[0].name, "eth9");
    assert_eq!(repl.scripts[0].name, "chk_db");

    // With sync_group_tracking_weight the weights apply.
    let (c, _) = conv(true);
    let t = c.items[0].virtual_ip.spec.track.as_ref().unwrap();
    assert_eq!(t.interfaces[0].weight, Some(10));
    assert_eq!(t.scripts.len(), 2);
}

#[test]
fn group_tracker_references_are_checked() {
    let text = CONF.replace(
        "        chk_db\n    }\n    TRACKING_WEIGHT",
        "        nope\n    }\n",
    );
    let p = parse_with("g.conf", &text, &MemFs::default());
    let errs: Vec<String> = p.diagnostics.errors().map(ToString::to_string).collect();
    assert_eq!(
        errs,
        vec![
            "g.conf:19:9: vrrp_sync_group DB: track_script `nope`: no vrrp_script named nope is defined"
        ]
    );
}
