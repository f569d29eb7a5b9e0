//! A kube-vrrp cluster on a real API server, for the end-to-end tests and benchmarks: etcd +
//! kube-apiserver ([`crate::apiserver`]), three simulated Nodes (stand-in kubelets keeping
//! their Leases fresh), a 3-host netns lab with one `kube-vrrp-agent run` per host (reaching
//! the API through a loopback forwarder in its namespace) and `kube-vrrp-operator run` in the
//! root namespace. [`KubeLab::apply_vip_and_wait_n1`] applies one VirtualIP
//! (192.0.2.200/24, VRRPv3, 1 s adverts, priority 200: n1 200, n2 199, n3 198); a
//! [`StatusWatch`] records every version of its status.
//!
//! The agent and operator are the debug binaries (`cargo build -p kube-vrrp-agent -p
//! kube-vrrp-operator`; `$CARGO_TARGET_DIR/debug` or `target/debug`, or `KUBE_VRRP_AGENT_BIN`
//! / `KUBE_VRRP_OPERATOR_BIN`).

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::apiserver::{ApiServer, NetnsForward, NodeSim, free_port, tail, wait_every};
use crate::{Lab, LabBuilder, ProcGuard};

pub const VIP: &str = "192.0.2.200/24";
pub const NODES: [&str; 3] = ["n1", "n2", "n3"];
pub const LEASE_NS: &str = "kube-vrrp";

pub fn operator_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBE_VRRP_OPERATOR_BIN") {
        return PathBuf::from(p);
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t).join("debug/kube-vrrp-operator");
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/kube-vrrp-operator")
}

/// Installs the project's CRDs, waits until they are established, and creates the operator's
/// namespace [`LEASE_NS`].
pub fn install_crds(api: &ApiServer) {
    let crd_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    for f in ["virtualip.yaml", "vrrpnode.yaml", "virtualippool.yaml"] {
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
        "crd/virtualippools.kubevrrp.io",
    ])
    .expect("CRDs established");
    api.kubectl_client()
        .apply(&serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LEASE_NS}
        }))
        .expect("namespace");
}

pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{:04x}",
        std::process::id(),
        crate::topology::random_u16()
    )
}

/// One observed version of the VirtualIP's status, with when the watch delivered it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub status: Value,
}

pub fn phase(s: &Value) -> &str {
    s.get("phase").and_then(Value::as_str).unwrap_or("")
}

pub fn master(s: &Value) -> &str {
    s.get("master").and_then(Value::as_str).unwrap_or("")
}

pub fn split_brain(s: &Value) -> bool {
    phase(s) == "SplitBrain"
        || s.get("conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "SplitBrain" && c["status"] == "True")
}

pub fn node_entry<'a>(s: &'a Value, node: &str) -> Option<&'a Value> {
    s.get("nodes")?
        .as_array()?
        .iter()
        .find(|n| n["node"] == node)
}

