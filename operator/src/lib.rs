//! kube-vrrp operator: plans one VRRPNode per node from VirtualIPs and Nodes, and aggregates the
//! agents' reports into VirtualIP status.
//!
//! - [`planner`]: pure — observed objects in, desired VRRPNode specs, VirtualIP statuses and
//!   Events out.
//! - [`controller`]: the executor — watches, plan cache, apply-if-different with server-side
//!   apply, finalizer, Events, error backoff.
//! - [`loadbalancer`]: the executor of Services of type LoadBalancer — allocation, Service
//!   status, Events and finalizer, the group VirtualIPs and pool status.
//! - [`leader`]: leader election on a Lease, running the controller only while leading.
//! - [`metrics`]: Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` endpoints.

pub mod controller;
pub mod leader;
pub mod loadbalancer;
pub mod metrics;
pub mod planner;

use std::net::SocketAddr;

/// Errors of the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The client configuration could not be loaded.
    #[error("Kubernetes client configuration: {0}")]
    Config(String),
    /// Serialising an object for the API failed.
    #[error("cannot serialise {what}: {source}")]
    Serialize {
        /// What was being serialised.
        what: &'static str,
        /// The cause.
        source: serde_json::Error,
    },
    /// Leader election failed.
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    /// The metrics/health HTTP server failed.
    #[error("HTTP server on {addr}: {source}")]
    Http {
        /// The listen address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A watch stream ended with an error.
    #[error("watch: {0}")]
    Watch(String),
}

impl Error {
    /// A low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "client",
            Error::Config(_) => "config",
            Error::Serialize { .. } => "serialize",
            Error::Lease(_) => "lease",
            Error::Http { .. } => "http",
            Error::Watch(_) => "watch",
        }
    }
}
