//! kube-vrrp node agent: runs VRRP instances on this node's NICs.
//!
//! - [`vrrp`]: the sans-IO protocol core (codec + state machine), no sockets or clocks.
//! - [`net`]: raw VRRP sockets, netlink (VIPs, link events), gratuitous ARP / unsolicited NA.
//! - [`track`]: trackers (interface, script, process, file) feeding the core.
//! - [`metrics`]: Prometheus metrics and the HTTP endpoints (/metrics, /healthz, /readyz, /status).
//! - [`notify`]: keepalived-compatible notify scripts.
//! - [`daemon`]: the protocol loop around the core, shared by `standalone` and `run`.
//! - [`convert`]: the `convert` command (keepalived.conf → VirtualIP YAML).
//! - [`kube`]: in-cluster mode: watch this node's VRRPNode, report status, cache config.
//! - [`reconcile`]: old × new instances → start / stop / update in place / restart.
//! - [`cli`]: command-line arguments shared by the binary and tests.

pub mod cli;
pub mod convert;
pub mod daemon;
pub mod error;
pub mod kube;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod notify;
pub mod reconcile;
pub mod track;
pub mod vrrp;

pub use error::Error;
