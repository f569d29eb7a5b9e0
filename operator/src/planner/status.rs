//! Status aggregation: the agents' reports for one VirtualIP → its desired status, its
//! conditions, and the Events that the change from the observed status calls for.
//!
//! - `phase`: `Conflict` when not deployed (invalid spec, lost VRID, missing Secret, refused
//!   by the script policy or the plan size limit);
//!   `Pending` when deployed nowhere or before any agent reports a VRRP state (INIT does not
//!   count); then `Active` (one MASTER), `NoMaster` (none) or `SplitBrain` (several).
//! - Which reports count: only those of agents whose Lease the operator saw renewed
//!   ([`AgentLiveness`]), and only for nodes the instance is planned on. A MASTER claim from an
//!   agent that has gone quiet loses to a live agent's contradicting evidence (another MASTER,
//!   or a BACKUP hearing a different master) without waiting for the Lease to expire.
//! - `nodes[]`: every node the instance is planned on, sorted by name, with its stable base
//!   priority and the reported state; `UNKNOWN` with reason `AgentNotReporting` when its report
//!   does not count, and reason `NodeNotReady` or `Draining` where that applies.
//! - Two live MASTERs are `SplitBrain` only after overlapping for [`split_brain_settle`];
//!   meanwhile the master VRRP elects is shown.
//! - Conditions `Degraded`, `Ready`, `SplitBrain`, `VRIDConflict` (sorted by type), and
//!   `Adopted` for VirtualIPs annotated `kubevrrp.io/adopt-static: "true"`: `True` once every
//!   reporting node took the static instance over or runs without one, `False` with reason
//!   `StaticConfigMismatch` (the differing fields per node) while a node's static instance
//!   differs, `Unknown` while nodes are still negotiating or have not reported. A condition
//!   keeps its `lastTransitionTime` while its status stays the same.
//! - Events fire on transitions only: `MasterElected` (no master → one), `Failover` (master
//!   moved), `SplitBrain` (phase entered), `VRIDConflict` (condition became true),
//!   `InvalidSpec` (spec newly invalid, or invalid differently), `SecretNotFound` /
//!   `SecretKeyNotFound` / `InvalidPassword` (the authentication Secret newly unusable, or
//!   unusable differently), and the policy refusals.

use std::collections::BTreeMap;

use crds::VirtualIP;
use crds::virtualip::{LastFailover, NodeStatus, Phase, VirtualIPStatus};
use crds::vrrpnode::VrrpState;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::{AgentLiveness, Blocker, Report, VipKey, VipPlacement};

/// Condition type: the VirtualIP has exactly one master.
pub const READY: &str = "Ready";
/// Condition type: more than one node reports MASTER.
pub const SPLIT_BRAIN: &str = "SplitBrain";
/// Condition type: the VRID is contested or none is free.
pub const VRID_CONFLICT: &str = "VRIDConflict";
/// Condition type: some node reports FAULT.
pub const DEGRADED: &str = "Degraded";
/// Condition type: the static instances were taken over (only with the adopt annotation).
pub const ADOPTED: &str = "Adopted";

/// Reason: every node took over its static instance or runs without one.
pub const REASON_ADOPTED: &str = "Adopted";
/// Reason: a node's static instance differs from the VirtualIP.
pub const REASON_STATIC_MISMATCH: &str = "StaticConfigMismatch";
/// Reason: a node could not talk to its static agent.
pub const REASON_HANDOVER_FAILED: &str = "HandOverFailed";
/// Reason: nodes are still negotiating or have not reported.
pub const REASON_ADOPTION_PENDING: &str = "AdoptionPending";

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
    /// Where it is deployed, with what priority.
    pub placement: &'a VipPlacement,
    /// The agents' reports of this instance, sorted by node.
    pub reports: &'a [Report],
    /// Liveness of each node's agent (absent ⇒ lost).
    pub agents: &'a BTreeMap<String, AgentLiveness>,
    /// Time for changed conditions.
    pub now: Timestamp,
}

/// Reason in `nodes[]`: the agent does not renew its Lease; its report does not count.
pub const REASON_AGENT_NOT_REPORTING: &str = "AgentNotReporting";
/// Reason in `nodes[]`: the Node is NotReady (the instance stays deployed).
pub const REASON_NODE_NOT_READY: &str = "NodeNotReady";
/// Reason in `nodes[]`: the node is draining.
pub const REASON_DRAINING: &str = "Draining";

