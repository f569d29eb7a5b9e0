//! The pure planner: observed objects in, desired objects out.
//!
//! [`plan`] takes a snapshot of the cluster ([`World`]: VirtualIPs, Nodes, the referenced
//! Secrets, VRRPNodes with their agents' reports, and the current time) and returns a [`Plan`]:
//! the desired `VRRPNode.spec` of every Node and the desired `VirtualIP.status` of every
//! VirtualIP, plus the Events to emit. It does no I/O, reads no clock and is deterministic:
//! the same world gives byte-identical output (everything is sorted), so the executor can write
//! only what differs.
//!
//! Rules, in the order they are applied to each VirtualIP:
//!
//! 1. **Validation.** [`crds::validate::validate_spec`] plus the node selector must parse. Any
//!    problem ⇒ not deployed, `Ready=False` reason `InvalidSpec`, phase `Conflict`, an
//!    `InvalidSpec` event.
//! 2. **VRID** ([`vrid`]). An explicit `virtualRouterID` is used as is; otherwise the VRID
//!    recorded in `status.virtualRouterID` is kept; otherwise the lowest VRID free on the
//!    VirtualIP's interfaces is allocated. VRIDs are unique per (interface, address family), as
//!    on the wire: a VirtualIP naming `interface` (and `nodes[].interface`) shares a VRID space
//!    with the others on those interfaces, whatever their subnets; one naming none may run on
//!    any interface (the agent picks the one with its subnet, which the operator cannot see),
//!    so it must differ from every VirtualIP of its family: the safe guess.
//!    Claims are served oldest first (creationTimestamp, then namespace/name). When a user-set
//!    VRID collides with an older claim, both get `VRIDConflict=True` naming the interface of
//!    the clash, and the newer one is not deployed; a VRID the operator allocated itself is
//!    simply reallocated instead.
//! 3. **Authentication.** The `passwordSecretRef` Secret and key must exist and hold 1–8 bytes
//!    of UTF-8; otherwise `Ready=False` with reason `SecretNotFound`, `SecretKeyNotFound` or
//!    `InvalidPassword`, the instance is not deployed, and no other VirtualIP is affected (the
//!    VRID claim is kept so nothing else moves into its place). The password never goes into
//!    a VRRPNode: each node's plan carries it in [`NodePlan::auth`] (the node's auth Secret)
//!    under the instance's `authKey`, which is all the VRRPNode instance holds.
//! 4. **Eligible nodes.** The Node exists, is Ready, is not being deleted, and matches
//!    `nodeSelector` (none ⇒ every node). A node that stops being eligible loses the instance.
//! 5. **Priorities.** A `nodes[]` priority override always wins. The other eligible nodes, in
//!    name order, get the VirtualIP's priority, then one less for each next node, never below
//!    1 (so only the first can hold an owner priority of 255). Overridden nodes do not take a
//!    step in this sequence. The initial state is MASTER only where the user set it.
//! 6. **Resolution.** Each (VirtualIP, eligible node) is turned into a
//!    [`crds::ResolvedInstance`] by [`crds::resolve::resolve`], named `NAMESPACE/NAME`, with
//!    the other eligible nodes' InternalIPs (or their `nodes[].sourceAddress`) as unicast
//!    peers (resolve keeps the right family; explicit `unicast.peers` win). Every address in
//!    a Node's `status.addresses` is its own: resolve leaves them out of its peers, so one
//!    peer list written for the whole cluster works on every node. The interface is left for
//!    the agent when neither an override nor the spec names one.
//!    With the annotation `kubevrrp.io/adopt-static: "true"` the instances carry
//!    `adoptStatic`: each node's agent takes over a static agent's running instance of the
//!    same VRID when they agree ([`adopts_static`]).
//! 7. **Status** ([`status`]) from the VRRPNode reports, with conditions and events.
//!
//! VirtualIPs being deleted keep their VRID claim but are deployed nowhere; their plan tells
//! the executor which nodes still report the instance, so the finalizer can wait for them.

pub mod coalesce;
pub mod liveness;
pub mod loadbalancer;
pub mod status;
pub mod vrid;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use crds::auth::{Password, auth_key};
use crds::policy::{REASON_SCRIPTS_NOT_ALLOWED, ScriptPolicy};
use crds::resolve::{NodeFacts, ResolveInput, resolve};
use crds::validate::{Problem, Problems, validate_spec};
use crds::virtualip::VirtualIPStatus;
use crds::vrrpnode::{InstanceStatus, ObjectRef};
use crds::{ResolvedInstance, VRRPNode, VRRPNodeSpec, VirtualIP};
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::core::{Selector, SelectorExt};

