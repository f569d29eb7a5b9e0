//! Every user configuration (tests/fixtures, copies of
//! shared/reference/keepalived-configs with 192.168.122.0/24 replaced by 192.0.2.0/24) parses,
//! converts with every field asserted, passes the Rust validation and the CRD's CEL rules, and
//! matches its golden output (tests/golden/*.yaml; `UPDATE_GOLDEN=1` rewrites them).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crds::virtualip::{AuthType, InitialState, VirtualIP, VirtualIPSpec};
use keepalived::convert::{Conversion, ConvertOptions, convert, to_yaml};
use keepalived::{MemFs, Severity, parse_with};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Parse and convert a fixture; the file is named by its base name so positions are stable.
fn load(name: &str, opts: &ConvertOptions) -> (Conversion, Vec<String>) {
    let text = std::fs::read_to_string(fixtures().join(name)).unwrap();
    let parsed = parse_with(name, &text, &MemFs::default());
    assert!(!parsed.diagnostics.has_errors(), "{}", parsed.diagnostics);
    let conv = convert(&parsed.config, opts);
    assert!(!conv.diagnostics.has_errors(), "{}", conv.diagnostics);
    let mut lines: Vec<String> = parsed
        .diagnostics
        .0
        .iter()
        .map(ToString::to_string)
        .collect();
    lines.extend(conv.diagnostics.0.iter().map(ToString::to_string));
    (conv, lines)
}

fn d(s: u64) -> Option<kube::core::Duration> {
    Some(Duration::from_secs(s).into())
}

/// The instance every user config shares: VI_1, eth0, VRID 51, advert 1 s, PASS 12345, one VIP.
fn common(spec: &VirtualIPSpec, priority: u8) {
    assert_eq!(spec.virtual_router_id, Some(51));
    assert_eq!(spec.version, Some(2), "keepalived's default version is 2");
    assert_eq!(spec.interface.as_deref(), Some("eth0"));
    assert_eq!(spec.priority, Some(priority));
    assert_eq!(spec.state, Some(InitialState::Master));
    assert_eq!(spec.advert_interval, d(1));
    assert_eq!(spec.preempt, Some(true));
    assert_eq!(spec.preempt_delay, None);
    assert_eq!(
        spec.accept,
        Some(true),
        "keepalived accepts by default outside strict mode"
    );
    let auth = spec.authentication.as_ref().unwrap();
    assert_eq!(auth.auth_type, AuthType::Pass);
    assert_eq!(auth.password_secret_ref.name, "vi-1-auth");
    assert_eq!(auth.password_secret_ref.key.as_deref(), Some("password"));
    assert_eq!(spec.addresses, vec!["192.0.2.200/24".to_string()]);
    assert!(spec.excluded_addresses.is_empty());
    assert_eq!(spec.unicast, None);
    assert_eq!(spec.node_selector, None);
    assert!(spec.nodes.is_empty());
    assert_eq!(spec.garp, None, "garp defaults equal keepalived's");
    assert_eq!(spec.sync_group, None);
}

fn check_object(c: &Conversion) {
    assert_eq!(c.items.len(), 1);
    let item = &c.items[0];
    assert_eq!(item.instance, "VI_1");
    let vip = &item.virtual_ip;
    assert_eq!(vip.metadata.name.as_deref(), Some("vi-1"));
    assert_eq!(
        vip.metadata.namespace, None,
        "namespace-less unless asked for"
    );
    assert!(crds::validate::validate_spec(&vip.spec).is_empty());
    kube::core::cel::validate_cel::<VirtualIP>(vip).unwrap();
    let secret = item.secret.as_ref().unwrap();
    assert_eq!(secret.metadata.name.as_deref(), Some("vi-1-auth"));
    assert_eq!(secret.metadata.namespace, None);
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(secret.string_data.as_ref().unwrap()["password"], "12345");
    assert_eq!(item.auth_pass.as_deref(), Some("12345"));
}

