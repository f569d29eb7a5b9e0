//! Table-driven tests of the pure planner: one world in, the plan checked rule by rule.

mod common;

use std::sync::Arc;

use common::*;
use crds::ResolvedInstance;
use crds::virtualip::{
    AuthType, Authentication, InitialState, NodeOverride, Phase, SecretKeyRef, Unicast,
    VirtualIPSpec,
};
use crds::vrrpnode::VrrpState::{Backup, Fault, Init, Master};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelectorRequirement, Time};
use operator::planner::{EventType, Plan, VipKey, World, config_hash, plan};

fn key(ns: &str, name: &str) -> VipKey {
    VipKey {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn inst<'a>(p: &'a Plan, node: &str, name: &str) -> Option<&'a ResolvedInstance> {
    p.nodes
        .get(node)?
        .spec
        .instances
        .iter()
        .find(|i| i.name == name)
}

fn names_on(p: &Plan, node: &str) -> Vec<String> {
    p.nodes[node]
        .spec
        .instances
        .iter()
        .map(|i| i.name.clone())
        .collect()
}

fn cond<'a>(p: &'a Plan, ns: &str, name: &str, type_: &str) -> &'a Condition {
    p.virtual_ips[&key(ns, name)]
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap()
}

fn event_reasons(p: &Plan, ns: &str, name: &str) -> Vec<&'static str> {
    p.virtual_ips[&key(ns, name)]
        .events
        .iter()
        .map(|e| e.reason)
        .collect()
}

fn phase(p: &Plan, ns: &str, name: &str) -> Phase {
    p.virtual_ips[&key(ns, name)].status.phase.unwrap()
}

#[test]
fn eligibility_table() {
    struct Case {
        what: &'static str,
        selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
        want: &'static [&'static str],
    }
    let nodes = vec![
        node("a", &[("pool", "x")], &["192.0.2.1"]),
        node("b", &[("pool", "y")], &["192.0.2.2"]),
        Arc::new(node_obj("c", &[("pool", "x")], &["192.0.2.3"], false)),
        {
            let mut n = node_obj("d", &[("pool", "x")], &["192.0.2.4"], true);
            n.metadata.deletion_timestamp = Some(Time(ts(T0)));
            Arc::new(n)
        },
        node("e", &[("pool", "x"), ("zone", "z1")], &["192.0.2.5"]),
    ];
    let expr = |op: &str, values: Option<Vec<&str>>| {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "zone".into(),
                operator: op.into(),
                values: values.map(|v| v.into_iter().map(String::from).collect()),
            }]),
        }
    };
    let cases = [
        Case {
            what: "no selector: every node not being deleted, NotReady included",
            selector: None,
            want: &["a", "b", "c", "e"],
        },
        Case {
            what: "matchLabels",
            selector: Some(selector(&[("pool", "x")])),
            want: &["a", "c", "e"],
        },
        Case {
            what: "matchLabels, two labels",
            selector: Some(selector(&[("pool", "x"), ("zone", "z1")])),
            want: &["e"],
        },
        Case {
            what: "Exists",
            selector: Some(expr("Exists", None)),
            want: &["e"],
        },
        Case {
            what: "DoesNotExist",
            selector: Some(expr("DoesNotExist", None)),
            want: &["a", "b", "c"],
        },
        Case {
            what: "In",
            selector: Some(expr("In", Some(vec!["z1", "z2"]))),
            want: &["e"],
        },
        Case {
            what: "NotIn",
            selector: Some(expr("NotIn", Some(vec!["z1"]))),
            want: &["a", "b", "c"],
        },
        Case {
            what: "matches nothing",
            selector: Some(selector(&[("pool", "none")])),
            want: &[],
        },
    ];
    for c in cases {
        let v = vip(
            "ns",
            "v",
            0,
            VirtualIPSpec {
                node_selector: c.selector.clone(),
                ..spec("192.0.2.100/24")
            },
        );
        let p = plan(&world(vec![v], nodes.clone()));
        let got: Vec<&str> = ["a", "b", "c", "d", "e"]
            .into_iter()
            .filter(|n| inst(&p, n, "ns/v").is_some())
            .collect();
        assert_eq!(got, c.want, "{}", c.what);
        assert_eq!(
            p.virtual_ips[&key("ns", "v")].deployed_to,
            c.want,
            "{}",
            c.what
        );
        // Every Node gets a planned VRRPNode, even with nothing on it.
        assert_eq!(p.nodes.len(), 5, "{}", c.what);
        if c.want.is_empty() {
            assert_eq!(
                cond(&p, "ns", "v", "Ready").reason,
                "NoEligibleNodes",
                "{}",
                c.what
            );
            assert_eq!(phase(&p, "ns", "v"), Phase::Pending);
        }
    }
}

#[test]
fn invalid_selector_operator_is_an_invalid_spec() {
    let sel = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
        match_labels: None,
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "k".into(),
            operator: "Near".into(),
            values: None,
        }]),
    };
    let v = vip(
        "ns",
        "v",
        0,
        VirtualIPSpec {
            node_selector: Some(sel),
            ..spec("192.0.2.100/24")
        },
    );
    let p = plan(&world(vec![v], three_nodes()));
    assert!(p.nodes.values().all(|n| n.spec.instances.is_empty()));
    let c = cond(&p, "ns", "v", "Ready");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(c.message.contains("spec.nodeSelector"), "{}", c.message);
}

#[test]
fn priority_derivation_table() {
    struct Case {
        what: &'static str,
        priority: Option<u8>,
        overrides: Vec<NodeOverride>,
        want: [u8; 3],
    }
    let ov = |name: &str, p: u8| NodeOverride {
        name: name.into(),
        priority: Some(p),
        ..Default::default()
    };
    let cases = [
        Case {
            what: "default 100, descending by name",
            priority: None,
            overrides: vec![],
            want: [100, 99, 98],
        },
        Case {
            what: "explicit base",
            priority: Some(150),
            overrides: vec![],
            want: [150, 149, 148],
        },
        Case {
            what: "owner priority only on the first node",
            priority: Some(255),
            overrides: vec![],
            want: [255, 254, 253],
        },
        Case {
            what: "never below 1",
            priority: Some(2),
            overrides: vec![],
            want: [2, 1, 1],
        },
        Case {
            what: "override wins, others keep the sequence",
            priority: None,
            overrides: vec![ov("n2", 200)],
            want: [100, 200, 99],
        },
        Case {
            what: "override on the first node",
            priority: Some(50),
            overrides: vec![ov("n1", 10)],
            want: [10, 50, 49],
        },
        Case {
            what: "override for a node that is not eligible is ignored",
            priority: None,
            overrides: vec![ov("elsewhere", 7)],
            want: [100, 99, 98],
        },
    ];
    for c in cases {
        let v = vip(
            "ns",
            "v",
            0,
            VirtualIPSpec {
                priority: c.priority,
                nodes: c.overrides.clone(),
                ..spec("192.0.2.100/24")
            },
        );
        let p = plan(&world(vec![v], three_nodes()));
        let got = ["n1", "n2", "n3"].map(|n| inst(&p, n, "ns/v").unwrap().priority);
        assert_eq!(got, c.want, "{}", c.what);
        let base: Vec<Option<u8>> = p.virtual_ips[&key("ns", "v")]
            .status
            .nodes
            .iter()
            .map(|n| n.base_priority)
            .collect();
        assert_eq!(
            base,
            c.want.map(Some).to_vec(),
            "{} (status basePriority)",
            c.what
        );
    }
}

