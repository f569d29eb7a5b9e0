//! Printing a configuration and reading it back gives the same model (positions aside), for
//! generated models covering every field and awkward words (quotes, `#`, `!`, braces, spaces).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crds::virtualip::InitialState;
use keepalived::model::{
    AuthType, Authentication, Config, GlobalDefs, Instance, Named, Notify, SyncGroup,
    TrackInterface, TrackRef, VirtualAddress, VrrpScript, VrrpTrackFile, VrrpTrackProcess,
};
use keepalived::printer::print;
use keepalived::{MemFs, parse_with};
use proptest::collection::{btree_set, vec};
use proptest::option::of;
use proptest::prelude::*;

/// Words with characters the printer must quote or escape. `include` is a keyword wherever a
/// statement starts, so it cannot be a name.
fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.#!{}\" \\\\/-]{1,10}".prop_filter("not the include keyword", |s| s != "include")
}

fn command() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_./ #!{}\"\\\\-]{1,24}".prop_filter("not blank", |s| !s.trim().is_empty())
}

fn ifname() -> impl Strategy<Value = String> {
    "[a-z0-9.:_-]{1,15}"
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o))),
        any::<[u16; 8]>().prop_map(|s| IpAddr::V6(Ipv6Addr::from(s)))
    ]
}

fn notify() -> impl Strategy<Value = Notify> {
    (
        of(command()),
        of(command()),
        of(command()),
        of(command()),
        of(command()),
    )
        .prop_map(|(any, master, backup, fault, stop)| Notify {
            any,
            master,
            backup,
            fault,
            stop,
        })
}

fn weight_and_reverse(lo: i16, hi: i16) -> impl Strategy<Value = (Option<i16>, bool)> {
    of(lo..=hi).prop_flat_map(|w| {
        (
            Just(w),
            if w.is_some() {
                any::<bool>().boxed()
            } else {
                Just(false).boxed()
            },
        )
    })
}

fn global() -> impl Strategy<Value = GlobalDefs> {
    (
        of(name()),
        of(2u8..=3),
        of(0u32..=4294),
        of(1u32..=255),
        of(0u32..=4294),
        of(1u32..=255),
        of((224u8..=239, any::<[u8; 3]>()).prop_map(|(a, r)| Ipv4Addr::new(a, r[0], r[1], r[2]))),
        of(any::<[u16; 7]>()
            .prop_map(|r| Ipv6Addr::new(0xff02, r[0], r[1], r[2], r[3], r[4], r[5], r[6]))),
        any::<bool>(),
    )
        .prop_map(|(router_id, v, d, r, rf, rr, g4, g6, strict)| GlobalDefs {
            router_id,
            vrrp_version: v,
            vrrp_garp_master_delay: d,
            vrrp_garp_master_repeat: r,
            vrrp_garp_master_refresh: rf,
            vrrp_garp_master_refresh_repeat: rr,
            vrrp_mcast_group4: g4,
            vrrp_mcast_group6: g6,
            vrrp_strict: strict,
            vrrp_check_unicast_src: false,
        })
}

fn script(n: String) -> impl Strategy<Value = VrrpScript> {
    (
        of(command()),
        of(1u32..=4294),
        of(1u32..=4294),
        weight_and_reverse(-253, 253),
        of(1u32..=i32::MAX as u32),
        of(1u32..=i32::MAX as u32),
        of(command()),
    )
        .prop_map(
            move |(script, interval, timeout, (weight, reverse), rise, fall, user)| VrrpScript {
                name: n.clone(),
                span: Default::default(),
                script,
                interval,
                timeout,
                weight,
                reverse,
                rise,
                fall,
                user,
            },
        )
}

fn vip() -> impl Strategy<Value = VirtualAddress> {
    (ip(), any::<u8>(), any::<bool>(), of(ifname()), of(name())).prop_map(
        |(addr, p, has_prefix, dev, label)| {
            let max = if addr.is_ipv4() { 33 } else { 129 };
            VirtualAddress {
                addr,
                prefix: has_prefix.then_some(p % max),
                dev,
                label,
                span: Default::default(),
            }
        },
    )
}

fn refs(lo: i16, hi: i16) -> impl Strategy<Value = Vec<TrackRef>> {
    btree_set(name(), 0..3).prop_flat_map(move |names| {
        let names: Vec<String> = names.into_iter().collect();
        let n = names.len();
        (Just(names), vec((of(lo..=hi), of(any::<bool>())), n)).prop_map(|(names, ws)| {
            names
                .into_iter()
                .zip(ws)
                .map(|(name, (weight, rev))| TrackRef {
                    name,
                    weight,
                    reverse: if weight.is_some() { rev } else { None },
                    span: Default::default(),
                })
                .collect()
        })
    })
}

