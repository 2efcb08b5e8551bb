//! One limiter actor's state, shared between the actor's thread and the
//! callers that decide.
//!
//! [`SharedLimiter`] holds every active key's TAT in memory behind its own
//! short lock. Once the actor has loaded its table ("live"), callers decide
//! on their own thread without a hop to the actor and without waiting for
//! the actor's lock, which a flush holds across its fsync: a decision is a
//! hash lookup and a few arithmetic operations, whatever the actor does.
//!
//! The actor keeps persisting on the buffered schedule ([`ActorLimiter`]):
//! at a flush it takes the changed keys (a snapshot, under the lock), writes
//! them in its transaction and commits without the lock; if the commit
//! fails or SQLite rolls the transaction back, the snapshot is marked
//! changed again. Before the actor closes, is destroyed, handed off or
//! replaced it retires the state (no more decisions outside the actor),
//! then writes what is left.
//!
//! Memory holds every key that is active (within its window) while live,
//! so a key not in memory is a key whose allowance is full. A key whose TAT
//! has passed is the same as a key never seen: such entries are swept from
//! memory (and their rows deleted) as the map grows.

use super::gcra::{self, Decision, Policy};
use crate::error::EngineError;
use crate::store::ActorDb;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Whether a request spends only what the policy allows (a decision) or
/// spends regardless (usage another region already allowed, being synced).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Spend {
    #[default]
    IfAllowed,
    Always,
}

/// Entries held before the first sweep of expired ones.
const FIRST_SWEEP: usize = 1024;

struct Entry {
    tat: i64,
    /// Changed since last taken for writing.
    dirty: bool,
    /// A row for this key may exist on disk.
    stored: bool,
}

/// What one flush writes: changed keys with their TATs, and keys whose
/// rows are stale. Kept by the actor until its transaction commits.
#[derive(Default)]
pub struct Writes {
    rows: Vec<(String, i64)>,
    stale: Vec<String>,
}

impl Writes {
    fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.stale.is_empty()
    }

    fn append(&mut self, mut later: Writes) {
        self.rows.append(&mut later.rows);
        self.stale.append(&mut later.stale);
    }
}

/// A limiter actor's keys, shared by its thread and the deciding callers.
pub struct SharedLimiter {
    memory: Mutex<Memory>,
    /// Changed keys at which the actor is woken to flush early.
    flush_max_ops: usize,
}

#[derive(Default)]
struct Memory {
    /// Loaded, and answerable by callers on their own threads.
    live: bool,
    /// Loaded (live or not): the actor decides from memory alone.
    loaded: bool,
    /// Whether changes are written to disk at all (not for memory actors).
    persistent: bool,
    entries: HashMap<String, Entry>,
    /// Keys changed since last taken for writing.
    dirty_keys: Vec<String>,
    /// When the oldest of those changed.
    dirty_since: Option<Instant>,
    /// Keys whose rows should be deleted on the next write.
    stale: Vec<String>,
    /// Never let the clock run backwards between decisions.
    last_now: i64,
    next_sweep: usize,
    /// The last decision made outside the actor (for idle closing).
    last_used: Option<Instant>,
}

/// What a caller's decision asks of the actor afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Nothing,
    /// Changes are waiting and the actor may be asleep: wake it so that it
    /// arms its flush timer (or flushes, past `flush_max_ops`).
    WakeActor,
}

impl SharedLimiter {
    pub fn new(flush_max_ops: usize) -> Self {
        SharedLimiter {
            memory: Mutex::new(Memory::default()),
            flush_max_ops: flush_max_ops.max(1),
        }
    }

    /// Decides on the caller's thread, or `None` when the actor has not
    /// loaded its keys (or has retired them): then the actor must decide.
    pub fn decide_live(
        &self,
        key: &str,
        policy: &Policy,
        cost: u64,
        spend: Spend,
    ) -> Option<(Decision, After)> {
        let mut memory = self.memory.lock();
        if !memory.live {
            return None;
        }
        memory.last_used = Some(Instant::now());
        let (decision, newly_dirty) = memory.decide(key, policy, cost, spend);
        let dirty = memory.dirty_keys.len();
        // The first change arms the actor's flush timer; the
        // `flush_max_ops`th makes a flush due at once.
        let wake = newly_dirty && (dirty == 1 || dirty == self.flush_max_ops);
        Some((
            decision,
            if wake {
                After::WakeActor
            } else {
                After::Nothing
            },
        ))
    }

