//! Malformed and odd inputs: the exact diagnostics (message and position) for each, every
//! problem reported rather than only the first.

use std::collections::BTreeMap;
use std::path::PathBuf;

use keepalived::{MemFs, parse_with};

const VI: &str = "vrrp_instance VI_1 {\n  interface eth0\n  virtual_router_id 51\n  virtual_ipaddress {\n    192.0.2.1/24\n  }\n";

fn diags(text: &str) -> Vec<String> {
    diags_fs(text, &MemFs::default())
}

fn diags_fs(text: &str, fs: &MemFs) -> Vec<String> {
    parse_with("k.conf", text, fs)
        .diagnostics
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// An instance with the required parts plus `extra` lines (starting on line 7).
fn inst(extra: &str) -> String {
    format!("{VI}{extra}}}\n")
}

#[test]
fn error_table() {
    let cases: Vec<(String, Vec<&str>)> = vec![
        // unknown keywords: warned and skipped, as keepalived does
        (inst("  bogus 1\n"), vec!["k.conf:7:3: warning: unknown keyword `bogus` in vrrp_instance VI_1; ignored, as keepalived ignores keywords it does not know"]),
        ("frobnicate {\n}\n".into(), vec!["k.conf:1:1: warning: unknown keyword `frobnicate` at the top level; ignored, as keepalived ignores keywords it does not know"]),
        (
            "vrrp_script s {\n  script /bin/true\n  intervall 2\n}\n".into(),
            vec!["k.conf:3:3: warning: unknown keyword `intervall` in vrrp_script s; ignored, as keepalived ignores keywords it does not know"],
        ),
        // missing values
        (inst("  priority\n"), vec!["k.conf:7:3: `priority` needs a value"]),
        (inst("  state\n"), vec!["k.conf:7:3: `state` needs a value"]),
        ("vrrp_instance {\n}\n".into(), vec!["k.conf:1:1: `vrrp_instance` needs a name"]),
        ("vrrp_instance VI_1\n".into(), vec!["k.conf:1:1: `vrrp_instance` needs a { ... } block"]),
        (inst("  virtual_ipaddress\n"), vec!["k.conf:7:3: `virtual_ipaddress` needs a { ... } block"]),
        // values out of range or malformed
        (inst("  priority 256\n"), vec!["k.conf:7:12: `priority` must be an integer from 1 to 255, not \"256\""]),
        (inst("  priority 0\n"), vec!["k.conf:7:12: `priority` must be an integer from 1 to 255, not \"0\""]),
        (inst("  version 4\n"), vec!["k.conf:7:11: `version` must be an integer from 2 to 3, not \"4\""]),
        (
            inst("  advert_int 0.001\n"),
            vec!["k.conf:7:14: `advert_int` must be a number of seconds from 0.01 to 255, not \"0.001\""],
        ),
        (
            inst("  advert_int 256\n"),
            vec!["k.conf:7:14: `advert_int` must be a number of seconds from 0.01 to 255, not \"256\""],
        ),
        (inst("  state SLAVE\n"), vec!["k.conf:7:9: `state` must be MASTER or BACKUP, not \"SLAVE\""]),
        (
            inst("  virtual_ipaddress_excluded {\n    300.1.1.1/24\n  }\n"),
            vec!["k.conf:8:5: \"300.1.1.1/24\" is not an IP address or IP/prefix"],
        ),
        (
            inst("  virtual_ipaddress_excluded {\n    192.0.2.9/33\n  }\n"),
            vec!["k.conf:8:5: prefix length in \"192.0.2.9/33\" must be from 0 to 32"],
        ),
        (
            inst("  virtual_ipaddress_excluded {\n    192.0.2.9 color blue\n  }\n"),
            vec!["k.conf:8:15: unknown virtual address option `color`"],
        ),
        (
            inst("  track_interface {\n    eth1 weight 300\n  }\n"),
            vec!["k.conf:8:17: `weight` must be an integer from -254 to 254, not \"300\""],
        ),
        (
            inst("  track_interface {\n    eth1 weigth 3\n  }\n"),
            vec!["k.conf:8:10: unknown option `weigth` for track_interface `eth1` (expected `weight N`)"],
        ),
        (
            inst("  authentication {\n    auth_type MD5\n  }\n"),
            vec![
                "k.conf:8:15: unknown authentication type \"MD5\" (expected PASS)",
                "k.conf:7:3: warning: vrrp_instance VI_1: authentication without a usable auth_type; keepalived runs without authentication",
            ],
        ),
        (
            inst("  unicast_peer {\n    192.0.2.300\n  }\n"),
            vec!["k.conf:8:5: `unicast_peer`: \"192.0.2.300\" is not an IP address"],
        ),
        // undefined references
        (
            inst("  track_script {\n    chk_nginx\n  }\n"),
            vec!["k.conf:8:5: track_script `chk_nginx`: no vrrp_script named chk_nginx is defined"],
        ),
        (
            inst("  track_process {\n    nginx weight 2\n  }\n"),
            vec!["k.conf:8:5: track_process `nginx`: no vrrp_track_process named nginx is defined"],
        ),
        (
            inst("  track_file {\n    flag\n  }\n"),
            vec!["k.conf:8:5: track_file `flag`: no track_file named flag is defined"],
        ),
        (
            format!("{}vrrp_sync_group G {{\n  group {{\n    VI_1\n    VI_2\n  }}\n}}\n", inst("")),
            vec!["k.conf:11:5: vrrp_sync_group G: no vrrp_instance named VI_2 is defined"],
        ),
        // braces and strings
        (VI.to_string(), vec!["k.conf:1:20: unbalanced braces: this '{' is never closed"]),
        (format!("{}}}\n", inst("")), vec!["k.conf:8:1: unbalanced braces: '}' without a matching '{'"]),
        (
            "vrrp_script s {\n  script \"/bin/true\n}\n".into(),
            vec!["k.conf:2:10: unterminated string: missing closing '\"' on this line"],
        ),
        // required parts
        (
            "vrrp_instance X {\n  interface eth0\n}\n".into(),
            vec![
                "k.conf:1:1: vrrp_instance X has no virtual_router_id",
                "k.conf:1:1: vrrp_instance X has no virtual_ipaddress; at least one address is needed",
            ],
        ),
        ("vrrp_script s {\n  interval 2\n}\n".into(), vec!["k.conf:1:1: vrrp_script s has no `script`"]),
        (
            format!("{}{}", inst(""), inst("")),
            vec!["k.conf:8:1: vrrp_instance VI_1 is already defined at k.conf:1:1"],
        ),
        // families and versions
        (
            inst("  version 2\n  virtual_ipaddress {\n    2001:db8::1/64\n  }\n"),
            vec!["k.conf:9:5: vrrp_instance VI_1: all virtual_ipaddress entries must be of one family (IPv4 or IPv6); put others in virtual_ipaddress_excluded"],
        ),
        (
            "vrrp_instance V6 {\n  version 2\n  virtual_router_id 9\n  virtual_ipaddress {\n    2001:db8::1/64\n  }\n}\n".into(),
            vec!["k.conf:1:1: vrrp_instance V6: VRRPv2 cannot carry IPv6 addresses; use version 3"],
        ),
        (
            inst("  authentication {\n    auth_type AH\n    auth_pass x\n  }\n"),
            vec!["k.conf:7:3: vrrp_instance VI_1: auth_type AH is not supported by kube-vrrp; use PASS or remove authentication"],
        ),
        (
            format!("{}vrrp_instance VI_2 {{\n  interface eth0\n  virtual_router_id 51\n  virtual_ipaddress {{\n    192.0.2.2\n  }}\n}}\n", inst("")),
            vec!["k.conf:8:1: vrrp_instance VI_2: virtual_router_id 51 is already used on this interface by vrrp_instance VI_1 (k.conf:1:1)"],
        ),
    ];
    for (text, want) in &cases {
        assert_eq!(diags(text), *want, "input:\n{text}");
    }
    assert_eq!(cases.len(), 35);
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let text = "vrrp_instance A {\n  priority 999\n  state maybe\n  advert_int x\n  track_script {\n    nope\n  }\n}\nunknown_block {\n}\n";
    assert_eq!(
        diags(text),
        vec![
            "k.conf:2:12: `priority` must be an integer from 1 to 255, not \"999\"",
            "k.conf:3:9: `state` must be MASTER or BACKUP, not \"maybe\"",
            "k.conf:4:14: `advert_int` must be a number of seconds from 0.01 to 255, not \"x\"",
            "k.conf:9:1: warning: unknown keyword `unknown_block` at the top level; ignored, as keepalived ignores keywords it does not know",
            "k.conf:6:5: track_script `nope`: no vrrp_script named nope is defined",
            "k.conf:1:1: vrrp_instance A has no virtual_router_id",
            "k.conf:1:1: vrrp_instance A has no virtual_ipaddress; at least one address is needed",
        ]
    );
}

#[test]
fn warning_table() {
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            inst("  advert_int 1.5\n"),
            vec![
                "k.conf:1:1: warning: vrrp_instance VI_1: advert_int 1.5 is not a whole number of seconds; VRRPv2 uses 2 s, rounded as keepalived does",
            ],
        ),
        (
            inst("  version 3\n  advert_int 0.015\n"),
            vec![
                "k.conf:1:1: warning: vrrp_instance VI_1: advert_int 0.015 is not a multiple of 10 ms; VRRPv3 uses 0.02 s, rounded as keepalived does",
            ],
        ),
        (
            inst("  authentication {\n    auth_type PASS\n    auth_pass 0123456789\n  }\n"),
            vec![
                "k.conf:9:15: warning: auth_pass is longer than 8 bytes; truncated to \"01234567\" as keepalived does",
            ],
        ),
        (
            format!(
                "{}vrrp_instance VI_2 {{\n  interface eth1\n  virtual_router_id 51\n  virtual_ipaddress {{\n    192.0.2.2\n  }}\n}}\n",
                inst("")
            ),
            vec![
                "k.conf:8:1: warning: vrrp_instance VI_2: virtual_router_id 51 is also used by vrrp_instance VI_1 (k.conf:1:1) with different virtual addresses",
            ],
        ),
        (
            inst("  priority 10 // low\n"),
            vec![
                "k.conf:7:15: warning: `//` remark taken as a comment to the end of the line (keepalived comments start with # or !)",
            ],
        ),
        (
            "virtual_server 192.0.2.1 80 {\n  lb_algo rr\n}\n".into(),
            vec![
                "k.conf:1:1: warning: `virtual_server` skipped: kube-vrrp reads only the VRRP part of keepalived.conf",
            ],
        ),
        (
            inst("  use_ipvlan\n"),
            vec![
                "k.conf:7:3: warning: `use_ipvlan` in vrrp_instance VI_1 is not supported by kube-vrrp; ignored",
            ],
        ),
        (
            inst("  state MASTER\n  priority 100\n  nopreempt\n"),
            vec![
                "k.conf:1:1: warning: vrrp_instance VI_1: nopreempt does not work with state MASTER; keepalived clears it",
            ],
        ),
        (
            inst("  version 3\n  authentication {\n    auth_type PASS\n    auth_pass abc\n  }\n"),
            vec![
                "k.conf:8:3: warning: vrrp_instance VI_1: VRRPv3 has no authentication; ignored, as keepalived does",
            ],
        ),
        (
            inst("  priority 10\n  priority 20\n"),
            vec!["k.conf:8:3: warning: `priority` is given more than once; the last one counts"],
        ),
        (
            "global_defs {\n  notification_email {\n    a@example.com\n  }\n}\n".into(),
            vec![
                "k.conf:2:3: warning: global_defs `notification_email` does not change VRRP in kube-vrrp; ignored",
            ],
        ),
    ];
    for (text, want) in &cases {
        let got = diags(text);
        assert_eq!(got, *want, "input:\n{text}");
        assert!(
            !parse_with("k.conf", text, &MemFs::default())
                .diagnostics
                .has_errors()
        );
    }
    // The rounding and truncation also reach the model the converter reads.
    let p = parse_with(
        "k.conf",
        &inst(
            "  advert_int 1.5\n  authentication {\n    auth_type PASS\n    auth_pass 0123456789\n  }\n",
        ),
        &MemFs::default(),
    );
    let i = &p.config.instances[0];
    assert_eq!(i.effective_advert_int(2), (2_000_000, true));
    assert_eq!(
        i.authentication.as_ref().unwrap().auth_pass.as_deref(),
        Some("01234567")
    );
}

