//! Counters over the reserved `_roost_counters` table. Overflow is an
//! error (a CHECK constraint), never SQLite's silent switch to floating point.

use super::{as_i64, ActorDb};
use crate::error::EngineError;
use libsql::Value;

impl ActorDb {
    pub fn counter_get(&mut self, name: &str) -> Result<i64, EngineError> {
        let row = self.query_row(
            "SELECT value FROM _roost_counters WHERE name = ?1",
            [Value::Text(name.to_owned())],
        )?;
        match row.as_deref() {
            Some([value]) => as_i64(value),
            _ => Ok(0),
        }
    }

    /// Adds `by` to the counter and returns its new value, in one statement.
    pub fn counter_add(&mut self, name: &str, by: i64) -> Result<i64, EngineError> {
        let row = self
            .query_row(
                "INSERT INTO _roost_counters (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = value + excluded.value
                 RETURNING value",
                vec![Value::Text(name.to_owned()), Value::Integer(by)],
            )
            .map_err(|err| match err {
                EngineError::Sql(msg) if msg.contains("CHECK constraint failed") => {
                    EngineError::InvalidRequest(format!(
                        "counter {name:?} would overflow a signed 64-bit value"
                    ))
                }
                other => other,
            })?;
        match row.as_deref() {
            Some([value]) => as_i64(value),
            _ => Err(EngineError::Internal(
                "counter upsert returned no row".into(),
            )),
        }
    }
}
