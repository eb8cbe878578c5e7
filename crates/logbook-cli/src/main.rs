//! `logbook`: the thin binary. Parses arguments, builds the runtime, calls the library, maps errors to exit
//! codes: 0 success, 1 the server or store refused or failed, 2 usage error, 3 the server is unreachable.

mod client;
mod commands;
mod config;
mod output;

use clap::Parser;
use std::process::ExitCode;

/// mimalloc: ingest and indexing allocate many small objects; it measured faster than the system allocator
/// (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = config::Cli::parse();
    config::init_logging(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            let unreachable = error
                .chain()
                .any(|cause| cause.downcast_ref::<client::Unreachable>().is_some());
            ExitCode::from(if unreachable { 3 } else { 1 })
        }
    }
}
