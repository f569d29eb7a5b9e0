//! Semantic validation of a [`VirtualIPSpec`], mirroring the schema and CEL rules in Rust.
//!
//! Used where no API server checks the spec for us (the converter, standalone mode) and by the
//! operator before it deploys anything. Every problem is reported with its field path, not just
//! the first one.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::virtualip::{Track, TrackHttp, VirtualIPSpec};

/// Tenant limits: a VirtualIP is written by a namespace tenant but expands into every eligible
/// node's `VRRPNode` and into agent work (scripts run, GARP packets sent), so each dimension is
/// bounded. The schema in [`crate::virtualip`] repeats these numbers as OpenAPI/CEL bounds.
pub mod limits {
    /// Most `spec.addresses` entries (keepalived's practical per-instance limit).
    pub const MAX_ADDRESSES: usize = 255;
    /// Most `spec.excludedAddresses` entries.
    pub const MAX_EXCLUDED_ADDRESSES: usize = 2048;
    /// Most `spec.track.scripts` entries.
    pub const MAX_SCRIPTS: usize = 16;
    /// Longest tracker script or notify command line, in bytes.
    pub const MAX_COMMAND_BYTES: usize = 1024;
    /// Shortest script `interval` / `timeout`, in ms (keepalived counts them in whole seconds).
    pub const MIN_SCRIPT_PERIOD_MS: u64 = 1000;
    /// Most `spec.track.http` entries.
    pub const MAX_HTTP_CHECKS: usize = 16;
    /// Shortest HTTP check `interval` / `timeout`, in ms.
    pub const MIN_HTTP_PERIOD_MS: u64 = 100;
    /// Longest HTTP check URL, in bytes.
    pub const MAX_URL_BYTES: usize = 2048;
    /// Shortest non-zero `garp.masterRefresh`, in ms.
    pub const MIN_GARP_REFRESH_MS: u64 = 1000;
    /// Most GARP packets per burst or refresh.
    pub const MAX_GARP_REPEAT: u32 = 100;
    /// Largest spec, serialized as JSON. The operator copies the resolved spec of every
    /// VirtualIP a node runs into that node's `VRRPNode`; with 64 KiB per spec, even a node
    /// running a dozen maximal VIPs stays far below etcd's 1.5 MiB request limit (typical specs
    /// are well under 1 KiB, so hundreds of VIPs per node fit).
    pub const MAX_SPEC_BYTES: usize = 64 * 1024;
    /// Largest planned VRRPNode spec in bytes of JSON: far below etcd's 1.5 MiB request limit,
    /// leaving room for the object's metadata and its agent's status. The operator refuses
    /// VirtualIPs (largest first) that would push a node's plan over it.
    pub const MAX_VRRPNODE_SPEC_BYTES: usize = 512 * 1024;
}

/// The MTU admission assumes (Ethernet's standard); the agent applies the real one.
pub const STANDARD_MTU: u32 = 1500;

/// Most addresses one advert can carry on a link of `mtu` bytes, keepalived's rule: the
/// Ethernet, IP and VRRP headers (and VRRPv2's 8 bytes of authentication data) plus 4 or 16
/// bytes per address must fit the MTU, and the count field allows 255. At the standard MTU
/// that is 255 IPv4 addresses and 89 IPv6 addresses.
pub fn max_advertised_addresses(ipv4: bool, version: u8, mtu: u32) -> usize {
    let (header, per_address) = if ipv4 {
        (14 + 20 + 8 + if version == 2 { 8 } else { 0 }, 4)
    } else {
        (14 + 40 + 8, 16)
    };
    let fit = mtu.saturating_sub(header) / per_address;
    usize::try_from(fit)
        .unwrap_or(usize::MAX)
        .min(limits::MAX_ADDRESSES)
}

