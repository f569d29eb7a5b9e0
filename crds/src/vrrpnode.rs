//! The `VRRPNode` custom resource: everything one node's agent runs, fully resolved.
//!
//! The operator writes the spec (one [`ResolvedInstance`] per VirtualIP deployed to the node);
//! the node's agent writes the status (live state per instance). Standalone mode builds the same
//! [`ResolvedInstance`]s from a keepalived.conf, so the agent has one input type either way.

// kube's `printcolumn(name = …, type_ = "string", …)` repeats `type_` on purpose.
#![allow(clippy::duplicated_attributes)]

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Desired instances for one node (name = node name).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[cfg_attr(test, kube(cel))]
#[kube(
    group = "kubevrrp.io",
    version = "v1alpha1",
    kind = "VRRPNode",
    plural = "vrrpnodes",
    singular = "vrrpnode",
    shortname = "vrrpn",
    category = "kubevrrp",
    status = "VRRPNodeStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "The resolved VRRP instances one node runs (written by the operator) and their live state (written by the node's agent).",
    printcolumn(
        name = "Instances",
        type_ = "integer",
        json_path = ".status.instanceCount"
    ),
    printcolumn(name = "Masters", type_ = "integer", json_path = ".status.masterCount"),
    printcolumn(name = "Faults", type_ = "integer", json_path = ".status.faultCount"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VRRPNodeSpec {
    /// Instances this node runs, sorted by name.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub instances: Vec<ResolvedInstance>,
    /// Hash of `instances`, so a reader can tell at a glance whether two specs differ.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub config_hash: String,
}

/// SHA-256 (hex) of the canonical JSON of a node's instances: the operator writes it as
/// `spec.configHash`, the agent reports the hash of what it runs as `status.appliedConfigHash`.
pub fn config_hash(instances: &[ResolvedInstance]) -> String {
    use sha2::{Digest, Sha256};
    // Serialising plain derived structs cannot fail; an empty input hashes like `[]` would.
    let bytes = serde_json::to_vec(instances).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

/// One VRRP instance with every default applied and every reference resolved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedInstance {
    /// Instance name: `NAMESPACE/NAME` of the VirtualIP, or the keepalived instance name.
    pub name: String,
    /// The VirtualIP this comes from (absent in standalone mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_ip: Option<ObjectRef>,
    /// Virtual router id, 1–255.
    #[serde(rename = "virtualRouterID")]
    pub virtual_router_id: u8,
    /// 2 or 3.
    pub version: u8,
    /// Interface; absent ⇒ the agent picks the interface whose subnet holds the first address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// This node's base priority, 1–255.
    pub priority: u8,
    /// Initial state.
    pub initial_state: crate::virtualip::InitialState,
    /// Advert interval in milliseconds.
    pub advert_interval_ms: u32,
    /// Preempt a lower-priority master.
    pub preempt: bool,
    /// Delay before preempting after start, in milliseconds.
    #[serde(default)]
    pub preempt_delay_ms: u32,
    /// keepalived `accept`: when false, a master below priority 255 drops packets addressed
    /// to the VIPs.
    #[serde(default = "default_accept")]
    pub accept: bool,
    /// Virtual addresses as `IP/len` (length filled in: /32 or /128 when not given).
    pub addresses: Vec<String>,
    /// Excluded (not advertised) addresses as `IP/len`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_addresses: Vec<String>,
    /// Source address of the adverts (keepalived `unicast_src_ip`); absent ⇒ the interface's
    /// primary IPv4 or link-local IPv6 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unicast_source: Option<String>,
    /// Run on the virtual MAC (keepalived `use_vmac`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub use_vmac: bool,
    /// With `useVmac`: send adverts from the VRRP interface (keepalived `vmac_xmit_base`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vmac_xmit_base: bool,
    /// TTL / hop limit of unicast adverts (keepalived `unicast_ttl`); absent ⇒ 255.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unicast_ttl: Option<u8>,
    /// Unicast peers; empty ⇒ multicast.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unicast_peers: Vec<String>,
    /// Accept unicast adverts with TTL below 255.
    #[serde(default)]
    pub allow_lower_ttl: bool,
    /// VRRPv2 PASS password (1–8 bytes), in memory only: never serialised, so it is in no
    /// VRRPNode, cache file or report. Standalone mode reads it from keepalived.conf; in
    /// cluster mode the agent fills it in from its node's auth Secret under `authKey`.
    // Not `serde(skip)`: the schema derive's copy of this struct would never read the field
    // (a dead-code warning). `never_serialised` skips it always.
    #[serde(skip_deserializing, skip_serializing_if = "never_serialised")]
    #[schemars(skip)]
    pub auth_pass: Option<crate::auth::Password>,
    /// Cluster mode, VRRPv2 PASS authentication: the key of this instance's password in the
    /// node's auth Secret (`kube-vrrp-auth-<node>` in the release namespace). The password
    /// itself is never in the VRRPNode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_key: Option<String>,
    /// Trackers with defaults applied.
    #[serde(default, skip_serializing_if = "ResolvedTrack::is_empty")]
    pub track: ResolvedTrack,
    /// GARP / NA settings with defaults applied.
    pub garp: ResolvedGarp,
    /// Notify scripts.
    #[serde(default, skip_serializing_if = "ResolvedNotify::is_empty")]
    pub notify: ResolvedNotify,
    /// Sync group name (scoped: `NAMESPACE/GROUP` in-cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_group: Option<String>,
    /// The sync group's notify scripts (run when the group as a whole changes state).
    #[serde(default, skip_serializing_if = "ResolvedNotify::is_empty")]
    pub sync_group_notify: ResolvedNotify,
    /// Take over a static (standalone) agent's running instance for the same VRID on this
    /// node, when both agree (the VirtualIP annotation `kubevrrp.io/adopt-static: "true"`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt_static: bool,
    /// The highest priority each other node running this instance can advertise (its
    /// priority plus its trackers' positive weights), when the operator planned them all:
    /// the backup that outranks every node but the one leaving takes over at once on the
    /// master's priority-0 advert instead of waiting Skew_Time (planned handover). Absent in
    /// standalone mode, where peers are unknown and RFC timing applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_priorities: Option<Vec<u8>>,
}

/// `skip_serializing_if` of [`ResolvedInstance::auth_pass`]: always skipped.
fn never_serialised<T>(_: &T) -> bool {
    true
}

impl ResolvedInstance {
    /// The highest priority this instance can advertise: its priority plus the most every
    /// tracker can add (a positive weight; with `reverse`, either sign may end up added),
    /// at most 254 (an owner's 255 stays 255), as the agent's trackers compute it.
    pub fn priority_ceiling(&self) -> u8 {
        if self.priority == 255 {
            return 255;
        }
        let t = &self.track;
        let most = |weight: i16, reverse: bool| {
            if reverse {
                i32::from(weight).abs()
            } else {
                i32::from(weight.max(0))
            }
        };
        let up: i32 = t
            .interfaces
            .iter()
            .map(|x| most(x.weight, x.reverse))
            .chain(t.scripts.iter().map(|x| most(x.weight, x.reverse)))
            .chain(t.processes.iter().map(|x| most(x.weight, x.reverse)))
            .chain(t.files.iter().map(|x| most(x.weight, x.reverse)))
            .chain(t.pods.iter().map(|x| most(x.weight, false)))
            .chain(t.http.iter().map(|x| most(x.weight, x.reverse)))
            .sum();
        (i32::from(self.priority) + up).clamp(1, 254) as u8
    }

    /// Whether the agent would run commands for this instance (`track.scripts`, `notify`,
    /// `syncGroupNotify`): see [`crate::policy`].
    pub fn runs_commands(&self) -> bool {
        !self.track.scripts.is_empty()
            || !self.notify.is_empty()
            || !self.sync_group_notify.is_empty()
    }
}

impl Default for ResolvedInstance {
    /// Empty, with keepalived's defaults where an empty value would differ from them
    /// (accept on).
    fn default() -> Self {
        ResolvedInstance {
            name: String::new(),
            virtual_ip: None,
            virtual_router_id: 0,
            version: 0,
            interface: None,
            priority: 0,
            initial_state: Default::default(),
            advert_interval_ms: 0,
            preempt: false,
            preempt_delay_ms: 0,
            accept: default_accept(),
            addresses: Vec::new(),
            excluded_addresses: Vec::new(),
            unicast_source: None,
            use_vmac: false,
            vmac_xmit_base: false,
            unicast_ttl: None,
            unicast_peers: Vec::new(),
            allow_lower_ttl: false,
            auth_pass: None,
            auth_key: None,
            track: Default::default(),
            garp: Default::default(),
            notify: Default::default(),
            sync_group: None,
            sync_group_notify: Default::default(),
            adopt_static: false,
            peer_priorities: None,
        }
    }
}

/// What must agree between a static (standalone) agent's instance and an in-cluster one for
/// the in-cluster agent to take it over: everything that decides behaviour on the wire and on
/// the node, with the names that only say where the instance came from taken out.
///
/// `interface` and `source` are where the agent placed the instance (its interface and the
/// address its adverts come from), so an instance that names them and one that lets the agent
/// pick compare equal when they land in the same place. Removed or normalised: the instance
/// name, the VirtualIP reference, `adoptStatic`, the initial state (it only matters at
/// start-up, and an adopted instance does not start up), the `NAMESPACE/NAME/` scope of
/// tracker names and the `NAMESPACE/` scope of the sync group name. The password's source
/// (`authKey`) is left out; the password itself is compared by its SHA-256 (`authPassSha256`).
pub fn adoption_view(ri: &ResolvedInstance, interface: &str, source: &str) -> serde_json::Value {
    let mut v = ri.clone();
    let unscope = |name: &mut String, prefix: &str| {
        if let Some(rest) = name.strip_prefix(prefix) {
            *name = rest.to_string();
        }
    };
    if let Some(r) = &ri.virtual_ip {
        let p = format!("{}/{}/", r.namespace, r.name);
        let t = &mut v.track;
        for n in t.scripts.iter_mut().map(|x| &mut x.name) {
            unscope(n, &p);
        }
        for n in t.processes.iter_mut().map(|x| &mut x.name) {
            unscope(n, &p);
        }
        for n in t.files.iter_mut().map(|x| &mut x.name) {
            unscope(n, &p);
        }
        for n in t.pods.iter_mut().map(|x| &mut x.name) {
            unscope(n, &p);
        }
        for n in t.http.iter_mut().map(|x| &mut x.name) {
            unscope(n, &p);
        }
        if let Some(g) = v.sync_group.as_mut() {
            unscope(g, &format!("{}/", r.namespace));
        }
    }
    v.name = String::new();
    v.virtual_ip = None;
    v.adopt_static = false;
    // Who else runs the instance is the operator's knowledge, not the instance's behaviour.
    v.peer_priorities = None;
    v.initial_state = crate::virtualip::InitialState::Backup;
    v.interface = Some(interface.to_string());
    v.unicast_source = Some(source.to_string());
    // Where the password comes from does not matter, only that both use the same one; the
    // view travels between agents, so it carries the password's digest, never the password.
    v.auth_key = None;
    // Serialising plain derived structs cannot fail.
    let mut view = serde_json::to_value(&v).unwrap_or_default();
    if let (Some(p), Some(o)) = (&ri.auth_pass, view.as_object_mut()) {
        o.insert(
            "authPassSha256".into(),
            serde_json::Value::String(p.digest()),
        );
    }
    view
}

/// SHA-256 (hex) of an [`adoption_view`]: equal hashes ⇒ the instances agree.
pub fn adoption_hash(view: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    let bytes = serde_json::to_vec(view).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

/// The fields in which two [`adoption_view`]s differ, as camelCase paths (`priority`,
/// `track.http`), sorted; empty when they agree.
pub fn adoption_differences(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (ma, mb) = (
        a.as_object().unwrap_or(&empty),
        b.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = ma.keys().chain(mb.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for k in keys {
        let (x, y) = (ma.get(k), mb.get(k));
        if x == y {
            continue;
        }
        match (x.and_then(|v| v.as_object()), y.and_then(|v| v.as_object())) {
            (Some(_), Some(_)) | (Some(_), None) | (None, Some(_)) if k == "track" => {
                let nx = x.cloned().unwrap_or_default();
                let ny = y.cloned().unwrap_or_default();
                out.extend(
                    adoption_differences(&nx, &ny)
                        .into_iter()
                        .map(|sub| format!("{k}.{sub}")),
                );
            }
            _ => out.push(k.clone()),
        }
    }
    out
}

/// Namespace and name of a VirtualIP.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, KubeSchema,
)]
pub struct ObjectRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Trackers with defaults applied.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedTrack {
    /// Interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<ResolvedTrackInterface>,
    /// Scripts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scripts: Vec<ResolvedTrackScript>,
    /// Processes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ResolvedTrackProcess>,
    /// Files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ResolvedTrackFile>,
    /// Pods (in-cluster only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<ResolvedTrackPods>,
    /// HTTP(S) checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<ResolvedTrackHttp>,
}

impl ResolvedTrack {
    /// True when nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.interfaces.is_empty()
            && self.scripts.is_empty()
            && self.processes.is_empty()
            && self.files.is_empty()
            && self.pods.is_empty()
            && self.http.is_empty()
    }
}

/// A tracked interface.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedTrackInterface {
    /// Interface name.
    pub name: String,
    /// Weight (0 ⇒ FAULT when down).
    pub weight: i16,
    /// Reverse the weight.
    #[serde(default)]
    pub reverse: bool,
}

/// A tracked script.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedTrackScript {
    /// Tracker name.
    pub name: String,
    /// Command line.
    pub script: String,
    /// Run interval, ms.
    pub interval_ms: u32,
    /// Timeout, ms.
    pub timeout_ms: u32,
    /// Successes to become up.
    pub rise: u32,
    /// Failures to become down.
    pub fall: u32,
    /// Weight (0 ⇒ FAULT when down).
    pub weight: i16,
    /// Reverse the weight.
    #[serde(default)]
    pub reverse: bool,
    /// Run as this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// A tracked process.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedTrackProcess {
    /// Tracker name.
    pub name: String,
    /// Process name.
    pub process: String,
    /// Weight (0 ⇒ FAULT when below quorum).
    pub weight: i16,
    /// Needed count.
    pub quorum: u32,
    /// Reverse the weight.
    #[serde(default)]
    pub reverse: bool,
}

