//! The group-commit suite, in process and without HTTP: durable counter
//! increments on one actor from 1 and from 64 OS threads, against one
//! libSQL connection behind a mutex that commits and fsyncs every upsert
//! on its own (WAL, `synchronous=FULL`). With one writer both pay an fsync
//! per write; with 64, roost shares each fsync among the writes queued
//! meanwhile, and the ratio shows what that buys.

use anyhow::ensure;
use std::fmt::Write as _;
use std::time::Duration;

use super::engine::subjects::{Libsql, Op, Roost};
use super::engine::{measure, side, Measured};
use super::report::{dash, ratio, utc_now, write_heading};
use super::{progress, BenchArgs, Finished, NOISY_CORES, WARM_UP};
use crate::Durability;

/// Concurrent writers of both sides.
const WRITERS: [usize; 2] = [1, 64];

#[derive(Debug, Clone, Copy)]
struct Plan {
    warm_up: Duration,
    measure: Duration,
}

impl Plan {
    /// 0.5 s + 1 s per measurement with `--quick`, else 1 s + `--seconds` (10).
    fn from_args(args: &BenchArgs) -> anyhow::Result<Self> {
        let seconds = args.seconds.unwrap_or(if args.quick { 1 } else { 10 });
        ensure!(seconds > 0, "--seconds must be at least 1");
        Ok(Plan {
            warm_up: match args.quick {
                true => Duration::from_millis(500),
                false => WARM_UP,
            },
            measure: Duration::from_secs(seconds),
        })
    }
}

/// Checks the flags this suite reads.
pub(super) fn check_args(args: &BenchArgs) -> anyhow::Result<()> {
    Plan::from_args(args).map(drop)
}

/// Both sides at one writer count.
struct Row {
    writers: usize,
    roost: Result<Measured, String>,
    sqlite: Result<Measured, String>,
}

/// Measures both sides at each writer count and renders the report.
pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<Finished> {
    let plan = Plan::from_args(args)?;
    let started = utc_now();
    let rows = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Row>> {
        let roost = Roost::open(Durability::Durable)?;
        let sqlite = Libsql::open(Durability::Durable)?;
        let mut rows = Vec::new();
        for writers in WRITERS {
            progress(&format!("group commit, {}", writer_count(writers)));
            let counter = format!("hits-{writers}");
            let side = |subject: &dyn super::engine::subjects::Subject| {
                measure(
                    subject,
                    Op::CounterAdd,
                    &counter,
                    writers,
                    plan.warm_up,
                    plan.measure,
                )
                .map_err(|err| format!("{err:#}"))
            };
            rows.push(Row {
                writers,
                roost: side(&roost),
                sqlite: side(&sqlite),
            });
        }
        drop(sqlite);
        roost.close()?;
        Ok(rows)
    })
    .await??;
    let failure = rows.iter().find_map(|row| {
        let err = row.roost.as_ref().err().or(row.sqlite.as_ref().err())?;
        Some(anyhow::anyhow!(
            "group commit at {} failed: {err}",
            writer_count(row.writers)
        ))
    });
    let mut report = String::new();
    // Writing to a String cannot fail.
    let _ = write_report(&mut report, &started, plan, &rows);
    report.truncate(report.trim_end().len());
    report.push('\n');
    Ok(Finished::new(report, failure))
}

fn write_report(out: &mut String, started: &str, plan: Plan, rows: &[Row]) -> std::fmt::Result {
    write_heading(out, started, ": group commit")?;
    writeln!(
        out,
        "- settings: {} ms warm-up, then {} s measured per row and side; durable counter \
         increments on one actor, in process, from 1 and 64 OS threads blocking on each call",
        plan.warm_up.as_millis(),
        plan.measure.as_secs()
    )?;
    writeln!(
        out,
        "- baseline: one libSQL connection behind a mutex, WAL with `synchronous=FULL`, one \
         upsert per commit (an fsync each), statement prepared once"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| writers | roost ops/s | p50 µs | p99 µs | SQLite ops/s | p50 µs | p99 µs | roost ÷ SQLite \
         | stored count (roost) | stored count (SQLite) |"
    )?;
    writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")?;
    for row in rows {
        let share = match (&row.roost, &row.sqlite) {
            (Ok(r), Ok(s)) => ratio(r.load.requests_per_sec(), s.load.requests_per_sec()),
            _ => dash(),
        };
        writeln!(
            out,
            "| {} | {} | {} | {share} | {} | {} |",
            row.writers,
            side(&row.roost),
            side(&row.sqlite),
            check(&row.roost),
            check(&row.sqlite)
        )?;
    }
    writeln!(out)?;
    let rps = |pick: fn(&Row) -> &Result<Measured, String>, writers: usize| {
        let row = rows.iter().find(|row| row.writers == writers)?;
        Some(pick(row).as_ref().ok()?.load.requests_per_sec())
    };
    let [one, many] = WRITERS;
    let scaling =
        |pick: fn(&Row) -> &Result<Measured, String>| match (rps(pick, one), rps(pick, many)) {
            (Some(one), Some(many)) => ratio(many, one),
            _ => dash(),
        };
    writeln!(
        out,
        "From {one} to {many} writers, roost's throughput changes {} and the fsync-per-write \
         baseline's {}.",
        scaling(|row| &row.roost),
        scaling(|row| &row.sqlite)
    )?;
    writeln!(out)?;
    let mut noisy = Vec::new();
    for row in rows {
        for (who, side) in [("roost", &row.roost), ("SQLite", &row.sqlite)] {
            let label = format!("{who} at {}", writer_count(row.writers));
            match side {
                Err(err) => writeln!(out, "**{label} failed**: {err}\n")?,
                Ok(m) if m.load.errors > 0 => writeln!(
                    out,
                    "**{label} had {} failed calls**; first: {}\n",
                    m.load.errors,
                    m.load.first_error.as_deref().unwrap_or("unknown")
                )?,
                Ok(_) => {}
            }
            if let Some(cores) = side.as_ref().ok().and_then(|m| m.load.other_cores) {
                if cores >= NOISY_CORES {
                    noisy.push(format!("{label} ({cores:.2})"));
                }
            }
        }
    }
    if !noisy.is_empty() {
        writeln!(
            out,
            "**Noisy run**: other processes kept cores busy during {}; those numbers are lower \
             than this machine can do.",
            noisy.join(", ")
        )?;
    }
    Ok(())
}

fn writer_count(n: usize) -> String {
    match n {
        1 => "1 writer".to_owned(),
        n => format!("{n} writers"),
    }
}

fn check(side: &Result<Measured, String>) -> String {
    match side {
        Ok(Measured {
            check: Some(check), ..
        }) => check.render(),
        _ => dash(),
    }
}
