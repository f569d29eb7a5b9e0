//! Grouping Service addresses into VRRP instances: many Services per VRID, masters spread over
//! the nodes, `externalTrafficPolicy: Local`, stability as Services and nodes come and go, and
//! the groups run through the ordinary planner.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use common::*;
use crds::VirtualIP;
use crds::pool::{VirtualIPPool, VirtualIPPoolSpec};
use crds::validate::validate_spec;
use crds::virtualip::InitialState;
use crds::vrrpnode::ObjectRef;
use k8s_openapi::api::core::v1::Node;
use operator::planner::loadbalancer::groups::{GROUP_LABEL, max_advertised, plan_groups};
use operator::planner::loadbalancer::{
    Allocator, Family, GroupInput, GroupPlan, Pools, Port, ServiceRequest, SvcKey, TrafficPolicy,
};
use operator::planner::{self, World};

const NS: &str = "kube-vrrp";

fn lab_node(name: &str) -> Arc<Node> {
    node(name, &[("kubernetes.io/hostname", name)], &[])
}

fn nodes(n: usize) -> Vec<Arc<Node>> {
    (1..=n).map(|i| lab_node(&format!("n{i:03}"))).collect()
}

fn pools(addresses: &[&str]) -> Pools {
    let p = VirtualIPPool::new(
        "web",
        VirtualIPPoolSpec {
            addresses: addresses.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
    );
    Pools::new(&[Arc::new(p)])
}

fn key(name: &str) -> SvcKey {
    ObjectRef {
        namespace: "default".into(),
        name: name.into(),
    }
}

fn req(name: &str) -> ServiceRequest {
    ServiceRequest {
        key: key(name),
        created: None,
        labels: BTreeMap::new(),
        namespace_labels: BTreeMap::new(),
        families: vec![Family::V4],
        requested: None,
        pool: None,
        sharing_key: None,
        ports: vec![Port {
            protocol: "TCP".into(),
            port: 80,
        }],
        policy: TrafficPolicy::Cluster,
        previous: Vec::new(),
    }
}

struct Setup {
    alloc: Allocator,
    nodes: Vec<Arc<Node>>,
    endpoints: BTreeMap<SvcKey, BTreeSet<String>>,
    existing: Vec<Arc<VirtualIP>>,
}

impl Setup {
    fn new(pool: &[&str], nodes: Vec<Arc<Node>>) -> Setup {
        Setup {
            alloc: Allocator::new(pools(pool)),
            nodes,
            endpoints: BTreeMap::new(),
            existing: Vec::new(),
        }
    }
    fn add(&mut self, r: ServiceRequest) {
        self.alloc.assign(&r).expect("allocates");
    }
    fn add_n(&mut self, prefix: &str, n: usize) {
        for i in 0..n {
            self.add(req(&format!("{prefix}{i:05}")));
        }
    }
    fn plan(&self) -> GroupPlan {
        plan_groups(&GroupInput {
            namespace: NS,
            pools: self.alloc.pools(),
            assignments: self.alloc.assignments(),
            endpoints: &self.endpoints,
            nodes: &self.nodes,
            existing: &self.existing,
        })
    }
    /// Plan, then keep the result as the existing objects (as the executor would write them).
    fn apply(&mut self) -> GroupPlan {
        let p = self.plan();
        self.existing = p.virtual_ips.values().cloned().map(Arc::new).collect();
        p
    }
}

fn head(v: &VirtualIP) -> String {
    v.spec
        .nodes
        .iter()
        .max_by_key(|o| o.priority)
        .map(|o| o.name.clone())
        .unwrap_or_default()
}

fn all_addresses(v: &VirtualIP) -> Vec<IpAddr> {
    v.spec
        .addresses
        .iter()
        .chain(v.spec.excluded_addresses.iter())
        .map(|a| a.split('/').next().unwrap().parse().unwrap())
        .collect()
}

/// Where each Service's first address is announced: group name.
fn homes(p: &GroupPlan) -> BTreeMap<SvcKey, String> {
    p.of_service.clone()
}

fn heads_per_node(p: &GroupPlan) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for v in p.virtual_ips.values() {
        *m.entry(head(v)).or_default() += 1;
    }
    m
}

