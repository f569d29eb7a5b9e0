//! Security policies of the chart on a real API server (envtest convention; without
//! `KUBEBUILDER_ASSETS` each test prints `SKIPPED: no API server (set KUBEBUILDER_ASSETS)`).
//!
//! The objects come from `deploy/manifests/kube-vrrp.yaml`, the chart rendered with default
//! values (kept equal to the chart by the install tests): the agent's ServiceAccount and RBAC
//! and the ValidatingAdmissionPolicies. See tests/security.md for the threat model.
//!
//! - `agent_writes_only_its_own_node`: a pod-bound token of an agent pod on n1 may patch
//!   VRRPNode n1's status and renew Lease n1, and is denied n2's; a token without a pod (no
//!   node claim) is denied even n1 (fail closed); the agent may read Secrets only in the
//!   release namespace (its auth Secret) and write none.
//! - `virtual_ips_with_commands_are_refused_at_apply_time`: with scripts disallowed (the
//!   default), a VirtualIP with `track.scripts`, `notify` or `syncGroupNotify` commands is
//!   refused naming the field, on create and on a spec update; one without is accepted, and an
//!   admitted VirtualIP's metadata can still change (finalizer removal).

use std::time::Duration;

use lab::apiserver::{ApiServer, KUBECTL_POLL, Kubectl, wait_every};
use serde::Deserialize as _;
use serde_json::{Value, json};

const NS: &str = "kube-vrrp";
const AGENT_SA: &str = "kube-vrrp-agent";

fn repo_file(rel: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// CRDs, the release namespace, and the manifests' agent RBAC and admission policies.
fn install(api: &ApiServer) {
    lab::kubelab::install_crds(api);
    let text = repo_file("deploy/manifests/kube-vrrp.yaml");
    let mut applied = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let Ok(obj) = Value::deserialize(doc) else {
            continue;
        };
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let wanted = match kind.as_str() {
            "ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding" => true,
            "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding" => {
                name.starts_with("kube-vrrp-agent")
            }
            _ => false,
        };
        if wanted {
            api.kubectl_client()
                .apply(&obj)
                .unwrap_or_else(|e| panic!("apply {kind}/{name}: {e}"));
            applied.push(format!("{kind}/{name}"));
        }
    }
    for must in [
        "ValidatingAdmissionPolicy/kube-vrrp-agent-own-node",
        "ValidatingAdmissionPolicyBinding/kube-vrrp-agent-own-node",
        "ValidatingAdmissionPolicy/kube-vrrp-scripts",
        "ValidatingAdmissionPolicyBinding/kube-vrrp-scripts",
        "ServiceAccount/kube-vrrp-agent",
        "ClusterRole/kube-vrrp-agent",
    ] {
        assert!(
            applied.iter().any(|a| a == must),
            "{must} not in the manifests: {applied:?}"
        );
    }
}

fn forbidden(err: &str) -> bool {
    err.contains("Forbidden") || err.contains("forbidden") || err.contains("denied")
}

/// Waits until `attempt` fails with a denial (policies take effect a moment after they are
/// created); an attempt that succeeds meanwhile is undone by `undo`. Returns the denial.
fn wait_denied(
    what: &str,
    mut attempt: impl FnMut() -> Result<String, String>,
    mut undo: impl FnMut(),
) -> String {
    wait_every(
        KUBECTL_POLL,
        Duration::from_secs(30),
        what,
        || match attempt() {
            Err(e) if forbidden(&e) => Some(e),
            Err(e) => panic!("{what}: unexpected error: {e}"),
            Ok(_) => {
                undo();
                None
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn status_patch(k: &Kubectl, node: &str) -> Result<String, String> {
    k.run(&[
        "patch",
        "vrrpnode",
        node,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"instanceCount":0,"masterCount":0,"faultCount":0}}"#,
    ])
    .map_err(|e| e.to_string())
}

/// Writes Lease `node` (a new duration each call, so that every call is a real write).
fn lease_apply(k: &Kubectl, node: &str) -> Result<String, String> {
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(10);
    let duration = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    k.apply(&json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node, "namespace": NS},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": duration}
    }))
    .map_err(|e| e.to_string())
}

