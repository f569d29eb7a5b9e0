//! Trackers: the I/O half of keepalived's `vrrp_script`, `vrrp_track_process` and `track_file`.
//!
//! This module only *observes*; the sans-IO core owns what an observation means (rise/fall
//! counting, weights, `reverse`, quorum, clamping, FAULT). Each tracker runs as a tokio task
//! and sends raw [`Observation`]s on an `mpsc` channel to the driver:
//!
//! - [`script`]: runs the command every `interval`, kills it (and its process group) after
//!   `timeout`, and reports every run (exit code 0 = success, anything else or a timeout =
//!   failure). Runs of one script never overlap; a tick that falls while the previous run is
//!   still going is skipped, as in keepalived.
//! - [`process`]: scans `/proc` and reports how many processes have the configured name, on
//!   every change and periodically. Matching is on `/proc/PID/comm` (keepalived's default);
//!   names longer than the kernel's 15-byte `comm` are confirmed against the basename of
//!   `argv[0]`. In a pod the agent must share the host PID namespace (`hostPID: true`),
//!   otherwise it only sees the pod's own processes and every count is 0.
//! - [`http`]: GETs a URL every `interval` (no shell, no curl) and reports every check
//!   (the expected status code in time = success); scheduled like a script.
//! - [`file`](mod@file): reads the integer in a file (keepalived's `strtol(…, 0)` forms: decimal,
//!   `0x` hex, leading-`0` octal, optional sign, surrounding whitespace) and reports it on every
//!   change; a missing, unreadable, empty or non-numeric file is reported as `None`.
//!
//! Trackers are shared by name across instances as in keepalived: a `vrrp_script` tracked by
//! three instances runs once, and its observations carry the tracker name; the driver fans them
//! out to every instance tracking that name. `track_interface` is not here: link state comes
//! from the netlink link events in `net`.

pub mod exec;
pub mod file;
pub mod http;
pub mod process;
pub mod script;

use std::collections::BTreeMap;
use std::time::Duration;

use crds::vrrpnode::ResolvedInstance;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::Error;
pub use exec::{CommandLine, RunExit, RunOutcome};
pub use file::FileSpec;
pub use http::{HttpDetail, HttpOutcome, HttpSpec};
pub use process::ProcessSpec;
pub use script::ScriptSpec;

/// Details of one script run, for logs, metrics and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptDetail {
    /// How the run ended.
    pub exit: RunExit,
    /// How long it ran.
    pub duration: Duration,
}

/// One raw result from a tracker. The tracker name identifies it; the kind is the variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// A `vrrp_script` run finished (sent after every run).
    Script {
        /// The `vrrp_script` name.
        tracker: String,
        /// Exit code 0 (keepalived's success).
        success: bool,
        /// How the run ended.
        detail: ScriptDetail,
    },
    /// The number of processes matching a `vrrp_track_process` (sent on change and
    /// periodically).
    ProcessCount {
        /// The `vrrp_track_process` name.
        tracker: String,
        /// Matching processes now.
        count: u32,
    },
    /// The value of a `track_file` (sent on change and periodically).
    FileValue {
        /// The `track_file` name.
        tracker: String,
        /// The integer in the file; `None` when the file is missing, unreadable or not a number.
        value: Option<i64>,
    },
    /// An HTTP check finished (sent after every check).
    Http {
        /// The `track.http` name.
        tracker: String,
        /// The expected status arrived in time.
        success: bool,
        /// How the check ended.
        detail: HttpDetail,
    },
}

impl Observation {
    /// The tracker's name.
    pub fn tracker(&self) -> &str {
        match self {
            Observation::Script { tracker, .. }
            | Observation::ProcessCount { tracker, .. }
            | Observation::FileValue { tracker, .. }
            | Observation::Http { tracker, .. } => tracker,
        }
    }

    /// The tracker's kind.
    pub fn kind(&self) -> TrackerKind {
        match self {
            Observation::Script { .. } => TrackerKind::Script,
            Observation::ProcessCount { .. } => TrackerKind::Process,
            Observation::FileValue { .. } => TrackerKind::File,
            Observation::Http { .. } => TrackerKind::Http,
        }
    }
}

/// Kinds of tracker (the `kind` in status and metrics): the core's [`vrrp::TrackerKind`].
pub use vrrp::TrackerKind;

