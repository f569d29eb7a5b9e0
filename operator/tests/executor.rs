//! The executor against a mocked API server (tower-test): which requests a reconcile makes,
//! with what content, and that a steady state makes none.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use crds::virtualip::{AuthType, Authentication, SecretKeyRef, VirtualIPSpec};
use crds::vrrpnode::VrrpState::{Backup, Master};
use crds::{VRRPNode, VirtualIP};
use http::{Request, Response};
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::PartialObjectMeta;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use kube::{Client, Resource};
use operator::controller::{
    self, AUTH_FIELD_MANAGER, Context, FIELD_MANAGER, FINALIZER, Settings, Stores,
};
use operator::metrics::Metrics;
use operator::planner;
use serde_json::{Value, json};

/// A node's agent report: (node, [(instance, state, effective priority)]).
type NodeReport<'a> = (&'a str, Vec<(&'a str, crds::vrrpnode::VrrpState, u8)>);

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One request the operator made.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    uri: String,
    body: Value,
}

impl Call {
    fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }
}

/// Round-trip through JSON, as objects coming from the API server would.
fn via_json<T: serde::Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
    serde_json::from_value(serde_json::to_value(v).unwrap()).unwrap()
}

struct Harness {
    ctx: Arc<Context>,
    vips: Writer<VirtualIP>,
    vrrp_nodes: Writer<VRRPNode>,
    server: tokio::task::JoinHandle<Vec<Call>>,
    metrics: Arc<Metrics>,
    /// The operator's clock, in milliseconds (starts at T0 + 1000).
    clock_ms: Arc<std::sync::atomic::AtomicI64>,
}

/// Every node's agent has just renewed its Lease (and the Lease list is complete).
fn live_agents(ctx: &Context, nodes: &[Arc<Node>]) {
    use k8s_openapi::api::coordination::v1::Lease;
    for n in nodes {
        let mut l = Lease::default();
        l.metadata.name = n.metadata.name.clone();
        l.metadata.resource_version = Some("1".into());
        ctx.lease_event(&watcher::Event::Apply(l));
    }
    ctx.lease_event(&watcher::Event::InitDone);
}

/// A context over stores holding these objects and a mock API answering every request with
/// 200: the VirtualIP `answer_vip` for VirtualIP calls, `secret` for Secret reads, and the
/// request body otherwise.
fn harness(
    vips: &[VirtualIP],
    nodes: &[Arc<Node>],
    vrrp_nodes: &[VRRPNode],
    secrets: &[Arc<Secret>],
    answer_vip: &VirtualIP,
) -> Harness {
    harness_auth(vips, nodes, vrrp_nodes, secrets, &[], answer_vip)
}

/// [`harness`] with the operator's per-node auth Secrets as observed.
fn harness_auth(
    vips: &[VirtualIP],
    nodes: &[Arc<Node>],
    vrrp_nodes: &[VRRPNode],
    secrets: &[Arc<Secret>],
    auth_secrets: &[Secret],
    answer_vip: &VirtualIP,
) -> Harness {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let (vip_store, mut vip_w) = reflector::store::<VirtualIP>();
    let (node_store, mut node_w) = reflector::store::<Node>();
    let (vn_store, mut vn_w) = reflector::store::<VRRPNode>();
    let (sec_store, mut sec_w) = reflector::store::<PartialObjectMeta<Secret>>();
    for v in vips {
        vip_w.apply_watcher_event(&watcher::Event::Apply(via_json(v)));
    }
    for n in nodes {
        node_w.apply_watcher_event(&watcher::Event::Apply((**n).clone()));
    }
    for v in vrrp_nodes {
        vn_w.apply_watcher_event(&watcher::Event::Apply(via_json(v)));
    }
    for s in secrets {
        let meta = PartialObjectMeta::<Secret> {
            metadata: s.metadata.clone(),
            ..Default::default()
        };
        sec_w.apply_watcher_event(&watcher::Event::Apply(meta));
    }
    let (auth_store, mut auth_w) = reflector::store::<Secret>();
    for s in auth_secrets {
        auth_w.apply_watcher_event(&watcher::Event::Apply(s.clone()));
    }
    let metrics = Arc::new(Metrics::new());
    let stores = Stores {
        virtual_ips: vip_store,
        nodes: node_store,
        vrrp_nodes: vn_store,
        secrets: vec![sec_store],
        auth_secrets: auth_store,
    };
    let settings = Settings {
        cleanup_timeout: Duration::from_secs(60),
        resync: Duration::from_secs(300),
        reporter_instance: Some("test-pod".into()),
        ..Settings::default()
    };
    let clock_ms = Arc::new(std::sync::atomic::AtomicI64::new(T0 + 1000));
    let clock = clock_ms.clone();
    let ctx = Arc::new(Context::new(
        client,
        stores,
        metrics.clone(),
        settings,
        Arc::new(move || ts(clock.load(std::sync::atomic::Ordering::Relaxed))),
    ));
    ctx.mark_stores_ready();
    live_agents(&ctx, nodes);
    let answer_vip = serde_json::to_value(answer_vip).unwrap();
    let answer_secret = secrets.first().map(|s| serde_json::to_value(&**s).unwrap());
    let server = tokio::spawn(serve(handle, answer_vip, answer_secret));
    Harness {
        ctx,
        vips: vip_w,
        vrrp_nodes: vn_w,
        server,
        metrics,
        clock_ms,
    }
}

