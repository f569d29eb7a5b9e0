//! A simulated Ethernet segment for tests: several [`Router`]s, a virtual clock that jumps to
//! the next deadline, and deterministic loss / delay / partition injection.
//!
//! Nothing here sleeps or reads a clock; a minute of protocol time runs in microseconds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::checksum::V3Ipv4Checksum;
use super::config::{GarpConfig, InstanceConfig, StartState};
use super::instance::{Action, State};
use super::packet::{Auth, Interval, Version};
use super::router::{InstanceId, Received, Router};

/// One simulated host.
pub(crate) struct Node {
    /// For debugging output.
    #[allow(dead_code)]
    pub name: String,
    pub addr: IpAddr,
    pub router: Router,
    pub alive: bool,
    /// TTL / hop limit its packets arrive with.
    pub ttl: u8,
    /// Partition segment: packets cross only between nodes of equal segment.
    pub segment: u32,
    /// Addresses currently bound (from Add/RemoveVips).
    pub vips: BTreeSet<IpNet>,
    /// Every action with its virtual time since the start.
    pub log: Vec<(Duration, InstanceId, Action)>,
}

struct Flight {
    to: usize,
    interface: String,
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    bytes: Vec<u8>,
}

/// The segment.
pub(crate) struct Sim {
    pub base: Instant,
    pub now: Instant,
    pub nodes: Vec<Node>,
    flights: BTreeMap<(Instant, u64), Flight>,
    seq: u64,
    rng: u64,
    /// Loss probability in parts per million.
    pub loss_ppm: u32,
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra uniformly random delay, 0..jitter.
    pub jitter: Duration,
    /// (time, vrid, number of live masters) whenever the number changes.
    pub master_counts: Vec<(Duration, u8, usize)>,
    /// Packets delivered / lost.
    pub delivered: u64,
    pub lost: u64,
}

impl Sim {
    pub fn new(seed: u64) -> Sim {
        let base = Instant::now();
        Sim {
            base,
            now: base,
            nodes: Vec::new(),
            flights: BTreeMap::new(),
            seq: 0,
            rng: seed | 1,
            loss_ppm: 0,
            delay: Duration::from_millis(1),
            jitter: Duration::ZERO,
            master_counts: Vec::new(),
            delivered: 0,
            lost: 0,
        }
    }

