//! The `kube-vrrp-agent convert` binary end to end: exit status, stdout YAML, stderr lines.

use std::path::{Path, PathBuf};
use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kube-vrrp-agent"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("keepalived/tests/fixtures")
        .join(name)
}

#[test]
fn converts_the_users_track_script_config() {
    let file = fixture("track-script.conf");
    let out = agent().arg("convert").arg(&file).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "stderr:\n{stderr}");
    // A Secret, then the VirtualIP referencing it.
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&stdout)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["kind"], "Secret");
    assert_eq!(docs[0]["stringData"]["password"], "12345");
    assert_eq!(docs[1]["kind"], "VirtualIP");
    assert_eq!(
        docs[1]["spec"]["authentication"]["passwordSecretRef"]["name"],
        "vi-1-auth"
    );
    let script = &docs[1]["spec"]["track"]["scripts"][0];
    assert_eq!(script["interval"], "1s");
    assert_eq!(script["timeout"], "5s");
    assert_eq!(script["rise"], 3);
    assert_eq!(script["fall"], 3);
    assert_eq!(script["weight"], 0);
    // Four `//` remarks and the rename, each on its own line with its position.
    let f = file.display().to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 5, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("{f}:3:20: warning: `//` remark")),
        "{stderr}"
    );
    assert_eq!(
        lines[4],
        format!(
            "{f}:9:1: warning: vrrp_instance VI_1 becomes VirtualIP vi-1 (Kubernetes names are DNS-1123 labels)"
        )
    );
}

#[test]
fn node_and_namespace_flags() {
    let out = agent()
        .args(["convert", "--node", "lb-1", "--namespace", "edge"])
        .arg(fixture("basic.conf"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("  nodes:\n  - name: lb-1\n    priority: 255\n    state: MASTER\n"),
        "{stdout}"
    );
    assert!(stdout.contains("  namespace: edge\n"));
}

#[test]
fn errors_exit_non_zero_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.conf");
    std::fs::write(
        &file,
        "vrrp_instance VI_1 {\n    virtual_router_id 300\n    advert_int -1\n    track_script {\n        missing\n    }\n    virtual_ipaddress {\n        192.0.2.1/24\n    }\n",
    )
    .unwrap();
    let out = agent().arg("convert").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let f = file.display().to_string();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        vec![
            format!("{f}:1:20: unbalanced braces: this '{{' is never closed"),
            format!("{f}:2:23: `virtual_router_id` must be an integer from 1 to 255, not \"300\""),
            format!(
                "{f}:3:16: `advert_int` must be a number of seconds from 0.01 to 255, not \"-1\""
            ),
            format!("{f}:5:9: track_script `missing`: no vrrp_script named missing is defined"),
            format!("{f}:1:1: vrrp_instance VI_1 has no virtual_router_id"),
        ]
    );
}

#[test]
fn includes_are_globbed_relative_to_the_including_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    std::fs::write(
        dir.path().join("conf.d/10-check.conf"),
        "vrrp_script chk {\n  script \"/bin/true\"\n  weight -20\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("conf.d/20-vi.conf"),
        "vrrp_instance web {\n  interface eth1\n  virtual_router_id 7\n  virtual_ipaddress {\n    192.0.2.7\n  }\n  track_script {\n    chk\n  }\n}\n",
    )
    .unwrap();
    let main = dir.path().join("keepalived.conf");
    std::fs::write(&main, "include conf.d/*.conf\n").unwrap();
    let out = agent()
        .current_dir("/")
        .arg("convert")
        .arg(&main)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stderr, "");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("  name: web\n"));
    assert!(
        stdout.contains("    - name: chk\n      script: /bin/true\n"),
        "{stdout}"
    );
    assert!(stdout.contains("      weight: -20\n"));
}

#[test]
fn missing_file_is_an_error() {
    let out = agent()
        .args(["convert", "/nonexistent/keepalived.conf"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(
            "/nonexistent/keepalived.conf:1:1: cannot read /nonexistent/keepalived.conf: "
        ),
        "{stderr}"
    );
}

#[test]
fn one_clusters_files_merge_into_one_virtual_ip() {
    let files: Vec<PathBuf> = (1..=3)
        .map(|n| fixture(&format!("cluster/node-{n}.conf")))
        .collect();
    let out = agent()
        .arg("convert")
        .args(&files)
        .args(["--node-names", "cp-1,cp-2,cp-3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "stderr:\n{stderr}");
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&stdout)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 2, "{stdout}");
    let spec = &docs[1]["spec"];
    assert_eq!(docs[1]["metadata"].get("namespace"), None);
    assert_eq!(docs[0]["metadata"].get("namespace"), None);
    assert_eq!(spec["nodes"][0]["name"], "cp-1");
    assert_eq!(spec["nodes"][2]["sourceAddress"], "192.0.2.23");
    assert_eq!(spec["unicast"]["peers"].as_sequence().unwrap().len(), 3);
    // Every warning names its file and line.
    for l in stderr.lines() {
        let (place, _) = l.split_once(": warning: ").unwrap_or_else(|| panic!("{l}"));
        assert!(
            place
                .rsplit(':')
                .nth(1)
                .is_some_and(|n| n.parse::<u32>().is_ok()),
            "{l}"
        );
    }
    // Without --node-names the file names are the node names, and each is reported.
    let out = agent().arg("convert").args(&files).output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: this file is node node-2 (from its file name)"),
        "{stderr}"
    );
    // A count mismatch is refused before anything is read.
    let out = agent()
        .arg("convert")
        .args(&files)
        .args(["--node-names", "cp-1,cp-2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("--node-names: 2 names for 3 files")
    );
}
