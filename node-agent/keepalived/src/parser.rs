//! Gives the statements of a keepalived.conf their VRRP meaning: builds the typed
//! [`Config`] and reports every problem (unknown keyword, missing value,
//! value out of range, undefined reference, ...) with its position, not only the first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::diag::{Diagnostics, Span};
use super::model::{
    AuthType, Authentication, Config, GlobalDefs, Instance, Named, SyncGroup, TIMER_HZ,
    TrackInterface, TrackRef, VirtualAddress, VrrpScript, VrrpTrackFile, VrrpTrackProcess,
    format_seconds, round_advert_int,
};
use super::syntax::Node;
use crds::virtualip::InitialState;

/// Top-level blocks of other keepalived subsystems: skipped with one warning each.
const SKIPPED_TOP: &[&str] = &[
    "virtual_server",
    "virtual_server_group",
    "static_ipaddress",
    "static_routes",
    "static_rules",
    "track_group",
    "garp_group",
    "linkbeat_interfaces",
    "interface_up_down_delays",
    "bfd_instance",
    "local_address_group",
    "net_namespace",
    "net_namespace_ipvs",
    "namespace_with_ipsets",
    "instance",
    "use_pid_dir",
    "child_wait_time",
    "linkbeat_use_polling",
];

/// vrrp_instance keywords keepalived knows that kube-vrrp does not implement: warned and ignored.
const INSTANCE_UNSUPPORTED: &[&str] = &[
    "use_vmac_addr",
    "use_ipvlan",
    "unicast_fault_no_peer",
    "old_unicast_checksum",
    "native_ipv6",
    "vrf",
    "track_bfd",
    "mcast_dst_ip",
    "track_src_ip",
    "no_virtual_ipaddress",
    "promote_secondaries",
    "linkbeat_use_polling",
    "v3_checksum_as_v2",
    "virtual_routes",
    "virtual_rules",
    "skip_check_adv_addr",
    "debug",
    "notify_deleted",
    "notify_master_rx_lower_pri",
    "smtp_alert",
    "notify_priority_changes",
    "lvs_sync_daemon_interface",
    "garp_lower_prio_delay",
    "garp_lower_prio_repeat",
    "down_timer_adverts",
    "timer_expired_backup",
    "garp_extra_if",
    "vmac_garp_intvl",
    "lower_prio_no_advert",
    "higher_prio_send_advert",
    "kernel_rx_buf_size",
    "thread_timer_expired",
    "owner_ignore_adverts",
];

/// Read the top-level statements into a configuration, reporting into `d`.
pub fn interpret(nodes: &[Node], d: &mut Diagnostics) -> Config {
    let mut cfg = Config::default();
    let mut defined: BTreeMap<(&'static str, String), Span> = BTreeMap::new();
    let mut seen_global = false;
    for n in nodes {
        match n.keyword.as_str() {
            "global_defs" => {
                if seen_global {
                    d.warning(
                        &n.span,
                        "a second global_defs block; its settings are merged with the first",
                    );
                }
                seen_global = true;
                global_defs(n, &mut cfg.global, d);
            }
            "vrrp_script" => {
                if let Some(name) = block_name(n, d, &mut defined, "vrrp_script")
                    && let Some(s) = vrrp_script(n, name, d)
                {
                    cfg.scripts.push(s);
                }
            }
            "vrrp_track_process" => {
                if let Some(name) = block_name(n, d, &mut defined, "vrrp_track_process")
                    && let Some(p) = track_process_def(n, name, d)
                {
                    cfg.processes.push(p);
                }
            }
            "track_file" | "vrrp_track_file" => {
                if let Some(name) = block_name(n, d, &mut defined, "track_file")
                    && let Some(f) = track_file_def(n, name, d)
                {
                    cfg.files.push(f);
                }
            }
            "vrrp_sync_group" => {
                if let Some(name) = block_name(n, d, &mut defined, "vrrp_sync_group")
                    && let Some(g) = sync_group(n, name, d)
                {
                    cfg.sync_groups.push(g);
                }
            }
            "vrrp_instance" => {
                if let Some(name) = block_name(n, d, &mut defined, "vrrp_instance") {
                    cfg.instances.push(instance(n, name, d));
                }
            }
            k if SKIPPED_TOP.contains(&k) => {
                d.warning(
                    &n.span,
                    format!("`{k}` skipped: kube-vrrp reads only the VRRP part of keepalived.conf"),
                );
            }
            k => unknown(&n.span, k, "at the top level", d),
        }
    }
    check(&cfg, d);
    cfg
}

// ---------------------------------------------------------------------------------------------
// Value helpers

fn no_block(n: &Node, d: &mut Diagnostics) {
    if let Some(b) = &n.block {
        d.error(
            &b.open,
            format!("`{}` does not take a {{ }} block", n.keyword),
        );
    }
}

fn no_args(n: &Node, d: &mut Diagnostics) {
    if let Some((_, s)) = n.args.first() {
        d.warning(
            s,
            format!(
                "`{}` takes no value; the rest of the line is ignored",
                n.keyword
            ),
        );
    }
    no_block(n, d);
}

/// The single value of `keyword VALUE`.
fn value<'n>(n: &'n Node, d: &mut Diagnostics) -> Option<&'n (String, Span)> {
    no_block(n, d);
    let Some(first) = n.args.first() else {
        d.error(&n.span, format!("`{}` needs a value", n.keyword));
        return None;
    };
    if let Some((_, s)) = n.args.get(1) {
        d.warning(s, format!("extra words after `{}` are ignored", n.keyword));
    }
    Some(first)
}

