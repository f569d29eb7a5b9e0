//! kube-vrrp node agent: runs VRRP instances on this node's NICs — the I/O shell around the
//! sans-IO core, in-cluster (`run`) or from a keepalived.conf (`standalone`).
//!
//! This crate owns everything that touches the host or the cluster; the protocol is
//! [`vrrp`]'s, the API types are `crds`', the keepalived.conf reader is `keepalived`'s.
//!
//! - [`vrrp`]: the sans-IO protocol core (its own crate, `node-agent/vrrp/`: codec + state
//!   machine, no sockets, clocks or tokio).
//! - [`net`]: raw VRRP sockets, netlink (VIPs, link events), gratuitous ARP / unsolicited NA.
//! - [`track`]: trackers (interface, script, process, file) feeding the core.
//! - [`metrics`]: Prometheus metrics and the HTTP endpoints (/metrics, /healthz, /readyz, /status).
//! - [`notify`]: keepalived-compatible notify scripts.
//! - [`daemon`]: the protocol loop around the core, mode-agnostic: mode-specific sources and
//!   sinks come in through [`daemon::Hooks`]; the conversions between the API's instance types
//!   and the core's are in [`daemon::resolved`].
//! - [`kube`]: in-cluster mode: watch this node's VRRPNode, report status, cache config,
//!   Events and pod trackers (the implementations of the daemon's hooks for `run`).
//! - [`modes`]: `run` and `standalone`, wiring sources and sinks into one daemon;
//!   [`standalone`]: its config (a keepalived.conf resolved for this host).
//! - [`reconcile`]: old × new instances → start / stop / update in place / restart.
//! - [`demo`]: the `demo` command: a throw-away 3-host namespace lab showing failover live.
//! - [`convert`]: the `convert` command (keepalived.conf → VirtualIP YAML).
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
