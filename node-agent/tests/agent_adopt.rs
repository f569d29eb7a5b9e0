//! Adoption of a static instance by the in-cluster agent, on one host (root: network
//! namespaces).
//!
//! The test's namespace is the host: `kube-vrrp-agent standalone` runs the API VIP from a
//! VirtualIP file (the static pod) and becomes MASTER. Then `kube-vrrp-agent run` starts next
//! to it against a stand-in API server that serves this node's VRRPNode with the same instance
//! and `adoptStatic` (what the operator plans for a VirtualIP annotated
//! `kubevrrp.io/adopt-static: "true"`). The peer namespace captures every advert on the wire,
//! and `ip monitor address` records every address change on the host.
//!
//! - Agreeing configurations: the in-cluster agent takes the instance over in state MASTER and
//!   reports `adoption: Adopted`; no address is ever removed (no VIP flap), every advert has
//!   the same priority and no two are further apart than one advert interval (plus scheduling
//!   noise well below a missed advert); the static agent then exits on SIGTERM without
//!   touching the VIP.
//! - Differing configurations (another priority): nothing changes, the in-cluster agent
//!   reports `adoption: Mismatch` naming `priority`, the static agent stays MASTER.

mod agent_proc;
mod net_lab;

use agent_proc::{AgentProcess, free_port, status};

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, patch};
use crds::resolve::{NodeFacts, ResolveInput, resolve};
use crds::vrrpnode::ObjectRef;
use crds::{VRRPNode, VRRPNodeSpec, VirtualIP};

const NODE: &str = "node-a";
const INTERVAL: Duration = Duration::from_millis(100);
const VIP: &str = "192.0.2.200/24";

fn virtual_ip_yaml(priority: u8) -> String {
    format!(
        "apiVersion: kubevrrp.io/v1alpha1
kind: VirtualIP
metadata:
  name: api
  namespace: kube-system
  annotations:
    kubevrrp.io/adopt-static: \"true\"
spec:
  virtualRouterID: 51
  version: 3
  advertInterval: {}ms
  addresses: [{VIP}]
  garp: {{masterDelay: 0s}}
  nodes:
    - {{name: {NODE}, priority: {priority}}}
  track:
    interfaces: [{{name: eth0, weight: 0}}]
",
        INTERVAL.as_millis()
    )
}

/// The VRRPNode spec the operator plans for `yaml` on this node: resolved without the node's
/// interfaces (the operator does not know them), `adoptStatic` from the annotation.
fn planned(yaml: &str) -> VRRPNodeSpec {
    let vip: VirtualIP = serde_yaml::from_str(yaml).unwrap();
    let facts = NodeFacts {
        name: NODE.into(),
        ..Default::default()
    };
    let mut inst = resolve(&ResolveInput {
        instance_name: "kube-system/api".into(),
        virtual_ip: Some(ObjectRef {
            namespace: "kube-system".into(),
            name: "api".into(),
        }),
        spec: &vip.spec,
        allocated_vrid: None,
        node: &facts,
        default_priority: None,
        peer_node_addresses: vec![],
        auth_pass: None,
    })
    .unwrap();
    inst.adopt_static = true;
    let instances = vec![inst];
    VRRPNodeSpec {
        config_hash: crds::vrrpnode::config_hash(&instances),
        instances,
    }
}

#[derive(Default)]
struct Api {
    spec: VRRPNodeSpec,
    patches: Vec<serde_json::Value>,
}

async fn list_or_watch(
    State(api): State<Arc<Mutex<Api>>>,
    uri: axum::http::Uri,
) -> axum::response::Response {
    let query = uri.query().unwrap_or_default().to_owned();
    if query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1")
    {
        let body = Body::from_stream(futures::stream::pending::<
            Result<Bytes, std::convert::Infallible>,
        >());
        return axum::response::Response::builder()
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
    }
    let mut node = VRRPNode::new(NODE, api.lock().unwrap().spec.clone());
    node.metadata.resource_version = Some("10".into());
    let list = serde_json::json!({
        "apiVersion": "kubevrrp.io/v1alpha1", "kind": "VRRPNodeList",
        "metadata": {"resourceVersion": "10"}, "items": [node],
    });
    axum::response::Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&list).unwrap()))
        .unwrap()
}

async fn patch_status(State(api): State<Arc<Mutex<Api>>>, body: Bytes) -> (StatusCode, String) {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut api = api.lock().unwrap();
    api.patches.push(v.clone());
    let mut node = serde_json::to_value(VRRPNode::new(NODE, api.spec.clone())).unwrap();
    node["status"] = v["status"].clone();
    (StatusCode::OK, node.to_string())
}

/// One advert seen on the wire: when, from whom, with what priority.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    wall: std::time::SystemTime,
    src: [u8; 4],
    priority: u8,
}

