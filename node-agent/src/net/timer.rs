//! Monotonic sleeping for the protocol driver, with a measure of how late each wake-up was.
//!
//! The core's deadlines are [`std::time::Instant`]s (monotonic, unaffected by wall-clock
//! jumps). [`sleep_until`] sleeps until one and returns a [`Wakeup`] saying when the task
//! actually ran again, so the driver can log a late wake-up the way keepalived does ("thread
//! timer expired … ago") and count it in its metrics. tokio's timer has millisecond
//! granularity and rounds deadlines up, so lateness of up to about 1 ms is normal.

use std::time::{Duration, Instant};

/// The outcome of one [`sleep_until`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wakeup {
    /// The deadline asked for.
    pub deadline: Instant,
    /// When the task ran again (never before `deadline`).
    pub woke: Instant,
}

impl Wakeup {
    /// How long after the deadline the task ran.
    pub fn lateness(&self) -> Duration {
        self.woke.saturating_duration_since(self.deadline)
    }

    /// Whether the wake-up was more than `tolerance` late.
    pub fn is_late(&self, tolerance: Duration) -> bool {
        self.lateness() > tolerance
    }
}

/// Sleeps until `deadline` on the tokio timer (returns at once if it has passed) and reports
/// the lateness. Cancel-safe: dropping the future just cancels the sleep.
pub async fn sleep_until(deadline: Instant) -> Wakeup {
    tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
    let woke = Instant::now().max(deadline);
    Wakeup { deadline, woke }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_no_earlier_than_the_deadline() {
        let deadline = Instant::now() + Duration::from_millis(20);
        let w = sleep_until(deadline).await;
        assert!(Instant::now() >= deadline);
        assert_eq!(w.deadline, deadline);
        assert!(w.woke >= deadline);
    }

    #[tokio::test]
    async fn past_deadline_reports_how_late() {
        let deadline = Instant::now();
        std::thread::sleep(Duration::from_millis(30));
        let w = sleep_until(deadline).await;
        assert!(
            w.lateness() >= Duration::from_millis(30),
            "{:?}",
            w.lateness()
        );
        assert!(w.is_late(Duration::from_millis(10)));
        assert!(!w.is_late(Duration::from_secs(3600)));
    }
}
