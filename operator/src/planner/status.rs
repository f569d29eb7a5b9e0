//! Status aggregation: the agents' reports for one VirtualIP → its desired status, its
//! conditions, and the Events that the change from the observed status calls for.
//!
//! - `phase`: `Conflict` when not deployed (invalid spec, lost VRID, missing Secret);
//!   `Pending` when deployed nowhere or before any agent reports a VRRP state (INIT does not
//!   count); then `Active` (one MASTER), `NoMaster` (none) or `SplitBrain` (several).
//! - `nodes[]`: every node the instance is planned on or reported by, sorted by name, with the
//!   planned base priority and the reported state.
//! - Conditions `Degraded`, `Ready`, `SplitBrain`, `VRIDConflict` (sorted by type). A condition
//!   keeps its `lastTransitionTime` while its status stays the same.
//! - Events fire on transitions only: `MasterElected` (no master → one), `Failover` (master
//!   moved), `SplitBrain` (phase entered), `VRIDConflict` (condition became true),
//!   `InvalidSpec` (spec newly invalid, or invalid differently).

use std::collections::BTreeMap;

use crds::VirtualIP;
use crds::virtualip::{NodeStatus, Phase, VirtualIPStatus};
use crds::vrrpnode::{InstanceStatus, VrrpState};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::{Blocker, VipKey};

/// Condition type: the VirtualIP has exactly one master.
pub const READY: &str = "Ready";
/// Condition type: more than one node reports MASTER.
pub const SPLIT_BRAIN: &str = "SplitBrain";
/// Condition type: the VRID is contested or none is free.
pub const VRID_CONFLICT: &str = "VRIDConflict";
/// Condition type: some node reports FAULT.
pub const DEGRADED: &str = "Degraded";

/// Reason: the spec is invalid (also an event reason).
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
/// Reason: the authentication Secret does not exist.
pub const REASON_SECRET_NOT_FOUND: &str = "SecretNotFound";
/// Reason: the authentication Secret lacks the key.
pub const REASON_SECRET_KEY_NOT_FOUND: &str = "SecretKeyNotFound";
/// Reason: the password is not 1–8 bytes of UTF-8.
pub const REASON_INVALID_PASSWORD: &str = "InvalidPassword";
/// Reason: VRID conflict (also an event reason).
pub const REASON_VRID_CONFLICT: &str = "VRIDConflict";
/// Reason: no VRID left on the network.
pub const REASON_NO_FREE_VRID: &str = "NoFreeVRID";
/// Reason: no node is eligible.
pub const REASON_NO_ELIGIBLE_NODES: &str = "NoEligibleNodes";
/// Reason: waiting for agents.
pub const REASON_PENDING: &str = "Pending";
/// Reason: one master (also an event reason).
pub const REASON_MASTER_ELECTED: &str = "MasterElected";
/// Reason: no master.
pub const REASON_NO_MASTER: &str = "NoMaster";
/// Reason: several masters (also an event reason).
pub const REASON_SPLIT_BRAIN: &str = "SplitBrain";
/// Event reason: the master moved.
pub const REASON_FAILOVER: &str = "Failover";

/// Event severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Informational.
    Normal,
    /// Something needs attention.
    Warning,
}

/// An Event to publish on the VirtualIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedEvent {
    /// Severity.
    pub type_: EventType,
    /// Machine-readable reason (`MasterElected`, `Failover`, ...).
    pub reason: &'static str,
    /// Human-readable note.
    pub note: String,
}

/// Inputs of [`aggregate`].
pub struct StatusInput<'a> {
    /// The observed VirtualIP.
    pub vip: &'a VirtualIP,
    /// Why it is not deployed, if it is not.
    pub blocker: Option<&'a Blocker>,
    /// Its effective VRID.
    pub vrid: Option<u8>,
    /// Newer VirtualIPs that collide with its VRID.
    pub vrid_conflict_with: &'a [VipKey],
    /// Planned node → base priority.
    pub placed: &'a BTreeMap<String, u8>,
    /// Reports (node, instance status), sorted by node.
    pub reports: &'a [(&'a str, &'a InstanceStatus)],
    /// Time for changed conditions.
    pub now: Timestamp,
}

fn key_text(k: &VipKey) -> String {
    format!("{}/{}", k.namespace, k.name)
}

