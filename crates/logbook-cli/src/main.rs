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

/// Turns transparent huge pages off for this process. mimalloc asks for them (`MADV_HUGEPAGE`) on its
/// arenas; each then counts 2 MiB resident however little of it is used, and is zeroed whole when touched
/// again after a purge. Without them the 1M benchmark's peak RSS was 590/606 MB instead of 676/704, for the
/// same ingest CPU per event (BENCHMARKS.md). Failing to set it (an old kernel) changes nothing else.
fn small_pages_only() {
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

fn main() -> ExitCode {
    small_pages_only();
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
