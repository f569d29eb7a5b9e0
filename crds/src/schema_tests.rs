//! Every schema rule of the VirtualIP CRD, tested without a cluster.
//!
//! One table drives three validators: the OpenAPI bounds (checked with `jsonschema` against the
//! generated `openAPIV3Schema`), the CEL rules (evaluated with kube's client-side CEL engine),
//! and the Rust [`validate_spec`](crate::validate::validate_spec). A bad case must be rejected
//! by the schema (OpenAPI or CEL) *and* by Rust (serde or `validate_spec`), each naming the field.

use kube::CustomResourceExt;
use serde_json::{Value, json};

use crate::VirtualIP;
use crate::validate::validate_spec;

fn schema() -> Value {
    let crd = VirtualIP::crd();
    let s = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("schema");
    serde_json::to_value(s).expect("json")
}

fn base() -> Value {
    json!({
        "apiVersion": "kubevrrp.io/v1alpha1",
        "kind": "VirtualIP",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "virtualRouterID": 51,
            "version": 2,
            "priority": 244,
            "state": "MASTER",
            "advertInterval": "1s",
            "interface": "eth0",
            "authentication": {"type": "PASS", "passwordSecretRef": {"name": "web-vrrp", "key": "password"}},
            "addresses": ["192.0.2.200/24"],
            "track": {
                "scripts": [{"name": "check", "script": "/bin/true", "interval": "1s", "timeout": "5s", "rise": 3, "fall": 3}],
                "processes": [{"name": "httpd", "process": "httpd", "weight": 10}],
                "interfaces": [{"name": "ens9", "weight": 5}]
            }
        }
    })
}

/// Apply a JSON-merge-patch style change to `spec`.
fn with(patch: Value) -> Value {
    let mut v = base();
    merge(&mut v["spec"], &patch);
    v
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, pv) in p {
                if pv.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), pv);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// OpenAPI problems as `path: message` strings.
fn openapi_errors(obj: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(&schema()).expect("schema compiles");
    validator
        .iter_errors(obj)
        .map(|e| format!("{}: {}", e.instance_path(), e))
        .collect()
}

fn cel_errors(obj: &Value, old: Option<&Value>) -> Vec<String> {
    match kube::core::cel::Validator::new().validate(&schema(), obj, old) {
        Ok(()) => vec![],
        Err(errs) => errs.as_slice().iter().map(ToString::to_string).collect(),
    }
}

fn rust_errors(obj: &Value) -> Vec<String> {
    match serde_path_to_error::deserialize::<_, VirtualIP>(obj.clone()) {
        Err(e) => vec![format!("deserialize: {}: {}", e.path(), e.inner())],
        Ok(v) => validate_spec(&v.spec)
            .iter()
            .map(ToString::to_string)
            .collect(),
    }
}

/// Marks a bad case that only [`validate_spec`] catches (the schema has no equivalent rule);
/// such rows are checked against Rust only.
const RUST_ONLY: &str = "<validate_spec only>";

/// `n` distinct IPv4 addresses.
fn v4_addresses(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256))
        .collect()
}

/// `n` distinct IPv6 addresses.
fn v6_addresses(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("2001:db8::{:x}", i + 1)).collect()
}

/// `n` distinct tracker scripts.
fn scripts(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"name": format!("s{i}"), "script": "/bin/true"}))
        .collect()
}

/// `n` distinct HTTP checks.
fn http_checks(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"name": format!("h{i}"), "url": "http://127.0.0.1:8080/healthz"}))
        .collect()
}

/// One HTTP check with `extra` fields merged in.
fn http_check(extra: Value) -> Value {
    let mut c = json!({"name": "readyz", "url": "https://127.0.0.1:6443/readyz"});
    merge(&mut c, &extra);
    json!({"track": {"http": [c]}})
}

/// A spec above 64 KiB that every per-field bound accepts: 256 node overrides with
/// maximal (253-character) names.
fn oversized_nodes() -> Vec<Value> {
    (0..256)
        .map(|i| json!({"name": format!("{i:03}{}", "n".repeat(250))}))
        .collect()
}

