//! keepalived.conf model → `VirtualIP` objects (one per `vrrp_instance`) and a `Secret` for each
//! PASS password, for `kube-vrrp-agent convert` and standalone mode.
//!
//! Every value keepalived derives is written out explicitly (version, priority, state, advert
//! interval, preempt, accept), because the CRD's own defaults differ from keepalived's (e.g. the
//! CRD defaults to VRRPv3, keepalived to v2). Trackers are inlined. Names become DNS-1123 labels
//! (reported when changed). What a VirtualIP cannot express is reported as a warning; a spec that
//! fails [`crds::validate::validate_spec`] is an error. A `vrrp_script` that is a plain curl or
//! wget health check becomes a `track.http` check ([`super::httpcheck`]), with a warning saying
//! so and what changes; any other script stays a script.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::diag::Diagnostics;
use super::httpcheck::{self, Recognised};
use super::model::{AuthType, Config, Instance, TIMER_HZ};
use crds::validate::validate_spec;
use crds::virtualip::{
    AuthType as CrdAuthType, Authentication, Garp, NodeOverride, Notify, SecretKeyRef, Track,
    TrackFile, TrackHttp, TrackInterface, TrackProcess, TrackScript, Unicast, VirtualIP,
    VirtualIPSpec,
};

/// Options of the conversion.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConvertOptions {
    /// Namespace of the generated objects; `None` leaves `metadata.namespace` out, so
    /// `kubectl apply -n NS -f` puts them where the user says.
    pub namespace: Option<String>,
    /// When set, this config is one node's: priority, state and source address become a
    /// `nodes` override for it.
    pub node: Option<String>,
}

/// One converted `vrrp_instance`.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// The keepalived instance name.
    pub instance: String,
    /// The VirtualIP.
    pub virtual_ip: VirtualIP,
    /// The Secret holding the PASS password, when the instance authenticates.
    pub secret: Option<Secret>,
    /// The password itself (standalone mode needs it without a cluster).
    pub auth_pass: Option<String>,
}

/// The result of converting a configuration: the objects and what was noticed on the way.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversion {
    /// One entry per vrrp_instance, in file order (only trustworthy without errors).
    pub items: Vec<Converted>,
    /// Warnings (renames, settings a VirtualIP cannot carry) and errors (invalid specs).
    pub diagnostics: Diagnostics,
}

/// Key of the password in the generated Secret.
pub const SECRET_KEY: &str = "password";

/// A DNS-1123 label made from `name`: lowercase, runs of other characters become `-`, no `-` at
/// either end, at most 63 characters; `instance` when nothing is left.
pub fn dns1123_label(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut s = out.trim_matches('-').to_string();
    s.truncate(63);
    let s = s.trim_end_matches('-').to_string();
    if s.is_empty() {
        "instance".to_string()
    } else {
        s
    }
}

fn secs(s: u32) -> kube::core::Duration {
    std::time::Duration::from_secs(u64::from(s)).into()
}

fn micros(us: u32) -> kube::core::Duration {
    std::time::Duration::from_micros(u64::from(us)).into()
}

/// Convert every instance of `cfg`.
pub fn convert(cfg: &Config, opts: &ConvertOptions) -> Conversion {
    convert_for(cfg, opts, true)
}

/// [`convert`], optionally without the rename notes (standalone mode keeps keepalived's names).
pub(crate) fn convert_for(cfg: &Config, opts: &ConvertOptions, report_names: bool) -> Conversion {
    let mut d = Diagnostics::default();
    let mut items = Vec::new();
    let mut used: BTreeSet<String> = BTreeSet::new();

    if cfg.global.vrrp_mcast_group4.is_some() || cfg.global.vrrp_mcast_group6.is_some() {
        let span = cfg
            .instances
            .first()
            .map(|i| i.span.clone())
            .unwrap_or_default();
        d.warning(
            &span,
            "vrrp_mcast_group4/6 are not supported: kube-vrrp advertises to 224.0.0.18 / ff02::12",
        );
    }

    for inst in &cfg.instances {
        let base = dns1123_label(&inst.name);
        let mut name = base.clone();
        let mut n = 2;
        while !used.insert(name.clone()) {
            let suffix = format!("-{n}");
            let mut b = base.clone();
            b.truncate(63 - suffix.len());
            name = format!("{}{suffix}", b.trim_end_matches('-'));
            n += 1;
        }
        if report_names && name != inst.name {
            d.warning(&inst.span, format!("vrrp_instance {} becomes VirtualIP {name} (Kubernetes names are DNS-1123 labels)", inst.name));
        }
        let (spec, auth_pass) = spec_of(cfg, inst, &name, opts, &mut d);
        for p in validate_spec(&spec).iter() {
            d.error(
                &inst.span,
                format!("vrrp_instance {}: {}: {}", inst.name, p.path, p.message),
            );
        }
        let mut vip = VirtualIP::new(&name, spec);
        vip.metadata.namespace = opts.namespace.clone();
        let secret = auth_pass
            .as_ref()
            .map(|pw| password_secret(&name, pw, opts.namespace.as_deref()));
        items.push(Converted {
            instance: inst.name.clone(),
            virtual_ip: vip,
            secret,
            auth_pass,
        });
    }
    Conversion {
        items,
        diagnostics: d,
    }
}

