//! Operator-at-scale benchmark (not a test): how long the operator takes, on a real API server
//! (`KUBEBUILDER_ASSETS`, as the `api_*` tests), to plan 1000 VirtualIPs over 100 Ready nodes
//! and to write every VirtualIP's status, how many writes it makes meanwhile and once all is
//! settled, and its peak RSS.
//!
//! The cluster: `--nodes` Nodes (Ready, label `bench.kubevrrp.io/pool` = one of `--pools`
//! pools, so 5 nodes per pool at the defaults; pool K's nodes have their `InternalIP` in
//! 2001:db8:K::/64, their own network, as VRIDs are unique per network) with their kubelet Leases, and an agent Lease per node in the operator's
//! namespace, all renewed every 10 s by this program (one `kubectl apply` of the whole list,
//! as a fleet of kubelets and agents would; no agent runs, so every node reports nothing and
//! the status says so). Then `--vips` VirtualIPs are created at once (one `kubectl create`),
//! one IPv6 address each in its pool's network, round-robin over the pools by node selector, every second one
//! unicast, VRIDs explicit and unique per pool (each pool on its own interface `ethK`, as the planner
//! keeps VRIDs unique per interface and address family).
//!
//! Measured from the create: every VRRPNode planned (the sum of their instances is VIPs ×
//! nodes per pool), every VirtualIP with a status naming its nodes, then the operator's own
//! write counters (`kube_vrrp_operator_writes_total`, `..._events_total`) over a quiet
//! window (`--quiet-secs`): idle writes must be 0. Peak RSS is the operator's VmHWM.
//!
//! Usage (root not needed): `cargo build --release -p kube-vrrp-operator && cargo run -p
//! kube-vrrp-tests --bin operator-scale-bench -- [--nodes 100] [--vips 1000] [--pools 20]
//! [--quiet-secs 30] [--operator-bin PATH] [-- operator args…]`

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lab::apiserver::{ApiServer, Kubectl, free_port, micro_time_now};
use lab::kubelab::{LEASE_NS, install_crds, operator_bin, say};
use serde_json::{Value, json};

const POOL_LABEL: &str = "bench.kubevrrp.io/pool";
/// How often the stand-in kubelets and agents renew their Leases.
const RENEW_EVERY: Duration = Duration::from_secs(10);

struct Opts {
    nodes: usize,
    vips: usize,
    pools: usize,
    quiet: Duration,
    operator_bin: PathBuf,
    operator_args: Vec<String>,
}

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        nodes: 100,
        vips: 1000,
        pools: 20,
        quiet: Duration::from_secs(30),
        operator_bin: operator_bin(),
        operator_args: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    let count = |name: &str, v: Option<String>, max: usize| -> Result<usize, String> {
        match v.as_deref().map(str::parse::<usize>) {
            Some(Ok(n)) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!("{name} needs a number 1-{max}")),
        }
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--nodes" => o.nodes = count("--nodes", args.next(), 250)?,
            "--vips" => o.vips = count("--vips", args.next(), 5000)?,
            "--pools" => o.pools = count("--pools", args.next(), 250)?,
            "--quiet-secs" => {
                o.quiet = Duration::from_secs(count("--quiet-secs", args.next(), 3600)? as u64)
            }
            "--operator-bin" => {
                o.operator_bin = PathBuf::from(args.next().ok_or("--operator-bin needs a path")?)
            }
            "--" => o.operator_args = args.by_ref().collect(),
            "-h" | "--help" => {
                println!("{}", lab::module_doc(include_str!("operator_scale.rs")));
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if o.pools > o.nodes {
        return Err(format!(
            "--pools {} is more than --nodes {}",
            o.pools, o.nodes
        ));
    }
    if o.vips.div_ceil(o.pools) > 255 {
        return Err(format!(
            "{} VirtualIPs over {} pools need more than 255 VRIDs per pool",
            o.vips, o.pools
        ));
    }
    Ok(o)
}

fn node_name(i: usize) -> String {
    format!("n{i:03}")
}

fn list(items: Vec<Value>) -> String {
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

/// Nodes with a Ready condition and an IPv6 InternalIP (a Node's status is kept on create,
/// as when a kubelet registers).
fn nodes_list(o: &Opts) -> String {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    list(
        (0..o.nodes)
            .map(|i| {
                let name = node_name(i);
                json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        POOL_LABEL: format!("p{}", i % o.pools),
                    }},
                    "status": {
                        "addresses": [
                            {"type": "InternalIP", "address": format!("2001:db8:{:x}::{:x}", i % o.pools + 1, i + 1)},
                            {"type": "Hostname", "address": name},
                        ],
                        "conditions": [{
                            "type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "operator-scale-bench", "lastHeartbeatTime": now,
                            "lastTransitionTime": now,
                        }],
                    },
                })
            })
            .collect(),
    )
}

