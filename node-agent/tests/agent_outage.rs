//! In-cluster mode through an API outage: the real `kube-vrrp-agent run` holds a VRRP instance
//! in a private network namespace while its API server refuses connections, then a fake API
//! server appears and the agent writes its status — with no VRRP transition in between.
//!
//! The agent starts from its on-disk config cache (as after a node reboot with the API down),
//! becomes MASTER, must stay MASTER with the VIP bound through the outage, and must report
//! that same state (same transition time) once the API answers. SIGTERM then removes the VIP.

mod agent_proc;
mod net_lab;

use agent_proc::{AgentProcess, free_port, http_get, status, wait};

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, patch};
use crds::vrrpnode::{ResolvedGarp, ResolvedInstance};
use crds::{VRRPNode, VRRPNodeSpec};

const NODE: &str = "node-a";

fn spec() -> VRRPNodeSpec {
    VRRPNodeSpec {
        instances: vec![ResolvedInstance {
            name: "default/web".into(),
            virtual_router_id: 51,
            version: 3,
            interface: Some("eth0".into()),
            priority: 200,
            advert_interval_ms: 100,
            preempt: true,
            addresses: vec!["192.0.2.200/24".into()],
            garp: ResolvedGarp {
                master_delay_ms: 0,
                ..Default::default()
            },
            ..Default::default()
        }],
        config_hash: "outage-test".into(),
    }
}

/// What the fake API server saw.
#[derive(Default)]
struct Seen {
    status_patches: Vec<serde_json::Value>,
    watch_lists: usize,
}

