//! The sans-IO VRRP core: wire format and state machine, with no sockets, clocks, threads
//! or tokio. Time enters as `now: Instant` arguments; effects leave as [`Action`]s.
//!
//! Modules:
//! - [`packet`] — VRRPv2/v3 advertisement codec (checked view [`Packet`] + [`Advert`] repr),
//!   typed [`ParseError`]s; [`checksum`] — the Internet checksum and pseudo-headers.
//! - [`timers`] — Skew_Time and Master_Down_Interval per version.
//! - [`track`] — keepalived tracker semantics (weights, reverse, rise/fall, quorum, files).
//! - [`config`] — [`InstanceConfig`] from a `ResolvedInstance`, validated up front.
//! - [`instance`] — one instance's state machine ([`Instance`]).
//! - [`router`] — all instances of a node: demultiplexing, sync groups, polling ([`Router`]).
//! - [`counters`] — counters and drop reasons.
//!
//! # Driving it (the I/O shell)
//!
//! ```text
//! let mut router = Router::new();
//! let id = router.add(InstanceConfig::from_resolved(&ri, "eth0", primary_addr)?)?;
//! // optional: feed initial tracker observations / link state here
//! router.start(now);
//! loop {
//!     while let Some(RouterAction { instance, action }) = router.poll_action() {
//!         match action {
//!             Action::SendAdvert { src, dst, bytes, .. } => /* raw socket, proto 112, TTL 255 */,
//!             Action::AddVips(nets) | Action::RemoveVips(nets) => /* netlink */,
//!             Action::SendGratuitous { addresses, repeat, .. } => /* GARP / unsolicited NA */,
//!             Action::StateChanged { from, to, reason, priority } => /* log, notify, status */,
//!         }
//!     }
//!     select! {
//!         _ = sleep_until(router.poll_timeout()) => router.handle_timeout(now()),
//!         pkt = socket.recv() => router.handle_packet(now(), &Received { interface, src, dst, ttl }, &pkt),
//!         (name, obs) = trackers.next() => { router.handle_tracker(now(), &name, obs); }
//!         (ifname, up) = links.next() => router.handle_link(now(), &ifname, up),
//!         _ = sigterm => { router.shutdown(now()); /* drain actions, exit */ }
//!     }
//! }
//! ```
//!
//! Notify scripts derive from [`Action::StateChanged`]: keepalived's generic notify gets
//! `INSTANCE <name> <to> <priority>` (`to` displays as MASTER/BACKUP/FAULT/STOP).
//! Configuration changes go through [`Router::update`], which applies what it can without a
//! state flap and returns [`ConfigUpdate::RestartRequired`] for identity changes (VRID,
//! interface, version, family, source address, multicast/unicast mode); the shell then
//! removes and re-adds the instance.

pub mod checksum;
pub mod config;
pub mod counters;
#[doc(hidden)]
pub mod fuzzing;
pub mod instance;
pub mod packet;
pub mod router;
pub mod timers;
pub mod track;

#[cfg(test)]
mod sim;

#[cfg(test)]
mod conformance;

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod scenarios;

pub use checksum::{ChecksumKind, V3Ipv4Checksum};
pub use config::{ConfigError, GarpConfig, InstanceConfig, StartState};
pub use counters::{Counters, DropReason};
pub use instance::{Action, ConfigUpdate, GratuitousKind, Instance, Reason, RxInfo, State};
pub use packet::{Advert, Auth, EmitError, Family, Interval, Packet, ParseError, Version};
pub use router::{InstanceId, Received, Router, RouterAction};
pub use track::{Effect, Observation, Rule, Tracker, TrackerKind, TrackerSpec};
