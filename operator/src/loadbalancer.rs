//! The executor of Services of type `LoadBalancer`: allocation, Service status, and the group
//! VirtualIPs that announce the addresses (see [`crate::planner::loadbalancer`] for the rules).
//!
//! - A kube-runtime [`Controller`] on Services. A reconcile reads the Service, asks the
//!   [`Allocator`] (held in memory, under one lock, so two Services can never be given one
//!   address at the same time), then writes what differs: the finalizer [`LB_FINALIZER`] and
//!   the annotation [`ANNOUNCED_ANNOTATION`] (server-side apply of metadata), and
//!   `status.loadBalancer.ingress` (`ipMode: VIP`) with the conditions [`CONDITION_TYPE`] and
//!   [`ANNOUNCED_CONDITION_TYPE`] (server-side apply of status). Events: `IPAllocated` ("assigned 192.0.2.10 from pool
//!   web"), `Announced` ("announced from node-b"), `NotAnnounced` (Warning, e.g. no node with
//!   a Ready endpoint under `externalTrafficPolicy: Local`), and a Warning named after the
//!   reason when no address can be given (`PoolExhausted`, `AddressInUse`, `PortClash`, ...).
//! - Only Services of class [`LOAD_BALANCER_CLASS`] are served, and those without a class when
//!   [`LbSettings::default_class`] is set. A Service that stops being served (deleted, class
//!   or type changed) gives its addresses back: they are taken out of the group VirtualIPs
//!   (and so unbound on every node) before the finalizer goes and before anyone else can get
//!   them.
//! - The group sync task turns the holdings into group VirtualIPs in the operator's
//!   namespace ([`groups::plan_groups`]) and applies the difference, and writes each pool's
//!   status. It runs when a holding changes, when a Node or an EndpointSlice changes what it
//!   reads (checked at once for slices, every 500 ms for nodes), and every 30 s.
//! - After a (re)start, nothing is allocated until every store is listed; then the allocator
//!   is rebuilt from the Services' status, oldest Service first ([`Allocator::restore`]), so
//!   no address moves.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crds::{VirtualIP, VirtualIPPool, VirtualIPPoolStatus};
use futures::channel::mpsc;
use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::{LoadBalancerIngress, Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DeleteParams, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{self, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef as KubeRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::Error;
use crate::controller::{
    Clock, FIELD_MANAGER, WatchBackoff, backoff, changes, hash_json, store_ready,
};
use crate::metrics::Metrics;
use crate::planner::loadbalancer::groups::{self, GROUP_LABEL};
use crate::planner::loadbalancer::{
    ANNOUNCED_ANNOTATION, Allocator, Assignment, GroupInput, GroupPlan, IP_MODE,
    LOAD_BALANCER_CLASS, Pools, SvcKey, ready_endpoint_nodes, request_of, served, svc_key,
};

/// Finalizer on served Services: their addresses are released before they go.
pub const LB_FINALIZER: &str = "kubevrrp.io/load-balancer";
/// The condition the operator keeps in a served Service's status: addresses assigned, or why
/// not.
pub const CONDITION_TYPE: &str = "kubevrrp.io/AddressAssigned";
/// The condition saying where the Service's address is announced, or why nowhere.
pub const ANNOUNCED_CONDITION_TYPE: &str = "kubevrrp.io/Announced";

/// Settings of the load-balancer layer.
#[derive(Debug, Clone)]
pub struct LbSettings {
    /// Also serve Services of type LoadBalancer without `spec.loadBalancerClass`.
    pub default_class: bool,
    /// Namespace of the group VirtualIPs (the operator's).
    pub namespace: String,
    /// Periodic group sync and Service resync.
    pub resync: Duration,
}

impl Default for LbSettings {
    fn default() -> Self {
        Self {
            default_class: false,
            namespace: "kube-vrrp".into(),
            resync: Duration::from_secs(300),
        }
    }
}

/// The stores the load-balancer layer reads.
#[derive(Clone)]
pub struct LbStores {
    /// Services.
    pub services: Store<Service>,
    /// VirtualIPPools.
    pub pools: Store<VirtualIPPool>,
    /// EndpointSlices.
    pub slices: Store<EndpointSlice>,
    /// Namespace metadata (labels, for `namespaceSelector`).
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// VirtualIPs (the group VirtualIPs among them; the main controller's store).
    pub virtual_ips: Store<VirtualIP>,
    /// Nodes (the main controller's store).
    pub nodes: Store<Node>,
}

struct LbState {
    alloc: Allocator,
    pools_fingerprint: Option<u64>,
    /// Served Services that hold nothing because of an error: retried when addresses free up.
    failed: BTreeSet<SvcKey>,
    groups: GroupPlan,
}

/// Shared state of the load-balancer layer.
pub struct LbContext {
    client: Client,
    stores: LbStores,
    settings: LbSettings,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    clock: Clock,
    state: tokio::sync::Mutex<LbState>,
    restored: AtomicBool,
    sync_requested: AtomicU64,
    sync_done: tokio::sync::watch::Sender<u64>,
    wake: tokio::sync::Notify,
    retry: mpsc::UnboundedSender<KubeRef<Service>>,
    /// Group VirtualIP name → its Services (for mapping VirtualIP changes to Services).
    members: std::sync::Mutex<BTreeMap<String, Vec<SvcKey>>>,
    failures: std::sync::Mutex<BTreeMap<SvcKey, u32>>,
}

impl LbContext {
    /// A context over these stores. Returns the receiving end of the retry channel, which
    /// [`run`] feeds to the Controller.
    pub fn new(
        client: Client,
        stores: LbStores,
        settings: LbSettings,
        metrics: Arc<Metrics>,
        clock: Clock,
        reporter_instance: Option<String>,
    ) -> (Self, mpsc::UnboundedReceiver<KubeRef<Service>>) {
        let (tx, rx) = mpsc::unbounded();
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: reporter_instance,
        };
        let ctx = Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            stores,
            settings,
            metrics,
            clock,
            state: tokio::sync::Mutex::new(LbState {
                alloc: Allocator::default(),
                pools_fingerprint: None,
                failed: BTreeSet::new(),
                groups: GroupPlan::default(),
            }),
            restored: AtomicBool::new(false),
            sync_requested: AtomicU64::new(0),
            sync_done: tokio::sync::watch::channel(0).0,
            wake: tokio::sync::Notify::new(),
            retry: tx,
            members: std::sync::Mutex::new(BTreeMap::new()),
            failures: std::sync::Mutex::new(BTreeMap::new()),
        };
        (ctx, rx)
    }

    fn now(&self) -> Time {
        let t = (self.clock)();
        Time(k8s_openapi::jiff::Timestamp::from_second(t.as_second()).unwrap_or(t))
    }

    fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        self.stores
            .namespaces
            .get(&KubeRef::new(ns))
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default()
    }

    /// Rebuild the allocator from every served Service's status, oldest first. Called once,
    /// when every store is listed.
    pub async fn restore(&self) {
        let mut st = self.state.lock().await;
        let pools = self.stores.pools.state();
        let mut alloc = Allocator::new(Pools::new(&pools));
        let mut services: Vec<Arc<Service>> = self
            .stores
            .services
            .state()
            .into_iter()
            .filter(|s| {
                served(s, self.settings.default_class) && s.metadata.deletion_timestamp.is_none()
            })
            .collect();
        services.sort_by(|a, b| {
            let ka = (
                a.metadata.creation_timestamp.as_ref().map(|t| t.0),
                svc_key(a),
            );
            let kb = (
                b.metadata.creation_timestamp.as_ref().map(|t| t.0),
                svc_key(b),
            );
            ka.cmp(&kb)
        });
        let mut kept = 0usize;
        for s in &services {
            let req = request_of(
                s,
                &self.namespace_labels(&s.namespace().unwrap_or_default()),
            );
            if req.previous.is_empty() {
                continue;
            }
            match alloc.restore(&req) {
                Ok(_) => kept += 1,
                Err(e) => {
                    info!(service = %key_text(&req.key), error = %e, "address in status not kept; it gets a new one")
                }
            }
        }
        st.alloc = alloc;
        st.pools_fingerprint = Some(pools_fingerprint(&pools));
        drop(st);
        info!(
            services = services.len(),
            kept, "load-balancer allocations restored from Service status"
        );
        self.restored.store(true, Ordering::Release);
        self.request_sync();
    }

    /// Ask for a group sync; returns the generation to wait for.
    pub fn request_sync(&self) -> u64 {
        let g = self.sync_requested.fetch_add(1, Ordering::AcqRel) + 1;
        self.wake.notify_one();
        g
    }

    /// Wait until a sync that started after generation `g` was requested has completed.
    async fn wait_synced(&self, g: u64) -> Result<(), Error> {
        let mut rx = self.sync_done.subscribe();
        let wait = rx.wait_for(|done| *done >= g);
        match tokio::time::timeout(Duration::from_secs(30), wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::Watch(
                "the group VirtualIPs were not updated within 30 s".into(),
            )),
        }
    }

    /// Run the group sync loop forever.
    pub async fn sync_loop(self: Arc<Self>) {
        loop {
            let _ = tokio::time::timeout(Duration::from_secs(30), self.wake.notified()).await;
            if !self.restored.load(Ordering::Acquire) {
                continue;
            }
            // Let a burst of changes land in one sync.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let g = self.sync_requested.load(Ordering::Acquire);
            match self.sync_groups().await {
                Ok(()) => {
                    self.sync_done.send_replace(g);
                }
                Err(e) => {
                    self.metrics.error(e.metric_label());
                    warn!(error = %e, "group sync failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    self.wake.notify_one();
                }
            }
        }
    }

    /// Compute the group VirtualIPs and pool statuses and write what differs.
    pub async fn sync_groups(&self) -> Result<(), Error> {
        let ns = self.settings.namespace.clone();
        let all_vips = self.stores.virtual_ips.state();
        let existing: Vec<Arc<VirtualIP>> = all_vips
            .iter()
            .filter(|v| v.metadata.namespace.as_deref() == Some(ns.as_str()))
            .filter(|v| v.labels().get(GROUP_LABEL).is_some_and(|l| l == "true"))
            .cloned()
            .collect();
        let nodes = self.stores.nodes.state();
        let slices = self.stores.slices.state();
        let endpoints = ready_endpoint_nodes(&slices);
        let (plan, previous, usage) = {
            let mut st = self.state.lock().await;
            self.refresh_pools(&mut st);
            let plan = groups::plan_groups(&GroupInput {
                namespace: &ns,
                pools: st.alloc.pools(),
                assignments: st.alloc.assignments(),
                endpoints: &endpoints,
                nodes: &nodes,
                existing: &existing,
            });
            let usage: BTreeMap<String, (i64, i64)> = st
                .alloc
                .pools()
                .iter()
                .map(|p| (p.name.clone(), st.alloc.usage(p)))
                .collect();
            let previous = std::mem::replace(&mut st.groups, plan.clone());
            (plan, previous, usage)
        };
        {
            let mut members: BTreeMap<String, Vec<SvcKey>> = BTreeMap::new();
            for (svc, g) in &plan.of_service {
                members.entry(g.clone()).or_default().push(svc.clone());
            }
            if let Ok(mut m) = self.members.lock() {
                *m = members;
            }
        }
        let api: Api<VirtualIP> = Api::namespaced(self.client.clone(), &ns);
        for (name, desired) in &plan.virtual_ips {
            let observed = existing
                .iter()
                .find(|v| v.metadata.name.as_deref() == Some(name));
            if !group_differs(observed.map(|v| &**v), desired) {
                continue;
            }
            api.patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(desired),
            )
            .await?;
            self.metrics.write("group-virtualip");
            debug!(group = %name, addresses = desired.spec.addresses.len() + desired.spec.excluded_addresses.len(), "applied group VirtualIP");
        }
        for name in &plan.delete {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => info!(group = %name, "deleted empty group VirtualIP"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            self.metrics.write("group-virtualip");
        }
        self.write_pool_statuses(&usage).await?;
        // Services whose group or announcement changed: their annotation may change.
        let changed: BTreeSet<&SvcKey> = plan
            .of_service
            .iter()
            .filter(|(k, g)| previous.of_service.get(*k) != Some(*g))
            .map(|(k, _)| k)
            .chain(
                previous
                    .of_service
                    .keys()
                    .filter(|k| !plan.of_service.contains_key(*k)),
            )
            .chain(
                plan.unannounced
                    .iter()
                    .filter(|(k, why)| previous.unannounced.get(*k) != Some(*why))
                    .map(|(k, _)| k),
            )
            .collect();
        for k in changed {
            let _ = self
                .retry
                .unbounded_send(KubeRef::new(&k.name).within(&k.namespace));
        }
        Ok(())
    }

    /// Give the allocator the current pools when they changed.
    fn refresh_pools(&self, st: &mut LbState) -> bool {
        let pools = self.stores.pools.state();
        let fp = pools_fingerprint(&pools);
        if st.pools_fingerprint == Some(fp) {
            return false;
        }
        st.alloc.set_pools(Pools::new(&pools));
        st.pools_fingerprint = Some(fp);
        true
    }

    async fn write_pool_statuses(&self, usage: &BTreeMap<String, (i64, i64)>) -> Result<(), Error> {
        let api: Api<VirtualIPPool> = Api::all(self.client.clone());
        let pools = {
            let st = self.state.lock().await;
            st.alloc.pools().clone()
        };
        for p in self.stores.pools.state() {
            let Some(name) = p.metadata.name.clone() else {
                continue;
            };
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let observed = p.status.clone().unwrap_or_default();
            let (status, reason, message, assigned, available) =
                match (pools.get(&name), pools.problem(&name)) {
                    (Some(_), _) => {
                        let (a, f) = usage.get(&name).copied().unwrap_or((0, 0));
                        (
                            "True",
                            "Usable".to_string(),
                            format!("{a} assigned, {f} available"),
                            a,
                            f,
                        )
                    }
                    (None, Some(problem)) => (
                        "False",
                        problem.reason().to_string(),
                        problem.to_string(),
                        0,
                        0,
                    ),
                    (None, None) => (
                        "False",
                        "InvalidSpec".to_string(),
                        "the pool cannot be read".to_string(),
                        0,
                        0,
                    ),
                };
            let old = observed.conditions.iter().find(|c| c.type_ == "Ready");
            let condition = Condition {
                type_: "Ready".into(),
                status: status.into(),
                reason,
                message,
                observed_generation: p.metadata.generation,
                last_transition_time: match old {
                    Some(o) if o.status == status => o.last_transition_time.clone(),
                    _ => self.now(),
                },
            };
            let desired = VirtualIPPoolStatus {
                assigned: Some(assigned),
                available: Some(available),
                conditions: vec![condition],
                observed_generation: p.metadata.generation,
            };
            if serde_json::to_value(&observed).ok() == serde_json::to_value(&desired).ok() {
                continue;
            }
            let patch = json!({
                "apiVersion": VirtualIPPool::api_version(&()),
                "kind": VirtualIPPool::kind(&()),
                "status": desired,
            });
            api.patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
            self.metrics.write("pool-status");
        }
        Ok(())
    }

    async fn publish(&self, svc: &Service, type_: events::EventType, reason: &str, note: String) {
        let ev = events::Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Allocate".into(),
            secondary: None,
        };
        match self.recorder.publish(&ev, &svc.object_ref(&())).await {
            Ok(()) => {
                self.metrics
                    .events
                    .get_or_create(&crate::metrics::KindLabel {
                        kind: reason.into(),
                    })
                    .inc();
            }
            Err(e) => warn!(reason, error = %e, "cannot publish event"),
        }
    }

    fn retry_failed(&self, failed: &BTreeSet<SvcKey>) {
        for k in failed {
            let _ = self
                .retry
                .unbounded_send(KubeRef::new(&k.name).within(&k.namespace));
        }
    }
}

