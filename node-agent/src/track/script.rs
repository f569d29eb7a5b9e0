//! `vrrp_script`: run a command every `interval`, report every run.
//!
//! Scheduling follows keepalived: the first run starts at once, later runs start on a fixed
//! `interval` grid; a grid point that falls while the previous run is still going is skipped,
//! so runs of one script never overlap. `timeout` defaults to `interval` when it is 0.

use std::future::Future;
use std::time::Duration;

use crds::vrrpnode::ResolvedTrackScript;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::exec::{self, CommandLine, RunExit, RunSpec};
use super::{Observation, ScriptDetail};
use crate::Error;

/// What a `vrrp_script` runs and how often (rise/fall/weight belong to the core).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptSpec {
    /// The `vrrp_script` name.
    pub name: String,
    /// The command.
    pub command: CommandLine,
    /// Time between run starts.
    pub interval: Duration,
    /// Kill a run after this long.
    pub timeout: Duration,
    /// Run as this user.
    pub user: Option<String>,
}

impl ScriptSpec {
    /// Validate a resolved `vrrp_script`.
    pub fn from_resolved(s: &ResolvedTrackScript) -> Result<Self, Error> {
        let field = |f: &str| format!("track.scripts[{}].{f}", s.name);
        if s.name.is_empty() {
            return Err(Error::Config(
                "track.scripts[].name: must not be empty".into(),
            ));
        }
        let command = CommandLine::parse(&field("script"), &s.script)?;
        if s.interval_ms == 0 {
            return Err(Error::Config(format!(
                "{}: must be greater than 0",
                field("intervalMs")
            )));
        }
        let interval = Duration::from_millis(u64::from(s.interval_ms));
        let timeout = if s.timeout_ms == 0 {
            interval
        } else {
            Duration::from_millis(u64::from(s.timeout_ms))
        };
        let user = s.user.as_ref().filter(|u| !u.is_empty()).cloned();
        Ok(Self {
            name: s.name.clone(),
            command,
            interval,
            timeout,
            user,
        })
    }

    /// Run the command once.
    pub async fn run_once(&self) -> exec::RunOutcome {
        let label = format!("vrrp_script {}", self.name);
        exec::run(RunSpec {
            command: &self.command,
            extra_args: &[],
            timeout: self.timeout,
            user: self.user.as_deref(),
            label: &label,
        })
        .await
    }
}

/// The tracker task: runs `spec` forever, sending an [`Observation::Script`] after each run.
/// Ends when the receiver is gone.
pub async fn run_tracker(spec: ScriptSpec, tx: mpsc::Sender<Observation>) {
    let probe_spec = spec.clone();
    schedule(spec.name.clone(), spec.interval, tx, move || {
        let spec = probe_spec.clone();
        async move {
            let out = spec.run_once().await;
            ScriptDetail {
                exit: out.exit,
                duration: out.duration,
            }
        }
    })
    .await;
}

