//! Services of type `LoadBalancer`: which Services are served, which addresses they get, and
//! the VirtualIPs that announce those addresses. Pure, like the rest of the planner.
//!
//! - [`pools`]: the `VirtualIPPool`s as the allocator sees them (parsed ranges, selectors,
//!   overlaps between pools resolved oldest first).
//! - [`allocator`]: the address allocator. Deterministic (lowest free address of the first
//!   pool, pools in name order), never gives one address to two Services unless they share it
//!   under the sharing rules, keeps what a Service has, and rebuilds itself from the Services'
//!   `status.loadBalancer.ingress` after a restart without moving anything.
//! - [`groups`]: the data plane. The allocated addresses are packed into VRRP instances
//!   (VirtualIPs in the operator's namespace), many Services per VRID, grouped by pool,
//!   `externalTrafficPolicy` and eligible node set, with the masters spread over the nodes.
//!
//! This module also reads what allocation needs of a Service ([`ServiceRequest`]).

pub mod allocator;
pub mod groups;
pub mod pools;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use crds::vrrpnode::ObjectRef;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;

pub use allocator::{AllocError, Allocator, Assignment};
pub use groups::{GroupInput, GroupPlan};
pub use pools::{Pool, PoolProblem, Pools};

/// `spec.loadBalancerClass` of the Services the operator serves.
pub const LOAD_BALANCER_CLASS: &str = "kubevrrp.io/vrrp";
/// Annotation asking for specific addresses (comma-separated, one per family).
pub const IPS_ANNOTATION: &str = "kubevrrp.io/loadBalancerIPs";
/// Annotation naming the pool to allocate from.
pub const POOL_ANNOTATION: &str = "kubevrrp.io/pool";
/// Annotation with a sharing key: Services with the same key and no clashing port may share
/// an address.
pub const SHARING_ANNOTATION: &str = "kubevrrp.io/allow-shared-ip";
/// Annotation the operator writes on a Service: the node announcing its address.
pub const ANNOUNCED_ANNOTATION: &str = "kubevrrp.io/announced-from";
/// `ipMode` of the ingress entries the operator writes: traffic arrives with the VIP as
/// destination.
pub const IP_MODE: &str = "VIP";

/// Identity of a Service: namespace and name.
pub type SvcKey = ObjectRef;

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// `externalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum TrafficPolicy {
    /// Any node may receive the traffic (the default).
    #[default]
    Cluster,
    /// Only nodes with a Ready endpoint of the Service may receive it.
    Local,
}

impl fmt::Display for TrafficPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TrafficPolicy::Cluster => "Cluster",
            TrafficPolicy::Local => "Local",
        })
    }
}

/// A Service port as far as sharing is concerned: protocol and port number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    /// TCP, UDP or SCTP.
    pub protocol: String,
    /// The port.
    pub port: i32,
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

/// What the allocator needs to know about one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRequest {
    /// The Service.
    pub key: SvcKey,
    /// Its creation time: older Services win when two claim the same address.
    pub created: Option<Timestamp>,
    /// Its labels (for pools' `serviceSelector`).
    pub labels: BTreeMap<String, String>,
    /// Its namespace's labels (for pools' `namespaceSelector`).
    pub namespace_labels: BTreeMap<String, String>,
    /// One address is needed per family, in this order (`spec.ipFamilies`).
    pub families: Vec<Family>,
    /// `kubevrrp.io/loadBalancerIPs`: the addresses asked for, or why the annotation is bad.
    pub requested: Option<Result<Vec<IpAddr>, String>>,
    /// `kubevrrp.io/pool`.
    pub pool: Option<String>,
    /// `kubevrrp.io/allow-shared-ip`.
    pub sharing_key: Option<String>,
    /// The ports, for the sharing rules.
    pub ports: Vec<Port>,
    /// `spec.externalTrafficPolicy`.
    pub policy: TrafficPolicy,
    /// The addresses in `status.loadBalancer.ingress` (what it had before a restart).
    pub previous: Vec<IpAddr>,
}

/// Whether the operator serves this Service: type `LoadBalancer` and class
/// [`LOAD_BALANCER_CLASS`], or no class when `default_class` is set.
pub fn served(svc: &Service, default_class: bool) -> bool {
    let Some(spec) = &svc.spec else {
        return false;
    };
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return false;
    }
    match spec.load_balancer_class.as_deref() {
        Some(c) => c == LOAD_BALANCER_CLASS,
        None => default_class,
    }
}

/// The key of a Service.
pub fn svc_key(svc: &Service) -> SvcKey {
    ObjectRef {
        namespace: svc.metadata.namespace.clone().unwrap_or_default(),
        name: svc.metadata.name.clone().unwrap_or_default(),
    }
}