/// All words after the keyword as one command line (scripts, notify).
fn command(n: &Node, d: &mut Diagnostics) -> Option<String> {
    no_block(n, d);
    if n.args.is_empty() {
        d.error(&n.span, format!("`{}` needs a value", n.keyword));
        return None;
    }
    let line = n
        .args
        .iter()
        .map(|(w, _)| w.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    if line.trim().is_empty() {
        d.error(&n.span, format!("`{}` needs a non-empty value", n.keyword));
        return None;
    }
    Some(line)
}

fn uint_of(
    word: &str,
    span: &Span,
    what: &str,
    lo: u64,
    hi: u64,
    d: &mut Diagnostics,
) -> Option<u64> {
    match word.parse::<u64>() {
        Ok(v) if (lo..=hi).contains(&v) => Some(v),
        _ => {
            d.error(
                span,
                format!("`{what}` must be an integer from {lo} to {hi}, not {word:?}"),
            );
            None
        }
    }
}

fn uint(n: &Node, lo: u64, hi: u64, d: &mut Diagnostics) -> Option<u64> {
    let (w, s) = value(n, d)?;
    uint_of(w, s, &n.keyword, lo, hi, d)
}

fn u32_val(n: &Node, lo: u32, hi: u32, d: &mut Diagnostics) -> Option<u32> {
    uint(n, u64::from(lo), u64::from(hi), d).and_then(|v| u32::try_from(v).ok())
}

fn u8_val(n: &Node, lo: u8, hi: u8, d: &mut Diagnostics) -> Option<u8> {
    uint(n, u64::from(lo), u64::from(hi), d).and_then(|v| u8::try_from(v).ok())
}

fn int_of(
    word: &str,
    span: &Span,
    what: &str,
    lo: i64,
    hi: i64,
    d: &mut Diagnostics,
) -> Option<i64> {
    match word.parse::<i64>() {
        Ok(v) if (lo..=hi).contains(&v) => Some(v),
        _ => {
            d.error(
                span,
                format!("`{what}` must be an integer from {lo} to {hi}, not {word:?}"),
            );
            None
        }
    }
}

/// `N[.DDDDDD]` seconds → microseconds (keepalived reads up to 6 decimals).
fn decimal_us(word: &str) -> Option<u64> {
    let (whole, frac) = match word.split_once('.') {
        Some((w, f)) => (w, f),
        None => (word, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    if !whole.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
        || frac.len() > 6
    {
        return None;
    }
    let w: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let f: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().ok()?
    };
    w.checked_mul(u64::from(TIMER_HZ))?.checked_add(f)
}

fn seconds_us(n: &Node, lo_us: u64, hi_us: u64, d: &mut Diagnostics) -> Option<u32> {
    let (w, s) = value(n, d)?;
    match decimal_us(w) {
        Some(v) if (lo_us..=hi_us).contains(&v) => u32::try_from(v).ok(),
        _ => {
            d.error(
                s,
                format!(
                    "`{}` must be a number of seconds from {} to {}, not {w:?}",
                    n.keyword,
                    format_seconds(u32::try_from(lo_us).unwrap_or(u32::MAX)),
                    format_seconds(u32::try_from(hi_us).unwrap_or(u32::MAX))
                ),
            );
            None
        }
    }
}

/// keepalived accepts `0` for some counters and intervals, then uses 1 with a warning.
fn at_least_one(n: &Node, hi: u32, d: &mut Diagnostics) -> Option<u32> {
    let v = u32_val(n, 0, hi, d)?;
    if v == 0 {
        d.warning(
            &n.span,
            format!("`{}` 0 is not allowed; keepalived uses 1", n.keyword),
        );
        return Some(1);
    }
    Some(v)
}

fn ip_of(word: &str, span: &Span, what: &str, d: &mut Diagnostics) -> Option<IpAddr> {
    match word.parse::<IpAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            d.error(span, format!("`{what}`: {word:?} is not an IP address"));
            None
        }
    }
}

/// An address written as `IP` or, as keepalived also accepts, `IP/len` (the length is
/// meaningless for a host address and dropped with a warning).
fn host_ip_of(word: &str, span: &Span, what: &str, d: &mut Diagnostics) -> Option<IpAddr> {
    if let Some((addr, len)) = word.split_once('/')
        && let Ok(a) = addr.parse::<IpAddr>()
        && len.parse::<u8>().is_ok()
    {
        d.warning(
            span,
            format!("`{what}` {word}: the prefix length of a host address is ignored, as keepalived does"),
        );
        return Some(a);
    }
    ip_of(word, span, what, d)
}

/// `min_ttl N` / `max_ttl N` after a unicast peer: keepalived then checks the TTL of that
/// peer's adverts (and turns on check_unicast_src).
fn peer_options(p: &Node, i: &mut Instance, d: &mut Diagnostics) {
    let mut words = p.args.iter();
    while let Some((opt, os)) = words.next() {
        let Some((val, vs)) = words.next() else {
            d.error(
                os,
                format!("unicast_peer {}: `{opt}` needs a value", p.keyword),
            );
            return;
        };
        match opt.as_str() {
            "min_ttl" | "max_ttl" => {
                if uint_of(val, vs, opt, 0, 255, d).is_some() {
                    i.check_unicast_src = true;
                    d.warning(
                        os,
                        format!(
                            "unicast_peer {} `{opt} {val}` is not supported: kube-vrrp accepts unicast adverts of any TTL from a listed peer (allowLowerTtl); ignored",
                            p.keyword
                        ),
                    );
                }
            }
            other => {
                d.error(
                    os,
                    format!("unknown unicast_peer option `{other}` (expected min_ttl or max_ttl)"),
                );
                return;
            }
        }
    }
}