#[test]
fn good_examples_pass_every_validator() {
    let goods = [
        base(),
        with(json!({"version": 3, "authentication": null, "advertInterval": "100ms"})),
        with(json!({"version": 3, "authentication": null, "advertInterval": "40950ms"})),
        with(json!({"version": 3, "authentication": null, "advertInterval": "10ms"})),
        with(
            json!({"version": 3, "authentication": null, "addresses": ["2001:db8::200/64", "2001:db8::201"]}),
        ),
        with(json!({"version": null, "authentication": null, "addresses": ["192.0.2.200"]})),
        with(json!({"excludedAddresses": ["2001:db8::1/64", "198.51.100.1/24"]})),
        with(json!({"advertInterval": "255s"})),
        with(json!({"virtualRouterID": null, "priority": 255, "preemptDelay": "1000s"})),
        with(json!({"unicast": {"enabled": true, "peers": ["192.0.2.11", "192.0.2.12"]}})),
        with(json!({"nodes": [{"name": "a", "priority": 200}, {"name": "b", "state": "BACKUP"}]})),
        with(
            json!({"track": {"scripts": [{"name": "x", "script": "/bin/true", "weight": -254}], "files": [{"name": "f", "path": "/tmp/x", "weight": 254}]}}),
        ),
        // Tenant limits, at the bound.
        with(json!({"track": {"scripts": scripts(16)}})),
        with(
            json!({"track": {"scripts": [{"name": "c", "script": "x".repeat(1024), "interval": "1s", "timeout": "1s"}]}}),
        ),
        with(json!({"notify": {"master": "x".repeat(1024), "any": "/bin/true"}})),
        with(json!({"garp": {"masterRefresh": "0s", "masterRepeat": 100}})),
        with(json!({"garp": {"masterRefresh": "1s", "masterRefreshRepeat": 100}})),
        with(json!({"addresses": v4_addresses(255)})),
        with(json!({"virtualMAC": {}})),
        with(json!({"virtualMAC": {"xmitBase": true}, "unicast": {"enabled": true}})),
        with(
            json!({"syncGroup": "db", "syncGroupNotify": {"master": "/bin/true", "any": "/usr/local/bin/group.sh"}}),
        ),
        with(json!({"version": 3, "authentication": null, "addresses": v6_addresses(89)})),
        with(
            json!({"unicast": {"enabled": true, "sourceAddress": "192.0.2.11", "ttl": 64}, "nodes": [{"name": "a", "sourceAddress": "192.0.2.12"}]}),
        ),
        with(
            json!({"version": 3, "authentication": null, "addresses": ["2001:db8::200/64"], "unicast": {"enabled": true, "sourceAddress": "2001:db8::11", "ttl": 255}}),
        ),
        with(json!({"excludedAddresses": v4_addresses(2048)})),
        with(json!({"track": {"http": http_checks(16)}})),
        with(
            json!({"track": {"http": [{"name": "readyz", "url": "https://127.0.0.1:6443/readyz", "interval": "100ms", "timeout": "100ms", "expectStatus": 200, "rise": 2, "fall": 3, "weight": -50, "caFile": "/etc/kubernetes/pki/ca.crt", "serverName": "kubernetes"}]}}),
        ),
        with(
            json!({"track": {"http": [{"name": "readyz", "url": "https://127.0.0.1:6443/readyz", "insecureSkipVerify": true}, {"name": "plain", "url": "http://[2001:db8::1]:8080/healthz"}]}}),
        ),
    ];
    for (i, g) in goods.iter().enumerate() {
        assert_eq!(
            openapi_errors(g),
            Vec::<String>::new(),
            "good example {i} (OpenAPI)"
        );
        assert_eq!(
            cel_errors(g, None),
            Vec::<String>::new(),
            "good example {i} (CEL)"
        );
        assert_eq!(
            rust_errors(g),
            Vec::<String>::new(),
            "good example {i} (Rust)"
        );
    }
}

