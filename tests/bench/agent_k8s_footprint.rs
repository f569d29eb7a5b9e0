//! Agent footprint in Kubernetes mode (not a test): RSS and CPU of `kube-vrrp-agent run` as the
//! master of 255 VirtualIPs, with its VRRPNode watch, status writes and liveness Lease, next to
//! `kube-vrrp-agent standalone` running the same 255 instances on the same host in the same run.
//!
//! The cluster is the `lab::kubelab` one on a real API server (`KUBEBUILDER_ASSETS`, as the
//! `api_*` tests; without it the bench prints the SKIPPED line and exits 0): three simulated
//! Nodes, three agents in network namespaces reaching the API through a forwarder, the
//! operator. 255 VirtualIPs (VRIDs 1-255 on the host's `eth0`, VRRPv3, 1 s adverts, priority
//! 200, one documentation address each: 198.51.100.1-254/32 and 203.0.113.1/32) select only
//! node n1 (`nodeSelector` on `kubernetes.io/hostname`), so n1's agent is master of all of them
//! and nothing else runs VRRP. n1's agent authenticates as its own service account
//! (cluster-admin), and the API server's audit log records that user's requests only: the
//! agent's API traffic per window, counted by the server, not by the agent.
//!
//! Each round: (kube) wait until all 255 VIPs are bound on n1 and every VirtualIP's status names
//! n1 as master, then three windows of `--window-secs` in a row, as `failover-bench`'s
//! footprint: `settle` (right after), `idle` (nothing polls the agent) and `scraped` (`/status`
//! every second and `/metrics` every 5 s). RSS (VmRSS) at the end of the idle and scraped
//! windows, CPU % of the process over each window, and the agent's API requests in each
//! window by verb and resource. Then the agent gets SIGTERM (it must exit 0 and release the
//! VIPs), `kube-vrrp-agent standalone --node-name n1` starts on the same host with the same 255
//! VirtualIPs as a YAML file (without the nodeSelector, which standalone ignores), and once all
//! are bound the same windows are measured. The standalone agent is stopped the same way and
//! the next round starts the Kubernetes-mode agent again.
//!
//! Usage (root): `cargo build --release -p kube-vrrp-agent -p kube-vrrp-operator &&
//! KUBE_VRRP_AGENT_BIN=target/release/kube-vrrp-agent
//! KUBE_VRRP_OPERATOR_BIN=target/release/kube-vrrp-operator cargo run -p kube-vrrp-tests --bin
//! agent-k8s-footprint -- [--window-secs 10] [--rounds 2] [--csv DIR]`

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lab::apiserver::{ApiServer, ApiServerOptions, KUBECTL_POLL, wait_every};
use lab::kubelab::{KubeLab, LEASE_NS, say};
use lab::{Agent, VrrpDaemon};
use serde_json::{Value, json};

/// VirtualIPs (one VRID each on one interface).
const INSTANCES: usize = 255;
/// How often the scraped window reads `/status` and `/metrics` (as `failover-bench`).
const STATUS_EVERY: Duration = Duration::from_secs(1);
const METRICS_EVERY: Duration = Duration::from_secs(5);
/// The service account n1's agent runs as (in [`LEASE_NS`]).
const AGENT_SA: &str = "agent-n1";
/// Label on the bench's VirtualIPs.
const BENCH_LABEL: &str = "bench.kubevrrp.io/footprint";
/// How long binding 255 VIPs and their status may take.
const BIND_TIMEOUT: Duration = Duration::from_secs(180);

