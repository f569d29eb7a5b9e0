//! The `VirtualIP` custom resource: one keepalived `vrrp_instance`, declared once for the cluster.
//!
//! Owns the user-facing spec (camelCase mirrors of keepalived keywords), the status the operator
//! writes, and the schema-level validation (OpenAPI bounds plus CEL rules) that makes
//! `kubectl apply` reject a bad spec with a message naming the field. The same rules exist in
//! Rust in [`crate::validate`], which reports every problem at once.

// kube's `printcolumn(name = …, type_ = "string", …)` repeats `type_` on purpose.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Annotation on a VirtualIP: `kubevrrp.io/adopt-static: "true"` makes each node's agent take
/// over a static (standalone) agent's running instance of the same VRID and addresses, without
/// a state change, when their configurations agree.
pub const ADOPT_STATIC_ANNOTATION: &str = "kubevrrp.io/adopt-static";

/// Rule helper: the address family (4 or 6) of an address written as `IP` or `IP/len`.
macro_rules! family_of {
    ($a:literal) => {
        concat!(
            "(isIP(",
            $a,
            ") ? ip(",
            $a,
            ").family() : cidr(",
            $a,
            ").ip().family())"
        )
    };
}

/// Desired state of one virtual router (keepalived's `vrrp_instance`).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[cfg_attr(test, kube(cel))]
#[kube(
    group = "kubevrrp.io",
    version = "v1alpha1",
    kind = "VirtualIP",
    plural = "virtualips",
    singular = "virtualip",
    shortname = "vip",
    shortname = "vips",
    category = "kubevrrp",
    namespaced,
    status = "VirtualIPStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A virtual IP address held by one node at a time, elected with VRRP (keepalived's vrrp_instance).",
    printcolumn(name = "Address", type_ = "string", json_path = ".spec.addresses[0]"),
    printcolumn(
        name = "VRID",
        type_ = "integer",
        json_path = ".status.virtualRouterID"
    ),
    printcolumn(name = "Master", type_ = "string", json_path = ".status.master"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Nodes", type_ = "string", json_path = ".status.nodesSummary"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(oldSelf.virtualRouterID) || (has(self.virtualRouterID) && self.virtualRouterID == oldSelf.virtualRouterID)"
).message("virtualRouterID is immutable once set").field_path(".virtualRouterID").reason(Reason::FieldValueForbidden))]
#[x_kube(validation = Rule::new(
    "!has(self.version) || self.version == 3 || !has(self.advertInterval) || (duration(self.advertInterval).getMilliseconds() % 1000 == 0 && duration(self.advertInterval) >= duration('1s') && duration(self.advertInterval) <= duration('255s'))"
).message("advertInterval: VRRPv2 needs a whole number of seconds from 1s to 255s").field_path(".advertInterval"))]
#[x_kube(validation = Rule::new(
    "(has(self.version) && self.version == 2) || !has(self.advertInterval) || (duration(self.advertInterval).getMilliseconds() % 10 == 0 && duration(self.advertInterval) >= duration('10ms') && duration(self.advertInterval) <= duration('40950ms'))"
).message("advertInterval: VRRPv3 needs 10ms to 40.95s in steps of 10ms").field_path(".advertInterval"))]
#[x_kube(validation = Rule::new(
    concat!("!has(self.version) || self.version == 3 || self.addresses.all(a, !(isIP(a) || isCIDR(a)) || ", family_of!("a"), " == 4)")
).message("addresses: VRRPv2 carries IPv4 only; use version 3 for IPv6").field_path(".addresses"))]
#[x_kube(validation = Rule::new(
    concat!("self.addresses.all(a, !(isIP(a) || isCIDR(a)) || !(isIP(self.addresses[0]) || isCIDR(self.addresses[0])) || ", family_of!("a"), " == ", family_of!("self.addresses[0]"), ")")
).message("addresses: all addresses of one VirtualIP must be of one family (IPv4 or IPv6); put others in excludedAddresses").field_path(".addresses"))]
#[x_kube(validation = Rule::new(
    concat!("!has(self.unicast) || !has(self.unicast.sourceAddress) || !isIP(self.unicast.sourceAddress) || !(isIP(self.addresses[0]) || isCIDR(self.addresses[0])) || ip(self.unicast.sourceAddress).family() == ", family_of!("self.addresses[0]"))
).message("unicast.sourceAddress: must be of the family of the addresses").field_path(".unicast.sourceAddress"))]
#[x_kube(validation = Rule::new(
    concat!("!has(self.nodes) || !(isIP(self.addresses[0]) || isCIDR(self.addresses[0])) || self.nodes.all(n, !has(n.sourceAddress) || !isIP(n.sourceAddress) || ip(n.sourceAddress).family() == ", family_of!("self.addresses[0]"), ")")
).message("nodes: every sourceAddress must be of the family of the addresses").field_path(".nodes"))]
#[x_kube(validation = Rule::new(
    concat!("size(self.addresses) == 0 || !(isIP(self.addresses[0]) || isCIDR(self.addresses[0])) || ", family_of!("self.addresses[0]"), " == 4 || size(self.addresses) <= 89")
).message("addresses: an advert carries at most 89 IPv6 addresses in a standard 1500-byte MTU; put the others in excludedAddresses").field_path(".addresses"))]
#[x_kube(validation = Rule::new(
    "!has(self.syncGroupNotify) || has(self.syncGroup)"
).message("syncGroupNotify: set syncGroup too; without a group these scripts never run").field_path(".syncGroupNotify"))]
#[x_kube(validation = Rule::new(
    "!has(self.authentication) || (has(self.version) && self.version == 2)"
).message("authentication: only VRRPv2 has authentication; set version: 2 or remove it").field_path(".authentication"))]
pub struct VirtualIPSpec {
    /// Virtual router identifier (keepalived `virtual_router_id`), 1–255. When omitted, the
    /// operator allocates the lowest free one for the network of the first address.
    #[serde(
        default,
        rename = "virtualRouterID",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 255))]
    pub virtual_router_id: Option<u8>,

    /// VRRP version, 2 (RFC 3768) or 3 (RFC 9568). Default 3. IPv6 needs 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 3))]
    pub version: Option<u8>,

    /// Interface VRRP runs on (keepalived `interface`). Default: the node interface whose
    /// subnet holds the first address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15))]
    pub interface: Option<String>,

    /// Base priority, 1–255 (255 = address owner). Default 100. Unless `nodes` says otherwise,
    /// the operator gives the first eligible node this priority and each next one one less.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 255))]
    pub priority: Option<u8>,

    /// Initial state (keepalived `state`). Default BACKUP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<InitialState>,

    /// Advertisement interval (keepalived `advert_int`) as a duration such as `1s` or `100ms`.
    /// VRRPv2: whole seconds 1s–255s. VRRPv3: 10ms–40.95s in 10ms steps. Default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')").message("advertInterval must be a positive duration such as 1s or 100ms"))]
    pub advert_interval: Option<kube::core::Duration>,

    /// Preempt a lower-priority master (keepalived: on unless `nopreempt`). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempt: Option<bool>,

    /// Wait this long after start-up before preempting (keepalived `preempt_delay`), 0s–1000s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('0s') && duration(self) <= duration('1000s')").message("preemptDelay must be between 0s and 1000s"))]
    pub preempt_delay: Option<kube::core::Duration>,

    /// Accept packets addressed to the VIPs while master (keepalived `accept`; `false` is
    /// keepalived's `no_accept`: a master that is not the address owner, priority 255, drops
    /// them, through nftables rules the agent writes). Default true, as keepalived outside
    /// strict mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept: Option<bool>,

    /// Simple password authentication (VRRPv2 only, keepalived `authentication`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Authentication>,

    /// Virtual addresses (keepalived `virtual_ipaddress`): `IP` or `IP/len`, one family; at
    /// most 255.
    #[schemars(length(min = 1, max = 255), inner(length(max = 64)))]
    #[x_kube(validation = Rule::new("self.all(a, isIP(a) || isCIDR(a))").message("addresses: every entry must be an IP address or CIDR such as 192.0.2.10/24"))]
    pub addresses: Vec<String>,

    /// Addresses bound with the VIPs but not advertised (keepalived
    /// `virtual_ipaddress_excluded`); families may mix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2048), inner(length(max = 64)))]
    #[x_kube(validation = Rule::new("self.all(a, isIP(a) || isCIDR(a))").message("excludedAddresses: every entry must be an IP address or CIDR"))]
    pub excluded_addresses: Vec<String>,

    /// Run on a virtual MAC (keepalived `use_vmac`): a macvlan interface `vrrp.VRID` on the
    /// VRRP interface with the RFC's MAC 00-00-5E-00-01-{VRID} (IPv6: 00-00-5E-00-02-{VRID})
    /// holds the VIPs; adverts and gratuitous ARPs come from that MAC, so after a takeover
    /// clients and switches need no ARP update.
    #[serde(
        default,
        rename = "virtualMAC",
        skip_serializing_if = "Option::is_none"
    )]
    pub virtual_mac: Option<VirtualMac>,

    /// Unicast instead of multicast adverts (keepalived `unicast_peer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unicast: Option<Unicast>,

    /// Nodes that may hold the address. Default: every Ready node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,

    /// Per-node overrides of priority, initial state, interface and advert source address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.all(x, self.exists_one(y, y.name == x.name))").message("nodes: node names must be unique"))]
    pub nodes: Vec<NodeOverride>,

    /// Trackers that change priority or force FAULT (keepalived `track_*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<Track>,

    /// Gratuitous ARP / unsolicited NA settings on becoming master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub garp: Option<Garp>,

    /// Scripts run on state changes (keepalived `notify*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,

    /// Name of a sync group (keepalived `vrrp_sync_group`): VirtualIPs of one namespace with
    /// the same group name move together on a node, and one FAULT puts all in FAULT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub sync_group: Option<String>,

    /// The sync group's own notify scripts (keepalived's `notify*` of `vrrp_sync_group`), run
    /// on a node when the group as a whole enters MASTER (every member master), BACKUP (every
    /// member backup), FAULT (any member in fault) or STOP; `any` gets `GROUP NAME STATE 0`
    /// appended. Give the same scripts on every member: the agent runs those of the member
    /// first by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_group_notify: Option<Notify>,
}