/// (description, spec patch, expected text in the schema error, expected text in the Rust error)
fn bad_cases() -> Vec<(&'static str, Value, &'static str, &'static str)> {
    vec![
        (
            "vrid 0",
            json!({"virtualRouterID": 0}),
            "/spec/virtualRouterID",
            "spec.virtualRouterID",
        ),
        (
            "vrid 256",
            json!({"virtualRouterID": 256}),
            "/spec/virtualRouterID",
            "spec.virtualRouterID",
        ),
        (
            "priority 0",
            json!({"priority": 0}),
            "/spec/priority",
            "spec.priority",
        ),
        (
            "priority 256",
            json!({"priority": 256}),
            "/spec/priority",
            "spec.priority",
        ),
        (
            "version 1",
            json!({"version": 1}),
            "/spec/version",
            "spec.version",
        ),
        (
            "version 4",
            json!({"version": 4}),
            "/spec/version",
            "spec.version",
        ),
        (
            "v2 fractional interval",
            json!({"advertInterval": "1500ms"}),
            "VRRPv2 needs a whole number of seconds",
            "spec.advertInterval",
        ),
        (
            "v2 interval too long",
            json!({"advertInterval": "256s"}),
            "VRRPv2 needs a whole number of seconds",
            "spec.advertInterval",
        ),
        (
            "v2 interval too short",
            json!({"advertInterval": "500ms"}),
            "VRRPv2 needs a whole number of seconds",
            "spec.advertInterval",
        ),
        (
            "v3 interval below 10ms",
            json!({"version": 3, "authentication": null, "advertInterval": "5ms"}),
            "VRRPv3 needs 10ms to 40.95s",
            "spec.advertInterval",
        ),
        (
            "v3 interval not a 10ms step",
            json!({"version": 3, "authentication": null, "advertInterval": "15ms"}),
            "VRRPv3 needs 10ms to 40.95s",
            "spec.advertInterval",
        ),
        (
            "v3 interval too long",
            json!({"version": 3, "authentication": null, "advertInterval": "41s"}),
            "VRRPv3 needs 10ms to 40.95s",
            "spec.advertInterval",
        ),
        (
            "interval negative",
            json!({"advertInterval": "-1s"}),
            "positive duration",
            "spec.advertInterval",
        ),
        (
            "v2 with IPv6",
            json!({"addresses": ["2001:db8::1/64"]}),
            "VRRPv2 carries IPv4 only",
            "spec.addresses[0]",
        ),
        (
            "mixed families",
            json!({"version": 3, "authentication": null, "addresses": ["192.0.2.1/24", "2001:db8::1/64"]}),
            "one family",
            "spec.addresses[1]",
        ),
        (
            "auth with v3",
            json!({"version": 3}),
            "only VRRPv2 has authentication",
            "spec.authentication",
        ),
        (
            "auth with default version",
            json!({"version": null}),
            "only VRRPv2 has authentication",
            "spec.authentication",
        ),
        (
            "auth without secret name",
            json!({"authentication": {"passwordSecretRef": {"name": null}}}),
            "\"name\" is a required property",
            "spec.authentication.passwordSecretRef: missing field `name`",
        ),
        (
            "auth type AH",
            json!({"authentication": {"type": "AH"}}),
            "/spec/authentication/type",
            "spec.authentication.type: unknown variant",
        ),
        (
            "no addresses",
            json!({"addresses": []}),
            "/spec/addresses",
            "spec.addresses",
        ),
        (
            "bad address",
            json!({"addresses": ["300.1.1.1/24"]}),
            "every entry must be an IP address or CIDR",
            "spec.addresses[0]",
        ),
        (
            "bad prefix",
            json!({"addresses": ["192.0.2.1/33"]}),
            "every entry must be an IP address or CIDR",
            "spec.addresses[0]",
        ),
        (
            "bad excluded",
            json!({"excludedAddresses": ["nope"]}),
            "excludedAddresses: every entry",
            "spec.excludedAddresses[0]",
        ),
        (
            "weight 255",
            json!({"track": {"interfaces": [{"name": "ens9", "weight": 255}]}}),
            "/spec/track/interfaces/0/weight",
            "spec.track.interfaces[0].weight",
        ),
        (
            "weight -255",
            json!({"track": {"processes": [{"name": "p", "process": "httpd", "weight": -255}]}}),
            "/spec/track/processes/0/weight",
            "spec.track.processes[0].weight",
        ),
        (
            "rise 0",
            json!({"track": {"scripts": [{"name": "c", "script": "/bin/true", "rise": 0}]}}),
            "/spec/track/scripts/0/rise",
            "spec.track.scripts[0].rise",
        ),
        (
            "fall 0",
            json!({"track": {"scripts": [{"name": "c", "script": "/bin/true", "fall": 0}]}}),
            "/spec/track/scripts/0/fall",
            "spec.track.scripts[0].fall",
        ),
        (
            "timeout 0",
            json!({"track": {"scripts": [{"name": "c", "script": "/bin/true", "timeout": "0s"}]}}),
            "timeout must be at least 1s",
            "spec.track.scripts[0].timeout",
        ),
        (
            "interval 0",
            json!({"track": {"scripts": [{"name": "c", "script": "/bin/true", "interval": "0s"}]}}),
            "interval must be at least 1s",
            "spec.track.scripts[0].interval",
        ),
        (
            "duplicate script names",
            json!({"track": {"scripts": [{"name": "c", "script": "/bin/true"}, {"name": "c", "script": "/bin/false"}]}}),
            "track.scripts: names must be unique",
            "spec.track.scripts[1].name",
        ),
        (
            "duplicate process names",
            json!({"track": {"processes": [{"name": "p", "process": "a"}, {"name": "p", "process": "b"}]}}),
            "track.processes: names must be unique",
            "spec.track.processes[1].name",
        ),
        (
            "duplicate interface names",
            json!({"track": {"interfaces": [{"name": "eth1"}, {"name": "eth1"}]}}),
            "track.interfaces: names must be unique",
            "spec.track.interfaces[1].name",
        ),
        (
            "duplicate node overrides",
            json!({"nodes": [{"name": "a"}, {"name": "a"}]}),
            "nodes: node names must be unique",
            "spec.nodes[1].name",
        ),
        (
            "bad unicast peer",
            json!({"unicast": {"enabled": true, "peers": ["192.0.2.300"]}}),
            "unicast.peers: every entry must be an IP address",
            "spec.unicast.peers[0]",
        ),
        (
            "unicast source not an IP",
            json!({"unicast": {"enabled": true, "sourceAddress": "nope"}}),
            "unicast.sourceAddress must be an IP address",
            "spec.unicast.sourceAddress",
        ),
        (
            "unicast source of the other family",
            json!({"unicast": {"enabled": true, "sourceAddress": "2001:db8::1"}}),
            "unicast.sourceAddress: must be of the family of the addresses",
            "spec.unicast.sourceAddress: 2001:db8::1 is not of the family",
        ),
        (
            "node source not an IP",
            json!({"nodes": [{"name": "a", "sourceAddress": "192.0.2.300"}]}),
            "nodes[].sourceAddress must be an IP address",
            "spec.nodes[0].sourceAddress",
        ),
        (
            "node source of the other family",
            json!({"nodes": [{"name": "a"}, {"name": "b", "sourceAddress": "2001:db8::1"}]}),
            "nodes: every sourceAddress must be of the family of the addresses",
            "spec.nodes[1].sourceAddress: 2001:db8::1 is not of the family",
        ),
        (
            "unicast ttl 0",
            json!({"unicast": {"enabled": true, "ttl": 0}}),
            "/spec/unicast/ttl",
            "spec.unicast.ttl",
        ),
        (
            "unicast ttl 256",
            json!({"unicast": {"enabled": true, "ttl": 256}}),
            "/spec/unicast/ttl",
            "spec.unicast.ttl",
        ),
        (
            "sync group scripts without a sync group",
            json!({"syncGroupNotify": {"master": "/bin/true"}}),
            "syncGroupNotify: set syncGroup too",
            "spec.syncGroupNotify: set syncGroup too",
        ),
        (
            "sync group script longer than 1024 bytes",
            json!({"syncGroup": "db", "syncGroupNotify": {"any": "x".repeat(1025)}}),
            "/spec/syncGroupNotify/any",
            "spec.syncGroupNotify.any: command is 1025 bytes",
        ),
        (
            "preempt delay too long",
            json!({"preemptDelay": "1001s"}),
            "preemptDelay must be between 0s and 1000s",
            "spec.preemptDelay",
        ),
        (
            "state PRIMARY",
            json!({"state": "PRIMARY"}),
            "/spec/state",
            "spec.state: unknown variant",
        ),
        (
            "interface name too long",
            json!({"interface": "averyveryverylongname"}),
            "/spec/interface",
            "spec.interface",
        ),
        (
            "garp repeat 0",
            json!({"garp": {"masterRepeat": 0}}),
            "/spec/garp/masterRepeat",
            "spec.garp.masterRepeat",
        ),
        (
            "17 scripts",
            json!({"track": {"scripts": scripts(17)}}),
            "/spec/track/scripts",
            "spec.track.scripts: 17 scripts; at most 16",
        ),
        (
            "script longer than 1024 bytes",
            json!({"track": {"scripts": [{"name": "c", "script": "x".repeat(1025)}]}}),
            "/spec/track/scripts/0/script",
            "spec.track.scripts[0].script: command is 1025 bytes",
        ),
        (
            "notify command longer than 1024 bytes",
            json!({"notify": {"fault": "x".repeat(1025)}}),
            "/spec/notify/fault",
            "spec.notify.fault: command is 1025 bytes",
        ),
        (
            "script interval below 1s",
            json!({"track": {"scripts": [{"name": "c", "script": "/bin/true", "interval": "500ms"}]}}),
            "interval must be at least 1s",
            "spec.track.scripts[0].interval: must be at least 1s",
        ),
        (
            "script timeout below 1s",
            json!({"track": {"scripts": [{"name": "c", "script": "/bin/true", "timeout": "999ms"}]}}),
            "timeout must be at least 1s",
            "spec.track.scripts[0].timeout: must be at least 1s",
        ),
        (
            "garp refresh below 1s",
            json!({"garp": {"masterRefresh": "100ms"}}),
            "garp.masterRefresh must be 0s (off) or at least 1s",
            "spec.garp.masterRefresh: must be 0s (off) or at least 1s",
        ),
        (
            "garp refresh negative",
            json!({"garp": {"masterRefresh": "-1s"}}),
            "garp.masterRefresh must be 0s (off) or at least 1s",
            "spec.garp.masterRefresh",
        ),
        (
            "garp repeat 101",
            json!({"garp": {"masterRepeat": 101}}),
            "/spec/garp/masterRepeat",
            "spec.garp.masterRepeat: must be between 1 and 100",
        ),
        (
            "garp refresh repeat 101",
            json!({"garp": {"masterRefreshRepeat": 101}}),
            "/spec/garp/masterRefreshRepeat",
            "spec.garp.masterRefreshRepeat: must be between 1 and 100",
        ),
        (
            "256 addresses",
            json!({"addresses": v4_addresses(256)}),
            "/spec/addresses",
            "spec.addresses: 256 addresses; at most 255",
        ),
        (
            "300 addresses",
            json!({"addresses": v4_addresses(300)}),
            "/spec/addresses",
            "spec.addresses: 300 addresses; at most 255",
        ),
        (
            "90 IPv6 addresses: the advert is above a 1500-byte MTU",
            json!({"version": 3, "authentication": null, "addresses": v6_addresses(90)}),
            "at most 89 IPv6 addresses in a standard 1500-byte MTU",
            "spec.addresses: 90 addresses; an advert carries at most 89 IPv6 addresses",
        ),
        (
            "mixed families, IPv6 first",
            json!({"version": 3, "authentication": null, "addresses": ["2001:db8::1", "192.0.2.1"]}),
            "one family",
            "spec.addresses[1]: all addresses of one VirtualIP must be of one family",
        ),
        (
            "1025 excluded addresses",
            json!({"excludedAddresses": v4_addresses(2049)}),
            "/spec/excludedAddresses",
            "spec.excludedAddresses: 2049 excluded addresses; at most 2048",
        ),
        (
            "spec above 64 KiB",
            json!({"nodes": oversized_nodes()}),
            RUST_ONLY,
            "spec: is ",
        ),
        (
            "garp delay too long",
            json!({"garp": {"masterDelay": "300s"}}),
            "garp.masterDelay must be between 0s and 255s",
            "spec.garp.masterDelay",
        ),
        (
            "17 HTTP checks",
            json!({"track": {"http": http_checks(17)}}),
            "/spec/track/http",
            "spec.track.http: 17 HTTP checks; at most 16",
        ),
        (
            "duplicate HTTP check names",
            json!({"track": {"http": [{"name": "a", "url": "http://x/"}, {"name": "a", "url": "http://y/"}]}}),
            "track.http: names must be unique",
            "spec.track.http[1].name",
        ),
        (
            "HTTP check URL scheme",
            http_check(json!({"url": "ftp://127.0.0.1/"})),
            "url must start with http:// or https://",
            "spec.track.http[0].url",
        ),
        (
            "HTTP check URL too long",
            http_check(json!({"url": format!("http://x/{}", "a".repeat(2048))})),
            "/spec/track/http/0/url",
            "spec.track.http[0].url: is 2057 bytes",
        ),
        (
            "HTTP check interval below 100ms",
            http_check(json!({"interval": "50ms"})),
            "interval must be at least 100ms",
            "spec.track.http[0].interval",
        ),
        (
            "HTTP check timeout below 100ms",
            http_check(json!({"timeout": "10ms"})),
            "timeout must be at least 100ms",
            "spec.track.http[0].timeout",
        ),
        (
            "HTTP expected status out of range",
            http_check(json!({"expectStatus": 600})),
            "/spec/track/http/0/expectStatus",
            "spec.track.http[0].expectStatus",
        ),
        (
            "HTTP rise 0",
            http_check(json!({"rise": 0})),
            "/spec/track/http/0/rise",
            "spec.track.http[0].rise",
        ),
        (
            "HTTP weight out of range",
            http_check(json!({"weight": 300})),
            "/spec/track/http/0/weight",
            "spec.track.http[0].weight",
        ),
        (
            "caFile with http://",
            http_check(json!({"url": "http://127.0.0.1/", "caFile": "/ca.pem"})),
            "caFile is only used with an https:// url",
            "spec.track.http[0].caFile",
        ),
        (
            "insecureSkipVerify with caFile",
            http_check(json!({"insecureSkipVerify": true, "caFile": "/ca.pem"})),
            "caFile and serverName would be ignored",
            "spec.track.http[0].insecureSkipVerify",
        ),
        (
            "insecureSkipVerify with http://",
            http_check(json!({"url": "http://127.0.0.1/", "insecureSkipVerify": true})),
            "insecureSkipVerify is only used with an https:// url",
            "spec.track.http[0].insecureSkipVerify",
        ),
    ]
}