struct Opts {
    window: Duration,
    rounds: usize,
    csv_dir: Option<PathBuf>,
}

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        window: Duration::from_secs(10),
        rounds: 2,
        csv_dir: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--window-secs" => {
                o.window = match val("--window-secs")?.parse::<u64>() {
                    Ok(n) if (2..=3600).contains(&n) => Duration::from_secs(n),
                    _ => return Err("--window-secs: a number of seconds, 2-3600".into()),
                }
            }
            "--rounds" => {
                o.rounds = match val("--rounds")?.parse::<usize>() {
                    Ok(n) if (1..=20).contains(&n) => n,
                    _ => return Err("--rounds: a number 1-20".into()),
                }
            }
            "--csv" => o.csv_dir = Some(PathBuf::from(val("--csv")?)),
            "-h" | "--help" => {
                println!(
                    "{}",
                    lab::module_doc(include_str!("agent_k8s_footprint.rs"))
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(o)
}

/// The address of VRID `vrid` (1-255), as `KeepalivedConf::many`.
fn vip_of(vrid: usize) -> String {
    if vrid <= 254 {
        format!("198.51.100.{vrid}/32")
    } else {
        format!("203.0.113.{}/32", vrid - 254)
    }
}

fn is_bench_vip(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (o[0], o[1], o[2]) == (198, 51, 100) || (o[0], o[1], o[2]) == (203, 0, 113)
        }
        IpAddr::V6(_) => false,
    }
}

/// VirtualIP `fp-NNN` for VRID `vrid`; `only_n1` adds the nodeSelector (Kubernetes mode).
fn virtual_ip(vrid: usize, iface: &str, only_n1: bool) -> Value {
    let mut v = json!({
        "apiVersion": "kubevrrp.io/v1alpha1",
        "kind": "VirtualIP",
        "metadata": {
            "name": format!("fp-{vrid:03}"),
            "namespace": "default",
            "labels": {BENCH_LABEL: "1"},
        },
        "spec": {
            "virtualRouterID": vrid,
            "version": 3,
            "interface": iface,
            "advertInterval": "1s",
            "priority": 200,
            "addresses": [vip_of(vrid)],
        }
    });
    if only_n1 {
        v["spec"]["nodeSelector"] = json!({"matchLabels": {"kubernetes.io/hostname": "n1"}});
    }
    v
}

