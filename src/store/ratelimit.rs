//! The limiter's table: one row per active key, holding its GCRA TAT in
//! microseconds since the Unix epoch. The engine writes it; user SQL may
//! read it but not write it (the authorizer guards `_roost_*`).

use super::{as_i64, block_on, ActorDb};
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

    /// Every active key with its TAT, after [`Self::ratelimit_prepare`].
    pub fn ratelimit_load_all(&mut self, now_us: i64) -> Result<Vec<(String, i64)>, EngineError> {
        self.ratelimit_prepare(now_us)?;
        let stmt = self.cached("SELECT key, tat FROM _roost_ratelimit")?;
        stmt.reset();
        let result = (|| {
            let mut rows = block_on(stmt.query(()))?;
            let mut all = Vec::new();
            while let Some(row) = block_on(rows.next())? {
                all.push((row.get_value(0)?, row.get_value(1)?));
            }
            Ok(all)
        })();
        stmt.reset();
        let rows: Vec<(Value, Value)> = result.map_err(|e: libsql::Error| self.error(e))?;
        rows.into_iter()
            .map(|(key, tat)| match key {
                Value::Text(key) => Ok((key, as_i64(&tat)?)),
                other => Err(EngineError::Internal(format!(
                    "a rate-limit key is stored as {other:?}, not text"
                ))),
            })
            .collect()
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
