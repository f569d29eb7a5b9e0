//! Fuzz the VRRPv2 decoder over IPv4 (checked view + parse + re-emit round-trip).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vrrp::fuzzing::parse_target(2, vrrp::Family::V4, data));
