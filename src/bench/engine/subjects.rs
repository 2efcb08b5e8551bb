//! What the in-process suites call: roost's engine on one actor, and the
//! hand-written libSQL connection it is compared with, each able to run
//! the same five operations. Both are blocking; callers are OS threads,
//! and roost's are blocking callers as the C ABI's are (`Engine::block_on`:
//! an idle actor's ops, user SQL included, run on the caller's thread).

use anyhow::{ensure, Context};
use libsql::Value;
use std::time::Duration;

use crate::bench::fixture::ScratchDir;
use crate::store::kv::Precondition;
use crate::store::sql::{SqlParams, SqlRequest, SqlStatement};
use crate::store::value::SqlValue;
use crate::{ActorId, Durability, Engine, EngineConfig};

/// KV keys and SQL rows written before any row is measured; reads and
/// overwrites cycle through them.
pub(in crate::bench) const SEEDED: usize = 1_000;
/// Bytes of every KV value and SQL text written.
const VALUE_BYTES: usize = 64;

/// One operation of the engine API, and its hand-written SQL twin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::bench) enum Op {
    // In `ALL` order: the discriminant indexes the prepared statements.
    CounterAdd,
    KvPut,
    KvGet,
    SqlInsert,
    SqlSelect,
}

impl Op {
    pub(in crate::bench) const ALL: [Op; 5] = [
        Op::CounterAdd,
        Op::KvPut,
        Op::KvGet,
        Op::SqlInsert,
        Op::SqlSelect,
    ];

    pub(in crate::bench) fn name(self) -> &'static str {
        match self {
            Op::CounterAdd => "counter add",
            Op::KvPut => "KV put",
            Op::KvGet => "KV get",
            Op::SqlInsert => "SQL insert",
            Op::SqlSelect => "SQL select",
        }
    }
}

/// Something the in-process suites measure.
pub(in crate::bench) trait Subject: Sync {
    /// Runs `op` once; `index` (below [`SEEDED`]) picks the key or row,
    /// `counter` the counter.
    fn call(&self, op: Op, counter: &str, index: usize) -> Result<(), String>;
    /// The stored value of a counter.
    fn counter(&self, name: &str) -> anyhow::Result<i64>;
}

const SQL_INSERT: &str = "INSERT INTO items (body) VALUES (?1)";
const SQL_SELECT: &str = "SELECT id, body FROM items WHERE id = ?1";

fn key(index: usize) -> String {
    format!("key-{index}")
}

fn body() -> String {
    "b".repeat(VALUE_BYTES)
}

/// One roost engine (a fresh data dir) and the actor every call goes to.
pub(in crate::bench) struct Roost {
    engine: Engine,
    id: ActorId,
    /// Removed once the engine has shut down.
    _dir: ScratchDir,
}

impl Roost {
    /// An engine whose actors have `durability`, with one actor seeded.
    pub(in crate::bench) fn open(durability: Durability) -> anyhow::Result<Roost> {
        let dir = ScratchDir::new("engine")?;
        let engine = Engine::open(EngineConfig {
            data_dir: dir.path().to_path_buf(),
            durability,
            ..Default::default()
        })
        .context("opening the engine")?;
        let roost = Roost {
            engine,
            id: ActorId::parse("bench")?,
            _dir: dir,
        };
        roost.seed().context("seeding the actor")?;
        Ok(roost)
    }

    fn seed(&self) -> anyhow::Result<()> {
        let create = format!(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT NOT NULL); \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {SEEDED}) \
             INSERT INTO items (id, body) SELECT i, '{}' FROM n",
            body()
        );
        self.sql(&create, SqlParams::None)?;
        // 64 puts at a time, so a durable actor group-commits the setup.
        let indexes: Vec<usize> = (0..SEEDED).collect();
        for chunk in indexes.chunks(64) {
            let puts = chunk.iter().map(|&i| {
                self.engine.kv_put(
                    &self.id,
                    key(i),
                    body().into_bytes(),
                    Precondition::None,
                    None,
                )
            });
            futures::executor::block_on(futures::future::try_join_all(puts))?;
        }
        Ok(())
    }

    fn sql(&self, sql: &str, params: SqlParams) -> anyhow::Result<crate::store::sql::SqlResponse> {
        let request = SqlRequest::Single(SqlStatement {
            sql: sql.to_owned(),
            params,
        });
        Ok(self
            .engine
            .block_on(self.engine.sql(&self.id, request, None))?)
    }

    /// Shuts the engine down (at most 30 s).
    pub(in crate::bench) fn close(self) -> anyhow::Result<()> {
        ensure!(
            self.engine.shutdown(Duration::from_secs(30)),
            "the engine did not shut down within 30 s"
        );
        Ok(())
    }
}