    /// Only the actor decides from now on: its thread died, and the next
    /// decision starts a new one (which writes what the old one had not).
    pub fn retire(&self) {
        self.memory.lock().live = false;
    }

    /// When a caller last decided here, if one ever did.
    pub fn last_used(&self) -> Option<Instant> {
        self.memory.lock().last_used
    }

    /// Keys changed and not yet taken for writing.
    pub fn dirty_len(&self) -> usize {
        self.memory.lock().dirty_keys.len()
    }

    /// When the oldest unwritten change was made.
    pub fn dirty_since(&self) -> Option<Instant> {
        self.memory.lock().dirty_since
    }
}

impl Memory {
    /// Decides, and says whether the key changed from written to unwritten.
    fn decide(&mut self, key: &str, policy: &Policy, cost: u64, spend: Spend) -> (Decision, bool) {
        let now = wall_clock_us().max(self.last_now);
        self.last_now = now;
        let tat = self.entries.get(key).map(|entry| entry.tat);
        let (decision, next) = match spend {
            Spend::IfAllowed => gcra::decide(policy, tat, now, cost),
            Spend::Always => {
                let (decision, spent) = gcra::spend(policy, tat, now, cost);
                (decision, (cost > 0).then_some(spent))
            }
        };
        let Some(next) = next else {
            return (decision, false);
        };
        let persistent = self.persistent;
        let newly_dirty = match self.entries.get_mut(key) {
            Some(entry) => {
                entry.tat = next;
                persistent && !std::mem::replace(&mut entry.dirty, persistent)
            }
            None => {
                self.entries.insert(
                    key.to_owned(),
                    Entry {
                        tat: next,
                        dirty: persistent,
                        stored: false,
                    },
                );
                if self.entries.len() >= self.next_sweep.max(FIRST_SWEEP) {
                    self.sweep(now);
                }
                persistent
            }
        };
        if newly_dirty {
            self.dirty_keys.push(key.to_owned());
            self.dirty_since.get_or_insert_with(Instant::now);
        }
        (decision, newly_dirty)
    }

    /// Drops expired, already written entries; their rows become stale.
    fn sweep(&mut self, now: i64) {
        let stale = &mut self.stale;
        self.entries.retain(|key, entry| {
            let keep = entry.dirty || entry.tat > now;
            if !keep && entry.stored {
                stale.push(key.clone());
            }
            keep
        });
        self.next_sweep = self.entries.len() * 2;
    }
}

/// The actor's side of its [`SharedLimiter`]: loading, writing on the
/// buffered schedule, and retiring. Attached on the first rate-limit op.
#[derive(Default)]
pub struct ActorLimiter {
    shared: Option<Arc<SharedLimiter>>,
    /// Written in the open transaction, not yet committed.
    in_flight: Option<Writes>,
}

impl ActorLimiter {
    pub fn is_attached(&self) -> bool {
        self.shared.is_some()
    }

    pub fn attach(&mut self, shared: Arc<SharedLimiter>) {
        self.shared = Some(shared);
    }

