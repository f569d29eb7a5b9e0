//! The data plane of Services of type `LoadBalancer`: which VRRP instance announces which
//! Service address, on which nodes, and which node is master of each.
//!
//! The output is a set of ordinary VirtualIPs in the operator's namespace (label
//! [`GROUP_LABEL`]), which the planner then deploys like any other: `kubectl get vips -A`
//! shows them with their master, and the rest of the operator needs no special case.
//!
//! - **Classes.** A Service's addresses are announced together, by one instance. Services
//!   that share an address are announced together too (a *component*). Components are
//!   grouped by class: pool, `externalTrafficPolicy`, and for `Local` the set of nodes that
//!   may announce (nodes with a Ready endpoint of every Service of the component). Each class
//!   has one or more groups (instances), numbered from 0.
//! - **Many Services per VRID.** A group carries up to [`max_advertised`] addresses of its
//!   family in its adverts (255 for IPv4; 90 for IPv6 so an advert fits a 1500-byte MTU) and
//!   up to 1024 more as excluded addresses, bound and announced with the rest but not
//!   advertised (keepalived's `virtual_ipaddress_excluded`). Addresses keep their place in a
//!   group; new ones go at the end.
//! - **Spreading.** A class gets as many groups as it has eligible nodes (at most
//!   [`MAX_SPREAD_GROUPS`], at most one per component, more only when full). A component
//!   stays in the group that has its addresses; a new one goes to the least loaded group.
//!   Each group has a head node, its master: heads are kept where they are while that keeps
//!   every node within one group of every other, and given to the least loaded Ready,
//!   undrained nodes otherwise. The head gets the pool's priority (and starts as MASTER, so a
//!   new group is announced at once), the nodes after it in name order one less each, for up
//!   to [`ROTATION_DEPTH`] nodes.
//! - **`externalTrafficPolicy: Local`.** The group's `nodeSelector` adds
//!   `kubernetes.io/hostname In [...]` of the nodes with a Ready endpoint, so no other node
//!   runs the instance. When the endpoints move, the component moves to the group of its new
//!   node set (an address change applied in place on both instances). With no Ready endpoint
//!   the address is not announced at all.
//!
//! Deterministic: the same input gives the same VirtualIPs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use crds::VirtualIP;
use crds::validate::limits::MAX_EXCLUDED_ADDRESSES;
use crds::virtualip::{InitialState, NodeOverride};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::core::{Selector, SelectorExt};
use sha2::{Digest, Sha256};

use super::pools::{Pool, Pools};
use super::{Assignment, Family, SvcKey, TrafficPolicy};
use crate::planner::{node_draining, node_ready};

/// Label on every VirtualIP the load-balancer layer owns (value `"true"`).
pub const GROUP_LABEL: &str = "kubevrrp.io/load-balancer";
/// Annotation on a group VirtualIP: its pool.
pub const GROUP_POOL_ANNOTATION: &str = "kubevrrp.io/pool";
/// Annotation on a group VirtualIP: its class (pool, policy, node set).
pub const GROUP_CLASS_ANNOTATION: &str = "kubevrrp.io/group-class";
/// Annotation on a group VirtualIP: its number within the class.
pub const GROUP_INDEX_ANNOTATION: &str = "kubevrrp.io/group-index";
/// The node label used to pin `Local` groups to nodes.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Groups a class gets for spreading alone.
pub const MAX_SPREAD_GROUPS: usize = 64;
/// Nodes per group that get a rotated priority (the others get lower, fixed ones).
pub const ROTATION_DEPTH: usize = 32;

/// Most addresses of a group's family in one advert.
pub fn max_advertised(family: Family) -> usize {
    match family {
        Family::V4 => 255,
        // 40-byte IPv6 header + 8-byte VRRP header + 16 bytes per address ≤ 1500.
        Family::V6 => 90,
    }
}

