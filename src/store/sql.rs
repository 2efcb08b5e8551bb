//! User SQL: the JSON request and response shapes of the SQL API and their
//! execution under the authorizer, the watchdog and the result-size limit.

use super::split::split_statements;
use super::value::SqlValue;
use super::ActorDb;
use crate::error::EngineError;
use crate::store::block_on;
use libsql::params::Params;
use libsql::Statement;
use serde::{Deserialize, Serialize};

/// User statements kept prepared per open actor, most recently run first.
/// Preparing a short statement costs about as much as running it; a few
/// KiB each, bounded so that an idle actor stays small.
pub const USER_STATEMENTS: usize = 8;

/// The column names and rows one statement returned.
type Returned = (Vec<String>, Vec<Vec<SqlValue>>);

/// `{"sql", "params"?}` or `{"statements": [...]}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum SqlRequest {
    Batch { statements: Vec<SqlStatement> },
    Single(SqlStatement),
}

impl SqlRequest {
    pub fn statements(&self) -> &[SqlStatement] {
        match self {
            SqlRequest::Batch { statements } => statements,
            SqlRequest::Single(statement) => std::slice::from_ref(statement),
        }
    }

    /// Whether every statement is a `SELECT`, which cannot change the
    /// database. Judged from the text, conservatively: a read that starts
    /// otherwise (`WITH`, `VALUES`) counts as a write, which only costs it
    /// the write path's wait.
    ///
    /// Asked several times per op, so text without a `;` (one statement)
    /// is judged without splitting it.
    pub fn is_select_only(&self) -> bool {
        self.statements().iter().all(|statement| {
            let sql = &statement.sql;
            starts_with_keyword(sql, "select")
                && (!sql.contains(';')
                    || split_statements(sql)
                        .iter()
                        .all(|piece| starts_with_keyword(piece, "select")))
        })
    }
}

/// One statement (or several separated by `;`, when it has no parameters).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlStatement {
    pub sql: String,
    /// `[1, "a"]` for `?`/`?1`, or `{"x": 1}` for `:x`; blobs are `{"base64": "..."}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub params: SqlParams,
}

/// Positional (`[1, "a"]`) or named (`{"x": 1}` for `:x`, `@x` or `$x`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(untagged)]
pub enum SqlParams {
    #[default]
    None,
    Positional(Vec<SqlValue>),
    Named(std::collections::BTreeMap<String, SqlValue>),
}

impl SqlParams {
    fn is_empty(&self) -> bool {
        match self {
            SqlParams::None => true,
            SqlParams::Positional(v) => v.is_empty(),
            SqlParams::Named(m) => m.is_empty(),
        }
    }

    fn to_libsql(&self) -> Params {
        match self {
            SqlParams::None => Params::None,
            SqlParams::Positional(values) => {
                Params::Positional(values.iter().map(|v| v.0.clone()).collect())
            }
            SqlParams::Named(map) => Params::Named(
                map.iter()
                    .map(|(name, value)| {
                        let name = if name.starts_with([':', '@', '$']) {
                            name.clone()
                        } else {
                            format!(":{name}")
                        };
                        (name, value.0.clone())
                    })
                    .collect(),
            ),
        }
    }
}

/// The outcome of one statement.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct StatementResult {
    pub columns: Vec<String>,
    /// Values: null, integers (exact i64), floats, strings, `{"base64": "..."}`.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub rows: Vec<Vec<SqlValue>>,
    pub rows_affected: u64,
    pub last_insert_rowid: Option<i64>,
}

/// `{"results": [...]}`, one entry per statement run.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct SqlResponse {
    pub results: Vec<StatementResult>,
}

impl ActorDb {
    /// Runs every statement of `request` in order; the caller's savepoint
    /// makes the whole request atomic.
    pub fn run_sql(&mut self, request: &SqlRequest) -> Result<SqlResponse, EngineError> {
        let mut results = Vec::new();
        let mut budget = self.limits().max_result_bytes;
        for statement in request.statements() {
            let pieces = split_statements(&statement.sql);
            if pieces.is_empty() {
                return Err(EngineError::Sql("empty SQL statement".into()));
            }
            if pieces.len() > 1 && !statement.params.is_empty() {
                return Err(EngineError::Sql(
                    "parameters need a single statement; send several as \"statements\"".into(),
                ));
            }
            for piece in pieces {
                results.push(self.run_one(piece, &statement.params, &mut budget)?);
            }
        }
        Ok(SqlResponse { results })
    }

