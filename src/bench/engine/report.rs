//! The engine suite's report: one table pairing roost with its libSQL
//! baseline per mode, operation and caller count, then the checks.

use std::fmt::Write as _;

use super::subjects::SEEDED;
use super::{Measured, Plan, Row};
use crate::bench::report::{dash, micros, ratio, thousands, write_heading};
use crate::bench::NOISY_CORES;

/// Everything one run of the suite measured.
pub(super) struct Report {
    pub(super) started: String,
    pub(super) plan: Plan,
    pub(super) rows: Vec<Row>,
    /// Modes whose engine or baseline could not be opened, and why.
    pub(super) setup_failures: Vec<String>,
}

impl Report {
    pub(super) fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write(&mut out);
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String) -> std::fmt::Result {
        write_heading(out, &self.started, ": engine in process")?;
        writeln!(
            out,
            "- settings: {} ms warm-up, then {} ms measured per row and side; one actor; callers \
             are OS threads blocking on each call through `Engine::block_on`, as C and Bun \
             callers do; keys and rows cycle through {} seeded ones; \
             64-byte values",
            self.plan.warm_up.as_millis(),
            self.plan.measure.as_millis(),
            thousands(SEEDED as u64)
        )?;
        writeln!(
            out,
            "- libSQL baseline: one connection behind a mutex, each statement prepared once, one \
             autocommit transaction per op; durable = WAL file with `synchronous=FULL`, buffered = \
             WAL file with `synchronous=NORMAL`, memory = `:memory:`"
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "| mode | op | callers | roost ops/s | p50 µs | p99 µs | libSQL ops/s | p50 µs | \
             p99 µs | roost ÷ libSQL |"
        )?;
        writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for row in &self.rows {
            let (roost, libsql) = (side(&row.roost), side(&row.libsql));
            let share = match (&row.roost, &row.libsql) {
                (Ok(r), Ok(l)) => ratio(r.load.requests_per_sec(), l.load.requests_per_sec()),
                _ => dash(),
            };
            writeln!(
                out,
                "| {} | {} | {} | {roost} | {libsql} | {share} |",
                row.mode.as_str(),
                row.op.name(),
                row.callers
            )?;
        }
        writeln!(out)?;
        self.write_notes(out)
    }

    fn write_notes(&self, out: &mut String) -> std::fmt::Result {
        for failure in &self.setup_failures {
            writeln!(out, "**Not measured**: {failure}")?;
            writeln!(out)?;
        }
        let sides = || {
            self.rows.iter().flat_map(|row| {
                [("roost", &row.roost), ("libSQL", &row.libsql)]
                    .into_iter()
                    .map(move |(who, side)| (row, who, side))
            })
        };
        let label = |row: &Row, who: &str| {
            format!(
                "{who} {} {} ×{}",
                row.mode.as_str(),
                row.op.name(),
                row.callers
            )
        };
        let (mut checked, mut mismatched) = (0, 0);
        let mut noisy = Vec::new();
        for (row, who, side) in sides() {
            let measured = match side {
                Ok(measured) => measured,
                Err(err) => {
                    writeln!(out, "**{} failed**: {err}", label(row, who))?;
                    writeln!(out)?;
                    continue;
                }
            };
            if measured.load.errors > 0 {
                writeln!(
                    out,
                    "**{} had {} failed calls**; first: {}",
                    label(row, who),
                    measured.load.errors,
                    measured.load.first_error.as_deref().unwrap_or("unknown")
                )?;
                writeln!(out)?;
            }
            if let Some(check) = &measured.check {
                checked += 1;
                if !check.matched() {
                    mismatched += 1;
                    writeln!(out, "**{}**: counter {}", label(row, who), check.render())?;
                    writeln!(out)?;
                }
            }
            noisy.extend(measured.load.other_cores.filter(|c| *c >= NOISY_CORES));
        }
        if mismatched == 0 && checked > 0 {
            writeln!(
                out,
                "Counter checks: in all {checked} counter measurements the stored value equals the \
                 acknowledged adds (warm-up included)."
            )?;
            writeln!(out)?;
        }
        if let Some(most) = noisy.iter().copied().reduce(f64::max) {
            writeln!(
                out,
                "**Noisy run**: other processes kept at least {NOISY_CORES} cores busy during {} \
                 of {} measurements (up to {most:.2}); those numbers are lower than this machine \
                 can do.",
                noisy.len(),
                self.rows.len() * 2
            )?;
            writeln!(out)?;
        }
        Ok(())
    }
}

/// `ops/s | p50 µs | p99 µs`, or why there are none.
pub(in crate::bench) fn side(side: &Result<Measured, String>) -> String {
    match side {
        Ok(measured) => {
            let load = &measured.load;
            format!(
                "{} | {:.1} | {:.1}",
                thousands(load.requests_per_sec().round() as u64),
                micros(load.latencies.percentile(50)),
                micros(load.latencies.percentile(99))
            )
        }
        Err(_) => "**failed** | — | —".to_owned(),
    }
}
