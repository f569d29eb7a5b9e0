//! `vrrp_track_process`: count processes by name with a periodic scan of `/proc`.
//!
//! keepalived learns about process starts and exits from the netlink proc connector; a scan
//! every [`TrackerOptions::process_scan_interval`] (1 s by default) is simpler, needs no extra
//! capability, and costs one small read per process. One scanner serves all process trackers.
//!
//! Matching: a process matches when `/proc/PID/comm` equals the configured name. The kernel
//! keeps only the first 15 bytes in `comm`, so for longer names the first 15 bytes must match
//! and the basename of `argv[0]` (from `/proc/PID/cmdline`) must equal the whole name. Only
//! processes are counted, not threads, and not zombies (exited but not yet reaped). In a pod, `/proc` shows the host's processes only with
//! `hostPID: true`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crds::vrrpnode::ResolvedTrackProcess;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::{Observation, TrackerOptions};
use crate::Error;

/// The kernel's `comm` length without the trailing NUL.
const COMM_LEN: usize = 15;

/// What a `vrrp_track_process` looks for (weight/quorum/reverse belong to the core).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSpec {
    /// The `vrrp_track_process` name.
    pub name: String,
    /// The process name to count.
    pub process: String,
}

impl ProcessSpec {
    /// Validate a resolved `vrrp_track_process`.
    pub fn from_resolved(p: &ResolvedTrackProcess) -> Result<Self, Error> {
        if p.name.is_empty() {
            return Err(Error::Config(
                "track.processes[].name: must not be empty".into(),
            ));
        }
        let field = format!("track.processes[{}].process", p.name);
        if p.process.is_empty() {
            return Err(Error::Config(format!("{field}: must not be empty")));
        }
        if p.process.contains('/') || p.process.contains('\0') {
            return Err(Error::Config(format!(
                "{field}: `{}` is not a process name (no `/` or NUL; the name is what `ps -o comm` shows)",
                p.process
            )));
        }
        Ok(Self {
            name: p.name.clone(),
            process: p.process.clone(),
        })
    }
}

/// Does the live process in `dir` (a `/proc/PID` directory) have the name `want`?
fn matches(dir: &Path, want: &str) -> bool {
    let Ok(comm) = std::fs::read(dir.join("comm")) else {
        return false;
    };
    let comm = comm.strip_suffix(b"\n").unwrap_or(&comm);
    let want_b = want.as_bytes();
    let name_matches = if want_b.len() <= COMM_LEN {
        comm == want_b
    } else if comm != &want_b[..COMM_LEN] {
        false
    } else {
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
            return false;
        };
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        let base = argv0.rsplit(|b| *b == b'/').next().unwrap_or_default();
        base == want_b
    };
    name_matches && !is_dead(dir)
}

/// True for a zombie (exited, not yet reaped by its parent) or a dying process: it has
/// stopped running, so it must not count (keepalived counts a process as gone at its exit).
fn is_dead(dir: &Path) -> bool {
    let Ok(stat) = std::fs::read(dir.join("stat")) else {
        return true;
    };
    // `PID (comm) S …`: the state follows the last `)` (comm may itself contain parentheses).
    let Some(close) = stat.iter().rposition(|b| *b == b')') else {
        return true;
    };
    matches!(stat.get(close + 2), Some(b'Z' | b'X' | b'x'))
}

/// Count the processes under `proc_root` for each wanted process name.
pub fn scan(proc_root: &Path, names: &[&str]) -> std::io::Result<BTreeMap<String, u32>> {
    let mut counts: BTreeMap<String, u32> = names.iter().map(|n| ((*n).to_owned(), 0)).collect();
    for entry in std::fs::read_dir(proc_root)? {
        let Ok(entry) = entry else { continue };
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str() else {
            continue;
        };
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let dir = entry.path();
        for (name, count) in counts.iter_mut() {
            if matches(&dir, name) {
                *count += 1;
            }
        }
    }
    Ok(counts)
}