#[test]
fn master_state_only_where_the_user_set_it() {
    let v = vip(
        "ns",
        "v",
        0,
        VirtualIPSpec {
            nodes: vec![NodeOverride {
                name: "n2".into(),
                state: Some(InitialState::Master),
                interface: Some("eth1".into()),
                priority: None,
                source_address: None,
            }],
            ..spec("192.0.2.100/24")
        },
    );
    let p = plan(&world(vec![v], three_nodes()));
    assert_eq!(
        inst(&p, "n1", "ns/v").unwrap().initial_state,
        InitialState::Backup
    );
    assert_eq!(
        inst(&p, "n2", "ns/v").unwrap().initial_state,
        InitialState::Master
    );
    assert_eq!(
        inst(&p, "n3", "ns/v").unwrap().initial_state,
        InitialState::Backup
    );
    // Interface: override, else spec, else left to the agent.
    assert_eq!(
        inst(&p, "n2", "ns/v").unwrap().interface.as_deref(),
        Some("eth1")
    );
    assert_eq!(inst(&p, "n1", "ns/v").unwrap().interface, None);
}

#[test]
fn spec_interface_is_used_when_no_override() {
    let v = vip(
        "ns",
        "v",
        0,
        VirtualIPSpec {
            interface: Some("bond0".into()),
            ..spec("192.0.2.100/24")
        },
    );
    let p = plan(&world(vec![v], three_nodes()));
    assert!(
        ["n1", "n2", "n3"]
            .iter()
            .all(|n| inst(&p, n, "ns/v").unwrap().interface.as_deref() == Some("bond0"))
    );
}

#[test]
fn unicast_peers_table() {
    struct Case {
        what: &'static str,
        addr: &'static str,
        peers: Vec<String>,
        nodes: Vec<Arc<k8s_openapi::api::core::v1::Node>>,
        want_n1: Vec<&'static str>,
    }
    let cases = [
        Case {
            what: "IPv4: other nodes' v4 InternalIPs",
            addr: "192.0.2.100/24",
            peers: vec![],
            nodes: three_nodes(),
            want_n1: vec!["192.0.2.2", "192.0.2.3"],
        },
        Case {
            what: "IPv6: other nodes' v6 InternalIPs",
            addr: "2001:db8::100/64",
            peers: vec![],
            nodes: three_nodes(),
            want_n1: vec!["2001:db8::2", "2001:db8::3"],
        },
        Case {
            what: "explicit peers win",
            addr: "192.0.2.100/24",
            peers: vec!["198.51.100.9".into()],
            nodes: three_nodes(),
            want_n1: vec!["198.51.100.9"],
        },
        Case {
            what: "a node that goes away leaves the peer list",
            addr: "192.0.2.100/24",
            peers: vec![],
            nodes: three_nodes()[..2].to_vec(),
            want_n1: vec!["192.0.2.2"],
        },
        Case {
            what: "a NotReady node stays in the peer list",
            addr: "192.0.2.100/24",
            peers: vec![],
            nodes: vec![
                three_nodes()[0].clone(),
                three_nodes()[1].clone(),
                not_ready("n3", &["192.0.2.3"]),
            ],
            want_n1: vec!["192.0.2.2", "192.0.2.3"],
        },
        Case {
            what: "one explicit list for the whole cluster: each node leaves out its own address",
            addr: "192.0.2.100/24",
            peers: vec!["192.0.2.1".into(), "192.0.2.2".into(), "192.0.2.3".into()],
            nodes: three_nodes(),
            want_n1: vec!["192.0.2.2", "192.0.2.3"],
        },
        Case {
            what: "an ExternalIP of the node is its own too",
            addr: "198.51.100.100/24",
            peers: vec!["198.51.100.1".into(), "198.51.100.2".into()],
            nodes: vec![
                {
                    let mut n = node_obj("n1", &[], &["192.0.2.1"], true);
                    if let Some(a) = n.status.as_mut().and_then(|s| s.addresses.as_mut()) {
                        a.push(k8s_openapi::api::core::v1::NodeAddress {
                            type_: "ExternalIP".into(),
                            address: "198.51.100.1".into(),
                        });
                    }
                    Arc::new(n)
                },
                node("n2", &[], &["192.0.2.2"]),
            ],
            want_n1: vec!["198.51.100.2"],
        },
        Case {
            what: "a node that joins is added",
            addr: "192.0.2.100/24",
            peers: vec![],
            nodes: [three_nodes(), vec![node("n4", &[], &["192.0.2.4"])]].concat(),
            want_n1: vec!["192.0.2.2", "192.0.2.3", "192.0.2.4"],
        },
    ];
    for c in cases {
        let v = vip(
            "ns",
            "v",
            0,
            VirtualIPSpec {
                unicast: Some(Unicast {
                    enabled: true,
                    peers: c.peers.clone(),
                    ..Default::default()
                }),
                ..spec(c.addr)
            },
        );
        let p = plan(&world(vec![v], c.nodes));
        assert_eq!(
            inst(&p, "n1", "ns/v").unwrap().unicast_peers,
            c.want_n1,
            "{}",
            c.what
        );
    }
    // Per-node advert sources: each node sends from its own and is reached at it.
    let v = vip(
        "ns",
        "v",
        0,
        VirtualIPSpec {
            unicast: Some(Unicast {
                enabled: true,
                ttl: Some(32),
                ..Default::default()
            }),
            nodes: ["n1", "n2"]
                .iter()
                .enumerate()
                .map(|(i, n)| NodeOverride {
                    name: n.to_string(),
                    source_address: Some(format!("198.51.100.{}", i + 1)),
                    ..Default::default()
                })
                .collect(),
            ..spec("198.51.100.100/24")
        },
    );
    let p = plan(&world(vec![v], three_nodes()));
    let (n1, n2, n3) = (
        inst(&p, "n1", "ns/v").unwrap(),
        inst(&p, "n2", "ns/v").unwrap(),
        inst(&p, "n3", "ns/v").unwrap(),
    );
    assert_eq!(n1.unicast_source.as_deref(), Some("198.51.100.1"));
    // n3 has no override: it is reached at its InternalIP.
    assert_eq!(n1.unicast_peers, vec!["192.0.2.3", "198.51.100.2"]);
    assert_eq!(n2.unicast_source.as_deref(), Some("198.51.100.2"));
    assert_eq!(n2.unicast_peers, vec!["192.0.2.3", "198.51.100.1"]);
    assert_eq!(n3.unicast_source, None);
    assert_eq!(n3.unicast_peers, vec!["198.51.100.1", "198.51.100.2"]);
    assert_eq!((n1.unicast_ttl, n3.unicast_ttl), (Some(32), Some(32)));

    // Multicast: no peers.
    let p = plan(&world(
        vec![vip("ns", "v", 0, spec("192.0.2.100/24"))],
        three_nodes(),
    ));
    assert!(inst(&p, "n1", "ns/v").unwrap().unicast_peers.is_empty());
}

