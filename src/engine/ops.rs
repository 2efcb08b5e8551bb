//! The operations an actor runs, and how each one is applied to its
//! database. HTTP and the C ABI both build these; nothing here is front-specific.

use crate::error::EngineError;
use crate::limiter::{Decision, Policy};
use crate::store::kv::{KvEntry, ListPage, ListQuery, Precondition};
use crate::store::sql::{SqlRequest, SqlResponse};
use crate::store::ActorDb;

/// One request to an actor.
#[derive(Debug, Clone)]
pub enum Op {
    Sql(SqlRequest),
    KvGet {
        key: String,
    },
    KvPut {
        key: String,
        value: Vec<u8>,
        precondition: Precondition,
    },
    KvDelete {
        key: String,
        precondition: Precondition,
    },
    KvList(ListQuery),
    CounterAdd {
        name: String,
        by: i64,
    },
    CounterGet {
        name: String,
    },
    /// Spends `cost` of `key`'s allowance under `policy` (GCRA), if it can.
    RateLimit {
        key: String,
        policy: Policy,
        cost: u64,
        spend: crate::limiter::state::Spend,
    },
    /// Removes the actor and all its data.
    Destroy,
    /// Writes a consistent copy of the database to a new temporary file.
    Export,
    /// Replaces the actor's state with the SQLite file at `path` (consumed).
    Import {
        path: std::path::PathBuf,
    },
    /// Gives the actor to machine `to`: a final consistent copy, and from
    /// then on every op here answers `Moved` (see `cluster::handoff`).
    HandOff {
        to: String,
    },
}

/// What an operation returns.
#[derive(Debug, Clone, PartialEq)]
pub enum OpOutput {
    Sql(SqlResponse),
    Entry(Option<KvEntry>),
    Version(i64),
    Existed(bool),
    Page(ListPage),
    Counter(i64),
    RateLimit(Decision),
    /// A file the caller now owns (and must remove).
    File(std::path::PathBuf),
    Imported,
    /// The handed-off copy and the actor's durability; `None` for a memory
    /// actor, whose state does not travel.
    HandedOff(Option<(std::path::PathBuf, crate::config::Durability)>),
}

impl Op {
    /// Whether the op changes state (and so may create the actor).
    pub fn writes(&self) -> bool {
        !matches!(
            self,
            Op::KvGet { .. } | Op::KvList(_) | Op::CounterGet { .. } | Op::Export
        )
    }

    /// Whether the op leaves the actor's state as it found it: a read op,
    /// or user SQL made only of `SELECT` statements (which SQLite runs
    /// without a write transaction). Unlike [`Op::writes`], a SQL read may
    /// still create its actor, as any SQL request does.
    pub fn reads_only(&self) -> bool {
        match self {
            Op::Sql(request) => request.is_select_only(),
            op => !op.writes(),
        }
    }

    /// Whether a caller may run the op on its own thread when the actor is
    /// open and idle. A blocking caller (see `engine::caller`) waits for the
    /// answer anyway, so it may run user SQL too, however long it takes
    /// (the query timeout still holds it). An async runtime's worker runs
    /// only ops that take microseconds, so no query stalls its other tasks.
    pub fn may_run_on_caller(&self, blocking: bool) -> bool {
        self.is_cheap() || (blocking && matches!(self, Op::Sql(_)))
    }

    /// Ops that take microseconds: safe to run on an async worker thread.
    pub fn is_cheap(&self) -> bool {
        matches!(
            self,
            Op::KvGet { .. }
                | Op::KvPut { .. }
                | Op::KvDelete { .. }
                | Op::KvList(_)
                | Op::CounterAdd { .. }
                | Op::CounterGet { .. }
                | Op::RateLimit { .. }
        )
    }

    /// Whether a failure half-way could leave part of the op applied. KV and
    /// counter ops make at most one change that matters, and SQLite undoes a
    /// failed statement by itself; user SQL may run many statements.
    pub fn needs_savepoint(&self) -> bool {
        matches!(self, Op::Sql(_))
    }

