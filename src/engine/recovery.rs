//! Replay of the shared journal (see `store::journal`): every journaled
//! counter increment a durable actor's file does not hold yet is written
//! to it before the engine serves anything.
//!
//! An actor whose file could not take them (the replay at start-up, or its
//! flush when it closed, failed: a disk error) is "stranded": its records
//! stay held, and the next time it opens they are read back and written to
//! its file before anything reads it. Serving the older file instead would
//! hide acknowledged increments, and its next flush would store a journal
//! position past them, so that no later replay would bring them back.

use super::watchdog::Watchdog;
use crate::actor_id::ActorId;
use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::store::journal::{self, Entry, Journal};
use crate::store::{ActorDb, Location};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

/// One actor's increments found in the journal: `(lsn, name, by)`.
type Increments = Vec<(u64, String, i64)>;

/// Replays the journal under the data dir, then starts it afresh; returns
/// it with the actors whose replay failed.
pub(super) fn open_journal(
    config: &EngineConfig,
    watchdog: &Watchdog,
) -> Result<(Journal, Stranded), EngineError> {
    let dir = config.data_dir.join("journal");
    let recovered = journal::recover(&dir)?;
    let mut by_actor: BTreeMap<String, Increments> = BTreeMap::new();
    for record in recovered.records {
        if let Entry::CounterAdd { actor, name, by } = record.entry {
            by_actor
                .entry(actor)
                .or_default()
                .push((record.lsn, name, by));
        }
    }
    let (mut replayed, mut failed) = (0usize, HashMap::new());
    for (actor, increments) in by_actor {
        let first = increments.first().map_or(0, |(lsn, ..)| *lsn);
        match replay_actor(config, watchdog, &actor, increments) {
            Ok(count) => replayed += count,
            Err(err) => {
                tracing::error!(%actor, error = %err, "could not replay the journal into an actor; its records are kept, and written when it opens");
                failed.insert(actor, first);
            }
        }
    }
    if replayed > 0 {
        tracing::info!(
            replayed,
            "journaled counter increments written to their actors"
        );
    }
    let holds: Vec<u64> = failed.values().copied().collect();
    let journal = Journal::start(&dir, recovered.next_lsn, &holds)?;
    Ok((journal, Stranded::new(failed)))
}

/// Actors closed while their files lack some of their journaled
/// increments, each with the LSN it holds the journal from.
#[derive(Default)]
pub(crate) struct Stranded {
    /// Whether `actors` has entries: every open checks, and it almost
    /// never has.
    any: AtomicBool,
    actors: Mutex<HashMap<String, u64>>,
}

impl Stranded {
    fn new(actors: HashMap<String, u64>) -> Stranded {
        Stranded {
            any: AtomicBool::new(!actors.is_empty()),
            actors: Mutex::new(actors),
        }
    }

    /// `actor` closed lacking the records it holds from `hold` on; the
    /// hold passes to this list.
    pub fn add(&self, journal: &Journal, actor: &str, hold: u64) {
        let mut actors = self.actors.lock();
        let kept = actors.entry(actor.to_string()).or_insert(hold);
        let old = *kept;
        if old != hold {
            // Stranded already: the older hold covers the newer one too.
            *kept = old.min(hold);
            journal.release(old.max(hold));
        }
        self.any.store(true, Ordering::Release);
    }

    /// Writes whatever the journal holds for `actor` past its file's
    /// position to `db`, just opened, and drops the hold. An `Err` leaves
    /// it stranded: the open fails rather than serve the older values.
    pub fn restore(
        &self,
        journal: &Journal,
        actor: &str,
        db: &mut ActorDb,
    ) -> Result<(), EngineError> {
        if !self.any.load(Ordering::Acquire) || !self.actors.lock().contains_key(actor) {
            return Ok(());
        }
        let increments = journal
            .read_back(actor)?
            .into_iter()
            .filter_map(|record| match record.entry {
                Entry::CounterAdd { name, by, .. } => Some((record.lsn, name, by)),
                Entry::Forget { .. } => None,
            })
            .collect();
        let written = write_increments(db, actor, increments)?;
        tracing::info!(%actor, written, "journaled increments its file lacked written on reopening");
        self.forget(journal, actor);
        Ok(())
    }

