//! The executor: runs the planner on the watched world and writes only what differs.
//!
//! - A kube-runtime [`Controller`] on VirtualIP, with watches on Nodes, VRRPNodes and Secret
//!   metadata (a change maps to the VirtualIPs it concerns). Every watch feeds a reflector
//!   store; the planner reads the stores, never the API.
//! - Two caches, each with a generation that goes up when its inputs change. The placement
//!   ([`planner::place_all`]) depends on VirtualIP specs and deletion, Node labels, readiness and
//!   addresses, and Secret revisions. In the operator a planner task ([`plan_loop`]) re-places
//!   once per burst of changes ([`Coalescer`]), applies every VRRPNode whose spec differs and
//!   triggers only the VirtualIPs whose placement changed; a reconcile writes status only from
//!   a placement current for its VirtualIP, and writes of ours the watch has not shown yet
//!   ([`InFlight`]) are not repeated. Without the task (tests), the first reconcile that sees a
//!   new generation re-places. The report index
//!   ([`planner::ReportIndex`]) depends only on the agents' VRRPNode status and is rebuilt
//!   cheaply. Each reconcile then computes its own VirtualIP's status and events
//!   ([`planner::vip_plan`]) from the cached placement, the reports and the object as observed
//!   now, so an agent report never costs a full re-placement.
//! - Agent liveness: the agents' Leases (label [`AGENT_LEASE_SELECTOR`]) are watched, and the
//!   time each was seen renewed is kept by the operator's own clock ([`LeaseTracker`]). Only a
//!   change of some agent's liveness (fresh → quiet → lost, or back), from an event or checked
//!   every 500 ms, triggers reconciles; renewals themselves cost nothing.
//! - VRRPNodes are also compared with the plan every [`Settings::resync`], which undoes edits
//!   or deletions by others that did not change the plan.
//! - Writes use server-side apply with the field manager [`FIELD_MANAGER`] and happen only when
//!   the desired object differs from the observed one (compared as JSON), so a steady state
//!   makes no writes. VRRPNodes carry an ownerReference to their Node for garbage collection.
//! - The finalizer [`FINALIZER`] on each VirtualIP: on deletion the plan drops the instance from
//!   every VRRPNode, then the finalizer stays until no agent reports the instance any more, or
//!   until [`Settings::cleanup_timeout`] has passed since the deletion request.
//! - Events from the plan are published through an [`events::Recorder`] after the status write
//!   that records the transition (so they fire once).
//! - Errors requeue the VirtualIP with exponential backoff ([`backoff`]); watch streams back off
//!   on their own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crds::{VRRPNode, VirtualIP};
use futures::{FutureExt, Stream, StreamExt, TryStreamExt, future};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{self, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef as KubeRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::Error;
use crate::metrics::Metrics;
use crate::planner::{
    self, AgentLiveness, Coalescer, EventType, InFlight, LeaseTracker, Placement, ReportIndex,
    VipKey, World,
};

/// Field manager of every write the operator makes (but the auth Secrets').
pub const FIELD_MANAGER: &str = "kube-vrrp-operator";
/// Field manager of the per-node auth Secrets the operator writes.
pub const AUTH_FIELD_MANAGER: &str = "kube-vrrp-operator-auth";
/// Finalizer the operator puts on VirtualIPs.
pub const FINALIZER: &str = "kubevrrp.io/cleanup";
/// Label selector of the agents' liveness Leases.
pub const AGENT_LEASE_SELECTOR: &str = "app.kubernetes.io/component=kube-vrrp-agent-lease";

/// The stores the planner reads.
#[derive(Clone)]
pub struct Stores {
    /// VirtualIPs.
    pub virtual_ips: Store<VirtualIP>,
    /// Nodes.
    pub nodes: Store<Node>,
    /// VRRPNodes.
    pub vrrp_nodes: Store<VRRPNode>,
    /// Secret metadata (content is fetched only for referenced Secrets): one store for the
    /// whole cluster, or one per namespace the operator may read Secrets in.
    pub secrets: Vec<Store<PartialObjectMeta<Secret>>>,
    /// The per-node auth Secrets the operator writes (release namespace, label
    /// [`crds::auth::AUTH_SECRET_LABEL`]), compared with the plan before every write.
    pub auth_secrets: Store<Secret>,
}

/// Tunables of the executor.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a deleted VirtualIP waits for agents to report the instance gone.
    pub cleanup_timeout: Duration,
    /// Periodic re-reconcile of every VirtualIP.
    pub resync: Duration,
    /// Reporting instance for Events (the pod name).
    pub reporter_instance: Option<String>,
    /// Namespaces whose Secrets may be read; empty ⇒ all. A VirtualIP whose Secret lies
    /// elsewhere reports `SecretNotFound`.
    pub secret_namespaces: Vec<String>,
    /// Namespace of the agents' liveness Leases (one per node, named after it) and of the
    /// per-node auth Secrets: the release namespace.
    pub agent_lease_namespace: String,
    /// Lease duration assumed when a Lease does not state one.
    pub agent_lease_duration: Duration,
    /// Serve Services of type LoadBalancer (`None`: off).
    pub load_balancer: Option<crate::loadbalancer::LbSettings>,
    /// Which VirtualIPs may carry commands (default: none).
    pub script_policy: crds::policy::ScriptPolicy,
    /// The API stall watchdog's verdicts: after each stall [`run`] starts every watch again
    /// with a fresh list (`None`: no watchdog).
    pub api_status: Option<tokio::sync::watch::Receiver<apiclient::watchdog::Status>>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            cleanup_timeout: Duration::from_secs(60),
            resync: Duration::from_secs(300),
            reporter_instance: None,
            secret_namespaces: Vec::new(),
            agent_lease_namespace: "kube-vrrp".into(),
            agent_lease_duration: Duration::from_secs(10),
            load_balancer: None,
            script_policy: crds::policy::ScriptPolicy::default(),
            api_status: None,
        }
    }
}

/// A source of the current time (injected so tests control it).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The real clock.
pub fn system_clock() -> Clock {
    Arc::new(Timestamp::now)
}

/// Fetched Secrets: (namespace, name) → (resourceVersion, Secret).
type SecretCache = HashMap<(String, String), (Option<String>, Arc<Secret>)>;

#[derive(Default)]
struct PlanCache {
    /// VirtualIP and infrastructure generations the placement was made at.
    generation: Option<(u64, u64)>,
    placement: Option<Arc<Placement>>,
    /// [`vip_fingerprint`] of every VirtualIP the placement saw.
    prints: Arc<HashMap<VipKey, u64>>,
    nodes_synced: bool,
    synced_at: Option<Instant>,
    /// [`Context::vrrp_nodes_changed`] count at the last VRRPNode sync.
    nodes_generation: Option<u64>,
    secrets: SecretCache,
}

#[derive(Default)]
struct ReportsCache {
    generation: Option<u64>,
    reports: Option<Arc<ReportIndex>>,
}

/// The placement the planner task last applied to every VRRPNode, which reconciles read.
#[derive(Clone)]
struct Published {
    placement: Arc<Placement>,
    /// [`Context::infra_generation`] it was made at.
    infra_generation: u64,
    /// [`vip_fingerprint`] of every VirtualIP it placed, as it saw them.
    prints: Arc<HashMap<VipKey, u64>>,
}

/// Whether a placement made from the VirtualIP with fingerprint `placed_print` (`None`: it did
/// not see that VirtualIP) and infrastructure generation `placed_infra` is current for the
/// VirtualIP as observed now (`print`, `infra`), so that a status may be written from it.
/// Other VirtualIPs changing does not make it stale: when they move this one, the planner
/// triggers it again.
pub fn placement_current(
    placed_print: Option<u64>,
    placed_infra: u64,
    print: u64,
    infra: u64,
) -> bool {
    placed_print == Some(print) && placed_infra == infra
}

