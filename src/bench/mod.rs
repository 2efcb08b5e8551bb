//! `roost bench`: measures roost against baselines run in the same process,
//! prints a markdown report and appends it to `bench/RESULTS.md`.
//!
//! Every HTTP scenario is a server on `127.0.0.1:0` driven by an in-process
//! load generator ([`load`]): clients that each keep one connection and
//! loop requests for a measured window after a 1 s warm-up. Suites include
//! [`counters`] (counter increments against a bare axum handler, a naive
//! SQLite handler and Redis, then opening cold actors), [`group_commit`] and
//! [`engine`] (in process, against hand-written libSQL), [`ratelimit`]
//! (rate-limit decisions against a bare axum handler and Redis INCR +
//! PEXPIRE), [`realtime`] (WebSocket fan-out against a bare broadcast relay)
//! and [`scale`] (many actors: creation, disk and memory per actor, random
//! access through the bounded cache, WAL sizes).

mod cold_open;
mod counters;
mod engine;
mod fixture;
mod group_commit;
mod load;
mod ratelimit;
mod realtime;
mod redis;
mod report;
mod scale;
mod wire;

use anyhow::Context;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Unmeasured load before each scenario's measured window.
const WARM_UP: Duration = Duration::from_secs(1);
/// Warm-up before every interleaved round after the first (connections
/// are new each round; the servers are already warm).
const ROUND_WARM_UP: Duration = Duration::from_millis(200);
/// Other processes using this many cores make a scenario's numbers suspect.
const NOISY_CORES: f64 = 0.25;

/// Flags of `roost bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Which scenarios to run (all by default, so `--quick` smoke-tests both).
    #[arg(long, value_enum, default_value_t = Suite::All)]
    pub suite: Suite,
    /// Short run: 3 s per counter scenario and 500 cold actors, 1 s per
    /// group-commit row, 0.3 s per engine row, 2 s per rate-limit scenario.
    #[arg(long)]
    pub quick: bool,
    /// Pin the runtime's workers, one per core, as `roost serve` does by
    /// default; rows measuring Redis (another process) let them float.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub pin_workers: bool,
    /// Measured seconds per scenario, after a 1 s warm-up [default: 10, or
    /// 3 (counters) and 2 (ratelimit) with --quick; engine rows: 2 s after
    /// 0.5 s, or 0.3 s after 0.2 s with --quick].
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Concurrent clients of the counter scenarios, each with its own
    /// keep-alive connection (the rate-limit suite runs 8 and 64).
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Redis to compare rate limiting with [default: a redis-server from
    /// PATH, started on a free loopback port and stopped afterwards]. The
    /// counter suite always starts its own, to choose its persistence.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Markdown file the dated report is appended to.
    #[arg(long, default_value = "bench/RESULTS.md")]
    pub out: PathBuf,
    /// Print the report without appending it to `--out`.
    #[arg(long)]
    pub no_write: bool,
    /// Actors the scale suite creates [default: 20,000, or 1,000 with
    /// --quick; the scenario is 1,000,000].
    #[arg(long)]
    pub scale_actors: Option<usize>,
    /// Most actors the scale suite keeps open during random access
    /// [default: 5,000, or 250 with --quick].
    #[arg(long)]
    pub scale_open: Option<usize>,
}

/// A set of scenarios with its own report section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    /// Counter increments over HTTP at each durability, and cold opens.
    Counters,
    /// Durable increments in process from 1 and 64 writers, against an
    /// fsync per write.
    GroupCommit,
    /// Each engine operation in process at each durability, against
    /// hand-written libSQL.
    Engine,
    /// Rate-limit decisions over HTTP and in process, against Redis.
    Ratelimit,
    /// WebSocket fan-out through actor rooms, against a bare broadcast relay.
    Realtime,
    /// Many tiny actors: creation, disk and memory per actor, random
    /// access through the bounded cache, WAL sizes.
    Scale,
    /// Every suite, in this order.
    All,
}