pub use coalesce::{Coalescer, InFlight};
pub use liveness::{AgentLiveness, LeaseTracker};
pub use status::{EventType, PlannedEvent};

/// Annotation that drains a node (like a cordon): `kubevrrp.io/drain: "true"`.
pub const DRAIN_ANNOTATION: &str = "kubevrrp.io/drain";
/// The priority a draining node runs with: below every other node's default.
pub const DRAIN_PRIORITY: u8 = 1;

/// Identity of a VirtualIP: namespace and name.
pub type VipKey = ObjectRef;

/// Everything the planner looks at: a consistent snapshot of the observed objects.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// All VirtualIPs (any namespace), including those being deleted.
    pub virtual_ips: Vec<Arc<VirtualIP>>,
    /// All Nodes.
    pub nodes: Vec<Arc<Node>>,
    /// The Secrets referenced by VirtualIPs that exist (others count as missing).
    pub secrets: Vec<Arc<Secret>>,
    /// All VRRPNodes; only their status (the agents' reports) is read.
    pub vrrp_nodes: Vec<Arc<VRRPNode>>,
    /// Liveness of each node's agent, from its Lease as the operator observed it ([`liveness`]).
    /// A node not listed has no live agent.
    pub agents: BTreeMap<String, AgentLiveness>,
    /// Which VirtualIPs may carry commands (scripts, notify); the default allows none.
    pub script_policy: ScriptPolicy,
    /// Current time, used as `lastTransitionTime` of conditions that change. Callers should
    /// pass whole seconds: the API server stores no more, and a finer time would never compare
    /// equal to what was written.
    pub now: Timestamp,
}

/// The desired state of everything the operator writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Desired VRRPNode per Node name (every Node in the world, possibly with no instance).
    pub nodes: BTreeMap<String, NodePlan>,
    /// Desired status and events per VirtualIP.
    pub virtual_ips: BTreeMap<VipKey, VipPlan>,
}

/// Desired VRRPNode for one Node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodePlan {
    /// The Node's uid, for the VRRPNode's ownerReference (garbage collection with the Node).
    pub node_uid: Option<String>,
    /// Desired spec: instances sorted by name, and their hash. Instances with PASS
    /// authentication carry only `authKey`, never the password.
    pub spec: VRRPNodeSpec,
    /// Desired data of the node's auth Secret ([`crds::auth::auth_secret_name`]): the
    /// password of every instance with PASS authentication, by its `authKey`. Empty: the node
    /// needs no auth Secret.
    pub auth: BTreeMap<String, Password>,
}

/// Desired outcome for one VirtualIP.
#[derive(Debug, Clone, PartialEq)]
pub struct VipPlan {
    /// The VirtualIP is being deleted (status is not written; the finalizer runs).
    pub deleting: bool,
    /// Desired status.
    pub status: VirtualIPStatus,
    /// Events to emit, derived from the difference between the observed and desired status.
    pub events: Vec<PlannedEvent>,
    /// Nodes the instance is deployed to (sorted).
    pub deployed_to: Vec<String>,
    /// Nodes whose agent currently reports the instance (sorted).
    pub reported_on: Vec<String>,
    /// The status may change with time alone (a double MASTER settling into split brain):
    /// plan again after this long.
    pub recheck_after: Option<std::time::Duration>,
}

/// Why a VirtualIP is not deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    /// The spec is invalid.
    InvalidSpec(Problems),
    /// The VRID is also claimed by an older VirtualIP on a shared interface.
    VridConflict {
        /// The contested VRID.
        vrid: u8,
        /// Where they clash (interface and family), as text.
        network: String,
        /// The older VirtualIP that keeps the VRID.
        winner: VipKey,
    },
    /// Every VRID of the VirtualIP's interfaces is taken.
    NoFreeVrid {
        /// The interfaces and family, as text.
        network: String,
    },
    /// Refused by a cluster policy (script policy, plan size); other VirtualIPs are unaffected.
    Refused {
        /// Condition reason: [`REASON_SCRIPTS_NOT_ALLOWED`] or [`REASON_PLAN_TOO_LARGE`].
        reason: &'static str,
        /// Human-readable message naming the field or the node.
        message: String,
    },
    /// The authentication Secret is missing or unusable.
    Secret {
        /// Condition reason: `SecretNotFound`, `SecretKeyNotFound` or `InvalidPassword`.
        reason: &'static str,
        /// Human-readable message.
        message: String,
    },
}