/// Shared state of all reconciles.
pub struct Context {
    client: Client,
    stores: Stores,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    clock: Clock,
    settings: Settings,
    /// Bumped when a VirtualIP changed as the placement reads it.
    spec_generation: Arc<AtomicU64>,
    /// Bumped when a Node or a Secret changed as the placement reads it.
    infra_generation: Arc<AtomicU64>,
    report_generation: Arc<AtomicU64>,
    /// Bumped when a VRRPNode's spec or owner changed or it was deleted (by anyone), or one
    /// of the operator's auth Secrets changed.
    nodes_generation: Arc<AtomicU64>,
    stores_ready: AtomicBool,
    leases_ready: AtomicBool,
    leases: std::sync::Mutex<LeaseTracker>,
    cache: tokio::sync::Mutex<PlanCache>,
    reports_cache: std::sync::Mutex<ReportsCache>,
    failures: std::sync::Mutex<HashMap<VipKey, u32>>,
    /// A planner task ([`plan_loop`]) places and applies the VRRPNodes; reconciles only read
    /// its [`Published`] placement. Without one (tests calling [`reconcile`] directly) each
    /// reconcile places inline when its inputs changed.
    planner_attached: AtomicBool,
    published: std::sync::Mutex<Option<Published>>,
    /// VirtualIPs whose reconcile found the placement stale: the planner triggers them after
    /// its next run.
    deferred: std::sync::Mutex<BTreeSet<VipKey>>,
    /// The operator's VRRPNode writes the watch has not shown yet (with a planner task).
    vn_writes: std::sync::Mutex<InFlight<String>>,
    /// The operator's VirtualIP writes (finalizer, status) the watch has not shown yet (with
    /// a planner task).
    vip_writes: std::sync::Mutex<InFlight<VipKey>>,
}

impl Context {
    /// A context over the given client and stores.
    pub fn new(
        client: Client,
        stores: Stores,
        metrics: Arc<Metrics>,
        settings: Settings,
        clock: Clock,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: settings.reporter_instance.clone(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            stores,
            metrics,
            clock,
            spec_generation: Arc::new(AtomicU64::new(0)),
            infra_generation: Arc::new(AtomicU64::new(0)),
            report_generation: Arc::new(AtomicU64::new(0)),
            nodes_generation: Arc::new(AtomicU64::new(0)),
            stores_ready: AtomicBool::new(false),
            leases_ready: AtomicBool::new(false),
            leases: std::sync::Mutex::new(LeaseTracker::new(settings.agent_lease_duration)),
            cache: tokio::sync::Mutex::new(PlanCache::default()),
            reports_cache: std::sync::Mutex::new(ReportsCache::default()),
            failures: std::sync::Mutex::new(HashMap::new()),
            planner_attached: AtomicBool::new(false),
            published: std::sync::Mutex::new(None),
            deferred: std::sync::Mutex::new(BTreeSet::new()),
            vn_writes: std::sync::Mutex::new(InFlight::default()),
            vip_writes: std::sync::Mutex::new(InFlight::default()),
            settings,
        }
    }

    /// Note an agent Lease event. Returns the nodes whose agent liveness changed.
    pub fn lease_event(&self, event: &watcher::Event<Lease>) -> Vec<String> {
        let now = Instant::now();
        let Ok(mut t) = self.leases.lock() else {
            return Vec::new();
        };
        let before = t.snapshot(now);
        match event {
            watcher::Event::Apply(l) | watcher::Event::InitApply(l) => {
                let relist = matches!(event, watcher::Event::InitApply(_));
                let duration = l
                    .spec
                    .as_ref()
                    .and_then(|s| s.lease_duration_seconds)
                    .and_then(|d| u64::try_from(d).ok())
                    .map(Duration::from_secs);
                t.observe(
                    &l.name_any(),
                    l.metadata.resource_version.as_deref(),
                    duration,
                    relist,
                    now,
                );
            }
            watcher::Event::Delete(l) => {
                t.forget(&l.name_any());
            }
            // A (re)list: what happened before it could not be seen; nobody is judged on it.
            watcher::Event::Init => t.restart(now),
            watcher::Event::InitDone => self.leases_ready.store(true, Ordering::Release),
        }
        changed_nodes(&before, &t.snapshot(now))
    }

    /// The nodes whose agent liveness changed with time alone since `before`, and the new
    /// snapshot.
    fn liveness_tick(
        &self,
        before: &BTreeMap<String, AgentLiveness>,
    ) -> (Vec<String>, BTreeMap<String, AgentLiveness>) {
        let now = self.agents_now();
        (changed_nodes(before, &now), now)
    }

    /// Every agent's liveness now.
    pub fn agents_now(&self) -> BTreeMap<String, AgentLiveness> {
        self.leases
            .lock()
            .map(|t| t.snapshot(Instant::now()))
            .unwrap_or_default()
    }

    /// Declare that every store holds a complete initial list (planning before that would
    /// withdraw instances from nodes not listed yet).
    pub fn mark_stores_ready(&self) {
        self.stores_ready.store(true, Ordering::Release);
    }

