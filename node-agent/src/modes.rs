//! The two long-running modes, wired from the pieces: `run` (in-cluster) and `standalone`
//! (a keepalived.conf, no cluster). Both end the same way: SIGTERM/SIGINT ⇒ every master sends
//! a priority-0 advert, the VIPs are removed, exit 0.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crds::vrrpnode::ResolvedTrackPods;
use crds::{ResolvedInstance, VRRPNode, VRRPNodeSpec, VRRPNodeStatus};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::cli::{CommonArgs, RunArgs, StandaloneArgs};
use crate::daemon::{Daemon, Hooks, Options, PodsReady, serve_metrics};
use crate::kube::cache::ConfigCache;
use crate::kube::events::{EventQueue, TransitionEvents};
use crate::kube::pods;
use crate::kube::{report, source};
use crate::metrics::Telemetry;
use crate::{Error, logging};

/// A future that resolves on SIGTERM or SIGINT.
fn termination() -> Result<impl std::future::Future<Output = ()>, Error> {
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Error::io("installing the SIGTERM handler", e))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Error::io("installing the SIGINT handler", e))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// Run the daemon with `desired` until a termination signal, serving metrics meanwhile.
async fn run_daemon(
    common: &CommonArgs,
    node_name: String,
    telemetry: Telemetry,
    hooks: Hooks,
    desired: watch::Receiver<Vec<ResolvedInstance>>,
) -> Result<(), Error> {
    let shutdown = termination()?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let server = serve_metrics(common.metrics_listen(), telemetry.clone(), async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    })
    .await?;
    let opts = Options {
        node_name,
        state_dir: common.state_dir.clone(),
    };
    let daemon = Daemon::new(opts, telemetry, hooks).await?;
    let result = daemon.run(desired, shutdown).await;
    let _ = stop_tx.send(true);
    if let Some(server) = server {
        let _ = server.await;
    }
    result
}

/// The host name, for logs when no node name is given.
fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// `kube-vrrp-agent standalone --config FILE`: run a keepalived.conf or VirtualIP YAML.
/// SIGHUP reloads it and applies only the difference.
pub async fn standalone(args: StandaloneArgs) -> Result<(), Error> {
    logging::init(args.common.log_format);
    let node = args
        .node_name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(host_name);
    let initial = load_standalone(&args.config, &node).await?;
    tracing::info!(config = %args.config.display(), node = %node, instances = initial.len(), "starting standalone");
    let (tx, rx) = watch::channel(initial);
    let mut hup =
        signal(SignalKind::hangup()).map_err(|e| Error::io("installing the SIGHUP handler", e))?;
    let path = args.config.clone();
    let reload_node = node.clone();
    let reloader = tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!(config = %path.display(), "SIGHUP: reloading configuration");
            match load_standalone(&path, &reload_node).await {
                Ok(instances) => {
                    if tx.send(instances).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "reload failed; keeping the running configuration")
                }
            }
        }
    });
    let result = run_daemon(&args.common, node, Telemetry::new(), Hooks::default(), rx).await;
    reloader.abort();
    result
}

/// Parse and resolve the configuration for this host; every problem is reported.
async fn load_standalone(path: &Path, node: &str) -> Result<Vec<ResolvedInstance>, Error> {
    let netlink = crate::net::Netlink::new()?;
    let interfaces = netlink.interfaces().await?;
    let facts = crate::net::node_facts(node, &interfaces);
    crate::standalone::load(path, &facts)
}

