//! The `VirtualIPPool` custom resource: addresses the operator hands out to Services of type
//! `LoadBalancer`, and the VRRP settings the resulting virtual routers run with.
//!
//! Cluster-scoped, like MetalLB's `IPAddressPool`. The schema rejects a malformed entry of
//! `spec.addresses` at apply time (CEL); what CEL cannot see — a range whose first address is
//! above its last, entries of one pool that overlap, and pools that overlap each other — is
//! checked in Rust ([`parse_addresses`], [`overlaps`]) and reported in the pool's status.

// kube's `printcolumn(name = …, type_ = "string", …)` repeats `type_` on purpose.
#![allow(clippy::duplicated_attributes)]

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::validate::{Problems, validate_spec};
use crate::virtualip::{Authentication, Garp, Notify, Track, Unicast, VirtualIPSpec};

/// Most entries of `spec.addresses`.
pub const MAX_POOL_ENTRIES: usize = 64;

/// A pool of addresses for Services of type `LoadBalancer`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[cfg_attr(test, kube(cel))]
#[kube(
    group = "kubevrrp.io",
    version = "v1alpha1",
    kind = "VirtualIPPool",
    plural = "virtualippools",
    singular = "virtualippool",
    shortname = "vippool",
    shortname = "vippools",
    category = "kubevrrp",
    status = "VirtualIPPoolStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "Addresses handed out to Services of type LoadBalancer, announced with VRRP.",
    printcolumn(name = "Addresses", type_ = "string", json_path = ".spec.addresses"),
    printcolumn(name = "Assigned", type_ = "integer", json_path = ".status.assigned"),
    printcolumn(name = "Available", type_ = "integer", json_path = ".status.available"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualIPPoolSpec {
    /// The addresses: CIDRs (`192.0.2.0/24`, `2001:db8::/120`) or inclusive ranges
    /// (`192.0.2.10-192.0.2.50`), IPv4 and/or IPv6. At most 64 entries; entries must not
    /// overlap each other or another pool.
    #[schemars(length(min = 1, max = 64), inner(length(min = 1, max = 100)))]
    #[x_kube(validation = Rule::new(
        "self.all(a, isCIDR(a) || (size(a.split('-')) == 2 && isIP(a.split('-')[0]) && isIP(a.split('-')[1]) && ip(a.split('-')[0]).family() == ip(a.split('-')[1]).family()))"
    ).message("addresses: every entry must be a CIDR such as 192.0.2.0/24 or a range such as 192.0.2.10-192.0.2.50 (both ends of one family)"))]
    pub addresses: Vec<String>,

    /// Hand out addresses of this pool to Services that do not name a pool
    /// (annotation `kubevrrp.io/pool`) or an address. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_assign: Option<bool>,

    /// Never hand out IPv4 addresses ending in `.0` or `.255` (some old clients and routers
    /// treat them as network or broadcast addresses). Default false.
    #[serde(
        default,
        rename = "avoidBuggyIPs",
        skip_serializing_if = "Option::is_none"
    )]
    pub avoid_buggy_ips: Option<bool>,

    /// Only Services whose labels match may get addresses of this pool. Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,

    /// Only Services in namespaces whose labels match may get addresses of this pool.
    /// Default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// The VirtualIP settings of the virtual routers that carry this pool's addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<VirtualIPTemplate>,
}

