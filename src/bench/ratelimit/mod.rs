//! The rate-limit suite: one decision per request for keys spread over
//! 1,000 client IPs, at 8 and at 64 concurrent clients, four ways: a bare
//! axum handler with a fixed window in a locked map (the HTTP ceiling),
//! roost's `POST /v1/ratelimit/{key}`, Redis INCR + PEXPIRE NX (the pattern
//! roost replaces) and roost's `Engine::ratelimit` called in process.
//!
//! The three network rows are measured in interleaved rounds (bare, roost,
//! Redis, bare, ...), all three servers up throughout: on a shared machine
//! throughput drifts from one ten-second stretch to the next, and a ratio
//! of rows measured side by side in time is what the targets compare.

mod report;
mod scenarios;

use anyhow::{anyhow, ensure};
use std::sync::Arc;
use std::time::Duration;

use super::load::{Load, Slice};
use super::redis::Redis;
use super::{progress, BenchArgs, Finished};
use crate::limiter::Policy;
use report::Report;

/// Concurrent clients of every scenario: the targets are stated at these.
const CLIENT_COUNTS: [usize; 2] = [8, 64];
/// Distinct keys (client IPs) the requests are spread over.
const KEYS: usize = 1_000;
/// Generous enough that every request in a run is allowed: denials are
/// counted as decisions, but the common case is what is measured.
const POLICY: Policy = Policy {
    limit: 100_000,
    window_ms: 60_000,
};

/// The settings one run uses, resolved from the flags.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Measured per scenario in all (the network rows: over all rounds).
    measure: Duration,
    /// Interleaved rounds of the network rows.
    rounds: u32,
}

impl Plan {
    fn from_args(args: &BenchArgs) -> anyhow::Result<Self> {
        let seconds = args.seconds.unwrap_or(if args.quick { 2 } else { 10 });
        ensure!(seconds > 0, "--seconds must be at least 1");
        Ok(Plan {
            measure: Duration::from_secs(seconds),
            // Rounds of at least one second each.
            rounds: seconds.clamp(1, 5) as u32,
        })
    }

    /// Round `round` of an interleaved scenario.
    fn slice(&self, round: u32) -> Slice {
        Slice::round(round, self.measure, self.rounds)
    }
}

/// Checks the flags this suite reads.
pub(super) fn check_args(args: &BenchArgs) -> anyhow::Result<()> {
    Plan::from_args(args).map(|_| ())
}

/// The way a row makes its decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    BareAxum,
    RoostHttp,
    Redis,
    RoostInProcess,
}

impl Scenario {
    /// In the order the rows are run and printed.
    const ALL: [Scenario; 4] = [
        Scenario::BareAxum,
        Scenario::RoostHttp,
        Scenario::Redis,
        Scenario::RoostInProcess,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::BareAxum => "bare axum, fixed window",
            Scenario::RoostHttp => "roost HTTP",
            Scenario::Redis => "Redis INCR + PEXPIRE NX",
            Scenario::RoostInProcess => "roost in process",
        }
    }

    /// Whether decisions cross loopback HTTP (and compare with bare axum).
    fn is_http(self) -> bool {
        matches!(self, Scenario::BareAxum | Scenario::RoostHttp)
    }
}

/// One row of the report.
struct Row {
    scenario: Scenario,
    clients: usize,
    outcome: Outcome,
}

