//! rtnetlink against the real kernel, in private network namespaces (root only): VIP add /
//! replace / remove with prefix and label, interface listing, link and address events,
//! stale-VIP clean-up across a simulated restart, and 300 VIPs in one pipelined batch.

mod net_lab;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use agent::net::{
    NetEvent, Netlink, RecordedVip, Vip, VipManager, VipRecord, cleanup_stale, node_facts,
};
use ipnet::IpNet;
use net_lab::{Lab, MAC_A};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn net_vip_add_replace_remove_with_prefix_and_label() {
    net_lab::run(
        "net_vip_add_replace_remove_with_prefix_and_label",
        |lab: Lab| async move {
            lab.veth();
            let nl = Netlink::new().unwrap();
            let ifindex = lab.home.ifindex("eth0");
            let v4 = Vip::new(
                "eth0",
                ifindex,
                net("192.0.2.10/24"),
                Some("eth0:vip".into()),
            )
            .unwrap();
            let v6 = Vip::new("eth0", ifindex, net("2001:db8::10/64"), None).unwrap();

            nl.add_vip(&v4).await.unwrap();
            nl.add_vip(&v6).await.unwrap();
            let addrs = lab.home.addresses("eth0");
            assert!(
                addrs.contains(&("192.0.2.10".into(), 24, Some("eth0:vip".into()))),
                "{addrs:?}"
            );
            assert!(
                addrs
                    .iter()
                    .any(|(a, p, _)| a == "2001:db8::10" && *p == 64),
                "{addrs:?}"
            );
            // The IPv6 VIP is usable at once (no DAD): not tentative.
            let json = lab.home.addr_json("eth0");
            let v6info = json["addr_info"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["local"] == "2001:db8::10")
                .unwrap()
                .clone();
            assert!(v6info.get("tentative").is_none(), "{v6info}");
            // Being in 192.0.2.0/24 with the interface's own address, the IPv4 VIP is secondary.
            let v4info = json["addr_info"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["local"] == "192.0.2.10")
                .unwrap()
                .clone();
            assert_eq!(v4info["secondary"], true, "{v4info}");

            // Replace semantics: adding again succeeds and leaves exactly one copy.
            nl.add_vip(&v4).await.unwrap();
            nl.add_vip(&v6).await.unwrap();
            let addrs = lab.home.addresses("eth0");
            assert_eq!(
                addrs.iter().filter(|(a, _, _)| a == "192.0.2.10").count(),
                1,
                "{addrs:?}"
            );
            assert_eq!(
                addrs.iter().filter(|(a, _, _)| a == "2001:db8::10").count(),
                1,
                "{addrs:?}"
            );

            // A /32 VIP in another subnet, no label: ip shows the interface name as label.
            let host = Vip::new("eth0", ifindex, net("198.51.100.7/32"), None).unwrap();
            nl.add_vip(&host).await.unwrap();
            assert!(lab.home.addresses("eth0").contains(&(
                "198.51.100.7".into(),
                32,
                Some("eth0".into())
            )));

            // Remove, then remove again (already gone counts as success).
            for v in [&v4, &v6, &host] {
                nl.remove_vip(v).await.unwrap();
                nl.remove_vip(v).await.unwrap();
            }
            let addrs = lab.home.addresses("eth0");
            assert!(
                !addrs.iter().any(|(a, _, _)| a == "192.0.2.10"
                    || a == "2001:db8::10"
                    || a == "198.51.100.7"),
                "{addrs:?}"
            );
            // The interface's own addresses are untouched.
            assert!(
                addrs.iter().any(|(a, p, _)| a == "192.0.2.1" && *p == 24),
                "{addrs:?}"
            );

            // Errors name what failed: a VIP on an interface index that does not exist.
            let bogus = Vip::new("eth9", 9999, net("192.0.2.11/24"), None).unwrap();
            let err = nl.add_vip(&bogus).await.unwrap_err().to_string();
            assert!(err.contains("adding VIP 192.0.2.11/24 dev eth9"), "{err}");
        },
    );
}

