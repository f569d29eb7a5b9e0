//! Hostile traffic against two `kube-vrrp-agent standalone` peers (issue 19). Needs root
//! (skips otherwise) and the agent binary (`cargo build -p kube-vrrp-agent`, or
//! KUBE_VRRP_AGENT_BIN).
//!
//! h1 (priority 200) is master of VI_1 (VRID 51) and VI_2 (VRID 52), h2 (priority 100) their
//! backup, v3 at 100 ms. From the client namespace a raw socket sends, as fast as it can for
//! 2.5 s each: valid priority-1 adverts for VRID 51, then the same with a bad checksum, then
//! valid adverts for a VRID nobody runs (99); then the first again paced at 36 k pps (the
//! rate issue 19 measured split brain at), and the bad-checksum and unknown-VRID floods paced
//! the same (the rate the CPU goal for discarded floods is read at). Each phase must cause no transition anywhere,
//! keep VI_2's advert cadence, and keep VI_1 at no more than one advert per interval. The
//! send rate, the agents' CPU (from /proc/PID/stat) and the counters are printed.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lab::{Agent, Instance, KeepalivedConf, Lab};
use socket2::{Domain, Protocol, SockAddr, Type};

const ADVERT: Duration = Duration::from_millis(100);
const FLOOD: Duration = Duration::from_millis(2500);
const VIP_A: &str = "192.0.2.200/24";
const VIP_B: &str = "192.0.2.201/24";
const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);

fn conf(priority: u8) -> String {
    let a = Instance {
        name: "VI_1".into(),
        vrid: 51,
        vips: vec![VIP_A.into()],
        ..Instance::v3(priority, ADVERT)
    };
    let b = Instance {
        name: "VI_2".into(),
        vrid: 52,
        vips: vec![VIP_B.into()],
        ..a.clone()
    };
    KeepalivedConf {
        instances: vec![a, b],
        ..Default::default()
    }
    .render()
}

fn fold(sum: u32) -> u16 {
    let mut s = sum;
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// A VRRPv3 advert (RFC 9568 §5.1) for `vrid` at `priority`, 100 ms, naming 192.0.2.200,
/// checksummed for `src` → 224.0.0.18 (wrong on purpose with `bad_checksum`).
fn advert(src: Ipv4Addr, vrid: u8, priority: u8, bad_checksum: bool) -> Vec<u8> {
    let mut p = vec![0x31, vrid, priority, 1, 0, 10, 0, 0, 192, 0, 2, 200];
    let mut sum: u32 = 0;
    for pair in src.octets().chunks(2).chain(GROUP.octets().chunks(2)) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    sum += 112 + p.len() as u32;
    for pair in p.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    let mut c = fold(sum);
    if bad_checksum {
        c ^= 0x5a5a;
    }
    p[6..8].copy_from_slice(&c.to_be_bytes());
    p
}

/// Sends `packet` to 224.0.0.18 from the client's namespace for `FLOOD`, as fast as one raw
/// socket can, or paced at `rate` packets per second. Returns (packets sent, seconds).
fn flood(lab: &Lab, packet: Vec<u8>, rate: Option<u64>) -> (u64, f64) {
    let client = lab.client();
    let src = client.ipv4;
    let sock = lab::netns::socket_in(
        &client.netns,
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(112)),
    )
    .expect("raw VRRP socket in the client namespace");
    sock.set_multicast_if_v4(&src).expect("IP_MULTICAST_IF");
    sock.set_multicast_ttl_v4(255).expect("IP_MULTICAST_TTL");
    sock.set_multicast_loop_v4(false)
        .expect("IP_MULTICAST_LOOP");
    let to = SockAddr::from(SocketAddr::V4(SocketAddrV4::new(GROUP, 0)));
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (s2, st2) = (sent.clone(), stop.clone());
    let start = Instant::now();
    let t = std::thread::spawn(move || {
        let mut due: u64 = 0;
        while !st2.load(Ordering::Relaxed) {
            // Paced: 1 ms worth of packets per round, the next round at its slot.
            let round = rate.map_or(256, |r| r.div_ceil(1000));
            for _ in 0..round {
                if sock.send_to(&packet, &to).is_ok() {
                    s2.fetch_add(1, Ordering::Relaxed);
                }
            }
            if rate.is_some() {
                due += 1;
                let slot = start + Duration::from_millis(due);
                std::thread::sleep(slot.saturating_duration_since(Instant::now()));
            }
        }
    });
    let deadline = start + FLOOD;
    while Instant::now() < deadline {
        std::thread::park_timeout(deadline.saturating_duration_since(Instant::now()));
    }
    stop.store(true, Ordering::Relaxed);
    t.join().expect("flood thread");
    (sent.load(Ordering::Relaxed), start.elapsed().as_secs_f64())
}