async fn serve(mut handle: Handle, vip: Value, secret: Option<Value>) -> Vec<Call> {
    let mut calls = Vec::new();
    while let Some((req, send)) = handle.next_request().await {
        let method = req.method().to_string();
        let uri = req.uri().to_string();
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        let answer = if uri.contains("/virtualips/") {
            vip.clone()
        } else if uri.contains("/secrets/kube-vrrp-auth-") {
            // Our own auth Secrets: an apply answers with what was applied.
            if method == "DELETE" {
                json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "metadata": {}})
            } else {
                body.clone()
            }
        } else if uri.contains("/secrets/") {
            secret.clone().unwrap_or(Value::Null)
        } else {
            body.clone()
        };
        send.send_response(
            Response::builder()
                .status(200)
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap(),
        );
        calls.push(Call { method, uri, body });
    }
    calls
}

impl Harness {
    async fn reconcile(&self, vip: &VirtualIP) -> Action {
        controller::reconcile(Arc::new(via_json(vip)), self.ctx.clone())
            .await
            .unwrap()
    }
    /// Drop the client and collect every request made.
    async fn calls(self) -> Vec<Call> {
        drop(self.ctx);
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("mock server did not stop")
            .unwrap()
    }
}

fn with_finalizer(mut v: VirtualIP) -> VirtualIP {
    v.metadata.finalizers = Some(vec![FINALIZER.into()]);
    v.metadata.resource_version = Some("7".into());
    v
}

fn two_nodes() -> Vec<Arc<Node>> {
    vec![
        node("n1", &[], &["192.0.2.1"]),
        node("n2", &[], &["192.0.2.2"]),
    ]
}

