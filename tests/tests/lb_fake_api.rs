//! Services of type LoadBalancer on the wire without an API server: the operator's pure
//! layers (allocator, grouping, planner) run in this process on an in-memory world and publish
//! each node's VRRPNode spec through a fake API server (axum, in the root namespace, reached
//! from each host's namespace through a loopback forwarder); three real `kube-vrrp-agent run`
//! follow it. Checks: twelve Service addresses in three VRRP instances with their masters on
//! three different hosts, each address bound on exactly one host; a host dies and only its
//! addresses move; an address added to a running instance is bound without moving the others;
//! deleting the Services unbinds everything.
//!
//! The same flow through a real API server (Service status, Events, finalizer) is
//! `api_loadbalancer.rs`. Needs root (network namespaces); prints SKIPPED otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use crds::pool::{VirtualIPPool, VirtualIPPoolSpec, VirtualIPTemplate};
use crds::{VRRPNode, VRRPNodeSpec, VirtualIP};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeStatus, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use lab::apiserver::{NetnsForward, free_port, tail};
use lab::{Lab, LabBuilder, ProcGuard};
use operator::planner::loadbalancer::groups::plan_groups;
use operator::planner::loadbalancer::{
    Allocator, GroupInput, Pools, SvcKey, request_of, served, svc_key,
};
use operator::planner::{self, World};
use serde_json::{Value, json};

const NODES: [&str; 3] = ["n1", "n2", "n3"];
const NS: &str = "kube-vrrp";

// ---- the fake API server ----

#[derive(Default)]
struct Objects {
    /// Node → (resourceVersion, spec).
    specs: BTreeMap<String, (u64, VRRPNodeSpec)>,
    /// Node → the last status its agent wrote.
    statuses: BTreeMap<String, Value>,
    next_rv: u64,
}

