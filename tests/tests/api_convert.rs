//! From keepalived to the cluster, end to end: three per-node unicast keepalived.conf files (as
//! one would keep them for three hosts: each with its own `unicast_src_ip` and one peer list
//! naming every host, its own address included) are merged by `kube-vrrp-agent convert
//! a.conf b.conf c.conf --node-names n1,n2,n3`, applied with `kubectl apply -n default -f`
//! (the output is namespace-less) to a real API server, planned by the operator and run by
//! three `kube-vrrp-agent run` in a 3-host netns lab. Exactly one master is elected (the
//! highest priority), no node goes to FAULT, and exactly one host holds the VIP.
//!
//! Needs root and `KUBEBUILDER_ASSETS` (else SKIPPED); the debug binaries of the agent and the
//! operator (`cargo build -p kube-vrrp-agent -p kube-vrrp-operator`).

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

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

/// Host `i`'s keepalived.conf: its own source, every host as a peer (its own included).
fn node_conf(i: usize, addrs: &[IpAddr]) -> String {
    let peers: String = addrs.iter().map(|a| format!("        {a}\n")).collect();
    format!(
        "! keepalived.conf of {node}, kept by hand like its two siblings\n\
         global_defs {{\n    router_id {node}\n    enable_script_security\n}}\n\n\
         vrrp_instance API_VIP {{\n    state {state}\n    interface eth0\n    virtual_router_id 61\n    \
         priority {prio}\n    version 3\n    advert_int 1\n    unicast_src_ip {src}\n    unicast_peer {{\n{peers}    }}\n    \
         virtual_ipaddress {{\n        {VIP} label eth0:api\n    }}\n}}\n",
        node = NODES[i],
        state = if i == 0 { "MASTER" } else { "BACKUP" },
        prio = 150 - 20 * i,
        src = addrs[i],
    )
}

/// Field order is drop order: processes first, the API server last.
struct Env {
    operator: Option<ProcGuard>,
    agents: Vec<ProcGuard>,
    _forwards: Vec<NetnsForward>,
    _sims: Vec<NodeSim>,
    lab: Lab,
    api: ApiServer,
    dir: tempfile::TempDir,
}