#[test]
fn every_bad_case_is_rejected_by_the_schema_and_by_rust_naming_the_field() {
    for (what, patch, schema_text, rust_text) in bad_cases() {
        let obj = with(patch);
        if schema_text != RUST_ONLY {
            let mut schema_errs = openapi_errors(&obj);
            schema_errs.extend(cel_errors(&obj, None));
            assert!(
                schema_errs.iter().any(|e| e.contains(schema_text)),
                "{what}: schema errors {schema_errs:?} do not mention {schema_text:?}"
            );
        }
        let rust = rust_errors(&obj);
        assert!(
            rust.iter().any(|e| e.contains(rust_text)),
            "{what}: Rust errors {rust:?} do not mention {rust_text:?}"
        );
    }
}

#[test]
fn advert_size_follows_keepalived() {
    use crate::validate::max_advertised_addresses as max;
    assert_eq!(max(true, 2, 1500), 255);
    assert_eq!(max(false, 3, 1500), 89);
    assert_eq!(max(false, 3, 9000), 255);
    assert_eq!(max(true, 2, 576), 131);
    assert_eq!(max(false, 3, 1280), 76);
    assert_eq!(max(false, 3, 10), 0);
}

#[test]
fn cel_messages_name_the_field() {
    let obj = with(json!({"advertInterval": "1500ms"}));
    let errs = cel_errors(&obj, None);
    assert!(
        errs.iter().any(|e| e.starts_with("spec.advertInterval:")),
        "{errs:?}"
    );
}

