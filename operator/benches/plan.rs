//! Planning benchmark: 100, 1,000 and 10,000 VirtualIPs over 100 nodes, cold (no VRID recorded
//! yet) and after one node change (statuses recorded, one node turns NotReady).
//!
//! The world: 100 Ready nodes in 20 pools of 5 (label `pool`), each with an IPv4 and IPv6
//! InternalIP; N IPv6 VirtualIPs, 100 per /64 of 2001:db8::/32, each selecting one pool
//! (so 5 instances each, 50,000 resolved instances at N = 10,000), every other one in unicast mode;
//! one agent report per instance. Peak and retained heap are measured once with a counting
//! allocator and printed before the timings.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crds::virtualip::{Unicast, VirtualIPSpec};
use crds::vrrpnode::{InstanceStatus, VRRPNodeStatus, VrrpState};
use crds::{VRRPNode, VRRPNodeSpec, VirtualIP};
use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use operator::planner::{Plan, World, plan};

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
const POOLS: usize = 20;
/// The VirtualIP counts planned; the executor-side benchmarks use the largest.
const SIZES: [usize; 3] = [100, 1_000, 10_000];

fn node(i: usize, ready: bool) -> Arc<Node> {
    let name = format!("node-{i:03}");
    Arc::new(Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            uid: Some(format!("uid-{name}")),
            labels: Some(BTreeMap::from([(
                "pool".to_string(),
                format!("p{}", i % POOLS),
            )])),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: format!("192.0.2.{}", i + 1),
                },
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: format!("2001:db8:ffff::{:x}", i + 1),
                },
            ]),
            ..Default::default()
        }),
    })
}

fn world(vips: usize) -> World {
    let nodes: Vec<Arc<Node>> = (0..NODES).map(|i| node(i, true)).collect();
    let t0 = Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH);
    let virtual_ips: Vec<Arc<VirtualIP>> = (0..vips)
        .map(|i| {
            let spec = VirtualIPSpec {
                addresses: vec![format!("2001:db8:{:x}::{:x}/64", i / 100, i % 100 + 1)],
                node_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "pool".to_string(),
                        format!("p{}", i % POOLS),
                    )])),
                    match_expressions: None,
                }),
                unicast: (i % 2 == 0).then(|| Unicast {
                    enabled: true,
                    ..Default::default()
                }),
                ..Default::default()
            };
            let mut v = VirtualIP::new(&format!("vip-{i:05}"), spec);
            v.metadata.namespace = Some(format!("ns-{}", i % 10));
            v.metadata.generation = Some(1);
            v.metadata.creation_timestamp = Some(Time(t0));
            Arc::new(v)
        })
        .collect();
    // One report per instance: the first node of each pool is MASTER, the rest BACKUP.
    let vrrp_nodes = (0..NODES)
        .map(|n| {
            let pool = n % POOLS;
            let instances = (0..vips)
                .filter(|i| i % POOLS == pool)
                .map(|i| InstanceStatus {
                    name: format!("ns-{}/vip-{i:05}", i % 10),
                    state: Some(if n < POOLS {
                        VrrpState::Master
                    } else {
                        VrrpState::Backup
                    }),
                    effective_priority: Some(100),
                    ..Default::default()
                })
                .collect();
            let mut v = VRRPNode::new(&format!("node-{n:03}"), VRRPNodeSpec::default());
            v.status = Some(VRRPNodeStatus {
                instances,
                ..Default::default()
            });
            Arc::new(v)
        })
        .collect();
    let agents = nodes
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .map(|n| (n, operator::planner::AgentLiveness::Fresh))
        .collect();
    World {
        virtual_ips,
        nodes,
        secrets: Vec::new(),
        vrrp_nodes,
        agents,
        script_policy: Default::default(),
        now: t0,
    }
}

