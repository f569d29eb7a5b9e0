//! Running external commands the way keepalived does, for script trackers and notify scripts.
//!
//! What this module owns:
//! - [`CommandLine`]: a configured command string split into words. Words are separated by
//!   unquoted blanks; `'…'` keeps its content literally, `"…"` and a bare `\` escape the next
//!   character (the quoting keepalived accepts in `script` / `notify` strings).
//! - How the command is started. keepalived `execve`s the first word directly when it is an
//!   executable file and otherwise hands the whole string to `system()`. We do the same, with
//!   one explicit rule for when a shell is needed: if the string contains shell syntax outside
//!   quotes (`| & ; < > ( ) $ \` * ? [`, a newline, `#`/`~` at the start of a word, or a
//!   `NAME=value` first word) it runs as `/bin/sh -c STRING`; otherwise the words are executed
//!   directly with no shell in between. An executable without a `#!` line (`ENOEXEC`) is run
//!   with `/bin/sh`, as `execvp` would. Treating too much as shell syntax is harmless: `sh`
//!   splits a plain command line exactly as we do.
//! - Isolation and clean-up: every command runs in its own process group with stdin from
//!   `/dev/null`. On timeout the whole group gets SIGTERM, and SIGKILL once the command has
//!   exited or after [`TERM_GRACE`], whichever comes first (so its children go too); the run
//!   counts as failed. If the future running a command is dropped
//!   (tracker stopped, agent shutting down) the group is killed with SIGKILL.
//! - `user`: when the agent runs as root, the command runs with that user's uid and primary
//!   gid (supplementary groups cleared). A non-root agent can only run commands as itself; any
//!   other user is a failed run with a clear message.
//! - Output: stdout and stderr are captured (the first [`OUTPUT_CAP`] bytes of each) and
//!   written to the debug log line by line.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, User};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::Error;

/// How long a timed-out command gets between SIGTERM and SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(1);

/// How much of each output stream is kept (the rest is read and discarded).
pub const OUTPUT_CAP: usize = 64 * 1024;

/// After the command exits, how long we keep reading output that a background child might
/// still be writing before we stop listening.
const OUTPUT_DRAIN: Duration = Duration::from_millis(200);

/// The shell used for command strings that need one.
const SHELL: &str = "/bin/sh";

/// A configured command string, split into words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandLine {
    raw: String,
    argv: Vec<String>,
    shell: bool,
}

impl CommandLine {
    /// Split `line` into words. `field` names the configuration field for error messages.
    pub fn parse(field: &str, line: &str) -> Result<Self, Error> {
        let (argv, shell) = split(line)
            .map_err(|why| Error::Config(format!("{field}: {why} in command `{line}`")))?;
        if argv.is_empty() {
            return Err(Error::Config(format!("{field}: the command is empty")));
        }
        if !shell && argv[0].contains('=') {
            // `FOO=bar cmd` is an assignment only a shell understands.
            return Ok(Self {
                raw: line.to_owned(),
                argv,
                shell: true,
            });
        }
        Ok(Self {
            raw: line.to_owned(),
            argv,
            shell,
        })
    }

    /// The string as configured.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The words (meaningful when [`CommandLine::uses_shell`] is false).
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// True when the string contains shell syntax and runs as `/bin/sh -c STRING`.
    pub fn uses_shell(&self) -> bool {
        self.shell
    }

    /// Program and arguments to execute, with `extra` appended as separate words.
    fn program(&self, extra: &[String]) -> (String, Vec<String>) {
        if self.shell {
            // `sh -c 'STRING "$@"' sh EXTRA…` appends the extra words as real arguments
            // without re-quoting them into the string.
            let mut args = vec!["-c".to_owned()];
            if extra.is_empty() {
                args.push(self.raw.clone());
            } else {
                args.push(format!("{} \"$@\"", self.raw));
                args.push(SHELL.to_owned());
                args.extend(extra.iter().cloned());
            }
            (SHELL.to_owned(), args)
        } else {
            let mut args: Vec<String> = self.argv[1..].to_vec();
            args.extend(extra.iter().cloned());
            (self.argv[0].clone(), args)
        }
    }
}

/// Split on unquoted blanks; returns the words and whether shell syntax was seen.
fn split(line: &str) -> Result<(Vec<String>, bool), &'static str> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut shell = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated single quote"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unterminated double quote"),
                        },
                        Some(c @ ('$' | '`')) => {
                            // Expansion inside double quotes needs a shell.
                            shell = true;
                            cur.push(c);
                        }
                        Some(c) => cur.push(c),
                        None => return Err("unterminated double quote"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err("trailing backslash"),
                }
            }
            '|' | '&' | ';' | '<' | '>' | '(' | ')' | '$' | '`' | '*' | '?' | '[' | '\n' => {
                shell = true;
                in_word = true;
                cur.push(c);
            }
            '#' | '~' if !in_word => {
                shell = true;
                in_word = true;
                cur.push(c);
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok((words, shell))
}

/// How a command ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunExit {
    /// It exited with this status code.
    Code(i32),
    /// It was killed by this signal (not by us).
    Signal(i32),
    /// It ran longer than the timeout and was killed.
    TimedOut,
    /// It could not be started; the reason.
    SpawnFailed(String),
}