#[test]
fn node_churn_adds_and_removes_instances_and_leaves_others_alone() {
    let vips = vec![vip("ns", "v", 0, spec("192.0.2.100/24"))];
    let before = plan(&world(vips.clone(), three_nodes()));
    assert_eq!(names_on(&before, "n3"), vec!["ns/v"]);

    // n3 becomes NotReady: nothing changes anywhere (VRRP handles a dead node on the wire; a
    // kubelet that lost the API must not move a VIP). Status says NodeNotReady.
    let mut nodes = three_nodes();
    nodes[2] = not_ready("n3", &["192.0.2.3"]);
    let after = plan(&world(vips.clone(), nodes));
    assert_eq!(after.nodes, before.nodes);
    let n3 = &after.virtual_ips[&key("ns", "v")].status.nodes[2];
    assert_eq!(
        (n3.node.as_str(), n3.reason.as_deref()),
        ("n3", Some("NodeNotReady"))
    );

    // n3 is deleted from the cluster: no plan for it (the VRRPNode is garbage-collected).
    let after = plan(&world(vips.clone(), three_nodes()[..2].to_vec()));
    assert!(!after.nodes.contains_key("n3"));

    // n3 being deleted: planned empty.
    let mut nodes = three_nodes();
    nodes[2] = deleting_node("n3", &["192.0.2.3"]);
    assert!(
        plan(&world(vips.clone(), nodes)).nodes["n3"]
            .spec
            .instances
            .is_empty()
    );

    // A node joining at the end of the name order gets the next priority; the others keep
    // theirs and only learn the newcomer's rank (peerPriorities).
    let joined = plan(&world(
        vips,
        [three_nodes(), vec![node("n4", &[], &["192.0.2.4"])]].concat(),
    ));
    assert_eq!(inst(&joined, "n4", "ns/v").unwrap().priority, 97);
    for n in ["n1", "n2", "n3"] {
        let (mut a, mut b) = (
            inst(&joined, n, "ns/v").unwrap().clone(),
            inst(&before, n, "ns/v").unwrap().clone(),
        );
        assert!(a.peer_priorities.as_ref().unwrap().contains(&97), "{n}");
        a.peer_priorities = None;
        b.peer_priorities = None;
        assert_eq!(a, b, "{n}");
    }
}

#[test]
fn selector_change_moves_the_instance() {
    let mk = |pool: &str| {
        vip(
            "ns",
            "v",
            0,
            VirtualIPSpec {
                node_selector: Some(selector(&[("pool", pool)])),
                ..spec("192.0.2.100/24")
            },
        )
    };
    let a = plan(&world(vec![mk("a")], three_nodes()));
    assert_eq!(
        (
            names_on(&a, "n1").len(),
            names_on(&a, "n2").len(),
            names_on(&a, "n3").len()
        ),
        (1, 1, 0)
    );
    let b = plan(&world(vec![mk("b")], three_nodes()));
    assert_eq!(
        (
            names_on(&b, "n1").len(),
            names_on(&b, "n2").len(),
            names_on(&b, "n3").len()
        ),
        (0, 0, 1)
    );
    // n3 is now first in its own sequence: it gets the base priority.
    assert_eq!(inst(&b, "n3", "ns/v").unwrap().priority, 100);
}

/// `spec` with `interface` set.
fn on(interface: &str, spec: VirtualIPSpec) -> VirtualIPSpec {
    VirtualIPSpec {
        interface: Some(interface.into()),
        ..spec
    }
}

/// Issue 19: two VirtualIPs on eth0 with different subnets both got VRID 1 and the second
/// FAULTed on every node with no VRIDConflict shown. VRIDs are per (interface, family).
#[test]
fn vrids_are_unique_per_interface_and_family_not_per_subnet() {
    let vips = vec![
        vip(
            "ns",
            "a",
            0,
            VirtualIPSpec {
                virtual_router_id: Some(1),
                ..on("eth0", spec("192.0.2.10/24"))
            },
        ),
        vip("ns", "b", 1, on("eth0", spec("198.51.100.10/24"))),
        vip("ns", "c", 2, on("eth1", spec("192.0.2.20/24"))),
        vip("ns", "d", 3, on("eth0", spec("2001:db8::10/64"))),
        vip(
            "ns",
            "e",
            4,
            VirtualIPSpec {
                virtual_router_id: Some(1),
                ..on("eth0", spec("203.0.113.10/24"))
            },
        ),
    ];
    let p = plan(&world(vips, three_nodes()));
    let vrid = |n: &str| p.virtual_ips[&key("ns", n)].status.virtual_router_id;
    assert_eq!(
        ["a", "b", "c", "d"].map(vrid),
        [Some(1), Some(2), Some(1), Some(1)],
        "eth0 IPv4 a/b differ; eth1 and IPv6 are other spaces"
    );
    // e also asks for VRID 1 on eth0, held by the older a: the clash is shown on both, naming
    // eth0.
    assert!(inst(&p, "n1", "ns/e").is_none(), "e is not deployed");
    let lost = cond(&p, "ns", "e", "VRIDConflict");
    assert_eq!(lost.status, "True");
    assert!(
        lost.message.contains("interface eth0 (IPv4)") && lost.message.contains("ns/a"),
        "{}",
        lost.message
    );
    let won = cond(&p, "ns", "a", "VRIDConflict");
    assert_eq!(won.status, "True");
    assert!(won.message.contains("ns/e"), "{}", won.message);
    assert_eq!(cond(&p, "ns", "b", "VRIDConflict").status, "False");
}

#[test]
fn vrid_allocation_is_lowest_free_and_stable() {
    let mut w = world(
        vec![
            vip("ns", "first", 0, on("eth0", spec("192.0.2.10/24"))),
            vip("ns", "second", 1, on("eth0", spec("192.0.2.20/24"))),
            vip("ns", "other-net", 2, on("eth1", spec("198.51.100.10/24"))),
            vip(
                "ns",
                "explicit",
                3,
                VirtualIPSpec {
                    virtual_router_id: Some(1),
                    ..on("eth1", spec("198.51.100.20/24"))
                },
            ),
        ],
        three_nodes(),
    );
    let p = plan(&w);
    let vrid = |p: &Plan, n: &str| p.virtual_ips[&key("ns", n)].status.virtual_router_id;
    assert_eq!(vrid(&p, "first"), Some(1));
    assert_eq!(vrid(&p, "second"), Some(2));
    // The explicit VRID 1 on eth1 is served before allocations, so other-net gets 2.
    assert_eq!(vrid(&p, "other-net"), Some(2));
    assert_eq!(vrid(&p, "explicit"), Some(1));
    assert_eq!(inst(&p, "n1", "ns/second").unwrap().virtual_router_id, 2);

    // Record, then delete "first": "second" keeps 2, a new VirtualIP takes the freed 1.
    write_back(&mut w, &p);
    w.virtual_ips
        .retain(|v| v.metadata.name.as_deref() != Some("first"));
    w.virtual_ips.push(Arc::new(vip(
        "ns",
        "third",
        10,
        on("eth0", spec("192.0.2.30/24")),
    )));
    let p2 = plan(&w);
    assert_eq!(vrid(&p2, "second"), Some(2));
    assert_eq!(vrid(&p2, "third"), Some(1));
    // Planning again with the recorded state changes nothing.
    write_back(&mut w, &p2);
    let p3 = plan(&w);
    assert_eq!(p3.nodes, p2.nodes);
    assert_eq!(vrid(&p3, "third"), Some(1));
}

