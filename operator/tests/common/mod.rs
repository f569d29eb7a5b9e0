//! Builders for the objects the planner and executor tests feed in.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use crds::virtualip::VirtualIPSpec;
use crds::vrrpnode::{InstanceStatus, VRRPNodeStatus, VrrpState};
use crds::{VRRPNode, VRRPNodeSpec, VirtualIP};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use operator::planner::World;

pub const T0: i64 = 1_800_000_000;

pub fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).unwrap()
}

/// A Ready node with labels and InternalIPs.
pub fn node(name: &str, labels: &[(&str, &str)], ips: &[&str]) -> Arc<Node> {
    Arc::new(node_obj(name, labels, ips, true))
}

pub fn node_obj(name: &str, labels: &[(&str, &str)], ips: &[&str], ready: bool) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            addresses: Some(
                ips.iter()
                    .map(|a| NodeAddress {
                        type_: "InternalIP".into(),
                        address: a.to_string(),
                    })
                    .chain(std::iter::once(NodeAddress {
                        type_: "Hostname".into(),
                        address: name.into(),
                    }))
                    .collect(),
            ),
            ..Default::default()
        }),
    }
}

pub fn not_ready(name: &str, ips: &[&str]) -> Arc<Node> {
    Arc::new(node_obj(name, &[], ips, false))
}

pub fn deleting_node(name: &str, ips: &[&str]) -> Arc<Node> {
    let mut n = node_obj(name, &[], ips, true);
    n.metadata.deletion_timestamp = Some(Time(ts(T0)));
    Arc::new(n)
}

pub fn spec(addr: &str) -> VirtualIPSpec {
    VirtualIPSpec {
        addresses: vec![addr.into()],
        ..Default::default()
    }
}

pub fn selector(labels: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        match_expressions: None,
    }
}

/// A VirtualIP in namespace `ns` created `age_rank` seconds after T0 (smaller = older).
pub fn vip(ns: &str, name: &str, age_rank: i64, spec: VirtualIPSpec) -> VirtualIP {
    let mut v = VirtualIP::new(name, spec);
    v.metadata.namespace = Some(ns.into());
    v.metadata.uid = Some(format!("uid-{ns}-{name}"));
    v.metadata.generation = Some(1);
    v.metadata.creation_timestamp = Some(Time(ts(T0 + age_rank)));
    v
}

pub fn secret(ns: &str, name: &str, data: &[(&str, &str)]) -> Arc<Secret> {
    Arc::new(Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    })
}

/// A VRRPNode whose agent reports `(instance, state, effective priority)`.
pub fn report(node: &str, items: &[(&str, VrrpState, u8)]) -> Arc<VRRPNode> {
    let mut v = VRRPNode::new(node, VRRPNodeSpec::default());
    v.status = Some(VRRPNodeStatus {
        instances: items
            .iter()
            .map(|(name, state, prio)| InstanceStatus {
                name: name.to_string(),
                state: Some(*state),
                effective_priority: Some(*prio),
                master_address: (*state == VrrpState::Master).then(|| format!("addr-of-{node}")),
                fault_reason: (*state == VrrpState::Fault).then(|| "interface eth9 is down".into()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    Arc::new(v)
}

pub fn world(vips: Vec<VirtualIP>, nodes: Vec<Arc<Node>>) -> World {
    World {
        virtual_ips: vips.into_iter().map(Arc::new).collect(),
        secrets: Vec::new(),
        agents: live(&nodes),
        nodes,
        vrrp_nodes: Vec::new(),
        script_policy: Default::default(),
        now: ts(T0 + 1000),
    }
}

/// Every node's agent fresh.
pub fn live(
    nodes: &[Arc<Node>],
) -> std::collections::BTreeMap<String, operator::planner::AgentLiveness> {
    nodes
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .map(|n| (n, operator::planner::AgentLiveness::Fresh))
        .collect()
}

/// Copy each planned status into its VirtualIP, as if the executor had written it.
pub fn write_back(w: &mut World, plan: &operator::planner::Plan) {
    w.virtual_ips = w
        .virtual_ips
        .iter()
        .map(|v| {
            let mut v = (**v).clone();
            if let Some(p) = plan.virtual_ips.get(&operator::planner::vip_key(&v)) {
                v.status = Some(p.status.clone());
            }
            Arc::new(v)
        })
        .collect();
}

pub fn three_nodes() -> Vec<Arc<Node>> {
    vec![
        node("n1", &[("pool", "a")], &["192.0.2.1", "2001:db8::1"]),
        node("n2", &[("pool", "a")], &["192.0.2.2", "2001:db8::2"]),
        node("n3", &[("pool", "b")], &["192.0.2.3", "2001:db8::3"]),
    ]
}

/// Plan as if every report had been seen in its state for an hour (convergence is over).
pub fn plan_settled(w: &World) -> operator::planner::Plan {
    let long_ago = w.now - k8s_openapi::jiff::SignedDuration::from_hours(1);
    let seen = operator::planner::ReportIndex::new(&w.vrrp_nodes, long_ago);
    operator::planner::plan_with(w, Some(&seen))
}
