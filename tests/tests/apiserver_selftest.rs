//! Self-test of the real-API-server harness (`lab::apiserver`): start etcd + kube-apiserver,
//! a NodeSim with its Lease heartbeat, an API outage (SIGKILL) and restart with the data
//! intact, a service-account token kubeconfig under RBAC, and the forwarder that makes the
//! server reachable from inside a network namespace. Without `KUBEBUILDER_ASSETS` every test
//! prints `SKIPPED: no API server (set KUBEBUILDER_ASSETS)`.

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use lab::apiserver::ApiServer;
use lab::apiserver::{KUBECTL_POLL, holds_every, wait_every};
use lab::netns;

/// Waits for a condition that runs kubectl, polling every [`KUBECTL_POLL`].
fn wait_for(within: Duration, what: &str, mut cond: impl FnMut() -> bool) -> lab::Result<()> {
    wait_every(KUBECTL_POLL, within, what, || cond().then_some(()))
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{:04x}",
        std::process::id(),
        lab::topology::random_u16()
    )
}

fn node_ready(api: &ApiServer, name: &str) -> String {
    api.kubectl(&[
        "get",
        "node",
        name,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ])
    .unwrap_or_default()
}

#[test]
fn node_lease_outage_and_restart() {
    let api = lab::skip_unless_api!();
    let name = unique("sim");
    let addr: IpAddr = "192.0.2.11".parse().unwrap();
    let mut node = api
        .node_sim(&name, &[("kube-vrrp.io/test", "selftest")], &[addr])
        .unwrap();

    // The Node is listed with its label, address and Ready=True.
    let nodes = api.kubectl(&["get", "nodes", "-o", "name"]).unwrap();
    assert!(nodes.contains(&format!("node/{name}")), "{nodes}");
    let labelled = api
        .kubectl(&[
            "get",
            "nodes",
            "-l",
            "kube-vrrp.io/test=selftest",
            "-o",
            "name",
        ])
        .unwrap();
    assert_eq!(labelled.trim(), format!("node/{name}"));
    let ip = api
        .kubectl(&[
            "get",
            "node",
            &name,
            "-o",
            "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
        ])
        .unwrap();
    assert_eq!(ip.trim(), "192.0.2.11");
    assert_eq!(node_ready(&api, &name), "True");

    // Ready=False on demand, and back.
    node.set_ready(false).unwrap();
    assert_eq!(node_ready(&api, &name), "False");
    node.set_ready(true).unwrap();
    assert_eq!(node_ready(&api, &name), "True");

    // The heartbeat renews the Lease.
    let renew_time = || {
        api.kubectl(&[
            "get",
            "lease",
            &name,
            "-n",
            "kube-node-lease",
            "-o",
            "jsonpath={.spec.renewTime}",
        ])
        .unwrap_or_default()
    };
    let first = renew_time();
    assert!(!first.is_empty());
    node.start_heartbeat(Duration::from_millis(500));
    wait_for(Duration::from_secs(20), "two lease renewals", || {
        node.renewals() >= 2 && renew_time() != first
    })
    .unwrap();

    // API outage: SIGKILL kube-apiserver; etcd stays healthy; kubectl fails.
    let pid = api.apiserver_pid().unwrap();
    api.kill_apiserver();
    assert!(!api.apiserver_running());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "kube-apiserver {pid} still exists"
    );
    assert!(api.etcd_healthy());
    assert!(api.kubectl(&["get", "nodes"]).is_err());
    assert!(!api.is_ready());

    // Restart on the same port: the Node survived, and the heartbeat resumes by itself.
    api.restart_apiserver().unwrap();
    let nodes = api.kubectl(&["get", "nodes", "-o", "name"]).unwrap();
    assert!(nodes.contains(&format!("node/{name}")), "{nodes}");
    let before = node.renewals();
    wait_for(
        Duration::from_secs(20),
        "renewals after the restart",
        || node.renewals() > before,
    )
    .unwrap();

    // A dead kubelet: no more renewals.
    node.stop_heartbeat();
    let stopped = node.renewals();
    let last = renew_time();
    assert!(!node.heartbeat_running());
    assert_eq!(node.renewals(), stopped);
    assert_eq!(renew_time(), last);
}

