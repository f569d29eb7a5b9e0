//! Polling with a deadline: the only way the lab and the tests wait for something.

use std::time::{Duration, Instant};

use crate::error::{LabError, Result};

/// How often [`wait_until`] re-checks its condition.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` every [`POLL`] until it returns `Some(value)` or `within` has passed.
///
/// `what` names the condition in the timeout error.
pub fn wait_until<T>(within: Duration, what: &str, cond: impl FnMut() -> Option<T>) -> Result<T> {
    wait_every(POLL, within, what, cond)
}

/// [`wait_until`] polling every `every` (for conditions that are costly to check, such as a
/// `kubectl` call).
pub fn wait_every<T>(
    every: Duration,
    within: Duration,
    what: &str,
    mut cond: impl FnMut() -> Option<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return Ok(v);
        }
        if start.elapsed() >= within {
            return Err(LabError::Timeout {
                what: what.to_string(),
                after: within,
            });
        }
        std::thread::sleep(every.min(within.saturating_sub(start.elapsed())));
    }
}

/// Like [`wait_until`] for a boolean condition.
pub fn wait_for(within: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    wait_until(within, what, || cond().then_some(()))
}

/// Asserts that `cond` stays true for the whole of `period` (polled), for "nothing changes"
/// checks such as nopreempt. Returns the first time it was false as an error.
pub fn holds_for(period: Duration, what: &str, cond: impl FnMut() -> bool) -> Result<()> {
    holds_every(POLL, period, what, cond)
}

/// [`holds_for`] polling every `every`.
pub fn holds_every(
    every: Duration,
    period: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < period {
        if !cond() {
            return Err(LabError::Violated {
                what: what.to_string(),
                after: start.elapsed(),
            });
        }
        std::thread::sleep(every);
    }
    Ok(())
}