#[test]
fn agent_writes_only_its_own_node() {
    let api = lab::skip_unless_api!();
    install(&api);
    let admin = api.kubectl_client();
    for n in ["n1", "n2"] {
        admin
            .apply(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}}))
            .expect("node");
        admin
            .apply(&json!({
                "apiVersion": "kubevrrp.io/v1alpha1", "kind": "VRRPNode",
                "metadata": {"name": n}, "spec": {"instances": [], "configHash": ""}
            }))
            .expect("vrrpnode");
    }
    // An agent pod scheduled on n1 (no kubelet runs it; the token only needs the object).
    admin
        .apply(&json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "agent-n1", "namespace": NS},
            "spec": {
                "nodeName": "n1",
                "serviceAccountName": AGENT_SA,
                "containers": [{"name": "agent", "image": "example.invalid/agent"}]
            }
        }))
        .expect("pod");
    let token = api
        .kubectl(&[
            "create",
            "token",
            AGENT_SA,
            "-n",
            NS,
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "agent-n1",
            "--duration",
            "1h",
        ])
        .expect("pod-bound token");
    let kc = api
        .write_token_kubeconfig("agent-n1", token.trim())
        .expect("kubeconfig");
    let agent = admin.with_kubeconfig(&kc);
    let who = agent
        .run(&["auth", "whoami", "-o", "json"])
        .expect("whoami");
    let who: Value = serde_json::from_str(&who).expect("whoami JSON");
    assert_eq!(
        who["status"]["userInfo"]["extra"]["authentication.kubernetes.io/node-name"],
        json!(["n1"]),
        "the pod-bound token carries the node claim: {who}"
    );

    // Denied for n2 (waits for the policy to take effect), allowed for n1.
    let denied = wait_denied(
        "the own-node policy to deny VRRPNode n2's status",
        || status_patch(&agent, "n2"),
        || {},
    );
    assert!(denied.contains("may not write"), "{denied}");
    assert!(denied.contains("n2"), "{denied}");
    status_patch(&agent, "n1").expect("n1's agent patches n1's status");
    lease_apply(&agent, "n1").expect("n1's agent renews Lease n1");
    let denied = lease_apply(&agent, "n2").expect_err("Lease n2 must be denied");
    assert!(forbidden(&denied) && denied.contains("n2"), "{denied}");

    // Secrets: read only, and only in the release namespace (the per-node auth Secrets live
    // there; RBAC cannot narrow a DaemonSet's read to one name per node, see security.md).
    agent
        .run(&["get", "secrets", "-n", NS])
        .expect("the agent lists the release namespace's Secrets (its auth Secret)");
    for args in [
        &["get", "secrets", "-A"][..],
        &["get", "secrets", "-n", "default"][..],
        &["get", "secret", "vrrp-pass", "-n", "default"][..],
        &[
            "create",
            "secret",
            "generic",
            "kube-vrrp-auth-n1",
            "-n",
            NS,
            "--from-literal=a=b",
        ][..],
        &[
            "create",
            "secret",
            "generic",
            "kube-vrrp-auth-n2",
            "-n",
            NS,
            "--from-literal=a=b",
        ][..],
    ] {
        let e = agent.run(args).expect_err("must be forbidden").to_string();
        assert!(forbidden(&e), "{args:?}: {e}");
    }
    // The spec stays the operator's.
    let e = agent
        .run(&[
            "patch",
            "vrrpnode",
            "n1",
            "--type=merge",
            "-p",
            r#"{"spec":{"configHash":"forged"}}"#,
        ])
        .expect_err("the agent may not write specs")
        .to_string();
    assert!(forbidden(&e), "{e}");

    // A token bound to no pod has no node claim: fail closed, even for n1.
    let plain = api
        .kubectl(&["create", "token", AGENT_SA, "-n", NS, "--duration", "1h"])
        .expect("plain token");
    let kc = api
        .write_token_kubeconfig("agent-nopod", plain.trim())
        .expect("kubeconfig");
    let nopod = admin.with_kubeconfig(&kc);
    let e = status_patch(&nopod, "n1").expect_err("no claim: denied");
    assert!(e.contains("carries no node"), "{e}");
    let e = lease_apply(&nopod, "n1").expect_err("no claim: denied");
    assert!(forbidden(&e), "{e}");
}

fn vip(name: &str, extra: Value) -> Value {
    let mut spec = json!({"addresses": ["192.0.2.50/24"], "virtualRouterID": 50});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "kubevrrp.io/v1alpha1", "kind": "VirtualIP",
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": spec
    })
}

#[test]
fn virtual_ips_with_commands_are_refused_at_apply_time() {
    let api = lab::skip_unless_api!();
    install(&api);
    let admin = api.kubectl_client();
    admin
        .apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}))
        .expect("namespace");
    let scripted = vip(
        "scripted",
        json!({"track": {"scripts": [{"name": "chk", "script": "/bin/sh -c 'id > /tmp/x'"}]}}),
    );
    let denied = wait_denied(
        "the scripts policy to refuse a VirtualIP with track.scripts",
        || admin.apply(&scripted).map_err(|e| e.to_string()),
        || {
            let _ = admin.run(&[
                "delete",
                "virtualip",
                "scripted",
                "-n",
                "team-a",
                "--wait=false",
            ]);
        },
    );
    assert!(
        denied.contains("spec.track.scripts[chk].script")
            && denied.contains("agent.scripts.allowed"),
        "{denied}"
    );
    for (name, extra, field) in [
        (
            "notify",
            json!({"notify": {"master": "/usr/bin/logger up"}}),
            "spec.notify.master",
        ),
        (
            "group",
            json!({"syncGroup": "g", "syncGroupNotify": {"any": "/usr/bin/logger x"}}),
            "spec.syncGroupNotify.any",
        ),
    ] {
        let e = admin
            .apply(&vip(name, extra))
            .expect_err("a command must be refused")
            .to_string();
        assert!(e.contains(field), "{name}: {e}");
    }
    // Without commands (a notify timeout alone runs nothing): accepted.
    let plain = vip("plain", json!({"notify": {"timeout": "10s"}}));
    admin
        .apply(&plain)
        .expect("a VirtualIP without commands is accepted");
    // Adding a command later is refused too.
    let e = admin
        .run(&[
            "patch",
            "virtualip",
            "plain",
            "-n",
            "team-a",
            "--type=merge",
            "-p",
            r#"{"spec":{"notify":{"backup":"/usr/bin/logger b"}}}"#,
        ])
        .expect_err("adding a command must be refused")
        .to_string();
    assert!(e.contains("spec.notify.backup"), "{e}");
    // Metadata (labels, finalizers) of an admitted VirtualIP can still change.
    admin
        .run(&["label", "virtualip", "plain", "-n", "team-a", "tier=web"])
        .expect("labels change freely");
}
