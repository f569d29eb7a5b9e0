//! Status through failures, scenario by scenario (pure planner): which reports count, the master
//! shown, split brain, node lifecycle and stable priorities. Each row is a world as the
//! operator would see it at one moment of the scenario.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use crds::VRRPNode;
use crds::virtualip::{Phase, VirtualIPStatus};
use crds::vrrpnode::VrrpState::{self, Backup, Fault, Init, Master, Unknown};
use crds::vrrpnode::{InstanceStatus, TakeoverTiming, VRRPNodeSpec, VRRPNodeStatus};
use operator::planner::AgentLiveness::{self, Fresh, Lost, Quiet};
use operator::planner::{Plan, VipKey, World, plan};

const VIP: &str = "ns/v";

fn key() -> VipKey {
    VipKey {
        namespace: "ns".into(),
        name: "v".into(),
    }
}

fn addr(node: &str) -> String {
    format!("192.0.2.{}", &node[1..])
}

/// One node's report: state, priority, the master address it hears (its own when MASTER).
fn rep(node: &str, state: VrrpState, prio: u8, hears: Option<&str>) -> Arc<VRRPNode> {
    let mut v = VRRPNode::new(node, VRRPNodeSpec::default());
    let master = matches!(state, Master);
    v.status = Some(VRRPNodeStatus {
        instances: vec![InstanceStatus {
            name: VIP.into(),
            state: Some(state),
            effective_priority: Some(prio),
            master_address: if master {
                Some(addr(node))
            } else {
                hears.map(addr)
            },
            reason: master.then(|| "master down timer expired".into()),
            previous_master: hears.filter(|_| master).map(addr),
            takeover: master.then_some(TakeoverTiming {
                silence_ms: Some(3_609),
                bind_ms: Some(1),
                announce_ms: Some(2),
            }),
            ..Default::default()
        }],
        ..Default::default()
    });
    Arc::new(v)
}

fn world_of(reports: Vec<Arc<VRRPNode>>, agents: &[(&str, AgentLiveness)]) -> World {
    let mut w = world(
        vec![vip("ns", "v", 0, spec("192.0.2.200/24"))],
        three_nodes(),
    );
    w.vrrp_nodes = reports;
    w.agents = agents.iter().map(|(n, l)| (n.to_string(), *l)).collect();
    w
}

fn status(p: &Plan) -> &VirtualIPStatus {
    &p.virtual_ips[&key()].status
}

fn node_view(p: &Plan, n: &str) -> (Option<VrrpState>, Option<String>) {
    let e = status(p).nodes.iter().find(|e| e.node == n).unwrap();
    (e.state, e.reason.clone())
}

fn condition(p: &Plan, t: &str) -> String {
    status(p)
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| c.status.clone())
        .unwrap()
}

/// The steady state before each failure: n1 MASTER (200), n2/n3 BACKUP hearing n1.
fn steady() -> World {
    let mut w = world_of(
        vec![
            rep("n1", Master, 100, None),
            rep("n2", Backup, 99, Some("n1")),
            rep("n3", Backup, 98, Some("n1")),
        ],
        &[("n1", Fresh), ("n2", Fresh), ("n3", Fresh)],
    );
    let p = plan_settled(&w);
    assert_eq!(status(&p).master.as_deref(), Some("n1"));
    write_back(&mut w, &p);
    w
}

