//! The address allocator for Services of type `LoadBalancer`.
//!
//! State: which Service holds which addresses. The executor keeps one [`Allocator`] while it
//! leads, and rebuilds it after a restart from the Services' `status.loadBalancer.ingress`
//! ([`Allocator::restore`], oldest Service first) before it allocates anything new, so no
//! Service's address moves because the operator restarted.
//!
//! Rules of [`Allocator::assign`]:
//!
//! 1. A Service keeps what it holds (or, when the allocator does not know it yet, what its
//!    status says) as long as that still fits: one address per family of the Service, all in
//!    one usable pool that admits the Service (selectors), the pool it names and the addresses
//!    it asks for if it names any, and the sharing rules below.
//! 2. Otherwise it gets new addresses: the ones it asks for (`kubevrrp.io/loadBalancerIPs`),
//!    else from the pool it names (`kubevrrp.io/pool`; `autoAssign` does not matter then),
//!    else from the first pool by name with `autoAssign` that admits it. In a pool, a Service
//!    with a sharing key first joins the lowest address already used under that key where its
//!    ports fit, else it takes the lowest free address (ranges in order, IPv4 `.0`/`.255`
//!    skipped with `avoidBuggyIPs`). Every family comes from the same pool.
//! 3. Sharing: an address has several users only if they all carry the same
//!    `kubevrrp.io/allow-shared-ip` key, the same `externalTrafficPolicy` (one address is
//!    announced by one VRRP router, so one set of eligible nodes), and no port (protocol and
//!    number) twice.
//! 4. A Service that cannot get an address gets an [`AllocError`] naming the reason and holds
//!    nothing; no other Service's addresses change, ever, because of one Service's request.
//!
//! The outcome depends only on the current holdings and the request, never on timing, so the
//! same sequence of requests always gives the same addresses.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use crds::pool::{ip_to_u128, is_buggy, u128_to_ip};

use super::pools::{Pool, Pools};
use super::{Family, Port, ServiceRequest, SvcKey, TrafficPolicy};

/// The addresses one Service holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The pool they come from.
    pub pool: String,
    /// One address per family, in the order of the Service's `ipFamilies`.
    pub addresses: Vec<IpAddr>,
    /// The sharing key the Service had when it got them.
    pub sharing_key: Option<String>,
    /// Its ports.
    pub ports: Vec<Port>,
    /// Its `externalTrafficPolicy`.
    pub policy: TrafficPolicy,
}

/// Why a Service gets no address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocError {
    /// An annotation cannot be read.
    InvalidAnnotation(String),
    /// The pool named by `kubevrrp.io/pool` does not exist.
    PoolNotFound {
        /// The pool.
        pool: String,
    },
    /// The pool named exists but hands out nothing.
    PoolUnusable {
        /// The pool.
        pool: String,
        /// Why.
        why: String,
    },
    /// The pool's selectors do not admit the Service.
    PoolNotAllowed {
        /// The pool.
        pool: String,
    },
    /// No pool with `autoAssign` admits the Service.
    NoPool,
    /// The pools tried have no address of a family the Service needs.
    FamilyUnavailable {
        /// The pools tried.
        pools: Vec<String>,
        /// The family.
        family: Family,
    },
    /// Every address of the family is taken in the pools tried.
    PoolExhausted {
        /// The pools tried.
        pools: Vec<String>,
        /// The family.
        family: Family,
    },
    /// The addresses asked for are not one per family of the Service.
    FamilyMismatch {
        /// The Service's families.
        wanted: Vec<Family>,
        /// The addresses asked for.
        got: Vec<IpAddr>,
    },
    /// An address asked for is in no usable pool (or not in the pool named).
    NotInPool {
        /// The address.
        address: IpAddr,
        /// The pool named, if any.
        pool: Option<String>,
    },
    /// The addresses asked for come from different pools.
    MixedPools {
        /// The addresses.
        addresses: Vec<IpAddr>,
    },
    /// The address is held by another Service that does not share it with this one.
    InUse {
        /// The address.
        address: IpAddr,
        /// The holder.
        by: SvcKey,
        /// Why they cannot share.
        why: &'static str,
    },
    /// The address is shared under the same key, but a port is used twice.
    PortClash {
        /// The address.
        address: IpAddr,
        /// The other Service.
        with: SvcKey,
        /// The port both use.
        port: Port,
    },
}