/// Initial state at start-up (keepalived `state`).
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum InitialState {
    /// Start as master at once (keepalived `state MASTER`).
    Master,
    /// Start as backup and wait Master_Down_Interval (the default).
    #[default]
    Backup,
}

/// VRRPv2 simple password authentication.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Authentication {
    /// Only `PASS` (keepalived `auth_type PASS`); AH is deprecated and not supported.
    #[serde(rename = "type")]
    pub auth_type: AuthType,
    /// The Secret key holding the password (1–8 bytes, keepalived `auth_pass`).
    pub password_secret_ref: SecretKeyRef,
}

/// Authentication type.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum AuthType {
    /// Clear-text password (RFC 2338 type 1).
    #[default]
    #[serde(rename = "PASS")]
    Pass,
}

/// A key in a Secret of the VirtualIP's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data. Default `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

impl SecretKeyRef {
    /// The key to read, `password` when unset.
    pub fn key_or_default(&self) -> &str {
        self.key.as_deref().unwrap_or("password")
    }
}

/// Virtual MAC settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMac {
    /// Send adverts from the VRRP interface itself rather than from the virtual MAC
    /// (keepalived `vmac_xmit_base`); unicast always does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xmit_base: Option<bool>,
}

/// Unicast mode.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Unicast {
    /// Send adverts by unicast. With no `peers`, the peers are the other eligible nodes'
    /// InternalIPs of the address family.
    #[serde(default)]
    pub enabled: bool,
    /// Explicit peer addresses (keepalived `unicast_peer`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 64)))]
    #[x_kube(validation = Rule::new("self.all(p, isIP(p))").message("unicast.peers: every entry must be an IP address"))]
    pub peers: Vec<String>,
    /// Accept unicast adverts with a TTL/hop limit below 255 (peers behind routers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_lower_ttl: Option<bool>,
    /// Source address of this VirtualIP's adverts on every node (keepalived `unicast_src_ip`);
    /// usually set per node in `nodes[].sourceAddress` instead. Default: the interface's
    /// primary IPv4 address or its IPv6 link-local address. It must be an address of the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("isIP(self)").message("unicast.sourceAddress must be an IP address"))]
    pub source_address: Option<String>,
    /// TTL / hop limit of the unicast adverts sent (keepalived `unicast_ttl`), 1–255. Default
    /// 255. Peers receiving adverts below 255 need `allowLowerTtl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 255))]
    pub ttl: Option<u8>,
}

