//! The counter suite's report: one table of rows with ratios to the
//! baselines, the cold-open table, then the targets (see [`super::targets`]).

use std::fmt::Write as _;

use super::{Measured, Outcome, Plan, Row, BARE_AXUM, NAIVE_SQLITE, REDIS_FSYNC, REDIS_PLAIN};
use crate::bench::cold_open::ColdOpen;
use crate::bench::redis::Persistence;
use crate::bench::report::{cores, dash, micros, millis, ratio, thousands, write_heading};
use crate::bench::{NOISY_CORES, ROUND_WARM_UP, WARM_UP};

/// Everything one run of the suite measured.
pub(super) struct Report {
    pub(super) started: String,
    pub(super) plan: Plan,
    pub(super) rows: Vec<Row>,
    /// The version of the redis-server the Redis rows started, if any ran.
    pub(super) redis_version: Option<String>,
    pub(super) cold: Result<ColdOpen, String>,
}

impl Report {
    pub(super) fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|row| row.name == name)
    }

    /// The row's figures, if it ran.
    pub(super) fn measured(&self, name: &str) -> Option<&Measured> {
        self.row(name).and_then(|row| match &row.outcome {
            Outcome::Measured(measured) => Some(measured),
            _ => None,
        })
    }

    pub(super) fn measured_rows(&self) -> impl Iterator<Item = (&Row, &Measured)> {
        self.rows.iter().filter_map(|row| match &row.outcome {
            Outcome::Measured(measured) => Some((row, measured)),
            _ => None,
        })
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
            "- settings: {} s measured per row in {} interleaved rounds (every server up throughout, \
             each round measuring every row in turn; {} s warm-up before a row's first round, {} ms \
             before the others), {} clients (one keep-alive connection each, new each round), {} \
             cold actors; the 1,000 actors exist before the first round",
            plan.measure.as_secs(),
            plan.rounds,
            WARM_UP.as_secs(),
            ROUND_WARM_UP.as_millis(),
            plan.clients,
            plan.cold_actors
        )?;
        let not_installed = [REDIS_PLAIN, REDIS_FSYNC].iter().any(|name| {
            matches!(
                self.row(name).map(|r| &r.outcome),
                Some(Outcome::Skipped(_))
            )
        });
        match (&self.redis_version, not_installed) {
            (_, true) => writeln!(
                out,
                "- Redis: redis-server not installed (`apt-get install redis-server`); its rows \
                 are skipped"
            )?,
            (version, false) => writeln!(
                out,
                "- Redis: redis-server {}, started by the bench for its row on loopback, in its own \
                 temp dir, with `{}` (no persistence) or `{}` (fsync always); one increment is \
                 `INCR` of one key over one connection per client",
                version.as_deref().unwrap_or("of unknown version"),
                Persistence::None.flags(),
                Persistence::FsyncAlways.flags()
            )?,
        }
        writeln!(out)?;
        self.write_table(out)?;
        self.write_notes(out)?;
        self.write_cold(out)?;
        self.write_targets(out)
    }

    fn write_table(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "| scenario | requests/s | p50 ms | p99 ms | errors | rps × bare axum | p99 × bare axum | \
             rps × naive sqlite | rps × Redis | rps × Redis fsync | stored count | other CPU (cores) |"
        )?;
        writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
        )?;
        let bare = self.measured(BARE_AXUM).map(|m| &m.load);
        let naive = self.measured(NAIVE_SQLITE).map(|m| &m.load);
        let redis = self.measured(REDIS_PLAIN).map(|m| &m.load);
        let redis_fsync = self.measured(REDIS_FSYNC).map(|m| &m.load);
        for row in &self.rows {
            let Measured { load, check } = match &row.outcome {
                Outcome::Measured(measured) => measured,
                Outcome::Skipped(why) => {
                    writeln!(
                        out,
                        "| {} | skipped: {why} |{}",
                        row.name,
                        " — |".repeat(10)
                    )?;
                    continue;
                }
                Outcome::Failed(err) => {
                    writeln!(
                        out,
                        "| {} | **failed**: {} |{}",
                        row.name,
                        err.replace('|', "\\|").replace(['\n', '\r'], " "),
                        " — |".repeat(10)
                    )?;
                    continue;
                }
            };
            let rps = load.requests_per_sec();
            let p99 = load.latencies.percentile(99);
            let rps_vs = |base: Option<&crate::bench::load::Load>| {
                base.map_or_else(dash, |b| ratio(rps, b.requests_per_sec()))
            };
            writeln!(
                out,
                "| {} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.name,
                thousands(rps.round() as u64),
                millis(load.latencies.percentile(50)),
                millis(p99),
                match load.errors {
                    0 => "0".to_owned(),
                    n => format!("**{n}**"),
                },
                rps_vs(bare),
                bare.map_or_else(dash, |b| ratio(
                    p99.as_secs_f64(),
                    b.latencies.percentile(99).as_secs_f64()
                )),
                rps_vs(naive.filter(|_| row.against_naive)),
                rps_vs(redis),
                rps_vs(redis_fsync),
                check.render(),
                cores(load.other_cores)
            )?;
        }
        writeln!(out)
    }

    fn write_notes(&self, out: &mut String) -> std::fmt::Result {
        for (row, measured) in self.measured_rows().filter(|(_, m)| m.load.errors > 0) {
            writeln!(
                out,
                "**{} had {} failed requests**; first: {}",
                row.name,
                measured.load.errors,
                measured.load.first_error.as_deref().unwrap_or("unknown")
            )?;
            writeln!(out)?;
        }
        let noisy: Vec<String> = self
            .measured_rows()
            .map(|(row, measured)| (row.name, measured.load.other_cores))
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
        crate::bench::report::write_noisy(out, &noisy)
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

#[cfg(test)]
mod tests {
    use super::super::{BUFFERED_ONE, DURABLE_ONE, DURABLE_SPREAD, MEMORY_ONE};
    use super::*;
    use crate::bench::load::Load;
    use crate::bench::report::CountCheck;
    use std::time::Duration;

    fn row(name: &'static str, rps: u64, p99_micros: u64) -> Row {
        Row {
            name,
            outcome: Outcome::Measured(Measured {
                load: Load::fixture(rps, p99_micros),
                check: CountCheck {
                    stored: rps as i64,
                    acknowledged: rps,
                },
            }),
            against_naive: name.starts_with("roost durable"),
        }
    }

    fn report(rows: Vec<Row>) -> String {
        Report {
            started: "2026-01-01 00:00 UTC".into(),
            plan: Plan {
                measure: Duration::from_secs(1),
                rounds: 1,
                clients: 64,
                cold_actors: 10,
            },
            rows,
            redis_version: None,
            cold: Err("not run".into()),
        }
        .render()
    }

    #[test]
    fn targets_are_judged_against_their_own_baselines() {
        let text = report(vec![
            row(BARE_AXUM, 50_000, 2_000),
            row(NAIVE_SQLITE, 3_000, 40_000),
            row(REDIS_PLAIN, 60_000, 1_500),
            row(REDIS_FSYNC, 42_000, 2_500),
            row(DURABLE_ONE, 35_000, 3_000),
            row(BUFFERED_ONE, 38_000, 5_000),
            row(DURABLE_SPREAD, 20_000, 3_500),
            row(MEMORY_ONE, 45_000, 2_500),
        ]);
        assert!(text.contains(
            "buffered at least 0.8× the bare axum ceiling: 0.76× (38,000 against 50,000 \
             requests/s) — **not met**"
        ));
        assert!(text.contains("Redis `appendfsync always`: 0.48× (20,000 against 42,000"));
        assert!(text.contains("durable on one actor at least 0.4× the bare axum ceiling: 0.70×"));
        assert!(text.contains("(naive sqlite): 11.67× (35,000 against 3,000 requests/s) — **met**"));
        assert!(text.contains(
            "roost durable, 1 actor 1.50×, roost buffered, 1 actor 2.50×, roost durable, 1,000 \
             actors 1.75×, roost memory, 1 actor 1.25× — **not met**"
        ));
        assert!(text.contains(
            "| roost durable, 1 actor | 35,000 | 3.00 | 3.00 | 0 | 0.70× | 1.50× | 11.67× | 0.58× \
             | 0.83× |"
        ));
    }

    #[test]
    fn missing_redis_skips_its_rows_and_leaves_its_target_unmeasured() {
        let mut rows = vec![
            row(BARE_AXUM, 50_000, 2_000),
            row(DURABLE_SPREAD, 30_000, 3_000),
        ];
        rows.push(Row {
            name: REDIS_FSYNC,
            outcome: Outcome::Skipped("redis-server not installed"),
            against_naive: false,
        });
        let text = report(rows);
        assert!(text.contains(
            "| Redis INCR, appendfsync always | skipped: redis-server not installed | — |"
        ));
        assert!(text.contains(
            "Redis `appendfsync always`: **not measured** (Redis INCR, appendfsync always: \
             skipped, redis-server not installed)"
        ));
        assert!(text.contains("at least 0.5× the bare axum ceiling: 0.60×"));
        assert!(text.contains("- Redis: redis-server not installed"));
    }

    #[test]
    fn a_count_mismatch_fails_a_target_the_numbers_meet() {
        let mut durable = row(DURABLE_ONE, 35_000, 2_000);
        if let Outcome::Measured(measured) = &mut durable.outcome {
            measured.check.stored -= 1;
        }
        let text = report(vec![row(BARE_AXUM, 50_000, 2_000), durable]);
        assert!(text.contains(
            "durable on one actor at least 0.4× the bare axum ceiling: 0.70× (35,000 against \
             50,000 requests/s) — **not met (a scenario had errors or a count mismatch)**"
        ));
        assert!(text.contains("**MISMATCH**: 34999 stored, 35000 acknowledged"));
    }
}
