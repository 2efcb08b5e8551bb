//! The engine suite, in process and without HTTP: each operation of the
//! engine API (counter add, KV put and get, SQL insert and select) at each
//! durability, from 1 and from 8 OS threads, against a hand-written libSQL
//! connection doing the same statement, prepared once, in the equivalent
//! mode. It is a `roost bench` suite rather than criterion or divan so one
//! run writes every figure, with its baseline, to one report.

mod report;
pub(super) mod subjects;

use anyhow::ensure;
use std::time::Duration;

use super::load::{drive_threads_after, Answer, Load};
use super::report::CountCheck;
use super::{progress, BenchArgs, Finished};
use crate::Durability;
pub(super) use report::side;
use report::Report;
use subjects::{Libsql, Op, Roost, Subject, SEEDED};

/// Concurrent callers of every operation.
const CALLERS: [usize; 2] = [1, 8];
/// In the order the modes are run and printed.
const MODES: [Durability; 3] = [
    Durability::Durable,
    Durability::Buffered,
    Durability::Memory,
];

/// The settings one run uses, resolved from the flags.
#[derive(Debug, Clone, Copy)]
struct Plan {
    warm_up: Duration,
    measure: Duration,
}

impl Plan {
    /// 60 short measurements: 0.2 s + 0.3 s each with `--quick` (about
    /// 35 s in all), 0.5 s + 2 s otherwise; `--seconds` sets the measured part.
    fn from_args(args: &BenchArgs) -> anyhow::Result<Self> {
        let measure = match (args.seconds, args.quick) {
            (Some(seconds), _) => Duration::from_secs(seconds),
            (None, true) => Duration::from_millis(300),
            (None, false) => Duration::from_secs(2),
        };
        ensure!(!measure.is_zero(), "--seconds must be at least 1");
        Ok(Plan {
            warm_up: Duration::from_millis(if args.quick { 200 } else { 500 }),
            measure,
        })
    }
}

/// Checks the flags this suite reads.
pub(super) fn check_args(args: &BenchArgs) -> anyhow::Result<()> {
    Plan::from_args(args).map(drop)
}

/// One operation at one durability and caller count, both ways.
struct Row {
    mode: Durability,
    op: Op,
    callers: usize,
    roost: Result<Measured, String>,
    libsql: Result<Measured, String>,
}

/// What one side of a row saw.
pub(super) struct Measured {
    pub(super) load: Load,
    /// Counter rows: the stored value against the acknowledged adds.
    pub(super) check: Option<CountCheck>,
}

/// `callers` OS threads calling `op` on `subject` for the warm-up and the
/// measured window; call `k` of thread `t` uses key or row `(t + k) %`
/// [`SEEDED`]. Counter adds go to the counter `counter` and are checked.
pub(super) fn measure(
    subject: &dyn Subject,
    op: Op,
    counter: &str,
    callers: usize,
    warm_up: Duration,
    measure: Duration,
) -> anyhow::Result<Measured> {
    let load = drive_threads_after(callers, warm_up, measure, |thread, k| {
        subject
            .call(op, counter, (thread + k) % SEEDED)
            .map(|()| Answer::Done)
    })?;
    let check = match op {
        Op::CounterAdd => Some(CountCheck {
            stored: subject.counter(counter)?,
            acknowledged: load.total_ok,
        }),
        _ => None,
    };
    Ok(Measured { load, check })
}

/// Runs every mode, operation and caller count; renders the report. A
/// mode that cannot be set up, or a failed measurement, is reported and
/// fails the run after the rest has been measured.
pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<Finished> {
    let plan = Plan::from_args(args)?;
    let started = super::report::utc_now();
    let (rows, setup_failures) = tokio::task::spawn_blocking(move || {
        let mut rows = Vec::new();
        let mut setup_failures = Vec::new();
        for mode in MODES {
            if let Err(err) = run_mode(mode, plan, &mut rows) {
                setup_failures.push(format!("{}: {err:#}", mode.as_str()));
            }
        }
        (rows, setup_failures)
    })
    .await?;
    let failure = setup_failures
        .first()
        .cloned()
        .or_else(|| {
            rows.iter().find_map(|row| {
                [&row.roost, &row.libsql]
                    .into_iter()
                    .find_map(|side| side.as_ref().err())
                    .map(|err| {
                        format!(
                            "{} {} at {} callers: {err}",
                            row.mode.as_str(),
                            row.op.name(),
                            row.callers
                        )
                    })
            })
        })
        .map(|err| anyhow::anyhow!("engine suite: {err}"));
    let report = Report {
        started,
        plan,
        rows,
        setup_failures,
    };
    Ok(Finished::new(report.render(), failure))
}

/// One engine and one baseline connection for `mode`, measured op by op,
/// roost then libSQL, so noise falls on both alike.
fn run_mode(mode: Durability, plan: Plan, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let roost = Roost::open(mode)?;
    let libsql = Libsql::open(mode)?;
    for op in Op::ALL {
        for callers in CALLERS {
            progress(&format!(
                "in process, {} {}, {callers} callers",
                mode.as_str(),
                op.name()
            ));
            let counter = format!("n-{callers}");
            let side = |subject: &dyn Subject| {
                measure(subject, op, &counter, callers, plan.warm_up, plan.measure)
                    .map_err(|err| format!("{err:#}"))
            };
            rows.push(Row {
                mode,
                op,
                callers,
                roost: side(&roost),
                libsql: side(&libsql),
            });
        }
    }
    drop(libsql);
    roost.close()
}