#[test]
fn vrid_conflict_older_wins_both_flagged() {
    let vips = vec![
        vip(
            "ns",
            "older",
            0,
            VirtualIPSpec {
                virtual_router_id: Some(42),
                ..on("eth0", spec("192.0.2.10/24"))
            },
        ),
        vip(
            "other",
            "newer",
            5,
            VirtualIPSpec {
                virtual_router_id: Some(42),
                ..on("eth0", spec("192.0.2.20/24"))
            },
        ),
        vip(
            "ns",
            "bystander",
            7,
            VirtualIPSpec {
                virtual_router_id: Some(42),
                ..on("eth1", spec("198.51.100.1/24"))
            },
        ),
    ];
    let p = plan(&world(vips, three_nodes()));
    assert!(inst(&p, "n1", "ns/older").is_some());
    assert!(
        p.nodes
            .values()
            .all(|n| n.spec.instances.iter().all(|i| i.name != "other/newer"))
    );
    assert!(inst(&p, "n1", "ns/bystander").is_some());

    assert_eq!(cond(&p, "ns", "older", "VRIDConflict").status, "True");
    assert!(
        cond(&p, "ns", "older", "VRIDConflict")
            .message
            .contains("other/newer")
    );
    assert_eq!(cond(&p, "other", "newer", "VRIDConflict").status, "True");
    assert!(
        cond(&p, "other", "newer", "VRIDConflict")
            .message
            .contains("ns/older")
    );
    assert_eq!(cond(&p, "ns", "bystander", "VRIDConflict").status, "False");
    assert_eq!(phase(&p, "other", "newer"), Phase::Conflict);
    assert_eq!(cond(&p, "other", "newer", "Ready").reason, "VRIDConflict");
    assert_ne!(phase(&p, "ns", "older"), Phase::Conflict);
    assert_eq!(event_reasons(&p, "ns", "older"), vec!["VRIDConflict"]);
    assert_eq!(event_reasons(&p, "other", "newer"), vec!["VRIDConflict"]);
}

#[test]
fn vrid_exhaustion_is_a_conflict() {
    let mut vips: Vec<_> = (1..=255u8)
        .map(|i| {
            vip(
                "ns",
                &format!("v{i:03}"),
                i64::from(i),
                VirtualIPSpec {
                    virtual_router_id: Some(i),
                    ..spec("192.0.2.10/24")
                },
            )
        })
        .collect();
    vips.push(vip("ns", "late", 1000, spec("192.0.2.99/24")));
    let p = plan(&world(vips, three_nodes()[..1].to_vec()));
    assert_eq!(phase(&p, "ns", "late"), Phase::Conflict);
    assert_eq!(cond(&p, "ns", "late", "VRIDConflict").reason, "NoFreeVRID");
    assert_eq!(p.nodes["n1"].spec.instances.len(), 255);
}

fn auth_spec(secret_name: &str, key: Option<&str>) -> VirtualIPSpec {
    VirtualIPSpec {
        version: Some(2),
        authentication: Some(Authentication {
            auth_type: AuthType::Pass,
            password_secret_ref: SecretKeyRef {
                name: secret_name.into(),
                key: key.map(String::from),
            },
        }),
        ..spec("192.0.2.10/24")
    }
}

#[test]
fn secrets_table() {
    struct Case {
        what: &'static str,
        secrets: Vec<Arc<k8s_openapi::api::core::v1::Secret>>,
        key: Option<&'static str>,
        want: Result<&'static str, &'static str>,
    }
    let cases = [
        Case {
            what: "present",
            secrets: vec![secret("ns", "s", &[("password", "hunter2")])],
            key: None,
            want: Ok("hunter2"),
        },
        Case {
            what: "custom key",
            secrets: vec![secret("ns", "s", &[("pw", "abc")])],
            key: Some("pw"),
            want: Ok("abc"),
        },
        Case {
            what: "missing Secret",
            secrets: vec![],
            key: None,
            want: Err("SecretNotFound"),
        },
        Case {
            what: "Secret in another namespace",
            secrets: vec![secret("elsewhere", "s", &[("password", "x")])],
            key: None,
            want: Err("SecretNotFound"),
        },
        Case {
            what: "missing key",
            secrets: vec![secret("ns", "s", &[("other", "x")])],
            key: None,
            want: Err("SecretKeyNotFound"),
        },
        Case {
            what: "too long",
            secrets: vec![secret("ns", "s", &[("password", "123456789")])],
            key: None,
            want: Err("InvalidPassword"),
        },
        Case {
            what: "empty",
            secrets: vec![secret("ns", "s", &[("password", "")])],
            key: None,
            want: Err("InvalidPassword"),
        },
    ];
    // On another interface: its VRID space is its own.
    let bystander = vip("ns", "plain", 1, on("eth1", spec("198.51.100.10/24")));
    let baseline = plan(&world(vec![bystander.clone()], three_nodes()));
    for c in cases {
        let mut w = world(
            vec![
                vip("ns", "auth", 0, on("eth0", auth_spec("s", c.key))),
                bystander.clone(),
            ],
            three_nodes(),
        );
        w.secrets = c.secrets;
        let p = plan(&w);
        match c.want {
            Ok(pw) => {
                // The VRRPNode instance carries the key only; the password is in the node's
                // auth Secret data under that key.
                let i = inst(&p, "n1", "ns/auth").unwrap();
                assert_eq!(i.auth_pass, None, "{}", c.what);
                assert_eq!(i.auth_key.as_deref(), Some("ns.auth"), "{}", c.what);
                assert_eq!(
                    p.nodes["n1"].auth.get("ns.auth").map(|p| p.as_str()),
                    Some(pw),
                    "{}",
                    c.what
                );
                assert_ne!(phase(&p, "ns", "auth"), Phase::Conflict, "{}", c.what);
            }
            Err(reason) => {
                assert!(
                    inst(&p, "n1", "ns/auth").is_none(),
                    "{}: not deployed",
                    c.what
                );
                let r = cond(&p, "ns", "auth", "Ready");
                assert_eq!(
                    (r.status.as_str(), r.reason.as_str()),
                    ("False", reason),
                    "{}",
                    c.what
                );
                assert!(
                    r.message.contains("passwordSecretRef"),
                    "{}: {}",
                    c.what,
                    r.message
                );
                assert_eq!(phase(&p, "ns", "auth"), Phase::Conflict, "{}", c.what);
                // A Warning Event says so, once (values.yaml promises it).
                assert_eq!(event_reasons(&p, "ns", "auth"), vec![reason], "{}", c.what);
                assert_eq!(
                    p.virtual_ips[&key("ns", "auth")].events[0].type_,
                    EventType::Warning
                );
                let mut again = w.clone();
                write_back(&mut again, &p);
                assert!(
                    plan(&again).virtual_ips[&key("ns", "auth")]
                        .events
                        .is_empty(),
                    "{}: not again once the status says it",
                    c.what
                );
                // Nothing else is disturbed: the other VirtualIP's instances are unchanged.
                for n in ["n1", "n2", "n3"] {
                    assert_eq!(p.nodes[n], baseline.nodes[n], "{}: node {n}", c.what);
                }
                // Its VRID stays reserved.
                assert_eq!(
                    p.virtual_ips[&key("ns", "auth")].status.virtual_router_id,
                    Some(1),
                    "{}",
                    c.what
                );
            }
        }
    }
}

