//! One limiter actor's state: each key's TAT in memory, the source of truth
//! for decisions, and written to the actor's `_roost_ratelimit` table when
//! the actor commits (on the buffered schedule, at shutdown, before close).
//!
//! A key whose TAT has passed is the same as a key never seen, so such
//! entries are dropped from memory (and their rows deleted): memory and
//! disk hold only the keys that were active within their window.

use super::gcra::{self, Decision, Policy};
use crate::error::EngineError;
use crate::store::ActorDb;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

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
    /// Changed since last written.
    dirty: bool,
    /// A row for this key may exist on disk.
    stored: bool,
}

#[derive(Default)]
pub struct LimiterState {
    entries: HashMap<String, Entry>,
    dirty: usize,
    /// Keys whose rows are stale and should be deleted on the next write.
    stale: Vec<String>,
    /// The table exists and rows expired before this open are gone.
    prepared: bool,
    /// Never let the clock run backwards between decisions.
    last_now: i64,
    next_sweep: usize,
}

impl LimiterState {
    /// Decides one request. `db` is the actor's database; memory actors
    /// keep nothing on disk, so for them it is only memory.
    pub fn decide(
        &mut self,
        db: &mut ActorDb,
        key: &str,
        policy: &Policy,
        cost: u64,
        spend: Spend,
    ) -> Result<Decision, EngineError> {
        policy.validate()?;
        if spend == Spend::IfAllowed {
            policy.check_cost(cost)?;
        }
        let persistent = db.durability() != crate::config::Durability::Memory;
        let now = wall_clock_us().max(self.last_now);
        self.last_now = now;
        let tat = match self.entries.get(key) {
            Some(entry) => Some(entry.tat),
            None if persistent => {
                self.prepare(db, now)?;
                db.ratelimit_load(key)?
            }
            None => None,
        };
        let (decision, next) = match spend {
            Spend::IfAllowed => gcra::decide(policy, tat, now, cost),
            Spend::Always => {
                let (decision, spent) = gcra::spend(policy, tat, now, cost);
                (decision, (cost > 0).then_some(spent))
            }
        };
        match (next, self.entries.get_mut(key)) {
            (Some(tat), Some(entry)) => {
                entry.tat = tat;
                if persistent && !entry.dirty {
                    entry.dirty = true;
                    self.dirty += 1;
                }
            }
            (next, None) => {
                let (tat, dirty, stored) = match (next, tat) {
                    (Some(next), loaded) => (next, persistent, loaded.is_some()),
                    (None, Some(loaded)) => (loaded, false, true),
                    (None, None) => return Ok(decision),
                };
                self.dirty += usize::from(dirty);
                self.entries
                    .insert(key.to_owned(), Entry { tat, dirty, stored });
                if self.entries.len() >= self.next_sweep.max(FIRST_SWEEP) {
                    self.sweep(now);
                }
            }
            (None, Some(_)) => {}
        }
        Ok(decision)
    }

    /// Keys changed since they were last written.
    pub fn dirty_len(&self) -> usize {
        self.dirty
    }

    /// Writes every changed key (and deletes stale rows) in the actor's
    /// open transaction. Memory is marked clean only by [`Self::written`],
    /// once that transaction has committed.
    pub fn write(&mut self, db: &mut ActorDb) -> Result<(), EngineError> {
        if self.dirty == 0 && self.stale.is_empty() {
            return Ok(());
        }
        self.sweep(self.last_now);
        for key in &self.stale {
            db.ratelimit_forget(key)?;
        }
        for (key, entry) in &self.entries {
            if entry.dirty {
                db.ratelimit_store(key, entry.tat)?;
            }
        }
        Ok(())
    }

    /// The transaction holding [`Self::write`]'s rows committed.
    pub fn written(&mut self) {
        if self.dirty == 0 && self.stale.is_empty() {
            return;
        }
        self.stale.clear();
        for entry in self.entries.values_mut() {
            if entry.dirty {
                entry.dirty = false;
                entry.stored = true;
            }
        }
        self.dirty = 0;
    }

    /// Forgets everything (the actor was destroyed or replaced).
    pub fn clear(&mut self) {
        *self = LimiterState::default();
    }

    /// Once per open: the table exists and rows that expired while the
    /// actor was closed are gone.
    fn prepare(&mut self, db: &mut ActorDb, now: i64) -> Result<(), EngineError> {
        if !self.prepared {
            db.ratelimit_prepare(now)?;
            self.prepared = true;
        }
        Ok(())
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

fn wall_clock_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}