/// A tracked file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedTrackFile {
    /// Tracker name.
    pub name: String,
    /// Path.
    pub path: String,
    /// Weight multiplied by the file's integer.
    pub weight: i16,
    /// Reverse the weight.
    #[serde(default)]
    pub reverse: bool,
}

/// Tracked pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedTrackPods {
    /// Tracker name.
    pub name: String,
    /// Namespace of the pods.
    pub namespace: String,
    /// Label selector in string form (`app=web,tier in (a,b)`).
    pub selector: String,
    /// Weight (0 ⇒ FAULT below quorum).
    pub weight: i16,
    /// Needed count of Ready pods.
    pub quorum: u32,
}

/// An HTTP(S) check.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedTrackHttp {
    /// Tracker name.
    pub name: String,
    /// URL to GET.
    pub url: String,
    /// Status code that counts as success.
    pub expect_status: u16,
    /// Check interval, ms.
    pub interval_ms: u32,
    /// Timeout, ms.
    pub timeout_ms: u32,
    /// Successes to become up.
    pub rise: u32,
    /// Failures to become down.
    pub fall: u32,
    /// Weight (0 ⇒ FAULT when down).
    pub weight: i16,
    /// Reverse the weight.
    #[serde(default)]
    pub reverse: bool,
    /// PEM file of trusted CA certificates; absent ⇒ the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Name to verify the certificate against (and send as SNI); absent ⇒ the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Accept any certificate.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// GARP settings with defaults applied.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedGarp {
    /// Delay before the second burst, ms (0 = no second burst).
    pub master_delay_ms: u32,
    /// Packets per burst.
    pub master_repeat: u32,
    /// Refresh period, ms (0 = off).
    pub master_refresh_ms: u32,
    /// Packets per refresh.
    pub master_refresh_repeat: u32,
}