    /// Note that something the planner reads has changed (both caches become stale).
    pub fn world_changed(&self) {
        self.spec_generation.fetch_add(1, Ordering::AcqRel);
        self.report_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Note that a VRRPNode was deleted, or its spec or owner changed (by us or by someone
    /// else): the next reconcile compares every planned VRRPNode with the store again and
    /// restores what differs.
    pub fn vrrp_nodes_changed(&self) {
        self.nodes_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Note that only the agents' reports changed (the placement stays valid).
    pub fn reports_changed(&self) {
        self.report_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Current time in whole seconds (the API server keeps no more).
    fn now(&self) -> Timestamp {
        let t = (self.clock)();
        Timestamp::from_second(t.as_second()).unwrap_or(t)
    }

    /// The placement for the current generation, re-placing (and syncing VRRPNodes) if stale.
    pub async fn current_placement(&self) -> Result<Arc<Placement>, Error> {
        let mut cache = self.cache.lock().await;
        self.refresh(&mut cache).await
    }

    /// Re-place if the inputs changed since the cached placement, and apply the VRRPNodes
    /// when the placement is new, one was changed by someone, or [`Settings::resync`] passed.
    async fn refresh(&self, cache: &mut PlanCache) -> Result<Arc<Placement>, Error> {
        // Read before the snapshot: a change during it makes the next call place again.
        let generation = (
            self.spec_generation.load(Ordering::Acquire),
            self.infra_generation.load(Ordering::Acquire),
        );
        let placement = match (&cache.placement, cache.generation) {
            (Some(p), Some(g)) if g == generation => p.clone(),
            _ => {
                let mut secrets = std::mem::take(&mut cache.secrets);
                let world = self.snapshot(&mut secrets).await;
                cache.secrets = secrets;
                let world = world?;
                let start = Instant::now();
                let placement = Arc::new(planner::place_all(&world));
                self.metrics
                    .plan_duration
                    .observe(start.elapsed().as_secs_f64());
                debug!(
                    ?generation,
                    virtual_ips = world.virtual_ips.len(),
                    nodes = world.nodes.len(),
                    "placed"
                );
                cache.prints = Arc::new(
                    world
                        .virtual_ips
                        .iter()
                        .map(|v| (planner::vip_key(v), vip_fingerprint(v)))
                        .collect(),
                );
                cache.placement = Some(placement.clone());
                cache.generation = Some(generation);
                cache.nodes_synced = false;
                placement
            }
        };
        // Re-check the VRRPNodes when one was deleted or edited (the watch says so within a
        // second), and now and then even without a change.
        let nodes_generation = self.nodes_generation.load(Ordering::Acquire);
        let stale = cache
            .synced_at
            .is_none_or(|t| t.elapsed() >= self.settings.resync);
        if !cache.nodes_synced || stale || cache.nodes_generation != Some(nodes_generation) {
            self.sync_vrrp_nodes(&placement).await?;
            cache.nodes_synced = true;
            cache.synced_at = Some(Instant::now());
            cache.nodes_generation = Some(nodes_generation);
        }
        Ok(placement)
    }

    /// The planner task's step: place if stale, apply the VRRPNodes, publish the placement
    /// for the reconciles. Returns the VirtualIPs to reconcile: those whose placement changed
    /// and those that found the placement stale since the last step.
    async fn plan_step(&self) -> Result<Vec<VipKey>, Error> {
        let mut cache = self.cache.lock().await;
        let placement = self.refresh(&mut cache).await?;
        let (_, infra_generation) = cache.generation.unwrap_or_default();
        let next = Published {
            placement: placement.clone(),
            infra_generation,
            prints: cache.prints.clone(),
        };
        drop(cache);
        let before = self
            .published
            .lock()
            .ok()
            .and_then(|mut p| p.replace(next))
            .map(|p| p.placement);
        let mut wanted: BTreeSet<VipKey> = match &before {
            Some(b) if Arc::ptr_eq(b, &placement) => BTreeSet::new(),
            b => planner::changed_vips(b.as_deref(), &placement)
                .into_iter()
                .collect(),
        };
        if let Ok(mut d) = self.deferred.lock() {
            wanted.append(&mut d);
        }
        Ok(wanted.into_iter().collect())
    }

    /// The published placement if it is current for `vip` ([`placement_current`]).
    fn published_for(&self, vip: &VirtualIP) -> Option<Arc<Placement>> {
        let p = self.published.lock().ok()?.clone()?;
        let key = planner::vip_key(vip);
        let infra = self.infra_generation.load(Ordering::Acquire);
        placement_current(
            p.prints.get(&key).copied(),
            p.infra_generation,
            vip_fingerprint(vip),
            infra,
        )
        .then_some(p.placement)
    }

    fn tracks_writes(&self) -> bool {
        self.planner_attached.load(Ordering::Acquire)
    }

    /// The watch delivered a VRRPNode event: writes of ours it shows are no longer in flight.
    fn vrrp_node_observed(&self, event: &watcher::Event<VRRPNode>) {
        observed_in(&self.vn_writes, event, |o| o.name_any());
    }

    /// The watch delivered a VirtualIP event: writes of ours it shows are no longer in flight.
    fn vip_observed(&self, event: &watcher::Event<VirtualIP>) {
        observed_in(&self.vip_writes, event, planner::vip_key);
    }

    /// The agents' reports for the current report generation.
    pub async fn current_reports(&self) -> Arc<ReportIndex> {
        let generation = self.report_generation.load(Ordering::Acquire);
        let Ok(mut cache) = self.reports_cache.lock() else {
            return Arc::new(ReportIndex::new(
                &self.stores.vrrp_nodes.state(),
                self.now(),
            ));
        };
        match (&cache.reports, cache.generation) {
            (Some(r), Some(g)) if g == generation => r.clone(),
            _ => {
                let reports = Arc::new(ReportIndex::update(
                    cache.reports.as_deref(),
                    &self.stores.vrrp_nodes.state(),
                    self.now(),
                ));
                cache.reports = Some(reports.clone());
                cache.generation = Some(generation);
                reports
            }
        }
    }

    /// The world as the stores see it, plus the referenced Secrets (fetched when their
    /// resourceVersion changed).
    async fn snapshot(&self, cache: &mut SecretCache) -> Result<World, Error> {
        let virtual_ips = self.stores.virtual_ips.state();
        let wanted: BTreeSet<(String, String)> = virtual_ips
            .iter()
            .filter_map(|v| {
                let auth = v.spec.authentication.as_ref()?;
                Some((v.namespace()?, auth.password_secret_ref.name.clone()))
            })
            .collect();
        let mut fresh = HashMap::new();
        let mut secrets = Vec::new();
        for (ns, name) in wanted {
            let wanted_ref = KubeRef::new(&name).within(&ns);
            let Some(meta) = self.stores.secrets.iter().find_map(|s| s.get(&wanted_ref)) else {
                continue;
            };
            let rv = meta.metadata.resource_version.clone();
            let key = (ns, name);
            if let Some((cached_rv, s)) = cache
                .remove(&key)
                .filter(|(crv, _)| rv.is_some() && *crv == rv)
            {
                secrets.push(s.clone());
                fresh.insert(key, (cached_rv, s));
                continue;
            }
            if let Some(s) = Api::<Secret>::namespaced(self.client.clone(), &key.0)
                .get_opt(&key.1)
                .await?
            {
                let s = Arc::new(s);
                secrets.push(s.clone());
                fresh.insert(key, (s.metadata.resource_version.clone(), s));
            }
        }
        *cache = fresh;
        Ok(World {
            virtual_ips,
            nodes: self.stores.nodes.state(),
            secrets,
            // Placement does not read reports or liveness.
            vrrp_nodes: Vec::new(),
            agents: BTreeMap::new(),
            script_policy: self.settings.script_policy.clone(),
            now: self.now(),
        })
    }

    /// Apply every planned VRRPNode whose spec or owner differs from the observed one, and
    /// each node's auth Secret around it ([`auth_secret_steps`]: passwords a new spec needs
    /// are written before it, those it no longer needs removed after it).
    async fn sync_vrrp_nodes(&self, plan: &Placement) -> Result<(), Error> {
        let api: Api<VRRPNode> = Api::all(self.client.clone());
        let ns = &self.settings.agent_lease_namespace;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        // Nodes are independent: several are applied at once (each one's auth Secret and
        // VRRPNode stay in order).
        let mut writes = Vec::with_capacity(plan.nodes.len());
        for (name, np) in &plan.nodes {
            writes.push(self.sync_vrrp_node(&api, &secrets, name, np));
        }
        futures::stream::iter(writes)
            .buffer_unordered(SYNC_PARALLEL)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Apply one planned VRRPNode and its auth Secret where they differ.
    async fn sync_vrrp_node(
        &self,
        api: &Api<VRRPNode>,
        secrets: &Api<Secret>,
        name: &String,
        np: &planner::NodePlan,
    ) -> Result<(), Error> {
        let ns = &self.settings.agent_lease_namespace;
        let desired = desired_vrrp_node(name, np);
        let observed = self.stores.vrrp_nodes.get(&KubeRef::new(name));
        let secret_name = crds::auth::auth_secret_name(name);
        let observed_secret = self
            .stores
            .auth_secrets
            .get(&KubeRef::new(&secret_name).within(ns));
        let mut owner = observed.as_ref().and_then(|o| o.metadata.uid.clone());
        let steps = auth_secret_steps(observed_secret.as_deref(), &np.auth, owner.is_some());
        let mut owned = observed_secret
            .as_deref()
            .is_some_and(|s| auth_secret_owned(s, owner.as_deref()));
        if let Some(data) = &steps.before {
            self.apply_auth_secret(secrets, name, data, owner.as_deref())
                .await?;
            owned = true;
        }
        let owner_before = owner.clone();
        let observed_rv = observed
            .as_ref()
            .and_then(|o| o.metadata.resource_version.clone());
        let content = hash_json(&(&desired.spec, &desired.metadata.owner_references));
        // The store may not show our last write yet: the same content is not written again.
        let in_flight = self.tracks_writes()
            && self.vn_writes.lock().is_ok_and(|w| {
                w.lagging(name, observed_rv.as_deref(), Some(content), Instant::now())
            });
        if !in_flight && vrrp_node_differs(observed.as_deref(), &desired)? {
            let applied = api
                .patch(
                    name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&desired),
                )
                .await?;
            owner = applied.metadata.uid.or(owner);
            if self.tracks_writes()
                && let Ok(mut w) = self.vn_writes.lock()
            {
                w.wrote(name.clone(), vec![observed_rv], content, Instant::now());
            }
            self.metrics.write("vrrpnode");
            info!(node = %name, instances = np.spec.instances.len(), hash = %np.spec.config_hash, "applied VRRPNode");
        }
        match steps.after {
            AuthAfter::Nothing => {}
            AuthAfter::Delete => {
                match secrets.delete(&secret_name, &Default::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
                self.metrics.write("authsecret");
                info!(node = %name, secret = %secret_name, "deleted the auth Secret (no instance with a password left)");
            }
            AuthAfter::Apply => {
                let observed = steps
                    .before
                    .as_ref()
                    .or(observed_secret.as_deref().and_then(|s| s.data.as_ref()))
                    .cloned();
                let desired_data = auth_secret_data(&np.auth);
                // A VRRPNode created just now owns its Secret from now on.
                let owned = owned && owner == owner_before;
                if observed.as_ref() != Some(&desired_data) || !owned {
                    self.apply_auth_secret(secrets, name, &desired_data, owner.as_deref())
                        .await?;
                }
            }
        }

        Ok(())
    }

    /// Apply node `node`'s auth Secret with `data`, owned by its VRRPNode (`owner`, its uid).
    async fn apply_auth_secret(
        &self,
        api: &Api<Secret>,
        node: &str,
        data: &BTreeMap<String, k8s_openapi::ByteString>,
        owner: Option<&str>,
    ) -> Result<(), Error> {
        let s = desired_auth_secret(node, &self.settings.agent_lease_namespace, data, owner);
        api.patch(
            &crds::auth::auth_secret_name(node),
            &PatchParams::apply(AUTH_FIELD_MANAGER).force(),
            &Patch::Apply(&s),
        )
        .await?;
        self.metrics.write("authsecret");
        // The keys only: a password is never logged.
        info!(node, keys = ?data.keys().collect::<Vec<_>>(), "applied the auth Secret");
        Ok(())
    }

    async fn publish(&self, vip: &VirtualIP, e: &planner::PlannedEvent) {
        let ev = events::Event {
            type_: match e.type_ {
                EventType::Normal => events::EventType::Normal,
                EventType::Warning => events::EventType::Warning,
            },
            reason: e.reason.into(),
            note: Some(e.note.clone()),
            action: "Reconcile".into(),
            secondary: None,
        };
        let reference = vip.object_ref(&());
        let published = if crds::events::recorder_can_name(&vip.name_any()) {
            self.recorder.publish(&ev, &reference).await
        } else {
            // The Recorder's `{name}.{nanos}` would be over 253 characters.
            let event = crds::events::event(
                &reference,
                matches!(e.type_, EventType::Warning),
                e.reason,
                Some(&e.note),
                "Reconcile",
                FIELD_MANAGER,
                self.settings
                    .reporter_instance
                    .as_deref()
                    .unwrap_or(FIELD_MANAGER),
                Timestamp::now(),
            );
            let ns = reference.namespace.clone().unwrap_or_default();
            Api::<k8s_openapi::api::events::v1::Event>::namespaced(self.client.clone(), &ns)
                .create(&kube::api::PostParams::default(), &event)
                .await
                .map(|_| ())
        };
        match published {
            Ok(()) => {
                self.metrics
                    .events
                    .get_or_create(&crate::metrics::KindLabel {
                        kind: e.reason.into(),
                    })
                    .inc();
            }
            // An Event is best effort: losing one must not block the status.
            Err(err) => warn!(reason = e.reason, error = %err, "cannot publish event"),
        }
    }
}

/// The VRRPNode object the operator applies for a planned node.
pub fn desired_vrrp_node(name: &str, np: &planner::NodePlan) -> VRRPNode {
    let mut v = VRRPNode::new(name, np.spec.clone());
    v.metadata.owner_references = np.node_uid.as_ref().map(|uid| {
        vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: name.into(),
            uid: uid.clone(),
            controller: None,
            block_owner_deletion: None,
        }]
    });
    v
}

/// A node's auth Secret data: each planned password under its `authKey`.
pub fn auth_secret_data(
    auth: &BTreeMap<String, crds::auth::Password>,
) -> BTreeMap<String, k8s_openapi::ByteString> {
    auth.iter()
        .map(|(k, p)| {
            (
                k.clone(),
                k8s_openapi::ByteString(p.as_str().as_bytes().to_vec()),
            )
        })
        .collect()
}

/// The auth Secret the operator applies for node `node`: in `namespace`, labelled
/// [`crds::auth::AUTH_SECRET_LABEL`], owned by the node's VRRPNode (uid `owner`, when known)
/// so that it goes when the VRRPNode goes.
pub fn desired_auth_secret(
    node: &str,
    namespace: &str,
    data: &BTreeMap<String, k8s_openapi::ByteString>,
    owner: Option<&str>,
) -> Secret {
    let (lk, lv) = crds::auth::AUTH_SECRET_LABEL;
    let mut s = Secret {
        type_: Some("Opaque".into()),
        data: Some(data.clone()),
        ..Default::default()
    };
    s.metadata.name = Some(crds::auth::auth_secret_name(node));
    s.metadata.namespace = Some(namespace.into());
    s.metadata.labels = Some(BTreeMap::from([(lk.to_string(), lv.to_string())]));
    s.metadata.owner_references = owner.map(|uid| {
        vec![OwnerReference {
            api_version: VRRPNode::api_version(&()).into(),
            kind: VRRPNode::kind(&()).into(),
            name: node.into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: None,
        }]
    });
    s
}

/// Whether an observed auth Secret carries the label and (when `owner` is known) the
/// ownerReference to the VRRPNode with uid `owner`.
pub fn auth_secret_owned(s: &Secret, owner: Option<&str>) -> bool {
    let (lk, lv) = crds::auth::AUTH_SECRET_LABEL;
    let labelled = s
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(lk))
        .is_some_and(|v| v == lv);
    let owned = owner.is_none_or(|uid| {
        s.metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == uid && o.kind == VRRPNode::kind(&()))
    });
    labelled && owned
}

/// What to write to a node's auth Secret after its VRRPNode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthAfter {
    /// Nothing.
    Nothing,
    /// Apply the planned data (if it or the owner differs from what is there).
    Apply,
    /// Delete the Secret: no instance on the node has a password.
    Delete,
}

