//! VRID assignment: explicit VRIDs, stable recorded allocations, lowest-free allocation and
//! conflict detection, per network.
//!
//! A network is the address family plus the first address's prefix, masked. A first address
//! without a prefix (a host route, /32 or /128) belongs to the longest prefixed network of
//! another request that contains it, or else to one shared pool per family.
//!
//! Requests are served oldest first (creation time, then namespace/name). Pass 1 takes every
//! claim: the explicit VRID, else the one recorded in status. A claim on a VRID an older request
//! already holds in the same network loses: an explicit loser is a conflict (both sides are
//! told), a recorded loser is just reallocated. Pass 2 gives every remaining request the lowest
//! free VRID of its network.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use ipnet::IpNet;
use k8s_openapi::jiff::Timestamp;

use super::VipKey;

/// One VirtualIP asking for a VRID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The VirtualIP.
    pub key: VipKey,
    /// Its creation time (older wins).
    pub created: Option<Timestamp>,
    /// Its first address, with prefix.
    pub first_address: IpNet,
    /// The user's `spec.virtualRouterID`.
    pub explicit: Option<u8>,
    /// The operator's earlier allocation, `status.virtualRouterID`.
    pub recorded: Option<u8>,
}

/// The result for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The VRID is this request's; `conflicts_with` lists newer requests that wanted it too.
    Assigned {
        /// The VRID.
        vrid: u8,
        /// Newer VirtualIPs whose explicit VRID collides with this one (sorted).
        conflicts_with: Vec<VipKey>,
    },
    /// The explicit VRID is held by an older VirtualIP on the same network.
    Lost {
        /// The VRID asked for.
        vrid: u8,
        /// The network, as text.
        network: String,
        /// The holder.
        winner: VipKey,
    },
    /// No VRID is free on the network.
    Exhausted {
        /// The network, as text.
        network: String,
    },
}

/// The VRID space a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Network {
    /// A known subnet (masked).
    Subnet(IpNet),
    /// Host addresses whose subnet is unknown, one pool per family.
    Unknown {
        /// IPv6 rather than IPv4.
        v6: bool,
    },
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Network::Subnet(n) => write!(f, "{n}"),
            Network::Unknown { v6: false } => f.write_str("IPv4 addresses without a prefix"),
            Network::Unknown { v6: true } => f.write_str("IPv6 addresses without a prefix"),
        }
    }
}

fn is_host(net: &IpNet) -> bool {
    net.prefix_len() == net.max_prefix_len()
}

/// The network of an address, given the prefixed networks known in the world.
pub fn network_of(addr: &IpNet, prefixed: &HashSet<IpNet>) -> Network {
    if !is_host(addr) {
        return Network::Subnet(addr.trunc());
    }
    for len in (0..addr.max_prefix_len()).rev() {
        if let Ok(n) = IpNet::new(addr.addr(), len) {
            let n = n.trunc();
            if prefixed.contains(&n) {
                return Network::Subnet(n);
            }
        }
    }
    Network::Unknown {
        v6: matches!(addr, IpNet::V6(_)),
    }
}

/// 255 bits: which VRIDs of a network are taken.
#[derive(Default, Clone, Copy)]
struct Taken([u64; 4]);

impl Taken {
    fn contains(&self, v: u8) -> bool {
        self.0[usize::from(v / 64)] & (1 << (v % 64)) != 0
    }
    fn insert(&mut self, v: u8) {
        self.0[usize::from(v / 64)] |= 1 << (v % 64);
    }
    fn lowest_free(&self) -> Option<u8> {
        (1..=255u8).find(|v| !self.contains(*v))
    }
}

