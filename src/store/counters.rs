//! Counters over the reserved `_roost_counters` table. Overflow is an
//! error (a CHECK constraint, or a checked add in memory), never SQLite's
//! silent switch to floating point.
//!
//! [`CounterCache`] keeps a `memory` or `buffered` actor's counters in
//! memory: adds and gets are answered from a map, and changed values are
//! written to the table before anything can read it (user SQL, export) and
//! at each buffered flush. User SQL cannot write `_roost_*` (the
//! authorizer), so the map and the table never disagree about a value
//! anyone can see.
//!
//! A buffered actor writes inside its open transaction, which SQLite may
//! roll back by itself (an interrupt, a full disk): the map is then the
//! only record of the acknowledged values, and [`CounterCache::rolled_back`]
//! makes the next write put every one of them back.
//!
//! A durable actor's cache is *journaled* (see `store::journal`): its
//! increments are records in the engine's journal, and every write of the
//! map to the table also stores the journal position it covers
//! (`_roost_meta.journal_lsn`) in the same transaction, so recovery
//! re-applies exactly the records the table does not hold yet.

use super::journal::SyncGate;
use super::{as_i64, ActorDb};
use crate::error::EngineError;
use libsql::Value;
use std::collections::HashMap;

/// Counters held in memory before clean ones are dropped.
const MAX_CACHED: usize = 4096;

impl ActorDb {
    pub fn counter_get(&mut self, name: &str) -> Result<i64, EngineError> {
        self.counter_load(name).map(Option::unwrap_or_default)
    }

    /// The stored value, or `None` when the counter has no row.
    fn counter_load(&mut self, name: &str) -> Result<Option<i64>, EngineError> {
        let row = self.query_row(
            "SELECT value FROM _roost_counters WHERE name = ?1",
            [Value::Text(name.to_owned())],
        )?;
        match row.as_deref() {
            Some([value]) => as_i64(value).map(Some),
            _ => Ok(None),
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
                EngineError::Sql(msg) if msg.contains("CHECK constraint failed") => overflow(name),
                other => other,
            })?;
        match row.as_deref() {
            Some([value]) => as_i64(value),
            _ => Err(EngineError::Internal(
                "counter upsert returned no row".into(),
            )),
        }
    }

    /// Stores the counter's value, creating its row if needed.
    fn counter_set(&mut self, name: &str, value: i64) -> Result<(), EngineError> {
        self.exec(
            "INSERT INTO _roost_counters (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            vec![Value::Text(name.to_owned()), Value::Integer(value)],
        )
        .map(drop)
    }
}

fn overflow(name: &str) -> EngineError {
    EngineError::InvalidRequest(format!(
        "counter {name:?} would overflow a signed 64-bit value"
    ))
}

struct Cached {
    value: i64,
    /// The value in the table; `None` when the counter has no row.
    stored: Option<i64>,
}

impl Cached {
    /// A counter without a row is never dirty: its first add writes one.
    fn dirty(&self) -> bool {
        self.stored.is_some_and(|stored| stored != self.value)
    }
}

/// A write-back cache of one actor's counters (see the module docs).
#[derive(Default)]
pub struct CounterCache {
    entries: HashMap<String, Cached>,
    /// Entries whose value is not yet in the table.
    dirty: usize,
    /// Rows written inside a transaction that has not committed yet.
    uncommitted: bool,
    /// The table lost writes the entries still hold: write them all.
    rewrite_all: bool,
    /// Journaled (durable) cache: where its records are.
    journal: Option<Journaled>,
}

struct Journaled {
    /// The last journal LSN folded into the values, written with them.
    lsn: u64,
    synced: SyncGate,
}

/// Where a journaled add went.
pub enum Added {
    /// Only into the map: its journal record makes it durable.
    InMemory(i64),
    /// Into the table too (a new row or a longer record), with every other
    /// cached value: durable once that transaction commits.
    ToTable(i64),
}

impl CounterCache {
    /// Adds `by` to the counter; returns the new value.
    ///
    /// A write that could need a new page (a new row, or a value whose
    /// record grows) goes to the table at once, so a full database refuses
    /// the add itself, as it would without the cache; later writes of the
    /// value only rewrite a record of the same size.
    pub fn add(&mut self, db: &mut ActorDb, name: &str, by: i64) -> Result<i64, EngineError> {
        let entry = self.entry(db, name)?;
        let value = entry.value.checked_add(by).ok_or_else(|| overflow(name))?;
        let was_dirty = entry.dirty();
        let grows = entry
            .stored
            .is_none_or(|stored| record_bytes(value) > record_bytes(stored));
        let wrote_in_transaction = grows && db.in_transaction();
        if grows {
            db.counter_set(name, value)?;
            entry.stored = Some(value);
        }
        entry.value = value;
        match (was_dirty, entry.dirty()) {
            (false, true) => self.dirty += 1,
            (true, false) => self.dirty -= 1,
            _ => {}
        }
        self.uncommitted |= wrote_in_transaction;
        Ok(value)
    }