impl RunExit {
    /// keepalived's rule: exit code 0 is success, anything else (timeout included) failure.
    pub fn success(&self) -> bool {
        matches!(self, RunExit::Code(0))
    }
}

impl std::fmt::Display for RunExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunExit::Code(c) => write!(f, "exit code {c}"),
            RunExit::Signal(s) => write!(f, "killed by signal {s}"),
            RunExit::TimedOut => f.write_str("timed out"),
            RunExit::SpawnFailed(why) => write!(f, "could not start: {why}"),
        }
    }
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// How it ended.
    pub exit: RunExit,
    /// The process id it had (also its process group id), when it started.
    pub pid: Option<u32>,
    /// Wall time from spawn to exit.
    pub duration: Duration,
    /// Captured stdout (lossy UTF-8, at most [`OUTPUT_CAP`] bytes).
    pub stdout: String,
    /// Captured stderr (lossy UTF-8, at most [`OUTPUT_CAP`] bytes).
    pub stderr: String,
}

/// What to run and how.
#[derive(Clone, Debug)]
pub struct RunSpec<'a> {
    /// The command.
    pub command: &'a CommandLine,
    /// Words appended to the command (notify's `INSTANCE NAME STATE PRIORITY`).
    pub extra_args: &'a [String],
    /// Kill the command after this long.
    pub timeout: Duration,
    /// Run as this user (needs root unless it is the agent's own user).
    pub user: Option<&'a str>,
    /// What the command is, for log lines (e.g. `vrrp_script chk_httpd`).
    pub label: &'a str,
}

/// Kills a process group with SIGKILL when dropped while armed.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// Has the group leader exited? Checked without reaping it (`WNOWAIT`), so its pid stays
/// reserved and the group id stays valid for `killpg`.
fn leader_exited(pid: Pid) -> bool {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    match waitid(
        Id::Pid(pid),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT | WaitPidFlag::WNOHANG,
    ) {
        Ok(WaitStatus::StillAlive) => false,
        // Exited, or already reaped (ECHILD).
        Ok(_) | Err(_) => true,
    }
}

/// Resolve `user` to (uid, gid), or say why the command cannot run as that user.
async fn resolve_user(user: &str) -> Result<Option<(u32, u32)>, String> {
    let name = user.to_owned();
    let found = tokio::task::spawn_blocking(move || User::from_name(&name))
        .await
        .map_err(|e| format!("looking up user `{user}`: {e}"))?
        .map_err(|e| format!("looking up user `{user}`: {e}"))?;
    let Some(found) = found else {
        return Err(format!("user `{user}` does not exist"));
    };
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        Ok(Some((found.uid.as_raw(), found.gid.as_raw())))
    } else if found.uid == euid {
        Ok(None)
    } else {
        Err(format!(
            "cannot run as user `{user}`: the agent is not running as root"
        ))
    }
}

/// Start the command (with the `ENOEXEC` ⇒ `/bin/sh` fallback).
fn spawn(
    program: &str,
    args: &[String],
    ids: Option<(u32, u32)>,
) -> std::io::Result<tokio::process::Child> {
    let build = |prog: &str, args: &[String]| {
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some((uid, gid)) = ids {
            cmd.gid(gid).uid(uid);
        }
        cmd
    };
    match build(program, args).spawn() {
        Err(e) if e.raw_os_error() == Some(libc::ENOEXEC) => {
            let mut sh_args = vec![program.to_owned()];
            sh_args.extend(args.iter().cloned());
            build(SHELL, &sh_args).spawn()
        }
        other => other,
    }
}

