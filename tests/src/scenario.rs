//! Reusable VRRP scenarios over a [`Cluster`]: N hosts on one lab segment, each running a
//! daemon of a chosen kind (keepalived or our agent) with configurations generated from one
//! [`Variant`]. The same scenario code runs with 3 keepalived, 3 agents or any mix.
//!
//! Ground truth is the wire and the kernel: who holds the VIP (`ip addr`), whether the client
//! can ping it, what a capture saw. Our agents' `/status` is checked on top when present.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::capture::Announce;
use crate::config::{Instance, KeepalivedConf};
use crate::daemon::{Agent, DaemonKind, Keepalived, VrrpDaemon};
use crate::error::{LabError, Result};

use crate::ping::PingReport;
use crate::topology::Lab;
use crate::wait::{holds_for, wait_for, wait_until};

/// A protocol flavour the scenarios run in.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Short name for messages.
    pub name: &'static str,
    /// The instance template for a priority.
    pub make: fn(u8, Duration) -> Instance,
    /// The advert interval.
    pub advert: Duration,
    /// The VIP (`ADDR/LEN`).
    pub vip: &'static str,
    /// Priorities of host 1, 2, 3 (host 1 is the preferred master).
    pub priorities: [u8; 3],
    /// Whether the VIP is IPv6.
    pub ipv6: bool,
}

fn mk_v2(p: u8, _: Duration) -> Instance {
    Instance::v2_pass(p)
}
fn mk_v3(p: u8, adv: Duration) -> Instance {
    let mut i = Instance::v3(p, adv);
    i.master = false;
    i
}
fn mk_v3_v6(p: u8, adv: Duration) -> Instance {
    let mut i = Instance::v3_ipv6(p, adv);
    i.master = false;
    i
}

impl Variant {
    /// VRRPv3, IPv4, 100 ms adverts: the scenarios' fast default.
    pub fn v3_100ms() -> Self {
        Self::v3(Duration::from_millis(100))
    }

    /// VRRPv3, IPv6, 100 ms adverts.
    pub fn v3_ipv6_100ms() -> Self {
        Self::v3_ipv6(Duration::from_millis(100))
    }

    /// VRRPv2, PASS auth, 1 s adverts, priorities 255/244/100 (the user's configs).
    pub fn v2_pass_1s() -> Self {
        Variant {
            name: "v2 PASS 1s IPv4",
            make: mk_v2,
            advert: Duration::from_secs(1),
            vip: crate::VIP4,
            priorities: [255, 244, 100],
            ipv6: false,
        }
    }

    /// VRRPv3 IPv4 with `advert` adverts, priorities 200/150/100, all `state BACKUP`.
    pub fn v3(advert: Duration) -> Self {
        Variant {
            name: "v3 IPv4",
            make: mk_v3,
            advert,
            vip: crate::VIP4,
            priorities: [200, 150, 100],
            ipv6: false,
        }
    }

    /// VRRPv3 IPv6 with `advert` adverts, priorities 200/150/100.
    pub fn v3_ipv6(advert: Duration) -> Self {
        Variant {
            name: "v3 IPv6",
            make: mk_v3_v6,
            ipv6: true,
            vip: crate::VIP6,
            ..Variant::v3(advert)
        }
    }

    /// The instance for host `i`.
    pub fn instance(&self, i: usize) -> Instance {
        (self.make)(self.priorities[i.min(2)], self.advert)
    }

    /// Master_Down_Interval of a backup with `priority`: 3 × interval + skew.
    pub fn master_down_interval(&self, priority: u8) -> Duration {
        3 * self.advert + self.skew_time(priority)
    }

    /// Skew_Time of a backup with `priority`: (256 − priority) / 256 × interval.
    pub fn skew_time(&self, priority: u8) -> Duration {
        self.advert * u32::from(256 - u16::from(priority)) / 256
    }

    /// A generous deadline for a takeover by a backup with `priority`: the
    /// Master_Down_Interval plus 3 s plus 3 intervals (noisy shared machine).
    pub fn takeover_bound(&self, priority: u8) -> Duration {
        self.master_down_interval(priority) + Duration::from_secs(3) + 3 * self.advert
    }

    /// How long "exactly one master" must keep holding to count as converged.
    pub fn settle(&self) -> Duration {
        (5 * self.advert).clamp(Duration::from_millis(500), Duration::from_millis(1500))
    }
}

