//! `kube-vrrp-operator` entry point.

use std::io::Write;

use clap::{Parser, Subcommand};

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
    /// Print the CustomResourceDefinitions (VirtualIP, VRRPNode) as YAML.
    Crd,
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
    }
}
