//! Advert cadence benchmark (not a test): how steady a new master's adverts are while it
//! binds 500 VIPs on takeover, keepalived and our agent side by side.
//!
//! Two hosts run one v3 instance at 100 ms adverts (priorities 200 and 150) holding 500 /32
//! VIPs: 198.51.100.1-254 and 203.0.113.1-246. An advert carries at most 255 addresses, so
//! the first 255 are `virtual_ipaddress` and the other 245 `virtual_ipaddress_excluded`. Host 1 is master; the node dies (daemon
//! SIGKILL plus link down) and host 2 takes over. A capture on the switch bridge
//! (`tcpdump --immediate-mode`) records host 2's adverts; the intervals between consecutive
//! adverts in the first 2 s after its first advert are compared with the advert interval.
//! Reported per daemon over all repetitions: median, p95 and max of |interval − advert| and
//! the longest interval. Host 1 is revived (and preempts back) between repetitions.
//!
//! Usage (root): `cargo run -p kube-vrrp-tests --bin advert-jitter -- [--reps N]
//! [--daemons keepalived,agent] [--interval-ms 100] [--window-ms 2000] [--csv DIR]`

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use lab::config::Instance;
use lab::scenario::{Cluster, Variant};
use lab::{DaemonKind, KeepalivedConf};

/// The number of VIPs in the instance.
const VIPS: usize = 500;