    /// Makes this a journaled cache (see the module docs) whose values
    /// cover the journal up to `lsn`.
    pub fn journaled(&mut self, lsn: u64, synced: SyncGate) {
        self.journal = Some(Journaled { lsn, synced });
    }

    /// A journaled add: `Added::InMemory` when it only changed the map (the
    /// caller then journals it and reports the record with
    /// [`CounterCache::folded`]).
    pub fn add_journaled(
        &mut self,
        db: &mut ActorDb,
        name: &str,
        by: i64,
    ) -> Result<Added, EngineError> {
        let entry = self.entry(db, name)?;
        let old = entry.value;
        let value = old.checked_add(by).ok_or_else(|| overflow(name))?;
        let new_row = entry.stored.is_none();
        let grows = entry
            .stored
            .is_none_or(|stored| record_bytes(value) > record_bytes(stored));
        self.set_value(name, value);
        if !grows {
            return Ok(Added::InMemory(value));
        }
        // A new page may be needed: write now, so a full database refuses
        // this add. Every cached value goes with it, and the position.
        let own = !db.in_transaction();
        let written = (|| {
            if own {
                db.begin()?;
            }
            if new_row {
                // Never journaled (a first add always lands here).
                db.counter_set(name, value)?;
                if let Some(entry) = self.entries.get_mut(name) {
                    entry.stored = Some(value);
                }
            }
            let position = self.synced_position()?;
            self.write_rows(db)?;
            if let Some(lsn) = position {
                db.set_journal_lsn(lsn)?;
            }
            if own {
                db.commit()?;
            }
            Ok(())
        })();
        match written {
            Ok(()) => {
                self.uncommitted |= !own;
                Ok(Added::ToTable(value))
            }
            Err(err) => {
                if own {
                    db.rollback();
                }
                // Not applied: the map forgets it, and the table may have
                // lost or half-taken the rest.
                if new_row {
                    self.entries.remove(name);
                } else {
                    self.set_value(name, old);
                }
                self.rewrite_all = true;
                self.uncommitted |= !own;
                Err(err)
            }
        }
    }

    /// Sets a cached counter's value, keeping the dirty count true.
    fn set_value(&mut self, name: &str, value: i64) {
        let Some(entry) = self.entries.get_mut(name) else {
            return;
        };
        let was_dirty = entry.dirty();
        entry.value = value;
        match (was_dirty, entry.dirty()) {
            (false, true) => self.dirty += 1,
            (true, false) => self.dirty -= 1,
            _ => {}
        }
    }

    /// Whether a journaled add of `by` to `name` changes only the map (the
    /// counter is cached and its record keeps its size).
    pub fn adds_in_memory(&self, name: &str, by: i64) -> bool {
        self.entries.get(name).is_some_and(|entry| {
            entry.stored.is_some_and(|stored| {
                entry
                    .value
                    .checked_add(by)
                    .is_some_and(|value| record_bytes(value) <= record_bytes(stored))
            })
        })
    }

    pub fn is_journaled(&self) -> bool {
        self.journal.is_some()
    }

    /// The journal record of the last add has LSN `lsn`.
    pub fn folded(&mut self, lsn: u64) {
        if let Some(journal) = &mut self.journal {
            journal.lsn = journal.lsn.max(lsn);
        }
    }

    /// The counter's value (0 if it was never set).
    pub fn get(&mut self, db: &mut ActorDb, name: &str) -> Result<i64, EngineError> {
        self.entry(db, name).map(|entry| entry.value)
    }

    /// Writes every changed value to the table. A journaled cache writes
    /// its journal position with them, in a transaction of their own when
    /// none is open.
    pub fn write(&mut self, db: &mut ActorDb) -> Result<(), EngineError> {
        if self.dirty == 0 && !self.rewrite_all {
            return Ok(());
        }
        let Some(lsn) = self.synced_position()? else {
            self.uncommitted |= db.in_transaction();
            return self.write_rows(db);
        };
        if db.in_transaction() {
            self.uncommitted = true;
            return self.write_rows(db).and_then(|()| db.set_journal_lsn(lsn));
        }
        db.begin()?;
        let written = self
            .write_rows(db)
            .and_then(|()| db.set_journal_lsn(lsn))
            .and_then(|()| db.commit());
        if written.is_err() {
            db.rollback();
            // Entries marked stored may not be: write them all next time.
            self.rewrite_all = true;
        }
        written
    }

