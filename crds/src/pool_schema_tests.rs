//! The `VirtualIPPool` schema rules without a cluster: each bad pool is refused by the schema
//! (OpenAPI or CEL) where a rule exists, and by the Rust parser, both naming the field.

use kube::CustomResourceExt;
use serde_json::{Value, json};

use crate::VirtualIPPool;
use crate::pool::parse_addresses;

fn schema() -> Value {
    let crd = VirtualIPPool::crd();
    let s = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("schema");
    serde_json::to_value(s).expect("json")
}

fn pool(spec: Value) -> Value {
    json!({
        "apiVersion": "kubevrrp.io/v1alpha1",
        "kind": "VirtualIPPool",
        "metadata": {"name": "web"},
        "spec": spec,
    })
}

fn schema_errors(obj: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(&schema()).expect("schema compiles");
    let mut errs: Vec<String> = validator
        .iter_errors(obj)
        .map(|e| format!("{}: {}", e.instance_path(), e))
        .collect();
    if let Err(cel) = kube::core::cel::Validator::new().validate(&schema(), obj, None) {
        errs.extend(cel.as_slice().iter().map(ToString::to_string));
    }
    errs
}

fn rust_errors(obj: &Value) -> Vec<String> {
    match serde_json::from_value::<VirtualIPPool>(obj.clone()) {
        Err(e) => vec![format!("deserialize: {e}")],
        Ok(p) => match parse_addresses(&p.spec) {
            Ok(_) => vec![],
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
        },
    }
}

#[test]
fn good_pools_pass() {
    for spec in [
        json!({"addresses": ["192.0.2.0/24"]}),
        json!({"addresses": ["192.0.2.10-192.0.2.50", "2001:db8::/120"], "autoAssign": false, "avoidBuggyIPs": true}),
        json!({"addresses": ["198.51.100.7/32"], "serviceSelector": {"matchLabels": {"app": "web"}},
               "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]}}),
        json!({"addresses": ["192.0.2.0/24"], "template": {"version": 2, "advertInterval": "1s", "interface": "eth0",
               "priority": 150, "nodeSelector": {"matchLabels": {"lb": "true"}},
               "authentication": {"type": "PASS", "passwordSecretRef": {"name": "vrrp"}}}}),
        json!({"addresses": ["2001:db8::10-2001:db8::20"], "template": {"advertInterval": "100ms", "garp": {"masterDelay": "0s"}}}),
    ] {
        let obj = pool(spec.clone());
        assert_eq!(schema_errors(&obj), Vec::<String>::new(), "{spec}");
        assert_eq!(rust_errors(&obj), Vec::<String>::new(), "{spec}");
    }
}

#[test]
fn bad_pools_are_refused_naming_the_field() {
    // (spec, schema error text or None when only Rust can tell, Rust error text)
    let cases: Vec<(Value, Option<&str>, &str)> = vec![
        (
            json!({"addresses": []}),
            Some("/spec/addresses"),
            "spec.addresses",
        ),
        (
            json!({"addresses": ["nope"]}),
            Some("addresses: every entry must be a CIDR"),
            "spec.addresses[0]",
        ),
        (
            json!({"addresses": ["192.0.2.1"]}),
            Some("addresses: every entry must be a CIDR"),
            "spec.addresses[0]",
        ),
        (
            json!({"addresses": ["192.0.2.1-2001:db8::1"]}),
            Some("both ends of one family"),
            "spec.addresses[0]",
        ),
        (
            json!({"addresses": ["192.0.2.1-192.0.2.9-192.0.2.10"]}),
            Some("addresses: every entry must be a CIDR"),
            "spec.addresses[0]",
        ),
        (
            json!({"addresses": ["192.0.2.0/24", "192.0.2.9-192.0.2.20"]}),
            None,
            "spec.addresses[1]: \"192.0.2.9-192.0.2.20\" overlaps spec.addresses[0]",
        ),
        (
            json!({"addresses": ["192.0.2.50-192.0.2.10"]}),
            None,
            "spec.addresses[0]: \"192.0.2.50-192.0.2.10\": the first address is above the last",
        ),
        (
            json!({"addresses": ["192.0.2.0/24"], "template": {"version": 2, "advertInterval": "100ms"}}),
            Some("template.advertInterval: VRRPv2 needs"),
            "spec.template.advertInterval",
        ),
        (
            json!({"addresses": ["192.0.2.0/24"], "template": {"authentication": {"type": "PASS", "passwordSecretRef": {"name": "x"}}}}),
            Some("template.authentication"),
            "spec.template.authentication",
        ),
        (
            json!({"addresses": ["2001:db8::/120"], "template": {"version": 2}}),
            None,
            "spec.template.version: VRRPv2 carries IPv4 only",
        ),
        (
            json!({"addresses": ["192.0.2.0/24"], "template": {"priority": 0}}),
            Some("/spec/template/priority"),
            "spec.template.priority",
        ),
    ];
    for (spec, schema_text, rust_text) in cases {
        let obj = pool(spec.clone());
        let schema = schema_errors(&obj);
        match schema_text {
            Some(t) => assert!(
                schema.iter().any(|e| e.contains(t)),
                "{spec}: schema errors {schema:?} do not mention {t:?}"
            ),
            None => assert_eq!(
                schema,
                Vec::<String>::new(),
                "{spec}: the schema has no rule for it"
            ),
        }
        let rust = rust_errors(&obj);
        assert!(
            rust.iter().any(|e| e.contains(rust_text)),
            "{spec}: Rust errors {rust:?} do not mention {rust_text:?}"
        );
    }
}

#[test]
fn printer_columns_are_addresses_assigned_available() {
    let crd = VirtualIPPool::crd();
    let cols: Vec<String> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.to_uppercase())
        .collect();
    assert_eq!(cols, ["ADDRESSES", "ASSIGNED", "AVAILABLE", "AGE"]);
    assert_eq!(crd.spec.scope, "Cluster");
    assert_eq!(
        crd.spec.names.short_names,
        Some(vec!["vippool".into(), "vippools".into()])
    );
}
