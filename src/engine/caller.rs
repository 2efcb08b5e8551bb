//! Which threads may open a cold actor, or run user SQL, themselves.
//!
//! An op for an actor that is not open is normally queued for a pool
//! thread, which opens the database and answers. A caller that blocks on
//! the answer (a C ABI call, a Bun call, [`Engine::block_on`]) would sit
//! idle meanwhile and then be woken: two thread wake-ups, about half of a
//! cold open's p99 on a small VM. Such a caller opens the actor on its own
//! thread instead. For the same reason it runs user SQL on an idle open
//! actor itself (SQL of an actor that answers without an fsync; a durable
//! actor's `SELECT`s), which took a single caller's `SELECT` from about
//! 90 µs to 10 µs. An async runtime's worker does neither: an open that
//! reads from a cold disk, or a long query, would stall every task on it.
//!
//! [`Engine::block_on`]: super::Engine::block_on

use std::cell::Cell;
use std::thread::LocalKey;

thread_local! {
    static BLOCKING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` as a blocking caller: engine calls it makes on this thread may
/// open a cold actor here rather than on a pool thread.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    while_set(&BLOCKING, f)
}

/// Runs `f` with the thread-local `flag` set, restoring its old value after
/// (even if `f` unwinds, and harmlessly while the thread exits).
pub(crate) fn while_set<T>(flag: &'static LocalKey<Cell<bool>>, f: impl FnOnce() -> T) -> T {
    struct Restore(&'static LocalKey<Cell<bool>>, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = self.0.try_with(|flag| flag.set(self.1));
        }
    }
    let before = flag.try_with(|flag| flag.replace(true)).unwrap_or(false);
    let _restore = Restore(flag, before);
    f()
}

/// Whether this thread is inside [`blocking`].
pub(super) fn is_blocking() -> bool {
    BLOCKING.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use crate::store::sql::{SqlParams, SqlRequest, SqlStatement};
    use crate::store::value::SqlValue;
    use crate::{ActorId, Durability, Engine, EngineConfig};
    use std::time::Duration;

    fn open(dir: &tempfile::TempDir, durability: Durability) -> Engine {
        Engine::open(EngineConfig {
            data_dir: dir.path().to_path_buf(),
            durability,
            flush_interval_ms: 50,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn a_blocking_caller_opens_a_cold_actor_without_an_actor_thread() {
        let dir = tempfile::tempdir().unwrap();
        let id = ActorId::parse("a").unwrap();
        for durability in [Durability::Durable, Durability::Buffered] {
            let engine = open(&dir, durability);
            let before = engine
                .block_on(engine.counter_get(&id, "n".into()))
                .unwrap();
            let add = engine.counter_add(&id, "n".into(), 1, Some(durability));
            assert_eq!(engine.block_on(add).unwrap(), before + 1);
            assert!(engine.shutdown(Duration::from_secs(10)));
            drop(engine);

            let engine = open(&dir, durability);
            let read = engine.block_on(engine.counter_get(&id, "n".into()));
            assert_eq!(read.unwrap(), before + 1);
            assert_eq!(engine.open_actors(), 1);
            assert_eq!(engine.scheduled_actors(), 0, "a thread opened it");
            // A durable write still goes to the actor's thread (group
            // commit); a buffered one runs here and wakes it to flush.
            let add = engine.counter_add(&id, "n".into(), 1, None);
            assert_eq!(engine.block_on(add).unwrap(), before + 2);
            assert!(engine.shutdown(Duration::from_secs(10)));
        }
    }

    #[test]
    fn a_blocking_caller_reads_an_absent_actor_as_empty_then_creates_it() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(&dir, Durability::Durable);
        let id = ActorId::parse("nobody").unwrap();
        let read = engine.block_on(engine.counter_get(&id, "n".into()));
        assert_eq!(read.unwrap(), 0);
        let entry = engine.block_on(engine.kv_get(&id, "k".into()));
        assert!(entry.unwrap().is_none());
        assert!(!engine.inner.actor_file(&id).exists(), "a read created it");
        let add = engine.counter_add(&id, "n".into(), 5, None);
        assert_eq!(engine.block_on(add).unwrap(), 5);
        let read = engine.block_on(engine.counter_get(&id, "n".into()));
        assert_eq!(read.unwrap(), 5);
        assert!(engine.shutdown(Duration::from_secs(10)));
    }

    fn sql(engine: &Engine, id: &ActorId, text: &str) -> Vec<Vec<SqlValue>> {
        let request = SqlRequest::Single(SqlStatement {
            sql: text.to_owned(),
            params: SqlParams::None,
        });
        let mut response = engine.block_on(engine.sql(id, request, None)).unwrap();
        response.results.pop().map(|r| r.rows).unwrap_or_default()
    }

    #[test]
    fn a_blocking_caller_runs_user_sql_itself_except_a_durable_actors_writes() {
        let dir = tempfile::tempdir().unwrap();
        let config = |durability| EngineConfig {
            data_dir: dir.path().to_path_buf(),
            durability,
            ..Default::default()
        };
        let one = vec![vec![SqlValue(libsql::Value::Integer(1))]];

        // An actor that answers without an fsync (memory here, which has
        // no flush timer to start a thread either): reads and writes alike
        // run here.
        let engine = Engine::open(config(Durability::Memory)).unwrap();
        let memory = ActorId::parse("m").unwrap();
        sql(&engine, &memory, "CREATE TABLE t (x INTEGER)");
        sql(&engine, &memory, "INSERT INTO t VALUES (1)");
        assert_eq!(sql(&engine, &memory, "SELECT x FROM t"), one);
        assert_eq!(engine.scheduled_actors(), 0, "a thread ran the SQL");
        assert!(engine.shutdown(Duration::from_secs(10)));
        drop(engine);

        // Durable: a read runs here; a write goes to the actor's thread
        // for its group commit, and the next read sees it.
        let durable = ActorId::parse("d").unwrap();
        let engine = Engine::open(config(Durability::Durable)).unwrap();
        sql(&engine, &durable, "CREATE TABLE t (x INTEGER)");
        assert!(engine.shutdown(Duration::from_secs(10)));
        drop(engine);
        let engine = Engine::open(config(Durability::Durable)).unwrap();
        assert!(sql(&engine, &durable, "SELECT x FROM t").is_empty());
        assert_eq!(engine.scheduled_actors(), 0, "a thread ran a read");
        sql(&engine, &durable, "INSERT INTO t VALUES (1)");
        assert_eq!(sql(&engine, &durable, "SELECT x FROM t"), one);
        assert!(engine.shutdown(Duration::from_secs(10)));
    }

    #[test]
    fn the_flag_holds_inside_blocking_only_and_nests() {
        assert!(!super::is_blocking());
        super::blocking(|| {
            assert!(super::is_blocking());
            super::blocking(|| assert!(super::is_blocking()));
            assert!(super::is_blocking());
        });
        assert!(!super::is_blocking());
    }
}
