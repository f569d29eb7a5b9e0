//! The demo's throw-away lab: named network namespaces (a switch with a bridge, three hosts, a
//! client), the veths between them, a scratch directory, and the processes started inside.
//! Everything is recorded as it is created; [`Lab`]'s `Drop` stops the processes (by PID) and
//! deletes the namespaces and the directory, so an error, a panic or Ctrl-C leaves nothing.
//! Nothing here touches the root namespace's interfaces or routes.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// One of the three VRRP hosts.
#[derive(Clone, Copy, Debug)]
pub struct HostSpec {
    /// Host (and namespace suffix) name.
    pub name: &'static str,
    /// Its own address on the LAN.
    pub addr: &'static str,
    /// Fixed MAC of its eth0.
    pub mac: &'static str,
    /// VRRP priority (255 = address owner).
    pub priority: u8,
}

/// The three hosts, in election order.
pub const HOSTS: [HostSpec; 3] = [
    HostSpec {
        name: "node-a",
        addr: "192.0.2.11",
        mac: "02:00:00:00:02:11",
        priority: 255,
    },
    HostSpec {
        name: "node-b",
        addr: "192.0.2.12",
        mac: "02:00:00:00:02:12",
        priority: 244,
    },
    HostSpec {
        name: "node-c",
        addr: "192.0.2.13",
        mac: "02:00:00:00:02:13",
        priority: 100,
    },
];
/// The client's address.
pub const CLIENT_ADDR: &str = "192.0.2.100";
/// The client's MAC.
const CLIENT_MAC: &str = "02:00:00:00:02:64";
/// The virtual IP.
pub const VIP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(192, 0, 2, 200);
/// Where every agent serves /status (inside its own namespace).
pub const STATUS_ADDR: &str = "127.0.0.1:9741";

/// What runs on a host.
#[derive(Debug)]
enum Kind {
    Agent,
    Keepalived { vrrp_pidfile: PathBuf },
}

/// A process the demo started.
#[derive(Debug)]
struct Proc {
    child: Child,
    kind: Kind,
}

impl Proc {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Whether it is still running (reaps it when it is not).
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Wait up to `limit` for it to exit.
    fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !self.running() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        !self.running()
    }

    /// keepalived's VRRP child, if its pid file names a live child of this process.
    fn keepalived_child(&self) -> Option<i32> {
        let Kind::Keepalived { vrrp_pidfile } = &self.kind else {
            return None;
        };
        let pid: i32 = fs::read_to_string(vrrp_pidfile).ok()?.trim().parse().ok()?;
        // Only ever signal a process whose parent is the keepalived this demo started.
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after_comm = &stat[stat.rfind(')')? + 1..];
        let ppid: i32 = after_comm.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == self.pid()).then_some(pid)
    }

    /// Simulated crash: nothing gets to send a priority-0 advert.
    fn crash(&mut self) {
        match self.kind {
            Kind::Agent => signal(self.pid(), libc::SIGKILL),
            Kind::Keepalived { .. } => {
                // Killing only the parent makes the VRRP child leave gracefully.
                signal(self.pid(), libc::SIGSTOP);
                if let Some(child) = self.keepalived_child() {
                    signal(child, libc::SIGKILL);
                }
                signal(self.pid(), libc::SIGKILL);
            }
        }
        let _ = self.wait_exit(Duration::from_secs(5));
    }

    /// Graceful stop (SIGTERM), then SIGKILL if it does not end in time.
    fn stop(&mut self, limit: Duration) {
        if !self.running() {
            return;
        }
        signal(self.pid(), libc::SIGTERM);
        if !self.wait_exit(limit) {
            self.crash();
        }
    }
}

fn signal(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: kill(2) on a PID this demo started; no memory is involved.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Run `ip ARGS`, turning a failure into an error with its stderr.
pub fn ip(args: &[&str]) -> Result<(), Error> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("running ip (iproute2)", e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::io(
            format!("ip {}", args.join(" ")),
            io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        ))
    }
}