/// The writes of a node's auth Secret around its VRRPNode write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSteps {
    /// Data to apply before the VRRPNode (the observed keys plus the planned ones), so an
    /// agent never sees an `authKey` whose password is not there yet; `None`: no write.
    pub before: Option<BTreeMap<String, k8s_openapi::ByteString>>,
    /// The write after the VRRPNode, which removes the passwords it no longer needs.
    pub after: AuthAfter,
}

/// The auth Secret writes that turn `observed` into the plan (`desired`, by `authKey`), written
/// only where they differ. `vrrp_node_exists`: the VRRPNode is there (and can own the Secret)
/// before its own write; a new VRRPNode gets its Secret right after it.
pub fn auth_secret_steps(
    observed: Option<&Secret>,
    desired: &BTreeMap<String, crds::auth::Password>,
    vrrp_node_exists: bool,
) -> AuthSteps {
    let want = auth_secret_data(desired);
    let have = observed.and_then(|s| s.data.clone()).unwrap_or_default();
    if want.is_empty() {
        return AuthSteps {
            before: None,
            after: if observed.is_some() {
                AuthAfter::Delete
            } else {
                AuthAfter::Nothing
            },
        };
    }
    let mut merged = have.clone();
    merged.extend(want.iter().map(|(k, v)| (k.clone(), v.clone())));
    let before = (vrrp_node_exists && merged != have).then_some(merged);
    AuthSteps {
        before,
        after: AuthAfter::Apply,
    }
}

