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
//! When the operator (re)starts or its Lease watch re-lists after an API outage, it has seen
//! nothing for a while, which proves neither life nor death: every Lease it has not seen change
//! since is [`AgentLiveness::Quiet`] for one Lease duration ([`LeaseTracker::restart`]). Its
//! reports count, a contradicting live agent wins over its MASTER claim (the failover that
//! happened during the outage shows at once), and its next renewal makes it fresh again.

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
    seen: HashMap<String, Seen>,
}

#[derive(Debug, Clone)]
struct Seen {
    resource_version: Option<String>,
    /// When the operator saw the current resourceVersion (or restarted).
    at: Instant,
    duration: Duration,
    /// A renewal was seen since the last restart.
    proven: bool,
}

impl LeaseTracker {
    /// A tracker using `default_duration` for Leases without `leaseDurationSeconds`.
    pub fn new(default_duration: Duration) -> Self {
        Self {
            default_duration,
            seen: HashMap::new(),
        }
    }

    /// Record a Lease as observed at `now`; `relist` for the objects of a (re)list, which are
    /// no proof of a renewal unless their resourceVersion changed. Returns whether the agent's
    /// liveness changed.
    pub fn observe(
        &mut self,
        node: &str,
        resource_version: Option<&str>,
        duration: Option<Duration>,
        relist: bool,
        now: Instant,
    ) -> bool {
        let duration = duration
            .filter(|d| !d.is_zero())
            .unwrap_or(self.default_duration);
        let before = self.liveness(node, now);
        let rv = resource_version.map(str::to_string);
        match self.seen.get_mut(node) {
            Some(s) => {
                if s.resource_version != rv {
                    s.resource_version = rv;
                    s.at = now;
                    s.proven = true;
                }
                s.duration = duration;
            }
            None => {
                self.seen.insert(
                    node.to_string(),
                    Seen {
                        resource_version: rv,
                        at: now,
                        duration,
                        proven: !relist,
                    },
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
        for s in self.seen.values_mut() {
            if !s.proven || now.saturating_duration_since(s.at) > s.duration / 2 {
                s.at = now;
                s.proven = false;
            }
        }
    }

    /// The liveness of one node's agent at `now`.
    pub fn liveness(&self, node: &str, now: Instant) -> AgentLiveness {
        let Some(s) = self.seen.get(node) else {
            return AgentLiveness::Lost;
        };
        let silent = now.saturating_duration_since(s.at);
        if silent > s.duration {
            AgentLiveness::Lost
        } else if !s.proven || silent > s.duration / 2 {
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
            .flat_map(|s| [s.at + s.duration / 2, s.at + s.duration])
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
        assert!(lt.observe("n1", Some("1"), Some(D), false, t0));
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
        assert!(!lt.observe("n1", Some("1"), Some(D), false, t0 + Duration::from_secs(4)));
        assert_eq!(
            lt.liveness("n1", t0 + Duration::from_secs(6)),
            AgentLiveness::Quiet
        );
        // A renewal after going quiet is a change.
        assert!(lt.observe("n1", Some("2"), Some(D), false, t0 + Duration::from_secs(7)));
        assert_eq!(
            lt.liveness("n1", t0 + Duration::from_secs(7)),
            AgentLiveness::Fresh
        );
        // A renewal of a fresh agent is not.
        assert!(!lt.observe("n1", Some("3"), Some(D), false, t0 + Duration::from_secs(8)));
    }

    #[test]
    fn a_relist_proves_nothing_until_a_renewal_is_seen() {
        let t0 = Instant::now();
        let mut lt = LeaseTracker::new(D);
        // Operator start: the initial list.
        lt.observe("n1", Some("1"), None, true, t0);
        lt.observe("n2", Some("7"), None, true, t0);
        assert_eq!(lt.liveness("n1", t0), AgentLiveness::Quiet);
        // n2 renews: fresh. n1 never does: lost after one Lease duration.
        lt.observe("n2", Some("8"), None, false, t0 + Duration::from_secs(2));
        assert_eq!(
            lt.liveness("n2", t0 + Duration::from_secs(2)),
            AgentLiveness::Fresh
        );
        assert_eq!(
            lt.liveness("n1", t0 + Duration::from_secs(9)),
            AgentLiveness::Quiet
        );
        assert_eq!(
            lt.liveness("n1", t0 + Duration::from_secs(11)),
            AgentLiveness::Lost
        );

        // An API outage: the watch re-lists 30 s later. n2's Lease changed meanwhile (it
        // renewed as soon as the API came back): fresh; n1's did not: quiet, not lost.
        let back = t0 + Duration::from_secs(30);
        lt.restart(back);
        lt.observe("n1", Some("1"), None, true, back);
        lt.observe("n2", Some("9"), None, true, back);
        assert_eq!(lt.liveness("n1", back), AgentLiveness::Quiet);
        assert_eq!(lt.liveness("n2", back), AgentLiveness::Fresh);
    }

    #[test]
    fn next_change_is_the_nearest_threshold() {
        let t0 = Instant::now();
        let mut lt = LeaseTracker::new(D);
        lt.observe("n1", Some("1"), Some(D), false, t0);
        lt.observe("n2", Some("1"), Some(Duration::from_secs(4)), false, t0);
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
