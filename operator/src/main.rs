//! `kube-vrrp-operator` entry point: `crd` prints the CRDs, `run` runs the operator.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use operator::Error;
use operator::controller::{self, Settings};
use operator::leader::{self, LeaseSettings};
use operator::metrics::{self, Metrics};
use tracing::{error, info};

/// kube-vrrp operator.
#[derive(Debug, Parser)]
#[command(
    name = "kube-vrrp-operator",
    version,
    about = "kube-vrrp operator: VirtualIPs + Nodes → VRRPNodes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions (VirtualIP, VRRPNode, VirtualIPPool) as YAML.
    Crd,
    /// Run the operator (leader-elected) against the cluster.
    Run(RunArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Address serving /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Namespace of the leader-election Lease and of the agents' liveness Leases (default: the
    /// client's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "kube-vrrp-operator")]
    lease_name: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// VirtualIPs reconciled at the same time. A reconcile mostly waits on the API server (its
    /// finalizer and status writes); the planner applies the VRRPNodes on a task of its own.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// Requests per second the API client may start. A new VirtualIP costs about two writes
    /// (finalizer, status) plus its share of the VRRPNode writes: at 20, 1000 VirtualIPs took
    /// 121 s to all have status on a real API server; at 100, 35 s after the last was created
    /// (tests/bench/RESULTS.md, operator-scale-bench).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    api_qps: u64,
    /// Read Secrets only in this namespace (repeatable; default: all namespaces). Needed when
    /// the operator may not list Secrets cluster-wide.
    #[arg(long = "secret-namespace", value_name = "NS")]
    secret_namespaces: Vec<String>,
    /// Serve Services of type LoadBalancer with `spec.loadBalancerClass: kubevrrp.io/vrrp`
    /// (addresses from VirtualIPPools). `--load-balancer=false` turns it off.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    load_balancer: bool,
    /// Also serve Services of type LoadBalancer that have no `spec.loadBalancerClass`.
    #[arg(long)]
    load_balancer_default_class: bool,
    /// Let VirtualIPs carry commands (track.scripts, notify, syncGroupNotify), which the
    /// agents run as root on their nodes. Off: such VirtualIPs are refused with the condition
    /// reason ScriptsNotAllowed and deployed nowhere.
    #[arg(long, env = "KUBE_VRRP_SCRIPTS_ALLOWED", default_value_t = false, action = clap::ArgAction::Set)]
    scripts_allowed: bool,
    /// With --scripts-allowed: only VirtualIPs in these namespaces may carry commands
    /// (comma-separated or repeated; default: any namespace).
    #[arg(
        long = "scripts-allowed-namespace",
        value_name = "NS",
        value_delimiter = ','
    )]
    scripts_allowed_namespaces: Vec<String>,
    /// With --scripts-allowed: commands must run one of these programs directly, no shell
    /// syntax (absolute paths; an entry ending in / allows that directory; comma-separated or
    /// repeated; default: any command).
    #[arg(
        long = "scripts-allowed-path",
        value_name = "PATH",
        value_delimiter = ','
    )]
    scripts_allowed_paths: Vec<String>,
    /// Lease holder identity (the pod name). Default outside a pod: the host name plus a
    /// random suffix.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match crds::crd_yaml() {
            Ok(yaml) => {
                if std::io::stdout().write_all(yaml.as_bytes()).is_err() {
                    return std::process::ExitCode::FAILURE;
                }
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kube-vrrp-operator: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            init_logging(args.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("kube-vrrp-operator: cannot start the async runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(args)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    // Once, through the log (set up above).
                    error!(error = %e, "operator failed");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files and pipes get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(args: RunArgs) -> Result<(), Error> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| Error::Config(e.to_string()))?;
    let mut config = config;
    // A request that hangs (a half-dead connection) fails instead of blocking a reconcile.
    config.read_timeout = Some(operator::controller::API_READ_TIMEOUT);
    config.reset_reader_on_write = true;
    // kube's default retry honours Retry-After and grows to 1000 s over 15 attempts: right
    // after an API server restart the CRD endpoints answer 503 with Retry-After, and each
    // watch then slept 5 s inside one request. Every caller here retries on its own short
    // backoff (watches, reconcile requeues), so requests fail fast instead.
    config.default_retry = false;
    let default_ns = config.default_namespace.clone();
    // kube's client stack on connections the stall watchdog sees and can drop.
    let live = apiclient::conn::Liveness::new();
    // Client-side rate limit on request starts (watches count once, when opened).
    let client = apiclient::stack::client_builder(&config, live.clone())
        .map_err(|e| Error::Config(e.to_string()))?
        .with_layer(&tower::limit::RateLimitLayer::new(
            args.api_qps,
            Duration::from_secs(1),
        ))
        .build();

    let metrics = Arc::new(Metrics::new());
    // A silent API (no data for 1.5 s, GET /version unanswered for 3 s) drops every API
    // connection, makes /readyz say not ready and, once it answers, the controller re-list.
    let (stall_tx, mut stall_rx) = tokio::sync::watch::channel(Default::default());
    let api_status = stall_rx.clone();
    tokio::spawn(apiclient::watchdog::run(
        client.clone(),
        live,
        apiclient::watchdog::WatchdogSettings::default(),
        stall_tx,
    ));
    let stall_metrics = metrics.clone();
    tokio::spawn(async move {
        while stall_rx.changed().await.is_ok() {
            let stalled = stall_rx.borrow_and_update().stalled;
            stall_metrics.set_api_stalled(stalled);
        }
    });
    let server = tokio::spawn(metrics::serve(args.metrics_addr, metrics.clone()));
    info!(addr = %args.metrics_addr, "serving /metrics, /healthz, /readyz");

    // In a pod the chart sets POD_NAME; elsewhere (a developer's machine, a test) the host
    // name with a random suffix keeps two operators on one host apart.
    let identity = match args.identity.filter(|i| !i.is_empty()) {
        Some(i) => i,
        None => {
            let id = leader::default_identity(leader::host_name().as_deref(), leader::random_u64());
            info!(identity = %id, "no --identity or POD_NAME: using the host name with a random suffix as the lease identity");
            id
        }
    };
    let namespace = args.lease_namespace.unwrap_or(default_ns);
    let lease = LeaseSettings {
        namespace: namespace.clone(),
        name: args.lease_name,
        identity: identity.clone(),
        duration_secs: 15,
        grace_secs: 5,
    };
    let load_balancer = args
        .load_balancer
        .then(|| operator::loadbalancer::LbSettings {
            default_class: args.load_balancer_default_class,
            namespace: namespace.clone(),
            ..Default::default()
        });
    let settings = Settings {
        reporter_instance: Some(identity),
        secret_namespaces: args.secret_namespaces,
        agent_lease_namespace: namespace,
        load_balancer,
        script_policy: crds::policy::ScriptPolicy {
            allowed: args.scripts_allowed,
            namespaces: args.scripts_allowed_namespaces,
            paths: args.scripts_allowed_paths,
        },
        api_status: Some(api_status),
        ..Settings::default()
    };
    info!(
        allowed = settings.script_policy.allowed,
        namespaces = ?settings.script_policy.namespaces,
        paths = ?settings.script_policy.paths,
        "script policy"
    );
    let concurrency = args.concurrency;
    let ctl_client = client.clone();
    let ctl_metrics = metrics.clone();
    let leading = leader::run_while_leader(client, lease, metrics, shutdown_signal(), move || {
        controller::run(
            ctl_client.clone(),
            ctl_metrics.clone(),
            settings.clone(),
            concurrency,
        )
    });
    tokio::select! {
        res = leading => res,
        res = server => match res {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(Error::Watch(format!("metrics server task failed: {e}"))),
        },
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
