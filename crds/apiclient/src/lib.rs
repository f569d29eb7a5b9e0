//! kube-vrrp's Kubernetes API client, shared by the operator and the agent: kube's own client
//! stack ([`stack::client_builder`]) on TCP connections that a stall watchdog can see and drop.
//!
//! A silent API connection (the peer or a proxy on the path stops answering: packets dropped,
//! no RST) would otherwise only be noticed by the client's read timeout, half a minute later,
//! and a watch on such a connection delivers nothing while looking healthy. Here:
//!
//! - [`conn`]: every connection the client opens is wrapped so that any data received marks
//!   the API as alive ([`conn::Liveness`]), and [`conn::Liveness::reset_all`] fails every
//!   connection (and connect attempt) at once: pending requests and watches error out and
//!   their retries open fresh connections. The sockets also get TCP keepalive and
//!   `TCP_USER_TIMEOUT`, so the kernel gives up on a dead peer by itself too.
//! - [`watchdog`]: after [`watchdog::WatchdogSettings::quiet`] without any data from the API,
//!   `GET /version`; no answer within [`watchdog::WatchdogSettings::probe_timeout`] declares
//!   the API stalled and resets every connection. Probes go on every
//!   [`watchdog::WatchdogSettings::retry`]; the first answer ends the stall, resets the
//!   connections opened meanwhile and bumps [`watchdog::Status::recoveries`], on which the
//!   callers restart their watches with a fresh list. The decision is the pure
//!   [`watchdog::Watchdog`]; [`watchdog::run`] is its I/O loop.

pub mod conn;
pub mod stack;
pub mod watchdog;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// kube refused the client configuration (TLS material, auth, headers).
    #[error("Kubernetes client configuration: {0}")]
    Kube(#[from] kube::Error),
    /// A configuration this client stack does not support.
    #[error("Kubernetes client configuration: {0}")]
    Unsupported(String),
}