/// Whether a VirtualIP asks its agents to take over static instances: the annotation
/// `kubevrrp.io/adopt-static` is `"true"`.
pub fn adopts_static(vip: &VirtualIP) -> bool {
    vip.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crds::virtualip::ADOPT_STATIC_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// The instance name used in VRRPNode specs and reports: `NAMESPACE/NAME`.
pub fn instance_name(key: &VipKey) -> String {
    format!("{}/{}", key.namespace, key.name)
}

/// The key of a VirtualIP object.
pub fn vip_key(vip: &VirtualIP) -> VipKey {
    ObjectRef {
        namespace: vip.metadata.namespace.clone().unwrap_or_default(),
        name: vip.metadata.name.clone().unwrap_or_default(),
    }
}

pub use crds::vrrpnode::config_hash;

/// What the planner needs to know about a Node.
struct NodeView<'a> {
    name: &'a str,
    uid: Option<&'a str>,
    labels: BTreeMap<String, String>,
    /// Not being deleted (before any selector is applied). A NotReady node stays usable: VRRP
    /// already handles a dead node on the wire, and a kubelet that lost the API server must not
    /// move a VIP.
    usable: bool,
    /// The Ready condition is True.
    ready: bool,
    /// Cordoned (`spec.unschedulable`) or annotated [`DRAIN_ANNOTATION`]` = "true"`.
    draining: bool,
    internal_ips: Vec<IpAddr>,
    /// Every address in the Node's `status.addresses` (InternalIP, ExternalIP, ...): the
    /// node's own, never its unicast peers.
    own_ips: Vec<IpAddr>,
}

impl<'a> NodeView<'a> {
    fn new(node: &'a Node) -> Option<Self> {
        let name = node.metadata.name.as_deref()?;
        let status = node.status.as_ref();
        let ready = node_ready(node);
        let mut internal_ips: Vec<IpAddr> = status
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        internal_ips.sort();
        internal_ips.dedup();
        let mut own_ips: Vec<IpAddr> = status
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|a| a.address.parse().ok())
            .collect();
        own_ips.sort();
        own_ips.dedup();
        Some(Self {
            name,
            uid: node.metadata.uid.as_deref(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            usable: node.metadata.deletion_timestamp.is_none(),
            ready,
            draining: node_draining(node),
            internal_ips,
            own_ips,
        })
    }
}

/// Whether a Node is cordoned or annotated for draining.
pub fn node_draining(node: &Node) -> bool {
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let annotated = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DRAIN_ANNOTATION))
        .is_some_and(|v| v == "true");
    cordoned || annotated
}

/// Whether a Node's Ready condition is True.
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Per-VirtualIP working state.
struct VipWork<'a> {
    key: VipKey,
    vip: &'a VirtualIP,
    deleting: bool,
    selector: Option<Selector>,
    blocker: Option<Blocker>,
    vrid: Option<u8>,
    vrid_conflict_with: Vec<VipKey>,
    auth_pass: Option<Password>,
}

/// Where each VirtualIP goes: the first half of [`plan`], which does not look at the agents'
/// reports. The executor caches it while only reports change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    /// Desired VRRPNode per Node name.
    pub nodes: BTreeMap<String, NodePlan>,
    /// Placement of each VirtualIP.
    pub virtual_ips: BTreeMap<VipKey, VipPlacement>,
}

/// The placement of one VirtualIP.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VipPlacement {
    /// Being deleted.
    pub deleting: bool,
    /// Why it is not deployed.
    pub blocker: Option<Blocker>,
    /// Effective VRID.
    pub vrid: Option<u8>,
    /// Newer VirtualIPs whose explicit VRID collides with this one.
    pub vrid_conflict_with: Vec<VipKey>,
    /// Node → priority it runs with, for every node it is deployed to.
    pub placed: BTreeMap<String, u8>,
    /// Node → its stable default priority (shown as `basePriority`; equal to `placed` except
    /// on draining nodes). Kept from the observed status so that nodes joining and leaving do
    /// not renumber the others.
    pub slots: BTreeMap<String, u8>,
    /// Placed nodes that are draining.
    pub draining: BTreeSet<String>,
    /// Placed nodes whose Node is NotReady.
    pub not_ready: BTreeSet<String>,
    /// The advert interval, for telling convergence from split brain.
    pub advert_interval_ms: u64,
}

