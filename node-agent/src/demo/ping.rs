//! The client's view: ICMP echo to the VIP every [`INTERVAL`] from the client namespace (a raw
//! ICMP socket opened there), and the measured client-visible gap = the longest time between
//! two consecutive echo replies.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::lab::in_ns;
use crate::Error;

/// Time between echo requests.
pub const INTERVAL: Duration = Duration::from_millis(10);

#[derive(Default)]
struct Log {
    /// Send time of every request, indexed by sequence number.
    sent: Vec<Instant>,
    /// Receive time of every reply, in arrival order.
    replies: Vec<Instant>,
    /// Whether request N was answered.
    answered: Vec<bool>,
}

/// A client-visible outage.
#[derive(Clone, Copy, Debug)]
pub struct Gap {
    /// Longest time between two consecutive replies.
    pub longest: Duration,
    /// Requests in the window that got no reply.
    pub lost: usize,
}

/// A running pinger; stops (and joins its threads) on drop.
pub struct Pinger {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
    threads: Vec<JoinHandle<()>>,
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

impl Pinger {
    /// Start pinging `target` from namespace `ns`.
    pub fn start(ns: &str, target: Ipv4Addr) -> Result<Pinger, Error> {
        let socket = in_ns(ns, || {
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
                .map_err(|e| Error::io("opening a raw ICMP socket", e))
        })?;
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(|e| Error::io("setting the ICMP socket timeout", e))?;
        let receiver = socket
            .try_clone()
            .map_err(|e| Error::io("cloning the ICMP socket", e))?;
        let ident = (std::process::id() & 0xffff) as u16;
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Log::default()));

        let (stop_tx, log_tx) = (Arc::clone(&stop), Arc::clone(&log));
        let to = SockAddr::from(SocketAddrV4::new(target, 0));
        let sender = std::thread::spawn(move || {
            let start = Instant::now();
            let mut seq: u16 = 0;
            while !stop_tx.load(Ordering::Relaxed) {
                let mut pkt = [0u8; 24];
                pkt[0] = 8;
                pkt[4..6].copy_from_slice(&ident.to_be_bytes());
                pkt[6..8].copy_from_slice(&seq.to_be_bytes());
                pkt[8..].copy_from_slice(b"kube-vrrp demo!!");
                let sum = checksum(&pkt);
                pkt[2..4].copy_from_slice(&sum.to_be_bytes());
                {
                    let mut l = log_tx.lock().unwrap_or_else(PoisonError::into_inner);
                    l.sent.push(Instant::now());
                    l.answered.push(false);
                }
                // A send error (no ARP answer yet) is just a lost request.
                let _ = socket.send_to(&pkt, &to);
                seq = seq.wrapping_add(1);
                let next = start + INTERVAL * u32::from(seq);
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        });

        let (stop_rx, log_rx) = (Arc::clone(&stop), Arc::clone(&log));
        let recv = std::thread::spawn(move || {
            let mut receiver = receiver;
            let mut buf = [0u8; 1500];
            while !stop_rx.load(Ordering::Relaxed) {
                let Ok(n) = receiver.read(&mut buf) else {
                    continue;
                };
                let now = Instant::now();
                let pkt = &buf[..n];
                if n < 20 {
                    continue;
                }
                let ihl = usize::from(pkt[0] & 0x0f) * 4;
                if pkt[12..16] != target.octets() || n < ihl + 8 {
                    continue;
                }
                let icmp = &pkt[ihl..];
                if icmp[0] != 0 || u16::from_be_bytes([icmp[4], icmp[5]]) != ident {
                    continue;
                }
                let seq = usize::from(u16::from_be_bytes([icmp[6], icmp[7]]));
                let mut l = log_rx.lock().unwrap_or_else(PoisonError::into_inner);
                // Sequence numbers wrap after 65536 requests (11 minutes): map to the latest.
                let base = l.answered.len().saturating_sub(1) & !0xffff;
                let idx = if base + seq < l.answered.len() {
                    base + seq
                } else {
                    (base + seq).saturating_sub(0x10000)
                };
                if let Some(slot) = l.answered.get_mut(idx)
                    && !*slot
                {
                    *slot = true;
                    l.replies.push(now);
                }
            }
        });
        Ok(Pinger {
            stop,
            log,
            threads: vec![sender, recv],
        })
    }

    /// How many replies arrived after `t`.
    pub fn replies_since(&self, t: Instant) -> usize {
        let l = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        l.replies.iter().rev().take_while(|r| **r > t).count()
    }

    /// The outage around `t`: from the last reply before `t` to the latest reply.
    pub fn gap_since(&self, t: Instant) -> Gap {
        let l = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let first = l.replies.iter().rposition(|r| *r <= t).unwrap_or(0);
        let window = &l.replies[first..];
        let longest = window
            .windows(2)
            .map(|w| w[1].duration_since(w[0]))
            .max()
            .unwrap_or_default();
        let last_reply = window.last().copied().unwrap_or(t);
        let lost = l
            .sent
            .iter()
            .zip(&l.answered)
            .filter(|(s, a)| **s >= t && **s <= last_reply && !**a)
            .count();
        Gap { longest, lost }
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