/// Captures VRID 51 adverts on the peer's eth0 until stopped.
struct Wire {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Wire {
    fn start(lab: &net_lab::Lab) -> Wire {
        let ifindex = lab.peer.ifindex("eth0");
        let cap = lab.peer.within(|| net_lab::Capture::open(ifindex));
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s2, v2) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s2.load(Ordering::SeqCst) {
                // SAFETY: reading into a live buffer; the socket has a 100 ms receive timeout.
                let n = unsafe { libc::recv(cap.raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                let (at, wall) = (Instant::now(), std::time::SystemTime::now());
                if n <= 34 {
                    continue;
                }
                let f = &buf[..n as usize];
                // Ethernet IPv4, protocol 112, VRID 51.
                if f[12..14] != [0x08, 0x00] || f[23] != 112 {
                    continue;
                }
                let ihl = usize::from(f[14] & 0x0f) * 4;
                let vrrp = &f[14 + ihl..];
                if vrrp.len() < 3 || vrrp[1] != 51 {
                    continue;
                }
                v2.lock().unwrap().push(Seen {
                    at,
                    wall,
                    src: [f[26], f[27], f[28], f[29]],
                    priority: vrrp[2],
                });
            }
        });
        Wire {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Seen> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.seen.lock().unwrap().clone()
    }
}

fn kubeconfig(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: fake\n  user:\n    token: test\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\n"
        ),
    )
    .unwrap();
    path
}

fn spawn_agent(
    args: &[&str],
    log: &std::path::Path,
    env: &[(&str, &std::path::Path)],
) -> AgentProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kube-vrrp-agent"));
    cmd.args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    AgentProcess(Some(cmd.spawn().unwrap()))
}

fn instance(port: u16, name: &str) -> Option<serde_json::Value> {
    let st = status(port)?;
    st["instances"]
        .as_array()?
        .iter()
        .find(|i| i["name"] == name)
        .cloned()
}

async fn wait_async(what: &str, logs: &[&std::path::Path], mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        if Instant::now() > deadline {
            let text: Vec<String> = logs
                .iter()
                .map(|l| {
                    format!(
                        "--- {}:\n{}",
                        l.display(),
                        std::fs::read_to_string(l).unwrap_or_default()
                    )
                })
                .collect();
            panic!("timed out waiting for {what}\n{}", text.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Host {
    dir: tempfile::TempDir,
    static_port: u16,
    run_port: u16,
    api: Arc<Mutex<Api>>,
}

impl Host {
    fn path(&self, p: &str) -> std::path::PathBuf {
        self.dir.path().join(p)
    }
}

/// The static agent as MASTER with the VIP, and a stand-in API server for `cluster_yaml`.
async fn static_master(lab: &net_lab::Lab, cluster_yaml: &str) -> (Host, AgentProcess) {
    lab.veth();
    let h = Host {
        dir: tempfile::tempdir().unwrap(),
        static_port: free_port(),
        run_port: free_port(),
        api: Arc::new(Mutex::new(Api {
            spec: planned(cluster_yaml),
            patches: Vec::new(),
        })),
    };
    std::fs::write(h.path("control-plane.yaml"), virtual_ip_yaml(200)).unwrap();
    for d in ["static-state", "run-state"] {
        std::fs::create_dir_all(h.path(d)).unwrap();
    }
    let static_log = h.path("static.log");
    let (cfg, state) = (h.path("control-plane.yaml"), h.path("static-state"));
    let metrics = format!("127.0.0.1:{}", h.static_port);
    let agent = spawn_agent(
        &[
            "standalone",
            "--config",
            cfg.to_str().unwrap(),
            "--node-name",
            NODE,
            "--state-dir",
            state.to_str().unwrap(),
            "--metrics-addr",
            &metrics,
        ],
        &static_log,
        &[],
    );
    let port = h.static_port;
    wait_async("the static agent MASTER", &[&static_log], || {
        instance(port, "kube-system/api").is_some_and(|i| i["state"] == "MASTER")
    })
    .await;
    (h, agent)
}

/// Serve the stand-in API and start `kube-vrrp-agent run` next to the static agent.
async fn start_run_agent(h: &Host) -> (AgentProcess, tokio::task::JoinHandle<()>) {
    let api_port = free_port();
    let app = Router::new()
        .route("/apis/kubevrrp.io/v1alpha1/vrrpnodes", get(list_or_watch))
        .route(
            &format!("/apis/kubevrrp.io/v1alpha1/vrrpnodes/{NODE}/status"),
            patch(patch_status),
        )
        .with_state(Arc::clone(&h.api));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], api_port)))
        .await
        .unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let kc = kubeconfig(h.dir.path(), api_port);
    let state = h.path("run-state");
    let metrics = format!("127.0.0.1:{}", h.run_port);
    let agent = spawn_agent(
        &[
            "run",
            "--node-name",
            NODE,
            "--state-dir",
            state.to_str().unwrap(),
            "--metrics-addr",
            &metrics,
        ],
        &h.path("run.log"),
        &[("KUBECONFIG", &kc)],
    );
    (agent, server)
}

