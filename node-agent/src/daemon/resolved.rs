//! The API's instance types ↔ the sans-IO core's.
//!
//! `kube-vrrp-core` knows nothing of Kubernetes, so the conversions live here, on the agent
//! side, as extension traits on the core's types (both sides are foreign to this crate):
//! - [`ConfigFromResolved`]: an [`InstanceConfig`] from a [`ResolvedInstance`] (what the
//!   operator planned or standalone mode resolved from keepalived.conf);
//! - [`StateToCrd`]: the core's [`State`] as a `VRRPNode` status state;
//! - [`ToStatus`]: an [`Instance`] / [`Tracker`] as its `VRRPNode.status` entry.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use crds::ResolvedInstance;
use crds::virtualip::InitialState;
use crds::vrrpnode::{InstanceStatus, TrackerStatus, VrrpState};
use ipnet::IpNet;
use vrrp::{
    Auth, ConfigError, Effect, GarpConfig, Instance, InstanceConfig, Interval, Rule, StartState,
    State, Tracker, TrackerSpec, V3Ipv4Checksum, Version,
};

/// Build the core's configuration from a resolved instance.
pub trait ConfigFromResolved: Sized {
    /// Build from a resolved instance. `interface` is the interface the agent runs it on
    /// (`ri.interface` or the one it picked); `primary` is that interface's primary IPv4
    /// address, or its link-local IPv6 address for IPv6 instances.
    fn from_resolved(
        ri: &ResolvedInstance,
        interface: &str,
        primary: IpAddr,
    ) -> Result<Self, ConfigError>;
}

impl ConfigFromResolved for InstanceConfig {
    fn from_resolved(
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
            // Cluster mode: the password comes from the node's auth Secret under authKey;
            // without it the instance does not run (never silently without authentication).
            None if ri.auth_key.is_some() => {
                return Err(err(
                    "authKey",
                    format!(
                        "no password for key {:?}: this node's auth Secret does not hold it (missing Secret or key, or not read yet)",
                        ri.auth_key.as_deref().unwrap_or_default()
                    ),
                ));
            }
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
        for t in &ri.track.http {
            trackers.push(TrackerSpec {
                name: t.name.clone(),
                weight: t.weight,
                reverse: t.reverse,
                rule: Rule::Http {
                    rise: t.rise,
                    fall: t.fall,
                },
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
                InitialState::Master => StartState::Master,
                InitialState::Backup => StartState::Backup,
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
            peer_priorities: ri.peer_priorities.clone(),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// The core's state as the `VRRPNode` status reports it.
pub trait StateToCrd {
    /// The status state (`STOP` reports as `INIT`).
    fn to_crd(self) -> VrrpState;
}

impl StateToCrd for State {
    fn to_crd(self) -> VrrpState {
        match self {
            State::Init | State::Stop => VrrpState::Init,
            State::Backup => VrrpState::Backup,
            State::Master => VrrpState::Master,
            State::Fault => VrrpState::Fault,
        }
    }
}

/// A core object's entry in `VRRPNode.status`.
pub trait ToStatus {
    /// The status entry type.
    type Status;
    /// The status entry.
    fn status(&self) -> Self::Status;
}

impl ToStatus for Instance {
    type Status = InstanceStatus;

    /// Status entry for `VRRPNode.status.instances[]` (the caller adds the timestamp).
    fn status(&self) -> InstanceStatus {
        InstanceStatus {
            name: self.config().name.clone(),
            state: Some(self.state().to_crd()),
            effective_priority: Some(self.effective_priority()),
            trackers: self.trackers().iter().map(Tracker::status).collect(),
            master_address: self.master_address().map(|a| a.to_string()),
            last_transition_time: None,
            reason: self.last_reason().map(|r| r.to_string()),
            fault_reason: self.fault_reason().map(|r| r.to_string()),
            previous_master: None,
            takeover: None,
            adoption: None,
        }
    }
}

impl ToStatus for Tracker {
    type Status = TrackerStatus;

    /// Status entry for the VRRPNode status.
    fn status(&self) -> TrackerStatus {
        TrackerStatus {
            kind: self.spec().kind().label().to_string(),
            name: self.spec().name.clone(),
            up: self.is_up().unwrap_or(false),
            delta: match self.effect() {
                Effect::Delta(d) => d,
                _ => 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::vrrpnode::{
        ResolvedGarp, ResolvedTrack, ResolvedTrackProcess, ResolvedTrackScript, VrrpState,
    };
    use vrrp::{
        Auth, Family, GarpConfig, Instance, Interval, Observation, Rule, StartState, Version,
    };

    /// The user's track-script.conf, resolved (VIP moved to a documentation range).
    fn resolved() -> ResolvedInstance {
        ResolvedInstance {
            name: "VI_1".into(),
            virtual_router_id: 51,
            version: 2,
            interface: Some("eth0".into()),
            priority: 244,
            initial_state: InitialState::Master,
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
            vec![IpAddr::V4(vrrp::packet::MULTICAST_V4)]
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
            // Cluster mode: an authKey whose password the node's Secret did not give.
            (
                Box::new(|r| {
                    r.auth_pass = None;
                    r.auth_key = Some("ns.web".into());
                }),
                "authKey",
            ),
        ];
        for (mutate, field) in cases {
            let mut r = resolved();
            mutate(&mut r);
            let e = InstanceConfig::from_resolved(&r, "eth0", PRIMARY).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert_eq!(e.instance, "VI_1");
            assert!(e.to_string().starts_with("instance \"VI_1\": "), "{e}");
        }
        // With the password resolved from the Secret, the same instance runs with PASS auth,
        // and no error text carries the password.
        let mut r = resolved();
        r.auth_key = Some("ns.web".into());
        r.auth_pass = Some("12345".into());
        assert!(InstanceConfig::from_resolved(&r, "eth0", PRIMARY).is_ok());
        r.auth_pass = Some("123456789".into());
        let e = InstanceConfig::from_resolved(&r, "eth0", PRIMARY).unwrap_err();
        assert!(!e.to_string().contains("123456789"), "{e}");
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

    /// The status assertions of the core's
    /// `tracker_state_survives_update_and_weight_change_applies`, through the conversion.
    #[test]
    fn status_reports_tracker_delta_and_state_after_update() {
        let t0 = std::time::Instant::now();
        let mut r = resolved();
        r.version = 3;
        r.auth_pass = None;
        r.initial_state = InitialState::Backup;
        r.priority = 100;
        r.track.scripts.clear();
        r.track.processes[0].name = "p".into();
        let mut i =
            Instance::new(InstanceConfig::from_resolved(&r, "eth0", PRIMARY).unwrap()).unwrap();
        i.start(t0);
        assert!(i.handle_tracker(t0, "p", Observation::ProcessCount(1)));
        assert_eq!(i.effective_priority(), 110);
        let mut c = i.config().clone();
        c.trackers[0].weight = 20;
        i.update_config(t0, c).unwrap();
        assert_eq!(i.effective_priority(), 120);
        assert_eq!(i.status().trackers[0].delta, 20);
        assert_eq!(i.status().state, Some(VrrpState::Backup));
        let s = i.status();
        assert_eq!(s.name, "VI_1");
        assert_eq!(s.effective_priority, Some(120));
        assert_eq!(s.trackers[0].kind, "process");
        assert!(s.trackers[0].up);
        assert_eq!(s.last_transition_time, None);
        assert_eq!(s.reason.as_deref(), Some("startup"));
    }
}
