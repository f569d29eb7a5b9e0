//! The LoadBalancer address allocator: pools, requests, sharing, exhaustion, restarts, and
//! (proptest) that no address is ever held twice against the rules over random sequences of
//! Service additions, updates and deletions.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use crds::pool::{VirtualIPPool, VirtualIPPoolSpec};
use crds::vrrpnode::ObjectRef;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::jiff::Timestamp;
use operator::planner::loadbalancer::{
    AllocError, Allocator, Family, Pools, Port, ServiceRequest, SvcKey, TrafficPolicy,
};
use proptest::prelude::*;

const T0: i64 = 1_800_000_000;

fn pool_obj(name: &str, age: i64, addresses: &[&str]) -> VirtualIPPool {
    let mut p = VirtualIPPool::new(
        name,
        VirtualIPPoolSpec {
            addresses: addresses.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        },
    );
    p.metadata.creation_timestamp = Some(Time(Timestamp::from_second(T0 + age).unwrap()));
    p
}

fn pools(list: Vec<VirtualIPPool>) -> Pools {
    Pools::new(&list.into_iter().map(Arc::new).collect::<Vec<_>>())
}

fn key(name: &str) -> SvcKey {
    ObjectRef {
        namespace: "default".into(),
        name: name.into(),
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(port: i32) -> Port {
    Port {
        protocol: "TCP".into(),
        port,
    }
}

fn svc(name: &str) -> ServiceRequest {
    ServiceRequest {
        key: key(name),
        created: Some(Timestamp::from_second(T0).unwrap()),
        labels: BTreeMap::new(),
        namespace_labels: BTreeMap::new(),
        families: vec![Family::V4],
        requested: None,
        pool: None,
        sharing_key: None,
        ports: vec![tcp(80)],
        policy: TrafficPolicy::Cluster,
        previous: Vec::new(),
    }
}

fn addrs(a: &Allocator, name: &str) -> Vec<IpAddr> {
    a.assignment(&key(name))
        .map(|x| x.addresses.clone())
        .unwrap_or_default()
}

#[test]
fn lowest_free_address_of_the_first_auto_assign_pool() {
    let mut manual = pool_obj("a-manual", 0, &["203.0.113.0/24"]);
    manual.spec.auto_assign = Some(false);
    let mut a = Allocator::new(pools(vec![
        manual,
        pool_obj("web", 0, &["192.0.2.10-192.0.2.12", "192.0.2.0/30"]),
    ]));
    let got = a.assign(&svc("one")).unwrap();
    assert_eq!(got.pool, "web");
    // Ranges are used in address order: 192.0.2.0/30 comes first.
    assert_eq!(got.addresses, vec![ip("192.0.2.0")]);
    assert_eq!(
        a.assign(&svc("two")).unwrap().addresses,
        vec![ip("192.0.2.1")]
    );
    // Naming a pool overrides autoAssign.
    let mut named = svc("three");
    named.pool = Some("a-manual".into());
    assert_eq!(a.assign(&named).unwrap().addresses, vec![ip("203.0.113.0")]);
    // Assigning again changes nothing.
    assert_eq!(
        a.assign(&svc("one")).unwrap().addresses,
        vec![ip("192.0.2.0")]
    );
    // A freed address is the next one handed out.
    a.release(&key("one"));
    assert_eq!(
        a.assign(&svc("four")).unwrap().addresses,
        vec![ip("192.0.2.0")]
    );
}

#[test]
fn requested_addresses_are_checked_and_bad_requests_change_nobody_else() {
    let mut a = Allocator::new(pools(vec![
        pool_obj("web", 0, &["192.0.2.0/24"]),
        pool_obj("db", 0, &["198.51.100.0/24"]),
    ]));
    let mut s = svc("web");
    s.requested = Some(Ok(vec![ip("192.0.2.50")]));
    assert_eq!(a.assign(&s).unwrap().addresses, vec![ip("192.0.2.50")]);
    let before = a.assignments().clone();

    let mut outside = svc("outside");
    outside.requested = Some(Ok(vec![ip("203.0.113.5")]));
    let e = a.assign(&outside).unwrap_err();
    assert_eq!(e.reason(), "AddressNotInPool");
    assert_eq!(
        e.to_string(),
        "203.0.113.5 is in no usable VirtualIPPool (or is skipped by avoidBuggyIPs)"
    );

    let mut taken = svc("taken");
    taken.requested = Some(Ok(vec![ip("192.0.2.50")]));
    let e = a.assign(&taken).unwrap_err();
    assert_eq!(e.reason(), "AddressInUse");
    assert_eq!(
        e.to_string(),
        "192.0.2.50 is already assigned to Service default/web (this Service has no kubevrrp.io/allow-shared-ip key)"
    );

    let mut wrong_pool = svc("wrong-pool");
    wrong_pool.requested = Some(Ok(vec![ip("192.0.2.60")]));
    wrong_pool.pool = Some("db".into());
    assert_eq!(
        a.assign(&wrong_pool).unwrap_err().to_string(),
        "192.0.2.60 is not an address of pool db"
    );

    let mut bad = svc("bad");
    bad.requested = Some(Err(
        "kubevrrp.io/loadBalancerIPs: \"x\" is not an IP address".into(),
    ));
    assert_eq!(a.assign(&bad).unwrap_err().reason(), "InvalidAnnotation");

    let mut two = svc("two-v4");
    two.requested = Some(Ok(vec![ip("192.0.2.70"), ip("2001:db8::70")]));
    assert_eq!(a.assign(&two).unwrap_err().reason(), "FamilyMismatch");

    let mut missing = svc("missing");
    missing.pool = Some("nope".into());
    assert_eq!(
        a.assign(&missing).unwrap_err().to_string(),
        "kubevrrp.io/pool: pool \"nope\" does not exist"
    );
    assert_eq!(a.assignments(), &before, "no other Service changed");

    // The holder changes its request: it moves, and the old address is free again.
    s.requested = Some(Ok(vec![ip("192.0.2.51")]));
    assert_eq!(a.assign(&s).unwrap().addresses, vec![ip("192.0.2.51")]);
    assert_eq!(a.assign(&taken).unwrap().addresses, vec![ip("192.0.2.50")]);
}

#[test]
fn sharing_needs_the_same_key_the_same_policy_and_distinct_ports() {
    let mut a = Allocator::new(pools(vec![pool_obj("web", 0, &["192.0.2.0/24"])]));
    let mut http = svc("http");
    http.sharing_key = Some("front".into());
    http.ports = vec![tcp(80)];
    let shared = a.assign(&http).unwrap().addresses;

    let mut https = svc("https");
    https.sharing_key = Some("front".into());
    https.ports = vec![tcp(443)];
    assert_eq!(
        a.assign(&https).unwrap().addresses,
        shared,
        "same key, other port: shared"
    );

    let mut dns = svc("dns");
    dns.sharing_key = Some("front".into());
    dns.ports = vec![Port {
        protocol: "UDP".into(),
        port: 80,
    }];
    assert_eq!(
        a.assign(&dns).unwrap().addresses,
        shared,
        "UDP/80 does not clash with TCP/80"
    );

    // A clashing port with the same key: a new address when auto-assigned...
    let mut clash = svc("clash");
    clash.sharing_key = Some("front".into());
    clash.ports = vec![tcp(443)];
    let own = a.assign(&clash).unwrap().addresses;
    assert_ne!(own, shared);
    // ...and an error naming the port when the shared address is asked for.
    clash.requested = Some(Ok(shared.clone()));
    let e = a.assign(&clash).unwrap_err();
    assert_eq!(e.reason(), "PortClash");
    assert_eq!(
        e.to_string(),
        "192.0.2.0 is shared with Service default/https, which also uses port 443/TCP"
    );
    assert_eq!(
        addrs(&a, "clash"),
        Vec::<IpAddr>::new(),
        "it holds nothing now"
    );

    // Another key, or no key, or another policy: never shared.
    for (name, key, policy, why) in [
        (
            "other-key",
            Some("back"),
            TrafficPolicy::Cluster,
            "key differs",
        ),
        (
            "no-key",
            None,
            TrafficPolicy::Cluster,
            "has no kubevrrp.io/allow-shared-ip key",
        ),
        (
            "local",
            Some("front"),
            TrafficPolicy::Local,
            "externalTrafficPolicy differs",
        ),
    ] {
        let mut s = svc(name);
        s.sharing_key = key.map(str::to_string);
        s.policy = policy;
        s.ports = vec![tcp(8080)];
        assert_ne!(a.assign(&s).unwrap().addresses, shared, "{name}");
        s.requested = Some(Ok(shared.clone()));
        let e = a.assign(&s).unwrap_err();
        assert!(e.to_string().contains(why), "{name}: {e}");
    }
    // An update that makes the holder's own ports clash moves only that Service.
    let mut https2 = https.clone();
    https2.ports = vec![tcp(80)];
    assert_ne!(a.assign(&https2).unwrap().addresses, shared);
    assert_eq!(addrs(&a, "http"), shared);
    assert_eq!(addrs(&a, "dns"), shared);
}

#[test]
fn a_full_pool_is_reported_and_a_freed_address_is_reused() {
    let mut a = Allocator::new(pools(vec![pool_obj("small", 0, &["192.0.2.8/30"])]));
    for i in 0..4 {
        a.assign(&svc(&format!("s{i}"))).unwrap();
    }
    let before = a.assignments().clone();
    let e = a.assign(&svc("s4")).unwrap_err();
    assert_eq!(e.reason(), "PoolExhausted");
    assert_eq!(e.to_string(), "pool small is full: no free IPv4 address");
    assert_eq!(a.assignments(), &before);
    let pool = a.pools().get("small").unwrap().clone();
    assert_eq!(a.usage(&pool), (4, 0));
    a.release(&key("s2"));
    assert_eq!(a.usage(&pool), (3, 1));
    assert_eq!(
        a.assign(&svc("s4")).unwrap().addresses,
        vec![ip("192.0.2.10")]
    );
}

#[test]
fn dual_stack_gets_one_address_per_family_from_one_pool() {
    let mut a = Allocator::new(pools(vec![
        pool_obj("v4only", 0, &["198.51.100.0/28"]),
        pool_obj("web", 0, &["192.0.2.0/28", "2001:db8::/124"]),
    ]));
    let mut s = svc("dual");
    s.families = vec![Family::V6, Family::V4];
    let got = a.assign(&s).unwrap();
    assert_eq!(got.pool, "web", "v4only has no IPv6 address");
    assert_eq!(got.addresses, vec![ip("2001:db8::"), ip("192.0.2.0")]);
    s.pool = Some("v4only".into());
    let e = a.assign(&s).unwrap_err();
    assert_eq!(e.reason(), "FamilyUnavailable");
    assert_eq!(
        e.to_string(),
        "pool v4only has no IPv6 address, and the Service needs one"
    );
    let mut s6 = svc("v6");
    s6.families = vec![Family::V6];
    s6.requested = Some(Ok(vec![ip("2001:db8::5")]));
    assert_eq!(a.assign(&s6).unwrap().addresses, vec![ip("2001:db8::5")]);
}

#[test]
fn avoid_buggy_ips_skips_dot_zero_and_dot_255() {
    let mut p = pool_obj("p", 0, &["192.0.2.254-192.0.3.1"]);
    p.spec.avoid_buggy_ips = Some(true);
    let mut a = Allocator::new(pools(vec![p]));
    let got: Vec<IpAddr> = (0..2)
        .map(|i| a.assign(&svc(&format!("s{i}"))).unwrap().addresses[0])
        .collect();
    assert_eq!(got, vec![ip("192.0.2.254"), ip("192.0.3.1")]);
    assert_eq!(a.assign(&svc("s2")).unwrap_err().reason(), "PoolExhausted");
    let mut ask = svc("ask");
    ask.requested = Some(Ok(vec![ip("192.0.2.255")]));
    assert_eq!(a.assign(&ask).unwrap_err().reason(), "AddressNotInPool");
}

#[test]
fn selectors_limit_who_may_use_a_pool() {
    let mut team = pool_obj("team-a", 0, &["192.0.2.0/28"]);
    team.spec.namespace_selector = Some(LabelSelector {
        match_labels: Some(BTreeMap::from([("team".to_string(), "a".to_string())])),
        match_expressions: None,
    });
    let mut a = Allocator::new(pools(vec![team]));
    assert_eq!(a.assign(&svc("x")).unwrap_err().reason(), "NoPool");
    let mut named = svc("y");
    named.pool = Some("team-a".into());
    assert_eq!(a.assign(&named).unwrap_err().reason(), "PoolNotAllowed");
    let mut ok = svc("z");
    ok.namespace_labels = BTreeMap::from([("team".to_string(), "a".to_string())]);
    assert!(a.assign(&ok).is_ok());
}

#[test]
fn an_overlapping_pool_is_unusable_and_says_why() {
    let mut a = Allocator::new(pools(vec![
        pool_obj("old", 0, &["192.0.2.0/24"]),
        pool_obj("new", 5, &["192.0.2.128/25"]),
    ]));
    let mut s = svc("s");
    s.pool = Some("new".into());
    let e = a.assign(&s).unwrap_err();
    assert_eq!(e.reason(), "PoolUnusable");
    assert!(
        e.to_string()
            .contains("overlaps 192.0.2.0-192.0.2.255 of the older pool old"),
        "{e}"
    );
}

/// Simulates the executor: statuses written from the allocator, then a fresh allocator
/// rebuilt from them.
fn restarted(a: &Allocator, reqs: &BTreeMap<SvcKey, ServiceRequest>) -> Allocator {
    let mut b = Allocator::new(a.pools().clone());
    let mut order: Vec<ServiceRequest> = reqs
        .values()
        .map(|r| {
            let mut r = r.clone();
            r.previous = a
                .assignment(&r.key)
                .map(|x| x.addresses.clone())
                .unwrap_or_default();
            r
        })
        .collect();
    order.sort_by(|x, y| (x.created, &x.key).cmp(&(y.created, &y.key)));
    for r in order.iter().filter(|r| !r.previous.is_empty()) {
        b.restore(r).expect("every status is restored");
    }
    b
}

#[test]
fn a_restart_rebuilds_every_holding_without_a_change() {
    let mut a = Allocator::new(pools(vec![pool_obj(
        "web",
        0,
        &["192.0.2.0/24", "2001:db8::/120"],
    )]));
    let mut reqs = BTreeMap::new();
    for i in 0..40 {
        let mut s = svc(&format!("s{i:02}"));
        s.created = Some(Timestamp::from_second(T0 + i).unwrap());
        if i % 3 == 0 {
            s.families = vec![Family::V4, Family::V6];
        }
        if i % 5 == 0 {
            s.sharing_key = Some("k".into());
            s.ports = vec![tcp(1000 + i as i32)];
        }
        a.assign(&s).unwrap();
        reqs.insert(s.key.clone(), s);
    }
    for i in (0..40).step_by(7) {
        a.release(&key(&format!("s{i:02}")));
        reqs.remove(&key(&format!("s{i:02}")));
    }
    let mut b = restarted(&a, &reqs);
    assert_eq!(b.assignments(), a.assignments());
    // And reconciling everything afterwards moves nothing either.
    for r in reqs.values() {
        b.assign(r).unwrap();
    }
    assert_eq!(b.assignments(), a.assignments());
}

// ---- property tests ----

const SERVICES: usize = 12;

#[derive(Debug, Clone)]
struct Shape {
    dual: bool,
    requested: Option<u8>,
    pool: Option<u8>,
    key: Option<u8>,
    ports: Vec<i32>,
    local: bool,
    bad_annotation: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Upsert(usize, Shape),
    Delete(usize),
    Restart,
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        prop::bool::weighted(0.3),
        prop::option::weighted(0.3, 0u8..12),
        prop::option::weighted(0.3, 0u8..3),
        prop::option::weighted(0.6, 0u8..2),
        prop::collection::vec(prop::sample::select(vec![80, 443, 53, 8080]), 1..3),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.05),
    )
        .prop_map(
            |(dual, requested, pool, key, ports, local, bad_annotation)| Shape {
                dual,
                requested,
                pool,
                key,
                ports,
                local,
                bad_annotation,
            },
        )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..SERVICES, shape()).prop_map(|(i, s)| Op::Upsert(i, s)),
        3 => (0..SERVICES).prop_map(Op::Delete),
        1 => Just(Op::Restart),
    ]
}

