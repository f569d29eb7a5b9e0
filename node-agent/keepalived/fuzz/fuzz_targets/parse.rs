//! The keepalived.conf reader must never panic: any bytes go through lexing, include expansion
//! (in memory), interpretation, printing, conversion and standalone resolution.
#![no_main]

use std::collections::BTreeMap;
use std::path::PathBuf;

use keepalived::convert::{ConvertOptions, convert, to_yaml};
use keepalived::standalone::resolve_config;
use keepalived::{MemFs, parse_with, printer};
use crds::resolve::{InterfaceFacts, NodeFacts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The input can include itself and a sibling, to exercise include handling and its limits.
    let fs = MemFs(BTreeMap::from([
        (PathBuf::from("fuzz.conf"), text.to_string()),
        (PathBuf::from("inc.conf"), "vrrp_script s {\n script /bin/true\n}\n".to_string()),
    ]));
    let parsed = parse_with("fuzz.conf", &text, &fs);
    let _ = parsed.diagnostics.to_string();
    let printed = printer::print(&parsed.config);
    let _ = parse_with("printed.conf", &printed, &MemFs::default());
    for node in [None, Some("n1".to_string())] {
        let conv = convert(&parsed.config, &ConvertOptions { namespace: None, node });
        let _ = to_yaml(&conv.items);
    }
    let host = NodeFacts {
        name: "n1".into(),
        interfaces: vec![InterfaceFacts { name: "eth0".into(), addresses: vec!["192.0.2.10/24".parse().unwrap()] }],
        addresses: vec!["192.0.2.10".parse().unwrap()],
    };
    let _ = resolve_config(&parsed.config, &host);
});