/// What became of one row.
enum Outcome {
    Measured(Load),
    /// Not run, and why (Redis is not installed).
    Skipped(&'static str),
    /// Run, and failed: the run as a whole fails too.
    Failed(String),
}

impl From<anyhow::Result<Load>> for Outcome {
    fn from(result: anyhow::Result<Load>) -> Self {
        match result {
            Ok(load) => Outcome::Measured(load),
            Err(err) => Outcome::Failed(format!("{err:#}")),
        }
    }
}

/// The 1,000 keys: `10.0.0.0` … `10.0.3.231`.
fn keys() -> Arc<[String]> {
    (0..KEYS)
        .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
        .collect()
}

/// Runs every rate-limit scenario and renders the report. A failed row is
/// reported and fails the run, after the other rows have been measured.
pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<Finished> {
    let plan = Plan::from_args(args)?;
    let started = super::report::utc_now();
    let keys = keys();
    let redis = Redis::find(args.redis_url.as_deref()).await;
    let mut rows = Vec::new();
    for clients in CLIENT_COUNTS {
        let mut network = network_rows(&redis, &keys, clients, plan).await;
        for scenario in Scenario::ALL {
            let outcome = match scenario {
                Scenario::RoostInProcess => {
                    progress(&format!("{}, {clients} clients", scenario.name()));
                    scenarios::roost_in_process(keys.clone(), clients, plan)
                        .await
                        .into()
                }
                _ => match network.iter().position(|(s, _)| *s == scenario) {
                    Some(i) => network.swap_remove(i).1,
                    None => Outcome::Failed("not run".into()),
                },
            };
            rows.push(Row {
                scenario,
                clients,
                outcome,
            });
        }
    }
    let redis_about = match &redis {
        Ok(Some(redis)) => redis.describe().await,
        Ok(None) => "not installed (`apt-get install redis-server`), rows skipped".to_owned(),
        Err(_) => "could not be started or reached".to_owned(),
    };
    // Stops a redis-server this run started.
    drop(redis);
    let failure = rows.iter().find_map(|row| match &row.outcome {
        Outcome::Failed(err) => Some(anyhow!(
            "{} at {} clients failed: {err}",
            row.scenario.name(),
            row.clients
        )),
        _ => None,
    });
    let report = Report {
        started,
        plan,
        rows,
        redis_about,
    };
    Ok(Finished::new(report.render(), failure))
}

/// The bare, roost HTTP and Redis rows at `clients`, measured in
/// interleaved rounds with all three servers up.
async fn network_rows(
    redis: &anyhow::Result<Option<Redis>>,
    keys: &[String],
    clients: usize,
    plan: Plan,
) -> Vec<(Scenario, Outcome)> {
    let bare = scenarios::bare_axum().await;
    let roost = scenarios::roost_http().await;
    let mut loads: Vec<(Scenario, Option<anyhow::Result<Load>>)> =
        [Scenario::BareAxum, Scenario::RoostHttp, Scenario::Redis]
            .into_iter()
            .map(|scenario| (scenario, None))
            .collect();
    for round in 0..plan.rounds {
        let slice = plan.slice(round);
        for (scenario, total) in &mut loads {
            if matches!(total, Some(Err(_))) {
                continue;
            }
            progress(&format!(
                "{}, {clients} clients, round {} of {}",
                scenario.name(),
                round + 1,
                plan.rounds
            ));
            let load = match (*scenario, &bare, &roost, redis) {
                (Scenario::BareAxum, Ok(server), _, _) => {
                    scenarios::decide_over_http(&server.base, keys, clients, slice).await
                }
                (Scenario::RoostHttp, _, Ok(roost), _) => {
                    scenarios::decide_over_http(&roost.server.base, keys, clients, slice).await
                }
                (Scenario::Redis, _, _, Ok(Some(redis))) => {
                    scenarios::redis_fixed_window(redis, keys, clients, slice).await
                }
                (Scenario::BareAxum, Err(err), _, _) | (Scenario::RoostHttp, _, Err(err), _) => {
                    Err(anyhow!("starting the server failed: {err:#}"))
                }
                _ => continue,
            };
            *total = Some(match (total.take(), load) {
                (Some(Ok(mut sum)), Ok(load)) => {
                    sum.absorb(load);
                    Ok(sum)
                }
                (_, load) => load,
            });
        }
    }
    if let Ok(server) = bare {
        server.stop().await;
    }
    let stop_failed = match roost {
        Ok(roost) => roost.stop().await.err().map(|err| format!("{err:#}")),
        Err(_) => None,
    };
    loads
        .into_iter()
        .map(|(scenario, load)| {
            let outcome = match (scenario, load, redis) {
                (Scenario::Redis, None, Ok(None)) => Outcome::Skipped("redis-server not installed"),
                (Scenario::Redis, None, Err(err)) => Outcome::Failed(format!("{err:#}")),
                (Scenario::RoostHttp, Some(Ok(_)), _) if stop_failed.is_some() => {
                    Outcome::Failed(format!(
                        "stopping roost failed: {}",
                        stop_failed.as_deref().unwrap_or_default()
                    ))
                }
                (_, Some(load), _) => load.into(),
                (_, None, _) => Outcome::Failed("no round was run".into()),
            };
            (scenario, outcome)
        })
        .collect()
}