#[test]
fn net_list_interfaces_and_addresses() {
    net_lab::run("net_list_interfaces_and_addresses", |lab: Lab| async move {
        lab.veth();
        let nl = Netlink::new().unwrap();
        let ifs = nl.interfaces().await.unwrap();
        let names: Vec<&str> = ifs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(
            names.contains(&"lo") && names.contains(&"eth0"),
            "{names:?}"
        );
        let eth0 = ifs.iter().find(|i| i.name == "eth0").unwrap();
        assert_eq!(eth0.index, lab.home.ifindex("eth0"));
        assert_eq!(eth0.mac, Some(MAC_A));
        assert!(!eth0.loopback);
        assert!(eth0.state.is_up(), "{:?}", eth0.state);
        let mut got: Vec<String> = eth0
            .addresses
            .iter()
            .map(|a| a.address.to_string())
            .collect();
        got.sort();
        let mut want: Vec<String> = lab
            .home
            .addresses("eth0")
            .iter()
            .map(|(a, p, _)| format!("{a}/{p}"))
            .collect();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(eth0.primary_ipv4(), Some("192.0.2.1".parse().unwrap()));
        assert_eq!(eth0.link_local_ipv6(), Some("fe80::a".parse().unwrap()));

        let by_name = nl.interface_by_name("eth0").await.unwrap().unwrap();
        assert_eq!(by_name.index, eth0.index);
        assert!(nl.interface_by_name("nosuch0").await.unwrap().is_none());
        assert_eq!(nl.link(eth0.index).await.unwrap().unwrap().name, "eth0");
        assert!(nl.link(4242).await.unwrap().is_none());

        // The resolver's facts: loopback left out, and the VIP's subnet picks eth0.
        let facts = node_facts("node-a", &ifs);
        assert_eq!(facts.interfaces.len(), 1);
        assert_eq!(
            crds::resolve::interface_for(&facts, "192.0.2.77".parse().unwrap()).as_deref(),
            Some("eth0")
        );
        assert_eq!(
            crds::resolve::interface_for(&facts, "2001:db8::77".parse().unwrap()).as_deref(),
            Some("eth0")
        );
    });
}