impl Default for ResolvedGarp {
    /// keepalived's defaults: 5 packets, again after 5 s, no refresh.
    fn default() -> Self {
        Self {
            master_delay_ms: 5000,
            master_repeat: 5,
            master_refresh_ms: 0,
            master_refresh_repeat: 1,
        }
    }
}

/// Notify scripts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedNotify {
    /// On MASTER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// On BACKUP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// On FAULT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// On STOP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
    /// On every change, with `INSTANCE NAME STATE PRIORITY` appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<String>,
    /// Kill after this long, ms.
    #[serde(default = "default_notify_timeout_ms")]
    pub timeout_ms: u32,
}

fn default_accept() -> bool {
    true
}

fn default_notify_timeout_ms() -> u32 {
    30_000
}

impl Default for ResolvedNotify {
    /// No scripts, 30 s timeout.
    fn default() -> Self {
        Self {
            master: None,
            backup: None,
            fault: None,
            stop: None,
            any: None,
            timeout_ms: default_notify_timeout_ms(),
        }
    }
}

impl ResolvedNotify {
    /// True when no script is configured.
    pub fn is_empty(&self) -> bool {
        self.master.is_none()
            && self.backup.is_none()
            && self.fault.is_none()
            && self.stop.is_none()
            && self.any.is_none()
    }
}

