//! Failover and footprint benchmark (not a test): keepalived and our agent side by side on
//! the same lab topology.
//!
//! Failover: two hosts (priorities 200 and 150) and the client pinging the VIP every 10 ms
//! (20 ms at 1 s adverts). Events: `kill9` (daemon SIGKILL plus link down at the same time:
//! the node dies; a SIGKILL alone leaves the VIP answering on the old host), `linkdown` (the
//! master's link fails, daemon alive), `sigterm` (graceful handover). Reported: the client's
//! longest ping gap, the probes it lost, and the time until the backup alone holds the VIP,
//! median/p95/max over N repetitions, their ratio to the theoretical Master_Down_Interval (or Skew_Time for
//! SIGTERM) and to keepalived. SIGTERM runs probe every 10 ms at every advert interval. Our
//! agents run from one VirtualIP file listing both hosts with their priorities, as in a
//! cluster (so the ranked successor takes over at once); keepalived from its own file. Each event lands at a random phase of the master's advert
//! cycle, so crash gaps spread between Master_Down_Interval minus one interval and
//! Master_Down_Interval.
//!
//! Footprint: one host running 1/64/255 instances (v3, 1 s adverts, master of all): RSS of the
//! daemon's processes and CPU% over three windows in a row: `startup` (from the moment every VIP
//! is bound), `idle` (the next window, nothing polling) and `scraped` (the next one, with
//! `/status` read every second and `/metrics` every 5 s, as a Prometheus scrape and a
//! status-watching tool do; keepalived has neither, so its scraped window is a second idle one).
//! Counts above 255 (up to 4000) are spread over several interfaces, 250 per interface: `eth0` plus veth pairs created inside the host's
//! namespace (nothing listens on their peers, so every instance is master), each instance
//! with one IPv6 VIP from 2001:db8:100::/48 (the IPv4 documentation ranges are too small).
//!
//! Usage (root): `cargo run -p kube-vrrp-tests --bin failover-bench -- [--reps N]
//! [--daemons keepalived,agent] [--intervals 1000,100,20] [--events kill9,linkdown,sigterm]
//! [--instances 1,64,255] [--window-secs 10] [--csv DIR] [--no-failover] [--no-footprint]
//! [--ipv6] [--load N]` (`--ipv6`: the failover runs with the IPv6 VIP, unsolicited NAs instead of GARPs;
//! `--load N`: the failover runs with `stress-ng --cpu N` keeping the cores busy, for the tail
//! under load; the table then also says whether each p95 gap stayed within
//! Master_Down_Interval + one advert interval)

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lab::config::Instance;
use lab::scenario::{Cluster, Variant};
use lab::{DaemonKind, KeepalivedConf, Lab};

/// Instances per interface when a footprint run needs several interfaces.
const PER_IFACE: usize = 250;
/// The largest footprint run: sixteen interfaces.
const MAX_INSTANCES: usize = 16 * PER_IFACE;
/// How often the scraped window reads `/status` and `/metrics`.
const STATUS_EVERY: Duration = Duration::from_secs(1);
const METRICS_EVERY: Duration = Duration::from_secs(5);

