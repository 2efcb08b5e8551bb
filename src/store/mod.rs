//! libSQL access for one actor: opening its database, the reserved schema,
//! transactions, and the KV / counter / SQL operations on top of it.
//!
//! The `libsql` crate's local calls are `async` in signature but complete
//! synchronously, so every call here is driven with `block_on` on the
//! actor's own thread (see `engine::actor`); nothing here touches tokio.

pub mod authorizer;
pub mod catalog;
pub mod counters;
pub mod journal;
pub mod kv;
pub mod ratelimit;
mod shm;
pub mod split;
pub mod sql;
mod syscalls;
pub mod transfer;
pub mod value;
pub mod vfs;

use crate::config::{Durability, Limits};
use crate::engine::watchdog::QuerySlot;
use crate::error::EngineError;
use authorizer::UserSqlGate;
use libsql::{params::IntoParams, Connection, Database, Statement, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Drives one of libSQL's local calls, which are `async` in signature but
/// finish on their first poll. Unlike an executor's `block_on`, this may
/// run inside another executor (an op run inline by a caller that is itself
/// blocking on the engine).
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::yield_now();
    }
}

/// Page size of new actor files (existing and imported files keep theirs).
const NEW_PAGE_SIZE: u64 = 2048;

/// Marks a file as a roost actor database (`PRAGMA application_id`).
const APPLICATION_ID: i64 = 0x726f_6f73;
/// `PRAGMA synchronous` as SQLite reports FULL.
const SYNCHRONOUS_FULL: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _roost_meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _roost_kv (key BLOB PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _roost_counters (
    name TEXT PRIMARY KEY,
    -- SQLite turns an overflowing integer sum into a float; this refuses it.
    value INTEGER NOT NULL CHECK (typeof(value) = 'integer')
) WITHOUT ROWID;
INSERT OR IGNORE INTO _roost_meta (key, value) VALUES ('kv_clock', 0);
";

/// Where an actor's state lives.
#[derive(Debug, Clone)]
pub enum Location {
    File(PathBuf),
    Memory,
}

/// An open actor database, used only from its actor's thread.
pub struct ActorDb {
    // Kept so the database outlives the connection.
    _db: Database,
    conn: Connection,
    gate: UserSqlGate,
    statements: HashMap<&'static str, Statement>,
    /// The user's most recently run statements, by their text (see
    /// `sql::USER_STATEMENTS`).
    user_statements: hashlink::LruCache<String, Statement>,
    durability: Durability,
    limits: Limits,
    slot: Arc<QuerySlot>,
    /// Whether the settings that only matter to writes are made (see
    /// [`ActorDb::set_write_limits`]).
    write_limits_set: bool,
}

/// Whether a new WAL connection already commits with `synchronous = FULL`
/// (SQLite's default, unless a build changes it). Read on the first file
/// actor's connection and trusted for the rest of the process: setting it
/// again cost every cold open a statement, 2% of its instructions.
fn commits_synced_by_default(db: &mut ActorDb) -> Result<bool, EngineError> {
    static FULL_BY_DEFAULT: OnceLock<bool> = OnceLock::new();
    if let Some(full) = FULL_BY_DEFAULT.get() {
        return Ok(*full);
    }
    let full = db.pragma_value("PRAGMA synchronous")? == Value::Integer(SYNCHRONOUS_FULL);
    Ok(*FULL_BY_DEFAULT.get_or_init(|| full))
}

impl ActorDb {
    /// Opens the actor's database. `create` names the durability for a new
    /// actor; without it a missing file yields `Ok(None)`.
    pub fn open(
        location: &Location,
        id: &str,
        create: Option<Durability>,
        limits: &Limits,
        slot_for: impl FnOnce(Connection) -> Arc<QuerySlot>,
    ) -> Result<Option<Self>, EngineError> {
        let exists = match location {
            Location::File(path) => path.exists(),
            Location::Memory => false,
        };
        Self::open_known(location, exists, id, create, limits, slot_for)
    }

    /// [`ActorDb::open`] for a caller that has just looked whether the
    /// file `exists` (and nothing else can create or remove it meanwhile):
    /// one `stat` of a deep path fewer on every cold open.
    pub fn open_known(
        location: &Location,
        exists: bool,
        id: &str,
        create: Option<Durability>,
        limits: &Limits,
        slot_for: impl FnOnce(Connection) -> Arc<QuerySlot>,
    ) -> Result<Option<Self>, EngineError> {
        // Through the `roost` VFS when it registered.
        let via_vfs = matches!(location, Location::File(_)) && vfs::register();
        let path = match location {
            Location::File(path) => {
                let text = path.to_string_lossy().into_owned();
                if via_vfs {
                    vfs::uri(&text)
                } else {
                    text
                }
            }
            Location::Memory => ":memory:".to_owned(),
        };
        let exists = exists && matches!(location, Location::File(_));
        if !exists && create.is_none() {
            return Ok(None);
        }
        let made_dirs = match (location, exists) {
            (Location::File(file), false) => create_parent_dirs(file)?,
            _ => false,
        };
        let db = block_on(libsql::Builder::new_local(&path).build()).map_err(open_error)?;
        let conn = db.connect().map_err(open_error)?;
        let gate = UserSqlGate::default();
        conn.authorizer(Some(gate.hook())).map_err(open_error)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_error)?;
        let slot = slot_for(conn.clone());
        let mut db = ActorDb {
            _db: db,
            conn,
            gate,
            statements: HashMap::new(),
            user_statements: hashlink::LruCache::new(sql::USER_STATEMENTS),
            durability: create.unwrap_or_default(),
            limits: limits.clone(),
            slot,
            write_limits_set: false,
        };
        if matches!(location, Location::File(_)) {
            if !exists {
                // Only before the first write: an actor holds a handful of
                // small rows, and its four pages (schema, meta, KV,
                // counters) take 8 KiB on disk instead of 16.
                db.pragma(&format!("PRAGMA page_size = {NEW_PAGE_SIZE}"))?;
            }
            // The `roost` VFS keeps the WAL index in memory of its own (see
            // `shm`). Otherwise hold the file exclusively, which keeps the
            // index on SQLite's heap: no -shm file to create, map and delete
            // on every open and close.
            if !(via_vfs && shm::available()) {
                db.pragma("PRAGMA locking_mode = EXCLUSIVE")?;
            }
            db.pragma("PRAGMA journal_mode = WAL")?;
            if !commits_synced_by_default(&mut db)? {
                db.pragma("PRAGMA synchronous = FULL")?;
            }
        }
        if !exists {
            // Written at once (the schema, or a memory actor's first op
            // without a transaction of the engine's).
            db.set_write_limits()?;
        }
        db.init_schema(id, create)?;
        if let (Location::File(file), false) = (location, exists) {
            sync_new_entry(file, made_dirs)?;
        }
        Ok(Some(db))
    }

    fn init_schema(&mut self, id: &str, create: Option<Durability>) -> Result<(), EngineError> {
        let app_id = self.pragma_value("PRAGMA application_id")?;
        // Marked as roost's: labelled already, or laid down from
        // `new_actor_image` and not yet labelled (no `id`).
        let laid_out = app_id == Value::Integer(APPLICATION_ID);
        if laid_out {
            match self.meta("id")? {
                Value::Text(stored) if stored == id => {
                    if let Value::Text(mode) = self.meta("durability")? {
                        self.durability = mode.parse().unwrap_or_default();
                    }
                    return Ok(());
                }
                Value::Null => {}
                stored => {
                    return Err(EngineError::Internal(format!(
                        "database file of actor {id:?} holds another actor ({stored:?})"
                    )))
                }
            }
        }
        let durability = create.unwrap_or_default();
        // execute_batch takes no parameters: the ID and durability are bound
        // in their own statement of the same transaction.
        let setup = if laid_out {
            "BEGIN;".to_owned()
        } else {
            format!("BEGIN; {SCHEMA}")
        };
        block_on(self.conn.execute_batch(&setup)).map_err(|e| self.error(e))?;
        let labelled = self.exec(
            "INSERT OR REPLACE INTO _roost_meta (key, value) VALUES ('id', ?1), ('durability', ?2)",
            [
                Value::Text(id.to_owned()),
                Value::Text(durability.as_str().to_owned()),
            ],
        );
        // The labels (and, for a file SQLite made, the schema and the mark)
        // go in one transaction: one commit (one fsync) for a new actor's
        // setup, and a crash leaves either all of it or none.
        let marked = labelled
            .and_then(|_| match laid_out {
                true => Ok(()),
                false => self.pragma(&format!("PRAGMA application_id = {APPLICATION_ID}")),
            })
            .and_then(|()| self.commit());
        if let Err(err) = marked {
            self.rollback();
            return Err(err);
        }
        self.durability = durability;
        Ok(())
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn meta(&mut self, key: &str) -> Result<Value, EngineError> {
        let row = self.query_row(
            "SELECT value FROM _roost_meta WHERE key = ?1",
            [Value::Text(key.to_owned())],
        )?;
        Ok(row
            .and_then(|r| r.into_iter().next())
            .unwrap_or(Value::Null))
    }

    /// The journal position this file's counters cover (0: none).
    pub fn journal_lsn(&mut self) -> Result<u64, EngineError> {
        match self.meta("journal_lsn")? {
            Value::Integer(lsn) => Ok(lsn.max(0) as u64),
            _ => Ok(0),
        }
    }

    /// Records the journal position the counters now cover (in the open
    /// transaction, with them).
    pub fn set_journal_lsn(&mut self, lsn: u64) -> Result<(), EngineError> {
        self.exec(
            "INSERT OR REPLACE INTO _roost_meta (key, value) VALUES ('journal_lsn', ?1)",
            [Value::Integer(lsn as i64)],
        )
        .map(drop)
    }

    pub(crate) fn pragma(&mut self, sql: &str) -> Result<(), EngineError> {
        // Pragmas may return a row (journal_mode does): drain it.
        let mut rows = block_on(self.conn.query(sql, ())).map_err(|e| self.error(e))?;
        while block_on(rows.next()).map_err(|e| self.error(e))?.is_some() {}
        Ok(())
    }

    fn pragma_value(&mut self, sql: &str) -> Result<Value, EngineError> {
        let mut rows = block_on(self.conn.query(sql, ())).map_err(|e| self.error(e))?;
        let mut first = Value::Null;
        while let Some(row) = block_on(rows.next()).map_err(|e| self.error(e))? {
            if first == Value::Null {
                first = row.get_value(0).map_err(|e| self.error(e))?;
            }
        }
        Ok(first)
    }

    /// Runs a cached engine statement and returns its first row, stepping it
    /// to completion (an unfinished statement would block WAL checkpoints).
    pub(crate) fn query_row(
        &mut self,
        sql: &'static str,
        params: impl IntoParams,
    ) -> Result<Option<Vec<Value>>, EngineError> {
        let stmt = self.cached(sql)?;
        stmt.reset();
        let result = (|| {
            let mut rows = block_on(stmt.query(params))?;
            let mut first = None;
            while let Some(row) = block_on(rows.next())? {
                if first.is_none() {
                    let width = row.column_count();
                    first = Some(
                        (0..width)
                            .map(|i| row.get_value(i))
                            .collect::<Result<Vec<_>, _>>()?,
                    );
                }
            }
            Ok(first)
        })();
        stmt.reset();
        result.map_err(|e| self.error(e))
    }

    /// Whether every value the one-column engine query `sql` returns is
    /// NULL, a blob or text that is valid UTF-8 (reads bytes, not strings,
    /// so bad text is seen rather than an error).
    pub(crate) fn all_text_is_utf8(&mut self, sql: &'static str) -> Result<bool, EngineError> {
        let stmt = self.cached(sql)?;
        stmt.reset();
        let result = (|| {
            let mut rows = block_on(stmt.query(()))?;
            while let Some(row) = block_on(rows.next())? {
                let bytes = match row.get_value(0) {
                    Ok(Value::Text(_) | Value::Null) => continue,
                    Ok(Value::Blob(bytes)) => bytes,
                    Ok(_) => return Ok(false),
                    // libsql refuses to build a String from bad UTF-8.
                    Err(_) => return Ok(false),
                };
                if std::str::from_utf8(&bytes).is_err() {
                    return Ok(false);
                }
            }
            Ok(true)
        })();
        stmt.reset();
        result.map_err(|e| self.error(e))
    }

    /// Runs a cached engine statement for its effect; returns rows changed.
    pub(crate) fn exec(
        &mut self,
        sql: &'static str,
        params: impl IntoParams,
    ) -> Result<u64, EngineError> {
        let stmt = self.cached(sql)?;
        stmt.reset();
        let result = block_on(stmt.execute(params));
        stmt.reset();
        result.map(|n| n as u64).map_err(|e| self.error(e))
    }

    fn cached(&mut self, sql: &'static str) -> Result<&Statement, EngineError> {
        if !self.statements.contains_key(sql) {
            let stmt = block_on(self.conn.prepare(sql)).map_err(|e| self.error(e))?;
            self.statements.insert(sql, stmt);
        }
        Ok(&self.statements[sql])
    }

    /// Makes the settings that only a write needs, once per connection:
    /// the size limit (`max_page_count`, from the file's page size) and
    /// the bound on the WAL file left after a checkpoint. Left out of the
    /// open, they cost an actor that is only read three statements (6% of
    /// a cold open's instructions). Every engine write to a file starts
    /// its transaction here ([`ActorDb::begin`], [`ActorDb::savepoint`]);
    /// a new file and a memory actor get them at open.
    pub(crate) fn set_write_limits(&mut self) -> Result<(), EngineError> {
        if self.write_limits_set {
            return Ok(());
        }
        self.pragma("PRAGMA journal_size_limit = 8388608")?;
        let page_size = match self.pragma_value("PRAGMA page_size")? {
            Value::Integer(size) if size > 0 => size as u64,
            _ => NEW_PAGE_SIZE,
        };
        let max_pages = self.limits.max_actor_bytes.div_ceil(page_size).max(16);
        self.pragma(&format!("PRAGMA max_page_count = {max_pages}"))?;
        self.write_limits_set = true;
        Ok(())
    }

    /// Starts the engine's transaction that a batch of operations shares.
    pub fn begin(&mut self) -> Result<(), EngineError> {
        self.set_write_limits()?;
        self.exec("BEGIN IMMEDIATE", ()).map(drop)
    }

    /// Commits; in WAL mode with `synchronous = FULL` this is the fsync.
    pub fn commit(&mut self) -> Result<(), EngineError> {
        self.exec("COMMIT", ()).map(drop)
    }

    /// Whether commits fsync (`synchronous = FULL`, the default) or not
    /// (`NORMAL`: for writes the shared journal still holds, whose segments
    /// go only after a sync of the whole file system, see
    /// `store::journal`). Only outside a transaction (SQLite's rule).
    pub fn set_synced_commits(&mut self, synced: bool) -> Result<(), EngineError> {
        match synced {
            true => self.exec("PRAGMA synchronous = FULL", ()),
            false => self.exec("PRAGMA synchronous = NORMAL", ()),
        }
        .map(drop)
    }

    pub fn rollback(&mut self) {
        if self.in_transaction() {
            let _ = self.exec("ROLLBACK", ());
        }
    }

    pub fn savepoint(&mut self) -> Result<(), EngineError> {
        if !self.in_transaction() {
            self.set_write_limits()?;
        }
        self.exec("SAVEPOINT op", ()).map(drop)
    }

    pub fn release(&mut self) -> Result<(), EngineError> {
        self.exec("RELEASE op", ()).map(drop)
    }

    /// Undoes the current operation only (when SQLite has not already
    /// rolled back the whole transaction).
    pub fn rollback_op(&mut self) {
        if self.in_transaction() {
            let _ = self.exec("ROLLBACK TO op", ());
            let _ = self.exec("RELEASE op", ());
        }
    }

    pub fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }

    /// Closes the connection, checkpointing the WAL into the main file.
    pub fn close(mut self) {
        self.rollback();
        self.statements.clear();
        self.user_statements.clear();
    }

    /// Maps a libSQL error to the engine's, knowing whether the watchdog
    /// interrupted the statement.
    pub(crate) fn error(&self, err: libsql::Error) -> EngineError {
        let timed_out = self.slot.take_fired();
        sql_error(err, timed_out, self.limits.query_timeout_ms)
    }
}

