//! The agent's API layer against a mocked API server (tower-test): the status apply request,
//! retries after an outage, and the field selector of the watch.

use std::time::Duration;

use crds::vrrpnode::{InstanceStatus, VrrpState};
use crds::{VRRPNode, VRRPNodeSpec, VRRPNodeStatus};
use http::{Request, Response, StatusCode};
use kube::client::Body;
use kube::{Api, Client};
use tokio::sync::watch;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn mock_client() -> (Client, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(svc, "default"), handle)
}

fn status(state: VrrpState) -> VRRPNodeStatus {
    VRRPNodeStatus {
        instances: vec![InstanceStatus {
            name: "default/web".into(),
            state: Some(state),
            effective_priority: Some(200),
            ..Default::default()
        }],
        instance_count: 1,
        master_count: u32::from(state == VrrpState::Master),
        ..Default::default()
    }
}

async fn body_json(req: Request<Body>) -> serde_json::Value {
    let bytes = req.into_body().collect_bytes().await.expect("body");
    serde_json::from_slice(&bytes).expect("json body")
}

fn ok_node() -> Response<Body> {
    let node = VRRPNode::new("node-a", VRRPNodeSpec::default());
    Response::builder()
        .body(Body::from(serde_json::to_vec(&node).unwrap()))
        .unwrap()
}

fn not_found() -> Response<Body> {
    let st = serde_json::json!({"kind":"Status","apiVersion":"v1","status":"Failure","message":"vrrpnodes.kubevrrp.io \"node-a\" not found","reason":"NotFound","code":404});
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .body(Body::from(serde_json::to_vec(&st).unwrap()))
        .unwrap()
}

fn unavailable() -> Response<Body> {
    let st = serde_json::json!({"kind":"Status","apiVersion":"v1","status":"Failure","message":"unavailable","reason":"ServiceUnavailable","code":503});
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .body(Body::from(serde_json::to_vec(&st).unwrap()))
        .unwrap()
}

/// The status reporter on a mocked API server: `first` is the first snapshot, `exists` what
/// the VRRPNode watch says.
struct Reporter {
    handle: Handle,
    status: watch::Sender<VRRPNodeStatus>,
    exists: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn reporter(first: VrrpState, exists: bool) -> Reporter {
    let (client, handle) = mock_client();
    let (status_tx, rx) = watch::channel(status(first));
    let (exists_tx, exists_rx) = watch::channel(exists);
    let task = tokio::spawn(agent::kube::report::run(
        Api::all(client),
        "node-a".into(),
        rx,
        exists_rx,
    ));
    Reporter {
        handle,
        status: status_tx,
        exists: exists_tx,
        task,
    }
}

#[tokio::test]
async fn status_is_server_side_applied_by_the_agent_field_manager() {
    let Reporter {
        mut handle,
        status: tx,
        exists: _exists,
        task,
    } = reporter(VrrpState::Master, true);

    let (req, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(req.method(), http::Method::PATCH);
    assert_eq!(
        req.uri().path(),
        "/apis/kubevrrp.io/v1alpha1/vrrpnodes/node-a/status"
    );
    let query = req.uri().query().unwrap_or_default().to_string();
    assert!(query.contains("fieldManager=kube-vrrp-agent"), "{query}");
    assert!(query.contains("force=true"), "{query}");
    assert_eq!(
        req.headers()["content-type"],
        "application/apply-patch+yaml"
    );
    let body = body_json(req).await;
    assert_eq!(body["kind"], "VRRPNode");
    assert_eq!(body["status"]["instances"][0]["state"], "MASTER");
    assert_eq!(body["status"]["masterCount"], 1);
    send.send_response(ok_node());

    drop(tx);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
}

/// Found on a real API server: the agent of a node no VirtualIP selects (the operator creates
/// no VRRPNode for it) retried its status write every 2 s forever, with a WARN each time.
#[tokio::test(start_paused = true)]
async fn without_a_vrrpnode_the_status_waits_for_it_instead_of_retrying() {
    let Reporter {
        mut handle,
        status: _tx,
        exists,
        task,
    } = reporter(VrrpState::Backup, false);
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response(not_found());
    // Minutes pass with no VRRPNode: no request (the 60 s safety retry aside).
    tokio::time::sleep(Duration::from_secs(50)).await;
    assert!(
        futures::poll!(Box::pin(handle.next_request())).is_pending(),
        "no retry while the object is absent"
    );
    // The operator creates it: the status goes out at once.
    exists.send(true).unwrap();
    let (req, send) = tokio::time::timeout(Duration::from_millis(100), handle.next_request())
        .await
        .expect("written as soon as the object exists")
        .unwrap();
    assert_eq!(
        body_json(req).await["status"]["instances"][0]["state"],
        "BACKUP"
    );
    send.send_response(ok_node());
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(futures::poll!(Box::pin(handle.next_request())).is_pending());
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn stopping_without_a_vrrpnode_does_not_wait_to_write() {
    let Reporter {
        mut handle,
        status: tx,
        exists: _exists,
        task,
    } = reporter(VrrpState::Backup, false);
    let (_req, send) = handle.next_request().await.unwrap();
    send.send_response(not_found());
    tokio::time::sleep(Duration::from_secs(1)).await;
    tx.send(status(VrrpState::Init)).unwrap();
    drop(tx); // the agent stops
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the reporter ends at once: there is no object to write to")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn reports_queued_during_an_outage_are_written_when_the_api_returns() {
    let Reporter {
        mut handle,
        status: tx,
        exists: _exists,
        task,
    } = reporter(VrrpState::Backup, true);

    // The API is down for the first attempts.
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(
        body_json(req).await["status"]["instances"][0]["state"],
        "BACKUP"
    );
    // Meanwhile the node becomes MASTER, then FAULT: only the newest state must be written.
    tx.send(status(VrrpState::Master)).unwrap();
    tx.send(status(VrrpState::Fault)).unwrap();
    send.send_response(unavailable());
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(
        body_json(req).await["status"]["instances"][0]["state"],
        "FAULT"
    );
    send.send_response(unavailable());
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(
        body_json(req).await["status"]["instances"][0]["state"],
        "FAULT",
        "retried after backoff"
    );
    send.send_response(ok_node());

    // Nothing more is written while nothing changes.
    tx.send(status(VrrpState::Fault)).unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(futures::poll!(Box::pin(handle.next_request())).is_pending());
    drop(tx);
    task.await.unwrap();
}

#[tokio::test]
async fn the_watch_asks_for_this_node_only_and_publishes_its_spec() {
    let (client, mut handle) = mock_client();
    let dir = tempfile::tempdir().unwrap();
    let cache = agent::kube::cache::ConfigCache::new(dir.path());
    let (tx, mut rx) = watch::channel(VRRPNodeSpec::default());
    let health = std::sync::Arc::new(agent::kube::source::ApiHealth::default());
    let task = tokio::spawn(agent::kube::source::run(
        Api::all(client),
        "node-a".into(),
        cache.clone(),
        tx,
        watch::channel(false).0,
        health,
    ));

    let (req, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(req.method(), http::Method::GET);
    assert_eq!(req.uri().path(), "/apis/kubevrrp.io/v1alpha1/vrrpnodes");
    let query = req.uri().query().unwrap_or_default().to_string();
    assert!(
        query.contains("fieldSelector=metadata.name%3Dnode-a"),
        "{query}"
    );
    let mut node = VRRPNode::new(
        "node-a",
        VRRPNodeSpec {
            instances: vec![crds::ResolvedInstance {
                name: "default/web".into(),
                virtual_router_id: 51,
                ..Default::default()
            }],
            config_hash: "h1".into(),
        },
    );
    node.metadata.resource_version = Some("7".into());
    let list = serde_json::json!({"apiVersion":"kubevrrp.io/v1alpha1","kind":"VRRPNodeList","metadata":{"resourceVersion":"7"},"items":[node]});
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&list).unwrap()))
            .unwrap(),
    );

    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rx.borrow().config_hash, "h1");
    assert_eq!(
        cache.load().unwrap().unwrap().config_hash,
        "h1",
        "cached on disk"
    );
    task.abort();
}