/// `kube-vrrp-agent run`: follow `VRRPNode/<node>`, report its status.
pub async fn run(args: RunArgs) -> Result<(), Error> {
    logging::init(args.common.log_format);
    let node = args.node_name.clone();
    let mut config = kube::Config::infer()
        .await
        .map_err(|e| Error::Config(format!("cannot configure the Kubernetes client: {e}")))?;
    config.read_timeout = Some(crate::kube::API_READ_TIMEOUT);
    config.reset_reader_on_write = true;
    // No in-request retries (kube's default sleeps on Retry-After, up to 1000 s): watches,
    // status reports and the Lease retry on their own within 2 s.
    config.default_retry = false;
    // kube's client stack on connections the stall watchdog sees and can drop: a silent API
    // (no data for 1.5 s, GET /version unanswered for 3 s) drops them all, sets
    // kube_vrrp_api_stalled and re-lists the watches once it answers. VRRP never waits.
    let live = apiclient::conn::Liveness::new();
    let client = apiclient::stack::client_builder(&config, live.clone())
        .map_err(|e| Error::Config(format!("cannot configure the Kubernetes client: {e}")))?
        .build();
    let (stall_tx, stall_rx) = watch::channel(apiclient::watchdog::Status::default());
    let watchdog = tokio::spawn(apiclient::watchdog::run(
        client.clone(),
        live,
        apiclient::watchdog::WatchdogSettings::default(),
        stall_tx,
    ));
    let cache = ConfigCache::new(&args.common.state_dir);
    let cached = match cache.load() {
        Ok(Some(spec)) => {
            tracing::info!(instances = spec.instances.len(), path = %cache.path().display(), "running the cached configuration until the API answers");
            spec
        }
        Ok(None) => VRRPNodeSpec::default(),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the unreadable config cache");
            VRRPNodeSpec::default()
        }
    };

    let api: kube::Api<VRRPNode> = kube::Api::all(client.clone());
    let (spec_tx, mut spec_rx) = watch::channel(cached.clone());
    let telemetry = Telemetry::new();
    let health = Arc::new(source::ApiHealth {
        telemetry: Some(telemetry.clone()),
        stalls: Some(stall_rx.clone()),
        ..Default::default()
    });
    let stall_health = Arc::clone(&health);
    let mut stall_rx = stall_rx;
    let stall_task = tokio::spawn(async move {
        while stall_rx.changed().await.is_ok() {
            let stalled = stall_rx.borrow_and_update().stalled;
            stall_health.stalled(stalled);
        }
    });
    let (exists_tx, exists_rx) = watch::channel(false);
    let watch_task = tokio::spawn(source::run(
        api.clone(),
        node.clone(),
        cache,
        spec_tx,
        exists_tx,
        Arc::clone(&health),
    ));

    // The passwords: this node's auth Secret, in memory only (the cache holds authKey only).
    let (auth_tx, mut auth_rx) = watch::channel(crate::kube::auth::AuthData::Unknown);
    let auth_task = tokio::spawn(crate::kube::auth::run(
        kube::Api::namespaced(client.clone(), &args.lease_namespace),
        node.clone(),
        auth_tx,
        Arc::clone(&health),
    ));
    let secret_name = format!(
        "{}/{}",
        args.lease_namespace,
        crds::auth::auth_secret_name(&node)
    );

    let allow_scripts = args.allow_scripts;
    let desired = move |spec: &VRRPNodeSpec, auth: &crate::kube::auth::AuthData| {
        let instances = without_commands(spec.instances.clone(), allow_scripts);
        crate::kube::auth::with_passwords(instances, auth, &secret_name)
    };
    let (desired_tx, desired_rx) = watch::channel(desired(&cached, &auth_rx.borrow()));
    let (pods_tx, pods_rx) = mpsc::channel(64);
    let pods_client = client.clone();
    let pods_node = node.clone();
    let forward = tokio::spawn(async move {
        let mut pods = PodTrackers::default();
        pods.apply(
            &pods_client,
            &pods_node,
            &spec_rx.borrow().instances,
            &pods_tx,
        );
        loop {
            let spec_changed = tokio::select! {
                r = spec_rx.changed() => match r { Ok(()) => true, Err(_) => return },
                r = auth_rx.changed() => match r { Ok(()) => false, Err(_) => return },
            };
            let spec = spec_rx.borrow_and_update().clone();
            if spec_changed {
                pods.apply(&pods_client, &pods_node, &spec.instances, &pods_tx);
            }
            let auth = auth_rx.borrow_and_update().clone();
            let next = desired(&spec, &auth);
            // Unchanged (a Secret change for no instance of ours) is not sent again.
            desired_tx.send_if_modified(|current| {
                let changed = *current != next;
                if changed {
                    *current = next;
                }
                changed
            });
            if desired_tx.is_closed() {
                return;
            }
        }
    });

    if args.lease_duration_seconds < 2 * args.lease_renew_seconds {
        return Err(Error::Config(format!(
            "--lease-duration-seconds ({}) must be at least twice --lease-renew-seconds ({})",
            args.lease_duration_seconds, args.lease_renew_seconds
        )));
    }
    let lease_task = tokio::spawn(crate::kube::lease::run(
        client.clone(),
        crate::kube::lease::LeaseSettings {
            namespace: args.lease_namespace.clone(),
            node: node.clone(),
            renew_every: std::time::Duration::from_secs(args.lease_renew_seconds),
            duration: std::time::Duration::from_secs(args.lease_duration_seconds),
        },
    ));
    let (status_tx, status_rx) = watch::channel(VRRPNodeStatus::default());
    let reporter = tokio::spawn(report::run(api, node.clone(), status_rx, exists_rx));
    let hooks = Hooks {
        status: Some(status_tx),
        events: Some(Arc::new(EventQueue::spawn(TransitionEvents::new(
            client, &node,
        )))),
        pods: Some(pods_rx),
    };
    let result = run_daemon(&args.common, node, telemetry, hooks, desired_rx).await;
    watch_task.abort();
    auth_task.abort();
    watchdog.abort();
    stall_task.abort();
    forward.abort();
    lease_task.abort();
    // The daemon dropped its status sender: the reporter flushes the final state and ends.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), reporter).await;
    result
}