fn set_once<T>(slot: &mut Option<T>, v: Option<T>, n: &Node, d: &mut Diagnostics) {
    if let Some(v) = v {
        if slot.is_some() {
            d.warning(
                &n.span,
                format!(
                    "`{}` is given more than once; the last one counts",
                    n.keyword
                ),
            );
        }
        *slot = Some(v);
    }
}

fn set_script(slot: &mut Option<String>, n: &Node, d: &mut Diagnostics) {
    if let Some(v) = command(n, d) {
        if slot.is_some() {
            d.warning(
                &n.span,
                format!(
                    "`{}` is already set; this one is ignored, as keepalived does",
                    n.keyword
                ),
            );
        } else {
            *slot = Some(v);
        }
    }
}

fn block_name(
    n: &Node,
    d: &mut Diagnostics,
    defined: &mut BTreeMap<(&'static str, String), Span>,
    kind: &'static str,
) -> Option<String> {
    if n.block.is_none() {
        d.error(&n.span, format!("`{kind}` needs a {{ ... }} block"));
        return None;
    }
    let Some((name, _)) = n.args.first() else {
        d.error(&n.span, format!("`{kind}` needs a name"));
        return None;
    };
    if let Some((_, s)) = n.args.get(1) {
        d.warning(s, format!("extra words after `{kind} {name}` are ignored"));
    }
    if let Some(prev) = defined.get(&(kind, name.clone())) {
        d.error(
            &n.span,
            format!("{kind} {name} is already defined at {prev}"),
        );
        return None;
    }
    defined.insert((kind, name.clone()), n.span.clone());
    Some(name.clone())
}

fn children(n: &Node) -> &[Node] {
    n.block.as_ref().map_or(&[], |b| b.nodes.as_slice())
}

fn needs_block<'n>(n: &'n Node, d: &mut Diagnostics) -> &'n [Node] {
    if n.block.is_none() {
        d.error(&n.span, format!("`{}` needs a {{ ... }} block", n.keyword));
    }
    if let Some((_, s)) = n.args.first() {
        d.warning(s, format!("words after `{}` are ignored", n.keyword));
    }
    children(n)
}

/// A keyword keepalived does not know either: keepalived logs it and goes on, so the reader
/// warns and goes on too (a misspelt keyword then shows as this warning and a missing value).
fn unknown(span: &Span, keyword: &str, place: &str, d: &mut Diagnostics) {
    d.warning(
        span,
        format!("unknown keyword `{keyword}` {place}; ignored, as keepalived ignores keywords it does not know"),
    );
}

fn unsupported(n: &Node, context: &str, d: &mut Diagnostics) {
    d.warning(
        &n.span,
        format!(
            "`{}` in {context} is not supported by kube-vrrp; ignored",
            n.keyword
        ),
    );
}

/// `weight N [reverse|noreverse]` after the first word of a tracking entry or definition.
fn weight_opts(
    words: &[(String, Span)],
    owner: &str,
    lo: i64,
    hi: i64,
    clamp_254: bool,
    d: &mut Diagnostics,
) -> (Option<i16>, Option<bool>, bool) {
    let mut ok = true;
    let Some((kw, kspan)) = words.first() else {
        return (None, None, true);
    };
    if kw != "weight" {
        d.error(
            kspan,
            format!("unknown option `{kw}` for {owner} (expected `weight N`)"),
        );
        return (None, None, false);
    }
    let Some((wv, wspan)) = words.get(1) else {
        d.error(kspan, format!("`weight` needs a value for {owner}"));
        return (None, None, false);
    };
    let mut weight = int_of(wv, wspan, "weight", lo, hi, d).and_then(|v| i16::try_from(v).ok());
    if weight.is_none() {
        ok = false;
    }
    if clamp_254 && weight.is_some_and(|w| w.abs() == 254) {
        let w = weight.unwrap_or_default();
        d.warning(
            wspan,
            format!(
                "weight {w} for {owner}: keepalived does not allow +/-254 and uses {}",
                w.signum() * 253
            ),
        );
        weight = Some(w.signum() * 253);
    }
    let mut reverse = None;
    if let Some((r, rspan)) = words.get(2) {
        match r.as_str() {
            "reverse" => reverse = Some(true),
            "noreverse" => reverse = Some(false),
            other => {
                d.error(
                    rspan,
                    format!("unknown weight option `{other}` for {owner} (expected `reverse`)"),
                );
                ok = false;
            }
        }
    }
    if let Some((_, s)) = words.get(3) {
        d.warning(
            s,
            format!("extra words after the weight of {owner} are ignored"),
        );
    }
    (weight, reverse, ok)
}

// ---------------------------------------------------------------------------------------------
// Blocks