    #[cfg(test)]
    pub fn contains(&self, actor: &str) -> bool {
        self.actors.lock().contains_key(actor)
    }

    /// `actor`'s file holds its records, or was deleted or replaced: its
    /// hold goes.
    pub fn forget(&self, journal: &Journal, actor: &str) {
        if !self.any.load(Ordering::Acquire) {
            return;
        }
        let mut actors = self.actors.lock();
        if let Some(hold) = actors.remove(actor) {
            journal.release(hold);
        }
        self.any.store(!actors.is_empty(), Ordering::Release);
    }
}

/// Writes the increments past the file's journal position; returns how many.
fn replay_actor(
    config: &EngineConfig,
    watchdog: &Watchdog,
    actor: &str,
    increments: Increments,
) -> Result<usize, EngineError> {
    let id = ActorId::parse(actor)
        .map_err(|err| EngineError::Internal(format!("journal names a bad actor ID: {err}")))?;
    let path = super::layout::actor_path(&config.data_dir, &id);
    // No file: the actor was deleted after these records (a `Forget` may
    // not have reached the disk before the crash); nothing to restore.
    let Some(mut db) = ActorDb::open(
        &Location::File(path),
        id.as_str(),
        None,
        &config.limits,
        |conn| watchdog.slot(conn),
    )?
    else {
        return Ok(0);
    };
    let written = write_increments(&mut db, actor, increments)?;
    db.close();
    Ok(written)
}

/// Writes to `db`, in one transaction with its new journal position, the
/// increments past its current one; returns how many.
fn write_increments(
    db: &mut ActorDb,
    actor: &str,
    increments: Increments,
) -> Result<usize, EngineError> {
    #[cfg(test)]
    failing::check(actor)?;
    let from = db.journal_lsn()?;
    let todo: Vec<_> = increments
        .into_iter()
        .filter(|(lsn, ..)| *lsn > from)
        .collect();
    let Some(&(last, ..)) = todo.last() else {
        return Ok(0);
    };
    db.begin()?;
    let written = (|| {
        for (lsn, name, by) in &todo {
            if let Err(err) = db.counter_add(name, *by) {
                // As when it was first applied: an add that fails (an
                // overflow) was never acknowledged.
                tracing::warn!(%actor, lsn, error = %err, "a journaled increment failed again on replay; skipped");
            }
        }
        db.set_journal_lsn(last)?;
        db.commit()
    })();
    if let Err(err) = written {
        db.rollback();
        return Err(err);
    }
    Ok(todo.len())
}

/// Test-only disk errors: every counter write of the listed actors fails.
#[cfg(test)]
pub(crate) mod failing {
    use crate::error::EngineError;
    use parking_lot::Mutex;

    static ACTORS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    pub fn start(actor: &str) {
        ACTORS.lock().push(actor.to_string());
    }

    pub fn stop(actor: &str) {
        ACTORS.lock().retain(|a| a != actor);
    }