/// The Secret holding the PASS password of VirtualIP `vip_name`.
fn password_secret(vip_name: &str, password: &str, namespace: Option<&str>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(vip_name)),
            namespace: namespace.map(str::to_string),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([(
            SECRET_KEY.to_string(),
            password.to_string(),
        )])),
        ..Default::default()
    }
}

/// Name of the Secret holding a VirtualIP's password.
pub fn secret_name(vip_name: &str) -> String {
    let mut b = vip_name.to_string();
    b.truncate(63 - "-auth".len());
    format!("{}-auth", b.trim_end_matches('-'))
}

fn spec_of(
    cfg: &Config,
    i: &Instance,
    vip_name: &str,
    opts: &ConvertOptions,
    d: &mut Diagnostics,
) -> (VirtualIPSpec, Option<String>) {
    let g = &cfg.global;
    let owner = format!("vrrp_instance {}", i.name);
    let version = i.effective_version(g);
    let (advert_us, _) = i.effective_advert_int(version);

    let mut spec = VirtualIPSpec {
        virtual_router_id: i.virtual_router_id,
        version: Some(version),
        interface: i.interface.clone(),
        advert_interval: Some(micros(advert_us)),
        preempt: Some(i.effective_preempt()),
        accept: Some(i.effective_accept(g)),
        addresses: i.virtual_ipaddress.iter().map(|v| v.cidr()).collect(),
        excluded_addresses: i
            .virtual_ipaddress_excluded
            .iter()
            .map(|v| v.cidr())
            .collect(),
        ..Default::default()
    };
    let delay = i.effective_preempt_delay();
    if delay > 0 {
        spec.preempt_delay = Some(micros(delay));
    }
    match &opts.node {
        Some(node) => spec.nodes.push(NodeOverride {
            name: node.clone(),
            priority: Some(i.effective_priority()),
            state: Some(i.effective_state()),
            interface: None,
            source_address: i.unicast_src_ip.map(|a| a.to_string()),
        }),
        None => {
            spec.priority = Some(i.effective_priority());
            spec.state = Some(i.effective_state());
        }
    }

    for v in i
        .virtual_ipaddress
        .iter()
        .chain(&i.virtual_ipaddress_excluded)
    {
        if let Some(dev) = &v.dev
            && Some(dev) != i.interface.as_ref()
        {
            d.warning(&v.span, format!("{owner}: `dev {dev}` on {} cannot be expressed; the address goes on the instance interface", v.cidr()));
        }
        if let Some(l) = &v.label {
            d.warning(
                &v.span,
                format!(
                    "{owner}: `label {l}` on {} is not supported; ignored",
                    v.cidr()
                ),
            );
        }
    }

    let mut auth_pass = None;
    if let Some(a) = &i.authentication
        && version == 2
        && a.auth_type == Some(AuthType::Pass)
        && let Some(pw) = a.auth_pass.clone().filter(|p| !p.is_empty())
    {
        spec.authentication = Some(Authentication {
            auth_type: CrdAuthType::Pass,
            password_secret_ref: SecretKeyRef {
                name: secret_name(vip_name),
                key: Some(SECRET_KEY.into()),
            },
        });
        auth_pass = Some(pw);
    }

    if !i.unicast_peer.is_empty() {
        spec.unicast = Some(Unicast {
            enabled: true,
            peers: i.unicast_peer.iter().map(ToString::to_string).collect(),
            // keepalived does not check the TTL of unicast adverts (peers may be routed).
            allow_lower_ttl: Some(true),
            ttl: i.unicast_ttl.filter(|&t| t != 255),
            source_address: None,
        });
    } else if let Some(ttl) = i.unicast_ttl {
        let span = i.spans.get("unicast_ttl").unwrap_or(&i.span);
        d.warning(span, format!("{owner}: unicast_ttl {ttl} without unicast peers does nothing (keepalived resets it too); ignored"));
    }
    if let Some(src) = i.unicast_src_ip
        && opts.node.is_none()
    {
        let span = i
            .spans
            .get("unicast_src_ip")
            .or_else(|| i.spans.get("mcast_src_ip"))
            .unwrap_or(&i.span);
        d.warning(span, format!("{owner}: unicast_src_ip {src} is this node's address and is not kept in the VirtualIP (each node sends from its own address); convert with --node, or convert every node's file together, to keep it as nodes[].sourceAddress"));
    }
    if let Some(name) = &i.use_vmac {
        let vrid = i.virtual_router_id.unwrap_or_default();
        if let Some(n) = name
            && *n != format!("vrrp.{vrid}")
        {
            let span = i.spans.get("use_vmac").unwrap_or(&i.span);
            d.warning(span, format!("{owner}: use_vmac {n}: the virtual MAC interface is always named vrrp.{vrid} by kube-vrrp"));
        }
        spec.virtual_mac = Some(crds::virtualip::VirtualMac {
            xmit_base: i.vmac_xmit_base.then_some(true),
        });
    } else if i.vmac_xmit_base {
        let span = i.spans.get("vmac_xmit_base").unwrap_or(&i.span);
        d.warning(
            span,
            format!("{owner}: vmac_xmit_base without use_vmac does nothing; ignored"),
        );
    }
    if i.dont_track_primary {
        d.warning(&i.span, format!("{owner}: dont_track_primary is not supported; the VRRP interface's link state is always tracked"));
    }

    let group = cfg.sync_group_of(&i.name);
    // The group's trackers are every member's (one failing puts the whole group in FAULT).
    let mut track_interface = i.track_interface.clone();
    let mut track_script = i.track_script.clone();
    let mut track_process = i.track_process.clone();
    let mut track_file = i.track_file.clone();
    if let Some(g) = group {
        for t in &g.track_interface {
            if !track_interface.iter().any(|x| x.name == t.name) {
                track_interface.push(t.clone());
            }
        }
        for (mine, theirs) in [
            (&mut track_script, &g.track_script),
            (&mut track_process, &g.track_process),
            (&mut track_file, &g.track_file),
        ] {
            for r in theirs {
                if !mine.iter().any(|x| x.name == r.name) {
                    mine.push(r.clone());
                }
            }
        }
    }
    // keepalived: in a sync group without sync_group_tracking_weight, tracker weights do not
    // apply (an interface then means FAULT when down; a weighted script or file is dropped).
    let unweighted = group.is_some_and(|g| !g.tracking_weight) && i.effective_priority() != 255;
    let why = group.map_or(String::new(), |g| {
        format!(
            "vrrp_sync_group {} has no sync_group_tracking_weight, as keepalived does",
            g.name
        )
    });

    let mut track = Track::default();
    for t in &track_interface {
        let mut t = t.clone();
        if unweighted && t.weight.is_some_and(|w| w != 0) {
            d.warning(
                &t.span,
                format!(
                    "{owner}: track_interface {}: weight ignored (down means FAULT) because {why}",
                    t.name
                ),
            );
            t.weight = Some(0);
        }
        track.interfaces.push(TrackInterface {
            name: t.name.clone(),
            weight: Some(t.weight.unwrap_or(0)),
            reverse: t.reverse.then_some(true),
        });
    }
    for r in &track_script {
        let Some(s) = cfg.script(&r.name) else {
            continue;
        };
        if unweighted && r.weight.or(s.weight).unwrap_or(0) != 0 {
            d.warning(
                &r.span,
                format!(
                    "{owner}: track_script {} with a weight is ignored because {why}",
                    r.name
                ),
            );
            continue;
        }
        let reverse = r.reverse.unwrap_or(s.reverse);
        let command = s.script.clone().unwrap_or_default();
        match httpcheck::recognise(&command) {
            Recognised::Http(h) => {
                let interval = s.interval.unwrap_or(1);
                // The shorter of keepalived's timeout and the tool's own, at least 100 ms.
                let limit = match (s.timeout.map(f64::from), h.max_time_secs) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let timeout = limit.map(|secs| {
                    let ms = (secs * 1000.0).round().clamp(100.0, 3_600_000.0) as u64;
                    kube::core::Duration::from(std::time::Duration::from_millis(ms))
                });
                let mut notes = h.notes.clone();
                if s.user.is_some() {
                    notes.push("its `user` is not needed (the agent makes the request)".into());
                }
                let notes = if notes.is_empty() {
                    String::new()
                } else {
                    format!("; note: {}", notes.join("; "))
                };
                d.warning(
                    &s.span,
                    format!(
                        "{owner}: vrrp_script {} (`{command}`) becomes track.http {}: the agent makes the request itself, no curl or wget needed{notes}",
                        s.name, s.name
                    ),
                );
                track.http.push(TrackHttp {
                    name: s.name.clone(),
                    url: h.url,
                    expect_status: None,
                    interval: Some(secs(interval)),
                    timeout,
                    rise: Some(s.rise.unwrap_or(1)),
                    fall: Some(s.fall.unwrap_or(1)),
                    weight: Some(r.weight.or(s.weight).unwrap_or(0)),
                    reverse: reverse.then_some(true),
                    ca_file: h.ca_file,
                    server_name: None,
                    insecure_skip_verify: h.insecure.then_some(true),
                });
                continue;
            }
            Recognised::NotConvertible(why) => d.warning(
                &s.span,
                format!(
                    "{owner}: vrrp_script {} runs curl or wget, but {why}: kept as a script (the kube-vrrp image has no curl or wget; build an image FROM it that adds them, or use track.http)",
                    s.name
                ),
            ),
            Recognised::Other => {}
        }
        track.scripts.push(TrackScript {
            name: s.name.clone(),
            script: s.script.clone().unwrap_or_default(),
            interval: Some(secs(s.interval.unwrap_or(1))),
            timeout: s.timeout.map(secs),
            rise: Some(s.rise.unwrap_or(1)),
            fall: Some(s.fall.unwrap_or(1)),
            weight: Some(r.weight.or(s.weight).unwrap_or(0)),
            reverse: reverse.then_some(true),
            user: s.user.clone(),
        });
    }
    for r in &track_process {
        let Some(p) = cfg.process(&r.name) else {
            continue;
        };
        let reverse = r.reverse.unwrap_or(p.reverse);
        track.processes.push(TrackProcess {
            name: p.name.clone(),
            process: p.process.clone().unwrap_or_default(),
            weight: Some(r.weight.or(p.weight).unwrap_or(0)),
            quorum: Some(p.quorum.unwrap_or(1)),
            reverse: reverse.then_some(true),
        });
    }
    for r in &track_file {
        let Some(f) = cfg.file(&r.name) else { continue };
        let reverse = r.reverse.unwrap_or(f.reverse);
        let mut weight = r.weight.or(f.weight).unwrap_or(1);
        if unweighted && weight == 1 {
            d.warning(
                &r.span,
                format!("{owner}: track_file {}: the default weight 1 is ignored (non-zero means FAULT) because {why}", r.name),
            );
            weight = 0;
        } else if unweighted && weight != 0 {
            d.warning(
                &r.span,
                format!(
                    "{owner}: track_file {} with weight {weight} is ignored because {why}",
                    r.name
                ),
            );
            continue;
        }
        track.files.push(TrackFile {
            name: f.name.clone(),
            path: f.file.clone().unwrap_or_default(),
            weight: Some(weight),
            reverse: reverse.then_some(true),
        });
    }
    if track != Track::default() {
        spec.track = Some(track);
    }

    let garp = Garp {
        master_delay: Some(i.effective_garp_delay(g))
            .filter(|&v| v != 5)
            .map(secs),
        master_repeat: Some(i.effective_garp_repeat(g)).filter(|&v| v != 5),
        master_refresh: Some(i.effective_garp_refresh(g))
            .filter(|&v| v != 0)
            .map(secs),
        master_refresh_repeat: Some(i.effective_garp_refresh_repeat(g)).filter(|&v| v != 1),
    };
    if garp != Garp::default() {
        spec.garp = Some(garp);
    }

    if !i.notify.is_empty() {
        spec.notify = Some(Notify {
            master: i.notify.master.clone(),
            backup: i.notify.backup.clone(),
            fault: i.notify.fault.clone(),
            stop: i.notify.stop.clone(),
            any: i.notify.any.clone(),
            timeout: None,
        });
    }
    spec.sync_group = group.map(|g| g.name.clone());
    spec.sync_group_notify = group.filter(|g| !g.notify.is_empty()).map(|g| Notify {
        master: g.notify.master.clone(),
        backup: g.notify.backup.clone(),
        fault: g.notify.fault.clone(),
        stop: g.notify.stop.clone(),
        any: g.notify.any.clone(),
        timeout: None,
    });
    debug_assert!(advert_us >= TIMER_HZ / 100);
    (spec, auth_pass)
}