    /// The journal position a journaled cache's values cover, once the
    /// journal has synced it: an actor file never takes an increment that
    /// could still be refused. `None` for a cache that is not journaled.
    fn synced_position(&self) -> Result<Option<u64>, EngineError> {
        match &self.journal {
            Some(journal) => journal.synced.wait(journal.lsn).map(|()| Some(journal.lsn)),
            None => Ok(None),
        }
    }

    /// Whether a journaled cache's position is synced (so writing the
    /// values waits for nothing); true for a cache that is not journaled.
    fn position_synced(&self) -> bool {
        self.journal
            .as_ref()
            .is_none_or(|journal| journal.synced.covers(journal.lsn))
    }

    fn write_rows(&mut self, db: &mut ActorDb) -> Result<(), EngineError> {
        for (name, entry) in &mut self.entries {
            let dirty = entry.dirty();
            if self.rewrite_all || dirty {
                db.counter_set(name, entry.value)?;
                entry.stored = Some(entry.value);
                // Counted as it goes: a failure midway leaves the count true.
                self.dirty -= usize::from(dirty);
            }
        }
        self.rewrite_all = false;
        Ok(())
    }

    /// Values (or rows) the table does not hold yet, committed or not:
    /// what a buffered flush still has to write.
    pub fn unflushed(&self) -> usize {
        match self.rewrite_all {
            true => self.entries.len(),
            false => self.dirty,
        }
    }

    /// Whether rows were written in the open transaction (so its loss is
    /// theirs too).
    pub fn has_uncommitted(&self) -> bool {
        self.uncommitted
    }

    /// The transaction holding this cache's writes committed.
    pub fn committed(&mut self) {
        self.uncommitted = false;
        if self.entries.len() >= MAX_CACHED && self.unflushed() == 0 {
            self.entries.clear();
        }
    }

    /// SQLite rolled the open transaction back: the table may lack any
    /// value written since the last commit, so the next write puts back all.
    pub fn rolled_back(&mut self) {
        self.rewrite_all |= self.uncommitted;
        self.uncommitted = false;
    }

    /// Forgets everything (the database was closed, replaced or destroyed).
    pub fn clear(&mut self) {
        *self = CounterCache::default();
    }

    /// Whether the table (once committed) holds every value in the map.
    pub fn is_clean(&self) -> bool {
        self.unflushed() == 0 && !self.uncommitted
    }

    fn entry(&mut self, db: &mut ActorDb, name: &str) -> Result<&mut Cached, EngineError> {
        // Two lookups on a miss keep the hit path free of a key allocation.
        if !self.entries.contains_key(name) {
            // Not while the journal has yet to sync what a journaled cache
            // holds: this may run on a caller's thread (a cheap op run
            // inline), even the journal's own, which must not wait here.
            // The flush that comes next trims the map.
            if self.entries.len() >= MAX_CACHED && self.position_synced() {
                self.write(db)?;
                // Written but not committed, the values may still be
                // needed after a rollback: they are dropped at the commit.
                if !self.uncommitted {
                    self.entries.clear();
                }
            }
            let stored = db.counter_load(name)?;
            let cached = Cached {
                value: stored.unwrap_or_default(),
                stored,
            };
            self.entries.insert(name.to_owned(), cached);
        }
        self.entries
            .get_mut(name)
            .ok_or_else(|| EngineError::Internal("counter cache lost an entry".into()))
    }
}

