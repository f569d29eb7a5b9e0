//! Several nodes' keepalived.conf files → one `VirtualIP` per virtual router, for
//! `kube-vrrp-agent convert a.conf b.conf c.conf`.
//!
//! A keepalived cluster is written as one file per node that repeat the same instances with a
//! few node-specific values. The merge keeps what every file agrees on once, and turns what
//! keepalived lets differ per node into `nodes[]` overrides: priority, initial state,
//! interface and advert source address (`unicast_src_ip`). The unicast peers of all files
//! (and every node's own source address) become one list; at resolution each node leaves out
//! its own addresses. The VirtualIP is restricted to the listed nodes by a
//! `kubernetes.io/hostname` node selector, as the keepalived cluster had exactly these hosts.
//!
//! Instances are matched across files by virtual router id and address family. A value that
//! differs between files and that a VirtualIP cannot carry per node (advert interval, the
//! addresses, authentication, trackers, ...) is an error naming both places.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::convert::{Conversion, ConvertOptions, Converted, convert_for};
use super::diag::{Diagnostics, Span};
use super::model::{Config, Instance};
use crds::validate::validate_spec;
use crds::virtualip::{NodeOverride, VirtualIPSpec};

/// One node's configuration.
#[derive(Debug, Clone, Copy)]
pub struct NodeConfig<'a> {
    /// The Kubernetes node name.
    pub node: &'a str,
    /// The node's keepalived.conf, as read.
    pub config: &'a Config,
}

/// The label every Node carries with its host name, used to keep the VirtualIP on the nodes
/// the keepalived cluster had.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// One instance of one node: its converted spec and where it was written.
struct Member<'a> {
    node: &'a str,
    instance: &'a Instance,
    item: Converted,
}

/// Merge the nodes' configurations into one VirtualIP (and Secret) per virtual router.
pub fn convert_cluster(nodes: &[NodeConfig<'_>], namespace: Option<&str>) -> Conversion {
    let mut d = Diagnostics::default();
    // Every node's instances converted on their own, with the node's overrides.
    let mut per_node: Vec<Vec<Member<'_>>> = Vec::new();
    for (n, nc) in nodes.iter().enumerate() {
        let opts = ConvertOptions {
            namespace: namespace.map(str::to_string),
            node: Some(nc.node.to_string()),
        };
        let conv = convert_for(nc.config, &opts, n == 0);
        d.extend(conv.diagnostics);
        per_node.push(
            conv.items
                .into_iter()
                .zip(&nc.config.instances)
                .map(|(item, instance)| Member {
                    node: nc.node,
                    instance,
                    item,
                })
                .collect(),
        );
    }

    // Group by (VRID, family), in the order of first appearance.
    let mut order: Vec<(u8, bool)> = Vec::new();
    let mut groups: BTreeMap<(u8, bool), Vec<Member<'_>>> = BTreeMap::new();
    for members in per_node {
        for m in members {
            let Some(vrid) = m.instance.virtual_router_id else {
                continue;
            };
            let key = (vrid, m.instance.is_ipv6());
            if !groups.contains_key(&key) {
                order.push(key);
            }
            let g = groups.entry(key).or_default();
            if let Some(prev) = g.iter().find(|p| p.node == m.node) {
                d.error(
                    &m.instance.span,
                    format!(
                        "vrrp_instance {}: virtual_router_id {} is also used by vrrp_instance {} ({}) of the same node",
                        m.instance.name, key.0, prev.instance.name, prev.instance.span
                    ),
                );
                continue;
            }
            g.push(m);
        }
    }

    let mut items = Vec::new();
    for key in order {
        let Some(members) = groups.remove(&key) else {
            continue;
        };
        if let Some(item) = merge_group(nodes, members, &mut d) {
            items.push(item);
        }
    }
    Conversion {
        items,
        diagnostics: d,
    }
}

/// The span of the first of `keywords` written in `i`, else the instance's own.
fn span_of<'i>(i: &'i Instance, keywords: &[&str]) -> &'i Span {
    keywords
        .iter()
        .filter_map(|k| i.spans.get(*k))
        .min()
        .unwrap_or(&i.span)
}

/// A value as shown in a message.
fn show<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_string(v) {
        Ok(s) if s == "null" => "unset".into(),
        Ok(s) => s,
        Err(_) => "?".into(),
    }
}

