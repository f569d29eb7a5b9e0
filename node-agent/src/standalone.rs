//! Standalone mode's configuration: a keepalived.conf, or VirtualIP YAML, resolved for this
//! host.
//!
//! The format is detected by content ([`detect`]): YAML documents of Kubernetes objects
//! (`apiVersion` and `kind`) are VirtualIPs, anything else is keepalived.conf. keepalived.conf
//! parsing and resolution live in the `keepalived` crate (`node-agent/keepalived/`).
//!
//! VirtualIP YAML (one or more documents, e.g. what `kube-vrrp-agent convert` prints) is
//! resolved the way the operator resolves it, for the node named `--node-name`: its
//! `spec.nodes` override (priority, state, interface) applies, so one file serves every node of
//! a control plane. Instances are named `NAMESPACE/NAME` like in a cluster. Secrets in the same
//! file provide `authentication` passwords. What needs a cluster is an error: `track.pods`, and
//! `unicast.enabled` without explicit `peers` (there are no Nodes to take InternalIPs from);
//! `nodeSelector` is ignored with a warning (the file is only given to the nodes that run it);
//! the VRID must be set (nothing allocates one).
//!
//! Warnings go to the log; errors (every one, as `file:line:column: message` for
//! keepalived.conf, `file: document N (VirtualIP NS/NAME): field: message` for YAML) become one
//! [`Error`].

use std::collections::BTreeMap;
use std::path::Path;

use crds::resolve::{NodeFacts, ResolveInput, resolve};
use crds::vrrpnode::ObjectRef;
use crds::{ResolvedInstance, VirtualIP};
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize as _;

use crate::Error;

/// The two configuration formats standalone mode reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// keepalived.conf.
    Keepalived,
    /// Kubernetes YAML: VirtualIPs (and Secrets for their passwords).
    VirtualIp,
}

/// Which format `text` is in: Kubernetes YAML when it parses as YAML documents and one of them
/// is a mapping with `apiVersion` or `kind`; keepalived.conf otherwise (keepalived's `!`
/// comments and `name {` blocks are not such YAML).
pub fn detect(text: &str) -> Format {
    let mut any = false;
    for doc in serde_yaml::Deserializer::from_str(text) {
        match serde_yaml::Value::deserialize(doc) {
            Ok(serde_yaml::Value::Mapping(m)) => {
                if m.contains_key("apiVersion") || m.contains_key("kind") {
                    any = true;
                }
            }
            Ok(_) => {}
            Err(_) => return Format::Keepalived,
        }
    }
    if any {
        Format::VirtualIp
    } else {
        Format::Keepalived
    }
}

/// The highest priorities the other routers of a VirtualIP file's instance can advertise
/// ([`ResolvedInstance::peer_priorities`]), from the file alone: every other `spec.nodes`
/// entry with a priority, and the spec's default priority twice, standing for any number of
/// nodes the file does not list (twice, so that one of them leaving never makes another look
/// absent). The trackers are the spec's, the same on every node. With every node listed with
/// a priority above the default, the first in line takes over at once when the master
/// leaves; a node on the default priority never does (a tie: RFC timing).
fn peer_ceilings(spec: &crds::VirtualIPSpec, node: &str, me: &ResolvedInstance) -> Vec<u8> {
    let ceiling = |priority: u8| {
        ResolvedInstance {
            priority,
            track: me.track.clone(),
            ..Default::default()
        }
        .priority_ceiling()
    };
    let default = spec.priority_or_default();
    spec.nodes
        .iter()
        .filter(|o| o.name != node)
        .filter_map(|o| o.priority)
        .chain([default, default])
        .map(ceiling)
        .collect()
}

/// Read `path` and resolve its instances for `host` (whose name selects the `spec.nodes`
/// overrides of VirtualIP YAML).
pub fn load(path: &Path, host: &NodeFacts) -> Result<Vec<ResolvedInstance>, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    match detect(&text) {
        Format::Keepalived => load_keepalived(path, host),
        Format::VirtualIp => {
            let (instances, warnings) = resolve_virtual_ips(&text, host).map_err(|errors| {
                Error::Config(format!(
                    "{} is not usable:\n{}",
                    path.display(),
                    errors
                        .iter()
                        .map(|e| format!("{}: {e}", path.display()))
                        .collect::<Vec<_>>()
                        .join("\n")
                ))
            })?;
            for w in warnings {
                tracing::warn!("{}: {w}", path.display());
            }
            Ok(instances)
        }
    }
}

