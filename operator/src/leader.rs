//! Leader election on a coordination.k8s.io Lease (kube-lease-manager), so that of several
//! replicas exactly one runs the controller.
//!
//! [`run_while_leader`] waits for the lease, starts the controller task, stops it as soon as
//! the lease is lost (and waits for it again), and releases the lease on shutdown so a standby
//! replica takes over without waiting for expiry. A standby replica reports ready; a leader
//! reports ready once its caches are synced (see [`crate::controller::run`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{info, warn};

use crate::Error;
use crate::metrics::Metrics;

/// Where the lease lives and who we are.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// Holder identity (the pod name).
    pub identity: String,
    /// Lease duration, seconds.
    pub duration_secs: u64,
    /// Renew this long before expiry, seconds.
    pub grace_secs: u64,
}

enum Outcome {
    Lost,
    Finished(Result<Result<(), Error>, tokio::task::JoinError>),
    Shutdown,
}

/// Run `controller()` whenever this replica holds the lease, until `shutdown` resolves or the
/// controller ends on its own.
pub async fn run_while_leader<F, Fut>(
    client: Client,
    lease: LeaseSettings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
    mut controller: F,
) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    let manager = LeaseManagerBuilder::new(client, &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.duration_secs)
        .with_grace(lease.grace_secs)
        .with_field_manager(format!("{}-lease", crate::controller::FIELD_MANAGER))
        .build()
        .await?;
    let (mut leading, lease_task) = manager.watch().await;
    tokio::pin!(shutdown);
    metrics.set_ready(true);
    info!(lease = %lease.name, namespace = %lease.namespace, identity = %lease.identity, "waiting for leadership");

    let result = loop {
        // Stand by until we hold the lease.
        let stop = loop {
            if *leading.borrow_and_update() {
                break false;
            }
            tokio::select! {
                changed = leading.changed() => if changed.is_err() { break true },
                () = &mut shutdown => break true,
            }
        };
        if stop {
            break Ok(());
        }
        info!(identity = %lease.identity, "became leader; starting the controller");
        metrics.leader.set(1);
        metrics.set_ready(false);
        let mut task = tokio::spawn(controller());
        let outcome = loop {
            tokio::select! {
                changed = leading.changed() => {
                    if changed.is_err() || !*leading.borrow_and_update() {
                        break Outcome::Lost;
                    }
                }
                res = &mut task => break Outcome::Finished(res),
                () = &mut shutdown => break Outcome::Shutdown,
            }
        };
        metrics.leader.set(0);
        metrics.clear_watches();
        metrics.set_ready(true);
        match outcome {
            Outcome::Lost => {
                warn!("lost the lease; stopping the controller");
                task.abort();
                let _ = task.await;
            }
            Outcome::Finished(Ok(res)) => break res,
            Outcome::Finished(Err(join)) => {
                break Err(Error::Watch(format!("controller task failed: {join}")));
            }
            Outcome::Shutdown => {
                info!("shutting down");
                task.abort();
                let _ = task.await;
                break Ok(());
            }
        }
    };
    // Dropping the receiver makes the lease task release the lease and end.
    drop(leading);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => info!("lease released"),
        Ok(Ok(Err(e))) => warn!(error = %e, "could not release the lease"),
        Ok(Err(e)) => warn!(error = %e, "lease task failed"),
        Err(_) => warn!("timed out releasing the lease"),
    }
    result
}
