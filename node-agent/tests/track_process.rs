//! vrrp_track_process against processes this test starts: `sleep` run through a symlink
//! with a unique name, so its `comm` is that name. Every process is killed by its PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use agent::track::{Observation, TrackerOptions, TrackerSet, Trackers};
use crds::vrrpnode::{ResolvedInstance, ResolvedTrackProcess};
use tokio::sync::mpsc;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(10);

/// Kills and reaps the processes it holds, also when the test fails.
struct Procs(Vec<Child>);

impl Procs {
    fn stop_one(&mut self) {
        let mut child = self.0.pop().expect("a running child");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn sleep_binary() -> PathBuf {
    for p in ["/usr/bin/sleep", "/bin/sleep"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("no sleep binary");
}

/// A symlink to `sleep` called `name` in `dir`.
fn renamed_sleep(dir: &Path, name: &str) -> PathBuf {
    let link = dir.join(name);
    std::os::unix::fs::symlink(sleep_binary(), &link).unwrap();
    link
}

fn instance(trackers: Vec<ResolvedTrackProcess>) -> ResolvedInstance {
    let mut i = ResolvedInstance {
        name: "VI_1".into(),
        ..Default::default()
    };
    i.track.processes = trackers;
    i
}

fn tracker(name: &str, process: &str) -> ResolvedTrackProcess {
    ResolvedTrackProcess {
        name: name.into(),
        process: process.into(),
        weight: 10,
        quorum: 1,
        reverse: false,
    }
}

/// Receive until tracker `name` reports `want` (earlier counts for it are allowed while the
/// processes start or stop).
async fn wait_count(rx: &mut mpsc::Receiver<Observation>, name: &str, want: u32) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let obs = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {name} = {want}"))
            .expect("channel open");
        if let Observation::ProcessCount { tracker, count } = obs
            && tracker == name
            && count == want
        {
            return;
        }
    }
}

fn opts() -> TrackerOptions {
    TrackerOptions {
        process_scan_interval: Duration::from_millis(50),
        ..Default::default()
    }
}

#[tokio::test]
async fn counts_follow_processes_starting_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    // Unique per run and at most 15 bytes, so it is the whole `comm`.
    let name = format!("kvtp{}", std::process::id() % 100_000_000);
    let bin = renamed_sleep(dir.path(), &name);

    let set = TrackerSet::from_instances(&[instance(vec![tracker("track_app", &name)])]).unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    let mut trackers = Trackers::new(tx, opts());
    trackers.apply(&set);
    wait_count(&mut rx, "track_app", 0).await;

    let mut procs = Procs(Vec::new());
    procs.0.push(Command::new(&bin).arg("60").spawn().unwrap());
    wait_count(&mut rx, "track_app", 1).await;
    procs.0.push(Command::new(&bin).arg("60").spawn().unwrap());
    wait_count(&mut rx, "track_app", 2).await;
    procs.stop_one();
    wait_count(&mut rx, "track_app", 1).await;
    procs.stop_one();
    wait_count(&mut rx, "track_app", 0).await;
}

/// Unchanged counts are not re-sent until the refresh interval.
#[tokio::test]
async fn unchanged_count_is_not_resent_before_refresh() {
    let name = format!("kvtq{}", std::process::id() % 100_000_000);
    let set = TrackerSet::from_instances(&[instance(vec![tracker("t", &name)])]).unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    let mut trackers = Trackers::new(tx, opts());
    trackers.apply(&set);
    wait_count(&mut rx, "t", 0).await;
    // Several scans happen in this window; none may produce a message.
    let extra = tokio::time::timeout(Duration::from_millis(400), rx.recv()).await;
    assert!(extra.is_err(), "unchanged count re-sent: {extra:?}");
}

/// Process names longer than the kernel's 15-byte `comm` match on the full argv[0] name.
#[tokio::test]
async fn long_names_match_on_argv0() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!("kvt-long-process-{}", std::process::id());
    let other = format!("kvt-long-process-{}x", std::process::id());
    let bin = renamed_sleep(dir.path(), &long);
    let other_bin = renamed_sleep(dir.path(), &other);
    let set = TrackerSet::from_instances(&[instance(vec![tracker("long", &long)])]).unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    let mut trackers = Trackers::new(tx, opts());
    trackers.apply(&set);
    wait_count(&mut rx, "long", 0).await;
    // Same first 15 bytes, different full name: must not count.
    let mut procs = Procs(vec![Command::new(&other_bin).arg("60").spawn().unwrap()]);
    let early = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
    assert!(
        early.is_err(),
        "a different long name was counted: {early:?}"
    );
    procs.0.push(Command::new(&bin).arg("60").spawn().unwrap());
    wait_count(&mut rx, "long", 1).await;
}

/// Two trackers with different names may watch the same process name; both report.
#[tokio::test]
async fn two_trackers_one_process_name() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("kvtr{}", std::process::id() % 100_000_000);
    let bin = renamed_sleep(dir.path(), &name);
    let set =
        TrackerSet::from_instances(&[instance(vec![tracker("a", &name), tracker("b", &name)])])
            .unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    let mut trackers = Trackers::new(tx, opts());
    trackers.apply(&set);
    let _procs = Procs(vec![Command::new(&bin).arg("60").spawn().unwrap()]);
    wait_count(&mut rx, "a", 1).await;
    wait_count(&mut rx, "b", 1).await;
}
