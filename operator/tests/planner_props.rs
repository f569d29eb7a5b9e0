//! Property tests of the planner over random small worlds.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::*;
use crds::virtualip::{Phase, VirtualIPSpec};
use crds::vrrpnode::VrrpState;
use operator::planner::{World, instance_name, plan};
use proptest::prelude::*;

const NETS: [&str; 3] = ["192.0.2.", "198.51.100.", "203.0.113."];

#[derive(Debug, Clone)]
struct NodeGen {
    pool: u8,
    ready: bool,
}

#[derive(Debug, Clone)]
struct VipGen {
    ns: u8,
    net: usize,
    host: u8,
    pool: Option<u8>,
    explicit: Option<u8>,
    recorded: Option<u8>,
    age: i64,
    priority: Option<u8>,
}

fn node_gen() -> impl Strategy<Value = NodeGen> {
    (0u8..3, prop::bool::weighted(0.8)).prop_map(|(pool, ready)| NodeGen { pool, ready })
}

fn vip_gen() -> impl Strategy<Value = VipGen> {
    (
        0u8..2,
        0usize..3,
        1u8..250,
        prop::option::of(0u8..3),
        prop::option::weighted(0.3, 1u8..5),
        prop::option::weighted(0.3, 1u8..5),
        0i64..20,
        prop::option::of(1u8..=255),
    )
        .prop_map(
            |(ns, net, host, pool, explicit, recorded, age, priority)| VipGen {
                ns,
                net,
                host,
                pool,
                explicit,
                recorded,
                age,
                priority,
            },
        )
}

fn build(nodes: &[NodeGen], vips: &[VipGen], masters: &[(usize, usize)]) -> World {
    let nodes: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let name = format!("node-{i:02}");
            let pool = format!("p{}", n.pool);
            let ip = format!("192.0.2.{}", 200 + i);
            Arc::new(node_obj(
                &name,
                &[("pool", pool.as_str())],
                &[ip.as_str()],
                n.ready,
            ))
        })
        .collect();
    let vips: Vec<_> = vips
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let mut v = vip(
                &format!("ns{}", g.ns),
                &format!("vip-{i:02}"),
                g.age,
                VirtualIPSpec {
                    virtual_router_id: g.explicit,
                    priority: g.priority,
                    node_selector: g
                        .pool
                        .map(|p| selector(&[("pool", format!("p{p}").as_str())])),
                    ..spec(&format!("{}{}/24", NETS[g.net], g.host))
                },
            );
            v.status = g.recorded.map(|r| crds::VirtualIPStatus {
                virtual_router_id: Some(r),
                ..Default::default()
            });
            v
        })
        .collect();
    let mut w = world(vips, nodes);
    // Reports: (node index, vip index) pairs say MASTER.
    let mut by_node: BTreeMap<String, Vec<(String, VrrpState, u8)>> = BTreeMap::new();
    for (n, v) in masters {
        if let (Some(node), Some(vip)) = (w.nodes.get(*n), w.virtual_ips.get(*v)) {
            let node = node.metadata.name.clone().unwrap();
            by_node.entry(node).or_default().push((
                instance_name(&operator::planner::vip_key(vip)),
                VrrpState::Master,
                100,
            ));
        }
    }
    w.vrrp_nodes = by_node
        .iter()
        .map(|(n, items)| {
            let items: Vec<(&str, VrrpState, u8)> =
                items.iter().map(|(a, b, c)| (a.as_str(), *b, *c)).collect();
            report(n, &items)
        })
        .collect();
    w
}

fn world_strategy() -> impl Strategy<Value = World> {
    (
        prop::collection::vec(node_gen(), 0..7),
        prop::collection::vec(vip_gen(), 0..14),
        prop::collection::vec((0usize..7, 0usize..14), 0..6),
    )
        .prop_map(|(n, v, m)| build(&n, &v, &m))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn same_input_same_output(w in world_strategy(), seed in any::<u64>()) {
        let p1 = plan(&w);
        // Same world in another order.
        let mut w2 = w.clone();
        let rot = |len: usize| if len == 0 { 0 } else { (seed as usize) % len };
        let (a, b, c) = (rot(w2.virtual_ips.len()), rot(w2.nodes.len()), rot(w2.vrrp_nodes.len()));
        w2.virtual_ips.rotate_left(a);
        w2.nodes.rotate_left(b);
        w2.vrrp_nodes.rotate_left(c);
        w2.virtual_ips.reverse();
        let p2 = plan(&w2);
        prop_assert_eq!(&p1, &p2);
        for (name, n) in &p1.nodes {
            prop_assert_eq!(serde_json::to_vec(&n.spec).unwrap(), serde_json::to_vec(&p2.nodes[name].spec).unwrap());
        }
    }

    #[test]
    fn every_eligible_node_gets_exactly_one_instance_per_deployable_vip(w in world_strategy()) {
        let p = plan(&w);
        for v in &w.virtual_ips {
            let key = operator::planner::vip_key(v);
            let name = instance_name(&key);
            let vp = &p.virtual_ips[&key];
            let deployable = vp.status.phase != Some(Phase::Conflict);
            for n in &w.nodes {
                let node = n.metadata.name.clone().unwrap();
                // NotReady nodes keep their instances (VRRP handles dead nodes on the wire).
                let labels = n.metadata.labels.clone().unwrap();
                let matches = v.spec.node_selector.as_ref().is_none_or(|s| {
                    s.match_labels.as_ref().unwrap().iter().all(|(k, val)| labels.get(k) == Some(val))
                });
                let count = p.nodes[&node].spec.instances.iter().filter(|i| i.name == name).count();
                let want = usize::from(deployable && matches);
                prop_assert_eq!(count, want, "{} on {}", name, node);
            }
        }
    }

    #[test]
    fn no_two_deployed_vips_share_a_vrid_on_a_network(w in world_strategy()) {
        let p = plan(&w);
        let mut seen: BTreeSet<(String, u8)> = BTreeSet::new();
        for v in &w.virtual_ips {
            let key = operator::planner::vip_key(v);
            let vp = &p.virtual_ips[&key];
            if vp.status.phase == Some(Phase::Conflict) {
                continue;
            }
            let net: ipnet::IpNet = v.spec.addresses[0].parse::<ipnet::IpNet>().unwrap().trunc();
            let vrid = vp.status.virtual_router_id.unwrap();
            prop_assert!(seen.insert((net.to_string(), vrid)), "{:?} reuses VRID {} on {}", key, vrid, net);
            // Explicit VRIDs are honoured whenever deployed.
            if let Some(e) = v.spec.virtual_router_id { prop_assert_eq!(e, vrid); }
        }
    }

    #[test]
    fn recorded_allocations_are_stable(w in world_strategy()) {
        let p = plan(&w);
        let mut w2 = w.clone();
        write_back(&mut w2, &p);
        let p2 = plan(&w2);
        prop_assert_eq!(&p.nodes, &p2.nodes);
        for (k, v) in &p.virtual_ips {
            prop_assert_eq!(v.status.virtual_router_id, p2.virtual_ips[k].status.virtual_router_id);
            prop_assert_eq!(&v.status, &p2.virtual_ips[k].status);
            prop_assert!(p2.virtual_ips[k].events.is_empty(), "events repeat for {:?}", k);
        }
    }
}