#[test]
fn services_are_spread_over_one_group_per_node_with_distinct_masters() {
    let mut s = Setup::new(&["192.0.2.0/24"], nodes(3));
    s.add_n("svc", 6);
    let p = s.apply();
    assert_eq!(
        p.virtual_ips.keys().collect::<Vec<_>>(),
        ["lb-web-0", "lb-web-1", "lb-web-2"]
    );
    for v in p.virtual_ips.values() {
        assert_eq!(v.metadata.namespace.as_deref(), Some(NS));
        assert_eq!(v.metadata.labels.as_ref().unwrap()[GROUP_LABEL], "true");
        assert_eq!(all_addresses(v).len(), 2, "{:?}", v.spec);
        assert!(v.spec.addresses.iter().all(|a| a.ends_with("/32")));
        assert!(
            validate_spec(&v.spec).is_empty(),
            "{:?}",
            validate_spec(&v.spec)
        );
        // Head first at the pool's priority, starting as MASTER; the others one less each.
        let prios: Vec<u8> = v.spec.nodes.iter().map(|o| o.priority.unwrap()).collect();
        assert_eq!(prios, [100, 99, 98]);
        assert_eq!(v.spec.nodes[0].state, Some(InitialState::Master));
        assert!(v.spec.nodes[1..].iter().all(|o| o.state.is_none()));
    }
    let heads = heads_per_node(&p);
    assert_eq!(heads.len(), 3, "every node masters one group: {heads:?}");
    assert_eq!(p.of_service.len(), 6);
    assert!(p.unannounced.is_empty());
    // The same input gives the same plan.
    assert_eq!(s.plan(), p);
}

#[test]
fn groups_run_through_the_planner_with_masters_on_different_nodes() {
    let mut s = Setup::new(&["192.0.2.0/24"], nodes(4));
    s.add_n("svc", 8);
    let p = s.apply();
    let world = World {
        virtual_ips: s.existing.clone(),
        ..world(Vec::new(), s.nodes.clone())
    };
    let placement = planner::place_all(&world);
    let mut masters: BTreeSet<String> = BTreeSet::new();
    for name in p.virtual_ips.keys() {
        let k = ObjectRef {
            namespace: NS.into(),
            name: name.clone(),
        };
        let vp = &placement.virtual_ips[&k];
        assert!(vp.blocker.is_none(), "{name}: {:?}", vp.blocker);
        assert_eq!(vp.placed.len(), 4, "{name} runs on every node");
        let top = vp.placed.iter().max_by_key(|(_, p)| **p).unwrap().0.clone();
        assert_eq!(top, head(&p.virtual_ips[name]));
        masters.insert(top);
    }
    assert_eq!(masters.len(), 4, "four groups, four different masters");
    // Every node's VRRPNode carries all four instances, with distinct VRIDs.
    for np in placement.nodes.values() {
        let vrids: BTreeSet<u8> = np
            .spec
            .instances
            .iter()
            .map(|i| i.virtual_router_id)
            .collect();
        assert_eq!(vrids.len(), 4);
    }
}

#[test]
fn thousands_of_services_share_few_vrids_with_255_advertised_per_group() {
    let mut s = Setup::new(
        &["198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/24"],
        nodes(1),
    );
    s.add_n("svc", 700);
    let p = s.apply();
    assert_eq!(
        p.virtual_ips.len(),
        1,
        "one node: one group while it has room"
    );
    let v = &p.virtual_ips["lb-web-0"];
    assert_eq!(v.spec.addresses.len(), 255);
    assert_eq!(v.spec.excluded_addresses.len(), 700 - 255);
    assert!(validate_spec(&v.spec).is_empty());

    // More than one group can carry (the fewest advertised of either family plus every
    // excluded address): a second group opens.
    let capacity = max_advertised(Family::V4).min(max_advertised(Family::V6))
        + crds::validate::limits::MAX_EXCLUDED_ADDRESSES;
    let mut s = Setup::new(&["198.51.96.0/20"], nodes(1));
    s.add_n("svc", capacity - 100);
    s.apply();
    s.add_n("more", 400);
    let p = s.apply();
    let sizes: Vec<usize> = p
        .virtual_ips
        .values()
        .map(|v| all_addresses(v).len())
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), capacity + 300);
    assert!(p.virtual_ips.len() >= 2, "{sizes:?}");
    for v in p.virtual_ips.values() {
        assert!(v.spec.addresses.len() <= 255);
        assert!(
            validate_spec(&v.spec).is_empty(),
            "{:?}",
            validate_spec(&v.spec)
        );
    }
}

