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

/// Run the mode on a worker thread of a two-worker runtime. Not on the calling thread (as
/// `block_on` alone would): there every packet batch a receive task hands to the protocol
/// loop would be a wake-up across threads; on a worker, the woken loop usually runs next on
/// the waking thread.
fn block_on(
    fut: impl std::future::Future<Output = Result<(), agent::Error>> + Send + 'static,
) -> ExitCode {
    agent::daemon::heap::limit_arenas();
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
    let result = runtime.block_on(async {
        match tokio::spawn(fut).await {
            Ok(r) => r,
            Err(e) => Err(agent::Error::Config(format!(
                "the agent's main task failed: {e}"
            ))),
        }
    });
    match result {
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
