//! `lab`: a throw-away virtual L2 segment built from Linux network namespaces, plus runners for
//! VRRP daemons (real keepalived and our `kube-vrrp-agent`), packet captures and a client-side
//! ping monitor, for the cross-component scenario tests and the failover benchmark.
//!
//! Topology of a [`Lab`]: one switch namespace holding a Linux bridge (STP off, multicast
//! snooping off, IPv6 off), N host namespaces each plugged into the bridge with a veth named
//! `eth0`, and one client namespace. Only documentation addresses are used (192.0.2.0/24,
//! 2001:db8::/64, and 198.51.100.0/24 / 203.0.113.0/24 for bulk VIPs). Everything the lab
//! created (namespaces, processes by PID, files) is removed when it is dropped, also during a
//! panic unwind.
//!
//! Tests that need root call [`can_run`] first: without the privileges to create network
//! namespaces they print `SKIPPED: <test>: ...` to stderr and fail, unless skips are allowed
//! (see [`skip_or_fail`]).

pub mod apiserver;
pub mod capture;
pub mod config;
pub mod daemon;
pub mod error;
pub mod http;
pub mod kubelab;
pub mod netns;
pub mod ping;
pub mod proc;
pub mod scenario;
pub mod suite;
pub mod topology;
pub mod wait;

pub use capture::{Capture, validate_vrrp_frame};
pub use config::{AdvertVersion, Instance, KeepalivedConf, TrackProcess, TrackScript};
pub use daemon::{Agent, AgentStatus, DaemonKind, InstanceStatus, Keepalived, VrrpDaemon};
pub use error::{LabError, Result};
pub use netns::can_run;
pub use ping::{PingMonitor, PingReport};
pub use proc::ProcGuard;
pub use scenario::{Cluster, Failover, Variant};
pub use topology::{Lab, LabBuilder, Node};
pub use wait::wait_until;

/// The IPv4 VIP the scenarios move around (documentation range, same subnet as the hosts).
pub const VIP4: &str = "192.0.2.200/24";
/// The IPv6 VIP the scenarios move around.
pub const VIP6: &str = "2001:db8::200/64";

/// The address part of an `ADDR/LEN` (or plain `ADDR`) string, parsed; panics on anything
/// else (for the lab's own constants).
pub fn addr_of(cidr: &str) -> std::net::IpAddr {
    try_addr_of(cidr).unwrap_or_else(|| panic!("not an address: {cidr}"))
}

/// The address part of an `ADDR/LEN` (or plain `ADDR`) string, if it parses.
pub fn try_addr_of(cidr: &str) -> Option<std::net::IpAddr> {
    cidr.split('/').next().unwrap_or(cidr).trim().parse().ok()
}

/// The `//!` module doc of a source file as plain text: the `--help` of the bench binaries.
pub fn module_doc(source: &str) -> String {
    source
        .lines()
        .take_while(|l| l.starts_with("//!"))
        .map(|l| l.trim_start_matches("//!").trim_start())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A test that cannot run here: prints `SKIPPED: <test>: <reason>` to stderr, then returns only
/// when skips are allowed (`KUBE_VRRP_ALLOW_SKIP=1`) and fails the test otherwise, so a skip is
/// never counted as a pass by accident. `tests/run.sh` leaves such tests out of the run instead
/// (nextest profile `no-root` in tests/nextest.toml, or a filter when Docker is missing), so
/// nextest's summary counts them as skipped.
pub fn skip_or_fail(test: &str, reason: &str) {
    // Straight to fd 2, not eprintln!: the test harness captures (and hides) the print macros
    // of passing tests, and a skip must be visible.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
    if std::env::var_os("KUBE_VRRP_ALLOW_SKIP").is_some_and(|v| v == "1") {
        return;
    }
    panic!(
        "{test} cannot run here: {reason}. Run it where it can (as root, with the tools and \
         images it needs), or through tests/run.sh, which leaves it out and reports it as \
         skipped, or set KUBE_VRRP_ALLOW_SKIP=1 to skip it (it then shows as passed). If \
         tests/run.sh printed this, add the test to the `no-root` filter in tests/nextest.toml."
    );
}

/// Return from the test (after [`can_run`] printed the SKIPPED line) unless labs can be built.
#[macro_export]
macro_rules! skip_unless_root {
    ($name:expr) => {
        if !$crate::can_run($name) {
            return;
        }
    };
}