/// The scanner task: counts for every spec, sent on change and every `refresh_interval`.
/// Ends when the receiver is gone.
pub async fn run_scanner(
    specs: Vec<ProcessSpec>,
    opts: TrackerOptions,
    tx: mpsc::Sender<Observation>,
) {
    let names: Vec<String> = {
        let mut n: Vec<String> = specs.iter().map(|s| s.process.clone()).collect();
        n.sort();
        n.dedup();
        n
    };
    let proc_root: PathBuf = opts.proc_root.clone();
    let mut ticker = tokio::time::interval(opts.process_scan_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last: BTreeMap<String, u32> = BTreeMap::new();
    let mut last_refresh = Instant::now();
    let mut scan_error_logged = false;
    loop {
        ticker.tick().await;
        let (root, n) = (proc_root.clone(), names.clone());
        let result = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = n.iter().map(String::as_str).collect();
            scan(&root, &refs)
        })
        .await;
        let counts = match result {
            Ok(Ok(counts)) => {
                scan_error_logged = false;
                counts
            }
            Ok(Err(e)) => {
                if !scan_error_logged {
                    tracing::error!(proc_root = %proc_root.display(), error = %e, "cannot scan for tracked processes; counts are not updated");
                    scan_error_logged = true;
                }
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "process scan task failed");
                continue;
            }
        };
        let refresh = last_refresh.elapsed() >= opts.refresh_interval;
        if refresh {
            last_refresh = Instant::now();
        }
        for spec in &specs {
            let count = counts.get(&spec.process).copied().unwrap_or(0);
            let changed = last.get(&spec.name) != Some(&count);
            if changed {
                tracing::info!(tracker = %spec.name, process = %spec.process, count, "tracked process count changed");
            }
            if changed || refresh {
                last.insert(spec.name.clone(), count);
                if tx
                    .send(Observation::ProcessCount {
                        tracker: spec.name.clone(),
                        count,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc_state(root: &Path, pid: u32, comm: &str, argv0: &str, state: char) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
        std::fs::write(dir.join("cmdline"), format!("{argv0}\0--flag\0")).unwrap();
        std::fs::write(
            dir.join("stat"),
            format!("{pid} ({comm}) {state} 1 {pid} {pid} 0 -1"),
        )
        .unwrap();
    }

    fn fake_proc(root: &Path, pid: u32, comm: &str, argv0: &str) {
        fake_proc_state(root, pid, comm, argv0, 'S');
    }

    #[test]
    fn scan_counts_by_comm() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_proc(root, 1, "systemd", "/sbin/init");
        fake_proc(root, 10, "httpd", "/usr/sbin/httpd");
        fake_proc(root, 11, "httpd", "/usr/sbin/httpd");
        fake_proc(root, 12, "httpd-worker", "/usr/sbin/httpd-worker");
        // A name longer than comm: comm holds its first 15 bytes.
        fake_proc(
            root,
            20,
            "a-very-long-pro",
            "/opt/bin/a-very-long-process-name",
        );
        fake_proc(
            root,
            21,
            "a-very-long-pro",
            "/opt/bin/a-very-long-process-other",
        );
        // Zombies and dying processes do not count.
        fake_proc_state(root, 13, "httpd", "/usr/sbin/httpd", 'Z');
        fake_proc_state(root, 14, "httpd", "/usr/sbin/httpd", 'X');
        // A process whose stat file is gone vanished between the reads.
        fake_proc(root, 15, "httpd", "/usr/sbin/httpd");
        std::fs::remove_file(root.join("15/stat")).unwrap();
        // comm with a parenthesis and a space.
        fake_proc_state(root, 16, "we) ird", "/x/we) ird", 'R');
        std::fs::create_dir_all(root.join("self")).unwrap();
        std::fs::write(root.join("uptime"), "1 1").unwrap();
        let counts = scan(
            root,
            &["httpd", "nginx", "a-very-long-process-name", "we) ird"],
        )
        .unwrap();
        assert_eq!(counts["httpd"], 2);
        assert_eq!(counts["nginx"], 0);
        assert_eq!(counts["a-very-long-process-name"], 1);
        assert_eq!(counts["we) ird"], 1);
    }

    #[test]
    fn spec_validation() {
        let p = |process: &str| ResolvedTrackProcess {
            name: "t".into(),
            process: process.into(),
            ..Default::default()
        };
        assert!(ProcessSpec::from_resolved(&p("httpd")).is_ok());
        let e = ProcessSpec::from_resolved(&p("/usr/sbin/httpd"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("track.processes[t].process"), "{e}");
        let e = ProcessSpec::from_resolved(&p("")).unwrap_err().to_string();
        assert!(e.contains("must not be empty"), "{e}");
    }

    #[tokio::test]
    async fn missing_proc_root_sends_nothing_and_keeps_running() {
        let (tx, mut rx) = mpsc::channel(4);
        let opts = TrackerOptions {
            proc_root: "/nonexistent-proc-root-for-test".into(),
            process_scan_interval: std::time::Duration::from_millis(5),
            ..Default::default()
        };
        let task = tokio::spawn(run_scanner(
            vec![ProcessSpec {
                name: "t".into(),
                process: "x".into(),
            }],
            opts,
            tx,
        ));
        let r = tokio::time::timeout(std::time::Duration::from_millis(100), rx.recv()).await;
        assert!(
            r.is_err(),
            "no observation may be invented when /proc cannot be read: {r:?}"
        );
        assert!(!task.is_finished());
        task.abort();
    }
}