/// What grouping looks at.
#[derive(Debug, Clone, Copy)]
pub struct GroupInput<'a> {
    /// Namespace of the group VirtualIPs (the operator's).
    pub namespace: &'a str,
    /// The pools.
    pub pools: &'a Pools,
    /// What each Service holds.
    pub assignments: &'a BTreeMap<SvcKey, Assignment>,
    /// Nodes with a Ready endpoint, per Service (only read for `Local` Services).
    pub endpoints: &'a BTreeMap<SvcKey, BTreeSet<String>>,
    /// All Nodes.
    pub nodes: &'a [Arc<Node>],
    /// The VirtualIPs that exist now (those without [`GROUP_LABEL`] or in another namespace
    /// are ignored).
    pub existing: &'a [Arc<VirtualIP>],
}

/// The groups wanted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroupPlan {
    /// Desired group VirtualIPs by name (metadata and spec; no status).
    pub virtual_ips: BTreeMap<String, VirtualIP>,
    /// The group announcing each Service.
    pub of_service: BTreeMap<SvcKey, String>,
    /// Services held but not announced, and why.
    pub unannounced: BTreeMap<SvcKey, String>,
    /// Existing group VirtualIPs no longer wanted.
    pub delete: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Class {
    pool: String,
    policy: TrafficPolicy,
    /// `Local` only: the nodes that may announce.
    local_nodes: Option<BTreeSet<String>>,
}

impl Class {
    fn text(&self) -> String {
        match &self.local_nodes {
            None => format!("pool={},policy={}", self.pool, self.policy),
            Some(nodes) => format!(
                "pool={},policy={},nodes={}",
                self.pool,
                self.policy,
                short_hash(&nodes.iter().cloned().collect::<Vec<_>>().join(","))
            ),
        }
    }
}

fn short_hash(s: &str) -> String {
    hex::encode(&Sha256::digest(s.as_bytes())[..4])
}

/// Services announced together, with their addresses.
#[derive(Debug, Clone)]
struct Component {
    services: Vec<SvcKey>,
    addresses: BTreeSet<IpAddr>,
}

/// An existing group VirtualIP, as read back.
struct Existing {
    name: String,
    index: usize,
    order: Vec<IpAddr>,
    head: Option<String>,
}

/// One group being built.
#[derive(Default)]
struct Building {
    order: Vec<IpAddr>,
    services: Vec<SvcKey>,
    head: Option<String>,
    previous_head: Option<String>,
    name: Option<String>,
}

fn addr_of(s: &str) -> Option<IpAddr> {
    crds::validate::parse_address(s).map(|n| n.addr())
}

fn with_prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

/// The advertised and excluded addresses of a group, from its address order.
fn split(order: &[IpAddr], version: Option<u8>) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let primary = if version == Some(2) {
        Family::V4
    } else {
        order.first().map_or(Family::V4, |a| Family::of(*a))
    };
    let max = max_advertised(primary);
    let mut advertised = Vec::new();
    let mut excluded = Vec::new();
    for a in order {
        if Family::of(*a) == primary && advertised.len() < max {
            advertised.push(*a);
        } else {
            excluded.push(*a);
        }
    }
    (advertised, excluded)
}

fn fits(order: &[IpAddr], extra: &BTreeSet<IpAddr>, version: Option<u8>) -> bool {
    let all: Vec<IpAddr> = order.iter().copied().chain(extra.iter().copied()).collect();
    let (advertised, excluded) = split(&all, version);
    !advertised.is_empty() && excluded.len() <= MAX_EXCLUDED_ADDRESSES
}

/// A VirtualIP name for a group: `lb-POOL-N` or `lb-POOL-local-HASH-N`.
fn group_name(class: &Class, index: usize) -> String {
    let pool = if class.pool.len() > 40 {
        let mut p: String = class.pool.chars().take(32).collect();
        while p.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
            p.pop();
        }
        format!("{p}-{}", short_hash(&class.pool))
    } else {
        class.pool.clone()
    };
    match &class.local_nodes {
        None => format!("lb-{pool}-{index}"),
        Some(nodes) => format!(
            "lb-{pool}-local-{}-{index}",
            short_hash(&nodes.iter().cloned().collect::<Vec<_>>().join(","))
        ),
    }
}