/// One validation problem: the field path (`spec.addresses[1]`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path, e.g. `spec.track.scripts[0].rise`.
    pub path: String,
    /// Human-readable reason.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// All problems found in one spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// Add a problem.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
    /// True when the spec is valid.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The problems found.
    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }
    /// `Ok(())` when empty, the problems otherwise.
    pub fn into_result(self) -> Result<(), Problems> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Parse a VIP written as `IP` or `IP/len` (host bits allowed, as keepalived does).
pub fn parse_address(s: &str) -> Option<IpNet> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Some(net);
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

/// Validate a spec; returns every problem found.
pub fn validate_spec(spec: &VirtualIPSpec) -> Problems {
    let mut p = Problems::default();
    let version = spec.version_or_default();

    match serde_json::to_vec(spec) {
        Ok(bytes) if bytes.len() > limits::MAX_SPEC_BYTES => p.push(
            "spec",
            format!(
                "is {} bytes serialized; at most {} (64 KiB) are allowed so the VRRPNodes built from it stay small",
                bytes.len(),
                limits::MAX_SPEC_BYTES
            ),
        ),
        Ok(_) => {}
        Err(e) => p.push("spec", format!("cannot be serialized: {e}")),
    }

    if spec.virtual_router_id == Some(0) {
        p.push("spec.virtualRouterID", "must be between 1 and 255");
    }
    if let Some(v) = spec.version
        && v != 2
        && v != 3
    {
        p.push("spec.version", format!("must be 2 or 3, not {v}"));
    }
    if spec.priority == Some(0) {
        p.push(
            "spec.priority",
            "must be between 1 and 255 (0 is reserved for a leaving master)",
        );
    }
    if let Some(iface) = &spec.interface {
        check_ifname(&mut p, "spec.interface", iface);
    }

    if let Some(d) = spec.advert_interval {
        let ms = crate::duration_ms(d);
        if d.is_negative() || ms == 0 {
            p.push(
                "spec.advertInterval",
                "must be a positive duration such as 1s or 100ms",
            );
        } else if version == 2 && (!ms.is_multiple_of(1000) || !(1000..=255_000).contains(&ms)) {
            p.push(
                "spec.advertInterval",
                "VRRPv2 needs a whole number of seconds from 1s to 255s",
            );
        } else if version == 3 && (!ms.is_multiple_of(10) || !(10..=40_950).contains(&ms)) {
            p.push(
                "spec.advertInterval",
                "VRRPv3 needs 10ms to 40.95s in steps of 10ms",
            );
        }
    }
    if let Some(d) = spec.preempt_delay
        && (d.is_negative() || crate::duration_ms(d) > 1_000_000)
    {
        p.push("spec.preemptDelay", "must be between 0s and 1000s");
    }
    if spec.authentication.is_some() && version != 2 {
        p.push(
            "spec.authentication",
            "only VRRPv2 has authentication; set version: 2 or remove it",
        );
    }
    if let Some(auth) = &spec.authentication
        && auth.password_secret_ref.name.is_empty()
    {
        p.push(
            "spec.authentication.passwordSecretRef.name",
            "must not be empty",
        );
    }

    check_addresses(&mut p, spec, version);

    let family = spec
        .addresses
        .first()
        .and_then(|a| parse_address(a))
        .map(|a| a.addr().is_ipv4());
    if let Some(u) = &spec.unicast {
        for (i, peer) in u.peers.iter().enumerate() {
            if peer.parse::<IpAddr>().is_err() {
                p.push(
                    format!("spec.unicast.peers[{i}]"),
                    format!("{peer:?} is not an IP address"),
                );
            }
        }
        if let Some(src) = &u.source_address {
            check_source(&mut p, "spec.unicast.sourceAddress", src, family);
        }
        if u.ttl == Some(0) {
            p.push("spec.unicast.ttl", "must be between 1 and 255");
        }
    }

    let mut seen = BTreeSet::new();
    for (i, n) in spec.nodes.iter().enumerate() {
        let base = format!("spec.nodes[{i}]");
        if n.name.is_empty() {
            p.push(format!("{base}.name"), "must not be empty");
        } else if !seen.insert(n.name.as_str()) {
            p.push(
                format!("{base}.name"),
                format!("node {:?} is listed twice", n.name),
            );
        }
        if n.priority == Some(0) {
            p.push(format!("{base}.priority"), "must be between 1 and 255");
        }
        if let Some(iface) = &n.interface {
            check_ifname(&mut p, &format!("{base}.interface"), iface);
        }
        if let Some(src) = &n.source_address {
            check_source(&mut p, &format!("{base}.sourceAddress"), src, family);
        }
    }

    if let Some(t) = &spec.track {
        check_track(&mut p, t);
    }
    if let Some(g) = &spec.garp {
        if let Some(d) = g.master_delay
            && (d.is_negative() || crate::duration_ms(d) > 255_000)
        {
            p.push("spec.garp.masterDelay", "must be between 0s and 255s");
        }
        if let Some(d) = g.master_refresh {
            let ms = crate::duration_ms(d);
            if d.is_negative() || (ms != 0 && ms < limits::MIN_GARP_REFRESH_MS) {
                p.push(
                    "spec.garp.masterRefresh",
                    "must be 0s (off) or at least 1s; shorter refreshes flood the network with GARPs",
                );
            }
        }
        for (field, n) in [
            ("masterRepeat", g.master_repeat),
            ("masterRefreshRepeat", g.master_refresh_repeat),
        ] {
            if let Some(n) = n
                && !(1..=limits::MAX_GARP_REPEAT).contains(&n)
            {
                p.push(
                    format!("spec.garp.{field}"),
                    format!(
                        "must be between 1 and {} packets, not {n}",
                        limits::MAX_GARP_REPEAT
                    ),
                );
            }
        }
    }
    if let Some(n) = &spec.notify {
        if let Some(d) = n.timeout
            && (d.is_negative() || crate::duration_ms(d) == 0)
        {
            p.push("spec.notify.timeout", "must be greater than 0");
        }
        for (field, cmd) in [
            ("master", &n.master),
            ("backup", &n.backup),
            ("fault", &n.fault),
            ("stop", &n.stop),
            ("any", &n.any),
        ] {
            if let Some(cmd) = cmd {
                check_command_len(&mut p, &format!("spec.notify.{field}"), cmd);
            }
        }
    }
    if let Some(n) = &spec.sync_group_notify {
        if spec.sync_group.is_none() {
            p.push(
                "spec.syncGroupNotify",
                "set syncGroup too; without a group these scripts never run",
            );
        }
        if let Some(d) = n.timeout
            && (d.is_negative() || crate::duration_ms(d) == 0)
        {
            p.push("spec.syncGroupNotify.timeout", "must be greater than 0");
        }
        for (field, cmd) in [
            ("master", &n.master),
            ("backup", &n.backup),
            ("fault", &n.fault),
            ("stop", &n.stop),
            ("any", &n.any),
        ] {
            if let Some(cmd) = cmd {
                check_command_len(&mut p, &format!("spec.syncGroupNotify.{field}"), cmd);
            }
        }
    }
    if spec.sync_group.as_deref() == Some("") {
        p.push("spec.syncGroup", "must not be empty when set");
    }
    p
}

