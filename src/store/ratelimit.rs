//! The limiter's table: one row per active key, holding its GCRA TAT in
//! microseconds since the Unix epoch. The engine writes it; user SQL may
//! read it but not write it (the authorizer guards `_roost_*`).

use super::{as_i64, ActorDb};
use crate::error::EngineError;
use libsql::Value;

impl ActorDb {
    /// Creates the table if this actor never limited before, and deletes
    /// rows whose TAT has passed (they mean the same as no row).
    pub fn ratelimit_prepare(&mut self, now_us: i64) -> Result<(), EngineError> {
        self.exec(
            "CREATE TABLE IF NOT EXISTS _roost_ratelimit (key TEXT PRIMARY KEY, tat INTEGER NOT NULL) WITHOUT ROWID",
            (),
        )?;
        self.exec(
            "DELETE FROM _roost_ratelimit WHERE tat <= ?1",
            [Value::Integer(now_us)],
        )?;
        Ok(())
    }

    pub fn ratelimit_load(&mut self, key: &str) -> Result<Option<i64>, EngineError> {
        let row = self.query_row(
            "SELECT tat FROM _roost_ratelimit WHERE key = ?1",
            [Value::Text(key.to_owned())],
        )?;
        match row.as_deref() {
            Some([tat]) => as_i64(tat).map(Some),
            _ => Ok(None),
        }
    }

    pub fn ratelimit_store(&mut self, key: &str, tat_us: i64) -> Result<(), EngineError> {
        self.exec(
            "INSERT OR REPLACE INTO _roost_ratelimit (key, tat) VALUES (?1, ?2)",
            vec![Value::Text(key.to_owned()), Value::Integer(tat_us)],
        )
        .map(drop)
    }

    pub fn ratelimit_forget(&mut self, key: &str) -> Result<(), EngineError> {
        self.exec(
            "DELETE FROM _roost_ratelimit WHERE key = ?1",
            [Value::Text(key.to_owned())],
        )
        .map(drop)
    }
}
