//! Pacing of the planner and memory of the operator's own writes (pure: time is passed in).
//!
//! - [`Coalescer`]: changes to what the placement reads arrive in bursts (a `kubectl apply` of
//!   a thousand VirtualIPs delivers a thousand watch events over many seconds). Re-placing on
//!   each would rewrite every VRRPNode once per event. The coalescer lets the planner run once
//!   the changes have been quiet for [`Coalescer::quiet`], and at the latest
//!   [`Coalescer::max_delay`] after the first change it has not served yet, so a steady stream
//!   of changes still gets planned.
//! - [`InFlight`]: the watch store shows an object as it was before the operator's own write for
//!   a moment after that write returned. Comparing the plan with that stale copy would write the
//!   same thing again. After a write the executor records the resource versions the store may
//!   still show (the ones before its write) and what it wrote; until the watch delivers any
//!   other version of the object, a desired content equal to the one written is known to be on
//!   its way and is not written again.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Decides when a burst of changes is planned.
#[derive(Debug, Clone)]
pub struct Coalescer {
    quiet: Duration,
    max_delay: Duration,
    /// First and last change not planned yet.
    pending: Option<(Instant, Instant)>,
}

impl Coalescer {
    /// Quiet period after the last change before planning.
    pub const QUIET: Duration = Duration::from_millis(300);
    /// Longest a change waits for its plan while changes keep coming.
    pub const MAX_DELAY: Duration = Duration::from_millis(1500);

    /// A coalescer with the given quiet period and maximum delay.
    pub fn new(quiet: Duration, max_delay: Duration) -> Self {
        Self {
            quiet,
            max_delay,
            pending: None,
        }
    }

    /// The quiet period.
    pub fn quiet(&self) -> Duration {
        self.quiet
    }

    /// The maximum delay.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }

    /// A change arrived at `now`.
    pub fn change(&mut self, now: Instant) {
        self.pending = Some(match self.pending {
            Some((first, last)) => (first, last.max(now)),
            None => (now, now),
        });
    }

    /// When the pending changes are to be planned (`None`: nothing pending).
    pub fn deadline(&self) -> Option<Instant> {
        self.pending
            .map(|(first, last)| (last + self.quiet).min(first + self.max_delay))
    }

    /// Whether the pending changes are due at `now`; if so they count as served (changes that
    /// arrive while the plan runs start a new burst).
    pub fn take_due(&mut self, now: Instant) -> bool {
        match self.deadline() {
            Some(d) if now >= d => {
                self.pending = None;
                true
            }
            _ => false,
        }
    }
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::new(Self::QUIET, Self::MAX_DELAY)
    }
}

/// One write of the operator whose result the watch has not delivered yet.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Write {
    /// Resource versions from before the write (the store may still show these).
    before: Vec<Option<String>>,
    /// What was written (a hash of it).
    content: u64,
    /// When it was written: a write the watch never confirms is forgotten after
    /// [`InFlight::TTL`].
    at: Instant,
}

/// The operator's own writes per object, until the watch shows them.
#[derive(Debug, Clone)]
pub struct InFlight<K> {
    writes: HashMap<K, Write>,
}

impl<K> Default for InFlight<K> {
    fn default() -> Self {
        Self {
            writes: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone> InFlight<K> {
    /// How long a write is remembered at most without the watch delivering a newer version.
    pub const TTL: Duration = Duration::from_secs(10);

    /// Record a write of `content` to `key` at `now`, made while the store showed the object
    /// at one of the versions in `before` (`None`: absent).
    pub fn wrote(&mut self, key: K, before: Vec<Option<String>>, content: u64, now: Instant) {
        self.writes.insert(
            key,
            Write {
                before,
                content,
                at: now,
            },
        );
    }

    /// The watch delivered `key` at `version` (`None`: deleted). Any version but the ones from
    /// before the write means the store has caught up (with this write or a later change).
    pub fn observed(&mut self, key: &K, version: Option<&str>) {
        let stale = self
            .writes
            .get(key)
            .is_some_and(|w| version.is_some() && w.before.iter().any(|b| b.as_deref() == version));
        if !stale {
            self.writes.remove(key);
        }
    }

    /// Forget everything (after a re-list the store is complete and current).
    pub fn clear(&mut self) {
        self.writes.clear();
    }

    /// Whether the store shows `key` at `version` only because it lags behind a write of this
    /// operator, made at most [`Self::TTL`] before `now`. With `content`, the write must also
    /// have written that content.
    pub fn lagging(
        &self,
        key: &K,
        version: Option<&str>,
        content: Option<u64>,
        now: Instant,
    ) -> bool {
        self.writes.get(key).is_some_and(|w| {
            now.saturating_duration_since(w.at) < Self::TTL
                && w.before.iter().any(|b| b.as_deref() == version)
                && content.is_none_or(|c| c == w.content)
        })
    }

    /// Number of writes remembered.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Whether no write is remembered.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}