/// The world after one full reconcile: VRRPNodes as planned and the status written.
fn settled(
    vip: &VirtualIP,
    nodes: &[Arc<Node>],
    reports: &[NodeReport<'_>],
) -> (VirtualIP, Vec<VRRPNode>) {
    let mut w = world(vec![vip.clone()], nodes.to_vec());
    w.vrrp_nodes = reports.iter().map(|(n, items)| report(n, items)).collect();
    let p = planner::plan(&w);
    let mut v = vip.clone();
    v.status = Some(p.virtual_ips[&planner::vip_key(vip)].status.clone());
    w.virtual_ips = vec![Arc::new(v.clone())];
    let vns: Vec<VRRPNode> = p
        .nodes
        .iter()
        .map(|(name, np)| {
            let mut vn = controller::desired_vrrp_node(name, np);
            if let Some((_, items)) = reports.iter().find(|(n, _)| n == name) {
                vn.status = report(name, items).status.clone();
            }
            vn
        })
        .collect();
    (v, vns)
}

/// The planned VRRPNode of a node with nothing on it.
fn empty_plan(node: &str) -> planner::NodePlan {
    planner::NodePlan {
        node_uid: Some(format!("uid-{node}")),
        spec: crds::VRRPNodeSpec {
            instances: vec![],
            config_hash: planner::config_hash(&[]),
        },
        auth: Default::default(),
    }
}

#[tokio::test]
async fn first_reconcile_writes_vrrpnodes_finalizer_and_status() {
    let v = vip("ns", "v", 0, spec("192.0.2.10/24"));
    let h = harness(std::slice::from_ref(&v), &two_nodes(), &[], &[], &v);
    let action = h.reconcile(&v).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let metrics = h.metrics.clone();
    let calls = h.calls().await;
    let summary: Vec<(String, String)> = calls
        .iter()
        .map(|c| (c.method.clone(), c.path().to_string()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "PATCH".into(),
                "/apis/kubevrrp.io/v1alpha1/vrrpnodes/n1".into()
            ),
            (
                "PATCH".into(),
                "/apis/kubevrrp.io/v1alpha1/vrrpnodes/n2".into()
            ),
            (
                "PATCH".into(),
                "/apis/kubevrrp.io/v1alpha1/namespaces/ns/virtualips/v".into()
            ),
            (
                "PATCH".into(),
                "/apis/kubevrrp.io/v1alpha1/namespaces/ns/virtualips/v/status".into()
            ),
        ]
    );
    // VRRPNode: server-side apply with our field manager, owned by its Node.
    let n1 = &calls[0];
    assert!(
        n1.uri.contains(&format!("fieldManager={FIELD_MANAGER}")) && n1.uri.contains("force=true"),
        "{}",
        n1.uri
    );
    assert_eq!(n1.body["apiVersion"], "kubevrrp.io/v1alpha1");
    assert_eq!(n1.body["kind"], "VRRPNode");
    assert!(
        n1.body.get("status").is_none(),
        "the agent owns the status: {}",
        n1.body
    );
    assert_eq!(
        n1.body["metadata"].as_object().unwrap().len(),
        2,
        "only name and owner: {}",
        n1.body
    );
    assert_eq!(
        n1.body["metadata"]["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "uid-n1"}])
    );
    assert_eq!(n1.body["spec"]["instances"][0]["name"], "ns/v");
    assert_eq!(n1.body["spec"]["instances"][0]["priority"], 100);
    assert_eq!(calls[1].body["spec"]["instances"][0]["priority"], 99);
    assert_eq!(n1.body["spec"]["instances"][0]["virtualRouterID"], 1);
    assert_eq!(n1.body["spec"]["configHash"].as_str().unwrap().len(), 64);
    // Finalizer: merge patch guarded by resourceVersion.
    assert_eq!(calls[2].body["metadata"]["finalizers"], json!([FINALIZER]));
    // Status: server-side apply of the whole status.
    let st = &calls[3];
    assert!(
        st.uri.contains(&format!("fieldManager={FIELD_MANAGER}")) && st.uri.contains("force=true"),
        "{}",
        st.uri
    );
    assert_eq!(st.body["apiVersion"], "kubevrrp.io/v1alpha1");
    assert_eq!(st.body["kind"], "VirtualIP");
    let s = &st.body["status"];
    assert_eq!(s["phase"], "Pending");
    assert_eq!(s["virtualRouterID"], 1);
    assert_eq!(s["nodesSummary"], "0M/0B/0F");
    assert_eq!(s["observedGeneration"], 1);
    assert_eq!(
        s["nodes"],
        json!([{"node": "n1", "basePriority": 100}, {"node": "n2", "basePriority": 99}])
    );
    let ready = s["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("Pending"))
    );
    assert_eq!(ready["lastTransitionTime"], "2027-01-15T08:16:40Z");
    let text = metrics.encode().unwrap();
    assert!(
        text.contains("kube_vrrp_operator_writes_total{kind=\"vrrpnode\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("kube_vrrp_operator_writes_total{kind=\"status\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("kube_vrrp_operator_writes_total{kind=\"finalizer\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn steady_state_makes_no_writes() {
    let v = with_finalizer(vip(
        "ns",
        "v",
        0,
        VirtualIPSpec {
            unicast: Some(Default::default()),
            ..spec("192.0.2.10/24")
        },
    ));
    let reports = [
        ("n1", vec![("ns/v", Master, 100)]),
        ("n2", vec![("ns/v", Backup, 99)]),
    ];
    let (v, vns) = settled(&v, &two_nodes(), &reports);
    let h = harness(std::slice::from_ref(&v), &two_nodes(), &vns, &[], &v);
    h.reconcile(&v).await;
    h.ctx.world_changed(); // forces a re-plan: still nothing to write
    h.reconcile(&v).await;
    let calls = h.calls().await;
    assert!(calls.is_empty(), "unexpected writes: {calls:#?}");
}

#[tokio::test]
async fn agent_report_updates_status_and_emits_master_elected() {
    let v = with_finalizer(vip("ns", "v", 0, spec("192.0.2.10/24")));
    let (v, mut vns) = settled(&v, &two_nodes(), &[]);
    // Agents now report: n1 MASTER, n2 BACKUP.
    vns[0].status = report("n1", &[("ns/v", Master, 100)]).status.clone();
    vns[1].status = report("n2", &[("ns/v", Backup, 99)]).status.clone();
    let h = harness(std::slice::from_ref(&v), &two_nodes(), &vns, &[], &v);
    h.reconcile(&v).await;
    let calls = h.calls().await;
    let paths: Vec<&str> = calls.iter().map(Call::path).collect();
    assert_eq!(
        paths,
        vec![
            "/apis/kubevrrp.io/v1alpha1/namespaces/ns/virtualips/v/status",
            "/apis/events.k8s.io/v1/namespaces/ns/events"
        ]
    );
    let s = &calls[0].body["status"];
    assert_eq!(s["phase"], "Active");
    assert_eq!(s["master"], "n1");
    assert_eq!(s["masterAddress"], "addr-of-n1");
    assert_eq!(s["nodesSummary"], "1M/1B/0F");
    assert_eq!(
        s["nodes"][0],
        json!({"node": "n1", "state": "MASTER", "effectivePriority": 100, "basePriority": 100})
    );
    let ev = &calls[1];
    assert_eq!(ev.method, "POST");
    assert_eq!(ev.body["reason"], "MasterElected");
    assert_eq!(ev.body["type"], "Normal");
    assert_eq!(ev.body["note"], "node n1 became MASTER");
    assert_eq!(ev.body["regarding"]["kind"], "VirtualIP");
    assert_eq!(ev.body["regarding"]["name"], "v");
    assert_eq!(ev.body["reportingController"], FIELD_MANAGER);
    assert_eq!(ev.body["reportingInstance"], "test-pod");
}

#[tokio::test]
async fn failover_and_split_brain_events_are_warnings() {
    let v = with_finalizer(vip("ns", "v", 0, spec("192.0.2.10/24")));
    let (v, mut vns) = settled(
        &v,
        &two_nodes(),
        &[
            ("n1", vec![("ns/v", Master, 100)]),
            ("n2", vec![("ns/v", Backup, 99)]),
        ],
    );
    // n2 takes over.
    vns[0].status = report("n1", &[("ns/v", Backup, 100)]).status.clone();
    vns[1].status = report("n2", &[("ns/v", Master, 99)]).status.clone();
    let h = harness(std::slice::from_ref(&v), &two_nodes(), &vns, &[], &v);
    h.reconcile(&v).await;
    let calls = h.calls().await;
    assert_eq!(calls[0].body["status"]["master"], "n2");
    assert_eq!(
        (
            calls[1].body["reason"].as_str(),
            calls[1].body["type"].as_str()
        ),
        (Some("Failover"), Some("Warning"))
    );
    assert_eq!(calls[1].body["note"], "master moved n1 → n2");

    // Both MASTER.
    let v2 = with_finalizer(vip("ns", "v", 0, spec("192.0.2.10/24")));
    let (v2, mut vns) = settled(
        &v2,
        &two_nodes(),
        &[
            ("n1", vec![("ns/v", Master, 100)]),
            ("n2", vec![("ns/v", Backup, 99)]),
        ],
    );
    vns[1].status = report("n2", &[("ns/v", Master, 99)]).status.clone();
    let h = harness(std::slice::from_ref(&v2), &two_nodes(), &vns, &[], &v2);
    // Just seen: a handover may be in progress; the master VRRP elects is shown and the
    // VirtualIP is looked at again when the overlap would have settled.
    let action = h.reconcile(&v2).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(3)));
    // Still both MASTER 3 s later (by the operator's clock): split brain.
    h.clock_ms
        .fetch_add(3000, std::sync::atomic::Ordering::Relaxed);
    h.ctx.reports_changed();
    h.reconcile(&v2).await;
    let calls = h.calls().await;
    assert_eq!(calls[0].body["status"]["phase"], "Active");
    assert_eq!(calls[0].body["status"]["master"], "n1");
    assert_eq!(calls[1].body["status"]["phase"], "SplitBrain");
    assert_eq!(calls.len(), 3, "{calls:#?}");
    assert_eq!(
        (
            calls[2].body["reason"].as_str(),
            calls[2].body["type"].as_str()
        ),
        (Some("SplitBrain"), Some("Warning"))
    );
}

#[tokio::test]
async fn invalid_spec_is_reported_with_a_warning_event_and_not_deployed() {
    let v = with_finalizer(vip(
        "ns",
        "bad",
        0,
        VirtualIPSpec {
            version: Some(2),
            ..spec("2001:db8::1/64")
        },
    ));
    let h = harness(std::slice::from_ref(&v), &two_nodes(), &[], &[], &v);
    h.reconcile(&v).await;
    let calls = h.calls().await;
    // No VRRPNode is created for nodes with nothing to run.
    let paths: Vec<&str> = calls.iter().map(Call::path).collect();
    assert_eq!(
        paths,
        vec![
            "/apis/kubevrrp.io/v1alpha1/namespaces/ns/virtualips/bad/status",
            "/apis/events.k8s.io/v1/namespaces/ns/events"
        ]
    );
    assert_eq!(calls[0].body["status"]["phase"], "Conflict");
    assert_eq!(calls[1].body["reason"], "InvalidSpec");
    assert_eq!(calls[1].body["type"], "Warning");
    assert!(
        calls[1].body["note"]
            .as_str()
            .unwrap()
            .contains("spec.addresses[0]")
    );
}

#[tokio::test]
async fn vrid_conflict_events_on_both() {
    let older = with_finalizer(vip(
        "ns",
        "older",
        0,
        VirtualIPSpec {
            virtual_router_id: Some(9),
            ..spec("192.0.2.10/24")
        },
    ));
    let newer = with_finalizer(vip(
        "ns",
        "newer",
        5,
        VirtualIPSpec {
            virtual_router_id: Some(9),
            ..spec("192.0.2.20/24")
        },
    ));
    let h = harness(&[older.clone(), newer.clone()], &[], &[], &[], &older);
    h.reconcile(&older).await;
    h.reconcile(&newer).await;
    let calls = h.calls().await;
    let events: Vec<(&str, &str)> = calls
        .iter()
        .filter(|c| c.path().ends_with("/events"))
        .map(|c| {
            (
                c.body["regarding"]["name"].as_str().unwrap(),
                c.body["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        events,
        vec![("older", "VRIDConflict"), ("newer", "VRIDConflict")]
    );
}

#[tokio::test]
async fn deletion_withdraws_waits_for_agents_then_releases() {
    let mut v = vip("ns", "v", 0, spec("192.0.2.10/24"));
    v.metadata.finalizers = Some(vec!["other.example/keep".into(), FINALIZER.into()]);
    v.metadata.resource_version = Some("7".into());
    let (mut v, vns) = settled(
        &v,
        &two_nodes(),
        &[
            ("n1", vec![("ns/v", Master, 100)]),
            ("n2", vec![("ns/v", Backup, 99)]),
        ],
    );
    v.metadata.deletion_timestamp = Some(Time(ts(T0 + 990)));
    let mut h = harness(std::slice::from_ref(&v), &two_nodes(), &vns, &[], &v);

    // Agents still run it: the VRRPNodes are emptied, the finalizer stays.
    let action = h.reconcile(&v).await;
    assert_eq!(action, Action::requeue(Duration::from_secs(2)));

    // The agents drop it.
    for name in ["n1", "n2"] {
        let mut vn = controller::desired_vrrp_node(name, &empty_plan(name));
        vn.status = Some(Default::default());
        h.vrrp_nodes.apply_watcher_event(&watcher::Event::Apply(vn));
    }
    h.ctx.world_changed();
    let action = h.reconcile(&v).await;
    assert_eq!(action, Action::await_change());
    let calls = h.calls().await;
    let summary: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c.method.as_str(), c.path()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("PATCH", "/apis/kubevrrp.io/v1alpha1/vrrpnodes/n1"),
            ("PATCH", "/apis/kubevrrp.io/v1alpha1/vrrpnodes/n2"),
            (
                "PATCH",
                "/apis/kubevrrp.io/v1alpha1/namespaces/ns/virtualips/v"
            ),
        ]
    );
    assert_eq!(calls[0].body["spec"]["instances"], json!([]));
    assert_eq!(
        calls[2].body["metadata"]["finalizers"],
        json!(["other.example/keep"])
    );
    assert_eq!(calls[2].body["metadata"]["resourceVersion"], "7");
}

#[tokio::test]
async fn deletion_releases_after_the_cleanup_timeout() {
    let v = with_finalizer(vip("ns", "v", 0, spec("192.0.2.10/24")));
    let (mut v, mut vns) = settled(&v, &two_nodes(), &[("n1", vec![("ns/v", Master, 100)])]);
    v.metadata.deletion_timestamp = Some(Time(ts(T0 + 1000 - 61)));
    // The spec is already withdrawn, but n1's agent still reports it (e.g. the node is gone).
    for vn in &mut vns {
        vn.spec = empty_plan("unused").spec;
    }
    let h = harness(std::slice::from_ref(&v), &two_nodes(), &vns, &[], &v);
    assert_eq!(h.reconcile(&v).await, Action::await_change());
    let calls = h.calls().await;
    let paths: Vec<&str> = calls.iter().map(Call::path).collect();
    assert_eq!(
        paths,
        vec!["/apis/kubevrrp.io/v1alpha1/namespaces/ns/virtualips/v"]
    );
    assert_eq!(calls[0].body["metadata"]["finalizers"], json!([]));
}

#[tokio::test]
async fn deleted_without_our_finalizer_is_left_alone() {
    let mut v = vip("ns", "v", 0, spec("192.0.2.10/24"));
    v.metadata.deletion_timestamp = Some(Time(ts(T0)));
    v.metadata.finalizers = Some(vec!["other.example/keep".into()]);
    let h = harness(std::slice::from_ref(&v), &[], &[], &[], &v);
    assert_eq!(h.reconcile(&v).await, Action::await_change());
    assert!(h.calls().await.is_empty());
}

#[tokio::test]
async fn referenced_secret_is_read_once_per_revision() {
    let spec = VirtualIPSpec {
        version: Some(2),
        authentication: Some(Authentication {
            auth_type: AuthType::Pass,
            password_secret_ref: SecretKeyRef {
                name: "vrrp-auth".into(),
                key: None,
            },
        }),
        ..spec("192.0.2.10/24")
    };
    let v = with_finalizer(vip("ns", "v", 0, spec));
    let mut s = (*secret("ns", "vrrp-auth", &[("password", "s3cret")])).clone();
    s.metadata.resource_version = Some("41".into());
    let unrelated = Arc::new(Secret {
        metadata: ObjectMeta {
            name: Some("unrelated".into()),
            namespace: Some("ns".into()),
            resource_version: Some("1".into()),
            ..Default::default()
        },
        ..Default::default()
    });
    let h = harness(
        std::slice::from_ref(&v),
        &two_nodes()[..1],
        &[],
        &[Arc::new(s), unrelated],
        &v,
    );
    h.reconcile(&v).await;
    h.ctx.world_changed();
    h.reconcile(&v).await;
    let calls = h.calls().await;
    let gets: Vec<&str> = calls
        .iter()
        .filter(|c| c.method == "GET")
        .map(Call::path)
        .collect();
    assert_eq!(
        gets,
        vec!["/api/v1/namespaces/ns/secrets/vrrp-auth"],
        "only the referenced Secret, only once"
    );
    let vn = calls
        .iter()
        .find(|c| c.path().ends_with("/vrrpnodes/n1"))
        .unwrap();
    // The VRRPNode carries the key only; the password goes to n1's auth Secret, written
    // after the (new) VRRPNode by the auth field manager.
    assert_eq!(vn.body["spec"]["instances"][0]["authKey"], "ns.v");
    assert!(!vn.body.to_string().contains("s3cret"), "{}", vn.body);
    let sec = calls
        .iter()
        .position(|c| c.method == "PATCH" && c.path() == AUTH_N1)
        .expect("auth Secret applied");
    let vn_at = calls
        .iter()
        .position(|c| c.path().ends_with("/vrrpnodes/n1"))
        .unwrap();
    assert!(vn_at < sec, "a new VRRPNode first (it owns the Secret)");
    let body = &calls[sec].body;
    assert!(
        calls[sec]
            .uri
            .contains(&format!("fieldManager={AUTH_FIELD_MANAGER}")),
        "{}",
        calls[sec].uri
    );
    assert_eq!(body["data"]["ns.v"], B64_S3CRET);
    assert_eq!(
        body["metadata"]["labels"]["app.kubernetes.io/component"],
        "kube-vrrp-auth"
    );
    assert_eq!(body["type"], "Opaque");
}

/// Path of n1's auth Secret in the default release namespace.
const AUTH_N1: &str = "/api/v1/namespaces/kube-vrrp/secrets/kube-vrrp-auth-n1";
/// base64("s3cret").
const B64_S3CRET: &str = "czNjcmV0";

fn auth_vip(name: &str) -> VirtualIP {
    let spec = VirtualIPSpec {
        version: Some(2),
        authentication: Some(Authentication {
            auth_type: AuthType::Pass,
            password_secret_ref: SecretKeyRef {
                name: "vrrp-auth".into(),
                key: None,
            },
        }),
        ..spec("192.0.2.10/24")
    };
    with_finalizer(vip("ns", name, 0, spec))
}

/// The auth Secret of n1 as the API would hold it after our apply.
fn observed_auth(data: &[(&str, &str)], owner_uid: Option<&str>) -> Secret {
    let data: std::collections::BTreeMap<String, k8s_openapi::ByteString> = data
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                k8s_openapi::ByteString(v.as_bytes().to_vec()),
            )
        })
        .collect();
    let mut s = controller::desired_auth_secret("n1", "kube-vrrp", &data, owner_uid);
    s.metadata.resource_version = Some("5".into());
    s
}

/// With the VRRPNode and its auth Secret as planned, nothing is written; a changed password
/// is written to the Secret (before the VRRPNode, which does not change); a VirtualIP that
/// drops authentication has its key removed after the VRRPNode no longer names it; with no
/// password left on the node the Secret is deleted.
#[tokio::test]
async fn auth_secret_is_written_only_when_it_differs() {
    let v = auth_vip("v");
    let nodes = &two_nodes()[..1];
    let pw = |p: &str| secret("ns", "vrrp-auth", &[("password", p)]);
    let planned = |pass: &str, vip: &VirtualIP| {
        let mut w = world(vec![vip.clone()], nodes.to_vec());
        w.secrets = vec![pw(pass)];
        let (_, mut vns) = settled(vip, nodes, &[]);
        let p = planner::plan(&w);
        let mut vn = controller::desired_vrrp_node("n1", &p.nodes["n1"]);
        vn.metadata.uid = Some("vn-uid-1".into());
        vns[0] = vn;
        vns
    };
    let writes = |calls: &[Call]| -> Vec<String> {
        calls
            .iter()
            .filter(|c| c.method == "PATCH" || c.method == "DELETE")
            .filter(|c| !c.path().contains("/virtualips/"))
            .map(|c| format!("{} {}", c.method, c.path()))
            .collect()
    };
    let vn_path = "/apis/kubevrrp.io/v1alpha1/vrrpnodes/n1".to_string();

    // Steady state: no write.
    let vns = planned("s3cret", &v);
    let h = harness_auth(
        std::slice::from_ref(&v),
        nodes,
        &vns,
        &[pw("s3cret")],
        &[observed_auth(&[("ns.v", "s3cret")], Some("vn-uid-1"))],
        &v,
    );
    h.reconcile(&v).await;
    assert_eq!(
        writes(&h.calls().await),
        Vec::<String>::new(),
        "steady state"
    );

    // The same data without the owner: re-applied to add it.
    let h = harness_auth(
        std::slice::from_ref(&v),
        nodes,
        &vns,
        &[pw("s3cret")],
        &[observed_auth(&[("ns.v", "s3cret")], None)],
        &v,
    );
    h.reconcile(&v).await;
    let calls = h.calls().await;
    assert_eq!(writes(&calls), vec![format!("PATCH {AUTH_N1}")]);
    let body = &calls.iter().find(|c| c.path() == AUTH_N1).unwrap().body;
    assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "vn-uid-1");
    assert_eq!(body["metadata"]["ownerReferences"][0]["kind"], "VRRPNode");

    // A new password: only the Secret changes, the VRRPNode (authKey) does not.
    let h = harness_auth(
        std::slice::from_ref(&v),
        nodes,
        &vns,
        &[pw("n3w")],
        &[observed_auth(&[("ns.v", "s3cret")], Some("vn-uid-1"))],
        &v,
    );
    h.reconcile(&v).await;
    let calls = h.calls().await;
    assert_eq!(writes(&calls), vec![format!("PATCH {AUTH_N1}")]);
    let body = &calls.iter().find(|c| c.path() == AUTH_N1).unwrap().body;
    assert_eq!(body["data"], json!({"ns.v": "bjN3"}));

    // Authentication dropped: the VRRPNode first (no authKey), then the Secret goes.
    let mut plain = v.clone();
    plain.spec.authentication = None;
    let h = harness_auth(
        std::slice::from_ref(&plain),
        nodes,
        &vns,
        &[],
        &[observed_auth(&[("ns.v", "s3cret")], Some("vn-uid-1"))],
        &plain,
    );
    h.reconcile(&plain).await;
    let calls = h.calls().await;
    assert_eq!(
        writes(&calls),
        vec![format!("PATCH {vn_path}"), format!("DELETE {AUTH_N1}")]
    );
    let vn = calls.iter().find(|c| c.path() == vn_path).unwrap();
    assert!(vn.body["spec"]["instances"][0].get("authKey").is_none());

    // A second VirtualIP with a password joins an existing VRRPNode: its key is added to
    // the Secret before the VRRPNode names it, and the Secret is not written again after.
    let w2 = auth_vip("w");
    let h = harness_auth(
        &[v.clone(), w2.clone()],
        nodes,
        &vns,
        &[pw("s3cret")],
        &[observed_auth(&[("ns.v", "s3cret")], Some("vn-uid-1"))],
        &v,
    );
    h.reconcile(&v).await;
    let calls = h.calls().await;
    assert_eq!(
        writes(&calls),
        vec![format!("PATCH {AUTH_N1}"), format!("PATCH {vn_path}")]
    );
    let body = &calls.iter().find(|c| c.path() == AUTH_N1).unwrap().body;
    assert_eq!(
        body["data"],
        json!({"ns.v": B64_S3CRET, "ns.w": B64_S3CRET})
    );
}