/// Run `f` on a fresh thread that has entered network namespace `ns` (by name).
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> Result<T, Error> + Send) -> Result<T, Error> {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file =
                fs::File::open(&path).map_err(|e| Error::io(format!("opening {path}"), e))?;
            // SAFETY: setns only switches this (helper) thread's network namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(Error::io(
                    format!("entering network namespace {ns}"),
                    io::Error::last_os_error(),
                ));
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::io(
                format!("helper thread in namespace {ns}"),
                io::Error::other("panicked"),
            ))
        })
    })
}

/// Set sysctls (paths under /proc/sys/net) inside namespace `ns`.
fn sysctls(ns: &str, settings: &[(&str, &str)]) -> Result<(), Error> {
    in_ns(ns, || {
        for (key, value) in settings {
            let path = format!("/proc/sys/net/{}", key.replace('.', "/"));
            fs::write(&path, value)
                .map_err(|e| Error::io(format!("setting net.{key}={value} in {ns}"), e))?;
        }
        Ok(())
    })
}

/// The lab; see the module docs.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    /// Scratch directory (configs, state dirs, logs, flag files).
    pub dir: PathBuf,
    dir_created: bool,
    procs: BTreeMap<&'static str, Proc>,
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

impl Lab {
    /// An empty lab whose names include this process's PID.
    pub fn new() -> Lab {
        let pid = std::process::id();
        Lab {
            prefix: format!("kvrrp-demo-{pid}"),
            namespaces: Vec::new(),
            dir: std::env::temp_dir().join(format!("kube-vrrp-demo-{pid}")),
            dir_created: false,
            procs: BTreeMap::new(),
        }
    }

    /// Namespace name of a host ("node-a"), the client ("client") or the switch ("switch").
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// Names of the namespaces created so far.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    fn add_ns(&mut self, host: &str) -> Result<String, Error> {
        let ns = self.ns(host);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Build the network: switch (bridge), node-a/b/c and the client.
    pub fn build(&mut self) -> Result<(), Error> {
        fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io(format!("creating {}", self.dir.display()), e))?;
        self.dir_created = true;

