//! kube-vrrp node agent: runs VRRP instances on this node's NICs.
//!
//! - [`vrrp`]: the sans-IO protocol core (its own crate, `node-agent/vrrp/`: codec + state
//!   machine, no sockets, clocks or tokio).
//! - [`net`]: raw VRRP sockets, netlink (VIPs, link events), gratuitous ARP / unsolicited NA.
//! - [`track`]: trackers (interface, script, process, file) feeding the core.
//! - [`metrics`]: Prometheus metrics and the HTTP endpoints (/metrics, /healthz, /readyz, /status).
//! - [`notify`]: keepalived-compatible notify scripts.
//! - [`daemon`]: the protocol loop around the core, shared by `standalone` and `run`.
//! - [`demo`]: the `demo` command: a throw-away 3-host namespace lab showing failover live.
//! - [`convert`]: the `convert` command (keepalived.conf → VirtualIP YAML).
//! - [`kube`]: in-cluster mode: watch this node's VRRPNode, report status, cache config.
//! - [`reconcile`]: old × new instances → start / stop / update in place / restart.
//! - [`modes`]: `run` and `standalone` wired from the pieces; [`standalone`]: its config.
//! - [`cli`]: command-line arguments shared by the binary and tests.

pub mod cli;
pub mod convert;
pub mod daemon;
pub mod demo;
pub mod error;
pub mod kube;
pub mod logging;
pub mod metrics;
pub mod modes;
pub mod net;
pub mod notify;
pub mod reconcile;
pub mod standalone;
pub mod track;

pub use error::Error;
/// The sans-IO VRRP core (crate `kube-vrrp-core`, in `node-agent/vrrp/`).
pub use vrrp;
