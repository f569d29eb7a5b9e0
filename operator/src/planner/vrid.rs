//! VRID assignment: explicit VRIDs, stable recorded allocations, lowest-free allocation and
//! conflict detection, per (interface, address family), as on the wire.
//!
//! A VRID identifies a virtual router on one link for one family: two instances of a family
//! on one interface must differ, whatever their subnets. A request that names its interface
//! (`spec.interface`, plus any `nodes[].interface` override) uses that interface's VRID space.
//! One that names none runs wherever its agent finds the subnet of its first address, which
//! the operator cannot see, so it may share any interface: it must differ from every request
//! of its family (the safe guess). Different families never clash.
//!
//! Requests are served oldest first (creation time, then namespace/name). Pass 1 takes every
//! claim: the explicit VRID, else the one recorded in status. A claim on a VRID an older request
//! already holds on a shared interface loses: an explicit loser is a conflict (both sides are
//! told, with the interface), a recorded loser is just reallocated. Pass 2 gives every remaining
//! request the lowest VRID free on all the interfaces it may use.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use ipnet::IpNet;
use k8s_openapi::jiff::Timestamp;

use super::VipKey;

/// Where a request's instances run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Interfaces {
    /// No interface named: any interface of the node may carry it.
    Any,
    /// These interfaces (the spec's and the per-node overrides').
    Named(BTreeSet<String>),
}

impl Interfaces {
    /// From `spec.interface` and the `nodes[].interface` overrides.
    pub fn from_spec<'a>(
        interface: Option<&'a str>,
        overrides: impl IntoIterator<Item = &'a str>,
    ) -> Interfaces {
        match interface {
            None => Interfaces::Any,
            Some(i) => Interfaces::Named(
                std::iter::once(i)
                    .chain(overrides)
                    .map(str::to_owned)
                    .collect(),
            ),
        }
    }

    fn overlaps(&self, other: &Interfaces) -> bool {
        match (self, other) {
            (Interfaces::Named(a), Interfaces::Named(b)) => a.intersection(b).next().is_some(),
            _ => true,
        }
    }
}

/// One VirtualIP asking for a VRID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The VirtualIP.
    pub key: VipKey,
    /// Its creation time (older wins).
    pub created: Option<Timestamp>,
    /// Its first address, with prefix (gives the family).
    pub first_address: IpNet,
    /// The interfaces it runs on.
    pub interfaces: Interfaces,
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
    /// The explicit VRID is held by an older VirtualIP on a shared interface.
    Lost {
        /// The VRID asked for.
        vrid: u8,
        /// Where they clash (interface and family), as text.
        network: String,
        /// The holder.
        winner: VipKey,
    },
    /// No VRID is free on the interfaces the request may use.
    Exhausted {
        /// The interfaces and family, as text.
        network: String,
    },
}

/// A request's VRID space: its family and interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    /// IPv6 rather than IPv4.
    pub v6: bool,
    /// Interfaces.
    pub interfaces: Interfaces,
}

impl Space {
    fn of(r: &Request) -> Space {
        Space {
            v6: matches!(r.first_address, IpNet::V6(_)),
            interfaces: r.interfaces.clone(),
        }
    }

    fn overlaps(&self, other: &Space) -> bool {
        self.v6 == other.v6 && self.interfaces.overlaps(&other.interfaces)
    }

    fn family(&self) -> &'static str {
        if self.v6 { "IPv6" } else { "IPv4" }
    }

    /// Where `self` and `other` (overlapping) clash, as text.
    pub fn clash(&self, other: &Space) -> String {
        match (&self.interfaces, &other.interfaces) {
            (Interfaces::Named(a), Interfaces::Named(b)) => names(self.family(), a.intersection(b)),
            (Interfaces::Named(n), Interfaces::Any) | (Interfaces::Any, Interfaces::Named(n)) => {
                format!(
                    "{} (the other VirtualIP names no interface, so it may run there)",
                    names(self.family(), n.iter())
                )
            }
            (Interfaces::Any, Interfaces::Any) => format!(
                "{} on any interface (neither VirtualIP names its interface, so they may share one)",
                self.family()
            ),
        }
    }
}