/// Read a stream to its end, keeping the first [`OUTPUT_CAP`] bytes.
async fn read_capped(stream: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

fn exit_of(status: ExitStatus) -> RunExit {
    match (status.code(), status.signal()) {
        (Some(code), _) => RunExit::Code(code),
        (None, Some(sig)) => RunExit::Signal(sig),
        (None, None) => RunExit::SpawnFailed("unknown exit status".into()),
    }
}

/// Run a command to completion or timeout. Never fails: problems are in [`RunOutcome::exit`].
pub async fn run(spec: RunSpec<'_>) -> RunOutcome {
    let started = Instant::now();
    let failed = |why: String| RunOutcome {
        exit: RunExit::SpawnFailed(why),
        pid: None,
        duration: started.elapsed(),
        stdout: String::new(),
        stderr: String::new(),
    };
    let ids = match spec.user {
        Some(user) => match resolve_user(user).await {
            Ok(ids) => ids,
            Err(why) => return failed(why),
        },
        None => None,
    };
    let (program, args) = spec.command.program(spec.extra_args);
    let mut child = match spawn(&program, &args, ids) {
        Ok(child) => child,
        Err(e) => return failed(format!("{program}: {e}")),
    };
    let pid = child.id();
    let mut guard = GroupGuard(pid.and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw));
    tracing::debug!(
        label = spec.label,
        pid,
        command = spec.command.raw(),
        "started command"
    );

    let (out_pipe, err_pipe) = (child.stdout.take(), child.stderr.take());
    let reading = async move { tokio::join!(read_capped(out_pipe), read_capped(err_pipe)) };
    tokio::pin!(reading);
    let mut output: Option<(String, String)> = None;
    let deadline = started + spec.timeout;
    let waited = loop {
        tokio::select! {
            o = &mut reading, if output.is_none() => output = Some(o),
            status = child.wait() => break Some(status),
            _ = tokio::time::sleep_until(deadline) => break None,
        }
    };
    let exit = match waited {
        Some(Ok(status)) => exit_of(status),
        Some(Err(e)) => RunExit::SpawnFailed(format!("waiting for {program}: {e}")),
        None => {
            if let Some(pgid) = guard.0 {
                tracing::warn!(
                    label = spec.label,
                    pid,
                    timeout_ms = spec.timeout.as_millis() as u64,
                    "command timed out; killing its process group"
                );
                let _ = killpg(pgid, Signal::SIGTERM);
                let grace_end = Instant::now() + TERM_GRACE;
                while !leader_exited(pgid) && Instant::now() < grace_end {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                // The leader is not reaped yet (a zombie at worst), so its pid, which is the
                // group id, cannot have been reused: kill whatever is left of the group.
                let _ = killpg(pgid, Signal::SIGKILL);
                let _ = child.wait().await;
            }
            RunExit::TimedOut
        }
    };
    guard.disarm();
    let duration = started.elapsed();
    let (stdout, stderr) = match output {
        Some(o) => o,
        None => tokio::time::timeout(OUTPUT_DRAIN, &mut reading)
            .await
            .unwrap_or_default(),
    };
    for line in stdout.lines() {
        tracing::debug!(label = spec.label, pid, stream = "stdout", "{line}");
    }
    for line in stderr.lines() {
        tracing::debug!(label = spec.label, pid, stream = "stderr", "{line}");
    }
    tracing::debug!(label = spec.label, pid, result = %exit, duration_ms = duration.as_millis() as u64, "command finished");
    RunOutcome {
        exit,
        pid,
        duration,
        stdout,
        stderr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> (Vec<String>, bool) {
        let c = CommandLine::parse("f", s).unwrap();
        (c.argv().to_vec(), c.uses_shell())
    }

    #[test]
    fn splits_on_blanks_honouring_quotes() {
        assert_eq!(
            words("/usr/local/bin/check.sh"),
            (vec!["/usr/local/bin/check.sh".into()], false)
        );
        assert_eq!(
            words("  killall  -0\thttpd "),
            (vec!["killall".into(), "-0".into(), "httpd".into()], false)
        );
        assert_eq!(
            words("grep 'a b|c' \"/x y\""),
            (vec!["grep".into(), "a b|c".into(), "/x y".into()], false)
        );
        assert_eq!(
            words(r#"echo "say \"hi\"" a\ b"#),
            (
                vec!["echo".into(), "say \"hi\"".into(), "a b".into()],
                false
            )
        );
        assert_eq!(words("a''b \"\""), (vec!["ab".into(), "".into()], false));
    }

    #[test]
    fn shell_syntax_is_detected() {
        for s in [
            "pidof httpd || exit 1",
            "test -f /x && true",
            "cat </dev/null",
            "echo $HOME",
            "echo \"$HOME\"",
            "ls *.conf",
            "a; b",
            "FOO=1 cmd",
            "~/check.sh",
            "echo `id`",
        ] {
            assert!(CommandLine::parse("f", s).unwrap().uses_shell(), "{s}");
        }
        for s in [
            "echo a#b",
            "echo 'x|y' \"a;b\"",
            "curl -fs http://127.0.0.1/?",
        ] {
            let c = CommandLine::parse("f", s).unwrap();
            // `?` is a glob character: the last one must go through the shell.
            assert_eq!(c.uses_shell(), s.ends_with('?'), "{s}");
        }
    }

    #[test]
    fn bad_command_lines_name_the_field() {
        for (s, why) in [
            ("", "empty"),
            ("   ", "empty"),
            ("echo 'x", "unterminated single quote"),
            ("echo \"x", "unterminated double quote"),
            ("echo x\\", "trailing backslash"),
        ] {
            let e = CommandLine::parse("track.scripts[chk].script", s)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("track.scripts[chk].script") && e.contains(why),
                "{s}: {e}"
            );
        }
    }

    #[test]
    fn extra_args_are_appended_as_words() {
        let extra: Vec<String> = vec!["INSTANCE".into(), "VI 1".into()];
        let c = CommandLine::parse("f", "/bin/notify.sh --x").unwrap();
        assert_eq!(
            c.program(&extra),
            (
                "/bin/notify.sh".into(),
                vec!["--x".into(), "INSTANCE".into(), "VI 1".into()]
            )
        );
        let c = CommandLine::parse("f", "logger -t x | cat").unwrap();
        let (prog, args) = c.program(&extra);
        assert_eq!(prog, "/bin/sh");
        assert_eq!(
            args,
            vec![
                "-c",
                "logger -t x | cat \"$@\"",
                "/bin/sh",
                "INSTANCE",
                "VI 1"
            ]
        );
    }
}