fn key_text(k: &VipKey) -> String {
    format!("{}/{}", k.namespace, k.name)
}

/// How long two live MASTER reports must overlap before they are split brain rather than a
/// handover in progress (the losing master steps down within one advert interval of hearing
/// the winner; its report then takes a moment to reach the API server).
pub fn split_brain_settle(advert_interval_ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis((2 * advert_interval_ms).max(1000) + 1000)
}

/// Which reports count, and what each node shows.
struct Evidence<'a> {
    /// Counted reports: from a live agent on a node the instance is planned on, and (for a
    /// MASTER claim) not contradicted by a live agent when the claimer has gone quiet.
    counted: Vec<&'a Report>,
    /// Nodes whose report does not count (lost or superseded agents, or none at all).
    not_reporting: Vec<&'a str>,
}

fn weigh<'a>(input: &StatusInput<'a>) -> Evidence<'a> {
    let live = |node: &str| {
        input
            .agents
            .get(node)
            .copied()
            .unwrap_or(AgentLiveness::Lost)
    };
    let planned: Vec<&'a Report> = input
        .reports
        .iter()
        .filter(|r| input.placement.placed.contains_key(&r.node))
        .collect();
    let alive: Vec<&'a Report> = planned
        .iter()
        .copied()
        .filter(|r| live(&r.node) != AgentLiveness::Lost)
        .collect();
    // A quiet agent's MASTER claim loses to a fresh agent that contradicts it: another MASTER,
    // or a BACKUP that hears a different master address.
    let contradicted = |q: &Report| {
        alive.iter().any(|c| {
            c.node != q.node
                && live(&c.node) == AgentLiveness::Fresh
                && match c.status.state {
                    Some(VrrpState::Master) => true,
                    Some(VrrpState::Backup) => c
                        .status
                        .master_address
                        .as_ref()
                        .is_some_and(|heard| Some(heard) != q.status.master_address.as_ref()),
                    _ => false,
                }
        })
    };
    let counted: Vec<&'a Report> = alive
        .iter()
        .copied()
        .filter(|r| {
            !(r.status.state == Some(VrrpState::Master)
                && live(&r.node) == AgentLiveness::Quiet
                && contradicted(r))
        })
        .collect();
    let not_reporting = input
        .placement
        .placed
        .keys()
        .map(String::as_str)
        .chain(planned.iter().map(|r| r.node.as_str()))
        .filter(|n| !counted.iter().any(|r| r.node == *n))
        .filter(|n| live(n) == AgentLiveness::Lost || planned.iter().any(|r| r.node == *n))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    Evidence {
        counted,
        not_reporting,
    }
}