/// A per-node override.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeOverride {
    /// Node name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Priority on that node, 1–255.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 255))]
    pub priority: Option<u8>,
    /// Initial state on that node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<InitialState>,
    /// Interface on that node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15))]
    pub interface: Option<String>,
    /// Source address of the adverts on that node (keepalived `unicast_src_ip`); overrides
    /// `unicast.sourceAddress`. With unicast and no explicit `unicast.peers`, the other nodes
    /// send their adverts to this address instead of the node's InternalIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("isIP(self)").message("nodes[].sourceAddress must be an IP address"))]
    pub source_address: Option<String>,
}

/// Trackers. Weight 0 means "failure ⇒ FAULT"; a positive weight is added while the tracker is
/// up, a negative one subtracted while it is down (keepalived semantics).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Track {
    /// Interfaces whose link state is tracked (keepalived `track_interface`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(x, self.exists_one(y, y.name == x.name))").message("track.interfaces: names must be unique"))]
    pub interfaces: Vec<TrackInterface>,
    /// Scripts run periodically (keepalived `vrrp_script`), at most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(x, self.exists_one(y, y.name == x.name))").message("track.scripts: names must be unique"))]
    pub scripts: Vec<TrackScript>,
    /// Processes that must run (keepalived `vrrp_track_process`; needs hostPID in a pod).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(x, self.exists_one(y, y.name == x.name))").message("track.processes: names must be unique"))]
    pub processes: Vec<TrackProcess>,
    /// Files holding an integer (keepalived `track_file`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(x, self.exists_one(y, y.name == x.name))").message("track.files: names must be unique"))]
    pub files: Vec<TrackFile>,
    /// Pods that must be Ready on the node (Kubernetes-native).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(x, self.exists_one(y, y.name == x.name))").message("track.pods: names must be unique"))]
    pub pods: Vec<TrackPods>,
    /// HTTP(S) health checks made by the agent itself (no shell or curl needed), at most 16:
    /// like a `vrrp_script` whose command is a GET of `url`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(x, self.exists_one(y, y.name == x.name))").message("track.http: names must be unique"))]
    pub http: Vec<TrackHttp>,
}