/// Hosts on one segment running VRRP daemons.
pub struct Cluster {
    daemons: Vec<Option<Box<dyn VrrpDaemon>>>,
    /// Which implementation each host runs.
    pub kinds: Vec<DaemonKind>,
    /// Each host's configuration.
    pub confs: Vec<KeepalivedConf>,
    /// The protocol flavour.
    pub variant: Variant,
    dead: Vec<bool>,
    /// Hosts whose agent must report FAULT (not BACKUP) while another host is master, e.g.
    /// while a weight-0 tracker has failed.
    pub expect_fault: Vec<bool>,
    /// Configuration text to run instead of rendering `confs[i]` (e.g. a user's file verbatim);
    /// `confs[i]` must still describe it (priority, VRID, version) for the checks.
    pub conf_text: Vec<Option<String>>,
    /// Extra `standalone` arguments for each [`DaemonKind::Agent`] host (default none), e.g.
    /// `--node-name` for a VirtualIP file with per-node overrides.
    pub agent_args: Vec<Vec<String>>,
    /// The agent binary used for [`DaemonKind::Agent`] hosts (default: [`agent_bin`]).
    ///
    /// [`agent_bin`]: crate::daemon::agent_bin
    pub agent_bin: std::path::PathBuf,
    /// The client's ping interval in [`Cluster::failover`] (default 10 ms, 20 ms at 1 s
    /// adverts and more).
    pub probe: Option<Duration>,
    /// The lab (dropped after the daemons).
    pub lab: Lab,
}

/// What a failover scenario measured.
#[derive(Debug, Clone)]
pub struct Failover {
    /// From the start of the event (e.g. before SIGTERM is sent) to the successor holding the
    /// VIP alone among the live hosts (polled every 20 ms).
    pub takeover: Duration,
    /// The client's ping record across the event.
    pub ping: PingReport,
    /// Gratuitous ARPs / unsolicited NAs the successor sent for the VIP after the event.
    pub announces: Vec<Announce>,
}

impl Cluster {
    /// A lab with one host per entry of `kinds` and configurations from `variant`.
    /// Nothing is started yet.
    pub fn new(kinds: &[DaemonKind], variant: Variant) -> Result<Self> {
        let confs = (0..kinds.len())
            .map(|i| KeepalivedConf::single(variant.instance(i)))
            .collect();
        Self::with_confs(kinds, variant, confs)
    }

    /// Like [`Cluster::new`] with explicit configurations.
    pub fn with_confs(
        kinds: &[DaemonKind],
        variant: Variant,
        confs: Vec<KeepalivedConf>,
    ) -> Result<Self> {
        let lab = Lab::builder().hosts(kinds.len()).build()?;
        Ok(Cluster {
            daemons: kinds.iter().map(|_| None).collect(),
            kinds: kinds.to_vec(),
            confs,
            variant,
            dead: vec![false; kinds.len()],
            expect_fault: vec![false; kinds.len()],
            agent_bin: crate::daemon::agent_bin(),
            agent_args: vec![Vec::new(); kinds.len()],
            conf_text: vec![None; kinds.len()],
            probe: None,
            lab,
        })
    }

    /// Runs the [`DaemonKind::Agent`] hosts from one VirtualIP file (`default/<name>`) made
    /// from their keepalived configurations, with every host listed in `spec.nodes` at its
    /// priority and `--node-name`: the way a kube-vrrp cluster knows its peers' ranking,
    /// which keepalived.conf cannot say (planned handover at once). VRRPv3 single-instance
    /// configurations without trackers only; others are left as they are.
    pub fn run_agents_from_virtual_ip(&mut self, name: &str) {
        let Some(first) = self
            .confs
            .first()
            .and_then(|c| c.instances.first())
            .cloned()
        else {
            return;
        };
        if first.version != crate::config::AdvertVersion::V3
            || self.confs.iter().any(|c| c.instances.len() != 1)
        {
            return;
        }
        let mut nodes = String::new();
        for (i, c) in self.confs.iter().enumerate() {
            let _ = writeln!(
                nodes,
                "    - {{name: {}, priority: {}}}",
                self.lab.host(i).name,
                c.instances[0].priority
            );
        }
        let yaml = format!(
            "apiVersion: kubevrrp.io/v1alpha1\nkind: VirtualIP\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  virtualRouterID: {}\n  version: 3\n  advertInterval: {}ms\n  interface: {}\n  preempt: {}\n  addresses: [{}]\n  nodes:\n{nodes}",
            first.vrid,
            first.advert.as_millis(),
            first.interface,
            first.preempt,
            first.vips.join(", "),
        );
        for i in 0..self.kinds.len() {
            if self.kinds[i] == DaemonKind::Agent {
                self.conf_text[i] = Some(yaml.clone());
                self.agent_args[i] = vec!["--node-name".into(), self.lab.host(i).name.clone()];
                self.confs[i].instances[0].name = format!("default/{name}");
            }
        }
    }