/// Passwords go to each node's auth Secret data, never into its VRRPNode: table over which
/// nodes carry which keys, and the serialised VRRPNode spec never holds a password.
#[test]
fn passwords_go_to_the_node_secret_table() {
    struct Case {
        what: &'static str,
        vips: Vec<crds::VirtualIP>,
        secrets: Vec<Arc<k8s_openapi::api::core::v1::Secret>>,
        /// Per node: the auth Secret data as (key, password).
        want: [(&'static str, Vec<(&'static str, &'static str)>); 3],
    }
    let on_pool_a = |name: &str, secret: &str| {
        let mut s = auth_spec(secret, None);
        s.node_selector = Some(selector(&[("pool", "a")]));
        s.addresses = vec![format!("192.0.2.{}/24", 20 + name.len())];
        vip("team", name, 0, s)
    };
    let cases = [
        Case {
            what: "no authentication: no Secret data anywhere",
            vips: vec![vip("team", "plain", 0, spec("192.0.2.10/24"))],
            secrets: vec![],
            want: [("n1", vec![]), ("n2", vec![]), ("n3", vec![])],
        },
        Case {
            what: "one VirtualIP on every node",
            vips: vec![vip("team", "web", 0, auth_spec("s", None))],
            secrets: vec![secret("team", "s", &[("password", "pw-web")])],
            want: [
                ("n1", vec![("team.web", "pw-web")]),
                ("n2", vec![("team.web", "pw-web")]),
                ("n3", vec![("team.web", "pw-web")]),
            ],
        },
        Case {
            what: "two VirtualIPs, one only on pool a, their own Secrets",
            vips: vec![
                vip("team", "web", 0, auth_spec("s", None)),
                on_pool_a("db", "t"),
            ],
            secrets: vec![
                secret("team", "s", &[("password", "pw-web")]),
                secret("team", "t", &[("password", "pw-db")]),
            ],
            want: [
                ("n1", vec![("team.db", "pw-db"), ("team.web", "pw-web")]),
                ("n2", vec![("team.db", "pw-db"), ("team.web", "pw-web")]),
                ("n3", vec![("team.web", "pw-web")]),
            ],
        },
        Case {
            what: "a VirtualIP whose Secret is missing puts nothing anywhere",
            vips: vec![vip("team", "web", 0, auth_spec("gone", None))],
            secrets: vec![],
            want: [("n1", vec![]), ("n2", vec![]), ("n3", vec![])],
        },
    ];
    for c in cases {
        let mut w = world(c.vips, three_nodes());
        w.secrets = c.secrets.clone();
        let p = plan(&w);
        for (node, want) in &c.want {
            let np = &p.nodes[*node];
            let got: Vec<(&str, &str)> = np
                .auth
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            assert_eq!(&got, want, "{}: node {node}", c.what);
            let keys: Vec<&str> = np
                .spec
                .instances
                .iter()
                .filter_map(|i| i.auth_key.as_deref())
                .collect();
            assert_eq!(
                keys,
                want.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
                "{}: node {node}: every key in the Secret is an instance's authKey",
                c.what
            );
            assert!(np.spec.instances.iter().all(|i| i.auth_pass.is_none()));
            let json = serde_json::to_string(&np.spec).unwrap();
            let debug = format!("{np:?}");
            for s in &c.secrets {
                for v in s.data.iter().flat_map(|d| d.values()) {
                    let pw = std::str::from_utf8(&v.0).unwrap();
                    assert!(!json.contains(pw), "{}: {json}", c.what);
                    assert!(!debug.contains(pw), "{}: {debug}", c.what);
                }
            }
            assert_eq!(np.spec.config_hash, config_hash(&np.spec.instances));
        }
        // Deterministic: the same world gives the same plan (the executor writes only what
        // differs).
        assert_eq!(plan(&w), p, "{}", c.what);
    }
    // A password change changes the Secret data only, not the VRRPNode.
    let vips = vec![vip("team", "web", 0, auth_spec("s", None))];
    let mut w = world(vips, three_nodes());
    w.secrets = vec![secret("team", "s", &[("password", "old")])];
    let before = plan(&w);
    w.secrets = vec![secret("team", "s", &[("password", "new")])];
    let after = plan(&w);
    assert_eq!(after.nodes["n1"].spec, before.nodes["n1"].spec);
    assert_eq!(after.nodes["n1"].auth["team.web"].as_str(), "new");
}

#[test]
fn invalid_spec_is_reported_once() {
    let mut w = world(
        vec![
            vip(
                "ns",
                "bad",
                0,
                VirtualIPSpec {
                    version: Some(2),
                    ..spec("2001:db8::1/64")
                },
            ),
            vip("ns", "good", 1, spec("192.0.2.10/24")),
        ],
        three_nodes(),
    );
    let p = plan(&w);
    assert_eq!(phase(&p, "ns", "bad"), Phase::Conflict);
    let r = cond(&p, "ns", "bad", "Ready");
    assert_eq!(r.reason, "InvalidSpec");
    assert!(r.message.contains("spec.addresses[0]"), "{}", r.message);
    assert_eq!(event_reasons(&p, "ns", "bad"), vec!["InvalidSpec"]);
    assert_eq!(
        p.virtual_ips[&key("ns", "bad")].events[0].type_,
        EventType::Warning
    );
    assert!(inst(&p, "n1", "ns/good").is_some());
    assert!(inst(&p, "n1", "ns/bad").is_none());
    // Once the status is written, the same problem does not fire again.
    write_back(&mut w, &p);
    assert!(plan(&w).virtual_ips[&key("ns", "bad")].events.is_empty());
}

fn with_reports(vips: Vec<crds::VirtualIP>, reports: Vec<Arc<crds::VRRPNode>>) -> World {
    let mut w = world(vips, three_nodes());
    w.vrrp_nodes = reports;
    w
}

#[test]
fn status_aggregation_table() {
    struct Case {
        what: &'static str,
        reports: Vec<Arc<crds::VRRPNode>>,
        phase: Phase,
        master: Option<&'static str>,
        summary: &'static str,
        ready: (&'static str, &'static str),
        split: &'static str,
        degraded: &'static str,
        events: Vec<&'static str>,
    }
    let cases = [
        Case {
            what: "no reports yet",
            reports: vec![],
            phase: Phase::Pending,
            master: None,
            summary: "0M/0B/0F",
            ready: ("False", "Pending"),
            split: "False",
            degraded: "False",
            events: vec![],
        },
        Case {
            what: "only INIT reports count as pending",
            reports: vec![report("n1", &[("ns/v", Init, 100)])],
            phase: Phase::Pending,
            master: None,
            summary: "0M/0B/0F",
            ready: ("False", "Pending"),
            split: "False",
            degraded: "False",
            events: vec![],
        },
        Case {
            what: "one master",
            reports: vec![
                report("n1", &[("ns/v", Master, 100)]),
                report("n2", &[("ns/v", Backup, 99)]),
                report("n3", &[("ns/v", Backup, 98)]),
            ],
            phase: Phase::Active,
            master: Some("n1"),
            summary: "1M/2B/0F",
            ready: ("True", "MasterElected"),
            split: "False",
            degraded: "False",
            events: vec!["MasterElected"],
        },
        Case {
            what: "no master",
            reports: vec![
                report("n1", &[("ns/v", Backup, 100)]),
                report("n2", &[("ns/v", Backup, 99)]),
            ],
            phase: Phase::NoMaster,
            master: None,
            summary: "0M/2B/0F",
            ready: ("False", "NoMaster"),
            split: "False",
            degraded: "False",
            events: vec![],
        },
        Case {
            what: "split brain",
            reports: vec![
                report("n1", &[("ns/v", Master, 100)]),
                report("n2", &[("ns/v", Master, 99)]),
                report("n3", &[("ns/v", Backup, 98)]),
            ],
            phase: Phase::SplitBrain,
            master: None,
            summary: "2M/1B/0F",
            ready: ("False", "SplitBrain"),
            split: "True",
            degraded: "False",
            events: vec!["SplitBrain"],
        },
        Case {
            what: "fault",
            reports: vec![
                report("n1", &[("ns/v", Fault, 0)]),
                report("n2", &[("ns/v", Master, 99)]),
                report("n3", &[("ns/v", Backup, 98)]),
            ],
            phase: Phase::Active,
            master: Some("n2"),
            summary: "1M/1B/1F",
            ready: ("True", "MasterElected"),
            split: "False",
            degraded: "True",
            events: vec!["MasterElected"],
        },
        Case {
            what: "reports of other instances are ignored",
            reports: vec![report("n1", &[("ns/other", Master, 100)])],
            phase: Phase::Pending,
            master: None,
            summary: "0M/0B/0F",
            ready: ("False", "Pending"),
            split: "False",
            degraded: "False",
            events: vec![],
        },
    ];
    for c in cases {
        let p = plan_settled(&with_reports(
            vec![vip("ns", "v", 0, spec("192.0.2.10/24"))],
            c.reports,
        ));
        let s = &p.virtual_ips[&key("ns", "v")].status;
        assert_eq!(s.phase, Some(c.phase), "{}", c.what);
        assert_eq!(s.master.as_deref(), c.master, "{}", c.what);
        assert_eq!(s.nodes_summary.as_deref(), Some(c.summary), "{}", c.what);
        let r = cond(&p, "ns", "v", "Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_str()),
            c.ready,
            "{}",
            c.what
        );
        assert_eq!(
            cond(&p, "ns", "v", "SplitBrain").status,
            c.split,
            "{}",
            c.what
        );
        assert_eq!(
            cond(&p, "ns", "v", "Degraded").status,
            c.degraded,
            "{}",
            c.what
        );
        assert_eq!(event_reasons(&p, "ns", "v"), c.events, "{}", c.what);
        assert_eq!(s.observed_generation, Some(1), "{}", c.what);
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(1))
        );
        let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            ["Degraded", "Ready", "SplitBrain", "VRIDConflict"],
            "{}",
            c.what
        );
    }
}

