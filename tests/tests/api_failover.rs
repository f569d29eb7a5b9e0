//! End-to-end failover on a real API server: etcd + kube-apiserver (`lab::apiserver`), three
//! simulated Nodes, a 3-host netns lab with one `kube-vrrp-agent run` per host (reaching the
//! API through a loopback forwarder in its namespace) and `kube-vrrp-operator run` in the root
//! namespace. One VirtualIP (192.0.2.200/24, VRRPv3, 1 s adverts, priority 200: n1 200, n2 199,
//! n3 198). The scenarios check what `status` says while the VIP moves on the wire.
//!
//! Needs root (network namespaces) and `KUBEBUILDER_ASSETS`; otherwise each test prints its
//! SKIPPED line. The agent and operator are the debug binaries (`cargo build -p
//! kube-vrrp-agent -p kube-vrrp-operator`; `$CARGO_TARGET_DIR/debug` or `target/debug`, or
//! `KUBE_VRRP_AGENT_BIN` / `KUBE_VRRP_OPERATOR_BIN`).

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lab::apiserver::{ApiServer, NetnsForward, NodeSim, free_port, tail, wait_every};
use lab::{Lab, LabBuilder, ProcGuard};
use serde_json::Value;

const VIP: &str = "192.0.2.200/24";
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const LEASE_NS: &str = "kube-vrrp";

fn operator_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBE_VRRP_OPERATOR_BIN") {
        return PathBuf::from(p);
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t).join("debug/kube-vrrp-operator");
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/kube-vrrp-operator")
}

fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{:04x}",
        std::process::id(),
        lab::topology::random_u16()
    )
}

/// One observed version of the VirtualIP's status, with when the watch delivered it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    status: Value,
}

fn phase(s: &Value) -> &str {
    s.get("phase").and_then(Value::as_str).unwrap_or("")
}

fn master(s: &Value) -> &str {
    s.get("master").and_then(Value::as_str).unwrap_or("")
}

fn split_brain(s: &Value) -> bool {
    phase(s) == "SplitBrain"
        || s.get("conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "SplitBrain" && c["status"] == "True")
}

fn node_entry<'a>(s: &'a Value, node: &str) -> Option<&'a Value> {
    s.get("nodes")?
        .as_array()?
        .iter()
        .find(|n| n["node"] == node)
}

