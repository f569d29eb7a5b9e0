//! Processes the lab starts: a guard per child that signals it only by its own PID (and only
//! while it has not been reaped, so the PID cannot have been reused), kills it on drop, and a
//! registry so the lab can kill whatever is still running when it is torn down.

use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::error::{LabError, Result};
use crate::wait::wait_until;

type Slot = Arc<Mutex<Option<Child>>>;

/// Children started by one lab.
#[derive(Default, Debug)]
pub struct ProcRegistry {
    children: Mutex<Vec<Weak<Mutex<Option<Child>>>>>,
}

impl ProcRegistry {
    /// SIGKILLs and reaps every registered child that is still running.
    pub fn kill_all(&self) {
        let list = std::mem::take(&mut *lock(&self.children));
        for weak in list {
            if let Some(slot) = weak.upgrade() {
                kill_slot(&slot);
            }
        }
    }
}

/// A child process, SIGKILLed and reaped when dropped.
#[derive(Debug)]
pub struct ProcGuard {
    slot: Slot,
    pid: u32,
    label: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn kill_slot(slot: &Slot) {
    let mut g = lock(slot);
    if let Some(child) = g.as_mut() {
        if child.try_wait().ok().flatten().is_none() {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl ProcGuard {
    /// Starts `cmd` and registers it with `registry`.
    pub fn spawn(registry: &ProcRegistry, mut cmd: Command, label: &str) -> Result<Self> {
        let child = cmd.spawn().map_err(|e| LabError::Command {
            cmd: format!("{cmd:?}"),
            reason: e.to_string(),
        })?;
        let pid = child.id();
        let slot = Arc::new(Mutex::new(Some(child)));
        lock(&registry.children).push(Arc::downgrade(&slot));
        Ok(ProcGuard {
            slot,
            pid,
            label: label.to_string(),
        })
    }

    /// The child's PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What this process is (for messages).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The exit status if the child has exited (reaps it).
    pub fn try_wait(&self) -> Option<ExitStatus> {
        let mut g = lock(&self.slot);
        g.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Whether the child is still running.
    pub fn is_running(&self) -> bool {
        self.try_wait().is_none()
    }

    /// Sends `sig` to the child if it has not exited yet. Returns false if it had exited.
    pub fn signal(&self, sig: libc::c_int) -> Result<bool> {
        let mut g = lock(&self.slot);
        let Some(child) = g.as_mut() else {
            return Ok(false);
        };
        if child.try_wait().ok().flatten().is_some() {
            return Ok(false);
        }
        // The child is unreaped, so its PID still names it.
        let rc = unsafe { libc::kill(self.pid as libc::pid_t, sig) };
        if rc != 0 {
            return Err(LabError::io(
                format!("kill({}, {sig}) for {}", self.pid, self.label),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(true)
    }

    /// Waits for the child to exit.
    pub fn wait_exit(&self, within: Duration) -> Result<ExitStatus> {
        wait_until(
            within,
            &format!("{} (pid {}) to exit", self.label, self.pid),
            || self.try_wait(),
        )
    }

    /// SIGKILLs the child (if running) and reaps it.
    pub fn kill(&self) {
        kill_slot(&self.slot);
    }
}

impl Drop for ProcGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends a signal to a process that is not our direct child (e.g. keepalived's VRRP child),
/// after checking that `pid` still has parent `ppid` (so a reused PID is never signalled).
pub fn signal_grandchild(pid: u32, ppid: u32, sig: libc::c_int) -> Result<bool> {
    if parent_of(pid) != Some(ppid) {
        return Ok(false);
    }
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    if rc != 0 {
        return Err(LabError::io(
            format!("kill({pid}, {sig})"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(true)
}

/// The parent PID of `pid`, from /proc.
pub fn parent_of(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Resident set size of `pid` in KiB (VmRSS), if the process exists.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time (user + system) `pid` has used so far, from /proc/PID/stat.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Some(Duration::from_millis((utime + stime) * 1000 / hz))
}