/// Next event matching `pred` within `timeout`.
async fn expect_event(
    ev: &mut agent::net::NetEvents,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&NetEvent) -> bool,
) -> NetEvent {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, ev.next_event()).await {
            Ok(Some(e)) if pred(&e) => return e,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("event stream ended while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

#[test]
fn net_link_and_address_events() {
    net_lab::run("net_link_and_address_events", |lab: Lab| async move {
        lab.veth();
        let nl = Netlink::new().unwrap();
        let ifindex = lab.home.ifindex("eth0");
        let mut ev = nl.events(true).unwrap();

        // The peer end goes down: our end loses carrier (admin still up, not running).
        lab.peer.sh("ip link set eth0 down");
        let e = expect_event(&mut ev, "eth0 losing carrier", Duration::from_secs(10), |e| {
            matches!(e, NetEvent::Link { ifindex: i, state, .. } if *i == ifindex && !state.is_up())
        })
        .await;
        let NetEvent::Link { ifname, state, .. } = e else {
            unreachable!()
        };
        assert_eq!(ifname, "eth0");
        assert!(
            state.admin_up && !state.running && !state.lower_up,
            "{state:?}"
        );

        lab.peer.sh("ip link set eth0 up");
        expect_event(&mut ev, "eth0 regaining carrier", Duration::from_secs(10), |e| {
            matches!(e, NetEvent::Link { ifindex: i, state, .. } if *i == ifindex && state.is_up())
        })
        .await;

        // Administratively down on our side.
        lab.home.sh("ip link set eth0 down");
        let e = expect_event(&mut ev, "eth0 admin down", Duration::from_secs(10), |e| {
            matches!(e, NetEvent::Link { ifindex: i, state, .. } if *i == ifindex && !state.admin_up)
        })
        .await;
        assert!(matches!(e, NetEvent::Link { state, .. } if !state.is_up()));
        // A rename (same state) is reported with the new name.
        lab.home.sh("ip link set eth0 name lan0");
        expect_event(&mut ev, "rename to lan0", Duration::from_secs(10), |e| {
            matches!(e, NetEvent::Link { ifindex: i, ifname, .. } if *i == ifindex && ifname == "lan0")
        })
        .await;
        lab.home.sh("ip link set lan0 name eth0");
        lab.home.sh("ip link set eth0 up");
        expect_event(&mut ev, "eth0 up again", Duration::from_secs(10), |e| {
            matches!(e, NetEvent::Link { ifindex: i, state, .. } if *i == ifindex && state.is_up())
        })
        .await;

        // Address events, IPv4 and IPv6.
        lab.home.sh("ip addr add 203.0.113.5/32 dev eth0");
        let want: IpNet = net("203.0.113.5/32");
        expect_event(&mut ev, "address added", Duration::from_secs(10), |e| {
            *e == NetEvent::AddressAdded {
                ifindex,
                address: want,
            }
        })
        .await;
        lab.home.sh("ip addr del 203.0.113.5/32 dev eth0");
        expect_event(&mut ev, "address removed", Duration::from_secs(10), |e| {
            *e == NetEvent::AddressRemoved {
                ifindex,
                address: want,
            }
        })
        .await;
        lab.home.sh("ip -6 addr add 2001:db8::55/64 dev eth0 nodad");
        let want6: IpNet = net("2001:db8::55/64");
        expect_event(
            &mut ev,
            "IPv6 address added",
            Duration::from_secs(10),
            |e| {
                *e == NetEvent::AddressAdded {
                    ifindex,
                    address: want6,
                }
            },
        )
        .await;

        // A deleted link is reported as such.
        lab.home.sh("ip link add tmp0 type veth peer name tmp1");
        let dummy = lab.home.ifindex("tmp0");
        lab.home.sh("ip link del tmp0");
        expect_event(&mut ev, "link removed", Duration::from_secs(10), |e| {
            matches!(e, NetEvent::LinkRemoved { ifindex: i, ifname } if *i == dummy && ifname == "tmp0")
        })
        .await;
    });
}

#[test]
fn net_stale_vip_cleanup_across_restart() {
    net_lab::run(
        "net_stale_vip_cleanup_across_restart",
        |lab: Lab| async move {
            lab.veth();
            let state_dir = tempfile::tempdir().unwrap();
            let ifindex = lab.home.ifindex("eth0");
            let vips = [
                Vip::new("eth0", ifindex, net("192.0.2.20/24"), Some("eth0:a".into())).unwrap(),
                Vip::new("eth0", ifindex, net("192.0.2.21/24"), None).unwrap(),
                Vip::new("eth0", ifindex, net("2001:db8::21/64"), None).unwrap(),
            ];
            let recorded: Vec<RecordedVip> = vips.iter().map(RecordedVip::from).collect();
            // An entry recorded just before a crash that never reached the kernel.
            let never_added = RecordedVip {
                interface: "eth0".into(),
                address: net("192.0.2.22/24"),
                label: None,
            };
            // An entry for an interface that no longer exists.
            let gone_if = RecordedVip {
                interface: "eth7".into(),
                address: net("192.0.2.23/24"),
                label: None,
            };

            // First life: record, add, then "crash" (nothing removed).
            {
                let nl = Netlink::new().unwrap();
                let mut record = VipRecord::load(state_dir.path());
                record
                    .record(recorded.iter().chain([&never_added, &gone_if]))
                    .unwrap();
                for r in nl.add_vips(&vips).await {
                    r.unwrap();
                }
            }
            let present = |a: &str| lab.home.addresses("eth0").iter().any(|(x, _, _)| x == a);
            assert!(present("192.0.2.20") && present("192.0.2.21") && present("2001:db8::21"));

            // Second life holds only 192.0.2.21.
            let nl = Netlink::new().unwrap();
            let mut record = VipRecord::load(state_dir.path());
            assert_eq!(record.vips().count(), 5);
            let held = [recorded[1].clone()];
            let report = cleanup_stale(&nl, &mut record, &held).await.unwrap();
            let mut removed: Vec<String> = report
                .removed
                .iter()
                .map(|v| v.address.to_string())
                .collect();
            removed.sort();
            assert_eq!(removed, vec!["192.0.2.20/24", "2001:db8::21/64"]);
            let mut gone: Vec<String> = report
                .already_gone
                .iter()
                .map(|v| v.address.to_string())
                .collect();
            gone.sort();
            assert_eq!(gone, vec!["192.0.2.22/24", "192.0.2.23/24"]);
            assert!(report.failed.is_empty(), "{:?}", report.failed);
            assert!(!present("192.0.2.20") && !present("2001:db8::21"));
            assert!(present("192.0.2.21"), "the held VIP must stay");
            assert!(
                present("192.0.2.1"),
                "the interface's own address must stay"
            );

            // The record now lists only what is still held, also after a reload.
            let left: Vec<RecordedVip> =
                VipRecord::load(state_dir.path()).vips().cloned().collect();
            assert_eq!(left, vec![recorded[1].clone()]);

            // A third start with nothing held removes the last one and leaves an empty record.
            let mut record = VipRecord::load(state_dir.path());
            let report = cleanup_stale(&nl, &mut record, &[]).await.unwrap();
            assert_eq!(report.removed, vec![recorded[1].clone()]);
            assert!(!present("192.0.2.21"));
            assert_eq!(VipRecord::load(state_dir.path()).vips().count(), 0);

            // A corrupt record never stops a start.
            std::fs::write(state_dir.path().join("vips.json"), b"\0\0garbage").unwrap();
            let mut record = VipRecord::load(state_dir.path());
            assert_eq!(
                cleanup_stale(&nl, &mut record, &[]).await.unwrap(),
                Default::default()
            );
        },
    );
}

#[test]
fn net_300_vips_pipelined() {
    net_lab::run("net_300_vips_pipelined", |lab: Lab| async move {
        lab.veth();
        let nl = Netlink::new().unwrap();
        let ifindex = lab.home.ifindex("eth0");
        let addrs: Vec<IpAddr> = (1..=254u8)
            .map(|i| IpAddr::from([198, 51, 100, i]))
            .chain((1..=46u8).map(|i| IpAddr::from([203, 0, 113, i])))
            .collect();
        assert_eq!(addrs.len(), 300);
        let vips: Vec<Vip> = addrs
            .iter()
            .map(|a| Vip::new("eth0", ifindex, IpNet::new(*a, 32).unwrap(), None).unwrap())
            .collect();

        let t = Instant::now();
        let results = nl.add_vips(&vips).await;
        let add_time = t.elapsed();
        assert_eq!(results.len(), 300);
        for r in &results {
            r.as_ref().unwrap();
        }
        let have = lab.home.addresses("eth0");
        for a in &addrs {
            assert!(
                have.iter().any(|(x, p, _)| *x == a.to_string() && *p == 32),
                "{a} missing"
            );
        }
        // Order is kept: the kernel lists addresses in the order they were added.
        let listed: Vec<String> = have
            .iter()
            .filter(|(x, _, _)| x.starts_with("198.51.100.") || x.starts_with("203.0.113."))
            .map(|(x, _, _)| x.clone())
            .collect();
        let expected: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        assert_eq!(listed, expected);

        let t = Instant::now();
        for r in nl.remove_vips(&vips).await {
            r.unwrap();
        }
        let remove_time = t.elapsed();
        let have = lab.home.addresses("eth0");
        assert!(
            !have
                .iter()
                .any(|(x, _, _)| x.starts_with("198.51.100.") || x.starts_with("203.0.113."))
        );
        eprintln!(
            "net_300_vips_pipelined: added 300 VIPs in {add_time:?}, removed them in {remove_time:?}"
        );
    });
}

#[test]
fn net_vip_manager_keeps_the_record() {
    net_lab::run("net_vip_manager_keeps_the_record", |lab: Lab| async move {
        lab.veth();
        let state_dir = tempfile::tempdir().unwrap();
        let ifindex = lab.home.ifindex("eth0");
        let a = Vip::new("eth0", ifindex, net("192.0.2.30/24"), Some("eth0:a".into())).unwrap();
        let b = Vip::new("eth0", ifindex, net("2001:db8::30/64"), None).unwrap();
        let present = |x: &str| lab.home.addresses("eth0").iter().any(|(y, _, _)| y == x);

        let mgr = VipManager::new(Netlink::new().unwrap(), VipRecord::load(state_dir.path()));
        // Runs fine from a spawned task (how the driver uses it).
        let m = mgr.clone();
        let (va, vb) = (a.clone(), b.clone());
        let results = tokio::spawn(async move { m.add(&[va, vb]).await })
            .await
            .unwrap();
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert!(present("192.0.2.30") && present("2001:db8::30"));
        let on_disk: Vec<RecordedVip> = VipRecord::load(state_dir.path()).vips().cloned().collect();
        assert_eq!(on_disk.len(), 2);
        assert_eq!(mgr.recorded(), on_disk);

        for r in mgr.remove(std::slice::from_ref(&a)).await {
            r.unwrap();
        }
        assert!(!present("192.0.2.30"));
        let on_disk: Vec<RecordedVip> = VipRecord::load(state_dir.path()).vips().cloned().collect();
        assert_eq!(on_disk, vec![RecordedVip::from(&b)]);

        // "Restart" without removing b: the next life's clean-up takes it away.
        drop(mgr);
        let mgr = VipManager::new(Netlink::new().unwrap(), VipRecord::load(state_dir.path()));
        let report = mgr.cleanup_stale(&[]).await.unwrap();
        assert_eq!(report.removed, vec![RecordedVip::from(&b)]);
        assert!(!present("2001:db8::30"));
        assert!(mgr.recorded().is_empty());
        assert_eq!(VipRecord::load(state_dir.path()).vips().count(), 0);
    });
}