fn last_reported_adoption(h: &Host) -> Option<serde_json::Value> {
    let api = h.api.lock().unwrap();
    api.patches
        .iter()
        .rev()
        .find_map(|p| p["status"]["instances"].as_array()?.first().cloned())
        .map(|i| i["adoption"].clone())
}

/// The time of the first log line containing `what` (the text log's RFC 3339 prefix).
fn log_time(log: &str, what: &str) -> Option<std::time::SystemTime> {
    let line = log.lines().find(|l| l.contains(what))?;
    let stamp = line.split_whitespace().next()?;
    let t = chrono::DateTime::parse_from_rfc3339(stamp).ok()?;
    Some(std::time::SystemTime::from(t))
}

fn sigterm(agent: &mut AgentProcess) -> std::process::ExitStatus {
    let mut child = agent.0.take().unwrap();
    // SAFETY: signalling our own child by PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap()
}

#[test]
fn agent_run_adopts_a_static_master_without_a_vip_flap_or_an_advert_gap() {
    net_lab::run(
        "agent_run_adopts_a_static_master_without_a_vip_flap_or_an_advert_gap",
        |lab| async move {
            let (h, mut static_agent) = static_master(&lab, &virtual_ip_yaml(200)).await;
            let vip_held = || lab.home.sh("ip -br addr show dev eth0").contains(VIP);
            wait_async("the VIP bound", &[&h.path("static.log")], vip_held).await;
            // From here on: every address change on the host, and every advert on the wire.
            let monitor_log = h.path("monitor.log");
            let mut monitor = Command::new("ip")
                .args(["-o", "monitor", "address", "dev", "eth0"])
                .stdout(std::fs::File::create(&monitor_log).unwrap())
                .spawn()
                .unwrap();
            let wire = Wire::start(&lab);
            tokio::time::sleep(5 * INTERVAL).await;

            let run_started = Instant::now();
            let (mut run_agent, server) = start_run_agent(&h).await;
            let logs = [h.path("static.log"), h.path("run.log")];
            let log_refs: Vec<&std::path::Path> = logs.iter().map(|p| p.as_path()).collect();
            let run_port = h.run_port;
            wait_async("the in-cluster agent MASTER by adoption", &log_refs, || {
                instance(run_port, "kube-system/api").is_some_and(|i| i["state"] == "MASTER")
            })
            .await;
            let adopted_at = Instant::now();
            wait_async("the adoption reported to the API", &log_refs, || {
                last_reported_adoption(&h).is_some_and(|a| a["phase"] == "Adopted")
            })
            .await;
            let static_port = h.static_port;
            let held = instance(static_port, "kube-system/api").unwrap();
            assert_eq!(held["vips"], serde_json::json!([]), "{held}");
            assert!(
                held["reason"]
                    .as_str()
                    .unwrap_or("")
                    .contains("handed over"),
                "{held}"
            );
            // Keep watching the wire for a while with the in-cluster agent in charge.
            tokio::time::sleep(10 * INTERVAL).await;
            // The static pod goes away: SIGTERM, exit 0, the VIP stays.
            let static_stopped = Instant::now();
            let exit = sigterm(&mut static_agent);
            assert!(exit.success(), "static agent exit {exit:?}");
            tokio::time::sleep(10 * INTERVAL).await;
            assert!(vip_held(), "the VIP is still bound");
            let seen = wire.finish();
            let _ = monitor.kill();
            let _ = monitor.wait();

            let run_log = std::fs::read_to_string(&logs[1]).unwrap();
            let static_log = std::fs::read_to_string(&logs[0]).unwrap();
            // No VIP flap: the address was never deleted.
            let changes = std::fs::read_to_string(&monitor_log).unwrap();
            assert!(
                !changes
                    .lines()
                    .any(|l| l.starts_with("Deleted") && l.contains("192.0.2.200")),
                "the VIP was removed during the hand-over:\n{changes}"
            );
            // No state flap: one transition on each side, none through BACKUP or priority 0.
            assert_eq!(
                run_log.matches("Entering MASTER STATE").count(),
                1,
                "{run_log}"
            );
            assert!(
                run_log.contains("took over the running instance in state MASTER"),
                "{run_log}"
            );
            assert!(!run_log.contains("Entering BACKUP STATE"), "{run_log}");
            let became_master = static_log.find("Entering MASTER STATE").unwrap_or(0);
            assert!(
                !static_log[became_master..].contains("Entering BACKUP STATE"),
                "{static_log}"
            );
            assert!(
                static_log.contains("handed over to another agent"),
                "{static_log}"
            );
            // The wire: adverts from the host only, same priority, none missed.
            assert!(seen.len() > 20, "{} adverts", seen.len());
            assert!(seen.iter().all(|s| s.src == [192, 0, 2, 1]), "{seen:?}");
            assert!(
                seen.iter().all(|s| s.priority == 200),
                "priorities {:?}",
                seen.iter().map(|s| s.priority).collect::<Vec<_>>()
            );
            let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].at - w[0].at).collect();
            let max_gap = gaps.iter().max().copied().unwrap_or_default();
            let t0 = seen[0].at;
            let timeline: Vec<String> = seen
                .windows(2)
                .map(|w| format!("{:?}+{:?}", w[0].at - t0, w[1].at - w[0].at))
                .collect();
            eprintln!(
                "run agent started at {:?}, adopted by {:?}, static SIGTERM at {:?}; adverts at+gap: {timeline:?}",
                run_started - t0,
                adopted_at - t0,
                static_stopped - t0
            );
            eprintln!(
                "{} adverts across the hand-over and the static agent's exit; largest gap {max_gap:?} (interval {INTERVAL:?})",
                seen.len()
            );
            // The gap that spans the hand-over (the in-cluster agent's "took over" log line):
            // one interval, plus scheduling noise.
            let took_over = log_time(
                &run_log,
                "took over the running instance of the other agent",
            )
            .expect("the in-cluster agent logs the take-over");
            let i = seen
                .windows(2)
                .position(|w| w[0].wall <= took_over && took_over < w[1].wall)
                .expect("adverts on both sides of the take-over");
            let handover_gap = seen[i + 1].at - seen[i].at;
            eprintln!("advert gap across the hand-over: {handover_gap:?}");
            assert!(
                handover_gap <= INTERVAL + Duration::from_millis(40),
                "advert gap across the hand-over {handover_gap:?} is longer than one interval ({INTERVAL:?})"
            );
            // Anywhere else: never a missed advert (the cadence keeps its grid; a busy shared
            // machine may wake the agent late, which it logs as "timer expired late").
            let late = run_log.matches("timer expired late").count()
                + static_log.matches("timer expired late").count();
            assert!(
                max_gap < 2 * INTERVAL,
                "an advert was missed: gap {max_gap:?} ({late} late wake-ups logged); gaps {gaps:?}"
            );
            let exit = sigterm(&mut run_agent);
            assert!(exit.success(), "run agent exit {exit:?}");
            assert!(
                !vip_held(),
                "the in-cluster agent removes the VIP it adopted on SIGTERM"
            );
            server.abort();
        },
    );
}

