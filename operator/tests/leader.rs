//! Leader election against a fake Lease API (tower-test): the controller runs only while this
//! replica holds the lease, and the lease is released on shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use operator::leader::{LeaseSettings, run_while_leader};
use operator::metrics::Metrics;
use serde_json::{Value, json};

const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-vrrp/leases";

#[derive(Default)]
struct FakeLeases {
    lease: Option<Value>,
    requests: Vec<(String, String)>,
}

/// A tiny Lease store: GET, POST (create) and PATCH (merge of `spec`, null deletes).
fn fake_api(state: Arc<Mutex<FakeLeases>>) -> Client {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let body: Value = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap()
            };
            let mut st = state.lock().unwrap();
            st.requests.push((method.clone(), path.clone()));
            assert!(
                path.starts_with(LEASE_PATH),
                "unexpected request {method} {path}"
            );
            let (code, answer) = match method.as_str() {
                "GET" => match &st.lease {
                    Some(l) => (200, l.clone()),
                    None => (
                        404,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "leases not found"}),
                    ),
                },
                "POST" => {
                    let mut l = body.clone();
                    l["metadata"]["resourceVersion"] = json!("1");
                    st.lease = Some(l.clone());
                    (201, l)
                }
                "PATCH" => {
                    let l = st.lease.get_or_insert_with(|| json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "kube-vrrp-operator", "namespace": "kube-vrrp"}, "spec": {}}));
                    if let Some(spec) = body.get("spec").and_then(Value::as_object) {
                        for (k, v) in spec {
                            if v.is_null() {
                                l["spec"].as_object_mut().unwrap().remove(k);
                            } else {
                                l["spec"][k] = v.clone();
                            }
                        }
                    }
                    (200, l.clone())
                }
                other => panic!("unexpected method {other}"),
            };
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
    });
    Client::new(svc, "default")
}

fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        namespace: "kube-vrrp".into(),
        name: "kube-vrrp-operator".into(),
        identity: identity.into(),
        duration_secs: 15,
        grace_secs: 5,
    }
}

fn holder(state: &Arc<Mutex<FakeLeases>>) -> Option<String> {
    state
        .lock()
        .unwrap()
        .lease
        .as_ref()?
        .get("spec")?
        .get("holderIdentity")?
        .as_str()
        .map(String::from)
}

#[tokio::test]
async fn leader_runs_the_controller_and_releases_the_lease_on_shutdown() {
    let state = Arc::new(Mutex::new(FakeLeases::default()));
    let client = fake_api(state.clone());
    let metrics = Arc::new(Metrics::new());
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = Arc::new(Mutex::new(Some(started_tx)));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let m = metrics.clone();
    let task = tokio::spawn(run_while_leader(
        client,
        settings("pod-a"),
        m,
        async {
            let _ = stop_rx.await;
        },
        move || {
            let tx = started_tx.lock().unwrap().take();
            async move {
                if let Some(tx) = tx {
                    let _ = tx.send(());
                }
                std::future::pending::<Result<(), operator::Error>>().await
            }
        },
    ));
    tokio::time::timeout(Duration::from_secs(20), started_rx)
        .await
        .expect("controller never started")
        .unwrap();
    assert_eq!(holder(&state).as_deref(), Some("pod-a"));
    assert!(
        metrics
            .encode()
            .unwrap()
            .contains("kube_vrrp_operator_leader 1")
    );

    stop_tx.send(()).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("did not stop")
        .unwrap();
    assert!(res.is_ok(), "{res:?}");
    assert_eq!(holder(&state), None, "lease released");
    assert!(
        metrics
            .encode()
            .unwrap()
            .contains("kube_vrrp_operator_leader 0")
    );
    assert!(metrics.is_ready(), "a standby replica is ready");
}

#[tokio::test]
async fn standby_does_not_run_the_controller_while_another_holds_the_lease() {
    let state = Arc::new(Mutex::new(FakeLeases::default()));
    let now = k8s_openapi::jiff::Timestamp::now();
    state.lock().unwrap().lease = Some(json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "kube-vrrp-operator", "namespace": "kube-vrrp", "resourceVersion": "5"},
        "spec": {"holderIdentity": "pod-b", "leaseDurationSeconds": 15, "renewTime": now.to_string(), "acquireTime": now.to_string()},
    }));
    let client = fake_api(state.clone());
    let metrics = Arc::new(Metrics::new());
    let started = Arc::new(Mutex::new(false));
    let flag = started.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_while_leader(
        client,
        settings("pod-a"),
        metrics.clone(),
        async {
            let _ = stop_rx.await;
        },
        move || {
            *flag.lock().unwrap() = true;
            std::future::pending::<Result<(), operator::Error>>()
        },
    ));
    // Wait (with a deadline) until the manager has read the lease at least twice.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let gets = state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(m, _)| m == "GET")
            .count();
        if gets >= 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "lease never read");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_tx.send(()).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("did not stop")
        .unwrap();
    assert!(res.is_ok(), "{res:?}");
    assert!(
        !*started.lock().unwrap(),
        "controller ran without the lease"
    );
    assert_eq!(
        holder(&state).as_deref(),
        Some("pod-b"),
        "someone else's lease is left alone"
    );
    assert!(
        metrics
            .encode()
            .unwrap()
            .contains("kube_vrrp_operator_leader 0")
    );
}