fn check_ifname(p: &mut Problems, path: &str, name: &str) {
    if name.is_empty()
        || name.len() > 15
        || name.contains('/')
        || name.chars().any(char::is_whitespace)
    {
        p.push(
            path,
            format!("{name:?} is not a valid interface name (1-15 characters, no '/' or spaces)"),
        );
    }
}

/// An advert source address: an IP address of the VirtualIP's family (`v4` when known).
fn check_source(p: &mut Problems, path: &str, src: &str, v4: Option<bool>) {
    match src.parse::<IpAddr>() {
        Err(_) => p.push(path, format!("{src:?} is not an IP address")),
        Ok(a) if v4.is_some_and(|v4| v4 != a.is_ipv4()) => {
            p.push(path, format!("{a} is not of the family of the addresses"))
        }
        Ok(_) => {}
    }
}

fn check_command_len(p: &mut Problems, path: &str, cmd: &str) {
    if cmd.len() > limits::MAX_COMMAND_BYTES {
        p.push(
            path,
            format!(
                "command is {} bytes; at most {} are allowed",
                cmd.len(),
                limits::MAX_COMMAND_BYTES
            ),
        );
    }
}

fn check_count(p: &mut Problems, path: &str, what: &str, n: usize, max: usize) {
    if n > max {
        p.push(path, format!("{n} {what}; at most {max} are allowed"));
    }
}

