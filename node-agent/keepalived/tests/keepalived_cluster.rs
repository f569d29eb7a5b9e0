//! One cluster's per-node keepalived.conf files (tests/fixtures/cluster: an OpenShift-style
//! unicast control plane, rendered templates with their comments, an included checks file)
//! merged into one VirtualIP, and what cannot be merged reported with both places.

use std::path::Path;

use crds::resolve::{NodeFacts, ResolveInput, resolve};
use crds::virtualip::{InitialState, VirtualIP};
use keepalived::cluster::{NodeConfig, convert_cluster};
use keepalived::convert::to_yaml;
use keepalived::{Config, MemFs, Parsed, RealFs, parse_with};

const DIR: &str = "tests/fixtures/cluster";

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(DIR).join(name)).unwrap()
}

/// Parse one fixture by its relative path (includes resolve next to it).
fn parse(name: &str, text: &str) -> Parsed {
    let path = format!("{}/{DIR}/{name}", env!("CARGO_MANIFEST_DIR"));
    parse_with(&path, text, &RealFs)
}

fn nodes<'a>(configs: &'a [Config], names: &'a [&'a str]) -> Vec<NodeConfig<'a>> {
    names
        .iter()
        .zip(configs)
        .map(|(n, c)| NodeConfig { node: n, config: c })
        .collect()
}

fn three() -> Vec<Config> {
    ["node-1.conf", "node-2.conf", "node-3.conf"]
        .iter()
        .map(|f| {
            let p = parse(f, &read(f));
            assert!(!p.diagnostics.has_errors(), "{}", p.diagnostics);
            p.config
        })
        .collect()
}

const NAMES: [&str; 3] = ["cp-1", "cp-2", "cp-3"];