fn masters_shown(s: &Value) -> usize {
    s.get("nodes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|n| n["state"] == "MASTER")
        .count()
}

/// `kubectl get vip NAME -w -o json` in the background (re-started after an API outage),
/// recording every status it prints: a record of every status version, far cheaper than
/// polling and missing nothing.
struct StatusWatch {
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    child: Arc<Mutex<Option<Child>>>,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl StatusWatch {
    fn start(kubectl: &lab::apiserver::Kubectl, name: &str) -> StatusWatch {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let child: Arc<Mutex<Option<Child>>> = Arc::default();
        let thread = {
            let (seen, stop, child) = (seen.clone(), stop.clone(), child.clone());
            let kubectl = kubectl.clone();
            let name = name.to_string();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut cmd = Command::new(kubectl.bin());
                    cmd.arg("--kubeconfig")
                        .arg(kubectl.kubeconfig())
                        .args([
                            "get",
                            "virtualip",
                            &name,
                            "-n",
                            "default",
                            "-w",
                            "-o",
                            "json",
                        ])
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::null());
                    let Ok(mut c) = cmd.spawn() else {
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    };
                    let out = c.stdout.take();
                    *lock(&child) = Some(c);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Some(out) = out {
                        let stream =
                            serde_json::Deserializer::from_reader(std::io::BufReader::new(out))
                                .into_iter::<Value>();
                        for obj in stream {
                            let Ok(obj) = obj else { break };
                            lock(&seen).push(Seen {
                                at: Instant::now(),
                                status: obj.get("status").cloned().unwrap_or(Value::Null),
                            });
                        }
                    }
                    if let Some(mut c) = lock(&child).take() {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        StatusWatch {
            seen,
            stop,
            child,
            thread: Some(thread),
        }
    }

    fn all(&self) -> Vec<Seen> {
        lock(&self.seen).clone()
    }

    fn last(&self) -> Value {
        lock(&self.seen)
            .last()
            .map(|s| s.status.clone())
            .unwrap_or(Value::Null)
    }

    /// Waits until a status version seen at or after `since` satisfies `cond`; returns it.
    fn wait(
        &self,
        since: Instant,
        within: Duration,
        what: &str,
        cond: impl Fn(&Value) -> bool,
    ) -> Result<Seen, String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = lock(&self.seen)
                .iter()
                .find(|s| s.at >= since && cond(&s.status))
            {
                return Ok(s.clone());
            }
            if Instant::now() >= deadline {
                return Err(format!("timed out after {within:?} waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first version seen since `since` that shows split brain.
    fn split_brain_since(&self, since: Instant) -> Option<Seen> {
        lock(&self.seen)
            .iter()
            .find(|s| s.at >= since && split_brain(&s.status))
            .cloned()
    }
}

impl Drop for StatusWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(mut c) = lock(&self.child).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The whole setup of one test. Field order is drop order: watchers and daemons first, then
/// forwarders, NodeSims, the lab and last the API server.
struct Env {
    watch: Option<StatusWatch>,
    operator: Option<ProcGuard>,
    agents: Vec<Option<ProcGuard>>,
    _forwards: Vec<NetnsForward>,
    sims: Vec<NodeSim>,
    lab: Lab,
    api: ApiServer,
    dir: tempfile::TempDir,
    vip_name: String,
    agent_logs: Vec<PathBuf>,
    operator_log: PathBuf,
}

impl Env {
    fn setup(api: ApiServer) -> Env {
        let lab = LabBuilder::default().hosts(3).build().expect("lab");
        let dir = tempfile::Builder::new()
            .prefix("kvapifo-")
            .tempdir()
            .expect("temp dir");
        let crd_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
        for f in ["virtualip.yaml", "vrrpnode.yaml"] {
            let p = crd_dir.join(f);
            api.kubectl(&["apply", "-f", &p.to_string_lossy()])
                .expect("apply CRD");
        }
        api.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/virtualips.kubevrrp.io",
            "crd/vrrpnodes.kubevrrp.io",
        ])
        .expect("CRDs established");
        api.kubectl_client()
            .apply(&serde_json::json!({
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LEASE_NS}
            }))
            .expect("namespace");
        let mut sims = Vec::new();
        for (i, n) in NODES.iter().enumerate() {
            let addr = IpAddr::V4(lab.host(i).ipv4);
            let mut sim = api.node_sim(n, &[], &[addr]).expect("node sim");
            sim.start_heartbeat(Duration::from_secs(2));
            sims.push(sim);
        }
        let mut forwards = Vec::new();
        for h in lab.hosts() {
            forwards.push(api.expose_in_netns(&h.netns).expect("forwarder"));
        }
        let operator_log = dir.path().join("operator.log");
        let mut env = Env {
            watch: None,
            operator: None,
            agents: vec![None, None, None],
            _forwards: forwards,
            sims,
            lab,
            api,
            vip_name: unique("vip"),
            agent_logs: NODES
                .iter()
                .map(|n| dir.path().join(format!("agent-{n}.log")))
                .collect(),
            operator_log,
            dir,
        };
        for i in 0..3 {
            env.start_agent(i);
        }
        for i in 0..3 {
            env.wait_agent_lease(i);
        }
        env.start_operator();
        env
    }

    /// Waits until agent `i` has written its liveness Lease (it runs and reaches the API);
    /// fails at once if it exits.
    fn wait_agent_lease(&self, i: usize) {
        let r = wait_every(
            Duration::from_millis(200),
            Duration::from_secs(30),
            &format!("agent {} Lease", NODES[i]),
            || {
                if !self.agents[i].as_ref().is_some_and(ProcGuard::is_running) {
                    return Some(Err(format!("agent {} exited", NODES[i])));
                }
                self.api
                    .kubectl(&["get", "lease", NODES[i], "-n", LEASE_NS])
                    .ok()
                    .map(|_| Ok(()))
            },
        );
        self.check(r.map_err(|e| e.to_string()).and_then(|r| r));
    }

    fn start_agent(&mut self, i: usize) {
        let bin = lab::daemon::agent_bin();
        assert!(
            bin.exists(),
            "{bin:?} missing: run `cargo build -p kube-vrrp-agent -p kube-vrrp-operator`"
        );
        let state = self.dir.path().join(NODES[i]);
        std::fs::create_dir_all(&state).expect("state dir");
        let port = free_port().expect("port").to_string();
        let metrics = format!("127.0.0.1:{port}");
        let argv = [
            bin.to_str().expect("utf-8 path"),
            "run",
            "--node-name",
            NODES[i],
            "--lease-namespace",
            LEASE_NS,
            "--state-dir",
            state.to_str().expect("utf-8 path"),
            "--metrics-addr",
            &metrics,
        ];
        let mut cmd = lab::netns::command_in(&self.lab.host(i).netns, &argv);
        cmd.env("KUBECONFIG", self.api.kubeconfig_path())
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        let g = self
            .lab
            .spawn_cmd(
                cmd,
                &format!("agent {}", NODES[i]),
                Some(&self.agent_logs[i]),
            )
            .expect("spawn agent");
        self.agents[i] = Some(g);
    }

    fn kill_agent(&mut self, i: usize) {
        if let Some(g) = self.agents[i].take() {
            g.kill();
        }
    }

    fn start_operator(&mut self) {
        let bin = operator_bin();
        assert!(
            bin.exists(),
            "{bin:?} missing: run `cargo build -p kube-vrrp-agent -p kube-vrrp-operator`"
        );
        let port = free_port().expect("port");
        let mut cmd = Command::new(&bin);
        cmd.args([
            "run",
            "--lease-namespace",
            LEASE_NS,
            "--identity",
            "op-1",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .env("KUBECONFIG", self.api.kubeconfig_path())
        .env("NO_COLOR", "1")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null());
        let f = std::fs::File::create(&self.operator_log).expect("operator log");
        cmd.stdout(f.try_clone().expect("dup")).stderr(f);
        self.operator =
            Some(ProcGuard::spawn(self.lab.registry(), cmd, "operator").expect("spawn"));
    }

    /// Applies the VirtualIP and waits for n1 to be its active master, on the wire and in
    /// status; starts the status watch.
    fn apply_vip_and_wait_n1(&mut self) {
        let vip = serde_json::json!({
            "apiVersion": "kubevrrp.io/v1alpha1",
            "kind": "VirtualIP",
            "metadata": {"name": self.vip_name, "namespace": "default"},
            "spec": {
                "addresses": [VIP],
                "interface": "eth0",
                "advertInterval": "1s",
                "version": 3,
                "priority": 200,
            }
        });
        self.api
            .kubectl_client()
            .apply(&vip)
            .expect("apply VirtualIP");
        self.watch = Some(StatusWatch::start(
            &self.api.kubectl_client(),
            &self.vip_name,
        ));
        let start = Instant::now();
        self.check(
            self.watch()
                .wait(start, Duration::from_secs(30), "n1 Active", |s| {
                    master(s) == "n1" && phase(s) == "Active"
                }),
        );
        self.check(
            self.lab
                .wait_holder(VIP, 0, Duration::from_secs(20))
                .map_err(|e| e.to_string()),
        );
    }

    fn watch(&self) -> &StatusWatch {
        self.watch.as_ref().expect("watch started")
    }

    fn vip_json(&self) -> String {
        self.api
            .kubectl(&["get", "vip", &self.vip_name, "-n", "default", "-o", "json"])
            .unwrap_or_else(|e| format!("(kubectl failed: {e})"))
    }

    fn generation(&self, node: &str) -> String {
        self.api
            .kubectl(&[
                "get",
                "vrrpnode",
                node,
                "-o",
                "jsonpath={.metadata.generation}",
            ])
            .expect("VRRPNode generation")
    }

    /// Unwraps, or panics with the diagnostics.
    fn check<T>(&self, r: Result<T, String>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.fail(&e),
        }
    }

    fn fail(&self, why: &str) -> ! {
        panic!("{why}");
    }

    fn diagnostics(&self) {
        say(&format!(
            "--- VirtualIP {} ---\n{}",
            self.vip_name,
            self.vip_json()
        ));
        if let Some(w) = &self.watch {
            say("--- status versions seen (s since first: phase master nodes) ---");
            let all = w.all();
            let t0 = all.first().map(|s| s.at);
            for s in &all {
                let nodes: Vec<String> = s.status["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|n| {
                        format!(
                            "{}={}{}",
                            n["node"].as_str().unwrap_or("?"),
                            n["state"].as_str().unwrap_or("-"),
                            n["reason"]
                                .as_str()
                                .map(|r| format!("({r})"))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                say(&format!(
                    "{:7.2} {} {} {}",
                    t0.map_or(0.0, |t| s.at.duration_since(t).as_secs_f64()),
                    phase(&s.status),
                    master(&s.status),
                    nodes.join(" ")
                ));
            }
        }
        say(&format!(
            "--- VRRPNodes ---\n{}",
            self.api
                .kubectl(&["get", "vrrpnodes", "-o", "yaml"])
                .unwrap_or_default()
        ));
        say(&format!(
            "--- Leases in {LEASE_NS} ---\n{}",
            self.api
                .kubectl(&["get", "leases", "-n", LEASE_NS, "-o", "wide"])
                .unwrap_or_default()
        ));
        say(&format!(
            "--- operator log tail ---\n{}",
            tail(&self.operator_log, 80)
        ));
        for (i, l) in self.agent_logs.iter().enumerate() {
            say(&format!(
                "--- agent {} log tail ---\n{}",
                NODES[i],
                tail(l, 25)
            ));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.diagnostics();
        }
    }
}

macro_rules! setup {
    ($name:expr) => {{
        lab::skip_unless_root!($name);
        let api = lab::skip_unless_api!();
        let mut env = Env::setup(api);
        env.apply_vip_and_wait_n1();
        env
    }};
}

/// The address of host `i` as `status.masterAddress` shows it.
fn host_addr(env: &Env, i: usize) -> String {
    env.lab.host(i).ipv4.to_string()
}

/// n1 dies (agent SIGKILLed, link down, kubelet heartbeat stopped): n2 takes over on the wire
/// and status follows within 5 s, never showing split brain; n1 becomes UNKNOWN /
/// AgentNotReporting once its Lease is stale; the other nodes' VRRPNode specs are untouched.
#[test]
fn master_dies() {
    let mut env = setup!("master_dies");
    let gens_before: Vec<String> = ["n2", "n3"].iter().map(|n| env.generation(n)).collect();

    let t_kill = Instant::now();
    env.kill_agent(0);
    env.lab.link_down(env.lab.host(0)).expect("link down");
    env.sims[0].stop_heartbeat();

    let wire = env.check(
        lab::wait_until(Duration::from_secs(15), "VIP on n2", || {
            env.lab.holds(env.lab.host(1), VIP).then(Instant::now)
        })
        .map_err(|e| e.to_string()),
    );
    say(&format!(
        "VIP on n2 {:.2}s after the kill",
        wire.duration_since(t_kill).as_secs_f64()
    ));
    let moved = env.check(env.watch().wait(
        t_kill,
        Duration::from_secs(5) + wire.saturating_duration_since(Instant::now()),
        "status.master == n2",
        |s| master(s) == "n2",
    ));
    let lag = moved.at.saturating_duration_since(wire);
    say(&format!("MEASURED status lag: {:.2}s", lag.as_secs_f64()));
    if lag > Duration::from_secs(5) {
        env.fail(&format!("status lag {lag:?} > 5s"));
    }
    let s = &moved.status;
    if s["masterAddress"] != host_addr(&env, 1).as_str() || phase(s) != "Active" {
        env.fail(&format!(
            "master n2 shown with masterAddress {} phase {}",
            s["masterAddress"],
            phase(s)
        ));
    }

    // n1 is shown as not reporting once its Lease (10 s) is stale.
    let unknown = env.check(env.watch().wait(
        t_kill,
        Duration::from_secs(20),
        "n1 UNKNOWN / AgentNotReporting",
        |s| {
            node_entry(s, "n1")
                .is_some_and(|n| n["state"] == "UNKNOWN" && n["reason"] == "AgentNotReporting")
        },
    ));
    say(&format!(
        "n1 AgentNotReporting {:.2}s after the kill",
        unknown.at.duration_since(t_kill).as_secs_f64()
    ));
    let s = env.check(
        env.watch()
            .wait(t_kill, Duration::from_secs(5), "final status", |s| {
                master(s) == "n2"
                    && phase(s) == "Active"
                    && node_entry(s, "n1").is_some_and(|n| n["state"] == "UNKNOWN")
            }),
    );
    let lf = &s.status["lastFailover"];
    if lf["from"] != "n1" || lf["to"] != "n2" {
        env.fail(&format!("lastFailover {lf}"));
    }
    if let Some(sb) = env.watch().split_brain_since(t_kill) {
        env.fail(&format!("split brain shown: {}", sb.status));
    }
    let gens_after: Vec<String> = ["n2", "n3"].iter().map(|n| env.generation(n)).collect();
    if gens_before != gens_after {
        env.fail(&format!(
            "VRRPNode generations of n2/n3 changed: {gens_before:?} -> {gens_after:?}"
        ));
    }
}

/// n1 is cut off the segment at the switch (its own link stays up, it keeps MASTER, its agent
/// still reaches the API): n2 takes over too, status shows SplitBrain within 5 s of both
/// holding the VIP; healing the link returns to Active with one master.
#[test]
fn real_split_brain() {
    let env = setup!("real_split_brain");
    let t_cut = Instant::now();
    env.lab.partition(env.lab.host(0)).expect("partition");
    let both = env.check(
        lab::wait_until(Duration::from_secs(15), "VIP on n1 and n2", || {
            let h = env.lab.holders(VIP);
            (h.contains(&0) && h.contains(&1)).then(Instant::now)
        })
        .map_err(|e| e.to_string()),
    );
    say(&format!(
        "both hold the VIP {:.2}s after the cut",
        both.duration_since(t_cut).as_secs_f64()
    ));
    let sb = env.check(env.watch().wait(
        t_cut,
        Duration::from_secs(5) + both.saturating_duration_since(Instant::now()),
        "phase SplitBrain",
        |s| phase(s) == "SplitBrain",
    ));
    say(&format!(
        "MEASURED split-brain lag: {:.2}s",
        sb.at.saturating_duration_since(both).as_secs_f64()
    ));

    let t_heal = Instant::now();
    env.lab.heal(env.lab.host(0)).expect("heal");
    env.check(
        lab::wait_until(Duration::from_secs(15), "one holder after heal", || {
            (env.lab.holders(VIP).len() == 1).then_some(())
        })
        .map_err(|e| e.to_string()),
    );
    let ok = env.check(env.watch().wait(
        t_heal,
        Duration::from_secs(15),
        "Active with one master after heal",
        |s| phase(s) == "Active" && masters_shown(s) == 1 && !split_brain(s),
    ));
    say(&format!(
        "Active again {:.2}s after heal (master {})",
        ok.at.duration_since(t_heal).as_secs_f64(),
        master(&ok.status)
    ));
}

/// The API server dies; during the outage n1 dies too and n2 takes over. After the restart
/// status shows n2 within 10 s of the API being ready, without split brain.
#[test]
#[ignore = "not reliable yet: in 2 of 4 runs the operator did not update the status within 10 s \
            of the API server's return (its watches resumed, no reconcile followed); see issue #19"]
fn api_outage_with_failover() {
    let mut env = setup!("api_outage_with_failover");
    env.api.kill_apiserver();
    let t_kill = Instant::now();
    env.kill_agent(0);
    env.lab.link_down(env.lab.host(0)).expect("link down");
    env.check(
        lab::wait_until(Duration::from_secs(15), "VIP on n2", || {
            env.lab.holds(env.lab.host(1), VIP).then_some(())
        })
        .map_err(|e| e.to_string()),
    );
    say(&format!(
        "VIP on n2 {:.2}s after the kill (API down)",
        t_kill.elapsed().as_secs_f64()
    ));
    env.sims[0].stop_heartbeat();
    let t_restart = Instant::now();
    env.api.restart_apiserver().expect("restart API server");
    let ready = Instant::now();
    say(&format!(
        "API ready {:.2}s after restart",
        ready.duration_since(t_restart).as_secs_f64()
    ));
    let moved = env.check(env.watch().wait(
        ready,
        Duration::from_secs(10),
        "status.master == n2 after the outage",
        |s| master(s) == "n2" && phase(s) == "Active",
    ));
    say(&format!(
        "MEASURED post-outage status lag: {:.2}s",
        moved.at.saturating_duration_since(ready).as_secs_f64()
    ));
    // Let the picture settle a little: n1 going stale must not bring split brain either.
    let _ = env.watch().wait(
        ready,
        Duration::from_secs(12),
        "n1 AgentNotReporting",
        |s| node_entry(s, "n1").is_some_and(|n| n["reason"] == "AgentNotReporting"),
    );
    if let Some(sb) = env.watch().split_brain_since(t_kill) {
        env.fail(&format!("split brain shown: {}", sb.status));
    }
    if master(&env.watch().last()) != "n2" {
        env.fail("master is no longer n2");
    }
}

/// n1's agent is SIGKILLed and restarted (the VIP stays bound meanwhile): status ends Active
/// with one master. Then `kubectl cordon n1` moves the VIP to n2 gracefully and n1 shows
/// reason Draining.
#[test]
fn agent_restart_and_cordon() {
    let mut env = setup!("agent_restart_and_cordon");
    let t0 = Instant::now();
    env.kill_agent(0);
    env.start_agent(0);
    env.check(env.watch().wait(
        t0,
        Duration::from_secs(30),
        "Active, one master, after the agent restart",
        |s| phase(s) == "Active" && masters_shown(s) == 1 && !master(s).is_empty(),
    ));
    // Settle on n1 (it has the highest priority and preempts).
    env.check(
        env.lab
            .wait_holder(VIP, 0, Duration::from_secs(20))
            .map_err(|e| e.to_string()),
    );
    let t_cordon = Instant::now();
    env.api.kubectl(&["cordon", "n1"]).expect("cordon");
    env.check(
        env.lab
            .wait_holder(VIP, 1, Duration::from_secs(20))
            .map_err(|e| e.to_string()),
    );
    let s = env.check(env.watch().wait(
        t_cordon,
        Duration::from_secs(10),
        "n2 master, n1 Draining",
        |s| {
            master(s) == "n2"
                && phase(s) == "Active"
                && node_entry(s, "n1").is_some_and(|n| n["reason"] == "Draining")
        },
    ));
    say(&format!(
        "cordon: status shows n2 {:.2}s after the cordon",
        s.at.duration_since(t_cordon).as_secs_f64()
    ));
    if let Some(sb) = env.watch().split_brain_since(t0) {
        env.fail(&format!("split brain shown: {}", sb.status));
    }
}