/// Found with heaptrack on a real API server: a task per transition made a takeover of 255
/// instances 255 concurrent Event requests, each on a TLS connection of its own.
#[tokio::test]
async fn transition_events_go_out_one_request_at_a_time() {
    use agent::daemon::TransitionSink;
    let (client, mut handle) = mock_client();
    let queue = agent::kube::events::EventQueue::spawn(agent::kube::events::TransitionEvents::new(
        client, "node-a",
    ));
    for i in 0..50 {
        let vip = crds::vrrpnode::ObjectRef {
            namespace: "prod".into(),
            name: format!("web-{i}"),
        };
        queue.transition(&vip, VrrpState::Master, "master down timer expired");
    }
    for i in 0..50 {
        let (req, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
            .await
            .unwrap()
            .unwrap();
        let body = body_json(req).await;
        assert_eq!(body["regarding"]["name"], format!("web-{i}"), "in order");
        // Nothing else is in flight while this one is unanswered.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            futures::poll!(Box::pin(handle.next_request())).is_pending(),
            "a second Event request while #{i} is unanswered"
        );
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
    }
}

#[tokio::test]
async fn becoming_master_publishes_an_event_on_the_virtualip() {
    let (client, mut handle) = mock_client();
    let events = agent::kube::events::TransitionEvents::new(client, "node-a");
    let vip = crds::vrrpnode::ObjectRef {
        namespace: "prod".into(),
        name: "web".into(),
    };
    let publish = tokio::spawn(async move {
        events
            .publish(&vip, VrrpState::Master, "master down timer expired")
            .await
    });
    let (req, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(req.method(), http::Method::POST);
    assert_eq!(
        req.uri().path(),
        "/apis/events.k8s.io/v1/namespaces/prod/events"
    );
    let body = body_json(req).await;
    assert_eq!(body["reason"], "BecameMaster");
    assert_eq!(body["regarding"]["kind"], "VirtualIP");
    assert_eq!(body["regarding"]["name"], "web");
    assert_eq!(body["reportingController"], "kube-vrrp-agent");
    assert_eq!(body["reportingInstance"], "node-a");
    assert_eq!(
        body["note"],
        "node node-a is now MASTER: master down timer expired"
    );
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
    publish.await.unwrap();
}
