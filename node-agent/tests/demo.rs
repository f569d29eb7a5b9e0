//! `kube-vrrp-agent demo` end to end: the real binary builds its namespace lab, walks through
//! every step, prints a summary with a master and a measured gap per step, and leaves no
//! namespace, process or scratch directory behind — also when interrupted with SIGINT. Without
//! root the lab tests print a SKIPPED line; the "needs root" refusal is tested either way.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kube-vrrp-agent");

/// The lab tests run one at a time (two cores, shared).
static SERIAL: Mutex<()> = Mutex::new(());

fn can_run(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip_or_fail(test, "needs root (network namespaces)");
        return false;
    }
    true
}

/// A test that cannot run here: prints `SKIPPED: <test>: <reason>` to stderr and returns only
/// when `KUBE_VRRP_ALLOW_SKIP=1`; otherwise fails, so a skip never passes silently. tests/run.sh
/// leaves these tests out when not root (nextest profile `no-root`), and nextest counts them as
/// skipped. (The same rule as `lab::skip_or_fail` in tests/src.)
pub fn skip_or_fail(test: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
    if std::env::var_os("KUBE_VRRP_ALLOW_SKIP").is_some_and(|v| v == "1") {
        return;
    }
    panic!(
        "{test} cannot run here: {reason}. Run it as root, or through tests/run.sh (which \
         reports it as skipped), or set KUBE_VRRP_ALLOW_SKIP=1 to skip it. If tests/run.sh \
         printed this, add the test to the `no-root` filter in tests/nextest.toml."
    );
}

/// A started demo whose stdout/stderr go to files; killed (by PID) if the test panics.
struct Run {
    child: Child,
    dir: tempfile::TempDir,
}

impl Run {
    fn start(args: &[&str]) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let out = fs::File::create(dir.path().join("stdout")).unwrap();
        let err = fs::File::create(dir.path().join("stderr")).unwrap();
        let child = Command::new(BIN)
            .arg("demo")
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        Run { child, dir }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stdout(&self) -> String {
        fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Wait for the exit code, failing the test after `limit`.
    fn wait(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "demo still running after {limit:?}\nstdout:\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until stdout contains `text`.
    fn wait_for_output(&mut self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.stdout().contains(text) {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "demo ended before printing {text:?}\nstdout:\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            );
            assert!(
                Instant::now() < deadline,
                "{text:?} not printed within {limit:?}\nstdout:\n{}",
                self.stdout()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Nothing of this run is left: namespaces, processes, scratch directory.
    fn assert_clean(&self) {
        let prefix = format!("kvrrp-demo-{}-", self.pid());
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(
            !list.lines().any(|l| l.starts_with(&prefix)),
            "namespaces left behind:\n{list}"
        );
        let scratch = std::env::temp_dir().join(format!("kube-vrrp-demo-{}", self.pid()));
        assert!(!scratch.exists(), "{} left behind", scratch.display());
        // Every daemon the demo starts has the scratch directory on its command line.
        let marker = scratch.to_string_lossy().into_owned();
        let mut left = Vec::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&marker) {
                left.push(cmdline);
            }
        }
        assert!(left.is_empty(), "processes left behind: {left:?}");
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGINT makes the demo clean up after itself.
            // SAFETY: kill(2) on the child this test started.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The summary rows: step name → (new master, measured gap).
fn summary(stdout: &str) -> Vec<(String, String, String)> {
    let after = stdout
        .split("\nSummary\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}"));
    let mut lines = after.lines();
    let header = lines.next().unwrap();
    let col = |name: &str| header.find(name).unwrap();
    let (master, gap, lost) = (col("new master"), col("measured gap"), col("lost pings"));
    lines
        .take_while(|l| l.starts_with("  ") && !l.trim_start().starts_with("gap ="))
        .map(|l| {
            (
                l[..master].trim().to_owned(),
                l[master..gap].trim().to_owned(),
                l[gap..lost].trim().to_owned(),
            )
        })
        .collect()
}

fn is_duration(s: &str) -> bool {
    let Some((n, unit)) = s.split_once(' ') else {
        return false;
    };
    n.parse::<f64>().is_ok() && (unit == "ms" || unit == "s")
}

fn check_full_run(args: &[&str], want: &[(&str, &str)]) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut run = Run::start(args);
    let code = run.wait(Duration::from_secs(300));
    let (stdout, stderr) = (run.stdout(), run.stderr());
    assert_eq!(code, 0, "exit code\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        !stdout.contains('\x1b'),
        "--no-color / not a terminal: no escape codes"
    );
    let rows = summary(&stdout);
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|(s, m, _)| (s.as_str(), m.as_str()))
        .collect();
    assert_eq!(got, want, "summary steps and masters:\n{stdout}");
    for (step, _, gap) in &rows[1..] {
        assert!(
            is_duration(gap),
            "step {step:?} has no measured gap ({gap:?}):\n{stdout}"
        );
    }
    run.assert_clean();
}

const STEPS: [(&str, &str); 6] = [
    ("election", "node-a"),
    ("crash (SIGKILL + link down)", "node-b"),
    ("node-a returns (preemption)", "node-a"),
    ("tracker fails on node-a", "node-b"),
    ("tracker recovers", "node-a"),
    ("graceful SIGTERM", "node-b"),
];

#[test]
fn demo_fast_runs_every_step_and_cleans_up() {
    if !can_run("demo") {
        return;
    }
    check_full_run(&["--fast", "--no-color"], &STEPS);
}

#[test]
fn demo_with_keepalived_hands_over_to_it() {
    if !can_run("demo --keepalived") {
        return;
    }
    let installed = [
        "/usr/sbin/keepalived",
        "/sbin/keepalived",
        "/usr/local/sbin/keepalived",
    ]
    .iter()
    .any(|p| Path::new(p).exists());
    if !installed {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: demo --keepalived: keepalived is not installed"
        );
        return;
    }
    let mut want = STEPS.to_vec();
    want.push(("SIGTERM -> keepalived", "node-c"));
    check_full_run(&["--fast", "--no-color", "--keepalived"], &want);
}

#[test]
fn demo_ctrl_c_cleans_up_and_exits_130() {
    if !can_run("demo (Ctrl-C)") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut run = Run::start(&["--fast", "--no-color"]);
    run.wait_for_output("[2/6]", Duration::from_secs(120));
    // SAFETY: kill(2) on the child this test started.
    unsafe { libc::kill(run.pid() as i32, libc::SIGINT) };
    let code = run.wait(Duration::from_secs(60));
    assert_eq!(
        code,
        130,
        "exit code\nstdout:\n{}\nstderr:\n{}",
        run.stdout(),
        run.stderr()
    );
    assert!(run.stderr().contains("interrupted"), "{}", run.stderr());
    run.assert_clean();
}

#[test]
fn demo_refuses_without_root() {
    let out = Command::new(BIN)
        .args(["demo", "--fast"])
        .env("KUBE_VRRP_DEMO_ASSUME_NON_ROOT", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "demo needs root to create network namespaces; run: sudo kube-vrrp-agent demo"
        ),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing is built: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}