#[derive(Clone)]
struct Fake {
    objects: Arc<Mutex<Objects>>,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fake {
    fn publish(&self, specs: BTreeMap<String, VRRPNodeSpec>) {
        let mut o = lock(&self.objects);
        for (node, spec) in specs {
            if o.specs.get(&node).is_some_and(|(_, s)| *s == spec) {
                continue;
            }
            o.next_rv += 1;
            let rv = o.next_rv;
            o.specs.insert(node, (rv, spec));
        }
        let rv = o.next_rv;
        drop(o);
        self.changed.send_replace(rv);
    }

    fn object(node: &str, rv: u64, spec: &VRRPNodeSpec, status: Option<&Value>) -> Value {
        let mut v = serde_json::to_value(VRRPNode::new(node, spec.clone())).unwrap_or(Value::Null);
        v["metadata"]["resourceVersion"] = json!(rv.to_string());
        v["metadata"]["uid"] = json!(format!("uid-{node}"));
        if let Some(s) = status {
            v["status"] = s.clone();
        }
        v
    }

    fn state_of(&self, node: &str, instance: &str) -> String {
        lock(&self.objects)
            .statuses
            .get(node)
            .and_then(|s| s["instances"].as_array().cloned())
            .into_iter()
            .flatten()
            .find(|i| i["name"] == instance)
            .and_then(|i| i["state"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

fn query_value<'a>(uri: &'a Uri, key: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

fn json_response(code: StatusCode, body: &Value) -> axum::response::Response {
    axum::response::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

async fn handle(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> axum::response::Response {
    let path = uri.path().to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if method == Method::GET && path == "/apis/kubevrrp.io/v1alpha1/vrrpnodes" {
        let node = query_value(&uri, "fieldSelector")
            .and_then(|f| f.strip_prefix("metadata.name%3D"))
            .unwrap_or_default()
            .to_string();
        let watch = matches!(query_value(&uri, "watch"), Some("true" | "1"));
        if !watch {
            let o = lock(&fake.objects);
            let items: Vec<Value> = o
                .specs
                .get(&node)
                .map(|(rv, s)| Fake::object(&node, *rv, s, o.statuses.get(&node)))
                .into_iter()
                .collect();
            let list = json!({
                "apiVersion": "kubevrrp.io/v1alpha1", "kind": "VRRPNodeList",
                "metadata": {"resourceVersion": o.next_rv.to_string()}, "items": items,
            });
            return json_response(StatusCode::OK, &list);
        }
        // A watch: every change of this node's spec after the version the client has.
        let since: u64 = query_value(&uri, "resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let rx = fake.changed.subscribe();
        let objects = fake.objects.clone();
        let stream = futures::stream::unfold((rx, since), move |(mut rx, seen)| {
            let objects = objects.clone();
            let node = node.clone();
            async move {
                loop {
                    let next = {
                        let o = lock(&objects);
                        o.specs
                            .get(&node)
                            .filter(|(rv, _)| *rv > seen)
                            .map(|(rv, s)| (*rv, Fake::object(&node, *rv, s, None)))
                    };
                    if let Some((rv, obj)) = next {
                        let line = format!("{}\n", json!({"type": "MODIFIED", "object": obj}));
                        return Some((
                            Ok::<_, std::convert::Infallible>(Bytes::from(line)),
                            (rx, rv),
                        ));
                    }
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
            }
        });
        return axum::response::Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(stream))
            .unwrap_or_default();
    }
    if method == Method::PATCH
        && let Some(node) = path
            .strip_prefix("/apis/kubevrrp.io/v1alpha1/vrrpnodes/")
            .and_then(|r| r.strip_suffix("/status"))
    {
        let mut o = lock(&fake.objects);
        o.statuses.insert(node.to_string(), body["status"].clone());
        let (rv, spec) = o.specs.get(node).cloned().unwrap_or_default();
        return json_response(
            StatusCode::OK,
            &Fake::object(node, rv, &spec, Some(&body["status"])),
        );
    }
    if matches!(method, Method::PATCH | Method::POST | Method::PUT) {
        // Leases and Events: accepted as sent.
        let mut echo = body;
        if echo.is_object() {
            echo["metadata"]["resourceVersion"] = json!("1");
            echo["metadata"]["uid"] = json!("fake");
        }
        let code = if method == Method::POST {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        return json_response(code, &echo);
    }
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 404, "reason": "NotFound", "message": format!("{path} is not served by the fake API")}),
    )
}

// ---- the in-process operator ----

fn node(name: &str, ip: Ipv4Addr) -> Arc<Node> {
    Arc::new(Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/hostname".to_string(),
                name.to_string(),
            )])),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: ip.to_string(),
            }]),
            ..Default::default()
        }),
    })
}