#[test]
fn node_status_entries_merge_plan_and_reports() {
    let p = plan(&with_reports(
        vec![vip("ns", "v", 0, spec("192.0.2.10/24"))],
        vec![
            report("n1", &[("ns/v", Master, 110)]),
            report("n3", &[("ns/v", Fault, 0)]),
            // A report from a node the instance is not planned on does not count.
            report("gone", &[("ns/v", Master, 50)]),
        ],
    ));
    let s = &p.virtual_ips[&key("ns", "v")].status;
    let nodes: Vec<(&str, Option<_>, Option<u8>, Option<u8>)> = s
        .nodes
        .iter()
        .map(|n| {
            (
                n.node.as_str(),
                n.state,
                n.effective_priority,
                n.base_priority,
            )
        })
        .collect();
    assert_eq!(
        nodes,
        vec![
            ("n1", Some(Master), Some(110), Some(100)),
            ("n2", None, None, Some(99)),
            ("n3", Some(Fault), Some(0), Some(98)),
        ]
    );
    assert_eq!(s.master_address.as_deref(), Some("addr-of-n1"));
    assert_eq!(s.phase, Some(Phase::Active));
    assert_eq!(
        s.nodes[2].fault_reason.as_deref(),
        Some("interface eth9 is down")
    );
    assert!(
        cond(&p, "ns", "v", "Degraded")
            .message
            .contains("n3: interface eth9 is down")
    );
    assert_eq!(
        p.virtual_ips[&key("ns", "v")].reported_on,
        vec!["gone", "n1", "n3"]
    );
}

#[test]
fn transitions_fire_events_once() {
    let vips = vec![vip("ns", "v", 0, spec("192.0.2.10/24"))];
    let mut w = with_reports(
        vips,
        vec![
            report("n1", &[("ns/v", Master, 100)]),
            report("n2", &[("ns/v", Backup, 99)]),
        ],
    );
    let p = plan(&w);
    assert_eq!(event_reasons(&p, "ns", "v"), vec!["MasterElected"]);
    write_back(&mut w, &p);
    // Steady state: the same status, no event, identical conditions (time kept).
    w.now = ts(T0 + 5000);
    let steady = plan(&w);
    assert!(steady.virtual_ips[&key("ns", "v")].events.is_empty());
    assert_eq!(
        steady.virtual_ips[&key("ns", "v")].status,
        p.virtual_ips[&key("ns", "v")].status
    );

    // Failover n1 → n2.
    w.vrrp_nodes = vec![
        report("n1", &[("ns/v", Backup, 100)]),
        report("n2", &[("ns/v", Master, 99)]),
    ];
    let f = plan(&w);
    let ev = &f.virtual_ips[&key("ns", "v")].events;
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (ev[0].reason, ev[0].note.as_str()),
        ("Failover", "master moved n1 → n2")
    );
    // Ready stayed True, so its transition time is the old one.
    let r = cond(&f, "ns", "v", "Ready");
    assert_eq!(r.last_transition_time, Time(ts(T0 + 1000)));
    assert_eq!(r.message, "node n2 is MASTER");

    // Split brain, then back to one master.
    write_back(&mut w, &f);
    w.vrrp_nodes = vec![
        report("n1", &[("ns/v", Master, 100)]),
        report("n2", &[("ns/v", Master, 99)]),
    ];
    // Just seen: could be a handover in progress; shown as the master VRRP elects.
    let converging = plan(&w);
    let cv = &converging.virtual_ips[&key("ns", "v")];
    assert_eq!(cv.status.phase, Some(Phase::Active));
    assert_eq!(cv.status.master.as_deref(), Some("n1"));
    assert_eq!(cv.recheck_after, Some(std::time::Duration::from_secs(3)));
    // Still both MASTER after the settle time: split brain.
    let sb = plan_settled(&w);
    assert_eq!(event_reasons(&sb, "ns", "v"), vec!["SplitBrain"]);
    assert_eq!(
        cond(&sb, "ns", "v", "SplitBrain").last_transition_time,
        Time(ts(T0 + 5000))
    );
    write_back(&mut w, &sb);
    assert!(
        plan_settled(&w).virtual_ips[&key("ns", "v")]
            .events
            .is_empty(),
        "split brain reported once"
    );
    w.vrrp_nodes = vec![
        report("n1", &[("ns/v", Backup, 100)]),
        report("n2", &[("ns/v", Master, 99)]),
    ];
    assert_eq!(event_reasons(&plan(&w), "ns", "v"), vec!["MasterElected"]);
}