/// One agent's report of one instance, with when the operator first saw it in its state.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The node.
    pub node: String,
    /// The agent's report.
    pub status: InstanceStatus,
    /// When the operator first saw this node report its current state (operator clock: node
    /// clocks are never compared).
    pub seen_since: Timestamp,
}

/// The agents' reports indexed by instance name, each list sorted by node.
#[derive(Debug, Clone, Default)]
pub struct ReportIndex {
    by_instance: BTreeMap<String, Vec<Report>>,
}

impl ReportIndex {
    /// Index the status of every VRRPNode, as first seen at `now`.
    pub fn new(vrrp_nodes: &[Arc<VRRPNode>], now: Timestamp) -> Self {
        Self::update(None, vrrp_nodes, now)
    }

    /// Index the status of every VRRPNode; a report whose state is the one `previous` had
    /// keeps its `seen_since`, any other is seen from `now`.
    pub fn update(
        previous: Option<&ReportIndex>,
        vrrp_nodes: &[Arc<VRRPNode>],
        now: Timestamp,
    ) -> Self {
        let mut by_instance: BTreeMap<String, Vec<Report>> = BTreeMap::new();
        for vn in vrrp_nodes {
            let Some(node) = vn.metadata.name.as_deref() else {
                continue;
            };
            for inst in vn.status.iter().flat_map(|s| s.instances.iter()) {
                let seen_since = previous
                    .and_then(|p| p.find(&inst.name, node))
                    .filter(|r| r.status.state == inst.state)
                    .map_or(now, |r| r.seen_since);
                by_instance
                    .entry(inst.name.clone())
                    .or_default()
                    .push(Report {
                        node: node.to_string(),
                        status: inst.clone(),
                        seen_since,
                    });
            }
        }
        for list in by_instance.values_mut() {
            list.sort_by(|a, b| a.node.cmp(&b.node));
            list.dedup_by(|a, b| a.node == b.node);
        }
        Self { by_instance }
    }

    fn find(&self, instance: &str, node: &str) -> Option<&Report> {
        let list = self.by_instance.get(instance)?;
        list.binary_search_by(|r| r.node.as_str().cmp(node))
            .ok()
            .map(|i| &list[i])
    }

    /// Reports of one instance, sorted by node.
    pub fn get(&self, instance: &str) -> &[Report] {
        self.by_instance.get(instance).map_or(&[], Vec::as_slice)
    }
}

/// Compute the plan for a world, every report seen for the first time. Pure and deterministic.
pub fn plan(world: &World) -> Plan {
    plan_with(world, None)
}

/// Compute the plan for a world, with when each report was first seen taken from `previous`
/// (see [`ReportIndex::update`]). Pure and deterministic.
pub fn plan_with(world: &World, previous: Option<&ReportIndex>) -> Plan {
    let Placement {
        nodes,
        virtual_ips: placements,
    } = place_all(world);
    let reports = ReportIndex::update(previous, &world.vrrp_nodes, world.now);
    let mut out = Plan {
        nodes,
        virtual_ips: BTreeMap::new(),
    };
    for vip in &world.virtual_ips {
        let key = vip_key(vip);
        if out.virtual_ips.contains_key(&key) {
            continue;
        }
        // Duplicate keys keep the object place_all kept (the first in key order is the same
        // object for a consistent world).
        let Some(p) = placements.get(&key) else {
            continue;
        };
        out.virtual_ips
            .insert(key, vip_plan(vip, p, &reports, &world.agents, world.now));
    }
    out
}

/// The desired status and events of one VirtualIP, from its placement, the reports and the
/// agents' liveness.
pub fn vip_plan(
    vip: &VirtualIP,
    placement: &VipPlacement,
    reports: &ReportIndex,
    agents: &BTreeMap<String, AgentLiveness>,
    now: Timestamp,
) -> VipPlan {
    let node_reports = reports.get(&instance_name(&vip_key(vip)));
    let input = status::StatusInput {
        vip,
        blocker: placement.blocker.as_ref(),
        vrid: placement.vrid,
        vrid_conflict_with: &placement.vrid_conflict_with,
        placement,
        reports: node_reports,
        agents,
        now,
    };
    let (status, recheck_after) = status::aggregate(&input);
    let events = if placement.deleting {
        Vec::new()
    } else {
        status::events(vip.status.as_ref(), &status, placement.blocker.as_ref())
    };
    VipPlan {
        deleting: placement.deleting,
        status,
        events,
        deployed_to: placement.placed.keys().cloned().collect(),
        reported_on: node_reports.iter().map(|r| r.node.clone()).collect(),
        recheck_after,
    }
}