#[test]
fn rust_validation_reports_every_problem_not_just_the_first() {
    let obj = with(
        json!({"priority": 0, "advertInterval": "1500ms", "addresses": ["nope", "2001:db8::1"], "nodes": [{"name": "a"}, {"name": "a"}]}),
    );
    let v: VirtualIP = serde_json::from_value(obj).expect("deserializes");
    let problems = validate_spec(&v.spec);
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "spec.priority",
        "spec.advertInterval",
        "spec.addresses[0]",
        "spec.addresses[1]",
        "spec.nodes[1].name",
    ] {
        assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
    }
}

#[test]
fn vrid_is_immutable_once_set() {
    let old = base();
    let changed = with(json!({"virtualRouterID": 52}));
    let errs = cel_errors(&changed, Some(&old));
    assert!(
        errs.iter()
            .any(|e| e.contains("virtualRouterID is immutable")),
        "{errs:?}"
    );
    let removed = with(json!({"virtualRouterID": null}));
    let errs = cel_errors(&removed, Some(&old));
    assert!(
        errs.iter()
            .any(|e| e.contains("virtualRouterID is immutable")),
        "{errs:?}"
    );
    // Setting it when it was unset, or keeping it, is allowed.
    let unset = with(json!({"virtualRouterID": null}));
    assert_eq!(cel_errors(&base(), Some(&unset)), Vec::<String>::new());
    assert_eq!(cel_errors(&base(), Some(&base())), Vec::<String>::new());
}