/// Classifies a libSQL error by its SQLite result code.
pub fn sql_error(err: libsql::Error, timed_out: bool, timeout_ms: u64) -> EngineError {
    match err {
        // The authorizer's denials of functions surface as SQLITE_ERROR.
        libsql::Error::SqliteFailure(_, message) if message.contains("not authorized") => {
            EngineError::SqlDenied(message)
        }
        libsql::Error::SqliteFailure(code, message) => match code & 0xff {
            9 if timed_out => {
                metrics::counter!(crate::telemetry::QUERY_TIMEOUTS).increment(1);
                EngineError::QueryTimeout(timeout_ms)
            }
            9 => EngineError::Sql(format!("interrupted: {message}")),
            18 => EngineError::TooLarge(message),
            // SQLITE_AUTH: the authorizer refused a read (a column it hides).
            23 => EngineError::SqlDenied(message),
            13 => EngineError::InsufficientStorage(message),
            10 | 14 => EngineError::Io(message),
            7 | 11 | 26 => EngineError::Internal(message),
            _ => EngineError::Sql(message),
        },
        other => EngineError::Sql(other.to_string()),
    }
}

fn open_error(err: libsql::Error) -> EngineError {
    match sql_error(err, false, 0) {
        EngineError::Sql(msg) => EngineError::Io(msg),
        other => other,
    }
}

