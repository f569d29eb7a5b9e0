//! Notify scripts: keepalived's argument convention (with the user's notify.sh), per-instance
//! ordering, independence of instances, and the timeout kill.

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent::notify::{Notifier, NotifyScripts, NotifyState, NotifyTarget};
use crds::vrrpnode::ResolvedNotify;
use tokio::time::Instant;

const DEADLINE: Duration = Duration::from_secs(10);

/// Write an executable script.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

fn scripts(n: ResolvedNotify) -> NotifyScripts {
    NotifyScripts::from_resolved(&n).unwrap()
}

fn generic(path: &Path, timeout_ms: u32) -> NotifyScripts {
    scripts(ResolvedNotify {
        any: Some(path.display().to_string()),
        timeout_ms,
        ..Default::default()
    })
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The user's notify.sh (a copy of the keepalived-configs fixture), writing to a temporary file
/// instead of /var/run.
#[tokio::test]
async fn users_notify_sh_gets_keepalived_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("keepalived_status");
    let original = include_str!("notify_fixtures/notify.sh");
    assert!(
        original.contains("/var/run/keepalived_status"),
        "fixture changed: {original}"
    );
    let body = original.replace("/var/run/keepalived_status", &status.display().to_string());
    let sh = script(dir.path(), "keepalived_notify.sh", &body);

    let n = Notifier::new();
    n.notify("VI_1", &generic(&sh, 5000), NotifyState::Master, 244);
    assert!(n.flush(DEADLINE).await);
    assert_eq!(
        std::fs::read_to_string(&status).unwrap(),
        "INSTANCE VI_1 has transitioned to the MASTER state with a priority of 244\n"
    );

    n.notify_group("G1", &generic(&sh, 5000), NotifyState::Fault);
    assert!(n.flush(DEADLINE).await);
    assert_eq!(
        std::fs::read_to_string(&status).unwrap(),
        "GROUP G1 has transitioned to the FAULT state with a priority of 0\n"
    );
}

/// State scripts get no extra arguments; the generic one gets exactly four, after the
/// configured ones.
#[tokio::test]
async fn state_scripts_get_no_extra_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let rec = script(
        dir.path(),
        "rec.sh",
        &format!("#!/bin/sh\necho \"$# $*\" >> {}\n", log.display()),
    );
    let r = |tag: &str| Some(format!("{} {tag}", rec.display()));
    let all = scripts(ResolvedNotify {
        master: r("m"),
        backup: r("b"),
        fault: r("f"),
        stop: r("s"),
        any: r("any"),
        timeout_ms: 5000,
    });
    let n = Notifier::new();
    for (state, prio) in [
        (NotifyState::Backup, 100),
        (NotifyState::Master, 100),
        (NotifyState::Fault, 0),
        (NotifyState::Stop, 100),
    ] {
        n.notify("VI_1", &all, state, prio);
        assert!(n.flush(DEADLINE).await);
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    // The state script and the generic script of one change start together: compare as sets
    // per change.
    lines.sort();
    let mut want = vec![
        "1 b",
        "5 any INSTANCE VI_1 BACKUP 100",
        "1 m",
        "5 any INSTANCE VI_1 MASTER 100",
        "1 f",
        "5 any INSTANCE VI_1 FAULT 0",
        "1 s",
        "5 any INSTANCE VI_1 STOP 100",
    ];
    want.sort();
    assert_eq!(lines, want);
}

/// Notifications of one instance run in order, even when an earlier one is slow.
#[tokio::test]
async fn one_instance_runs_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let sh = script(
        dir.path(),
        "slow_first.sh",
        &format!(
            "#!/bin/sh\n[ \"$3\" = MASTER ] && sleep 0.5\necho \"$3\" >> {}\n",
            log.display()
        ),
    );
    let s = generic(&sh, 5000);
    let n = Notifier::new();
    n.notify("VI_1", &s, NotifyState::Master, 200);
    n.notify("VI_1", &s, NotifyState::Backup, 100);
    n.notify("VI_1", &s, NotifyState::Fault, 0);
    n.notify("VI_1", &s, NotifyState::Master, 200);
    assert!(n.flush(DEADLINE).await);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "MASTER\nBACKUP\nFAULT\nMASTER\n"
    );
}

