//! vrrp_script trackers against real processes: exit codes, output capture, timeout kill of
//! the whole process group, `user`, sharing by name, and reconfiguration.

use std::path::Path;
use std::time::Duration;

use agent::track::{
    Observation, RunExit, ScriptSpec, TrackerKind, TrackerOptions, TrackerSet, Trackers,
};
use crds::vrrpnode::{ResolvedInstance, ResolvedTrackScript};
use tokio::sync::mpsc;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(10);

fn script(name: &str, cmd: &str, interval_ms: u32, timeout_ms: u32) -> ResolvedTrackScript {
    ResolvedTrackScript {
        name: name.into(),
        script: cmd.into(),
        interval_ms,
        timeout_ms,
        rise: 3,
        fall: 3,
        weight: 0,
        reverse: false,
        user: None,
    }
}

fn spec(cmd: &str, timeout_ms: u32) -> ScriptSpec {
    ScriptSpec::from_resolved(&script("chk", cmd, 1000, timeout_ms)).unwrap()
}

/// True when `pid` no longer runs (gone, or a zombie waiting for a parent that is not us).
fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next());
            matches!(state, Some(Some('Z' | 'X')))
        }
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn read_pids(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn exit_zero_is_success() {
    let out = spec("/bin/true", 5000).run_once().await;
    assert_eq!(out.exit, RunExit::Code(0));
    assert!(out.exit.success());
    assert!(out.pid.is_some());
}

#[tokio::test]
async fn non_zero_exit_is_failure_with_its_code() {
    let out = spec("sh -c 'exit 3'", 5000).run_once().await;
    assert_eq!(out.exit, RunExit::Code(3));
    assert!(!out.exit.success());
}

#[tokio::test]
async fn killed_by_signal_is_failure() {
    let out = spec("sh -c 'kill -9 $$'", 5000).run_once().await;
    assert_eq!(out.exit, RunExit::Signal(9));
    assert!(!out.exit.success());
}

#[tokio::test]
async fn stdout_and_stderr_are_captured() {
    let out = spec(
        "sh -c 'echo out-line; echo err-line >&2; echo second'",
        5000,
    )
    .run_once()
    .await;
    assert_eq!(out.exit, RunExit::Code(0));
    assert_eq!(out.stdout, "out-line\nsecond\n");
    assert_eq!(out.stderr, "err-line\n");
}

#[tokio::test]
async fn arguments_are_passed_without_a_shell() {
    // No shell in between: `$HOME` inside single quotes and `*` inside double quotes arrive
    // literally, and a quoted blank stays inside its word.
    let out = spec(r#"printf '%s|' '$HOME' "a*b" 'two words'"#, 5000)
        .run_once()
        .await;
    assert_eq!(out.exit, RunExit::Code(0));
    assert_eq!(out.stdout, "$HOME|a*b|two words|");
}

#[tokio::test]
async fn shell_syntax_runs_through_sh() {
    let out = spec("test -n x && echo via-shell | tr a-z A-Z; exit 4", 5000)
        .run_once()
        .await;
    assert_eq!(out.exit, RunExit::Code(4));
    assert_eq!(out.stdout, "VIA-SHELL\n");
}

#[tokio::test]
async fn executable_without_shebang_runs_with_sh() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("noshebang");
    std::fs::write(&path, "echo from-sh\nexit 7\n").unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = spec(&format!("{} arg", path.display()), 5000)
        .run_once()
        .await;
    assert_eq!(out.exit, RunExit::Code(7));
    assert_eq!(out.stdout, "from-sh\n");
}

#[tokio::test]
async fn missing_program_is_a_failed_run_with_the_reason() {
    let out = spec("/nonexistent/kube-vrrp-check --x", 5000)
        .run_once()
        .await;
    match &out.exit {
        RunExit::SpawnFailed(why) => assert!(why.contains("/nonexistent/kube-vrrp-check"), "{why}"),
        other => panic!("expected a spawn failure, got {other:?}"),
    }
    assert!(!out.exit.success());
}

/// A script that outlives its timeout is killed with its whole process group (here a
/// background `sleep` it started too), and the run is a failure.
#[tokio::test]
async fn timeout_kills_the_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let cmd = format!(
        "sh -c 'sleep 60 & echo $! > {p}; echo $$ >> {p}; wait'",
        p = pids.display()
    );
    let started = Instant::now();
    let out = spec(&cmd, 300).run_once().await;
    assert_eq!(out.exit, RunExit::TimedOut);
    assert!(!out.exit.success());
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "killed before the timeout"
    );
    let pids = read_pids(&pids);
    assert_eq!(pids.len(), 2, "the script wrote its pid and its child's");
    assert_eq!(pids[1] as u32, out.pid.unwrap());
    for pid in pids {
        wait_until(&format!("pid {pid} to be gone"), || process_gone(pid)).await;
    }
}

