//! kube-vrrp's API: the `VirtualIP`, `VRRPNode` and `VirtualIPPool` types, their validation, the pure
//! resolution of a VirtualIP for one node, and CRD generation. Shared by the operator, the
//! agent and the keepalived.conf reader (`kube-vrrp-keepalived`, which converts to these types).
//!
//! - [`virtualip`] / [`vrrpnode`]: the custom resources (schema, CEL rules, printer columns).
//! - [`pool`]: the `VirtualIPPool` resource (addresses for Services of type LoadBalancer) and
//!   the parsing of its address ranges.
//! - [`auth`]: PASS passwords in cluster mode (per-node Secrets, `authKey`, [`auth::Password`]).
//! - [`policy`]: the cluster admin's script policy (may a VirtualIP run commands?).
//! - [`validate`]: semantic validation returning every problem with its field path.
//! - [`events`]: Event names valid for object names of any length.
//! - [`resolve`]: VirtualIP × facts about a node → [`vrrpnode::ResolvedInstance`].
//! - [`crd_yaml`]: the CRDs as YAML, as `kube-vrrp-operator crd` prints them.

pub mod auth;
pub mod events;
pub mod policy;
pub mod pool;
pub mod resolve;
pub mod validate;
pub mod virtualip;
pub mod vrrpnode;

#[cfg(test)]
mod pool_schema_tests;
#[cfg(test)]
mod schema_tests;

pub use pool::{VirtualIPPool, VirtualIPPoolSpec, VirtualIPPoolStatus};
pub use virtualip::{VirtualIP, VirtualIPSpec, VirtualIPStatus};
pub use vrrpnode::{ResolvedInstance, VRRPNode, VRRPNodeSpec, VRRPNodeStatus};

use kube::CustomResourceExt;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Serialising a CRD to YAML failed.
    #[error("cannot render CRD as YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// A spec failed validation.
    #[error("invalid spec:\n{0}")]
    Invalid(validate::Problems),
}

/// The `VirtualIP` CRD as a YAML document.
pub fn virtualip_crd_yaml() -> Result<String, Error> {
    Ok(serde_yaml::to_string(&VirtualIP::crd())?)
}

/// The `VRRPNode` CRD as a YAML document.
pub fn vrrpnode_crd_yaml() -> Result<String, Error> {
    Ok(serde_yaml::to_string(&VRRPNode::crd())?)
}

/// The `VirtualIPPool` CRD as a YAML document.
pub fn virtualippool_crd_yaml() -> Result<String, Error> {
    Ok(serde_yaml::to_string(&VirtualIPPool::crd())?)
}

/// Every CRD as one multi-document YAML stream.
pub fn crd_yaml() -> Result<String, Error> {
    Ok(format!(
        "---\n{}---\n{}---\n{}",
        virtualip_crd_yaml()?,
        vrrpnode_crd_yaml()?,
        virtualippool_crd_yaml()?
    ))
}

/// Whole milliseconds of a Kubernetes duration (negative durations count as 0).
pub fn duration_ms(d: kube::core::Duration) -> u64 {
    if d.is_negative() {
        return 0;
    }
    let std: std::time::Duration = d.into();
    u64::try_from(std.as_millis()).unwrap_or(u64::MAX)
}