fn to_json<T: serde::Serialize>(what: &'static str, v: &T) -> Result<serde_json::Value, Error> {
    serde_json::to_value(v).map_err(|source| Error::Serialize { what, source })
}

/// Whether the observed VRRPNode must be (re)applied to become `desired`.
pub fn vrrp_node_differs(observed: Option<&VRRPNode>, desired: &VRRPNode) -> Result<bool, Error> {
    let Some(o) = observed else {
        return Ok(!desired.spec.instances.is_empty());
    };
    if to_json("VRRPNode spec", &o.spec)? != to_json("VRRPNode spec", &desired.spec)? {
        return Ok(true);
    }
    let have = o.metadata.owner_references.as_deref().unwrap_or_default();
    let want = desired
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default();
    Ok(!want
        .iter()
        .all(|w| have.iter().any(|h| h.uid == w.uid && h.kind == w.kind)))
}

/// Whether the observed status must be replaced by `desired`.
pub fn status_differs(
    observed: Option<&crds::VirtualIPStatus>,
    desired: &crds::VirtualIPStatus,
) -> Result<bool, Error> {
    let observed = match observed {
        Some(o) => to_json("VirtualIP status", o)?,
        None => return Ok(true),
    };
    Ok(observed != to_json("VirtualIP status", desired)?)
}

/// Reconcile one VirtualIP.
pub async fn reconcile(vip: Arc<VirtualIP>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    let start = Instant::now();
    let result = reconcile_inner(&vip, &ctx).await;
    ctx.metrics
        .reconcile_duration
        .observe(start.elapsed().as_secs_f64());
    if result.is_ok()
        && let Ok(mut f) = ctx.failures.lock()
    {
        f.remove(&planner::vip_key(&vip));
    }
    result
}