/// A script that ignores SIGTERM is killed with SIGKILL after the grace period.
#[tokio::test]
async fn timeout_escalates_to_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let cmd = format!(
        "sh -c 'trap \"\" TERM; echo $$ > {p}; while :; do sleep 0.05; done'",
        p = pids.display()
    );
    let out = spec(&cmd, 200).run_once().await;
    assert_eq!(out.exit, RunExit::TimedOut);
    for pid in read_pids(&pids) {
        wait_until(&format!("pid {pid} to be gone"), || process_gone(pid)).await;
    }
}

#[tokio::test]
async fn runs_as_the_configured_user() {
    if !nix::unistd::geteuid().is_root() {
        // Straight to fd 2 (the harness hides a passing test's prints); fails unless skips are
        // allowed: tests/run.sh leaves this test out when not root (nextest profile no-root).
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: runs_as_the_configured_user: needs root to switch users"
        );
        assert!(
            std::env::var_os("KUBE_VRRP_ALLOW_SKIP").is_some_and(|v| v == "1"),
            "runs_as_the_configured_user needs root: run as root, through tests/run.sh, or with \
             KUBE_VRRP_ALLOW_SKIP=1"
        );
        return;
    }
    let Some(nobody) = nix::unistd::User::from_name("nobody").unwrap() else {
        println!("SKIPPED: runs_as_the_configured_user: no user `nobody` on this machine");
        return;
    };
    let mut r = script("chk", "sh -c 'id -u; id -g'", 1000, 5000);
    r.user = Some("nobody".into());
    let out = ScriptSpec::from_resolved(&r).unwrap().run_once().await;
    assert_eq!(out.exit, RunExit::Code(0), "{}", out.stderr);
    assert_eq!(out.stdout, format!("{}\n{}\n", nobody.uid, nobody.gid));
}

#[tokio::test]
async fn unknown_user_is_a_failed_run() {
    let mut r = script("chk", "/bin/true", 1000, 5000);
    r.user = Some("no-such-user-kube-vrrp".into());
    let out = ScriptSpec::from_resolved(&r).unwrap().run_once().await;
    match &out.exit {
        RunExit::SpawnFailed(why) => assert!(
            why.contains("no-such-user-kube-vrrp") && why.contains("does not exist"),
            "{why}"
        ),
        other => panic!("expected a spawn failure, got {other:?}"),
    }
}

fn instance(name: &str, scripts: Vec<ResolvedTrackScript>) -> ResolvedInstance {
    let mut i = ResolvedInstance {
        name: name.into(),
        ..Default::default()
    };
    i.track.scripts = scripts;
    i
}