/// Small pools so that exhaustion and sharing happen often.
fn prop_pools() -> Pools {
    let mut c = pool_obj("c", 2, &["203.0.113.1-203.0.113.2"]);
    c.spec.auto_assign = Some(false);
    pools(vec![
        pool_obj("a", 0, &["192.0.2.0/30", "2001:db8::/126"]),
        pool_obj("b", 1, &["198.51.100.10-198.51.100.12"]),
        c,
        // Overlaps a: never used.
        pool_obj("z", 3, &["192.0.2.2-192.0.2.9"]),
    ])
}

const REQUESTABLE: [&str; 12] = [
    "192.0.2.0",
    "192.0.2.1",
    "192.0.2.3",
    "198.51.100.10",
    "198.51.100.12",
    "203.0.113.1",
    "203.0.113.2",
    "2001:db8::1",
    "2001:db8::2",
    "192.0.2.9",
    "203.0.113.9",
    "2001:db8::9",
];
const POOLS: [&str; 3] = ["a", "b", "c"];

fn request(i: usize, s: &Shape) -> ServiceRequest {
    let mut r = svc(&format!("s{i}"));
    r.created = Some(Timestamp::from_second(T0 + i as i64).unwrap());
    if s.dual {
        r.families = vec![Family::V4, Family::V6];
    }
    r.requested = s
        .requested
        .map(|n| Ok(vec![ip(REQUESTABLE[usize::from(n)])]));
    if s.bad_annotation {
        r.requested = Some(Err("kubevrrp.io/loadBalancerIPs: bad".into()));
    }
    r.pool = s.pool.map(|p| POOLS[usize::from(p)].to_string());
    r.sharing_key = s.key.map(|k| format!("key{k}"));
    r.ports = s
        .ports
        .iter()
        .map(|p| tcp(*p))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    r.policy = if s.local {
        TrafficPolicy::Local
    } else {
        TrafficPolicy::Cluster
    };
    r
}