/// An HTTP(S) health check: a GET of `url` every `interval`; the expected status code within
/// `timeout` is a success, anything else (another code, a refused or reset connection, a TLS
/// failure, the timeout) a failure. Rise, fall, weight and reverse work as for a script.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.caFile) || self.url.startsWith('https://')").message("caFile is only used with an https:// url").field_path(".caFile"))]
#[x_kube(validation = Rule::new("!has(self.serverName) || self.url.startsWith('https://')").message("serverName is only used with an https:// url").field_path(".serverName"))]
#[x_kube(validation = Rule::new("!has(self.insecureSkipVerify) || !self.insecureSkipVerify || self.url.startsWith('https://')").message("insecureSkipVerify is only used with an https:// url").field_path(".insecureSkipVerify"))]
#[x_kube(validation = Rule::new("!has(self.insecureSkipVerify) || !self.insecureSkipVerify || (!has(self.caFile) && !has(self.serverName))").message("insecureSkipVerify skips certificate checks: caFile and serverName would be ignored, remove them or it").field_path(".insecureSkipVerify"))]
pub struct TrackHttp {
    /// Tracker name.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// What to GET: an `http://` or `https://` URL, e.g. `https://127.0.0.1:6443/readyz`.
    /// At most 2048 bytes.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("url must start with http:// or https://"))]
    pub url: String,
    /// The status code that counts as success (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 599))]
    pub expect_status: Option<u16>,
    /// How often to check, at least 100ms. Default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('100ms')").message("interval must be at least 100ms"))]
    pub interval: Option<kube::core::Duration>,
    /// Count a failure when no response arrived after this long, at least 100ms. Default: the
    /// interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('100ms')").message("timeout must be at least 100ms"))]
    pub timeout: Option<kube::core::Duration>,
    /// Successes needed to count as up (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub rise: Option<u32>,
    /// Failures needed to count as down (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub fall: Option<u32>,
    /// Weight −254..254; 0 (default) ⇒ failure means FAULT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -254, max = 254))]
    pub weight: Option<i16>,
    /// Invert the meaning of the weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse: Option<bool>,
    /// PEM file on the node with the CA certificates that may sign the server's certificate
    /// (e.g. `/etc/kubernetes/pki/ca.crt`). Default: the system's trusted roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub ca_file: Option<String>,
    /// The name the server's certificate must carry (and the TLS SNI), when it differs from
    /// the URL's host: e.g. `kubernetes` for `https://127.0.0.1:6443`, whose certificate
    /// kubeadm does not issue for 127.0.0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub server_name: Option<String>,
    /// Accept any server certificate (curl's `-k`). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// Tracked interface.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrackInterface {
    /// Interface name.
    #[schemars(length(min = 1, max = 15))]
    pub name: String,
    /// Weight −254..254; 0 (default) ⇒ down means FAULT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -254, max = 254))]
    pub weight: Option<i16>,
    /// Invert the meaning of the weight (keepalived `reverse`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse: Option<bool>,
}

