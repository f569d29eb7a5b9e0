//! Pure resolution: a VirtualIP spec × facts about one node → the [`ResolvedInstance`] that
//! node's agent runs.
//!
//! The operator calls it with what it knows (node name, priority it chose, peers, Secret
//! content); standalone mode calls it with the host's interfaces. Every default is applied here
//! and nowhere else, so the agent never needs to know keepalived's defaults.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::duration_ms;
use crate::validate::{Problems, parse_address, validate_spec};
use crate::virtualip::{InitialState, VirtualIPSpec};
use crate::vrrpnode::{
    ObjectRef, ResolvedGarp, ResolvedInstance, ResolvedNotify, ResolvedTrack, ResolvedTrackFile,
    ResolvedTrackHttp, ResolvedTrackInterface, ResolvedTrackPods, ResolvedTrackProcess,
    ResolvedTrackScript,
};

/// One interface of a node and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceFacts {
    /// Interface name.
    pub name: String,
    /// Addresses with prefix length.
    pub addresses: Vec<IpNet>,
}

/// What is known about the node an instance is resolved for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// Node (host) name.
    pub name: String,
    /// Interfaces; empty when unknown (the operator's view), then the agent picks the interface.
    pub interfaces: Vec<InterfaceFacts>,
    /// Further addresses of the node whose interface is not known (the operator's view: the
    /// Node's `status.addresses`). With the interfaces' addresses, these are the node's own
    /// addresses, never used as its unicast peers.
    pub addresses: Vec<IpAddr>,
}

impl NodeFacts {
    /// Every address known to be the node's own.
    pub fn own_addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.interfaces
            .iter()
            .flat_map(|i| i.addresses.iter().map(IpNet::addr))
            .chain(self.addresses.iter().copied())
    }
}

/// Inputs of [`resolve`] besides the spec.
#[derive(Debug, Clone)]
pub struct ResolveInput<'a> {
    /// Instance name: `NAMESPACE/NAME` in-cluster, the keepalived instance name standalone.
    pub instance_name: String,
    /// The VirtualIP this comes from, if any.
    pub virtual_ip: Option<ObjectRef>,
    /// The spec.
    pub spec: &'a VirtualIPSpec,
    /// VRID to use when the spec has none (allocated by the operator).
    pub allocated_vrid: Option<u8>,
    /// The node.
    pub node: &'a NodeFacts,
    /// Priority to use on this node when `spec.nodes` has no override (the operator's
    /// distinct-priority scheme); `None` ⇒ the spec's priority.
    pub default_priority: Option<u8>,
    /// Addresses of the other eligible nodes, used as unicast peers when unicast is enabled
    /// without an explicit list (the caller gives each node's `sourceAddress` override rather
    /// than its InternalIPs when it has one).
    pub peer_node_addresses: Vec<IpAddr>,
    /// The password read from the referenced Secret, when authentication is configured.
    pub auth_pass: Option<crate::auth::Password>,
}

