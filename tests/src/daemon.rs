//! VRRP daemons run inside a lab host: real keepalived ([`Keepalived`]) and our
//! `kube-vrrp-agent standalone` ([`Agent`]), behind one trait ([`VrrpDaemon`]) so a scenario
//! runs with any mix of them. Both read the same generated keepalived.conf.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::Deserialize;

use crate::config::KeepalivedConf;
use crate::error::{LabError, Result};
use crate::proc::{ProcGuard, parent_of, signal_grandchild};
use crate::topology::{Lab, Node};
use crate::wait::{wait_for, wait_until};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// How long a daemon gets to start or to stop.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Which implementation runs on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DaemonKind {
    /// keepalived from the distribution.
    Keepalived,
    /// Our `kube-vrrp-agent standalone`.
    Agent,
}

impl DaemonKind {
    /// Short name for tables and messages.
    pub fn name(self) -> &'static str {
        match self {
            DaemonKind::Keepalived => "keepalived",
            DaemonKind::Agent => "kube-vrrp",
        }
    }

    /// Starts this kind of daemon on `node` with `conf`.
    pub fn start(
        self,
        lab: &Lab,
        node: &Node,
        conf: &KeepalivedConf,
    ) -> Result<Box<dyn VrrpDaemon>> {
        let text = conf.render();
        Ok(match self {
            DaemonKind::Keepalived => Box::new(Keepalived::start(lab, node, &text)?),
            DaemonKind::Agent => Box::new(Agent::start(lab, node, &text)?),
        })
    }
}

/// A VRRP daemon running in a lab host.
pub trait VrrpDaemon: Send {
    /// Which implementation this is.
    fn kind(&self) -> DaemonKind;
    /// The host it runs on.
    fn node(&self) -> &Node;
    /// Dies without saying goodbye (no priority-0 advert, VIPs left bound).
    fn crash(&mut self) -> Result<()>;
    /// Sends SIGTERM and returns at once (graceful stop: a master sends priority 0 and removes
    /// its VIPs).
    fn terminate(&mut self) -> Result<()>;
    /// Waits for the daemon to exit after [`VrrpDaemon::terminate`]; for our agent, an exit
    /// status other than 0 is an error.
    fn wait_stopped(&mut self) -> Result<()>;
    /// Graceful stop: [`VrrpDaemon::terminate`] then [`VrrpDaemon::wait_stopped`].
    fn stop(&mut self) -> Result<()> {
        self.terminate()?;
        self.wait_stopped()
    }
    /// Whether it is still running.
    fn is_running(&self) -> bool;
    /// PIDs of its processes (for RSS/CPU).
    fn pids(&self) -> Vec<u32>;
    /// Its log so far.
    fn log(&self) -> String;
    /// `/status` of our agent; `None` for keepalived.
    fn status(&self) -> Option<Result<AgentStatus>> {
        None
    }
    /// `/metrics` of our agent as text; `None` for keepalived.
    fn metrics(&self) -> Option<Result<String>> {
        None
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| LabError::io(format!("write {path:?}"), e))
}

/// keepalived (VRRP subsystem only) in a host namespace, with its own pid files and its
/// console log captured to a file.
pub struct Keepalived {
    node: Node,
    parent: ProcGuard,
    vrrp_pidfile: PathBuf,
    log: PathBuf,
}

impl Keepalived {
    /// Starts keepalived with configuration text `conf` and waits until its VRRP child runs.
    pub fn start(lab: &Lab, node: &Node, conf: &str) -> Result<Self> {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = lab.node_dir(node)?.join(format!("keepalived-{n}"));
        std::fs::create_dir_all(&dir).map_err(|e| LabError::io(format!("mkdir {dir:?}"), e))?;
        let conf_path = dir.join("keepalived.conf");
        write(&conf_path, conf)?;
        let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
        let (conf_s, pid, vrrp, chk, bfd) = (
            p("keepalived.conf"),
            p("keepalived.pid"),
            p("vrrp.pid"),
            p("checkers.pid"),
            p("bfd.pid"),
        );
        let log = dir.join("keepalived.log");
        let argv = [
            "keepalived",
            "-n",
            "-l",
            "-D",
            "-G",
            "-P",
            "-f",
            &conf_s,
            "-p",
            &pid,
            "-r",
            &vrrp,
            "-c",
            &chk,
            "-b",
            &bfd,
        ];
        let parent = lab.spawn(node, &argv, Some(&log))?;
        let k = Keepalived {
            node: node.clone(),
            parent,
            vrrp_pidfile: dir.join("vrrp.pid"),
            log,
        };
        let started = wait_for(START_TIMEOUT, "keepalived's VRRP child", || {
            k.vrrp_child().is_some() || !k.parent.is_running()
        });
        if started.is_err() || !k.parent.is_running() {
            return Err(LabError::Daemon {
                daemon: format!("keepalived on {}", node.name),
                reason: format!("did not start:\n{}", tail(&k.log, 40)),
            });
        }
        Ok(k)
    }

