//! `kube-vrrp-agent` entry point: parses the command line and hands over to the mode.

use std::process::ExitCode;

use clap::Parser;

use agent::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Convert(args) => {
            let out = agent::convert::run(&args);
            print!("{}", out.stdout);
            eprint!("{}", out.stderr);
            if out.success {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Command::Run(args) => block_on(agent::modes::run(args)),
        Command::Standalone(args) => block_on(agent::modes::standalone(args)),
        Command::Demo(args) => ExitCode::from(agent::demo::main(args)),
    }
}

fn block_on(fut: impl std::future::Future<Output = Result<(), agent::Error>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kube-vrrp-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Once: through the log when the mode set it up, else plainly on stderr.
            if tracing::dispatcher::has_been_set() {
                tracing::error!("{e}");
            } else {
                eprintln!("kube-vrrp-agent: {e}");
            }
            ExitCode::FAILURE
        }
    }
}
