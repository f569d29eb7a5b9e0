//! Instance configuration: built from a [`ResolvedInstance`] plus facts only the I/O side
//! knows (interface, its primary address), validated up front so the state machine can trust
//! it. Every rejection is a [`ConfigError`] naming the instance, the field and the reason.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use crds::vrrpnode::ResolvedInstance;
use ipnet::IpNet;

use super::checksum::V3Ipv4Checksum;
use super::packet::{Auth, Family, Interval, V3_MAX_INTERVAL_CS, Version};
use super::track::{Rule, TrackerSpec};

/// Invalid configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("instance {instance:?}: {field}: {reason}")]
pub struct ConfigError {
    /// Instance name.
    pub instance: String,
    /// Field (the ResolvedInstance / keepalived name).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl ConfigError {
    fn new(instance: &str, field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            instance: instance.to_string(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// State to take at start (keepalived `state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StartState {
    /// Backup, wait Master_Down_Interval (the default).
    #[default]
    Backup,
    /// Become master at once.
    Master,
}

/// Gratuitous ARP / unsolicited NA settings (keepalived `garp_master_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GarpConfig {
    /// Packets per address in the burst on becoming master (`garp_master_repeat`).
    pub master_repeat: u32,
    /// Delay of the second burst (`garp_master_delay`); zero ⇒ none.
    pub master_delay: Duration,
    /// Period of refreshes while master (`garp_master_refresh`); zero ⇒ none.
    pub master_refresh: Duration,
    /// Packets per address per refresh (`garp_master_refresh_repeat`).
    pub master_refresh_repeat: u32,
}

impl Default for GarpConfig {
    fn default() -> Self {
        GarpConfig {
            master_repeat: 5,
            master_delay: Duration::from_secs(5),
            master_refresh: Duration::ZERO,
            master_refresh_repeat: 1,
        }
    }
}

/// Everything one instance needs. Construct directly (tests, standalone) or with
/// [`InstanceConfig::from_resolved`]; [`InstanceConfig::validate`] runs on every use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceConfig {
    /// Instance name (`NAMESPACE/NAME` or keepalived's `VI_1`).
    pub name: String,
    /// Interface the instance runs on.
    pub interface: String,
    /// Virtual router id, 1–255.
    pub vrid: u8,
    /// Protocol version.
    pub version: Version,
    /// Base priority, 1–255 (255 = address owner).
    pub priority: u8,
    /// Start state.
    pub start_state: StartState,
    /// Our advertisement interval.
    pub advert_interval: Interval,
    /// Preempt a lower-priority master.
    pub preempt: bool,
    /// Accept lower-priority adverts this long after start / leaving FAULT.
    pub preempt_delay: Duration,
    /// keepalived `accept` (not used by the core; carried for the I/O side).
    pub accept: bool,
    /// Virtual addresses (advertised), one family.
    pub vips: Vec<IpNet>,
    /// Excluded addresses (bound with the VIPs, not advertised).
    pub excluded: Vec<IpNet>,
    /// Source of our adverts and our "primary address" for the equal-priority tie-break
    /// (interface primary IPv4 / link-local IPv6, or `unicast_src_ip`).
    pub source: IpAddr,
    /// Unicast peers; empty ⇒ multicast.
    pub unicast_peers: Vec<IpAddr>,
    /// Accept unicast adverts with TTL / hop limit below 255.
    pub allow_lower_ttl: bool,
    /// v2 authentication.
    pub auth: Auth,
    /// v3 IPv4 checksum form we send.
    pub v3_ipv4_checksum: V3Ipv4Checksum,
    /// Trackers.
    pub trackers: Vec<TrackerSpec>,
    /// GARP / NA settings.
    pub garp: GarpConfig,
    /// Sync group name.
    pub sync_group: Option<String>,
}

impl InstanceConfig {
    /// Address family.
    pub fn family(&self) -> Family {
        Family::of(&self.source)
    }

    /// VIP addresses as advertised.
    pub fn advertised_addresses(&self) -> Vec<IpAddr> {
        self.vips.iter().map(|n| n.addr()).collect()
    }

    /// Destinations of our adverts: the multicast group or each unicast peer.
    pub fn destinations(&self) -> Vec<IpAddr> {
        if self.unicast_peers.is_empty() {
            vec![self.family().multicast_group()]
        } else {
            self.unicast_peers.clone()
        }
    }

