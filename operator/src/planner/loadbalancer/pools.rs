//! The `VirtualIPPool`s as the allocator uses them.
//!
//! A pool is usable when its spec parses ([`crds::pool::parse_addresses`]), its selectors are
//! valid, and none of its addresses belongs to an older pool (creation time, then name):
//! overlapping pools cannot be refused at apply time (one object cannot see another), so the
//! newer one is disabled instead, and says why in its status. Nothing of an older pool changes
//! when a newer one overlaps it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use crds::pool::{AddressRange, VirtualIPTemplate, ip_to_u128, is_buggy, parse_addresses};
use crds::validate::Problems;
use crds::{VirtualIPPool, VirtualIPPoolSpec};
use k8s_openapi::jiff::Timestamp;
use kube::core::{Selector, SelectorExt};

use super::{Family, ServiceRequest};

/// One usable pool.
#[derive(Debug, Clone)]
pub struct Pool {
    /// The pool's name.
    pub name: String,
    /// Its ranges, sorted (IPv4 before IPv6, then by first address).
    pub ranges: Vec<AddressRange>,
    /// `spec.autoAssign`.
    pub auto_assign: bool,
    /// `spec.avoidBuggyIPs`.
    pub avoid_buggy_ips: bool,
    service_selector: Option<Selector>,
    namespace_selector: Option<Selector>,
    /// The VirtualIP settings of its routers.
    pub template: VirtualIPTemplate,
}

/// Why a pool hands out nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolProblem {
    /// The spec is invalid (each problem names its field).
    InvalidSpec(Problems),
    /// An older pool holds some of the same addresses.
    Overlap {
        /// The older pool.
        other: String,
        /// This pool's range.
        range: AddressRange,
        /// The other pool's range it overlaps.
        other_range: AddressRange,
    },
}

impl std::fmt::Display for PoolProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolProblem::InvalidSpec(p) => write!(f, "{}", p.to_string().replace('\n', "; ")),
            PoolProblem::Overlap {
                other,
                range,
                other_range,
            } => write!(
                f,
                "{range} overlaps {other_range} of the older pool {other}; this pool hands out no address until the overlap is removed"
            ),
        }
    }
}

impl PoolProblem {
    /// Condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            PoolProblem::InvalidSpec(_) => "InvalidSpec",
            PoolProblem::Overlap { .. } => "Overlap",
        }
    }
}

/// Every pool: the usable ones and why the others are not.
#[derive(Debug, Clone, Default)]
pub struct Pools {
    usable: BTreeMap<String, Pool>,
    problems: BTreeMap<String, PoolProblem>,
}

impl Pool {
    /// A usable pool from a parsed spec.
    fn new(
        name: &str,
        spec: &VirtualIPPoolSpec,
        mut ranges: Vec<AddressRange>,
    ) -> Result<Pool, Problems> {
        let mut problems = Problems::default();
        let mut selector = |path: &str,
                            s: &Option<
            k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
        >| {
            match s.clone().map(Selector::try_from) {
                None => None,
                Some(Ok(sel)) => Some(sel),
                Some(Err(e)) => {
                    problems.push(path, format!("not a valid label selector: {e}"));
                    None
                }
            }
        };
        let service_selector = selector("spec.serviceSelector", &spec.service_selector);
        let namespace_selector = selector("spec.namespaceSelector", &spec.namespace_selector);
        if let Some(Err(e)) = spec
            .template
            .as_ref()
            .and_then(|t| t.node_selector.clone())
            .map(Selector::try_from)
        {
            problems.push(
                "spec.template.nodeSelector",
                format!("not a valid label selector: {e}"),
            );
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        ranges.sort_by_key(|r| (r.first.is_ipv6(), ip_to_u128(r.first)));
        Ok(Pool {
            name: name.to_string(),
            ranges,
            auto_assign: spec.auto_assign_or_default(),
            avoid_buggy_ips: spec.avoid_buggy_ips_or_default(),
            service_selector,
            namespace_selector,
            template: spec.template.clone().unwrap_or_default(),
        })
    }

    /// Whether the pool may hand `ip` out (in a range, and not skipped by `avoidBuggyIPs`).
    pub fn holds(&self, ip: IpAddr) -> bool {
        !(self.avoid_buggy_ips && is_buggy(ip)) && self.ranges.iter().any(|r| r.contains(ip))
    }

    /// Whether the pool's selectors admit the Service.
    pub fn admits(&self, req: &ServiceRequest) -> bool {
        self.service_selector
            .as_ref()
            .is_none_or(|s| s.matches(&req.labels))
            && self
                .namespace_selector
                .as_ref()
                .is_none_or(|s| s.matches(&req.namespace_labels))
    }

    /// Whether the pool has any address of this family.
    pub fn has_family(&self, family: Family) -> bool {
        self.ranges.iter().any(|r| Family::of(r.first) == family)
    }

    /// The ranges of one family, in order.
    pub fn ranges_of(&self, family: Family) -> impl Iterator<Item = &AddressRange> {
        self.ranges
            .iter()
            .filter(move |r| Family::of(r.first) == family)
    }

    /// How many addresses the pool can hand out (`avoidBuggyIPs` applied), saturating.
    pub fn capacity(&self) -> u128 {
        self.ranges
            .iter()
            .map(|r| {
                let buggy = if self.avoid_buggy_ips { buggy_in(r) } else { 0 };
                r.len() - buggy
            })
            .fold(0u128, u128::saturating_add)
    }
}

/// How many IPv4 addresses ending in .0 or .255 a range holds.
fn buggy_in(r: &AddressRange) -> u128 {
    if r.first.is_ipv6() {
        return 0;
    }
    let (a, b) = (ip_to_u128(r.first), ip_to_u128(r.last));
    // Addresses x with x % 256 == k in [a, b].
    let count = |k: u128| {
        let first = if a % 256 <= k {
            a - a % 256 + k
        } else {
            a - a % 256 + 256 + k
        };
        if first > b { 0 } else { (b - first) / 256 + 1 }
    };
    count(0) + count(255)
}

impl Pools {
    /// The pools of the cluster. Deterministic: overlaps are resolved oldest first.
    pub fn new(pools: &[Arc<VirtualIPPool>]) -> Pools {
        let mut sorted: Vec<(Option<Timestamp>, String, &VirtualIPPool)> = pools
            .iter()
            .filter_map(|p| {
                Some((
                    p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    p.metadata.name.clone()?,
                    &**p,
                ))
            })
            .filter(|(_, _, p)| p.metadata.deletion_timestamp.is_none())
            .collect();
        // Objects without a creation time (only in tests) sort last.
        sorted.sort_by(|a, b| (a.0.is_none(), a.0, &a.1).cmp(&(b.0.is_none(), b.0, &b.1)));
        sorted.dedup_by(|a, b| a.1 == b.1);
        let mut out = Pools::default();
        for (_, name, p) in sorted {
            let ranges = match parse_addresses(&p.spec) {
                Ok(r) => r,
                Err(problems) => {
                    out.problems
                        .insert(name, PoolProblem::InvalidSpec(problems));
                    continue;
                }
            };
            let overlap = out.usable.values().find_map(|older| {
                crds::pool::overlaps(&ranges, &older.ranges).map(|o| PoolProblem::Overlap {
                    other: older.name.clone(),
                    range: o.range,
                    other_range: o.other,
                })
            });
            if let Some(problem) = overlap {
                out.problems.insert(name, problem);
                continue;
            }
            match Pool::new(&name, &p.spec, ranges) {
                Ok(pool) => {
                    out.usable.insert(name, pool);
                }
                Err(problems) => {
                    out.problems
                        .insert(name, PoolProblem::InvalidSpec(problems));
                }
            }
        }
        out
    }

