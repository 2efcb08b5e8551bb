//! Start-up replay of the shared journal (see `store::journal`): every
//! journaled counter increment a durable actor's file does not hold yet is
//! written to it before the engine serves anything.

use super::watchdog::Watchdog;
use crate::actor_id::ActorId;
use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::store::journal::{self, Entry, Journal};
use crate::store::{ActorDb, Location};
use std::collections::BTreeMap;

/// One actor's increments found in the journal: `(lsn, name, by)`.
type Increments = Vec<(u64, String, i64)>;

/// Replays the journal under the data dir, then starts it afresh.
pub(super) fn open_journal(
    config: &EngineConfig,
    watchdog: &Watchdog,
) -> Result<Journal, EngineError> {
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
    let (mut replayed, mut failed_from) = (0usize, None::<u64>);
    for (actor, increments) in by_actor {
        let first = increments.first().map_or(0, |(lsn, ..)| *lsn);
        match replay_actor(config, watchdog, &actor, increments) {
            Ok(count) => replayed += count,
            Err(err) => {
                tracing::error!(%actor, error = %err, "could not replay the journal into an actor; its records are kept for the next start");
                failed_from = Some(failed_from.map_or(first, |f: u64| f.min(first)));
            }
        }
    }
    if replayed > 0 {
        tracing::info!(
            replayed,
            "journaled counter increments written to their actors"
        );
    }
    Journal::start(&dir, recovered.next_lsn, failed_from)
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
    let path = super::actor_path(&config.data_dir, &id);
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
    db.close();
    Ok(todo.len())
}

#[cfg(test)]
mod tests {
    use crate::store::sql::SqlRequest;
    use crate::{ActorId, Durability, Engine, EngineConfig};
    use futures::executor::block_on;

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