/// Every invariant of the holdings.
fn check_invariants(
    a: &Allocator,
    reqs: &BTreeMap<SvcKey, ServiceRequest>,
) -> Result<(), TestCaseError> {
    let mut users: BTreeMap<IpAddr, Vec<&SvcKey>> = BTreeMap::new();
    for (k, asg) in a.assignments() {
        let r = reqs
            .get(k)
            .ok_or_else(|| TestCaseError::fail(format!("{k:?} holds but is gone")))?;
        // One address per family, in order, from a usable pool that holds them all.
        let fams: Vec<Family> = asg.addresses.iter().map(|x| Family::of(*x)).collect();
        prop_assert_eq!(&fams, &r.families);
        let pool = a.pools().get(&asg.pool);
        prop_assert!(pool.is_some(), "{:?} from unusable pool {}", k, asg.pool);
        let pool = pool.unwrap();
        for x in &asg.addresses {
            prop_assert!(pool.holds(*x), "{} not in pool {}", x, asg.pool);
            users.entry(*x).or_default().push(k);
        }
        if let Some(Ok(req)) = &r.requested {
            let want: BTreeSet<&IpAddr> = req.iter().collect();
            let got: BTreeSet<&IpAddr> = asg.addresses.iter().collect();
            prop_assert_eq!(want, got);
        }
        if let Some(p) = &r.pool {
            prop_assert_eq!(p, &asg.pool);
        }
    }
    for (x, holders) in &users {
        let index: Vec<&SvcKey> = a.holders(*x).collect();
        prop_assert_eq!(index.len(), holders.len(), "index of {}", x);
        if holders.len() < 2 {
            continue;
        }
        // Shared: one key, one policy, no port twice.
        let asgs: Vec<_> = holders.iter().map(|k| a.assignment(k).unwrap()).collect();
        let key = asgs[0].sharing_key.clone();
        prop_assert!(key.is_some(), "{} shared without a key: {:?}", x, holders);
        let mut ports = BTreeSet::new();
        for g in &asgs {
            prop_assert_eq!(&g.sharing_key, &key, "{} shared across keys", x);
            prop_assert_eq!(g.policy, asgs[0].policy);
            for p in &g.ports {
                prop_assert!(ports.insert(p.clone()), "{} port {} twice", x, p);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn no_address_is_ever_held_against_the_rules(ops in prop::collection::vec(op(), 1..30)) {
        let mut a = Allocator::new(prop_pools());
        let mut reqs: BTreeMap<SvcKey, ServiceRequest> = BTreeMap::new();
        for op in ops {
            let before = a.assignments().clone();
            let touched = match &op {
                Op::Upsert(i, s) => {
                    let r = request(*i, s);
                    let res = a.assign(&r);
                    match &res {
                        Ok(asg) => prop_assert_eq!(Some(asg), a.assignment(&r.key)),
                        Err(_) => prop_assert!(a.assignment(&r.key).is_none()),
                    }
                    // Deterministic and idempotent: the same request again changes nothing.
                    let again = a.assign(&r);
                    prop_assert_eq!(&res.as_ref().ok(), &again.as_ref().ok());
                    if let (Err(e1), Err(e2)) = (&res, &again) {
                        prop_assert_eq!(e1.reason(), e2.reason());
                    }
                    let k = r.key.clone();
                    reqs.insert(k.clone(), r);
                    Some(k)
                }
                Op::Delete(i) => {
                    let k = key(&format!("s{i}"));
                    a.release(&k);
                    reqs.remove(&k);
                    prop_assert!(a.assignment(&k).is_none());
                    Some(k)
                }
                Op::Restart => {
                    let b = restarted(&a, &reqs);
                    prop_assert_eq!(b.assignments(), a.assignments());
                    a = b;
                    None
                }
            };
            // Nobody else's holding changed.
            for (k, asg) in &before {
                if Some(k) != touched.as_ref() {
                    prop_assert_eq!(Some(asg), a.assignment(k), "{:?} changed by {:?}", k, op);
                }
            }
            check_invariants(&a, &reqs)?;
        }
    }
}

#[test]
fn a_request_error_is_reported_the_same_way_each_time() {
    let mut a = Allocator::new(prop_pools());
    let mut s = svc("x");
    s.pool = Some("c".into());
    s.families = vec![Family::V6];
    let e1 = a.assign(&s).unwrap_err();
    let e2 = a.assign(&s).unwrap_err();
    assert_eq!(e1, e2);
    assert!(matches!(e1, AllocError::FamilyUnavailable { .. }));
}
