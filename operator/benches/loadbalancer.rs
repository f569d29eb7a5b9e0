//! LoadBalancer benchmark: 10,000 Services of type LoadBalancer over 100 nodes.
//!
//! The world: 100 Ready nodes; two pools, `a-v4` (192.0.2.0/24, 198.51.100.0/24,
//! 203.0.113.0/24, avoidBuggyIPs) and `b-v6` (2001:db8:1::/112); 700 IPv4 Services and 9,300
//! IPv6 ones, every tenth of them with `externalTrafficPolicy: Local` and Ready endpoints on
//! one of ten node pairs, every twentieth sharing its address under a key with one other
//! Service. Measured, once with heap figures from a counting allocator and then with
//! criterion:
//!
//! - allocation of all 10,000 from an empty allocator, and the rebuild from their statuses
//!   after a restart;
//! - grouping them into VirtualIPs, and the planner placing those on the 100 nodes (the
//!   VRRPNode specs);
//! - the executor's work for one more Service: allocate it, regroup, re-place.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crds::pool::{VirtualIPPool, VirtualIPPoolSpec};
use crds::{VirtualIP, vrrpnode::ObjectRef};
use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use operator::planner::loadbalancer::groups::plan_groups;
use operator::planner::loadbalancer::{
    Allocator, Family, GroupInput, GroupPlan, Pools, Port, ServiceRequest, SvcKey, TrafficPolicy,
};
use operator::planner::{Placement, World, place_all};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator and only keeps counters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const NODES: usize = 100;
const SERVICES: usize = 10_000;
const V4_SERVICES: usize = 700;
const NS: &str = "kube-vrrp";

fn node(i: usize) -> Arc<Node> {
    let name = format!("node-{i:03}");
    Arc::new(Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            uid: Some(format!("uid-{name}")),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/hostname".to_string(),
                name.clone(),
            )])),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: format!("2001:db8:ffff::{:x}", i + 1),
            }]),
            ..Default::default()
        }),
    })
}

fn pools() -> Pools {
    let mut v4 = VirtualIPPool::new(
        "a-v4",
        VirtualIPPoolSpec {
            addresses: vec![
                "192.0.2.0/24".into(),
                "198.51.100.0/24".into(),
                "203.0.113.0/24".into(),
            ],
            ..Default::default()
        },
    );
    v4.spec.avoid_buggy_ips = Some(true);
    let v6 = VirtualIPPool::new(
        "b-v6",
        VirtualIPPoolSpec {
            addresses: vec!["2001:db8:1::/112".into()],
            ..Default::default()
        },
    );
    Pools::new(&[Arc::new(v4), Arc::new(v6)])
}

fn key(i: usize) -> SvcKey {
    ObjectRef {
        namespace: format!("team-{}", i % 50),
        name: format!("svc-{i:05}"),
    }
}

/// Service `i` of the world.
fn request(i: usize) -> ServiceRequest {
    let local = i % 10 == 3;
    // Every twentieth shares its address with the next one (ports 80 and 443).
    let shares = i.is_multiple_of(20) || i % 20 == 1;
    ServiceRequest {
        key: key(i),
        created: None,
        labels: BTreeMap::new(),
        namespace_labels: BTreeMap::new(),
        families: vec![if i < V4_SERVICES {
            Family::V4
        } else {
            Family::V6
        }],
        requested: None,
        pool: None,
        sharing_key: shares.then(|| format!("pair-{}", i / 20)),
        ports: vec![Port {
            protocol: "TCP".into(),
            port: if i % 20 == 1 { 443 } else { 80 },
        }],
        policy: if local {
            TrafficPolicy::Local
        } else {
            TrafficPolicy::Cluster
        },
        previous: Vec::new(),
    }
}

/// Ready endpoints of the Local Services: on one of ten node pairs.
fn endpoints() -> BTreeMap<SvcKey, BTreeSet<String>> {
    (0..SERVICES)
        .filter(|i| i % 10 == 3)
        .map(|i| {
            let pair = (i / 10) % 10;
            (
                key(i),
                BTreeSet::from([
                    format!("node-{:03}", pair * 2),
                    format!("node-{:03}", pair * 2 + 1),
                ]),
            )
        })
        .collect()
}

fn allocate_all(pools: &Pools, reqs: &[ServiceRequest]) -> Allocator {
    let mut a = Allocator::new(pools.clone());
    for r in reqs {
        let _ = a.assign(r);
    }
    a
}

fn restore_all(a: &Allocator, reqs: &[ServiceRequest]) -> Allocator {
    let mut b = Allocator::new(a.pools().clone());
    for r in reqs {
        let mut r = r.clone();
        r.previous = a
            .assignment(&r.key)
            .map(|x| x.addresses.clone())
            .unwrap_or_default();
        if !r.previous.is_empty() {
            let _ = b.restore(&r);
        }
    }
    b
}