    /// A usable pool by name.
    pub fn get(&self, name: &str) -> Option<&Pool> {
        self.usable.get(name)
    }

    /// Why a pool is not usable (`None` when it is usable or does not exist).
    pub fn problem(&self, name: &str) -> Option<&PoolProblem> {
        self.problems.get(name)
    }

    /// The usable pools, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Pool> {
        self.usable.values()
    }

    /// The usable pool holding `ip`.
    pub fn containing(&self, ip: IpAddr) -> Option<&Pool> {
        self.usable.values().find(|p| p.holds(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pool(name: &str, age: i64, addresses: &[&str]) -> Arc<VirtualIPPool> {
        let mut p = VirtualIPPool::new(
            name,
            VirtualIPPoolSpec {
                addresses: addresses.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        );
        p.metadata.creation_timestamp =
            Some(Time(Timestamp::from_second(1_800_000_000 + age).unwrap()));
        Arc::new(p)
    }

    #[test]
    fn the_newer_of_two_overlapping_pools_is_disabled() {
        let pools = Pools::new(&[
            pool("b-new", 10, &["192.0.2.100-192.0.2.200"]),
            pool("a-old", 5, &["192.0.2.0/24"]),
            pool("c", 1, &["198.51.100.0/24"]),
        ]);
        assert!(pools.get("a-old").is_some());
        assert!(pools.get("c").is_some());
        assert!(pools.get("b-new").is_none());
        let p = pools.problem("b-new").unwrap();
        assert_eq!(p.reason(), "Overlap");
        assert_eq!(
            p.to_string(),
            "192.0.2.100-192.0.2.200 overlaps 192.0.2.0-192.0.2.255 of the older pool a-old; this pool hands out no address until the overlap is removed"
        );
    }

    #[test]
    fn capacity_skips_buggy_addresses_when_asked() {
        let mut p = (*pool("p", 0, &["192.0.2.0/23", "2001:db8::/126"])).clone();
        p.spec.avoid_buggy_ips = Some(true);
        let pools = Pools::new(&[Arc::new(p)]);
        let p = pools.get("p").unwrap();
        assert_eq!(p.capacity(), 512 - 4 + 4);
        assert!(!p.holds("192.0.2.255".parse().unwrap()));
        assert!(!p.holds("192.0.3.0".parse().unwrap()));
        assert!(p.holds("192.0.3.1".parse().unwrap()));
        let r = crds::pool::parse_entry("192.0.2.250-192.0.3.5").unwrap();
        assert_eq!(buggy_in(&r), 2);
        let r = crds::pool::parse_entry("192.0.2.1-192.0.2.254").unwrap();
        assert_eq!(buggy_in(&r), 0);
    }

    #[test]
    fn invalid_pools_say_why() {
        let pools = Pools::new(&[pool("bad", 0, &["192.0.2.9-192.0.2.1"])]);
        let p = pools.problem("bad").unwrap();
        assert_eq!(p.reason(), "InvalidSpec");
        assert!(p.to_string().contains("spec.addresses[0]"), "{p}");
    }
}