/// The auth Secret steps, pure: what is written before and after the VRRPNode.
#[test]
fn auth_secret_steps_table() {
    use controller::{AuthAfter, auth_secret_steps};
    use crds::auth::Password;
    let want = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, Password> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Password::from(*v)))
            .collect()
    };
    let bytes = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    k8s_openapi::ByteString(v.as_bytes().to_vec()),
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let obs = |pairs: &[(&str, &str)]| observed_auth(pairs, Some("u"));
    struct Case<'a> {
        what: &'a str,
        observed: Option<Secret>,
        desired: std::collections::BTreeMap<String, Password>,
        exists: bool,
        before: Option<std::collections::BTreeMap<String, k8s_openapi::ByteString>>,
        after: AuthAfter,
    }
    let cases = [
        Case {
            what: "nothing wanted, nothing there",
            observed: None,
            desired: want(&[]),
            exists: true,
            before: None,
            after: AuthAfter::Nothing,
        },
        Case {
            what: "nothing wanted, a Secret there: deleted after the VRRPNode",
            observed: Some(obs(&[("a.b", "x")])),
            desired: want(&[]),
            exists: true,
            before: None,
            after: AuthAfter::Delete,
        },
        Case {
            what: "new VRRPNode: written after it (it becomes the owner)",
            observed: None,
            desired: want(&[("a.b", "x")]),
            exists: false,
            before: None,
            after: AuthAfter::Apply,
        },
        Case {
            what: "existing VRRPNode, new key: added before",
            observed: Some(obs(&[("a.b", "x")])),
            desired: want(&[("a.b", "x"), ("a.c", "y")]),
            exists: true,
            before: Some(bytes(&[("a.b", "x"), ("a.c", "y")])),
            after: AuthAfter::Apply,
        },
        Case {
            what: "changed password: before",
            observed: Some(obs(&[("a.b", "x")])),
            desired: want(&[("a.b", "z")]),
            exists: true,
            before: Some(bytes(&[("a.b", "z")])),
            after: AuthAfter::Apply,
        },
        Case {
            what: "key removed: kept until after the VRRPNode",
            observed: Some(obs(&[("a.b", "x"), ("a.c", "y")])),
            desired: want(&[("a.b", "x")]),
            exists: true,
            before: None,
            after: AuthAfter::Apply,
        },
        Case {
            what: "unchanged",
            observed: Some(obs(&[("a.b", "x")])),
            desired: want(&[("a.b", "x")]),
            exists: true,
            before: None,
            after: AuthAfter::Apply,
        },
    ];
    for c in cases {
        let steps = auth_secret_steps(c.observed.as_ref(), &c.desired, c.exists);
        assert_eq!(steps.before, c.before, "{}", c.what);
        assert_eq!(steps.after, c.after, "{}", c.what);
    }
}

