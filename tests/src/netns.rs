//! Network-namespace plumbing: the root check, running `ip`/commands in a namespace, and
//! opening sockets that live in a namespace (a helper thread joins the namespace with
//! `setns(2)`, creates the socket and hands it back; the socket stays in that namespace).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{LabError, Result};

/// Where `ip netns add` mounts namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Whether this process may build labs. When it may not, prints
/// `SKIPPED: <test>: needs root for network namespaces (<reason>)` to stderr and fails the test,
/// or returns false when skips are allowed ([`crate::skip_or_fail`]): call it first in every
/// lab test and return when it says false.
pub fn can_run(test: &str) -> bool {
    match privilege() {
        Ok(()) => true,
        Err(reason) => {
            crate::skip_or_fail(
                test,
                &format!("needs root for network namespaces ({reason})"),
            );
            false
        }
    }
}

/// The cached result of the privilege probe.
pub fn privilege() -> std::result::Result<(), String> {
    static PROBE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(probe).clone()
}

fn probe() -> std::result::Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(format!("running as uid {euid}, not root"));
    }
    let name = format!(
        "kvlab{}probe{:04x}",
        std::process::id(),
        crate::topology::random_u16()
    );
    let add = Command::new("ip").args(["netns", "add", &name]).output();
    match add {
        Err(e) => Err(format!("cannot run `ip`: {e}")),
        Ok(o) if !o.status.success() => Err(format!(
            "`ip netns add` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            Ok(())
        }
    }
}

/// Runs a command to completion and returns its output; a non-zero exit is an error that
/// carries stderr.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let line = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Command {
            cmd: line.clone(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: line,
            reason: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        });
    }
    Ok(out)
}

/// `ip -n NS ARGS...`, checked.
pub fn ip(ns: &str, args: &[&str]) -> Result<Output> {
    run(Command::new("ip").arg("-n").arg(ns).args(args))
}

/// A `Command` that runs `argv` inside namespace `ns` (`ip netns exec NS argv...`; `ip` execs
/// the program, so the child's PID is the program's own).
pub fn command_in(ns: &str, argv: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(argv);
    c
}

/// Sets sysctls inside a namespace in one `sysctl` call (`key=value` items).
pub fn sysctl(ns: &str, items: &[String]) -> Result<()> {
    let mut argv = vec!["sysctl", "-q", "-w"];
    argv.extend(items.iter().map(String::as_str));
    run(&mut command_in(ns, &argv)).map(|_| ())
}

/// Runs `f` on a fresh thread that has joined network namespace `ns`.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    let path = format!("{NETNS_DIR}/{ns}");
    let file = File::open(&path).map_err(|e| LabError::io(format!("open {path}"), e))?;
    let what = format!("in namespace {ns}");
    std::thread::spawn(move || -> std::io::Result<T> {
        // SAFETY: setns on a valid namespace fd only changes this thread's network namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| LabError::Command {
        cmd: what.clone(),
        reason: "helper thread panicked".into(),
    })?
    .map_err(|e| LabError::io(what, e))
}

/// A socket created inside namespace `ns`.
pub fn socket_in(ns: &str, domain: Domain, ty: Type, proto: Option<Protocol>) -> Result<Socket> {
    in_netns(ns, move || Socket::new(domain, ty, proto))
}