/// Compute the desired status of one VirtualIP, and when to look again if time alone can
/// change it.
pub fn aggregate(input: &StatusInput<'_>) -> (VirtualIPStatus, Option<std::time::Duration>) {
    let old = input.vip.status.as_ref();
    let generation = input.vip.metadata.generation;
    let placement = input.placement;
    let evidence = weigh(input);
    let in_state = |s: VrrpState| {
        evidence
            .counted
            .iter()
            .filter(|r| r.status.state == Some(s))
            .copied()
            .collect::<Vec<_>>()
    };
    let master_reports = in_state(VrrpState::Master);
    let backups = in_state(VrrpState::Backup);
    let faults = in_state(VrrpState::Fault);
    let any_state = !(master_reports.is_empty() && backups.is_empty() && faults.is_empty());

    // Two live masters are split brain only once both have held MASTER for the settle time;
    // before that, the one VRRP elects (highest priority, then address) is shown.
    let settle = split_brain_settle(placement.advert_interval_ms);
    let settle_j = k8s_openapi::jiff::SignedDuration::try_from(settle).unwrap_or_default();
    let settled = |r: &Report| input.now.duration_since(r.seen_since) >= settle_j;
    // A quiet agent's MASTER claim may be stale (e.g. after an API outage, before its next
    // renewal is seen): split brain needs two fresh claimers; meanwhile a fresh claim wins.
    let fresh = |r: &Report| input.agents.get(&r.node).copied() == Some(AgentLiveness::Fresh);
    let mut recheck_after = None;
    let masters: Vec<&str> = if master_reports.len() > 1
        && master_reports
            .iter()
            .filter(|r| settled(r) && fresh(r))
            .count()
            < 2
    {
        let newest = master_reports
            .iter()
            .map(|r| r.seen_since)
            .max()
            .unwrap_or(input.now);
        let left = settle_j - input.now.duration_since(newest);
        recheck_after = std::time::Duration::try_from(left).ok();
        let winner = master_reports.iter().max_by(|a, b| {
            let key = |r: &Report| {
                (
                    fresh(r),
                    r.status.effective_priority,
                    r.status
                        .master_address
                        .as_deref()
                        .and_then(|a| a.parse::<std::net::IpAddr>().ok()),
                )
            };
            key(a).cmp(&key(b))
        });
        winner.map(|r| r.node.as_str()).into_iter().collect()
    } else {
        master_reports.iter().map(|r| r.node.as_str()).collect()
    };

    let phase = if input.blocker.is_some() {
        Phase::Conflict
    } else if placement.placed.is_empty() || !any_state {
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
        Some(m) => evidence
            .counted
            .iter()
            .find(|r| &r.node == m)
            .and_then(|r| r.status.master_address.clone()),
        None if masters.is_empty() => evidence
            .counted
            .iter()
            .find_map(|r| r.status.master_address.clone()),
        None => None,
    };

    let mut nodes: BTreeMap<&str, NodeStatus> = BTreeMap::new();
    for (node, prio) in &placement.placed {
        nodes.insert(
            node,
            NodeStatus {
                node: node.clone(),
                base_priority: Some(placement.slots.get(node).copied().unwrap_or(*prio)),
                ..Default::default()
            },
        );
    }
    for r in &evidence.counted {
        let e = nodes.entry(&r.node).or_insert_with(|| NodeStatus {
            node: r.node.clone(),
            ..Default::default()
        });
        e.state = r.status.state;
        e.effective_priority = r.status.effective_priority;
        e.trackers = r.status.trackers.clone();
        e.since = r.status.last_transition_time.clone();
        e.fault_reason = r.status.fault_reason.clone();
    }
    for n in &evidence.not_reporting {
        if let Some(e) = nodes.get_mut(n) {
            e.state = Some(VrrpState::Unknown);
            e.reason = Some(REASON_AGENT_NOT_REPORTING.into());
        }
    }
    for (n, e) in nodes.iter_mut() {
        if e.reason.is_none() {
            if placement.not_ready.contains(*n) {
                e.reason = Some(REASON_NODE_NOT_READY.into());
            } else if placement.draining.contains(*n) {
                e.reason = Some(REASON_DRAINING.into());
            }
        }
    }
    let masters_text = masters.join(", ");

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
        (Some(Blocker::Refused { reason, message }), _) => (false, reason, message.clone()),
        (None, Phase::Pending) if placement.placed.is_empty() => (
            false,
            REASON_NO_ELIGIBLE_NODES,
            "no node is Ready, not being deleted and matched by spec.nodeSelector".into(),
        ),
        (None, Phase::Pending) => (
            false,
            REASON_PENDING,
            format!(
                "deployed to {} node(s), waiting for their agents to report",
                placement.placed.len()
            ),
        ),
        (None, Phase::Active) => (
            true,
            REASON_MASTER_ELECTED,
            format!("node {masters_text} is MASTER"),
        ),
        (None, Phase::SplitBrain) => (
            false,
            REASON_SPLIT_BRAIN,
            format!("nodes {masters_text} all report MASTER"),
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
            format!("nodes {masters_text} all report MASTER"),
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
                "VRID {} is also requested by the newer VirtualIP(s) {} on a shared interface; they are not deployed",
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
                Some(v) => format!("VRID {v} is not used by another VirtualIP on its interfaces"),
                None => "no VRID assigned".into(),
            },
        ),
    };

    let mut trouble: Vec<String> = faults
        .iter()
        .map(|r| match &r.status.fault_reason {
            Some(why) => format!("FAULT on {}: {why}", r.node),
            None => format!("FAULT on {}", r.node),
        })
        .collect();
    trouble.extend(
        evidence
            .not_reporting
            .iter()
            .filter(|n| placement.placed.contains_key(**n))
            .map(|n| format!("the agent on {n} is not reporting")),
    );
    trouble.extend(
        placement
            .not_ready
            .iter()
            .map(|n| format!("node {n} is NotReady")),
    );
    let degraded_reason = if !faults.is_empty() {
        "NodeFault"
    } else if !evidence.not_reporting.is_empty() {
        REASON_AGENT_NOT_REPORTING
    } else {
        REASON_NODE_NOT_READY
    };
    let degraded = if trouble.is_empty() {
        (
            false,
            "NoFault",
            "every node reports and none is in FAULT".to_string(),
        )
    } else {
        (true, degraded_reason, trouble.join("; "))
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
    let mut conditions = vec![
        condition(DEGRADED, degraded),
        condition(READY, (ready, ready_reason, ready_msg)),
        condition(SPLIT_BRAIN, split),
        condition(VRID_CONFLICT, conflict),
    ];
    if super::adopts_static(input.vip) {
        let (status, reason, message) = adoption(input, &evidence);
        let since = old_conditions
            .iter()
            .find(|c| c.type_ == ADOPTED && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(input.now));
        conditions.insert(
            0,
            Condition {
                type_: ADOPTED.into(),
                status: status.into(),
                reason: reason.into(),
                message,
                observed_generation: generation,
                last_transition_time: since,
            },
        );
    }

    let last_failover = match (old.and_then(|s| s.master.as_deref()), master.as_deref()) {
        (Some(from), Some(to)) if from != to => {
            let report = evidence.counted.iter().find(|r| r.node == to);
            Some(LastFailover {
                from: from.into(),
                to: to.into(),
                at: Time(input.now).0.to_string(),
                reason: report.and_then(|r| r.status.reason.clone()),
                takeover: report.and_then(|r| r.status.takeover.clone()),
            })
        }
        _ => old.and_then(|s| s.last_failover.clone()),
    };
    let status = VirtualIPStatus {
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
        last_failover,
    };
    (status, recheck_after)
}

