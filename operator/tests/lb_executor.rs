//! The LoadBalancer executor against a mocked API server (tower-test): the requests one Service
//! reconcile makes (finalizer, status with ingress and conditions, Events), that a steady state
//! and another class make none, how a refused request is reported, the group VirtualIP and
//! pool status the group sync writes, and the release on delete.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use crds::VirtualIP;
use crds::pool::{VirtualIPPool, VirtualIPPoolSpec};
use http::{Request, Response};
use k8s_openapi::api::core::v1::{
    Namespace, Node, Service, ServicePort, ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Client;
use kube::api::PartialObjectMeta;
use kube::client::Body;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use operator::loadbalancer::{
    self, ANNOUNCED_CONDITION_TYPE, CONDITION_TYPE, LB_FINALIZER, LbContext, LbSettings, LbStores,
};
use operator::metrics::Metrics;
use serde_json::Value;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

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

struct Harness {
    ctx: Arc<LbContext>,
    services: Writer<Service>,
    server: tokio::task::JoinHandle<Vec<Call>>,
    vips: Writer<VirtualIP>,
}

fn lb_service(name: &str, class: Option<&str>) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            uid: Some(format!("uid-{name}")),
            creation_timestamp: Some(Time(ts(T0))),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            load_balancer_class: class.map(str::to_string),
            ip_families: Some(vec!["IPv4".into()]),
            ports: Some(vec![ServicePort {
                port: 443,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn pool() -> VirtualIPPool {
    let mut p = VirtualIPPool::new(
        "web",
        VirtualIPPoolSpec {
            addresses: vec!["192.0.2.240-192.0.2.250".into()],
            ..Default::default()
        },
    );
    p.metadata.creation_timestamp = Some(Time(ts(T0)));
    p.metadata.generation = Some(1);
    p
}

async fn serve(mut handle: Handle, pool: Value) -> Vec<Call> {
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
        // Answer with an object the client can read back.
        let mut answer = if method == "DELETE" {
            serde_json::json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "metadata": {}})
        } else if uri.contains("/virtualippools/") {
            pool.clone()
        } else if uri.contains("/services/") {
            serde_json::to_value(lb_service("x", None)).unwrap()
        } else {
            body.clone()
        };
        if answer.is_object() && answer.get("metadata").is_none() {
            answer["metadata"] = serde_json::json!({"name": "x"});
        }
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

fn harness(services: &[Service]) -> Harness {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let (svc_store, mut svc_w) = reflector::store::<Service>();
    let (pool_store, mut pool_w) = reflector::store::<VirtualIPPool>();
    let (slice_store, _slice_w) = reflector::store::<EndpointSlice>();
    let (ns_store, mut ns_w) = reflector::store::<PartialObjectMeta<Namespace>>();
    let (vip_store, vip_w) = reflector::store::<VirtualIP>();
    let (node_store, mut node_w) = reflector::store::<Node>();
    for s in services {
        svc_w.apply_watcher_event(&watcher::Event::Apply(s.clone()));
    }
    pool_w.apply_watcher_event(&watcher::Event::Apply(pool()));
    let mut ns = PartialObjectMeta::<Namespace>::default();
    ns.metadata.name = Some("shop".into());
    ns_w.apply_watcher_event(&watcher::Event::Apply(ns));
    for n in three_nodes() {
        node_w.apply_watcher_event(&watcher::Event::Apply((*n).clone()));
    }
    let stores = LbStores {
        services: svc_store,
        pools: pool_store,
        slices: slice_store,
        namespaces: ns_store,
        virtual_ips: vip_store,
        nodes: node_store,
    };
    let (ctx, _retry) = LbContext::new(
        client,
        stores,
        LbSettings::default(),
        Arc::new(Metrics::new()),
        Arc::new(|| ts(T0 + 1000)),
        Some("test-pod".into()),
    );
    let server = tokio::spawn(serve(handle, serde_json::to_value(pool()).unwrap()));
    Harness {
        ctx: Arc::new(ctx),
        services: svc_w,
        server,
        vips: vip_w,
    }
}

impl Harness {
    async fn reconcile(&self, s: &Service) {
        loadbalancer::reconcile(Arc::new(s.clone()), self.ctx.clone())
            .await
            .unwrap();
    }
    async fn calls(self) -> Vec<Call> {
        drop(self.ctx);
        drop(self.services);
        drop(self.vips);
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("mock server did not stop")
            .unwrap()
    }
}

fn event_notes(calls: &[Call]) -> Vec<(String, String)> {
    calls
        .iter()
        .filter(|c| c.path().ends_with("/events"))
        .map(|c| {
            (
                c.body["reason"].as_str().unwrap_or_default().to_string(),
                c.body["note"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The Service as it looks after a reconcile wrote it (finalizer and status).
fn written(mut s: Service, ip: &str) -> Service {
    s.metadata.finalizers = Some(vec![LB_FINALIZER.into()]);
    let status: ServiceStatus = serde_json::from_value(serde_json::json!({
        "loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]},
        "conditions": [
            {"type": CONDITION_TYPE, "status": "True", "reason": "Assigned",
             "message": format!("assigned {ip} from pool web"), "observedGeneration": 1,
             "lastTransitionTime": "2027-01-15T08:16:40Z"},
            {"type": ANNOUNCED_CONDITION_TYPE, "status": "False", "reason": "Pending",
             "message": "waiting for the master of its VRRP router", "observedGeneration": 1,
             "lastTransitionTime": "2027-01-15T08:16:40Z"},
        ],
    }))
    .unwrap();
    s.status = Some(status);
    s
}

#[tokio::test]
async fn a_served_service_gets_finalizer_status_and_an_event() {
    let s = lb_service("web", Some("kubevrrp.io/vrrp"));
    let h = harness(std::slice::from_ref(&s));
    h.ctx.restore().await;
    h.reconcile(&s).await;
    let calls = h.calls().await;
    let meta = calls
        .iter()
        .find(|c| c.method == "PATCH" && c.path() == "/api/v1/namespaces/shop/services/web")
        .expect("metadata apply");
    assert!(
        meta.uri.contains("fieldManager=kube-vrrp-operator"),
        "{}",
        meta.uri
    );
    assert_eq!(
        meta.body["metadata"]["finalizers"],
        serde_json::json!([LB_FINALIZER])
    );
    let status = calls
        .iter()
        .find(|c| c.path() == "/api/v1/namespaces/shop/services/web/status")
        .expect("status apply");
    assert_eq!(
        status.body["status"]["loadBalancer"]["ingress"],
        serde_json::json!([{"ip": "192.0.2.240", "ipMode": "VIP"}])
    );
    let cond = &status.body["status"]["conditions"][0];
    assert_eq!(cond["type"], CONDITION_TYPE);
    assert_eq!(cond["status"], "True");
    assert_eq!(cond["message"], "assigned 192.0.2.240 from pool web");
    assert_eq!(
        event_notes(&calls),
        [(
            "IPAllocated".to_string(),
            "assigned 192.0.2.240 from pool web".to_string()
        )]
    );
    // The metadata (finalizer) is written before the status.
    let order: Vec<&str> = calls.iter().map(Call::path).collect();
    let m = order
        .iter()
        .position(|p| p.ends_with("/services/web"))
        .unwrap();
    let st = order
        .iter()
        .position(|p| p.ends_with("/services/web/status"))
        .unwrap();
    assert!(m < st, "{order:?}");
}

#[tokio::test]
async fn steady_state_and_other_classes_make_no_request() {
    let mine = written(lb_service("web", Some("kubevrrp.io/vrrp")), "192.0.2.240");
    let other = lb_service("theirs", Some("example.com/other"));
    let classless = lb_service("classless", None);
    let h = harness(&[mine.clone(), other.clone(), classless.clone()]);
    h.ctx.restore().await;
    h.reconcile(&mine).await;
    h.reconcile(&other).await;
    h.reconcile(&classless).await;
    let calls = h.calls().await;
    assert!(calls.is_empty(), "{calls:#?}");
}

#[tokio::test]
async fn a_taken_address_is_refused_on_that_service_only() {
    let holder = written(lb_service("web", Some("kubevrrp.io/vrrp")), "192.0.2.240");
    let mut taker = lb_service("taker", Some("kubevrrp.io/vrrp"));
    taker.metadata.annotations = Some(
        [(
            "kubevrrp.io/loadBalancerIPs".to_string(),
            "192.0.2.240".to_string(),
        )]
        .into(),
    );
    let h = harness(&[holder.clone(), taker.clone()]);
    h.ctx.restore().await;
    h.reconcile(&taker).await;
    h.reconcile(&holder).await;
    let calls = h.calls().await;
    assert!(
        calls.iter().all(|c| !c.path().contains("/services/web")),
        "nothing written to the holder: {calls:#?}"
    );
    let status = calls
        .iter()
        .find(|c| c.path().ends_with("/services/taker/status"))
        .expect("status");
    assert_eq!(
        status.body["status"]["loadBalancer"]["ingress"],
        serde_json::json!([])
    );
    let cond = &status.body["status"]["conditions"][0];
    assert_eq!(cond["status"], "False");
    assert_eq!(cond["reason"], "AddressInUse");
    let events = event_notes(&calls);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "AddressInUse");
    assert!(
        events[0]
            .1
            .contains("192.0.2.240 is already assigned to Service shop/web"),
        "{events:?}"
    );
}

#[tokio::test]
async fn group_sync_writes_the_group_virtualip_and_the_pool_status() {
    let s = written(lb_service("web", Some("kubevrrp.io/vrrp")), "192.0.2.240");
    let h = harness(std::slice::from_ref(&s));
    h.ctx.restore().await;
    h.ctx.sync_groups().await.unwrap();
    let calls = h.calls().await;
    let vip = calls
        .iter()
        .find(|c| c.path() == "/apis/kubevrrp.io/v1alpha1/namespaces/kube-vrrp/virtualips/lb-web-0")
        .expect("group VirtualIP apply");
    assert_eq!(vip.method, "PATCH");
    assert_eq!(
        vip.body["spec"]["addresses"],
        serde_json::json!(["192.0.2.240/32"])
    );
    assert_eq!(
        vip.body["metadata"]["labels"]["kubevrrp.io/load-balancer"],
        "true"
    );
    let heads: Vec<&Value> = vip.body["spec"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(heads.len(), 3);
    let pool = calls
        .iter()
        .find(|c| c.path() == "/apis/kubevrrp.io/v1alpha1/virtualippools/web/status")
        .expect("pool status");
    assert_eq!(pool.body["status"]["assigned"], 1);
    assert_eq!(pool.body["status"]["available"], 10);
    assert_eq!(pool.body["status"]["conditions"][0]["reason"], "Usable");
}

/// The group VirtualIPs the operator would have written for these Services.
fn groups_for(services: &[Service]) -> Vec<VirtualIP> {
    use operator::planner::loadbalancer::{Allocator, GroupInput, Pools, groups, request_of};
    let mut a = Allocator::new(Pools::new(&[Arc::new(pool())]));
    for s in services {
        a.restore(&request_of(s, &Default::default())).unwrap();
    }
    let nodes = three_nodes();
    groups::plan_groups(&GroupInput {
        namespace: "kube-vrrp",
        pools: a.pools(),
        assignments: a.assignments(),
        endpoints: &Default::default(),
        nodes: &nodes,
        existing: &[],
    })
    .virtual_ips
    .into_values()
    .collect()
}

#[tokio::test]
async fn a_service_that_stops_being_served_gives_its_address_back() {
    let s = written(lb_service("web", Some("kubevrrp.io/vrrp")), "192.0.2.240");
    let mut changed = s.clone();
    changed.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
    changed.spec.as_mut().unwrap().load_balancer_class = None;
    let mut h = harness(std::slice::from_ref(&s));
    for g in groups_for(std::slice::from_ref(&s)) {
        h.vips.apply_watcher_event(&watcher::Event::Apply(g));
    }
    h.ctx.restore().await;
    let sync = tokio::spawn(h.ctx.clone().sync_loop());
    h.services
        .apply_watcher_event(&watcher::Event::Apply(changed.clone()));
    h.reconcile(&changed).await;
    sync.abort();
    let calls = h.calls().await;
    let pos = |f: &dyn Fn(&Call) -> bool| calls.iter().position(f);
    let status = pos(&|c| c.path().ends_with("/services/web/status")).expect("status cleared");
    assert_eq!(calls[status].body["status"], serde_json::json!({}));
    let finalizer = calls
        .iter()
        .rposition(|c| c.path() == "/api/v1/namespaces/shop/services/web")
        .expect("finalizer removed");
    assert!(
        calls[finalizer].body["metadata"]
            .get("finalizers")
            .is_none(),
        "{:?}",
        calls[finalizer].body
    );
    // The group carrying the address is deleted before the status and finalizer go.
    let deleted = pos(&|c| {
        c.method == "DELETE"
            && c.path()
                .ends_with("/namespaces/kube-vrrp/virtualips/lb-web-0")
    })
    .expect("group VirtualIP deleted");
    assert!(deleted < status && deleted < finalizer, "{calls:#?}");
    let events = event_notes(&calls);
    assert!(
        events
            .iter()
            .any(|(r, n)| r == "IPReleased" && n.starts_with("released 192.0.2.240")),
        "{events:?}"
    );
}