/// Every node's kubelet Lease and agent Lease, renewed now.
fn leases_list(nodes: usize) -> String {
    let now = micro_time_now();
    let lease = |name: &str, ns: &str, seconds: u32| {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": seconds, "renewTime": now},
        })
    };
    list(
        (0..nodes)
            .flat_map(|i| {
                let name = node_name(i);
                [
                    lease(&name, "kube-node-lease", 40),
                    lease(&name, LEASE_NS, 30),
                ]
            })
            .collect(),
    )
}

fn vips_list(o: &Opts) -> String {
    list(
        (0..o.vips)
            .map(|i| {
                let pool = i % o.pools;
                let vrid = i / o.pools + 1;
                let mut spec = json!({
                    "addresses": [format!("2001:db8:{:x}::1:{:x}/64", pool + 1, i + 1)],
                    // VRIDs are unique per interface and family: one interface per pool.
                    "interface": format!("eth{pool}"),
                    "version": 3,
                    "advertInterval": "1s",
                    "priority": 200,
                    "virtualRouterID": vrid,
                    "nodeSelector": {"matchLabels": {POOL_LABEL: format!("p{pool}")}},
                });
                if i % 2 == 1 {
                    spec["unicast"] = json!({"enabled": true});
                }
                json!({
                    "apiVersion": "kubevrrp.io/v1alpha1", "kind": "VirtualIP",
                    "metadata": {"name": format!("vip-{i:04}"), "namespace": "default"},
                    "spec": spec,
                })
            })
            .collect(),
    )
}

/// `GET path` from the operator: the status code and the whole response.
fn operator_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text))
}

/// The operator's counters: `writes_total` and `events_total` by kind.
fn operator_counters(addr: SocketAddr) -> Option<BTreeMap<String, f64>> {
    let (_, text) = operator_get(addr, "/metrics")?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        for (prefix, what) in [
            ("kube_vrrp_operator_writes_total{kind=\"", "write"),
            ("kube_vrrp_operator_events_total{kind=\"", "event"),
        ] {
            if let Some(rest) = line.strip_prefix(prefix)
                && let Some((kind, value)) = rest.split_once("\"} ")
            {
                let v = value.trim().parse::<f64>().unwrap_or(0.0);
                out.insert(format!("{what} {kind}"), v);
            }
        }
    }
    Some(out)
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `kubectl get … --watch -o json` in a thread: scores the latest version of every object it
/// shows and records when their sum first reaches `target` (restarting the watch if it ends).
struct Watched {
    result: std::sync::mpsc::Receiver<Duration>,
    stop: Arc<AtomicBool>,
    child: Arc<std::sync::Mutex<Option<std::process::Child>>>,
}

impl Watched {
    /// When the target was first reached (from the bench's t0), or `None` after `limit`.
    fn wait(&self, limit: Duration) -> Option<Duration> {
        let r = self.result.recv_timeout(limit).ok();
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(mut c) = self.child.lock()
            && let Some(c) = c.as_mut()
        {
            let _ = c.kill();
        }
        r
    }
}