fn key_text(k: &SvcKey) -> String {
    format!("{}/{}", k.namespace, k.name)
}

fn pools_fingerprint(pools: &[Arc<VirtualIPPool>]) -> u64 {
    let mut items: Vec<_> = pools
        .iter()
        .map(|p| {
            (
                p.metadata.name.clone(),
                p.metadata.creation_timestamp.clone(),
                p.metadata.deletion_timestamp.is_some(),
                serde_json::to_value(&p.spec).ok(),
            )
        })
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    hash_json(&items)
}

/// Whether a group VirtualIP must be (re)applied.
fn group_differs(observed: Option<&VirtualIP>, desired: &VirtualIP) -> bool {
    let Some(o) = observed else {
        return true;
    };
    let labels_ok = desired
        .labels()
        .iter()
        .all(|(k, v)| o.labels().get(k) == Some(v));
    let annotations_ok = desired
        .annotations()
        .iter()
        .all(|(k, v)| o.annotations().get(k) == Some(v));
    !labels_ok
        || !annotations_ok
        || serde_json::to_value(&o.spec).ok() != serde_json::to_value(&desired.spec).ok()
}

/// The status ingress the operator wants for an assignment.
fn desired_ingress(a: Option<&Assignment>) -> Vec<LoadBalancerIngress> {
    a.into_iter()
        .flat_map(|a| a.addresses.iter())
        .map(|ip| LoadBalancerIngress {
            ip: Some(ip.to_string()),
            ip_mode: Some(IP_MODE.into()),
            ..Default::default()
        })
        .collect()
}

