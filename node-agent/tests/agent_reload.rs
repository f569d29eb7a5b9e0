//! Standalone SIGHUP: the real agent re-reads its keepalived.conf and applies only the
//! difference — an unchanged instance keeps its state and VIP (no transition), a changed
//! priority is applied in place, a new instance starts, a removed one leaves and takes its VIP
//! with it, and a broken file is refused while the running configuration stays in force.

mod agent_proc;
mod net_lab;

use std::process::{Command, Stdio};

use agent_proc::{AgentProcess, free_port, status, wait};

fn instance(name: &str, vrid: u8, priority: u8, vip: &str) -> String {
    format!(
        "vrrp_instance {name} {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {vrid}\n    priority {priority}\n    version 3\n    advert_int 0.1\n    virtual_ipaddress {{\n        {vip}\n    }}\n}}\n"
    )
}

fn field(st: &serde_json::Value, name: &str, key: &str) -> serde_json::Value {
    st["instances"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == name))
        .map(|i| i[key].clone())
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn sighup_applies_only_the_difference() {
    net_lab::run("sighup_applies_only_the_difference", |lab| async move {
        lab.veth();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("keepalived.conf");
        let vi1 = instance("VI_1", 51, 200, "192.0.2.200/24");
        std::fs::write(
            &conf,
            format!("{vi1}{}", instance("VI_2", 52, 150, "192.0.2.201/24")),
        )
        .unwrap();
        let port = free_port();
        let log_path = dir.path().join("agent.log");
        let child = Command::new(env!("CARGO_BIN_EXE_kube-vrrp-agent"))
            .arg("standalone")
            .arg("--config")
            .arg(&conf)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mut agent = AgentProcess(Some(child));
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let held = |vip: &str| lab.home.sh("ip -br addr show dev eth0").contains(vip);
        let hup = || {
            // SAFETY: signalling our own child by PID.
            unsafe { libc::kill(pid, libc::SIGHUP) };
        };
        let masters = |names: &[&str]| {
            status(port).is_some_and(|st| names.iter().all(|n| field(&st, n, "state") == "MASTER"))
        };

        // Alone on the segment, both instances become MASTER.
        wait("VI_1 and VI_2 MASTER", &log_path, || {
            masters(&["VI_1", "VI_2"])
        });
        wait("both VIPs bound", &log_path, || {
            held("192.0.2.200/24") && held("192.0.2.201/24")
        });
        let st = status(port).unwrap();
        let (since1, since2) = (field(&st, "VI_1", "since"), field(&st, "VI_2", "since"));

        // Reload 1: VI_1 unchanged, VI_2's priority changed, VI_3 added.
        std::fs::write(
            &conf,
            format!(
                "{vi1}{}{}",
                instance("VI_2", 52, 160, "192.0.2.201/24"),
                instance("VI_3", 53, 120, "192.0.2.202/24")
            ),
        )
        .unwrap();
        hup();
        wait("VI_3 MASTER after the reload", &log_path, || {
            masters(&["VI_3"]) && held("192.0.2.202/24")
        });
        wait("VI_2's new priority applied", &log_path, || {
            status(port).is_some_and(|st| field(&st, "VI_2", "effectivePriority") == 160)
        });
        let st = status(port).unwrap();
        assert_eq!(
            field(&st, "VI_1", "since"),
            since1,
            "VI_1 untouched by the reload"
        );
        assert_eq!(
            field(&st, "VI_2", "since"),
            since2,
            "VI_2's priority change made no transition"
        );
        assert_eq!(field(&st, "VI_1", "state"), "MASTER");
        assert_eq!(field(&st, "VI_2", "state"), "MASTER");
        let text = log();
        assert!(text.contains("updating instance in place"), "{text}");
        assert_eq!(
            text.matches("(VI_1) Entering MASTER STATE").count(),
            1,
            "{text}"
        );
        assert_eq!(
            text.matches("(VI_2) Entering MASTER STATE").count(),
            1,
            "{text}"
        );

        // Reload 2: a broken file is refused; everything keeps running.
        std::fs::write(&conf, "vrrp_instance VI_1 {\n    priority 999\n").unwrap();
        hup();
        wait("the broken reload is refused", &log_path, || {
            log().contains("reload failed")
        });
        assert!(log().contains("keeping the running configuration"));
        assert!(masters(&["VI_1", "VI_2", "VI_3"]));

        // Reload 3: VI_3 removed: it leaves and its VIP goes; the others stay as they are.
        std::fs::write(
            &conf,
            format!("{vi1}{}", instance("VI_2", 52, 160, "192.0.2.201/24")),
        )
        .unwrap();
        hup();
        wait("VI_3 gone with its VIP", &log_path, || {
            !held("192.0.2.202/24")
                && status(port).is_some_and(|st| field(&st, "VI_3", "name").is_null())
        });
        let st = status(port).unwrap();
        assert_eq!(field(&st, "VI_1", "since"), since1);
        assert_eq!(field(&st, "VI_2", "since"), since2);
        assert!(held("192.0.2.200/24") && held("192.0.2.201/24"));

        // SIGTERM: exit 0 with every VIP removed.
        let mut child = agent.0.take().unwrap();
        // SAFETY: signalling our own child by PID.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        assert!(child.wait().unwrap().success(), "{}", log());
        assert!(!held("192.0.2.200/24") && !held("192.0.2.201/24"));
    });
}