impl AllocError {
    /// Condition and Event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            AllocError::InvalidAnnotation(_) => "InvalidAnnotation",
            AllocError::PoolNotFound { .. } => "PoolNotFound",
            AllocError::PoolUnusable { .. } => "PoolUnusable",
            AllocError::PoolNotAllowed { .. } => "PoolNotAllowed",
            AllocError::NoPool => "NoPool",
            AllocError::FamilyUnavailable { .. } => "FamilyUnavailable",
            AllocError::PoolExhausted { .. } => "PoolExhausted",
            AllocError::FamilyMismatch { .. } => "FamilyMismatch",
            AllocError::NotInPool { .. } => "AddressNotInPool",
            AllocError::MixedPools { .. } => "AddressNotInPool",
            AllocError::InUse { .. } => "AddressInUse",
            AllocError::PortClash { .. } => "PortClash",
        }
    }
}

fn key_text(k: &SvcKey) -> String {
    format!("{}/{}", k.namespace, k.name)
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllocError::InvalidAnnotation(why) => f.write_str(why),
            AllocError::PoolNotFound { pool } => {
                write!(f, "{}: pool {pool:?} does not exist", super::POOL_ANNOTATION)
            }
            AllocError::PoolUnusable { pool, why } => {
                write!(f, "pool {pool} hands out no address: {why}")
            }
            AllocError::PoolNotAllowed { pool } => write!(
                f,
                "pool {pool} does not admit this Service (its serviceSelector or namespaceSelector does not match)"
            ),
            AllocError::NoPool => f.write_str(
                "no VirtualIPPool with autoAssign admits this Service; create one or name one with kubevrrp.io/pool",
            ),
            AllocError::FamilyUnavailable { pools, family } => write!(
                f,
                "pool {} has no {family} address, and the Service needs one",
                pools.join(", ")
            ),
            AllocError::PoolExhausted { pools, family } => write!(
                f,
                "pool {} is full: no free {family} address",
                pools.join(", ")
            ),
            AllocError::FamilyMismatch { wanted, got } => {
                let wanted: Vec<String> = wanted.iter().map(ToString::to_string).collect();
                let got: Vec<String> = got.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "{}: the Service needs one address per family of its ipFamilies ({}), but {} was asked for",
                    super::IPS_ANNOTATION,
                    wanted.join(", "),
                    got.join(", ")
                )
            }
            AllocError::NotInPool {
                address,
                pool: Some(p),
            } => write!(f, "{address} is not an address of pool {p}"),
            AllocError::NotInPool { address, pool: None } => write!(
                f,
                "{address} is in no usable VirtualIPPool (or is skipped by avoidBuggyIPs)"
            ),
            AllocError::MixedPools { addresses } => {
                let a: Vec<String> = addresses.iter().map(ToString::to_string).collect();
                write!(f, "{} come from different pools; all addresses of a Service must come from one pool", a.join(", "))
            }
            AllocError::InUse { address, by, why } => write!(
                f,
                "{address} is already assigned to Service {} ({why})",
                key_text(by)
            ),
            AllocError::PortClash {
                address,
                with,
                port,
            } => write!(
                f,
                "{address} is shared with Service {}, which also uses port {port}",
                key_text(with)
            ),
        }
    }
}

impl std::error::Error for AllocError {}

/// Holdings and the index that checks them.
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    pools: Pools,
    assignments: BTreeMap<SvcKey, Assignment>,
    /// Address → its holders.
    users: BTreeMap<IpAddr, BTreeSet<SvcKey>>,
    /// Sharing key → the addresses with at least one holder under that key.
    by_key: BTreeMap<String, BTreeSet<IpAddr>>,
    /// (pool, family) → a number below which every address of the pool is held (a search
    /// hint, lowered whenever an address is freed).
    cursors: HashMap<(String, Family), u128>,
}

impl Allocator {
    /// An empty allocator over these pools.
    pub fn new(pools: Pools) -> Self {
        Self {
            pools,
            ..Default::default()
        }
    }

    /// The pools.
    pub fn pools(&self) -> &Pools {
        &self.pools
    }

    /// Replace the pools. Holdings stay as they are (so nobody else can take them); each
    /// Service's next [`assign`](Self::assign) re-checks its own against the new pools.
    pub fn set_pools(&mut self, pools: Pools) {
        self.pools = pools;
        self.cursors.clear();
    }