#[test]
fn scenarios() {
    struct Case {
        what: &'static str,
        reports: Vec<Arc<VRRPNode>>,
        agents: &'static [(&'static str, AgentLiveness)],
        phase: Phase,
        master: Option<&'static str>,
        /// Node → (state shown, reason shown).
        nodes: &'static [(&'static str, Option<VrrpState>, Option<&'static str>)],
        split: &'static str,
        degraded: &'static str,
    }
    let cases = vec![
        Case {
            what: "the master's node dies: its agent is quiet, n2 took over and n3 hears n2",
            reports: vec![
                rep("n1", Master, 100, None),
                rep("n2", Master, 99, Some("n1")),
                rep("n3", Backup, 98, Some("n2")),
            ],
            agents: &[("n1", Quiet), ("n2", Fresh), ("n3", Fresh)],
            phase: Phase::Active,
            master: Some("n2"),
            nodes: &[
                ("n1", Some(Unknown), Some("AgentNotReporting")),
                ("n2", Some(Master), None),
                ("n3", Some(Backup), None),
            ],
            split: "False",
            degraded: "True",
        },
        Case {
            what: "the master's node is dead for good: its Lease expired",
            reports: vec![
                rep("n1", Master, 100, None),
                rep("n2", Master, 99, Some("n1")),
                rep("n3", Backup, 98, Some("n2")),
            ],
            agents: &[("n1", Lost), ("n2", Fresh), ("n3", Fresh)],
            phase: Phase::Active,
            master: Some("n2"),
            nodes: &[
                ("n1", Some(Unknown), Some("AgentNotReporting")),
                ("n2", Some(Master), None),
                ("n3", Some(Backup), None),
            ],
            split: "False",
            degraded: "True",
        },
        Case {
            what: "a quiet master nobody contradicts still counts (an API hiccup is no failover)",
            reports: vec![
                rep("n1", Master, 100, None),
                rep("n2", Backup, 99, Some("n1")),
                rep("n3", Backup, 98, Some("n1")),
            ],
            agents: &[("n1", Quiet), ("n2", Fresh), ("n3", Fresh)],
            phase: Phase::Active,
            master: Some("n1"),
            nodes: &[
                ("n1", Some(Master), None),
                ("n2", Some(Backup), None),
                ("n3", Some(Backup), None),
            ],
            split: "False",
            degraded: "False",
        },
        Case {
            what: "a backup's agent dies on a Ready node",
            reports: vec![
                rep("n1", Master, 100, None),
                rep("n2", Backup, 99, Some("n1")),
                rep("n3", Backup, 98, Some("n1")),
            ],
            agents: &[("n1", Fresh), ("n2", Fresh), ("n3", Lost)],
            phase: Phase::Active,
            master: Some("n1"),
            nodes: &[
                ("n1", Some(Master), None),
                ("n2", Some(Backup), None),
                ("n3", Some(Unknown), Some("AgentNotReporting")),
            ],
            split: "False",
            degraded: "True",
        },
        Case {
            what: "the master's agent restarted: it reports INIT/BACKUP afresh, n2 took over",
            reports: vec![
                rep("n1", Backup, 100, Some("n2")),
                rep("n2", Master, 99, Some("n1")),
                rep("n3", Backup, 98, Some("n2")),
            ],
            agents: &[("n1", Fresh), ("n2", Fresh), ("n3", Fresh)],
            phase: Phase::Active,
            master: Some("n2"),
            nodes: &[
                ("n1", Some(Backup), None),
                ("n2", Some(Master), None),
                ("n3", Some(Backup), None),
            ],
            split: "False",
            degraded: "False",
        },
        Case {
            what: "a restarted agent still in INIT does not hide the master",
            reports: vec![
                rep("n1", Init, 100, None),
                rep("n2", Master, 99, Some("n1")),
                rep("n3", Backup, 98, Some("n2")),
            ],
            agents: &[("n1", Fresh), ("n2", Fresh), ("n3", Fresh)],
            phase: Phase::Active,
            master: Some("n2"),
            nodes: &[
                ("n1", Some(Init), None),
                ("n2", Some(Master), None),
                ("n3", Some(Backup), None),
            ],
            split: "False",
            degraded: "False",
        },
        Case {
            what: "real split brain: two live agents both MASTER (an L2 cut), settled",
            reports: vec![
                rep("n1", Master, 100, None),
                rep("n2", Master, 99, Some("n1")),
                rep("n3", Backup, 98, Some("n2")),
            ],
            agents: &[("n1", Fresh), ("n2", Fresh), ("n3", Fresh)],
            phase: Phase::SplitBrain,
            master: None,
            nodes: &[
                ("n1", Some(Master), None),
                ("n2", Some(Master), None),
                ("n3", Some(Backup), None),
            ],
            split: "True",
            degraded: "False",
        },
        Case {
            what: "after an API outage with a failover during it: the relisted Leases are quiet \
                   until renewed; n2 and n3 renewed, n1 did not",
            reports: vec![
                rep("n1", Master, 100, None),
                rep("n2", Master, 99, Some("n1")),
                rep("n3", Backup, 98, Some("n2")),
            ],
            agents: &[("n1", Quiet), ("n2", Fresh), ("n3", Fresh)],
            phase: Phase::Active,
            master: Some("n2"),
            nodes: &[
                ("n1", Some(Unknown), Some("AgentNotReporting")),
                ("n2", Some(Master), None),
                ("n3", Some(Backup), None),
            ],
            split: "False",
            degraded: "True",
        },
        Case {
            what: "a report of a node the instance is not planned on does not count",
            reports: vec![
                rep("n1", Master, 100, None),
                rep("n2", Backup, 99, Some("n1")),
                rep("n9", Master, 250, None),
            ],
            agents: &[("n1", Fresh), ("n2", Fresh), ("n3", Fresh), ("n9", Fresh)],
            phase: Phase::Active,
            master: Some("n1"),
            nodes: &[
                ("n1", Some(Master), None),
                ("n2", Some(Backup), None),
                ("n3", None, None),
            ],
            split: "False",
            degraded: "False",
        },
    ];
    for c in cases {
        let mut w = steady();
        w.vrrp_nodes = c.reports;
        w.agents = c.agents.iter().map(|(n, l)| (n.to_string(), *l)).collect();
        let p = plan_settled(&w);
        let s = status(&p);
        assert_eq!(s.phase, Some(c.phase), "{}", c.what);
        assert_eq!(s.master.as_deref(), c.master, "{}", c.what);
        for (n, state, reason) in c.nodes {
            assert_eq!(
                node_view(&p, n),
                (*state, reason.map(String::from)),
                "{}: node {n}",
                c.what
            );
        }
        assert_eq!(
            s.nodes.len(),
            3,
            "{}: only planned nodes are listed",
            c.what
        );
        assert_eq!(condition(&p, "SplitBrain"), c.split, "{}", c.what);
        assert_eq!(condition(&p, "Degraded"), c.degraded, "{}", c.what);
        if let Some(m) = c.master {
            assert_eq!(s.master_address.as_deref(), Some(addr(m).as_str()));
        }
    }
}