fn check_addresses(p: &mut Problems, spec: &VirtualIPSpec, version: u8) {
    if spec.addresses.is_empty() {
        p.push("spec.addresses", "at least one address is required");
    }
    check_count(
        p,
        "spec.addresses",
        "addresses",
        spec.addresses.len(),
        limits::MAX_ADDRESSES,
    );
    check_count(
        p,
        "spec.excludedAddresses",
        "excluded addresses",
        spec.excluded_addresses.len(),
        limits::MAX_EXCLUDED_ADDRESSES,
    );
    let first_v4 = spec
        .addresses
        .first()
        .and_then(|a| parse_address(a))
        .map(|a| a.addr().is_ipv4());
    if let Some(v4) = first_v4 {
        let max = max_advertised_addresses(v4, version, STANDARD_MTU);
        if spec.addresses.len() > max && spec.addresses.len() <= limits::MAX_ADDRESSES {
            p.push(
                "spec.addresses",
                format!(
                    "{} addresses; an advert carries at most {max} {} addresses in a standard 1500-byte MTU; put the others in excludedAddresses (bound with the VIPs, not advertised)",
                    spec.addresses.len(),
                    if v4 { "IPv4" } else { "IPv6" }
                ),
            );
        }
    }
    let mut first_family: Option<bool> = None;
    let mut seen = BTreeSet::new();
    for (i, a) in spec.addresses.iter().enumerate() {
        let path = format!("spec.addresses[{i}]");
        let Some(net) = parse_address(a) else {
            p.push(
                path,
                format!("{a:?} is not an IP address or CIDR such as 192.0.2.10/24"),
            );
            continue;
        };
        let v4 = matches!(net, IpNet::V4(_));
        if !seen.insert(net.addr()) {
            p.push(
                path.clone(),
                format!("address {} is listed twice", net.addr()),
            );
        }
        if version == 2 && !v4 {
            p.push(
                path.clone(),
                "VRRPv2 carries IPv4 only; use version 3 for IPv6",
            );
        }
        match first_family {
            None => first_family = Some(v4),
            Some(f) if f != v4 => p.push(
                path,
                "all addresses of one VirtualIP must be of one family; put others in excludedAddresses",
            ),
            Some(_) => {}
        }
    }
    for (i, a) in spec.excluded_addresses.iter().enumerate() {
        if parse_address(a).is_none() {
            p.push(
                format!("spec.excludedAddresses[{i}]"),
                format!("{a:?} is not an IP address or CIDR"),
            );
        }
    }
}

fn check_weight(p: &mut Problems, path: String, w: Option<i16>) {
    if let Some(w) = w
        && !(-254..=254).contains(&w)
    {
        p.push(
            path,
            format!("weight must be between -254 and 254, not {w}"),
        );
    }
}

fn check_unique<'a>(p: &mut Problems, base: &str, names: impl Iterator<Item = &'a str>) {
    let mut seen = BTreeSet::new();
    for (i, n) in names.enumerate() {
        if n.is_empty() {
            p.push(format!("{base}[{i}].name"), "must not be empty");
        } else if !seen.insert(n) {
            p.push(
                format!("{base}[{i}].name"),
                format!("duplicate tracker name {n:?}"),
            );
        }
    }
}

