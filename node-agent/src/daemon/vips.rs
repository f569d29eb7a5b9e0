//! The VIP worker: one task that adds and removes VIPs and sends gratuitous ARP / unsolicited
//! NA, in the order the core asked, so the protocol loop never waits on netlink — and an
//! announcement never goes out before the address it announces is bound.
//!
//! Commands carry the instance name for logs and metrics. [`VipWorker::flush`] waits until
//! every earlier command is done (used at shutdown, so the agent exits with its VIPs gone).
//!
//! The worker runs on its own thread, with its own netlink connection and packet socket. The
//! kernel does an address's work inside the `sendto` that asks for it: an IPv6 address joins
//! its solicited-node multicast group there, about 0.7 ms each, so binding 2,000 takes over a
//! second of kernel time. On the protocol loop's runtime those calls occupied its worker
//! threads and delayed adverts by up to 270 ms; on a thread of their own they cannot.

use std::net::IpAddr;

use tokio::sync::{mpsc, oneshot};

use crate::metrics::{Telemetry, VipOp};
use crate::net::{Gratuitous, Netlink, Vip, VipManager};

/// A burst of gratuitous ARPs (IPv4) or unsolicited NAs (IPv6).
pub struct Announcement {
    /// Instance name (logs, metrics).
    pub instance: String,
    /// Interface index to send on.
    pub ifindex: u32,
    /// Addresses to announce.
    pub addresses: Vec<IpAddr>,
    /// Packets per address.
    pub repeat: u32,
}

/// A point in a takeover, reported back once every command before it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    /// The VIPs are bound.
    Bound,
    /// The first gratuitous ARP / unsolicited NA is sent.
    Announced,
}

enum Command {
    Add(String, Vec<Vip>),
    Milestone(String, Milestone),
    Remove(String, Vec<Vip>),
    Forget(Vec<Vip>),
    Announce(Announcement),
    Flush(oneshot::Sender<()>),
}

/// Handle of the VIP worker task.
#[derive(Clone)]
pub struct VipWorker {
    tx: mpsc::UnboundedSender<Command>,
}

impl VipWorker {
    /// Start the worker on a thread of its own (named `vip-worker`, in the calling thread's
    /// network namespace), with its own netlink connection for `manager`'s record and its own
    /// socket for gratuitous ARP / NA. Milestones go to `milestones` with the instant they
    /// were reached.
    pub async fn spawn(
        manager: &VipManager,
        telemetry: Telemetry,
        milestones: mpsc::UnboundedSender<(String, Milestone, std::time::Instant)>,
    ) -> Result<Self, crate::Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let manager = manager.clone();
        std::thread::Builder::new()
            .name("vip-worker".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(crate::Error::io("starting the VIP worker", e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    let opened = Netlink::new().and_then(|nl| {
                        let garp = Gratuitous::new(nl.clone())?;
                        Ok((manager.with_netlink(nl), garp))
                    });
                    match opened {
                        Ok((manager, garp)) => {
                            let _ = ready_tx.send(Ok(()));
                            serve(rx, manager, garp, telemetry, milestones).await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| crate::Error::io("starting the VIP worker thread", e))?;
        match ready_rx.await {
            Ok(Ok(())) => Ok(Self { tx }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(crate::Error::io(
                "starting the VIP worker",
                std::io::Error::other("the worker thread ended at start"),
            )),
        }
    }

    /// Bind `vips` for `instance` (after earlier commands).
    pub fn add(&self, instance: &str, vips: Vec<Vip>) {
        let _ = self.tx.send(Command::Add(instance.to_owned(), vips));
    }

    /// Remove `vips` of `instance` (after earlier commands).
    pub fn remove(&self, instance: &str, vips: Vec<Vip>) {
        let _ = self.tx.send(Command::Remove(instance.to_owned(), vips));
    }

    /// Take `vips` of `instance` out of the VIP record without removing them (another agent on
    /// this host took them over); after earlier commands.
    pub fn forget(&self, instance: &str, vips: Vec<Vip>) {
        tracing::debug!(instance, count = vips.len(), "forgetting handed-over VIPs");
        let _ = self.tx.send(Command::Forget(vips));
    }

    /// Send gratuitous ARP / NA (after earlier commands, so after the VIPs are bound).
    pub fn announce(&self, a: Announcement) {
        let _ = self.tx.send(Command::Announce(a));
    }

    /// Report `m` for `instance` once every command sent before this call is done.
    pub fn milestone(&self, instance: &str, m: Milestone) {
        let _ = self.tx.send(Command::Milestone(instance.to_owned(), m));
    }

    /// Wait until every command sent before this call is done.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// The worker's loop: one command at a time, in order, until every sender is gone.
async fn serve(
    mut rx: mpsc::UnboundedReceiver<Command>,
    manager: VipManager,
    garp: Gratuitous,
    telemetry: Telemetry,
    milestones: mpsc::UnboundedSender<(String, Milestone, std::time::Instant)>,
) {
    let mut write_failures = 0;
    while let Some(cmd) = rx.recv().await {
        let writes = matches!(
            cmd,
            Command::Add(..) | Command::Remove(..) | Command::Forget(..)
        );
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
            Command::Forget(vips) => {
                if let Err(e) = manager.forget(&vips).await {
                    tracing::warn!(error = %e, "cannot take handed-over VIPs out of the VIP record");
                }
            }
            Command::Announce(a) => announce(&garp, a, &telemetry).await,
            Command::Milestone(instance, m) => {
                let _ = milestones.send((instance, m, std::time::Instant::now()));
            }
            Command::Flush(done) => {
                let _ = done.send(());
            }
        }
        if writes {
            let now = manager.record_write_failures();
            if now > write_failures {
                telemetry
                    .metrics()
                    .state_write_failed("vip_record", now - write_failures);
                write_failures = now;
            }
        }
    }
}

async fn announce(garp: &Gratuitous, a: Announcement, telemetry: &Telemetry) {
    match garp
        .send_gratuitous(a.ifindex, &a.addresses, a.repeat)
        .await
    {
        Ok(n) => {
            let n = n as u64;
            let v6 = a.addresses.first().is_some_and(IpAddr::is_ipv6);
            if v6 {
                telemetry.metrics().na_sent(&a.instance, n);
            } else {
                telemetry.metrics().garp_sent(&a.instance, n);
            }
            tracing::debug!(instance = %a.instance, sent = n, "gratuitous announcements sent");
        }
        Err(e) => {
            tracing::warn!(instance = %a.instance, error = %e, "cannot send gratuitous ARP/NA")
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
