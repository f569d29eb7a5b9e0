//! Notify scripts with keepalived's conventions.
//!
//! On a state change of an instance (or a sync group) keepalived runs:
//! - the state's own script (`notify_master`, `notify_backup`, `notify_fault`, `notify_stop`)
//!   exactly as configured, with no extra arguments;
//! - the generic `notify` script with four words appended: `INSTANCE` or `GROUP`, the name,
//!   `MASTER`/`BACKUP`/`FAULT`/`STOP`, and the priority (always 0 for a group). The user's
//!   `notify.sh` therefore sees e.g. `INSTANCE VI_1 MASTER 244`.
//!
//! [`Notifier`] runs them without blocking the caller: each instance (and each group) has its
//! own queue worked by one task, so notifications for one instance run in the order the
//! changes happened and a later change never overtakes an earlier one, while different
//! instances do not wait for each other. For one change the state script and the generic
//! script start together (keepalived forks both at once). Every script is killed (with its
//! process group) after the configured timeout; output goes to the debug log. Commands are
//! split and started as described in [`crate::track::exec`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crds::vrrpnode::ResolvedNotify;
use tokio::sync::{mpsc, oneshot};

use crate::Error;
use crate::track::exec::{self, CommandLine, RunExit, RunSpec};

/// A state as named in notify arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotifyState {
    /// Became master.
    Master,
    /// Became backup.
    Backup,
    /// Went to fault.
    Fault,
    /// The instance is being stopped (agent shutdown or instance removed).
    Stop,
}

impl NotifyState {
    /// keepalived's word for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyState::Master => "MASTER",
            NotifyState::Backup => "BACKUP",
            NotifyState::Fault => "FAULT",
            NotifyState::Stop => "STOP",
        }
    }
}

impl std::fmt::Display for NotifyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who changed state: an instance or a sync group.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NotifyTarget {
    /// A `vrrp_instance` by name.
    Instance(String),
    /// A `vrrp_sync_group` by name.
    Group(String),
}

impl NotifyTarget {
    fn kind(&self) -> &'static str {
        match self {
            NotifyTarget::Instance(_) => "INSTANCE",
            NotifyTarget::Group(_) => "GROUP",
        }
    }

    fn name(&self) -> &str {
        match self {
            NotifyTarget::Instance(n) | NotifyTarget::Group(n) => n,
        }
    }
}

/// An instance's (or group's) notify scripts, parsed and validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotifyScripts {
    /// `notify_master`.
    pub master: Option<CommandLine>,
    /// `notify_backup`.
    pub backup: Option<CommandLine>,
    /// `notify_fault`.
    pub fault: Option<CommandLine>,
    /// `notify_stop`.
    pub stop: Option<CommandLine>,
    /// `notify` (gets `INSTANCE|GROUP NAME STATE PRIORITY` appended).
    pub any: Option<CommandLine>,
    /// Kill a script after this long.
    pub timeout: Duration,
}

impl NotifyScripts {
    /// Parse the resolved notify settings; errors name the field.
    pub fn from_resolved(n: &ResolvedNotify) -> Result<Self, Error> {
        let parse = |field: &str, s: &Option<String>| -> Result<Option<CommandLine>, Error> {
            s.as_deref()
                .map(|s| CommandLine::parse(field, s))
                .transpose()
        };
        if n.timeout_ms == 0 {
            return Err(Error::Config(
                "notify.timeoutMs: must be greater than 0".into(),
            ));
        }
        Ok(Self {
            master: parse("notify.master", &n.master)?,
            backup: parse("notify.backup", &n.backup)?,
            fault: parse("notify.fault", &n.fault)?,
            stop: parse("notify.stop", &n.stop)?,
            any: parse("notify.any", &n.any)?,
            timeout: Duration::from_millis(u64::from(n.timeout_ms)),
        })
    }

    /// True when no script is configured.
    pub fn is_empty(&self) -> bool {
        self.master.is_none()
            && self.backup.is_none()
            && self.fault.is_none()
            && self.stop.is_none()
            && self.any.is_none()
    }

    fn for_state(&self, state: NotifyState) -> Option<&CommandLine> {
        match state {
            NotifyState::Master => self.master.as_ref(),
            NotifyState::Backup => self.backup.as_ref(),
            NotifyState::Fault => self.fault.as_ref(),
            NotifyState::Stop => self.stop.as_ref(),
        }
    }
}

/// One queued item of a target's queue.
enum Job {
    Run {
        scripts: Box<NotifyScripts>,
        state: NotifyState,
        priority: u8,
    },
    /// Answered once everything queued before it has finished.
    Barrier(oneshot::Sender<()>),
}

/// Runs notify scripts in the background, in order per instance/group. Cheap to clone.
#[derive(Clone, Default)]
pub struct Notifier {
    queues: Arc<Mutex<HashMap<NotifyTarget, mpsc::UnboundedSender<Job>>>>,
}

impl Notifier {
    /// A notifier with no queues yet. Calls must happen inside a tokio runtime.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queue the notifications for `instance` entering `state` with `priority` (the effective
    /// priority, as keepalived passes). Returns at once.
    pub fn notify(
        &self,
        instance: &str,
        scripts: &NotifyScripts,
        state: NotifyState,
        priority: u8,
    ) {
        self.enqueue(
            NotifyTarget::Instance(instance.to_owned()),
            scripts,
            state,
            priority,
        );
    }