/// VRRP state as reported by an agent.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum VrrpState {
    /// Initialize.
    Init,
    /// Backup.
    Backup,
    /// Master.
    Master,
    /// Fault (keepalived's extra state).
    Fault,
    /// Not reported by an agent: the operator's verdict in `VirtualIP.status.nodes[]` for a
    /// node whose agent has stopped renewing its Lease (its last report no longer counts).
    Unknown,
}

impl std::fmt::Display for VrrpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VrrpState::Init => "INIT",
            VrrpState::Backup => "BACKUP",
            VrrpState::Master => "MASTER",
            VrrpState::Fault => "FAULT",
            VrrpState::Unknown => "UNKNOWN",
        })
    }
}

/// Live state written by the node's agent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VRRPNodeStatus {
    /// Per instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub instances: Vec<InstanceStatus>,
    /// Number of instances (INSTANCES column).
    #[serde(default)]
    pub instance_count: u32,
    /// Number in MASTER (MASTERS column).
    #[serde(default)]
    pub master_count: u32,
    /// Number in FAULT (FAULTS column).
    #[serde(default)]
    pub fault_count: u32,
    /// The agent's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// Hash of the spec the agent runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_config_hash: Option<String>,
}

/// Live state of one instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Instance name (matches the spec).
    pub name: String,
    /// Current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<VrrpState>,
    /// Priority after trackers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_priority: Option<u8>,
    /// Tracker results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trackers: Vec<TrackerStatus>,
    /// Master address seen on the wire (or this node's own when master).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_address: Option<String>,
    /// When the current state was entered (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// Why the last transition happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why the instance is in FAULT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_reason: Option<String>,
    /// When MASTER after a takeover: the master address this node heard last before it took
    /// over (the evidence that the previous master went silent on the wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_master: Option<String>,
    /// When MASTER after a takeover: how the takeover went, measured on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub takeover: Option<TakeoverTiming>,
    /// For an instance with `adoptStatic`: whether this node's agent took over the static
    /// agent's instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adoption: Option<Adoption>,
}