fn load_keepalived(path: &Path, host: &NodeFacts) -> Result<Vec<ResolvedInstance>, Error> {
    match keepalived::standalone::load(path, host) {
        Ok((instances, warnings)) => {
            for w in warnings.warnings() {
                tracing::warn!("{w}");
            }
            Ok(instances)
        }
        Err(diags) => {
            let lines: Vec<String> = diags.errors().map(ToString::to_string).collect();
            Err(Error::Config(format!(
                "{} is not usable:\n{}",
                path.display(),
                lines.join("\n")
            )))
        }
    }
}

/// A password from a Secret: `stringData` wins over `data`, as the API server merges them.
fn secret_value(s: &Secret, key: &str) -> Option<String> {
    if let Some(v) = s.string_data.as_ref().and_then(|d| d.get(key)) {
        return Some(v.clone());
    }
    let bytes = s.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

/// Resolve the VirtualIPs of a YAML stream for `host`: the instances in document order and
/// the warnings, or every error.
pub fn resolve_virtual_ips(
    text: &str,
    host: &NodeFacts,
) -> Result<(Vec<ResolvedInstance>, Vec<String>), Vec<String>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut vips: Vec<(usize, VirtualIP)> = Vec::new();
    let mut secrets: BTreeMap<(String, String), Secret> = BTreeMap::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        let value = match serde_yaml::Value::deserialize(doc) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("document {n}: not YAML: {e}"));
                continue;
            }
        };
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let api = value
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or("");
        match (api, kind) {
            ("kubevrrp.io/v1alpha1", "VirtualIP") => {
                match serde_path_to_error::deserialize::<_, VirtualIP>(value) {
                    Ok(v) => vips.push((n, v)),
                    Err(e) => errors.push(format!(
                        "document {n} (VirtualIP): {}: {}",
                        e.path(),
                        e.inner()
                    )),
                }
            }
            ("v1", "Secret") => match serde_path_to_error::deserialize::<_, Secret>(value) {
                Ok(s) => {
                    let ns = s.metadata.namespace.clone().unwrap_or_else(|| "default".into());
                    let name = s.metadata.name.clone().unwrap_or_default();
                    secrets.insert((ns, name), s);
                }
                Err(e) => errors.push(format!(
                    "document {n} (Secret): {}: {}",
                    e.path(),
                    e.inner()
                )),
            },
            (_, "") => errors.push(format!("document {n}: has no kind")),
            (api, kind) => errors.push(format!(
                "document {n}: {kind} ({api}) is not supported in standalone mode; only kubevrrp.io/v1alpha1 VirtualIP and v1 Secret (for passwords) are"
            )),
        }
    }
    if vips.is_empty() && errors.is_empty() {
        errors.push("no VirtualIP in the file".into());
    }
    let mut out = Vec::new();
    let mut seen = BTreeMap::new();
    for (n, vip) in &vips {
        let ns = vip
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let Some(name) = vip.metadata.name.clone().filter(|n| !n.is_empty()) else {
            errors.push(format!(
                "document {n} (VirtualIP): metadata.name: must be set"
            ));
            continue;
        };
        let what = format!("document {n} (VirtualIP {ns}/{name})");
        if let Some(first) = seen.insert((ns.clone(), name.clone()), *n) {
            errors.push(format!("{what}: already defined in document {first}"));
            continue;
        }
        let spec = &vip.spec;
        let mut problems = Vec::new();
        if spec.node_selector.is_some() {
            warnings.push(format!(
                "{what}: spec.nodeSelector is ignored in standalone mode (the file runs on every host it is given to)"
            ));
        }
        if let Some(t) = &spec.track
            && !t.pods.is_empty()
        {
            problems.push(
                "spec.track.pods: pod trackers need a cluster; standalone mode cannot run them"
                    .to_string(),
            );
        }
        if let Some(u) = &spec.unicast
            && u.enabled
            && u.peers.is_empty()
        {
            problems.push("spec.unicast.peers: standalone mode needs the peers listed (there are no Nodes to take InternalIPs from)".to_string());
        }
        if !spec.nodes.is_empty() && !spec.nodes.iter().any(|o| o.name == host.name) {
            warnings.push(format!(
                "{what}: spec.nodes has no entry for this node {:?} (set --node-name); the spec's defaults apply",
                host.name
            ));
        }
        let auth_pass = match &spec.authentication {
            None => None,
            Some(a) => {
                let r = &a.password_secret_ref;
                match secrets.get(&(ns.clone(), r.name.clone())) {
                    None => {
                        problems.push(format!(
                            "spec.authentication.passwordSecretRef: Secret {ns}/{} is not in the file",
                            r.name
                        ));
                        None
                    }
                    Some(s) => match secret_value(s, r.key_or_default()) {
                        Some(pw) => Some(pw),
                        None => {
                            problems.push(format!(
                                "spec.authentication.passwordSecretRef: Secret {ns}/{} has no key {:?} (or it is not UTF-8)",
                                r.name,
                                r.key_or_default()
                            ));
                            None
                        }
                    },
                }
            }
        };
        if !problems.is_empty() {
            errors.extend(problems.into_iter().map(|p| format!("{what}: {p}")));
            continue;
        }
        let input = ResolveInput {
            instance_name: format!("{ns}/{name}"),
            virtual_ip: Some(ObjectRef {
                namespace: ns.clone(),
                name: name.clone(),
            }),
            spec,
            allocated_vrid: None,
            node: host,
            default_priority: None,
            peer_node_addresses: Vec::new(),
            auth_pass: auth_pass.map(Into::into),
        };
        match resolve(&input) {
            Ok(mut r) => {
                r.peer_priorities = Some(peer_ceilings(input.spec, &host.name, &r));
                out.push(r)
            }
            Err(problems) => errors.extend(
                problems
                    .iter()
                    .map(|p| format!("{what}: {}: {}", p.path, p.message)),
            ),
        }
    }
    if errors.is_empty() {
        Ok((out, warnings))
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::resolve::InterfaceFacts;

    fn host(name: &str) -> NodeFacts {
        NodeFacts {
            name: name.into(),
            interfaces: vec![InterfaceFacts {
                name: "eth0".into(),
                addresses: vec!["192.0.2.11/24".parse().unwrap()],
            }],
            addresses: vec![],
        }
    }

    const API_VIP: &str = r#"
apiVersion: kubevrrp.io/v1alpha1
kind: VirtualIP
metadata:
  name: api
  namespace: kube-system
  annotations:
    kubevrrp.io/adopt-static: "true"
spec:
  virtualRouterID: 51
  advertInterval: 100ms
  addresses: [192.0.2.100/24]
  priority: 100
  nodes:
    - {name: cp-1, priority: 150, state: MASTER}
    - {name: cp-2, priority: 140}
  track:
    http:
      - name: readyz
        url: https://127.0.0.1:6443/readyz
        insecureSkipVerify: true
        interval: 500ms
        fall: 2
---
apiVersion: v1
kind: Secret
metadata: {name: v2-auth}
stringData: {password: "12345"}
---
apiVersion: kubevrrp.io/v1alpha1
kind: VirtualIP
metadata: {name: v2}
spec:
  virtualRouterID: 52
  version: 2
  addresses: [192.0.2.101/24]
  authentication: {type: PASS, passwordSecretRef: {name: v2-auth}}
"#;

    #[test]
    fn formats_are_told_apart_by_content() {
        assert_eq!(detect(API_VIP), Format::VirtualIp);
        for conf in [
            "! Configuration File for keepalived\nvrrp_instance VI_1 {\n  state MASTER\n}\n",
            "vrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 51\n}\n",
            "global_defs {\n  router_id LVS\n}\n",
            "",
        ] {
            assert_eq!(detect(conf), Format::Keepalived, "{conf}");
        }
    }

    #[test]
    fn peers_come_from_the_listed_nodes_and_the_default_twice() {
        let (a, _) = resolve_virtual_ips(API_VIP, &host("cp-2")).unwrap();
        // cp-1 at 150, and two stand-ins for unlisted nodes at the default 100; the readyz
        // tracker has no weight, so nothing is added.
        assert_eq!(a[0].peer_priorities, Some(vec![150, 100, 100]));
        let (b, _) = resolve_virtual_ips(API_VIP, &host("cp-1")).unwrap();
        assert_eq!(b[0].peer_priorities, Some(vec![140, 100, 100]));
        // An unlisted node runs the default: it ties with its stand-ins, so never at once.
        let (c, _) = resolve_virtual_ips(API_VIP, &host("cp-9")).unwrap();
        assert_eq!(c[0].peer_priorities, Some(vec![150, 140, 100, 100]));
        assert_eq!(a[1].peer_priorities, Some(vec![100, 100]));
    }

    #[test]
    fn per_node_overrides_apply_for_the_named_node() {
        let (a, w) = resolve_virtual_ips(API_VIP, &host("cp-1")).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(a.len(), 2);
        let api = &a[0];
        assert_eq!(api.name, "kube-system/api");
        assert_eq!(
            (api.priority, api.initial_state, api.interface.as_deref()),
            (150, crds::virtualip::InitialState::Master, Some("eth0"))
        );
        assert_eq!(api.track.http[0].name, "kube-system/api/readyz");
        assert_eq!(api.track.http[0].fall, 2);
        assert!(
            !api.adopt_static,
            "adoption is the in-cluster agent's business"
        );
        assert_eq!(a[1].auth_pass.as_deref(), Some("12345"));
        assert_eq!(a[1].name, "default/v2");
        let (b, _) = resolve_virtual_ips(API_VIP, &host("cp-2")).unwrap();
        assert_eq!(
            (b[0].priority, b[0].initial_state),
            (140, crds::virtualip::InitialState::Backup)
        );
        let (c, w) = resolve_virtual_ips(API_VIP, &host("cp-9")).unwrap();
        assert_eq!(c[0].priority, 100, "no override: the spec's priority");
        assert!(
            w.iter()
                .any(|w| w.contains("no entry for this node \"cp-9\"")),
            "{w:?}"
        );
    }

    #[test]
    fn what_needs_a_cluster_is_an_error_naming_document_and_field() {
        let bad = r#"
apiVersion: kubevrrp.io/v1alpha1
kind: VirtualIP
metadata: {name: a}
spec:
  addresses: [192.0.2.100/24]
  unicast: {enabled: true}
  track:
    pods: [{name: p, selector: {matchLabels: {app: x}}}]
---
apiVersion: kubevrrp.io/v1alpha1
kind: VirtualIP
metadata: {name: b}
spec:
  virtualRouterID: 7
  version: 2
  addresses: [192.0.2.101/24]
  authentication: {type: PASS, passwordSecretRef: {name: missing}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
---
apiVersion: kubevrrp.io/v1alpha1
kind: VirtualIP
metadata: {name: c}
spec:
  addresses: 7
"#;
        let e = resolve_virtual_ips(bad, &host("n")).unwrap_err().join("\n");
        for want in [
            "document 1 (VirtualIP default/a): spec.track.pods: pod trackers need a cluster",
            "document 1 (VirtualIP default/a): spec.unicast.peers: standalone mode needs the peers listed",
            "document 2 (VirtualIP default/b): spec.authentication.passwordSecretRef: Secret default/missing is not in the file",
            "document 3: Deployment (apps/v1) is not supported in standalone mode",
            "document 4 (VirtualIP): spec.addresses:",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
        // A VRID nothing allocates, and a bad field, are reported by the resolver.
        let e = resolve_virtual_ips(
            "apiVersion: kubevrrp.io/v1alpha1\nkind: VirtualIP\nmetadata: {name: d}\nspec:\n  addresses: [192.0.2.9/24]\n  track: {http: [{name: h, url: 'ftp://x'}]}\n",
            &host("n"),
        )
        .unwrap_err()
        .join("\n");
        assert!(e.contains("spec.virtualRouterID: not set"), "{e}");
        assert!(e.contains("spec.track.http[0].url"), "{e}");
    }

    #[test]
    fn convert_output_runs_as_is() {
        // `convert` prints a Secret and a VirtualIP per instance: standalone reads them back.
        let conf = "vrrp_instance VI_1 {\n state MASTER\n interface eth0\n virtual_router_id 51\n priority 244\n advert_int 1\n authentication {\n auth_type PASS\n auth_pass 12345\n }\n virtual_ipaddress {\n 192.0.2.200/24\n }\n}\n";
        let cfg = keepalived::parse_str("test.conf", conf)
            .into_result()
            .unwrap()
            .0;
        let conv = keepalived::convert::convert(&cfg, &Default::default());
        let yaml = keepalived::convert::to_yaml(&conv.items).unwrap();
        assert_eq!(detect(&yaml), Format::VirtualIp);
        let (r, _) = resolve_virtual_ips(&yaml, &host("n")).unwrap();
        assert_eq!(
            (r[0].priority, r[0].version, r[0].auth_pass.as_deref()),
            (244, 2, Some("12345"))
        );
    }
}