/// The instances to run: without `--allow-scripts`, those that carry a command are left out
/// (and logged), so nothing a VirtualIP author wrote runs on this node.
pub fn without_commands(
    instances: Vec<ResolvedInstance>,
    allow_scripts: bool,
) -> Vec<ResolvedInstance> {
    if allow_scripts {
        return instances;
    }
    instances
        .into_iter()
        .filter(|i| {
            let refused = i.runs_commands();
            if refused {
                tracing::error!(instance = %i.name, "not running this instance: it carries track.scripts or notify commands and the agent was started without --allow-scripts (chart: agent.scripts.allowed)");
            }
            !refused
        })
        .collect()
}

/// The running pod trackers, one watch task per tracker.
#[derive(Default)]
struct PodTrackers {
    running: BTreeMap<String, (ResolvedTrackPods, JoinHandle<()>)>,
}

impl PodTrackers {
    fn apply(
        &mut self,
        client: &kube::Client,
        node: &str,
        instances: &[ResolvedInstance],
        tx: &mpsc::Sender<PodsReady>,
    ) {
        let wanted: BTreeMap<String, ResolvedTrackPods> = instances
            .iter()
            .flat_map(|i| i.track.pods.iter())
            .map(|p| (p.name.clone(), p.clone()))
            .collect();
        self.running.retain(|name, (spec, task)| {
            let keep = wanted.get(name) == Some(spec);
            if !keep {
                task.abort();
            }
            keep
        });
        for (name, spec) in wanted {
            self.running.entry(name).or_insert_with(|| {
                let task = tokio::spawn(pods::run(
                    client.clone(),
                    node.to_owned(),
                    spec.clone(),
                    tx.clone(),
                ));
                (spec, task)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_allow_scripts_instances_with_commands_are_not_run() {
        let plain = ResolvedInstance {
            name: "ns/plain".into(),
            ..Default::default()
        };
        let mut script = plain.clone();
        script.name = "ns/script".into();
        script
            .track
            .scripts
            .push(crds::vrrpnode::ResolvedTrackScript {
                name: "chk".into(),
                script: "/bin/true".into(),
                interval_ms: 1000,
                timeout_ms: 1000,
                rise: 1,
                fall: 1,
                weight: 0,
                reverse: false,
                user: None,
            });
        let mut notify = plain.clone();
        notify.name = "ns/notify".into();
        notify.notify.master = Some("/bin/true".into());
        let mut group = plain.clone();
        group.name = "ns/group".into();
        group.sync_group_notify.any = Some("/bin/true".into());
        let all = vec![plain, script, notify, group];
        let names = |v: Vec<ResolvedInstance>| v.into_iter().map(|i| i.name).collect::<Vec<_>>();
        assert_eq!(names(without_commands(all.clone(), false)), ["ns/plain"]);
        assert_eq!(
            names(without_commands(all, true)),
            ["ns/plain", "ns/script", "ns/notify", "ns/group"]
        );
    }
}