fn names<'a>(family: &str, it: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<&str> = it.map(String::as_str).collect();
    match list.as_slice() {
        [one] => format!("interface {one} ({family})"),
        many => format!("interfaces {} ({family})", many.join(", ")),
    }
}

impl fmt::Display for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.interfaces {
            Interfaces::Named(n) => f.write_str(&names(self.family(), n.iter())),
            Interfaces::Any => write!(f, "{} on any interface", self.family()),
        }
    }
}

/// One key of the VRID bitmaps: all unnamed requests of a family, or one named interface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Slot {
    Any { v6: bool },
    Interface { v6: bool, name: String },
}

fn slots(space: &Space) -> Vec<Slot> {
    match &space.interfaces {
        Interfaces::Any => vec![Slot::Any { v6: space.v6 }],
        Interfaces::Named(n) => n
            .iter()
            .map(|name| Slot::Interface {
                v6: space.v6,
                name: name.clone(),
            })
            .collect(),
    }
}

/// 255 bits: which VRIDs of a slot are taken.
#[derive(Default, Clone, Copy)]
struct Taken([u64; 4]);

impl Taken {
    fn contains(&self, v: u8) -> bool {
        self.0[usize::from(v / 64)] & (1 << (v % 64)) != 0
    }
    fn insert(&mut self, v: u8) {
        self.0[usize::from(v / 64)] |= 1 << (v % 64);
    }
    fn union(&mut self, other: &Taken) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
    }
    fn lowest_free(&self) -> Option<u8> {
        (1..=255u8).find(|v| !self.contains(*v))
    }
}

#[derive(Default)]
struct Book {
    taken: BTreeMap<Slot, Taken>,
    /// (family, VRID) → the requests holding it.
    holders: HashMap<(bool, u8), Vec<usize>>,
}

impl Book {
    /// The VRIDs `space` cannot use: its own slots', the unnamed requests' of its family, and
    /// (for an unnamed request) every named interface's of its family.
    fn blocked(&self, space: &Space) -> Taken {
        let mut t = Taken::default();
        for (slot, bits) in &self.taken {
            let relevant = match (slot, &space.interfaces) {
                (Slot::Any { v6 }, _) => *v6 == space.v6,
                (Slot::Interface { v6, .. }, Interfaces::Any) => *v6 == space.v6,
                (Slot::Interface { v6, name }, Interfaces::Named(n)) => {
                    *v6 == space.v6 && n.contains(name)
                }
            };
            if relevant {
                t.union(bits);
            }
        }
        t
    }

    fn take(&mut self, i: usize, space: &Space, v: u8) {
        for s in slots(space) {
            self.taken.entry(s).or_default().insert(v);
        }
        self.holders.entry((space.v6, v)).or_default().push(i);
    }
}