    /// Queue the notifications for sync group `group` entering `state` (priority argument 0,
    /// as keepalived passes for groups). Returns at once.
    pub fn notify_group(&self, group: &str, scripts: &NotifyScripts, state: NotifyState) {
        self.enqueue(NotifyTarget::Group(group.to_owned()), scripts, state, 0);
    }

    fn enqueue(
        &self,
        target: NotifyTarget,
        scripts: &NotifyScripts,
        state: NotifyState,
        priority: u8,
    ) {
        if scripts.for_state(state).is_none() && scripts.any.is_none() {
            return;
        }
        self.send(
            target,
            Job::Run {
                scripts: Box::new(scripts.clone()),
                state,
                priority,
            },
        );
    }

    fn send(&self, target: NotifyTarget, job: Job) {
        let mut queues = match self.queues.lock() {
            Ok(q) => q,
            Err(poisoned) => poisoned.into_inner(),
        };
        let job = match queues.get(&target) {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                // The worker is gone (its runtime ended); start a new one below.
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(worker(target.clone(), rx));
        // A fresh channel with a live receiver cannot refuse the job.
        let _ = tx.send(job);
        queues.insert(target, tx);
    }

    /// Drop the queue of an instance or group that no longer exists (after a reload). What is
    /// already queued for it still runs, in order; then its worker ends.
    pub fn forget(&self, target: &NotifyTarget) {
        let mut queues = match self.queues.lock() {
            Ok(q) => q,
            Err(poisoned) => poisoned.into_inner(),
        };
        queues.remove(target);
    }

    /// Wait until everything queued so far has finished, or `timeout` passes. Returns false on
    /// timeout. Use at shutdown so `notify_stop` / `STOP` scripts get to run.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let waits: Vec<oneshot::Receiver<()>> = {
            let queues = match self.queues.lock() {
                Ok(q) => q,
                Err(poisoned) => poisoned.into_inner(),
            };
            queues
                .values()
                .filter_map(|tx| {
                    let (done, wait) = oneshot::channel();
                    tx.send(Job::Barrier(done)).ok().map(|()| wait)
                })
                .collect()
        };
        match tokio::time::timeout(timeout, futures::future::join_all(waits)).await {
            // A dropped barrier means its worker died with jobs unfinished.
            Ok(done) => done.iter().all(Result::is_ok),
            Err(_elapsed) => false,
        }
    }
}

async fn worker(target: NotifyTarget, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = rx.recv().await {
        match job {
            Job::Barrier(done) => {
                let _ = done.send(());
            }
            Job::Run {
                scripts,
                state,
                priority,
            } => run_job(&target, &scripts, state, priority).await,
        }
    }
}

async fn run_job(target: &NotifyTarget, scripts: &NotifyScripts, state: NotifyState, priority: u8) {
    let name = target.name();
    let specific_label = format!(
        "notify_{} for {} {name}",
        state.as_str().to_lowercase(),
        target.kind()
    );
    let generic_label = format!("notify for {} {name}", target.kind());
    let extra = vec![
        target.kind().to_owned(),
        name.to_owned(),
        state.as_str().to_owned(),
        priority.to_string(),
    ];
    let specific = async {
        if let Some(cmd) = scripts.for_state(state) {
            run_one(cmd, &[], scripts.timeout, &specific_label).await;
        }
    };
    let generic = async {
        if let Some(cmd) = &scripts.any {
            run_one(cmd, &extra, scripts.timeout, &generic_label).await;
        }
    };
    tokio::join!(specific, generic);
}

async fn run_one(cmd: &CommandLine, extra: &[String], timeout: Duration, label: &str) {
    tracing::info!(command = cmd.raw(), args = ?extra, "running {label}");
    let out = exec::run(RunSpec {
        command: cmd,
        extra_args: extra,
        timeout,
        user: None,
        label,
    })
    .await;
    match out.exit {
        RunExit::Code(0) => {}
        other => tracing::warn!(
            command = cmd.raw(),
            stderr = out.stderr.trim_end(),
            "{label}: {other}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_from_resolved() {
        let n = ResolvedNotify {
            any: Some("/x/notify.sh".into()),
            timeout_ms: 5000,
            ..Default::default()
        };
        let s = NotifyScripts::from_resolved(&n).unwrap();
        assert_eq!(s.any.as_ref().unwrap().argv(), ["/x/notify.sh"]);
        assert!(s.for_state(NotifyState::Master).is_none());
        assert_eq!(s.timeout, Duration::from_secs(5));
        let bad = ResolvedNotify {
            master: Some("echo 'x".into()),
            timeout_ms: 5000,
            ..Default::default()
        };
        let e = NotifyScripts::from_resolved(&bad).unwrap_err().to_string();
        assert!(
            e.contains("notify.master") && e.contains("unterminated"),
            "{e}"
        );
        let zero = ResolvedNotify {
            timeout_ms: 0,
            ..Default::default()
        };
        assert!(
            NotifyScripts::from_resolved(&zero)
                .unwrap_err()
                .to_string()
                .contains("notify.timeoutMs")
        );
    }

    #[test]
    fn state_words() {
        let words: Vec<_> = [
            NotifyState::Master,
            NotifyState::Backup,
            NotifyState::Fault,
            NotifyState::Stop,
        ]
        .map(|s| s.to_string())
        .into();
        assert_eq!(words, ["MASTER", "BACKUP", "FAULT", "STOP"]);
    }

    #[tokio::test]
    async fn flush_with_nothing_queued_returns_true() {
        assert!(Notifier::new().flush(Duration::from_secs(1)).await);
    }
}