    /// PID of the VRRP child, if it runs (checked to be a child of our keepalived).
    pub fn vrrp_child(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(&self.vrrp_pidfile)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        (parent_of(pid) == Some(self.parent.pid())).then_some(pid)
    }

    /// Path of the console log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl VrrpDaemon for Keepalived {
    fn kind(&self) -> DaemonKind {
        DaemonKind::Keepalived
    }

    fn node(&self) -> &Node {
        &self.node
    }

    /// SIGSTOP the parent (so it cannot tell the child to leave gracefully), SIGKILL the VRRP
    /// child, SIGKILL the parent.
    fn crash(&mut self) -> Result<()> {
        let child = self.vrrp_child();
        self.parent.signal(libc::SIGSTOP)?;
        if let Some(c) = child {
            signal_grandchild(c, self.parent.pid(), libc::SIGKILL)?;
        }
        self.parent.kill();
        Ok(())
    }

    fn terminate(&mut self) -> Result<()> {
        self.parent.signal(libc::SIGTERM).map(|_| ())
    }

    fn wait_stopped(&mut self) -> Result<()> {
        self.parent.wait_exit(START_TIMEOUT).map(|_| ())
    }

    fn is_running(&self) -> bool {
        self.parent.is_running()
    }

    fn pids(&self) -> Vec<u32> {
        let mut v = vec![self.parent.pid()];
        v.extend(self.vrrp_child());
        v
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        if self.parent.is_running() {
            let _ = self.crash();
        }
    }
}

/// Where the metrics/status server of an agent listens, inside its own namespace.
pub const AGENT_METRICS: &str = "127.0.0.1:9741";

/// The agent binary: `$KUBE_VRRP_AGENT_BIN`, else `$CARGO_TARGET_DIR/debug/kube-vrrp-agent`,
/// else `<workspace>/target/debug/kube-vrrp-agent`.
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBE_VRRP_AGENT_BIN") {
        return PathBuf::from(p);
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t).join("debug/kube-vrrp-agent");
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/kube-vrrp-agent")
}

/// `/status` of the agent (design.md): one entry per instance.
#[derive(Debug, Clone, Deserialize)]
pub struct AgentStatus {
    /// The instances.
    pub instances: Vec<InstanceStatus>,
}

/// One instance in `/status`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Instance name (`VI_1`).
    pub name: String,
    /// INIT, BACKUP, MASTER or FAULT.
    pub state: String,
    /// Current priority after trackers.
    pub effective_priority: u32,
    /// VIPs held now.
    #[serde(default)]
    pub vips: Vec<String>,
    /// The master seen on the wire.
    #[serde(default)]
    pub master_address: Option<String>,
    /// Why the last transition happened.
    #[serde(default)]
    pub reason: Option<String>,
}

impl AgentStatus {
    /// The instance called `name`.
    pub fn instance(&self, name: &str) -> Option<&InstanceStatus> {
        self.instances.iter().find(|i| i.name == name)
    }
}

/// `kube-vrrp-agent standalone` in a host namespace. Its state dir is fixed per host, so a
/// restart on the same host sees what the previous life recorded.
pub struct Agent {
    node: Node,
    proc: ProcGuard,
    log: PathBuf,
}

impl Agent {
    /// Starts the agent ([`agent_bin`]) with configuration text `conf` and waits until
    /// `/healthz` answers.
    pub fn start(lab: &Lab, node: &Node, conf: &str) -> Result<Self> {
        Self::start_with(lab, node, conf, &agent_bin())
    }

    /// Like [`Agent::start`] with an explicit binary.
    pub fn start_with(lab: &Lab, node: &Node, conf: &str, bin: &Path) -> Result<Self> {
        Self::start_with_args(lab, node, conf, bin, &[])
    }