    /// The VIP as an address.
    pub fn vip_addr(&self) -> IpAddr {
        crate::addr_of(self.variant.vip)
    }

    /// Host `i`'s priority in its configuration.
    pub fn priority(&self, i: usize) -> u8 {
        self.confs[i].instances[0].priority
    }

    /// Starts the daemon on host `i` (again, after a crash or stop).
    pub fn start(&mut self, i: usize) -> Result<()> {
        if let Some(mut old) = self.daemons[i].take().filter(|d| d.is_running()) {
            old.crash()?;
        }
        let node = self.lab.host(i);
        let text = self.conf_text[i]
            .clone()
            .unwrap_or_else(|| self.confs[i].render());
        let d: Box<dyn VrrpDaemon> = match self.kinds[i] {
            DaemonKind::Keepalived => Box::new(Keepalived::start(&self.lab, node, &text)?),
            DaemonKind::Agent => Box::new(Agent::start_with_args(
                &self.lab,
                node,
                &text,
                &self.agent_bin,
                &self.agent_args[i],
            )?),
        };
        self.daemons[i] = Some(d);
        Ok(())
    }

    /// Starts every host's daemon, in order.
    pub fn start_all(&mut self) -> Result<()> {
        (0..self.kinds.len()).try_for_each(|i| self.start(i))
    }

    /// The daemon on host `i`.
    pub fn daemon(&self, i: usize) -> Option<&dyn VrrpDaemon> {
        self.daemons[i].as_deref()
    }

    fn daemon_mut(&mut self, i: usize) -> Result<&mut Box<dyn VrrpDaemon>> {
        self.daemons[i].as_mut().ok_or_else(|| LabError::Daemon {
            daemon: format!("host {}", i + 1),
            reason: "not started".into(),
        })
    }

    /// Kills host `i`'s daemon without goodbye.
    pub fn crash(&mut self, i: usize) -> Result<()> {
        self.daemon_mut(i)?.crash()
    }

    /// Stops host `i`'s daemon gracefully.
    pub fn stop(&mut self, i: usize) -> Result<()> {
        self.daemon_mut(i)?.stop()
    }

    /// Sends SIGTERM to host `i`'s daemon without waiting.
    pub fn terminate(&mut self, i: usize) -> Result<()> {
        self.daemon_mut(i)?.terminate()
    }

    /// Waits for host `i`'s daemon to exit after [`Cluster::terminate`] (exit 0 for agents).
    pub fn wait_stopped(&mut self, i: usize) -> Result<()> {
        self.daemon_mut(i)?.wait_stopped()
    }

    /// "The node died": daemon crash plus link down. The host no longer counts in holder
    /// checks until [`Cluster::revive`].
    pub fn kill_node(&mut self, i: usize) -> Result<()> {
        self.crash(i)?;
        self.lab.link_down(self.lab.host(i))?;
        self.dead[i] = true;
        Ok(())
    }

    /// Brings a killed node back: starts its daemon, then its link.
    pub fn revive(&mut self, i: usize) -> Result<()> {
        self.start(i)?;
        self.lab.link_up(self.lab.host(i))?;
        self.dead[i] = false;
        Ok(())
    }

    /// Marks host `i` as out of (true) or back in (false) the holder checks, for scenarios
    /// that cut it off in other ways (partition).
    pub fn set_excluded(&mut self, i: usize, excluded: bool) {
        self.dead[i] = excluded;
    }

    /// Live hosts holding the VIP.
    pub fn live_holders(&self) -> Vec<usize> {
        self.lab
            .holders(self.variant.vip)
            .into_iter()
            .filter(|&i| !self.dead[i])
            .collect()
    }

    fn names(&self, v: &[usize]) -> Vec<String> {
        v.iter().map(|&i| self.lab.host(i).name.clone()).collect()
    }

