//! A sans-IO VRRP core: the VRRPv2 (RFC 3768) / VRRPv3 (RFC 9568) wire format and state
//! machine, with keepalived's semantics where the RFCs leave room (FAULT state, tracker
//! weights, sync groups, gratuitous ARP timing). No sockets, clocks, threads or async runtime:
//! time enters as `now: Instant` arguments and effects leave as [`Action`]s, so the protocol
//! runs the same in a daemon, a simulated network or a fuzzer.
//!
//! This crate owns the protocol and nothing else: it knows no configuration file format and no
//! orchestration system. It depends only on `std`, `ipnet` and `thiserror`. kube-vrrp's agent
//! builds [`InstanceConfig`]s from its Kubernetes objects or a keepalived.conf and performs
//! the actions with raw sockets and netlink.
//!
//! Modules:
//! - [`packet`] — VRRPv2/v3 advertisement codec (checked view [`Packet`] + [`Advert`] repr),
//!   typed [`ParseError`]s; [`checksum`] — the Internet checksum and pseudo-headers.
//! - [`timers`] — Skew_Time and Master_Down_Interval per version.
//! - [`track`] — keepalived tracker semantics (weights, reverse, rise/fall, quorum, files).
//! - [`config`] — [`InstanceConfig`], validated up front ([`ConfigError`] names the field).
//! - [`instance`] — one instance's state machine ([`Instance`]).
//! - [`router`] — all instances of a node: demultiplexing, sync groups, polling ([`Router`]).
//! - [`counters`] — counters and drop reasons.
//!
//! # Example: two routers elect a master
//!
//! Two hosts on one simulated segment, each running VRID 51 with the VIP 192.0.2.200/24:
//! the clock is virtual and adverts go straight from one router to the other, so ten seconds
//! of protocol run in microseconds. The host with priority 200 becomes master after its
//! Master_Down_Interval (3 s + (256 − 200)/256 s); the other stays backup.
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use std::time::{Duration, Instant};
//!
//! use vrrp::{
//!     Action, Auth, GarpConfig, InstanceConfig, Interval, Received, Router, StartState, State,
//!     V3Ipv4Checksum, Version,
//! };
//!
//! /// keepalived's defaults: VRRPv3, 1 s adverts, preempt, multicast.
//! fn config(priority: u8, source: IpAddr) -> InstanceConfig {
//!     InstanceConfig {
//!         name: "VI_1".into(),
//!         interface: "eth0".into(),
//!         vrid: 51,
//!         version: Version::V3,
//!         priority,
//!         start_state: StartState::Backup,
//!         advert_interval: Interval(100), // centiseconds
//!         preempt: true,
//!         preempt_delay: Duration::ZERO,
//!         accept: false,
//!         vips: vec!["192.0.2.200/24".parse().unwrap()],
//!         excluded: vec![],
//!         source,
//!         unicast_peers: vec![],
//!         allow_lower_ttl: false,
//!         auth: Auth::None,
//!         v3_ipv4_checksum: V3Ipv4Checksum::default(),
//!         trackers: vec![],
//!         garp: GarpConfig::default(),
//!         sync_group: None,
//!         peer_priorities: None,
//!     }
//! }
//!
//! let hosts = [(200, Ipv4Addr::new(192, 0, 2, 1)), (100, Ipv4Addr::new(192, 0, 2, 2))];
//! let mut routers = [Router::new(), Router::new()];
//! let mut ids = Vec::new();
//! for (router, (priority, addr)) in routers.iter_mut().zip(hosts) {
//!     ids.push(router.add(config(priority, IpAddr::V4(addr)))?);
//! }
//!
//! let start = Instant::now();
//! let mut now = start;
//! let mut holds_vip = [false, false];
//! let mut became_master = None;
//! for router in &mut routers {
//!     router.start(now);
//! }
//! while now < start + Duration::from_secs(10) {
//!     // Perform every queued action; an advert reaches the other host at once.
//!     let mut busy = true;
//!     while busy {
//!         busy = false;
//!         for n in 0..2 {
//!             while let Some(ra) = routers[n].poll_action() {
//!                 busy = true;
//!                 match ra.action {
//!                     Action::SendAdvert { src, dst, bytes, .. } => {
//!                         let rx = Received { interface: "eth0", src, dst, ttl: 255 };
//!                         routers[1 - n].handle_packet(now, &rx, &bytes);
//!                     }
//!                     Action::AddVips(_) => holds_vip[n] = true,
//!                     Action::RemoveVips(_) => holds_vip[n] = false,
//!                     Action::StateChanged { to: State::Master, .. } if n == 0 => {
//!                         became_master = Some(now - start);
//!                     }
//!                     _ => {} // gratuitous ARP, other transitions (logs, notify scripts)
//!                 }
//!             }
//!         }
//!     }
//!     // "Sleep" until the earliest timer and let it fire.
//!     now = routers.iter().filter_map(Router::poll_timeout).min().unwrap();
//!     for router in &mut routers {
//!         if router.poll_timeout().is_some_and(|t| t <= now) {
//!             router.handle_timeout(now);
//!         }
//!     }
//! }
//!
//! assert_eq!(routers[0].get(ids[0]).unwrap().state(), State::Master);
//! assert_eq!(routers[1].get(ids[1]).unwrap().state(), State::Backup);
//! assert_eq!(holds_vip, [true, false]);
//! assert_eq!(became_master, Some(Duration::from_micros(3_218_750)));
//! # Ok::<(), vrrp::ConfigError>(())
//! ```
//!
//! # Driving it from a real I/O shell
//!
//! ```text
//! let mut router = Router::new();
//! let id = router.add(config_for(instance, "eth0", primary_addr))?;
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
pub use instance::{
    Action, ConfigUpdate, GratuitousKind, Inheritance, Instance, LINGER_INTERVALS, RELEASE_GRACE,
    Reason, RxInfo, State, linger_bound,
};
pub use packet::{Advert, Auth, EmitError, Family, Interval, Packet, ParseError, Version};
pub use router::{Delivery, InstanceId, Received, Router, RouterAction};
pub use track::{Effect, Observation, Rule, Tracker, TrackerKind, TrackerMemory, TrackerSpec};
