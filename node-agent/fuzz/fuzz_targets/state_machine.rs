//! Fuzz the VRRP router/state machine with arbitrary packets, timers, trackers and links.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vrrp::fuzzing::state_machine_target(data));