/// Nodes a pool's routers may run on: not being deleted, matching the template's
/// `nodeSelector`. Sorted by name.
fn pool_nodes<'a>(pool: &Pool, nodes: &'a [Arc<Node>]) -> Vec<&'a Node> {
    let selector = pool
        .template
        .node_selector
        .clone()
        .map(Selector::try_from)
        .and_then(Result::ok);
    let mut out: Vec<&Node> = nodes
        .iter()
        .map(|n| &**n)
        .filter(|n| n.metadata.name.is_some() && n.metadata.deletion_timestamp.is_none())
        .filter(|n| {
            let labels = n.metadata.labels.clone().unwrap_or_default();
            selector.as_ref().is_none_or(|s| s.matches(&labels))
        })
        .collect();
    out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    out.dedup_by(|a, b| a.metadata.name == b.metadata.name);
    out
}

fn name_of(n: &Node) -> &str {
    n.metadata.name.as_deref().unwrap_or_default()
}

fn hostname_of(n: &Node) -> Option<&str> {
    n.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HOSTNAME_LABEL))
        .map(String::as_str)
}

/// Components: Services joined by shared addresses. Sorted by smallest address.
fn components(assignments: &BTreeMap<SvcKey, Assignment>) -> Vec<Component> {
    let mut by_addr: BTreeMap<IpAddr, Vec<&SvcKey>> = BTreeMap::new();
    for (k, a) in assignments {
        for ip in &a.addresses {
            by_addr.entry(*ip).or_default().push(k);
        }
    }
    let mut seen: BTreeSet<&SvcKey> = BTreeSet::new();
    let mut out = Vec::new();
    for start in assignments.keys() {
        if !seen.insert(start) {
            continue;
        }
        let mut comp = Component {
            services: Vec::new(),
            addresses: BTreeSet::new(),
        };
        let mut todo = vec![start];
        while let Some(k) = todo.pop() {
            comp.services.push(k.clone());
            for ip in assignments.get(k).into_iter().flat_map(|a| &a.addresses) {
                if comp.addresses.insert(*ip) {
                    for other in by_addr.get(ip).into_iter().flatten() {
                        if seen.insert(other) {
                            todo.push(other);
                        }
                    }
                }
            }
        }
        comp.services.sort();
        out.push(comp);
    }
    out.sort_by(|a, b| a.addresses.first().cmp(&b.addresses.first()));
    out
}

