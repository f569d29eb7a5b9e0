//! `kube-vrrp-agent` entry point: parses the command line and hands over to the mode.

use clap::Parser;

use agent::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(_) | Command::Standalone(_) | Command::Convert(_) => {
            eprintln!("kube-vrrp-agent: this command is not available yet in this build");
            std::process::ExitCode::from(2)
        }
    }
}