/// Tracked script.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrackScript {
    /// Tracker name (keepalived `vrrp_script NAME`).
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Command line; exit 0 = success. At most 1024 bytes.
    #[schemars(length(min = 1, max = 1024))]
    pub script: String,
    /// How often to run it, at least 1s (keepalived counts script intervals in whole seconds).
    /// Default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("interval must be at least 1s (keepalived runs scripts in whole seconds)"))]
    pub interval: Option<kube::core::Duration>,
    /// Kill it and count a failure after this long, at least 1s. Default: the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s')").message("timeout must be at least 1s (keepalived counts script timeouts in whole seconds)"))]
    pub timeout: Option<kube::core::Duration>,
    /// Successes needed to count as up (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub rise: Option<u32>,
    /// Failures needed to count as down (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub fall: Option<u32>,
    /// Weight −254..254; 0 (default) ⇒ failure means FAULT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -254, max = 254))]
    pub weight: Option<i16>,
    /// Invert the meaning of the weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse: Option<bool>,
    /// Run as this user (keepalived `user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Tracked process.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrackProcess {
    /// Tracker name (keepalived `vrrp_track_process NAME`).
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Process name as in /proc/PID/comm (keepalived `process`).
    #[schemars(length(min = 1, max = 255))]
    pub process: String,
    /// Weight −254..254; 0 (default) ⇒ missing means FAULT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -254, max = 254))]
    pub weight: Option<i16>,
    /// How many must run (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub quorum: Option<u32>,
    /// Invert the meaning of the weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse: Option<bool>,
}

/// Tracked file: the integer it holds times the weight is added to the priority; with weight 0,
/// a non-zero value means FAULT.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrackFile {
    /// Tracker name.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// File path on the node.
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,
    /// Weight −254..254 (default 1, as keepalived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -254, max = 254))]
    pub weight: Option<i16>,
    /// Invert the meaning of the weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse: Option<bool>,
}

/// Tracked pods: those matching `selector` that are Ready on the node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrackPods {
    /// Tracker name.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Pods (in the VirtualIP's namespace) to count.
    pub selector: LabelSelector,
    /// Weight −254..254; 0 (default) ⇒ below quorum means FAULT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -254, max = 254))]
    pub weight: Option<i16>,
    /// How many Ready pods are needed (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub quorum: Option<u32>,
}