fn service(name: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".into()),
            load_balancer_class: Some("kubevrrp.io/vrrp".into()),
            ip_families: Some(vec!["IPv4".into()]),
            ports: Some(vec![ServicePort {
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// What the operator's executor keeps between reconciles, minus the API.
struct Operator {
    alloc: Allocator,
    nodes: Vec<Arc<Node>>,
    /// The group VirtualIPs as "written", with the VRID their status would record.
    groups: Vec<Arc<VirtualIP>>,
    /// Service → its group, from the last plan.
    of_service: BTreeMap<SvcKey, String>,
}

impl Operator {
    fn add(&mut self, svc: &Service) -> IpAddr {
        assert!(served(svc, false));
        let a = self
            .alloc
            .assign(&request_of(svc, &BTreeMap::new()))
            .expect("allocates");
        a.addresses[0]
    }

    /// Group, place, and return every node's VRRPNode spec.
    fn plan(&mut self) -> BTreeMap<String, VRRPNodeSpec> {
        let gp = plan_groups(&GroupInput {
            namespace: NS,
            pools: self.alloc.pools(),
            assignments: self.alloc.assignments(),
            endpoints: &BTreeMap::new(),
            nodes: &self.nodes,
            existing: &self.groups,
        });
        let vips: Vec<Arc<VirtualIP>> = gp
            .virtual_ips
            .values()
            .map(|v| {
                let mut v = v.clone();
                v.status = self
                    .groups
                    .iter()
                    .find(|g| g.metadata.name == v.metadata.name)
                    .and_then(|g| g.status.clone());
                Arc::new(v)
            })
            .collect();
        let world = World {
            virtual_ips: vips.clone(),
            nodes: self.nodes.clone(),
            ..Default::default()
        };
        let placement = planner::place_all(&world);
        self.groups = vips
            .into_iter()
            .map(|v| {
                let mut v = (*v).clone();
                let key = planner::vip_key(&v);
                let mut st = v.status.clone().unwrap_or_default();
                st.virtual_router_id = placement.virtual_ips.get(&key).and_then(|p| p.vrid);
                v.status = Some(st);
                Arc::new(v)
            })
            .collect();
        self.of_service = gp.of_service;
        placement
            .nodes
            .into_iter()
            .map(|(n, p)| (n, p.spec))
            .collect()
    }

    fn head_of(&self, svc: &str) -> String {
        let key = SvcKey {
            namespace: "default".into(),
            name: svc.into(),
        };
        let group = &self.of_service[&key];
        let g = self
            .groups
            .iter()
            .find(|g| g.metadata.name.as_deref() == Some(group.as_str()))
            .expect("group");
        g.spec
            .nodes
            .iter()
            .max_by_key(|o| o.priority)
            .map(|o| o.name.clone())
            .unwrap_or_default()
    }
}

// ---- the test ----

struct Env {
    agents: Vec<Option<ProcGuard>>,
    _forwards: Vec<NetnsForward>,
    lab: Lab,
    _runtime: tokio::runtime::Runtime,
    fake: Fake,
    _dir: tempfile::TempDir,
    logs: Vec<std::path::PathBuf>,
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, l) in self.logs.iter().enumerate() {
                eprintln!("--- agent {} log tail ---\n{}", NODES[i], tail(l, 30));
            }
            eprintln!("--- reported ---\n{:#?}", lock(&self.fake.objects).statuses);
        }
    }
}

fn setup() -> Env {
    let lab = LabBuilder::default().hosts(3).build().expect("lab");
    let dir = tempfile::Builder::new()
        .prefix("kvlbfake-")
        .tempdir()
        .expect("temp dir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let port = free_port().expect("port");
    let fake = Fake {
        objects: Arc::default(),
        changed: Arc::new(tokio::sync::watch::channel(0).0),
    };
    let app = Router::new().fallback(handle).with_state(fake.clone());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            port,
        ))))
        .expect("bind the fake API");
    runtime.spawn(async move { axum::serve(listener, app).await });
    let upstream = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let forwards: Vec<NetnsForward> = lab
        .hosts()
        .iter()
        .map(|h| NetnsForward::start(&h.netns, port, upstream).expect("forwarder"))
        .collect();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: fake\n  user:\n    token: test\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\n"
        ),
    )
    .expect("kubeconfig");
    let bin = lab::daemon::agent_bin();
    assert!(
        bin.exists(),
        "{bin:?} missing: run `cargo build -p kube-vrrp-agent`"
    );
    let mut env = Env {
        agents: Vec::new(),
        _forwards: forwards,
        lab,
        _runtime: runtime,
        fake,
        logs: NODES
            .iter()
            .map(|n| dir.path().join(format!("agent-{n}.log")))
            .collect(),
        _dir: dir,
    };
    for (i, n) in NODES.iter().enumerate() {
        let state = env._dir.path().join(n);
        std::fs::create_dir_all(&state).expect("state dir");
        let argv = [
            bin.to_str().expect("utf-8 path"),
            "run",
            "--node-name",
            n,
            "--lease-namespace",
            NS,
            "--state-dir",
            state.to_str().expect("utf-8 path"),
        ];
        let mut cmd = lab::netns::command_in(&env.lab.host(i).netns, &argv);
        cmd.env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info");
        let g = env
            .lab
            .spawn_cmd(cmd, &format!("agent {n}"), Some(&env.logs[i]))
            .expect("spawn agent");
        env.agents.push(Some(g));
    }
    env
}

fn addr(ip: IpAddr) -> String {
    format!("{ip}/32")
}