#[test]
fn three_unicast_files_become_one_virtual_ip_with_node_overrides() {
    let configs = three();
    let conv = convert_cluster(&nodes(&configs, &NAMES), None);
    assert!(!conv.diagnostics.has_errors(), "{}", conv.diagnostics);
    assert_eq!(conv.items.len(), 1);
    let vip = &conv.items[0].virtual_ip;
    assert_eq!(vip.metadata.name.as_deref(), Some("ostest-api"));
    assert_eq!(vip.metadata.namespace, None, "namespace-less by default");
    let s = &vip.spec;
    assert_eq!(s.virtual_router_id, Some(33));
    assert_eq!(
        s.interface.as_deref(),
        Some("br-ex"),
        "shared interface once"
    );
    assert_eq!((s.priority, s.state), (None, None));
    type Row<'a> = (&'a str, Option<u8>, Option<InitialState>, Option<&'a str>);
    let per_node: Vec<Row<'_>> = s
        .nodes
        .iter()
        .map(|o| {
            (
                o.name.as_str(),
                o.priority,
                o.state,
                o.source_address.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        per_node,
        vec![
            (
                "cp-1",
                Some(60),
                Some(InitialState::Master),
                Some("192.0.2.21")
            ),
            (
                "cp-2",
                Some(50),
                Some(InitialState::Backup),
                Some("192.0.2.22")
            ),
            (
                "cp-3",
                Some(40),
                Some(InitialState::Backup),
                Some("192.0.2.23")
            ),
        ]
    );
    let u = s.unicast.as_ref().unwrap();
    assert!(u.enabled);
    assert_eq!(u.peers, vec!["192.0.2.21", "192.0.2.22", "192.0.2.23"]);
    assert_eq!(u.allow_lower_ttl, Some(true));
    let track = s.track.as_ref().unwrap();
    assert_eq!(
        track
            .scripts
            .iter()
            .map(|t| (t.name.as_str(), t.weight))
            .collect::<Vec<_>>(),
        vec![("chk_ocp_lb", Some(20)), ("chk_ocp_both", Some(5))]
    );
    assert_eq!(
        s.garp.as_ref().and_then(|g| g.master_refresh),
        Some(std::time::Duration::from_secs(60).into())
    );
    let sel = s.node_selector.as_ref().unwrap();
    let expr = &sel.match_expressions.as_ref().unwrap()[0];
    assert_eq!(expr.key, "kubernetes.io/hostname");
    assert_eq!(expr.values.as_deref().unwrap(), &NAMES.map(String::from));
    assert_eq!(conv.items[0].auth_pass.as_deref(), Some("ostest_a"));
    let yaml = to_yaml(&conv.items).unwrap();
    assert!(!yaml.contains("namespace:"), "{yaml}");

    // Each node resolves the shared peer list without its own address.
    for (n, own) in NAMES.iter().zip(["192.0.2.21", "192.0.2.22", "192.0.2.23"]) {
        let facts = NodeFacts {
            name: n.to_string(),
            ..Default::default()
        };
        let r = resolve(&ResolveInput {
            instance_name: "ns/ostest-api".into(),
            virtual_ip: None,
            spec: s,
            allocated_vrid: None,
            node: &facts,
            default_priority: None,
            peer_node_addresses: vec![],
            auth_pass: conv.items[0].auth_pass.clone().map(Into::into),
        })
        .unwrap();
        assert_eq!(r.unicast_source.as_deref(), Some(own));
        assert_eq!(r.unicast_peers.len(), 2, "{n}: {:?}", r.unicast_peers);
        assert!(!r.unicast_peers.iter().any(|p| p == own));
    }
    // The merged object passes the CRD's schema rules (CEL) too.
    let json = serde_json::to_value(vip).unwrap();
    let crd = <VirtualIP as kube::CustomResourceExt>::crd();
    let schema = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap();
    assert!(
        kube::core::cel::Validator::new()
            .validate(&schema, &json, None)
            .is_ok()
    );
}

#[test]
fn every_ignored_keyword_is_a_warning_with_its_place() {
    let p = parse("node-1.conf", &read("node-1.conf"));
    let configs = three();
    let conv = convert_cluster(&nodes(&configs, &NAMES), None);
    let mut all: Vec<String> = p
        .diagnostics
        .0
        .iter()
        .chain(&conv.diagnostics.0)
        .map(ToString::to_string)
        .collect();
    all.retain(|l| l.contains("node-1.conf"));
    let has = |needle: &str| {
        assert!(
            all.iter()
                .any(|l| l.contains(needle) && l.contains("warning")),
            "no warning with {needle:?} in {all:#?}"
        );
    };
    has("node-1.conf:7:5: warning: global_defs `enable_script_security`");
    has("node-1.conf:9:5: warning: global_defs `max_auto_priority`");
    has("`label vip` on 192.0.2.5/24");
    has("auth_pass is longer than 8 bytes");
}

/// Replace `from` by `to` in node-3's text and merge.
fn merged_with_node3(from: &str, to: &str) -> Vec<String> {
    let n3 = read("node-3.conf").replace(from, to);
    assert_ne!(n3, read("node-3.conf"), "{from:?} not found");
    let mut configs = three();
    let p = parse("node-3.conf", &n3);
    assert!(!p.diagnostics.has_errors(), "{}", p.diagnostics);
    configs[2] = p.config;
    let conv = convert_cluster(&nodes(&configs, &NAMES), None);
    assert!(conv.items.is_empty(), "no object when values disagree");
    conv.diagnostics
        .errors()
        .map(|d| d.to_string().replace(env!("CARGO_MANIFEST_DIR"), ""))
        .collect()
}

#[test]
fn values_that_cannot_differ_per_node_are_errors_naming_both_places() {
    let errs = merged_with_node3("advert_int 1", "advert_int 2");
    assert_eq!(
        errs,
        vec![
            "/tests/fixtures/cluster/node-3.conf:20:5: vrrp_instance ostest_API: advert_int is \"2s\" here but \"1s\" in /tests/fixtures/cluster/node-1.conf:20:5 (node cp-1); a VirtualIP has one value for every node"
        ]
    );
    let errs = merged_with_node3("192.0.2.5/24", "192.0.2.6/24");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("/tests/fixtures/cluster/node-3.conf:35:5: vrrp_instance ostest_API: virtual_ipaddress is [\"192.0.2.6/24\"] here but [\"192.0.2.5/24\"] in /tests/fixtures/cluster/node-1.conf:35:5"),
        "{errs:?}"
    );
    let errs = merged_with_node3("auth_pass ostest_api_vip", "auth_pass other");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("auth_pass differs from"), "{errs:?}");
    // A virtual router missing on a node, both ways round.
    let errs = merged_with_node3("virtual_router_id 33", "virtual_router_id 34");
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        errs[0].contains("virtual_router_id 33) is in this file but not in node cp-3's file"),
        "{errs:?}"
    );
}

#[test]
fn interfaces_that_differ_become_per_node_overrides() {
    let n2 = read("node-2.conf").replace("interface br-ex", "interface ens3");
    let mut configs = three();
    configs[1] = parse("node-2.conf", &n2).config;
    let conv = convert_cluster(&nodes(&configs, &NAMES), None);
    assert!(!conv.diagnostics.has_errors(), "{}", conv.diagnostics);
    let s = &conv.items[0].virtual_ip.spec;
    assert_eq!(s.interface, None);
    let ifs: Vec<Option<&str>> = s.nodes.iter().map(|o| o.interface.as_deref()).collect();
    assert_eq!(ifs, vec![Some("br-ex"), Some("ens3"), Some("br-ex")]);
}

#[test]
fn a_namespace_is_written_only_when_asked_for() {
    let configs = three();
    let conv = convert_cluster(&nodes(&configs, &NAMES), Some("infra"));
    let yaml = to_yaml(&conv.items).unwrap();
    assert_eq!(yaml.matches("namespace: infra").count(), 2, "{yaml}");
    // The in-memory reader gives the same result as the file system for a plain file.
    let text = read("node-1.conf").replace("include checks.conf", &read("checks.conf"));
    let p = parse_with("node-1.conf", &text, &MemFs::default());
    assert!(!p.diagnostics.has_errors(), "{}", p.diagnostics);
}
