//! The agent's network I/O shell: everything that touches the kernel's networking, and no
//! VRRP logic (the sans-IO core in [`crate::vrrp`] decides; this moves bytes and addresses).
//!
//! - [`socket`]: raw VRRP sockets (protocol 112), one per (interface, family), shared by all
//!   instances there. The core's codec computes and verifies VRRP checksums; these sockets
//!   hand it the source/destination addresses it needs and never let the kernel touch the
//!   checksum.
//! - [`netlink`]: interfaces and addresses (and [`crds::resolve::NodeFacts`] from them), VIP
//!   add (replace semantics) / remove, pipelined; link and address event streams.
//! - [`garp`]: gratuitous ARP and unsolicited Neighbor Advertisements over `AF_PACKET`.
//! - [`stale`]: the on-disk record of VIPs this agent added and the clean-up at start.
//! - [`timer`]: monotonic sleeping that reports late wake-ups.
//!
//! Everything here is bound to the network namespace of the thread that creates it, which the
//! tests use to run in private namespaces.

pub mod garp;
pub mod netlink;
pub mod socket;
pub mod stale;
pub mod timer;

pub use garp::Gratuitous;
pub use netlink::{
    Interface, InterfaceAddress, LinkState, NetEvent, NetEvents, Netlink, OperState, Vip,
    node_facts,
};
pub use socket::{Family, ReceivedPacket, VrrpSocket, VrrpSockets};
pub use stale::{CleanupReport, RecordedVip, VipManager, VipRecord, cleanup_stale};
pub use timer::{Wakeup, sleep_until};