    /// Whether our agents agree that `i` is master: agent `i` reports MASTER holding the
    /// VIP, other live agents report BACKUP (FAULT where [`Cluster::expect_fault`] says so).
    /// keepalived hosts are not asked.
    fn agents_agree(&self, master: usize) -> std::result::Result<(), String> {
        let inst = &self.confs[master].instances[0].name;
        for (j, d) in self.daemons.iter().enumerate() {
            let Some(d) = d else { continue };
            if self.dead[j] || !d.is_running() {
                continue;
            }
            let Some(status) = d.status() else { continue };
            let status = status.map_err(|e| format!("{}: {e}", self.lab.host(j).name))?;
            let s = status.instance(inst).ok_or_else(|| {
                format!("{}: /status has no instance {inst}", self.lab.host(j).name)
            })?;
            let want = if j == master {
                "MASTER"
            } else if self.expect_fault[j] {
                "FAULT"
            } else {
                "BACKUP"
            };
            if !s.state.eq_ignore_ascii_case(want) {
                return Err(format!(
                    "{} reports {} (want {want})",
                    self.lab.host(j).name,
                    s.state
                ));
            }
            let vip = crate::addr_of(self.variant.vip);
            let holds = s.vips.iter().any(|v| crate::try_addr_of(v) == Some(vip));
            if holds != (j == master) {
                return Err(format!(
                    "{} /status vips {:?}",
                    self.lab.host(j).name,
                    s.vips
                ));
            }
        }
        Ok(())
    }

    /// Waits until host `i` alone (among live hosts) holds the VIP and our agents agree;
    /// returns how long that took.
    pub fn wait_master(&self, i: usize, within: Duration) -> Result<Duration> {
        let start = Instant::now();
        let mut last = String::new();
        let r = wait_until(within, "", || {
            let h = self.live_holders();
            if h != [i] {
                last = format!("holders {:?}", self.names(&h));
                return None;
            }
            match self.agents_agree(i) {
                Ok(()) => Some(()),
                Err(e) => {
                    last = e;
                    None
                }
            }
        });
        match r {
            Ok(()) => Ok(start.elapsed()),
            Err(_) => Err(LabError::Timeout {
                what: format!(
                    "{} to be the only master ({}; last seen: {last})\n{}",
                    self.lab.host(i).name,
                    self.variant.name,
                    self.logs()
                ),
                after: within,
            }),
        }
    }

    /// Checks that host `i` stays the only live holder for the variant's settle time.
    pub fn assert_stable_master(&self, i: usize) -> Result<()> {
        holds_for(
            self.variant.settle(),
            &format!(
                "{} the only holder of {}",
                self.lab.host(i).name,
                self.variant.vip
            ),
            || self.live_holders() == [i],
        )
    }

    /// Lines in the keepalived hosts' logs saying that keepalived dropped a received advert
    /// (TTL, version, auth, interval, address list, length, checksum). Interop scenarios must
    /// end with none.
    pub fn keepalived_rejections(&self) -> Vec<String> {
        const REJECTS: &[&str] = &[
            "invalid ttl",
            "ttl/hl",
            "wrong version",
            "invalid passwd",
            "auth, expecting",
            "interval mismatch",
            "invalid packet type",
            "unexpected ip number count",
            "ip_tot_len mismatch",
            "vips but received",
            "not present in master advert",
            "vrrp packet too",
            "checksum",
        ];
        let mut out = Vec::new();
        for (i, d) in self.daemons.iter().enumerate() {
            let Some(d) = d.as_deref().filter(|d| d.kind() == DaemonKind::Keepalived) else {
                continue;
            };
            for line in d.log().lines() {
                let l = line.to_ascii_lowercase();
                if REJECTS.iter().any(|r| l.contains(r)) {
                    out.push(format!("{}: {line}", self.lab.host(i).name));
                }
            }
        }
        out
    }

    /// Fails if any keepalived host dropped an advert (see
    /// [`Cluster::keepalived_rejections`]).
    pub fn check_no_rejections(&self) -> Result<()> {
        let r = self.keepalived_rejections();
        if r.is_empty() {
            return Ok(());
        }
        Err(LabError::Daemon {
            daemon: "keepalived".into(),
            reason: format!("dropped adverts:\n{}", r.join("\n")),
        })
    }

