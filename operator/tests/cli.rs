//! The binary's command line: `crd` prints the CRDs; `run` rejects bad flags by name.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kube-vrrp-operator"))
}

#[test]
fn crd_prints_every_crd() {
    let out = bin().arg("crd").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        crds::crd_yaml().unwrap()
    );
}

#[test]
fn run_rejects_bad_flags_naming_them() {
    for (args, flag) in [
        (&["run", "--concurrency", "0"][..], "--concurrency"),
        (&["run", "--log-format", "xml"][..], "--log-format"),
        (&["run", "--metrics-addr", "nowhere"][..], "--metrics-addr"),
        (&["run", "--load-balancer", "maybe"][..], "--load-balancer"),
    ] {
        let out = bin().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(flag), "{args:?}: {err}");
    }
}

#[test]
fn run_without_a_cluster_fails_with_a_clear_error() {
    let out = bin()
        .args(["run", "--metrics-addr", "127.0.0.1:0"])
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("HOME", "/nonexistent-kube-vrrp-test-home")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("Kubernetes client configuration"), "{err}");
}