    fn run_one(
        &mut self,
        sql: &str,
        params: &SqlParams,
        budget: &mut usize,
    ) -> Result<StatementResult, EngineError> {
        if starts_with_keyword(sql, "vacuum") {
            // VACUUM INTO would write outside the actor; plain VACUUM cannot
            // run inside the engine's transaction. The engine owns both.
            return Err(EngineError::SqlDenied(
                "VACUUM is not available to user SQL".into(),
            ));
        }
        let changes_before = self.conn.total_changes();
        // The gate stays on the user's side while the statement runs too:
        // SQLite prepares it again inside a step if the schema changed
        // since it was cached, and asks the authorizer again.
        let user = self.gate.for_user();
        let result = self.run_user_statement(sql, params, budget);
        drop(user);
        let (columns, rows) = result?;
        let rows_affected = self.conn.total_changes().saturating_sub(changes_before);
        let last_insert_rowid = (rows_affected > 0).then(|| self.conn.last_insert_rowid());
        Ok(StatementResult {
            columns,
            rows,
            rows_affected,
            last_insert_rowid,
        })
    }

    /// Runs one user statement, from the cache of recent ones when its
    /// parameters bind every placeholder: libsql binds only the values it
    /// is given, and a cached statement would otherwise keep the last
    /// call's values where this one leaves a placeholder unbound (a fresh
    /// statement reads NULL there). Named parameters always get a fresh
    /// statement, for the same reason (a name the statement lacks binds
    /// nothing).
    fn run_user_statement(
        &mut self,
        sql: &str,
        params: &SqlParams,
        budget: &mut usize,
    ) -> Result<Returned, EngineError> {
        let binds_all = |stmt: &Statement| match params {
            SqlParams::None => stmt.parameter_count() == 0,
            SqlParams::Positional(values) => values.len() == stmt.parameter_count(),
            SqlParams::Named(_) => false,
        };
        let stmt = match self.user_statements.remove(sql) {
            Some(cached) if binds_all(&cached) => cached,
            _ => block_on(self.conn.prepare(sql)).map_err(|e| self.error(e))?,
        };
        let outcome = self.step_user_statement(&stmt, params, budget);
        stmt.reset();
        if binds_all(&stmt) {
            self.user_statements.insert(sql.to_owned(), stmt);
        }
        outcome
    }

    fn step_user_statement(
        &mut self,
        stmt: &Statement,
        params: &SqlParams,
        budget: &mut usize,
    ) -> Result<Returned, EngineError> {
        let mut rows = Vec::new();
        let timeout = self.limits().query_timeout_ms;
        let outcome = {
            let _armed = self.slot.arm(timeout);
            (|| -> Result<(), EngineError> {
                let mut cursor =
                    block_on(stmt.query(params.to_libsql())).map_err(|e| self.error(e))?;
                while let Some(row) = block_on(cursor.next()).map_err(|e| self.error(e))? {
                    let width = row.column_count();
                    let mut values = Vec::with_capacity(width.max(0) as usize);
                    for i in 0..width {
                        let value = SqlValue(row.get_value(i).map_err(|e| self.error(e))?);
                        *budget = budget.checked_sub(value.encoded_len()).ok_or_else(|| {
                            EngineError::TooLarge(
                                "the result set exceeds the response size limit".into(),
                            )
                        })?;
                        values.push(value);
                    }
                    rows.push(values);
                }
                Ok(())
            })()
        };
        // Named after stepping: a cached statement prepared again for a
        // changed schema may have other columns than when it was cached.
        let columns = stmt.columns().iter().map(|c| c.name().to_owned()).collect();
        outcome.map(|()| (columns, rows))
    }
}

