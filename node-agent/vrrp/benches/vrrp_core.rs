//! Criterion benchmarks of the sans-IO VRRP core: parse, emit, and one full advert round
//! (master timer → advert bytes → backup router → down timer reset).
//!
//! Run: `cargo bench -p kube-vrrp-core --bench vrrp_core`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use vrrp::{
    Action, Advert, Auth, GarpConfig, InstanceConfig, Interval, Received, Router, StartState,
    V3Ipv4Checksum, Version,
};

const SRC4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const DST4: IpAddr = IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18));
const SRC6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));
const DST6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12));

fn advert(version: Version, addresses: Vec<IpAddr>) -> Advert {
    Advert {
        version,
        vrid: 51,
        priority: 100,
        interval: Interval(100),
        addresses,
        auth: if version == Version::V2 {
            Auth::pass(b"12345").unwrap()
        } else {
            Auth::None
        },
    }
}

fn codec(c: &mut Criterion) {
    let vip4 = vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200))];
    let vip6 = vec![IpAddr::V6(Ipv6Addr::new(
        0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x200,
    ))];
    let v2 = advert(Version::V2, vip4.clone())
        .to_bytes(SRC4, DST4, V3Ipv4Checksum::WithPseudoHeader)
        .unwrap();
    let v3 = advert(Version::V3, vip4.clone())
        .to_bytes(SRC4, DST4, V3Ipv4Checksum::WithPseudoHeader)
        .unwrap();
    let v3_rfc = advert(Version::V3, vip4.clone())
        .to_bytes(SRC4, DST4, V3Ipv4Checksum::WithoutPseudoHeader)
        .unwrap();
    let v6 = advert(Version::V3, vip6.clone())
        .to_bytes(SRC6, DST6, V3Ipv4Checksum::WithPseudoHeader)
        .unwrap();
    c.bench_function("parse/v2_ipv4_pass", |b| {
        b.iter(|| Advert::parse(black_box(&v2), SRC4, DST4).unwrap())
    });
    c.bench_function("parse/v3_ipv4_keepalived", |b| {
        b.iter(|| Advert::parse(black_box(&v3), SRC4, DST4).unwrap())
    });
    c.bench_function("parse/v3_ipv4_rfc9568", |b| {
        b.iter(|| Advert::parse(black_box(&v3_rfc), SRC4, DST4).unwrap())
    });
    c.bench_function("parse/v3_ipv6", |b| {
        b.iter(|| Advert::parse(black_box(&v6), SRC6, DST6).unwrap())
    });
    let a4 = advert(Version::V3, vip4);
    let a6 = advert(Version::V3, vip6);
    let mut buf = [0u8; 64];
    c.bench_function("emit/v3_ipv4", |b| {
        b.iter(|| {
            black_box(&a4)
                .emit(&mut buf, SRC4, DST4, V3Ipv4Checksum::WithPseudoHeader)
                .unwrap()
        })
    });
    c.bench_function("emit/v3_ipv6", |b| {
        b.iter(|| {
            black_box(&a6)
                .emit(&mut buf, SRC6, DST6, V3Ipv4Checksum::WithPseudoHeader)
                .unwrap()
        })
    });
}

fn config(priority: u8, source: u8, master: bool) -> InstanceConfig {
    InstanceConfig {
        name: "VI_1".into(),
        interface: "eth0".into(),
        vrid: 51,
        version: Version::V3,
        priority,
        start_state: if master {
            StartState::Master
        } else {
            StartState::Backup
        },
        advert_interval: Interval(100),
        preempt: true,
        preempt_delay: Duration::ZERO,
        accept: false,
        vips: vec!["192.0.2.200/24".parse().unwrap()],
        excluded: vec![],
        source: IpAddr::V4(Ipv4Addr::new(192, 0, 2, source)),
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

fn advert_round(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut master = Router::new();
    master.add(config(200, 1, true)).unwrap();
    let mut backup = Router::new();
    backup.add(config(100, 2, false)).unwrap();
    master.start(t0);
    backup.start(t0);
    while master.poll_action().is_some() {}
    while backup.poll_action().is_some() {}
    let mut now = t0;
    // One round: the master's advert timer fires, the advert's bytes go through the
    // backup's router (parse, demux, receive checks, timer reset).
    c.bench_function("round/master_timer_to_backup_reset", |b| {
        b.iter(|| {
            now = master.poll_timeout().unwrap();
            master.handle_timeout(now);
            while let Some(ra) = master.poll_action() {
                if let Action::SendAdvert {
                    src, dst, bytes, ..
                } = ra.action
                {
                    backup.handle_packet(
                        now,
                        &Received {
                            interface: "eth0",
                            src,
                            dst,
                            ttl: 255,
                        },
                        &bytes,
                    );
                }
            }
            while backup.poll_action().is_some() {}
            black_box(backup.poll_timeout())
        })
    });
    let bytes = advert(Version::V3, vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200))])
        .to_bytes(SRC4, DST4, V3Ipv4Checksum::WithPseudoHeader)
        .unwrap();
    c.bench_function("round/backup_receive_only", |b| {
        b.iter(|| {
            backup.handle_packet(
                now,
                &Received {
                    interface: "eth0",
                    src: SRC4,
                    dst: DST4,
                    ttl: 255,
                },
                black_box(&bytes),
            );
            black_box(backup.poll_timeout())
        })
    });
}

criterion_group!(benches, codec, advert_round);
criterion_main!(benches);
