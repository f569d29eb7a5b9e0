//! Services of type LoadBalancer end to end on a real API server: etcd + kube-apiserver, three
//! simulated Nodes, a 3-host netns lab with one `kube-vrrp-agent run` per host and
//! `kube-vrrp-operator run` in the root namespace. A VirtualIPPool hands out 192.0.2.240-250;
//! the tests create Services and check the status the operator writes, the group VirtualIPs,
//! and the addresses on the wire: bound on exactly one host, moved on failover, gone on
//! delete, following the endpoints with `externalTrafficPolicy: Local`, and unchanged across an
//! operator restart.
//!
//! Needs root (network namespaces) and `KUBEBUILDER_ASSETS`; otherwise each test prints its
//! SKIPPED line. Uses the debug binaries (`cargo build -p kube-vrrp-agent -p
//! kube-vrrp-operator`), or `KUBE_VRRP_AGENT_BIN` / `KUBE_VRRP_OPERATOR_BIN`. Without an API
//! server, `lb_fake_api.rs` runs the same data path through a fake API.

use std::time::{Duration, Instant};

use lab::apiserver::wait_every;
use lab::kubelab::{KubeLab, LEASE_NS, NODES, say};
use serde_json::{Value, json};

const CLASS: &str = "kubevrrp.io/vrrp";

/// The shared real-API lab (three agents, the operator) plus a VirtualIPPool.
struct Env {
    k: KubeLab,
}

impl std::ops::Deref for Env {
    type Target = KubeLab;
    fn deref(&self) -> &KubeLab {
        &self.k
    }
}

impl std::ops::DerefMut for Env {
    fn deref_mut(&mut self) -> &mut KubeLab {
        &mut self.k
    }
}

impl Env {
    fn setup(api: lab::apiserver::ApiServer) -> Env {
        let env = Env {
            k: KubeLab::setup(api),
        };
        env.apply(&json!({
            "apiVersion": "kubevrrp.io/v1alpha1", "kind": "VirtualIPPool",
            "metadata": {"name": "web"},
            "spec": {
                "addresses": ["192.0.2.240-192.0.2.250"],
                "template": {"interface": "eth0", "advertInterval": "100ms", "garp": {"masterDelay": "0s"}},
            },
        }));
        env
    }

    fn apply(&self, obj: &Value) {
        self.api.kubectl_client().apply(obj).expect("kubectl apply");
    }

    fn stop_operator(&mut self) {
        if let Some(g) = self.operator.take() {
            g.kill();
        }
    }

    fn service(&self, name: &str) -> Value {
        let out = self
            .api
            .kubectl(&["get", "svc", name, "-n", "default", "-o", "json"])
            .unwrap_or_default();
        serde_json::from_str(&out).unwrap_or(Value::Null)
    }

    fn ingress(&self, name: &str) -> Vec<(String, String)> {
        self.service(name)["status"]["loadBalancer"]["ingress"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                (
                    i["ip"].as_str().unwrap_or_default().to_string(),
                    i["ipMode"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    fn events(&self, name: &str) -> Vec<String> {
        let out = self
            .api
            .kubectl(&[
                "get",
                "events.events.k8s.io",
                "-n",
                "default",
                "--field-selector",
                &format!("regarding.name={name}"),
                "-o",
                "json",
            ])
            .unwrap_or_default();
        let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!(
                    "{} {}",
                    e["reason"].as_str().unwrap_or_default(),
                    e["note"].as_str().unwrap_or_default()
                )
            })
            .collect()
    }

    fn wait<T>(&self, within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        match wait_every(Duration::from_millis(100), within, what, &mut f) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    fn lb_service(&self, name: &str, port: i32, extra: Value) -> Value {
        let mut svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "type": "LoadBalancer",
                "loadBalancerClass": CLASS,
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            },
        });
        merge(&mut svc, &extra);
        svc
    }
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, pv) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), pv);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if std::thread::panicking() {
            say(&format!(
                "--- Services ---\n{}",
                self.api
                    .kubectl(&["get", "svc", "-A", "-o", "yaml"])
                    .unwrap_or_default()
            ));
            say(&format!(
                "--- pools ---\n{}",
                self.api
                    .kubectl(&["get", "vippools", "-o", "yaml"])
                    .unwrap_or_default()
            ));
            say(&format!(
                "--- group VirtualIPs ---\n{}",
                self.api
                    .kubectl(&["get", "vips", "-n", LEASE_NS, "-o", "yaml"])
                    .unwrap_or_default()
            ));
            // The KubeLab prints the operator's and agents' logs after this.
        }
    }
}