#[test]
fn adding_and_removing_services_moves_no_other_address() {
    let mut s = Setup::new(&["192.0.2.0/24"], nodes(3));
    s.add_n("svc", 9);
    let before = s.apply();
    let before_homes = homes(&before);
    s.add_n("new", 4);
    s.alloc.release(&key("svc00003"));
    let after = s.apply();
    for (k, g) in &before_homes {
        if k.name == "svc00003" {
            assert!(!after.of_service.contains_key(k));
            continue;
        }
        assert_eq!(after.of_service.get(k), Some(g), "{k:?} moved");
    }
    // Addresses keep their place inside a group.
    for (name, v) in &before.virtual_ips {
        let old: Vec<IpAddr> = all_addresses(v);
        let new: Vec<IpAddr> = all_addresses(&after.virtual_ips[name]);
        let kept: Vec<&IpAddr> = old.iter().filter(|a| new.contains(a)).collect();
        assert_eq!(
            kept,
            new.iter().take(kept.len()).collect::<Vec<_>>(),
            "{name}"
        );
        assert_eq!(
            head(v),
            head(&after.virtual_ips[name]),
            "{name}: master kept"
        );
    }
    // New ones went to the least loaded groups.
    let sizes: Vec<usize> = after
        .virtual_ips
        .values()
        .map(|v| all_addresses(v).len())
        .collect();
    assert!(
        sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
        "{sizes:?}"
    );
}

#[test]
fn masters_rebalance_when_nodes_join_and_leave() {
    let mut s = Setup::new(&["192.0.2.0/24"], nodes(2));
    s.add_n("svc", 8);
    let p = s.apply();
    assert_eq!(p.virtual_ips.len(), 2);
    // Two more nodes: new groups open only for new Services; heads stay balanced.
    s.nodes = nodes(4);
    s.add_n("new", 8);
    let p = s.apply();
    assert_eq!(p.virtual_ips.len(), 4, "{:?}", p.virtual_ips.keys());
    let heads = heads_per_node(&p);
    assert_eq!(heads.len(), 4, "{heads:?}");
    // A node leaves: its group gets a new head; the others keep theirs.
    let before: BTreeMap<String, String> = p
        .virtual_ips
        .iter()
        .map(|(n, v)| (n.clone(), head(v)))
        .collect();
    s.nodes
        .retain(|n| n.metadata.name.as_deref() != Some("n002"));
    let p = s.apply();
    for (name, v) in &p.virtual_ips {
        let h = head(v);
        assert_ne!(h, "n002");
        if before[name] != "n002" {
            assert_eq!(h, before[name], "{name} kept its master");
        }
        assert!(!v.spec.nodes.iter().any(|o| o.name == "n002"));
    }
    let counts: Vec<usize> = heads_per_node(&p).values().copied().collect();
    assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
}

#[test]
fn a_not_ready_node_heads_nothing() {
    let mut s = Setup::new(&["192.0.2.0/24"], nodes(3));
    s.nodes[0] = Arc::new(node_obj(
        "n001",
        &[("kubernetes.io/hostname", "n001")],
        &[],
        false,
    ));
    s.add_n("svc", 3);
    let p = s.apply();
    let heads = heads_per_node(&p);
    assert!(!heads.contains_key("n001"), "{heads:?}");
    // It still runs the instances as a backup.
    assert!(
        p.virtual_ips
            .values()
            .all(|v| v.spec.nodes.iter().any(|o| o.name == "n001"))
    );
}

