//! Command-line interface of `kube-vrrp-agent` (clap), shared by the binary and tests.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// kube-vrrp node agent.
#[derive(Debug, Parser)]
#[command(
    name = "kube-vrrp-agent",
    version,
    about = "kube-vrrp node agent: VRRP (keepalived-compatible) on this node"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run in a cluster: follow this node's VRRPNode and report live state.
    Run(RunArgs),
    /// Run the VRRP instances of a keepalived.conf with no cluster.
    Standalone(StandaloneArgs),
    /// Convert a keepalived.conf to VirtualIP YAML on stdout.
    Convert(ConvertArgs),
    /// Build a throw-away 3-host network in network namespaces and show failover live (root).
    Demo(DemoArgs),
}

/// Options shared by both long-running modes.
#[derive(Debug, clap::Args, Clone)]
pub struct CommonArgs {
    /// Directory for the record of VIPs this agent added (and, in-cluster, the cached config).
    #[arg(
        long,
        default_value = "/var/lib/kube-vrrp",
        env = "KUBE_VRRP_STATE_DIR"
    )]
    pub state_dir: PathBuf,
    /// Serve /metrics, /healthz, /readyz and /status here (e.g. 0.0.0.0:9741). Off when unset.
    #[arg(long, env = "KUBE_VRRP_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Listen on this address instead of the one in --metrics-addr (same port), e.g. the
    /// node's InternalIP, which the chart passes from `status.hostIP`.
    #[arg(long, env = "KUBE_VRRP_METRICS_HOST", requires = "metrics_addr")]
    pub metrics_host: Option<std::net::IpAddr>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "KUBE_VRRP_LOG_FORMAT")]
    pub log_format: LogFormat,
}

impl CommonArgs {
    /// Where the HTTP endpoints listen: --metrics-addr, with its address replaced by
    /// --metrics-host when given.
    pub fn metrics_listen(&self) -> Option<SocketAddr> {
        self.metrics_addr.map(|a| match self.metrics_host {
            Some(h) => SocketAddr::new(h, a.port()),
            None => a,
        })
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// `run` options.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// This node's name (the VRRPNode to follow).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Namespace of this agent's liveness Lease (the release namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-vrrp")]
    pub lease_namespace: String,
    /// How often the liveness Lease is renewed, in seconds.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub lease_renew_seconds: u64,
    /// The liveness Lease's duration in seconds: the operator stops counting this agent's
    /// MASTER claim against contrary evidence after half of it, and its reports after all of it.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=300))]
    pub lease_duration_seconds: u64,
    /// Run the commands VRRPNode instances carry (track.scripts, notify, syncGroupNotify), as
    /// root or as their `user`. Off: an instance with a command is not run at all and an error
    /// is logged. Defence in depth behind the operator's script policy; the chart sets it from
    /// `agent.scripts.allowed`. Standalone mode always runs its file's scripts.
    #[arg(long, env = "KUBE_VRRP_ALLOW_SCRIPTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_scripts: bool,
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `standalone` options.
#[derive(Debug, clap::Args)]
pub struct StandaloneArgs {
    /// What to run: a keepalived.conf, or VirtualIP YAML (one or more documents, with Secrets
    /// for passwords); the format is told by the content.
    #[arg(long, short = 'f')]
    pub config: PathBuf,
    /// This node's name: selects the `spec.nodes` overrides of VirtualIP YAML, so one file
    /// serves every node (default: the host name, which is also kubeadm's node name).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `convert` options.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// keepalived.conf to convert; several files are one cluster's per-node configurations,
    /// merged into one VirtualIP per virtual router.
    #[arg(required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// With one file: make node-specific values (priority, state, unicast_src_ip) overrides
    /// for this node instead of defaults.
    #[arg(long, conflicts_with = "node_names")]
    pub node: Option<String>,
    /// The Kubernetes node name of each file, in order, comma-separated (default: each file's
    /// `global_defs router_id`, else its file name without extension).
    #[arg(long, value_delimiter = ',')]
    pub node_names: Vec<String>,
    /// Namespace for the generated objects (default: none, so `kubectl apply -n NS -f` puts
    /// them in NS).
    #[arg(long)]
    pub namespace: Option<String>,
}

/// `demo` options.
#[derive(Debug, clap::Args, Clone, Copy, Default)]
pub struct DemoArgs {
    /// Run real keepalived as node-c (needs the `keepalived` binary) to show interop.
    #[arg(long)]
    pub keepalived: bool,
    /// No ANSI colours even on a terminal.
    #[arg(long)]
    pub no_color: bool,
    /// VRRPv3 with 100 ms adverts: the whole demo takes about 15 s.
    #[arg(long)]
    pub fast: bool,
}