/// The `Adopted` condition from the nodes' `adoption` reports: (status, reason, message).
fn adoption(
    input: &StatusInput<'_>,
    evidence: &Evidence<'_>,
) -> (&'static str, &'static str, String) {
    use crds::vrrpnode::AdoptionPhase as P;
    let mut by_phase: BTreeMap<P, Vec<String>> = BTreeMap::new();
    let mut mismatch = Vec::new();
    let mut failed = Vec::new();
    for r in &evidence.counted {
        let Some(a) = &r.status.adoption else {
            continue;
        };
        by_phase.entry(a.phase).or_default().push(r.node.clone());
        let note = a.message.clone().unwrap_or_default();
        match a.phase {
            P::Mismatch => mismatch.push(format!("{}: {note}", r.node)),
            P::Failed => failed.push(format!("{}: {note}", r.node)),
            _ => {}
        }
    }
    let list = |p: P| by_phase.get(&p).map(|v| v.join(", ")).unwrap_or_default();
    if !mismatch.is_empty() {
        return (
            "False",
            REASON_STATIC_MISMATCH,
            format!(
                "the static instance differs from this VirtualIP, nothing changed there: {}",
                mismatch.join("; ")
            ),
        );
    }
    if !failed.is_empty() {
        return ("False", REASON_HANDOVER_FAILED, failed.join("; "));
    }
    let reporting: usize = by_phase.values().map(Vec::len).sum();
    let pending = by_phase.get(&P::Pending).map_or(0, Vec::len);
    let placed = input.placement.placed.len();
    if placed == 0 || reporting < placed || pending > 0 {
        return (
            "Unknown",
            REASON_ADOPTION_PENDING,
            format!("{reporting} of {placed} node(s) reported, {pending} still negotiating"),
        );
    }
    let mut parts = Vec::new();
    if by_phase.contains_key(&P::Adopted) {
        parts.push(format!(
            "took over the static instance on {}",
            list(P::Adopted)
        ));
    }
    if by_phase.contains_key(&P::NoStaticInstance) {
        parts.push(format!(
            "no static instance on {}",
            list(P::NoStaticInstance)
        ));
    }
    ("True", REASON_ADOPTED, parts.join("; "))
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
            note: match new.last_failover.as_ref().and_then(|f| f.reason.as_deref()) {
                Some(why) => format!("master moved {a} → {b} ({why})"),
                None => format!("master moved {a} → {b}"),
            },
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
    let refusal = match blocker {
        Some(Blocker::InvalidSpec(_)) => Some(REASON_INVALID_SPEC),
        Some(Blocker::Refused { reason, .. }) => Some(*reason),
        Some(Blocker::Secret { reason, .. }) => Some(*reason),
        _ => None,
    };
    if let Some(reason) = refusal
        && let Some(c) = find(Some(new), READY)
        && !find(old, READY).is_some_and(|o| o.reason == c.reason && o.message == c.message)
    {
        out.push(PlannedEvent {
            type_: EventType::Warning,
            reason,
            note: c.message.clone(),
        });
    }
    out
}
