//! The VIP worker: one task that adds and removes VIPs in the order the core asked, so the
//! protocol loop never waits on netlink.
//!
//! Commands carry the instance name for logs and metrics. [`VipWorker::flush`] waits until
//! every earlier command is done (used at shutdown, so the agent exits with its VIPs gone).

use tokio::sync::{mpsc, oneshot};

use crate::metrics::{Telemetry, VipOp};
use crate::net::{Vip, VipManager};

enum Command {
    Add(String, Vec<Vip>),
    Remove(String, Vec<Vip>),
    Flush(oneshot::Sender<()>),
}

/// Handle of the VIP worker task.
#[derive(Clone)]
pub struct VipWorker {
    tx: mpsc::UnboundedSender<Command>,
}

impl VipWorker {
    /// Start the worker on the current runtime.
    pub fn spawn(manager: VipManager, telemetry: Telemetry) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    Command::Add(instance, vips) => {
                        report(
                            &instance,
                            "add",
                            &vips,
                            manager.add(&vips).await,
                            &telemetry,
                            VipOp::Add,
                        );
                    }
                    Command::Remove(instance, vips) => {
                        report(
                            &instance,
                            "remove",
                            &vips,
                            manager.remove(&vips).await,
                            &telemetry,
                            VipOp::Remove,
                        );
                    }
                    Command::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Self { tx }
    }

    /// Bind `vips` for `instance` (after earlier commands).
    pub fn add(&self, instance: &str, vips: Vec<Vip>) {
        let _ = self.tx.send(Command::Add(instance.to_owned(), vips));
    }

    /// Remove `vips` of `instance` (after earlier commands).
    pub fn remove(&self, instance: &str, vips: Vec<Vip>) {
        let _ = self.tx.send(Command::Remove(instance.to_owned(), vips));
    }

    /// Wait until every command sent before this call is done.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

fn report(
    instance: &str,
    what: &str,
    vips: &[Vip],
    results: Vec<Result<(), crate::Error>>,
    telemetry: &Telemetry,
    op: VipOp,
) {
    for (vip, r) in vips.iter().zip(results) {
        match r {
            Ok(()) => {
                tracing::debug!(instance, vip = %vip.address(), dev = vip.ifname(), "{what} VIP")
            }
            Err(e) => {
                telemetry.metrics().vip_error(instance, op);
                tracing::error!(instance, vip = %vip.address(), dev = vip.ifname(), error = %e, "cannot {what} VIP");
            }
        }
    }
}