#[tokio::test]
async fn not_ready_stores_defer_without_requests() {
    let v = vip("ns", "v", 0, spec("192.0.2.10/24"));
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let stores = Stores {
        virtual_ips: reflector::store().0,
        nodes: reflector::store().0,
        vrrp_nodes: reflector::store().0,
        secrets: vec![reflector::store().0],
        auth_secrets: reflector::store().0,
    };
    let ctx = Arc::new(Context::new(
        client,
        stores,
        Arc::new(Metrics::new()),
        Settings::default(),
        controller::system_clock(),
    ));
    let action = controller::reconcile(Arc::new(v), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(1)));
    drop(ctx);
    let calls = tokio::time::timeout(Duration::from_secs(10), serve(handle, Value::Null, None))
        .await
        .unwrap();
    assert!(calls.is_empty());
}

#[tokio::test]
async fn errors_back_off_exponentially() {
    assert_eq!(controller::backoff(1), Duration::from_secs(1));
    assert_eq!(controller::backoff(2), Duration::from_secs(2));
    assert_eq!(controller::backoff(5), Duration::from_secs(16));
    assert_eq!(controller::backoff(6), Duration::from_secs(30));
    assert_eq!(controller::backoff(10), Duration::from_secs(30));
    assert_eq!(controller::backoff(u32::MAX), Duration::from_secs(30));

    // The policy counts failures per VirtualIP; a success resets the count.
    let v = Arc::new(with_finalizer(vip("ns", "v", 0, spec("192.0.2.10/24"))));
    let h = harness(&[(*v).clone()], &[], &[], &[], &v);
    let err = operator::Error::Watch("boom".into());
    assert_eq!(
        controller::error_policy(v.clone(), &err, h.ctx.clone()),
        Action::requeue(Duration::from_secs(1))
    );
    assert_eq!(
        controller::error_policy(v.clone(), &err, h.ctx.clone()),
        Action::requeue(Duration::from_secs(2))
    );
    assert_eq!(
        controller::error_policy(v.clone(), &err, h.ctx.clone()),
        Action::requeue(Duration::from_secs(4))
    );
    h.reconcile(&v).await;
    assert_eq!(
        controller::error_policy(v.clone(), &err, h.ctx.clone()),
        Action::requeue(Duration::from_secs(1))
    );
    assert!(
        h.metrics
            .encode()
            .unwrap()
            .contains("kube_vrrp_operator_reconcile_errors_total{kind=\"watch\"} 4")
    );
    let _ = h.vips;
    let _ = VirtualIP::kind(&());
}