/// The VirtualIPs whose placement differs between `before` (`None`: there was none) and
/// `after`: new ones, changed ones and ones no longer placed. Only these need their status
/// computed again after a re-placement.
pub fn changed_vips(before: Option<&Placement>, after: &Placement) -> Vec<VipKey> {
    let empty = BTreeMap::new();
    let old = before.map_or(&empty, |p| &p.virtual_ips);
    let mut out: Vec<VipKey> = after
        .virtual_ips
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    out.extend(
        old.keys()
            .filter(|k| !after.virtual_ips.contains_key(*k))
            .cloned(),
    );
    out.sort();
    out
}

/// Place every VirtualIP (everything but status aggregation; VRRPNode reports are not read).
pub fn place_all(world: &World) -> Placement {
    // Nodes, sorted by name.
    let mut nodes: Vec<NodeView<'_>> = world
        .nodes
        .iter()
        .filter_map(|n| NodeView::new(n))
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(b.name));
    nodes.dedup_by(|a, b| a.name == b.name);

    // Secrets by (namespace, name).
    let secrets: BTreeMap<(&str, &str), &Secret> = world
        .secrets
        .iter()
        .filter_map(|s| {
            Some((
                (
                    s.metadata.namespace.as_deref()?,
                    s.metadata.name.as_deref()?,
                ),
                &**s,
            ))
        })
        .collect();

    // VirtualIPs, in a stable order; duplicates (same key) keep the first.
    let mut vips: Vec<VipWork<'_>> = world
        .virtual_ips
        .iter()
        .map(|v| {
            let mut problems = validate_spec(&v.spec);
            let selector = match v.spec.node_selector.clone().map(Selector::try_from) {
                None => None,
                Some(Ok(s)) => Some(s),
                Some(Err(e)) => {
                    problems.0.push(Problem {
                        path: "spec.nodeSelector".into(),
                        message: format!("not a valid label selector: {e}"),
                    });
                    None
                }
            };
            VipWork {
                key: vip_key(v),
                vip: v,
                deleting: v.metadata.deletion_timestamp.is_some(),
                selector,
                blocker: (!problems.is_empty()).then_some(Blocker::InvalidSpec(problems)),
                vrid: None,
                vrid_conflict_with: Vec::new(),
                auth_pass: None,
            }
        })
        .collect();
    vips.sort_by(|a, b| a.key.cmp(&b.key));
    vips.dedup_by(|a, b| a.key == b.key);

    // The admin's script policy: a refused VirtualIP is deployed nowhere (nothing runs) but
    // keeps its VRID claim, like one whose Secret is missing.
    for w in vips.iter_mut().filter(|w| w.blocker.is_none()) {
        let problems = world.script_policy.check(&w.key.namespace, &w.vip.spec);
        if !problems.is_empty() {
            w.blocker = Some(Blocker::Refused {
                reason: REASON_SCRIPTS_NOT_ALLOWED,
                message: problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        }
    }
    assign_vrids(&mut vips);
    for w in vips
        .iter_mut()
        .filter(|w| w.blocker.is_none() && !w.deleting)
    {
        match resolve_secret(w.vip, &w.key, &secrets) {
            Ok(pass) => w.auth_pass = pass,
            Err(b) => w.blocker = Some(b),
        }
    }

    // Resolve instances per node.
    let mut per_node: BTreeMap<&str, Vec<ResolvedInstance>> = BTreeMap::new();
    let mut out = Placement::default();
    let created: BTreeMap<VipKey, Option<Timestamp>> = vips
        .iter()
        .map(|w| {
            (
                w.key.clone(),
                w.vip.metadata.creation_timestamp.as_ref().map(|t| t.0),
            )
        })
        .collect();
    for w in vips {
        let mut vp = VipPlacement {
            deleting: w.deleting,
            blocker: w.blocker.clone(),
            vrid: w.vrid,
            vrid_conflict_with: w.vrid_conflict_with.clone(),
            advert_interval_ms: w.vip.spec.advert_interval_ms(),
            ..Default::default()
        };
        if vp.blocker.is_none() && !w.deleting {
            match place(&w, &nodes) {
                Ok(instances) => {
                    for (node, slot, inst) in instances {
                        vp.placed.insert(node.name.to_string(), inst.priority);
                        vp.slots.insert(node.name.to_string(), slot);
                        if node.draining {
                            vp.draining.insert(node.name.to_string());
                        }
                        if !node.ready {
                            vp.not_ready.insert(node.name.to_string());
                        }
                        per_node.entry(node.name).or_default().push(inst);
                    }
                }
                Err(problems) => vp.blocker = Some(Blocker::InvalidSpec(problems)),
            }
        }
        out.virtual_ips.insert(w.key, vp);
    }

    refuse_oversized(&mut per_node, &mut out, &created);

    for n in &nodes {
        let mut instances = per_node.remove(n.name).unwrap_or_default();
        instances.sort_by(|a, b| a.name.cmp(&b.name));
        let auth = split_passwords(&mut instances);
        let config_hash = config_hash(&instances);
        out.nodes.insert(
            n.name.to_string(),
            NodePlan {
                node_uid: n.uid.map(str::to_string),
                spec: VRRPNodeSpec {
                    instances,
                    config_hash,
                },
                auth,
            },
        );
    }
    out
}

/// Move every instance's password out of the VRRPNode: the instance keeps its `authKey`
/// ([`crds::auth::auth_key`] of its name), the returned map (the node's auth Secret data)
/// holds the password under that key.
fn split_passwords(instances: &mut [ResolvedInstance]) -> BTreeMap<String, Password> {
    let mut auth = BTreeMap::new();
    for inst in instances {
        inst.auth_key = None;
        if let Some(pass) = inst.auth_pass.take() {
            let key = auth_key(&inst.name);
            auth.insert(key.clone(), pass);
            inst.auth_key = Some(key);
        }
    }
    auth
}

/// Condition reason of a VirtualIP refused because a node's VRRPNode would grow too large.
pub const REASON_PLAN_TOO_LARGE: &str = "PlanTooLarge";

/// The bytes one instance adds to a VRRPNode spec (its JSON, plus a comma).
fn instance_bytes(inst: &ResolvedInstance) -> usize {
    serde_json::to_vec(inst).map_or(usize::MAX / 1024, |v| v.len() + 1)
}

/// Keep every node's VRRPNode spec within [`crds::validate::limits::MAX_VRRPNODE_SPEC_BYTES`]:
/// on a node over the limit, refuse VirtualIPs until it fits — the largest instance on that
/// node first, then the newest (creationTimestamp), then the greatest namespace/name. A refused
/// VirtualIP is withdrawn from every node and gets [`REASON_PLAN_TOO_LARGE`]; all others deploy.
/// Nodes are checked in name order, so the outcome is deterministic.
fn refuse_oversized(
    per_node: &mut BTreeMap<&str, Vec<ResolvedInstance>>,
    out: &mut Placement,
    created: &BTreeMap<VipKey, Option<Timestamp>>,
) {
    let limit = crds::validate::limits::MAX_VRRPNODE_SPEC_BYTES;
    let names: Vec<&str> = per_node.keys().copied().collect();
    for node in names {
        while let Some(instances) = per_node.get(node) {
            let sizes: Vec<usize> = instances.iter().map(instance_bytes).collect();
            // The spec's own frame and hash stay well below 200 bytes.
            let total: usize = sizes.iter().sum::<usize>() + 200;
            if total <= limit {
                break;
            }
            let Some(victim) = instances
                .iter()
                .zip(&sizes)
                .filter_map(|(i, &size)| Some((i.virtual_ip.clone()?, size)))
                .max_by(|(ka, sa), (kb, sb)| {
                    sa.cmp(sb)
                        .then_with(|| {
                            let ca = created.get(ka).copied().flatten();
                            let cb = created.get(kb).copied().flatten();
                            ca.cmp(&cb)
                        })
                        .then_with(|| ka.cmp(kb))
                })
                .map(|(k, _)| k)
            else {
                break;
            };
            let name = instance_name(&victim);
            for list in per_node.values_mut() {
                list.retain(|i| i.name != name);
            }
            if let Some(vp) = out.virtual_ips.get_mut(&victim) {
                vp.placed.clear();
                vp.slots.clear();
                vp.draining.clear();
                vp.not_ready.clear();
                vp.blocker = Some(Blocker::Refused {
                    reason: REASON_PLAN_TOO_LARGE,
                    message: format!(
                        "node {node}'s VRRPNode would exceed {limit} bytes ({total} planned) with this VirtualIP; it is refused, the largest and newest first, so the others deploy. Make the spec smaller (scripts, excludedAddresses, track) or narrow spec.nodeSelector"
                    ),
                });
            }
        }
    }
}

/// Run VRID assignment over the valid VirtualIPs and record outcomes in the work items.
fn assign_vrids(vips: &mut [VipWork<'_>]) {
    let requests: Vec<(usize, vrid::Request)> = vips
        .iter()
        .enumerate()
        .filter(|(_, w)| matches!(w.blocker, None | Some(Blocker::Refused { .. })))
        .filter_map(|(i, w)| {
            let first = w
                .vip
                .spec
                .addresses
                .first()
                .and_then(|a| crds::validate::parse_address(a))?;
            Some((
                i,
                vrid::Request {
                    key: w.key.clone(),
                    created: w.vip.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    first_address: first,
                    interfaces: vrid::Interfaces::from_spec(
                        w.vip.spec.interface.as_deref(),
                        w.vip
                            .spec
                            .nodes
                            .iter()
                            .filter_map(|n| n.interface.as_deref()),
                    ),
                    explicit: w.vip.spec.virtual_router_id,
                    recorded: w.vip.status.as_ref().and_then(|s| s.virtual_router_id),
                },
            ))
        })
        .collect();
    let reqs: Vec<vrid::Request> = requests.iter().map(|(_, r)| r.clone()).collect();
    let outcomes = vrid::assign(&reqs);
    for ((i, _), outcome) in requests.iter().zip(outcomes) {
        let w = &mut vips[*i];
        match outcome {
            vrid::Outcome::Assigned {
                vrid,
                conflicts_with,
            } => {
                w.vrid = Some(vrid);
                w.vrid_conflict_with = conflicts_with;
            }
            vrid::Outcome::Lost {
                vrid,
                network,
                winner,
            } => {
                w.vrid = Some(vrid);
                w.vrid_conflict_with = vec![winner.clone()];
                w.blocker = Some(Blocker::VridConflict {
                    vrid,
                    network,
                    winner,
                });
            }
            vrid::Outcome::Exhausted { network } => {
                w.blocker = Some(Blocker::NoFreeVrid { network })
            }
        }
    }
}

/// Read the password of a VirtualIP from its Secret (`Ok(None)` without authentication).
fn resolve_secret(
    vip: &VirtualIP,
    key: &VipKey,
    secrets: &BTreeMap<(&str, &str), &Secret>,
) -> Result<Option<Password>, Blocker> {
    let Some(auth) = &vip.spec.authentication else {
        return Ok(None);
    };
    let r = &auth.password_secret_ref;
    let data_key = r.key_or_default();
    let Some(secret) = secrets.get(&(key.namespace.as_str(), r.name.as_str())) else {
        return Err(Blocker::Secret {
            reason: status::REASON_SECRET_NOT_FOUND,
            message: format!(
                "spec.authentication.passwordSecretRef: Secret {}/{} does not exist",
                key.namespace, r.name
            ),
        });
    };
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(data_key))
        .map(|b| b.0.clone());
    let from_string = || {
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(data_key))
            .map(|s| s.clone().into_bytes())
    };
    let Some(bytes) = from_data.or_else(from_string) else {
        return Err(Blocker::Secret {
            reason: status::REASON_SECRET_KEY_NOT_FOUND,
            message: format!(
                "spec.authentication.passwordSecretRef: Secret {}/{} has no key {data_key:?}",
                key.namespace, r.name
            ),
        });
    };
    let invalid = |why: String| Blocker::Secret {
        reason: status::REASON_INVALID_PASSWORD,
        message: format!(
            "spec.authentication.passwordSecretRef: key {data_key:?} of Secret {}/{} {why}",
            key.namespace, r.name
        ),
    };
    let pass = String::from_utf8(bytes).map_err(|_| invalid("is not UTF-8 text".into()))?;
    if pass.is_empty() || pass.len() > 8 {
        return Err(invalid(format!(
            "must hold 1 to 8 bytes, it has {}",
            pass.len()
        )));
    }
    Ok(Some(pass.into()))
}

