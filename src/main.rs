//! The `roost` binary: parse the CLI, run the chosen command.

use clap::Parser;
use roost::config::{Cli, Command};

// The server allocates small buffers on every request from several threads;
// glibc's allocator spent a sixth of the CPU time there under load. Actor
// threads use the system allocator (see `roost::alloc`).
#[global_allocator]
static ALLOCATOR: roost::alloc::RoostAlloc = roost::alloc::RoostAlloc;

fn main() -> anyhow::Result<()> {
    // Before the runtime starts its threads (see the function).
    roost::alloc::use_one_system_arena();
    let command = Cli::parse().command;
    // The benchmark pins and unpins workers per row itself; the dev
    // cluster shares the machine between several servers.
    let pin = match &command {
        Command::Serve(args) => args.pin_workers,
        Command::Dev(_) | Command::Bench(_) => false,
    };
    let runtime = roost::placement::runtime(pin)?;
    runtime.block_on(async move {
        match command {
            Command::Serve(args) => roost::server::run(*args).await,
            Command::Dev(args) => roost::dev::run(args).await,
            Command::Bench(args) => roost::bench::run(args).await,
        }
    })
}