/// Group the held addresses into VirtualIPs.
pub fn plan_groups(input: &GroupInput<'_>) -> GroupPlan {
    let mut plan = GroupPlan::default();

    // Existing groups by class text.
    let mut existing: BTreeMap<String, Vec<Existing>> = BTreeMap::new();
    let mut existing_names: BTreeSet<String> = BTreeSet::new();
    let mut terminating: BTreeSet<String> = BTreeSet::new();
    for v in input.existing {
        let meta = &v.metadata;
        if meta.namespace.as_deref() != Some(input.namespace)
            || meta
                .labels
                .as_ref()
                .and_then(|l| l.get(GROUP_LABEL))
                .is_none_or(|v| v != "true")
        {
            continue;
        }
        let Some(name) = meta.name.clone() else {
            continue;
        };
        if meta.deletion_timestamp.is_some() {
            // On its way out: neither reused nor deleted again, and its name is not taken
            // by a new group until it is gone.
            terminating.insert(name);
            continue;
        }
        existing_names.insert(name.clone());
        let annotations = meta.annotations.clone().unwrap_or_default();
        let (Some(class), Some(index)) = (
            annotations.get(GROUP_CLASS_ANNOTATION).cloned(),
            annotations
                .get(GROUP_INDEX_ANNOTATION)
                .and_then(|i| i.parse::<usize>().ok()),
        ) else {
            continue;
        };
        let order: Vec<IpAddr> = v
            .spec
            .addresses
            .iter()
            .chain(v.spec.excluded_addresses.iter())
            .filter_map(|a| addr_of(a))
            .collect();
        let head = v
            .spec
            .nodes
            .iter()
            .filter_map(|o| Some((o.priority?, &o.name)))
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(a.1)))
            .map(|(_, n)| n.clone());
        existing.entry(class).or_default().push(Existing {
            name,
            index,
            order,
            head,
        });
    }
    for list in existing.values_mut() {
        list.sort_by_key(|e| (e.index, e.name.clone()));
    }

    // Components into classes.
    let mut classes: BTreeMap<Class, Vec<Component>> = BTreeMap::new();
    for comp in components(input.assignments) {
        let Some(first) = comp.services.first() else {
            continue;
        };
        let Some(a) = input.assignments.get(first) else {
            continue;
        };
        let Some(pool) = input.pools.get(&a.pool) else {
            for s in &comp.services {
                plan.unannounced
                    .insert(s.clone(), format!("pool {} hands out no address", a.pool));
            }
            continue;
        };
        let eligible = pool_nodes(pool, input.nodes);
        let local_nodes = match a.policy {
            TrafficPolicy::Cluster => None,
            TrafficPolicy::Local => {
                let mut set: Option<BTreeSet<String>> = None;
                for s in &comp.services {
                    let ready = input.endpoints.get(s).cloned().unwrap_or_default();
                    set = Some(match set {
                        None => ready,
                        Some(prev) => prev.intersection(&ready).cloned().collect(),
                    });
                }
                let set = set.unwrap_or_default();
                Some(
                    eligible
                        .iter()
                        .filter(|n| set.contains(name_of(n)) && hostname_of(n).is_some())
                        .map(|n| name_of(n).to_string())
                        .collect::<BTreeSet<String>>(),
                )
            }
        };
        let nobody = match &local_nodes {
            Some(set) if set.is_empty() => Some(
                "externalTrafficPolicy is Local and no node with a Ready endpoint may announce it",
            ),
            None if eligible.is_empty() => Some("no node matches the pool's template.nodeSelector"),
            _ => None,
        };
        if let Some(why) = nobody {
            for s in &comp.services {
                plan.unannounced.insert(s.clone(), why.to_string());
            }
            continue;
        }
        classes
            .entry(Class {
                pool: a.pool.clone(),
                policy: a.policy,
                local_nodes,
            })
            .or_default()
            .push(comp);
    }

    for (class, comps) in classes {
        let Some(pool) = input.pools.get(&class.pool) else {
            continue;
        };
        let all_nodes = pool_nodes(pool, input.nodes);
        let eligible: Vec<&Node> = match &class.local_nodes {
            None => all_nodes,
            Some(set) => all_nodes
                .into_iter()
                .filter(|n| set.contains(name_of(n)))
                .collect(),
        };
        let text = class.text();
        let previous = existing.remove(&text).unwrap_or_default();
        let blocked: BTreeSet<usize> = (0..comps.len() + previous.len() + MAX_SPREAD_GROUPS + 1)
            .filter(|i| terminating.contains(&group_name(&class, *i)))
            .collect();
        let groups = pack(pool, &comps, &previous, eligible.len(), &blocked);
        let groups = choose_heads(groups, &eligible);
        for (index, g) in groups {
            let name = g.name.clone().unwrap_or_else(|| group_name(&class, index));
            for s in &g.services {
                plan.of_service.insert(s.clone(), name.clone());
            }
            let vip = group_vip(input.namespace, &name, &class, index, pool, &g, &eligible);
            plan.virtual_ips.insert(name, vip);
        }
    }
    plan.delete = existing_names
        .into_iter()
        .filter(|n| !plan.virtual_ips.contains_key(n))
        .collect();
    plan
}

