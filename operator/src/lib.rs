//! kube-vrrp operator: plans one VRRPNode per node from VirtualIPs and Nodes, and aggregates the
//! agents' reports into VirtualIP status.
//!
//! - [`planner`]: pure — observed objects in, desired VRRPNode specs, VirtualIP statuses and
//!   Events out.

pub mod planner;