/// The world after the plan was written: statuses recorded.
fn settled(w: &World, p: &Plan) -> World {
    let mut w = w.clone();
    w.virtual_ips = w
        .virtual_ips
        .iter()
        .map(|v| {
            let mut v = (**v).clone();
            v.status = p
                .virtual_ips
                .get(&operator::planner::vip_key(&v))
                .map(|x| x.status.clone());
            Arc::new(v)
        })
        .collect();
    w
}

fn with_node_down(w: &World) -> World {
    let mut w = w.clone();
    w.nodes[42] = node(42, false);
    w
}

fn measure(label: &str, w: &World) -> Plan {
    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let start = Instant::now();
    let p = plan(w);
    let took = start.elapsed();
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let retained = CURRENT.load(Ordering::Relaxed) - before;
    let instances: usize = p.nodes.values().map(|n| n.spec.instances.len()).sum();
    eprintln!(
        "{label}: {took:?} once, peak heap +{:.1} MiB, plan retains {:.1} MiB ({instances} instances)",
        peak as f64 / 1048576.0,
        retained as f64 / 1048576.0
    );
    p
}

/// The cold world, the settled one and the one after a node change, for `vips` VirtualIPs;
/// prints the one-shot timings and heap figures.
fn worlds(vips: usize) -> (World, World, World) {
    let before = CURRENT.load(Ordering::Relaxed);
    let cold = world(vips);
    eprintln!(
        "world: {vips} VirtualIPs, {NODES} nodes, input objects {:.1} MiB",
        (CURRENT.load(Ordering::Relaxed) - before) as f64 / 1048576.0
    );
    let first = measure(&format!("{vips} VIPs cold"), &cold);
    let steady = settled(&cold, &first);
    let changed = with_node_down(&steady);
    let second = measure(&format!("{vips} VIPs after one node change"), &changed);
    let differing = first
        .nodes
        .iter()
        .filter(|(n, p)| second.nodes.get(*n) != Some(p))
        .count();
    let statuses = first
        .virtual_ips
        .iter()
        .filter(|(k, p)| second.virtual_ips.get(*k).map(|s| &s.status) != Some(&p.status))
        .count();
    eprintln!(
        "{vips} VIPs after one node change: {differing} VRRPNode spec(s) and {statuses} status(es) differ from the cold plan"
    );
    drop((first, second));
    (cold, steady, changed)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan");
    g.sample_size(10);
    let mut largest = None;
    for vips in SIZES {
        let (cold, steady, changed) = worlds(vips);
        g.bench_function(format!("cold_{vips}_vips_{NODES}_nodes"), |b| {
            b.iter(|| plan(std::hint::black_box(&cold)))
        });
        g.bench_function(format!("one_node_change_{vips}_vips_{NODES}_nodes"), |b| {
            b.iter(|| plan(std::hint::black_box(&changed)))
        });
        largest = Some((steady, changed));
    }
    let Some((steady, changed)) = largest else {
        return;
    };
    g.bench_function("place_all_after_one_node_change", |b| {
        b.iter(|| operator::planner::place_all(std::hint::black_box(&changed)))
    });
    g.finish();

    // What one agent report costs the executor: rebuild the report index, then one
    // VirtualIP's status from the cached placement.
    let placement = operator::planner::place_all(&steady);
    let vip = steady.virtual_ips[1234].clone();
    let key = operator::planner::vip_key(&vip);
    let mut g = c.benchmark_group("report");
    g.sample_size(10);
    g.bench_function("index_50000_reports", |b| {
        b.iter(|| {
            operator::planner::ReportIndex::new(
                std::hint::black_box(&steady.vrrp_nodes),
                steady.now,
            )
        })
    });
    let reports = operator::planner::ReportIndex::new(&steady.vrrp_nodes, steady.now);
    g.bench_function("one_vip_status", |b| {
        b.iter(|| {
            operator::planner::vip_plan(
                &vip,
                &placement.virtual_ips[&key],
                &reports,
                &steady.agents,
                steady.now,
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