impl Suite {
    fn parts(self) -> &'static [Part] {
        match self {
            Suite::Counters => &[Part::Counters],
            Suite::GroupCommit => &[Part::GroupCommit],
            Suite::Engine => &[Part::Engine],
            Suite::Ratelimit => &[Part::Ratelimit],
            Suite::Realtime => &[Part::Realtime],
            Suite::Scale => &[Part::Scale],
            Suite::All => &[
                Part::Counters,
                Part::GroupCommit,
                Part::Engine,
                Part::Ratelimit,
                Part::Realtime,
                Part::Scale,
            ],
        }
    }
}

/// One suite that runs and reports on its own.
#[derive(Debug, Clone, Copy)]
enum Part {
    Counters,
    GroupCommit,
    Engine,
    Ratelimit,
    Realtime,
    Scale,
}

/// A suite's rendered report and, if part of it failed after the rest was
/// measured, why.
struct Finished {
    report: String,
    failure: Option<anyhow::Error>,
    /// Files removed only once the report is out: deleting a million
    /// actors takes longer than measuring them.
    leftover: Option<fixture::ScratchDir>,
}

impl Finished {
    fn new(report: String, failure: Option<anyhow::Error>) -> Self {
        Finished {
            report,
            failure,
            leftover: None,
        }
    }
}

/// Runs the chosen suites; prints each report and appends it to `--out`.
/// A failed suite does not stop the next; the first failure is returned.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let parts = args.suite.parts();
    for part in parts {
        match part {
            Part::Counters => counters::check_args(&args)?,
            Part::GroupCommit => group_commit::check_args(&args)?,
            Part::Engine => engine::check_args(&args)?,
            Part::Ratelimit => ratelimit::check_args(&args)?,
            Part::Realtime => realtime::check_args(&args)?,
            Part::Scale => scale::check_args(&args)?,
        }
    }
    // SQLite takes its process-wide memory settings (see `store::vfs`) only
    // before it starts. `roost serve` opens its engine first; here a
    // baseline's own libSQL connection would start SQLite first, and every
    // actor connection of the later suites would get SQLite's default
    // lookaside (about 30 KiB more per idle actor). Settle them now.
    crate::store::vfs::register();
    if let Err(err) = crate::placement::pin_workers(args.pin_workers) {
        // The reports' runtime line says how the workers ran.
        eprintln!("bench: could not pin the runtime's workers: {err}");
    }
    let mut failures = Vec::new();
    for part in parts {
        let finished = match part {
            Part::Counters => counters::run(&args).await,
            Part::GroupCommit => group_commit::run(&args).await,
            Part::Engine => engine::run(&args).await,
            Part::Ratelimit => ratelimit::run(&args).await,
            Part::Realtime => realtime::run(&args).await,
            Part::Scale => scale::run(&args).await,
        };
        match finished {
            Ok(finished) => {
                println!("{}", finished.report);
                if !args.no_write {
                    report::append_report(&args.out, &finished.report)
                        .with_context(|| format!("writing {}", args.out.display()))?;
                    eprintln!("appended to {}", args.out.display());
                }
                failures.extend(finished.failure);
                if let Some(dir) = finished.leftover {
                    eprintln!(
                        "bench: removing {} (interrupting leaves it behind)",
                        dir.path().display()
                    );
                    let cleanup = std::time::Instant::now();
                    drop(dir);
                    eprintln!(
                        "bench: removed it in {:.1} s",
                        cleanup.elapsed().as_secs_f64()
                    );
                }
            }
            Err(err) => failures.push(err),
        }
    }
    let mut failures = failures.into_iter();
    match failures.next() {
        None => Ok(()),
        Some(first) => {
            for later in failures {
                eprintln!("bench: another failure: {later:#}");
            }
            Err(first)
        }
    }
}

fn progress(scenario: &str) {
    eprintln!("bench: {scenario}...");
}
