//! What a mode plugs into the daemon besides its configuration: the sources and sinks that
//! differ between `run` and `standalone`. Defined here, implemented by the mode's side
//! (the `kube` module, for `run`); standalone plugs in none of them.
//!
//! - Sources: [`PodsReady`] counts for `track.pods` trackers, on a channel.
//! - Sinks: `VRRPNode.status` snapshots on a watch channel, transitions through a
//!   [`TransitionSink`].
//!
//! What both modes share is the daemon's own: the desired configuration arrives on the watch
//! channel given to [`super::Daemon::run`]; script, process, file and interface trackers,
//! notify scripts, metrics and `/status` run inside the daemon.

use std::sync::Arc;

use crds::VRRPNodeStatus;
use crds::vrrpnode::{ObjectRef, VrrpState};
use tokio::sync::{mpsc, watch};

/// A pods tracker's current count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodsReady {
    /// Tracker name.
    pub tracker: String,
    /// Ready pods matching the selector on this node.
    pub ready: u32,
}

/// Where the daemon reports state transitions of instances that belong to a VirtualIP
/// (in-cluster: Events on the VirtualIP).
pub trait TransitionSink: Send + Sync {
    /// An instance of `vip` entered `to` because of `reason`. Called from the protocol loop:
    /// it must return at once (do any I/O in a task of its own) and never fail.
    fn transition(&self, vip: &ObjectRef, to: VrrpState, reason: &str);
}

/// Optional sources and sinks (all `None` standalone).
#[derive(Default)]
pub struct Hooks {
    /// Status snapshots for `VRRPNode.status`.
    pub status: Option<watch::Sender<VRRPNodeStatus>>,
    /// Transitions of VirtualIP instances.
    pub events: Option<Arc<dyn TransitionSink>>,
    /// Pod tracker counts.
    pub pods: Option<mpsc::Receiver<PodsReady>>,
}
