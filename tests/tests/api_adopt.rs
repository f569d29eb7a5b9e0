//! The control-plane VIP handed from static pods to the cluster, on a real API server
//! (etcd + kube-apiserver, `lab::apiserver`), three simulated Nodes and a 3-host netns lab.
//!
//! Each host first runs `kube-vrrp-agent standalone` from one VirtualIP file with
//! `--node-name` (the static pods): n1 (priority 200) becomes MASTER of 192.0.2.200/24. Then
//! the in-cluster agents (`kube-vrrp-agent run`) and the operator start, and the same
//! VirtualIP is applied with `kubevrrp.io/adopt-static: "true"`. The in-cluster agents take
//! the instances over; the status shows n1 as master and `Adopted=True`; the static agents are
//! stopped. Throughout: the VIP is never removed from n1 (`ip monitor address`), and the
//! adverts on the wire (a capture on the client) keep their priority and cadence: the gap
//! across n1's take-over is at most one advert interval.
//!
//! Needs root and `KUBEBUILDER_ASSETS`; otherwise it prints its SKIPPED line. The agent and
//! operator are the debug binaries (`cargo build -p kube-vrrp-agent -p kube-vrrp-operator`).

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lab::apiserver::{NetnsForward, NodeSim, free_port, tail, wait_every};
use lab::{LabBuilder, ProcGuard};
use serde_json::Value;

const VIP: &str = "192.0.2.200/24";
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const LEASE_NS: &str = "kube-vrrp";
const INTERVAL: Duration = Duration::from_secs(1);

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

fn virtual_ip(name: &str) -> String {
    format!(
        "apiVersion: kubevrrp.io/v1alpha1
kind: VirtualIP
metadata:
  name: {name}
  namespace: default
  annotations:
    kubevrrp.io/adopt-static: \"true\"
spec:
  virtualRouterID: 51
  version: 3
  advertInterval: {}s
  interface: eth0
  addresses: [{VIP}]
  nodes:
    - {{name: n1, priority: 200}}
    - {{name: n2, priority: 150}}
    - {{name: n3, priority: 100}}
",
        INTERVAL.as_secs()
    )
}

fn condition<'a>(vip: &'a Value, type_: &str) -> Option<&'a Value> {
    vip["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// The first line of `log` containing `what`, as a time (the text log's RFC 3339 prefix).
fn log_time(log: &Path, what: &str) -> Option<f64> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains(what))?;
    let stamp = line.split_whitespace().next()?;
    let t = chrono::DateTime::parse_from_rfc3339(stamp).ok()?;
    Some(t.timestamp_micros() as f64 / 1e6)
}