fn instance(n: String) -> impl Strategy<Value = Instance> {
    let head = (
        of(prop_oneof![
            Just(InitialState::Master),
            Just(InitialState::Backup)
        ]),
        of(ifname()),
        of(1u8..=255),
        of(1u8..=255),
        of(10_000u32..=255_000_000),
        of(2u8..=3),
        of(any::<bool>()),
        of(0u32..=1_000_000_000),
        of(any::<bool>()),
        of(any::<bool>()),
    );
    let auth = of((
        of(prop_oneof![Just(AuthType::Pass), Just(AuthType::Ah)]),
        of("[!-~]{0,8}"),
    )
        .prop_map(|(auth_type, auth_pass)| Authentication {
            span: Default::default(),
            auth_type,
            auth_pass,
        }));
    let addrs = (
        vec(vip(), 0..3),
        vec(vip(), 0..2),
        of(ip()),
        vec(ip(), 0..3),
    );
    let tif = btree_set(ifname(), 0..3).prop_flat_map(|names| {
        let names: Vec<String> = names.into_iter().collect();
        let n = names.len();
        (Just(names), vec(weight_and_reverse(-253, 253), n)).prop_map(|(names, ws)| {
            names
                .into_iter()
                .zip(ws)
                .map(|(name, (weight, reverse))| TrackInterface {
                    name,
                    weight,
                    reverse,
                    span: Default::default(),
                })
                .collect::<Vec<_>>()
        })
    });
    let tracks = (tif, refs(-253, 253), refs(-254, 254), refs(-254, 254));
    let tail = (
        of(0u32..=255),
        of(1u32..=255),
        of(0u32..=4294),
        of(1u32..=255),
        notify(),
        any::<bool>(),
    );
    (head, auth, addrs, tracks, tail).prop_map(
        move |(
            (
                state,
                interface,
                vrid,
                priority,
                advert_int,
                version,
                preempt,
                preempt_delay,
                accept,
                strict_mode,
            ),
            authentication,
            (vips, evips, src, peers),
            (track_interface, track_script, track_process, track_file),
            (gd, gr, grf, grr, notify, dont_track_primary),
        )| Instance {
            name: n.clone(),
            span: Default::default(),
            state,
            interface,
            virtual_router_id: vrid,
            priority,
            advert_int,
            version,
            preempt,
            preempt_delay,
            accept,
            strict_mode,
            authentication,
            virtual_ipaddress: vips,
            virtual_ipaddress_excluded: evips,
            unicast_src_ip: src,
            unicast_peer: peers,
            track_interface,
            track_script,
            track_process,
            track_file,
            garp_master_delay: gd,
            garp_master_repeat: gr,
            garp_master_refresh: grf,
            garp_master_refresh_repeat: grr,
            notify,
            dont_track_primary,
            ..Default::default()
        },
    )
}

fn config() -> impl Strategy<Value = Config> {
    let scripts =
        btree_set(name(), 0..3).prop_flat_map(|ns| ns.into_iter().map(script).collect::<Vec<_>>());
    let processes = btree_set(name(), 0..3).prop_flat_map(|ns| {
        ns.into_iter()
            .map(|n| {
                (of(name()), weight_and_reverse(-254, 254), of(1u32..=65535)).prop_map(
                    move |(process, (weight, reverse), quorum)| VrrpTrackProcess {
                        name: n.clone(),
                        span: Default::default(),
                        process,
                        weight,
                        reverse,
                        quorum,
                    },
                )
            })
            .collect::<Vec<_>>()
    });
    let files = btree_set(name(), 0..3).prop_flat_map(|ns| {
        ns.into_iter()
            .map(|n| {
                (of(command()), weight_and_reverse(-254, 254)).prop_map(
                    move |(file, (weight, reverse))| VrrpTrackFile {
                        name: n.clone(),
                        span: Default::default(),
                        file,
                        weight,
                        reverse,
                    },
                )
            })
            .collect::<Vec<_>>()
    });
    let instances = btree_set(name(), 0..3)
        .prop_flat_map(|ns| ns.into_iter().map(instance).collect::<Vec<_>>());
    let groups = btree_set(name(), 0..2).prop_flat_map(|ns| {
        ns.into_iter()
            .map(|g| {
                (btree_set(name(), 1..3), notify()).prop_map(
                    move |(members, notify): (BTreeSet<String>, Notify)| SyncGroup {
                        name: g.clone(),
                        span: Default::default(),
                        group: members
                            .into_iter()
                            .map(|name| Named {
                                name,
                                span: Default::default(),
                            })
                            .collect(),
                        notify,
                        ..Default::default()
                    },
                )
            })
            .collect::<Vec<_>>()
    });
    (global(), scripts, processes, files, groups, instances).prop_map(
        |(global, scripts, processes, files, sync_groups, instances)| Config {
            global,
            scripts,
            processes,
            files,
            sync_groups,
            instances,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn print_then_parse_gives_the_same_model(cfg in config()) {
        let text = print(&cfg);
        let back = parse_with("printed.conf", &text, &MemFs::default());
        prop_assert_eq!(back.config.without_spans(), cfg.without_spans(), "printed:\n{}\n{}", text, back.diagnostics);
    }
}

#[test]
fn user_configs_survive_print_and_parse() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "conf") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let first = parse_with("a.conf", &text, &MemFs::default());
        let printed = print(&first.config);
        let second = parse_with("b.conf", &printed, &MemFs::default());
        assert!(second.diagnostics.0.is_empty(), "{}", second.diagnostics);
        assert_eq!(second.config.without_spans(), first.config.without_spans());
        assert!(!first.config.instances.is_empty());
        n += 1;
    }
    assert_eq!(n, 5);
}
