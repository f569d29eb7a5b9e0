//! The virtual L2 segment: namespaces, the bridge, veths, addresses, and the operations the
//! scenarios perform on it (partition, link failure, address checks, pings, captures).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::capture::Capture;
use crate::error::{LabError, Result};
use crate::netns::{self, command_in, ip, sysctl};
use crate::ping::{self, PingMonitor};
use crate::proc::{ProcGuard, ProcRegistry};
use crate::wait::wait_until;

/// Name of the host-side interface in every host and in the client.
pub const IFNAME: &str = "eth0";
/// Name of the bridge in the switch namespace.
pub const BRIDGE: &str = "br0";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A random 16-bit number (from the std hasher's per-process random keys and the clock).
pub fn random_u16() -> u16 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(COUNTER.load(Ordering::Relaxed));
    h.finish() as u16
}

/// Removes namespaces left behind by lab runs whose process no longer exists (a test binary
/// that was SIGKILLed cannot run its Drop). Lab namespaces are named `kvlab<PID>x...`; only
/// those whose PID is gone are touched, after killing (by PID) whatever still runs inside.
pub fn sweep_stale() {
    let Ok(out) = netns::run(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix("kvlab") else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(pid) = digits.parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(out) = netns::run(Command::new("ip").args(["netns", "pids", name])) {
            for p in String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                // SAFETY: plain kill(2) of a process inside an orphaned lab namespace.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
        let _ = netns::run(Command::new("ip").args(["netns", "del", name]));
    }
}

/// One namespace on the segment: a VRRP host or the client.
#[derive(Debug, Clone)]
pub struct Node {
    /// Short role name: `h1`, `h2`, ... or `client`.
    pub name: String,
    /// The network namespace.
    pub netns: String,
    /// The bridge port (in the switch namespace) this node is plugged into.
    pub port: String,
    /// The node's interface (`eth0`).
    pub ifname: String,
    /// Its fixed MAC address.
    pub mac: String,
    /// Its IPv4 address (in 192.0.2.0/24).
    pub ipv4: Ipv4Addr,
    /// Its IPv6 address (in 2001:db8::/64).
    pub ipv6: Ipv6Addr,
}

/// Builds a [`Lab`].
#[derive(Debug, Clone)]
pub struct LabBuilder {
    hosts: usize,
}

impl Default for LabBuilder {
    fn default() -> Self {
        LabBuilder { hosts: 3 }
    }
}

impl LabBuilder {
    /// Number of VRRP hosts (1–40, default 3).
    pub fn hosts(mut self, n: usize) -> Self {
        self.hosts = n;
        self
    }

    /// Creates the namespaces, the bridge and the links. On error, whatever was created is
    /// removed again.
    pub fn build(self) -> Result<Lab> {
        if self.hosts == 0 || self.hosts > 40 {
            return Err(LabError::Parse {
                what: "LabBuilder::hosts".into(),
                reason: format!("{} hosts; must be 1-40", self.hosts),
            });
        }
        sweep_stale();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("kvlab{}x{n}{:04x}", std::process::id(), random_u16());
        let dir = tempfile::Builder::new()
            .prefix(&format!("{id}-"))
            .tempdir()
            .map_err(|e| LabError::io("create the lab's temp dir", e))?;
        let mut lab = Lab {
            switch: format!("{id}-sw"),
            id,
            hosts: Vec::new(),
            client: None,
            namespaces: Vec::new(),
            procs: Arc::new(ProcRegistry::default()),
            dir,
        };
        lab.add_switch()?;
        for i in 0..self.hosts {
            let node = Node {
                name: format!("h{}", i + 1),
                netns: format!("{}-h{}", lab.id, i + 1),
                port: format!("ph{}", i + 1),
                ifname: IFNAME.into(),
                mac: format!("02:00:00:00:00:{:02x}", 0x11 + i),
                ipv4: Ipv4Addr::new(192, 0, 2, 11 + i as u8),
                ipv6: format!("2001:db8::{}", 11 + i)
                    .parse()
                    .map_err(|_| LabError::Parse {
                        what: "host IPv6".into(),
                        reason: "bad literal".into(),
                    })?,
            };
            lab.add_node(&node)?;
            lab.hosts.push(node);
        }
        let client = Node {
            name: "client".into(),
            netns: format!("{}-cl", lab.id),
            port: "pcl".into(),
            ifname: IFNAME.into(),
            mac: "02:00:00:00:00:02".into(),
            ipv4: Ipv4Addr::new(192, 0, 2, 2),
            ipv6: "2001:db8::2".parse().map_err(|_| LabError::Parse {
                what: "client IPv6".into(),
                reason: "bad literal".into(),
            })?,
        };
        lab.add_node(&client)?;
        lab.client = Some(client);
        let all: Vec<Node> = lab.all_nodes().cloned().collect();
        for node in &all {
            lab.wait_link_ready(node)?;
        }
        Ok(lab)
    }
}

/// A running lab. Dropping it kills every process it started and deletes its namespaces.
#[derive(Debug)]
pub struct Lab {
    id: String,
    switch: String,
    hosts: Vec<Node>,
    client: Option<Node>,
    namespaces: Vec<String>,
    procs: Arc<ProcRegistry>,
    dir: tempfile::TempDir,
}

impl Lab {
    /// A builder with 3 hosts.
    pub fn builder() -> LabBuilder {
        LabBuilder::default()
    }

    /// The unique prefix of this lab's namespace names.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The switch namespace (holds the bridge).
    pub fn switch_ns(&self) -> &str {
        &self.switch
    }

    /// Every namespace this lab created.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// The VRRP hosts.
    pub fn hosts(&self) -> &[Node] {
        &self.hosts
    }

    /// Host `i` (0-based: `host(0)` is `h1`).
    pub fn host(&self, i: usize) -> &Node {
        &self.hosts[i]
    }

    /// The client namespace.
    pub fn client(&self) -> &Node {
        self.client
            .as_ref()
            .expect("the client is created by build()")
    }

    fn all_nodes(&self) -> impl Iterator<Item = &Node> {
        self.hosts.iter().chain(self.client.iter())
    }

    /// The lab's temp dir (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A per-node directory under the lab's temp dir, created on first use.
    pub fn node_dir(&self, node: &Node) -> Result<PathBuf> {
        let d = self.dir.path().join(&node.name);
        std::fs::create_dir_all(&d).map_err(|e| LabError::io(format!("mkdir {d:?}"), e))?;
        Ok(d)
    }

    /// The registry of processes started in this lab.
    pub fn registry(&self) -> &ProcRegistry {
        &self.procs
    }

    fn add_ns(&mut self, name: &str) -> Result<()> {
        netns::run(Command::new("ip").args(["netns", "add", name]))?;
        self.namespaces.push(name.to_string());
        Ok(())
    }

    fn add_switch(&mut self) -> Result<()> {
        let sw = self.switch.clone();
        self.add_ns(&sw)?;
        sysctl(
            &sw,
            &[
                "net.ipv6.conf.all.disable_ipv6=1".into(),
                "net.ipv6.conf.default.disable_ipv6=1".into(),
            ],
        )?;
        ip(&sw, &["link", "set", "lo", "up"])?;
        ip(
            &sw,
            &[
                "link",
                "add",
                BRIDGE,
                "type",
                "bridge",
                "stp_state",
                "0",
                "mcast_snooping",
                "0",
            ],
        )?;
        ip(&sw, &["link", "set", BRIDGE, "up"])?;
        Ok(())
    }

    fn add_node(&mut self, node: &Node) -> Result<()> {
        self.add_ns(&node.netns)?;
        let ns = node.netns.as_str();
        let mut items = Vec::new();
        for scope in ["all", "default"] {
            items.push(format!("net.ipv6.conf.{scope}.disable_ipv6=0"));
            items.push(format!("net.ipv6.conf.{scope}.accept_dad=0"));
            items.push(format!("net.ipv6.conf.{scope}.keep_addr_on_down=1"));
            items.push(format!("net.ipv6.conf.{scope}.accept_ra=0"));
            items.push(format!("net.ipv6.conf.{scope}.router_solicitations=0"));
            items.push(format!("net.ipv4.conf.{scope}.rp_filter=0"));
        }
        sysctl(ns, &items)?;
        ip(ns, &["link", "set", "lo", "up"])?;
        // The peer is created directly in the node's namespace: nothing touches the root one.
        ip(
            &self.switch,
            &[
                "link",
                "add",
                &node.port,
                "type",
                "veth",
                "peer",
                "name",
                &node.ifname,
                "netns",
                ns,
            ],
        )?;
        ip(ns, &["link", "set", &node.ifname, "address", &node.mac])?;
        let sw = self.switch.clone();
        ip(&sw, &["link", "set", &node.port, "master", BRIDGE])?;
        ip(&sw, &["link", "set", &node.port, "up"])?;
        let mut items = Vec::new();
        for key in [
            "accept_dad=0",
            "keep_addr_on_down=1",
            "accept_ra=0",
            "router_solicitations=0",
        ] {
            items.push(format!("net.ipv6.conf.{}.{key}", node.ifname));
        }
        items.push(format!("net.ipv4.conf.{}.rp_filter=0", node.ifname));
        sysctl(ns, &items)?;
        let v4 = format!("{}/24", node.ipv4);
        let v6 = format!("{}/64", node.ipv6);
        ip(ns, &["addr", "add", &v4, "dev", &node.ifname])?;
        ip(ns, &["addr", "add", &v6, "dev", &node.ifname, "nodad"])?;
        ip(ns, &["link", "set", &node.ifname, "up"])?;
        Ok(())
    }

    /// Waits until the node's interface is up with carrier and a usable link-local address.
    fn wait_link_ready(&self, node: &Node) -> Result<()> {
        wait_until(
            Duration::from_secs(10),
            &format!("{} link ready", node.name),
            || {
                let out = ip(&node.netns, &["-j", "addr", "show", "dev", &node.ifname]).ok()?;
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                let link = v.get(0)?;
                let up = link
                    .get("flags")?
                    .as_array()?
                    .iter()
                    .any(|f| f.as_str() == Some("LOWER_UP"));
                let ll_ok = link.get("addr_info")?.as_array()?.iter().any(|a| {
                    a.get("local")
                        .and_then(|l| l.as_str())
                        .is_some_and(|l| l.starts_with("fe80"))
                        && a.get("tentative").is_none()
                });
                (up && ll_ok).then_some(())
            },
        )
    }

    /// Runs `argv` in the node's namespace and returns its stdout (error on non-zero exit).
    pub fn exec(&self, node: &Node, argv: &[&str]) -> Result<String> {
        let out = netns::run(&mut command_in(&node.netns, argv))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `argv` in the node's namespace with stdout and stderr appended to `log` (or
    /// discarded). The returned guard kills it by PID when dropped; the lab kills it too.
    pub fn spawn(&self, node: &Node, argv: &[&str], log: Option<&Path>) -> Result<ProcGuard> {
        self.spawn_cmd(command_in(&node.netns, argv), argv.join(" ").as_str(), log)
    }

    /// Like [`Lab::spawn`] for a prepared command (already wrapped in `ip netns exec`).
    pub fn spawn_cmd(
        &self,
        mut cmd: Command,
        label: &str,
        log: Option<&Path>,
    ) -> Result<ProcGuard> {
        cmd.stdin(Stdio::null());
        match log {
            Some(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| LabError::io(format!("open log {path:?}"), e))?;
                let f2 = f
                    .try_clone()
                    .map_err(|e| LabError::io(format!("dup log {path:?}"), e))?;
                cmd.stdout(f).stderr(f2);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        ProcGuard::spawn(&self.procs, cmd, label)
    }

    /// Detaches the node's bridge port: the node keeps carrier but hears nobody.
    pub fn partition(&self, node: &Node) -> Result<()> {
        ip(&self.switch, &["link", "set", &node.port, "nomaster"]).map(|_| ())
    }

    /// Re-attaches the node's bridge port.
    pub fn heal(&self, node: &Node) -> Result<()> {
        ip(&self.switch, &["link", "set", &node.port, "master", BRIDGE]).map(|_| ())
    }

    /// Takes the node's own interface down (the node sees the link go away).
    pub fn link_down(&self, node: &Node) -> Result<()> {
        ip(&node.netns, &["link", "set", &node.ifname, "down"]).map(|_| ())
    }

    /// Brings the node's interface back up.
    pub fn link_up(&self, node: &Node) -> Result<()> {
        ip(&node.netns, &["link", "set", &node.ifname, "up"]).map(|_| ())
    }

    /// The addresses configured on the node's interface.
    pub fn addresses(&self, node: &Node) -> Result<Vec<IpAddr>> {
        let out = ip(&node.netns, &["-j", "addr", "show", "dev", &node.ifname])?;
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| LabError::Parse {
                what: "ip -j addr".into(),
                reason: e.to_string(),
            })?;
        let mut addrs = Vec::new();
        for link in v.as_array().into_iter().flatten() {
            for a in link
                .get("addr_info")
                .and_then(|a| a.as_array())
                .into_iter()
                .flatten()
            {
                if let Some(ip) = a
                    .get("local")
                    .and_then(|l| l.as_str())
                    .and_then(|l| l.parse().ok())
                {
                    addrs.push(ip);
                }
            }
        }
        Ok(addrs)
    }

    /// Whether the node holds `vip` (an address or `ADDR/LEN`).
    pub fn holds(&self, node: &Node, vip: &str) -> bool {
        let want = crate::addr_of(vip);
        self.addresses(node)
            .map(|a| a.contains(&want))
            .unwrap_or(false)
    }

    /// Indices of the hosts holding `vip`.
    pub fn holders(&self, vip: &str) -> Vec<usize> {
        (0..self.hosts.len())
            .filter(|&i| self.holds(&self.hosts[i], vip))
            .collect()
    }

    /// Waits until exactly host `i` holds `vip` among the hosts in `among` (all when empty)
    /// and returns how long that took.
    pub fn wait_holder(&self, vip: &str, i: usize, within: Duration) -> Result<Duration> {
        let start = std::time::Instant::now();
        wait_until(
            within,
            &format!("{vip} held by {} only", self.hosts[i].name),
            || (self.holders(vip) == vec![i]).then_some(()),
        )
        .map_err(|e| self.annotate(e, vip))?;
        Ok(start.elapsed())
    }

    /// Waits until exactly one of the hosts not in `excluded` holds `vip`; returns its index.
    pub fn wait_single_holder(
        &self,
        vip: &str,
        excluded: &[usize],
        within: Duration,
    ) -> Result<usize> {
        wait_until(within, &format!("exactly one holder of {vip}"), || {
            let h: Vec<usize> = self
                .holders(vip)
                .into_iter()
                .filter(|i| !excluded.contains(i))
                .collect();
            (h.len() == 1).then(|| h[0])
        })
        .map_err(|e| self.annotate(e, vip))
    }

    fn annotate(&self, e: LabError, vip: &str) -> LabError {
        match e {
            LabError::Timeout { what, after } => LabError::Timeout {
                what: format!(
                    "{what} (holders now: {:?})",
                    self.holders(vip)
                        .iter()
                        .map(|&i| self.hosts[i].name.as_str())
                        .collect::<Vec<_>>()
                ),
                after,
            },
            other => other,
        }
    }

    /// One ICMP echo from `from` to `addr`; the round-trip time, or `None` on timeout.
    pub fn ping_once(
        &self,
        from: &Node,
        addr: IpAddr,
        timeout: Duration,
    ) -> Result<Option<Duration>> {
        ping::ping_once(&from.netns, addr, timeout)
    }

    /// Waits until `addr` answers a ping from the client.
    pub fn wait_pingable(&self, addr: IpAddr, within: Duration) -> Result<()> {
        let client = self.client().netns.clone();
        wait_until(
            within,
            &format!("{addr} to answer pings from the client"),
            || {
                ping::ping_once(&client, addr, Duration::from_millis(200))
                    .ok()
                    .flatten()
            },
        )
        .map(|_| ())
    }

    /// Starts pinging `addr` from the client every `interval`.
    pub fn ping_monitor(&self, addr: IpAddr, interval: Duration) -> Result<PingMonitor> {
        PingMonitor::start(&self.client().netns, addr, interval)
    }

    /// Starts a tcpdump capture on the node's interface with a pcap filter.
    pub fn capture(&self, node: &Node, filter: &str) -> Result<Capture> {
        let dir = self.node_dir(node)?;
        Capture::start(self, &node.netns, &node.ifname, filter, &dir)
    }

    /// Starts a capture on the bridge in the switch namespace (sees flooded traffic).
    pub fn capture_switch(&self, filter: &str) -> Result<Capture> {
        Capture::start(self, &self.switch, BRIDGE, filter, self.dir.path())
    }

    /// PIDs of every process still inside one of this lab's namespaces.
    pub fn pids_inside(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for ns in &self.namespaces {
            if let Ok(out) = netns::run(Command::new("ip").args(["netns", "pids", ns])) {
                pids.extend(
                    String::from_utf8_lossy(&out.stdout)
                        .split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
        pids
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.procs.kill_all();
        // Anything else still inside our namespaces was started by this lab (directly or by a
        // daemon it ran, e.g. keepalived's VRRP child or a tracker script): kill it by PID.
        let _ = wait_until(Duration::from_secs(5), "lab processes to exit", || {
            let pids = self.pids_inside();
            for &pid in &pids {
                // SAFETY: plain kill(2) on a PID that lives in one of our namespaces.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            pids.is_empty().then_some(())
        });
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