/// A slow notify for one instance does not hold up another instance.
#[tokio::test]
async fn instances_do_not_wait_for_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let sh = script(
        dir.path(),
        "per_instance.sh",
        &format!(
            "#!/bin/sh\n[ \"$2\" = SLOW ] && sleep 30\ntouch {}/done-$2\n",
            dir.path().display()
        ),
    );
    let s = generic(&sh, 60_000);
    let n = Notifier::new();
    n.notify("SLOW", &s, NotifyState::Master, 100);
    n.notify("FAST", &s, NotifyState::Master, 100);
    let fast = dir.path().join("done-FAST");
    wait_until("FAST's notify to finish while SLOW's still runs", || {
        fast.exists()
    })
    .await;
    assert!(!dir.path().join("done-SLOW").exists());
    // Dropping the notifier's runtime at test end kills SLOW's script (kill on drop).
}

/// A notify script that overruns its timeout is killed (with its children), and the queue
/// goes on with the next notification.
#[tokio::test]
async fn timeout_kills_and_queue_continues() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pids");
    let log = dir.path().join("log");
    let sh = script(
        dir.path(),
        "hang.sh",
        &format!(
            "#!/bin/sh\nif [ \"$3\" = MASTER ]; then sleep 60 & echo $! $$ > {p}; wait; fi\necho \"$3\" >> {l}\n",
            p = pidfile.display(),
            l = log.display()
        ),
    );
    let s = generic(&sh, 300);
    let n = Notifier::new();
    n.notify("VI_1", &s, NotifyState::Master, 200);
    n.notify("VI_1", &s, NotifyState::Backup, 100);
    assert!(n.flush(DEADLINE).await);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "BACKUP\n",
        "MASTER's run was killed before its echo"
    );
    let pids: Vec<i32> = std::fs::read_to_string(&pidfile)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        wait_until(&format!("pid {pid} gone"), || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with(['Z', 'X']))
                })
                .unwrap_or(true)
        })
        .await;
    }
}

/// No script configured for a state and no generic script: nothing runs, flush is immediate.
#[tokio::test]
async fn nothing_configured_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let only_master = scripts(ResolvedNotify {
        master: Some(format!("touch {}", marker.display())),
        timeout_ms: 5000,
        ..Default::default()
    });
    let n = Notifier::new();
    n.notify("VI_1", &only_master, NotifyState::Backup, 100);
    assert!(n.flush(DEADLINE).await);
    assert!(!marker.exists());
    n.notify("VI_1", &only_master, NotifyState::Master, 100);
    assert!(n.flush(DEADLINE).await);
    assert!(marker.exists());
}

/// flush() gives up at its deadline when a script is still running.
#[tokio::test]
async fn flush_times_out() {
    let s = scripts(ResolvedNotify {
        stop: Some("sleep 30".into()),
        timeout_ms: 60_000,
        ..Default::default()
    });
    let n = Notifier::new();
    n.notify("VI_1", &s, NotifyState::Stop, 100);
    assert!(!n.flush(Duration::from_millis(200)).await);
}

/// Forgetting an instance lets what was queued for it finish, and a later notify for the same
/// name starts a fresh queue.
#[tokio::test]
async fn forget_finishes_queued_work() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let sh = script(
        dir.path(),
        "rec.sh",
        &format!("#!/bin/sh\nsleep 0.2\necho \"$3\" >> {}\n", log.display()),
    );
    let s = generic(&sh, 5000);
    let n = Notifier::new();
    n.notify("VI_1", &s, NotifyState::Master, 100);
    n.notify("VI_1", &s, NotifyState::Stop, 100);
    n.forget(&NotifyTarget::Instance("VI_1".into()));
    wait_until("the queued notifications to run", || {
        std::fs::read_to_string(&log).unwrap_or_default() == "MASTER\nSTOP\n"
    })
    .await;
    n.notify("VI_1", &s, NotifyState::Backup, 100);
    assert!(n.flush(DEADLINE).await);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "MASTER\nSTOP\nBACKUP\n"
    );
}