#[test]
fn service_addresses_spread_fail_over_and_go() {
    lab::skip_unless_root!("service_addresses_spread_fail_over_and_go");
    let mut env = setup();
    let hosts: Vec<Ipv4Addr> = env.lab.hosts().iter().map(|h| h.ipv4).collect();
    let pool = VirtualIPPool::new(
        "web",
        VirtualIPPoolSpec {
            addresses: vec!["192.0.2.224/28".into()],
            template: Some(VirtualIPTemplate {
                interface: Some("eth0".into()),
                advert_interval: Some("100ms".parse().expect("duration")),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let mut op = Operator {
        alloc: Allocator::new(Pools::new(&[Arc::new(pool)])),
        nodes: NODES
            .iter()
            .zip(&hosts)
            .map(|(n, ip)| node(n, *ip))
            .collect(),
        groups: Vec::new(),
        of_service: BTreeMap::new(),
    };
    let names: Vec<String> = (0..12).map(|i| format!("svc-{i:02}")).collect();
    let mut ips: BTreeMap<String, IpAddr> = BTreeMap::new();
    for n in &names {
        ips.insert(n.clone(), op.add(&service(n)));
    }
    let t0 = Instant::now();
    env.fake.publish(op.plan());
    assert_eq!(op.groups.len(), 3, "one group per node");
    let heads: BTreeSet<String> = names.iter().map(|n| op.head_of(n)).collect();
    assert_eq!(
        heads.len(),
        3,
        "three groups, three different masters: {heads:?}"
    );

    // Every address on exactly its group's master.
    let host_index = |node: &str| NODES.iter().position(|n| *n == node).expect("node");
    for n in &names {
        let want = host_index(&op.head_of(n));
        env.lab
            .wait_holder(&addr(ips[n]), want, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{n}: {e}"));
    }
    eprintln!(
        "MEASURED 12 Service addresses bound on their 3 masters {:.2}s after publishing",
        t0.elapsed().as_secs_f64()
    );
    let group_of = |op: &Operator, svc: &str| {
        op.of_service[&SvcKey {
            namespace: "default".into(),
            name: svc.into(),
        }]
            .clone()
    };
    for n in &names {
        let node = op.head_of(n);
        let inst = format!("{NS}/{}", group_of(&op, n));
        lab::wait_until(Duration::from_secs(10), "agent reports MASTER", || {
            (env.fake.state_of(&node, &inst) == "MASTER").then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    // An address added to a running instance is bound without moving any other.
    let before: BTreeMap<String, Vec<usize>> = names
        .iter()
        .map(|n| (n.clone(), env.lab.holders(&addr(ips[n]))))
        .collect();
    let extra = op.add(&service("svc-extra"));
    env.fake.publish(op.plan());
    let extra_head = host_index(&op.head_of("svc-extra"));
    env.lab
        .wait_holder(&addr(extra), extra_head, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("svc-extra: {e}"));
    for n in &names {
        assert_eq!(env.lab.holders(&addr(ips[n])), before[n], "{n} moved");
    }

    // The master of svc-00's group dies: its addresses move, the others stay.
    let dead = host_index(&op.head_of("svc-00"));
    let t_kill = Instant::now();
    if let Some(g) = env.agents[dead].take() {
        g.kill();
    }
    env.lab.link_down(env.lab.host(dead)).expect("link down");
    for n in &names {
        let a = addr(ips[n]);
        if before[n] == vec![dead] {
            env.lab
                .wait_single_holder(&a, &[dead], Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("{n}: {e}"));
        } else {
            let live: Vec<usize> = env.lab.holders(&a);
            assert_eq!(live, before[n], "{n} is on a live master and stays");
        }
    }
    eprintln!(
        "MEASURED the dead master's addresses taken over {:.2}s after the kill",
        t_kill.elapsed().as_secs_f64()
    );

    // Every Service deleted: nothing stays bound on a live host.
    let mut all = names.clone();
    all.push("svc-extra".into());
    for n in &all {
        op.alloc.release(&svc_key(&service(n)));
    }
    env.fake.publish(op.plan());
    assert!(op.groups.is_empty());
    for n in &all {
        let a = match ips.get(n) {
            Some(ip) => addr(*ip),
            None => addr(extra),
        };
        lab::wait_until(Duration::from_secs(10), &format!("{n} unbound"), || {
            env.lab.holders(&a).iter().all(|i| *i == dead).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }
}