fn global_defs(n: &Node, g: &mut GlobalDefs, d: &mut Diagnostics) {
    for c in needs_block(n, d) {
        match c.keyword.as_str() {
            "router_id" => set_once(&mut g.router_id, value(c, d).map(|(w, _)| w.clone()), c, d),
            "vrrp_version" => set_once(&mut g.vrrp_version, u8_val(c, 2, 3, d), c, d),
            "vrrp_garp_master_delay" => set_once(
                &mut g.vrrp_garp_master_delay,
                u32_val(c, 0, u32::MAX / TIMER_HZ, d),
                c,
                d,
            ),
            "vrrp_garp_master_repeat" => set_once(
                &mut g.vrrp_garp_master_repeat,
                at_least_one(c, 255, d),
                c,
                d,
            ),
            "vrrp_garp_master_refresh" => set_once(
                &mut g.vrrp_garp_master_refresh,
                u32_val(c, 0, u32::MAX / TIMER_HZ, d),
                c,
                d,
            ),
            "vrrp_garp_master_refresh_repeat" => set_once(
                &mut g.vrrp_garp_master_refresh_repeat,
                at_least_one(c, 255, d),
                c,
                d,
            ),
            "vrrp_mcast_group4" => {
                let v = value(c, d).and_then(|(w, s)| match w.parse::<Ipv4Addr>() {
                    Ok(a) if a.is_multicast() => Some(a),
                    _ => {
                        d.error(
                            s,
                            format!(
                                "`vrrp_mcast_group4` must be an IPv4 multicast address, not {w:?}"
                            ),
                        );
                        None
                    }
                });
                set_once(&mut g.vrrp_mcast_group4, v, c, d);
            }
            "vrrp_mcast_group6" => {
                let v = value(c, d).and_then(|(w, s)| match w.parse::<Ipv6Addr>() {
                    Ok(a) if a.is_multicast() => Some(a),
                    _ => {
                        d.error(
                            s,
                            format!(
                                "`vrrp_mcast_group6` must be an IPv6 multicast address, not {w:?}"
                            ),
                        );
                        None
                    }
                });
                set_once(&mut g.vrrp_mcast_group6, v, c, d);
            }
            "vrrp_strict" => {
                no_args(c, d);
                g.vrrp_strict = true;
            }
            "vrrp_check_unicast_src" => {
                no_args(c, d);
                g.vrrp_check_unicast_src = true;
            }
            other => d.warning(
                &c.span,
                format!("global_defs `{other}` does not change VRRP in kube-vrrp; ignored"),
            ),
        }
    }
}

fn vrrp_script(n: &Node, name: String, d: &mut Diagnostics) -> Option<VrrpScript> {
    let mut s = VrrpScript {
        name,
        span: n.span.clone(),
        ..Default::default()
    };
    let owner = format!("vrrp_script {}", s.name);
    for c in children(n) {
        match c.keyword.as_str() {
            "script" => {
                let v = command(c, d);
                set_once(&mut s.script, v, c, d);
            }
            "interval" => set_once(
                &mut s.interval,
                at_least_one(c, u32::MAX / TIMER_HZ, d),
                c,
                d,
            ),
            "timeout" => set_once(
                &mut s.timeout,
                at_least_one(c, u32::MAX / TIMER_HZ, d),
                c,
                d,
            ),
            "weight" => {
                no_block(c, d);
                let mut words = vec![("weight".to_string(), c.span.clone())];
                words.extend(c.args.iter().cloned());
                let (w, r, _) = weight_opts(&words, &owner, -253, 253, false, d);
                if w.is_some() {
                    set_once(&mut s.weight, w, c, d);
                    s.reverse = r.unwrap_or(false);
                }
            }
            "rise" => set_once(&mut s.rise, u32_val(c, 1, i32::MAX as u32, d), c, d),
            "fall" => set_once(&mut s.fall, u32_val(c, 1, i32::MAX as u32, d), c, d),
            "user" => {
                let v = command(c, d);
                set_once(&mut s.user, v, c, d);
            }
            "init_fail" => unsupported(c, &owner, d),
            other => unknown(&c.span, other, &format!("in {owner}"), d),
        }
    }
    if s.script.is_none() {
        d.error(&n.span, format!("{owner} has no `script`"));
    }
    Some(s)
}

fn track_process_def(n: &Node, name: String, d: &mut Diagnostics) -> Option<VrrpTrackProcess> {
    let mut p = VrrpTrackProcess {
        name,
        span: n.span.clone(),
        ..Default::default()
    };
    let owner = format!("vrrp_track_process {}", p.name);
    for c in children(n) {
        match c.keyword.as_str() {
            "process" => {
                no_block(c, d);
                match c.args.first() {
                    None => d.error(&c.span, "`process` needs a value"),
                    Some((w, _)) => {
                        if let Some((_, s)) = c.args.get(1) {
                            d.warning(s, "process parameters are not supported; only the process name is matched");
                        }
                        set_once(&mut p.process, Some(w.clone()), c, d);
                    }
                }
            }
            "weight" => {
                no_block(c, d);
                let mut words = vec![("weight".to_string(), c.span.clone())];
                words.extend(c.args.iter().cloned());
                let (w, r, _) = weight_opts(&words, &owner, -254, 254, false, d);
                if w.is_some() {
                    set_once(&mut p.weight, w, c, d);
                    p.reverse = r.unwrap_or(false);
                }
            }
            "quorum" => set_once(&mut p.quorum, u32_val(c, 1, 65535, d), c, d),
            "quorum_max" | "delay" | "terminate_delay" | "fork_delay" | "full_command"
            | "param_match" => unsupported(c, &owner, d),
            other => unknown(&c.span, other, &format!("in {owner}"), d),
        }
    }
    if p.process.is_none() {
        d.error(&n.span, format!("{owner} has no `process`"));
    }
    Some(p)
}

