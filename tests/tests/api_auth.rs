//! PASS passwords stay Secrets, on a real API server ([`lab::kubelab`]: etcd + kube-apiserver,
//! three simulated Nodes, three agents in network namespaces, the operator). See
//! tests/security.md (3. Passwords).
//!
//! - `password_never_leaks`: a VRRPv2 VirtualIP with PASS authentication from a Secret runs
//!   on the wire with the password (n1 MASTER, n2 and n3 BACKUP and counting n1's adverts as
//!   accepted, no auth mismatch), and the password string appears in no VRRPNode
//!   (`kubectl get vrrpnodes -o yaml`), no VirtualIP (spec or status), no Event, no agent cache
//!   file, no agent or operator log and no agent `/status` or `/metrics`; it is only in the
//!   user's Secret and in the operator's per-node auth Secrets (`kube-vrrp-auth-<node>`, owned
//!   by the VRRPNode). A changed password reaches the agents through the Secret alone (the
//!   VRRPNode does not change) and the backups keep accepting adverts; an auth Secret deleted
//!   by hand is written again by the operator.
//!
//! Needs root (network namespaces) and `KUBEBUILDER_ASSETS`; otherwise it prints its SKIPPED
//! line. The agent and operator are the debug binaries (`cargo build -p kube-vrrp-agent -p
//! kube-vrrp-operator`).

use std::time::{Duration, Instant};

use lab::apiserver::wait_every;
use lab::kubelab::{KubeLab, NODES, StatusWatch, VIP, master, phase, say};
use serde_json::{Value, json};

/// `kube_vrrp_adverts_received_total` for `instance` in an agent's `/metrics`, 0 if absent.
fn adverts_received(metrics: &str, instance: &str) -> u64 {
    counter(metrics, "kube_vrrp_adverts_received_total{", instance)
}

fn counter(metrics: &str, prefix: &str, needle: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix) && l.contains(needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

fn apply_password(env: &KubeLab, password: &str) {
    env.api
        .kubectl_client()
        .apply(&json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "vrrp-pass", "namespace": "default"},
            "stringData": {"password": password},
        }))
        .expect("apply the password Secret");
}

/// Every place the password must not be, as (what, text).
fn public_views(env: &KubeLab) -> Vec<(String, String)> {
    let k = |args: &[&str]| {
        env.api
            .kubectl(args)
            .unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
    };
    let mut out = vec![
        (
            "kubectl get vrrpnodes -o yaml".to_string(),
            k(&["get", "vrrpnodes", "-o", "yaml"]),
        ),
        (
            "kubectl get virtualips -A -o yaml".to_string(),
            k(&["get", "virtualips", "-A", "-o", "yaml"]),
        ),
        (
            "kubectl get events -A -o yaml".to_string(),
            k(&["get", "events", "-A", "-o", "yaml"]),
        ),
        (
            "kubectl get events.events.k8s.io -A -o yaml".to_string(),
            k(&["get", "events.events.k8s.io", "-A", "-o", "yaml"]),
        ),
        (
            "operator log".to_string(),
            std::fs::read_to_string(&env.operator_log).unwrap_or_default(),
        ),
    ];
    for (i, n) in NODES.iter().enumerate() {
        out.push((
            format!("agent {n} log"),
            std::fs::read_to_string(&env.agent_logs[i]).unwrap_or_default(),
        ));
        let state = env.dir.path().join(n);
        for entry in std::fs::read_dir(&state).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_file() {
                out.push((
                    format!("agent {n} state file {}", p.display()),
                    String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default()).into_owned(),
                ));
            }
        }
        for path in ["/status", "/metrics"] {
            out.push((
                format!("agent {n} {path}"),
                env.agent_get(i, path).unwrap_or_else(|e| e),
            ));
        }
    }
    out
}