        let sw = self.add_ns("switch")?;
        sysctls(
            &sw,
            &[
                ("ipv6.conf.all.disable_ipv6", "1"),
                ("ipv6.conf.default.disable_ipv6", "1"),
            ],
        )?;
        ip(&[
            "-n",
            &sw,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;

        let mut ports: Vec<(&str, &str, &str)> =
            HOSTS.iter().map(|h| (h.name, h.addr, h.mac)).collect();
        ports.push(("client", CLIENT_ADDR, CLIENT_MAC));
        for (name, addr, mac) in ports {
            let ns = self.add_ns(name)?;
            sysctls(
                &ns,
                &[
                    ("ipv6.conf.all.accept_dad", "0"),
                    ("ipv6.conf.default.accept_dad", "0"),
                    ("ipv6.conf.all.keep_addr_on_down", "1"),
                    ("ipv6.conf.default.keep_addr_on_down", "1"),
                    ("ipv6.conf.all.accept_ra", "0"),
                    ("ipv6.conf.default.accept_ra", "0"),
                    ("ipv6.conf.all.router_solicitations", "0"),
                    ("ipv6.conf.default.router_solicitations", "0"),
                    ("ipv4.conf.all.rp_filter", "0"),
                    ("ipv4.conf.default.rp_filter", "0"),
                ],
            )?;
            let port = format!("p-{name}");
            ip(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "address",
                mac, "netns", &ns,
            ])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// Take a host's eth0 down or up.
    pub fn link(&self, host: &str, up: bool) -> Result<(), Error> {
        ip(&[
            "-n",
            &self.ns(host),
            "link",
            "set",
            "eth0",
            if up { "up" } else { "down" },
        ])
    }

    fn log_file(&self, host: &str) -> Result<(fs::File, fs::File), Error> {
        let path = self.log_path(host);
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Ok((out, err))
    }

    /// Where a host's daemon logs go.
    pub fn log_path(&self, host: &str) -> PathBuf {
        self.dir.join(format!("{host}.log"))
    }

    fn spawn(
        &mut self,
        host: &'static str,
        program: &Path,
        args: &[&str],
        kind: Kind,
    ) -> Result<(), Error> {
        if let Some(mut old) = self.procs.remove(host) {
            old.stop(Duration::from_secs(3));
        }
        let (out, err) = self.log_file(host)?;
        let ns = self.ns(host);
        let mut cmd = Command::new("ip");
        // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
        // which is async-signal-safe. If the demo itself is killed outright, its daemons get
        // SIGTERM instead of living on (`ip netns exec` execs them, keeping this setting).
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .args(["netns", "exec", &ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: the terminal's Ctrl-C reaches only the demo, which then
            // stops its children itself.
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io(format!("starting {} in {ns}", program.display()), e))?;
        self.procs.insert(host, Proc { child, kind });
        Ok(())
    }

    /// Start `kube-vrrp-agent standalone` (this very binary) on a host.
    pub fn start_agent(&mut self, host: &'static str, config: &Path) -> Result<(), Error> {
        let exe = std::env::current_exe()
            .map_err(|e| Error::io("finding this program's path (current_exe)", e))?;
        let state = self.dir.join(format!("{host}-state"));
        let config = config.to_string_lossy().into_owned();
        let state = state.to_string_lossy().into_owned();
        self.spawn(
            host,
            &exe,
            &[
                "standalone",
                "--config",
                &config,
                "--state-dir",
                &state,
                "--metrics-addr",
                STATUS_ADDR,
            ],
            Kind::Agent,
        )
    }

    /// Start real keepalived on a host, with pid files in the scratch directory.
    pub fn start_keepalived(
        &mut self,
        host: &'static str,
        program: &Path,
        config: &Path,
    ) -> Result<(), Error> {
        let file = |what: &str| self.dir.join(format!("{host}-{what}.pid"));
        let vrrp_pidfile = file("vrrp");
        let paths: Vec<String> = [
            config.to_path_buf(),
            file("main"),
            vrrp_pidfile.clone(),
            file("checker"),
            file("bfd"),
        ]
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
        self.spawn(
            host,
            program,
            &[
                "-n", "-l", "-D", "-G", "-P", "-f", &paths[0], "-p", &paths[1], "-r", &paths[2],
                "-c", &paths[3], "-b", &paths[4],
            ],
            Kind::Keepalived { vrrp_pidfile },
        )
    }

    /// Whether the host's daemon is running.
    pub fn running(&mut self, host: &str) -> bool {
        self.procs.get_mut(host).is_some_and(Proc::running)
    }

    /// Simulate the host's daemon crashing (SIGKILL; keepalived's VRRP child too).
    pub fn crash(&mut self, host: &str) {
        if let Some(p) = self.procs.get_mut(host) {
            p.crash();
        }
    }

    /// Send SIGTERM to the host's daemon (graceful stop) without waiting.
    pub fn terminate(&mut self, host: &str) {
        if let Some(p) = self.procs.get_mut(host)
            && p.running()
        {
            signal(p.pid(), libc::SIGTERM);
        }
    }

    /// The PIDs of every process still running.
    pub fn pids(&mut self) -> Vec<i32> {
        self.procs
            .values_mut()
            .filter_map(|p| p.running().then(|| p.pid()))
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Processes first: a namespace lives on while a process is inside it.
        for p in self.procs.values_mut() {
            if p.running() {
                signal(p.pid(), libc::SIGTERM);
            }
        }
        for p in self.procs.values_mut() {
            p.stop(Duration::from_secs(3));
        }
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("kube-vrrp-agent demo: cleanup: {e}");
            }
        }
        if self.dir_created
            && let Err(e) = fs::remove_dir_all(&self.dir)
        {
            eprintln!(
                "kube-vrrp-agent demo: cleanup: removing {}: {e}",
                self.dir.display()
            );
        }
    }
}