fn starts_with_keyword(sql: &str, keyword: &str) -> bool {
    let head = sql.trim_start();
    head.len() >= keyword.len()
        && head.as_bytes()[..keyword.len()].eq_ignore_ascii_case(keyword.as_bytes())
        && !head
            .as_bytes()
            .get(keyword.len())
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(statements: &[&str]) -> SqlRequest {
        SqlRequest::Batch {
            statements: statements
                .iter()
                .map(|sql| SqlStatement {
                    sql: (*sql).to_owned(),
                    params: SqlParams::None,
                })
                .collect(),
        }
    }

    fn memory_actor() -> ActorDb {
        let location = crate::store::Location::Memory;
        let limits = crate::config::Limits::default();
        let create = Some(crate::config::Durability::Memory);
        let slot = crate::engine::watchdog::QuerySlot::detached;
        ActorDb::open(&location, "a", create, &limits, slot)
            .unwrap()
            .unwrap()
    }

    fn run(db: &mut ActorDb, sql: &str, params: SqlParams) -> Result<StatementResult, EngineError> {
        let request = SqlRequest::Single(SqlStatement {
            sql: sql.to_owned(),
            params,
        });
        db.run_sql(&request).map(|mut r| r.results.remove(0))
    }

    fn int(i: i64) -> SqlValue {
        SqlValue(libsql::Value::Integer(i))
    }

    #[test]
    fn a_cached_statement_keeps_no_value_a_later_call_leaves_unbound() {
        let mut db = memory_actor();
        let bound = run(&mut db, "SELECT ?1", SqlParams::Positional(vec![int(5)]));
        assert_eq!(bound.unwrap().rows, vec![vec![int(5)]]);
        let unbound = run(&mut db, "SELECT ?1", SqlParams::None).unwrap();
        assert_eq!(unbound.rows, vec![vec![SqlValue(libsql::Value::Null)]]);
        let named = std::collections::BTreeMap::from([("x".to_owned(), int(7))]);
        let by_name = run(&mut db, "SELECT :x, :y", SqlParams::Named(named.clone()));
        let null = SqlValue(libsql::Value::Null);
        assert_eq!(by_name.unwrap().rows, vec![vec![int(7), null.clone()]]);
        let again = run(&mut db, "SELECT :x, :y", SqlParams::Named(named));
        assert_eq!(again.unwrap().rows, vec![vec![int(7), null]]);
        let cached = run(&mut db, "SELECT ?1", SqlParams::Positional(vec![int(6)]));
        assert_eq!(cached.unwrap().rows, vec![vec![int(6)]]);
    }

    #[test]
    fn a_cached_statement_follows_schema_changes_under_the_user_gate() {
        let mut db = memory_actor();
        run(&mut db, "CREATE TABLE t (x)", SqlParams::None).unwrap();
        run(&mut db, "INSERT INTO t VALUES (1)", SqlParams::None).unwrap();
        let before = run(&mut db, "SELECT * FROM t", SqlParams::None).unwrap();
        assert_eq!(
            (before.columns, before.rows),
            (vec!["x".to_owned()], vec![vec![int(1)]])
        );
        run(
            &mut db,
            "ALTER TABLE t ADD COLUMN y DEFAULT 2",
            SqlParams::None,
        )
        .unwrap();
        let after = run(&mut db, "SELECT * FROM t", SqlParams::None).unwrap();
        assert_eq!(after.columns, ["x", "y"]);
        assert_eq!(after.rows, vec![vec![int(1), int(2)]]);
        // A trigger added since makes the cached insert write a reserved
        // table: prepared again inside the step, it is refused as a fresh
        // statement would be, and nothing is written.
        let insert = "INSERT INTO t (x) VALUES (3)";
        run(&mut db, insert, SqlParams::None).unwrap();
        let trigger = run(
            &mut db,
            "CREATE TRIGGER steal AFTER INSERT ON t \
             BEGIN INSERT INTO _roost_counters VALUES ('stolen', 1); END",
            SqlParams::None,
        );
        let fired = run(&mut db, insert, SqlParams::None);
        assert!(
            matches!(trigger, Err(EngineError::SqlDenied(_)))
                || matches!(fired, Err(EngineError::SqlDenied(_))),
            "{trigger:?} / {fired:?}"
        );
        let stolen = run(
            &mut db,
            "SELECT count(*) FROM _roost_counters",
            SqlParams::None,
        );
        assert_eq!(stolen.unwrap().rows, vec![vec![int(0)]]);
    }

    #[test]
    fn only_requests_of_select_statements_count_as_reads() {
        for reads in [
            &["SELECT 1"][..],
            &["  select x FROM t WHERE y = ?"],
            &["SELECT 1; SELECT 2;"],
            &["SELECT ';' AS semicolon"],
            &["SELECT 1", "Select 2"],
        ] {
            assert!(request(reads).is_select_only(), "{reads:?}");
        }
        for writes in [
            &[""][..],
            &[";"],
            &["SELECT 1; DELETE FROM t"],
            &["SELECT 1;DELETE FROM t"],
            &["DELETE FROM t; SELECT 1"],
            &["SELECT 1", "INSERT INTO t VALUES (1)"],
            &["WITH c AS (SELECT 1) DELETE FROM t"],
            // Reads, but not judged so from the text: the write path.
            &["WITH c AS (SELECT 1) SELECT * FROM c"],
            &["/* note */ SELECT 1"],
            &["VALUES (1)"],
            &["SELECTED"],
        ] {
            assert!(!request(writes).is_select_only(), "{writes:?}");
        }
    }

    #[test]
    fn both_request_shapes_parse() {
        let single: SqlRequest =
            serde_json::from_str(r#"{"sql": "SELECT ?", "params": [1]}"#).unwrap();
        assert_eq!(single.statements().len(), 1);
        let batch: SqlRequest = serde_json::from_str(
            r#"{"statements": [{"sql": "SELECT 1"}, {"sql": "SELECT :x", "params": {"x": 2}}]}"#,
        )
        .unwrap();
        assert_eq!(batch.statements().len(), 2);
        assert!(serde_json::from_str::<SqlRequest>(r#"{"sql": 5}"#).is_err());
        assert!(serde_json::from_str::<SqlRequest>(r#"{"statements": "x"}"#).is_err());
    }
}