fn assert_nowhere(env: &KubeLab, password: &str) {
    let views = public_views(env);
    let cache = env.dir.path().join("n1").join("vrrpnode-spec.json");
    assert!(
        views
            .iter()
            .any(|(w, t)| w.contains(&*cache.to_string_lossy()) && t.contains("authKey")),
        "n1's cache file holds the instance with its authKey"
    );
    for (what, text) in &views {
        assert!(
            !text.is_empty() || what.contains("state file"),
            "{what}: empty (nothing checked)"
        );
        if text.contains(password) {
            env.fail(&format!("the password appears in {what}:\n{text}"));
        }
    }
    say(&format!(
        "password absent from {} views ({} bytes)",
        views.len(),
        views.iter().map(|(_, t)| t.len()).sum::<usize>()
    ));
}

/// The backups n2 and n3 accept n1's adverts (their received counter grows by at least
/// `min` within 15 s) and drop none for an auth mismatch.
fn backups_accept_adverts(env: &KubeLab, instance: &str, min: u64) {
    for i in [1, 2] {
        let start = adverts_received(&env.agent_get(i, "/metrics").unwrap_or_default(), instance);
        let r = wait_every(
            Duration::from_millis(250),
            Duration::from_secs(15),
            &format!("agent {} accepts {min} adverts", NODES[i]),
            || {
                let m = env.agent_get(i, "/metrics").ok()?;
                (adverts_received(&m, instance) >= start + min).then_some(m)
            },
        );
        let m = env.check(r.map_err(|e| e.to_string()));
        let mismatches = counter(&m, "kube_vrrp_adverts_dropped_total{", "auth_mismatch");
        if mismatches > 0 {
            env.fail(&format!(
                "agent {} dropped {mismatches} adverts for an auth mismatch",
                NODES[i]
            ));
        }
    }
}