    pub fn check(actor: &str) -> Result<(), EngineError> {
        match ACTORS.lock().iter().any(|a| a == actor) {
            true => Err(EngineError::Io("injected disk error".into())),
            false => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::store::sql::SqlRequest;
    use crate::{ActorId, Durability, Engine, EngineConfig};
    use futures::executor::block_on;
    use std::time::Duration;

    fn open(dir: &tempfile::TempDir, flush_interval_ms: u64) -> Engine {
        Engine::open(EngineConfig {
            data_dir: dir.path().to_path_buf(),
            durability: Durability::Durable,
            flush_interval_ms,
            ..Default::default()
        })
        .unwrap()
    }

    fn add(engine: &Engine, id: &ActorId, by: i64) -> i64 {
        block_on(engine.counter_add(id, "n".into(), by, None)).unwrap()
    }

    fn stored_value(engine: &Engine, id: &ActorId) -> serde_json::Value {
        let request: SqlRequest = serde_json::from_value(
            serde_json::json!({"sql": "SELECT value FROM _roost_counters WHERE name = 'n'"}),
        )
        .unwrap();
        let response = block_on(engine.sql(id, request, None)).unwrap();
        serde_json::to_value(&response.results[0].rows[0][0]).unwrap()
    }

    /// Closes `id` by opening another actor in a one-actor cache, and
    /// waits until the close has stranded it.
    fn evict_and_strand(engine: &Engine, id: &ActorId) {
        add(engine, &ActorId::parse("evicts-it").unwrap(), 1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !engine.inner.stranded.contains(id.as_str()) {
            assert!(std::time::Instant::now() < deadline, "never stranded");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn increments_a_failed_flush_left_in_the_journal_are_written_when_the_actor_opens() {
        let dir = tempfile::tempdir().unwrap();
        let config = EngineConfig {
            data_dir: dir.path().to_path_buf(),
            durability: Durability::Durable,
            flush_interval_ms: 600_000,
            max_open_actors: 1,
            ..Default::default()
        };
        let id = ActorId::parse("stranded-by-a-failed-flush").unwrap();
        let engine = Engine::open(config.clone()).unwrap();
        for _ in 0..11 {
            add(&engine, &id, 2);
        }
        // The flush at close fails: the file keeps an older value.
        super::failing::start(id.as_str());
        evict_and_strand(&engine, &id);
        super::failing::stop(id.as_str());
        // Reopened in the same process: written before anything reads.
        assert_eq!(stored_value(&engine, &id), serde_json::json!(22));
        assert!(!engine.inner.stranded.contains(id.as_str()));
        for _ in 0..3 {
            add(&engine, &id, 1);
        }
        super::failing::start(id.as_str());
        evict_and_strand(&engine, &id);
        drop(engine);
        // Still failing at the next start: the replay leaves it stranded,
        // and the first open after the disk recovers writes them.
        let engine = Engine::open(config.clone()).unwrap();
        assert!(engine.inner.stranded.contains(id.as_str()));
        super::failing::stop(id.as_str());
        assert_eq!(add(&engine, &id, 0), 25);
        assert_eq!(stored_value(&engine, &id), serde_json::json!(25));
        drop(engine);
        // Written once: nothing held, nothing replayed twice.
        let engine = Engine::open(config).unwrap();
        assert!(!engine.inner.stranded.contains(id.as_str()));
        assert_eq!(add(&engine, &id, 0), 25);
        drop(engine);
        let segments = std::fs::read_dir(dir.path().join("journal"))
            .unwrap()
            .count();
        assert_eq!(segments, 1, "the journal is trimmed once nothing holds it");
    }

    #[test]
    fn a_failed_journal_makes_the_engine_unready_and_refuses_durable_increments() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(&dir, 600_000);
        let id = ActorId::parse("after-a-failed-sync").unwrap();
        add(&engine, &id, 2);
        add(&engine, &id, 1);
        assert_eq!(engine.unready_reason(), None);
        engine
            .inner
            .journal
            .fail("the journal could not be synced: EIO");
        let reason = engine.unready_reason().unwrap();
        assert!(reason.contains("could not be synced"), "{reason}");
        let refused = block_on(engine.counter_add(&id, "n".into(), 1, None));
        assert!(
            matches!(refused, Err(crate::EngineError::Io(_))),
            "{refused:?}"
        );
        // What was acknowledged before stays readable.
        assert_eq!(block_on(engine.counter_get(&id, "n".into())).unwrap(), 3);
    }

    #[test]
    fn a_refused_increment_never_reaches_the_actor_file() {
        let dir = tempfile::tempdir().unwrap();
        let id = ActorId::parse("refused").unwrap();
        {
            let engine = open(&dir, 600_000);
            assert_eq!(add(&engine, &id, 5), 5);
            engine.inner.journal.fail_next_write();
            let refused = block_on(engine.counter_add(&id, "n".into(), 3, None));
            assert!(
                matches!(refused, Err(crate::EngineError::Io(_))),
                "{refused:?}"
            );
            // The cache holds 8, but nothing that includes the refused
            // increment is served.
            let read = block_on(engine.counter_get(&id, "n".into()));
            assert!(matches!(read, Err(crate::EngineError::Io(_))), "{read:?}");
            // Closing cannot flush the cache: the actor is stranded.
            assert!(engine.shutdown(Duration::from_secs(10)));
        }
        // The restart replays what was synced: the refusal meant "not applied".
        let engine = open(&dir, 600_000);
        assert_eq!(block_on(engine.counter_get(&id, "n".into())).unwrap(), 5);
        assert_eq!(add(&engine, &id, 1), 6);
        assert!(engine.shutdown(Duration::from_secs(10)));
        let engine = open(&dir, 600_000);
        assert_eq!(block_on(engine.counter_get(&id, "n".into())).unwrap(), 6);
    }

    #[test]
    fn sql_and_exports_see_increments_still_only_in_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        // No flush during the test: the file lacks the increments.
        let engine = open(&dir, 600_000);
        let id = ActorId::parse("seen").unwrap();
        for _ in 0..10 {
            add(&engine, &id, 3);
        }
        assert_eq!(stored_value(&engine, &id), serde_json::json!(30));
        add(&engine, &id, 1);
        let copy = block_on(engine.export(&id)).unwrap();
        let mut exported = crate::store::ActorDb::open(
            &crate::store::Location::File(copy.clone()),
            "seen",
            None,
            &engine.config().limits,
            |conn| engine.inner.watchdog.slot(conn),
        )
        .unwrap()
        .unwrap();
        assert_eq!(exported.counter_get("n").unwrap(), 31);
        exported.close();
        let _ = std::fs::remove_file(copy);
    }

    #[test]
    fn a_clean_shutdown_writes_every_increment_and_empties_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<ActorId> = (0..20)
            .map(|i| ActorId::parse(&format!("a{i}")).unwrap())
            .collect();
        {
            let engine = open(&dir, 600_000);
            for round in 0..5 {
                for id in &ids {
                    assert_eq!(add(&engine, id, 1), round + 1);
                }
            }
        }
        let segments: Vec<u64> = std::fs::read_dir(dir.path().join("journal"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .collect();
        assert_eq!(segments, vec![0], "one empty segment is left");
        let engine = open(&dir, 600_000);
        for id in &ids {
            assert_eq!(add(&engine, id, 0), 5);
        }
    }

    #[test]
    fn an_imported_file_claims_no_position_in_this_journal() {
        let (from_dir, to_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let id = ActorId::parse("moving").unwrap();
        let copy = {
            let from = open(&from_dir, 600_000);
            for _ in 0..50 {
                add(&from, &id, 1);
            }
            block_on(from.export(&id)).unwrap()
        };
        let position = |engine: &Engine| {
            let request: SqlRequest = serde_json::from_value(serde_json::json!(
                {"sql": "SELECT value FROM _roost_meta WHERE key = 'journal_lsn'"}
            ))
            .unwrap();
            let response = block_on(engine.sql(&id, request, None)).unwrap();
            serde_json::to_value(&response.results[0].rows[0][0]).unwrap()
        };
        let to = open(&to_dir, 600_000);
        block_on(to.import(&id, copy, None)).unwrap();
        assert_eq!(position(&to), serde_json::json!(0));
        assert_eq!(add(&to, &id, 1), 51);
    }

    #[test]
    fn reads_wait_for_the_increments_they_see_to_be_synced() {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(&dir, 600_000);
        let id = ActorId::parse("gate").unwrap();
        add(&engine, &id, 1);
        add(&engine, &id, 1);
        let value = block_on(engine.counter_add(&id, "n".into(), 5, None)).unwrap();
        // Anything answered reflects only synced records.
        assert!(engine.inner.journal.synced() > 0);
        assert_eq!(
            block_on(engine.counter_get(&id, "n".into())).unwrap(),
            value
        );
    }
}