/// Put a class's components into groups (index → group).
fn pack(
    pool: &Pool,
    comps: &[Component],
    previous: &[Existing],
    eligible: usize,
    blocked: &BTreeSet<usize>,
) -> BTreeMap<usize, Building> {
    let version = pool.template.version;
    let mut groups: BTreeMap<usize, Building> = BTreeMap::new();
    let mut home: BTreeMap<IpAddr, usize> = BTreeMap::new();
    for e in previous {
        let g = groups.entry(e.index).or_default();
        // Two objects claiming one index (only by hand): the first keeps it.
        if g.name.is_none() {
            g.name = Some(e.name.clone());
            g.previous_head = e.head.clone();
            for a in &e.order {
                home.entry(*a).or_insert(e.index);
            }
        }
    }
    let keep_order: BTreeMap<usize, Vec<IpAddr>> = previous
        .iter()
        .map(|e| (e.index, e.order.clone()))
        .collect();
    let total: usize = comps.iter().map(|c| c.addresses.len()).sum();
    let capacity =
        max_advertised(Family::V4).min(max_advertised(Family::V6)) + MAX_EXCLUDED_ADDRESSES;
    let wanted = eligible
        .min(comps.len())
        .min(MAX_SPREAD_GROUPS)
        .max(total.div_ceil(capacity))
        .max(1);
    // Members of each group, before ordering.
    let mut members: BTreeMap<usize, (BTreeSet<IpAddr>, Vec<SvcKey>)> = BTreeMap::new();
    let mut later: Vec<&Component> = Vec::new();
    for c in comps {
        let at = c
            .addresses
            .iter()
            .filter_map(|a| home.get(a))
            .min()
            .copied();
        match at {
            Some(i) => {
                let m = members.entry(i).or_default();
                let order = keep_order.get(&i).cloned().unwrap_or_default();
                let mut current: Vec<IpAddr> =
                    order.into_iter().filter(|a| m.0.contains(a)).collect();
                let rest: Vec<IpAddr> =
                    m.0.iter()
                        .filter(|a| !current.contains(a))
                        .copied()
                        .collect();
                current.extend(rest);
                if fits(&current, &c.addresses, version) {
                    m.0.extend(c.addresses.iter().copied());
                    m.1.extend(c.services.iter().cloned());
                } else {
                    later.push(c);
                }
            }
            None => later.push(c),
        }
    }
    for c in later {
        let current =
            |members: &BTreeMap<usize, (BTreeSet<IpAddr>, Vec<SvcKey>)>, i: usize| -> Vec<IpAddr> {
                members
                    .get(&i)
                    .map(|m| m.0.iter().copied().collect())
                    .unwrap_or_default()
            };
        let load = |members: &BTreeMap<usize, (BTreeSet<IpAddr>, Vec<SvcKey>)>, i: usize| {
            members.get(&i).map_or(0, |m| m.0.len())
        };
        // The least loaded of the wanted groups that has room, else the first group with room
        // after them; a component too big for any group goes alone into a new one.
        let limit = wanted + comps.len() + previous.len() + blocked.len() + 1;
        let open = |i: &usize| !blocked.contains(i);
        let index = (0..wanted)
            .filter(open)
            .filter(|i| fits(&current(&members, *i), &c.addresses, version))
            .min_by_key(|i| (load(&members, *i), *i))
            .or_else(|| {
                (wanted..limit)
                    .filter(open)
                    .find(|i| fits(&current(&members, *i), &c.addresses, version))
            })
            .or_else(|| {
                (wanted..limit)
                    .filter(open)
                    .find(|i| load(&members, *i) == 0)
            })
            .unwrap_or(limit);
        let m = members.entry(index).or_default();
        m.0.extend(c.addresses.iter().copied());
        m.1.extend(c.services.iter().cloned());
    }
    let mut out = BTreeMap::new();
    for (i, (addrs, mut services)) in members {
        if addrs.is_empty() {
            continue;
        }
        let mut g = groups.remove(&i).unwrap_or_default();
        let kept: Vec<IpAddr> = keep_order
            .get(&i)
            .into_iter()
            .flatten()
            .filter(|a| addrs.contains(a))
            .copied()
            .collect();
        let mut order = kept.clone();
        order.extend(addrs.iter().filter(|a| !kept.contains(a)));
        g.order = order;
        services.sort();
        g.services = services;
        out.insert(i, g);
    }
    out
}

