//! The `roost` binary: parse the CLI, run the chosen command.

use clap::Parser;
use roost::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(args) => roost::server::run(args).await,
        Command::Dev(args) => roost::dev::run(args).await,
        Command::Bench(args) => roost::bench::run(args).await,
    }
}
