//! Instance configuration: everything one instance needs, including facts only the I/O side
//! knows (interface, its primary address), validated up front so the state machine can trust
//! it. Every rejection is a [`ConfigError`] naming the instance, the field and the reason.
//!
//! The core has no configuration format of its own: callers build an [`InstanceConfig`] from
//! theirs (kube-vrrp's agent from a resolved `VRRPNode` instance or keepalived.conf).

use std::net::IpAddr;
use std::time::Duration;

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
    /// Field (as the caller's configuration names it, e.g. keepalived's or the API's name).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl ConfigError {
    /// An error about `field` of `instance`. For code that builds an [`InstanceConfig`] from
    /// its own configuration format and reports problems the same way.
    pub fn new(instance: &str, field: impl Into<String>, reason: impl Into<String>) -> Self {
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

/// Everything one instance needs, constructed by the caller from its own configuration;
/// [`InstanceConfig::validate`] runs on every use.
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
    /// The highest priority each *other* router of this virtual router can advertise, when the
    /// caller knows every one of them (kube-vrrp's operator plans all the peers); `None` when
    /// it does not (a keepalived.conf, whose peers may be anything). With the list, a backup
    /// that outranks every router except the one leaving takes over at once on its
    /// priority-0 advert instead of waiting Skew_Time, and an empty list tells a leaving
    /// master nobody will take over, so it need not hold its VIPs for a successor. Entries
    /// are 1–255.
    pub peer_priorities: Option<Vec<u8>>,
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
            if let Rule::Script { rise, fall } | Rule::Http { rise, fall } = t.rule
                && (rise == 0 || fall == 0)
            {
                return err(
                    "track",
                    format!(
                        "{} {:?}: rise and fall must be at least 1",
                        t.kind(),
                        t.name
                    ),
                );
            }
        }
        if let Some(g) = &self.sync_group
            && g.is_empty()
        {
            return err("syncGroup", "must not be empty when set".into());
        }
        if self
            .peer_priorities
            .as_ref()
            .is_some_and(|p| p.contains(&0))
        {
            return err(
                "peerPriorities",
                "0 is reserved for a master leaving; use 1–255".into(),
            );
        }
        Ok(())
    }
}
