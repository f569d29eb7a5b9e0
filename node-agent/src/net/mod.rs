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
//!
//! How a driver puts it together at start:
//!
//! 1. [`Netlink::new`], then [`Netlink::events`] (subscribe first), then
//!    [`Netlink::interfaces`] for the initial state and [`node_facts`] for the resolver;
//! 2. [`VipManager::new`] with [`VipRecord::load`]`(state_dir)`, then
//!    [`VipManager::cleanup_stale`] before taking any VIP;
//! 3. for each (interface, family) in use, [`VrrpSockets::get_or_open`] and one task looping
//!    on [`VrrpSocket::recv`] that feeds the core's router;
//! 4. the protocol loop sleeps with [`sleep_until`] on the core's next deadline (logging and
//!    counting late [`Wakeup`]s), sends adverts with [`VrrpSocket::send`] /
//!    [`VrrpSocket::send_each`], and spawns VIP changes ([`VipManager::add`] /
//!    [`VipManager::remove`]) and [`Gratuitous::send_gratuitous`] so it never waits on them.

pub mod garp;
pub mod netlink;
pub mod nft;
pub mod socket;
pub mod stale;
pub mod timer;

pub use garp::Gratuitous;
pub use netlink::{
    Interface, InterfaceAddress, LinkState, NetEvent, NetEvents, Netlink, OperState, Vip,
    node_facts,
};
pub use socket::{Family, ReceivedPacket, VRRP_TTL, VrrpSocket, VrrpSockets};
pub use stale::{CleanupReport, RecordedVip, VipManager, VipRecord, cleanup_stale, strays};
pub use timer::{Wakeup, sleep_until};