#[test]
fn local_policy_pins_the_group_to_nodes_with_ready_endpoints() {
    let mut s = Setup::new(&["192.0.2.0/24"], nodes(3));
    let mut local = req("local");
    local.policy = TrafficPolicy::Local;
    s.add(local.clone());
    s.add(req("cluster"));
    s.endpoints.insert(
        key("local"),
        BTreeSet::from(["n002".to_string(), "n003".to_string()]),
    );
    let p = s.apply();
    let g = &p.virtual_ips[&p.of_service[&key("local")]];
    assert!(
        g.metadata
            .name
            .as_deref()
            .unwrap()
            .starts_with("lb-web-local-")
    );
    let sel = g.spec.node_selector.as_ref().unwrap();
    let expr = &sel.match_expressions.as_ref().unwrap()[0];
    assert_eq!(expr.key, "kubernetes.io/hostname");
    assert_eq!(
        expr.values.as_deref(),
        Some(&["n002".to_string(), "n003".to_string()][..])
    );
    let names: Vec<&str> = g.spec.nodes.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["n002", "n003"]);
    // The planner deploys it to those two nodes only.
    let world = World {
        virtual_ips: s.existing.clone(),
        ..world(Vec::new(), s.nodes.clone())
    };
    let placement = planner::place_all(&world);
    let k = ObjectRef {
        namespace: NS.into(),
        name: g.metadata.name.clone().unwrap(),
    };
    assert_eq!(
        placement.virtual_ips[&k].placed.keys().collect::<Vec<_>>(),
        ["n002", "n003"]
    );
    // The Cluster Service is in a group of its own class.
    assert_ne!(p.of_service[&key("cluster")], p.of_service[&key("local")]);

    // The endpoints move: the Service follows to a group on the new node.
    s.endpoints
        .insert(key("local"), BTreeSet::from(["n001".to_string()]));
    let p2 = s.apply();
    let g2 = &p2.virtual_ips[&p2.of_service[&key("local")]];
    assert_eq!(head(g2), "n001");
    assert_eq!(g2.spec.nodes.len(), 1);
    assert!(
        p2.delete.contains(g.metadata.name.as_ref().unwrap()),
        "the old group goes"
    );
    assert_eq!(
        p2.of_service[&key("cluster")],
        p.of_service[&key("cluster")]
    );

    // No Ready endpoint: not announced anywhere, and said so.
    s.endpoints.insert(key("local"), BTreeSet::new());
    let p3 = s.apply();
    assert!(!p3.of_service.contains_key(&key("local")));
    assert!(p3.unannounced[&key("local")].contains("no node with a Ready endpoint"));
}

#[test]
fn local_services_with_the_same_nodes_share_a_group() {
    let mut s = Setup::new(&["192.0.2.0/24"], nodes(4));
    for name in ["a", "b", "c"] {
        let mut r = req(name);
        r.policy = TrafficPolicy::Local;
        s.add(r);
        s.endpoints
            .insert(key(name), BTreeSet::from(["n004".to_string()]));
    }
    let p = s.apply();
    let groups: BTreeSet<&String> = p.of_service.values().collect();
    assert_eq!(
        groups.len(),
        1,
        "one node, one eligible set, one group: {groups:?}"
    );
}

#[test]
fn shared_and_dual_stack_addresses_are_announced_together() {
    let mut s = Setup::new(&["192.0.2.0/24", "2001:db8::/120"], nodes(3));
    let mut a = req("http");
    a.sharing_key = Some("k".into());
    let mut b = req("https");
    b.sharing_key = Some("k".into());
    b.ports[0].port = 443;
    let mut d = req("dual");
    d.families = vec![Family::V6, Family::V4];
    s.add(a);
    s.add(b);
    s.add(d);
    let p = s.apply();
    assert_eq!(p.of_service[&key("http")], p.of_service[&key("https")]);
    let g = &p.virtual_ips[&p.of_service[&key("dual")]];
    let addrs = all_addresses(g);
    assert_eq!(addrs.len(), 2);
    // One family advertised, the other bound as excluded.
    assert_eq!(g.spec.addresses.len(), 1);
    assert_eq!(g.spec.excluded_addresses.len(), 1);
    assert!(validate_spec(&g.spec).is_empty());
}

#[test]
fn a_pool_template_shapes_every_group() {
    let mut pool = VirtualIPPool::new(
        "web",
        VirtualIPPoolSpec {
            addresses: vec!["192.0.2.0/24".into()],
            ..Default::default()
        },
    );
    pool.spec.template = Some(crds::pool::VirtualIPTemplate {
        version: Some(2),
        priority: Some(150),
        advert_interval: Some("2s".parse().unwrap()),
        interface: Some("eth0".into()),
        node_selector: Some(selector(&[("lb", "yes")])),
        ..Default::default()
    });
    let mut s = Setup::new(
        &[],
        vec![
            node("a", &[("lb", "yes")], &[]),
            node("b", &[("lb", "yes")], &[]),
            node("c", &[], &[]),
        ],
    );
    s.alloc = Allocator::new(Pools::new(&[Arc::new(pool)]));
    s.add_n("svc", 2);
    let p = s.apply();
    for v in p.virtual_ips.values() {
        assert_eq!(v.spec.version, Some(2));
        assert_eq!(v.spec.interface.as_deref(), Some("eth0"));
        assert_eq!(v.spec.advert_interval, Some("2s".parse().unwrap()));
        let names: BTreeSet<&str> = v.spec.nodes.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, BTreeSet::from(["a", "b"]), "only selected nodes");
        assert_eq!(v.spec.nodes[0].priority, Some(150));
    }
    assert_eq!(heads_per_node(&p).len(), 2);
}