/// The VRRP settings applied to the addresses a pool hands out: the fields of a VirtualIP
/// spec that are not per-address (the operator fills in addresses, the VRID, and per-node
/// priorities that spread the masters).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.version) || self.version == 3 || !has(self.advertInterval) || (duration(self.advertInterval).getMilliseconds() % 1000 == 0 && duration(self.advertInterval) >= duration('1s') && duration(self.advertInterval) <= duration('255s'))"
).message("template.advertInterval: VRRPv2 needs a whole number of seconds from 1s to 255s").field_path(".advertInterval"))]
#[x_kube(validation = Rule::new(
    "(has(self.version) && self.version == 2) || !has(self.advertInterval) || (duration(self.advertInterval).getMilliseconds() % 10 == 0 && duration(self.advertInterval) >= duration('10ms') && duration(self.advertInterval) <= duration('40950ms'))"
).message("template.advertInterval: VRRPv3 needs 10ms to 40.95s in steps of 10ms").field_path(".advertInterval"))]
#[x_kube(validation = Rule::new(
    "!has(self.authentication) || (has(self.version) && self.version == 2)"
).message("template.authentication: only VRRPv2 has authentication; set version: 2 or remove it").field_path(".authentication"))]
pub struct VirtualIPTemplate {
    /// VRRP version, 2 or 3. Default 3. IPv6 addresses need 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 3))]
    pub version: Option<u8>,
    /// Interface VRRP runs on. Default: the node interface whose subnet holds the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15))]
    pub interface: Option<String>,
    /// Priority of the node chosen as master of a router, 1–255 (default 100); its backups
    /// get one less each (never below 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 255))]
    pub priority: Option<u8>,
    /// Advertisement interval (`1s`, `100ms`). Default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')").message("advertInterval must be a positive duration such as 1s or 100ms"))]
    pub advert_interval: Option<kube::core::Duration>,
    /// Preempt a lower-priority master. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempt: Option<bool>,
    /// Wait this long after start-up before preempting, 0s–1000s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('0s') && duration(self) <= duration('1000s')").message("preemptDelay must be between 0s and 1000s"))]
    pub preempt_delay: Option<kube::core::Duration>,
    /// Accept packets addressed to the VIPs while master (keepalived `accept`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept: Option<bool>,
    /// VRRPv2 password; the Secret lives in the operator's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Authentication>,
    /// Unicast adverts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unicast: Option<Unicast>,
    /// Nodes that may announce this pool's addresses. Default: every node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// Trackers (as in a VirtualIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<Track>,
    /// Gratuitous ARP / NA settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub garp: Option<Garp>,
    /// Notify scripts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
}

/// Observed state of a pool, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualIPPoolStatus {
    /// Addresses of this pool held by at least one Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned: Option<i64>,
    /// Addresses still free (after `avoidBuggyIPs`); saturates at 2^63−1 for large IPv6 pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<i64>,
    /// `Ready`: False with reason `InvalidSpec` or `Overlap` when the pool hands out nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// An inclusive range of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressRange {
    /// First address.
    pub first: IpAddr,
    /// Last address (same family, not below `first`).
    pub last: IpAddr,
}

/// An address as a number (IPv4 in the low 32 bits).
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of the same family as `like` with this number (`None` when out of range).
pub fn u128_to_ip(like: IpAddr, n: u128) -> Option<IpAddr> {
    match like {
        IpAddr::V4(_) => u32::try_from(n)
            .ok()
            .map(|v| IpAddr::V4(std::net::Ipv4Addr::from(v))),
        IpAddr::V6(_) => Some(IpAddr::V6(std::net::Ipv6Addr::from(n))),
    }
}

impl AddressRange {
    /// Whether the range holds `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.first.is_ipv4()
            && (ip_to_u128(self.first)..=ip_to_u128(self.last)).contains(&ip_to_u128(ip))
    }
    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &AddressRange) -> bool {
        self.first.is_ipv4() == other.first.is_ipv4()
            && ip_to_u128(self.first) <= ip_to_u128(other.last)
            && ip_to_u128(other.first) <= ip_to_u128(self.last)
    }
    /// Number of addresses (saturating at `u128::MAX` for the whole IPv6 space).
    pub fn len(&self) -> u128 {
        (ip_to_u128(self.last) - ip_to_u128(self.first)).saturating_add(1)
    }
    /// Never empty: a range holds at least its first address.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Whether `ip` is an IPv4 address ending in `.0` or `.255` (skipped with `avoidBuggyIPs`).
pub fn is_buggy(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => matches!(a.octets()[3], 0 | 255),
        IpAddr::V6(_) => false,
    }
}

/// Parse one entry of `spec.addresses`: a CIDR (host bits are ignored: the whole network is
/// used) or `first-last`.
pub fn parse_entry(s: &str) -> Result<AddressRange, String> {
    let s = s.trim();
    if let Some((a, b)) = s.split_once('-') {
        let first: IpAddr = a.trim().parse().map_err(|_| {
            format!("{a:?} (first address of the range {s:?}) is not an IP address")
        })?;
        let last: IpAddr = b
            .trim()
            .parse()
            .map_err(|_| format!("{b:?} (last address of the range {s:?}) is not an IP address"))?;
        if first.is_ipv4() != last.is_ipv4() {
            return Err(format!("{s:?}: both ends of a range must be of one family"));
        }
        if ip_to_u128(first) > ip_to_u128(last) {
            return Err(format!("{s:?}: the first address is above the last"));
        }
        return Ok(AddressRange { first, last });
    }
    let net: IpNet = s.parse().map_err(|_| {
        format!("{s:?} is not a CIDR such as 192.0.2.0/24 or a range such as 192.0.2.10-192.0.2.50")
    })?;
    Ok(AddressRange {
        first: net.network(),
        last: net.broadcast(),
    })
}