/// Give each group a head node, balanced over the eligible nodes (see the module doc).
fn choose_heads(
    mut groups: BTreeMap<usize, Building>,
    eligible: &[&Node],
) -> BTreeMap<usize, Building> {
    let healthy: Vec<&str> = eligible
        .iter()
        .filter(|n| node_ready(n) && !node_draining(n))
        .map(|n| name_of(n))
        .collect();
    let candidates: Vec<&str> = if healthy.is_empty() {
        eligible.iter().map(|n| name_of(n)).collect()
    } else {
        healthy
    };
    let n = candidates.len();
    if n == 0 {
        return groups;
    }
    // Every node heads q groups, r of them q + 1.
    let (q, r) = (groups.len() / n, groups.len() % n);
    let mut count = vec![0usize; n];
    let mut above = 0usize;
    let allowed =
        |count: &[usize], above: usize, i: usize| count[i] < q || (count[i] == q && above < r);
    let take = |count: &mut [usize], above: &mut usize, i: usize| {
        count[i] += 1;
        if count[i] == q + 1 {
            *above += 1;
        }
    };
    for g in groups.values_mut() {
        if let Some(i) = g
            .previous_head
            .as_deref()
            .and_then(|p| candidates.iter().position(|c| *c == p))
            && allowed(&count, above, i)
        {
            take(&mut count, &mut above, i);
            g.head = Some(candidates[i].to_string());
        }
    }
    for (index, g) in groups.iter_mut() {
        if g.head.is_some() {
            continue;
        }
        let start = index % n;
        let pick = (0..n)
            .map(|k| (start + k) % n)
            .filter(|i| allowed(&count, above, *i))
            .min_by_key(|i| count[*i]);
        if let Some(i) = pick {
            take(&mut count, &mut above, i);
            g.head = Some(candidates[i].to_string());
        }
    }
    groups
}

/// The VirtualIP of one group.
fn group_vip(
    namespace: &str,
    name: &str,
    class: &Class,
    index: usize,
    pool: &Pool,
    g: &Building,
    eligible: &[&Node],
) -> VirtualIP {
    let t = &pool.template;
    let (advertised, excluded) = split(&g.order, t.version);
    let mut spec = t.to_spec(advertised.into_iter().map(with_prefix).collect());
    spec.excluded_addresses = excluded.into_iter().map(with_prefix).collect();
    let base = t.priority.unwrap_or(100);
    let names: Vec<&str> = eligible.iter().map(|n| name_of(n)).collect();
    let start = g
        .head
        .as_deref()
        .and_then(|h| names.iter().position(|n| *n == h))
        .unwrap_or(0);
    let depth = names.len().min(ROTATION_DEPTH).min(usize::from(base));
    let preempt = t.preempt.unwrap_or(true);
    spec.nodes = (0..depth)
        .map(|i| {
            let node = names[(start + i) % names.len()];
            NodeOverride {
                name: node.to_string(),
                priority: Some(base.saturating_sub(i as u8).max(1)),
                state: (i == 0 && preempt).then_some(InitialState::Master),
                interface: None,
                source_address: None,
            }
        })
        .collect();
    if names.len() > depth {
        spec.priority = Some(base.saturating_sub(depth as u8).max(1));
    }
    if let Some(local) = &class.local_nodes {
        let mut sel = t.node_selector.clone().unwrap_or(LabelSelector {
            match_labels: None,
            match_expressions: None,
        });
        let hostnames: BTreeSet<String> = eligible
            .iter()
            .filter(|n| local.contains(name_of(n)))
            .filter_map(|n| hostname_of(n).map(str::to_string))
            .collect();
        sel.match_expressions
            .get_or_insert_with(Vec::new)
            .push(LabelSelectorRequirement {
                key: HOSTNAME_LABEL.into(),
                operator: "In".into(),
                values: Some(hostnames.into_iter().collect()),
            });
        spec.node_selector = Some(sel);
    }
    let mut v = VirtualIP::new(name, spec);
    v.metadata.namespace = Some(namespace.to_string());
    v.metadata.labels = Some(BTreeMap::from([
        (GROUP_LABEL.to_string(), "true".to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "kube-vrrp-operator".to_string(),
        ),
    ]));
    v.metadata.annotations = Some(BTreeMap::from([
        (GROUP_POOL_ANNOTATION.to_string(), class.pool.clone()),
        (GROUP_CLASS_ANNOTATION.to_string(), class.text()),
        (GROUP_INDEX_ANNOTATION.to_string(), index.to_string()),
    ]));
    v
}