#[tokio::test]
async fn a_report_change_reuses_the_placement() {
    let v = with_finalizer(vip("ns", "v", 0, spec("192.0.2.10/24")));
    let (v, vns) = settled(&v, &two_nodes(), &[]);
    let mut h = harness(std::slice::from_ref(&v), &two_nodes(), &vns, &[], &v);
    h.reconcile(&v).await;
    // n2's agent reports MASTER.
    let mut vn = vns[1].clone();
    vn.status = report("n2", &[("ns/v", Master, 99)]).status.clone();
    h.vrrp_nodes.apply_watcher_event(&watcher::Event::Apply(vn));
    h.ctx.reports_changed();
    h.reconcile(&v).await;
    let text = h.metrics.encode().unwrap();
    assert!(
        text.contains("kube_vrrp_operator_plan_duration_seconds_count 1"),
        "placed once: {text}"
    );
    let calls = h.calls().await;
    let paths: Vec<&str> = calls.iter().map(Call::path).collect();
    assert_eq!(
        paths,
        vec![
            "/apis/kubevrrp.io/v1alpha1/namespaces/ns/virtualips/v/status",
            "/apis/events.k8s.io/v1/namespaces/ns/events"
        ]
    );
    assert_eq!(calls[0].body["status"]["master"], "n2");
}

