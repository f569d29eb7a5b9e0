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

fn get_json(k: &Kubectl, args: &[&str]) -> Option<Value> {
    k.run(args)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
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

fn fail(why: &str) -> ! {
    eprintln!("operator-scale-bench: {why}");
    std::process::exit(1);
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
    let (mut planned, mut statused) = (None, None);
    let deadline = Duration::from_secs(
        std::env::var("SCALE_DEADLINE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(600),
    );
    while planned.is_none() || statused.is_none() {
        if t0.elapsed() > deadline {
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
        }
        if planned.is_none()
            && let Some(v) = get_json(&k, &["get", "vrrpnodes", "-o", "json"])
        {
            let n: usize = v["items"]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|i| i["spec"]["instances"].as_array().map_or(0, Vec::len))
                        .sum()
                })
                .unwrap_or(0);
            if n >= expected_instances {
                planned = Some(t0.elapsed());
                say(&format!(
                    "  every VRRPNode planned after {:.1} s",
                    t0.elapsed().as_secs_f64()
                ));
            }
        }
        if statused.is_none()
            && let Some(v) = get_json(&k, &["get", "vips", "-n", "default", "-o", "json"])
        {
            let items = v["items"].as_array().cloned().unwrap_or_default();
            let done = items
                .iter()
                .filter(|i| {
                    i["status"]["nodes"]
                        .as_array()
                        .is_some_and(|n| n.len() >= per_pool)
                })
                .count();
            if done >= o.vips {
                statused = Some(t0.elapsed());
                say(&format!(
                    "  every VirtualIP status written after {:.1} s",
                    t0.elapsed().as_secs_f64()
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
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