#[test]
fn include_problems_point_at_the_include() {
    let fs = MemFs(BTreeMap::from([
        (
            PathBuf::from("/etc/k/a.conf"),
            "include b.conf\n".to_string(),
        ),
        (
            PathBuf::from("/etc/k/b.conf"),
            "vrrp_instance X {\n  priority 0\n}\n".to_string(),
        ),
        (
            PathBuf::from("/etc/k/loop.conf"),
            "include loop.conf\n".to_string(),
        ),
    ]));
    let got = parse_with(
        "/etc/k/a.conf",
        "include b.conf\ninclude missing.conf\ninclude none-*.conf\n",
        &fs,
    );
    let got: Vec<String> = got.diagnostics.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        vec![
            // Reading (includes, braces, strings) comes first, then the meaning of what was read.
            "/etc/k/a.conf:2:9: cannot read included file /etc/k/missing.conf: No such file or directory",
            "/etc/k/a.conf:3:9: warning: include \"none-*.conf\" matches no file",
            "/etc/k/b.conf:2:12: `priority` must be an integer from 1 to 255, not \"0\"",
            "/etc/k/b.conf:1:1: vrrp_instance X has no virtual_router_id",
            "/etc/k/b.conf:1:1: vrrp_instance X has no virtual_ipaddress; at least one address is needed",
        ]
    );
    let got = diags_fs(
        "include loop.conf\n",
        &MemFs(BTreeMap::from([(
            PathBuf::from("loop.conf"),
            "include loop.conf\n".to_string(),
        )])),
    );
    assert_eq!(
        got,
        vec!["loop.conf:1:1: includes nested more than 16 deep (does a file include itself?)"]
    );
}