/// Resolve one instance for one node. Fails with every problem found (spec problems included).
pub fn resolve(input: &ResolveInput<'_>) -> Result<ResolvedInstance, Problems> {
    let spec = input.spec;
    let mut problems = validate_spec(spec);

    let vrid = spec.virtual_router_id.or(input.allocated_vrid);
    if vrid.is_none() {
        problems.0.push(crate::validate::Problem {
            path: "spec.virtualRouterID".into(),
            message: "not set and none was allocated".into(),
        });
    }

    let auth_pass = match (&spec.authentication, &input.auth_pass) {
        (None, _) => None,
        (Some(_), None) => {
            problems.0.push(crate::validate::Problem {
                path: "spec.authentication.passwordSecretRef".into(),
                message: "the password could not be read".into(),
            });
            None
        }
        (Some(_), Some(pw)) if pw.is_empty() || pw.len() > 8 => {
            problems.0.push(crate::validate::Problem {
                path: "spec.authentication.passwordSecretRef".into(),
                message: format!("the password must be 1 to 8 bytes, it has {}", pw.len()),
            });
            None
        }
        (Some(_), Some(pw)) => Some(pw.clone()),
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let vrid = vrid.unwrap_or_default();

    let addresses: Vec<IpNet> = spec
        .addresses
        .iter()
        .filter_map(|a| parse_address(a))
        .collect();
    let node_override = spec.nodes.iter().find(|n| n.name == input.node.name);

    let priority = node_override
        .and_then(|n| n.priority)
        .or(input.default_priority)
        .unwrap_or_else(|| spec.priority_or_default());
    let initial_state = node_override
        .and_then(|n| n.state)
        .or(spec.state)
        .unwrap_or(InitialState::Backup);
    let interface = node_override
        .and_then(|n| n.interface.clone())
        .or_else(|| spec.interface.clone())
        .or_else(|| {
            addresses
                .first()
                .and_then(|a| interface_for(input.node, a.addr()))
        });

    let unicast_source: Option<IpAddr> = node_override
        .and_then(|n| n.source_address.as_deref())
        .or_else(|| {
            spec.unicast
                .as_ref()
                .and_then(|u| u.source_address.as_deref())
        })
        .and_then(|a| a.parse().ok());

    let (unicast_peers, allow_lower_ttl, unicast_ttl) = match &spec.unicast {
        Some(u) if u.enabled || !u.peers.is_empty() => {
            let v4 = addresses.first().is_none_or(|a| a.addr().is_ipv4());
            // One peer list is usually written for the whole cluster: each node leaves out
            // its own addresses (a node never advertises to itself).
            let own: Vec<IpAddr> = input.node.own_addresses().chain(unicast_source).collect();
            let mut peers: Vec<IpAddr> = if u.peers.is_empty() {
                input.peer_node_addresses.clone()
            } else {
                u.peers.iter().filter_map(|p| p.parse().ok()).collect()
            };
            peers.retain(|p| p.is_ipv4() == v4 && !own.contains(p));
            peers.sort();
            peers.dedup();
            (
                peers.iter().map(ToString::to_string).collect(),
                u.allow_lower_ttl.unwrap_or(false),
                u.ttl.filter(|&t| t != 255),
            )
        }
        _ => (Vec::new(), false, None),
    };

    Ok(ResolvedInstance {
        name: input.instance_name.clone(),
        virtual_ip: input.virtual_ip.clone(),
        virtual_router_id: vrid,
        version: spec.version_or_default(),
        interface,
        priority,
        initial_state,
        advert_interval_ms: ms32(spec.advert_interval_ms()),
        preempt: spec.preempt_or_default(),
        preempt_delay_ms: spec.preempt_delay.map_or(0, |d| ms32(duration_ms(d))),
        accept: spec.accept.unwrap_or(true),
        addresses: addresses.iter().map(ToString::to_string).collect(),
        excluded_addresses: spec
            .excluded_addresses
            .iter()
            .filter_map(|a| parse_address(a))
            .map(|a| a.to_string())
            .collect(),
        unicast_source: unicast_source.map(|a| a.to_string()),
        use_vmac: spec.virtual_mac.is_some(),
        // keepalived: unicast on a virtual MAC always sends from the base interface.
        vmac_xmit_base: spec
            .virtual_mac
            .as_ref()
            .is_some_and(|v| v.xmit_base.unwrap_or(false) || !unicast_peers.is_empty()),
        unicast_ttl,
        unicast_peers,
        allow_lower_ttl,
        auth_pass,
        auth_key: None,
        track: resolve_track(spec, input.virtual_ip.as_ref()),
        garp: resolve_garp(spec),
        notify: resolve_notify(spec.notify.as_ref()),
        sync_group_notify: if spec.sync_group.is_some() {
            resolve_notify(spec.sync_group_notify.as_ref())
        } else {
            ResolvedNotify::default()
        },
        sync_group: spec.sync_group.as_ref().map(|g| match &input.virtual_ip {
            Some(r) => format!("{}/{}", r.namespace, g),
            None => g.clone(),
        }),
        adopt_static: false,
        peer_priorities: None,
    })
}

/// The interface whose subnet holds `addr`, if exactly known.
pub fn interface_for(node: &NodeFacts, addr: IpAddr) -> Option<String> {
    node.interfaces
        .iter()
        .find(|i| i.addresses.iter().any(|n| n.contains(&addr)))
        .map(|i| i.name.clone())
}

fn ms32(ms: u64) -> u32 {
    u32::try_from(ms).unwrap_or(u32::MAX)
}

/// Tracker names are shared node-wide (one script runs once however many instances track it),
/// so in-cluster they are scoped by VirtualIP: `NAMESPACE/NAME/TRACKER`. Standalone keeps
/// keepalived's global names.
fn tracker_name(vip: Option<&ObjectRef>, name: &str) -> String {
    match vip {
        Some(r) => format!("{}/{}/{}", r.namespace, r.name, name),
        None => name.to_string(),
    }
}

fn resolve_track(spec: &VirtualIPSpec, vip: Option<&ObjectRef>) -> ResolvedTrack {
    let Some(t) = &spec.track else {
        return ResolvedTrack::default();
    };
    ResolvedTrack {
        interfaces: t
            .interfaces
            .iter()
            .map(|x| ResolvedTrackInterface {
                name: x.name.clone(),
                weight: x.weight.unwrap_or(0),
                reverse: x.reverse.unwrap_or(false),
            })
            .collect(),
        scripts: t
            .scripts
            .iter()
            .map(|x| {
                let interval_ms = x.interval.map_or(1000, |d| ms32(duration_ms(d)));
                ResolvedTrackScript {
                    name: tracker_name(vip, &x.name),
                    script: x.script.clone(),
                    interval_ms,
                    // keepalived: a script without a timeout may run for one interval.
                    timeout_ms: x.timeout.map_or(interval_ms, |d| ms32(duration_ms(d))),
                    rise: x.rise.unwrap_or(1),
                    fall: x.fall.unwrap_or(1),
                    weight: x.weight.unwrap_or(0),
                    reverse: x.reverse.unwrap_or(false),
                    user: x.user.clone(),
                }
            })
            .collect(),
        processes: t
            .processes
            .iter()
            .map(|x| ResolvedTrackProcess {
                name: tracker_name(vip, &x.name),
                process: x.process.clone(),
                weight: x.weight.unwrap_or(0),
                quorum: x.quorum.unwrap_or(1),
                reverse: x.reverse.unwrap_or(false),
            })
            .collect(),
        files: t
            .files
            .iter()
            .map(|x| ResolvedTrackFile {
                name: tracker_name(vip, &x.name),
                path: x.path.clone(),
                weight: x.weight.unwrap_or(1),
                reverse: x.reverse.unwrap_or(false),
            })
            .collect(),
        pods: t
            .pods
            .iter()
            .map(|x| ResolvedTrackPods {
                name: tracker_name(vip, &x.name),
                namespace: vip.map(|r| r.namespace.clone()).unwrap_or_default(),
                selector: selector_string(&x.selector),
                weight: x.weight.unwrap_or(0),
                quorum: x.quorum.unwrap_or(1),
            })
            .collect(),
        http: t
            .http
            .iter()
            .map(|x| {
                let interval_ms = x.interval.map_or(1000, |d| ms32(duration_ms(d)));
                ResolvedTrackHttp {
                    name: tracker_name(vip, &x.name),
                    url: x.url.clone(),
                    expect_status: x.expect_status.unwrap_or(200),
                    interval_ms,
                    // As for scripts: without a timeout a check may take one interval.
                    timeout_ms: x.timeout.map_or(interval_ms, |d| ms32(duration_ms(d))),
                    rise: x.rise.unwrap_or(1),
                    fall: x.fall.unwrap_or(1),
                    weight: x.weight.unwrap_or(0),
                    reverse: x.reverse.unwrap_or(false),
                    ca_file: x.ca_file.clone(),
                    server_name: x.server_name.clone(),
                    insecure_skip_verify: x.insecure_skip_verify.unwrap_or(false),
                }
            })
            .collect(),
    }
}

fn resolve_garp(spec: &VirtualIPSpec) -> ResolvedGarp {
    let d = ResolvedGarp::default();
    let Some(g) = &spec.garp else { return d };
    ResolvedGarp {
        master_delay_ms: g
            .master_delay
            .map_or(d.master_delay_ms, |x| ms32(duration_ms(x))),
        master_repeat: g.master_repeat.unwrap_or(d.master_repeat),
        master_refresh_ms: g
            .master_refresh
            .map_or(d.master_refresh_ms, |x| ms32(duration_ms(x))),
        master_refresh_repeat: g.master_refresh_repeat.unwrap_or(d.master_refresh_repeat),
    }
}

fn resolve_notify(notify: Option<&crate::virtualip::Notify>) -> ResolvedNotify {
    let Some(n) = notify else {
        return ResolvedNotify {
            timeout_ms: 30_000,
            ..Default::default()
        };
    };
    ResolvedNotify {
        master: n.master.clone(),
        backup: n.backup.clone(),
        fault: n.fault.clone(),
        stop: n.stop.clone(),
        any: n.any.clone(),
        timeout_ms: n.timeout.map_or(30_000, |d| ms32(duration_ms(d))),
    }
}

/// A label selector in the string form the API's `labelSelector` parameter takes.
pub fn selector_string(sel: &LabelSelector) -> String {
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => format!("{} {other} ({values})", e.key),
        });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtualip::{Authentication, NodeOverride, SecretKeyRef, TrackScript, Unicast};

    fn spec() -> VirtualIPSpec {
        VirtualIPSpec {
            addresses: vec!["192.0.2.200/24".into()],
            virtual_router_id: Some(51),
            ..Default::default()
        }
    }

    fn node(name: &str) -> NodeFacts {
        NodeFacts {
            name: name.into(),
            interfaces: vec![
                InterfaceFacts {
                    name: "lo".into(),
                    addresses: vec!["127.0.0.1/8".parse().unwrap()],
                },
                InterfaceFacts {
                    name: "eth1".into(),
                    addresses: vec!["192.0.2.11/24".parse().unwrap()],
                },
            ],
            addresses: vec![],
        }
    }

    fn input<'a>(spec: &'a VirtualIPSpec, node: &'a NodeFacts) -> ResolveInput<'a> {
        ResolveInput {
            instance_name: "default/web".into(),
            virtual_ip: Some(ObjectRef {
                namespace: "default".into(),
                name: "web".into(),
            }),
            spec,
            allocated_vrid: None,
            node,
            default_priority: None,
            peer_node_addresses: vec![],
            auth_pass: None,
        }
    }

    #[test]
    fn defaults_are_keepalived_like_and_interface_is_found_by_subnet() {
        let s = spec();
        let n = node("a");
        let r = resolve(&input(&s, &n)).unwrap();
        assert_eq!(r.virtual_router_id, 51);
        assert_eq!(r.version, 3);
        assert_eq!(r.priority, 100);
        assert_eq!(r.advert_interval_ms, 1000);
        assert!(r.preempt);
        assert_eq!(r.initial_state, InitialState::Backup);
        assert_eq!(r.interface.as_deref(), Some("eth1"));
        assert_eq!(r.addresses, vec!["192.0.2.200/24"]);
        assert_eq!(r.garp, ResolvedGarp::default());
        assert!(r.unicast_peers.is_empty());
    }

    #[test]
    fn bare_addresses_get_a_host_prefix() {
        let mut s = spec();
        s.addresses = vec!["192.0.2.200".into()];
        let n = NodeFacts {
            name: "a".into(),
            ..Default::default()
        };
        let r = resolve(&input(&s, &n)).unwrap();
        assert_eq!(r.addresses, vec!["192.0.2.200/32"]);
        assert_eq!(
            r.interface, None,
            "unknown interfaces leave the choice to the agent"
        );
    }

    #[test]
    fn node_override_beats_default_priority_which_beats_spec() {
        let mut s = spec();
        s.priority = Some(150);
        s.nodes = vec![NodeOverride {
            name: "a".into(),
            priority: Some(200),
            interface: Some("eth9".into()),
            ..Default::default()
        }];
        let a = node("a");
        let b = node("b");
        let mut i = input(&s, &a);
        i.default_priority = Some(149);
        let r = resolve(&i).unwrap();
        assert_eq!((r.priority, r.interface.as_deref()), (200, Some("eth9")));
        let mut i = input(&s, &b);
        i.default_priority = Some(149);
        assert_eq!(resolve(&i).unwrap().priority, 149);
        assert_eq!(resolve(&input(&s, &b)).unwrap().priority, 150);
    }

    #[test]
    fn unicast_peers_are_other_nodes_of_the_family_sorted() {
        let mut s = spec();
        s.unicast = Some(Unicast {
            enabled: true,
            ..Default::default()
        });
        let n = node("a");
        let mut i = input(&s, &n);
        i.peer_node_addresses = vec![
            "192.0.2.13".parse().unwrap(),
            "2001:db8::12".parse().unwrap(),
            "192.0.2.12".parse().unwrap(),
            "192.0.2.11".parse().unwrap(),
        ];
        let r = resolve(&i).unwrap();
        assert_eq!(
            r.unicast_peers,
            vec!["192.0.2.12", "192.0.2.13"],
            "own address and other family dropped"
        );
    }

    #[test]
    fn one_peer_list_for_the_cluster_leaves_out_each_nodes_own_addresses() {
        let mut s = spec();
        s.unicast = Some(Unicast {
            enabled: true,
            peers: vec![
                "192.0.2.11".into(),
                "192.0.2.12".into(),
                "192.0.2.13".into(),
                "192.0.2.14".into(),
            ],
            ttl: Some(64),
            ..Default::default()
        });
        s.nodes = vec![NodeOverride {
            name: "a".into(),
            source_address: Some("192.0.2.14".into()),
            ..Default::default()
        }];
        // Node a: 192.0.2.11 on eth1, 192.0.2.12 known from the Node object, 192.0.2.14 its
        // source address.
        let mut n = node("a");
        n.addresses = vec!["192.0.2.12".parse().unwrap()];
        let r = resolve(&input(&s, &n)).unwrap();
        assert_eq!(r.unicast_peers, vec!["192.0.2.13"]);
        assert_eq!(r.unicast_source.as_deref(), Some("192.0.2.14"));
        assert_eq!(r.unicast_ttl, Some(64));
        // Node b has no override: the spec-wide source (unset) and every other address.
        let b = NodeFacts {
            name: "b".into(),
            addresses: vec!["192.0.2.13".parse().unwrap()],
            ..Default::default()
        };
        let r = resolve(&input(&s, &b)).unwrap();
        assert_eq!(
            r.unicast_peers,
            vec!["192.0.2.11", "192.0.2.12", "192.0.2.14"]
        );
        assert_eq!(r.unicast_source, None);
        // A spec-wide source address applies where no node override says otherwise.
        s.unicast.as_mut().unwrap().source_address = Some("192.0.2.12".into());
        let r = resolve(&input(&s, &b)).unwrap();
        assert_eq!(r.unicast_source.as_deref(), Some("192.0.2.12"));
        assert_eq!(r.unicast_peers, vec!["192.0.2.11", "192.0.2.14"]);
        // TTL 255 is the default and is not written out.
        s.unicast.as_mut().unwrap().ttl = Some(255);
        assert_eq!(resolve(&input(&s, &b)).unwrap().unicast_ttl, None);
    }

    #[test]
    fn a_virtual_mac_with_unicast_always_sends_from_the_base_interface() {
        let mut s = spec();
        s.virtual_mac = Some(crate::virtualip::VirtualMac::default());
        let n = node("a");
        let r = resolve(&input(&s, &n)).unwrap();
        assert!(r.use_vmac && !r.vmac_xmit_base);
        s.unicast = Some(Unicast {
            enabled: true,
            peers: vec!["192.0.2.12".into()],
            ..Default::default()
        });
        let r = resolve(&input(&s, &n)).unwrap();
        assert!(r.use_vmac && r.vmac_xmit_base, "keepalived's rule");
    }

    #[test]
    fn source_address_of_the_other_family_is_refused() {
        let mut s = spec();
        s.nodes = vec![NodeOverride {
            name: "a".into(),
            source_address: Some("2001:db8::1".into()),
            ..Default::default()
        }];
        let n = node("a");
        let text = resolve(&input(&s, &n)).unwrap_err().to_string();
        assert!(
            text.contains("spec.nodes[0].sourceAddress: 2001:db8::1 is not of the family"),
            "{text}"
        );
    }

    #[test]
    fn missing_vrid_and_bad_password_are_reported_together() {
        let mut s = spec();
        s.virtual_router_id = None;
        s.version = Some(2);
        s.authentication = Some(Authentication {
            auth_type: Default::default(),
            password_secret_ref: SecretKeyRef {
                name: "pw".into(),
                key: None,
            },
        });
        let n = node("a");
        let mut i = input(&s, &n);
        i.auth_pass = Some("123456789".into());
        let err = resolve(&i).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("spec.virtualRouterID: not set"), "{text}");
        assert!(
            text.contains("password must be 1 to 8 bytes, it has 9"),
            "{text}"
        );
        i.auth_pass = Some("12345".into());
        i.allocated_vrid = Some(7);
        let r = resolve(&i).unwrap();
        assert_eq!(
            (r.virtual_router_id, r.auth_pass.as_deref()),
            (7, Some("12345"))
        );
    }

    #[test]
    fn http_defaults_and_scoped_names() {
        let mut s = spec();
        s.track = Some(crate::virtualip::Track {
            http: vec![crate::virtualip::TrackHttp {
                name: "readyz".into(),
                url: "https://127.0.0.1:6443/readyz".into(),
                interval: Some(std::time::Duration::from_millis(500).into()),
                insecure_skip_verify: Some(true),
                ..Default::default()
            }],
            ..Default::default()
        });
        let n = node("a");
        let r = resolve(&input(&s, &n)).unwrap();
        let h = &r.track.http[0];
        assert_eq!(h.name, "default/web/readyz");
        assert_eq!(
            (
                h.expect_status,
                h.interval_ms,
                h.timeout_ms,
                h.rise,
                h.fall,
                h.weight
            ),
            (200, 500, 500, 1, 1, 0)
        );
        assert!(h.insecure_skip_verify && !h.reverse && h.ca_file.is_none());
    }

    #[test]
    fn script_defaults_follow_keepalived() {
        let mut s = spec();
        s.track = Some(crate::virtualip::Track {
            scripts: vec![TrackScript {
                name: "c".into(),
                script: "/bin/true".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        let n = node("a");
        let r = resolve(&input(&s, &n)).unwrap();
        let sc = &r.track.scripts[0];
        assert_eq!(
            (sc.interval_ms, sc.timeout_ms, sc.rise, sc.fall, sc.weight),
            (1000, 1000, 1, 1, 0)
        );
    }
}