/// The bytes of an empty actor file: 2 KiB pages, WAL mode, the reserved
/// schema and roost's mark, but no ID (its first open labels it). Built in
/// `scratch`, which is removed again.
pub fn new_actor_image(scratch: &Path) -> Result<Vec<u8>, EngineError> {
    let path = scratch.to_string_lossy().into_owned();
    let built = (|| -> Result<Vec<u8>, EngineError> {
        let db = block_on(libsql::Builder::new_local(&path).build()).map_err(open_error)?;
        let conn = db.connect().map_err(open_error)?;
        // A scratch file: nothing here needs to survive a crash.
        for pragma in [
            format!("PRAGMA page_size = {NEW_PAGE_SIZE}"),
            "PRAGMA journal_mode = WAL".to_owned(),
            "PRAGMA synchronous = OFF".to_owned(),
        ] {
            let mut rows = block_on(conn.query(&pragma, ())).map_err(open_error)?;
            while block_on(rows.next()).map_err(open_error)?.is_some() {}
        }
        let setup = format!(
            "BEGIN; {SCHEMA} PRAGMA application_id = {APPLICATION_ID}; COMMIT;
             PRAGMA wal_checkpoint(TRUNCATE);"
        );
        block_on(conn.execute_batch(&setup)).map_err(open_error)?;
        drop(conn);
        drop(db);
        Ok(std::fs::read(scratch)?)
    })();
    for suffix in ["", "-wal", "-shm"] {
        let mut file = scratch.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
    built
}

/// Creates the directory `file` goes in if it is missing; says whether it
/// was (actor directories are made durable once, when the data dir is
/// laid out, so a new actor normally syncs only its own directory).
pub(crate) fn create_parent_dirs(file: &Path) -> Result<bool, EngineError> {
    match file.parent() {
        Some(parent) if !parent.is_dir() => {
            std::fs::create_dir_all(parent)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Makes a new (or just removed) file's directory entry durable, and the
/// entries of its directories too if [`create_parent_dirs`] `made` them.
pub(crate) fn sync_new_entry(file: &Path, made: bool) -> Result<(), EngineError> {
    match file.parent() {
        _ if made => sync_parent_dir(file),
        Some(parent) => Ok(std::fs::File::open(parent)?.sync_all()?),
        None => Ok(()),
    }
}

/// Makes a new file's directory entry durable (and its parents', which may
/// have just been created), so an acknowledged first write survives a crash.
pub(crate) fn sync_parent_dir(file: &Path) -> Result<(), EngineError> {
    for dir in file.ancestors().skip(1).take(3) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads a value as i64, treating anything else as a corrupt row.
pub(crate) fn as_i64(value: &Value) -> Result<i64, EngineError> {
    match value {
        Value::Integer(i) => Ok(*i),
        other => Err(EngineError::Internal(format!(
            "expected an integer, found {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::watchdog::QuerySlot;
    use crate::store::kv::Precondition;

    /// Opens an actor file that exists, or creates it as `create`.
    fn open(location: &Location, id: &str, create: Option<Durability>) -> ActorDb {
        ActorDb::open(
            location,
            id,
            create,
            &Limits::default(),
            QuerySlot::detached,
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn unsynced_commits_are_switched_back_to_synced_ones() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::File(dir.path().join("a.db"));
        let mut db = open(&location, "a", Some(Durability::Durable));
        let level = |db: &mut ActorDb| db.pragma_value("PRAGMA synchronous").unwrap();
        assert_eq!(level(&mut db), Value::Integer(2), "FULL by default");
        db.set_synced_commits(false).unwrap();
        assert_eq!(level(&mut db), Value::Integer(1));
        db.begin().unwrap();
        db.set_journal_lsn(7).unwrap();
        // SQLite refuses the switch inside a transaction: callers make it
        // before BEGIN.
        assert!(db.set_synced_commits(true).is_err());
        db.commit().unwrap();
        db.set_synced_commits(true).unwrap();
        assert_eq!(level(&mut db), Value::Integer(2));
        assert_eq!(db.journal_lsn().unwrap(), 7);
        // A reopened file's connection is FULL again, with no pragma of
        // its own once the first open has found FULL to be the default.
        db.set_synced_commits(false).unwrap();
        db.close();
        for _ in 0..2 {
            let mut db = open(&location, "a", None);
            assert_eq!(level(&mut db), Value::Integer(2));
            db.close();
        }
    }

    #[test]
    fn a_reopened_file_takes_its_size_limit_before_its_first_write() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::File(dir.path().join("a.db"));
        let limits = Limits {
            max_actor_bytes: 64 * 1024,
            ..Limits::default()
        };
        let open = |create| {
            ActorDb::open(&location, "a", create, &limits, QuerySlot::detached)
                .unwrap()
                .unwrap()
        };
        let pages = |db: &mut ActorDb| db.pragma_value("PRAGMA max_page_count").unwrap();
        let limit = Value::Integer(32); // 64 KiB of 2 KiB pages
        let mut db = open(Some(Durability::Durable));
        assert_eq!(pages(&mut db), limit, "a new file is written at once");
        db.close();

        let mut db = open(None);
        assert_ne!(pages(&mut db), limit, "a read does not need it");
        assert_eq!(db.meta("id").unwrap(), Value::Text("a".into()));
        db.begin().unwrap();
        assert_eq!(pages(&mut db), limit);
        let big = vec![7u8; 16 * 1024];
        let mut stored = 0;
        let full = loop {
            match db.kv_put(&format!("k{stored}"), &big, Precondition::None) {
                Ok(_) => stored += 1,
                Err(err) => break err,
            }
        };
        assert!(
            matches!(full, EngineError::InsufficientStorage(_)),
            "{full:?}"
        );
        assert!(
            (1..4).contains(&stored),
            "{stored} values of 16 KiB in 64 KiB"
        );
        db.rollback();
        // A memory actor has no later point to take it at.
        let mut memory = ActorDb::open(
            &Location::Memory,
            "m",
            Some(Durability::Memory),
            &limits,
            QuerySlot::detached,
        )
        .unwrap()
        .unwrap();
        assert_eq!(pages(&mut memory), Value::Integer(16));
    }

    #[test]
    fn ids_that_look_like_sql_parameters_are_stored_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        for (i, id) in ["?1", "?2", "'?2'", "a'b", "?1?2"].into_iter().enumerate() {
            let location = Location::File(dir.path().join(format!("{i}.db")));
            let mut db = open(&location, id, Some(Durability::Buffered));
            assert_eq!(db.meta("id").unwrap(), Value::Text(id.to_owned()));
            db.close();
            let mut db = open(&location, id, None);
            assert_eq!(db.meta("id").unwrap(), Value::Text(id.to_owned()));
            assert_eq!(db.durability(), Durability::Buffered);
            db.close();
        }
    }

    #[test]
    fn actor_files_use_wal_without_exclusive_locks_or_a_shm_file() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::File(dir.path().join("a.db"));
        let mut db = open(&location, "a", Some(Durability::Durable));
        assert_eq!(
            db.pragma_value("PRAGMA journal_mode").unwrap(),
            Value::Text("wal".into())
        );
        assert_eq!(
            db.pragma_value("PRAGMA locking_mode").unwrap(),
            Value::Text("normal".into())
        );
        assert!(dir.path().join("a.db-wal").exists());
        assert!(!dir.path().join("a.db-shm").exists());
        db.close();
        let mut db = open(&location, "a", None);
        assert_eq!(db.meta("id").unwrap(), Value::Text("a".into()));
        db.close();
        assert!(!dir.path().join("a.db-shm").exists());
    }
}