impl Subject for Roost {
    fn call(&self, op: Op, counter: &str, index: usize) -> Result<(), String> {
        let engine = &self.engine;
        let id = &self.id;
        let result = match op {
            Op::CounterAdd => engine
                .block_on(engine.counter_add(id, counter.to_owned(), 1, None))
                .map(drop),
            Op::KvPut => engine
                .block_on(engine.kv_put(
                    id,
                    key(index),
                    body().into_bytes(),
                    Precondition::None,
                    None,
                ))
                .map(drop),
            Op::KvGet => match engine.block_on(engine.kv_get(id, key(index))) {
                Ok(Some(_)) => Ok(()),
                Ok(None) => return Err(format!("{} is missing", key(index))),
                Err(err) => Err(err),
            },
            Op::SqlInsert | Op::SqlSelect => {
                let (sql, param) = match op {
                    Op::SqlInsert => (SQL_INSERT, Value::Text(body())),
                    _ => (SQL_SELECT, Value::Integer(index as i64 + 1)),
                };
                return match self.sql(sql, SqlParams::Positional(vec![SqlValue(param)])) {
                    Ok(response) if op == Op::SqlSelect => {
                        match response.results.first().map(|r| r.rows.len()) {
                            Some(1) => Ok(()),
                            _ => Err(format!("row {} is missing", index + 1)),
                        }
                    }
                    Ok(_) => Ok(()),
                    Err(err) => Err(format!("{err:#}")),
                };
            }
        };
        result.map_err(|err| err.to_string())
    }

    fn counter(&self, name: &str) -> anyhow::Result<i64> {
        Ok(self
            .engine
            .block_on(self.engine.counter_get(&self.id, name.to_owned()))?)
    }
}

/// One libSQL connection behind a mutex with each statement prepared once:
/// what an application writes by hand instead of roost.
pub(in crate::bench) struct Libsql {
    conn: parking_lot::Mutex<Prepared>,
    /// Closed after the connection; the file dir is removed after both.
    _database: libsql::Database,
    _dir: ScratchDir,
}

/// The connection and its statements, in [`Op::ALL`] order.
struct Prepared {
    conn: libsql::Connection,
    /// Indexed by `op as usize`.
    statements: Vec<libsql::Statement>,
}