/// Sum of every sample of `family` whose labels start with `labels` (e.g. `instance="VI_1"`).
fn metric(text: &str, family: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(family)?;
            let rest = rest.strip_prefix('{').map_or(rest, |r| r);
            if !labels.is_empty() && !rest.starts_with(labels) && !rest.contains(labels) {
                return None;
            }
            l.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

struct Reading {
    h1: String,
    h2: String,
    cpu: [Duration; 2],
    at: Instant,
}

fn read(agents: &[Agent; 2]) -> Reading {
    Reading {
        h1: agents[0].metrics().expect("h1 /metrics"),
        h2: agents[1].metrics().expect("h2 /metrics"),
        cpu: [0, 1].map(|i| lab::proc::cpu_time(agents[i].pid()).expect("agent CPU time")),
        at: Instant::now(),
    }
}

struct Phase {
    name: &'static str,
    sent: u64,
    pps: f64,
    cpu_pct: [f64; 2],
    transitions: f64,
    vi1_sent: f64,
    vi2_sent: f64,
    vi1_received: f64,
    dropped_checksum: f64,
    unknown_vrid: f64,
}

fn phase(
    lab: &Lab,
    agents: &[Agent; 2],
    name: &'static str,
    packet: Vec<u8>,
    rate: Option<u64>,
) -> Phase {
    let before = read(agents);
    let (sent, secs) = flood(lab, packet, rate);
    let after = read(agents);
    let wall = after.at.duration_since(before.at).as_secs_f64();
    let d = |f: &dyn Fn(&Reading) -> f64| f(&after) - f(&before);
    let tr = "kube_vrrp_transitions_total";
    let p = Phase {
        name,
        sent,
        pps: sent as f64 / secs,
        cpu_pct: [0, 1].map(|i| (after.cpu[i] - before.cpu[i]).as_secs_f64() / wall * 100.0),
        transitions: d(&|r| metric(&r.h1, tr, "") + metric(&r.h2, tr, "")),
        vi1_sent: d(&|r| metric(&r.h1, "kube_vrrp_adverts_sent_total", "instance=\"VI_1\"")),
        vi2_sent: d(&|r| metric(&r.h1, "kube_vrrp_adverts_sent_total", "instance=\"VI_2\"")),
        vi1_received: d(&|r| {
            metric(
                &r.h1,
                "kube_vrrp_adverts_received_total",
                "instance=\"VI_1\"",
            )
        }),
        dropped_checksum: d(&|r| {
            metric(
                &r.h1,
                "kube_vrrp_adverts_dropped_total",
                "reason=\"bad_checksum\"",
            )
        }),
        unknown_vrid: d(&|r| metric(&r.h1, "kube_vrrp_unknown_vrid_packets_total", "")),
    };
    eprintln!(
        "{name}: sent {sent} in {secs:.2} s ({:.0} pps); agent CPU h1 {:.1} % h2 {:.1} %; \
         transitions {}; h1 adverts VI_1 {} VI_2 {} in {wall:.2} s; h1 VI_1 received {}, \
         bad_checksum dropped {}, unknown VRID {}",
        p.pps,
        p.cpu_pct[0],
        p.cpu_pct[1],
        p.transitions,
        p.vi1_sent,
        p.vi2_sent,
        p.vi1_received,
        p.dropped_checksum,
        p.unknown_vrid
    );
    // Nobody moved, the other instance kept its cadence, the attacked one sent no more than
    // one advert per interval (scheduled and immediate together: an immediate one postpones
    // the next scheduled one), plus the immediate one at the flood's start and one for where
    // the two readings fall in the cycle.
    let intervals = wall / ADVERT.as_secs_f64();
    assert_eq!(p.transitions, 0.0, "{name}: transitions during the flood");
    assert!(
        p.vi2_sent >= intervals - 3.0,
        "{name}: VI_2 sent {} adverts in {intervals:.1} intervals",
        p.vi2_sent
    );
    assert!(
        p.vi1_sent <= intervals + 3.0,
        "{name}: VI_1 sent {} adverts in {intervals:.1} intervals",
        p.vi1_sent
    );
    assert!(p.sent > 1000, "{name}: the flood ran ({} packets)", p.sent);
    p
}

#[test]
fn agent_flood_of_low_priority_and_bad_adverts_moves_nothing() {
    lab::skip_unless_root!("agent_flood_of_low_priority_and_bad_adverts_moves_nothing");
    let lab = Lab::builder().hosts(2).build().unwrap();
    let agents = [
        Agent::start(&lab, lab.host(0), &conf(200)).unwrap(),
        Agent::start(&lab, lab.host(1), &conf(100)).unwrap(),
    ];
    for vip in [VIP_A, VIP_B] {
        lab.wait_holder(vip, 0, Duration::from_secs(10)).unwrap();
    }
    lab::wait_until(Duration::from_secs(10), "h2 BACKUP of both", || {
        let st = agents[1].status().ok()?;
        ["VI_1", "VI_2"]
            .iter()
            .all(|n| st.instance(n).is_some_and(|i| i.state == "BACKUP"))
            .then_some(())
    })
    .unwrap();
    let client = lab.client().ipv4;

    let low = phase(
        &lab,
        &agents,
        "priority-1 adverts, VRID 51",
        advert(client, 51, 1, false),
        None,
    );
    assert!(
        low.vi1_received > 0.0,
        "the valid flood reached h1's VI_1 ({} accepted)",
        low.vi1_received
    );
    let bad = phase(
        &lab,
        &agents,
        "bad checksum, VRID 51",
        advert(client, 51, 1, true),
        None,
    );
    assert_eq!(bad.vi1_received, 0.0, "no bad-checksum advert accepted");
    assert!(
        bad.dropped_checksum > 0.0,
        "bad-checksum packets counted as dropped"
    );
    let unknown = phase(
        &lab,
        &agents,
        "unknown VRID 99",
        advert(client, 99, 1, false),
        None,
    );
    assert!(unknown.unknown_vrid > 0.0, "unknown-VRID packets counted");
    // The reference rate (36 k pps), paced.
    let paced = phase(
        &lab,
        &agents,
        "priority-1 adverts at 36k pps",
        advert(client, 51, 1, false),
        Some(36_000),
    );

    // The CPU goal for floods that are only discarded, at the same reference rate.
    let bad_paced = phase(
        &lab,
        &agents,
        "bad checksum at 36k pps",
        advert(client, 51, 1, true),
        Some(36_000),
    );
    let unknown_paced = phase(
        &lab,
        &agents,
        "unknown VRID 99 at 36k pps",
        advert(client, 99, 1, false),
        Some(36_000),
    );
    assert_eq!(
        bad_paced.vi1_received, 0.0,
        "no bad-checksum advert accepted"
    );

    for vip in [VIP_A, VIP_B] {
        assert_eq!(lab.holders(vip), vec![0], "{vip} stays on h1 alone");
    }
    for p in [&low, &bad, &unknown, &paced, &bad_paced, &unknown_paced] {
        eprintln!(
            "FLOOD {:<28} {:>8.0} pps  CPU h1 {:>5.1} %  h2 {:>5.1} %  transitions {}",
            p.name, p.pps, p.cpu_pct[0], p.cpu_pct[1], p.transitions
        );
    }
}