fn observed_ingress(svc: &Service) -> Vec<(Option<String>, Option<String>)> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .into_iter()
        .flatten()
        .map(|i| (i.ip.clone(), i.ip_mode.clone()))
        .collect()
}

fn find_condition<'a>(svc: &'a Service, type_: &str) -> Option<&'a Condition> {
    svc.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

fn our_condition(svc: &Service) -> Option<&Condition> {
    find_condition(svc, CONDITION_TYPE)
}

/// Reconcile one Service.
pub async fn reconcile(svc: Arc<Service>, ctx: Arc<LbContext>) -> Result<Action, Error> {
    let result = reconcile_inner(&svc, &ctx).await;
    if result.is_ok()
        && let Ok(mut f) = ctx.failures.lock()
    {
        f.remove(&svc_key(&svc));
    }
    result
}

async fn reconcile_inner(svc: &Service, ctx: &LbContext) -> Result<Action, Error> {
    if !ctx.restored.load(Ordering::Acquire) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // Act on the latest version: the trigger may carry an old one.
    let key = svc_key(svc);
    let Some(svc) = ctx
        .stores
        .services
        .get(&KubeRef::new(&key.name).within(&key.namespace))
    else {
        // Gone: make sure nothing is held.
        let mut st = ctx.state.lock().await;
        if st.alloc.release(&key).is_some() {
            let failed = std::mem::take(&mut st.failed);
            drop(st);
            ctx.request_sync();
            ctx.retry_failed(&failed);
        }
        return Ok(Action::await_change());
    };
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let has_finalizer = svc.finalizers().iter().any(|f| f == LB_FINALIZER);
    let deleting = svc.metadata.deletion_timestamp.is_some();
    if deleting || !served(&svc, ctx.settings.default_class) {
        let released = {
            let mut st = ctx.state.lock().await;
            st.failed.remove(&key);
            let r = st.alloc.release(&key);
            let failed = if r.is_some() {
                std::mem::take(&mut st.failed)
            } else {
                BTreeSet::new()
            };
            (r, failed)
        };
        let ours = has_finalizer || our_condition(&svc).is_some();
        if released.0.is_some() || ours {
            // Out of every group before anyone else can get the address.
            let g = ctx.request_sync();
            ctx.wait_synced(g).await?;
            ctx.retry_failed(&released.1);
        }
        if !deleting && ours {
            // Class or type changed: take back what we wrote.
            let patch = json!({"apiVersion": "v1", "kind": "Service", "status": {}});
            api.patch_status(
                &key.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
            ctx.metrics.write("service-status");
            if let Some(a) = &released.0 {
                let addrs: Vec<String> = a.addresses.iter().map(ToString::to_string).collect();
                ctx.publish(
                    &svc,
                    events::EventType::Normal,
                    "IPReleased",
                    format!("released {} (the Service is no longer of type LoadBalancer with class {LOAD_BALANCER_CLASS})", addrs.join(", ")),
                )
                .await;
            }
        }
        if has_finalizer || svc.annotations().contains_key(ANNOUNCED_ANNOTATION) {
            let patch = json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": key.name, "namespace": key.namespace},
            });
            api.patch(
                &key.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
            ctx.metrics.write("finalizer");
        }
        return Ok(Action::await_change());
    }

    // Served: allocate.
    let req = request_of(&svc, &ctx.namespace_labels(&key.namespace));
    let (result, before, freed, group, unannounced) = {
        let mut st = ctx.state.lock().await;
        if ctx.refresh_pools(&mut st) {
            // Pools changed: every Service re-checks its holding (the pool watch triggers
            // them); a group sync follows.
            ctx.request_sync();
        }
        let before = st.alloc.assignment(&key).cloned();
        let result = st.alloc.assign(&req);
        let after = st.alloc.assignment(&key).cloned();
        let changed = before != after;
        let freed = before
            .as_ref()
            .is_some_and(|b| after.as_ref().is_none_or(|a| a.addresses != b.addresses));
        match &result {
            Ok(_) => {
                st.failed.remove(&key);
            }
            Err(_) => {
                st.failed.insert(key.clone());
            }
        }
        let freed_failed = if freed {
            st.failed.iter().filter(|k| **k != key).cloned().collect()
        } else {
            BTreeSet::new()
        };
        if changed {
            ctx.request_sync();
        }
        let group = st.groups.of_service.get(&key).cloned();
        let unannounced = st.groups.unannounced.get(&key).cloned();
        (result, before, freed_failed, group, unannounced)
    };
    ctx.retry_failed(&freed);

    // Where it is announced: the master of its group. While that is not known (no group
    // sync yet, or the group has no master for a moment) the last known node stays.
    let observed_announced = svc.annotations().get(ANNOUNCED_ANNOTATION).cloned();
    let announced: Option<String> = match (&result, &group, &unannounced) {
        (Err(_), _, _) | (Ok(_), None, Some(_)) => None,
        (Ok(_), Some(g), _) => ctx
            .stores
            .virtual_ips
            .get(&KubeRef::new(g).within(&ctx.settings.namespace))
            .and_then(|v| v.status.as_ref().and_then(|s| s.master.clone()))
            .or_else(|| observed_announced.clone()),
        (Ok(_), None, None) => observed_announced.clone(),
    };

    // Metadata: our finalizer, and the announcing node.
    if !has_finalizer || observed_announced != announced {
        let mut annotations = serde_json::Map::new();
        if let Some(n) = &announced {
            annotations.insert(ANNOUNCED_ANNOTATION.into(), json!(n));
        }
        let patch = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "name": key.name, "namespace": key.namespace,
                "finalizers": [LB_FINALIZER],
                "annotations": annotations,
            },
        });
        api.patch(
            &key.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        ctx.metrics.write("service-metadata");
    }

    // Status: ingress and our two conditions.
    let assignment = result.as_ref().ok();
    let ingress = desired_ingress(assignment);
    let (cstatus, reason, message) = match &result {
        Ok(a) => (
            "True",
            "Assigned".to_string(),
            format!(
                "assigned {} from pool {}",
                a.addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                a.pool
            ),
        ),
        Err(e) => ("False", e.reason().to_string(), e.to_string()),
    };
    let generation = svc.metadata.generation;
    let assigned = condition(
        &svc,
        CONDITION_TYPE,
        cstatus,
        &reason,
        &message,
        generation,
        ctx.now(),
    );
    let announced_condition = match (&result, &announced, &unannounced) {
        (Err(_), _, _) => None,
        (Ok(_), _, Some(why)) => Some(("False", "NotAnnounced", why.clone())),
        (Ok(_), Some(n), None) => Some(("True", "Announced", format!("announced from {n}"))),
        (Ok(_), None, None) => Some((
            "False",
            "Pending",
            "waiting for the master of its VRRP router".to_string(),
        )),
    }
    .map(|(st, r, m)| {
        condition(
            &svc,
            ANNOUNCED_CONDITION_TYPE,
            st,
            r,
            &m,
            generation,
            ctx.now(),
        )
    });
    let conditions: Vec<Condition> = std::iter::once(assigned.clone())
        .chain(announced_condition.clone())
        .collect();
    let want_ingress: Vec<(Option<String>, Option<String>)> = ingress
        .iter()
        .map(|i| (i.ip.clone(), i.ip_mode.clone()))
        .collect();
    let same = |c: &Condition| {
        find_condition(&svc, &c.type_).is_some_and(|o| {
            o.status == c.status
                && o.reason == c.reason
                && o.message == c.message
                && o.observed_generation == c.observed_generation
        })
    };
    let assigned_same = same(&assigned);
    let announced_same = match &announced_condition {
        Some(c) => same(c),
        None => find_condition(&svc, ANNOUNCED_CONDITION_TYPE).is_none(),
    };
    if observed_ingress(&svc) != want_ingress || !assigned_same || !announced_same {
        let patch = json!({
            "apiVersion": "v1", "kind": "Service",
            "status": {
                "loadBalancer": {"ingress": ingress},
                "conditions": conditions,
            },
        });
        api.patch_status(
            &key.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        ctx.metrics.write("service-status");
        match &result {
            Ok(a)
                if before.as_ref().map(|b| &b.addresses) != Some(&a.addresses)
                    || observed_ingress(&svc) != want_ingress =>
            {
                ctx.publish(
                    &svc,
                    events::EventType::Normal,
                    "IPAllocated",
                    message.clone(),
                )
                .await;
            }
            Err(e) if !assigned_same => {
                ctx.publish(&svc, events::EventType::Warning, e.reason(), e.to_string())
                    .await;
            }
            _ => {}
        }
        if let (Some(c), false) = (&announced_condition, announced_same)
            && c.reason == "NotAnnounced"
        {
            ctx.publish(
                &svc,
                events::EventType::Warning,
                "NotAnnounced",
                format!("not announced: {}", c.message),
            )
            .await;
        }
    }
    if observed_announced != announced
        && let Some(n) = &announced
    {
        ctx.publish(
            &svc,
            events::EventType::Normal,
            "Announced",
            format!("announced from {n}"),
        )
        .await;
    }
    Ok(Action::requeue(ctx.settings.resync))
}