/// Compute the desired status of one VirtualIP.
pub fn aggregate(input: &StatusInput<'_>) -> VirtualIPStatus {
    let old = input.vip.status.as_ref();
    let generation = input.vip.metadata.generation;
    let reported: Vec<(&str, &InstanceStatus)> = input.reports.to_vec();
    let in_state = |s: VrrpState| {
        reported
            .iter()
            .filter(|(_, r)| r.state == Some(s))
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
    };
    let masters = in_state(VrrpState::Master);
    let backups = in_state(VrrpState::Backup);
    let faults = in_state(VrrpState::Fault);
    let any_state = !(masters.is_empty() && backups.is_empty() && faults.is_empty());

    let phase = if input.blocker.is_some() {
        Phase::Conflict
    } else if input.placed.is_empty() || !any_state {
        Phase::Pending
    } else {
        match masters.len() {
            0 => Phase::NoMaster,
            1 => Phase::Active,
            _ => Phase::SplitBrain,
        }
    };

    let master = (masters.len() == 1).then(|| masters[0].to_string());
    let master_address = match &master {
        Some(m) => reported
            .iter()
            .find(|(n, _)| n == m)
            .and_then(|(_, r)| r.master_address.clone()),
        None if masters.is_empty() => reported.iter().find_map(|(_, r)| r.master_address.clone()),
        None => None,
    };

    let mut nodes: BTreeMap<&str, NodeStatus> = BTreeMap::new();
    for (node, prio) in input.placed {
        nodes.insert(
            node,
            NodeStatus {
                node: node.clone(),
                base_priority: Some(*prio),
                ..Default::default()
            },
        );
    }
    for (node, r) in &reported {
        let e = nodes.entry(node).or_insert_with(|| NodeStatus {
            node: node.to_string(),
            ..Default::default()
        });
        e.state = r.state;
        e.effective_priority = r.effective_priority;
        e.trackers = r.trackers.clone();
        e.since = r.last_transition_time.clone();
        e.fault_reason = r.fault_reason.clone();
    }

    // Ready.
    let (ready, ready_reason, ready_msg): (bool, &str, String) = match (input.blocker, phase) {
        (Some(Blocker::InvalidSpec(p)), _) => (
            false,
            REASON_INVALID_SPEC,
            p.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        ),
        (
            Some(Blocker::VridConflict {
                vrid,
                network,
                winner,
            }),
            _,
        ) => (
            false,
            REASON_VRID_CONFLICT,
            format!(
                "VRID {vrid} on {network} is already used by the older VirtualIP {}; this one is not deployed",
                key_text(winner)
            ),
        ),
        (Some(Blocker::NoFreeVrid { network }), _) => (
            false,
            REASON_NO_FREE_VRID,
            format!(
                "every VRID (1-255) on {network} is taken; set spec.virtualRouterID or free one"
            ),
        ),
        (Some(Blocker::Secret { reason, message }), _) => (
            false,
            reason,
            format!("{message}; the instance is not deployed"),
        ),
        (None, Phase::Pending) if input.placed.is_empty() => (
            false,
            REASON_NO_ELIGIBLE_NODES,
            "no node is Ready, not being deleted and matched by spec.nodeSelector".into(),
        ),
        (None, Phase::Pending) => (
            false,
            REASON_PENDING,
            format!(
                "deployed to {} node(s), waiting for their agents to report",
                input.placed.len()
            ),
        ),
        (None, Phase::Active) => (
            true,
            REASON_MASTER_ELECTED,
            format!("node {} is MASTER", masters[0]),
        ),
        (None, Phase::SplitBrain) => (
            false,
            REASON_SPLIT_BRAIN,
            format!("nodes {} all report MASTER", masters.join(", ")),
        ),
        (None, _) => (
            false,
            REASON_NO_MASTER,
            format!(
                "no node reports MASTER ({} BACKUP, {} FAULT)",
                backups.len(),
                faults.len()
            ),
        ),
    };

    let split = if masters.len() > 1 {
        (
            true,
            REASON_SPLIT_BRAIN,
            format!("nodes {} all report MASTER", masters.join(", ")),
        )
    } else {
        (
            false,
            "NoSplitBrain",
            format!("{} node(s) report MASTER", masters.len()),
        )
    };

    let conflict = match input.blocker {
        Some(Blocker::VridConflict {
            vrid,
            network,
            winner,
        }) => (
            true,
            REASON_VRID_CONFLICT,
            format!(
                "VRID {vrid} on {network} is already used by the older VirtualIP {}",
                key_text(winner)
            ),
        ),
        Some(Blocker::NoFreeVrid { network }) => (
            true,
            REASON_NO_FREE_VRID,
            format!("every VRID (1-255) on {network} is taken"),
        ),
        _ if !input.vrid_conflict_with.is_empty() => (
            true,
            REASON_VRID_CONFLICT,
            format!(
                "VRID {} is also requested by the newer VirtualIP(s) {} on the same network; they are not deployed",
                input.vrid.unwrap_or_default(),
                input
                    .vrid_conflict_with
                    .iter()
                    .map(key_text)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        _ => (
            false,
            "NoConflict",
            match input.vrid {
                Some(v) => format!("VRID {v} is not used by another VirtualIP on the same network"),
                None => "no VRID assigned".into(),
            },
        ),
    };

    let degraded = if faults.is_empty() {
        (false, "NoFault", "no node reports FAULT".to_string())
    } else {
        let detail: Vec<String> = reported
            .iter()
            .filter(|(_, r)| r.state == Some(VrrpState::Fault))
            .map(|(n, r)| match &r.fault_reason {
                Some(why) => format!("{n}: {why}"),
                None => n.to_string(),
            })
            .collect();
        (true, "NodeFault", format!("FAULT on {}", detail.join("; ")))
    };

    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let condition = |type_: &str, (status, reason, message): (bool, &str, String)| {
        let status = if status { "True" } else { "False" };
        let since = old_conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(input.now));
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: since,
        }
    };
    let conditions = vec![
        condition(DEGRADED, degraded),
        condition(READY, (ready, ready_reason, ready_msg)),
        condition(SPLIT_BRAIN, split),
        condition(VRID_CONFLICT, conflict),
    ];

    VirtualIPStatus {
        master,
        master_address,
        virtual_router_id: input.vrid,
        phase: Some(phase),
        nodes_summary: Some(format!(
            "{}M/{}B/{}F",
            masters.len(),
            backups.len(),
            faults.len()
        )),
        nodes: nodes.into_values().collect(),
        conditions,
        observed_generation: generation,
    }
}

