//! The stall watchdog: a pure decision ([`Watchdog`], time passed in) and its loop ([`run`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::conn::Liveness;

/// The watchdog's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchdogSettings {
    /// Probe after this long without data from the API server.
    pub quiet: Duration,
    /// A probe unanswered this long means the API is stalled.
    pub probe_timeout: Duration,
    /// While stalled, probe again this long after the last probe ended.
    pub retry: Duration,
}

impl Default for WatchdogSettings {
    /// A silent API is declared stalled at most `quiet + probe_timeout` (plus a [`TICK`])
    /// after it went silent: 4.75 s. On a cluster with no changes, one `GET /version` every
    /// 1.5 s per process at most; any watch event or request answer postpones it.
    fn default() -> Self {
        Self {
            quiet: Duration::from_millis(1500),
            probe_timeout: Duration::from_secs(3),
            retry: Duration::from_millis(500),
        }
    }
}

/// How often [`run`] looks at the connections.
pub const TICK: Duration = Duration::from_millis(250);

/// What a probe result changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The API stopped answering: drop every connection, say "not ready".
    Stalled,
    /// It answers again: drop the connections opened meanwhile, re-list the watches.
    Recovered,
}

/// Decides when to probe and what a probe result means (pure: time is passed in).
#[derive(Debug, Clone)]
pub struct Watchdog {
    settings: WatchdogSettings,
    last_answer: Instant,
    last_probe_end: Option<Instant>,
    stalled_since: Option<Instant>,
}

impl Watchdog {
    /// Starts healthy, as if the API had answered at `now`.
    pub fn new(settings: WatchdogSettings, now: Instant) -> Self {
        Self {
            settings,
            last_answer: now,
            last_probe_end: None,
            stalled_since: None,
        }
    }

    /// Whether to probe at `now`, given when an API connection last delivered data.
    pub fn should_probe(&self, now: Instant, last_activity: Instant) -> bool {
        match self.stalled_since {
            None => {
                let alive = self.last_answer.max(last_activity);
                now.saturating_duration_since(alive) >= self.settings.quiet
            }
            Some(_) => self
                .last_probe_end
                .is_none_or(|t| now.saturating_duration_since(t) >= self.settings.retry),
        }
    }

    /// A probe ended at `now`; `answered`: the API server (or the network, refusing) said
    /// anything before [`WatchdogSettings::probe_timeout`].
    pub fn probe_done(&mut self, now: Instant, answered: bool) -> Option<Transition> {
        self.last_probe_end = Some(now);
        if answered {
            self.last_answer = now;
        }
        match (answered, self.stalled_since) {
            (true, None) | (false, Some(_)) => None,
            (true, Some(_)) => {
                self.stalled_since = None;
                Some(Transition::Recovered)
            }
            (false, None) => {
                self.stalled_since = Some(now);
                Some(Transition::Stalled)
            }
        }
    }

    /// Since when the API is stalled, if it is.
    pub fn stalled_since(&self) -> Option<Instant> {
        self.stalled_since
    }

    /// The probe timeout.
    pub fn probe_timeout(&self) -> Duration {
        self.settings.probe_timeout
    }
}

/// What [`run`] publishes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// The API does not answer now.
    pub stalled: bool,
    /// Stalls declared so far.
    pub stalls: u64,
    /// Stalls ended so far: a change means "re-list the watches".
    pub recoveries: u64,
}