    /// What a Service holds.
    pub fn assignment(&self, key: &SvcKey) -> Option<&Assignment> {
        self.assignments.get(key)
    }

    /// Every holding, by Service.
    pub fn assignments(&self) -> &BTreeMap<SvcKey, Assignment> {
        &self.assignments
    }

    /// The holders of an address.
    pub fn holders(&self, ip: IpAddr) -> impl Iterator<Item = &SvcKey> {
        self.users.get(&ip).into_iter().flatten()
    }

    /// (addresses held, addresses free) of a pool; free saturates at `i64::MAX`.
    pub fn usage(&self, pool: &Pool) -> (i64, i64) {
        let held = pool
            .ranges
            .iter()
            .map(|r| {
                self.users
                    .range(r.first..=r.last)
                    .filter(|(a, _)| pool.holds(**a))
                    .count() as u128
            })
            .sum::<u128>();
        let free = pool.capacity().saturating_sub(held);
        (
            i64::try_from(held).unwrap_or(i64::MAX),
            i64::try_from(free).unwrap_or(i64::MAX),
        )
    }

    /// Give the Service its addresses (see the module rules). On error the Service holds
    /// nothing.
    pub fn assign(&mut self, req: &ServiceRequest) -> Result<Assignment, AllocError> {
        let current = self.take(&req.key);
        if let Some(Err(why)) = &req.requested {
            return Err(AllocError::InvalidAnnotation(why.clone()));
        }
        let mut candidates: Vec<Vec<IpAddr>> = Vec::new();
        if let Some(c) = current {
            candidates.push(c.addresses);
        }
        if !req.previous.is_empty() && !candidates.iter().any(|c| same_set(c, &req.previous)) {
            candidates.push(req.previous.clone());
        }
        for c in candidates {
            if let Some(addrs) = in_family_order(&c, &req.families)
                && self.fits_request(req, &addrs)
                && let Ok(pool) = self.check(req, &addrs)
            {
                return Ok(self.put(req, pool, addrs));
            }
        }
        let (pool, addrs) = self.pick(req)?;
        Ok(self.put(req, pool, addrs))
    }

    /// After a restart: keep what the Service's status says if it still fits; never allocate.
    /// Call for every served Service with addresses in its status, oldest first, before any
    /// [`assign`](Self::assign); a Service refused here gets new addresses from `assign` later.
    pub fn restore(&mut self, req: &ServiceRequest) -> Result<Assignment, AllocError> {
        if let Some(a) = self.assignments.get(&req.key) {
            return Ok(a.clone());
        }
        let Some(addrs) = in_family_order(&req.previous, &req.families) else {
            return Err(AllocError::FamilyMismatch {
                wanted: req.families.clone(),
                got: req.previous.clone(),
            });
        };
        if !self.fits_request(req, &addrs) {
            return Err(AllocError::InvalidAnnotation(
                "the addresses in status are not the ones the annotations ask for".into(),
            ));
        }
        let pool = self.check(req, &addrs)?;
        Ok(self.put(req, pool, addrs))
    }

    /// The Service gives up its addresses.
    pub fn release(&mut self, key: &SvcKey) -> Option<Assignment> {
        self.take(key)
    }

    /// Whether `addrs` are what the request's annotations ask for.
    fn fits_request(&self, req: &ServiceRequest, addrs: &[IpAddr]) -> bool {
        match &req.requested {
            Some(Ok(list)) => same_set(list, addrs),
            Some(Err(_)) => false,
            None => true,
        }
    }

    /// Whether the Service may hold `addrs` (in family order); the pool they come from.
    fn check(&self, req: &ServiceRequest, addrs: &[IpAddr]) -> Result<String, AllocError> {
        let Some(&first) = addrs.first() else {
            return Err(AllocError::FamilyMismatch {
                wanted: req.families.clone(),
                got: Vec::new(),
            });
        };
        let Some(pool) = self.pools.containing(first) else {
            return Err(AllocError::NotInPool {
                address: first,
                pool: req.pool.clone(),
            });
        };
        if let Some(a) = addrs.iter().find(|a| !pool.holds(**a)) {
            return Err(if self.pools.containing(*a).is_some() {
                AllocError::MixedPools {
                    addresses: addrs.to_vec(),
                }
            } else {
                AllocError::NotInPool {
                    address: *a,
                    pool: req.pool.clone(),
                }
            });
        }
        if let Some(named) = &req.pool
            && *named != pool.name
        {
            return Err(AllocError::NotInPool {
                address: first,
                pool: Some(named.clone()),
            });
        }
        if !pool.admits(req) {
            return Err(AllocError::PoolNotAllowed {
                pool: pool.name.clone(),
            });
        }
        for a in addrs {
            self.may_share(req, *a)?;
        }
        Ok(pool.name.clone())
    }