/// The objects as one multi-document YAML stream: for each instance its Secret (if any), then
/// its VirtualIP.
pub fn to_yaml(items: &[Converted]) -> Result<String, crds::Error> {
    let mut out = String::new();
    for c in items {
        if let Some(s) = &c.secret {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(s)?);
        }
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&c.virtual_ip)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        assert_eq!(dns1123_label("VI_1"), "vi-1");
        assert_eq!(dns1123_label("__x__"), "x");
        assert_eq!(dns1123_label("Ünï"), "n");
        assert_eq!(dns1123_label("___"), "instance");
        assert_eq!(dns1123_label(&"a".repeat(100)).len(), 63);
        assert_eq!(secret_name("vi-1"), "vi-1-auth");
    }
}

#[cfg(test)]
mod http_tests {
    use super::*;

    const CONF: &str = r#"
vrrp_script chk_apiserver {
    script "curl -o /dev/null -kLs --max-time 2 https://localhost:6443/readyz"
    interval 3
    timeout 5
    rise 2
    fall 3
    weight -20
}
vrrp_script chk_headers {
    script "curl -sf -H 'Host: api' http://127.0.0.1:6443/healthz"
}
vrrp_script chk_haproxy {
    script "killall -0 haproxy"
}
vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 101
    advert_int 1
    virtual_ipaddress {
        192.0.2.100/24
    }
    track_script {
        chk_apiserver
        chk_headers
        chk_haproxy
    }
}
"#;

    #[test]
    fn curl_checks_become_track_http_and_the_rest_stay_scripts() {
        let cfg = crate::parse_str("keepalived.conf", CONF)
            .into_result()
            .unwrap()
            .0;
        let conv = convert(&cfg, &ConvertOptions::default());
        assert!(!conv.diagnostics.has_errors(), "{:?}", conv.diagnostics);
        let t = conv.items[0].virtual_ip.spec.track.clone().unwrap();
        assert_eq!(t.http.len(), 1);
        let h = &t.http[0];
        assert_eq!(h.name, "chk_apiserver");
        assert_eq!(h.url, "https://localhost:6443/readyz");
        assert_eq!(h.insecure_skip_verify, Some(true));
        assert_eq!((h.rise, h.fall, h.weight), (Some(2), Some(3), Some(-20)));
        assert_eq!(h.interval.map(crds::duration_ms), Some(3000));
        assert_eq!(
            h.timeout.map(crds::duration_ms),
            Some(2000),
            "curl's --max-time is shorter"
        );
        let scripts: Vec<&str> = t.scripts.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(scripts, ["chk_headers", "chk_haproxy"]);
        let warnings: Vec<String> = conv.diagnostics.warnings().map(|w| w.to_string()).collect();
        assert!(
            warnings.iter().any(|w| w.contains("vrrp_script chk_apiserver (`curl -o /dev/null -kLs --max-time 2 https://localhost:6443/readyz`) becomes track.http chk_apiserver")
                && w.contains("without --fail")
                && w.contains("does not follow redirects")),
            "{warnings:?}"
        );
        assert!(
            warnings.iter().any(|w| w.contains("vrrp_script chk_headers runs curl or wget, but option -H has no track.http equivalent: kept as a script")),
            "{warnings:?}"
        );
        assert!(
            !warnings.iter().any(|w| w.contains("chk_haproxy")),
            "{warnings:?}"
        );
        // The converted object passes the CRD validation.
        assert!(crds::validate::validate_spec(&conv.items[0].virtual_ip.spec).is_empty());
    }
}