    /// The tail of every daemon's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for (i, d) in self.daemons.iter().enumerate() {
            if let Some(d) = d {
                let log = d.log();
                let lines: Vec<&str> = log.lines().collect();
                s.push_str(&format!(
                    "--- {} ({}) log tail:\n{}\n",
                    self.lab.host(i).name,
                    d.kind().name(),
                    lines[lines.len().saturating_sub(15)..].join("\n")
                ));
            }
        }
        s
    }

    /// Waits until the client can ping the VIP.
    pub fn wait_vip_pingable(&self) -> Result<()> {
        self.lab
            .wait_pingable(self.vip_addr(), Duration::from_secs(10))
    }

    fn probe_interval(&self) -> Duration {
        if let Some(p) = self.probe {
            p
        } else if self.variant.advert >= Duration::from_secs(1) {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(10)
        }
    }

    /// Runs `event` while the client pings the VIP and a capture on the client records
    /// announcements; waits until `successor` alone holds the VIP and the client's pings are
    /// answered again; returns the measurements.
    pub fn failover(
        &mut self,
        successor: usize,
        within: Duration,
        event: impl FnOnce(&mut Self) -> Result<()>,
    ) -> Result<Failover> {
        self.wait_vip_pingable()?;
        let filter = if self.variant.ipv6 { "icmp6" } else { "arp" };
        let mut cap = self.lab.capture(self.lab.client(), filter)?;
        let mon = self
            .lab
            .ping_monitor(self.vip_addr(), self.probe_interval())?;
        wait_for(
            Duration::from_secs(5),
            "pings answered before the event",
            || mon.answered() >= 5,
        )?;
        let t0 = Instant::now();
        let epoch0 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        event(self)?;
        self.wait_master(successor, within)?;
        let takeover = t0.elapsed();
        mon.wait_answered_after(t0, within)?;
        // Announcements go out at once on takeover; give them a moment to be captured.
        let mac = self.lab.host(successor).mac.clone();
        let vip = self.vip_addr().to_string();
        let mut announces = Vec::new();
        let _ = wait_for(Duration::from_secs(2), "announcements", || {
            let got = if self.variant.ipv6 {
                cap.unsolicited_nas()
            } else {
                cap.garps()
            };
            announces = got
                .unwrap_or_default()
                .into_iter()
                .filter(|a| a.eth_src == mac && a.addr == vip && a.time >= epoch0 - 0.01)
                .collect();
            announces.len() >= 5
        });
        cap.stop()?;
        let ping = mon.stop();
        Ok(Failover {
            takeover,
            ping,
            announces,
        })
    }

    /// Captures adverts on the client until `n` from host `i` were seen; validates the first
    /// with `tshark -V` and returns it with the dissection.
    pub fn validate_adverts_from(
        &self,
        i: usize,
        n: usize,
    ) -> Result<(crate::capture::Advert, String)> {
        let mut cap = self
            .lab
            .capture(self.lab.client(), "ip proto 112 or ip6 proto 112")?;
        let mac = self.lab.host(i).mac.clone();
        let within = 5 * self.variant.advert * n as u32 + Duration::from_secs(3);
        wait_for(
            within,
            &format!("{n} adverts from {}", self.lab.host(i).name),
            || {
                cap.adverts()
                    .is_ok_and(|a| a.iter().filter(|a| a.eth_src == mac).count() >= n)
            },
        )?;
        cap.stop()?;
        let adv = cap
            .adverts()?
            .into_iter()
            .find(|a| a.eth_src == mac)
            .ok_or_else(|| LabError::Parse {
                what: "adverts".into(),
                reason: "none from the host".into(),
            })?;
        let text = crate::capture::validate_vrrp_frame(cap.pcap(), adv.frame)?;
        let inst = &self.confs[i].instances[0];
        let want_version = if matches!(inst.version, crate::config::AdvertVersion::V3) {
            3
        } else {
            2
        };
        let problems: Vec<String> = [
            (adv.ttl != 255).then(|| format!("TTL/hop limit {}", adv.ttl)),
            (adv.version != want_version).then(|| format!("version {}", adv.version)),
            (adv.vrid != inst.vrid).then(|| format!("VRID {}", adv.vrid)),
            (adv.priority != inst.priority).then(|| format!("priority {}", adv.priority)),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !problems.is_empty() {
            return Err(LabError::Parse {
                what: format!("advert from {}", self.lab.host(i).name),
                reason: format!("{problems:?}\n{text}"),
            });
        }
        Ok((adv, text))
    }
}

/// Checks the announcements of a failover: at least 5 from the new master at once (within
/// one second of the first).
pub fn check_burst(f: &Failover) -> std::result::Result<(), String> {
    let Some(first) = f.announces.first() else {
        return Err("no gratuitous ARP / unsolicited NA from the new master".into());
    };
    let burst = f
        .announces
        .iter()
        .filter(|a| a.time - first.time < 1.0)
        .count();
    if burst < 5 {
        return Err(format!(
            "only {burst} announcements in the first second: {:?}",
            f.announces
        ));
    }
    Ok(())
}