fn remark(name: &str, line: u32, col: u32) -> String {
    format!(
        "{name}:{line}:{col}: warning: `//` remark taken as a comment to the end of the line (keepalived comments start with # or !)"
    )
}

fn rename(name: &str, line: u32) -> String {
    format!(
        "{name}:{line}:1: warning: vrrp_instance VI_1 becomes VirtualIP vi-1 (Kubernetes names are DNS-1123 labels)"
    )
}

#[test]
fn basic() {
    let (c, diags) = load("basic.conf", &Default::default());
    check_object(&c);
    let spec = &c.items[0].virtual_ip.spec;
    common(spec, 255);
    assert_eq!(spec.track, None);
    assert_eq!(spec.notify, None);
    let n = "basic.conf";
    assert_eq!(
        diags,
        vec![
            remark(n, 2, 28),
            remark(n, 3, 28),
            remark(n, 6, 27),
            remark(n, 12, 32),
            rename(n, 1)
        ]
    );
}

#[test]
fn track_process() {
    let (c, diags) = load("track-process.conf", &Default::default());
    check_object(&c);
    let spec = &c.items[0].virtual_ip.spec;
    common(spec, 244);
    let t = spec.track.as_ref().unwrap();
    assert!(
        t.interfaces.is_empty() && t.scripts.is_empty() && t.files.is_empty() && t.pods.is_empty()
    );
    assert_eq!(t.processes.len(), 1);
    let p = &t.processes[0];
    assert_eq!(p.name, "track_apache");
    assert_eq!(p.process, "httpd");
    assert_eq!(p.weight, Some(10));
    assert_eq!(p.quorum, Some(1));
    assert_eq!(p.reverse, None);
    assert_eq!(spec.notify, None);
    assert_eq!(
        diags,
        vec![
            remark("track-process.conf", 3, 20),
            rename("track-process.conf", 6)
        ]
    );
}

#[test]
fn track_interface() {
    let (c, diags) = load("track-interface.conf", &Default::default());
    check_object(&c);
    let spec = &c.items[0].virtual_ip.spec;
    common(spec, 244);
    let t = spec.track.as_ref().unwrap();
    assert!(
        t.scripts.is_empty() && t.processes.is_empty() && t.files.is_empty() && t.pods.is_empty()
    );
    assert_eq!(t.interfaces.len(), 1);
    assert_eq!(t.interfaces[0].name, "ens9");
    assert_eq!(t.interfaces[0].weight, Some(5));
    assert_eq!(t.interfaces[0].reverse, None);
    assert_eq!(
        diags,
        vec![
            remark("track-interface.conf", 15, 26),
            rename("track-interface.conf", 1)
        ]
    );
}

fn check_keepalived_check_script(spec: &VirtualIPSpec) {
    let t = spec.track.as_ref().unwrap();
    assert!(
        t.interfaces.is_empty()
            && t.processes.is_empty()
            && t.files.is_empty()
            && t.pods.is_empty()
    );
    assert_eq!(t.scripts.len(), 1);
    let s = &t.scripts[0];
    assert_eq!(s.name, "keepalived_check");
    assert_eq!(s.script, "/usr/local/bin/keepalived_check.sh");
    assert_eq!(s.interval, d(1));
    assert_eq!(s.timeout, d(5));
    assert_eq!(s.rise, Some(3));
    assert_eq!(s.fall, Some(3));
    assert_eq!(s.weight, Some(0));
    assert_eq!(s.reverse, None);
    assert_eq!(s.user, None);
}

#[test]
fn track_script() {
    let (c, diags) = load("track-script.conf", &Default::default());
    check_object(&c);
    let spec = &c.items[0].virtual_ip.spec;
    common(spec, 244);
    check_keepalived_check_script(spec);
    assert_eq!(spec.notify, None);
    let n = "track-script.conf";
    assert_eq!(
        diags,
        vec![
            remark(n, 3, 20),
            remark(n, 4, 20),
            remark(n, 5, 20),
            remark(n, 6, 20),
            rename(n, 9)
        ]
    );
}

