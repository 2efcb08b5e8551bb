//! The scale suite, in process and without HTTP: create many tiny durable
//! actors (one counter increment each), then measure what a host of that
//! size costs — disk bytes per actor, random access through a bounded
//! open-actor cache (ops/s, p99, cold opens apart from cache hits), the
//! memory an open idle actor keeps, and whether WAL files stay bounded
//! under sustained writes.
//!
//! Each phase opens its own engine (over the created actors' data dir; the
//! WAL phase over a dir of its own), so every phase starts with nothing
//! open; phases after the creation report a failure instead of losing the
//! figures already measured.

mod access;
mod create;
pub(super) mod memory;
mod report;
mod wal;

use anyhow::{ensure, Context};
use std::path::Path;
use std::time::{Duration, Instant};

use super::fixture::ScratchDir;
use super::{progress, BenchArgs, Finished};
use crate::{ActorId, Durability, EngineConfig};
use report::Report;

/// Actors of a full run. The million takes about an hour to create
/// on a 2-core VM (15 fsyncs per create) and longer to delete, so it is a
/// `--scale-actors 1000000` run, not the default.
const DEFAULT_ACTORS: usize = 20_000;
/// The counter every actor holds; creation sets it to 1.
const COUNTER: &str = "n";
/// Creates in flight at once: each is a thread, a file and several fsyncs.
const IN_FLIGHT: usize = 64;
/// `max_open_actors` while creating: enough for every create in flight, and
/// few enough that the memory of the threads still open at the end is soon
/// reused (it would hide in the idle-memory phase that follows).
const CREATE_CACHE: usize = 2 * IN_FLIGHT;
/// Threads calling the engine during random access.
const CALLERS: usize = 8;
/// One op in this many during random access is a write (the rest read).
const WRITE_EVERY: usize = 4;
/// Idle actors stay open for the whole run unless the cache evicts them.
const IDLE_TIMEOUT_MS: u64 = 3_600_000;
/// File descriptors kept free for everything but open actors.
const SPARE_FDS: u64 = 1_024;
/// Descriptors one open actor may hold (its database and its WAL).
const FDS_PER_ACTOR: u64 = 2;

/// The settings one run uses, resolved from the flags.
#[derive(Debug, Clone, Copy)]
struct Plan {
    actors: usize,
    /// `max_open_actors` during random access.
    cache: usize,
    /// Length of the random-access window and of the WAL window.
    window: Duration,
    /// Actors opened one at a time by a single caller.
    probe: usize,
    /// Actors opened and left idle to measure memory.
    idle: usize,
}

impl Plan {
    fn from_args(args: &BenchArgs) -> anyhow::Result<Self> {
        let seconds = args.seconds.unwrap_or(if args.quick { 2 } else { 20 });
        ensure!(seconds > 0, "--seconds must be at least 1");
        let actors = args
            .scale_actors
            .unwrap_or(if args.quick { 1_000 } else { DEFAULT_ACTORS });
        ensure!(actors >= 2, "--scale-actors must be at least 2");
        let cache = args
            .scale_open
            .unwrap_or(if args.quick { 250 } else { 5_000 });
        ensure!(cache > 0, "--scale-open must be at least 1");
        let plan = Plan {
            actors,
            cache,
            window: Duration::from_secs(seconds),
            probe: actors.min(if args.quick { 200 } else { 2_000 }),
            idle: actors.min(if args.quick { 500 } else { 5_000 }),
        };
        let needed = plan.cache.max(plan.idle) as u64 * FDS_PER_ACTOR + SPARE_FDS;
        let available = open_file_limit();
        ensure!(
            needed <= available,
            "{} open actors need about {needed} file descriptors, but the limit is {available}: \
             lower --scale-open",
            plan.cache.max(plan.idle)
        );
        Ok(plan)
    }
}

/// Raises the soft limit on open files to the hard one; returns it.
fn open_file_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1_024)
}

/// Checks the flags this suite reads.
pub(super) fn check_args(args: &BenchArgs) -> anyhow::Result<()> {
    Plan::from_args(args).map(drop)
}

/// Runs every phase on a blocking thread and renders the report.
pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<Finished> {
    let plan = Plan::from_args(args)?;
    let started = super::report::utc_now();
    let (report, dir) = tokio::task::spawn_blocking(move || measure(plan, started))
        .await
        .context("the scale suite panicked")??;
    let failure = report
        .first_failure()
        .map(|err| anyhow::anyhow!("scale suite: {err}"));
    Ok(Finished {
        report: report.render(),
        failure,
        leftover: Some(dir),
    })
}

/// The report, and the data dir to remove once it is written.
fn measure(plan: Plan, started: String) -> anyhow::Result<(Report, ScratchDir)> {
    let dir = ScratchDir::new("scale")?;
    progress(&format!("creating {} actors", plan.actors));
    let creation = create::create(dir.path(), &plan).context("creating the actors")?;
    let disk = create::disk_usage(dir.path()).context("measuring the data dir")?;
    // Before the probe, whose many threads would leave memory to reuse.
    progress(&format!("{} idle open actors", plan.idle));
    let resident = memory::resident(dir.path(), &plan).map_err(|err| format!("{err:#}"));
    progress("cold opens by one caller");
    let probe = access::probe(dir.path(), &plan).map_err(|err| format!("{err:#}"));
    progress("random access");
    let access = access::random_access(dir.path(), &plan).map_err(|err| format!("{err:#}"));
    progress("sustained writes, WAL sizes");
    let wal = wal::sustained(plan.window).map_err(|err| format!("{err:#}"));
    let report = Report {
        started,
        plan,
        creation,
        disk,
        probe,
        resident,
        access,
        wal,
    };
    Ok((report, dir))
}

/// The engine settings of every phase over the scale data dir.
fn config(dir: &Path, max_open_actors: usize) -> EngineConfig {
    EngineConfig {
        data_dir: dir.to_path_buf(),
        durability: Durability::Durable,
        max_open_actors,
        idle_timeout_ms: IDLE_TIMEOUT_MS,
        ..Default::default()
    }
}

/// The `i`th actor of the run.
fn actor(i: usize) -> anyhow::Result<ActorId> {
    Ok(ActorId::parse(&format!("scale-{i}"))?)
}

/// Shuts `engine` down, failing if it takes longer than `timeout`.
fn shut_down(engine: crate::Engine, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    ensure!(
        engine.shutdown(timeout),
        "the engine did not shut down within {} s",
        timeout.as_secs()
    );
    Ok(started.elapsed())
}