/// One of our conditions, keeping the transition time while the status stays.
fn condition(
    svc: &Service,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: match find_condition(svc, type_) {
            Some(o) if o.status == status => o.last_transition_time.clone(),
            _ => now,
        },
    }
}

/// Error policy: count, log, retry with backoff.
pub fn error_policy(svc: Arc<Service>, err: &Error, ctx: Arc<LbContext>) -> Action {
    ctx.metrics.error(err.metric_label());
    let key = svc_key(&svc);
    let n = match ctx.failures.lock() {
        Ok(mut f) => {
            let n = f.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        }
        Err(_) => 1,
    };
    let delay = backoff(n);
    warn!(service = %key_text(&key), error = %err, failures = n, retry_in = ?delay, "load-balancer reconcile failed");
    Action::requeue(delay)
}

/// What grouping reads of a Node.
fn node_fingerprint(nodes: &[Arc<Node>]) -> u64 {
    let mut items: Vec<_> = nodes
        .iter()
        .map(|n| {
            (
                n.metadata.name.clone(),
                n.metadata.labels.clone(),
                n.metadata.deletion_timestamp.is_some(),
                crate::planner::node_ready(n),
                crate::planner::node_draining(n),
            )
        })
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    hash_json(&items)
}

/// What grouping reads of the EndpointSlices: ready nodes per Service.
fn slices_fingerprint(slices: &[Arc<EndpointSlice>]) -> u64 {
    // As a list: JSON maps need string keys.
    let pairs: Vec<_> = ready_endpoint_nodes(slices).into_iter().collect();
    hash_json(&pairs)
}