/// The ranges of a pool, in the order written, or every problem (with its field path).
pub fn parse_addresses(spec: &VirtualIPPoolSpec) -> Result<Vec<AddressRange>, Problems> {
    let mut problems = Problems::default();
    if spec.addresses.is_empty() {
        problems.push("spec.addresses", "at least one CIDR or range is required");
    }
    if spec.addresses.len() > MAX_POOL_ENTRIES {
        problems.push(
            "spec.addresses",
            format!(
                "{} entries; at most {MAX_POOL_ENTRIES}",
                spec.addresses.len()
            ),
        );
    }
    let mut ranges: Vec<(usize, AddressRange)> = Vec::new();
    for (i, a) in spec.addresses.iter().enumerate() {
        match parse_entry(a) {
            Ok(r) => {
                if let Some((j, _)) = ranges.iter().find(|(_, o)| o.overlaps(&r)) {
                    problems.push(
                        format!("spec.addresses[{i}]"),
                        format!(
                            "{a:?} overlaps spec.addresses[{j}] ({:?})",
                            spec.addresses[*j]
                        ),
                    );
                }
                ranges.push((i, r));
            }
            Err(why) => problems.push(format!("spec.addresses[{i}]"), why),
        }
    }
    if let Some(t) = &spec.template
        && t.version == Some(2)
        && let Some((i, _)) = ranges.iter().find(|(_, r)| r.first.is_ipv6())
    {
        problems.push(
            "spec.template.version",
            format!("VRRPv2 carries IPv4 only, and spec.addresses[{i}] is IPv6; use version 3"),
        );
    }
    if let Some(t) = &spec.template {
        // The template is a VirtualIP spec without addresses: check it as one, with one
        // address of the pool, and name the template's fields.
        let sample = ranges
            .iter()
            .map(|(_, r)| r.first)
            .find(|a| a.is_ipv4() || t.version != Some(2));
        let spec = t.to_spec(vec![
            sample.map_or_else(|| "192.0.2.1".to_string(), |a| a.to_string()),
        ]);
        for p in validate_spec(&spec).iter() {
            let path = p.path.strip_prefix("spec.").map_or_else(
                || "spec.template".to_string(),
                |r| format!("spec.template.{r}"),
            );
            problems.push(path, p.message.clone());
        }
    }
    if problems.is_empty() {
        Ok(ranges.into_iter().map(|(_, r)| r).collect())
    } else {
        Err(problems)
    }
}

/// A pair of pools that share addresses: the first range of `a` that overlaps one of `b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    /// The range of the first pool.
    pub range: AddressRange,
    /// The range of the other pool it overlaps.
    pub other: AddressRange,
}

/// The first overlap between two pools' ranges, if any.
pub fn overlaps(a: &[AddressRange], b: &[AddressRange]) -> Option<Overlap> {
    a.iter().find_map(|ra| {
        b.iter().find(|rb| ra.overlaps(rb)).map(|rb| Overlap {
            range: *ra,
            other: *rb,
        })
    })
}

impl VirtualIPTemplate {
    /// A VirtualIP spec with these settings and the given addresses.
    pub fn to_spec(&self, addresses: Vec<String>) -> VirtualIPSpec {
        VirtualIPSpec {
            version: self.version,
            interface: self.interface.clone(),
            priority: self.priority,
            advert_interval: self.advert_interval,
            preempt: self.preempt,
            preempt_delay: self.preempt_delay,
            accept: self.accept,
            authentication: self.authentication.clone(),
            addresses,
            unicast: self.unicast.clone(),
            node_selector: self.node_selector.clone(),
            track: self.track.clone(),
            garp: self.garp.clone(),
            notify: self.notify.clone(),
            ..Default::default()
        }
    }
}