fn merge_group(
    nodes: &[NodeConfig<'_>],
    mut members: Vec<Member<'_>>,
    d: &mut Diagnostics,
) -> Option<Converted> {
    let first_inst = members.first()?.instance;
    let owner = format!("vrrp_instance {}", first_inst.name);
    let vrid = first_inst.virtual_router_id.unwrap_or_default();
    let mut ok = true;

    // Every node must run the instance: a VirtualIP runs on every node it selects.
    for nc in nodes {
        if !members.iter().any(|m| m.node == nc.node) {
            d.error(
                &first_inst.span,
                format!(
                    "{owner} (virtual_router_id {vrid}) is in this file but not in node {}'s file; a VirtualIP runs on every one of its nodes: add the instance there, or convert the files separately",
                    nc.node
                ),
            );
            ok = false;
        }
    }
    for m in &members[1..] {
        if m.instance.name != first_inst.name {
            d.warning(
                &m.instance.span,
                format!(
                    "vrrp_instance {} has virtual_router_id {vrid} like vrrp_instance {} ({}); they are merged into one VirtualIP named after the first",
                    m.instance.name, first_inst.name, first_inst.span
                ),
            );
        }
    }

    let base = members[0].item.virtual_ip.spec.clone();
    // (field, keepalived keywords, value getter) of everything the nodes must agree on.
    type Get = fn(&VirtualIPSpec) -> String;
    let shared: &[(&str, &[&str], Get)] = &[
        ("version", &["version"], |s| show(&s.version)),
        ("advert_int", &["advert_int"], |s| show(&s.advert_interval)),
        ("preempt / nopreempt", &["nopreempt", "preempt"], |s| {
            show(&s.preempt)
        }),
        ("preempt_delay", &["preempt_delay"], |s| {
            show(&s.preempt_delay)
        }),
        (
            "accept / no_accept",
            &["accept", "no_accept", "strict_mode"],
            |s| show(&s.accept),
        ),
        ("virtual_ipaddress", &["virtual_ipaddress"], |s| {
            let set: BTreeSet<&String> = s.addresses.iter().collect();
            show(&set)
        }),
        (
            "virtual_ipaddress_excluded",
            &["virtual_ipaddress_excluded"],
            |s| {
                let set: BTreeSet<&String> = s.excluded_addresses.iter().collect();
                show(&set)
            },
        ),
        ("authentication", &["authentication"], |s| {
            show(&s.authentication.is_some())
        }),
        (
            "unicast_peer (unicast or multicast)",
            &["unicast_peer"],
            |s| show(&s.unicast.is_some()),
        ),
        ("unicast_ttl", &["unicast_ttl"], |s| {
            show(&s.unicast.as_ref().and_then(|u| u.ttl))
        }),
        (
            "the trackers (track_interface, track_script, track_process, track_file)",
            &[
                "track_interface",
                "track_script",
                "track_process",
                "track_file",
            ],
            |s| show(&s.track),
        ),
        (
            "garp_master_*",
            &[
                "garp_master_delay",
                "garp_master_repeat",
                "garp_master_refresh",
                "garp_master_refresh_repeat",
            ],
            |s| show(&s.garp),
        ),
        (
            "the notify scripts",
            &[
                "notify",
                "notify_master",
                "notify_backup",
                "notify_fault",
                "notify_stop",
            ],
            |s| show(&s.notify),
        ),
        ("the vrrp_sync_group", &[], |s| show(&s.sync_group)),
        (
            "use_vmac / vmac_xmit_base",
            &["use_vmac", "vmac_xmit_base"],
            |s| show(&s.virtual_mac),
        ),
        ("the vrrp_sync_group's notify scripts", &[], |s| {
            show(&s.sync_group_notify)
        }),
    ];
    for m in &members[1..] {
        let spec = &m.item.virtual_ip.spec;
        for (what, keywords, get) in shared {
            let (a, b) = (get(&base), get(spec));
            if a != b {
                d.error(
                    span_of(m.instance, keywords),
                    format!(
                        "{owner}: {what} is {b} here but {a} in {} (node {}); a VirtualIP has one value for every node",
                        span_of(first_inst, keywords),
                        members[0].node
                    ),
                );
                ok = false;
            }
        }
        if m.item.auth_pass != members[0].item.auth_pass {
            d.error(
                span_of(m.instance, &["authentication"]),
                format!(
                    "{owner}: auth_pass differs from {} (node {}); a VirtualIP has one password for every node",
                    span_of(first_inst, &["authentication"]),
                    members[0].node
                ),
            );
            ok = false;
        }
    }

    // Per-node values: each node's own override, as its conversion made it.
    let mut spec = base;
    spec.priority = None;
    spec.state = None;
    spec.nodes = Vec::new();
    let interfaces: BTreeSet<Option<String>> = members
        .iter()
        .map(|m| m.item.virtual_ip.spec.interface.clone())
        .collect();
    let same_interface = interfaces.len() == 1;
    if !same_interface {
        spec.interface = None;
    }
    let mut peers: BTreeSet<IpAddr> = BTreeSet::new();
    for m in &members {
        let s = &m.item.virtual_ip.spec;
        let own = s.nodes.iter().find(|o| o.name == m.node);
        let o = NodeOverride {
            name: m.node.to_string(),
            priority: own.and_then(|o| o.priority),
            state: own.and_then(|o| o.state),
            interface: if same_interface {
                None
            } else {
                s.interface.clone()
            },
            source_address: own.and_then(|o| o.source_address.clone()),
        };
        if let Some(src) = o.source_address.as_ref().and_then(|a| a.parse().ok()) {
            peers.insert(src);
        }
        peers.extend(m.instance.unicast_peer.iter().copied());
        spec.nodes.push(o);
    }
    if let Some(u) = spec.unicast.as_mut() {
        u.peers = peers.iter().map(ToString::to_string).collect();
    }
    spec.node_selector = Some(LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: HOSTNAME_LABEL.into(),
            operator: "In".into(),
            values: Some(members.iter().map(|m| m.node.to_string()).collect()),
        }]),
        match_labels: None,
    });
    for p in validate_spec(&spec).iter() {
        d.error(
            &first_inst.span,
            format!("{owner}: {}: {}", p.path, p.message),
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    let mut first = members.swap_remove(0);
    first.item.virtual_ip.spec = spec;
    Some(first.item)
}
