//! An instance that cannot run on a host (here: its virtual MAC interface cannot be created,
//! because another macvlan on eth0 already has that MAC) is reported once, not again on every
//! address event that retries it (issue 19). Needs root (skips otherwise) and the agent binary.

use std::time::Duration;

use lab::{Agent, Instance, KeepalivedConf, Lab, VrrpDaemon};

#[test]
fn agent_logs_an_unplaced_instance_once_not_on_every_address_event() {
    lab::skip_unless_root!("agent_logs_an_unplaced_instance_once_not_on_every_address_event");
    // The debug lines show the retries that are no longer logged as errors.
    // SAFETY: set before any thread of this test process reads the environment.
    unsafe { std::env::set_var("RUST_LOG", "info,agent=debug") };
    let lab = Lab::builder().hosts(1).build().unwrap();
    let a = Instance::v3(200, Duration::from_millis(100));
    let b = Instance {
        name: "VI_2".into(),
        vrid: 52,
        vips: vec!["192.0.2.201/24".into()],
        ..a.clone()
    };
    let conf = KeepalivedConf {
        instances: vec![a, b],
        ..Default::default()
    }
    .render()
    .replace("virtual_router_id 52", "virtual_router_id 52\n    use_vmac");
    assert!(conf.contains("use_vmac"), "{conf}");
    // The MAC VI_2's vrrp.52 would get (00-00-5E-00-01-34), taken by another macvlan.
    lab.exec(
        lab.host(0),
        &[
            "ip",
            "link",
            "add",
            "link",
            "eth0",
            "name",
            "taken",
            "address",
            "00:00:5e:00:01:34",
            "type",
            "macvlan",
            "mode",
            "private",
        ],
    )
    .unwrap();
    // Up: the kernel refuses to bring up a second macvlan with a MAC in use on the port.
    lab.exec(lab.host(0), &["ip", "link", "set", "taken", "up"])
        .unwrap();
    let agent = Agent::start(&lab, lab.host(0), &conf).unwrap();
    lab.wait_holder(lab::VIP4, 0, Duration::from_secs(10))
        .unwrap();
    let log = || agent.log();
    let errors = |text: &str| {
        text.lines()
            .filter(|l| l.contains("ERROR") && l.contains("VI_2"))
            .count()
    };
    lab::wait_until(Duration::from_secs(5), "the unplaced VI_2 reported", || {
        (errors(&log()) == 1).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}:\n{}", log()));
    // Five address events, each retried after it settles.
    let host = lab.host(0);
    for i in 1..=5 {
        let addr = format!("198.51.100.{i}/32");
        lab.exec(host, &["ip", "addr", "add", &addr, "dev", "eth0"])
            .unwrap();
        lab::wait_until(
            Duration::from_secs(5),
            "the retry after the address event",
            || {
                let retries = log()
                    .lines()
                    .filter(|l| l.contains("VI_2") && l.contains("(still)"))
                    .count();
                (retries >= i).then_some(())
            },
        )
        .unwrap();
    }
    let text = log();
    assert_eq!(errors(&text), 1, "one ERROR for VI_2:\n{text}");
    assert!(
        agent
            .status()
            .unwrap()
            .instance("VI_2")
            .is_some_and(|s| s.state == "FAULT")
    );
}
