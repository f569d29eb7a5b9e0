//! Agent liveness: which agents' reports still count.
//!
//! Each agent renews a `coordination.k8s.io/v1` Lease named after its node (kubelet's
//! heartbeat pattern). The operator never compares the Lease's `renewTime` with its own clock
//! (node clocks can be seconds apart): it notes, by its own monotonic clock, when it *saw* each
//! Lease change, and judges from that:
//!
//! - [`AgentLiveness::Fresh`]: renewed within half the Lease duration. Its reports count.
//! - [`AgentLiveness::Quiet`]: no renewal seen for more than half the Lease duration. Its
//!   reports still count, but a MASTER claim from it loses to a live agent's contradicting
//!   evidence (another MASTER, or a BACKUP that hears a different master).
//! - [`AgentLiveness::Lost`]: no renewal seen for a whole Lease duration, or no Lease at all.
//!   Its reports do not count: the node shows as `Unknown` / `AgentNotReporting`.
//!
//! When the operator (re)starts or its Lease watch restarts after an API outage, every Lease
//! gets a fresh grace period ([`LeaseTracker::restart`]): the operator saw nothing while it was
//! cut off, which is no evidence that agents died.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// How much an agent's reports count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentLiveness {
    /// Renewed recently.
    Fresh,
    /// Silent for more than half its Lease duration.
    Quiet,
    /// Silent for its whole Lease duration, or never seen.
    Lost,
}

/// Lease renewals as the operator observed them.
#[derive(Debug, Clone)]
pub struct LeaseTracker {
    /// Lease duration assumed for Leases that do not say.
    default_duration: Duration,
    /// node → (last seen resourceVersion, when it was seen, the Lease's duration).
    seen: HashMap<String, (Option<String>, Instant, Duration)>,
}

impl LeaseTracker {
    /// A tracker using `default_duration` for Leases without `leaseDurationSeconds`.
    pub fn new(default_duration: Duration) -> Self {
        Self {
            default_duration,
            seen: HashMap::new(),
        }
    }

    /// Record a Lease as observed at `now`. Returns whether its liveness changed (a reconcile is
    /// due): only a renewal of an agent that was not fresh changes anything.
    pub fn observe(
        &mut self,
        node: &str,
        resource_version: Option<&str>,
        duration: Option<Duration>,
        now: Instant,
    ) -> bool {
        let duration = duration
            .filter(|d| !d.is_zero())
            .unwrap_or(self.default_duration);
        let before = self.liveness(node, now);
        match self.seen.get_mut(node) {
            Some((rv, at, d)) => {
                if rv.as_deref() != resource_version {
                    *rv = resource_version.map(str::to_string);
                    *at = now;
                }
                *d = duration;
            }
            None => {
                self.seen.insert(
                    node.to_string(),
                    (resource_version.map(str::to_string), now, duration),
                );
            }
        }
        before != self.liveness(node, now)
    }

    /// Forget a deleted Lease. Returns whether the node was known.
    pub fn forget(&mut self, node: &str) -> bool {
        self.seen.remove(node).is_some()
    }

    /// Give every known Lease a fresh grace period (start-up, or the watch came back after an
    /// outage during which nothing could be observed).
    pub fn restart(&mut self, now: Instant) {
        for (_, at, _) in self.seen.values_mut() {
            *at = now;
        }
    }

    /// The liveness of one node's agent at `now`.
    pub fn liveness(&self, node: &str, now: Instant) -> AgentLiveness {
        let Some((_, at, d)) = self.seen.get(node) else {
            return AgentLiveness::Lost;
        };
        let silent = now.saturating_duration_since(*at);
        if silent > *d {
            AgentLiveness::Lost
        } else if silent > *d / 2 {
            AgentLiveness::Quiet
        } else {
            AgentLiveness::Fresh
        }
    }

    /// Every known node's liveness at `now` (nodes not listed are [`AgentLiveness::Lost`]).
    pub fn snapshot(&self, now: Instant) -> BTreeMap<String, AgentLiveness> {
        self.seen
            .keys()
            .map(|n| (n.clone(), self.liveness(n, now)))
            .collect()
    }

    /// How long from `now` until some agent's liveness changes without a new observation.
    pub fn next_change(&self, now: Instant) -> Option<Duration> {
        self.seen
            .values()
            .flat_map(|(_, at, d)| [*at + *d / 2, *at + *d])
            .filter(|t| *t > now)
            .map(|t| t - now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(10);

    #[test]
    fn fresh_quiet_lost_by_observed_renewals() {
        let t0 = Instant::now();
        let mut lt = LeaseTracker::new(D);
        assert_eq!(lt.liveness("n1", t0), AgentLiveness::Lost, "never seen");
        assert!(lt.observe("n1", Some("1"), Some(D), t0));
        assert_eq!(
            lt.liveness("n1", t0 + Duration::from_secs(5)),
            AgentLiveness::Fresh
        );
        assert_eq!(
            lt.liveness("n1", t0 + Duration::from_secs(6)),
            AgentLiveness::Quiet
        );
        assert_eq!(
            lt.liveness("n1", t0 + Duration::from_secs(11)),
            AgentLiveness::Lost
        );
        // The same resourceVersion again is no renewal.
        assert!(!lt.observe("n1", Some("1"), Some(D), t0 + Duration::from_secs(4)));
        assert_eq!(
            lt.liveness("n1", t0 + Duration::from_secs(6)),
            AgentLiveness::Quiet
        );
        // A renewal after going quiet is a change.
        assert!(lt.observe("n1", Some("2"), Some(D), t0 + Duration::from_secs(7)));
        assert_eq!(
            lt.liveness("n1", t0 + Duration::from_secs(7)),
            AgentLiveness::Fresh
        );
        // A renewal of a fresh agent is not.
        assert!(!lt.observe("n1", Some("3"), Some(D), t0 + Duration::from_secs(8)));
    }

    #[test]
    fn restart_grants_a_grace_period() {
        let t0 = Instant::now();
        let mut lt = LeaseTracker::new(D);
        lt.observe("n1", Some("1"), None, t0);
        let back = t0 + Duration::from_secs(30);
        assert_eq!(lt.liveness("n1", back), AgentLiveness::Lost);
        lt.restart(back);
        assert_eq!(lt.liveness("n1", back), AgentLiveness::Fresh);
    }

    #[test]
    fn next_change_is_the_nearest_threshold() {
        let t0 = Instant::now();
        let mut lt = LeaseTracker::new(D);
        lt.observe("n1", Some("1"), Some(D), t0);
        lt.observe("n2", Some("1"), Some(Duration::from_secs(4)), t0);
        assert_eq!(lt.next_change(t0), Some(Duration::from_secs(2)));
        assert_eq!(
            lt.next_change(t0 + Duration::from_secs(3)),
            Some(Duration::from_secs(1))
        );
        assert_eq!(lt.next_change(t0 + Duration::from_secs(11)), None);
        assert!(lt.forget("n1"));
        assert_eq!(lt.snapshot(t0).len(), 1);
    }
}
