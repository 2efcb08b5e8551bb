//! The counter suite: one counter incremented over HTTP by roost at each
//! durability, against a bare axum handler (the HTTP ceiling), a naive
//! SQLite handler that fsyncs once per request (what group commit is
//! measured against) and Redis `INCR` with and without an fsync per write,
//! then the in-process cold-open scenario.

mod report;
mod scenarios;
mod targets;

use anyhow::ensure;
use std::time::Duration;

use super::cold_open::cold_open;
use super::load::{Load, Slice};
use super::redis::Persistence;
use super::report::CountCheck;
use super::{progress, BenchArgs, Finished};
use crate::Durability;
use report::Report;
use scenarios::Subject;

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
    /// Measured per row in all, over its rounds.
    measure: Duration,
    /// Interleaved rounds: every row is measured once per round.
    rounds: u32,
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
            // Rounds of at least one second each.
            rounds: seconds.clamp(1, 5) as u32,
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
    let mut redis_version = None;

    // Every server is up for the whole suite, and each round measures
    // every row in turn: the rows' ratios then share the machine's drift.
    let mut entries = Vec::new();
    progress(BARE_AXUM);
    entries.push(Entry::started(BARE_AXUM, Subject::bare_axum().await));
    progress(NAIVE_SQLITE);
    entries.push(Entry::started(NAIVE_SQLITE, Subject::naive_sqlite().await));
    for (name, persistence) in [
        (REDIS_PLAIN, Persistence::None),
        (REDIS_FSYNC, Persistence::FsyncAlways),
    ] {
        progress(name);
        entries.push(match Subject::redis(persistence).await {
            Ok(Some((subject, version))) => {
                redis_version = redis_version.or(version);
                Entry::started(name, Ok(subject))
            }
            Ok(None) => Entry {
                name,
                state: State::Skipped("redis-server not installed"),
            },
            Err(err) => Entry::started(name, Err(err)),
        });
    }
    for (name, durability, actors) in [
        (DURABLE_ONE, Durability::Durable, 1),
        (BUFFERED_ONE, Durability::Buffered, 1),
        (DURABLE_SPREAD, Durability::Durable, SPREAD_ACTORS),
        (MEMORY_ONE, Durability::Memory, 1),
    ] {
        progress(name);
        let subject = Subject::roost(durability, actors, plan.clients).await;
        entries.push(Entry::started(name, subject));
    }
    for round in 0..plan.rounds {
        let slice = Slice::round(round, plan.measure, plan.rounds);
        for entry in &mut entries {
            progress(&format!(
                "{}, round {} of {}",
                entry.name,
                round + 1,
                plan.rounds
            ));
            entry.measure(plan.clients, slice).await;
        }
    }
    let mut rows = Vec::with_capacity(entries.len());
    for entry in entries {
        rows.push(entry.finish().await);
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

/// A row while the suite runs: its server and what its rounds measured.
struct Entry {
    name: &'static str,
    state: State,
}

enum State {
    Up(Box<Subject>, Option<Load>),
    Skipped(&'static str),
    Failed(String),
}

impl Entry {
    fn started(name: &'static str, subject: anyhow::Result<Subject>) -> Entry {
        let state = match subject {
            Ok(subject) => State::Up(Box::new(subject), None),
            Err(err) => State::Failed(format!("{err:#}")),
        };
        Entry { name, state }
    }

    /// Measures one round; a failure stops the row's server and ends it.
    async fn measure(&mut self, clients: usize, slice: Slice) {
        let State::Up(subject, total) = &mut self.state else {
            return;
        };
        match subject.round(clients, slice).await {
            Ok(load) => match total {
                Some(sum) => sum.absorb(load),
                None => *total = Some(load),
            },
            Err(err) => {
                let failed = State::Failed(format!("{err:#}"));
                if let State::Up(subject, _) = std::mem::replace(&mut self.state, failed) {
                    let _ = subject.finish().await;
                }
            }
        }
    }

    /// Stops the server and checks the stored count.
    async fn finish(self) -> Row {
        let against_naive = self.name.starts_with("roost durable");
        let outcome = match self.state {
            State::Up(subject, Some(mut load)) => match subject.finish().await {
                Ok((stored, unmeasured)) => {
                    load.total_ok += unmeasured;
                    let check = CountCheck {
                        stored,
                        acknowledged: load.total_ok,
                    };
                    Outcome::Measured(Measured { load, check })
                }
                Err(err) => Outcome::Failed(format!("{err:#}")),
            },
            State::Up(subject, None) => {
                let _ = subject.finish().await;
                Outcome::Failed("no round was measured".into())
            }
            State::Skipped(why) => Outcome::Skipped(why),
            State::Failed(err) => Outcome::Failed(err),
        };
        Row {
            name: self.name,
            outcome,
            against_naive,
        }
    }
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