const SCHEMA: &str = "
CREATE TABLE kv (key BLOB PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
";

impl Libsql {
    /// The twin of a roost actor with `durability`: `durable` is a WAL file
    /// with `synchronous=FULL` (an fsync per commit), `buffered` a WAL
    /// file with `synchronous=NORMAL` (no fsync per commit), `memory` is
    /// `:memory:`. Every op is its own autocommit transaction.
    pub(in crate::bench) fn open(durability: Durability) -> anyhow::Result<Libsql> {
        let dir = ScratchDir::new("libsql")?;
        let path = match durability {
            Durability::Memory => ":memory:".into(),
            Durability::Durable | Durability::Buffered => dir.path().join("baseline.db"),
        };
        let database = block_on(libsql::Builder::new_local(path).build())?;
        let conn = database.connect()?;
        if durability != Durability::Memory {
            let mut mode = block_on(conn.query("PRAGMA journal_mode=WAL", ()))?;
            let journal = match block_on(mode.next())? {
                Some(row) => row.get::<String>(0)?,
                None => String::new(),
            };
            while block_on(mode.next())?.is_some() {}
            ensure!(
                journal.eq_ignore_ascii_case("wal"),
                "journal_mode is {journal:?}, not WAL"
            );
            let synchronous = match durability {
                Durability::Durable => "PRAGMA synchronous=FULL",
                _ => "PRAGMA synchronous=NORMAL",
            };
            block_on(conn.execute(synchronous, ()))?;
        }
        block_on(conn.execute_batch(SCHEMA))?;
        block_on(conn.execute_batch(&format!(
            "BEGIN; \
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
             INSERT INTO items (id, body) SELECT i + 1, '{body}' FROM n; \
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
             INSERT INTO kv (key, value, version) SELECT CAST('key-' || i AS BLOB), CAST('{body}' \
             AS BLOB), 1 FROM n; \
             COMMIT;",
            last = SEEDED - 1,
            body = body()
        )))
        .context("seeding the baseline")?;
        let mut statements = Vec::new();
        for op in Op::ALL {
            let sql = match op {
                Op::CounterAdd => {
                    "INSERT INTO counters (name, value) VALUES (?1, 1) \
                     ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value"
                }
                Op::KvPut => {
                    "INSERT INTO kv (key, value, version) VALUES (?1, ?2, 1) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                     version = version + 1 RETURNING version"
                }
                Op::KvGet => "SELECT value, version FROM kv WHERE key = ?1",
                Op::SqlInsert => SQL_INSERT,
                Op::SqlSelect => SQL_SELECT,
            };
            statements.push(block_on(conn.prepare(sql)).with_context(|| sql.to_owned())?);
        }
        Ok(Libsql {
            conn: parking_lot::Mutex::new(Prepared { conn, statements }),
            _database: database,
            _dir: dir,
        })
    }
}

impl Subject for Libsql {
    fn call(&self, op: Op, counter: &str, index: usize) -> Result<(), String> {
        let params: Vec<Value> = match op {
            Op::CounterAdd => vec![Value::Text(counter.to_owned())],
            Op::KvPut => vec![
                Value::Blob(key(index).into_bytes()),
                Value::Blob(body().into_bytes()),
            ],
            Op::KvGet => vec![Value::Blob(key(index).into_bytes())],
            Op::SqlInsert => vec![Value::Text(body())],
            Op::SqlSelect => vec![Value::Integer(index as i64 + 1)],
        };
        let prepared = self.conn.lock();
        let rows = step_to_end(&prepared.statements[op as usize], params)
            .map_err(|err| err.to_string())?;
        match (op, rows) {
            (Op::KvGet | Op::SqlSelect, 0) => Err(format!("key or row {index} is missing")),
            _ => Ok(()),
        }
    }

    fn counter(&self, name: &str) -> anyhow::Result<i64> {
        let prepared = self.conn.lock();
        let mut rows = block_on(
            prepared
                .conn
                .query("SELECT value FROM counters WHERE name = ?1", [name]),
        )?;
        let value = match block_on(rows.next())? {
            Some(row) => row.get::<i64>(0)?,
            None => 0,
        };
        Ok(value)
    }
}

/// Runs a prepared statement to completion (an unfinished one would hold
/// a read snapshot and stop WAL checkpoints); returns the rows it gave.
fn step_to_end(statement: &libsql::Statement, params: Vec<Value>) -> libsql::Result<usize> {
    // A reused statement keeps its old bindings unless it is reset first.
    statement.reset();
    let mut rows = block_on(statement.query(params))?;
    let mut count = 0;
    while block_on(rows.next())?.is_some() {
        count += 1;
    }
    drop(rows);
    statement.reset();
    Ok(count)
}

/// libSQL's local calls finish on the calling thread, so polling once
/// (with a waker that never fires) is all their futures need.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    crate::store::block_on(future)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every op succeeds on seeded data, and reused statements bind their
    /// new parameters (a counter read back counts every add).
    fn runs_every_op(subject: &dyn Subject) {
        for op in Op::ALL {
            for index in [0, 7, SEEDED - 1] {
                assert_eq!(subject.call(op, "n", index), Ok(()), "{}", op.name());
            }
        }
        assert_eq!(subject.call(Op::CounterAdd, "m", 0), Ok(()));
        assert_eq!(subject.counter("n").expect("reading n"), 3);
        assert_eq!(subject.counter("m").expect("reading m"), 1);
    }

    #[test]
    fn the_libsql_baseline_runs_every_op_in_each_mode() {
        for mode in [Durability::Memory, Durability::Buffered] {
            runs_every_op(&Libsql::open(mode).expect("opening the baseline"));
        }
    }

    #[test]
    fn roost_runs_every_op() {
        let roost = Roost::open(Durability::Memory).expect("opening roost");
        runs_every_op(&roost);
        roost.close().expect("closing roost");
    }
}