#[tokio::test]
async fn secrets_are_found_in_any_per_namespace_store() {
    let spec = VirtualIPSpec {
        version: Some(2),
        authentication: Some(Authentication {
            auth_type: AuthType::Pass,
            password_secret_ref: SecretKeyRef {
                name: "auth".into(),
                key: None,
            },
        }),
        ..spec("192.0.2.10/24")
    };
    let v = with_finalizer(vip("team-b", "v", 0, spec));
    let mut s = (*secret("team-b", "auth", &[("password", "pw")])).clone();
    s.metadata.resource_version = Some("3".into());
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let (vip_store, mut vip_w) = reflector::store::<VirtualIP>();
    vip_w.apply_watcher_event(&watcher::Event::Apply(via_json(&v)));
    let (node_store, mut node_w) = reflector::store::<Node>();
    node_w.apply_watcher_event(&watcher::Event::Apply(
        (*node("n1", &[], &["192.0.2.1"])).clone(),
    ));
    let (team_a, _wa) = reflector::store::<PartialObjectMeta<Secret>>();
    let (team_b, mut wb) = reflector::store::<PartialObjectMeta<Secret>>();
    wb.apply_watcher_event(&watcher::Event::Apply(PartialObjectMeta::<Secret> {
        metadata: s.metadata.clone(),
        ..Default::default()
    }));
    let stores = Stores {
        virtual_ips: vip_store,
        nodes: node_store,
        vrrp_nodes: reflector::store().0,
        secrets: vec![team_a, team_b],
        auth_secrets: reflector::store().0,
    };
    let ctx = Arc::new(Context::new(
        client,
        stores,
        Arc::new(Metrics::new()),
        Settings::default(),
        Arc::new(|| ts(T0 + 1000)),
    ));
    ctx.mark_stores_ready();
    live_agents(&ctx, &[]);
    let server = tokio::spawn(serve(
        handle,
        serde_json::to_value(&v).unwrap(),
        Some(serde_json::to_value(&s).unwrap()),
    ));
    controller::reconcile(Arc::new(v), ctx.clone())
        .await
        .unwrap();
    drop(ctx);
    let calls = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    let vn = calls
        .iter()
        .find(|c| c.path().ends_with("/vrrpnodes/n1"))
        .unwrap();
    assert_eq!(vn.body["spec"]["instances"][0]["authKey"], "team-b.v");
    assert!(!vn.body.to_string().contains("\"pw\""), "{}", vn.body);
}

