//! A `vrrp_sync_group`'s own notify scripts, run by a standalone agent in a netns lab: the
//! group's `notify_master` runs once when the whole group is master, its generic `notify` gets
//! keepalived's `GROUP NAME STATE 0`, and `notify_stop` runs on SIGTERM; a member's FAULT
//! (its tracked interface going down) puts the group in FAULT and runs `notify_fault`.

use std::time::Duration;

use lab::{Agent, LabBuilder, VrrpDaemon};

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn sync_group_notify_scripts_follow_the_group() {
    lab::skip_unless_root!("sync_group_notify_scripts_follow_the_group");
    let lab = LabBuilder::default().hosts(1).build().expect("lab");
    let host = lab.host(0).clone();
    let dir = lab.node_dir(&host).expect("node dir");
    let log = dir.join("group.log");
    let script = dir.join("group.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$*\" >> {}\n", log.display()),
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let s = script.display();
    // The tracked interface is the lab's own eth0: taking it down faults VI_A.
    let conf = format!(
        "vrrp_sync_group G1 {{\n  group {{\n    VI_A\n    VI_B\n  }}\n  notify_master \"{s} master-only\"\n  notify_fault \"{s} fault-only\"\n  notify_stop \"{s} stop-only\"\n  notify {s}\n}}\n\
         vrrp_instance VI_A {{\n  state MASTER\n  interface eth0\n  virtual_router_id 71\n  priority 200\n  version 3\n  advert_int 0.1\n  virtual_ipaddress {{\n    192.0.2.71/24\n  }}\n}}\n\
         vrrp_instance VI_B {{\n  state MASTER\n  interface eth0\n  virtual_router_id 72\n  priority 200\n  version 3\n  advert_int 0.1\n  virtual_ipaddress {{\n    192.0.2.72/24\n  }}\n}}\n"
    );
    let mut agent = Agent::start(&lab, &host, &conf).expect("agent");
    lab::wait_until(
        Duration::from_secs(10),
        "group MASTER notifications",
        || {
            let l = lines(&log);
            (l.contains(&"master-only".to_string()) && l.contains(&"GROUP G1 MASTER 0".to_string()))
                .then_some(())
        },
    )
    .expect("group master");
    // Once per group change, not once per member.
    lab::wait::holds_for(
        Duration::from_millis(500),
        "one MASTER notification",
        || {
            lines(&log)
                .iter()
                .filter(|l| *l == "GROUP G1 MASTER 0")
                .count()
                == 1
        },
    )
    .expect("once");

    lab.link_down(&host).expect("link down");
    lab::wait_until(Duration::from_secs(10), "group FAULT notifications", || {
        let l = lines(&log);
        (l.contains(&"fault-only".to_string()) && l.contains(&"GROUP G1 FAULT 0".to_string()))
            .then_some(())
    })
    .expect("group fault");
    lab.link_up(&host).expect("link up");
    lab::wait_until(Duration::from_secs(10), "group MASTER again", || {
        (lines(&log)
            .iter()
            .filter(|l| *l == "GROUP G1 MASTER 0")
            .count()
            == 2)
            .then_some(())
    })
    .expect("master again");

    agent.terminate().expect("SIGTERM");
    agent.wait_stopped().expect("exit 0");
    let l = lines(&log);
    assert!(l.contains(&"stop-only".to_string()), "{l:?}");
    assert!(l.contains(&"GROUP G1 STOP 0".to_string()), "{l:?}");
}