/// Run the load-balancer layer until its streams end. `virtual_ips` and `nodes` are the
/// main controller's stores.
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    settings: LbSettings,
    virtual_ips: Store<VirtualIP>,
    nodes: Store<Node>,
    reporter_instance: Option<String>,
    clock: Clock,
) -> Result<(), Error> {
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let (pool_store, pool_writer) = reflector::store::<VirtualIPPool>();
    let (slice_store, slice_writer) = reflector::store::<EndpointSlice>();
    let (ns_store, ns_writer) = reflector::store::<PartialObjectMeta<Namespace>>();
    let (group_store, group_writer) = reflector::store::<VirtualIP>();
    let stores = LbStores {
        services: svc_store.clone(),
        pools: pool_store.clone(),
        slices: slice_store.clone(),
        namespaces: ns_store.clone(),
        virtual_ips,
        nodes,
    };
    let (ctx, retry_rx) = LbContext::new(
        client.clone(),
        stores.clone(),
        settings.clone(),
        metrics,
        clock,
        reporter_instance,
    );
    let ctx = Arc::new(ctx);
    let generation = Arc::new(AtomicU64::new(0));
    let wc = watcher::Config::default();

    let svc_stream = changes(
        watcher(Api::<Service>::all(client.clone()), wc.clone())
            .backoff(WatchBackoff::default())
            .reflect(svc_writer),
        |s: &Service| {
            hash_json(&(
                &s.metadata.annotations,
                &s.metadata.labels,
                &s.spec,
                &s.metadata.deletion_timestamp,
                &s.metadata.finalizers,
            ))
        },
        generation.clone(),
        true,
    );
    let pool_stream = changes(
        watcher(Api::<VirtualIPPool>::all(client.clone()), wc.clone())
            .backoff(WatchBackoff::default())
            .reflect(pool_writer),
        |p: &VirtualIPPool| hash_json(&(&p.spec, &p.metadata.deletion_timestamp)),
        generation.clone(),
        false,
    );
    let ns_stream = changes(
        watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            wc.clone(),
        )
        .backoff(WatchBackoff::default())
        .reflect(ns_writer),
        |n: &PartialObjectMeta<Namespace>| hash_json(&n.metadata.labels),
        generation.clone(),
        false,
    );
    let group_stream = changes(
        watcher(
            Api::<VirtualIP>::namespaced(client.clone(), &settings.namespace),
            watcher::Config::default().labels(&format!("{GROUP_LABEL}=true")),
        )
        .backoff(WatchBackoff::default())
        .reflect(group_writer),
        |v: &VirtualIP| hash_json(&v.status.as_ref().map(|s| &s.master)),
        generation.clone(),
        false,
    );

    // EndpointSlices only feed the group sync.
    let slice_ctx = ctx.clone();
    let slices_task = tokio::spawn(async move {
        let mut last = None;
        let mut stream = std::pin::pin!(
            watcher(
                Api::<EndpointSlice>::all(client.clone()),
                watcher::Config::default()
            )
            .backoff(WatchBackoff::default())
            .reflect(slice_writer)
        );
        while let Some(ev) = stream.next().await {
            // The initial list is read once it is complete.
            if matches!(
                ev,
                Err(_) | Ok(watcher::Event::Init | watcher::Event::InitApply(_))
            ) {
                continue;
            }
            let fp = slices_fingerprint(&slice_ctx.stores.slices.state());
            if last != Some(fp) {
                last = Some(fp);
                slice_ctx.request_sync();
            }
        }
    });
    // Nodes: checked every 500 ms against what grouping reads.
    let node_ctx = ctx.clone();
    let nodes_task = tokio::spawn(async move {
        let mut last = None;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let fp = node_fingerprint(&node_ctx.stores.nodes.state());
            if last.is_some() && last != Some(fp) {
                node_ctx.request_sync();
            }
            last = Some(fp);
        }
    });
    let sync_task = tokio::spawn(ctx.clone().sync_loop());
    let ready_ctx = ctx.clone();
    let ready_stores = stores.clone();
    let ready = tokio::spawn(async move {
        let all = future::try_join5(
            store_ready(&ready_stores.services),
            store_ready(&ready_stores.pools),
            store_ready(&ready_stores.slices),
            store_ready(&ready_stores.namespaces),
            future::try_join3(
                store_ready(&ready_stores.virtual_ips),
                store_ready(&ready_stores.nodes),
                store_ready(&group_store),
            ),
        )
        .await;
        if all.is_ok() {
            ready_ctx.restore().await;
        }
    });

    let all_services = svc_store.clone();
    let ns_services = svc_store.clone();
    let default_class = settings.default_class;
    let members_ctx = ctx.clone();
    Controller::for_stream(svc_stream, svc_store)
        .reconcile_on(retry_rx)
        .watches_stream(pool_stream, move |_p: VirtualIPPool| {
            all_services
                .state()
                .iter()
                .filter(|s| served(s, default_class))
                .map(|s| KubeRef::from_obj(&**s))
                .collect::<Vec<_>>()
        })
        .watches_stream(ns_stream, move |n: PartialObjectMeta<Namespace>| {
            let ns = n.metadata.name.clone();
            ns_services
                .state()
                .iter()
                .filter(|s| s.metadata.namespace == ns && served(s, default_class))
                .map(|s| KubeRef::from_obj(&**s))
                .collect::<Vec<_>>()
        })
        .watches_stream(group_stream, move |v: VirtualIP| {
            let name = v.metadata.name.clone().unwrap_or_default();
            members_ctx
                .members
                .lock()
                .ok()
                .and_then(|m| m.get(&name).cloned())
                .unwrap_or_default()
                .into_iter()
                .map(|k| KubeRef::<Service>::new(&k.name).within(&k.namespace))
                .collect::<Vec<_>>()
        })
        .with_config(
            ControllerConfig::default()
                .concurrency(4)
                .debounce(Duration::from_millis(20)),
        )
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(service = %obj, "reconciled"),
                Err(e) => debug!(error = %e, "load-balancer controller"),
            }
        })
        .await;
    for t in [slices_task, nodes_task, sync_task, ready] {
        t.abort();
    }
    Ok(())
}