    /// Like [`Agent::start_with`], adding `extra` arguments to `standalone` (e.g.
    /// `--node-name h1`).
    pub fn start_with_args(
        lab: &Lab,
        node: &Node,
        conf: &str,
        bin: &Path,
        extra: &[String],
    ) -> Result<Self> {
        let bin = bin.to_path_buf();
        if !bin.exists() {
            return Err(LabError::Daemon {
                daemon: format!("kube-vrrp-agent on {}", node.name),
                reason: format!(
                    "binary {bin:?} not found: run `cargo build -p kube-vrrp-agent` or set KUBE_VRRP_AGENT_BIN"
                ),
            });
        }
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let ndir = lab.node_dir(node)?;
        let state = ndir.join("agent-state");
        std::fs::create_dir_all(&state).map_err(|e| LabError::io(format!("mkdir {state:?}"), e))?;
        let conf_path = ndir.join(format!("agent-{n}.conf"));
        write(&conf_path, conf)?;
        let log = ndir.join(format!("agent-{n}.log"));
        let bin_s = bin.to_string_lossy().into_owned();
        let conf_s = conf_path.to_string_lossy().into_owned();
        let state_s = state.to_string_lossy().into_owned();
        let mut argv = vec![
            bin_s.as_str(),
            "standalone",
            "--config",
            &conf_s,
            "--state-dir",
            &state_s,
            "--metrics-addr",
            AGENT_METRICS,
        ];
        argv.extend(extra.iter().map(String::as_str));
        let mut cmd = crate::netns::command_in(&node.netns, &argv);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        // The log goes to a file: no terminal colour codes.
        cmd.env("NO_COLOR", "1");
        let proc = lab.spawn_cmd(cmd, &argv.join(" "), Some(&log))?;
        let agent = Agent {
            node: node.clone(),
            proc,
            log,
        };
        let ready = wait_until(START_TIMEOUT, "the agent's /healthz", || {
            if !agent.proc.is_running() {
                return Some(false);
            }
            agent
                .get("/healthz")
                .ok()
                .filter(|(c, _)| *c == 200)
                .map(|_| true)
        });
        if !matches!(ready, Ok(true)) {
            return Err(LabError::Daemon {
                daemon: format!("kube-vrrp-agent on {}", node.name),
                reason: format!(
                    "not ready ({}):\n{}",
                    match agent.proc.try_wait() {
                        Some(st) => format!("exited with {st}"),
                        None => "no /healthz answer".to_string(),
                    },
                    tail(&agent.log, 40)
                ),
            });
        }
        Ok(agent)
    }

    fn get(&self, path: &str) -> Result<(u16, Vec<u8>)> {
        let addr: SocketAddr = AGENT_METRICS.parse().map_err(|_| LabError::Parse {
            what: "AGENT_METRICS".into(),
            reason: AGENT_METRICS.into(),
        })?;
        crate::http::get(&self.node.netns, addr, path, Duration::from_secs(2))
    }

    /// GET `/status`, parsed.
    pub fn status(&self) -> Result<AgentStatus> {
        let (code, body) = self.get("/status")?;
        if code != 200 {
            return Err(LabError::Daemon {
                daemon: format!("kube-vrrp-agent on {}", self.node.name),
                reason: format!(
                    "/status answered {code}: {}",
                    String::from_utf8_lossy(&body)
                ),
            });
        }
        serde_json::from_slice(&body).map_err(|e| LabError::Parse {
            what: "/status JSON".into(),
            reason: format!("{e}: {}", String::from_utf8_lossy(&body)),
        })
    }

    /// GET `/metrics` as text.
    pub fn metrics(&self) -> Result<String> {
        let (_, body) = self.get("/metrics")?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// The process's exit status, if it exited.
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.proc.try_wait()
    }

    /// The agent's PID (for CPU and memory readings from /proc).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

impl VrrpDaemon for Agent {
    fn kind(&self) -> DaemonKind {
        DaemonKind::Agent
    }

    fn node(&self) -> &Node {
        &self.node
    }

    fn crash(&mut self) -> Result<()> {
        self.proc.kill();
        Ok(())
    }

    fn terminate(&mut self) -> Result<()> {
        self.proc.signal(libc::SIGTERM).map(|_| ())
    }

    fn wait_stopped(&mut self) -> Result<()> {
        let st = self.proc.wait_exit(START_TIMEOUT)?;
        if !st.success() {
            return Err(LabError::Daemon {
                daemon: format!("kube-vrrp-agent on {}", self.node.name),
                reason: format!("SIGTERM exit {st}, expected 0:\n{}", tail(&self.log, 40)),
            });
        }
        Ok(())
    }

    fn is_running(&self) -> bool {
        self.proc.is_running()
    }

    fn pids(&self) -> Vec<u32> {
        vec![self.proc.pid()]
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn status(&self) -> Option<Result<AgentStatus>> {
        Some(Agent::status(self))
    }

    fn metrics(&self) -> Option<Result<String>> {
        Some(Agent::metrics(self))
    }
}