/// Assign VRIDs; the result is parallel to `requests`.
pub fn assign(requests: &[Request]) -> Vec<Outcome> {
    let prefixed: HashSet<IpNet> = requests
        .iter()
        .map(|r| r.first_address)
        .filter(|a| !is_host(a))
        .map(|a| a.trunc())
        .collect();
    let networks: Vec<Network> = requests
        .iter()
        .map(|r| network_of(&r.first_address, &prefixed))
        .collect();

    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (&requests[a], &requests[b]);
        ra.created
            .cmp(&rb.created)
            .then_with(|| ra.key.cmp(&rb.key))
    });

    let mut taken: BTreeMap<Network, Taken> = BTreeMap::new();
    let mut holder: BTreeMap<(Network, u8), usize> = BTreeMap::new();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; requests.len()];
    let mut conflicts: Vec<Vec<VipKey>> = vec![Vec::new(); requests.len()];
    let mut unplaced = Vec::new();

    for &i in &order {
        let r = &requests[i];
        let net = networks[i];
        let claim = r.explicit.or(r.recorded).filter(|v| *v != 0);
        let Some(v) = claim else {
            unplaced.push(i);
            continue;
        };
        match holder.get(&(net, v)) {
            Some(&owner) if r.explicit.is_some() => {
                conflicts[owner].push(r.key.clone());
                outcomes[i] = Some(Outcome::Lost {
                    vrid: v,
                    network: net.to_string(),
                    winner: requests[owner].key.clone(),
                });
            }
            Some(_) => unplaced.push(i),
            None => {
                holder.insert((net, v), i);
                taken.entry(net).or_default().insert(v);
                outcomes[i] = Some(Outcome::Assigned {
                    vrid: v,
                    conflicts_with: Vec::new(),
                });
            }
        }
    }
    // Pass 2 keeps the age order (unplaced was filled in that order).
    for i in unplaced {
        let net = networks[i];
        let t = taken.entry(net).or_default();
        outcomes[i] = Some(match t.lowest_free() {
            Some(v) => {
                t.insert(v);
                holder.insert((net, v), i);
                Outcome::Assigned {
                    vrid: v,
                    conflicts_with: Vec::new(),
                }
            }
            None => Outcome::Exhausted {
                network: net.to_string(),
            },
        });
    }

    outcomes
        .into_iter()
        .zip(conflicts)
        .map(|(o, mut with)| match o {
            Some(Outcome::Assigned { vrid, .. }) => {
                with.sort();
                with.dedup();
                Outcome::Assigned {
                    vrid,
                    conflicts_with: with,
                }
            }
            Some(other) => other,
            // Every index is either in `order` pass 1 or in `unplaced`; never reached.
            None => Outcome::Exhausted {
                network: String::new(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(
        name: &str,
        created: i64,
        addr: &str,
        explicit: Option<u8>,
        recorded: Option<u8>,
    ) -> Request {
        Request {
            key: VipKey {
                namespace: "ns".into(),
                name: name.into(),
            },
            created: Some(Timestamp::from_second(created).unwrap()),
            first_address: crds::validate::parse_address(addr).unwrap(),
            explicit,
            recorded,
        }
    }

    fn vrids(out: &[Outcome]) -> Vec<Option<u8>> {
        out.iter()
            .map(|o| match o {
                Outcome::Assigned { vrid, .. } => Some(*vrid),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn lowest_free_per_network_in_age_order() {
        let out = assign(&[
            req("c", 3, "192.0.2.30/24", None, None),
            req("a", 1, "192.0.2.10/24", None, None),
            req("b", 2, "198.51.100.10/24", None, None),
            req("d", 4, "192.0.2.40/24", Some(2), None),
        ]);
        // d holds 2 explicitly; a (oldest without a claim) gets 1, c gets 3; b is alone on its net.
        assert_eq!(vrids(&out), vec![Some(3), Some(1), Some(1), Some(2)]);
    }

    #[test]
    fn families_are_separate_networks() {
        let out = assign(&[
            req("a", 1, "192.0.2.10/24", None, None),
            req("b", 2, "2001:db8::10/64", None, None),
        ]);
        assert_eq!(vrids(&out), vec![Some(1), Some(1)]);
    }

    #[test]
    fn recorded_vrid_is_kept_even_when_lower_ones_free_up() {
        let out = assign(&[req("b", 2, "192.0.2.20/24", None, Some(7))]);
        assert_eq!(vrids(&out), vec![Some(7)]);
    }

    #[test]
    fn explicit_collision_older_wins_both_told() {
        let out = assign(&[
            req("new", 5, "192.0.2.20/24", Some(9), None),
            req("old", 1, "192.0.2.10/24", Some(9), None),
        ]);
        assert_eq!(
            out[0],
            Outcome::Lost {
                vrid: 9,
                network: "192.0.2.0/24".into(),
                winner: VipKey {
                    namespace: "ns".into(),
                    name: "old".into()
                }
            }
        );
        assert_eq!(
            out[1],
            Outcome::Assigned {
                vrid: 9,
                conflicts_with: vec![VipKey {
                    namespace: "ns".into(),
                    name: "new".into()
                }]
            }
        );
    }

    #[test]
    fn same_vrid_on_different_networks_is_fine() {
        let out = assign(&[
            req("a", 1, "192.0.2.10/24", Some(9), None),
            req("b", 2, "198.51.100.10/24", Some(9), None),
        ]);
        assert_eq!(vrids(&out), vec![Some(9), Some(9)]);
    }

    #[test]
    fn recorded_allocation_yields_to_older_explicit_by_moving() {
        // "old" was given VRID 1 explicitly; "new" had recorded 1 (e.g. status copied): it moves.
        let out = assign(&[
            req("old", 1, "192.0.2.10/24", Some(1), None),
            req("new", 2, "192.0.2.20/24", None, Some(1)),
        ]);
        assert_eq!(vrids(&out), vec![Some(1), Some(2)]);
        assert_eq!(
            out[0],
            Outcome::Assigned {
                vrid: 1,
                conflicts_with: vec![]
            }
        );
    }

    #[test]
    fn newer_explicit_loses_to_older_recorded() {
        let out = assign(&[
            req("old", 1, "192.0.2.10/24", None, Some(1)),
            req("new", 2, "192.0.2.20/24", Some(1), None),
        ]);
        assert!(matches!(out[1], Outcome::Lost { vrid: 1, .. }));
        assert!(
            matches!(&out[0], Outcome::Assigned { vrid: 1, conflicts_with } if conflicts_with.len() == 1)
        );
    }

    #[test]
    fn bare_addresses_join_the_containing_subnet_or_a_shared_pool() {
        let out = assign(&[
            req("net", 1, "192.0.2.10/24", None, None),
            req("bare-in", 2, "192.0.2.77", None, None),
            req("bare-out-1", 3, "203.0.113.5", None, None),
            req("bare-out-2", 4, "203.0.113.200", None, None),
        ]);
        assert_eq!(vrids(&out), vec![Some(1), Some(2), Some(1), Some(2)]);
    }

    #[test]
    fn exhaustion_is_reported() {
        let mut reqs: Vec<Request> = (0..255)
            .map(|i| req(&format!("v{i:03}"), i, "192.0.2.1/24", None, None))
            .collect();
        reqs.push(req("last", 1000, "192.0.2.2/24", None, None));
        let out = assign(&reqs);
        assert!(vrids(&out[..255]).iter().all(Option::is_some));
        assert_eq!(
            out[255],
            Outcome::Exhausted {
                network: "192.0.2.0/24".into()
            }
        );
    }
}
