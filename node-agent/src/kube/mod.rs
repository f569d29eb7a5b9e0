//! The agent's Kubernetes side (in-cluster mode): follow this node's `VRRPNode`, report live
//! state into its status, cache the last config on disk, publish Events.
//!
//! The data plane never waits for anything here: the watch feeds configs into a channel, the
//! reporter drains status snapshots from another, and an API outage only delays reports.
//!
//! - [`cache`]: the last applied spec on local disk, so a restarted agent runs without the API.
//! - [`report`]: coalesced, server-side-applied status writes (pure [`report::Coalescer`] +
//!   the writer loop).
//! - [`lease`]: the liveness Lease, renewed every few seconds (the only periodic write).
//! - [`events`]: Events on the VirtualIP when this node becomes MASTER or enters FAULT.
//! - [`pods`]: the `track.pods` tracker (Ready pods on this node).
//! - [`source`]: the watch on this node's own `VRRPNode` (field selector on its name).

pub mod cache;
pub mod events;
pub mod lease;
pub mod pods;
pub mod report;
pub mod source;

/// Field manager of every write the agent makes.
pub const FIELD_MANAGER: &str = "kube-vrrp-agent";