macro_rules! setup {
    ($name:expr) => {{
        lab::skip_unless_root!($name);
        let api = lab::skip_unless_api!();
        Env::setup(api)
    }};
}

/// A Service gets the pool's first address (status, Events, `kubectl get vips -A`), the
/// address is bound on exactly one host, moves when that host dies, stays the same across an
/// operator restart, and is unbound everywhere when the Service stops being a LoadBalancer and
/// when it is deleted.
#[test]
fn service_address_lifecycle() {
    let mut env = setup!("service_address_lifecycle");
    let t0 = Instant::now();
    env.apply(&env.lb_service("web", 80, json!({})));
    let ingress = env.wait(
        Duration::from_secs(30),
        "status.loadBalancer.ingress of web",
        || {
            let i = env.ingress("web");
            (!i.is_empty()).then_some(i)
        },
    );
    say(&format!(
        "MEASURED ingress written {:.2}s after apply",
        t0.elapsed().as_secs_f64()
    ));
    assert_eq!(
        ingress,
        vec![("192.0.2.240".to_string(), "VIP".to_string())]
    );
    let vip = "192.0.2.240";
    let holder = env
        .lab
        .wait_single_holder(vip, &[], Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    say(&format!(
        "MEASURED bound on {} {:.2}s after apply",
        NODES[holder],
        t0.elapsed().as_secs_f64()
    ));
    // Held on exactly one host, and it stays so.
    lab::wait::holds_every(
        Duration::from_millis(100),
        Duration::from_secs(1),
        "one holder",
        || env.lab.holders(vip) == vec![holder],
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // The group VirtualIP shows the master; the Service says where it is announced.
    let master = env.wait(Duration::from_secs(20), "group VirtualIP master", || {
        let out = env
            .api
            .kubectl(&[
                "get",
                "vip",
                "lb-web-0",
                "-n",
                LEASE_NS,
                "-o",
                "jsonpath={.status.master}",
            ])
            .ok()?;
        (!out.trim().is_empty()).then(|| out.trim().to_string())
    });
    assert_eq!(master, NODES[holder]);
    let listing = env.api.kubectl(&["get", "vips", "-A"]).expect("get vips");
    say(&format!("kubectl get vips -A:\n{listing}"));
    assert!(
        listing.contains("lb-web-0")
            && listing.contains("192.0.2.240")
            && listing.contains(NODES[holder]),
        "{listing}"
    );
    env.wait(Duration::from_secs(20), "announced-from annotation", || {
        (env.service("web")["metadata"]["annotations"]["kubevrrp.io/announced-from"]
            == NODES[holder])
            .then_some(())
    });
    let events = env.wait(Duration::from_secs(10), "both events", || {
        let ev = env.events("web");
        (ev.iter()
            .any(|e| e == "IPAllocated assigned 192.0.2.240 from pool web")
            && ev
                .iter()
                .any(|e| *e == format!("Announced announced from {}", NODES[holder])))
        .then_some(ev)
    });
    say(&format!("events: {events:?}"));
    let svc = env.service("web");
    assert!(
        svc["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "kubevrrp.io/load-balancer"))
    );
    let describe = env
        .api
        .kubectl(&["describe", "svc", "web", "-n", "default"])
        .expect("describe");
    assert!(
        describe.contains(&format!("kubevrrp.io/announced-from: {}", NODES[holder])),
        "{describe}"
    );
    let pool = env
        .api
        .kubectl(&["get", "vippool", "web"])
        .expect("get vippool");
    say(&format!("kubectl get vippool web:\n{pool}"));
    env.wait(Duration::from_secs(10), "pool status 1 assigned", || {
        let out = env
            .api
            .kubectl(&[
                "get",
                "vippool",
                "web",
                "-o",
                "jsonpath={.status.assigned}/{.status.available}",
            ])
            .ok()?;
        (out.trim() == "1/10").then_some(())
    });

    // A second Service gets the next address; an impossible request is refused on that Service
    // only.
    env.apply(&env.lb_service("api", 443, json!({})));
    env.apply(&env.lb_service(
        "taken",
        8080,
        json!({"metadata": {"annotations": {"kubevrrp.io/loadBalancerIPs": "192.0.2.240"}}}),
    ));
    env.wait(Duration::from_secs(20), "api gets .241", || {
        (env.ingress("api").first().map(|i| i.0.as_str()) == Some("192.0.2.241")).then_some(())
    });
    let refused = env.wait(Duration::from_secs(20), "the refusal on taken", || {
        env.events("taken")
            .into_iter()
            .find(|e| e.starts_with("AddressInUse"))
    });
    say(&format!("refused: {refused}"));
    assert!(
        refused.contains("192.0.2.240 is already assigned to Service default/web"),
        "{refused}"
    );
    assert!(env.ingress("taken").is_empty());
    assert_eq!(env.ingress("web")[0].0, "192.0.2.240");

    // Operator restart: nothing moves.
    let rv_before = env.service("web")["metadata"]["resourceVersion"].clone();
    env.stop_operator();
    env.start_operator();
    env.wait(
        Duration::from_secs(30),
        "the new operator reconciles",
        || {
            std::fs::read_to_string(&env.operator_log)
                .ok()?
                .contains("load-balancer allocations restored")
                .then_some(())
        },
    );
    lab::wait::holds_every(
        Duration::from_millis(200),
        Duration::from_secs(3),
        "no change after restart",
        || {
            env.ingress("web").first().map(|i| i.0.as_str()) == Some("192.0.2.240")
                && env.ingress("api").first().map(|i| i.0.as_str()) == Some("192.0.2.241")
                && env.lab.holders(vip).len() == 1
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        env.service("web")["metadata"]["resourceVersion"],
        rv_before,
        "no write to web after the restart"
    );

    // Failover: the holder dies.
    let holder = env.lab.holders(vip)[0];
    let t_kill = Instant::now();
    env.kill_agent(holder);
    env.lab.link_down(env.lab.host(holder)).expect("link down");
    env.sims[holder].stop_heartbeat();
    let next = env
        .lab
        .wait_single_holder(vip, &[holder], Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}"));
    say(&format!(
        "MEASURED failover {} -> {} on the wire {:.2}s after the kill",
        NODES[holder],
        NODES[next],
        t_kill.elapsed().as_secs_f64()
    ));
    env.wait(Duration::from_secs(20), "announced-from follows", || {
        (env.service("web")["metadata"]["annotations"]["kubevrrp.io/announced-from"] == NODES[next])
            .then_some(())
    });

    // The Service stops being a LoadBalancer: its address is released and unbound.
    let t_type = Instant::now();
    env.api
        .kubectl(&[
            "patch",
            "svc",
            "api",
            "-n",
            "default",
            "--type=merge",
            "-p",
            r#"{"spec":{"type":"ClusterIP","loadBalancerClass":null}}"#,
        ])
        .expect("patch type");
    env.wait(Duration::from_secs(20), "api released", || {
        let s = env.service("api");
        (env.ingress("api").is_empty()
            && s["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty())
            && env.lab.holders("192.0.2.241").iter().all(|i| *i == holder))
        .then_some(())
    });
    say(&format!(
        "MEASURED type change released {:.2}s after the patch",
        t_type.elapsed().as_secs_f64()
    ));

    // Delete: the finalizer goes once the address is out of every group, and the waiting
    // Service gets it. (The dead host still has it bound: its agent was killed without a
    // chance to clean up.)
    let dead = holder;
    let live_holders = |a: &str| -> Vec<usize> {
        env.lab
            .holders(a)
            .into_iter()
            .filter(|i| *i != dead)
            .collect()
    };
    env.api
        .kubectl(&["delete", "svc", "web", "-n", "default", "--wait=false"])
        .expect("delete");
    env.wait(Duration::from_secs(20), "web gone", || {
        env.service("web").is_null().then_some(())
    });
    env.wait(
        Duration::from_secs(20),
        "taken gets .240 once it is free",
        || {
            (env.ingress("taken").first().map(|i| i.0.as_str()) == Some("192.0.2.240"))
                .then_some(())
        },
    );
    env.wait(Duration::from_secs(20), "one live holder for taken", || {
        (live_holders(vip).len() == 1).then_some(())
    });
    let t_del = Instant::now();
    env.api
        .kubectl(&["delete", "svc", "taken", "-n", "default", "--wait=false"])
        .expect("delete");
    env.wait(Duration::from_secs(20), "taken gone and unbound", || {
        (env.service("taken").is_null() && live_holders(vip).is_empty()).then_some(())
    });
    say(&format!(
        "MEASURED delete released {:.2}s after the delete",
        t_del.elapsed().as_secs_f64()
    ));
    // The group VirtualIPs are deleted (their own finalizer waits for the dead node's agent
    // until its cleanup timeout).
    env.wait(
        Duration::from_secs(30),
        "every group VirtualIP deleted",
        || {
            let out = env
                .api
                .kubectl(&["get", "vips", "-n", LEASE_NS, "-o", "json"])
                .ok()?;
            let v: Value = serde_json::from_str(&out).ok()?;
            v["items"]
                .as_array()?
                .iter()
                .all(|i| !i["metadata"]["deletionTimestamp"].is_null())
                .then_some(())
        },
    );
    env.wait(Duration::from_secs(10), "pool status 0 assigned", || {
        let out = env
            .api
            .kubectl(&["get", "vippool", "web", "-o", "jsonpath={.status.assigned}"])
            .ok()?;
        (out.trim() == "0").then_some(())
    });
}

/// `externalTrafficPolicy: Local`: only a node with a Ready endpoint announces the address,
/// and it follows the endpoint when it moves.
#[test]
fn local_policy_follows_endpoints() {
    let env = setup!("local_policy_follows_endpoints");
    let slice = |node: &str, ready: bool| {
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "local-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "local"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["203.0.113.10"], "nodeName": node, "conditions": {"ready": ready}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        })
    };
    env.apply(&slice("n2", true));
    env.apply(&env.lb_service(
        "local",
        80,
        json!({"spec": {"externalTrafficPolicy": "Local"}}),
    ));
    let vip = env.wait(Duration::from_secs(30), "ingress", || {
        env.ingress("local").first().map(|i| i.0.clone())
    });
    env.lab
        .wait_holder(&vip, 1, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("{e}"));
    lab::wait::holds_every(
        Duration::from_millis(100),
        Duration::from_secs(1),
        "only n2",
        || env.lab.holders(&vip) == vec![1],
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // The endpoint moves to n3.
    let t = Instant::now();
    env.apply(&slice("n3", true));
    let moved = env
        .lab
        .wait_holder(&vip, 2, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    say(&format!(
        "MEASURED Local: address on n3 only {:.3}s after the endpoint moved",
        t.elapsed().as_secs_f64()
    ));
    assert!(
        moved <= Duration::from_secs(2),
        "followed the endpoint in {moved:?}"
    );

    // No Ready endpoint: announced nowhere, and the Service says so.
    env.apply(&slice("n3", false));
    env.wait(Duration::from_secs(10), "announced nowhere", || {
        env.lab.holders(&vip).is_empty().then_some(())
    });
    env.wait(Duration::from_secs(10), "NotAnnounced event", || {
        env.events("local")
            .into_iter()
            .find(|e| e.starts_with("NotAnnounced"))
    });
    // Ready again on n1.
    let t = Instant::now();
    env.apply(&slice("n1", true));
    let back = env
        .lab
        .wait_holder(&vip, 0, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    say(&format!(
        "MEASURED Local: address on n1 {:.3}s after its endpoint became Ready",
        t.elapsed().as_secs_f64()
    ));
    assert!(
        back <= Duration::from_secs(2),
        "followed the endpoint in {back:?}"
    );
}