#[test]
fn failover_telemetry_names_both_nodes_and_the_reason() {
    let mut w = steady();
    w.vrrp_nodes = vec![
        rep("n1", Master, 100, None),
        rep("n2", Master, 99, Some("n1")),
        rep("n3", Backup, 98, Some("n2")),
    ];
    w.agents = BTreeMap::from([
        ("n1".to_string(), Quiet),
        ("n2".to_string(), Fresh),
        ("n3".to_string(), Fresh),
    ]);
    let p = plan(&w);
    let vp = &p.virtual_ips[&key()];
    let f = vp.status.last_failover.as_ref().unwrap();
    assert_eq!((f.from.as_str(), f.to.as_str()), ("n1", "n2"));
    assert_eq!(f.reason.as_deref(), Some("master down timer expired"));
    assert_eq!(f.takeover.as_ref().unwrap().silence_ms, Some(3_609));
    let ev: Vec<(&str, &str)> = vp
        .events
        .iter()
        .map(|e| (e.reason, e.note.as_str()))
        .collect();
    assert_eq!(
        ev,
        vec![(
            "Failover",
            "master moved n1 → n2 (master down timer expired)"
        )]
    );
    // Kept while the master stays.
    write_back(&mut w, &p);
    let again = plan(&w);
    assert_eq!(
        again.virtual_ips[&key()].status.last_failover,
        vp.status.last_failover
    );
    assert!(again.virtual_ips[&key()].events.is_empty());
}

#[test]
fn a_fresh_double_master_is_a_handover_until_it_settles() {
    let mut w = steady();
    // n1 comes back with a higher priority and preempts; n2 has not stepped down yet.
    w.vrrp_nodes = vec![
        rep("n1", Master, 100, None),
        rep("n2", Master, 99, Some("n1")),
        rep("n3", Backup, 98, Some("n1")),
    ];
    let first = plan(&w);
    let s = status(&first);
    assert_eq!(s.phase, Some(Phase::Active));
    assert_eq!(
        s.master.as_deref(),
        Some("n1"),
        "VRRP's winner: highest priority"
    );
    assert_eq!(condition(&first, "SplitBrain"), "False");
    // 1 s adverts: split brain after 3 s of overlap, looked at again then.
    assert_eq!(
        first.virtual_ips[&key()].recheck_after,
        Some(std::time::Duration::from_secs(3))
    );
    // n2 stepped down in time: never a split brain.
    w.vrrp_nodes[1] = rep("n2", Backup, 99, Some("n1"));
    let seen = operator::planner::ReportIndex::new(&w.vrrp_nodes, w.now);
    w.now += k8s_openapi::jiff::SignedDuration::from_secs(5);
    let later = operator::planner::plan_with(&w, Some(&seen));
    assert_eq!(status(&later).phase, Some(Phase::Active));
    assert_eq!(condition(&later, "SplitBrain"), "False");
}

fn priorities(p: &Plan) -> BTreeMap<String, u8> {
    p.nodes
        .iter()
        .filter_map(|(n, np)| {
            np.spec
                .instances
                .iter()
                .find(|i| i.name == VIP)
                .map(|i| (n.clone(), i.priority))
        })
        .collect()
}

fn prios(list: &[(&str, u8)]) -> BTreeMap<String, u8> {
    list.iter().map(|(n, p)| (n.to_string(), *p)).collect()
}

/// The instance of node `n`'s plan without its peers' priorities.
fn but_peers(p: &Plan, n: &str) -> Vec<crds::vrrpnode::ResolvedInstance> {
    let mut v = p.nodes[n].spec.instances.clone();
    for i in &mut v {
        i.peer_priorities = None;
    }
    v
}

/// The peers' priorities planned for node `n`'s only instance.
fn peers(p: &Plan, n: &str) -> Vec<u8> {
    p.nodes[n].spec.instances[0]
        .peer_priorities
        .clone()
        .unwrap_or_default()
}