    /// Whether the Service may use `ip` alongside its current holders.
    fn may_share(&self, req: &ServiceRequest, ip: IpAddr) -> Result<(), AllocError> {
        for other in self.holders(ip).filter(|k| **k != req.key) {
            let Some(theirs) = self.assignments.get(other) else {
                continue;
            };
            let in_use = |why| AllocError::InUse {
                address: ip,
                by: other.clone(),
                why,
            };
            match (&req.sharing_key, &theirs.sharing_key) {
                (None, _) => {
                    return Err(in_use(
                        "this Service has no kubevrrp.io/allow-shared-ip key",
                    ));
                }
                (Some(_), None) => return Err(in_use("that Service does not allow sharing")),
                (Some(a), Some(b)) if a != b => {
                    return Err(in_use("its kubevrrp.io/allow-shared-ip key differs"));
                }
                _ => {}
            }
            if theirs.policy != req.policy {
                return Err(in_use("its externalTrafficPolicy differs"));
            }
            if let Some(port) = req.ports.iter().find(|p| theirs.ports.contains(p)) {
                return Err(AllocError::PortClash {
                    address: ip,
                    with: other.clone(),
                    port: port.clone(),
                });
            }
        }
        Ok(())
    }

    /// New addresses for the Service (rule 2).
    fn pick(&mut self, req: &ServiceRequest) -> Result<(String, Vec<IpAddr>), AllocError> {
        if let Some(Ok(list)) = &req.requested {
            let Some(addrs) = in_family_order(list, &req.families) else {
                return Err(AllocError::FamilyMismatch {
                    wanted: req.families.clone(),
                    got: list.clone(),
                });
            };
            let pool = self.check(req, &addrs)?;
            return Ok((pool, addrs));
        }
        let candidates: Vec<String> = match &req.pool {
            Some(name) => match self.pools.get(name) {
                Some(p) if p.admits(req) => vec![p.name.clone()],
                Some(_) => return Err(AllocError::PoolNotAllowed { pool: name.clone() }),
                None => {
                    return Err(match self.pools.problem(name) {
                        Some(why) => AllocError::PoolUnusable {
                            pool: name.clone(),
                            why: why.to_string(),
                        },
                        None => AllocError::PoolNotFound { pool: name.clone() },
                    });
                }
            },
            None => self
                .pools
                .iter()
                .filter(|p| p.auto_assign && p.admits(req))
                .map(|p| p.name.clone())
                .collect(),
        };
        if candidates.is_empty() {
            return Err(AllocError::NoPool);
        }
        let mut exhausted: Option<(Vec<String>, Family)> = None;
        let mut missing: Option<(Vec<String>, Family)> = None;
        'pools: for name in &candidates {
            let Some(pool) = self.pools.get(name).cloned() else {
                continue;
            };
            if let Some(f) = req.families.iter().find(|f| !pool.has_family(**f)) {
                missing
                    .get_or_insert_with(|| (Vec::new(), *f))
                    .0
                    .push(name.clone());
                continue;
            }
            let mut addrs = Vec::with_capacity(req.families.len());
            for f in &req.families {
                match self.find_address(req, &pool, *f) {
                    Some(a) => addrs.push(a),
                    None => {
                        exhausted
                            .get_or_insert_with(|| (Vec::new(), *f))
                            .0
                            .push(name.clone());
                        continue 'pools;
                    }
                }
            }
            return Ok((name.clone(), addrs));
        }
        Err(match (exhausted, missing) {
            (Some((pools, family)), _) => AllocError::PoolExhausted { pools, family },
            (None, Some((pools, family))) => AllocError::FamilyUnavailable { pools, family },
            (None, None) => AllocError::NoPool,
        })
    }

    /// An address of `family` in `pool` for the Service: one shared under its key if its
    /// ports fit, else the lowest free one.
    fn find_address(
        &mut self,
        req: &ServiceRequest,
        pool: &Pool,
        family: Family,
    ) -> Option<IpAddr> {
        if let Some(key) = &req.sharing_key
            && let Some(shared) = self.by_key.get(key)
            && let Some(a) = shared.iter().find(|a| {
                Family::of(**a) == family && pool.holds(**a) && self.may_share(req, **a).is_ok()
            })
        {
            return Some(*a);
        }
        let cursor_key = (pool.name.clone(), family);
        let start = self.cursors.get(&cursor_key).copied().unwrap_or(0);
        for r in pool.ranges_of(family) {
            let (first, last) = (ip_to_u128(r.first), ip_to_u128(r.last));
            if last < start {
                continue;
            }
            let mut n = first.max(start);
            // Walk over held addresses: the holders map is sorted, so skip runs quickly.
            let mut held = self
                .users
                .range(u128_to_ip(r.first, n)?..=r.last)
                .map(|(a, _)| ip_to_u128(*a))
                .peekable();
            loop {
                while held.peek().is_some_and(|h| *h < n) {
                    held.next();
                }
                let ip = u128_to_ip(r.first, n)?;
                let taken = held.peek() == Some(&n) || (pool.avoid_buggy_ips && is_buggy(ip));
                if !taken {
                    self.cursors.insert(cursor_key, n.saturating_add(1));
                    return Some(ip);
                }
                if n == last {
                    break;
                }
                n += 1;
            }
            // Everything up to the end of this range is held.
            self.cursors
                .insert(cursor_key.clone(), last.saturating_add(1));
        }
        None
    }

    /// Record a holding.
    fn put(&mut self, req: &ServiceRequest, pool: String, addrs: Vec<IpAddr>) -> Assignment {
        for a in &addrs {
            self.users.entry(*a).or_default().insert(req.key.clone());
            if let Some(k) = &req.sharing_key {
                self.by_key.entry(k.clone()).or_default().insert(*a);
            }
        }
        let a = Assignment {
            pool,
            addresses: addrs,
            sharing_key: req.sharing_key.clone(),
            ports: req.ports.clone(),
            policy: req.policy,
        };
        self.assignments.insert(req.key.clone(), a.clone());
        a
    }

    /// Remove a holding, keeping the indexes right.
    fn take(&mut self, key: &SvcKey) -> Option<Assignment> {
        let a = self.assignments.remove(key)?;
        for ip in &a.addresses {
            let now_free = match self.users.get_mut(ip) {
                Some(set) => {
                    set.remove(key);
                    set.is_empty()
                }
                None => true,
            };
            if now_free {
                self.users.remove(ip);
                if let Some(pool) = self.pools.containing(*ip) {
                    let c = self
                        .cursors
                        .entry((pool.name.clone(), Family::of(*ip)))
                        .or_insert(0);
                    *c = (*c).min(ip_to_u128(*ip));
                }
            }
            if let Some(k) = &a.sharing_key {
                let still = self.holders(*ip).any(|h| {
                    self.assignments
                        .get(h)
                        .is_some_and(|o| o.sharing_key.as_ref() == Some(k))
                });
                if !still && let Some(set) = self.by_key.get_mut(k) {
                    set.remove(ip);
                    if set.is_empty() {
                        self.by_key.remove(k);
                    }
                }
            }
        }
        Some(a)
    }
}

/// The addresses reordered to follow `families` (one each), or `None` when they are not
/// exactly one per family.
fn in_family_order(addrs: &[IpAddr], families: &[Family]) -> Option<Vec<IpAddr>> {
    if addrs.len() != families.len() {
        return None;
    }
    let mut out = Vec::with_capacity(families.len());
    for f in families {
        let mut of = addrs.iter().filter(|a| Family::of(**a) == *f);
        let a = of.next()?;
        if of.next().is_some() {
            return None;
        }
        out.push(*a);
    }
    Some(out)
}

fn same_set(a: &[IpAddr], b: &[IpAddr]) -> bool {
    let a: BTreeSet<&IpAddr> = a.iter().collect();
    let b: BTreeSet<&IpAddr> = b.iter().collect();
    a == b
}