fn track_file_def(n: &Node, name: String, d: &mut Diagnostics) -> Option<VrrpTrackFile> {
    let mut f = VrrpTrackFile {
        name,
        span: n.span.clone(),
        ..Default::default()
    };
    let owner = format!("track_file {}", f.name);
    for c in children(n) {
        match c.keyword.as_str() {
            "file" => set_once(&mut f.file, value(c, d).map(|(w, _)| w.clone()), c, d),
            "weight" => {
                no_block(c, d);
                let mut words = vec![("weight".to_string(), c.span.clone())];
                words.extend(c.args.iter().cloned());
                let (w, r, _) = weight_opts(&words, &owner, -254, 254, false, d);
                if w.is_some() {
                    set_once(&mut f.weight, w, c, d);
                    f.reverse = r.unwrap_or(false);
                }
            }
            "init_file" => unsupported(c, &owner, d),
            other => unknown(&c.span, other, &format!("in {owner}"), d),
        }
    }
    if f.file.is_none() {
        d.error(&n.span, format!("{owner} has no `file`"));
    }
    Some(f)
}

fn sync_group(n: &Node, name: String, d: &mut Diagnostics) -> Option<SyncGroup> {
    let mut g = SyncGroup {
        name,
        span: n.span.clone(),
        ..Default::default()
    };
    let owner = format!("vrrp_sync_group {}", g.name);
    let mut had_group = false;
    for c in children(n) {
        match c.keyword.as_str() {
            "group" => {
                if had_group {
                    d.warning(
                        &c.span,
                        format!("{owner}: group list already given; this one is ignored"),
                    );
                    continue;
                }
                had_group = true;
                for m in needs_block(c, d) {
                    no_block(m, d);
                    g.group.push(Named {
                        name: m.keyword.clone(),
                        span: m.span.clone(),
                    });
                    // Several names may share a line.
                    for (w, s) in &m.args {
                        g.group.push(Named {
                            name: w.clone(),
                            span: s.clone(),
                        });
                    }
                }
            }
            "notify" => set_script(&mut g.notify.any, c, d),
            "notify_master" => set_script(&mut g.notify.master, c, d),
            "notify_backup" => set_script(&mut g.notify.backup, c, d),
            "notify_fault" => set_script(&mut g.notify.fault, c, d),
            "notify_stop" => set_script(&mut g.notify.stop, c, d),
            "track_interface" => g.track_interface.extend(track_interfaces(c, d)),
            "track_script" => g.track_script.extend(track_refs(c, "track_script", d)),
            "track_process" => g.track_process.extend(track_refs(c, "track_process", d)),
            "track_file" => g.track_file.extend(track_refs(c, "track_file", d)),
            "sync_group_tracking_weight" => {
                no_args(c, d);
                g.tracking_weight = true;
            }
            "track_bfd" | "smtp_alert" | "global_tracking" | "notify_priority_changes" => {
                unsupported(c, &owner, d)
            }
            other => unknown(&c.span, other, &format!("in {owner}"), d),
        }
    }
    if g.group.is_empty() {
        d.warning(
            &n.span,
            format!("{owner} has no members; keepalived drops it"),
        );
        return None;
    }
    Some(g)
}

fn vip_line(n: &Node, d: &mut Diagnostics) -> Option<VirtualAddress> {
    no_block(n, d);
    let word = &n.keyword;
    let (addr, prefix) = match word.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (word.as_str(), None),
    };
    let Ok(addr) = addr.parse::<IpAddr>() else {
        d.error(
            &n.span,
            format!("{word:?} is not an IP address or IP/prefix"),
        );
        return None;
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => None,
        Some(p) => match p.parse::<u8>() {
            Ok(v) if v <= max => Some(v),
            _ => {
                d.error(
                    &n.span,
                    format!("prefix length in {word:?} must be from 0 to {max}"),
                );
                return None;
            }
        },
    };
    let mut v = VirtualAddress {
        addr,
        prefix,
        dev: None,
        label: None,
        span: n.span.clone(),
    };
    let mut i = 0;
    while i < n.args.len() {
        let (opt, os) = &n.args[i];
        match opt.as_str() {
            "dev" | "label" | "brd" | "broadcast" | "scope" | "peer" | "track_group" => {
                let Some((val, _)) = n.args.get(i + 1) else {
                    d.error(os, format!("`{opt}` needs a value"));
                    return None;
                };
                match opt.as_str() {
                    "dev" => v.dev = Some(val.clone()),
                    "label" => v.label = Some(val.clone()),
                    _ => d.warning(
                        os,
                        format!(
                            "virtual address option `{opt}` is not supported by kube-vrrp; ignored"
                        ),
                    ),
                }
                i += 2;
            }
            "home" | "-nodad" | "nodad" | "noprefixroute" | "autojoin" | "no_track"
            | "preferred_lft" => {
                d.warning(
                    os,
                    format!(
                        "virtual address option `{opt}` is not supported by kube-vrrp; ignored"
                    ),
                );
                i += 1;
            }
            other => {
                d.error(os, format!("unknown virtual address option `{other}`"));
                return None;
            }
        }
    }
    Some(v)
}