/// The scheduling loop, separate from process spawning so it can be tested on a paused clock.
pub(crate) async fn schedule<F, Fut>(
    name: String,
    interval: Duration,
    tx: mpsc::Sender<Observation>,
    mut probe: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ScriptDetail>,
{
    let start = Instant::now();
    let step = interval.as_nanos().max(1);
    let mut k: u128 = 0;
    let mut last: Option<RunExit> = None;
    loop {
        let due = start + Duration::from_nanos(u64::try_from(k * step).unwrap_or(u64::MAX));
        tokio::time::sleep_until(due).await;
        let detail = probe().await;
        // Next grid point at or after now, and after this one: grid points that passed while
        // the run was going are skipped (keepalived: "expect idle - skipping run").
        let elapsed = start.elapsed().as_nanos();
        k = (k + 1).max(elapsed.div_ceil(step));
        if last.as_ref() != Some(&detail.exit) {
            // keepalived logs when a script's result changes, not on every run.
            match &detail.exit {
                RunExit::Code(code) => {
                    tracing::info!(tracker = %name, "Script `{name}` now returning {code}")
                }
                other => tracing::warn!(tracker = %name, "Script `{name}` {other}"),
            }
            last = Some(detail.exit.clone());
        }
        let success = detail.exit.success();
        if tx
            .send(Observation::Script {
                tracker: name.clone(),
                success,
                detail,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn resolved(script: &str, interval_ms: u32, timeout_ms: u32) -> ResolvedTrackScript {
        ResolvedTrackScript {
            name: "chk".into(),
            script: script.into(),
            interval_ms,
            timeout_ms,
            rise: 1,
            fall: 1,
            weight: 0,
            reverse: false,
            user: None,
        }
    }

    #[test]
    fn spec_validation() {
        let s = ScriptSpec::from_resolved(&resolved("/bin/true", 1000, 0)).unwrap();
        assert_eq!(
            s.timeout,
            Duration::from_secs(1),
            "timeout defaults to interval"
        );
        let e = ScriptSpec::from_resolved(&resolved("/bin/true", 0, 0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("track.scripts[chk].intervalMs"), "{e}");
        let e = ScriptSpec::from_resolved(&resolved("  ", 1000, 0))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("track.scripts[chk].script") && e.contains("empty"),
            "{e}"
        );
        let e = ScriptSpec::from_resolved(&resolved("echo 'oops", 1000, 0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unterminated single quote"), "{e}");
    }

    fn detail(code: i32) -> ScriptDetail {
        ScriptDetail {
            exit: RunExit::Code(code),
            duration: Duration::ZERO,
        }
    }

    /// Runs start on the interval grid and each run is reported.
    #[tokio::test(start_paused = true)]
    async fn runs_on_interval_grid() {
        let (tx, mut rx) = mpsc::channel(16);
        let t0 = Instant::now();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let s2 = starts.clone();
        let mut n = 0;
        let task = tokio::spawn(schedule(
            "chk".into(),
            Duration::from_millis(1000),
            tx,
            move || {
                s2.lock().unwrap().push(Instant::now() - t0);
                n += 1;
                let code = if n % 2 == 0 { 1 } else { 0 };
                async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    detail(code)
                }
            },
        ));
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(rx.recv().await.unwrap());
        }
        task.abort();
        let starts = starts.lock().unwrap().clone();
        let ms: Vec<u128> = starts.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms[..4], [0, 1000, 2000, 3000]);
        let successes: Vec<bool> = got
            .iter()
            .map(|o| match o {
                Observation::Script {
                    tracker, success, ..
                } => {
                    assert_eq!(tracker, "chk");
                    *success
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(successes, vec![true, false, true, false]);
    }

    /// A run longer than the interval makes the next grid points be skipped, never overlap.
    #[tokio::test(start_paused = true)]
    async fn long_runs_do_not_overlap() {
        let (tx, mut rx) = mpsc::channel(16);
        let t0 = Instant::now();
        let running = Arc::new(Mutex::new(false));
        let starts = Arc::new(Mutex::new(Vec::new()));
        let (r2, s2) = (running.clone(), starts.clone());
        let task = tokio::spawn(schedule(
            "slow".into(),
            Duration::from_millis(1000),
            tx,
            move || {
                let r3 = r2.clone();
                {
                    let mut r = r2.lock().unwrap();
                    assert!(!*r, "a run started while the previous one was still going");
                    *r = true;
                }
                s2.lock().unwrap().push((Instant::now() - t0).as_millis());
                async move {
                    tokio::time::sleep(Duration::from_millis(2500)).await;
                    *r3.lock().unwrap() = false;
                    detail(0)
                }
            },
        ));
        for _ in 0..3 {
            rx.recv().await.unwrap();
        }
        task.abort();
        assert_eq!(starts.lock().unwrap()[..3], [0, 3000, 6000]);
    }

    /// The task ends when the driver drops the receiver.
    #[tokio::test(start_paused = true)]
    async fn stops_when_receiver_gone() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let task = tokio::spawn(schedule(
            "x".into(),
            Duration::from_millis(10),
            tx,
            || async { detail(0) },
        ));
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("task ended")
            .unwrap();
    }
}