impl VirtualIPPoolSpec {
    /// Effective `autoAssign` (default true).
    pub fn auto_assign_or_default(&self) -> bool {
        self.auto_assign.unwrap_or(true)
    }
    /// Effective `avoidBuggyIPs` (default false).
    pub fn avoid_buggy_ips_or_default(&self) -> bool {
        self.avoid_buggy_ips.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(addresses: &[&str]) -> VirtualIPPoolSpec {
        VirtualIPPoolSpec {
            addresses: addresses.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn entries_parse_as_cidr_or_range() {
        let r = parse_entry("192.0.2.5/30").unwrap();
        assert_eq!(r.to_string(), "192.0.2.4-192.0.2.7");
        assert_eq!(r.len(), 4);
        let r = parse_entry("198.51.100.10 - 198.51.100.20").unwrap();
        assert_eq!(r.len(), 11);
        assert!(r.contains("198.51.100.20".parse().unwrap()));
        assert!(!r.contains("198.51.100.21".parse().unwrap()));
        assert!(!r.contains("2001:db8::1".parse().unwrap()));
        let r = parse_entry("2001:db8::/64").unwrap();
        assert_eq!(r.len(), 1 << 64);
        assert_eq!(parse_entry("192.0.2.7").map(|r| r.len()), Err("\"192.0.2.7\" is not a CIDR such as 192.0.2.0/24 or a range such as 192.0.2.10-192.0.2.50".into()));
        assert_eq!(parse_entry("192.0.2.7/32").map(|r| r.len()), Ok(1));
    }

    #[test]
    fn malformed_entries_are_named() {
        for (entry, why) in [
            ("192.0.2.20-192.0.2.10", "first address is above the last"),
            ("192.0.2.1-2001:db8::1", "one family"),
            ("nope-192.0.2.1", "first address of the range"),
            ("192.0.2.1-", "last address of the range"),
            ("192.0.2.0/33", "is not a CIDR"),
        ] {
            let e = parse_addresses(&pool(&["198.51.100.0/24", entry])).unwrap_err();
            let text = e.to_string();
            assert!(text.starts_with("spec.addresses[1]: "), "{entry}: {text}");
            assert!(text.contains(why), "{entry}: {text}");
        }
        let e = parse_addresses(&pool(&[])).unwrap_err();
        assert!(e.to_string().contains("at least one"));
    }

    #[test]
    fn overlapping_entries_of_one_pool_are_refused() {
        let e = parse_addresses(&pool(&["192.0.2.0/24", "192.0.2.100-192.0.2.110"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "spec.addresses[1]: \"192.0.2.100-192.0.2.110\" overlaps spec.addresses[0] (\"192.0.2.0/24\")"
        );
        assert!(
            parse_addresses(&pool(&["192.0.2.0/25", "192.0.2.128/25", "2001:db8::/120"])).is_ok()
        );
    }

    #[test]
    fn pools_overlap_only_within_a_family() {
        let a = parse_addresses(&pool(&["192.0.2.0/24", "2001:db8::/120"])).unwrap();
        let b = parse_addresses(&pool(&["192.0.2.255-192.0.3.10"])).unwrap();
        let c = parse_addresses(&pool(&["198.51.100.0/24", "2001:db8::100/120"])).unwrap();
        let o = overlaps(&a, &b).unwrap();
        assert_eq!(o.range.to_string(), "192.0.2.0-192.0.2.255");
        assert!(overlaps(&a, &c).is_none());
        assert!(overlaps(&b, &c).is_none());
    }

    #[test]
    fn template_problems_name_the_template_field() {
        let mut p = pool(&["2001:db8::/120"]);
        p.template = Some(VirtualIPTemplate {
            version: Some(2),
            advert_interval: Some("1500ms".parse().unwrap()),
            ..Default::default()
        });
        let text = parse_addresses(&p).unwrap_err().to_string();
        assert!(text.contains("spec.template.advertInterval"), "{text}");
    }

    #[test]
    fn buggy_addresses() {
        assert!(is_buggy("192.0.2.0".parse().unwrap()));
        assert!(is_buggy("192.0.2.255".parse().unwrap()));
        assert!(!is_buggy("192.0.2.1".parse().unwrap()));
        assert!(!is_buggy("2001:db8::ff".parse().unwrap()));
    }
}