    /// Build from a resolved instance. `interface` is the interface the agent runs it on
    /// (`ri.interface` or the one it picked); `primary` is that interface's primary IPv4
    /// address, or its link-local IPv6 address for IPv6 instances.
    pub fn from_resolved(
        ri: &ResolvedInstance,
        interface: &str,
        primary: IpAddr,
    ) -> Result<Self, ConfigError> {
        let name = ri.name.as_str();
        let err = |field: &str, reason: String| ConfigError::new(name, field, reason);
        let version = match ri.version {
            2 => Version::V2,
            3 => Version::V3,
            v => return Err(err("version", format!("{v} is not 2 or 3"))),
        };
        let ms = ri.advert_interval_ms;
        let advert_interval = match version {
            Version::V2 if !ms.is_multiple_of(1000) || !(1000..=255_000).contains(&ms) => {
                return Err(err(
                    "advertIntervalMs",
                    format!("{ms} ms: VRRPv2 needs whole seconds 1–255 s"),
                ));
            }
            Version::V3 if !ms.is_multiple_of(10) || !(10..=40_950).contains(&ms) => {
                return Err(err(
                    "advertIntervalMs",
                    format!("{ms} ms: VRRPv3 needs 10 ms–40.95 s in 10 ms steps"),
                ));
            }
            _ => Interval((ms / 10) as u16),
        };
        let parse_net = |field: &str, s: &str| -> Result<IpNet, ConfigError> {
            IpNet::from_str(s)
                .or_else(|_| IpAddr::from_str(s).map(IpNet::from))
                .map_err(|_| err(field, format!("{s:?} is not an IP address or IP/prefix")))
        };
        let vips = ri
            .addresses
            .iter()
            .map(|s| parse_net("addresses", s))
            .collect::<Result<Vec<_>, _>>()?;
        let excluded = ri
            .excluded_addresses
            .iter()
            .map(|s| parse_net("excludedAddresses", s))
            .collect::<Result<Vec<_>, _>>()?;
        let parse_ip = |field: &str, s: &str| {
            IpAddr::from_str(s).map_err(|_| err(field, format!("{s:?} is not an IP address")))
        };
        let source = match &ri.unicast_source {
            Some(s) => parse_ip("unicastSource", s)?,
            None => primary,
        };
        let unicast_peers = ri
            .unicast_peers
            .iter()
            .map(|s| parse_ip("unicastPeers", s))
            .collect::<Result<Vec<_>, _>>()?;
        let auth = match &ri.auth_pass {
            None => Auth::None,
            Some(_) if version == Version::V3 => {
                return Err(err("authPass", "authentication is VRRPv2 only".into()));
            }
            Some(p) => Auth::pass(p.as_bytes())
                .ok_or_else(|| err("authPass", "password must be 1–8 bytes".into()))?,
        };
        let mut trackers = Vec::new();
        for t in &ri.track.interfaces {
            trackers.push(TrackerSpec {
                name: t.name.clone(),
                weight: t.weight,
                reverse: t.reverse,
                rule: Rule::Link,
            });
        }
        for t in &ri.track.scripts {
            trackers.push(TrackerSpec {
                name: t.name.clone(),
                weight: t.weight,
                reverse: t.reverse,
                rule: Rule::Script {
                    rise: t.rise,
                    fall: t.fall,
                },
            });
        }
        for t in &ri.track.processes {
            trackers.push(TrackerSpec {
                name: t.name.clone(),
                weight: t.weight,
                reverse: t.reverse,
                rule: Rule::Process { quorum: t.quorum },
            });
        }
        for t in &ri.track.files {
            trackers.push(TrackerSpec {
                name: t.name.clone(),
                weight: t.weight,
                reverse: t.reverse,
                rule: Rule::File,
            });
        }
        for t in &ri.track.pods {
            trackers.push(TrackerSpec {
                name: t.name.clone(),
                weight: t.weight,
                reverse: false,
                rule: Rule::Pods { quorum: t.quorum },
            });
        }
        let cfg = InstanceConfig {
            name: ri.name.clone(),
            interface: interface.to_string(),
            vrid: ri.virtual_router_id,
            version,
            priority: ri.priority,
            start_state: match ri.initial_state {
                crds::virtualip::InitialState::Master => StartState::Master,
                crds::virtualip::InitialState::Backup => StartState::Backup,
            },
            advert_interval,
            preempt: ri.preempt,
            preempt_delay: Duration::from_millis(u64::from(ri.preempt_delay_ms)),
            accept: ri.accept,
            vips,
            excluded,
            source,
            unicast_peers,
            allow_lower_ttl: ri.allow_lower_ttl,
            auth,
            v3_ipv4_checksum: V3Ipv4Checksum::default(),
            trackers,
            garp: GarpConfig {
                master_repeat: ri.garp.master_repeat,
                master_delay: Duration::from_millis(u64::from(ri.garp.master_delay_ms)),
                master_refresh: Duration::from_millis(u64::from(ri.garp.master_refresh_ms)),
                master_refresh_repeat: ri.garp.master_refresh_repeat,
            },
            sync_group: ri.sync_group.clone(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check every invariant the state machine relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name = self.name.as_str();
        let err = |field: &str, reason: String| Err(ConfigError::new(name, field, reason));
        if name.is_empty() {
            return err("name", "must not be empty".into());
        }
        if self.interface.is_empty() {
            return err("interface", "must not be empty".into());
        }
        if self.vrid == 0 {
            return err("virtualRouterID", "0 is reserved; use 1–255".into());
        }
        if self.priority == 0 {
            return err(
                "priority",
                "0 is reserved for a master leaving; use 1–255".into(),
            );
        }
        let family = self.family();
        if self.version == Version::V2 && family == Family::V6 {
            return err(
                "version",
                "VRRPv2 is IPv4 only; use version 3 for IPv6".into(),
            );
        }
        let cs = self.advert_interval.0;
        match self.version {
            Version::V2 if !cs.is_multiple_of(100) || !(100..=25_500).contains(&cs) => {
                return err(
                    "advertInterval",
                    format!("{cs} cs: VRRPv2 needs whole seconds 1–255 s"),
                );
            }
            Version::V3 if cs == 0 || cs > V3_MAX_INTERVAL_CS => {
                return err(
                    "advertInterval",
                    format!("{cs} cs: VRRPv3 needs 1–4095 centiseconds"),
                );
            }
            _ => {}
        }
        if self.vips.is_empty() {
            return err("addresses", "at least one virtual address is needed".into());
        }
        if self.vips.len() > 255 {
            return err(
                "addresses",
                format!(
                    "{} addresses; an advert carries at most 255",
                    self.vips.len()
                ),
            );
        }
        if let Some(bad) = self.vips.iter().find(|n| Family::of(&n.addr()) != family) {
            return err(
                "addresses",
                format!(
                    "{bad} is not {family} like the source address {}",
                    self.source
                ),
            );
        }
        if self.version == Version::V3 && self.auth != Auth::None {
            return err("authentication", "authentication is VRRPv2 only".into());
        }
        if family == Family::V6
            && self.unicast_peers.is_empty()
            && let IpAddr::V6(s) = self.source
            && !s.is_unicast_link_local()
        {
            return err(
                "source",
                format!("{s}: multicast IPv6 adverts must come from a link-local address"),
            );
        }
        if let Some(p) = self.unicast_peers.iter().find(|p| Family::of(p) != family) {
            return err("unicastPeers", format!("{p} is not {family}"));
        }
        if self.unicast_peers.contains(&self.source) {
            return err(
                "unicastPeers",
                format!("{} is our own source address", self.source),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.trackers {
            if !seen.insert((t.kind(), t.name.as_str())) {
                return err(
                    "track",
                    format!("{} tracker {:?} is listed twice", t.kind(), t.name),
                );
            }
            if !(-254..=254).contains(&t.weight) {
                return err(
                    "track",
                    format!(
                        "{} tracker {:?}: weight {} is outside -254..254",
                        t.kind(),
                        t.name,
                        t.weight
                    ),
                );
            }
            if let Rule::Script { rise, fall } = t.rule
                && (rise == 0 || fall == 0)
            {
                return err(
                    "track",
                    format!("script {:?}: rise and fall must be at least 1", t.name),
                );
            }
        }
        if let Some(g) = &self.sync_group
            && g.is_empty()
        {
            return err("syncGroup", "must not be empty when set".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::vrrpnode::{ResolvedGarp, ResolvedTrack, ResolvedTrackProcess, ResolvedTrackScript};

    /// The user's track-script.conf, resolved (VIP moved to a documentation range).
    fn resolved() -> ResolvedInstance {
        ResolvedInstance {
            name: "VI_1".into(),
            virtual_router_id: 51,
            version: 2,
            interface: Some("eth0".into()),
            priority: 244,
            initial_state: crds::virtualip::InitialState::Master,
            advert_interval_ms: 1000,
            preempt: true,
            addresses: vec!["192.0.2.200/24".into()],
            auth_pass: Some("12345".into()),
            track: ResolvedTrack {
                scripts: vec![ResolvedTrackScript {
                    name: "keepalived_check".into(),
                    script: "/usr/local/bin/keepalived_check.sh".into(),
                    interval_ms: 1000,
                    timeout_ms: 5000,
                    rise: 3,
                    fall: 3,
                    weight: 0,
                    reverse: false,
                    user: None,
                }],
                processes: vec![ResolvedTrackProcess {
                    name: "track_apache".into(),
                    process: "httpd".into(),
                    weight: 10,
                    quorum: 1,
                    reverse: false,
                }],
                ..Default::default()
            },
            garp: ResolvedGarp::default(),
            ..Default::default()
        }
    }

    const PRIMARY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10));

    #[test]
    fn from_resolved_keepalived_config() {
        let c = InstanceConfig::from_resolved(&resolved(), "eth0", PRIMARY).unwrap();
        assert_eq!(c.version, Version::V2);
        assert_eq!(c.advert_interval, Interval(100));
        assert_eq!(c.start_state, StartState::Master);
        assert_eq!(c.auth, Auth::pass(b"12345").unwrap());
        assert_eq!(c.vips, vec!["192.0.2.200/24".parse::<IpNet>().unwrap()]);
        assert_eq!(c.source, PRIMARY);
        assert_eq!(c.trackers.len(), 2);
        assert_eq!(c.trackers[0].rule, Rule::Script { rise: 3, fall: 3 });
        assert_eq!(c.trackers[1].rule, Rule::Process { quorum: 1 });
        assert_eq!(c.garp, GarpConfig::default());
        assert_eq!(
            c.destinations(),
            vec![IpAddr::V4(super::super::packet::MULTICAST_V4)]
        );
    }

    #[test]
    fn from_resolved_rejections_name_the_field() {
        type Mutation = Box<dyn Fn(&mut ResolvedInstance)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|r| r.version = 4), "version"),
            (
                Box::new(|r| r.advert_interval_ms = 1500),
                "advertIntervalMs",
            ),
            (Box::new(|r| r.advert_interval_ms = 0), "advertIntervalMs"),
            (
                Box::new(|r| r.addresses = vec!["not-an-ip".into()]),
                "addresses",
            ),
            (Box::new(|r| r.addresses = vec![]), "addresses"),
            (
                Box::new(|r| r.addresses = vec!["2001:db8::1/64".into()]),
                "addresses",
            ),
            (
                Box::new(|r| r.unicast_peers = vec!["x".into()]),
                "unicastPeers",
            ),
            (
                Box::new(|r| r.unicast_source = Some("1.2.3".into())),
                "unicastSource",
            ),
            (
                Box::new(|r| r.auth_pass = Some("123456789".into())),
                "authPass",
            ),
            (Box::new(|r| r.virtual_router_id = 0), "virtualRouterID"),
            (Box::new(|r| r.priority = 0), "priority"),
            (Box::new(|r| r.track.scripts[0].rise = 0), "track"),
            (Box::new(|r| r.track.processes[0].weight = 300), "track"),
            (
                Box::new(|r| r.track.scripts.push(r.track.scripts[0].clone())),
                "track",
            ),
            (
                Box::new(|r| {
                    r.version = 3;
                    r.auth_pass = None;
                    r.addresses = vec!["2001:db8::200/64".into()];
                }),
                "addresses",
            ),
            (Box::new(|r| r.version = 3), "authPass"),
        ];
        for (mutate, field) in cases {
            let mut r = resolved();
            mutate(&mut r);
            let e = InstanceConfig::from_resolved(&r, "eth0", PRIMARY).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert_eq!(e.instance, "VI_1");
            assert!(e.to_string().starts_with("instance \"VI_1\": "), "{e}");
        }
        // Duplicate name across kinds is fine (script and process both "x").
        let mut r = resolved();
        r.track.processes[0].name = "x".into();
        r.track.scripts[0].name = "x".into();
        assert!(InstanceConfig::from_resolved(&r, "eth0", PRIMARY).is_ok());
    }

    #[test]
    fn ipv6_needs_link_local_source_for_multicast() {
        let mut r = resolved();
        r.version = 3;
        r.auth_pass = None;
        r.addresses = vec!["2001:db8::200/64".into()];
        let global: IpAddr = "2001:db8::10".parse().unwrap();
        let e = InstanceConfig::from_resolved(&r, "eth0", global).unwrap_err();
        assert_eq!(e.field, "source");
        let ll: IpAddr = "fe80::10".parse().unwrap();
        let c = InstanceConfig::from_resolved(&r, "eth0", ll).unwrap();
        assert_eq!(c.family(), Family::V6);
        assert_eq!(c.advert_interval, Interval(100));
        // Unicast IPv6 may use a global source.
        r.unicast_peers = vec!["2001:db8::11".into()];
        assert!(InstanceConfig::from_resolved(&r, "eth0", global).is_ok());
    }

    #[test]
    fn v3_interval_steps() {
        let mut r = resolved();
        r.version = 3;
        r.auth_pass = None;
        r.advert_interval_ms = 10;
        assert_eq!(
            InstanceConfig::from_resolved(&r, "eth0", PRIMARY)
                .unwrap()
                .advert_interval,
            Interval(1)
        );
        r.advert_interval_ms = 40_950;
        assert_eq!(
            InstanceConfig::from_resolved(&r, "eth0", PRIMARY)
                .unwrap()
                .advert_interval,
            Interval(4095)
        );
        r.advert_interval_ms = 15;
        assert!(InstanceConfig::from_resolved(&r, "eth0", PRIMARY).is_err());
        r.advert_interval_ms = 40_960;
        assert!(InstanceConfig::from_resolved(&r, "eth0", PRIMARY).is_err());
    }
}