    /// Virtual time `secs` after the start.
    pub fn at(&self, secs: f64) -> Instant {
        self.base + Duration::from_secs_f64(secs)
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    fn rand(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Add a node running `cfgs` (not started).
    pub fn add_node(&mut self, name: &str, addr: IpAddr, cfgs: Vec<InstanceConfig>) -> usize {
        let mut router = Router::new();
        for c in cfgs {
            router.add(c).unwrap();
        }
        self.nodes.push(Node {
            name: name.to_string(),
            addr,
            router,
            alive: true,
            ttl: 255,
            segment: 0,
            vips: BTreeSet::new(),
            log: Vec::new(),
        });
        self.nodes.len() - 1
    }

    /// Start node `n` now.
    pub fn start(&mut self, n: usize) {
        let now = self.now;
        self.nodes[n].router.start(now);
        self.drain(n);
    }

    /// Start every node now.
    pub fn start_all(&mut self) {
        for n in 0..self.nodes.len() {
            self.start(n);
        }
    }

    /// Crash: the node stops dead (keeps its VIPs, sends nothing, hears nothing).
    pub fn crash(&mut self, n: usize) {
        self.nodes[n].alive = false;
    }

    /// Graceful stop (SIGTERM).
    pub fn shutdown(&mut self, n: usize) {
        let now = self.now;
        self.nodes[n].router.shutdown(now);
        self.drain(n);
    }

    /// Run `f` on a node's router at the current time, then collect its actions.
    pub fn with_router(&mut self, n: usize, f: impl FnOnce(&mut Router, Instant)) {
        let now = self.now;
        f(&mut self.nodes[n].router, now);
        self.drain(n);
    }

    /// State of the first instance of node `n`.
    pub fn state(&self, n: usize) -> State {
        self.state_of(n, InstanceId(0))
    }

    pub fn state_of(&self, n: usize, id: InstanceId) -> State {
        self.nodes[n]
            .router
            .get(id)
            .map(|i| i.state())
            .unwrap_or(State::Stop)
    }

    /// Times (since start) at which node `n`'s instance `id` entered `to`.
    pub fn entered(&self, n: usize, id: InstanceId, to: State) -> Vec<Duration> {
        self.nodes[n]
            .log
            .iter()
            .filter_map(|(t, i, a)| match a {
                Action::StateChanged { to: s, .. } if *i == id && *s == to => Some(*t),
                _ => None,
            })
            .collect()
    }

    /// Adverts node `n` sent: (time, priority).
    pub fn adverts(&self, n: usize) -> Vec<(Duration, u8)> {
        self.nodes[n]
            .log
            .iter()
            .filter_map(|(t, _, a)| match a {
                Action::SendAdvert { priority, .. } => Some((*t, *priority)),
                _ => None,
            })
            .collect()
    }

    fn drain(&mut self, n: usize) {
        let elapsed = self.elapsed();
        while let Some(ra) = self.nodes[n].router.poll_action() {
            match &ra.action {
                Action::SendAdvert {
                    src, dst, bytes, ..
                } => {
                    let interface = self.nodes[n]
                        .router
                        .get(ra.instance)
                        .map(|i| i.config().interface.clone())
                        .unwrap_or_default();
                    let targets: Vec<usize> = (0..self.nodes.len())
                        .filter(|m| *m != n && (dst.is_multicast() || self.nodes[*m].addr == *dst))
                        .collect();
                    for m in targets {
                        if self.nodes[m].segment != self.nodes[n].segment {
                            continue;
                        }
                        if self.loss_ppm > 0 && (self.rand() % 1_000_000) < u64::from(self.loss_ppm)
                        {
                            self.lost += 1;
                            continue;
                        }
                        let jitter = if self.jitter.is_zero() {
                            Duration::ZERO
                        } else {
                            Duration::from_nanos(self.rand() % self.jitter.as_nanos() as u64)
                        };
                        let when = self.now + self.delay + jitter;
                        self.seq += 1;
                        let flight = Flight {
                            to: m,
                            interface: interface.clone(),
                            src: *src,
                            dst: *dst,
                            ttl: self.nodes[n].ttl,
                            bytes: bytes.clone(),
                        };
                        self.flights.insert((when, self.seq), flight);
                    }
                }
                Action::AddVips(nets) => self.nodes[n].vips.extend(nets.iter().copied()),
                Action::RemoveVips(nets) => {
                    for net in nets {
                        self.nodes[n].vips.remove(net);
                    }
                }
                _ => {}
            }
            self.nodes[n].log.push((elapsed, ra.instance, ra.action));
        }
    }

    /// Advance to the next event not after `limit`; false when there is none.
    fn step(&mut self, limit: Instant) -> bool {
        let next_flight = self.flights.keys().next().map(|k| k.0);
        let next_timer = self
            .nodes
            .iter()
            .filter(|n| n.alive)
            .filter_map(|n| n.router.poll_timeout())
            .min();
        let next = match (next_flight, next_timer) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => return false,
            },
        };
        if next > limit {
            return false;
        }
        self.now = self.now.max(next);
        let now = self.now;
        while let Some(entry) = self.flights.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let f = entry.remove();
            if !self.nodes[f.to].alive || self.nodes[f.to].segment != self.segment_of_sender(&f) {
                continue;
            }
            self.delivered += 1;
            let rx = Received {
                interface: &f.interface,
                src: f.src,
                dst: f.dst,
                ttl: f.ttl,
            };
            self.nodes[f.to].router.handle_packet(now, &rx, &f.bytes);
            self.drain(f.to);
        }
        for n in 0..self.nodes.len() {
            if self.nodes[n].alive
                && self.nodes[n]
                    .router
                    .poll_timeout()
                    .is_some_and(|t| t <= now)
            {
                self.nodes[n].router.handle_timeout(now);
                self.drain(n);
            }
        }
        self.record_masters();
        true
    }

    /// Packets in flight keep the segment of their receiver at send time; a partition that
    /// happens while a packet is in flight drops it when the sender is now elsewhere.
    fn segment_of_sender(&self, f: &Flight) -> u32 {
        self.nodes
            .iter()
            .find(|n| n.addr == f.src)
            .map(|n| n.segment)
            .unwrap_or(u32::MAX)
    }

    fn record_masters(&mut self) {
        let mut per_vrid: BTreeMap<u8, usize> = BTreeMap::new();
        for n in self.nodes.iter().filter(|n| n.alive) {
            for (_, i) in n.router.iter() {
                let e = per_vrid.entry(i.config().vrid).or_default();
                if i.state() == State::Master {
                    *e += 1;
                }
            }
        }
        let t = self.elapsed();
        for (vrid, count) in per_vrid {
            let last = self
                .master_counts
                .iter()
                .rev()
                .find(|(_, v, _)| *v == vrid)
                .map(|(_, _, c)| *c);
            if last != Some(count) {
                self.master_counts.push((t, vrid, count));
            }
        }
    }

    /// Run until the virtual time `t`.
    pub fn run_until(&mut self, t: Instant) {
        while self.step(t) {}
        self.now = self.now.max(t);
    }

    /// Run until `secs` after the start.
    pub fn run_to(&mut self, secs: f64) {
        let t = self.at(secs);
        self.run_until(t);
    }

    /// Live masters of `vrid` now.
    pub fn masters(&self, vrid: u8) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|n| self.nodes[*n].alive)
            .filter(|n| {
                self.nodes[*n]
                    .router
                    .iter()
                    .any(|(_, i)| i.config().vrid == vrid && i.state() == State::Master)
            })
            .collect()
    }

    /// Largest number of simultaneous live masters of `vrid` at any time at or after `since`.
    pub fn max_masters_since(&self, vrid: u8, since: Duration) -> usize {
        let mut max = 0;
        let mut current = 0;
        for (t, v, c) in &self.master_counts {
            if *v != vrid {
                continue;
            }
            if *t <= since {
                current = *c;
            } else {
                max = max.max(*c);
            }
        }
        max.max(current)
    }
}