#[test]
fn token_kubeconfig_is_subject_to_rbac() {
    let api = lab::skip_unless_api!();
    let token = api
        .service_account_token("kvrrp-selftest", "probe", "1h")
        .unwrap();
    let kc = api.write_token_kubeconfig("probe", &token).unwrap();
    let probe = api.kubectl_client().with_kubeconfig(&kc);
    let who = probe
        .run(&[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .unwrap();
    assert_eq!(who.trim(), "system:serviceaccount:kvrrp-selftest:probe");
    let err = probe.run(&["get", "nodes"]).unwrap_err().to_string();
    assert!(
        err.contains("Forbidden") || err.contains("forbidden"),
        "{err}"
    );
    // Admin can.
    api.kubectl(&["get", "nodes"]).unwrap();
}

/// A throw-away network namespace, named like the lab's (`kvlab<PID>x...`) so that
/// `lab::topology::sweep_stale` removes it if this process dies before dropping it.
struct TempNetns(String);

impl TempNetns {
    fn new() -> TempNetns {
        let name = format!(
            "kvlab{}xapi{:04x}",
            std::process::id(),
            lab::topology::random_u16()
        );
        netns::run(Command::new("ip").args(["netns", "add", &name])).unwrap();
        TempNetns(name)
    }
}

impl Drop for TempNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn reachable_from_a_netns_through_the_forwarder() {
    let api = lab::skip_unless_api!();
    lab::skip_unless_root!("reachable_from_a_netns_through_the_forwarder");
    let ns = TempNetns::new();
    let kubectl = api.assets().kubectl.to_string_lossy().into_owned();
    let kubeconfig = api.kubeconfig_path().to_string_lossy().into_owned();
    let get_ns = || {
        netns::run(&mut netns::command_in(
            &ns.0,
            &[
                &kubectl,
                "--kubeconfig",
                &kubeconfig,
                "--request-timeout=5s",
                "get",
                "ns",
                "-o",
                "name",
            ],
        ))
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };

    // Inside the namespace 127.0.0.1 is its own loopback: nothing listens there.
    assert!(get_ns().is_err());

    let fwd = api.expose_in_netns(&ns.0).unwrap();
    let out = get_ns().unwrap();
    assert!(out.contains("namespace/kube-node-lease"), "{out}");
    assert!(fwd.accepted() >= 1);

    // During an outage the forwarder refuses like the server would, and recovers after.
    api.kill_apiserver();
    assert!(get_ns().is_err());
    api.restart_apiserver().unwrap();
    let out = wait_every(
        KUBECTL_POLL,
        Duration::from_secs(20),
        "kubectl via the forwarder",
        || get_ns().ok(),
    )
    .unwrap();
    assert!(out.contains("namespace/default"), "{out}");

    // Stopped on drop.
    drop(fwd);
    assert!(get_ns().is_err());
}

#[test]
fn controller_manager_marks_a_silent_node_unknown() {
    let api = lab::skip_unless_api!(lab::apiserver::ApiServerOptions {
        controller_manager: true,
        controller_manager_args: vec![
            "--node-monitor-period=2s".into(),
            "--node-monitor-grace-period=10s".into(),
        ],
        ..Default::default()
    });
    // The service-account controller runs: a new namespace gets its `default` account.
    api.kubectl(&["create", "namespace", "kvrrp-kcm"]).unwrap();
    wait_for(Duration::from_secs(60), "serviceaccount default", || {
        api.kubectl(&["get", "serviceaccount", "default", "-n", "kvrrp-kcm"])
            .is_ok()
    })
    .unwrap();

    let name = unique("kcm");
    let mut node = api
        .node_sim(&name, &[], &["192.0.2.12".parse().unwrap()])
        .unwrap();
    node.start_heartbeat(Duration::from_secs(2));
    // Renewed: stays Ready past the grace period.
    holds_every(
        Duration::from_millis(500),
        Duration::from_secs(15),
        "node stays Ready",
        || node_ready(&api, &name) == "True",
    )
    .unwrap();
    // A dead kubelet: the node lifecycle controller marks it Unknown.
    node.stop_heartbeat();
    wait_for(Duration::from_secs(60), "node Ready=Unknown", || {
        node_ready(&api, &name) == "Unknown"
    })
    .unwrap();
}
