//! The committed CRD YAML (`crds/*.yaml`) must equal what the types generate.
//! Regenerate with `UPDATE_CRDS=1 cargo test -p kube-vrrp-crds --test crd_yaml`.

use std::path::Path;

fn check(file: &str, generated: String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    if std::env::var_os("UPDATE_CRDS").is_some() {
        std::fs::write(&path, &generated).expect("write CRD file");
        return;
    }
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(
        committed == generated,
        "{} is stale: regenerate it with `UPDATE_CRDS=1 cargo test -p kube-vrrp-crds --test crd_yaml`",
        path.display()
    );
}

#[test]
fn virtualip_yaml_is_fresh() {
    check(
        "virtualip.yaml",
        crds::virtualip_crd_yaml().expect("render"),
    );
}

#[test]
fn vrrpnode_yaml_is_fresh() {
    check("vrrpnode.yaml", crds::vrrpnode_crd_yaml().expect("render"));
}

#[test]
fn virtualippool_yaml_is_fresh() {
    check(
        "virtualippool.yaml",
        crds::virtualippool_crd_yaml().expect("render"),
    );
}

#[test]
fn operator_prints_all() {
    let all = crds::crd_yaml().expect("render");
    assert!(all.contains("name: virtualips.kubevrrp.io"));
    assert!(all.contains("name: vrrpnodes.kubevrrp.io"));
    assert!(all.contains("name: virtualippools.kubevrrp.io"));
}