/// Node address `n` (192.0.2.n).
pub(crate) fn v4(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
}

/// Link-local IPv6 address `n` (fe80::n).
pub(crate) fn ll6(n: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, n))
}

/// keepalived-like defaults: VI_1, VRID 51, eth0, 1 s, preempt, VIP 192.0.2.200/24.
pub(crate) fn cfg(version: Version, priority: u8, source: IpAddr) -> InstanceConfig {
    let vip: IpNet = if source.is_ipv4() {
        "192.0.2.200/24".parse().unwrap()
    } else {
        "2001:db8::200/64".parse().unwrap()
    };
    InstanceConfig {
        name: "VI_1".into(),
        interface: "eth0".into(),
        vrid: 51,
        version,
        priority,
        start_state: StartState::Backup,
        advert_interval: Interval(100),
        preempt: true,
        preempt_delay: Duration::ZERO,
        accept: false,
        vips: vec![vip],
        excluded: vec![],
        source,
        unicast_peers: vec![],
        allow_lower_ttl: false,
        auth: Auth::None,
        v3_ipv4_checksum: V3Ipv4Checksum::WithPseudoHeader,
        trackers: vec![],
        garp: GarpConfig::default(),
        sync_group: None,
        peer_priorities: None,
    }
}

/// Duration from seconds + microseconds, for exact assertions.
pub(crate) fn t(secs: u64, micros: u64) -> Duration {
    Duration::from_secs(secs) + Duration::from_micros(micros)
}
