//! deploy/examples: one VirtualIP (+ Secret) per user keepalived config. Every example
//! deserialises, passes the Rust validation and the CRD's CEL rules, references an existing
//! Secret, and is the converter's output for its config except name, VRID and address.

use std::path::Path;

use crds::virtualip::VirtualIP;
use k8s_openapi::api::core::v1::Secret;
use keepalived::convert::convert;
use keepalived::{MemFs, parse_with};

const EXAMPLES: [&str; 5] = [
    "basic",
    "notify",
    "track-interface",
    "track-process",
    "track-script",
];

fn read_docs(path: &Path) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

#[test]
fn every_example_is_valid_and_matches_the_converter() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("deploy/examples");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    found.sort();
    assert_eq!(
        found,
        EXAMPLES
            .iter()
            .map(|e| format!("{e}.yaml"))
            .collect::<Vec<_>>()
    );

    let mut vrids = std::collections::BTreeSet::new();
    for (k, name) in EXAMPLES.iter().enumerate() {
        let docs = read_docs(&dir.join(format!("{name}.yaml")));
        assert_eq!(docs.len(), 2, "{name}: a Secret and a VirtualIP");
        let secret: Secret = serde_yaml::from_value(docs[0].clone()).unwrap();
        let vip: VirtualIP = serde_yaml::from_value(docs[1].clone()).unwrap();
        assert_eq!(vip.metadata.name.as_deref(), Some(*name));
        let problems = crds::validate::validate_spec(&vip.spec);
        assert!(problems.is_empty(), "{name}: {problems}");
        kube::core::cel::validate_cel::<VirtualIP>(&vip)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let auth = vip.spec.authentication.as_ref().unwrap();
        assert_eq!(
            secret.metadata.name.as_ref(),
            Some(&auth.password_secret_ref.name)
        );
        assert_eq!(secret.metadata.namespace, vip.metadata.namespace);
        let pw = &secret.string_data.as_ref().unwrap()[auth.password_secret_ref.key_or_default()];
        assert!((1..=8).contains(&pw.len()));
        assert!(
            vrids.insert(vip.spec.virtual_router_id),
            "{name}: VRIDs differ between examples"
        );

        // Same as converting the user's config, apart from name, VRID and address.
        let conf = format!("{name}.conf");
        let text = std::fs::read_to_string(
            root.join("node-agent/keepalived/tests/fixtures")
                .join(&conf),
        )
        .unwrap();
        let parsed = parse_with(&conf, &text, &MemFs::default());
        let mut want = convert(&parsed.config, &Default::default())
            .items
            .remove(0)
            .virtual_ip
            .spec;
        want.virtual_router_id = Some(51 + k as u8);
        want.addresses = vec![format!("192.0.2.{}/24", 200 + k)];
        if let Some(a) = &mut want.authentication {
            a.password_secret_ref.name = format!("{name}-auth");
        }
        assert_eq!(vip.spec, want, "{name}");
    }
}