fn find<'a>(s: Option<&'a VirtualIPStatus>, type_: &str) -> Option<&'a Condition> {
    s.and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

/// The Events called for by moving from `old` to `new`.
pub fn events(
    old: Option<&VirtualIPStatus>,
    new: &VirtualIPStatus,
    blocker: Option<&Blocker>,
) -> Vec<PlannedEvent> {
    let mut out = Vec::new();
    let old_master = old.and_then(|s| s.master.as_deref());
    match (old_master, new.master.as_deref()) {
        (None, Some(m)) => out.push(PlannedEvent {
            type_: EventType::Normal,
            reason: REASON_MASTER_ELECTED,
            note: format!("node {m} became MASTER"),
        }),
        (Some(a), Some(b)) if a != b => out.push(PlannedEvent {
            type_: EventType::Warning,
            reason: REASON_FAILOVER,
            note: format!("Failover from {a} to {b}"),
        }),
        _ => {}
    }
    if new.phase == Some(Phase::SplitBrain) && old.and_then(|s| s.phase) != Some(Phase::SplitBrain)
    {
        let note = find(Some(new), SPLIT_BRAIN)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        out.push(PlannedEvent {
            type_: EventType::Warning,
            reason: REASON_SPLIT_BRAIN,
            note,
        });
    }
    if let Some(c) = find(Some(new), VRID_CONFLICT).filter(|c| c.status == "True")
        && find(old, VRID_CONFLICT).is_none_or(|o| o.status != "True")
    {
        out.push(PlannedEvent {
            type_: EventType::Warning,
            reason: REASON_VRID_CONFLICT,
            note: c.message.clone(),
        });
    }
    if matches!(blocker, Some(Blocker::InvalidSpec(_)))
        && let Some(c) = find(Some(new), READY)
        && !find(old, READY).is_some_and(|o| o.reason == c.reason && o.message == c.message)
    {
        out.push(PlannedEvent {
            type_: EventType::Warning,
            reason: REASON_INVALID_SPEC,
            note: c.message.clone(),
        });
    }
    out
}
