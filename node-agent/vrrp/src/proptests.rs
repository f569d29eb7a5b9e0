//! Property tests: codec round-trips, parse totality, and single-master convergence on a
//! lossy simulated segment.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use proptest::prelude::*;

use super::checksum::{ChecksumKind, V3Ipv4Checksum};
use super::config::StartState;
use super::packet::{Advert, Auth, Family, Interval, MULTICAST_V4, MULTICAST_V6, Version};
use super::sim::{Sim, cfg, v4};

fn addr(family: Family) -> BoxedStrategy<IpAddr> {
    match family {
        Family::V4 => any::<u32>()
            .prop_map(|a| IpAddr::V4(Ipv4Addr::from(a)))
            .boxed(),
        Family::V6 => any::<u128>()
            .prop_map(|a| IpAddr::V6(Ipv6Addr::from(a)))
            .boxed(),
    }
}

fn advert() -> impl Strategy<Value = (Advert, IpAddr, IpAddr, V3Ipv4Checksum)> {
    (prop_oneof![
        Just((Version::V2, Family::V4)),
        Just((Version::V3, Family::V4)),
        Just((Version::V3, Family::V6))
    ])
    .prop_flat_map(|(version, family)| {
        let interval = match version {
            Version::V2 => (1u16..=255).prop_map(|s| Interval(s * 100)).boxed(),
            Version::V3 => (1u16..=4095).prop_map(Interval).boxed(),
        };
        let auth = match version {
            Version::V2 => {
                prop_oneof![Just(Auth::None), any::<[u8; 8]>().prop_map(Auth::Pass)].boxed()
            }
            Version::V3 => Just(Auth::None).boxed(),
        };
        (
            1u8..=255,
            any::<u8>(),
            interval,
            prop::collection::vec(addr(family), 0..=40),
            auth,
            addr(family),
            prop_oneof![Just(true), Just(false)],
            prop_oneof![
                Just(V3Ipv4Checksum::WithPseudoHeader),
                Just(V3Ipv4Checksum::WithoutPseudoHeader)
            ],
        )
            .prop_map(
                move |(vrid, priority, interval, addresses, auth, src, multicast, mode)| {
                    let dst = match (family, multicast) {
                        (Family::V4, true) => IpAddr::V4(MULTICAST_V4),
                        (Family::V6, true) => IpAddr::V6(MULTICAST_V6),
                        _ => addresses.first().copied().unwrap_or(src),
                    };
                    (
                        Advert {
                            version,
                            vrid,
                            priority,
                            interval,
                            addresses,
                            auth,
                        },
                        src,
                        dst,
                        mode,
                    )
                },
            )
    })
}

proptest! {
    #[test]
    fn emit_then_parse_round_trips((a, src, dst, mode) in advert()) {
        let bytes = a.to_bytes(src, dst, mode).unwrap();
        prop_assert_eq!(bytes.len(), a.buffer_len());
        let (parsed, kind) = Advert::parse(&bytes, src, dst).unwrap();
        prop_assert_eq!(&parsed, &a);
        let want = match (a.version, Family::of(&src), mode) {
            (Version::V2, ..) => ChecksumKind::V2,
            (Version::V3, Family::V6, _) => ChecksumKind::V3Ipv6,
            (Version::V3, Family::V4, V3Ipv4Checksum::WithPseudoHeader) => ChecksumKind::V3Ipv4WithPseudoHeader,
            (Version::V3, Family::V4, V3Ipv4Checksum::WithoutPseudoHeader) => ChecksumKind::V3Ipv4WithoutPseudoHeader,
        };
        // A packet whose pseudo-header sums to zero verifies both ways; keepalived's form wins.
        if kind != want {
            prop_assert_eq!(kind, ChecksumKind::V3Ipv4WithPseudoHeader);
        }
    }

    #[test]
    fn any_single_bit_flip_is_caught((a, src, dst, mode) in advert(), bit in any::<usize>()) {
        let mut bytes = a.to_bytes(src, dst, mode).unwrap();
        let i = bit % (bytes.len() * 8);
        bytes[i / 8] ^= 1 << (i % 8);
        // A one-bit error is always caught by the Internet checksum (or a structural check)
        // of the form it was sent with. For v3 over IPv4 the flipped packet can, for rare
        // address pairs, happen to verify in the *other* form; never in its own.
        match Advert::parse(&bytes, src, dst) {
            Err(_) => {}
            Ok((_, kind)) => {
                let sent = match mode {
                    V3Ipv4Checksum::WithPseudoHeader => ChecksumKind::V3Ipv4WithPseudoHeader,
                    V3Ipv4Checksum::WithoutPseudoHeader => ChecksumKind::V3Ipv4WithoutPseudoHeader,
                };
                prop_assert!(a.version == Version::V3 && Family::of(&src) == Family::V4);
                prop_assert_ne!(kind, sent);
            }
        }
    }

    #[test]
    fn parse_never_panics_and_accepted_input_is_canonical(
        bytes in prop::collection::vec(any::<u8>(), 0..120),
        v6 in any::<bool>(),
        s in any::<u128>(),
        d in any::<u128>(),
    ) {
        let (src, dst) = if v6 {
            (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)))
        } else {
            (IpAddr::V4(Ipv4Addr::from(s as u32)), IpAddr::V4(Ipv4Addr::from(d as u32)))
        };
        if let Ok((a, kind)) = Advert::parse(&bytes, src, dst) {
            let mode = if kind == ChecksumKind::V3Ipv4WithoutPseudoHeader {
                V3Ipv4Checksum::WithoutPseudoHeader
            } else {
                V3Ipv4Checksum::WithPseudoHeader
            };
            let again = a.to_bytes(src, dst, mode).unwrap();
            prop_assert_eq!(Advert::parse(&again, src, dst).unwrap().0, a);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Under random loss and jitter, once the loss stops and one Master_Down_Interval plus
    /// one advert interval has passed, there is exactly one master and never two again.
    #[test]
    fn never_two_masters_after_convergence(
        seed in any::<u64>(),
        prios in prop::collection::vec(1u8..=255, 2..=4),
        preempt in prop::collection::vec(any::<bool>(), 4),
        start_master in prop::collection::vec(any::<bool>(), 4),
        loss_ppm in 0u32..400_000,
        jitter_us in 0u64..20_000,
        v2 in any::<bool>(),
    ) {
        let mut sim = Sim::new(seed);
        sim.loss_ppm = loss_ppm;
        sim.jitter = Duration::from_micros(jitter_us);
        let version = if v2 { Version::V2 } else { Version::V3 };
        for (i, p) in prios.iter().enumerate() {
            let mut c = cfg(version, *p, v4(i as u8 + 1));
            c.preempt = preempt[i];
            if start_master[i] {
                c.start_state = StartState::Master;
            }
            sim.add_node(&format!("n{i}"), v4(i as u8 + 1), vec![c]);
        }
        sim.start_all();
        sim.run_to(30.0);
        sim.loss_ppm = 0;
        sim.run_to(90.0);
        // Loss ends at 30 s; worst Master_Down_Interval is < 4 s, plus one interval, delay
        // and jitter.
        let settled = Duration::from_millis(30_000 + 4_000 + 1_000 + 25);
        prop_assert_eq!(sim.masters(51).len(), 1);
        prop_assert_eq!(sim.max_masters_since(51, settled), 1, "counts {:?}", sim.master_counts);
    }
}
