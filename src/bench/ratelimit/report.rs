//! The rate-limit suite's report: one table of rows at 8 and 64 clients,
//! with ratios to the bare axum handler and to Redis, and the four targets
//! marked met or not.

use std::fmt::Write as _;
use std::time::Duration;

use super::{Outcome, Plan, Row, Scenario, CLIENT_COUNTS, KEYS, POLICY};
use crate::bench::load::Load;
use crate::bench::report::{cores, dash, micros, ratio, thousands, write_heading};
use crate::bench::{NOISY_CORES, WARM_UP};
use crate::limiter::DEFAULT_SHARDS;

/// roost's p99 over loopback HTTP at 8 clients must stay below this.
const HTTP_P99_AT_8: Duration = Duration::from_millis(1);
/// roost's p99 over HTTP at 64 clients, at most this multiple of bare axum's.
const HTTP_P99_RATIO_AT_64: f64 = 1.2;
/// An in-process decision must take less than this at p99.
const IN_PROCESS_P99: Duration = Duration::from_micros(2);

/// Everything one run of the suite measured.
pub(super) struct Report {
    pub(super) started: String,
    pub(super) plan: Plan,
    pub(super) rows: Vec<Row>,
    /// Which Redis was measured, or why none was.
    pub(super) redis_about: String,
}

impl Report {
    /// The row's load, if it was measured.
    fn load(&self, scenario: Scenario, clients: usize) -> Option<&Load> {
        self.rows
            .iter()
            .find(|row| row.scenario == scenario && row.clients == clients)
            .and_then(|row| match &row.outcome {
                Outcome::Measured(load) => Some(load),
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
        write_heading(out, &self.started, ": rate limiting")?;
        writeln!(
            out,
            "- settings: {} s measured per scenario after a {} s warm-up, at {} concurrent clients \
             (HTTP and Redis: one keep-alive connection each; in process: one OS thread each); \
             the bare axum, roost HTTP and Redis rows in {} interleaved rounds each, all three \
             servers up throughout (a {} ms warm-up before each later round); \
             keys spread over {} client IPs ({DEFAULT_SHARDS} limiter actors); policy {} per {} ms, \
             cost 1",
            self.plan.measure.as_secs(),
            WARM_UP.as_secs(),
            CLIENT_COUNTS.map(|n| n.to_string()).join(" and "),
            self.plan.rounds,
            crate::bench::ROUND_WARM_UP.as_millis(),
            thousands(KEYS as u64),
            thousands(POLICY.limit),
            thousands(POLICY.window_ms),
        )?;
        writeln!(
            out,
            "- Redis: {}; one decision is `INCR key` + `PEXPIRE key {} NX` in one pipeline \
             (one round trip, not MULTI)",
            self.redis_about, POLICY.window_ms
        )?;
        writeln!(out)?;
        self.write_table(out)?;
        self.write_notes(out)?;
        self.write_targets(out)
    }

    fn write_table(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "| scenario | clients | decisions/s | p50 µs | p99 µs | errors | denied | \
             rps × bare axum | p99 × bare axum | rps × Redis | other CPU (cores) |"
        )?;
        writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )?;
        for row in &self.rows {
            let load = match &row.outcome {
                Outcome::Measured(load) => load,
                Outcome::Skipped(why) => {
                    writeln!(
                        out,
                        "| {} | {} | skipped: {why} | — | — | — | — | — | — | — | — |",
                        row.scenario.name(),
                        row.clients
                    )?;
                    continue;
                }
                Outcome::Failed(err) => {
                    writeln!(
                        out,
                        "| {} | {} | **failed**: {} | — | — | — | — | — | — | — | — |",
                        row.scenario.name(),
                        row.clients,
                        table_cell(err)
                    )?;
                    continue;
                }
            };
            let rps = load.requests_per_sec();
            let p99 = load.latencies.percentile(99);
            let bare = self
                .load(Scenario::BareAxum, row.clients)
                .filter(|_| row.scenario.is_http());
            let redis = self.load(Scenario::Redis, row.clients);
            writeln!(
                out,
                "| {} | {} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} |",
                row.scenario.name(),
                row.clients,
                thousands(rps.round() as u64),
                micros(load.latencies.percentile(50)),
                micros(p99),
                match load.errors {
                    0 => "0".to_owned(),
                    n => format!("**{n}**"),
                },
                thousands(load.measured_denied),
                bare.map_or_else(dash, |b| ratio(rps, b.requests_per_sec())),
                bare.map_or_else(dash, |b| ratio(
                    p99.as_secs_f64(),
                    b.latencies.percentile(99).as_secs_f64()
                )),
                redis.map_or_else(dash, |r| ratio(rps, r.requests_per_sec())),
                cores(load.other_cores)
            )?;
        }
        writeln!(out)
    }