#[test]
fn api_in_cluster_agents_adopt_the_static_vip_without_a_flap() {
    lab::skip_unless_root!("api_in_cluster_agents_adopt_the_static_vip_without_a_flap");
    let api = lab::skip_unless_api!();
    for b in [lab::daemon::agent_bin(), operator_bin()] {
        assert!(
            b.exists(),
            "{b:?} missing: run `cargo build -p kube-vrrp-agent -p kube-vrrp-operator`"
        );
    }
    let lab = LabBuilder::default().hosts(3).build().expect("lab");
    let dir = tempfile::Builder::new()
        .prefix("kvapiadopt-")
        .tempdir()
        .expect("temp dir");
    let name = format!(
        "api-{}-{:04x}",
        std::process::id(),
        lab::topology::random_u16()
    );
    let yaml = virtual_ip(&name);
    let file = dir.path().join("control-plane.yaml");
    std::fs::write(&file, &yaml).expect("write the VirtualIP file");
    let agent = lab::daemon::agent_bin();
    let agent_s = agent.to_str().expect("utf-8 path");
    let logs = |what: &str| -> Vec<PathBuf> {
        NODES
            .iter()
            .map(|n| dir.path().join(format!("{what}-{n}.log")))
            .collect()
    };
    let (static_logs, run_logs) = (logs("static"), logs("run"));
    let operator_log = dir.path().join("operator.log");
    let dump = |why: &str| -> ! {
        for (i, n) in NODES.iter().enumerate() {
            say(&format!(
                "--- static {n} ---\n{}",
                tail(&static_logs[i], 30)
            ));
            say(&format!("--- run {n} ---\n{}", tail(&run_logs[i], 30)));
        }
        say(&format!("--- operator ---\n{}", tail(&operator_log, 40)));
        panic!("{why}");
    };

    // 1. The static pods: standalone agents from the file, each with its node name.
    let mut statics: Vec<Option<ProcGuard>> = Vec::new();
    for (i, n) in NODES.iter().enumerate() {
        let state = dir.path().join(format!("static-state-{n}"));
        std::fs::create_dir_all(&state).expect("state dir");
        let argv = [
            agent_s,
            "standalone",
            "--config",
            file.to_str().expect("utf-8 path"),
            "--node-name",
            n,
            "--state-dir",
            state.to_str().expect("utf-8 path"),
            "--metrics-addr",
            "127.0.0.1:9742",
        ];
        let mut cmd = lab::netns::command_in(&lab.host(i).netns, &argv);
        cmd.env("NO_COLOR", "1").env("RUST_LOG", "info");
        statics.push(Some(
            lab.spawn_cmd(cmd, &format!("static {n}"), Some(&static_logs[i]))
                .expect("spawn static agent"),
        ));
    }
    if let Err(e) = lab.wait_holder(VIP, 0, Duration::from_secs(20)) {
        dump(&format!("n1's static agent did not take the VIP: {e}"));
    }
    // From here on: address changes on n1, adverts on the wire.
    let monitor_log = dir.path().join("monitor-n1.log");
    let monitor = lab
        .spawn(
            lab.host(0),
            &["ip", "-o", "monitor", "address", "dev", "eth0"],
            Some(&monitor_log),
        )
        .expect("ip monitor");
    let mut capture = lab.capture(lab.client(), "ip proto 112").expect("capture");

    // 2. The cluster: CRDs, Nodes, in-cluster agents, operator.
    lab::kubelab::install_crds(&api);
    let mut sims: Vec<NodeSim> = Vec::new();
    for (i, n) in NODES.iter().enumerate() {
        let addr = IpAddr::V4(lab.host(i).ipv4);
        let mut sim = api.node_sim(n, &[], &[addr]).expect("node sim");
        sim.start_heartbeat(Duration::from_secs(2));
        sims.push(sim);
    }
    let _forwards: Vec<NetnsForward> = lab
        .hosts()
        .iter()
        .map(|h| api.expose_in_netns(&h.netns).expect("forwarder"))
        .collect();
    let mut runs: Vec<ProcGuard> = Vec::new();
    for (i, n) in NODES.iter().enumerate() {
        let state = dir.path().join(format!("run-state-{n}"));
        std::fs::create_dir_all(&state).expect("state dir");
        let port = free_port().expect("port").to_string();
        let metrics = format!("127.0.0.1:{port}");
        let argv = [
            agent_s,
            "run",
            "--node-name",
            n,
            "--lease-namespace",
            LEASE_NS,
            "--state-dir",
            state.to_str().expect("utf-8 path"),
            "--metrics-addr",
            &metrics,
        ];
        let mut cmd = lab::netns::command_in(&lab.host(i).netns, &argv);
        cmd.env("KUBECONFIG", api.kubeconfig_path())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info");
        runs.push(
            lab.spawn_cmd(cmd, &format!("run {n}"), Some(&run_logs[i]))
                .expect("spawn agent"),
        );
    }
    let op_port = free_port().expect("port");
    let mut op = Command::new(operator_bin());
    op.args([
        "run",
        "--lease-namespace",
        LEASE_NS,
        "--identity",
        "op-1",
        "--metrics-addr",
        &format!("127.0.0.1:{op_port}"),
    ])
    .env("KUBECONFIG", api.kubeconfig_path())
    .env("NO_COLOR", "1")
    .env("RUST_LOG", "info")
    .stdin(Stdio::null());
    let f = std::fs::File::create(&operator_log).expect("operator log");
    op.stdout(f.try_clone().expect("dup")).stderr(f);
    let _operator = ProcGuard::spawn(lab.registry(), op, "operator").expect("spawn operator");

    // 3. The VirtualIP, annotated: the in-cluster agents take over.
    let obj: Value = serde_yaml::from_str(&yaml).expect("YAML");
    api.kubectl_client().apply(&obj).expect("apply VirtualIP");
    let get = || -> Option<Value> {
        api.kubectl(&["get", "vip", &name, "-n", "default", "-o", "json"])
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
    };
    let adopted = wait_every(
        Duration::from_millis(250),
        Duration::from_secs(60),
        "Adopted=True with n1 Active",
        || {
            let v = get()?;
            let ok = v["status"]["master"] == "n1"
                && v["status"]["phase"] == "Active"
                && condition(&v, "Adopted").is_some_and(|c| c["status"] == "True");
            ok.then_some(v)
        },
    );
    let vip = match adopted {
        Ok(v) => v,
        Err(e) => dump(&format!("{e}; last: {:?}", get())),
    };
    let cond = condition(&vip, "Adopted").cloned().unwrap_or_default();
    say(&format!(
        "Adopted: {} ({})",
        cond["message"].as_str().unwrap_or(""),
        cond["reason"].as_str().unwrap_or("")
    ));
    assert_eq!(
        cond["message"], "took over the static instance on n1, n2, n3",
        "{cond}"
    );
    let nodes = vip["status"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let states: Vec<(String, String)> = nodes
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap_or("").to_string(),
                n["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [("n1", "MASTER"), ("n2", "BACKUP"), ("n3", "BACKUP")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );

    // 4. The static pods go away: nothing moves.
    for s in &mut statics {
        if let Some(g) = s.take() {
            g.signal(libc::SIGTERM).expect("SIGTERM");
            let exit = g
                .wait_exit(Duration::from_secs(10))
                .expect("static agent exit");
            assert!(exit.success(), "static agent exit {exit:?}");
        }
    }
    let settle = std::time::Instant::now();
    while settle.elapsed() < 3 * INTERVAL {
        assert_eq!(lab.holders(VIP), [0], "the VIP stays on n1 alone");
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = get().unwrap_or_default();
    assert_eq!(after["status"]["master"], "n1", "{after}");
    assert_eq!(after["status"]["phase"], "Active", "{after}");

    // The record: no VIP flap on n1, one transition per in-cluster agent, adverts on time.
    capture.stop().expect("stop capture");
    drop(monitor);
    let changes = std::fs::read_to_string(&monitor_log).unwrap_or_default();
    assert!(
        !changes
            .lines()
            .any(|l| l.starts_with("Deleted") && l.contains("192.0.2.200")),
        "the VIP was removed from n1:\n{changes}"
    );
    for (i, n) in NODES.iter().enumerate() {
        let log = std::fs::read_to_string(&run_logs[i]).unwrap_or_default();
        let entered = log.matches("Entering ").count();
        assert_eq!(entered, 1, "{n}: one transition (the take-over):\n{log}");
        assert!(
            log.contains("took over the running instance"),
            "{n}:\n{log}"
        );
    }
    let n1 = lab.host(0).ipv4.to_string();
    let adverts: Vec<lab::capture::Advert> = capture
        .adverts()
        .expect("adverts")
        .into_iter()
        .filter(|a| a.vrid == 51)
        .collect();
    assert!(
        adverts.iter().all(|a| a.src == n1 && a.priority == 200),
        "only n1 advertises, at priority 200: {:?}",
        adverts
            .iter()
            .map(|a| (a.src.clone(), a.priority))
            .collect::<Vec<_>>()
    );
    let took_over = log_time(
        &run_logs[0],
        "took over the running instance of the other agent",
    )
    .expect("n1's take-over in its log");
    let i = adverts
        .windows(2)
        .position(|w| w[0].time <= took_over && took_over < w[1].time)
        .expect("adverts on both sides of the take-over");
    let gap = Duration::from_secs_f64(adverts[i + 1].time - adverts[i].time);
    let max_gap = adverts
        .windows(2)
        .map(|w| Duration::from_secs_f64(w[1].time - w[0].time))
        .max()
        .unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    say(&format!(
        "{} adverts from n1; gap across its take-over {gap:?} ({:.1} s ago), largest gap {max_gap:?} (interval {INTERVAL:?})",
        adverts.len(),
        now - took_over
    ));
    assert!(
        gap <= INTERVAL + Duration::from_millis(50),
        "advert gap across the take-over {gap:?} is longer than one interval"
    );
    assert!(max_gap < 2 * INTERVAL, "a missed advert: gap {max_gap:?}");
    drop(runs);
    drop(sims);
}