struct Opts {
    reps: usize,
    daemons: Vec<DaemonKind>,
    intervals_ms: Vec<u64>,
    events: Vec<String>,
    instances: Vec<usize>,
    window: Duration,
    csv_dir: PathBuf,
    failover: bool,
    footprint: bool,
    ipv6: bool,
    /// CPU hogs (`stress-ng --cpu N`) running through the failover series.
    load: Option<u32>,
}

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        reps: 5,
        daemons: vec![DaemonKind::Keepalived, DaemonKind::Agent],
        intervals_ms: vec![1000, 100, 20],
        events: vec!["kill9".into(), "linkdown".into(), "sigterm".into()],
        instances: vec![1, 64, 255],
        window: Duration::from_secs(10),
        csv_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench"),
        failover: true,
        footprint: true,
        ipv6: false,
        load: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let list = |s: String| -> Vec<String> { s.split(',').map(str::to_string).collect() };
        match a.as_str() {
            "--reps" => o.reps = val("--reps")?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--daemons" => {
                o.daemons = list(val("--daemons")?)
                    .iter()
                    .map(|d| match d.as_str() {
                        "keepalived" => Ok(DaemonKind::Keepalived),
                        "agent" | "kube-vrrp" => Ok(DaemonKind::Agent),
                        other => Err(format!("--daemons: unknown {other:?}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--intervals" => {
                o.intervals_ms = list(val("--intervals")?)
                    .iter()
                    .map(|v| v.parse().map_err(|e| format!("--intervals: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--events" => {
                o.events = list(val("--events")?);
                if let Some(e) = o
                    .events
                    .iter()
                    .find(|e| !["kill9", "linkdown", "sigterm"].contains(&e.as_str()))
                {
                    return Err(format!("--events: unknown {e:?}"));
                }
            }
            "--instances" => {
                o.instances = list(val("--instances")?)
                    .iter()
                    .map(|v| match v.parse::<usize>() {
                        Ok(n) if (1..=MAX_INSTANCES).contains(&n) => Ok(n),
                        _ => Err(format!("--instances: {v:?} is not 1-{MAX_INSTANCES}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--window-secs" => {
                o.window = Duration::from_secs(
                    val("--window-secs")?
                        .parse()
                        .map_err(|e| format!("--window-secs: {e}"))?,
                )
            }
            "--csv" => o.csv_dir = PathBuf::from(val("--csv")?),
            "--no-failover" => o.failover = false,
            "--no-footprint" => o.footprint = false,
            "--ipv6" => o.ipv6 = true,
            "--load" => {
                o.load = Some(match val("--load")?.parse::<u32>() {
                    Ok(n) if (1..=64).contains(&n) => n,
                    _ => return Err("--load: the number of CPU hogs, 1-64".into()),
                })
            }
            "-h" | "--help" => {
                println!("{}", lab::module_doc(include_str!("failover.rs")));
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(o)
}

/// `stress-ng --cpu N` (every worker spinning on a CPU), stopped with SIGTERM when dropped
/// (stress-ng then ends its workers) and reaped.
struct CpuLoad(std::process::Child);

impl CpuLoad {
    fn start(workers: u32) -> Result<CpuLoad, String> {
        std::process::Command::new("stress-ng")
            // The timeout is only a backstop should this process die without dropping it.
            .args(["--cpu", &workers.to_string(), "--timeout", "4h", "--quiet"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(CpuLoad)
            .map_err(|e| format!("--load needs stress-ng (apt-get install stress-ng): {e}"))
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            // Our own unreaped child: its PID still names it.
            let pid = self.0.id() as libc::pid_t;
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.0.wait();
    }
}

fn variant(interval_ms: u64, ipv6: bool) -> Variant {
    let advert = Duration::from_millis(interval_ms);
    if ipv6 {
        Variant::v3_ipv6(advert)
    } else {
        Variant::v3(advert)
    }
}

#[derive(Clone)]
struct Sample {
    gap: Duration,
    takeover: Duration,
    /// Probes the client sent that were never answered.
    lost: usize,
}

/// The client's probe interval across a SIGTERM handover (the loss goal).
const HANDOVER_PROBE: Duration = Duration::from_millis(10);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    (
        percentile(&s, 0.5),
        percentile(&s, 0.95),
        *s.last().unwrap_or(&f64::NAN),
    )
}

/// One failover series on a fresh two-host cluster; the cluster is restored (host 1 master)
/// between repetitions.
fn failover_series(
    kind: DaemonKind,
    interval_ms: u64,
    event: &str,
    reps: usize,
    ipv6: bool,
) -> lab::Result<Vec<Sample>> {
    let v = variant(interval_ms, ipv6);
    let mut c = Cluster::new(&[kind, kind], v)?;
    c.run_agents_from_virtual_ip("bench");
    if event == "sigterm" {
        c.probe = Some(HANDOVER_PROBE);
    }
    c.start_all()?;
    let restore_bound = c.variant.takeover_bound(200) + Duration::from_secs(5);
    c.wait_master(0, restore_bound)?;
    let bound = c.variant.takeover_bound(150) + Duration::from_secs(2);
    let mut out = Vec::new();
    for _ in 0..reps {
        // Land the event at a random phase of the master's advert cycle; otherwise the
        // restore step fixes the phase and biases the crash gaps.
        let phase = f64::from(lab::topology::random_u16()) / f64::from(u16::MAX);
        std::thread::sleep(c.variant.advert.mul_f64(phase));
        let f = c.failover(1, bound, |c| match event {
            "kill9" => c.kill_node(0),
            "linkdown" => {
                c.lab.link_down(c.lab.host(0))?;
                c.set_excluded(0, true);
                Ok(())
            }
            _ => c.terminate(0),
        })?;
        if event == "sigterm" {
            c.wait_stopped(0)?;
        }
        out.push(Sample {
            gap: f.ping.max_gap,
            takeover: f.takeover,
            lost: f.ping.lost,
        });
        match event {
            "kill9" => c.revive(0)?,
            "linkdown" => {
                c.lab.link_up(c.lab.host(0))?;
                c.set_excluded(0, false);
            }
            _ => c.start(0)?,
        }
        c.wait_master(0, restore_bound)?;
        c.wait_vip_pingable()?;
    }
    Ok(out)
}

fn theory(event: &str, interval_ms: u64) -> Duration {
    let v = variant(interval_ms, false);
    if event == "sigterm" {
        v.skew_time(150)
    } else {
        v.master_down_interval(150)
    }
}

fn run_failover(o: &Opts, csv: &mut String, table: &mut String) {
    let _load = match o.load.map(CpuLoad::start).transpose() {
        Ok(l) => l,
        Err(e) => {
            let _ = writeln!(table, "\nFailover: {e}");
            return;
        }
    };
    let mut unavailable: Vec<DaemonKind> = Vec::new();
    let _ = writeln!(
        csv,
        "daemon,interval_ms,event,rep,gap_ms,takeover_ms,theory_ms,lost"
    );
    let mut medians: BTreeMap<(u64, String, &'static str), f64> = BTreeMap::new();
    let _ = writeln!(
        table,
        "\nFailover, {}{} (client ping gap / backup takeover, ms; lost probes; N = {})\n{:<11} {:>8} {:<9} {:>9} {:>9} {:>9} {:>11} {:>9} {:>10} {:>11} {:>12}",
        if o.ipv6 { "v3 IPv6" } else { "v3 IPv4" },
        o.load
            .map(|n| format!(", under load (stress-ng --cpu {n})"))
            .unwrap_or_default(),
        o.reps,
        "daemon",
        "advert",
        "event",
        "gap med",
        "gap p95",
        "gap max",
        "takeover md",
        "theory",
        "gap/theo",
        "vs keepal.",
        "lost tot/max"
    );
    for &iv in &o.intervals_ms {
        for ev in &o.events {
            for &kind in &o.daemons {
                if unavailable.contains(&kind) {
                    let _ = writeln!(
                        table,
                        "{:<11} {:>6}ms {:<9} unavailable (see above)",
                        kind.name(),
                        iv,
                        ev
                    );
                    continue;
                }
                let started = Instant::now();
                let samples = match failover_series(kind, iv, ev, o.reps, o.ipv6) {
                    Ok(s) => s,
                    Err(e) => {
                        if matches!(e, lab::LabError::Daemon { .. }) {
                            unavailable.push(kind);
                        }
                        let first = e.to_string().lines().next().unwrap_or("").to_string();
                        let _ = writeln!(
                            table,
                            "{:<11} {:>6}ms {:<9} unavailable: {first}",
                            kind.name(),
                            iv,
                            ev
                        );
                        eprintln!("{} {iv}ms {ev}: {e}", kind.name());
                        continue;
                    }
                };
                let th = ms(theory(ev, iv));
                for (i, s) in samples.iter().enumerate() {
                    let _ = writeln!(
                        csv,
                        "{},{iv},{ev},{i},{:.1},{:.1},{th:.1},{}",
                        kind.name(),
                        ms(s.gap),
                        ms(s.takeover),
                        s.lost
                    );
                }
                let gaps: Vec<f64> = samples.iter().map(|s| ms(s.gap)).collect();
                let tks: Vec<f64> = samples.iter().map(|s| ms(s.takeover)).collect();
                let (gm, g95, gmax) = stats(&gaps);
                let (tm, _, _) = stats(&tks);
                medians.insert((iv, ev.clone(), kind.name()), gm);
                let vs = medians
                    .get(&(iv, ev.clone(), DaemonKind::Keepalived.name()))
                    .filter(|_| kind != DaemonKind::Keepalived)
                    .map(|k| format!("{:.2}x", gm / k))
                    .unwrap_or_else(|| "-".into());
                let lost_total: usize = samples.iter().map(|s| s.lost).sum();
                let lost_max = samples.iter().map(|s| s.lost).max().unwrap_or(0);
                let _ = writeln!(
                    table,
                    "{:<11} {:>6}ms {:<9} {gm:>9.0} {g95:>9.0} {gmax:>9.0} {tm:>11.0} {th:>9.0} {:>10.2} {vs:>11} {:>12}",
                    kind.name(),
                    iv,
                    ev,
                    gm / th,
                    format!("{lost_total}/{lost_max}")
                );
                if o.load.is_some() && ev != "sigterm" {
                    // The goal under load: the tail stays within one advert interval of theory.
                    let bound = th + iv as f64;
                    let _ = writeln!(
                        table,
                        "{:<30} p95 {g95:.0} ms {} Master_Down_Interval + one interval ({bound:.0} ms)",
                        "",
                        if g95 <= bound { "within" } else { "ABOVE" }
                    );
                }
                eprintln!(
                    "{} {iv}ms {ev}: done in {:?}",
                    kind.name(),
                    started.elapsed()
                );
            }
        }
    }
}

/// More than 255 instances: veth pairs `vbK`/`vbKp` in the host's namespace and
/// [`PER_IFACE`] IPv6 instances per interface.
fn spread_conf(lab: &Lab, n: usize, tpl: &Instance) -> lab::Result<KeepalivedConf> {
    let host = lab.host(0);
    let ifaces = n.div_ceil(PER_IFACE);
    for k in 1..ifaces {
        let (a, b) = (format!("vb{k}"), format!("vb{k}p"));
        lab.exec(
            host,
            &["ip", "link", "add", &a, "type", "veth", "peer", "name", &b],
        )?;
        lab.exec(host, &["ip", "link", "set", &a, "up"])?;
        lab.exec(host, &["ip", "link", "set", &b, "up"])?;
    }
    let instances = (0..n)
        .map(|j| {
            let (k, vrid) = (j / PER_IFACE, j % PER_IFACE + 1);
            Instance {
                name: format!("VI_{k}_{vrid}"),
                interface: if k == 0 {
                    host.ifname.clone()
                } else {
                    format!("vb{k}")
                },
                vrid: vrid as u8,
                vips: vec![format!("2001:db8:100:{k:x}::{vrid:x}/128")],
                ..tpl.clone()
            }
        })
        .collect();
    Ok(KeepalivedConf {
        instances,
        ..Default::default()
    })
}

/// What one footprint run measured.
struct Footprint {
    /// RSS per process (KiB) at the end of the idle window.
    rss_idle: Vec<u64>,
    /// RSS per process (KiB) at the end of the scraped window.
    rss_scraped: Vec<u64>,
    /// CPU % over the startup, idle and scraped windows.
    cpu: [f64; 3],
    /// Scrapes answered in the scraped window (`/status`, `/metrics`).
    scrapes: (usize, usize),
}

fn footprint_one(kind: DaemonKind, n: usize, window: Duration) -> lab::Result<Footprint> {
    let lab = Lab::builder().hosts(1).build()?;
    let mut tpl = Instance::v3(200, Duration::from_secs(1));
    tpl.master = false;
    let spread = n > 255;
    let conf = if spread {
        spread_conf(&lab, n, &tpl)?
    } else {
        KeepalivedConf::many(n, &tpl)
    };
    let d = kind.start(&lab, lab.host(0), &conf)?;
    // Wait until it is master of everything (all VIPs bound).
    lab::wait::wait_for(Duration::from_secs(120), "all VIPs bound", || {
        if spread {
            lab.exec(lab.host(0), &["ip", "-o", "addr", "show"])
                .map(|out| out.matches("2001:db8:100:").count() >= n)
                .unwrap_or(false)
        } else {
            lab.addresses(lab.host(0))
                .map(|a| a.len() >= n + 3)
                .unwrap_or(false)
        }
    })?;
    let pids = d.pids();
    let cpu =
        |pids: &[u32]| -> Duration { pids.iter().filter_map(|&p| lab::proc::cpu_time(p)).sum() };
    let rss =
        |pids: &[u32]| -> Vec<u64> { pids.iter().filter_map(|&p| lab::proc::rss_kib(p)).collect() };
    // One window: CPU % of the daemon's processes while `during` runs until the deadline.
    let measure = |during: &mut dyn FnMut(Instant)| -> f64 {
        let c0 = cpu(&pids);
        let t0 = Instant::now();
        during(t0 + window);
        let now = Instant::now();
        if now < t0 + window {
            std::thread::sleep(t0 + window - now);
        }
        (cpu(&pids) - c0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0
    };
    let startup = measure(&mut |_| {});
    let idle = measure(&mut |_| {});
    let rss_idle = rss(&pids);
    let mut scrapes = (0, 0);
    let scraped = measure(&mut |end| {
        let (mut next_status, mut next_metrics) = (Instant::now(), Instant::now());
        while Instant::now() < end {
            let now = Instant::now();
            if now >= next_status {
                next_status += STATUS_EVERY;
                if matches!(d.status(), Some(Ok(_))) {
                    scrapes.0 += 1;
                }
            }
            if now >= next_metrics {
                next_metrics += METRICS_EVERY;
                if matches!(d.metrics(), Some(Ok(_))) {
                    scrapes.1 += 1;
                }
            }
            let wake = next_status.min(next_metrics).min(end);
            let now = Instant::now();
            if wake > now {
                std::thread::sleep(wake - now);
            }
        }
    });
    let rss_scraped = rss(&pids);
    drop(d);
    Ok(Footprint {
        rss_idle,
        rss_scraped,
        cpu: [startup, idle, scraped],
        scrapes,
    })
}

fn run_footprint(o: &Opts, csv: &mut String, table: &mut String) {
    let _ = writeln!(
        csv,
        "daemon,instances,rss_kib_total,rss_kib_per_process,rss_kib_scraped,cpu_startup_percent,cpu_idle_percent,cpu_scraped_percent,status_reads,metrics_reads,window_s"
    );
    let _ = writeln!(
        table,
        "\nFootprint (v3, 1 s adverts, master of all instances; over 255: IPv6, {PER_IFACE} per interface; CPU % over three {:?} windows: startup, idle, scraped = /status every {:?} and /metrics every {:?})\n{:<11} {:>9} {:>10} {:>22} {:>12} {:>8} {:>7} {:>8}",
        o.window,
        STATUS_EVERY,
        METRICS_EVERY,
        "daemon",
        "instances",
        "RSS MiB",
        "per process MiB",
        "RSS scraped",
        "startup",
        "idle",
        "scraped"
    );
    let mib = |kib: &[u64]| kib.iter().sum::<u64>() as f64 / 1024.0;
    for &n in &o.instances {
        for &kind in &o.daemons {
            match footprint_one(kind, n, o.window) {
                Ok(f) => {
                    let total: u64 = f.rss_idle.iter().sum();
                    let per: Vec<String> = f
                        .rss_idle
                        .iter()
                        .map(|r| format!("{:.1}", *r as f64 / 1024.0))
                        .collect();
                    let per_kib: Vec<String> = f.rss_idle.iter().map(u64::to_string).collect();
                    let [startup, idle, scraped] = f.cpu;
                    let _ = writeln!(
                        csv,
                        "{},{n},{total},{},{},{startup:.2},{idle:.2},{scraped:.2},{},{},{}",
                        kind.name(),
                        per_kib.join("+"),
                        f.rss_scraped.iter().sum::<u64>(),
                        f.scrapes.0,
                        f.scrapes.1,
                        o.window.as_secs()
                    );
                    let _ = writeln!(
                        table,
                        "{:<11} {n:>9} {:>10.1} {:>22} {:>12.1} {startup:>8.2} {idle:>7.2} {scraped:>8.2}",
                        kind.name(),
                        mib(&f.rss_idle),
                        per.join(" + "),
                        mib(&f.rss_scraped),
                    );
                }
                Err(e) => {
                    let first = e.to_string().lines().next().unwrap_or("").to_string();
                    let _ = writeln!(table, "{:<11} {n:>9} unavailable: {first}", kind.name());
                }
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    let o = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("failover-bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Err(reason) = lab::netns::privilege() {
        eprintln!("failover-bench: needs root for network namespaces ({reason})");
        return std::process::ExitCode::from(2);
    }
    if let Err(e) = std::fs::create_dir_all(&o.csv_dir) {
        eprintln!("failover-bench: cannot create {:?}: {e}", o.csv_dir);
        return std::process::ExitCode::from(1);
    }
    let mut table = String::new();
    let _ = writeln!(
        table,
        "kube-vrrp failover bench, {} ({} CPUs)",
        std::process::Command::new("date")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    if o.failover {
        let mut csv = String::new();
        run_failover(&o, &mut csv, &mut table);
        let p = o.csv_dir.join("failover.csv");
        if let Err(e) = std::fs::write(&p, csv) {
            eprintln!("failover-bench: write {p:?}: {e}");
        }
    }
    if o.footprint {
        let mut csv = String::new();
        run_footprint(&o, &mut csv, &mut table);
        let p = o.csv_dir.join("footprint.csv");
        if let Err(e) = std::fs::write(&p, csv) {
            eprintln!("failover-bench: write {p:?}: {e}");
        }
    }
    println!("{table}");
    println!("CSV files in {}", o.csv_dir.display());
    std::process::ExitCode::SUCCESS
}