    fn write_notes(&self, out: &mut String) -> std::fmt::Result {
        let measured = || {
            self.rows.iter().filter_map(|row| match &row.outcome {
                Outcome::Measured(load) => Some((row, load)),
                _ => None,
            })
        };
        for (row, load) in measured().filter(|(_, load)| load.errors > 0) {
            writeln!(
                out,
                "**{} at {} clients had {} failed requests**; first: {}",
                row.scenario.name(),
                row.clients,
                load.errors,
                load.first_error.as_deref().unwrap_or("unknown")
            )?;
            writeln!(out)?;
        }
        let noisy: Vec<String> = measured()
            .filter_map(|(row, load)| {
                load.other_cores
                    .filter(|cores| *cores >= NOISY_CORES)
                    .map(|cores| format!("{} at {} ({cores:.2})", row.scenario.name(), row.clients))
            })
            .collect();
        crate::bench::report::write_noisy(out, &noisy)
    }

    fn write_targets(&self, out: &mut String) -> std::fmt::Result {
        let [few, many] = CLIENT_COUNTS;
        writeln!(out, "Targets:")?;
        writeln!(out)?;

        match self.load(Scenario::RoostHttp, few) {
            Some(roost) => {
                let p99 = roost.latencies.percentile(99);
                writeln!(
                    out,
                    "- over loopback HTTP, p99 under 1 ms at {few} clients: p99 {:.1} µs — **{}**",
                    micros(p99),
                    verdict(p99 < HTTP_P99_AT_8, &[roost])
                )?;
            }
            None => writeln!(
                out,
                "- HTTP p99 at {few} clients: **not met** (not measured)"
            )?,
        }

        match (
            self.load(Scenario::RoostHttp, many),
            self.load(Scenario::BareAxum, many),
        ) {
            (Some(roost), Some(bare)) => {
                let (p99, bare_p99) = (
                    roost.latencies.percentile(99),
                    bare.latencies.percentile(99),
                );
                let share = p99.as_secs_f64() / bare_p99.as_secs_f64().max(1e-9);
                writeln!(
                    out,
                    "- over loopback HTTP, p99 within {HTTP_P99_RATIO_AT_64}× the bare handler's at \
                     {many} clients: {share:.2}× ({:.1} µs against {:.1} µs) — **{}**",
                    micros(p99),
                    micros(bare_p99),
                    verdict(share <= HTTP_P99_RATIO_AT_64, &[roost, bare])
                )?;
            }
            _ => writeln!(
                out,
                "- HTTP p99 against the bare handler at {many} clients: **not met** (not measured)"
            )?,
        }

        let against_redis = |scenario: Scenario| -> Option<Vec<(usize, f64, &Load)>> {
            CLIENT_COUNTS
                .iter()
                .map(|&clients| {
                    let roost = self.load(scenario, clients)?;
                    let redis = self.load(Scenario::Redis, clients)?;
                    let share = roost.requests_per_sec() / redis.requests_per_sec().max(1e-9);
                    Some((clients, share, roost))
                })
                .collect()
        };
        let shares = |measured: &[(usize, f64, &Load)]| {
            measured
                .iter()
                .map(|(clients, share, _)| format!("{share:.2}× at {clients} clients"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match against_redis(Scenario::RoostHttp) {
            Some(http) => {
                let good = http.iter().all(|(_, share, _)| *share > 1.0);
                let loads: Vec<&Load> = http.iter().map(|(_, _, load)| *load).collect();
                let in_process = against_redis(Scenario::RoostInProcess)
                    .map(|measured| format!("; in process: {}", shares(&measured)))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "- throughput above Redis INCR + PEXPIRE NX (roost HTTP decisions/s ÷ Redis's): \
                     {}{in_process} — **{}**",
                    shares(&http),
                    verdict(good, &loads)
                )?;
            }
            None => writeln!(
                out,
                "- throughput above Redis INCR + PEXPIRE NX: **not measured** (see the Redis rows)"
            )?,
        }

        let in_process: Option<Vec<(usize, &Load)>> = CLIENT_COUNTS
            .iter()
            .map(|&threads| Some((threads, self.load(Scenario::RoostInProcess, threads)?)))
            .collect();
        match in_process {
            Some(measured) => {
                let good = measured
                    .iter()
                    .all(|(_, load)| load.latencies.percentile(99) < IN_PROCESS_P99);
                let loads: Vec<&Load> = measured.iter().map(|(_, load)| *load).collect();
                let figures = measured
                    .iter()
                    .map(|(threads, load)| {
                        format!(
                            "p99 {:.2} µs (p50 {:.2} µs) at {threads} threads",
                            micros(load.latencies.percentile(99)),
                            micros(load.latencies.percentile(50))
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                writeln!(
                    out,
                    "- in-process decisions under 2 µs, judged at p99: {figures} — **{}**",
                    verdict(good, &loads)
                )
            }
            None => writeln!(out, "- in-process decisions: **not met** (not measured)"),
        }
    }
}

/// Text that keeps a markdown table row in one piece.
fn table_cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// "met" only when the number is good and every row behind it was clean.
fn verdict(good: bool, loads: &[&Load]) -> &'static str {
    match (good, loads.iter().all(|load| load.errors == 0)) {
        (true, true) => "met",
        (true, false) => "not met (the scenario had errors)",
        (false, _) => "not met",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(rps: u64, p99_micros: u64) -> Load {
        Load::fixture(rps, p99_micros)
    }

    #[test]
    fn missing_redis_is_a_skipped_row_and_an_unmeasured_target() {
        let mut rows = Vec::new();
        for clients in CLIENT_COUNTS {
            rows.push(Row {
                scenario: Scenario::BareAxum,
                clients,
                outcome: Outcome::Measured(load(40_000, 500)),
            });
            rows.push(Row {
                scenario: Scenario::RoostHttp,
                clients,
                outcome: Outcome::Measured(load(30_000, 550)),
            });
            rows.push(Row {
                scenario: Scenario::Redis,
                clients,
                outcome: Outcome::Skipped("redis-server not installed"),
            });
            rows.push(Row {
                scenario: Scenario::RoostInProcess,
                clients,
                outcome: Outcome::Measured(load(1_000_000, 1)),
            });
        }
        let text = Report {
            started: "2026-01-01 00:00 UTC".into(),
            plan: Plan {
                measure: Duration::from_secs(1),
                rounds: 1,
            },
            rows,
            redis_about: "not installed".into(),
        }
        .render();
        assert!(
            text.contains("| Redis INCR + PEXPIRE NX | 8 | skipped: redis-server not installed |")
        );
        assert!(text.contains("p99 under 1 ms at 8 clients: p99 550.0 µs — **met**"));
        assert!(text.contains("at 64 clients: 1.10× (550.0 µs against 500.0 µs) — **met**"));
        assert!(text.contains("throughput above Redis INCR + PEXPIRE NX: **not measured**"));
        assert!(text.contains("p99 1.00 µs (p50 1.00 µs) at 64 threads — **met**"));
    }
}