fn check_track(p: &mut Problems, t: &Track) {
    check_unique(
        p,
        "spec.track.interfaces",
        t.interfaces.iter().map(|x| x.name.as_str()),
    );
    check_unique(
        p,
        "spec.track.scripts",
        t.scripts.iter().map(|x| x.name.as_str()),
    );
    check_unique(
        p,
        "spec.track.processes",
        t.processes.iter().map(|x| x.name.as_str()),
    );
    check_unique(
        p,
        "spec.track.files",
        t.files.iter().map(|x| x.name.as_str()),
    );
    check_unique(p, "spec.track.pods", t.pods.iter().map(|x| x.name.as_str()));
    check_unique(p, "spec.track.http", t.http.iter().map(|x| x.name.as_str()));
    check_count(
        p,
        "spec.track.http",
        "HTTP checks",
        t.http.len(),
        limits::MAX_HTTP_CHECKS,
    );
    for (i, x) in t.http.iter().enumerate() {
        check_http(p, &format!("spec.track.http[{i}]"), x);
    }
    for (i, x) in t.interfaces.iter().enumerate() {
        check_ifname(p, &format!("spec.track.interfaces[{i}].name"), &x.name);
        check_weight(p, format!("spec.track.interfaces[{i}].weight"), x.weight);
    }
    check_count(
        p,
        "spec.track.scripts",
        "scripts",
        t.scripts.len(),
        limits::MAX_SCRIPTS,
    );
    for (i, x) in t.scripts.iter().enumerate() {
        let base = format!("spec.track.scripts[{i}]");
        if x.script.trim().is_empty() {
            p.push(format!("{base}.script"), "must not be empty");
        }
        check_command_len(p, &format!("{base}.script"), &x.script);
        check_weight(p, format!("{base}.weight"), x.weight);
        if x.rise == Some(0) {
            p.push(format!("{base}.rise"), "must be at least 1");
        }
        if x.fall == Some(0) {
            p.push(format!("{base}.fall"), "must be at least 1");
        }
        for (field, d) in [("interval", x.interval), ("timeout", x.timeout)] {
            if let Some(d) = d
                && (d.is_negative() || crate::duration_ms(d) < limits::MIN_SCRIPT_PERIOD_MS)
            {
                p.push(
                    format!("{base}.{field}"),
                    format!(
                        "must be at least 1s (keepalived counts script {field}s in whole seconds)"
                    ),
                );
            }
        }
    }
    for (i, x) in t.processes.iter().enumerate() {
        let base = format!("spec.track.processes[{i}]");
        if x.process.is_empty() {
            p.push(format!("{base}.process"), "must not be empty");
        }
        check_weight(p, format!("{base}.weight"), x.weight);
        if x.quorum == Some(0) {
            p.push(format!("{base}.quorum"), "must be at least 1");
        }
    }
    for (i, x) in t.files.iter().enumerate() {
        if x.path.is_empty() {
            p.push(format!("spec.track.files[{i}].path"), "must not be empty");
        }
        check_weight(p, format!("spec.track.files[{i}].weight"), x.weight);
    }
    for (i, x) in t.pods.iter().enumerate() {
        check_weight(p, format!("spec.track.pods[{i}].weight"), x.weight);
        if x.quorum == Some(0) {
            p.push(format!("spec.track.pods[{i}].quorum"), "must be at least 1");
        }
    }
}

