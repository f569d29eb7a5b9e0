//! `kube-vrrp-agent` entry point: parses the command line and hands over to the mode.

use clap::Parser;

use agent::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Convert(args) => {
            let out = agent::convert::run(&args);
            print!("{}", out.stdout);
            eprint!("{}", out.stderr);
            if out.success {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(1)
            }
        }
        Command::Run(_) | Command::Standalone(_) => {
            eprintln!("kube-vrrp-agent: this command is not available yet in this build");
            std::process::ExitCode::from(2)
        }
    }
}
