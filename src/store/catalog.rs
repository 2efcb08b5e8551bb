//! The machine's catalog of stored actors: `catalog.db` in the data dir maps
//! each actor ID to its durability, so actors can be listed and described
//! without opening a million files. An actor is registered before its file
//! is created and unregistered after its file is removed, so the catalog
//! never misses a stored actor (a row without a file is skipped).
//!
//! It also keeps the actors this machine handed off to another one (table
//! `moved`): they must never be served here again unless handed back.

use super::sql_error;
use crate::config::Durability;
use crate::error::EngineError;
use crate::store::block_on;
use libsql::{Connection, Database, Value};
use parking_lot::Mutex;
use std::path::Path;

pub struct Catalog {
    _db: Database,
    conn: Mutex<Connection>,
}

impl Catalog {
    pub fn open(path: &Path) -> Result<Self, EngineError> {
        let db = block_on(libsql::Builder::new_local(path).build()).map_err(err)?;
        let conn = db.connect().map_err(err)?;
        // A just-closed engine over the same dir may still be checkpointing.
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        block_on(conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS actors (
                 id TEXT PRIMARY KEY,
                 durability TEXT NOT NULL,
                 created_ms INTEGER NOT NULL
             ) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS moved (
                 id TEXT PRIMARY KEY,
                 to_machine TEXT NOT NULL,
                 moved_ms INTEGER NOT NULL
             ) WITHOUT ROWID;",
        ))
        .map_err(err)?;
        Ok(Catalog {
            _db: db,
            conn: Mutex::new(conn),
        })
    }

    pub fn register(&self, id: &str, durability: Durability) -> Result<(), EngineError> {
        let now = now_ms();
        let conn = self.conn.lock();
        block_on(conn.execute(
            "INSERT INTO actors (id, durability, created_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET durability = excluded.durability",
            vec![
                Value::Text(id.to_owned()),
                Value::Text(durability.as_str().to_owned()),
                Value::Integer(now),
            ],
        ))
        .map_err(err)?;
        Ok(())
    }

    pub fn unregister(&self, id: &str) -> Result<(), EngineError> {
        let conn = self.conn.lock();
        block_on(conn.execute(
            "DELETE FROM actors WHERE id = ?1",
            [Value::Text(id.to_owned())],
        ))
        .map_err(err)?;
        Ok(())
    }

    /// Records that `id` now lives on machine `to` (durably: a restart
    /// must not serve the old copy).
    pub fn mark_moved(&self, id: &str, to: &str) -> Result<(), EngineError> {
        let conn = self.conn.lock();
        block_on(conn.execute(
            "INSERT INTO moved (id, to_machine, moved_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET to_machine = excluded.to_machine,
                                            moved_ms = excluded.moved_ms",
            vec![
                Value::Text(id.to_owned()),
                Value::Text(to.to_owned()),
                Value::Integer(now_ms()),
            ],
        ))
        .map_err(err)?;
        Ok(())
    }

    /// `id` lives here again (handed back).
    pub fn clear_moved(&self, id: &str) -> Result<(), EngineError> {
        let conn = self.conn.lock();
        block_on(conn.execute(
            "DELETE FROM moved WHERE id = ?1",
            [Value::Text(id.to_owned())],
        ))
        .map_err(err)?;
        Ok(())
    }

    /// Every handed-off actor and the machine it went to.
    pub fn all_moved(&self) -> Result<Vec<(String, String)>, EngineError> {
        let conn = self.conn.lock();
        let mut rows = block_on(conn.query("SELECT id, to_machine FROM moved", ())).map_err(err)?;
        let mut moved = Vec::new();
        while let Some(row) = block_on(rows.next()).map_err(err)? {
            if let (Ok(Value::Text(id)), Ok(Value::Text(to))) = (row.get_value(0), row.get_value(1))
            {
                moved.push((id, to));
            }
        }
        Ok(moved)
    }

    /// The durability an actor was created with, if it is registered.
    pub fn durability(&self, id: &str) -> Result<Option<Durability>, EngineError> {
        let conn = self.conn.lock();
        let mut rows = block_on(conn.query(
            "SELECT durability FROM actors WHERE id = ?1",
            [Value::Text(id.to_owned())],
        ))
        .map_err(err)?;
        let mut found = None;
        while let Some(row) = block_on(rows.next()).map_err(err)? {
            if let Ok(Value::Text(mode)) = row.get_value(0) {
                found = Some(mode.parse().unwrap_or_default());
            }
        }
        Ok(found)
    }

    /// IDs in order, after `after`, starting with `prefix`, at most `limit`.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, EngineError> {
        let conn = self.conn.lock();
        let lower = match after {
            Some(after) if after >= prefix => after.to_owned(),
            _ => String::new(),
        };
        let mut rows = block_on(conn.query(
            "SELECT id FROM actors WHERE id > ?1 AND substr(id, 1, length(?2)) = ?2 AND id >= ?2
             ORDER BY id LIMIT ?3",
            vec![
                Value::Text(lower),
                Value::Text(prefix.to_owned()),
                Value::Integer(limit as i64),
            ],
        ))
        .map_err(err)?;
        let mut ids = Vec::new();
        while let Some(row) = block_on(rows.next()).map_err(err)? {
            if let Ok(Value::Text(id)) = row.get_value(0) {
                ids.push(id);
            }
        }
        Ok(ids)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn err(e: libsql::Error) -> EngineError {
    match sql_error(e, false, 0) {
        EngineError::Sql(msg) => EngineError::Io(format!("catalog: {msg}")),
        other => other,
    }
}
