//! ICMP echo from inside a namespace (raw ICMP/ICMPv6 sockets opened in that namespace; no
//! `ping` binary needed), and [`PingMonitor`], which pings an address at a fixed small interval
//! and reports the longest run without answers: the client-visible failover gap.

use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::error::{LabError, Result};
use crate::netns::socket_in;

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo socket for one address family, living in one namespace.
struct Pinger {
    sock: Socket,
    target: IpAddr,
    ident: u16,
}

impl Pinger {
    fn new(ns: &str, target: IpAddr) -> Result<Self> {
        let sock = match target {
            IpAddr::V4(_) => socket_in(ns, Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?,
            IpAddr::V6(_) => socket_in(ns, Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?,
        };
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .map_err(|e| LabError::io("set ICMP read timeout", e))?;
        Ok(Pinger {
            sock,
            target,
            ident: crate::topology::random_u16(),
        })
    }

    fn send(&self, seq: u16) -> std::io::Result<()> {
        let ty = if self.target.is_ipv4() { 8 } else { 128 };
        let mut pkt = vec![ty, 0, 0, 0];
        pkt.extend_from_slice(&self.ident.to_be_bytes());
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(b"kube-vrrp-lab-pn");
        if self.target.is_ipv4() {
            let c = checksum(&pkt);
            pkt[2..4].copy_from_slice(&c.to_be_bytes());
        }
        // For ICMPv6 raw sockets the kernel fills in the checksum.
        let to = SockAddr::from(SocketAddr::new(self.target, 0));
        self.sock.send_to(&pkt, &to).map(|_| ())
    }

    /// Receives one echo reply for us (within the read timeout); returns its sequence number.
    fn recv(&self) -> Option<u16> {
        let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
        let (n, from) = self.sock.recv_from(&mut buf).ok()?;
        // SAFETY: recv_from initialised the first n bytes.
        let data: Vec<u8> = buf[..n]
            .iter()
            .map(|b| unsafe { b.assume_init() })
            .collect();
        if from.as_socket().map(|s| s.ip()) != Some(self.target) {
            return None;
        }
        let icmp = match self.target {
            IpAddr::V4(_) => {
                let ihl = usize::from(data.first()? & 0x0f) * 4;
                data.get(ihl..)?
            }
            IpAddr::V6(_) => &data[..],
        };
        let reply = if self.target.is_ipv4() { 0 } else { 129 };
        if icmp.len() < 8 || icmp[0] != reply {
            return None;
        }
        if u16::from_be_bytes([icmp[4], icmp[5]]) != self.ident {
            return None;
        }
        Some(u16::from_be_bytes([icmp[6], icmp[7]]))
    }
}

/// Sends one echo request from namespace `ns` to `addr` and waits up to `timeout` for the
/// reply. `Ok(Some(rtt))` when answered, `Ok(None)` when not.
pub fn ping_once(ns: &str, addr: IpAddr, timeout: Duration) -> Result<Option<Duration>> {
    let p = Pinger::new(ns, addr)?;
    let seq = crate::topology::random_u16();
    let start = Instant::now();
    p.send(seq)
        .map_err(|e| LabError::io(format!("send echo to {addr}"), e))?;
    while start.elapsed() < timeout {
        if p.recv() == Some(seq) {
            return Ok(Some(start.elapsed()));
        }
    }
    Ok(None)
}

#[derive(Default)]
struct Shared {
    sent: Vec<Instant>,
    answered: Vec<Option<Instant>>,
}

/// Pings an address from a namespace every `interval` until stopped.
pub struct PingMonitor {
    start: Instant,
    interval: Duration,
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Shared>>,
    threads: Vec<JoinHandle<()>>,
}

/// What a [`PingMonitor`] saw.
#[derive(Debug, Clone)]
pub struct PingReport {
    /// Probe interval.
    pub interval: Duration,
    /// Probes sent.
    pub sent: usize,
    /// Probes answered.
    pub answered: usize,
    /// Longest time between the send times of two consecutive answered probes (≈ the
    /// interval when nothing was lost). A trailing run of unanswered probes counts too; the
    /// time before the first answer does not.
    pub max_gap: Duration,
    /// When (from the monitor's start) the longest gap began.
    pub max_gap_at: Duration,
    /// Whether the last probe sent before stopping (allowing one interval) was answered.
    pub recovered: bool,
    /// Probes never answered, from the first answered one on and not counting the last two
    /// sent (they may still be in flight when the monitor stops).
    pub lost: usize,
}

impl PingReport {
    /// The outage the gap stands for: the longest gap minus one probe interval.
    pub fn outage(&self) -> Duration {
        self.max_gap.saturating_sub(self.interval)
    }
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PingMonitor {
    /// Starts pinging `addr` from namespace `ns` every `interval`.
    pub fn start(ns: &str, addr: IpAddr, interval: Duration) -> Result<Self> {
        let pinger = Arc::new(Pinger::new(ns, addr)?);
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let start = Instant::now();
        let mut threads = Vec::new();
        {
            let (p, stop, shared) = (pinger.clone(), stop.clone(), shared.clone());
            threads.push(std::thread::spawn(move || {
                let mut next = Instant::now();
                let mut seq: u16 = 0;
                while !stop.load(Ordering::Relaxed) {
                    {
                        let mut s = lock(&shared);
                        s.sent.push(Instant::now());
                        s.answered.push(None);
                    }
                    let _ = p.send(seq);
                    seq = seq.wrapping_add(1);
                    next += interval;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
            }));
        }
        {
            let (p, stop, shared) = (pinger, stop.clone(), shared.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(seq) = p.recv() {
                        let now = Instant::now();
                        let mut s = lock(&shared);
                        // Map the 16-bit sequence to the most recent probe with that number.
                        let n = s.sent.len();
                        let mut idx = (n.saturating_sub(1) & !0xffff) | usize::from(seq);
                        if idx >= n {
                            idx = idx.wrapping_sub(0x10000);
                        }
                        if idx < n && s.answered[idx].is_none() {
                            s.answered[idx] = Some(now);
                        }
                    }
                }
            }));
        }
        Ok(PingMonitor {
            start,
            interval,
            stop,
            shared,
            threads,
        })
    }

    /// When the latest answered probe was sent.
    pub fn last_answered_sent(&self) -> Option<Instant> {
        let s = lock(&self.shared);
        (0..s.sent.len())
            .rev()
            .find(|&i| s.answered[i].is_some())
            .map(|i| s.sent[i])
    }

    /// Waits until a probe sent after `after` has been answered.
    pub fn wait_answered_after(&self, after: Instant, within: Duration) -> Result<()> {
        crate::wait::wait_for(within, "a ping answered after the event", || {
            self.last_answered_sent().is_some_and(|t| t > after)
        })
    }

    /// Number of answered probes so far.
    pub fn answered(&self) -> usize {
        lock(&self.shared).answered.iter().flatten().count()
    }

    /// Stops the monitor and summarises what it saw.
    pub fn stop(mut self) -> PingReport {
        self.finish()
    }

    fn finish(&mut self) -> PingReport {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let s = lock(&self.shared);
        let answered: Vec<usize> = (0..s.sent.len())
            .filter(|&i| s.answered[i].is_some())
            .collect();
        let mut max_gap = Duration::ZERO;
        let mut max_gap_at = Duration::ZERO;
        let mut prev: Option<Instant> = None;
        for &i in &answered {
            let t = s.sent[i];
            if let Some(p) = prev.filter(|&p| t - p > max_gap) {
                max_gap = t - p;
                max_gap_at = p - self.start;
            }
            prev = Some(t);
        }
        // Probes still unanswered at the end (beyond the last one, which may be in flight).
        let last = s.sent.len().saturating_sub(2);
        let recovered = answered.last().is_some_and(|&i| i >= last);
        if let (Some(p), false) = (prev, recovered) {
            let end = s.sent.last().copied().unwrap_or(p);
            if end - p > max_gap {
                max_gap = end - p;
                max_gap_at = p - self.start;
            }
        }
        let first = answered.first().copied().unwrap_or(last);
        let lost = s.answered[first.min(last)..last]
            .iter()
            .filter(|a| a.is_none())
            .count();
        PingReport {
            interval: self.interval,
            sent: s.sent.len(),
            answered: answered.len(),
            max_gap,
            max_gap_at,
            recovered,
            lost,
        }
    }
}

impl Drop for PingMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