/// Probes `client` as [`Watchdog`] decides, resets `live`'s connections on each transition
/// and publishes on `tx`. Runs until `tx` has no receivers.
pub async fn run(
    client: kube::Client,
    live: Arc<Liveness>,
    settings: WatchdogSettings,
    tx: watch::Sender<Status>,
) {
    let mut dog = Watchdog::new(settings, Instant::now());
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !tx.is_closed() {
        tick.tick().await;
        if !dog.should_probe(Instant::now(), live.last_activity()) {
            continue;
        }
        let started = Instant::now();
        let answered =
            match tokio::time::timeout(dog.probe_timeout(), client.apiserver_version()).await {
                Ok(Ok(_)) => true,
                Ok(Err(e)) => {
                    debug!(error = %e, "API probe answered with an error");
                    true
                }
                Err(_) => false,
            };
        match dog.probe_done(Instant::now(), answered) {
            Some(Transition::Stalled) => {
                warn!(
                    silent_for = ?started.saturating_duration_since(live.last_activity()),
                    "Kubernetes API stalled (no answer to GET /version): dropping every API connection"
                );
                live.reset_all();
                tx.send_modify(|s| {
                    s.stalled = true;
                    s.stalls += 1;
                });
            }
            Some(Transition::Recovered) => {
                info!("Kubernetes API answers again: reconnecting and re-listing");
                live.reset_all();
                tx.send_modify(|s| {
                    s.stalled = false;
                    s.recoveries += 1;
                });
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn probes_only_when_quiet_and_declares_a_stall_after_an_unanswered_probe() {
        let s = WatchdogSettings::default();
        let t0 = Instant::now();
        let mut d = Watchdog::new(s, t0);
        // Data keeps arriving: never a probe.
        assert!(!d.should_probe(t0 + ms(1000), t0 + ms(900)));
        assert!(!d.should_probe(t0 + ms(3000), t0 + ms(2000)));
        // Quiet for `quiet`: probe.
        assert!(d.should_probe(t0 + ms(3500), t0 + ms(2000)));
        // Answered: healthy, next probe only after another quiet spell.
        assert_eq!(d.probe_done(t0 + ms(3510), true), None);
        assert!(!d.should_probe(t0 + ms(4000), t0 + ms(2000)));
        assert!(d.should_probe(t0 + ms(5010), t0 + ms(2000)));
        // Unanswered (timed out 3 s later): stalled.
        assert_eq!(
            d.probe_done(t0 + ms(8010), false),
            Some(Transition::Stalled)
        );
        assert_eq!(d.stalled_since(), Some(t0 + ms(8010)));
        // Worst case from the last data to the verdict: quiet + timeout (+ one tick in run).
        assert!(t0 + ms(8010) - (t0 + ms(3510)) <= s.quiet + s.probe_timeout + s.quiet);
    }

    #[test]
    fn while_stalled_it_retries_and_the_first_answer_recovers_once() {
        let s = WatchdogSettings::default();
        let t0 = Instant::now();
        let mut d = Watchdog::new(s, t0);
        assert!(d.should_probe(t0 + s.quiet, t0));
        let stalled_at = t0 + s.quiet + s.probe_timeout;
        assert_eq!(d.probe_done(stalled_at, false), Some(Transition::Stalled));
        // Data on a connection while stalled (a dying one flushing) does not end the stall:
        // only a probe answer does; probes repeat every `retry`.
        assert!(!d.should_probe(stalled_at + ms(100), stalled_at + ms(100)));
        assert!(d.should_probe(stalled_at + s.retry, stalled_at + ms(100)));
        let t = stalled_at + s.retry + s.probe_timeout;
        assert_eq!(
            d.probe_done(t, false),
            None,
            "still stalled: no second transition"
        );
        assert!(d.stalled_since().is_some());
        assert_eq!(d.probe_done(t + ms(600), true), Some(Transition::Recovered));
        assert_eq!(d.stalled_since(), None);
        assert_eq!(d.probe_done(t + ms(700), true), None);
        assert!(!d.should_probe(t + ms(800), t0));
    }

    #[test]
    fn a_fresh_watchdog_waits_a_quiet_spell_before_probing() {
        let t0 = Instant::now();
        let d = Watchdog::new(WatchdogSettings::default(), t0);
        // `last_activity` before `now`'s answer (a fresh Liveness) does not make it probe.
        assert!(!d.should_probe(t0 + ms(100), t0 - Duration::from_secs(60)));
    }
}