/// Gratuitous ARP / unsolicited NA on becoming master.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Garp {
    /// Delay before the second burst (keepalived `garp_master_delay`, default 5s; 0s = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('0s') && duration(self) <= duration('255s')").message("garp.masterDelay must be between 0s and 255s"))]
    pub master_delay: Option<kube::core::Duration>,
    /// Packets per burst (keepalived `garp_master_repeat`, default 5), 1–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub master_repeat: Option<u32>,
    /// Periodic refresh while master (keepalived `garp_master_refresh`; unset or 0s = off,
    /// otherwise at least 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) == duration('0s') || duration(self) >= duration('1s')").message("garp.masterRefresh must be 0s (off) or at least 1s"))]
    pub master_refresh: Option<kube::core::Duration>,
    /// Packets per refresh (keepalived `garp_master_refresh_repeat`, default 1), 1–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub master_refresh_repeat: Option<u32>,
}

/// Notify scripts (keepalived `notify_*`); each command line is at most 1024 bytes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notify {
    /// Run on entering MASTER, no arguments added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub master: Option<String>,
    /// Run on entering BACKUP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub backup: Option<String>,
    /// Run on entering FAULT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub fault: Option<String>,
    /// Run on stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub stop: Option<String>,
    /// Run on every change with `INSTANCE NAME STATE PRIORITY` appended (keepalived `notify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub any: Option<String>,
    /// Kill a notify script after this long (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<kube::core::Duration>,
}

/// Observed state, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualIPStatus {
    /// Node currently MASTER (only when exactly one node reports MASTER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// The master's primary address as seen on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_address: Option<String>,
    /// Effective VRID (given or allocated).
    #[serde(
        default,
        rename = "virtualRouterID",
        skip_serializing_if = "Option::is_none"
    )]
    pub virtual_router_id: Option<u8>,
    /// Summary phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Per-node state, e.g. `1M/2B/0F` in `nodesSummary`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["node".into()]))]
    pub nodes: Vec<NodeStatus>,
    /// Masters/backups/faults as `1M/2B/0F` (the NODES column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_summary: Option<String>,
    /// Standard conditions: Ready, SplitBrain, VRIDConflict, Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The last master move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failover: Option<LastFailover>,
}

/// Summary phase of a VirtualIP.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Phase {
    /// Not yet deployed or no node has reported.
    Pending,
    /// Exactly one master.
    Active,
    /// Deployed but no node is master.
    NoMaster,
    /// More than one node reports MASTER.
    SplitBrain,
    /// Not deployed because of a conflict (VRID, invalid spec, missing Secret).
    Conflict,
}

/// One node's view of a VirtualIP.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Node name.
    pub node: String,
    /// INIT, BACKUP, MASTER or FAULT as reported; UNKNOWN when the agent is not reporting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<crate::vrrpnode::VrrpState>,
    /// Priority after trackers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_priority: Option<u8>,
    /// Configured priority on this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_priority: Option<u8>,
    /// Tracker results on this node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trackers: Vec<crate::vrrpnode::TrackerStatus>,
    /// When the node entered its current state (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Why the node is in FAULT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_reason: Option<String>,
    /// Why this node's entry needs attention: `AgentNotReporting` (its agent's Lease is not
    /// renewed: its last report does not count), `NodeNotReady` (the Node is NotReady; the
    /// instance stays deployed) or `Draining` (cordoned or annotated `kubevrrp.io/drain`: its
    /// priority is below every other node's so the VIP leaves it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The last time the master moved from one node to another.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastFailover {
    /// The node that was master.
    pub from: String,
    /// The node that is master now.
    pub to: String,
    /// When the operator saw the move (RFC 3339).
    pub at: String,
    /// Why the new master took over, as it reported it (e.g. `master down timer expired`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The takeover as the new master measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub takeover: Option<crate::vrrpnode::TakeoverTiming>,
}

impl VirtualIPSpec {
    /// Effective version (default 3).
    pub fn version_or_default(&self) -> u8 {
        self.version.unwrap_or(3)
    }
    /// Effective base priority (default 100).
    pub fn priority_or_default(&self) -> u8 {
        self.priority.unwrap_or(100)
    }
    /// Effective advert interval in milliseconds (default 1000).
    pub fn advert_interval_ms(&self) -> u64 {
        self.advert_interval.map_or(1000, crate::duration_ms)
    }
    /// Effective preempt flag (default true).
    pub fn preempt_or_default(&self) -> bool {
        self.preempt.unwrap_or(true)
    }
}