/// The scheme, host and port of an `http://` or `https://` URL, or why it is not one. Only
/// what the HTTP tracker needs: no user info, a host (name, IPv4 or bracketed IPv6) and an
/// optional port; the path and query are kept as they are.
pub fn parse_http_url(url: &str) -> Result<HttpUrl, String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err("must start with http:// or https://".into());
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let path = match tail.split('#').next().unwrap_or("") {
        "" => "/".to_string(),
        t if t.starts_with('?') => format!("/{t}"),
        t => t.to_string(),
    };
    if authority.contains('@') {
        return Err("must not carry user information (user@host)".into());
    }
    let default_port = if https { 443 } else { 80 };
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        let Some((h, after)) = r.split_once(']') else {
            return Err("has an unterminated [IPv6] host".into());
        };
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("[{h}] is not an IPv6 address"));
        }
        let port = match after {
            "" => default_port,
            p => parse_port(
                p.strip_prefix(':')
                    .ok_or("has text after the [IPv6] host")?,
            )?,
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), parse_port(p)?),
            None => (authority.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    if !host.contains(':')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    {
        return Err(format!("host {host:?} is not a DNS name or IP address"));
    }
    Ok(HttpUrl {
        https,
        host,
        port,
        path,
    })
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("port {p:?} is not a number from 1 to 65535")),
    }
}

/// A parsed HTTP(S) check URL ([`parse_http_url`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `https://` (else `http://`).
    pub https: bool,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port (default 80 / 443).
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
}

fn check_http(p: &mut Problems, base: &str, x: &TrackHttp) {
    if x.url.len() > limits::MAX_URL_BYTES {
        p.push(
            format!("{base}.url"),
            format!(
                "is {} bytes; at most {} are allowed",
                x.url.len(),
                limits::MAX_URL_BYTES
            ),
        );
    }
    let https = match parse_http_url(&x.url) {
        Ok(u) => u.https,
        Err(why) => {
            p.push(format!("{base}.url"), format!("{:?} {why}", x.url));
            x.url.starts_with("https://")
        }
    };
    if let Some(code) = x.expect_status
        && !(100..=599).contains(&code)
    {
        p.push(
            format!("{base}.expectStatus"),
            format!("must be an HTTP status code from 100 to 599, not {code}"),
        );
    }
    for (field, d) in [("interval", x.interval), ("timeout", x.timeout)] {
        if let Some(d) = d
            && (d.is_negative() || crate::duration_ms(d) < limits::MIN_HTTP_PERIOD_MS)
        {
            p.push(
                format!("{base}.{field}"),
                format!(
                    "must be at least {}ms, so checks cannot load the node or the server",
                    limits::MIN_HTTP_PERIOD_MS
                ),
            );
        }
    }
    if x.rise == Some(0) {
        p.push(format!("{base}.rise"), "must be at least 1");
    }
    if x.fall == Some(0) {
        p.push(format!("{base}.fall"), "must be at least 1");
    }
    check_weight(p, format!("{base}.weight"), x.weight);
    let insecure = x.insecure_skip_verify == Some(true);
    if let Some(ca) = &x.ca_file {
        if !https {
            p.push(
                format!("{base}.caFile"),
                "is only used with an https:// url",
            );
        } else if !ca.starts_with('/') {
            p.push(
                format!("{base}.caFile"),
                format!("{ca:?} must be an absolute path on the node"),
            );
        }
    }
    if let Some(n) = &x.server_name {
        if !https {
            p.push(
                format!("{base}.serverName"),
                "is only used with an https:// url",
            );
        } else if n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == ':')
        {
            p.push(
                format!("{base}.serverName"),
                format!("{n:?} is not a DNS name or IP address"),
            );
        }
    }
    if insecure && !https {
        p.push(
            format!("{base}.insecureSkipVerify"),
            "is only used with an https:// url",
        );
    }
    if insecure && (x.ca_file.is_some() || x.server_name.is_some()) {
        p.push(
            format!("{base}.insecureSkipVerify"),
            "skips certificate checks: caFile and serverName would be ignored, remove them or it",
        );
    }
}

#[cfg(test)]
mod http_tests {
    use super::*;
    use crate::virtualip::Track;