fn track_interfaces(n: &Node, d: &mut Diagnostics) -> Vec<TrackInterface> {
    let mut out: Vec<TrackInterface> = Vec::new();
    for t in needs_block(n, d) {
        no_block(t, d);
        let owner = format!("track_interface `{}`", t.keyword);
        let (weight, reverse, ok) = weight_opts(&t.args, &owner, -254, 254, true, d);
        if !ok {
            continue;
        }
        if t.keyword.len() > 15 {
            d.error(
                &t.span,
                format!("{owner}: not a valid interface name (at most 15 characters)"),
            );
            continue;
        }
        if out.iter().any(|x| x.name == t.keyword) {
            d.warning(
                &t.span,
                format!("duplicate {owner}; ignored, as keepalived does"),
            );
            continue;
        }
        out.push(TrackInterface {
            name: t.keyword.clone(),
            weight,
            reverse: reverse.unwrap_or(false),
            span: t.span.clone(),
        });
    }
    out
}

fn track_refs(n: &Node, kind: &str, d: &mut Diagnostics) -> Vec<TrackRef> {
    let mut out: Vec<TrackRef> = Vec::new();
    for c in needs_block(n, d) {
        no_block(c, d);
        let owner = format!("{kind} entry `{}`", c.keyword);
        let clamp = kind == "track_script";
        let (weight, reverse, ok) = weight_opts(&c.args, &owner, -254, 254, clamp, d);
        if !ok {
            continue;
        }
        if out.iter().any(|r| r.name == c.keyword) {
            d.warning(
                &c.span,
                format!(
                    "duplicate {kind} `{}`; ignored, as keepalived does",
                    c.keyword
                ),
            );
            continue;
        }
        out.push(TrackRef {
            name: c.keyword.clone(),
            weight,
            reverse,
            span: c.span.clone(),
        });
    }
    out
}

fn instance(n: &Node, name: String, d: &mut Diagnostics) -> Instance {
    let mut i = Instance {
        name,
        span: n.span.clone(),
        ..Default::default()
    };
    let owner = format!("vrrp_instance {}", i.name);
    for c in children(n) {
        i.spans.insert(c.keyword.clone(), c.span.clone());
        match c.keyword.as_str() {
            "state" => {
                let v = value(c, d).and_then(|(w, s)| match w.as_str() {
                    "MASTER" => Some(InitialState::Master),
                    "BACKUP" => Some(InitialState::Backup),
                    _ => {
                        d.error(s, format!("`state` must be MASTER or BACKUP, not {w:?}"));
                        None
                    }
                });
                set_once(&mut i.state, v, c, d);
            }
            "interface" => {
                let v = value(c, d).and_then(|(w, s)| {
                    if w.len() > 15 || w.contains('/') {
                        d.error(s, format!("`interface` {w:?} is not a valid interface name (at most 15 characters, no '/')"));
                        None
                    } else {
                        Some(w.clone())
                    }
                });
                set_once(&mut i.interface, v, c, d);
            }
            "virtual_router_id" => set_once(&mut i.virtual_router_id, u8_val(c, 1, 255, d), c, d),
            "priority" => set_once(&mut i.priority, u8_val(c, 1, 255, d), c, d),
            "advert_int" => set_once(
                &mut i.advert_int,
                seconds_us(c, u64::from(TIMER_HZ / 100), 255 * u64::from(TIMER_HZ), d),
                c,
                d,
            ),
            "version" => set_once(&mut i.version, u8_val(c, 2, 3, d), c, d),
            "nopreempt" => {
                no_args(c, d);
                i.preempt = Some(false);
            }
            "preempt" => {
                no_args(c, d);
                i.preempt = Some(true);
            }
            "preempt_delay" => set_once(
                &mut i.preempt_delay,
                seconds_us(c, 0, 1000 * u64::from(TIMER_HZ), d),
                c,
                d,
            ),
            "accept" => {
                no_args(c, d);
                i.accept = Some(true);
            }
            "no_accept" => {
                no_args(c, d);
                i.accept = Some(false);
            }
            "strict_mode" => {
                no_block(c, d);
                let v = match c.args.first().map(|(w, s)| (w.as_str(), s)) {
                    None | Some(("true" | "on" | "yes", _)) => Some(true),
                    Some(("false" | "off" | "no", _)) => Some(false),
                    Some((w, s)) => {
                        d.error(s, format!("`strict_mode` must be true or false, not {w:?}"));
                        None
                    }
                };
                set_once(&mut i.strict_mode, v, c, d);
            }
            "authentication" => {
                let mut a = Authentication {
                    span: c.span.clone(),
                    ..Default::default()
                };
                for k in needs_block(c, d) {
                    match k.keyword.as_str() {
                        "auth_type" => {
                            let v = value(k, d).and_then(|(w, s)| match w.as_str() {
                                "PASS" => Some(AuthType::Pass),
                                "AH" => Some(AuthType::Ah),
                                _ => {
                                    d.error(
                                        s,
                                        format!(
                                            "unknown authentication type {w:?} (expected PASS)"
                                        ),
                                    );
                                    None
                                }
                            });
                            set_once(&mut a.auth_type, v, k, d);
                        }
                        "auth_pass" => {
                            let v = value(k, d).map(|(w, s)| {
                                if w.len() > 8 {
                                    let mut cut = 8;
                                    while !w.is_char_boundary(cut) {
                                        cut -= 1;
                                    }
                                    d.warning(
                                        s,
                                        format!("auth_pass is longer than 8 bytes; truncated to {:?} as keepalived does", &w[..cut]),
                                    );
                                    w[..cut].to_string()
                                } else {
                                    w.clone()
                                }
                            });
                            set_once(&mut a.auth_pass, v, k, d);
                        }
                        other => unknown(&k.span, other, "in authentication", d),
                    }
                }
                if i.authentication.is_some() {
                    d.warning(
                        &c.span,
                        "`authentication` is given more than once; the last one counts",
                    );
                }
                i.authentication = Some(a);
            }
            "virtual_ipaddress" => {
                for v in needs_block(c, d) {
                    if let Some(v) = vip_line(v, d) {
                        i.virtual_ipaddress.push(v);
                    }
                }
            }
            "virtual_ipaddress_excluded" => {
                for v in needs_block(c, d) {
                    if let Some(v) = vip_line(v, d) {
                        i.virtual_ipaddress_excluded.push(v);
                    }
                }
            }
            "unicast_src_ip" | "mcast_src_ip" => {
                let kw = c.keyword.clone();
                let v = value(c, d).and_then(|(w, s)| host_ip_of(w, s, &kw, d));
                set_once(&mut i.unicast_src_ip, v, c, d);
            }
            "unicast_ttl" => set_once(&mut i.unicast_ttl, u8_val(c, 1, 255, d), c, d),
            "check_unicast_src" => {
                no_args(c, d);
                i.check_unicast_src = true;
            }
            "unicast_peer" => {
                for p in needs_block(c, d) {
                    no_block(p, d);
                    let Some(a) = host_ip_of(&p.keyword, &p.span, "unicast_peer", d) else {
                        continue;
                    };
                    peer_options(p, &mut i, d);
                    if i.unicast_peer.contains(&a) {
                        d.warning(
                            &p.span,
                            format!("duplicate unicast_peer {a}; ignored, as keepalived does"),
                        );
                        continue;
                    }
                    i.unicast_peer.push(a);
                }
            }
            "track_interface" => {
                for t in track_interfaces(c, d) {
                    if i.track_interface.iter().any(|x| x.name == t.name) {
                        d.warning(
                            &t.span,
                            format!(
                                "duplicate track_interface `{}`; ignored, as keepalived does",
                                t.name
                            ),
                        );
                        continue;
                    }
                    i.track_interface.push(t);
                }
            }
            "track_script" => i.track_script.extend(track_refs(c, "track_script", d)),
            "track_process" => i.track_process.extend(track_refs(c, "track_process", d)),
            "track_file" => i.track_file.extend(track_refs(c, "track_file", d)),
            "garp_master_delay" => set_once(&mut i.garp_master_delay, u32_val(c, 0, 255, d), c, d),
            "garp_master_repeat" => {
                set_once(&mut i.garp_master_repeat, at_least_one(c, 255, d), c, d)
            }
            "garp_master_refresh" => set_once(
                &mut i.garp_master_refresh,
                u32_val(c, 0, u32::MAX / TIMER_HZ, d),
                c,
                d,
            ),
            "garp_master_refresh_repeat" => set_once(
                &mut i.garp_master_refresh_repeat,
                at_least_one(c, 255, d),
                c,
                d,
            ),
            "notify" => set_script(&mut i.notify.any, c, d),
            "notify_master" => set_script(&mut i.notify.master, c, d),
            "notify_backup" => set_script(&mut i.notify.backup, c, d),
            "notify_fault" => set_script(&mut i.notify.fault, c, d),
            "notify_stop" => set_script(&mut i.notify.stop, c, d),
            "dont_track_primary" => {
                no_args(c, d);
                i.dont_track_primary = true;
            }
            "use_vmac" => {
                no_block(c, d);
                if let Some((_, s)) = c.args.get(1) {
                    d.warning(s, "extra words after `use_vmac NAME` are ignored");
                }
                i.use_vmac = Some(c.args.first().map(|(w, _)| w.clone()));
            }
            "vmac_xmit_base" => {
                no_args(c, d);
                i.vmac_xmit_base = true;
            }
            k if INSTANCE_UNSUPPORTED.contains(&k) => unsupported(c, &owner, d),
            other => unknown(&c.span, other, &format!("in {owner}"), d),
        }
    }
    i
}