    /// Decides on the actor's thread, loading the keys first if needed.
    /// `callers_may_decide`: once loaded, callers decide on their own
    /// threads (buffered and memory actors; a durable actor answers only
    /// after its commit, so it decides everything itself).
    pub fn decide(
        &mut self,
        db: &mut ActorDb,
        key: &str,
        policy: &Policy,
        cost: u64,
        spend: Spend,
        callers_may_decide: bool,
    ) -> Result<Decision, EngineError> {
        policy.validate()?;
        if spend == Spend::IfAllowed {
            policy.check_cost(cost)?;
        }
        let shared = self
            .shared
            .as_ref()
            .ok_or_else(|| EngineError::Internal("limiter state is not attached".into()))?;
        let mut memory = shared.memory.lock();
        if !memory.loaded {
            let persistent = db.durability() != crate::config::Durability::Memory;
            let now = wall_clock_us().max(memory.last_now);
            let rows = match persistent {
                true => db.ratelimit_load_all(now)?,
                false => Vec::new(),
            };
            memory.entries = rows
                .into_iter()
                .map(|(key, tat)| {
                    let entry = Entry {
                        tat,
                        dirty: false,
                        stored: true,
                    };
                    (key, entry)
                })
                .collect();
            memory.next_sweep = memory.entries.len() * 2;
            memory.persistent = persistent;
            memory.loaded = true;
        }
        // Also after a thread that panicked retired it (see `retire`).
        memory.live = callers_may_decide;
        Ok(memory.decide(key, policy, cost, spend).0)
    }

    /// Keys changed and not yet written.
    pub fn dirty_len(&self) -> usize {
        self.shared.as_ref().map_or(0, |shared| shared.dirty_len())
    }

    /// When the oldest unwritten change was made.
    pub fn dirty_since(&self) -> Option<Instant> {
        self.shared.as_ref().and_then(|shared| shared.dirty_since())
    }

    /// Whether written keys wait for the open transaction to commit.
    pub fn has_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Writes every changed key (and deletes stale rows) in the actor's
    /// open transaction. They count as written once [`Self::written`]
    /// says the transaction committed.
    pub fn write(&mut self, db: &mut ActorDb) -> Result<(), EngineError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let writes = {
            let mut memory = shared.memory.lock();
            if memory.dirty_keys.is_empty() && memory.stale.is_empty() {
                return Ok(());
            }
            let keys = std::mem::take(&mut memory.dirty_keys);
            let mut rows = Vec::with_capacity(keys.len());
            for key in keys {
                if let Some(entry) = memory.entries.get_mut(&key) {
                    entry.dirty = false;
                    entry.stored = true;
                    rows.push((key, entry.tat));
                }
            }
            memory.dirty_since = None;
            Writes {
                rows,
                stale: std::mem::take(&mut memory.stale),
            }
        };
        let result = write_rows(db, &writes);
        match &mut self.in_flight {
            Some(earlier) => earlier.append(writes),
            None => self.in_flight = Some(writes),
        }
        result
    }

    /// The transaction holding [`Self::write`]'s rows committed.
    pub fn written(&mut self) {
        self.in_flight = None;
    }

    /// The transaction holding [`Self::write`]'s rows is gone: those keys
    /// are changed again (with their current values) for the next write.
    pub fn rolled_back(&mut self) {
        let (Some(shared), Some(writes)) = (&self.shared, self.in_flight.take()) else {
            return;
        };
        let mut memory = shared.memory.lock();
        for (key, _) in writes.rows {
            if let Some(entry) = memory.entries.get_mut(&key) {
                if !entry.dirty {
                    entry.dirty = true;
                    memory.dirty_keys.push(key);
                }
            }
        }
        for key in writes.stale {
            if !memory.entries.contains_key(&key) {
                memory.stale.push(key);
            }
        }
        if !memory.dirty_keys.is_empty() || !memory.stale.is_empty() {
            memory.dirty_since.get_or_insert_with(Instant::now);
        }
    }

    /// From now on only the actor decides (it is about to write its last
    /// changes and close, be destroyed, handed off or replaced).
    pub fn retire(&mut self) {
        if let Some(shared) = &self.shared {
            shared.retire();
        }
    }

    /// Forgets everything (closed, destroyed or replaced): the next
    /// decision loads the keys again.
    pub fn clear(&mut self) {
        self.in_flight = None;
        if let Some(shared) = &self.shared {
            let mut memory = shared.memory.lock();
            let last_now = memory.last_now;
            *memory = Memory {
                last_now,
                ..Memory::default()
            };
        }
    }
}

fn write_rows(db: &mut ActorDb, writes: &Writes) -> Result<(), EngineError> {
    if writes.is_empty() {
        return Ok(());
    }
    for key in &writes.stale {
        db.ratelimit_forget(key)?;
    }
    for (key, tat) in &writes.rows {
        db.ratelimit_store(key, *tat)?;
    }
    Ok(())
}

