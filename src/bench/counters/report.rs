//! The counter suite's report: one table of HTTP rows with ratios to the
//! baselines, the cold-open table, and the suite's targets marked met or not.

use std::fmt::Write as _;
use std::time::Duration;

use super::{Plan, Row};
use crate::bench::cold_open::ColdOpen;
use crate::bench::report::{cores, dash, micros, millis, ratio, thousands, write_heading};
use crate::bench::{NOISY_CORES, WARM_UP};

/// Throughput the durable single actor must beat (Durable Objects document
/// a soft limit of about 1,000 requests/s per object).
const DURABLE_TARGET_RPS: f64 = 10_000.0;
/// Buffered throughput must be at least this share of bare axum's.
const BUFFERED_TARGET_RATIO: f64 = 0.5;
/// Opening a cold actor must take less than this at p99.
const COLD_OPEN_TARGET: Duration = Duration::from_millis(1);

/// Everything one run of the suite measured.
pub(super) struct Report {
    pub(super) started: String,
    pub(super) plan: Plan,
    pub(super) rows: Vec<Row>,
    pub(super) cold: Result<ColdOpen, String>,
}

impl Report {
    fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|row| row.name == name)
    }

    pub(super) fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) -> std::fmt::Result {
        let plan = self.plan;
        write_heading(out, &self.started, "")?;
        writeln!(
            out,
            "- settings: {} s measured per scenario after a {} s warm-up, {} clients (one keep-alive \
             connection each), {} cold actors",
            plan.measure.as_secs(),
            WARM_UP.as_secs(),
            plan.clients,
            plan.cold_actors
        )?;
        writeln!(out)?;

        let bare = self.row("bare axum");
        let naive = self.row("naive sqlite");
        writeln!(
            out,
            "| scenario | requests/s | p50 ms | p99 ms | errors | rps × bare axum | p99 × bare axum | \
             rps × naive sqlite | stored count | other CPU (cores) |"
        )?;
        writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")?;
        for row in &self.rows {
            let load = &row.load;
            let rps = load.requests_per_sec();
            let p99 = load.latencies.percentile(99);
            let vs_bare_rps = bare.map(|b| ratio(rps, b.load.requests_per_sec()));
            let vs_bare_p99 = bare.map(|b| {
                ratio(
                    p99.as_secs_f64(),
                    b.load.latencies.percentile(99).as_secs_f64(),
                )
            });
            let vs_naive = naive
                .filter(|_| row.against_naive)
                .map(|n| ratio(rps, n.load.requests_per_sec()));
            let check = if row.check.matched() {
                format!("matches ({})", thousands(row.check.acknowledged))
            } else {
                format!(
                    "**MISMATCH**: {} stored, {} acknowledged",
                    row.check.stored, row.check.acknowledged
                )
            };
            writeln!(
                out,
                "| {} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} |",
                row.name,
                thousands(rps.round() as u64),
                millis(load.latencies.percentile(50)),
                millis(p99),
                if load.errors == 0 {
                    "0".to_owned()
                } else {
                    format!("**{}**", load.errors)
                },
                vs_bare_rps.unwrap_or_else(dash),
                vs_bare_p99.unwrap_or_else(dash),
                vs_naive.unwrap_or_else(dash),
                check,
                cores(load.other_cores)
            )?;
        }
        writeln!(out)?;
        for row in self.rows.iter().filter(|row| row.load.errors > 0) {
            writeln!(
                out,
                "**{} had {} failed requests**; first: {}",
                row.name,
                row.load.errors,
                row.load.first_error.as_deref().unwrap_or("unknown")
            )?;
            writeln!(out)?;
        }

        let noisy: Vec<String> = self
            .rows
            .iter()
            .map(|row| (row.name, row.load.other_cores))
            .chain([(
                "cold open",
                self.cold.as_ref().ok().and_then(|c| c.other_cores),
            )])
            .filter_map(|(name, other)| {
                other
                    .filter(|cores| *cores >= NOISY_CORES)
                    .map(|cores| format!("{name} ({cores:.2})"))
            })
            .collect();
        if !noisy.is_empty() {
            writeln!(
                out,
                "**Noisy run**: other processes kept cores busy during {}; those numbers are \
                 lower than this machine can do.",
                noisy.join(", ")
            )?;
            writeln!(out)?;
        }

        self.write_cold(out)?;

        writeln!(out, "Targets:")?;
        writeln!(out)?;
        match self.row("roost durable, 1 actor") {
            Some(row) => {
                let rps = row.load.requests_per_sec();
                writeln!(
                    out,
                    "- durable single actor well over 10,000 increments/s (Durable Objects document a \
                     soft limit of 1,000 requests/s per object): {} increments/s — **{}**",
                    thousands(rps.round() as u64),
                    verdict(rps > DURABLE_TARGET_RPS, row)
                )?;
            }
            None => writeln!(out, "- durable single actor: not measured")?,
        }
        match (self.row("roost buffered, 1 actor"), bare) {
            (Some(row), Some(bare)) => {
                let share = row.load.requests_per_sec() / bare.load.requests_per_sec().max(1e-9);
                writeln!(
                    out,
                    "- buffered within 2x of the bare axum handler (throughput ratio ≥ {BUFFERED_TARGET_RATIO}): \
                     {share:.2}× — **{}**",
                    verdict(share >= BUFFERED_TARGET_RATIO, row)
                )?;
            }
            _ => writeln!(out, "- buffered vs bare axum: not measured")?,
        }
        let cold_p99 = self.cold.as_ref().map(|cold| cold.cold.percentile(99));
        match cold_p99 {
            Ok(p99) => {
                writeln!(
                out,
                "- opening a cold actor costs well under 1 ms (p99 < 1 ms): p99 {:.1} µs — **{}**",
                micros(p99),
                if p99 < COLD_OPEN_TARGET { "met" } else { "not met" }
            )
            }
            Err(_) => writeln!(
                out,
                "- opening a cold actor costs well under 1 ms: **not met** (the scenario failed)"
            ),
        }
    }

    fn write_cold(&self, out: &mut String) -> std::fmt::Result {
        let cold = match &self.cold {
            Ok(cold) => cold,
            Err(err) => {
                writeln!(out, "Cold open: **failed**: {err}")?;
                return writeln!(out);
            }
        };
        writeln!(
            out,
            "Cold open: {} durable actors written, engine restarted, then each read twice in process \
             (no HTTP). The first read starts the actor (thread, file open, read); the second is the \
             warm baseline. Files are in the OS page cache. Other CPU meanwhile: {} cores.",
            thousands(cold.actors as u64),
            cores(cold.other_cores)
        )?;
        writeln!(out)?;
        writeln!(out, "| read | p50 µs | p99 µs |")?;
        writeln!(out, "|---|---:|---:|")?;
        let (c50, c99) = (cold.cold.percentile(50), cold.cold.percentile(99));
        let (w50, w99) = (cold.warm.percentile(50), cold.warm.percentile(99));
        writeln!(
            out,
            "| cold (first) | {:.1} | {:.1} |",
            micros(c50),
            micros(c99)
        )?;
        writeln!(
            out,
            "| warm (second) | {:.1} | {:.1} |",
            micros(w50),
            micros(w99)
        )?;
        writeln!(
            out,
            "| cold ÷ warm | {} | {} |",
            ratio(c50.as_secs_f64(), w50.as_secs_f64()),
            ratio(c99.as_secs_f64(), w99.as_secs_f64())
        )?;
        writeln!(out)
    }
}

/// "met" only when the number is good and the scenario was clean.
fn verdict(good: bool, row: &Row) -> &'static str {
    match (good, row.load.errors == 0 && row.check.matched()) {
        (true, true) => "met",
        (true, false) => "not met (the scenario had errors or a count mismatch)",
        (false, _) => "not met",
    }
}
