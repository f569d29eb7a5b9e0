//! `use_vmac` / `vmac_xmit_base` become `virtualMAC`; what kube-vrrp cannot honour is warned.

use keepalived::convert::{ConvertOptions, convert};
use keepalived::{MemFs, parse_with};

fn spec_and_warnings(extra: &str) -> (crds::VirtualIPSpec, Vec<String>) {
    let text = format!(
        "vrrp_instance VI_1 {{\n  interface eth0\n  virtual_router_id 51\n{extra}  virtual_ipaddress {{\n    192.0.2.1/24\n  }}\n}}\n"
    );
    let p = parse_with("v.conf", &text, &MemFs::default());
    assert!(!p.diagnostics.has_errors(), "{}", p.diagnostics);
    let c = convert(&p.config, &ConvertOptions::default());
    assert!(!c.diagnostics.has_errors(), "{}", c.diagnostics);
    let w = c
        .diagnostics
        .warnings()
        .map(ToString::to_string)
        .filter(|l| !l.contains("becomes VirtualIP"))
        .collect();
    (c.items[0].virtual_ip.spec.clone(), w)
}

#[test]
fn use_vmac_becomes_virtual_mac() {
    let (s, w) = spec_and_warnings("  use_vmac\n");
    assert_eq!(s.virtual_mac, Some(Default::default()));
    assert!(w.is_empty(), "{w:?}");
    let (s, w) = spec_and_warnings("  use_vmac vrrp.51\n  vmac_xmit_base\n");
    assert_eq!(s.virtual_mac.unwrap().xmit_base, Some(true));
    assert!(w.is_empty(), "{w:?}");
}

#[test]
fn what_cannot_be_honoured_is_warned() {
    let (s, w) = spec_and_warnings("  use_vmac vmac-web\n");
    assert!(s.virtual_mac.is_some());
    assert_eq!(
        w,
        vec![
            "v.conf:4:3: warning: vrrp_instance VI_1: use_vmac vmac-web: the virtual MAC interface is always named vrrp.51 by kube-vrrp"
        ]
    );
    let (s, w) = spec_and_warnings("  vmac_xmit_base\n");
    assert_eq!(s.virtual_mac, None);
    assert_eq!(
        w,
        vec![
            "v.conf:4:3: warning: vrrp_instance VI_1: vmac_xmit_base without use_vmac does nothing; ignored"
        ]
    );
}