fn wall_clock_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use crate::config::{Durability, EngineConfig};
    use crate::error::EngineError;
    use crate::limiter::Policy;
    use crate::store::sql::SqlRequest;
    use crate::Engine;
    use futures::executor::block_on;
    use libsql::Value;
    use std::time::{Duration, Instant};

    const POLICY: Policy = Policy {
        limit: 10,
        window_ms: 600_000,
    };

    fn engine(dir: &std::path::Path, configure: impl FnOnce(&mut EngineConfig)) -> Engine {
        let mut config = EngineConfig {
            data_dir: dir.to_owned(),
            durability: Durability::Durable,
            ..EngineConfig::default()
        };
        configure(&mut config);
        Engine::open(config).unwrap()
    }

    fn remaining(engine: &Engine, key: &str) -> u64 {
        block_on(engine.ratelimit(key, POLICY, 1))
            .unwrap()
            .remaining
    }

    /// The key's row in its limiter actor's table, read through SQL.
    fn stored_tat(engine: &Engine, key: &str) -> Option<i64> {
        let request: SqlRequest = serde_json::from_value(serde_json::json!({
            "sql": "SELECT tat FROM _roost_ratelimit WHERE key = ?1",
            "params": [key],
        }))
        .unwrap();
        let id = engine.ratelimit_actor(key);
        let response = block_on(engine.sql(&id, request, None)).unwrap();
        match response.results[0].rows.first().map(|row| &row[0].0) {
            Some(Value::Integer(tat)) => Some(*tat),
            _ => None,
        }
    }

    fn is_live(engine: &Engine, key: &str) -> bool {
        let id = engine.ratelimit_actor(key);
        engine
            .inner
            .existing_limiter(&id)
            .is_some_and(|shared| shared.memory.lock().live)
    }

    #[test]
    fn callers_decide_on_their_thread_and_the_actor_writes_their_changes() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), |c| c.flush_interval_ms = 20);
        assert_eq!(remaining(&engine, "1.2.3.4"), 9);
        assert!(
            is_live(&engine, "1.2.3.4"),
            "the first decision loads the keys"
        );
        for expected in (4..9).rev() {
            assert_eq!(remaining(&engine, "1.2.3.4"), expected);
        }
        // Nothing but the flush timer, woken by the first caller's change,
        // writes those decisions.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut tat = None;
        while Instant::now() < deadline {
            let shared = engine
                .inner
                .existing_limiter(&engine.ratelimit_actor("1.2.3.4"));
            if shared.is_some_and(|s| s.dirty_len() == 0) {
                tat = stored_tat(&engine, "1.2.3.4");
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let interval_us = 60_000_000;
        let now_us = super::wall_clock_us();
        let tat = tat.expect("the changed key was written");
        // Six units spent: the TAT is six emission intervals ahead.
        assert!(
            (tat - now_us - 6 * interval_us).abs() < 5_000_000,
            "{tat} vs {now_us}"
        );
        drop(engine);
        let engine = self::engine(dir.path(), |_| {});
        assert_eq!(
            remaining(&engine, "1.2.3.4"),
            3,
            "the allowance survives a restart"
        );
    }

    #[test]
    fn a_hand_off_takes_every_decision_made_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), |c| c.flush_interval_ms = 60_000);
        for _ in 0..4 {
            remaining(&engine, "client");
        }
        let id = engine.ratelimit_actor("client");
        let (copy, durability) = block_on(engine.hand_off(&id, "machine-2"))
            .unwrap()
            .expect("a buffered limiter actor travels as a file");
        assert_eq!(durability, Durability::Buffered);
        assert!(!is_live(&engine, "client"));
        let moved = block_on(engine.ratelimit("client", POLICY, 1));
        assert!(matches!(moved, Err(EngineError::Moved { .. })), "{moved:?}");
        // The copy holds the fourth decision, made on a caller's thread.
        let other = tempfile::tempdir().unwrap();
        let receiver = self::engine(other.path(), |_| {});
        block_on(receiver.import(&id, copy, Some(Durability::Buffered))).unwrap();
        assert_eq!(remaining(&receiver, "client"), 5);
    }

    #[test]
    fn destroying_a_limiter_actor_gives_every_key_its_full_allowance() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), |_| {});
        for _ in 0..5 {
            remaining(&engine, "k");
        }
        assert!(block_on(engine.destroy(&engine.ratelimit_actor("k"))).unwrap());
        assert!(!is_live(&engine, "k"));
        assert_eq!(remaining(&engine, "k"), 9);
    }

    #[test]
    fn a_limiter_in_use_is_not_closed_as_idle_and_is_once_unused() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), |c| c.idle_timeout_ms = 100);
        let busy_until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < busy_until {
            block_on(engine.ratelimit("k", Policy::new(1_000_000, 1000).unwrap(), 1)).unwrap();
            assert_eq!(engine.open_actors(), 1, "closed while in use");
            std::thread::sleep(Duration::from_millis(5));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while engine.open_actors() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(engine.open_actors(), 0, "never closed once idle");
        // The slot goes first; the actor's thread retires the limiter as
        // it closes, a moment later.
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_live(&engine, "k") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!is_live(&engine, "k"));
    }

    #[test]
    fn a_rolled_back_write_is_written_again_with_the_latest_values() {
        use super::{ActorLimiter, SharedLimiter, Spend};
        use crate::store::{ActorDb, Location};
        let dir = tempfile::tempdir().unwrap();
        let mut db = ActorDb::open(
            &Location::File(dir.path().join("limiter.db")),
            "limiter-test",
            Some(Durability::Buffered),
            &crate::config::Limits::default(),
            crate::engine::watchdog::QuerySlot::detached,
        )
        .unwrap()
        .unwrap();
        let shared = std::sync::Arc::new(SharedLimiter::new(1000));
        let mut limiter = ActorLimiter::default();
        limiter.attach(shared.clone());
        limiter
            .decide(&mut db, "a", &POLICY, 1, Spend::IfAllowed, true)
            .unwrap();
        shared
            .decide_live("b", &POLICY, 2, Spend::IfAllowed)
            .unwrap();
        assert_eq!(limiter.dirty_len(), 2);
        db.begin().unwrap();
        limiter.write(&mut db).unwrap();
        assert_eq!(limiter.dirty_len(), 0);
        // A caller spends more of "b" while the transaction is open.
        shared
            .decide_live("b", &POLICY, 1, Spend::IfAllowed)
            .unwrap();
        db.rollback();
        limiter.rolled_back();
        assert_eq!(limiter.dirty_len(), 2, "both keys are changed again");
        assert!(limiter.dirty_since().is_some());
        db.begin().unwrap();
        limiter.write(&mut db).unwrap();
        db.commit().unwrap();
        limiter.written();
        assert!(!limiter.has_in_flight());
        let tat = |db: &mut ActorDb, key: &str| {
            db.ratelimit_load_all(0)
                .unwrap()
                .into_iter()
                .find(|(k, _)| k == key)
                .map(|(_, tat)| tat)
                .unwrap()
        };
        let memory = shared.memory.lock();
        assert_eq!(tat(&mut db, "a"), memory.entries["a"].tat);
        assert_eq!(tat(&mut db, "b"), memory.entries["b"].tat, "the latest TAT");
    }

    #[test]
    fn a_durable_limiter_actor_decides_everything_itself() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path(), |_| {});
        let id = engine.ratelimit_actor("k");
        // Made durable by its first write, before any decision.
        block_on(engine.kv_put(
            &id,
            "note".into(),
            b"x".to_vec(),
            Default::default(),
            Some(Durability::Durable),
        ))
        .unwrap();
        assert_eq!(remaining(&engine, "k"), 9);
        assert!(
            !is_live(&engine, "k"),
            "a durable actor answers after its commit"
        );
        assert_eq!(remaining(&engine, "k"), 8);
        assert!(stored_tat(&engine, "k").is_some());
    }
}
