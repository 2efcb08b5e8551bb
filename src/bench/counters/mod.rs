//! The counter suite: one counter incremented over HTTP by roost at each
//! durability, against a bare axum handler (the HTTP ceiling), a naive
//! SQLite handler that fsyncs once per request (what group commit is
//! measured against) and Redis `INCR` with and without an fsync per write,
//! then the in-process cold-open scenario.

mod report;
mod scenarios;
mod targets;

use anyhow::{ensure, Context};
use std::time::Duration;

use super::cold_open::cold_open;
use super::load::Load;
use super::redis::Persistence;
use super::report::CountCheck;
use super::{progress, BenchArgs, Finished};
use crate::Durability;
use report::Report;

/// Actors in the many-actor scenario.
const SPREAD_ACTORS: usize = 1_000;
/// Names of the rows the ratios and targets divide by.
const BARE_AXUM: &str = "bare axum";
const NAIVE_SQLITE: &str = "naive sqlite";
const REDIS_PLAIN: &str = "Redis INCR, no persistence";
const REDIS_FSYNC: &str = "Redis INCR, appendfsync always";
const DURABLE_ONE: &str = "roost durable, 1 actor";
const BUFFERED_ONE: &str = "roost buffered, 1 actor";
const DURABLE_SPREAD: &str = "roost durable, 1,000 actors";
const MEMORY_ONE: &str = "roost memory, 1 actor";

/// The settings one run uses, resolved from the flags.
#[derive(Debug, Clone, Copy)]
struct Plan {
    measure: Duration,
    clients: usize,
    cold_actors: usize,
}

impl Plan {
    fn from_args(args: &BenchArgs) -> anyhow::Result<Self> {
        let seconds = args.seconds.unwrap_or(if args.quick { 3 } else { 10 });
        ensure!(seconds > 0, "--seconds must be at least 1");
        ensure!(args.clients > 0, "--clients must be at least 1");
        Ok(Plan {
            measure: Duration::from_secs(seconds),
            clients: args.clients,
            cold_actors: if args.quick { 500 } else { 2_000 },
        })
    }
}

/// Checks the flags this suite reads.
pub(super) fn check_args(args: &BenchArgs) -> anyhow::Result<()> {
    Plan::from_args(args).map(|_| ())
}

/// Runs every counter scenario and renders the report.
pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<Finished> {
    let plan = Plan::from_args(args)?;
    let started = super::report::utc_now();
    let mut rows = Vec::new();

    progress(BARE_AXUM);
    rows.push(
        scenarios::bare_axum(plan)
            .await
            .context("bare axum scenario")?,
    );
    progress(NAIVE_SQLITE);
    rows.push(
        scenarios::naive_sqlite(plan)
            .await
            .context("naive sqlite scenario")?,
    );
    let mut redis_version = None;
    for (name, persistence) in [
        (REDIS_PLAIN, Persistence::None),
        (REDIS_FSYNC, Persistence::FsyncAlways),
    ] {
        progress(name);
        let (row, version) = scenarios::redis_incr(name, persistence, plan).await;
        rows.push(row);
        redis_version = redis_version.or(version);
    }
    for (name, durability, actors) in [
        (DURABLE_ONE, Durability::Durable, 1),
        (BUFFERED_ONE, Durability::Buffered, 1),
        (DURABLE_SPREAD, Durability::Durable, SPREAD_ACTORS),
        (MEMORY_ONE, Durability::Memory, 1),
    ] {
        progress(name);
        rows.push(
            scenarios::roost(name, durability, actors, plan)
                .await
                .with_context(|| format!("{name} scenario"))?,
        );
    }
    progress(&format!("cold open of {} actors", plan.cold_actors));
    // A failure here is reported rather than fatal, so the HTTP numbers survive.
    let cold_actors = plan.cold_actors;
    let cold = match tokio::task::spawn_blocking(move || cold_open(cold_actors)).await {
        Ok(result) => result.map_err(|err| format!("{err:#}")),
        Err(err) => Err(format!("the scenario panicked: {err}")),
    };

    let report = Report {
        started,
        plan,
        rows,
        redis_version,
        cold,
    };
    // Failed rows are reported rather than fatal, so the other numbers survive.
    let failure = report
        .rows
        .iter()
        .find_map(|row| match &row.outcome {
            Outcome::Failed(err) => Some(anyhow::anyhow!("{} failed: {err}", row.name)),
            _ => None,
        })
        .or_else(|| match &report.cold {
            Ok(_) => None,
            Err(err) => Some(anyhow::anyhow!("cold open scenario failed: {err}")),
        });
    Ok(Finished::new(report.render(), failure))
}

/// One row of the HTTP table.
struct Row {
    name: &'static str,
    outcome: Outcome,
    /// Compared with the naive SQLite baseline (durable roost rows).
    against_naive: bool,
}

/// What became of one row.
enum Outcome {
    Measured(Measured),
    /// Not run, and why (Redis is not installed).
    Skipped(&'static str),
    /// Run, and failed: the suite fails too, after the other rows.
    Failed(String),
}

/// A row that ran: its load and the stored count check.
struct Measured {
    load: Load,
    check: CountCheck,
}

impl Measured {
    /// Clean: no failed request and the stored count matches.
    fn clean(&self) -> bool {
        self.load.errors == 0 && self.check.matched()
    }
}