#[test]
fn vrrpnode_deletions_and_foreign_edits_call_for_a_comparison_and_reports_do_not() {
    use controller::VrrpNodeSpecs;
    let v = with_finalizer(vip("ns", "v", 0, spec("192.0.2.10/24")));
    let (_, vns) = settled(&v, &two_nodes(), &[]);
    let mut t = VrrpNodeSpecs::default();
    assert!(!t.on_event(&watcher::Event::Init));
    for vn in &vns {
        t.on_event(&watcher::Event::InitApply(vn.clone()));
    }
    assert!(!t.on_event(&watcher::Event::InitDone));
    // The operator's own object coming back unchanged, or an agent's report: nothing to do.
    assert!(!t.on_event(&watcher::Event::Apply(vns[0].clone())));
    let mut reported = vns[0].clone();
    reported.status = report("n1", &[("ns/v", Master, 100)]).status.clone();
    assert!(!t.on_event(&watcher::Event::Apply(reported)));
    // Someone edits the spec, or strips the owner: compare.
    let mut edited = vns[0].clone();
    edited.spec.instances.clear();
    assert!(t.on_event(&watcher::Event::Apply(edited)));
    assert!(
        t.on_event(&watcher::Event::Apply(vns[0].clone())),
        "put back"
    );
    let mut orphan = vns[1].clone();
    orphan.metadata.owner_references = None;
    assert!(t.on_event(&watcher::Event::Apply(orphan)));
    // Deleted, or gone from a re-list after a watch outage: compare.
    assert!(t.on_event(&watcher::Event::Delete(vns[0].clone())));
    t.on_event(&watcher::Event::Apply(vns[0].clone()));
    t.on_event(&watcher::Event::Init);
    t.on_event(&watcher::Event::InitApply(vns[0].clone()));
    assert!(t.on_event(&watcher::Event::InitDone), "n2 vanished");
}

#[tokio::test]
async fn a_vrrpnode_deleted_or_edited_by_someone_else_is_restored_at_the_next_reconcile() {
    let v = with_finalizer(vip("ns", "v", 0, spec("192.0.2.10/24")));
    let reports = [
        ("n1", vec![("ns/v", Master, 100)]),
        ("n2", vec![("ns/v", Backup, 99)]),
    ];
    let (v, vns) = settled(&v, &two_nodes(), &reports);
    let mut h = harness(std::slice::from_ref(&v), &two_nodes(), &vns, &[], &v);
    h.reconcile(&v).await;
    // `kubectl delete vrrpnode n1` and an edit of n2's spec, as the watch delivers them.
    h.vrrp_nodes
        .apply_watcher_event(&watcher::Event::Delete(via_json(&vns[0])));
    let mut edited = vns[1].clone();
    edited.spec.instances[0].priority = 1;
    h.vrrp_nodes
        .apply_watcher_event(&watcher::Event::Apply(via_json(&edited)));
    h.ctx.vrrp_nodes_changed();
    h.reconcile(&v).await;
    // Once restored (the store holds the planned objects again), nothing more is written.
    for vn in &vns {
        h.vrrp_nodes
            .apply_watcher_event(&watcher::Event::Apply(via_json(vn)));
    }
    h.ctx.vrrp_nodes_changed();
    h.reconcile(&v).await;
    let calls = h.calls().await;
    let got: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c.method.as_str(), c.path()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("PATCH", "/apis/kubevrrp.io/v1alpha1/vrrpnodes/n1"),
            ("PATCH", "/apis/kubevrrp.io/v1alpha1/vrrpnodes/n2"),
        ],
        "{calls:#?}"
    );
    let n2 = &calls[1].body;
    assert_eq!(
        n2["spec"]["instances"][0]["priority"],
        json!(vns[1].spec.instances[0].priority),
        "the planned priority is put back"
    );
}
