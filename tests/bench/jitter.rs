//! Bulk takeover benchmark (not a test): how fast a new master binds and announces many VIPs,
//! and how steady its adverts stay meanwhile, keepalived and our agent side by side.
//!
//! Two hosts run one v3 instance at 100 ms adverts (priorities 200 and 150) holding `--vips`
//! addresses (default 500 IPv4 /32s: 198.51.100.1-254, then 203.0.113.1-254; with `--ipv6`,
//! /128s from 2001:db8:b::/64, up to 10,000). An advert carries at most 255 addresses, so the
//! first 255 (IPv6: 89, what fits a 1500-byte MTU) are `virtual_ipaddress` and the rest `virtual_ipaddress_excluded`. Host 1 is
//! master; the node dies (daemon SIGKILL plus link down) and host 2 takes over. A capture on
//! the switch bridge (`tcpdump --immediate-mode`) records host 2's adverts and its gratuitous
//! ARPs or unsolicited NAs. Reported per daemon over all repetitions:
//! - cadence: median, p95 and max of |interval − advert| between consecutive adverts in the
//!   first `--window-ms` after its first advert, and the longest interval;
//! - bulk: how many of the VIPs were announced, and the time from the successor's first advert
//!   until every VIP had been announced at least once (an address is announced only after it
//!   is bound, so this bounds "all bound and announced"), median and max.
//!
//! Every repetition runs in a fresh lab.
//!
//! Usage (root): `cargo run -p kube-vrrp-tests --bin advert-jitter -- [--reps N]
//! [--daemons keepalived,agent] [--vips N] [--ipv6] [--interval-ms 100] [--window-ms 2000]
//! [--csv DIR]`

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use lab::config::Instance;
use lab::scenario::{Cluster, Variant};
use lab::{DaemonKind, KeepalivedConf};

struct Opts {
    reps: usize,
    vips: usize,
    ipv6: bool,
    daemons: Vec<DaemonKind>,
    interval: Duration,
    window: Duration,
    csv_dir: PathBuf,
}

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        reps: 5,
        vips: 500,
        ipv6: false,
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
            "--vips" => o.vips = val("--vips")?.parse().map_err(|e| format!("--vips: {e}"))?,
            "--ipv6" => o.ipv6 = true,
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
    let most = if o.ipv6 { MAX_VIPS6 } else { MAX_VIPS4 };
    if o.vips == 0 || o.vips > most {
        return Err(format!(
            "--vips: {} is outside 1..={most} (documentation addresses available{})",
            o.vips,
            if o.ipv6 { "" } else { "; use --ipv6 for more" }
        ));
    }
    Ok(o)
}

/// Most IPv4 VIPs: 198.51.100.0/24 and 203.0.113.0/24 (192.0.2.0/24 holds the lab's hosts).
const MAX_VIPS4: usize = 2 * 254;
/// Most IPv6 VIPs (2001:db8:b::/64; the lab's hosts are in 2001:db8::/64).
const MAX_VIPS6: usize = 10_000;

/// `n` documentation host addresses.
fn bulk_vips(n: usize, ipv6: bool) -> Vec<String> {
    if ipv6 {
        return (1..=n).map(|i| format!("2001:db8:b::{i:x}/128")).collect();
    }
    (1..=254)
        .map(|i| format!("198.51.100.{i}/32"))
        .chain((1..=254).map(|i| format!("203.0.113.{i}/32")))
        .take(n)
        .collect()
}

/// The most addresses one advert can carry at the standard MTU: 255 IPv4 (the 8-bit count),
/// 89 IPv6 (1500 bytes); the rest go into `virtual_ipaddress_excluded`, which both daemons
/// bind and announce on takeover like the others.
fn in_advert(ipv6: bool) -> usize {
    if ipv6 { 89 } else { 255 }
}

/// The instance (describing the advertised part) and the configuration text with all VIPs.
fn conf(priority: u8, o: &Opts) -> (KeepalivedConf, String) {
    let all = bulk_vips(o.vips, o.ipv6);
    let mut i = if o.ipv6 {
        Instance::v3_ipv6(priority, o.interval)
    } else {
        Instance::v3(priority, o.interval)
    };
    i.master = false;
    let advertised = in_advert(o.ipv6).min(all.len());
    i.vips = all[..advertised].to_vec();
    let conf = KeepalivedConf::single(i);
    let mut text = conf.render();
    let end = text.trim_end().rfind('}').unwrap_or(text.len());
    if all.len() > advertised {
        let mut excluded = String::from("    virtual_ipaddress_excluded {\n");
        for v in &all[advertised..] {
            let _ = writeln!(excluded, "        {v}");
        }
        excluded.push_str("    }\n");
        text.insert_str(end, &excluded);
    }
    (conf, text)
}

/// One takeover as seen on the wire.
struct Takeover {
    /// Intervals (ms) between the successor's consecutive adverts in the window.
    intervals: Vec<f64>,
    /// Distinct VIPs the successor announced (GARP or unsolicited NA).
    announced: usize,
    /// From its first advert until every VIP had been announced once (ms); `None` when some
    /// VIP was never announced in the capture.
    all_announced_ms: Option<f64>,
    /// Packets tcpdump reported as dropped (a non-zero count makes `announced` a lower bound).
    dropped: u64,
}

fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Host 2's takeovers, one per repetition.
fn series(kind: DaemonKind, o: &Opts) -> lab::Result<Vec<Takeover>> {
    let mut v = if o.ipv6 {
        Variant::v3_ipv6(o.interval)
    } else {
        Variant::v3(o.interval)
    };
    v.name = if o.ipv6 {
        "v3 IPv6, bulk VIPs"
    } else {
        "v3 IPv4, bulk VIPs"
    };
    // The holder checks look at the first bulk VIP.
    let first = bulk_vips(1, o.ipv6).remove(0);
    v.vip = Box::leak(first.into_boxed_str());
    let (c1, t1) = conf(200, o);
    let (c2, t2) = conf(150, o);
    let window = o.window.as_secs_f64();
    let mut out = Vec::new();
    for rep in 0..o.reps {
        // A fresh lab per repetition: a keepalived restarted on a revived IPv6 link can stay
        // in FAULT ("no IPv6 address for interface"), which is not what is measured here.
        let mut c = Cluster::with_confs(&[kind, kind], v.clone(), vec![c1.clone(), c2.clone()])?;
        c.conf_text = vec![Some(t1.clone()), Some(t2.clone())];
        c.start_all()?;
        let bound = c.variant.takeover_bound(150) + Duration::from_secs(10);
        c.wait_master(0, bound)?;
        let mac = c.lab.host(1).mac.clone();
        let filter = if o.ipv6 {
            "(ip6 proto 112) or (icmp6 and ip6[40] == 136)"
        } else {
            "(ip proto 112) or arp"
        };
        let mut cap = c.lab.capture_switch(filter)?;
        let epoch0 = epoch_now();
        c.kill_node(0)?;
        // Stay quiet while the successor takes over and binds its VIPs: no polling of
        // `ip addr` or tshark during the measured window (both cost CPU on 2 shared cores).
        std::thread::sleep(
            c.variant.master_down_interval(150) + o.window + Duration::from_millis(500),
        );
        c.wait_master(1, bound)?;
        cap.stop()?;
        let dropped = cap.dropped();
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
        let announces = if o.ipv6 {
            cap.unsolicited_nas()?
        } else {
            cap.garps()?
        };
        // The first announcement of each VIP.
        let mut first_seen = std::collections::HashMap::new();
        for a in announces
            .into_iter()
            .filter(|a| a.eth_src == mac && a.time >= epoch0)
        {
            first_seen
                .entry(a.addr)
                .and_modify(|t: &mut f64| *t = t.min(a.time))
                .or_insert(a.time);
        }
        let announced = first_seen.len();
        let all_announced_ms = (announced == o.vips).then(|| {
            let last = first_seen.values().copied().fold(f64::MIN, f64::max);
            (last - t0) * 1000.0
        });
        eprintln!(
            "{} rep {rep}: {} adverts in the window, longest interval {:.1} ms; {announced}/{} VIPs announced, all after {}{}",
            kind.name(),
            times.len(),
            intervals.iter().copied().fold(0.0, f64::max),
            o.vips,
            all_announced_ms.map_or("-".to_string(), |ms| format!("{ms:.1} ms")),
            if dropped > 0 {
                format!(" ({dropped} packets dropped by the capture)")
            } else {
                String::new()
            },
        );
        out.push(Takeover {
            intervals,
            announced,
            all_announced_ms,
            dropped,
        });
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
    let mut bulk_csv = String::from("daemon,rep,vips,announced,all_announced_ms,dropped\n");
    let mut table = String::new();
    let _ = writeln!(
        table,
        "\nTakeover with {} {} VIPs ({iv:.0} ms adverts, cadence over the first {} ms, N = {} takeovers)\n{:<11} {:>9} {:>9} {:>9} {:>9} {:>12} {:>11} {:>14} {:>14}",
        o.vips,
        if o.ipv6 { "IPv6" } else { "IPv4" },
        o.window.as_millis(),
        o.reps,
        "daemon",
        "intervals",
        "|dev| med",
        "|dev| p95",
        "|dev| max",
        "longest (ms)",
        "announced",
        "all med (ms)",
        "all max (ms)"
    );
    let mut failed = false;
    for &kind in &o.daemons {
        match series(kind, &o) {
            Ok(reps) => {
                let mut devs = Vec::new();
                let mut longest: f64 = 0.0;
                let mut all_ms = Vec::new();
                let mut fewest = o.vips;
                for (r, t) in reps.iter().enumerate() {
                    let _ = writeln!(
                        bulk_csv,
                        "{},{r},{},{},{},{}",
                        kind.name(),
                        o.vips,
                        t.announced,
                        t.all_announced_ms
                            .map_or(String::new(), |ms| format!("{ms:.2}")),
                        t.dropped
                    );
                    fewest = fewest.min(t.announced);
                    all_ms.extend(t.all_announced_ms);
                    for (s, &x) in t.intervals.iter().enumerate() {
                        let _ = writeln!(csv, "{},{r},{s},{x:.2},{:.2}", kind.name(), x - iv);
                        devs.push((x - iv).abs());
                        longest = longest.max(x);
                    }
                }
                devs.sort_by(|a, b| a.total_cmp(b));
                all_ms.sort_by(|a, b| a.total_cmp(b));
                let _ = writeln!(
                    table,
                    "{:<11} {:>9} {:>9.1} {:>9.1} {:>9.1} {longest:>12.1} {:>11} {:>14.1} {:>14.1}",
                    kind.name(),
                    devs.len(),
                    percentile(&devs, 0.5),
                    percentile(&devs, 0.95),
                    devs.last().copied().unwrap_or(f64::NAN),
                    format!("{fewest}/{}", o.vips),
                    percentile(&all_ms, 0.5),
                    all_ms.last().copied().unwrap_or(f64::NAN)
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
    let pb = o.csv_dir.join("bulk.csv");
    if let Err(e) = std::fs::write(&pb, bulk_csv) {
        eprintln!("advert-jitter: write {pb:?}: {e}");
    }
    println!("{table}");
    println!("CSV in {} and {}", p.display(), pb.display());
    if failed {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    }
}