async fn reconcile_inner(vip: &VirtualIP, ctx: &Context) -> Result<Action, Error> {
    if !ctx.stores_ready.load(Ordering::Acquire) || !ctx.leases_ready.load(Ordering::Acquire) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let key = planner::vip_key(vip);
    let planned = ctx.tracks_writes();
    let observed_rv = vip.resource_version();
    if planned
        && ctx
            .vip_writes
            .lock()
            .is_ok_and(|w| w.lagging(&key, observed_rv.as_deref(), None, Instant::now()))
    {
        // The store shows this VirtualIP from before our own last write: the watch delivers
        // the written version shortly, and that triggers a reconcile.
        return Ok(Action::requeue(InFlight::<VipKey>::TTL));
    }
    let placement = if planned {
        match ctx.published_for(vip) {
            Some(p) => p,
            None => {
                // The planner has not placed this VirtualIP as it is now; it triggers it when
                // it has.
                if let Ok(mut d) = ctx.deferred.lock() {
                    d.insert(key);
                }
                return Ok(Action::await_change());
            }
        }
    } else {
        ctx.current_placement().await?
    };
    let reports = ctx.current_reports().await;
    let api: Api<VirtualIP> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let has_finalizer = vip.finalizers().iter().any(|f| f == FINALIZER);

    if let Some(deleted_at) = &vip.metadata.deletion_timestamp {
        if !has_finalizer {
            return Ok(Action::await_change());
        }
        let reported: Vec<String> = reports
            .get(&planner::instance_name(&key))
            .iter()
            .map(|r| r.node.clone())
            .collect();
        let waited = ctx.now().duration_since(deleted_at.0);
        let timeout = k8s_openapi::jiff::SignedDuration::try_from(ctx.settings.cleanup_timeout)
            .unwrap_or_default();
        if !reported.is_empty() && waited < timeout {
            debug!(vip = %planner::instance_name(&key), nodes = ?reported, "waiting for agents to drop the instance");
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        if !reported.is_empty() {
            warn!(vip = %planner::instance_name(&key), nodes = ?reported, "agents still report the instance; releasing anyway after the cleanup timeout");
        }
        remove_finalizer(&api, vip).await?;
        ctx.metrics.write("finalizer");
        return Ok(Action::await_change());
    }

    // Versions the store may show until the watch delivers our writes.
    let mut before = vec![observed_rv.clone()];
    if !has_finalizer {
        let written = add_finalizer(&api, vip).await?;
        ctx.metrics.write("finalizer");
        before.push(written);
        if planned && let Ok(mut w) = ctx.vip_writes.lock() {
            w.wrote(key.clone(), before.clone(), 0, Instant::now());
        }
    }
    let Some(placed) = placement.virtual_ips.get(&key) else {
        // The placement predates this object; make the next reconcile re-place.
        ctx.spec_generation.fetch_add(1, Ordering::AcqRel);
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let vp = planner::vip_plan(vip, placed, &reports, &ctx.agents_now(), ctx.now());
    if status_differs(vip.status.as_ref(), &vp.status)? {
        let patch = json!({
            "apiVersion": VirtualIP::api_version(&()),
            "kind": VirtualIP::kind(&()),
            "status": vp.status,
        });
        api.patch_status(
            &key.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        ctx.metrics.write("status");
        if planned && let Ok(mut w) = ctx.vip_writes.lock() {
            w.wrote(key.clone(), before, hash_json(&vp.status), Instant::now());
        }
        for e in &vp.events {
            ctx.publish(vip, e).await;
        }
    }
    let next = vp
        .recheck_after
        .map_or(ctx.settings.resync, |d| d.min(ctx.settings.resync));
    Ok(Action::requeue(next))
}

/// Returns the resource version the write produced.
async fn add_finalizer(api: &Api<VirtualIP>, vip: &VirtualIP) -> Result<Option<String>, Error> {
    let mut finalizers = vip.finalizers().to_vec();
    finalizers.push(FINALIZER.into());
    // resourceVersion makes the merge patch conditional: a concurrent change fails with 409.
    let patch =
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": vip.resource_version()}});
    let written = api
        .patch(
            &vip.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(written.resource_version())
}

async fn remove_finalizer(api: &Api<VirtualIP>, vip: &VirtualIP) -> Result<(), Error> {
    let finalizers: Vec<&String> = vip
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .collect();
    let patch =
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": vip.resource_version()}});
    api.patch(
        &vip.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Feed a watch event to an [`InFlight`] record of our writes.
fn observed_in<K, T>(
    writes: &std::sync::Mutex<InFlight<T>>,
    event: &watcher::Event<K>,
    key: impl Fn(&K) -> T,
) where
    K: Resource,
    T: Eq + std::hash::Hash + Clone,
{
    let Ok(mut w) = writes.lock() else {
        return;
    };
    if w.is_empty() {
        return;
    }
    match event {
        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
            w.observed(&key(o), o.meta().resource_version.as_deref());
        }
        watcher::Event::Delete(o) => w.observed(&key(o), None),
        watcher::Event::Init | watcher::Event::InitDone => {}
    }
}

/// VRRPNodes applied at once by a sync.
const SYNC_PARALLEL: usize = 8;

/// How often the planner task looks at the generations.
const PLANNER_POLL: Duration = Duration::from_millis(50);

/// The planner task: places once per burst of changes ([`Coalescer`]), applies the VRRPNodes
/// that differ, publishes the placement and triggers the reconcile of each VirtualIP whose
/// placement changed (or that found it stale). Errors are retried with [`backoff`].
pub async fn plan_loop(
    ctx: Arc<Context>,
    trigger: futures::channel::mpsc::UnboundedSender<KubeRef<VirtualIP>>,
) {
    ctx.planner_attached.store(true, Ordering::Release);
    let mut coalescer = Coalescer::default();
    let mut seen = None;
    let mut failures = 0u32;
    let mut retry_at: Option<Instant> = None;
    let mut synced_at: Option<Instant> = None;
    loop {
        tokio::time::sleep(PLANNER_POLL).await;
        if !ctx.stores_ready.load(Ordering::Acquire) || !ctx.leases_ready.load(Ordering::Acquire) {
            continue;
        }
        let now = Instant::now();
        let generations = (
            ctx.spec_generation.load(Ordering::Acquire),
            ctx.infra_generation.load(Ordering::Acquire),
            ctx.nodes_generation.load(Ordering::Acquire),
        );
        let deferred = ctx.deferred.lock().is_ok_and(|d| !d.is_empty());
        if seen != Some(generations) || deferred {
            seen = Some(generations);
            coalescer.change(now);
        }
        let resync = synced_at.is_none_or(|t| now.duration_since(t) >= ctx.settings.resync);
        let retry = retry_at.is_some_and(|t| now >= t);
        if !(coalescer.take_due(now) || resync || retry) {
            continue;
        }
        match ctx.plan_step().await {
            Ok(keys) => {
                failures = 0;
                retry_at = None;
                synced_at = Some(now);
                debug!(reconciles = keys.len(), "planned");
                for k in keys {
                    let r = KubeRef::new(&k.name).within(&k.namespace);
                    if trigger.unbounded_send(r).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                ctx.metrics.error(e.metric_label());
                failures = failures.saturating_add(1);
                let delay = backoff(failures);
                warn!(error = %e, failures, retry_in = ?delay, "planning failed");
                retry_at = Some(Instant::now() + delay);
            }
        }
    }
}

/// Delay before retrying a VirtualIP after `failures` consecutive errors: 1 s doubling, at
/// most 30 s (errors are API failures: after an outage every VirtualIP has failed many times,
/// and none should wait minutes once the API answers; watch events bring retries forward too).
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(5);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(30))
}

/// Error policy: count, log, requeue with exponential backoff.
pub fn error_policy(vip: Arc<VirtualIP>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(err.metric_label());
    let key = planner::vip_key(&vip);
    let n = match ctx.failures.lock() {
        Ok(mut f) => {
            let n = f.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        }
        Err(_) => 1,
    };
    let delay = backoff(n);
    warn!(vip = %planner::instance_name(&key), error = %err, failures = n, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Reduce a watch event stream to the objects worth a reconcile, bumping the world generation
/// when the part the planner reads changed (per `fingerprint`). With `all`, every applied
/// object is passed on (the VirtualIP stream itself); deletions always are.
pub(crate) fn changes<K, S>(
    events: S,
    fingerprint: fn(&K) -> u64,
    generation: Arc<AtomicU64>,
    all: bool,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut seen: HashMap<(Option<String>, String), (Option<String>, u64)> = HashMap::new();
    // Keys listed since the last `Init`: at `InitDone`, what the re-list no longer holds (deleted
    // while the watch was down) is forgotten.
    let mut relisted: Option<BTreeSet<(Option<String>, String)>> = None;
    events.try_filter_map(move |ev| {
        let out = match ev {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                let key = (
                    o.meta().namespace.clone(),
                    o.meta().name.clone().unwrap_or_default(),
                );
                if let Some(r) = relisted.as_mut() {
                    r.insert(key.clone());
                }
                let value = (o.meta().uid.clone(), fingerprint(&o));
                let changed = seen.insert(key, value.clone()) != Some(value);
                if changed {
                    generation.fetch_add(1, Ordering::AcqRel);
                }
                (changed || all).then_some(o)
            }
            watcher::Event::Delete(o) => {
                seen.remove(&(
                    o.meta().namespace.clone(),
                    o.meta().name.clone().unwrap_or_default(),
                ));
                generation.fetch_add(1, Ordering::AcqRel);
                Some(o)
            }
            watcher::Event::InitDone => {
                if let Some(r) = relisted.take() {
                    seen.retain(|k, _| r.contains(k));
                }
                generation.fetch_add(1, Ordering::AcqRel);
                None
            }
            watcher::Event::Init => {
                relisted = Some(BTreeSet::new());
                None
            }
        };
        future::ready(Ok(out))
    })
}

pub(crate) fn hash_json<T: serde::Serialize>(v: &T) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(v).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// What the planner reads of a VirtualIP: spec, deletion, creation time, the adoption
/// annotation (not status: the status it reads is its own output).
fn vip_fingerprint(v: &VirtualIP) -> u64 {
    hash_json(&(
        &v.spec,
        &v.metadata.deletion_timestamp,
        &v.metadata.creation_timestamp,
        &v.metadata.generation,
        planner::adopts_static(v),
    ))
}

/// What the planner reads of a Node: labels, readiness, draining, deletion, InternalIPs.
fn node_fingerprint(n: &Node) -> u64 {
    let ready = planner::node_ready(n);
    let draining = planner::node_draining(n);
    let ips: Vec<&str> = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .map(|a| a.address.as_str())
        .collect();
    hash_json(&(
        &n.metadata.labels,
        ready,
        draining,
        n.metadata.deletion_timestamp.is_some(),
        ips,
    ))
}

/// What the reconciles read of a VRRPNode: the agent's status. (Changes of spec and owner,
/// which the planner restores when someone else made them, go to [`VrrpNodeSpecs`].)
fn vrrp_node_fingerprint(v: &VRRPNode) -> u64 {
    hash_json(&v.status)
}

/// Which VRRPNode events mean "compare the VRRPNodes with the plan again" (pure): a deletion,
/// a changed spec or owner, or an object gone from a re-list. Status-only changes (the
/// agents' reports) do not.
#[derive(Debug, Default)]
pub struct VrrpNodeSpecs {
    seen: HashMap<String, u64>,
    relisted: Option<BTreeSet<String>>,
}

impl VrrpNodeSpecs {
    /// Feed one event; `true` when the VRRPNodes must be compared with the plan again.
    pub fn on_event(&mut self, event: &watcher::Event<VRRPNode>) -> bool {
        let key = |o: &VRRPNode| o.metadata.name.clone().unwrap_or_default();
        let print = |o: &VRRPNode| hash_json(&(&o.spec, &o.metadata.owner_references));
        match event {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                if let Some(r) = self.relisted.as_mut() {
                    r.insert(key(o));
                }
                let value = print(o);
                self.seen.insert(key(o), value) != Some(value)
            }
            watcher::Event::Delete(o) => {
                self.seen.remove(&key(o));
                true
            }
            watcher::Event::Init => {
                self.relisted = Some(BTreeSet::new());
                false
            }
            watcher::Event::InitDone => {
                let Some(r) = self.relisted.take() else {
                    return false;
                };
                let before = self.seen.len();
                self.seen.retain(|k, _| r.contains(k));
                before != self.seen.len()
            }
        }
    }
}

/// What the executor compares of its auth Secrets: data, labels, owners (hashed, so the
/// passwords are not kept twice).
fn auth_secret_fingerprint(s: &Secret) -> u64 {
    hash_json(&(&s.data, &s.metadata.labels, &s.metadata.owner_references))
}

fn secret_fingerprint(s: &PartialObjectMeta<Secret>) -> u64 {
    hash_json(&s.metadata.resource_version)
}

/// VirtualIPs an agent's VRRPNode speaks about (reported or planned instances).
fn vips_of_vrrp_node(v: &VRRPNode) -> Vec<KubeRef<VirtualIP>> {
    let mut out: BTreeSet<(String, String)> = BTreeSet::new();
    for i in v.status.iter().flat_map(|s| s.instances.iter()) {
        if let Some((ns, name)) = i.name.split_once('/') {
            out.insert((ns.into(), name.into()));
        }
    }
    for i in &v.spec.instances {
        if let Some(r) = &i.virtual_ip {
            out.insert((r.namespace.clone(), r.name.clone()));
        }
    }
    out.into_iter()
        .map(|(ns, name)| KubeRef::new(&name).within(&ns))
        .collect()
}

/// Nodes whose liveness differs between two snapshots (absent counts as lost).
fn changed_nodes(
    before: &BTreeMap<String, AgentLiveness>,
    after: &BTreeMap<String, AgentLiveness>,
) -> Vec<String> {
    let get = |m: &BTreeMap<String, AgentLiveness>, n: &str| {
        m.get(n).copied().unwrap_or(AgentLiveness::Lost)
    };
    before
        .keys()
        .chain(after.keys())
        .filter(|n| get(before, n) != get(after, n))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The VRRPNodes whose agents' liveness changed, from Lease events and from time passing (a
/// check every 500 ms; nothing is written, only reconciles are triggered).
fn liveness_changes<S>(
    ctx: Arc<Context>,
    leases: S,
) -> impl Stream<Item = Result<VRRPNode, watcher::Error>> + Send
where
    S: Stream<Item = Result<watcher::Event<Lease>, watcher::Error>> + Send + 'static,
{
    enum Input {
        Lease(Box<watcher::Event<Lease>>),
        Tick,
    }
    let ticks = futures::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Some((Ok(Input::Tick), ()))
    });
    let events = leases.map_ok(|e| Input::Lease(Box::new(e)));
    let mut last = BTreeMap::new();
    futures::stream::select(events, ticks)
        .map_ok(move |input| {
            let nodes = match input {
                Input::Lease(ev) => {
                    let changed = ctx.lease_event(&ev);
                    last = ctx.agents_now();
                    changed
                }
                Input::Tick => {
                    let (changed, now) = ctx.liveness_tick(&last);
                    last = now;
                    changed
                }
            };
            if !nodes.is_empty() {
                debug!(?nodes, "agent liveness changed");
                ctx.reports_changed();
            }
            let objects: Vec<Result<VRRPNode, watcher::Error>> = nodes
                .iter()
                .filter_map(|n| ctx.stores.vrrp_nodes.get(&KubeRef::new(n)))
                .map(|vn| Ok((*vn).clone()))
                .collect();
            futures::stream::iter(objects)
        })
        .try_flatten()
}

/// Server-side timeout of every watch, seconds: the API server ends a watch after this and
/// the watcher resumes it from the last resource version (no re-list). kube-runtime also
/// gives up on a watch that delivers nothing for this long plus 5 s, and the client's read
/// timeout ([`API_READ_TIMEOUT`]) ends any request that hangs, so a connection that went
/// silent (a dead peer, a stuck proxy) is replaced within about half a minute instead of
/// kube-runtime's default five. Both are the backstop: the stall watchdog
/// ([`apiclient::watchdog`], run by `main`) notices a silent API within about 5 s.
pub const WATCH_TIMEOUT_SECS: u32 = 25;

/// Read timeout of the operator's API client: longer than a watch may stay quiet
/// ([`WATCH_TIMEOUT_SECS`]), far shorter than kube's default of none.
pub const API_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The watch settings of every operator watch.
pub fn watch_config() -> watcher::Config {
    watcher::Config::default().timeout(WATCH_TIMEOUT_SECS)
}

/// Keeps watch errors away from the Controller and reports them.
///
/// kube-runtime's `Controller` pauses *all* its trigger streams whenever any of them yields
/// an error, with its trigger backoff (client-go's: growing to 30 s, reset only after 120 s
/// without errors), and a paused stream also stops feeding its reflector store. After an API
/// server restart every watch fails for a moment (connection refused, 503 while it starts,
/// then 410 Gone and a re-list), and that froze the operator for minutes (issue #19). Each
/// watch retries on its own short [`WatchBackoff`]; here an error is logged once per outage,
/// recorded for `/readyz` and `kube_vrrp_operator_watch_up`, and dropped.
pub fn guarded<K, S>(
    resource: &'static str,
    metrics: Arc<Metrics>,
    events: S,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Send,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    events.filter_map(move |ev| {
        let out = match ev {
            Ok(e) => {
                // `Init` is the watcher's own marker before it asks the server anything.
                if !matches!(e, watcher::Event::Init) && metrics.watch_state(resource, true) {
                    info!(resource, "watch delivers again");
                }
                Some(Ok(e))
            }
            Err(err) => {
                if metrics.watch_state(resource, false) {
                    warn!(resource, error = %err, "watch failing; retrying");
                } else {
                    debug!(resource, error = %err, "watch still failing");
                }
                None
            }
        };
        future::ready(out)
    })
}

/// Retry delays of the operator's watches: 250 ms doubling to at most 1 s (reset on
/// success). kube-runtime's default grows to 30 s and only resets after 120 s quiet, so after
/// an API outage of a few seconds the watches (agent Leases, VRRPNode reports) could stay
/// down for many seconds more and status lag far behind the wire. An API restart costs each
/// watch two retries (the connection, then the re-list after 410 Gone), so the cap bounds the
/// catch-up; one operator retrying five watches every second costs the API nothing.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(1);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (d * 2).min(Self::MAX);
        Some(d)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// How often [`store_ready`] looks again.
const STORE_READY_RECHECK: Duration = Duration::from_millis(200);

/// Waits until a reflector store holds its initial list. kube-runtime's
/// `Store::wait_until_ready` keeps one waker (a oneshot receiver's): of several tasks waiting
/// on the same store only the one that polled last is woken, and the Controller itself waits
/// on the VirtualIP store. So look again every [`STORE_READY_RECHECK`] instead of trusting
/// the wake-up (else the operator could wait for its caches forever and never reconcile).
pub async fn store_ready<K>(store: &Store<K>) -> Result<(), reflector::store::WriterDropped>
where
    K: 'static + Clone + kube::runtime::reflector::Lookup,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if let Ok(res) = tokio::time::timeout(STORE_READY_RECHECK, store.wait_until_ready()).await {
            return res;
        }
    }
}

