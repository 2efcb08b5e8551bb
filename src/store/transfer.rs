//! Moving whole actors in and out: a consistent export with `VACUUM INTO`,
//! and the validation that turns an uploaded file into an actor database.

use super::{sql_error, ActorDb, Location};
use crate::config::{Durability, Limits};
use crate::error::EngineError;
use crate::store::block_on;
use libsql::Value;
use std::io::Read;
use std::path::Path;

const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

impl ActorDb {
    /// Writes a consistent, compact copy of the database to `path`. Must run
    /// outside a transaction (the actor commits first).
    pub fn vacuum_into(&mut self, path: &Path) -> Result<(), EngineError> {
        let target = Value::Text(path.to_string_lossy().into_owned());
        block_on(self.conn.execute("VACUUM INTO ?1", [target])).map_err(|e| self.error(e))?;
        Ok(())
    }
}

/// Checks that `path` holds a sound SQLite database within the size limit,
/// then makes it a database of actor `id`: the reserved schema, the stored
/// ID and durability, WAL mode. On error the file is left for the caller
/// to delete and nothing else has changed.
pub fn prepare_import(
    path: &Path,
    id: &str,
    durability: Durability,
    limits: &Limits,
) -> Result<(), EngineError> {
    let size = std::fs::metadata(path)?.len();
    if size > limits.max_actor_bytes {
        return Err(EngineError::TooLarge(format!(
            "the upload is {size} bytes; actors are limited to {}",
            limits.max_actor_bytes
        )));
    }
    let mut header = [0u8; 16];
    let readable = std::fs::File::open(path)?.read_exact(&mut header).is_ok();
    if !readable || &header != SQLITE_HEADER {
        return Err(EngineError::InvalidRequest(
            "the upload is not a SQLite database".into(),
        ));
    }
    check_and_relabel(path, id, durability).map_err(|e| match e {
        EngineError::Sql(msg) | EngineError::Internal(msg) | EngineError::Io(msg) => {
            EngineError::InvalidRequest(format!("the upload is not a usable database: {msg}"))
        }
        other => other,
    })?;
    // Opening as the actor creates any missing reserved tables and checks
    // that the existing ones have the shape the engine needs.
    let location = Location::File(path.to_path_buf());
    let mut db = ActorDb::open(&location, id, Some(durability), limits, |conn| {
        crate::engine::watchdog::QuerySlot::detached(conn)
    })?
    .ok_or_else(|| EngineError::Internal("the upload vanished".into()))?;
    // Written below outside an engine transaction.
    db.set_write_limits()?;
    for probe in [
        "SELECT key, value, version FROM _roost_kv LIMIT 0",
        "SELECT name, value FROM _roost_counters LIMIT 0",
    ] {
        db.query_row(probe, ()).map_err(|e| {
            EngineError::InvalidRequest(format!("reserved table has the wrong shape: {e}"))
        })?;
    }
    check_reserved_rows(&mut db)?;
    // A journal position is another machine's (or an older run's) count:
    // here this file holds none of this journal's records. Left as it
    // was, it could mark new increments as already written, and recovery
    // would skip them.
    db.set_journal_lsn(0)?;
    // Leave one self-contained file: no WAL beside it when it is renamed.
    db.pragma("PRAGMA wal_checkpoint(TRUNCATE)")?;
    db.pragma("PRAGMA journal_mode = DELETE")?;
    db.close();
    // The persistent-WAL VFS (see `vfs`) leaves the emptied WAL behind.
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    match std::fs::remove_file(wal) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Refuses reserved rows the engine could not serve later (a file written
/// by hand or damaged on the way), and sets the KV clock past every stored
/// version so new writes keep versions rising.
fn check_reserved_rows(db: &mut ActorDb) -> Result<(), EngineError> {
    let refuse = |what: &str| {
        Err(EngineError::InvalidRequest(format!(
            "the upload is not a usable database: {what}"
        )))
    };
    // Keys and counter names come back as text; SQLite stores any bytes.
    let bad_key = "SELECT count(*) FROM _roost_kv WHERE typeof(key) != 'blob' \
                   OR typeof(value) != 'blob' OR typeof(version) != 'integer' OR version < 1";
    if db
        .query_row(bad_key, ())?
        .and_then(|r| r.into_iter().next())
        != Some(Value::Integer(0))
    {
        return refuse("a KV row has the wrong types");
    }
    if !db.all_text_is_utf8("SELECT key FROM _roost_kv")? {
        return refuse("a KV key is not UTF-8");
    }
    if !db.all_text_is_utf8("SELECT name FROM _roost_counters")? {
        return refuse("a counter name is not UTF-8");
    }
    let clock = db.query_row("SELECT value FROM _roost_meta WHERE key = 'kv_clock'", ())?;
    match clock.and_then(|r| r.into_iter().next()) {
        None | Some(Value::Integer(_)) => {}
        Some(_) => return refuse("the KV clock is not an integer"),
    }
    db.exec(
        "INSERT INTO _roost_meta (key, value) \
         VALUES ('kv_clock', (SELECT coalesce(max(version), 0) FROM _roost_kv)) \
         ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
        (),
    )?;
    Ok(())
}

/// Runs `integrity_check` and rewrites the stored ID and durability.
fn check_and_relabel(path: &Path, id: &str, durability: Durability) -> Result<(), EngineError> {
    let db = block_on(libsql::Builder::new_local(path).build()).map_err(err)?;
    let conn = db.connect().map_err(err)?;
    let mut rows = block_on(conn.query("PRAGMA integrity_check", ())).map_err(err)?;
    let mut problems = Vec::new();
    while let Some(row) = block_on(rows.next()).map_err(err)? {
        match row.get_value(0).map_err(err)? {
            Value::Text(line) if line == "ok" => {}
            other => problems.push(format!("{other:?}")),
        }
    }
    drop(rows);
    if !problems.is_empty() {
        return Err(EngineError::InvalidRequest(format!(
            "integrity check failed: {}",
            problems.into_iter().take(5).collect::<Vec<_>>().join("; ")
        )));
    }
    let has_meta = {
        let mut rows = block_on(conn.query(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '_roost_meta'",
            (),
        ))
        .map_err(err)?;
        let mut found = false;
        while block_on(rows.next()).map_err(err)?.is_some() {
            found = true;
        }
        found
    };
    if has_meta {
        block_on(conn.execute(
            "INSERT OR REPLACE INTO _roost_meta (key, value) VALUES ('id', ?1), ('durability', ?2)",
            vec![
                Value::Text(id.to_owned()),
                Value::Text(durability.as_str().to_owned()),
            ],
        ))
        .map_err(err)?;
    }
    Ok(())
}

fn err(e: libsql::Error) -> EngineError {
    sql_error(e, false, 0)
}