#[test]
fn agent_run_leaves_a_differing_static_instance_alone_and_says_why() {
    net_lab::run(
        "agent_run_leaves_a_differing_static_instance_alone_and_says_why",
        |lab| async move {
            // The cluster's VirtualIP says priority 199 for this node; the static file says 200.
            let (h, mut static_agent) = static_master(&lab, &virtual_ip_yaml(199)).await;
            let (mut run_agent, server) = start_run_agent(&h).await;
            let logs = [h.path("static.log"), h.path("run.log")];
            let log_refs: Vec<&std::path::Path> = logs.iter().map(|p| p.as_path()).collect();
            wait_async("the mismatch reported to the API", &log_refs, || {
                last_reported_adoption(&h).is_some_and(|a| a["phase"] == "Mismatch")
            })
            .await;
            let a = last_reported_adoption(&h).unwrap();
            let message = a["message"].as_str().unwrap_or("");
            assert!(message.contains("differs in priority"), "{message}");
            // Nothing changed: the static agent is still MASTER with the VIP, across retries.
            tokio::time::sleep(agent::daemon::HELD_RETRY * 2).await;
            let st = instance(h.static_port, "kube-system/api").unwrap();
            assert_eq!(st["state"], "MASTER", "{st}");
            assert!(lab.home.sh("ip -br addr show dev eth0").contains(VIP));
            // The in-cluster agent shows the static instance's state as it sees it.
            let r = instance(h.run_port, "kube-system/api").unwrap();
            assert_eq!(r["state"], "MASTER", "{r}");
            assert!(r["vips"].as_array().is_some_and(|v| v.is_empty()), "{r}");
            let static_log = std::fs::read_to_string(&logs[0]).unwrap();
            assert!(!static_log.contains("handed over"), "{static_log}");
            assert_eq!(static_log.matches("Entering MASTER STATE").count(), 1);
            // Stopping the in-cluster agent changes nothing for the static one.
            let exit = sigterm(&mut run_agent);
            assert!(exit.success(), "run agent exit {exit:?}");
            assert!(lab.home.sh("ip -br addr show dev eth0").contains(VIP));
            let exit = sigterm(&mut static_agent);
            assert!(exit.success());
            server.abort();
        },
    );
}