/// One script tracked by two instances runs once per interval, and every run is reported
/// with its result.
#[tokio::test]
async fn shared_script_runs_once_and_reports_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let cmd = format!("sh -c 'echo run >> {}; exit 1'", runs.display());
    let mut a = script("chk", &cmd, 100, 1000);
    let b = {
        let mut b = a.clone();
        b.weight = -20; // per-instance semantics may differ
        b.rise = 1;
        b
    };
    a.weight = 0;
    let set = TrackerSet::from_instances(&[instance("VI_1", vec![a]), instance("VI_2", vec![b])])
        .unwrap();
    assert_eq!(set.scripts.len(), 1);

    let (tx, mut rx) = mpsc::channel(64);
    let mut trackers = Trackers::new(tx, TrackerOptions::default());
    let report = trackers.apply(&set);
    assert_eq!(
        report.started,
        vec![(TrackerKind::Script, "chk".to_string())]
    );
    let mut seen = 0;
    while seen < 3 {
        let obs = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("an observation")
            .unwrap();
        match obs {
            Observation::Script {
                tracker,
                success,
                detail,
            } => {
                assert_eq!(tracker, "chk");
                assert!(!success);
                assert_eq!(detail.exit, RunExit::Code(1));
            }
            other => panic!("unexpected {other:?}"),
        }
        seen += 1;
    }
    trackers.stop_all();
    let lines = std::fs::read_to_string(&runs).unwrap().lines().count();
    // Each reported run wrote one line; at most one more run can have started since.
    assert!(
        lines == seen || lines == seen + 1,
        "{lines} runs for {seen} observations"
    );
}

#[test]
fn conflicting_definitions_of_one_name_are_rejected() {
    let a = script("chk", "/bin/true", 1000, 1000);
    let b = script("chk", "/bin/false", 1000, 1000);
    let err = TrackerSet::from_instances(&[instance("VI_1", vec![a]), instance("VI_2", vec![b])])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("VI_2") && err.contains("VI_1") && err.contains("`chk`"),
        "{err}"
    );
}

/// Re-applying the same set leaves the tracker alone; removing it kills a running script.
#[tokio::test]
async fn reapply_keeps_unchanged_and_removal_kills_running_script() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let cmd = format!("sh -c 'echo $$ > {}; exec sleep 60'", pidfile.display());
    let set =
        TrackerSet::from_instances(&[instance("VI_1", vec![script("slow", &cmd, 1000, 60_000)])])
            .unwrap();
    let (tx, _rx) = mpsc::channel(64);
    let mut trackers = Trackers::new(tx, TrackerOptions::default());
    trackers.apply(&set);
    wait_until("the script to start", || !read_pids(&pidfile).is_empty()).await;
    let pid = read_pids(&pidfile)[0];

    let report = trackers.apply(&set);
    assert!(
        report.started.is_empty() && report.stopped.is_empty(),
        "{report:?}"
    );
    assert!(!process_gone(pid), "an unchanged tracker was restarted");

    let report = trackers.apply(&TrackerSet::default());
    assert_eq!(
        report.stopped,
        vec![(TrackerKind::Script, "slow".to_string())]
    );
    wait_until("the running script to be killed", || process_gone(pid)).await;
    assert!(trackers.running().is_empty());
}

/// Changing a script's command restarts it.
#[tokio::test]
async fn changed_script_is_restarted() {
    let a = TrackerSet::from_instances(&[instance(
        "VI_1",
        vec![script("chk", "/bin/true", 1000, 1000)],
    )])
    .unwrap();
    let b = TrackerSet::from_instances(&[instance(
        "VI_1",
        vec![script("chk", "/bin/false", 1000, 1000)],
    )])
    .unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    let mut trackers = Trackers::new(tx, TrackerOptions::default());
    trackers.apply(&a);
    let first = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(first, Observation::Script { success: true, .. }),
        "{first:?}"
    );
    let report = trackers.apply(&b);
    assert_eq!(
        report.stopped,
        vec![(TrackerKind::Script, "chk".to_string())]
    );
    assert_eq!(
        report.started,
        vec![(TrackerKind::Script, "chk".to_string())]
    );
    // The new definition's first run fails.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let obs = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap()
            .unwrap();
        if matches!(obs, Observation::Script { success: false, .. }) {
            break;
        }
    }
}