/// Default priorities that stay put: each eligible node without an override keeps the
/// `basePriority` the observed status gives it (if still at most `base` and not taken by an
/// earlier node); the others, in name order, take the highest free priority at most `base`
/// (never below 1). A fresh VirtualIP thus gets `base, base-1, ...` in name order, and a node
/// joining, leaving or going NotReady changes no other node's priority.
pub fn stable_slots<'a>(
    base: u8,
    nodes: &[&'a str],
    previous: &BTreeMap<&str, u8>,
) -> BTreeMap<&'a str, u8> {
    let mut taken: BTreeSet<u8> = BTreeSet::new();
    let mut out: BTreeMap<&'a str, u8> = BTreeMap::new();
    for n in nodes {
        if let Some(&p) = previous.get(n)
            && (1..=base).contains(&p)
            && taken.insert(p)
        {
            out.insert(n, p);
        }
    }
    for n in nodes {
        if out.contains_key(n) {
            continue;
        }
        let p = (1..=base).rev().find(|p| !taken.contains(p)).unwrap_or(1);
        taken.insert(p);
        out.insert(n, p);
    }
    out
}

/// Resolve one deployable VirtualIP onto its eligible nodes: (node, default-priority slot,
/// instance) per node.
fn place<'n>(
    w: &VipWork<'_>,
    nodes: &'n [NodeView<'n>],
) -> Result<Vec<(&'n NodeView<'n>, u8, ResolvedInstance)>, Problems> {
    let spec = &w.vip.spec;
    let eligible: Vec<&NodeView<'_>> = nodes
        .iter()
        .filter(|n| n.usable && w.selector.as_ref().is_none_or(|s| s.matches(&n.labels)))
        .collect();
    let overridden: BTreeSet<&str> = spec
        .nodes
        .iter()
        .filter(|o| o.priority.is_some())
        .map(|o| o.name.as_str())
        .collect();
    let base = spec.priority_or_default();
    let previous: BTreeMap<&str, u8> = w
        .vip
        .status
        .iter()
        .flat_map(|s| s.nodes.iter())
        .filter_map(|n| Some((n.node.as_str(), n.base_priority?)))
        .collect();
    let defaulted: Vec<&str> = eligible
        .iter()
        .map(|n| n.name)
        .filter(|n| !overridden.contains(n))
        .collect();
    let slots = stable_slots(base, &defaulted, &previous);
    let name = instance_name(&w.key);
    let mut out = Vec::with_capacity(eligible.len());
    for node in &eligible {
        let slot = slots.get(node.name).copied();
        let default_priority = match slot {
            Some(_) if node.draining => Some(DRAIN_PRIORITY),
            other => other,
        };
        // A node whose override names its advert source is reached there; the others at
        // their InternalIPs.
        let peers: Vec<IpAddr> = eligible
            .iter()
            .filter(|o| o.name != node.name)
            .flat_map(|o| match source_override(spec, o.name) {
                Some(src) => vec![src],
                None => o.internal_ips.clone(),
            })
            .collect();
        let facts = NodeFacts {
            name: node.name.to_string(),
            interfaces: Vec::new(),
            addresses: node.own_ips.clone(),
        };
        let input = ResolveInput {
            instance_name: name.clone(),
            virtual_ip: Some(w.key.clone()),
            spec,
            allocated_vrid: w.vrid,
            node: &facts,
            default_priority,
            peer_node_addresses: peers,
            auth_pass: w.auth_pass.clone(),
        };
        let mut inst = resolve(&input)?;
        // The allocated/confirmed VRID wins over nothing; an explicit one equals it anyway.
        if let Some(v) = w.vrid {
            inst.virtual_router_id = v;
        }
        inst.adopt_static = adopts_static(w.vip);
        let configured = inst.priority;
        // A draining node goes below everyone, overrides included.
        if node.draining {
            inst.priority = DRAIN_PRIORITY;
        }
        out.push((*node, slot.unwrap_or(configured), inst));
    }
    // Every node learns how high the others can go, so the one that outranks all but a
    // leaving master takes over at once on its priority-0 advert (planned handover).
    let ceilings: Vec<u8> = out.iter().map(|(_, _, i)| i.priority_ceiling()).collect();
    for (k, (_, _, inst)) in out.iter_mut().enumerate() {
        let others = ceilings
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != k)
            .map(|(_, c)| *c);
        inst.peer_priorities = Some(others.collect());
    }
    Ok(out)
}

/// The advert source address `nodes[]` gives `node`, if any.
fn source_override(spec: &crds::VirtualIPSpec, node: &str) -> Option<IpAddr> {
    spec.nodes
        .iter()
        .find(|o| o.name == node)
        .and_then(|o| o.source_address.as_deref())
        .and_then(|a| a.parse().ok())
}