#[test]
fn notify() {
    let (c, diags) = load("notify.conf", &Default::default());
    check_object(&c);
    let spec = &c.items[0].virtual_ip.spec;
    common(spec, 244);
    check_keepalived_check_script(spec);
    let n = spec.notify.as_ref().unwrap();
    assert_eq!(
        n.any.as_deref(),
        Some("/usr/local/bin/keepalived_notify.sh")
    );
    assert_eq!(
        (
            n.master.as_ref(),
            n.backup.as_ref(),
            n.fault.as_ref(),
            n.stop.as_ref()
        ),
        (None, None, None, None)
    );
    assert_eq!(n.timeout, None);
    assert_eq!(
        diags,
        vec![remark("notify.conf", 25, 54), rename("notify.conf", 9)]
    );
}

#[test]
fn node_option_moves_priority_and_state_into_an_override() {
    let opts = ConvertOptions {
        namespace: Some("lb".into()),
        node: Some("node-a".into()),
    };
    let (c, _) = load("track-process.conf", &opts);
    let vip = &c.items[0].virtual_ip;
    assert_eq!(vip.metadata.namespace.as_deref(), Some("lb"));
    assert_eq!(vip.spec.priority, None);
    assert_eq!(vip.spec.state, None);
    assert_eq!(vip.spec.nodes.len(), 1);
    assert_eq!(vip.spec.nodes[0].name, "node-a");
    assert_eq!(vip.spec.nodes[0].priority, Some(244));
    assert_eq!(vip.spec.nodes[0].state, Some(InitialState::Master));
    assert_eq!(vip.spec.nodes[0].interface, None);
    assert!(crds::validate::validate_spec(&vip.spec).is_empty());
    kube::core::cel::validate_cel::<VirtualIP>(vip).unwrap();
}

#[test]
fn original_addresses_are_accepted_too() {
    // The user's own files use 192.168.122.0/24; the parser takes any address.
    let text = std::fs::read_to_string(fixtures().join("basic.conf"))
        .unwrap()
        .replace("192.0.2.", "192.168.122.");
    let parsed = parse_with("basic.conf", &text, &MemFs::default());
    assert!(!parsed.diagnostics.has_errors());
    assert_eq!(
        parsed.config.instances[0].virtual_ipaddress[0].cidr(),
        "192.168.122.200/24"
    );
}

#[test]
fn golden_outputs() {
    let golden_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut checked = 0;
    for name in [
        "basic.conf",
        "notify.conf",
        "track-interface.conf",
        "track-process.conf",
        "track-script.conf",
    ] {
        let (c, diags) = load(name, &Default::default());
        let mut text = String::new();
        for l in &diags {
            text.push_str(&format!("# {l}\n"));
        }
        text.push_str(&to_yaml(&c.items).unwrap());
        let path = golden_dir.join(name.replace(".conf", ".yaml"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
        assert_eq!(
            text,
            want,
            "{} differs from its golden file; rerun with UPDATE_GOLDEN=1 if intended",
            path.display()
        );
        // The golden YAML deserialises back into the same objects.
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&want)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let vip: VirtualIP = serde_yaml::from_value(docs.last().unwrap().clone()).unwrap();
        assert_eq!(vip, c.items[0].virtual_ip);
        checked += 1;
    }
    assert_eq!(checked, 5);
    assert!(diags_have_no_errors());
}

fn diags_have_no_errors() -> bool {
    let text = std::fs::read_to_string(fixtures().join("notify.conf")).unwrap();
    !parse_with("notify.conf", &text, &MemFs::default())
        .diagnostics
        .0
        .iter()
        .any(|d| d.severity == Severity::Error)
}