fn watch_until(
    k: &Kubectl,
    what: &[&str],
    t0: Instant,
    target: usize,
    score: impl Fn(&Value) -> usize + Send + 'static,
) -> Watched {
    let (tx, result) = std::sync::mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let child: Arc<std::sync::Mutex<Option<std::process::Child>>> = Arc::default();
    let mut args: Vec<String> = vec!["get".into()];
    args.extend(what.iter().map(|s| s.to_string()));
    // The later --request-timeout wins over the helper's 15 s: a watch runs until stopped.
    args.extend(["--watch", "-o", "json", "--request-timeout=0"].map(String::from));
    let k = k.clone();
    let (stopped, slot) = (stop.clone(), child.clone());
    std::thread::spawn(move || {
        // Each object's score, and their sum (kept as events arrive: O(1) per event).
        let mut scores: BTreeMap<String, usize> = BTreeMap::new();
        let mut total = 0usize;
        while !stopped.load(Ordering::Relaxed) {
            let argv: Vec<&str> = args.iter().map(String::as_str).collect();
            let spawned = k
                .command(&argv)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn();
            let Ok(mut c) = spawned else { return };
            let Some(out) = c.stdout.take() else { return };
            if let Ok(mut s) = slot.lock() {
                *s = Some(c);
            }
            let stream = serde_json::Deserializer::from_reader(std::io::BufReader::new(out))
                .into_iter::<Value>();
            for v in stream {
                let v = match v {
                    Ok(v) => v,
                    Err(e) => {
                        eprintln!("operator-scale-bench: watch {args:?}: {e}; restarting it");
                        break;
                    }
                };
                // The first answer may be one List of everything, then single objects.
                let items = match v["items"].as_array() {
                    Some(items) if v["kind"] == "List" => items.clone(),
                    _ => vec![v],
                };
                for v in items {
                    if let Some(name) = v["metadata"]["name"].as_str() {
                        let now = score(&v);
                        let was = scores.insert(name.to_string(), now).unwrap_or(0);
                        total = total + now - was;
                    }
                }
                if total >= target {
                    let _ = tx.send(t0.elapsed());
                    return;
                }
            }
            if let Ok(mut s) = slot.lock()
                && let Some(mut c) = s.take()
            {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    });
    Watched {
        result,
        stop,
        child,
    }
}

/// Gives up: a panic, not `exit`, so that the API server, etcd and the operator are dropped
/// (and stopped) on the way out instead of left running.
fn fail(why: &str) -> ! {
    panic!("operator-scale-bench: {why}");
}

fn main() {
    let o = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("operator-scale-bench: {e}");
            std::process::exit(2);
        }
    };
    if !o.operator_bin.exists() {
        fail(&format!(
            "{:?} missing: run `cargo build --release -p kube-vrrp-operator` and pass --operator-bin",
            o.operator_bin
        ));
    }
    let api = match ApiServer::start_with(Default::default()) {
        Ok(Some(api)) => api,
        Ok(None) => {
            eprintln!("{}", lab::apiserver::SKIP_LINE);
            std::process::exit(2);
        }
        Err(e) => fail(&format!("starting the API server: {e}")),
    };
    install_crds(&api);
    let k = api.kubectl_client();
    if let Err(e) = k.run_stdin(&["create", "-f", "-"], &nodes_list(&o)) {
        fail(&format!("creating the Nodes: {e}"));
    }
    if let Err(e) = k.run_stdin(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &leases_list(o.nodes),
    ) {
        fail(&format!("creating the Leases: {e}"));
    }
    // The fleet's heartbeats, from one thread.
    let stop = Arc::new(AtomicBool::new(false));
    let heartbeat = {
        let (k, stop, nodes) = (k.clone(), Arc::clone(&stop), o.nodes);
        std::thread::spawn(move || {
            let mut next = Instant::now() + RENEW_EVERY;
            while !stop.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    next += RENEW_EVERY;
                    let _ = k.run_stdin(
                        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
                        &leases_list(nodes),
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    let port = match free_port() {
        Ok(p) => p,
        Err(e) => fail(&format!("no free port: {e}")),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let log_path = std::env::temp_dir().join(format!("operator-scale-{}.log", std::process::id()));
    let log = match std::fs::File::create(&log_path) {
        Ok(f) => f,
        Err(e) => fail(&format!("{log_path:?}: {e}")),
    };
    let log_err = match log.try_clone() {
        Ok(f) => f,
        Err(e) => fail(&format!("{log_path:?}: {e}")),
    };
    let mut cmd = Command::new(&o.operator_bin);
    cmd.args([
        "run",
        "--lease-namespace",
        LEASE_NS,
        "--identity",
        "op-bench",
    ])
    .args(["--metrics-addr", &addr.to_string()])
    .args(&o.operator_args)
    .env("KUBECONFIG", api.kubeconfig_path())
    .env("NO_COLOR", "1")
    .env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
    )
    .stdin(Stdio::null())
    .stdout(log)
    .stderr(log_err);
    let operator = match cmd.spawn() {
        Ok(c) => Child(c),
        Err(e) => fail(&format!("starting {:?}: {e}", o.operator_bin)),
    };
    let pid = operator.0.id();
    // Ready: leader and reconciling (an empty cluster of VirtualIPs).
    let ready = lab::wait::wait_until(Duration::from_secs(60), "operator /readyz", || {
        operator_get(addr, "/readyz").and_then(|(code, _)| (code == 200).then_some(()))
    });
    if let Err(e) = ready {
        fail(&format!("{e} (log: {log_path:?})"));
    }
    let per_pool = o.nodes / o.pools;
    let leftover = o.nodes % o.pools;
    // Instances expected over all VRRPNodes: each VIP on every node of its pool.
    let expected_instances: usize = (0..o.vips)
        .map(|i| per_pool + usize::from(i % o.pools < leftover))
        .sum();
    say(&format!(
        "operator-scale-bench: {} VirtualIPs over {} nodes in {} pools ({} instances), operator {:?} {}",
        o.vips,
        o.nodes,
        o.pools,
        expected_instances,
        o.operator_bin,
        o.operator_args.join(" ")
    ));
    let before = operator_counters(addr).unwrap_or_default();
    let t0 = Instant::now();
    if let Err(e) = k.run_stdin(&["create", "-f", "-"], &vips_list(&o)) {
        fail(&format!("creating the VirtualIPs: {e}"));
    }
    let created = t0.elapsed();
    say(&format!(
        "  created in {:.1} s (one kubectl create)",
        created.as_secs_f64()
    ));
    let deadline = Duration::from_secs(
        std::env::var("SCALE_DEADLINE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(600),
    );
    // Plans through a watch of the VRRPNodes (a list of them every half second, with the
    // VirtualIPs', competed on two cores with the work being measured).
    let planned = watch_until(&k, &["vrrpnodes"], t0, expected_instances, |o| {
        o["spec"]["instances"].as_array().map_or(0, Vec::len)
    });
    let planned = planned.wait(deadline.saturating_sub(t0.elapsed()));
    // VirtualIP status: a watch of 1000 VirtualIPs is more than kubectl can print at this
    // rate, and listing them every half second loads the API server under test. So the
    // operator's (cheap) status-write counter says when to look, and a list confirms it.
    let statused = (|| {
        let status_before = before.get("write status").copied().unwrap_or(0.0);
        while t0.elapsed() < deadline {
            let written = operator_counters(addr)
                .and_then(|c| c.get("write status").copied())
                .unwrap_or(0.0);
            if written - status_before >= o.vips as f64 {
                let at = t0.elapsed();
                let listed = k
                    .run(&["get", "vips", "-n", "default", "-o", "json"])
                    .ok()
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok());
                let done = listed
                    .as_ref()
                    .and_then(|v| v["items"].as_array())
                    .map_or(0, |items| {
                        items
                            .iter()
                            .filter(|i| {
                                i["status"]["nodes"]
                                    .as_array()
                                    .is_some_and(|n| n.len() >= per_pool)
                            })
                            .count()
                    });
                if done >= o.vips {
                    return Some(at);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    })();
    let (Some(planned), Some(statused)) = (planned, statused) else {
        let nodes = k.run(&["get", "vrrpnodes"]).unwrap_or_default();
        let one = k
            .run(&[
                "get",
                "vip",
                "vip-0000",
                "-n",
                "default",
                "-o",
                "jsonpath={.status}",
            ])
            .unwrap_or_default();
        eprintln!("VRRPNodes:\n{nodes}\nvip-0000 status: {one}");
        fail(&format!(
            "not settled within {deadline:?}: planned {planned:?}, status {statused:?} (log: {log_path:?})"
        ));
    };
    say(&format!(
        "  every VRRPNode planned after {:.1} s",
        planned.as_secs_f64()
    ));
    say(&format!(
        "  every VirtualIP status written after {:.1} s",
        statused.as_secs_f64()
    ));
    let settled = operator_counters(addr).unwrap_or_default();
    std::thread::sleep(o.quiet);
    let after = operator_counters(addr).unwrap_or_default();
    let hwm = vm_hwm_kib(pid);
    stop.store(true, Ordering::Relaxed);
    let _ = heartbeat.join();
    say("  operator writes until settled:");
    for (kind, v) in &settled {
        let d = v - before.get(kind).copied().unwrap_or(0.0);
        if d > 0.0 {
            say(&format!("    {kind:<24} {d:>7.0}"));
        }
    }
    let idle: f64 = after
        .iter()
        .map(|(kind, v)| v - settled.get(kind).copied().unwrap_or(0.0))
        .sum();
    say(&format!(
        "  idle writes over {:.0} s after settling: {idle:.0}",
        o.quiet.as_secs_f64()
    ));
    say(&format!(
        "  operator peak RSS: {}",
        hwm.map_or("unknown".into(), |k| format!(
            "{:.1} MiB",
            k as f64 / 1024.0
        ))
    ));
    drop(operator);
    if idle > 0.0 {
        std::process::exit(1);
    }
}