fn instance_with(name: &str, vrid: u8, vips: &[&str], excluded: &[&str]) -> String {
    let list = |a: &[&str]| {
        a.iter()
            .map(|v| format!("        {v}\n"))
            .collect::<String>()
    };
    format!(
        "vrrp_instance {name} {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {vrid}\n    priority 200\n    version 3\n    advert_int 0.1\n    virtual_ipaddress {{\n{}    }}\n    virtual_ipaddress_excluded {{\n{}    }}\n}}\n",
        list(vips),
        list(excluded)
    )
}

/// The load-balancer layer adds and removes Service addresses of a running router all the
/// time: a master binds the added ones and drops the removed ones without leaving MASTER.
#[test]
fn sighup_changes_addresses_in_place_without_a_transition() {
    net_lab::run(
        "sighup_changes_addresses_in_place_without_a_transition",
        |lab| async move {
            lab.veth();
            let dir = tempfile::tempdir().unwrap();
            let conf = dir.path().join("keepalived.conf");
            std::fs::write(
                &conf,
                instance_with("VI_1", 61, &["192.0.2.200/24"], &["198.51.100.7/32"]),
            )
            .unwrap();
            let port = free_port();
            let log_path = dir.path().join("agent.log");
            let child = Command::new(env!("CARGO_BIN_EXE_kube-vrrp-agent"))
                .arg("standalone")
                .arg("--config")
                .arg(&conf)
                .arg("--state-dir")
                .arg(dir.path().join("state"))
                .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log_path).unwrap())
                .spawn()
                .unwrap();
            let pid = child.id() as i32;
            let mut agent = AgentProcess(Some(child));
            let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            let held = |vip: &str| {
                lab.home
                    .sh("ip -br addr show dev eth0")
                    .split_whitespace()
                    .any(|w| w == vip)
            };
            let hup = || {
                // SAFETY: signalling our own child by PID.
                unsafe { libc::kill(pid, libc::SIGHUP) };
            };
            wait("VI_1 MASTER with both addresses", &log_path, || {
                status(port).is_some_and(|st| field(&st, "VI_1", "state") == "MASTER")
                    && held("192.0.2.200/24")
                    && held("198.51.100.7/32")
            });
            let since = field(&status(port).unwrap(), "VI_1", "since");

            // Add a virtual and an excluded address, drop the old excluded one.
            std::fs::write(
                &conf,
                instance_with(
                    "VI_1",
                    61,
                    &["192.0.2.200/24", "192.0.2.210/32"],
                    &["198.51.100.8/32", "2001:db8::8/128"],
                ),
            )
            .unwrap();
            hup();
            wait(
                "the added addresses bound, the dropped one removed",
                &log_path,
                || {
                    held("192.0.2.210/32")
                        && held("198.51.100.8/32")
                        && held("2001:db8::8/128")
                        && !held("198.51.100.7/32")
                },
            );
            // Drop the first virtual address.
            std::fs::write(
                &conf,
                instance_with("VI_1", 61, &["192.0.2.210/32"], &["198.51.100.8/32"]),
            )
            .unwrap();
            hup();
            wait("the first address removed", &log_path, || {
                !held("192.0.2.200/24") && !held("2001:db8::8/128") && held("192.0.2.210/32")
            });
            let st = status(port).unwrap();
            assert_eq!(field(&st, "VI_1", "state"), "MASTER");
            assert_eq!(field(&st, "VI_1", "since"), since, "no transition");
            let text = log();
            assert_eq!(
                text.matches("(VI_1) Entering MASTER STATE").count(),
                1,
                "{text}"
            );
            assert!(!text.contains("restarting instance"), "{text}");
            assert!(text.contains("updating instance in place"), "{text}");

            let mut child = agent.0.take().unwrap();
            // SAFETY: signalling our own child by PID.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            assert!(child.wait().unwrap().success(), "{}", log());
            assert!(!held("192.0.2.210/32") && !held("198.51.100.8/32"));
        },
    );
}