    /// Approximate bytes the op adds to a buffered transaction.
    pub fn approx_bytes(&self) -> usize {
        match self {
            Op::KvPut { key, value, .. } => key.len() + value.len(),
            Op::Sql(request) => request.statements().iter().map(|s| s.sql.len()).sum(),
            Op::KvDelete { key, .. } => key.len(),
            Op::CounterAdd { name, .. } => name.len() + 8,
            _ => 0,
        }
    }

    /// Input checks that need no database: sizes of keys, values and names.
    pub fn validate(&self, limits: &crate::config::Limits) -> Result<(), EngineError> {
        let key_ok = |what: &str, key: &str| check_key(what, key, limits);
        match self {
            Op::KvGet { key } | Op::KvDelete { key, .. } => key_ok("key", key),
            Op::KvPut { key, value, .. } => {
                key_ok("key", key)?;
                if value.len() > limits.max_value_bytes {
                    return Err(EngineError::TooLarge(format!(
                        "value is {} bytes; the limit is {}",
                        value.len(),
                        limits.max_value_bytes
                    )));
                }
                Ok(())
            }
            Op::CounterAdd { name, .. } | Op::CounterGet { name } => key_ok("counter name", name),
            Op::RateLimit {
                key,
                policy,
                cost,
                spend,
            } => validate_ratelimit(key, policy, *cost, *spend, limits),
            Op::Sql(_)
            | Op::KvList(_)
            | Op::Destroy
            | Op::Export
            | Op::Import { .. }
            | Op::HandOff { .. } => Ok(()),
        }
    }

    /// The answer for an actor that has no stored state (reads only).
    pub fn answer_when_absent(&self) -> Option<OpOutput> {
        match self {
            Op::KvGet { .. } => Some(OpOutput::Entry(None)),
            Op::KvList(_) => Some(OpOutput::Page(ListPage {
                items: vec![],
                cursor: None,
            })),
            Op::CounterGet { .. } => Some(OpOutput::Counter(0)),
            _ => None,
        }
    }

    /// Runs the op against an open database (`Destroy` is the actor's job).
    pub fn apply(&self, db: &mut ActorDb) -> Result<OpOutput, EngineError> {
        Ok(match self {
            Op::Sql(request) => OpOutput::Sql(db.run_sql(request)?),
            Op::KvGet { key } => OpOutput::Entry(db.kv_get(key)?),
            Op::KvPut {
                key,
                value,
                precondition,
            } => OpOutput::Version(db.kv_put(key, value, *precondition)?),
            Op::KvDelete { key, precondition } => {
                OpOutput::Existed(db.kv_delete(key, *precondition)?)
            }
            Op::KvList(query) => OpOutput::Page(db.kv_list(query)?),
            Op::CounterAdd { name, by } => OpOutput::Counter(db.counter_add(name, *by)?),
            Op::CounterGet { name } => OpOutput::Counter(db.counter_get(name)?),
            Op::Destroy
            | Op::Export
            | Op::Import { .. }
            | Op::HandOff { .. }
            | Op::RateLimit { .. } => {
                return Err(EngineError::Internal(
                    "whole-actor and limiter ops are run by the actor".into(),
                ))
            }
        })
    }
}

fn check_key(what: &str, key: &str, limits: &crate::config::Limits) -> Result<(), EngineError> {
    if key.is_empty() {
        Err(EngineError::InvalidRequest(format!("{what} is empty")))
    } else if key.len() > limits.max_key_bytes {
        Err(EngineError::TooLarge(format!(
            "{what} is {} bytes; the limit is {}",
            key.len(),
            limits.max_key_bytes
        )))
    } else {
        Ok(())
    }
}

/// A rate-limit request's checks ([`Op::validate`] of `Op::RateLimit`),
/// for callers that decide without building the op.
pub fn validate_ratelimit(
    key: &str,
    policy: &Policy,
    cost: u64,
    spend: crate::limiter::state::Spend,
    limits: &crate::config::Limits,
) -> Result<(), EngineError> {
    check_key("rate-limit key", key, limits)?;
    policy.validate()?;
    match spend {
        crate::limiter::state::Spend::IfAllowed => policy.check_cost(cost),
        crate::limiter::state::Spend::Always => Ok(()),
    }
}