#[test]
fn deleting_virtual_ip_is_withdrawn_but_keeps_its_vrid() {
    let mut doomed = vip("ns", "doomed", 0, spec("192.0.2.10/24"));
    doomed.metadata.deletion_timestamp = Some(Time(ts(T0 + 900)));
    doomed.status = Some(crds::VirtualIPStatus {
        virtual_router_id: Some(1),
        ..Default::default()
    });
    let w = with_reports(
        vec![doomed, vip("ns", "new", 5, spec("192.0.2.20/24"))],
        vec![report("n2", &[("ns/doomed", Master, 99)])],
    );
    let p = plan(&w);
    let d = &p.virtual_ips[&key("ns", "doomed")];
    assert!(d.deleting);
    assert!(d.deployed_to.is_empty());
    assert_eq!(d.reported_on, vec!["n2"]);
    assert!(d.events.is_empty());
    assert!(
        p.nodes
            .values()
            .all(|n| n.spec.instances.iter().all(|i| i.name != "ns/doomed"))
    );
    assert_eq!(
        p.virtual_ips[&key("ns", "new")].status.virtual_router_id,
        Some(2)
    );
}

#[test]
fn output_is_deterministic_and_hashed() {
    let vips = vec![
        vip("b", "x", 3, spec("192.0.2.10/24")),
        vip(
            "a",
            "y",
            2,
            VirtualIPSpec {
                unicast: Some(Unicast {
                    enabled: true,
                    ..Default::default()
                }),
                ..spec("192.0.2.11/24")
            },
        ),
        vip("a", "x", 1, spec("2001:db8::5/64")),
    ];
    let w1 = world(vips.clone(), three_nodes());
    let mut rev = vips;
    rev.reverse();
    let mut nodes = three_nodes();
    nodes.reverse();
    let w2 = world(rev, nodes);
    let (p1, p2) = (plan(&w1), plan(&w2));
    assert_eq!(p1, p2);
    for (name, n) in &p1.nodes {
        assert_eq!(
            serde_json::to_string(&n.spec).unwrap(),
            serde_json::to_string(&p2.nodes[name].spec).unwrap()
        );
        let names: Vec<&str> = n.spec.instances.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["a/x", "a/y", "b/x"], "sorted by name on {name}");
        assert_eq!(n.spec.config_hash, config_hash(&n.spec.instances));
        assert_eq!(n.spec.config_hash.len(), 64);
        assert_eq!(n.node_uid.as_deref(), Some(format!("uid-{name}").as_str()));
    }
    // Different instances ⇒ different hash.
    assert_ne!(
        p1.nodes["n1"].spec.config_hash,
        p1.nodes["n2"].spec.config_hash
    );
    assert_eq!(
        config_hash(&[]),
        "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"
    );
    // The instance carries its VirtualIP reference.
    let i = inst(&p1, "n1", "a/y").unwrap();
    assert_eq!(i.virtual_ip, Some(key("a", "y")));
}

/// After an API outage every relisted agent is quiet: a dead master's stale MASTER report and
/// the new master's are not split brain, even long after the settle time; once the new
/// master's renewal is seen (fresh), it is the master.
#[test]
fn quiet_master_claims_are_not_split_brain() {
    use operator::planner::AgentLiveness::{Fresh, Quiet};
    let vips = vec![vip("ns", "v", 0, spec("192.0.2.10/24"))];
    let mut w = with_reports(
        vips,
        vec![
            report("n1", &[("ns/v", Master, 100)]),
            report("n2", &[("ns/v", Master, 99)]),
        ],
    );
    w.agents.insert("n1".into(), Quiet);
    w.agents.insert("n2".into(), Quiet);
    let p = plan_settled(&w);
    let st = &p.virtual_ips[&key("ns", "v")].status;
    assert_eq!(st.phase, Some(Phase::Active), "{st:?}");
    assert_eq!(cond(&p, "ns", "v", "SplitBrain").status, "False");
    // n2 renews: fresh, and its claim contradicts the quiet n1.
    w.agents.insert("n2".into(), Fresh);
    let p = plan_settled(&w);
    let st = &p.virtual_ips[&key("ns", "v")].status;
    assert_eq!(st.phase, Some(Phase::Active), "{st:?}");
    assert_eq!(st.master.as_deref(), Some("n2"));
    // Both fresh and settled: a real split brain.
    w.agents.insert("n1".into(), Fresh);
    assert_eq!(phase(&plan_settled(&w), "ns", "v"), Phase::SplitBrain);
}

fn adopt_vip() -> crds::VirtualIP {
    let mut s = spec("192.0.2.100/24");
    s.virtual_router_id = Some(51);
    let mut v = vip("kube-system", "api", 0, s);
    v.metadata.annotations = Some(
        [(
            crds::virtualip::ADOPT_STATIC_ANNOTATION.to_string(),
            "true".to_string(),
        )]
        .into(),
    );
    v
}

/// `node` reports `state` for kube-system/api with the adoption outcome `phase`.
fn adoption_report(
    node: &str,
    state: crds::vrrpnode::VrrpState,
    phase: crds::vrrpnode::AdoptionPhase,
    message: &str,
) -> Arc<crds::VRRPNode> {
    let mut r = (*report(node, &[("kube-system/api", state, 100)])).clone();
    if let Some(st) = r.status.as_mut() {
        st.instances[0].adoption = Some(crds::vrrpnode::Adoption {
            phase,
            message: Some(message.into()),
        });
    }
    Arc::new(r)
}

#[test]
fn adopt_annotation_marks_the_instances_and_only_then() {
    let nodes = three_nodes();
    let p = plan(&world(vec![adopt_vip()], nodes.clone()));
    for n in ["n1", "n2", "n3"] {
        assert!(inst(&p, n, "kube-system/api").unwrap().adopt_static, "{n}");
    }
    assert!(
        p.virtual_ips[&key("kube-system", "api")]
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == "Adopted"),
        "annotated: the Adopted condition is there"
    );
    let mut plain = adopt_vip();
    plain.metadata.annotations.as_mut().unwrap().insert(
        crds::virtualip::ADOPT_STATIC_ANNOTATION.into(),
        "yes".into(),
    );
    let p = plan(&world(vec![plain], nodes));
    assert!(!inst(&p, "n1", "kube-system/api").unwrap().adopt_static);
    assert!(
        !p.virtual_ips[&key("kube-system", "api")]
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == "Adopted"),
        "only \"true\" counts"
    );
}