#[test]
fn node_lifecycle_keeps_other_nodes_priorities() {
    let vips = vec![vip("ns", "v", 0, spec("192.0.2.200/24"))];
    let mut w = world(vips, three_nodes());
    let p0 = plan(&w);
    assert_eq!(
        priorities(&p0),
        prios(&[("n1", 100), ("n2", 99), ("n3", 98)])
    );
    write_back(&mut w, &p0);

    assert_eq!(peers(&p0, "n1"), [99, 98]);
    assert_eq!(peers(&p0, "n2"), [100, 98]);

    // n2 is deleted: withdrawn; n1 and n3 keep their priorities and everything else in
    // their VRRPNode specs but the list of their peers' priorities.
    w.nodes = vec![three_nodes()[0].clone(), three_nodes()[2].clone()];
    w.agents = live(&w.nodes);
    let p1 = plan(&w);
    assert_eq!(priorities(&p1), prios(&[("n1", 100), ("n3", 98)]));
    assert_eq!(but_peers(&p1, "n1"), but_peers(&p0, "n1"));
    assert_eq!(but_peers(&p1, "n3"), but_peers(&p0, "n3"));
    assert_eq!(peers(&p1, "n1"), [98]);
    assert_eq!(peers(&p1, "n3"), [100]);
    write_back(&mut w, &p1);

    // A node joins: it takes the free slot; nobody else changes.
    w.nodes.push(node("n4", &[], &["192.0.2.4"]));
    w.agents = live(&w.nodes);
    let p2 = plan(&w);
    assert_eq!(
        priorities(&p2),
        prios(&[("n1", 100), ("n3", 98), ("n4", 99)])
    );
    assert_eq!(but_peers(&p2, "n1"), but_peers(&p0, "n1"));
    assert_eq!(but_peers(&p2, "n3"), but_peers(&p0, "n3"));
    assert_eq!(peers(&p2, "n3"), [100, 99]);
    write_back(&mut w, &p2);

    // n3 goes NotReady: nothing moves (its agent may still advertise, so it stays ranked);
    // status says so.
    w.nodes[1] = not_ready("n3", &["192.0.2.3"]);
    let p3 = plan(&w);
    assert_eq!(p3.nodes, p2.nodes);
    assert_eq!(node_view(&p3, "n3").1.as_deref(), Some("NodeNotReady"));
    write_back(&mut w, &p3);

    // n1 is cordoned: a planned handover. Its priority goes below everyone's, the others stay.
    let mut cordoned = node_obj("n1", &[], &["192.0.2.1"], true);
    cordoned.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
        unschedulable: Some(true),
        ..Default::default()
    });
    w.nodes[0] = Arc::new(cordoned);
    let p4 = plan(&w);
    assert_eq!(priorities(&p4), prios(&[("n1", 1), ("n3", 98), ("n4", 99)]));
    assert_eq!(but_peers(&p4, "n3"), but_peers(&p3, "n3"));
    // n4 now outranks every node but a leaving n1: it takes over at once when n1 leaves.
    assert_eq!(peers(&p4, "n4"), [1, 98]);
    let n1 = status(&p4).nodes.iter().find(|e| e.node == "n1").unwrap();
    assert_eq!(n1.reason.as_deref(), Some("Draining"));
    assert_eq!(
        n1.base_priority,
        Some(100),
        "the slot is kept for the way back"
    );
    write_back(&mut w, &p4);

    // The annotation drains too; uncordoned and not annotated, n1 gets its 100 back.
    let mut annotated = node_obj("n1", &[], &["192.0.2.1"], true);
    annotated.metadata.annotations = Some(BTreeMap::from([(
        "kubevrrp.io/drain".to_string(),
        "true".to_string(),
    )]));
    w.nodes[0] = Arc::new(annotated);
    assert_eq!(priorities(&plan(&w))["n1"], 1);
    w.nodes[0] = three_nodes()[0].clone();
    let p5 = plan(&w);
    assert_eq!(priorities(&p5)["n1"], 100);
}

#[test]
fn a_fault_and_a_lost_agent_are_both_degraded() {
    let mut w = steady();
    w.vrrp_nodes = vec![
        rep("n1", Master, 100, None),
        rep("n2", Fault, 0, None),
        rep("n3", Backup, 98, Some("n1")),
    ];
    w.agents = BTreeMap::from([
        ("n1".to_string(), Fresh),
        ("n2".to_string(), Fresh),
        ("n3".to_string(), Lost),
    ]);
    let p = plan_settled(&w);
    let c = status(&p)
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "NodeFault")
    );
    assert!(c.message.contains("FAULT on n2"), "{}", c.message);
    assert!(
        c.message.contains("the agent on n3 is not reporting"),
        "{}",
        c.message
    );
}