// ---------------------------------------------------------------------------------------------
// Whole-configuration checks

fn check(cfg: &Config, d: &mut Diagnostics) {
    let scripts: BTreeSet<&str> = cfg.scripts.iter().map(|s| s.name.as_str()).collect();
    let processes: BTreeSet<&str> = cfg.processes.iter().map(|s| s.name.as_str()).collect();
    let files: BTreeSet<&str> = cfg.files.iter().map(|s| s.name.as_str()).collect();
    let instances: BTreeSet<&str> = cfg.instances.iter().map(|s| s.name.as_str()).collect();

    for i in &cfg.instances {
        let owner = format!("vrrp_instance {}", i.name);
        for r in &i.track_script {
            if !scripts.contains(r.name.as_str()) {
                d.error(
                    &r.span,
                    format!(
                        "track_script `{}`: no vrrp_script named {} is defined",
                        r.name, r.name
                    ),
                );
            }
        }
        for r in &i.track_process {
            if !processes.contains(r.name.as_str()) {
                d.error(
                    &r.span,
                    format!(
                        "track_process `{}`: no vrrp_track_process named {} is defined",
                        r.name, r.name
                    ),
                );
            }
        }
        for r in &i.track_file {
            if !files.contains(r.name.as_str()) {
                d.error(
                    &r.span,
                    format!(
                        "track_file `{}`: no track_file named {} is defined",
                        r.name, r.name
                    ),
                );
            }
        }
        if i.virtual_router_id.is_none() {
            d.error(&i.span, format!("{owner} has no virtual_router_id"));
        }
        if i.virtual_ipaddress.is_empty() {
            d.error(
                &i.span,
                format!("{owner} has no virtual_ipaddress; at least one address is needed"),
            );
        }
        let v6 = i.is_ipv6();
        for v in &i.virtual_ipaddress {
            if v.addr.is_ipv6() != v6 {
                d.error(&v.span, format!("{owner}: all virtual_ipaddress entries must be of one family (IPv4 or IPv6); put others in virtual_ipaddress_excluded"));
            }
        }
        for p in i.unicast_peer.iter().chain(i.unicast_src_ip.iter()) {
            if !i.virtual_ipaddress.is_empty() && p.is_ipv6() != v6 {
                d.error(
                    &i.span,
                    format!(
                        "{owner}: unicast address {p} is not of the family of the virtual addresses"
                    ),
                );
            }
        }
        let version = i.effective_version(&cfg.global);
        if version == 2 && v6 {
            d.error(
                &i.span,
                format!("{owner}: VRRPv2 cannot carry IPv6 addresses; use version 3"),
            );
        }
        if let Some(us) = i.advert_int {
            let (used, rounded) = round_advert_int(us, version);
            if rounded {
                let unit = if version == 2 {
                    "a whole number of seconds"
                } else {
                    "a multiple of 10 ms"
                };
                d.warning(
                    &i.span,
                    format!(
                        "{owner}: advert_int {} is not {unit}; VRRPv{version} uses {} s, rounded as keepalived does",
                        format_seconds(us),
                        format_seconds(used)
                    ),
                );
            }
        }
        if let Some(a) = &i.authentication {
            match (a.auth_type, &a.auth_pass) {
                (Some(AuthType::Ah), _) => {
                    d.error(&a.span, format!("{owner}: auth_type AH is not supported by kube-vrrp; use PASS or remove authentication"))
                }
                (_, _) if version == 3 => d.warning(
                    &a.span,
                    format!("{owner}: VRRPv3 has no authentication; ignored, as keepalived does"),
                ),
                (Some(AuthType::Pass), None) => d.warning(
                    &a.span,
                    format!("{owner}: auth_type PASS without auth_pass; keepalived runs without authentication"),
                ),
                (None, _) => d.warning(
                    &a.span,
                    format!("{owner}: authentication without a usable auth_type; keepalived runs without authentication"),
                ),
                _ => {}
            }
        }
        if i.preempt == Some(false) && i.effective_priority() == 255 {
            d.warning(
                &i.span,
                format!("{owner}: nopreempt does not apply to priority 255; keepalived clears it"),
            );
        } else if i.preempt == Some(false) && i.effective_state() == InitialState::Master {
            d.warning(
                &i.span,
                format!("{owner}: nopreempt does not work with state MASTER; keepalived clears it"),
            );
        }
        if i.preempt_delay.is_some_and(|p| p > 0) && i.effective_preempt_delay() == 0 {
            d.warning(&i.span, format!("{owner}: preempt_delay does not apply with state MASTER or nopreempt; keepalived clears it"));
        }
    }

    // Same VRID, interface and family twice is a conflict; the same VRID with other addresses
    // is accepted, but peers will see address-list mismatches.
    for (a_idx, a) in cfg.instances.iter().enumerate() {
        for b in cfg.instances.iter().skip(a_idx + 1) {
            let (Some(va), Some(vb)) = (a.virtual_router_id, b.virtual_router_id) else {
                continue;
            };
            if va != vb || a.is_ipv6() != b.is_ipv6() {
                continue;
            }
            if a.interface == b.interface {
                d.error(
                    &b.span,
                    format!(
                        "vrrp_instance {}: virtual_router_id {vb} is already used on this interface by vrrp_instance {} ({})",
                        b.name, a.name, a.span
                    ),
                );
                continue;
            }
            let set = |i: &Instance| {
                i.virtual_ipaddress
                    .iter()
                    .map(VirtualAddress::cidr)
                    .collect::<BTreeSet<_>>()
            };
            if set(a) != set(b) {
                d.warning(
                    &b.span,
                    format!(
                        "vrrp_instance {}: virtual_router_id {vb} is also used by vrrp_instance {} ({}) with different virtual addresses",
                        b.name, a.name, a.span
                    ),
                );
            }
        }
    }

    for g in &cfg.sync_groups {
        let refs = [
            (&g.track_script, &scripts, "track_script", "vrrp_script"),
            (
                &g.track_process,
                &processes,
                "track_process",
                "vrrp_track_process",
            ),
            (&g.track_file, &files, "track_file", "track_file"),
        ];
        for (list, defined, kind, def) in refs {
            for r in list {
                if !defined.contains(r.name.as_str()) {
                    d.error(
                        &r.span,
                        format!(
                            "vrrp_sync_group {}: {kind} `{}`: no {def} named {} is defined",
                            g.name, r.name, r.name
                        ),
                    );
                }
            }
        }
    }

    let mut member_of: BTreeMap<&str, &str> = BTreeMap::new();
    for g in &cfg.sync_groups {
        for m in &g.group {
            if !instances.contains(m.name.as_str()) {
                d.error(
                    &m.span,
                    format!(
                        "vrrp_sync_group {}: no vrrp_instance named {} is defined",
                        g.name, m.name
                    ),
                );
            } else if let Some(other) = member_of.insert(m.name.as_str(), g.name.as_str()) {
                d.error(
                    &m.span,
                    format!(
                        "vrrp_instance {} is already in vrrp_sync_group {other}",
                        m.name
                    ),
                );
            }
        }
    }
}
