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

/// The lease identity when none is given (`--identity` / `POD_NAME`), e.g. when the operator
/// runs outside a pod: the host name plus a random suffix, so two operators started on one
/// host still hold distinct identities. `host` falls back to `kube-vrrp-operator`; the result
/// is a lowercase DNS-1123 label of at most 63 characters.
pub fn default_identity(host: Option<&str>, random: u64) -> String {
    let mut base: String = host
        .unwrap_or_default()
        .trim()
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    base = base.trim_matches('-').to_string();
    if base.is_empty() {
        base = "kube-vrrp-operator".into();
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = random;
    let suffix: String = (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect();
    base.truncate(63 - 1 - suffix.len());
    format!("{}-{suffix}", base.trim_end_matches('-'))
}

/// This host's name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`), if known.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
}

/// A random number from the standard library's per-process hash seed (no crate needed for
/// an identity suffix).
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
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

#[cfg(test)]
mod tests {
    use super::default_identity;

    #[test]
    fn identity_outside_a_pod_is_the_host_plus_a_random_suffix() {
        let a = default_identity(Some("Build-Host.example.com"), 1);
        let b = default_identity(Some("Build-Host.example.com"), 2);
        assert!(a.starts_with("build-host-example-com-"), "{a}");
        assert_ne!(a, b, "different random numbers give different identities");
        assert_eq!(a.len(), "build-host-example-com-".len() + 5);
        assert!(default_identity(None, 7).starts_with("kube-vrrp-operator-"));
        assert!(default_identity(Some("  "), 7).starts_with("kube-vrrp-operator-"));
        let long = default_identity(Some(&"h".repeat(100)), 3);
        assert_eq!(long.len(), 63);
        assert!(
            long.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }
}