#[test]
fn adopted_condition_follows_the_nodes_reports() {
    use crds::vrrpnode::AdoptionPhase::{Adopted, Mismatch, NoStaticInstance, Pending};
    let nodes = three_nodes();
    let mut w = world(vec![adopt_vip()], nodes);
    // Nobody reported yet.
    let c = cond(&plan(&w), "kube-system", "api", "Adopted").clone();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("Unknown", "AdoptionPending")
    );
    // One node still negotiating.
    w.vrrp_nodes = vec![
        adoption_report("n1", Master, Adopted, "took over"),
        adoption_report("n2", Backup, Pending, "asking"),
        adoption_report("n3", Backup, NoStaticInstance, "none"),
    ];
    let c = cond(&plan(&w), "kube-system", "api", "Adopted").clone();
    assert_eq!(c.status, "Unknown");
    assert!(c.message.contains("1 still negotiating"), "{}", c.message);
    // A mismatch anywhere: False, with that node's differing fields.
    w.vrrp_nodes[1] = adoption_report(
        "n2",
        Backup,
        Mismatch,
        "the static instance VI_1 on this node differs in priority, track.http",
    );
    let c = cond(&plan(&w), "kube-system", "api", "Adopted").clone();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "StaticConfigMismatch")
    );
    assert!(
        c.message
            .contains("n2: the static instance VI_1 on this node differs in priority, track.http"),
        "{}",
        c.message
    );
    // Everyone done: True, saying where.
    w.vrrp_nodes[1] = adoption_report("n2", Backup, Adopted, "took over");
    let p = plan(&w);
    let c = cond(&p, "kube-system", "api", "Adopted").clone();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "Adopted"));
    assert_eq!(
        c.message,
        "took over the static instance on n1, n2; no static instance on n3"
    );
    // And the master is the one the agents report, as for any VirtualIP.
    assert_eq!(
        p.virtual_ips[&key("kube-system", "api")]
            .status
            .master
            .as_deref(),
        Some("n1")
    );
}

fn with_script(mut s: VirtualIPSpec, cmd: &str) -> VirtualIPSpec {
    s.track = Some(crds::virtualip::Track {
        scripts: vec![
            serde_json::from_value(serde_json::json!({"name": "chk", "script": cmd})).unwrap(),
        ],
        ..Default::default()
    });
    s
}

#[test]
fn scripts_are_refused_unless_the_policy_allows_them() {
    let tenant = vip(
        "team-a",
        "evil",
        0,
        with_script(spec("192.0.2.100/24"), "/bin/sh -c 'id > /tmp/x'"),
    );
    let plain = vip("team-a", "plain", 1, spec("192.0.2.101/24"));
    let mut notify = spec("192.0.2.102/24");
    notify.notify = Some(crds::virtualip::Notify {
        master: Some("/usr/local/bin/on-master".into()),
        ..Default::default()
    });
    let notify = vip("infra", "notify", 2, notify);
    let vips = vec![tenant, plain, notify];

    // Default policy: nothing with a command is planned anywhere; the plain one is.
    let p = plan(&world(vips.clone(), three_nodes()));
    for n in ["n1", "n2", "n3"] {
        assert_eq!(names_on(&p, n), ["team-a/plain"], "{n}");
    }
    for (ns, name, field) in [
        ("team-a", "evil", "spec.track.scripts[0].script"),
        ("infra", "notify", "spec.notify.master"),
    ] {
        let c = cond(&p, ns, name, "Ready");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "ScriptsNotAllowed")
        );
        assert!(c.message.contains(field), "{}", c.message);
        assert!(c.message.contains("agent.scripts.allowed"), "{}", c.message);
        assert_eq!(phase(&p, ns, name), Phase::Conflict);
        assert_eq!(event_reasons(&p, ns, name), ["ScriptsNotAllowed"]);
        assert!(p.virtual_ips[&key(ns, name)].deployed_to.is_empty());
    }

    // Allowed in namespace infra, for programs under /usr/local/bin/ only.
    let mut w = world(vips.clone(), three_nodes());
    w.script_policy = crds::policy::ScriptPolicy {
        allowed: true,
        namespaces: vec!["infra".into()],
        paths: vec!["/usr/local/bin/".into()],
    };
    let p = plan(&w);
    assert_eq!(names_on(&p, "n1"), ["infra/notify", "team-a/plain"]);
    let c = cond(&p, "team-a", "evil", "Ready");
    assert_eq!(c.reason, "ScriptsNotAllowed");
    assert!(c.message.contains("\"team-a\""), "{}", c.message);

    // Everything allowed: all three run.
    let mut w = world(vips, three_nodes());
    w.script_policy = crds::policy::ScriptPolicy::allow_all();
    let p = plan(&w);
    assert_eq!(
        names_on(&p, "n2"),
        ["infra/notify", "team-a/evil", "team-a/plain"]
    );
}

#[test]
fn an_oversized_node_plan_refuses_the_largest_then_newest_virtual_ips() {
    let limit = crds::validate::limits::MAX_VRRPNODE_SPEC_BYTES;
    let excluded = |tag: u32, n: u32| -> Vec<String> {
        (0..n)
            .map(|j| format!("2001:db8:{tag:x}:{j:x}::1/128"))
            .collect()
    };
    // One big VirtualIP (the oldest), 24 equal ones and one tiny one (the newest).
    let mut vips = Vec::new();
    let mut big = spec("192.0.2.1/24");
    big.excluded_addresses = excluded(0xffff, 1024)
        .into_iter()
        .map(|a| a.replace("::1/128", "::abcd/128"))
        .collect();
    vips.push(vip("t0", "big", 0, big));
    for i in 0..24u32 {
        let mut s = spec(&format!("192.0.2.{}/24", 10 + i));
        s.excluded_addresses = excluded(i, 1000);
        vips.push(vip("t1", &format!("eq{i:02}"), 1 + i64::from(i), s));
    }
    vips.push(vip("t2", "tiny", 100, spec("192.0.2.200/24")));

    let p = plan(&world(vips.clone(), three_nodes()));
    for n in ["n1", "n2", "n3"] {
        let bytes = serde_json::to_vec(&p.nodes[n].spec).unwrap().len();
        assert!(bytes <= limit, "{n}: {bytes} > {limit}");
    }
    let refused: Vec<String> = p
        .virtual_ips
        .iter()
        .filter(|(_, v)| {
            v.status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.reason == "PlanTooLarge")
        })
        .map(|(k, _)| format!("{}/{}", k.namespace, k.name))
        .collect();
    // The big one goes first, then the newest of the equal ones; the tiny one and the older
    // equal ones deploy.
    assert!(refused.contains(&"t0/big".to_string()), "{refused:?}");
    assert!(!refused.contains(&"t2/tiny".to_string()), "{refused:?}");
    let kept = names_on(&p, "n1");
    assert!(kept.contains(&"t2/tiny".to_string()));
    let equal_refused: Vec<&String> = refused.iter().filter(|r| r.starts_with("t1/")).collect();
    assert!(!equal_refused.is_empty(), "{refused:?}");
    let first_refused = 24 - equal_refused.len();
    let expected: Vec<String> = (first_refused..24)
        .map(|i| format!("t1/eq{i:02}"))
        .collect();
    assert_eq!(
        equal_refused.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );
    // Minimal: one more equal VirtualIP would not fit.
    let one_more = serde_json::to_vec(inst(&p, "n1", "t1/eq00").unwrap())
        .unwrap()
        .len();
    let bytes = serde_json::to_vec(&p.nodes["n1"].spec).unwrap().len();
    assert!(bytes + one_more > limit - 200, "{bytes} + {one_more}");
    let c = cond(&p, "t1", &format!("eq{:02}", 23), "Ready");
    assert_eq!(c.status, "False");
    assert!(c.message.contains("VRRPNode would exceed"), "{}", c.message);
    assert_eq!(event_reasons(&p, "t1", "eq23"), ["PlanTooLarge"]);

    // Deterministic: the same world in another order gives the same plan.
    vips.reverse();
    assert_eq!(plan(&world(vips, three_nodes())), p);
}
