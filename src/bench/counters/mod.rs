//! The counter suite: one counter incremented over HTTP by roost at each
//! durability, against a bare axum handler (the HTTP ceiling) and a naive
//! SQLite handler that fsyncs once per request (what group commit is
//! measured against), then the in-process cold-open scenario.

mod report;
mod scenarios;

use anyhow::{ensure, Context};
use std::time::Duration;

use super::cold_open::cold_open;
use super::load::Load;
use super::{progress, BenchArgs, Finished};
use crate::Durability;
use report::Report;

/// Actors in the many-actor scenario.
const SPREAD_ACTORS: usize = 100;

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

    progress("bare axum");
    rows.push(
        scenarios::bare_axum(plan)
            .await
            .context("bare axum scenario")?,
    );
    progress("naive sqlite");
    rows.push(
        scenarios::naive_sqlite(plan)
            .await
            .context("naive sqlite scenario")?,
    );
    for (name, durability, actors) in [
        ("roost durable, 1 actor", Durability::Durable, 1),
        ("roost buffered, 1 actor", Durability::Buffered, 1),
        (
            "roost durable, 100 actors",
            Durability::Durable,
            SPREAD_ACTORS,
        ),
        ("roost memory, 1 actor", Durability::Memory, 1),
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
        cold,
    };
    let failure = match &report.cold {
        Ok(_) => None,
        Err(err) => Some(anyhow::anyhow!("cold open scenario failed: {err}")),
    };
    Ok(Finished {
        report: report.render(),
        failure,
    })
}

/// One measured HTTP scenario.
struct Row {
    name: &'static str,
    load: Load,
    /// Whether the stored count equals the number of acknowledged requests.
    check: CountCheck,
    /// Compared with the naive SQLite baseline (durable roost rows).
    against_naive: bool,
}

struct CountCheck {
    stored: i64,
    acknowledged: u64,
}

impl CountCheck {
    fn matched(&self) -> bool {
        u64::try_from(self.stored).is_ok_and(|stored| stored == self.acknowledged)
    }
}