#[test]
fn password_never_leaks() {
    lab::skip_unless_root!("password_never_leaks");
    let api = lab::skip_unless_api!();
    let mut env = KubeLab::setup(api);
    // Unique, 8 bytes, and unlike anything else in the cluster.
    let password = &format!("Q{:04x}zJ", lab::topology::random_u16());
    apply_password(&env, password);
    let vip = json!({
        "apiVersion": "kubevrrp.io/v1alpha1",
        "kind": "VirtualIP",
        "metadata": {"name": env.vip_name, "namespace": "default"},
        "spec": {
            "addresses": [VIP],
            "interface": "eth0",
            "advertInterval": "1s",
            "version": 2,
            "priority": 200,
            "authentication": {"type": "PASS", "passwordSecretRef": {"name": "vrrp-pass"}},
        }
    });
    env.api
        .kubectl_client()
        .apply(&vip)
        .expect("apply VirtualIP");
    env.watch = Some(StatusWatch::start(&env.api.kubectl_client(), &env.vip_name));
    let start = Instant::now();
    env.check(
        env.watch()
            .wait(start, Duration::from_secs(30), "n1 Active", |s| {
                master(s) == "n1" && phase(s) == "Active"
            }),
    );
    env.check(
        env.lab
            .wait_holder(VIP, 0, Duration::from_secs(20))
            .map_err(|e| e.to_string()),
    );
    let instance = format!("default/{}", env.vip_name);
    let key = format!("default.{}", env.vip_name);

    // On the wire: n1's adverts carry the password (PASS, RFC 2338 type 1) and the backups
    // authenticate them.
    let mut cap = lab::Capture::start(
        &env.lab,
        &env.lab.host(1).netns,
        "eth0",
        "vrrp",
        env.dir.path(),
    )
    .expect("capture on n2");
    env.check(
        cap.wait_count("vrrp", 2, Duration::from_secs(10))
            .map_err(|e| e.to_string()),
    );
    let rows = cap
        .fields("vrrp", &["vrrp.auth_type", "vrrp.auth_string"])
        .expect("tshark");
    let _ = cap.stop();
    assert!(
        !rows.is_empty()
            && rows
                .iter()
                .all(|r| r.first().map(String::as_str) == Some("1")
                    && r.get(1).map(String::as_str) == Some(password.as_str())),
        "every advert uses PASS with the Secret's password: {rows:?}"
    );
    backups_accept_adverts(&env, &instance, 3);
    if env.watch().split_brain_since(start).is_some() {
        env.fail("split brain while running with a password");
    }

    // The VRRPNode carries the key only; the operator's auth Secret holds the password, owned
    // by the VRRPNode.
    for n in NODES {
        let vn: Value = serde_json::from_str(
            &env.api
                .kubectl(&["get", "vrrpnode", n, "-o", "json"])
                .expect("VRRPNode"),
        )
        .expect("VRRPNode JSON");
        let inst = &vn["spec"]["instances"][0];
        assert_eq!(inst["authKey"], key.as_str(), "{n}: {inst}");
        assert!(inst.get("authPass").is_none(), "{n}: {inst}");
        let s = auth_secret(&env, n).expect("auth Secret");
        assert_eq!(s["metadata"]["ownerReferences"][0]["kind"], "VRRPNode");
        assert_eq!(
            s["metadata"]["ownerReferences"][0]["uid"],
            vn["metadata"]["uid"]
        );
        let stored = s["data"][&key].as_str().unwrap_or_default();
        assert_eq!(
            stored,
            base64_encode(password.as_bytes()),
            "{n}: the auth Secret holds the password under the key"
        );
    }
    assert_nowhere(&env, password);

    // A new password reaches the agents through the Secrets alone.
    let gens: Vec<String> = NODES.iter().map(|n| env.generation(n)).collect();
    let new_password = format!("{}X", &password[..7]);
    apply_password(&env, &new_password);
    let r = wait_every(
        Duration::from_millis(200),
        Duration::from_secs(15),
        "auth Secrets hold the new password",
        || {
            NODES
                .iter()
                .all(|n| {
                    auth_secret(&env, n)
                        .is_some_and(|s| s["data"][&key] == base64_encode(new_password.as_bytes()))
                })
                .then_some(())
        },
    );
    env.check(r.map_err(|e| e.to_string()));
    let gens_after: Vec<String> = NODES.iter().map(|n| env.generation(n)).collect();
    assert_eq!(
        gens, gens_after,
        "a password change leaves the VRRPNodes alone"
    );
    let changed = Instant::now();
    backups_accept_adverts(&env, &instance, 3);
    if env.watch().split_brain_since(changed).is_some() {
        env.fail("split brain after the password change");
    }
    if !env.lab.holds(env.lab.host(0), VIP) {
        env.fail("n1 lost the VIP after the password change");
    }
    assert_nowhere(&env, &new_password);
    assert_nowhere(&env, password);

    // An auth Secret deleted by hand is written again.
    let deleted = Instant::now();
    env.api
        .kubectl(&[
            "delete",
            "secret",
            "kube-vrrp-auth-n2",
            "-n",
            lab::kubelab::LEASE_NS,
        ])
        .expect("delete n2's auth Secret");
    let r = wait_every(
        Duration::from_millis(200),
        Duration::from_secs(15),
        "n2's auth Secret written again",
        || {
            env.api
                .kubectl(&[
                    "get",
                    "secret",
                    "kube-vrrp-auth-n2",
                    "-n",
                    lab::kubelab::LEASE_NS,
                ])
                .ok()
                .map(|_| ())
        },
    );
    env.check(r.map_err(|e| e.to_string()));
    say(&format!(
        "MEASURED: auth Secret recreated {:.2}s after its deletion",
        deleted.elapsed().as_secs_f64()
    ));
}

/// Node `n`'s auth Secret as JSON, if it exists.
fn auth_secret(env: &KubeLab, n: &str) -> Option<Value> {
    let text = env
        .api
        .kubectl(&[
            "get",
            "secret",
            &format!("kube-vrrp-auth-{n}"),
            "-n",
            lab::kubelab::LEASE_NS,
            "-o",
            "json",
        ])
        .ok()?;
    serde_json::from_str(&text).ok()
}

/// Standard base64 with padding (what the API server shows in `data`).
fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