/// How the takeover of a static instance went on one node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Adoption {
    /// `Adopted`, `NoStaticInstance`, `Mismatch` or `Failed`.
    pub phase: AdoptionPhase,
    /// What happened, e.g. which fields differ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Outcome of adopting a static instance on one node.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    schemars::JsonSchema,
)]
pub enum AdoptionPhase {
    /// Looking for the static agent's instance; the instance does not run here yet.
    #[default]
    Pending,
    /// The static agent's instance was taken over in its state; the static agent no longer
    /// runs it.
    Adopted,
    /// No static agent runs this VRID here: the instance runs on its own.
    NoStaticInstance,
    /// A static agent runs this VRID here with another configuration: nothing changed, the
    /// static agent keeps it; `message` names the fields that differ.
    Mismatch,
    /// The static agent did not answer the handover: nothing changed; retried.
    Failed,
}

impl std::fmt::Display for AdoptionPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AdoptionPhase::Pending => "Pending",
            AdoptionPhase::Adopted => "Adopted",
            AdoptionPhase::NoStaticInstance => "NoStaticInstance",
            AdoptionPhase::Mismatch => "Mismatch",
            AdoptionPhase::Failed => "Failed",
        })
    }
}

/// A takeover as measured by the new master, in milliseconds of its own monotonic clock.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TakeoverTiming {
    /// From the last advert heard from the old master to the decision to take over (master
    /// down timer expiry, or the priority-0 advert's Skew_Time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_ms: Option<u64>,
    /// From the decision until every VIP was bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_ms: Option<u64>,
    /// From the decision until the first gratuitous ARP / unsolicited NA was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce_ms: Option<u64>,
}

/// One tracker's result.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrackerStatus {
    /// `interface`, `script`, `process`, `file`, `pods` or `http`.
    pub kind: String,
    /// Tracker name.
    pub name: String,
    /// Whether it is up.
    pub up: bool,
    /// Contribution to the priority (0 for weight-0 trackers).
    #[serde(default)]
    pub delta: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(weight: i16, reverse: bool) -> ResolvedTrackInterface {
        ResolvedTrackInterface {
            name: format!("eth{weight}"),
            weight,
            reverse,
        }
    }

    #[test]
    fn the_priority_ceiling_counts_what_trackers_can_add() {
        let mut ri = ResolvedInstance {
            priority: 100,
            ..Default::default()
        };
        assert_eq!(ri.priority_ceiling(), 100);
        ri.track.interfaces = vec![link(20, false), link(-30, false)];
        assert_eq!(ri.priority_ceiling(), 120, "a negative weight only lowers");
        ri.track.interfaces.push(link(-10, true));
        assert_eq!(ri.priority_ceiling(), 130, "reversed, either sign can add");
        ri.track.interfaces.push(link(200, false));
        assert_eq!(ri.priority_ceiling(), 254, "never above 254");
        ri.priority = 255;
        assert_eq!(ri.priority_ceiling(), 255, "an owner stays 255");
    }
}
