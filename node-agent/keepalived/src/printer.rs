//! Writes a [`Config`] back as keepalived.conf text that keepalived (and [`super::parse_str`])
//! reads as the same configuration. Only what is set is written.

use std::fmt::Write;

use super::model::{AuthType, Config, Notify, TrackRef, VirtualAddress, format_seconds};
use crds::virtualip::InitialState;

/// A word as keepalived reads it back: bare when safe, else double-quoted with `\"`/`\\`.
pub fn word(w: &str) -> String {
    let needs_quotes = w.is_empty()
        || w.starts_with("//")
        || w.chars()
            .any(|c| c.is_whitespace() || matches!(c, '#' | '!' | '{' | '}' | '"' | '\\'));
    if !needs_quotes {
        return w.to_string();
    }
    let mut out = String::with_capacity(w.len() + 2);
    out.push('"');
    for c in w.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn line(out: &mut String, indent: usize, text: &str) {
    let _ = writeln!(out, "{:indent$}{text}", "", indent = indent * 4);
}

fn opt<T: ToString>(out: &mut String, indent: usize, key: &str, v: &Option<T>) {
    if let Some(v) = v {
        line(out, indent, &format!("{key} {}", word(&v.to_string())));
    }
}

fn weight_suffix(weight: Option<i16>, reverse: Option<bool>) -> String {
    match (weight, reverse) {
        (None, _) => String::new(),
        (Some(w), Some(true)) => format!(" weight {w} reverse"),
        (Some(w), Some(false)) => format!(" weight {w} noreverse"),
        (Some(w), None) => format!(" weight {w}"),
    }
}

fn notify(out: &mut String, indent: usize, n: &Notify) {
    opt(out, indent, "notify", &n.any);
    opt(out, indent, "notify_master", &n.master);
    opt(out, indent, "notify_backup", &n.backup);
    opt(out, indent, "notify_fault", &n.fault);
    opt(out, indent, "notify_stop", &n.stop);
}

fn vip(v: &VirtualAddress) -> String {
    let mut s = v.cidr();
    if let Some(d) = &v.dev {
        let _ = write!(s, " dev {}", word(d));
    }
    if let Some(l) = &v.label {
        let _ = write!(s, " label {}", word(l));
    }
    s
}

fn refs(out: &mut String, key: &str, list: &[TrackRef]) {
    if list.is_empty() {
        return;
    }
    line(out, 1, &format!("{key} {{"));
    for r in list {
        line(
            out,
            2,
            &format!("{}{}", word(&r.name), weight_suffix(r.weight, r.reverse)),
        );
    }
    line(out, 1, "}");
}

/// The configuration as keepalived.conf text.
pub fn print(cfg: &Config) -> String {
    let mut out = String::new();
    let g = &cfg.global;
    if *g != Default::default() {
        line(&mut out, 0, "global_defs {");
        opt(&mut out, 1, "router_id", &g.router_id);
        opt(&mut out, 1, "vrrp_version", &g.vrrp_version);
        opt(
            &mut out,
            1,
            "vrrp_garp_master_delay",
            &g.vrrp_garp_master_delay,
        );
        opt(
            &mut out,
            1,
            "vrrp_garp_master_repeat",
            &g.vrrp_garp_master_repeat,
        );
        opt(
            &mut out,
            1,
            "vrrp_garp_master_refresh",
            &g.vrrp_garp_master_refresh,
        );
        opt(
            &mut out,
            1,
            "vrrp_garp_master_refresh_repeat",
            &g.vrrp_garp_master_refresh_repeat,
        );
        opt(&mut out, 1, "vrrp_mcast_group4", &g.vrrp_mcast_group4);
        opt(&mut out, 1, "vrrp_mcast_group6", &g.vrrp_mcast_group6);
        if g.vrrp_strict {
            line(&mut out, 1, "vrrp_strict");
        }
        if g.vrrp_check_unicast_src {
            line(&mut out, 1, "vrrp_check_unicast_src");
        }
        line(&mut out, 0, "}");
        out.push('\n');
    }
    for s in &cfg.scripts {
        line(&mut out, 0, &format!("vrrp_script {} {{", word(&s.name)));
        opt(&mut out, 1, "script", &s.script);
        opt(&mut out, 1, "interval", &s.interval);
        opt(&mut out, 1, "timeout", &s.timeout);
        if let Some(w) = s.weight {
            line(
                &mut out,
                1,
                &format!("weight {w}{}", if s.reverse { " reverse" } else { "" }),
            );
        }
        opt(&mut out, 1, "rise", &s.rise);
        opt(&mut out, 1, "fall", &s.fall);
        opt(&mut out, 1, "user", &s.user);
        line(&mut out, 0, "}");
        out.push('\n');
    }
    for p in &cfg.processes {
        line(
            &mut out,
            0,
            &format!("vrrp_track_process {} {{", word(&p.name)),
        );
        opt(&mut out, 1, "process", &p.process);
        if let Some(w) = p.weight {
            line(
                &mut out,
                1,
                &format!("weight {w}{}", if p.reverse { " reverse" } else { "" }),
            );
        }
        opt(&mut out, 1, "quorum", &p.quorum);
        line(&mut out, 0, "}");
        out.push('\n');
    }
    for f in &cfg.files {
        line(&mut out, 0, &format!("track_file {} {{", word(&f.name)));
        opt(&mut out, 1, "file", &f.file);
        if let Some(w) = f.weight {
            line(
                &mut out,
                1,
                &format!("weight {w}{}", if f.reverse { " reverse" } else { "" }),
            );
        }
        line(&mut out, 0, "}");
        out.push('\n');
    }
    for i in &cfg.instances {
        line(&mut out, 0, &format!("vrrp_instance {} {{", word(&i.name)));
        if let Some(s) = i.state {
            line(
                &mut out,
                1,
                if s == InitialState::Master {
                    "state MASTER"
                } else {
                    "state BACKUP"
                },
            );
        }
        opt(&mut out, 1, "interface", &i.interface);
        opt(&mut out, 1, "virtual_router_id", &i.virtual_router_id);
        opt(&mut out, 1, "priority", &i.priority);
        if let Some(a) = i.advert_int {
            line(&mut out, 1, &format!("advert_int {}", format_seconds(a)));
        }
        opt(&mut out, 1, "version", &i.version);
        match i.preempt {
            Some(true) => line(&mut out, 1, "preempt"),
            Some(false) => line(&mut out, 1, "nopreempt"),
            None => {}
        }
        if let Some(p) = i.preempt_delay {
            line(&mut out, 1, &format!("preempt_delay {}", format_seconds(p)));
        }
        match i.accept {
            Some(true) => line(&mut out, 1, "accept"),
            Some(false) => line(&mut out, 1, "no_accept"),
            None => {}
        }
        match i.strict_mode {
            Some(true) => line(&mut out, 1, "strict_mode true"),
            Some(false) => line(&mut out, 1, "strict_mode false"),
            None => {}
        }
        if let Some(a) = &i.authentication {
            line(&mut out, 1, "authentication {");
            match a.auth_type {
                Some(AuthType::Pass) => line(&mut out, 2, "auth_type PASS"),
                Some(AuthType::Ah) => line(&mut out, 2, "auth_type AH"),
                None => {}
            }
            opt(&mut out, 2, "auth_pass", &a.auth_pass);
            line(&mut out, 1, "}");
        }
        for (key, list) in [
            ("virtual_ipaddress", &i.virtual_ipaddress),
            ("virtual_ipaddress_excluded", &i.virtual_ipaddress_excluded),
        ] {
            if !list.is_empty() {
                line(&mut out, 1, &format!("{key} {{"));
                for v in list {
                    line(&mut out, 2, &vip(v));
                }
                line(&mut out, 1, "}");
            }
        }
        opt(&mut out, 1, "unicast_src_ip", &i.unicast_src_ip);
        opt(&mut out, 1, "unicast_ttl", &i.unicast_ttl);
        if i.check_unicast_src {
            line(&mut out, 1, "check_unicast_src");
        }
        if !i.unicast_peer.is_empty() {
            line(&mut out, 1, "unicast_peer {");
            for p in &i.unicast_peer {
                line(&mut out, 2, &p.to_string());
            }
            line(&mut out, 1, "}");
        }
        if !i.track_interface.is_empty() {
            line(&mut out, 1, "track_interface {");
            for t in &i.track_interface {
                line(
                    &mut out,
                    2,
                    &format!(
                        "{}{}",
                        word(&t.name),
                        weight_suffix(t.weight, t.reverse.then_some(true))
                    ),
                );
            }
            line(&mut out, 1, "}");
        }
        refs(&mut out, "track_script", &i.track_script);
        refs(&mut out, "track_process", &i.track_process);
        refs(&mut out, "track_file", &i.track_file);
        opt(&mut out, 1, "garp_master_delay", &i.garp_master_delay);
        opt(&mut out, 1, "garp_master_repeat", &i.garp_master_repeat);
        opt(&mut out, 1, "garp_master_refresh", &i.garp_master_refresh);
        opt(
            &mut out,
            1,
            "garp_master_refresh_repeat",
            &i.garp_master_refresh_repeat,
        );
        notify(&mut out, 1, &i.notify);
        if i.dont_track_primary {
            line(&mut out, 1, "dont_track_primary");
        }
        match &i.use_vmac {
            Some(Some(name)) => line(&mut out, 1, &format!("use_vmac {}", word(name))),
            Some(None) => line(&mut out, 1, "use_vmac"),
            None => {}
        }
        if i.vmac_xmit_base {
            line(&mut out, 1, "vmac_xmit_base");
        }
        line(&mut out, 0, "}");
        out.push('\n');
    }
    for g in &cfg.sync_groups {
        line(
            &mut out,
            0,
            &format!("vrrp_sync_group {} {{", word(&g.name)),
        );
        line(&mut out, 1, "group {");
        for m in &g.group {
            line(&mut out, 2, &word(&m.name));
        }
        line(&mut out, 1, "}");
        notify(&mut out, 1, &g.notify);
        if !g.track_interface.is_empty() {
            line(&mut out, 1, "track_interface {");
            for t in &g.track_interface {
                line(
                    &mut out,
                    2,
                    &format!(
                        "{}{}",
                        word(&t.name),
                        weight_suffix(t.weight, t.reverse.then_some(true))
                    ),
                );
            }
            line(&mut out, 1, "}");
        }
        refs(&mut out, "track_script", &g.track_script);
        refs(&mut out, "track_process", &g.track_process);
        refs(&mut out, "track_file", &g.track_file);
        if g.tracking_weight {
            line(&mut out, 1, "sync_group_tracking_weight");
        }
        line(&mut out, 0, "}");
        out.push('\n');
    }
    out
}