pub fn masters_shown(s: &Value) -> usize {
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
pub struct StatusWatch {
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    child: Arc<Mutex<Option<Child>>>,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl StatusWatch {
    pub fn start(kubectl: &crate::apiserver::Kubectl, name: &str) -> StatusWatch {
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

    pub fn all(&self) -> Vec<Seen> {
        lock(&self.seen).clone()
    }

    pub fn last(&self) -> Value {
        lock(&self.seen)
            .last()
            .map(|s| s.status.clone())
            .unwrap_or(Value::Null)
    }

    /// Waits until a status version seen at or after `since` satisfies `cond`; returns it.
    pub fn wait(
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
    pub fn split_brain_since(&self, since: Instant) -> Option<Seen> {
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
pub struct KubeLab {
    pub watch: Option<StatusWatch>,
    pub operator: Option<ProcGuard>,
    pub agents: Vec<Option<ProcGuard>>,
    pub _forwards: Vec<NetnsForward>,
    pub sims: Vec<NodeSim>,
    pub lab: Lab,
    pub api: ApiServer,
    pub dir: tempfile::TempDir,
    pub vip_name: String,
    pub agent_logs: Vec<PathBuf>,
    /// The kubeconfig agent `i` is started with (None: the admin one), e.g. a service
    /// account's token so the API server's audit log tells its requests apart.
    pub agent_kubeconfigs: Vec<Option<PathBuf>>,
    /// Where agent `i` serves /metrics and /status (inside its host's network namespace).
    pub agent_metrics: Vec<Option<String>>,
    pub operator_log: PathBuf,
    /// Where the operator serves /metrics, /healthz and /readyz (root namespace).
    pub operator_addr: Option<std::net::SocketAddr>,
    /// The operator's kubeconfig when it reaches the API through a forwarder of its own
    /// ([`KubeLab::setup_with_operator_forward`]); else the admin kubeconfig.
    pub operator_kubeconfig: Option<PathBuf>,
}

impl KubeLab {
    pub fn setup(api: ApiServer) -> KubeLab {
        Self::setup_opts(api, false)
    }

    /// [`KubeLab::setup`] with the operator, too, reaching the API through a forwarder (in
    /// the root namespace, on a port of its own), so that [`KubeLab::blackhole_api`] silences
    /// every component's API connection.
    pub fn setup_with_operator_forward(api: ApiServer) -> KubeLab {
        Self::setup_opts(api, true)
    }

    /// Silences every forwarded API connection (agents', and the operator's with
    /// [`KubeLab::setup_with_operator_forward`]): no byte passes, new connections hang (see
    /// [`NetnsForward::set_blackhole`]); `false` lets them through again. kubectl in the test
    /// goes to the API server directly and is not affected.
    pub fn blackhole_api(&self, on: bool) {
        for f in &self._forwards {
            f.set_blackhole(on);
        }
    }

    fn setup_opts(api: ApiServer, operator_forward: bool) -> KubeLab {
        let lab = LabBuilder::default().hosts(3).build().expect("lab");
        let dir = tempfile::Builder::new()
            .prefix("kvapifo-")
            .tempdir()
            .expect("temp dir");
        install_crds(&api);
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
        let operator_kubeconfig = operator_forward.then(|| {
            let (fwd, path) = api
                .expose_via_forward("operator")
                .expect("operator forwarder");
            forwards.push(fwd);
            path
        });
        let operator_log = dir.path().join("operator.log");
        let mut env = KubeLab {
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
            agent_kubeconfigs: vec![None, None, None],
            agent_metrics: vec![None, None, None],
            operator_log,
            operator_addr: None,
            operator_kubeconfig,
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
    pub fn wait_agent_lease(&self, i: usize) {
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

    pub fn start_agent(&mut self, i: usize) {
        let bin = crate::daemon::agent_bin();
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
        let mut cmd = crate::netns::command_in(&self.lab.host(i).netns, &argv);
        let kubeconfig = self.agent_kubeconfigs[i]
            .as_deref()
            .unwrap_or(self.api.kubeconfig_path());
        cmd.env("KUBECONFIG", kubeconfig).env("NO_COLOR", "1").env(
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
        self.agent_metrics[i] = Some(metrics);
    }

    /// The body of `GET path` from agent `i`'s HTTP endpoint (curl inside its namespace).
    pub fn agent_get(&self, i: usize, path: &str) -> Result<String, String> {
        let addr = self.agent_metrics[i]
            .as_deref()
            .ok_or_else(|| format!("agent {} not started", NODES[i]))?;
        let url = format!("http://{addr}{path}");
        let out = crate::netns::command_in(
            &self.lab.host(i).netns,
            &["curl", "-sS", "--max-time", "2", &url],
        )
        .output()
        .map_err(|e| format!("curl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "curl {url}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn kill_agent(&mut self, i: usize) {
        if let Some(g) = self.agents[i].take() {
            g.kill();
        }
    }

    pub fn start_operator(&mut self) {
        let bin = operator_bin();
        assert!(
            bin.exists(),
            "{bin:?} missing: run `cargo build -p kube-vrrp-agent -p kube-vrrp-operator`"
        );
        let port = free_port().expect("port");
        self.operator_addr = Some(std::net::SocketAddr::from((
            std::net::Ipv4Addr::LOCALHOST,
            port,
        )));
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
        .env(
            "KUBECONFIG",
            self.operator_kubeconfig
                .as_deref()
                .unwrap_or(self.api.kubeconfig_path()),
        )
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
    pub fn apply_vip_and_wait_n1(&mut self) {
        self.apply_vip(&self.vip_name, VIP);
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

    /// `GET path` from the operator's HTTP endpoint: the status code, None if it does not
    /// answer within a second.
    pub fn operator_get(&self, path: &str) -> Option<u16> {
        self.operator_fetch(path).map(|(code, _)| code)
    }

    /// `GET path` from the operator's HTTP endpoint: the status code and the body.
    pub fn operator_fetch(&self, path: &str) -> Option<(u16, String)> {
        use std::io::Read as _;
        let addr = self.operator_addr?;
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let code = out.split_whitespace().nth(1)?.parse().ok()?;
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    }

    /// Applies a second VirtualIP `name` (192.0.2.201/24, VRID 2, same nodes and priorities).
    pub fn apply_second_vip(&self, name: &str) {
        self.apply_vip(name, "192.0.2.201/24");
    }

    /// Applies VirtualIP `name` in `default` for `address` on eth0: VRRPv3, 1 s adverts,
    /// priority 200 (n1 200, n2 199, n3 198).
    pub fn apply_vip(&self, name: &str, address: &str) {
        let vip = serde_json::json!({
            "apiVersion": "kubevrrp.io/v1alpha1",
            "kind": "VirtualIP",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "addresses": [address],
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
    }

    /// `status` of VirtualIP `name` in `default`, Null if absent or the API does not answer.
    pub fn status_of(&self, name: &str) -> Value {
        self.api
            .kubectl(&["get", "vip", name, "-n", "default", "-o", "json"])
            .ok()
            .and_then(|j| serde_json::from_str::<Value>(&j).ok())
            .map(|v| v["status"].clone())
            .unwrap_or(Value::Null)
    }

    pub fn watch(&self) -> &StatusWatch {
        self.watch.as_ref().expect("watch started")
    }

    pub fn vip_json(&self) -> String {
        self.api
            .kubectl(&["get", "vip", &self.vip_name, "-n", "default", "-o", "json"])
            .unwrap_or_else(|e| format!("(kubectl failed: {e})"))
    }

    pub fn generation(&self, node: &str) -> String {
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
    pub fn check<T>(&self, r: Result<T, String>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.fail(&e),
        }
    }

    pub fn fail(&self, why: &str) -> ! {
        panic!("{why}");
    }

    pub fn diagnostics(&self) {
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
            tail(&self.operator_log, 120)
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

impl Drop for KubeLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.diagnostics();
        }
    }
}