impl Env {
    fn diagnostics(&self) {
        say(&format!(
            "--- VirtualIPs ---\n{}",
            self.api
                .kubectl(&["get", "vip", "-A", "-o", "yaml"])
                .unwrap_or_default()
        ));
        say(&format!(
            "--- VRRPNodes ---\n{}",
            self.api
                .kubectl(&["get", "vrrpnodes", "-o", "yaml"])
                .unwrap_or_default()
        ));
        say(&format!(
            "--- operator log tail ---\n{}",
            tail(&self.dir.path().join("operator.log"), 40)
        ));
        for n in NODES {
            say(&format!(
                "--- agent {n} log tail ---\n{}",
                tail(&self.dir.path().join(format!("agent-{n}.log")), 25)
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

fn status(api: &ApiServer, name: &str) -> Value {
    api.kubectl(&["get", "vip", name, "-n", "default", "-o", "json"])
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .map(|v| v["status"].clone())
        .unwrap_or(Value::Null)
}

/// The node states in a status, by node.
fn states(s: &Value) -> Vec<(String, String)> {
    s["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            (
                n["node"].as_str().unwrap_or("?").to_string(),
                n["state"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}

#[test]
fn three_converted_unicast_files_elect_one_master_without_fault() {
    lab::skip_unless_root!("three_converted_unicast_files_elect_one_master_without_fault");
    let api = lab::skip_unless_api!();
    let lab = LabBuilder::default().hosts(3).build().expect("lab");
    let dir = tempfile::Builder::new()
        .prefix("kvapicv-")
        .tempdir()
        .expect("temp dir");
    lab::kubelab::install_crds(&api);
    let addrs: Vec<IpAddr> = (0..3).map(|i| IpAddr::V4(lab.host(i).ipv4)).collect();
    let mut sims = Vec::new();
    for (i, n) in NODES.iter().enumerate() {
        let mut sim = api.node_sim(n, &[], &[addrs[i]]).expect("node sim");
        sim.start_heartbeat(Duration::from_secs(2));
        sims.push(sim);
    }
    let mut forwards = Vec::new();
    for h in lab.hosts() {
        forwards.push(api.expose_in_netns(&h.netns).expect("forwarder"));
    }
    let mut env = Env {
        operator: None,
        agents: Vec::new(),
        _forwards: forwards,
        _sims: sims,
        lab,
        api,
        dir,
    };

    // The three files, converted together.
    let files: Vec<PathBuf> = (0..3)
        .map(|i| {
            let p = env.dir.path().join(format!("{}.conf", NODES[i]));
            std::fs::write(&p, node_conf(i, &addrs)).expect("write conf");
            p
        })
        .collect();
    let agent = lab::daemon::agent_bin();
    assert!(
        agent.exists(),
        "{agent:?} missing: run `cargo build -p kube-vrrp-agent -p kube-vrrp-operator`"
    );
    let out = Command::new(&agent)
        .arg("convert")
        .args(&files)
        .args(["--node-names", "n1,n2,n3"])
        .output()
        .expect("run convert");
    let yaml = String::from_utf8_lossy(&out.stdout).to_string();
    let warnings = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "convert failed:\n{warnings}");
    say(&format!("--- convert warnings ---\n{warnings}"));
    assert!(
        !yaml.contains("namespace:"),
        "namespace-less output:\n{yaml}"
    );
    let vip_file = env.dir.path().join("vip.yaml");
    std::fs::write(&vip_file, &yaml).expect("write yaml");
    env.api
        .kubectl(&["apply", "-n", "default", "-f", &vip_file.to_string_lossy()])
        .expect("kubectl apply -n default -f vip.yaml");

    // Agents and operator.
    for (i, node) in NODES.iter().enumerate() {
        let state = env.dir.path().join(node);
        std::fs::create_dir_all(&state).expect("state dir");
        let metrics = format!("127.0.0.1:{}", free_port().expect("port"));
        let argv = [
            agent.to_str().expect("utf-8 path"),
            "run",
            "--node-name",
            node,
            "--lease-namespace",
            LEASE_NS,
            "--state-dir",
            state.to_str().expect("utf-8 path"),
            "--metrics-addr",
            &metrics,
        ];
        let mut cmd = lab::netns::command_in(&env.lab.host(i).netns, &argv);
        cmd.env("KUBECONFIG", env.api.kubeconfig_path())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info");
        let log = env.dir.path().join(format!("agent-{node}.log"));
        let g = env
            .lab
            .spawn_cmd(cmd, &format!("agent {node}"), Some(&log))
            .expect("spawn agent");
        env.agents.push(g);
    }
    let op = operator_bin();
    assert!(op.exists(), "{op:?} missing");
    let mut cmd = Command::new(&op);
    // No --identity: outside a pod the operator picks its own lease identity.
    cmd.args([
        "run",
        "--lease-namespace",
        LEASE_NS,
        "--metrics-addr",
        &format!("127.0.0.1:{}", free_port().expect("port")),
    ])
    .env_remove("POD_NAME")
    .env("KUBECONFIG", env.api.kubeconfig_path())
    .env("NO_COLOR", "1")
    .stdin(Stdio::null());
    let f = std::fs::File::create(env.dir.path().join("operator.log")).expect("log");
    cmd.stdout(f.try_clone().expect("dup")).stderr(f);
    env.operator = Some(ProcGuard::spawn(env.lab.registry(), cmd, "operator").expect("spawn"));

    // One master (n1, the highest priority), the others BACKUP, none FAULT.
    let name = "api-vip";
    let settled = wait_every(
        Duration::from_millis(250),
        Duration::from_secs(45),
        "n1 MASTER, n2 and n3 BACKUP",
        || {
            let s = status(&env.api, name);
            let st = states(&s);
            let want = [("n1", "MASTER"), ("n2", "BACKUP"), ("n3", "BACKUP")];
            (s["master"] == "n1"
                && s["phase"] == "Active"
                && st.len() == 3
                && want
                    .iter()
                    .all(|(n, w)| st.iter().any(|(m, x)| m == n && x == w)))
            .then_some(s)
        },
    );
    let s = match settled {
        Ok(s) => s,
        Err(e) => panic!("{e}; last status {}", status(&env.api, name)),
    };
    say(&format!("settled: {}", s["nodesSummary"]));
    assert_eq!(s["nodesSummary"], "1M/2B/0F");
    env.lab
        .wait_holder(VIP, 0, Duration::from_secs(10))
        .expect("n1 alone holds the VIP");

    // It stays that way: one holder on the wire, no FAULT reported, for 5 s.
    lab::wait::holds_every(
        Duration::from_millis(200),
        Duration::from_secs(5),
        "one master, no FAULT",
        || {
            let s = status(&env.api, name);
            env.lab.holders(VIP) == vec![0]
                && s["nodesSummary"] == "1M/2B/0F"
                && !states(&s).iter().any(|(_, st)| st == "FAULT")
        },
    )
    .expect("stable");

    // Each node's instance left its own address out of the shared peer list.
    for (i, n) in NODES.iter().enumerate() {
        let spec = env
            .api
            .kubectl(&["get", "vrrpnode", n, "-o", "json"])
            .expect("VRRPNode");
        let v: Value = serde_json::from_str(&spec).expect("json");
        let inst = &v["spec"]["instances"][0];
        let peers: Vec<&str> = inst["unicastPeers"]
            .as_array()
            .expect("peers")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let own = addrs[i].to_string();
        assert_eq!(peers.len(), 2, "{n}: {peers:?}");
        assert!(!peers.contains(&own.as_str()), "{n}: {peers:?}");
        assert_eq!(inst["unicastSource"], own.as_str(), "{n}");
    }
    // The operator chose its own lease identity (host name plus suffix).
    let holder = env
        .api
        .kubectl(&[
            "get",
            "lease",
            "kube-vrrp-operator",
            "-n",
            LEASE_NS,
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .expect("operator lease");
    assert!(!holder.trim().is_empty(), "operator lease holder");
    say(&format!("operator lease identity: {holder}"));
}