/// Resolves when the API stall watchdog reports the end of a stall (never without one).
async fn stall_ended(
    status: Option<&mut tokio::sync::watch::Receiver<apiclient::watchdog::Status>>,
) {
    let Some(rx) = status else {
        return future::pending().await;
    };
    let seen = rx.borrow_and_update().recoveries;
    loop {
        if rx.changed().await.is_err() {
            return future::pending().await;
        }
        if rx.borrow_and_update().recoveries != seen {
            return;
        }
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Run the controller until its streams end (shutdown). After each API stall (no answer, see
/// [`apiclient::watchdog`]) everything starts again: fresh watches, each with a full list, and
/// fresh caches; `/readyz` says not ready until they are synced. A watch that sat on a silent
/// connection may have missed events a resumed watch would not get back.
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    settings: Settings,
    concurrency: u16,
) -> Result<(), Error> {
    let mut status = settings.api_status.clone();
    loop {
        tokio::select! {
            res = run_once(client.clone(), metrics.clone(), settings.clone(), concurrency) => return res,
            () = stall_ended(status.as_mut()) => {
                info!("API stall over: restarting every watch with a fresh list");
                metrics.set_ready(false);
                metrics.clear_watches();
            }
        }
    }
}

async fn run_once(
    client: Client,
    metrics: Arc<Metrics>,
    settings: Settings,
    concurrency: u16,
) -> Result<(), Error> {
    let (vip_store, vip_writer) = reflector::store::<VirtualIP>();
    let (node_store, node_writer) = reflector::store::<Node>();
    let (vn_store, vn_writer) = reflector::store::<VRRPNode>();
    let secret_apis: Vec<Api<PartialObjectMeta<Secret>>> = if settings.secret_namespaces.is_empty()
    {
        vec![Api::all(client.clone())]
    } else {
        settings
            .secret_namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let (secret_stores, secret_writers): (Vec<_>, Vec<_>) = secret_apis
        .iter()
        .map(|_| reflector::store::<PartialObjectMeta<Secret>>())
        .unzip();
    let (auth_store, auth_writer) = reflector::store::<Secret>();
    let stores = Stores {
        virtual_ips: vip_store.clone(),
        nodes: node_store.clone(),
        vrrp_nodes: vn_store.clone(),
        secrets: secret_stores,
        auth_secrets: auth_store,
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        stores.clone(),
        metrics.clone(),
        settings,
        system_clock(),
    ));
    let spec_generation = ctx.spec_generation.clone();
    let infra_generation = ctx.infra_generation.clone();
    let nodes_generation = ctx.nodes_generation.clone();
    let report_generation = ctx.report_generation.clone();
    let vip_ctx = ctx.clone();
    let wc = watch_config();

    let vip_stream = changes(
        guarded(
            "virtualips",
            metrics.clone(),
            watcher(Api::<VirtualIP>::all(client.clone()), wc.clone())
                .backoff(WatchBackoff::default())
                .reflect(vip_writer)
                .inspect_ok(move |ev| vip_ctx.vip_observed(ev)),
        ),
        vip_fingerprint,
        spec_generation.clone(),
        true,
    );
    let node_stream = changes(
        guarded(
            "nodes",
            metrics.clone(),
            watcher(Api::<Node>::all(client.clone()), wc.clone())
                .backoff(WatchBackoff::default())
                .reflect(node_writer),
        ),
        node_fingerprint,
        infra_generation.clone(),
        false,
    );
    let lease_api: Api<Lease> =
        Api::namespaced(client.clone(), &ctx.settings.agent_lease_namespace);
    let lease_stream = liveness_changes(
        ctx.clone(),
        guarded(
            "leases",
            metrics.clone(),
            watcher(lease_api, wc.clone().labels(AGENT_LEASE_SELECTOR))
                .backoff(WatchBackoff::default()),
        ),
    );
    let vn_ctx = ctx.clone();
    let mut vn_specs = VrrpNodeSpecs::default();
    let vn_stream = changes(
        guarded(
            "vrrpnodes",
            metrics.clone(),
            watcher(Api::<VRRPNode>::all(client.clone()), wc.clone())
                .backoff(WatchBackoff::default())
                .reflect(vn_writer)
                .inspect_ok(move |ev| {
                    vn_ctx.vrrp_node_observed(ev);
                    if vn_specs.on_event(ev) {
                        vn_ctx.vrrp_nodes_changed();
                    }
                }),
        ),
        vrrp_node_fingerprint,
        report_generation,
        false,
    );
    let (lk, lv) = crds::auth::AUTH_SECRET_LABEL;
    let auth_api: Api<Secret> =
        Api::namespaced(client.clone(), &ctx.settings.agent_lease_namespace);
    // Our own auth Secrets: a change (an edit or deletion by someone else, or our own write)
    // makes the next reconcile compare them with the plan again.
    let auth_stream = changes(
        guarded(
            "authsecrets",
            metrics.clone(),
            watcher(auth_api, wc.clone().labels(&format!("{lk}={lv}")))
                .backoff(WatchBackoff::default())
                .reflect(auth_writer),
        ),
        auth_secret_fingerprint,
        nodes_generation,
        false,
    );
    let secret_metrics = metrics.clone();
    let secret_stream =
        futures::stream::select_all(secret_apis.into_iter().zip(secret_writers).map(
            |(api, writer)| {
                changes(
                    guarded(
                        "secrets",
                        secret_metrics.clone(),
                        watcher(api, wc.clone())
                            .backoff(WatchBackoff::default())
                            .reflect(writer),
                    ),
                    secret_fingerprint,
                    infra_generation.clone(),
                    false,
                )
                .boxed()
            },
        ));

    let ready_ctx = ctx.clone();
    let ready_metrics = metrics.clone();
    let ready = AbortOnDrop(tokio::spawn(async move {
        let all = future::try_join5(
            store_ready(&stores.virtual_ips),
            store_ready(&stores.nodes),
            store_ready(&stores.vrrp_nodes),
            future::try_join_all(stores.secrets.iter().map(store_ready)),
            store_ready(&stores.auth_secrets),
        )
        .await;
        if all.is_ok() {
            info!("caches synced; reconciling");
            ready_ctx.mark_stores_ready();
            ready_metrics.set_ready(true);
        }
    }));

    let lb = match ctx.settings.load_balancer.clone() {
        Some(lb_settings) => crate::loadbalancer::run(
            client.clone(),
            metrics.clone(),
            lb_settings,
            vip_store.clone(),
            node_store.clone(),
            ctx.settings.reporter_instance.clone(),
            ctx.clock.clone(),
        )
        .boxed(),
        None => future::pending::<Result<(), Error>>().boxed(),
    };
    // The planner task places, applies the VRRPNodes and triggers the VirtualIPs whose
    // placement changed; Node, Secret and auth Secret changes reach the reconciles only
    // through it (their streams are polled here for their stores and generations).
    let (trigger, triggered) = futures::channel::mpsc::unbounded();
    let planner = plan_loop(ctx.clone(), trigger);
    let main = Controller::for_stream(vip_stream, vip_store)
        .watches_stream(node_stream, |_node: Node| Vec::<KubeRef<VirtualIP>>::new())
        // Only the agents' reports pass (their status changed).
        .watches_stream(vn_stream, |vn: VRRPNode| vips_of_vrrp_node(&vn))
        .watches_stream(auth_stream, |_s: Secret| Vec::<KubeRef<VirtualIP>>::new())
        .watches_stream(lease_stream, |vn: VRRPNode| vips_of_vrrp_node(&vn))
        .watches_stream(secret_stream, |_s: PartialObjectMeta<Secret>| {
            Vec::<KubeRef<VirtualIP>>::new()
        })
        .reconcile_on(triggered)
        // No error reaches the Controller (see [`guarded`]); should one still, it pauses the
        // triggers only as briefly as a watch retries.
        .trigger_backoff(WatchBackoff::default())
        .with_config(
            ControllerConfig::default()
                .concurrency(concurrency)
                .debounce(Duration::from_millis(200)),
        )
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(vip = %obj, "reconciled"),
                Err(e) => debug!(error = %e, "controller"),
            }
        });
    let result = tokio::select! {
        () = main => Ok(()),
        () = planner => Ok(()),
        res = lb => res,
    };
    drop(ready);
    result
}