/// Assign VRIDs; the result is parallel to `requests`.
pub fn assign(requests: &[Request]) -> Vec<Outcome> {
    let spaces: Vec<Space> = requests.iter().map(Space::of).collect();

    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (&requests[a], &requests[b]);
        ra.created
            .cmp(&rb.created)
            .then_with(|| ra.key.cmp(&rb.key))
    });

    let mut book = Book::default();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; requests.len()];
    let mut conflicts: Vec<Vec<VipKey>> = vec![Vec::new(); requests.len()];
    let mut unplaced = Vec::new();

    for &i in &order {
        let r = &requests[i];
        let space = &spaces[i];
        let claim = r.explicit.or(r.recorded).filter(|v| *v != 0);
        let Some(v) = claim else {
            unplaced.push(i);
            continue;
        };
        let owner = book
            .holders
            .get(&(space.v6, v))
            .and_then(|h| h.iter().copied().find(|&o| spaces[o].overlaps(space)));
        match owner {
            Some(owner) if r.explicit.is_some() => {
                conflicts[owner].push(r.key.clone());
                outcomes[i] = Some(Outcome::Lost {
                    vrid: v,
                    network: space.clash(&spaces[owner]),
                    winner: requests[owner].key.clone(),
                });
            }
            Some(_) => unplaced.push(i),
            None => {
                book.take(i, space, v);
                outcomes[i] = Some(Outcome::Assigned {
                    vrid: v,
                    conflicts_with: Vec::new(),
                });
            }
        }
    }
    // Pass 2 keeps the age order (unplaced was filled in that order).
    for i in unplaced {
        let space = &spaces[i];
        outcomes[i] = Some(match book.blocked(space).lowest_free() {
            Some(v) => {
                book.take(i, space, v);
                Outcome::Assigned {
                    vrid: v,
                    conflicts_with: Vec::new(),
                }
            }
            None => Outcome::Exhausted {
                network: space.to_string(),
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

    fn key(name: &str) -> VipKey {
        VipKey {
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    /// A request on `ifaces` (comma-separated; empty: no interface named).
    fn on(
        name: &str,
        created: i64,
        addr: &str,
        ifaces: &str,
        explicit: Option<u8>,
        recorded: Option<u8>,
    ) -> Request {
        let mut it = ifaces.split(',').filter(|s| !s.is_empty());
        let first = it.next();
        Request {
            key: key(name),
            created: Some(Timestamp::from_second(created).unwrap()),
            first_address: crds::validate::parse_address(addr).unwrap(),
            interfaces: Interfaces::from_spec(first, it),
            explicit,
            recorded,
        }
    }

    fn req(
        name: &str,
        created: i64,
        addr: &str,
        explicit: Option<u8>,
        recorded: Option<u8>,
    ) -> Request {
        on(name, created, addr, "", explicit, recorded)
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
    fn lowest_free_in_age_order() {
        let out = assign(&[
            req("c", 3, "192.0.2.30/24", None, None),
            req("a", 1, "192.0.2.10/24", None, None),
            req("b", 2, "198.51.100.10/24", None, None),
            req("d", 4, "192.0.2.40/24", Some(2), None),
        ]);
        // d holds 2 explicitly; a (oldest without a claim) gets 1, b 3, c 4: with no interface
        // named, another subnet may be on the same interface.
        assert_eq!(vrids(&out), vec![Some(4), Some(1), Some(3), Some(2)]);
    }

    #[test]
    fn families_are_separate() {
        let out = assign(&[
            req("a", 1, "192.0.2.10/24", None, None),
            req("b", 2, "2001:db8::10/64", None, None),
            on("c", 3, "192.0.2.20/24", "eth0", None, None),
            on("d", 4, "2001:db8::20/64", "eth0", None, None),
        ]);
        assert_eq!(vrids(&out), vec![Some(1), Some(1), Some(2), Some(2)]);
    }

    /// The planner table: (interface, family) is the VRID space, as on the wire.
    #[test]
    fn vrids_are_per_interface_and_family() {
        struct Row {
            what: &'static str,
            requests: Vec<Request>,
            vrids: Vec<Option<u8>>,
        }
        let rows = [
            Row {
                what: "two subnets on eth0 (issue 19: both got VRID 1)",
                requests: vec![
                    on("a", 1, "192.0.2.10/24", "eth0", None, None),
                    on("b", 2, "198.51.100.10/24", "eth0", None, None),
                ],
                vrids: vec![Some(1), Some(2)],
            },
            Row {
                what: "the same subnet on two interfaces",
                requests: vec![
                    on("a", 1, "192.0.2.10/24", "eth0", None, None),
                    on("b", 2, "192.0.2.20/24", "eth1", None, None),
                ],
                vrids: vec![Some(1), Some(1)],
            },
            Row {
                what: "an explicit VRID reused on another interface",
                requests: vec![
                    on("a", 1, "192.0.2.10/24", "eth0", Some(9), None),
                    on("b", 2, "198.51.100.10/24", "eth1", Some(9), None),
                ],
                vrids: vec![Some(9), Some(9)],
            },
            Row {
                what: "an explicit VRID reused on the same interface, other subnet",
                requests: vec![
                    on("a", 1, "192.0.2.10/24", "eth0", Some(9), None),
                    on("b", 2, "198.51.100.10/24", "eth0", Some(9), None),
                ],
                vrids: vec![Some(9), None],
            },
            Row {
                what: "no interface named clashes with any named one",
                requests: vec![
                    on("a", 1, "192.0.2.10/24", "eth1", None, None),
                    req("b", 2, "198.51.100.10/24", None, None),
                    on("c", 3, "203.0.113.10/24", "eth2", None, None),
                ],
                vrids: vec![Some(1), Some(2), Some(1)],
            },
            Row {
                what: "a per-node override puts a request on a second interface",
                requests: vec![
                    on("a", 1, "192.0.2.10/24", "eth0,eth1", None, None),
                    on("b", 2, "198.51.100.10/24", "eth1", None, None),
                    on("c", 3, "203.0.113.10/24", "eth2", None, None),
                ],
                vrids: vec![Some(1), Some(2), Some(1)],
            },
            Row {
                what: "a recorded VRID that now clashes is reallocated",
                requests: vec![
                    on("a", 1, "192.0.2.10/24", "eth0", None, Some(1)),
                    on("b", 2, "198.51.100.10/24", "eth0", None, Some(1)),
                ],
                vrids: vec![Some(1), Some(2)],
            },
        ];
        for row in rows {
            assert_eq!(vrids(&assign(&row.requests)), row.vrids, "{}", row.what);
        }
    }

    #[test]
    fn a_vrid_conflict_names_the_interface_of_the_clash() {
        let out = assign(&[
            on("old", 1, "192.0.2.10/24", "eth0,eth1", Some(7), None),
            on("new", 2, "198.51.100.10/24", "eth1,eth2", Some(7), None),
            req("bare", 3, "203.0.113.10/24", Some(7), None),
            on("v6", 4, "2001:db8::10/64", "eth1", Some(7), None),
        ]);
        assert_eq!(
            out[1],
            Outcome::Lost {
                vrid: 7,
                network: "interface eth1 (IPv4)".into(),
                winner: key("old"),
            }
        );
        assert_eq!(
            out[2],
            Outcome::Lost {
                vrid: 7,
                network: "interfaces eth0, eth1 (IPv4) (the other VirtualIP names no interface, \
                          so it may run there)"
                    .into(),
                winner: key("old"),
            }
        );
        assert_eq!(
            out[0],
            Outcome::Assigned {
                vrid: 7,
                conflicts_with: vec![key("bare"), key("new")],
            }
        );
        assert_eq!(vrids(&out[3..]), vec![Some(7)], "IPv6 is another space");
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
                network: "IPv4 on any interface (neither VirtualIP names its interface, so they \
                          may share one)"
                    .into(),
                winner: key("old"),
            }
        );
        assert_eq!(
            out[1],
            Outcome::Assigned {
                vrid: 9,
                conflicts_with: vec![key("new")]
            }
        );
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
    fn exhaustion_is_reported() {
        let mut reqs: Vec<Request> = (0..255)
            .map(|i| on(&format!("v{i:03}"), i, "192.0.2.1/24", "eth0", None, None))
            .collect();
        reqs.push(on("last", 1000, "198.51.100.2/24", "eth0", None, None));
        reqs.push(on("other", 1001, "198.51.100.3/24", "eth1", None, None));
        let out = assign(&reqs);
        assert!(vrids(&out[..255]).iter().all(Option::is_some));
        assert_eq!(
            out[255],
            Outcome::Exhausted {
                network: "interface eth0 (IPv4)".into()
            }
        );
        assert_eq!(vrids(&out[256..]), vec![Some(1)]);
    }
}