struct Opts {
    reps: usize,
    daemons: Vec<DaemonKind>,
    interval: Duration,
    window: Duration,
    csv_dir: PathBuf,
}

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        reps: 5,
        daemons: vec![DaemonKind::Keepalived, DaemonKind::Agent],
        interval: Duration::from_millis(100),
        window: Duration::from_millis(2000),
        csv_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let millis = |name: &str, v: String| -> Result<Duration, String> {
            match v.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Duration::from_millis(n)),
                _ => Err(format!("{name}: {v:?} is not a positive number of ms")),
            }
        };
        match a.as_str() {
            "--reps" => o.reps = val("--reps")?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--daemons" => {
                o.daemons = val("--daemons")?
                    .split(',')
                    .map(|d| match d {
                        "keepalived" => Ok(DaemonKind::Keepalived),
                        "agent" | "kube-vrrp" => Ok(DaemonKind::Agent),
                        other => Err(format!("--daemons: unknown {other:?}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--interval-ms" => o.interval = millis("--interval-ms", val("--interval-ms")?)?,
            "--window-ms" => o.window = millis("--window-ms", val("--window-ms")?)?,
            "--csv" => o.csv_dir = PathBuf::from(val("--csv")?),
            "-h" | "--help" => {
                println!("{}", lab::module_doc(include_str!("jitter.rs")));
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(o)
}

/// The 500 documentation /32s.
fn bulk_vips() -> Vec<String> {
    (1..=254)
        .map(|i| format!("198.51.100.{i}/32"))
        .chain((1..=VIPS - 254).map(|i| format!("203.0.113.{i}/32")))
        .collect()
}

/// The most addresses one advert can carry (8-bit count); the rest of the 500 go into
/// `virtual_ipaddress_excluded`, which both daemons bind on takeover like the others.
const IN_ADVERT: usize = 255;

/// The instance (describing the advertised part) and the configuration text with all 500.
fn conf(priority: u8, interval: Duration) -> (KeepalivedConf, String) {
    let all = bulk_vips();
    let mut i = Instance::v3(priority, interval);
    i.master = false;
    i.vips = all[..IN_ADVERT].to_vec();
    let conf = KeepalivedConf::single(i);
    let mut text = conf.render();
    let end = text.trim_end().rfind('}').unwrap_or(text.len());
    let mut excluded = String::from("    virtual_ipaddress_excluded {\n");
    for v in &all[IN_ADVERT..] {
        let _ = writeln!(excluded, "        {v}");
    }
    excluded.push_str("    }\n");
    text.insert_str(end, &excluded);
    (conf, text)
}

fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Intervals (ms) between host 2's consecutive adverts in the window after its first
/// advert, one list per repetition.
fn series(kind: DaemonKind, o: &Opts) -> lab::Result<Vec<Vec<f64>>> {
    let mut v = Variant::v3(o.interval);
    v.name = "v3 IPv4, 500 VIPs";
    // The holder checks look at the first bulk VIP.
    v.vip = "198.51.100.1/32";
    let (c1, t1) = conf(200, o.interval);
    let (c2, t2) = conf(150, o.interval);
    let mut c = Cluster::with_confs(&[kind, kind], v, vec![c1, c2])?;
    c.conf_text = vec![Some(t1), Some(t2)];
    c.start_all()?;
    let bound = c.variant.takeover_bound(150) + Duration::from_secs(10);
    c.wait_master(0, bound)?;
    let mac = c.lab.host(1).mac.clone();
    let window = o.window.as_secs_f64();
    let mut out = Vec::new();
    for rep in 0..o.reps {
        let mut cap = c.lab.capture_switch("ip proto 112")?;
        let epoch0 = epoch_now();
        c.kill_node(0)?;
        // Stay quiet while the successor takes over and binds its VIPs: no polling of
        // `ip addr` or tshark during the measured window (both cost CPU on 2 shared cores).
        std::thread::sleep(
            c.variant.master_down_interval(150) + o.window + Duration::from_millis(500),
        );
        c.wait_master(1, bound)?;
        cap.stop()?;
        let adverts: Vec<f64> = cap
            .adverts()?
            .into_iter()
            .filter(|a| a.eth_src == mac && a.time >= epoch0)
            .map(|a| a.time)
            .collect();
        if !adverts
            .first()
            .is_some_and(|&t0| adverts.iter().any(|&t| t > t0 + window))
        {
            return Err(lab::LabError::Timeout {
                what: format!(
                    "{} adverts from the successor covering {window} s",
                    adverts.len()
                ),
                after: o.window,
            });
        }
        let t0 = adverts[0];
        let times: Vec<f64> = adverts.into_iter().filter(|&t| t <= t0 + window).collect();
        let intervals: Vec<f64> = times.windows(2).map(|w| (w[1] - w[0]) * 1000.0).collect();
        eprintln!(
            "{} rep {rep}: {} adverts in the window, longest interval {:.1} ms",
            kind.name(),
            times.len(),
            intervals.iter().copied().fold(0.0, f64::max)
        );
        out.push(intervals);
        c.revive(0)?;
        c.wait_master(0, bound)?;
    }
    Ok(out)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn main() -> std::process::ExitCode {
    let o = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("advert-jitter: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Err(reason) = lab::netns::privilege() {
        eprintln!("advert-jitter: needs root for network namespaces ({reason})");
        return std::process::ExitCode::from(2);
    }
    if let Err(e) = std::fs::create_dir_all(&o.csv_dir) {
        eprintln!("advert-jitter: cannot create {:?}: {e}", o.csv_dir);
        return std::process::ExitCode::from(1);
    }
    let iv = o.interval.as_secs_f64() * 1000.0;
    let mut csv = String::from("daemon,rep,seq,interval_ms,deviation_ms\n");
    let mut table = String::new();
    let _ = writeln!(
        table,
        "\nAdvert cadence after takeover with {VIPS} VIPs ({iv:.0} ms adverts, first {} ms, N = {} takeovers)\n{:<11} {:>9} {:>9} {:>9} {:>9} {:>12}",
        o.window.as_millis(),
        o.reps,
        "daemon",
        "intervals",
        "|dev| med",
        "|dev| p95",
        "|dev| max",
        "longest (ms)"
    );
    let mut failed = false;
    for &kind in &o.daemons {
        match series(kind, &o) {
            Ok(reps) => {
                let mut devs = Vec::new();
                let mut longest: f64 = 0.0;
                for (r, ints) in reps.iter().enumerate() {
                    for (s, &x) in ints.iter().enumerate() {
                        let _ = writeln!(csv, "{},{r},{s},{x:.2},{:.2}", kind.name(), x - iv);
                        devs.push((x - iv).abs());
                        longest = longest.max(x);
                    }
                }
                devs.sort_by(|a, b| a.total_cmp(b));
                let _ = writeln!(
                    table,
                    "{:<11} {:>9} {:>9.1} {:>9.1} {:>9.1} {longest:>12.1}",
                    kind.name(),
                    devs.len(),
                    percentile(&devs, 0.5),
                    percentile(&devs, 0.95),
                    devs.last().copied().unwrap_or(f64::NAN)
                );
            }
            Err(e) => {
                failed = true;
                let first = e.to_string().lines().next().unwrap_or("").to_string();
                let _ = writeln!(table, "{:<11} unavailable: {first}", kind.name());
                eprintln!("{}: {e}", kind.name());
            }
        }
    }
    let p = o.csv_dir.join("jitter.csv");
    if let Err(e) = std::fs::write(&p, csv) {
        eprintln!("advert-jitter: write {p:?}: {e}");
    }
    println!("{table}");
    println!("CSV in {}", p.display());
    if failed {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    }
}