    fn spec_with(h: TrackHttp) -> VirtualIPSpec {
        VirtualIPSpec {
            addresses: vec!["192.0.2.200/24".into()],
            track: Some(Track {
                http: vec![h],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn check(name: &str, url: &str) -> TrackHttp {
        TrackHttp {
            name: name.into(),
            url: url.into(),
            ..Default::default()
        }
    }

    fn ms(n: u64) -> Option<kube::core::Duration> {
        Some(std::time::Duration::from_millis(n).into())
    }

    #[test]
    fn urls_parse_into_host_port_and_path() {
        let u = parse_http_url("https://127.0.0.1:6443/readyz?verbose").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (true, "127.0.0.1", 6443, "/readyz?verbose")
        );
        let u = parse_http_url("http://[2001:db8::1]/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("2001:db8::1", 80, "/")
        );
        let u = parse_http_url("https://api.example.com").unwrap();
        assert_eq!((u.port, u.path.as_str()), (443, "/"));
        for (bad, why) in [
            ("ftp://x/", "must start with http"),
            ("http://", "has no host"),
            ("http://user@host/", "user information"),
            ("http://host:0/", "port \"0\""),
            ("http://host:99999/", "port \"99999\""),
            ("http://[::1/", "unterminated"),
            ("http://[zz]/", "not an IPv6"),
            ("http://ho st/", "spaces"),
            ("http://h%41/", "not a DNS name"),
        ] {
            let e = parse_http_url(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_valid_check_passes() {
        let mut h = check("readyz", "https://127.0.0.1:6443/readyz");
        h.interval = ms(100);
        h.timeout = ms(100);
        h.ca_file = Some("/etc/kubernetes/pki/ca.crt".into());
        h.server_name = Some("kubernetes".into());
        h.expect_status = Some(204);
        assert!(validate_spec(&spec_with(h)).is_empty());
    }

    #[test]
    fn every_bad_field_is_named() {
        type Mutation = fn(&mut TrackHttp);
        let cases: [(Mutation, &str, &str); 12] = [
            (|h| h.url = "ftp://x".into(), "url", "must start with http"),
            (
                |h| h.url = format!("http://x/{}", "a".repeat(2048)),
                "url",
                "at most 2048",
            ),
            (|h| h.expect_status = Some(99), "expectStatus", "100 to 599"),
            (|h| h.interval = ms(99), "interval", "at least 100ms"),
            (|h| h.timeout = ms(50), "timeout", "at least 100ms"),
            (|h| h.rise = Some(0), "rise", "at least 1"),
            (|h| h.fall = Some(0), "fall", "at least 1"),
            (|h| h.weight = Some(255), "weight", "between -254 and 254"),
            (
                |h| h.ca_file = Some("ca.pem".into()),
                "caFile",
                "absolute path",
            ),
            (
                |h| {
                    h.url = "http://127.0.0.1/".into();
                    h.ca_file = Some("/ca.pem".into());
                },
                "caFile",
                "only used with an https",
            ),
            (
                |h| {
                    h.insecure_skip_verify = Some(true);
                    h.ca_file = Some("/ca.pem".into());
                },
                "insecureSkipVerify",
                "would be ignored",
            ),
            (
                |h| h.server_name = Some("a b".into()),
                "serverName",
                "not a DNS name",
            ),
        ];
        for (mutate, field, why) in cases {
            let mut h = check("readyz", "https://127.0.0.1:6443/readyz");
            mutate(&mut h);
            let p = validate_spec(&spec_with(h));
            let path = format!("spec.track.http[0].{field}");
            assert!(
                p.iter().any(|x| x.path == path && x.message.contains(why)),
                "{path}: {why}: got {p}"
            );
        }
    }

    #[test]
    fn count_and_names_are_limited() {
        let mut s = spec_with(check("a", "http://127.0.0.1/"));
        let t = s.track.as_mut().unwrap();
        t.http = (0..17)
            .map(|i| check(&format!("c{i}"), "http://127.0.0.1/"))
            .collect();
        t.http[1].name = "c0".into();
        let p = validate_spec(&s).to_string();
        assert!(
            p.contains("spec.track.http: 17 HTTP checks; at most 16"),
            "{p}"
        );
        assert!(
            p.contains("spec.track.http[1].name: duplicate tracker name \"c0\""),
            "{p}"
        );
    }
}
