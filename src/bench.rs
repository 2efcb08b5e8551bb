//! `roost bench` (in progress).
use clap::Args;
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {}
pub async fn run(_args: BenchArgs) -> anyhow::Result<()> { Ok(()) }