async fn list_or_watch(
    State(seen): State<Arc<Mutex<Seen>>>,
    uri: axum::http::Uri,
) -> axum::response::Response {
    let query = uri.query().unwrap_or_default().to_owned();
    assert!(
        query.contains("fieldSelector=metadata.name%3Dnode-a"),
        "the watch asks for this node only: {query}"
    );
    if query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1")
    {
        // Hold the watch open without events.
        let body = Body::from_stream(futures::stream::pending::<
            Result<Bytes, std::convert::Infallible>,
        >());
        return axum::response::Response::builder()
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
    }
    seen.lock().unwrap().watch_lists += 1;
    let mut node = VRRPNode::new(NODE, spec());
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

async fn patch_status(State(seen): State<Arc<Mutex<Seen>>>, body: Bytes) -> (StatusCode, String) {
    let v: serde_json::Value = serde_json::from_slice(&body).expect("status patch is JSON");
    seen.lock().unwrap().status_patches.push(v.clone());
    let mut node = serde_json::to_value(VRRPNode::new(NODE, spec())).unwrap();
    node["status"] = v["status"].clone();
    (StatusCode::OK, node.to_string())
}

#[test]
fn agent_keeps_its_vip_through_an_api_outage_and_reports_after_recovery() {
    net_lab::run(
        "agent_keeps_its_vip_through_an_api_outage_and_reports_after_recovery",
        |lab| async move {
            lab.veth();
            let dir = tempfile::tempdir().unwrap();
            let state_dir = dir.path().join("state");
            std::fs::create_dir_all(&state_dir).unwrap();
            std::fs::write(
                state_dir.join("vrrpnode-spec.json"),
                serde_json::to_vec(&spec()).unwrap(),
            )
            .unwrap();
            let api_port = free_port();
            let metrics_port = free_port();
            let kubeconfig = dir.path().join("kubeconfig");
            std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{api_port}\nusers:\n- name: fake\n  user:\n    token: test\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\n"
            ),
        )
        .unwrap();
            let log_path = dir.path().join("agent.log");
            let log = std::fs::File::create(&log_path).unwrap();
            // Spawned from this thread, the agent lives in this test's network namespace.
            let child = Command::new(env!("CARGO_BIN_EXE_kube-vrrp-agent"))
                .args(["run", "--node-name", NODE, "--state-dir"])
                .arg(&state_dir)
                .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
                .env("KUBECONFIG", &kubeconfig)
                .env_remove("KUBERNETES_SERVICE_HOST")
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            let mut agent = AgentProcess(Some(child));
            let agent_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

            // 1. With the API down, the cached config runs: MASTER with the VIP.
            let mut master_since = None;
            wait(
                "MASTER from the cached config while the API is down",
                &log_path,
                || {
                    let st = status(metrics_port);
                    let inst = st.as_ref().map(|s| s["instances"][0].clone());
                    if inst.as_ref().is_some_and(|i| i["state"] == "MASTER") {
                        master_since = inst.map(|i| i["since"].clone());
                        true
                    } else {
                        false
                    }
                },
            );
            let vip_held = || {
                lab.home
                    .sh("ip -br addr show dev eth0")
                    .contains("192.0.2.200/24")
            };
            wait("the VIP bound while MASTER", &log_path, vip_held);
            wait("the agent notices the outage", &log_path, || {
                agent_log().contains("Kubernetes API unreachable")
            });
            assert_eq!(
                http_get(metrics_port, "/readyz").as_deref().map(str::trim),
                Some("ready"),
                "ready without the API"
            );

            let metrics = http_get(metrics_port, "/metrics").unwrap_or_default();
            assert!(
                metrics.contains("kube_vrrp_api_connected 0"),
                "outage visible in metrics:\n{metrics}"
            );
            assert!(
                metrics.contains("kube_vrrp_api_outages_total 1"),
                "one outage counted:\n{metrics}"
            );

            // 2. The API comes back; the agent lists its VRRPNode and writes its status.
            let seen = Arc::new(Mutex::new(Seen::default()));
            let app = Router::new()
                .route("/apis/kubevrrp.io/v1alpha1/vrrpnodes", get(list_or_watch))
                .route(
                    "/apis/kubevrrp.io/v1alpha1/vrrpnodes/node-a/status",
                    patch(patch_status),
                )
                .with_state(Arc::clone(&seen));
            let listener =
                tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], api_port)))
                    .await
                    .unwrap();
            let server = tokio::spawn(async move { axum::serve(listener, app).await });
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let patch = loop {
                let (last, lists) = {
                    let seen = seen.lock().unwrap();
                    (seen.status_patches.last().cloned(), seen.watch_lists)
                };
                if let (Some(p), true) = (last, lists >= 1) {
                    break p;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no status written or no watch after the API came back; log:\n{}",
                    agent_log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let reported = &patch["status"]["instances"][0];
            assert_eq!(reported["name"], "default/web");
            assert_eq!(reported["state"], "MASTER");
            assert_eq!(reported["effectivePriority"], 200);
            assert_eq!(patch["status"]["masterCount"], 1);
            assert_eq!(
                patch["status"]["appliedConfigHash"],
                crds::vrrpnode::config_hash(&spec().instances),
                "the agent reports the hash of the config it runs"
            );
            assert_eq!(
                Some(reported["lastTransitionTime"].clone()),
                master_since,
                "the reported transition is the one from before the outage"
            );

            let metrics = http_get(metrics_port, "/metrics").unwrap_or_default();
            assert!(
                metrics.contains("kube_vrrp_api_connected 1"),
                "recovery visible in metrics"
            );

            // No transition happened: still MASTER, same since, VIP never moved.
            let st = status(metrics_port).unwrap();
            assert_eq!(st["instances"][0]["state"], "MASTER");
            assert_eq!(Some(st["instances"][0]["since"].clone()), master_since);
            assert!(vip_held());
            let log = agent_log();
            assert_eq!(
                log.matches("Entering MASTER STATE").count(),
                1,
                "exactly one transition to MASTER:\n{log}"
            );
            assert!(
                !log.contains("Entering BACKUP STATE")
                    || log.find("Entering BACKUP STATE") < log.find("Entering MASTER STATE")
            );
            assert!(!log.contains("Entering FAULT STATE"), "{log}");

            // 3. SIGTERM: leave with the VIP removed, exit 0.
            let mut child = agent.0.take().unwrap();
            // SAFETY: signalling our own child by PID.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let exit = child.wait().unwrap();
            assert!(
                exit.success(),
                "agent exit status {exit:?}; log:\n{}",
                agent_log()
            );
            assert!(!vip_held(), "VIP removed on SIGTERM");
            server.abort();
        },
    );
}
