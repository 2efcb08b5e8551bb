//! The counter suite's targets, each judged from the run's own rows and
//! marked met, not met or not measured.

use std::fmt::Write as _;
use std::time::Duration;

use super::report::Report;
use super::{
    Measured, Outcome, Row, BARE_AXUM, BUFFERED_ONE, DURABLE_ONE, DURABLE_SPREAD, NAIVE_SQLITE,
    REDIS_FSYNC,
};
use crate::bench::report::{micros, thousands};

/// Throughput the durable single actor must beat (Durable Objects document
/// a soft limit of about 1,000 requests/s per object).
const DURABLE_TARGET_RPS: f64 = 10_000.0;
/// Opening a cold actor must take less than this at p99.
const COLD_OPEN_TARGET: Duration = Duration::from_millis(1);
/// A roost row's p99 may be at most this multiple of bare axum's.
const P99_TARGET_RATIO: f64 = 2.0;

/// A throughput target: `row`'s requests/s at least `min` times `base`'s.
struct ShareTarget {
    claim: &'static str,
    row: &'static str,
    base: &'static str,
    min: f64,
}

/// The throughput targets of issue #8 first, then the older buffered one.
const SHARE_TARGETS: [ShareTarget; 6] = [
    ShareTarget {
        claim: "buffered at least 0.8× the bare axum ceiling",
        row: BUFFERED_ONE,
        base: BARE_AXUM,
        min: 0.8,
    },
    ShareTarget {
        claim: "durable on 1,000 actors at least 0.5× the bare axum ceiling",
        row: DURABLE_SPREAD,
        base: BARE_AXUM,
        min: 0.5,
    },
    ShareTarget {
        claim: "durable on 1,000 actors at least 0.6× Redis `appendfsync always`",
        row: DURABLE_SPREAD,
        base: REDIS_FSYNC,
        min: 0.6,
    },
    ShareTarget {
        claim: "durable on one actor at least 0.4× the bare axum ceiling",
        row: DURABLE_ONE,
        base: BARE_AXUM,
        min: 0.4,
    },
    ShareTarget {
        claim: "durable on one actor at least 10× one-fsync-per-write SQLite behind a mutex \
                (naive sqlite)",
        row: DURABLE_ONE,
        base: NAIVE_SQLITE,
        min: 10.0,
    },
    ShareTarget {
        claim: "buffered within 2x of the bare axum handler (throughput ratio ≥ 0.5)",
        row: BUFFERED_ONE,
        base: BARE_AXUM,
        min: 0.5,
    },
];

impl Report {
    pub(super) fn write_targets(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "Targets:")?;
        writeln!(out)?;
        for target in &SHARE_TARGETS {
            writeln!(out, "- {}", self.share_target(target))?;
        }
        writeln!(out, "- {}", self.p99_target())?;
        match self.measured(DURABLE_ONE) {
            Some(row) => {
                let rps = row.load.requests_per_sec();
                writeln!(
                    out,
                    "- durable single actor well over 10,000 increments/s (Durable Objects document a \
                     soft limit of 1,000 requests/s per object): {} increments/s — **{}**",
                    thousands(rps.round() as u64),
                    verdict(rps > DURABLE_TARGET_RPS, &[row])
                )?;
            }
            None => writeln!(out, "- durable single actor: **not measured**")?,
        }
        match self.cold.as_ref().map(|cold| cold.cold.percentile(99)) {
            Ok(p99) => writeln!(
                out,
                "- opening a cold actor costs well under 1 ms (p99 < 1 ms): p99 {:.1} µs — **{}**",
                micros(p99),
                if p99 < COLD_OPEN_TARGET {
                    "met"
                } else {
                    "not met"
                }
            ),
            Err(_) => writeln!(
                out,
                "- opening a cold actor costs well under 1 ms: **not met** (the scenario failed)"
            ),
        }
    }

    /// `claim: figure — **verdict**` for one throughput target.
    fn share_target(&self, target: &ShareTarget) -> String {
        let (row, base) = match (self.measured(target.row), self.measured(target.base)) {
            (Some(row), Some(base)) => (row, base),
            _ => {
                let missing = [target.row, target.base]
                    .into_iter()
                    .find(|name| self.measured(name).is_none())
                    .unwrap_or(target.base);
                return format!(
                    "{}: **not measured** ({missing}: {})",
                    target.claim,
                    self.why_missing(missing)
                );
            }
        };
        let share = row.load.requests_per_sec() / base.load.requests_per_sec().max(1e-9);
        format!(
            "{}: {share:.2}× ({} against {} requests/s) — **{}**",
            target.claim,
            thousands(row.load.requests_per_sec().round() as u64),
            thousands(base.load.requests_per_sec().round() as u64),
            verdict(share >= target.min, &[row, base])
        )
    }

    /// Every roost row's p99 within [`P99_TARGET_RATIO`] of bare axum's.
    fn p99_target(&self) -> String {
        let claim = format!(
            "p99 at {} connections at most {P99_TARGET_RATIO}× the bare axum ceiling's \
             (every roost row)",
            self.plan.clients
        );
        let Some(bare) = self.measured(BARE_AXUM) else {
            return format!("{claim}: **not measured** (bare axum did not run)");
        };
        let bare_p99 = bare.load.latencies.percentile(99).as_secs_f64();
        let roost: Vec<(&Row, &Measured)> = self
            .measured_rows()
            .filter(|(row, _)| row.name.starts_with("roost"))
            .collect();
        if roost.is_empty() {
            return format!("{claim}: **not measured**");
        }
        let shares: Vec<f64> = roost
            .iter()
            .map(|(_, m)| m.load.latencies.percentile(99).as_secs_f64() / bare_p99.max(1e-9))
            .collect();
        let figures = roost
            .iter()
            .zip(&shares)
            .map(|((row, _), share)| format!("{} {share:.2}×", row.name))
            .collect::<Vec<_>>()
            .join(", ");
        let mut judged: Vec<&Measured> = roost.iter().map(|(_, m)| *m).collect();
        judged.push(bare);
        let good = shares.iter().all(|share| *share <= P99_TARGET_RATIO);
        format!("{claim}: {figures} — **{}**", verdict(good, &judged))
    }

    fn why_missing(&self, name: &str) -> String {
        match self.row(name).map(|row| &row.outcome) {
            Some(Outcome::Skipped(why)) => format!("skipped, {why}"),
            Some(Outcome::Failed(_)) => "failed".to_owned(),
            Some(Outcome::Measured(_)) => "measured".to_owned(),
            None => "not run".to_owned(),
        }
    }
}

/// "met" only when the number is good and every row behind it was clean.
fn verdict(good: bool, rows: &[&Measured]) -> &'static str {
    match (good, rows.iter().all(|row| row.clean())) {
        (true, true) => "met",
        (true, false) => "not met (a scenario had errors or a count mismatch)",
        (false, _) => "not met",
    }
}