fn group(
    a: &Allocator,
    eps: &BTreeMap<SvcKey, BTreeSet<String>>,
    nodes: &[Arc<Node>],
    existing: &[Arc<VirtualIP>],
) -> GroupPlan {
    plan_groups(&GroupInput {
        namespace: NS,
        pools: a.pools(),
        assignments: a.assignments(),
        endpoints: eps,
        nodes,
        existing,
    })
}

fn place(g: &GroupPlan, nodes: &[Arc<Node>]) -> Placement {
    place_all(&World {
        virtual_ips: g.virtual_ips.values().cloned().map(Arc::new).collect(),
        nodes: nodes.to_vec(),
        ..Default::default()
    })
}

/// Run `f` once; print its time and heap figures.
fn once<T>(label: &str, f: impl FnOnce() -> T) -> T {
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let retained = CURRENT.load(Ordering::Relaxed).saturating_sub(before);
    eprintln!(
        "{label}: {took:.2?} once, peak heap +{:.1} MiB, retains {:.1} MiB",
        peak as f64 / 1048576.0,
        retained as f64 / 1048576.0
    );
    out
}

fn bench(c: &mut Criterion) {
    let nodes: Vec<Arc<Node>> = (0..NODES).map(node).collect();
    let pools = pools();
    let reqs: Vec<ServiceRequest> = (0..SERVICES).map(request).collect();
    let eps = endpoints();

    let alloc = once("allocate 10,000 Services", || allocate_all(&pools, &reqs));
    let held = alloc.assignments().len();
    let restored = once("rebuild the allocator from 10,000 statuses", || {
        restore_all(&alloc, &reqs)
    });
    assert_eq!(
        restored.assignments(),
        alloc.assignments(),
        "the rebuild changes nothing"
    );
    drop(restored);
    let groups = once("group 10,000 Services into VirtualIPs", || {
        group(&alloc, &eps, &nodes, &[])
    });
    let advertised: usize = groups
        .virtual_ips
        .values()
        .map(|v| v.spec.addresses.len())
        .sum();
    let excluded: usize = groups
        .virtual_ips
        .values()
        .map(|v| v.spec.excluded_addresses.len())
        .sum();
    let placement = once("place the group VirtualIPs on 100 nodes", || {
        place(&groups, &nodes)
    });
    let instances: usize = placement
        .nodes
        .values()
        .map(|n| n.spec.instances.len())
        .sum();
    let masters: BTreeSet<String> = groups
        .virtual_ips
        .values()
        .filter_map(|v| {
            v.spec
                .nodes
                .iter()
                .max_by_key(|o| o.priority)
                .map(|o| o.name.clone())
        })
        .collect();
    let spec_bytes: usize = placement
        .nodes
        .values()
        .map(|n| serde_json::to_vec(&n.spec).map_or(0, |b| b.len()))
        .max()
        .unwrap_or(0);
    eprintln!(
        "{held} Services hold addresses; {} group VirtualIPs (VRRP instances), {advertised} advertised + {excluded} excluded addresses, {} distinct masters, {instances} instances on {NODES} nodes, largest VRRPNode spec {:.0} KiB",
        groups.virtual_ips.len(),
        masters.len(),
        spec_bytes as f64 / 1024.0
    );
    assert!(
        placement.virtual_ips.values().all(|p| p.blocker.is_none()),
        "every group deploys"
    );
    let existing: Vec<Arc<VirtualIP>> =
        groups.virtual_ips.values().cloned().map(Arc::new).collect();
    let extra = request(SERVICES + 7);
    let step = |a: &mut Allocator| {
        let _ = a.assign(&extra);
        let g = group(a, &eps, &nodes, &existing);
        let p = place(&g, &nodes);
        a.release(&extra.key);
        (g, p)
    };
    let mut scratch = alloc.clone();
    let (g2, _) = once("one more Service: allocate, regroup, re-place", || {
        step(&mut scratch)
    });
    let moved = groups
        .of_service
        .iter()
        .filter(|(k, g)| g2.of_service.get(*k) != Some(*g))
        .count();
    let changed = groups
        .virtual_ips
        .iter()
        .filter(|(n, v)| g2.virtual_ips.get(*n).map(|x| &x.spec) != Some(&v.spec))
        .count();
    eprintln!(
        "one more Service: {moved} other Service(s) moved, {changed} group VirtualIP(s) changed"
    );

    let mut g = c.benchmark_group("loadbalancer");
    g.sample_size(10);
    g.bench_function("allocate_10000_services", |b| {
        b.iter(|| allocate_all(std::hint::black_box(&pools), &reqs))
    });
    g.bench_function("restore_10000_services", |b| {
        b.iter(|| restore_all(std::hint::black_box(&alloc), &reqs))
    });
    g.bench_function("group_10000_services_100_nodes", |b| {
        b.iter(|| group(std::hint::black_box(&alloc), &eps, &nodes, &existing))
    });
    g.bench_function("place_groups_100_nodes", |b| {
        b.iter(|| place(std::hint::black_box(&groups), &nodes))
    });
    g.bench_function("one_more_service", |b| b.iter(|| step(&mut scratch)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