/// Bytes SQLite spends on an integer in a record (0 and 1 take none).
fn record_bytes(value: i64) -> u8 {
    match value {
        0 | 1 => 0,
        -128..=127 => 1,
        -32_768..=32_767 => 2,
        -8_388_608..=8_388_607 => 3,
        -2_147_483_648..=2_147_483_647 => 4,
        -140_737_488_355_328..=140_737_488_355_327 => 6,
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Durability, Limits};
    use crate::store::Location;

    fn memory_db() -> ActorDb {
        ActorDb::open(
            &Location::Memory,
            "counters-test",
            Some(Durability::Memory),
            &Limits::default(),
            crate::engine::watchdog::QuerySlot::detached,
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn cached_adds_reach_the_table_when_written() {
        let mut db = memory_db();
        let mut cache = CounterCache::default();
        for _ in 0..10 {
            cache.add(&mut db, "n", 1).unwrap();
        }
        assert_eq!(cache.get(&mut db, "n").unwrap(), 10);
        cache.write(&mut db).unwrap();
        assert_eq!(db.counter_get("n").unwrap(), 10);
        assert_eq!(cache.dirty, 0);
    }

    #[test]
    fn new_counters_and_growing_values_are_written_at_once() {
        let mut db = memory_db();
        let mut cache = CounterCache::default();
        cache.add(&mut db, "n", 0).unwrap();
        assert_eq!(db.counter_load("n").unwrap(), Some(0));
        cache.add(&mut db, "n", 200).unwrap();
        assert_eq!(db.counter_load("n").unwrap(), Some(200));
        cache.add(&mut db, "n", 1).unwrap();
        assert_eq!(
            db.counter_load("n").unwrap(),
            Some(200),
            "same size: deferred"
        );
        assert_eq!(cache.dirty, 1);
    }

    #[test]
    fn overflow_is_refused_and_changes_nothing() {
        let mut db = memory_db();
        let mut cache = CounterCache::default();
        cache.add(&mut db, "n", i64::MAX - 1).unwrap();
        let err = cache.add(&mut db, "n", 2).unwrap_err();
        assert!(matches!(err, EngineError::InvalidRequest(_)), "{err:?}");
        assert_eq!(cache.get(&mut db, "n").unwrap(), i64::MAX - 1);
        assert!(cache.add(&mut db, "n", i64::MIN).is_ok());
    }

    #[test]
    fn the_table_matches_the_cache_after_any_mix_of_adds() {
        let mut db = memory_db();
        let mut cache = CounterCache::default();
        let deltas = [1, -1, 0, 126, 1 << 20, -(1 << 33), 7, i64::MAX / 2, -3];
        for (i, by) in deltas.iter().cycle().take(200).enumerate() {
            let name = format!("c{}", i % 5);
            let _ = cache.add(&mut db, &name, *by);
            let dirty = cache.entries.values().filter(|e| e.dirty()).count();
            assert_eq!(cache.dirty, dirty);
        }
        cache.write(&mut db).unwrap();
        for (name, entry) in &cache.entries {
            assert_eq!(db.counter_get(name).unwrap(), entry.value, "{name}");
        }
    }

    #[test]
    fn after_a_rollback_every_cached_value_is_written_again() {
        let mut db = memory_db();
        let mut cache = CounterCache::default();
        cache.add(&mut db, "kept", 7).unwrap();
        // A buffered transaction: a new row (written at once) and a value
        // that only lives in the cache.
        db.begin().unwrap();
        cache.add(&mut db, "kept", 1).unwrap();
        cache.add(&mut db, "new", 1).unwrap();
        cache.add(&mut db, "new", 4).unwrap();
        assert!(cache.has_uncommitted());
        db.rollback();
        cache.rolled_back();
        assert_eq!(
            db.counter_get("new").unwrap(),
            0,
            "the row went with the rollback"
        );
        assert_eq!(cache.unflushed(), 2);
        db.begin().unwrap();
        cache.write(&mut db).unwrap();
        db.commit().unwrap();
        cache.committed();
        assert_eq!(cache.unflushed(), 0);
        assert!(!cache.has_uncommitted());
        assert_eq!(db.counter_get("kept").unwrap(), 8);
        assert_eq!(db.counter_get("new").unwrap(), 5);
    }

    #[test]
    fn a_full_cache_keeps_uncommitted_values_until_the_commit() {
        let mut db = memory_db();
        let mut cache = CounterCache::default();
        db.begin().unwrap();
        for i in 0..=MAX_CACHED {
            cache.add(&mut db, &format!("c{i}"), 2).unwrap();
            cache.add(&mut db, &format!("c{i}"), 3).unwrap();
        }
        // The cache filled up and wrote itself into the open transaction;
        // a rollback now must not lose the values it had written.
        db.rollback();
        cache.rolled_back();
        db.begin().unwrap();
        cache.write(&mut db).unwrap();
        db.commit().unwrap();
        cache.committed();
        for i in [0, MAX_CACHED / 2, MAX_CACHED] {
            assert_eq!(db.counter_get(&format!("c{i}")).unwrap(), 5, "c{i}");
        }
        // Committed, the full cache starts over.
        assert!(cache.entries.is_empty());
    }

    #[test]
    fn record_sizes_match_sqlite_serial_types() {
        assert_eq!(record_bytes(1), 0);
        assert_eq!(record_bytes(2), 1);
        assert_eq!(record_bytes(-129), 2);
        assert_eq!(record_bytes(i64::MAX), 8);
        assert_eq!(record_bytes(1 << 40), 6);
    }
}
