//! The agent's Kubernetes side (in-cluster mode): follow this node's `VRRPNode`, report live
//! state into its status, cache the last config on disk, publish Events.
//!
//! The data plane never waits for anything here: the watch feeds configs into a channel, the
//! reporter drains status snapshots from another, and an API outage only delays reports.
//!
//! - [`auth`]: this node's auth Secret (the PASS passwords by `authKey`), in memory only.
//! - [`cache`]: the last applied spec on local disk, so a restarted agent runs without the API.
//! - [`report`]: coalesced, server-side-applied status writes (pure [`report::Coalescer`] +
//!   the writer loop).
//! - [`lease`]: the liveness Lease, renewed every few seconds (the only periodic write).
//! - [`events`]: Events on the VirtualIP when this node becomes MASTER or enters FAULT.
//! - [`pods`]: the `track.pods` tracker (Ready pods on this node).
//! - [`source`]: the watch on this node's own `VRRPNode` (field selector on its name).

pub mod auth;
pub mod cache;
pub mod events;
pub mod lease;
pub mod pods;
pub mod report;
pub mod source;

use std::time::Duration;

use kube::runtime::watcher;

/// Field manager of every write the agent makes.
pub const FIELD_MANAGER: &str = "kube-vrrp-agent";

/// Server-side timeout of the agent's watches, seconds: the API server ends a watch after this
/// and the watcher resumes it from the last resource version (no re-list). kube-runtime also
/// drops a watch that delivers nothing for this long plus 5 s, so a connection that went
/// silent is replaced within about half a minute (kube-runtime's default is five). That is
/// the backstop: the stall watchdog ([`apiclient::watchdog`], started in `modes::run`) notices
/// a silent API within about 5 s.
pub const WATCH_TIMEOUT_SECS: u32 = 25;

/// Read timeout of the agent's API client: longer than a watch may stay quiet, so only a
/// request that hangs (a half-dead connection) fails.
pub const API_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Retry delays of the agent's watches: 500 ms doubling to 2 s, with jitter, reset once the
/// watch delivers. kube-runtime's default grows to 30 s and resets only after 120 s without
/// errors, so after an API restart an agent followed its VRRPNode again only 40-50 s later.
pub fn watch_backoff() -> watcher::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times()
        .into()
}

/// The settings every agent watch starts from.
pub fn watch_config() -> watcher::Config {
    watcher::Config::default().timeout(WATCH_TIMEOUT_SECS)
}

#[cfg(test)]
mod tests {
    use kube::runtime::utils::Backoff as _;

    use super::*;

    #[test]
    fn watch_retries_stay_within_seconds_and_reset() {
        let mut b = watch_backoff();
        let delays: Vec<Duration> = b.by_ref().take(20).collect();
        assert_eq!(delays.len(), 20, "retries forever");
        // backon's jitter adds at most one more delay on top of the capped one.
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(4)),
            "{delays:?}"
        );
        assert!(delays[0] <= Duration::from_secs(1), "{delays:?}");
        b.reset();
        assert!(b.next().is_some_and(|d| d <= Duration::from_secs(1)));
    }
}