/// The trackers to run, deduplicated by name across instances.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackerSet {
    /// `vrrp_script`s by name.
    pub scripts: BTreeMap<String, ScriptSpec>,
    /// `vrrp_track_process`es by name.
    pub processes: BTreeMap<String, ProcessSpec>,
    /// `track_file`s by name.
    pub files: BTreeMap<String, FileSpec>,
    /// HTTP checks by name.
    pub http: BTreeMap<String, HttpSpec>,
    /// Which instances track each (kind, name), in configuration order: where the driver
    /// delivers an [`Observation`].
    pub tracked_by: BTreeMap<(TrackerKind, String), Vec<String>>,
}

/// Insert `spec` under `name`, or check that an earlier instance defined the same thing.
fn merge<T: PartialEq>(
    map: &mut BTreeMap<String, T>,
    owners: &mut BTreeMap<String, String>,
    kind: &str,
    name: &str,
    instance: &str,
    spec: T,
) -> Result<(), Error> {
    match map.get(name) {
        None => {
            map.insert(name.to_owned(), spec);
            owners.insert(name.to_owned(), instance.to_owned());
            Ok(())
        }
        Some(existing) if *existing == spec => Ok(()),
        Some(_) => Err(Error::Config(format!(
            "instance {instance}: track.{kind} `{name}` differs from the `{name}` of instance {}; \
             trackers are shared by name, so one name must mean one {kind} definition",
            owners.get(name).map(String::as_str).unwrap_or("?"),
        ))),
    }
}