fn standalone_yaml(iface: &str) -> String {
    (1..=INSTANCES)
        .map(|vrid| {
            serde_yaml::to_string(&virtual_ip(vrid, iface, false)).expect("VirtualIP as YAML")
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The audit policy: Metadata for n1's agent's service account, nothing for anyone else.
fn audit_policy() -> String {
    format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [\"RequestReceived\"]\nrules:\n  - level: Metadata\n    users: [\"system:serviceaccount:{LEASE_NS}:{AGENT_SA}\"]\n  - level: None\n"
    )
}

/// One request of the agent, from the audit log.
struct ApiCall {
    at: DateTime<Utc>,
    verb: String,
    /// `resource[/subresource]`.
    resource: String,
}

/// Every request in the audit log (watches log two stages; one call per audit ID).
fn agent_calls(log: &Path) -> Vec<ApiCall> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(ev) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let id = ev["auditID"].as_str().unwrap_or("").to_string();
        if !seen.insert(id) {
            continue;
        }
        let Some(at) = ev["requestReceivedTimestamp"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        else {
            continue;
        };
        let obj = &ev["objectRef"];
        let mut resource = obj["resource"].as_str().unwrap_or("-").to_string();
        if let Some(sub) = obj["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        out.push(ApiCall {
            at: at.with_timezone(&Utc),
            verb: ev["verb"].as_str().unwrap_or("?").to_string(),
            resource,
        });
    }
    out
}

fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

/// The agent's requests received in `[from, to)`: `verb resource` → count.
fn calls_in(calls: &[ApiCall], from: DateTime<Utc>, to: DateTime<Utc>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for c in calls.iter().filter(|c| c.at >= from && c.at < to) {
        *m.entry(format!("{} {}", c.verb, c.resource)).or_insert(0) += 1;
    }
    m
}

fn writes(m: &BTreeMap<String, usize>) -> usize {
    m.iter()
        .filter(|(k, _)| k.split(' ').next().is_some_and(is_write))
        .map(|(_, n)| n)
        .sum()
}

fn lease_writes(m: &BTreeMap<String, usize>) -> usize {
    m.iter()
        .filter(|(k, _)| k.ends_with(" leases") && k.split(' ').next().is_some_and(is_write))
        .map(|(_, n)| n)
        .sum()
}

fn describe(m: &BTreeMap<String, usize>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Three windows in a row on one process.
struct Windows {
    /// CPU % over the settle, idle and scraped windows.
    cpu: [f64; 3],
    /// (start, end) wall-clock time of each window.
    spans: [(DateTime<Utc>, DateTime<Utc>); 3],
    rss_idle_kib: u64,
    rss_scraped_kib: u64,
    /// Scrapes answered in the scraped window (`/status`, `/metrics`).
    scrapes: (usize, usize),
}

fn measure(pid: u32, netns: &str, addr: SocketAddr, window: Duration) -> Windows {
    let cpu = || lab::proc::cpu_time(pid).expect("the agent's /proc/PID/stat");
    let rss = || lab::proc::rss_kib(pid).expect("the agent's VmRSS");
    let one = |during: &mut dyn FnMut(Instant)| -> (f64, (DateTime<Utc>, DateTime<Utc>)) {
        let c0 = cpu();
        let (t0, w0) = (Instant::now(), Utc::now());
        during(t0 + window);
        let now = Instant::now();
        if now < t0 + window {
            // The measurement window itself.
            std::thread::sleep(t0 + window - now);
        }
        let c1 = cpu();
        let (el, w1) = (t0.elapsed(), Utc::now());
        ((c1 - c0).as_secs_f64() / el.as_secs_f64() * 100.0, (w0, w1))
    };
    let (settle, s0) = one(&mut |_| {});
    let (idle, s1) = one(&mut |_| {});
    let rss_idle_kib = rss();
    let mut scrapes = (0, 0);
    let (scraped, s2) = one(&mut |end| {
        let (mut next_status, mut next_metrics) = (Instant::now(), Instant::now());
        while Instant::now() < end {
            let now = Instant::now();
            let get = |path: &str| {
                lab::http::get(netns, addr, path, Duration::from_secs(2))
                    .is_ok_and(|(code, _)| code == 200)
            };
            if now >= next_status {
                next_status += STATUS_EVERY;
                scrapes.0 += usize::from(get("/status"));
            }
            if now >= next_metrics {
                next_metrics += METRICS_EVERY;
                scrapes.1 += usize::from(get("/metrics"));
            }
            let wake = next_status.min(next_metrics).min(end);
            let now = Instant::now();
            if wake > now {
                // Pacing of the scrapes inside the measurement window.
                std::thread::sleep(wake - now);
            }
        }
    });
    Windows {
        cpu: [settle, idle, scraped],
        spans: [s0, s1, s2],
        rss_idle_kib,
        rss_scraped_kib: rss(),
        scrapes,
    }
}

/// Bench VIPs bound on n1's interface now.
fn bound(env: &KubeLab) -> usize {
    env.lab
        .addresses(env.lab.host(0))
        .map(|a| a.iter().filter(|a| is_bench_vip(a)).count())
        .unwrap_or(0)
}

fn wait_bound(env: &KubeLab, want: usize, what: &str) {
    let r = lab::wait_until(BIND_TIMEOUT, what, || (bound(env) == want).then_some(()));
    if let Err(e) = r {
        env.fail(&format!("{e} ({} bound)", bound(env)));
    }
}

/// How many bench VirtualIPs have a status naming n1 as the single master.
fn statuses_on_n1(env: &KubeLab) -> Option<usize> {
    let out = env
        .api
        .kubectl(&[
            "get",
            "virtualips",
            "-n",
            "default",
            "-l",
            BENCH_LABEL,
            "-o",
            "json",
        ])
        .ok()?;
    let v: Value = serde_json::from_str(&out).ok()?;
    Some(
        v["items"]
            .as_array()?
            .iter()
            .filter(|i| {
                lab::kubelab::master(&i["status"]) == "n1"
                    && lab::kubelab::phase(&i["status"]) == "Active"
            })
            .count(),
    )
}

/// One mode's measurements in one round.
struct Sample {
    mode: &'static str,
    round: usize,
    w: Windows,
    /// Agent API requests per window (Kubernetes mode).
    api: Option<[BTreeMap<String, usize>; 3]>,
    /// From starting the agent to all VIPs bound (and, in Kubernetes mode, all statuses).
    ready: Duration,
}

fn sigterm_agent(env: &mut KubeLab) {
    let g = env.agents[0].take().expect("n1's agent runs");
    g.signal(libc::SIGTERM).expect("SIGTERM n1's agent");
    let st = g
        .wait_exit(Duration::from_secs(30))
        .expect("n1's agent exits after SIGTERM");
    assert!(
        st.success(),
        "n1's agent exited with {st} after SIGTERM:\n{}",
        lab::apiserver::tail(&env.agent_logs[0], 30)
    );
}

fn kube_round(env: &mut KubeLab, audit_log: &Path, round: usize, window: Duration) -> Sample {
    let t = Instant::now();
    if env.agents[0].is_none() {
        env.start_agent(0);
    }
    wait_bound(env, INSTANCES, "all 255 VIPs bound on n1 (Kubernetes mode)");
    let r = wait_every(
        KUBECTL_POLL,
        BIND_TIMEOUT,
        "every VirtualIP's status naming n1 master",
        || (statuses_on_n1(env) == Some(INSTANCES)).then_some(()),
    );
    if let Err(e) = r {
        env.fail(&format!("{e} ({:?} of {INSTANCES})", statuses_on_n1(env)));
    }
    let ready = t.elapsed();
    say(&format!(
        "round {round}: Kubernetes mode ready in {:.1} s (255 bound, 255 statuses Active on n1)",
        ready.as_secs_f64()
    ));
    let pid = env.agents[0].as_ref().expect("n1's agent runs").pid();
    let addr: SocketAddr = env.agent_metrics[0]
        .as_deref()
        .and_then(|a| a.parse().ok())
        .expect("n1's agent metrics address");
    let netns = env.lab.host(0).netns.clone();
    let w = measure(pid, &netns, addr, window);
    // The audit log has every request received up to the last window's end once it holds one
    // received after it (the Lease renews every 2 s).
    let end = w.spans[2].1;
    let r = lab::wait_until(
        Duration::from_secs(15),
        "audit log past the windows",
        || {
            agent_calls(audit_log)
                .iter()
                .any(|c| c.at >= end)
                .then_some(())
        },
    );
    if let Err(e) = r {
        env.fail(&e.to_string());
    }
    let calls = agent_calls(audit_log);
    let api = w.spans.map(|(a, b)| calls_in(&calls, a, b));
    Sample {
        mode: "kubernetes",
        round,
        w,
        api: Some(api),
        ready,
    }
}

fn standalone_round(env: &mut KubeLab, yaml: &str, round: usize, window: Duration) -> Sample {
    let t = Instant::now();
    let bin = lab::daemon::agent_bin();
    let host = env.lab.host(0).clone();
    let mut agent = Agent::start_with_args(
        &env.lab,
        &host,
        yaml,
        &bin,
        &["--node-name".into(), "n1".into()],
    )
    .unwrap_or_else(|e| env.fail(&format!("standalone agent: {e}")));
    wait_bound(env, INSTANCES, "all 255 VIPs bound on n1 (standalone)");
    let ready = t.elapsed();
    say(&format!(
        "round {round}: standalone ready in {:.1} s (255 bound)",
        ready.as_secs_f64()
    ));
    let addr: SocketAddr = lab::daemon::AGENT_METRICS
        .parse()
        .expect("AGENT_METRICS is an address");
    let w = measure(agent.pid(), &host.netns, addr, window);
    if let Err(e) = agent.stop() {
        env.fail(&format!("stopping the standalone agent: {e}"));
    }
    Sample {
        mode: "standalone",
        round,
        w,
        api: None,
        ready,
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn main() -> std::process::ExitCode {
    let o = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("agent-k8s-footprint: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if std::env::var_os(lab::apiserver::ASSETS_ENV).is_none()
        || lab::apiserver::Assets::find().is_err()
    {
        println!("{}", lab::apiserver::SKIP_LINE);
        return std::process::ExitCode::SUCCESS;
    }
    if !lab::can_run("agent-k8s-footprint") {
        return std::process::ExitCode::from(2);
    }
    let audit_dir = tempfile::Builder::new()
        .prefix("kvfoot-")
        .tempdir()
        .expect("temp dir");
    let policy = audit_dir.path().join("audit-policy.yaml");
    std::fs::write(&policy, audit_policy()).expect("write the audit policy");
    let audit_log = audit_dir.path().join("audit.log");
    let api = match ApiServer::start_with(ApiServerOptions {
        apiserver_args: vec![
            format!("--audit-policy-file={}", policy.display()),
            format!("--audit-log-path={}", audit_log.display()),
        ],
        ..Default::default()
    }) {
        Ok(Some(api)) => api,
        Ok(None) => {
            println!("{}", lab::apiserver::SKIP_LINE);
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("agent-k8s-footprint: starting the API server: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let mut env = KubeLab::setup(api);

    // n1's agent again, as its own service account (so the audit log has only its requests).
    let token = env
        .api
        .service_account_token(LEASE_NS, AGENT_SA, "24h")
        .expect("service account token");
    env.api
        .kubectl_client()
        .apply(&json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "kvfoot-agent-n1"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": AGENT_SA, "namespace": LEASE_NS}],
        }))
        .expect("bind the agent's service account");
    let kubeconfig = env
        .api
        .write_token_kubeconfig(AGENT_SA, &token)
        .expect("agent kubeconfig");
    env.agent_kubeconfigs[0] = Some(kubeconfig);
    env.kill_agent(0);
    env.start_agent(0);
    env.wait_agent_lease(0);

    let iface = env.lab.host(0).ifname.clone();
    let list = json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": (1..=INSTANCES).map(|v| virtual_ip(v, &iface, true)).collect::<Vec<_>>(),
    });
    env.api
        .kubectl_client()
        .run_stdin(&["apply", "-f", "-"], &list.to_string())
        .expect("apply 255 VirtualIPs");
    let yaml = standalone_yaml(&iface);

    let mut samples = Vec::new();
    for round in 1..=o.rounds {
        samples.push(kube_round(&mut env, &audit_log, round, o.window));
        sigterm_agent(&mut env);
        wait_bound(&env, 0, "n1's VIPs released after SIGTERM");
        samples.push(standalone_round(&mut env, &yaml, round, o.window));
        wait_bound(&env, 0, "the standalone agent's VIPs released");
    }

    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut table = String::new();
    let _ = writeln!(
        table,
        "\nAgent footprint, 255 instances (v3, 1 s adverts, master of all), {} ({cpus} CPUs shared with other work; load average {})\nCPU % over {:?} windows: settle, idle, scraped (/status every {:?}, /metrics every {:?})\n{:<11} {:>5} {:>8} {:>11} {:>7} {:>6} {:>8} {:>9}  agent API requests (idle window)",
        Utc::now().format("%Y-%m-%d %H:%M UTC"),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        o.window,
        STATUS_EVERY,
        METRICS_EVERY,
        "mode",
        "round",
        "RSS MiB",
        "RSS scraped",
        "settle",
        "idle",
        "scraped",
        "ready s",
    );
    let mut csv = String::from(
        "mode,round,instances,rss_kib_idle,rss_kib_scraped,cpu_settle_percent,cpu_idle_percent,cpu_scraped_percent,status_reads,metrics_reads,window_s,ready_s,api_writes_idle,api_lease_writes_idle,api_requests_idle,api_requests_scraped\n",
    );
    for s in &samples {
        let [settle, idle, scraped] = s.w.cpu;
        let api_idle = s
            .api
            .as_ref()
            .map(|a| describe(&a[1]))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            table,
            "{:<11} {:>5} {:>8.1} {:>11.1} {settle:>7.2} {idle:>6.2} {scraped:>8.2} {:>9.1}  {api_idle}",
            s.mode,
            s.round,
            mib(s.w.rss_idle_kib),
            mib(s.w.rss_scraped_kib),
            s.ready.as_secs_f64(),
        );
        let (wr, lw, ri, rs) = match &s.api {
            Some(a) => (
                writes(&a[1]).to_string(),
                lease_writes(&a[1]).to_string(),
                a[1].values().sum::<usize>().to_string(),
                a[2].values().sum::<usize>().to_string(),
            ),
            None => Default::default(),
        };
        let _ = writeln!(
            csv,
            "{},{},{INSTANCES},{},{},{settle:.3},{idle:.3},{scraped:.3},{},{},{},{:.1},{wr},{lw},{ri},{rs}",
            s.mode,
            s.round,
            s.w.rss_idle_kib,
            s.w.rss_scraped_kib,
            s.w.scrapes.0,
            s.w.scrapes.1,
            o.window.as_secs(),
            s.ready.as_secs_f64(),
        );
    }
    type Column<'a> = &'a dyn Fn(&Sample) -> f64;
    let of =
        |mode: &str, f: Column| median(samples.iter().filter(|s| s.mode == mode).map(f).collect());
    let rows: [(&str, Column); 3] = [
        ("RSS MiB (idle)", &|s| mib(s.w.rss_idle_kib)),
        ("CPU % idle", &|s| s.w.cpu[1]),
        ("CPU % scraped", &|s| s.w.cpu[2]),
    ];
    let _ = writeln!(
        table,
        "\nMedian over {} round(s)\n{:<16} {:>11} {:>11} {:>7}",
        o.rounds, "", "kubernetes", "standalone", "ratio"
    );
    for (name, f) in rows {
        let (k, st) = (of("kubernetes", f), of("standalone", f));
        let _ = writeln!(table, "{name:<16} {k:>11.2} {st:>11.2} {:>7.2}", k / st);
    }
    let idle_secs = o.window.as_secs_f64();
    let kube: Vec<&Sample> = samples.iter().filter(|s| s.api.is_some()).collect();
    let total_writes: usize = kube
        .iter()
        .filter_map(|s| s.api.as_ref())
        .map(|a| writes(&a[1]))
        .sum();
    let lease: usize = kube
        .iter()
        .filter_map(|s| s.api.as_ref())
        .map(|a| lease_writes(&a[1]))
        .sum();
    let _ = writeln!(
        table,
        "Kubernetes-mode agent API writes in the idle windows: {total_writes} ({lease} Lease renewals, {} other) over {:.0} s",
        total_writes - lease,
        idle_secs * kube.len() as f64
    );
    for s in &kube {
        if let Some(a) = &s.api {
            let _ = writeln!(
                table,
                "  round {}: settle: {}; scraped: {}",
                s.round,
                describe(&a[0]),
                describe(&a[2])
            );
        }
    }
    println!("{table}");
    if let Some(dir) = &o.csv_dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("agent-k8s-footprint: cannot create {dir:?}: {e}");
            return std::process::ExitCode::from(1);
        }
        let p = dir.join("agent-k8s-footprint.csv");
        if let Err(e) = std::fs::write(&p, csv) {
            eprintln!("agent-k8s-footprint: write {p:?}: {e}");
            return std::process::ExitCode::from(1);
        }
        println!("CSV in {}", p.display());
    }
    std::process::ExitCode::SUCCESS
}