/// Parse the `kubevrrp.io/loadBalancerIPs` annotation: comma-separated addresses, at most one
/// per family.
pub fn parse_requested(value: &str) -> Result<Vec<IpAddr>, String> {
    let mut out: Vec<IpAddr> = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ip: IpAddr = part
            .parse()
            .map_err(|_| format!("{IPS_ANNOTATION}: {part:?} is not an IP address"))?;
        if out.iter().any(|o| Family::of(*o) == Family::of(ip)) {
            return Err(format!(
                "{IPS_ANNOTATION}: more than one {} address; a Service gets one address per family",
                Family::of(ip)
            ));
        }
        out.push(ip);
    }
    if out.is_empty() {
        return Err(format!("{IPS_ANNOTATION}: no address given"));
    }
    Ok(out)
}

/// The address families of a Service: `spec.ipFamilies`, else the family of its cluster IP,
/// else IPv4.
pub fn service_families(svc: &Service) -> Vec<Family> {
    let spec = svc.spec.as_ref();
    let mut out: Vec<Family> = Vec::new();
    for f in spec
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
    {
        let fam = match f.as_str() {
            "IPv4" => Family::V4,
            "IPv6" => Family::V6,
            _ => continue,
        };
        if !out.contains(&fam) {
            out.push(fam);
        }
    }
    if out.is_empty() {
        let from_cluster_ip = spec
            .and_then(|s| s.cluster_ip.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .map(Family::of);
        out.push(from_cluster_ip.unwrap_or(Family::V4));
    }
    out
}

/// The addresses in a Service's `status.loadBalancer.ingress`.
pub fn ingress_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref())
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

/// Read a Service into a [`ServiceRequest`]; `namespace_labels` are its namespace's labels.
pub fn request_of(svc: &Service, namespace_labels: &BTreeMap<String, String>) -> ServiceRequest {
    let annotations = svc.metadata.annotations.clone().unwrap_or_default();
    let nonempty = |k: &str| {
        annotations
            .get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let spec = svc.spec.as_ref();
    let mut ports: Vec<Port> = spec
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|p| Port {
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            port: p.port,
        })
        .collect();
    ports.sort();
    ports.dedup();
    let policy = match spec.and_then(|s| s.external_traffic_policy.as_deref()) {
        Some("Local") => TrafficPolicy::Local,
        _ => TrafficPolicy::Cluster,
    };
    ServiceRequest {
        key: svc_key(svc),
        created: svc.metadata.creation_timestamp.as_ref().map(|t| t.0),
        labels: svc.metadata.labels.clone().unwrap_or_default(),
        namespace_labels: namespace_labels.clone(),
        families: service_families(svc),
        // The annotation, else the deprecated `spec.loadBalancerIP`.
        requested: annotations
            .get(IPS_ANNOTATION)
            .map(|v| parse_requested(v))
            .or_else(|| {
                spec.and_then(|s| s.load_balancer_ip.as_deref())
                    .filter(|ip| !ip.is_empty())
                    .map(parse_requested)
            }),
        pool: nonempty(POOL_ANNOTATION),
        sharing_key: nonempty(SHARING_ANNOTATION),
        ports,
        policy,
        previous: ingress_ips(svc),
    }
}

/// The nodes with a Ready endpoint of each Service, from EndpointSlices (label
/// `kubernetes.io/service-name`). An endpoint counts when `conditions.ready` is not false
/// (unset means ready, as kube-proxy reads it) and it names its node.
pub fn ready_endpoint_nodes(
    slices: &[std::sync::Arc<k8s_openapi::api::discovery::v1::EndpointSlice>],
) -> BTreeMap<SvcKey, BTreeSet<String>> {
    let mut out: BTreeMap<SvcKey, BTreeSet<String>> = BTreeMap::new();
    for s in slices {
        let Some(service) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
        else {
            continue;
        };
        let key = ObjectRef {
            namespace: s.metadata.namespace.clone().unwrap_or_default(),
            name: service.clone(),
        };
        let entry = out.entry(key).or_default();
        for e in &s.endpoints {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if ready && let Some(n) = &e.node_name {
                entry.insert(n.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_addresses_parse_one_per_family() {
        assert_eq!(
            parse_requested(" 192.0.2.10 , 2001:db8::10"),
            Ok(vec![
                "192.0.2.10".parse().unwrap(),
                "2001:db8::10".parse().unwrap()
            ])
        );
        assert!(
            parse_requested("192.0.2.10,192.0.2.11")
                .unwrap_err()
                .contains("more than one IPv4")
        );
        assert!(
            parse_requested("web")
                .unwrap_err()
                .contains("\"web\" is not an IP")
        );
        assert!(parse_requested(" , ").unwrap_err().contains("no address"));
    }
}