impl TrackerSet {
    /// Collect the trackers of `instances`. A name used by several instances runs once; it is an
    /// error if they disagree on what it runs or reads (weights, rise/fall, reverse may differ:
    /// those are the core's business per instance).
    pub fn from_instances<'a>(
        instances: impl IntoIterator<Item = &'a ResolvedInstance>,
    ) -> Result<Self, Error> {
        let mut set = TrackerSet::default();
        let (mut s_own, mut p_own, mut f_own) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        let mut h_own = BTreeMap::new();
        for inst in instances {
            let mut used_by = |kind: TrackerKind, name: &str| {
                let users = set.tracked_by.entry((kind, name.to_owned())).or_default();
                if !users.contains(&inst.name) {
                    users.push(inst.name.clone());
                }
            };
            for s in &inst.track.scripts {
                used_by(TrackerKind::Script, &s.name);
            }
            for p in &inst.track.processes {
                used_by(TrackerKind::Process, &p.name);
            }
            for f in &inst.track.files {
                used_by(TrackerKind::File, &f.name);
            }
            for h in &inst.track.http {
                used_by(TrackerKind::Http, &h.name);
            }
            for s in &inst.track.scripts {
                let spec = ScriptSpec::from_resolved(s).map_err(|e| in_instance(&inst.name, e))?;
                merge(
                    &mut set.scripts,
                    &mut s_own,
                    "scripts",
                    &s.name,
                    &inst.name,
                    spec,
                )?;
            }
            for p in &inst.track.processes {
                let spec = ProcessSpec::from_resolved(p).map_err(|e| in_instance(&inst.name, e))?;
                merge(
                    &mut set.processes,
                    &mut p_own,
                    "processes",
                    &p.name,
                    &inst.name,
                    spec,
                )?;
            }
            for f in &inst.track.files {
                let spec = FileSpec::from_resolved(f).map_err(|e| in_instance(&inst.name, e))?;
                merge(
                    &mut set.files,
                    &mut f_own,
                    "files",
                    &f.name,
                    &inst.name,
                    spec,
                )?;
            }
            for h in &inst.track.http {
                let spec = HttpSpec::from_resolved(h).map_err(|e| in_instance(&inst.name, e))?;
                merge(&mut set.http, &mut h_own, "http", &h.name, &inst.name, spec)?;
            }
        }
        Ok(set)
    }

    /// The instances an observation is for (empty for an unknown tracker).
    pub fn instances_for(&self, obs: &Observation) -> &[String] {
        self.tracked_by
            .get(&(obs.kind(), obs.tracker().to_owned()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// True when there is nothing to run.
    pub fn is_empty(&self) -> bool {
        self.scripts.is_empty()
            && self.processes.is_empty()
            && self.files.is_empty()
            && self.http.is_empty()
    }
}

fn in_instance(instance: &str, e: Error) -> Error {
    match e {
        Error::Config(msg) => Error::Config(format!("instance {instance}: {msg}")),
        other => other,
    }
}

/// Knobs of the tracker tasks that keepalived.conf does not carry.
#[derive(Clone, Debug)]
pub struct TrackerOptions {
    /// How often `/proc` is scanned for tracked processes (default 1 s).
    pub process_scan_interval: Duration,
    /// Re-send unchanged process counts and file values this often (default 30 s).
    pub refresh_interval: Duration,
    /// How often tracked files are re-read even without an inotify event (default 1 s).
    pub file_poll_interval: Duration,
    /// Where the proc filesystem is mounted (default `/proc`).
    pub proc_root: std::path::PathBuf,
}

impl Default for TrackerOptions {
    fn default() -> Self {
        Self {
            process_scan_interval: Duration::from_secs(1),
            refresh_interval: Duration::from_secs(30),
            file_poll_interval: Duration::from_secs(1),
            proc_root: "/proc".into(),
        }
    }
}

/// A spawned task that is aborted when dropped.
#[derive(Debug)]
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What [`Trackers::apply`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Trackers started (new or changed), as (kind, name).
    pub started: Vec<(TrackerKind, String)>,
    /// Trackers stopped (removed or changed), as (kind, name).
    pub stopped: Vec<(TrackerKind, String)>,
}

/// The running trackers. Dropping it stops them all (and kills running scripts).
pub struct Trackers {
    tx: mpsc::Sender<Observation>,
    opts: TrackerOptions,
    scripts: BTreeMap<String, (ScriptSpec, Task)>,
    files: BTreeMap<String, (FileSpec, Task)>,
    http: BTreeMap<String, (HttpSpec, Task)>,
    processes: Option<(BTreeMap<String, ProcessSpec>, Task)>,
}

impl Trackers {
    /// No trackers yet; observations will go to `tx`.
    pub fn new(tx: mpsc::Sender<Observation>, opts: TrackerOptions) -> Self {
        Self {
            tx,
            opts,
            scripts: BTreeMap::new(),
            files: BTreeMap::new(),
            http: BTreeMap::new(),
            processes: None,
        }
    }

    /// Make the running trackers match `set`: unchanged ones keep running untouched (a reload
    /// does not restart them), removed ones stop, new or changed ones start. Must be called
    /// inside a tokio runtime.
    pub fn apply(&mut self, set: &TrackerSet) -> ApplyReport {
        let mut report = ApplyReport::default();
        reconcile(
            &mut self.scripts,
            &set.scripts,
            TrackerKind::Script,
            &mut report,
            |spec| tokio::spawn(script::run_tracker(spec.clone(), self.tx.clone())),
        );
        reconcile(
            &mut self.files,
            &set.files,
            TrackerKind::File,
            &mut report,
            |spec| {
                tokio::spawn(file::run_tracker(
                    spec.clone(),
                    self.opts.clone(),
                    self.tx.clone(),
                ))
            },
        );
        reconcile(
            &mut self.http,
            &set.http,
            TrackerKind::Http,
            &mut report,
            |spec| tokio::spawn(http::run_tracker(spec.clone(), self.tx.clone())),
        );
        let current = self
            .processes
            .as_ref()
            .map(|(specs, _)| specs.clone())
            .unwrap_or_default();
        if current != set.processes {
            for name in current
                .keys()
                .filter(|n| set.processes.get(*n) != current.get(*n))
            {
                report.stopped.push((TrackerKind::Process, name.clone()));
            }
            for name in set
                .processes
                .keys()
                .filter(|n| set.processes.get(*n) != current.get(*n))
            {
                report.started.push((TrackerKind::Process, name.clone()));
            }
            // One scanner serves every process tracker; restart it with the new list.
            self.processes = None;
            if !set.processes.is_empty() {
                let task = tokio::spawn(process::run_scanner(
                    set.processes.values().cloned().collect(),
                    self.opts.clone(),
                    self.tx.clone(),
                ));
                self.processes = Some((set.processes.clone(), Task(task)));
            }
        }
        if !report.started.is_empty() || !report.stopped.is_empty() {
            tracing::info!(started = ?report.started, stopped = ?report.stopped, "trackers updated");
        }
        report
    }

    /// The trackers running now, as (kind, name).
    pub fn running(&self) -> Vec<(TrackerKind, String)> {
        let mut out: Vec<_> = self
            .scripts
            .keys()
            .map(|n| (TrackerKind::Script, n.clone()))
            .collect();
        if let Some((specs, _)) = &self.processes {
            out.extend(specs.keys().map(|n| (TrackerKind::Process, n.clone())));
        }
        out.extend(self.files.keys().map(|n| (TrackerKind::File, n.clone())));
        out.extend(self.http.keys().map(|n| (TrackerKind::Http, n.clone())));
        out
    }

    /// Stop every tracker (running scripts are killed).
    pub fn stop_all(&mut self) {
        self.scripts.clear();
        self.files.clear();
        self.http.clear();
        self.processes = None;
    }
}

fn reconcile<S: Clone + PartialEq>(
    running: &mut BTreeMap<String, (S, Task)>,
    wanted: &BTreeMap<String, S>,
    kind: TrackerKind,
    report: &mut ApplyReport,
    mut start: impl FnMut(&S) -> JoinHandle<()>,
) {
    running.retain(|name, (spec, _)| {
        let keep = wanted.get(name) == Some(spec);
        if !keep {
            report.stopped.push((kind, name.clone()));
        }
        keep
    });
    for (name, spec) in wanted {
        if !running.contains_key(name) {
            report.started.push((kind, name.clone()));
            running.insert(name.clone(), (spec.clone(), Task(start(spec))));
        }
    }
}

#[cfg(test)]
mod tests {
    use crds::vrrpnode::{ResolvedTrackFile, ResolvedTrackProcess, ResolvedTrackScript};

    use super::*;

    fn inst(name: &str, script: &str, process: &str, file: &str) -> ResolvedInstance {
        let mut i = ResolvedInstance {
            name: name.into(),
            ..Default::default()
        };
        i.track.scripts = vec![ResolvedTrackScript {
            name: "chk".into(),
            script: script.into(),
            interval_ms: 1000,
            timeout_ms: 1000,
            rise: 1,
            fall: 1,
            ..Default::default()
        }];
        i.track.processes = vec![ResolvedTrackProcess {
            name: "track_apache".into(),
            process: process.into(),
            ..Default::default()
        }];
        i.track.files = vec![ResolvedTrackFile {
            name: "tf".into(),
            path: file.into(),
            ..Default::default()
        }];
        i
    }

    #[test]
    fn shared_by_name_and_routed_to_every_user() {
        let set = TrackerSet::from_instances(&[
            inst("VI_1", "/bin/true", "httpd", "/run/x"),
            inst("VI_2", "/bin/true", "httpd", "/run/x"),
        ])
        .unwrap();
        assert_eq!(
            (set.scripts.len(), set.processes.len(), set.files.len()),
            (1, 1, 1)
        );
        let both = ["VI_1".to_string(), "VI_2".to_string()];
        let script = Observation::Script {
            tracker: "chk".into(),
            success: true,
            detail: ScriptDetail {
                exit: RunExit::Code(0),
                duration: Duration::ZERO,
            },
        };
        assert_eq!(set.instances_for(&script), both);
        assert_eq!(
            set.instances_for(&Observation::ProcessCount {
                tracker: "track_apache".into(),
                count: 1
            }),
            both
        );
        assert_eq!(
            set.instances_for(&Observation::FileValue {
                tracker: "tf".into(),
                value: None
            }),
            both
        );
        // Same name, other kind: not routed.
        assert!(
            set.instances_for(&Observation::FileValue {
                tracker: "chk".into(),
                value: None
            })
            .is_empty()
        );
    }

    #[test]
    fn conflicts_and_bad_specs_name_instance_and_field() {
        for (b, kind) in [
            (
                inst("VI_2", "/bin/false", "httpd", "/run/x"),
                "track.scripts `chk`",
            ),
            (
                inst("VI_2", "/bin/true", "nginx", "/run/x"),
                "track.processes `track_apache`",
            ),
            (
                inst("VI_2", "/bin/true", "httpd", "/run/y"),
                "track.files `tf`",
            ),
        ] {
            let e = TrackerSet::from_instances(&[inst("VI_1", "/bin/true", "httpd", "/run/x"), b])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(kind) && e.contains("VI_1") && e.contains("VI_2"),
                "{e}"
            );
        }
        let e = TrackerSet::from_instances(&[inst("VI_9", "/bin/true", "", "/run/x")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("instance VI_9") && e.contains("track.processes[track_apache].process"),
            "{e}"
        );
    }
}
