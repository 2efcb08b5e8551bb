//! One actor: it owns the actor's connection and runs its operations one
//! at a time, in arrival order, on the thread its `runner` lends it.
//!
//! Operations that arrive together form a batch that shares one
//! transaction, each SQL request inside its own savepoint (so one failure undoes
//! only that op). `durable` and `memory` actors commit at the end of every
//! batch and only then answer: concurrent writers share one fsync (group
//! commit). `buffered` actors answer at once and keep the transaction open
//! until `flush_interval_ms` or `flush_max_ops` is reached.
//!
//! `memory` and `buffered` actors keep their counters in a write-back map
//! ([`CounterCache`]) and write them to the table before user SQL or an
//! export can read it (and, buffered, at each flush).
//!
//! A `durable` actor's counter increments go to the engine's journal
//! instead (see `store::journal`): applied to its counter cache, appended
//! there, answered once the journal has synced them, and written to the
//! actor's file every few flush intervals.
//!
//! SQLite may roll back a whole transaction by itself (an interrupted
//! write, a full disk). The ops applied in it are kept until commit and
//! replayed into a fresh transaction, so no other op is lost with it.

use super::events::{Change, HubCache};
use super::ops::{Op, OpOutput};
use super::outbox::Outbox;
use super::Inner;
use crate::actor_id::ActorId;
use crate::config::Durability;
use crate::error::EngineError;
use crate::limiter::state::ActorLimiter;
use crate::store::counters::{Added, CounterCache};
use crate::store::journal::Entry;
use crate::store::{ActorDb, Location};
use crate::telemetry;
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Where an op's result goes; called exactly once.
pub type Reply = Box<dyn FnOnce(Result<OpOutput, EngineError>) + Send>;

/// What an actor's queue carries.
pub(crate) enum Mail {
    Op(Msg),
    /// Re-read the flush deadline (an op ran inline and left writes unflushed).
    Wake,
}

pub(crate) struct Msg {
    pub op: Op,
    pub create_as: Option<Durability>,
    pub reply: Reply,
}

/// When an op's answer may be given.
enum Outcome {
    Now(Result<OpOutput, EngineError>),
    /// A durable op's: once its batch has committed.
    AfterCommit(Op, Result<OpOutput, EngineError>),
    /// A journaled op's: once the journal has synced up to this LSN.
    AfterSync(u64, Result<OpOutput, EngineError>),
}

/// An op run on its caller's thread.
pub enum Answer {
    Ready(Result<OpOutput, EngineError>),
    /// To be given once the journal has synced up to this LSN.
    AfterSync(u64, Result<OpOutput, EngineError>),
}

/// What an inline caller must do for the actor's flush after its op.
pub enum Wake {
    Nothing,
    /// Writes are now waiting: their flush is due then.
    FlushAt(Instant),
    /// A flush is due now: wake the actor's thread for it.
    FlushNow,
}

/// A journaled actor writes its counters to its file this many flush
/// intervals after its first unwritten increment (the journal keeps them
/// durable meanwhile).
const JOURNALED_FLUSH_INTERVALS: u32 = 5;

/// An op applied in the open transaction and not yet committed.
struct Pending {
    op: Op,
    /// `None` once answered (buffered writes, kept only for replay).
    reply: Option<Reply>,
    result: Result<OpOutput, EngineError>,
}

pub(crate) struct Actor {
    id: ActorId,
    file: PathBuf,
    inner: Arc<Inner>,
    db: Option<ActorDb>,
    pending: Vec<Pending>,
    unflushed_since: Option<Instant>,
    pinned: Arc<AtomicBool>,
    /// Whether the database last opened is durable, readable without the
    /// actor's lock (see [`Actor::durable_flag`]).
    durable: Arc<AtomicBool>,
    /// Rate-limit state, when this actor is a limiter shard (shared with
    /// callers, who decide on their own threads once it is loaded).
    limiter: ActorLimiter,
    /// A memory actor's counters (see `CounterCache`).
    counters: CounterCache,
    /// Where change events go, when someone listens.
    hub: HubCache,
    /// An inline caller found a flush due and woke the thread for it.
    flush_requested: bool,
    /// The journal LSN of this actor's first increment its file lacks:
    /// the journal keeps everything from there on.
    journal_hold: Option<u64>,
    /// Change events waiting for the journal to sync what they report.
    outbox: Outbox,
    /// The LSN of this actor's last journaled increment: reads of its
    /// counters are answered once the journal has synced it.
    last_lsn: u64,
}

impl Actor {
    pub fn new(id: ActorId, inner: Arc<Inner>, pinned: Arc<AtomicBool>) -> Self {
        let file = inner.actor_file(&id);
        Actor {
            id,
            file,
            inner,
            db: None,
            pending: Vec::new(),
            unflushed_since: None,
            pinned,
            durable: Arc::default(),
            limiter: ActorLimiter::default(),
            counters: CounterCache::default(),
            hub: HubCache::default(),
            flush_requested: false,
            journal_hold: None,
            outbox: Outbox::default(),
            last_lsn: 0,
        }
    }

    /// Whether the actor's database, when last opened, was durable: its
    /// writes then wait for the actor's thread (group commit). A hint for
    /// callers deciding whether to wait for the lock; [`Actor::runs_inline`]
    /// decides under it.
    pub fn durable_flag(&self) -> Arc<AtomicBool> {
        self.durable.clone()
    }

    /// Whether a caller may run the cheap `op` on its own thread: the actor
    /// is open and answers without waiting for an fsync — any op of a
    /// buffered or memory actor, and a durable actor's reads while nothing
    /// uncommitted is in its database (they see only acknowledged writes).
    pub fn runs_inline(&self, op: &Op) -> bool {
        match &self.db {
            None => false,
            Some(db) if db.durability() == Durability::Durable => {
                let between_batches = !db.in_transaction() && self.pending.is_empty();
                match op {
                    // A journaled increment that needs no table write.
                    Op::CounterAdd { name, by } => {
                        between_batches && self.counters.adds_in_memory(name, *by)
                    }
                    // SQL first writes the journaled counters the table
                    // lacks (it may read them), which needs a commit.
                    Op::Sql(_) => {
                        between_batches && op.reads_only() && self.counters.unflushed() == 0
                    }
                    _ => between_batches && !op.writes(),
                }
            }
            Some(_) => true,
        }
    }

    /// Runs one op on the caller's thread (queue empty, lock held). Returns
    /// its answer, and what the caller must arrange for the flush of writes
    /// the actor did not hold before.
    pub fn run_inline(&mut self, op: Op, create_as: Option<Durability>) -> (Answer, Wake) {
        let was_dirty = self.unflushed_since.is_some();
        let answer = match self.process(op, create_as) {
            Outcome::Now(answer) => Answer::Ready(answer),
            Outcome::AfterSync(lsn, answer) => Answer::AfterSync(lsn, answer),
            // Not reached (durable actors do not run inline), but answered
            // correctly all the same: after the commit.
            Outcome::AfterCommit(op, result) => {
                let answer = Arc::new(Mutex::new(None));
                let slot = answer.clone();
                let reply: Reply = Box::new(move |result| *slot.lock() = Some(result));
                self.pending.push(Pending {
                    op,
                    reply: Some(reply),
                    result,
                });
                self.end_batch();
                let answer = answer.lock().take();
                return (
                    Answer::Ready(answer.unwrap_or_else(|| {
                        Err(EngineError::Internal("inline op was not answered".into()))
                    })),
                    Wake::Nothing,
                );
            }
        };
        // A due flush is an fsync: leave it to the actor's thread rather
        // than make this caller (an async worker, a JS thread) wait for it.
        if self.durability() != Durability::Memory && self.flush_due() {
            // One wake-up is enough until the thread has flushed.
            let wake = match std::mem::replace(&mut self.flush_requested, true) {
                false => Wake::FlushNow,
                true => Wake::Nothing,
            };
            return (answer, wake);
        }
        self.end_batch();
        match self.flush_deadline() {
            Some(at) if !was_dirty && self.unflushed_since.is_some() => (answer, Wake::FlushAt(at)),
            _ => (answer, Wake::Nothing),
        }
    }

    pub(super) fn flush_if_due(&mut self) {
        if self.flush_deadline().is_some_and(|d| d <= Instant::now()) {
            self.flush();
        }
    }

    fn durability(&self) -> Durability {
        self.db
            .as_ref()
            .map_or(self.inner.config.durability, ActorDb::durability)
    }

    pub(super) fn flush_deadline(&self) -> Option<Instant> {
        // Callers' rate-limit decisions change keys without the actor.
        let since = match (self.unflushed_since, self.limiter.dirty_since()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let interval = self.inner.config.flush_interval();
        match self.durability() {
            // Not aligned: these flushes make no fsync to share, and a
            // thousand actors flushing at once would crowd the journal's
            // writes off the disk.
            Durability::Durable => since.map(|t| t + interval * JOURNALED_FLUSH_INTERVALS),
            _ => since.map(|t| aligned_deadline(t, interval)),
        }
    }

    pub(super) fn handle(&mut self, msg: Msg) {
        let Msg {
            op,
            create_as,
            reply,
        } = msg;
        match self.process(op, create_as) {
            Outcome::Now(answer) => reply(answer),
            Outcome::AfterCommit(op, result) => self.pending.push(Pending {
                op,
                reply: Some(reply),
                result,
            }),
            Outcome::AfterSync(lsn, result) => self
                .inner
                .journal
                .wait(lsn, Box::new(move |synced| reply(synced.and(result)))),
        }
    }

    /// Runs one op and says when to answer it; the caller holds the reply,
    /// so an inline caller needs no boxed callback.
    fn process(&mut self, op: Op, create_as: Option<Durability>) -> Outcome {
        if let Some(to) = self.inner.moved_to(&self.id) {
            // Only the hand-off itself (sent again), its clean-up and a
            // hand-back reach a moved actor.
            if !matches!(op, Op::Destroy | Op::HandOff { .. } | Op::Import { .. }) {
                return Outcome::Now(Err(EngineError::Moved {
                    id: self.id.to_string(),
                    to,
                }));
            }
        }
        match op {
            Op::Destroy => {
                self.limiter.retire();
                self.settle();
                return Outcome::Now(self.destroy());
            }
            Op::Export => {
                self.settle();
                return Outcome::Now(self.export());
            }
            Op::HandOff { to } => {
                self.limiter.retire();
                self.settle();
                return Outcome::Now(self.hand_off(&to));
            }
            Op::Import { path } => {
                self.limiter.retire();
                self.settle();
                let result = self.import(&path, create_as);
                let _ = std::fs::remove_file(&path);
                return Outcome::Now(result);
            }
            _ => {}
        }
        if let Err(answer) = self.open_if_closed(&op, create_as) {
            return Outcome::Now(answer);
        }
        let op = match self.journaled_counter(op) {
            Ok(outcome) => return outcome,
            Err(op) => op,
        };
        let result = self.apply(&op);
        let Some(db) = self.db.as_mut() else {
            return Outcome::Now(Err(EngineError::Internal(
                "actor closed during an op".into(),
            )));
        };
        // Nothing uncommitted anywhere: a read saw acknowledged data only.
        let committed_only = !db.in_transaction() && self.pending.is_empty();
        if !db.in_transaction()
            && (!self.pending.is_empty()
                || self.counters.has_uncommitted()
                || self.limiter.has_in_flight())
        {
            // SQLite dropped the whole transaction: re-apply the ops in it.
            self.replay();
        }
        match (self.durability(), result) {
            // A read outside any transaction saw only committed data.
            (Durability::Durable, result) if op.reads_only() && committed_only => {
                Outcome::Now(result)
            }
            // Otherwise a durable actor answers, even a failure, only after
            // the batch commits: a CAS mismatch may have seen an earlier
            // op's uncommitted write, which a crash before the commit undoes.
            (Durability::Durable, result) => Outcome::AfterCommit(op, result),
            (_, Err(err)) => Outcome::Now(Err(err)),
            (Durability::Buffered, Ok(output)) if matches!(op, Op::RateLimit { .. }) => {
                // The limiter's memory is its log: it is written at flush,
                // never replayed (a replay would spend the allowance twice).
                if self.limiter.dirty_len() > 0 {
                    self.unflushed_since.get_or_insert_with(Instant::now);
                }
                Outcome::Now(Ok(output))
            }
            (Durability::Buffered, Ok(output)) if matches!(op, Op::CounterAdd { .. }) => {
                // Like the limiter's, the counter cache is its own log:
                // written at flush, never replayed (that would add twice).
                self.emit(&op, &output);
                self.unflushed_since.get_or_insert_with(Instant::now);
                Outcome::Now(Ok(output))
            }
            (Durability::Buffered, Ok(output)) => {
                self.emit(&op, &output);
                if !op.reads_only() {
                    metrics::gauge!(telemetry::BUFFERED_OPS).increment(1.0);
                    metrics::gauge!(telemetry::BUFFERED_BYTES).increment(op.approx_bytes() as f64);
                    self.pending.push(Pending {
                        op,
                        reply: None,
                        result: Ok(output.clone()),
                    });
                    self.unflushed_since.get_or_insert_with(Instant::now);
                }
                Outcome::Now(Ok(output))
            }
            (Durability::Memory, Ok(output)) => {
                self.emit(&op, &output);
                Outcome::Now(Ok(output))
            }
        }
    }

    /// A durable actor's counter op, through its journaled cache; `Err`
    /// hands back any other op.
    fn journaled_counter(&mut self, op: Op) -> Result<Outcome, Op> {
        let Some(db) = self.db.as_mut() else {
            return Err(op);
        };
        let name = match &op {
            Op::CounterAdd { name, .. } | Op::CounterGet { name }
                if db.durability() == Durability::Durable =>
            {
                name
            }
            _ => return Err(op),
        };
        if !self.counters.is_journaled() {
            match db.journal_lsn() {
                Ok(lsn) => self.counters.journaled(lsn, self.inner.journal.sync_gate()),
                Err(err) => return Ok(Outcome::Now(Err(err))),
            }
        }
        // Loads the counter: whether an add stays in memory depends on it.
        let current = match self.counters.get(db, name) {
            Ok(value) => value,
            Err(err) => return Ok(Outcome::Now(Err(err))),
        };
        let result = match &op {
            Op::CounterAdd { name, by } if self.counters.adds_in_memory(name, *by) => {
                // Journaled first: nothing is applied that is not recorded.
                let appended = self
                    .inner
                    .journal
                    .append_counter_add(self.id.as_str(), name, *by);
                let lsn = match appended {
                    Ok(lsn) => lsn,
                    Err(err) => return Ok(Outcome::Now(Err(err))),
                };
                self.counters.folded(lsn);
                self.last_lsn = lsn;
                if self.journal_hold.is_none() {
                    self.inner.journal.hold(lsn);
                    self.journal_hold = Some(lsn);
                }
                self.unflushed_since.get_or_insert_with(Instant::now);
                match self.counters.add_journaled(db, name, *by) {
                    Ok(Added::InMemory(value) | Added::ToTable(value)) => Ok(value),
                    Err(err) => Err(err),
                }
            }
            Op::CounterAdd { name, by } => match self.counters.add_journaled(db, name, *by) {
                Ok(Added::InMemory(value) | Added::ToTable(value)) => {
                    self.unflushed_since.get_or_insert_with(Instant::now);
                    Ok(value)
                }
                Err(err) => Err(err),
            },
            _ => Ok(current),
        }
        .map(OpOutput::Counter);
        self.release_hold_if_clean();
        // A value read from rows this batch has not committed waits for
        // the commit (which publishes its change); anything else for the
        // journal to hold what it saw.
        if self.counters.has_uncommitted() {
            return Ok(Outcome::AfterCommit(op, result));
        }
        if let (Ok(output), true) = (&result, op.writes()) {
            self.emit_after(&op, output, Some(self.last_lsn));
        }
        Ok(Outcome::AfterSync(self.last_lsn, result))
    }

    /// The file holds every journaled increment: the journal may drop them.
    fn release_hold_if_clean(&mut self) {
        if self.counters.is_clean() {
            if let Some(lsn) = self.journal_hold.take() {
                self.inner.journal.release(lsn);
            }
        }
    }

    /// Before the file is deleted or replaced: a durable record that the
    /// journal's records of this actor no longer apply.
    fn forget_journaled(&mut self) -> Result<(), EngineError> {
        // The settle before this wrote the counters without an fsync (see
        // `flush`): sync them first, or a power cut after the `Forget`
        // would leave the actor, not deleted after all, without them.
        let mut wal = self.file.clone().into_os_string();
        wal.push("-wal");
        match std::fs::File::open(&wal) {
            Ok(file) => file.sync_all()?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err.into()),
        }
        self.inner.journal.append_and_sync(&Entry::Forget {
            actor: self.id.to_string(),
        })?;
        if let Some(lsn) = self.journal_hold.take() {
            self.inner.journal.release(lsn);
        }
        self.inner
            .stranded
            .forget(&self.inner.journal, self.id.as_str());
        Ok(())
    }

    /// Opens the database for a cheap `op` on the caller's thread (see
    /// `Engine::call`). `Err` holds the op's answer when there is nothing
    /// to run it on: the actor moved away, has no state, or failed to open.
    pub fn open_inline(
        &mut self,
        op: &Op,
        create_as: Option<Durability>,
    ) -> Result<(), Result<OpOutput, EngineError>> {
        if let Some(to) = self.inner.moved_to(&self.id) {
            return Err(Err(EngineError::Moved {
                id: self.id.to_string(),
                to,
            }));
        }
        self.open_if_closed(op, create_as)
    }

    /// Opens the database for `op` if it is closed, as in
    /// [`Actor::open_inline`].
    fn open_if_closed(
        &mut self,
        op: &Op,
        create_as: Option<Durability>,
    ) -> Result<(), Result<OpOutput, EngineError>> {
        if self.db.is_some() {
            return Ok(());
        }
        let create = op
            .writes()
            .then(|| create_as.unwrap_or(self.inner.config.durability));
        match self.open(create) {
            Ok(true) => Ok(()),
            Ok(false) => Err(op
                .answer_when_absent()
                .ok_or_else(|| EngineError::NotFound(format!("actor {} has no state", self.id)))),
            Err(err) => Err(Err(err)),
        }
    }

    /// Opens (or, given a durability, creates) the database. `Ok(false)`:
    /// the actor has no stored state and none was asked for.
    fn open(&mut self, create: Option<Durability>) -> Result<bool, EngineError> {
        let exists = self.file.exists();
        let location = match (exists, create) {
            (true, _) => Location::File(self.file.clone()),
            (false, None) => return Ok(false),
            (false, Some(Durability::Memory)) => Location::Memory,
            (false, Some(mode)) => {
                self.inner.catalog.register(self.id.as_str(), mode)?;
                self.inner.lay_new_file(&self.file)?;
                Location::File(self.file.clone())
            }
        };
        let limits = &self.inner.config.limits;
        let watchdog = &self.inner.watchdog;
        // A new actor's file has just been laid down: every file exists now.
        let mut db = ActorDb::open_known(
            &location,
            matches!(location, Location::File(_)),
            self.id.as_str(),
            create,
            limits,
            |conn| watchdog.slot(conn),
        )?;
        if let Some(db) = db.as_mut() {
            let journal = &self.inner.journal;
            self.inner.stranded.restore(journal, self.id.as_str(), db)?;
        }
        self.pinned
            .store(matches!(location, Location::Memory), Ordering::Release);
        self.counters.clear();
        let durable = db.as_ref().map(ActorDb::durability) == Some(Durability::Durable);
        self.durable.store(durable, Ordering::Release);
        self.db = db;
        Ok(self.db.is_some())
    }

    /// Applies one op in the shared transaction (SQL inside its own savepoint).
    fn apply(&mut self, op: &Op) -> Result<OpOutput, EngineError> {
        let db = self
            .db
            .as_mut()
            .ok_or_else(|| EngineError::Internal("actor is not open".into()))?;
        // Memory actors have nothing to sync: each op commits on its own
        // (SQL atomically, in its savepoint) and is answered at once.
        let durability = db.durability();
        // Reads need no transaction of their own: outside the batch's they
        // read committed data, inside it they see its writes. A buffered
        // actor's SQL may first write cached counters, in the transaction.
        let writes = !op.reads_only()
            || (durability != Durability::Memory
                && matches!(op, Op::Sql(_))
                && self.counters.unflushed() > 0);
        if durability != Durability::Memory && writes && !db.in_transaction() {
            db.begin()?;
        }
        if durability == Durability::Durable && matches!(op, Op::Sql(_)) {
            // Journaled counters, with their journal position.
            self.counters.write(db)?;
        }
        if durability != Durability::Durable {
            // Memory and buffered counters live in memory; SQL may read
            // the table, so it sees the current values first.
            match op {
                Op::CounterAdd { name, by } => {
                    return self.counters.add(db, name, *by).map(OpOutput::Counter)
                }
                Op::CounterGet { name } => {
                    return self.counters.get(db, name).map(OpOutput::Counter)
                }
                Op::Sql(_) => self.counters.write(db)?,
                _ => {}
            }
        }
        if let Op::RateLimit {
            key,
            policy,
            cost,
            spend,
        } = op
        {
            if !self.limiter.is_attached() {
                self.limiter.attach(self.inner.limiter(&self.id));
            }
            let callers_may_decide = durability != Durability::Durable;
            return self
                .limiter
                .decide(db, key, policy, *cost, *spend, callers_may_decide)
                .map(OpOutput::RateLimit);
        }
        if !op.needs_savepoint() {
            return apply_guarded(op, db);
        }
        db.savepoint()?;
        let result = apply_guarded(op, db).and_then(|output| db.release().map(|()| output));
        if result.is_err() {
            db.rollback_op();
        }
        result
    }

    /// Re-applies the uncommitted ops after SQLite rolled back on its own.
    fn replay(&mut self) {
        metrics::counter!(telemetry::TRANSACTION_REPLAYS).increment(1);
        self.counters.rolled_back();
        self.limiter.rolled_back();
        let pending = std::mem::take(&mut self.pending);
        let mut lost = 0usize;
        for mut entry in pending {
            if matches!(entry.op, Op::RateLimit { .. }) {
                // Decided in memory, which the rollback did not touch.
                self.pending.push(entry);
                continue;
            }
            let result = self.apply(&entry.op);
            match (&entry.reply, result) {
                (Some(_), result) => entry.result = result,
                (None, Err(err)) => {
                    lost += 1;
                    tracing::error!(actor = %self.id, error = %err, "replaying an acknowledged buffered write failed");
                }
                (None, Ok(_)) => {}
            }
            if entry.result.is_ok() {
                self.pending.push(entry);
            } else if let Some(reply) = entry.reply.take() {
                reply(entry.result);
            }
        }
        if lost > 0 {
            tracing::error!(actor = %self.id, lost, "acknowledged buffered writes could not be replayed");
        }
    }

    /// Buffered mode: enough writes are waiting, or the oldest waited long enough.
    fn flush_due(&self) -> bool {
        self.unwritten() >= self.inner.config.flush_max_ops
            || self.flush_deadline().is_some_and(|d| d <= Instant::now())
    }

    /// Buffered mode: writes a flush has yet to commit (ops, limiter keys,
    /// counters, and one for counter rows already in the transaction).
    fn unwritten(&self) -> usize {
        self.pending.len()
            + self.limiter.dirty_len()
            + self.counters.unflushed()
            + usize::from(self.counters.has_uncommitted())
    }

    /// Ends a batch: commit and answer (durable, memory) or flush if due (buffered).
    pub(super) fn end_batch(&mut self) {
        match self.durability() {
            Durability::Buffered => {
                if self.unwritten() == 0 || self.flush_due() {
                    self.flush();
                }
            }
            Durability::Durable | Durability::Memory => self.commit_and_answer(),
        }
    }

    fn commit_and_answer(&mut self) {
        let Some(db) = self.db.as_mut() else { return };
        let committed = if db.in_transaction() {
            let started = Instant::now();
            let result = self
                .limiter
                .write(db)
                .and_then(|()| match self.counters.has_uncommitted() {
                    // Every cached value with the journal position, not
                    // only those written so far in this transaction.
                    true if self.counters.is_journaled() => self.counters.write(db),
                    _ => Ok(()),
                })
                .and_then(|()| db.commit());
            metrics::histogram!(telemetry::COMMIT_DURATION).record(started.elapsed().as_secs_f64());
            metrics::histogram!(telemetry::COMMIT_BATCH_OPS).record(self.pending.len() as f64);
            result
        } else {
            Ok(())
        };
        match &committed {
            Ok(()) => {
                self.limiter.written();
                self.counters.committed();
                self.release_hold_if_clean();
            }
            Err(err) => {
                db.rollback();
                self.limiter.rolled_back();
                tracing::warn!(actor = %self.id, error = %err, "commit failed; the batch is not acknowledged");
            }
        }
        let pending = std::mem::take(&mut self.pending);
        for entry in pending {
            if let (Ok(()), Ok(output)) = (&committed, &entry.result) {
                self.emit(&entry.op, output);
            }
            if let Some(reply) = entry.reply {
                reply(match &committed {
                    Ok(()) => entry.result,
                    Err(err) => Err(clone_error(err)),
                });
            }
        }
    }

    /// Publishes the change an acknowledged op made, if anyone listens.
    fn emit(&mut self, op: &Op, output: &OpOutput) {
        self.emit_after(op, output, None);
    }

    /// [`Actor::emit`], once the journal has synced `journaled` (the LSN
    /// of the op's own record, if any) and every earlier gated event.
    fn emit_after(&mut self, op: &Op, output: &OpOutput, journaled: Option<u64>) {
        let durable = self.durability() == Durability::Durable;
        let Some(hub) = self.hub.get(&self.inner.events, &self.id) else {
            return;
        };
        let change = match (op, output) {
            (Op::KvPut { key, .. }, OpOutput::Version(version)) => Change::KvPut {
                key: key.clone(),
                version: *version,
            },
            (Op::KvDelete { key, .. }, OpOutput::Existed(true)) => {
                Change::KvDelete { key: key.clone() }
            }
            (Op::CounterAdd { name, .. }, OpOutput::Counter(value)) => Change::Counter {
                name: name.clone(),
                value: *value,
            },
            _ => return,
        };
        if durable {
            let journal = &self.inner.journal;
            self.outbox.publish(journal, hub, change, journaled);
        } else {
            hub.publish_change(&change);
        }
    }

    /// Buffered mode: commit the open transaction (one fsync).
    fn flush(&mut self) {
        // A durable actor's flush holds only journaled counters: the
        // journal keeps them until a file-system sync, so no fsync here.
        let unsynced = self.db.as_mut().is_some_and(|db| {
            db.durability() == Durability::Durable
                && !db.in_transaction()
                && db.set_synced_commits(false).is_ok()
        });
        self.flush_now();
        if let Some(db) = self.db.as_mut().filter(|_| unsynced) {
            if let Err(err) = db.set_synced_commits(true) {
                // Every later commit would skip its fsync: start over.
                tracing::error!(actor = %self.id, error = %err, "could not restore synced commits; closing the database");
                self.abandon_after_flush();
            }
        }
    }

    /// Closes the database after [`Actor::flush`] could not make its
    /// commits synced again; the next op reopens it (synced, the default).
    fn abandon_after_flush(&mut self) {
        self.strand_journaled();
        self.counters.clear();
        self.limiter.clear();
        if let Some(db) = self.db.take() {
            db.close();
        }
    }

    fn flush_now(&mut self) {
        self.flush_requested = false;
        let Some(db) = self.db.as_mut() else {
            self.unflushed_since = None;
            return;
        };
        if self.limiter.dirty_len() > 0 || self.counters.unflushed() > 0 {
            let written = match db.in_transaction() {
                true => Ok(()),
                false => db.begin(),
            }
            .and_then(|()| self.limiter.write(db))
            .and_then(|()| self.counters.write(db));
            #[cfg(test)]
            let written = written.and_then(|()| super::recovery::failing::check(self.id.as_str()));
            if let Err(err) = written {
                tracing::error!(actor = %self.id, error = %err, "writing rate-limit or counter state failed; retrying on the next interval");
                if !db.in_transaction() {
                    self.replay();
                }
                self.unflushed_since = Some(Instant::now());
                return;
            }
        }
        if !db.in_transaction() {
            self.forget_pending();
            self.unflushed_since = None;
            return;
        }
        let started = Instant::now();
        let committed = db.commit();
        metrics::histogram!(telemetry::COMMIT_DURATION).record(started.elapsed().as_secs_f64());
        metrics::histogram!(telemetry::COMMIT_BATCH_OPS).record(self.pending.len() as f64);
        match committed {
            Ok(()) => {
                self.forget_pending();
                self.limiter.written();
                self.counters.committed();
                self.release_hold_if_clean();
                self.unflushed_since = None;
            }
            Err(err) => {
                tracing::error!(actor = %self.id, error = %err, writes = self.pending.len(), "buffered flush failed; retrying on the next interval");
                if !db.in_transaction() {
                    self.replay();
                }
                self.unflushed_since = Some(Instant::now());
            }
        }
    }

    /// Drops committed buffered writes, keeping the gauges true.
    fn forget_pending(&mut self) {
        let bytes: usize = self.pending.iter().map(|p| p.op.approx_bytes()).sum();
        metrics::gauge!(telemetry::BUFFERED_OPS).decrement(self.pending.len() as f64);
        metrics::gauge!(telemetry::BUFFERED_BYTES).decrement(bytes as f64);
        self.pending.clear();
    }

    /// Commits whatever is open, whatever the mode, and writes journaled
    /// counters to the file (before destroy, export and close).
    fn settle(&mut self) {
        match self.durability() {
            Durability::Buffered => self.flush(),
            Durability::Durable => {
                self.commit_and_answer();
                if !self.counters.is_clean() || self.unflushed_since.is_some() {
                    self.flush();
                }
            }
            Durability::Memory => self.commit_and_answer(),
        }
    }

    fn destroy(&mut self) -> Result<OpOutput, EngineError> {
        let existed = self.db.is_some() || self.file.exists();
        if self.file.exists() {
            self.forget_journaled()?;
        }
        self.limiter.clear();
        self.counters.clear();
        if let Some(db) = self.db.take() {
            db.close();
        }
        self.pinned.store(false, Ordering::Release);
        // The file goes before its WAL: a crash in between leaves a WAL
        // without a file, which the next create removes before it lays a
        // file down, never a file without the frames its WAL held.
        let mut removed = false;
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.file.clone().into_os_string();
            path.push(suffix);
            match std::fs::remove_file(&path) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        // An acknowledged delete must not come back after a power loss.
        if removed {
            crate::store::sync_new_entry(&self.file, false)?;
        }
        self.inner.catalog.unregister(self.id.as_str())?;
        Ok(OpOutput::Existed(existed))
    }

    /// A consistent copy of the database, taken between ops.
    fn export(&mut self) -> Result<OpOutput, EngineError> {
        if self.db.is_none() && !self.open(None)? {
            return Err(EngineError::NotFound(format!(
                "actor {} has no state",
                self.id
            )));
        }
        let path = self.inner.temp_file("export");
        let db = self
            .db
            .as_mut()
            .ok_or_else(|| EngineError::Internal("actor is not open".into()))?;
        self.counters.write(db)?;
        match db.vacuum_into(&path) {
            Ok(()) => Ok(OpOutput::File(path)),
            Err(err) => {
                let _ = std::fs::remove_file(&path);
                Err(err)
            }
        }
    }

    /// The final copy for machine `to`; from then on the actor is closed
    /// here and every op but the hand-off's own answers `Moved`. A memory
    /// actor's state does not travel (like a restart, a move forgets it).
    fn hand_off(&mut self, to: &str) -> Result<OpOutput, EngineError> {
        if self.db.is_none() && !self.open(None)? {
            return Err(EngineError::NotFound(format!(
                "actor {} has no state",
                self.id
            )));
        }
        let durability = self.durability();
        if durability == Durability::Memory {
            self.inner.record_moved(&self.id, to)?;
            self.destroy()?;
            return Ok(OpOutput::HandedOff(None));
        }
        let OpOutput::File(copy) = self.export()? else {
            return Err(EngineError::Internal("export gave no file".into()));
        };
        if let Err(err) = self.inner.record_moved(&self.id, to) {
            let _ = std::fs::remove_file(&copy);
            return Err(err);
        }
        self.limiter.clear();
        self.counters.clear();
        if let Some(db) = self.db.take() {
            db.close();
        }
        Ok(OpOutput::HandedOff(Some((copy, durability))))
    }

    /// Replaces the actor's state with the uploaded file, atomically: the
    /// upload is validated first, then renamed over the actor's file.
    fn import(
        &mut self,
        upload: &std::path::Path,
        create_as: Option<Durability>,
    ) -> Result<OpOutput, EngineError> {
        let durability = match &self.db {
            Some(db) => db.durability(),
            None => self
                .inner
                .catalog
                .durability(self.id.as_str())?
                .filter(|_| self.file.exists())
                .unwrap_or(create_as.unwrap_or(self.inner.config.durability)),
        };
        if durability == Durability::Memory {
            return Err(EngineError::InvalidRequest(
                "memory actors cannot import a file".into(),
            ));
        }
        crate::store::transfer::prepare_import(
            upload,
            self.id.as_str(),
            durability,
            &self.inner.config.limits,
        )?;
        self.limiter.clear();
        self.counters.clear();
        if let Some(db) = self.db.take() {
            db.close();
        }
        for suffix in ["-wal", "-shm"] {
            let mut path = self.file.clone().into_os_string();
            path.push(suffix);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        if self.file.exists() {
            self.forget_journaled()?;
        }
        self.inner.catalog.register(self.id.as_str(), durability)?;
        if let Some(parent) = self.file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(upload, &self.file)?;
        crate::store::sync_parent_dir(&self.file)?;
        if self.inner.moved_to(&self.id).is_some() {
            // Handed back: this machine serves it again.
            self.inner.forget_moved(&self.id)?;
        }
        self.open(None)?;
        Ok(OpOutput::Imported)
    }

    /// Drops the connection without flushing or answering anything: after a
    /// panic, when nothing else about the actor can be trusted.
    pub(super) fn abandon(&mut self) {
        self.strand_journaled();
        self.db = None;
    }

    /// Closing with journaled increments the file lacks (its flush failed):
    /// the journal keeps them for the next open (see `recovery`).
    fn strand_journaled(&mut self) {
        if self.counters.is_journaled() && !self.counters.is_clean() {
            if let Some(lsn) = self.journal_hold.take() {
                tracing::error!(actor = %self.id, "closing with journaled counters its file lacks; they are written when it opens");
                let journal = &self.inner.journal;
                self.inner.stranded.add(journal, self.id.as_str(), lsn);
            }
        }
    }

    pub(super) fn close(&mut self) {
        self.limiter.retire();
        self.settle();
        if self.durability() == Durability::Buffered && self.unwritten() > 0 {
            tracing::error!(actor = %self.id, writes = self.unwritten(), "closing with unflushed buffered writes");
        }
        self.strand_journaled();
        self.release_hold_if_clean();
        self.limiter.clear();
        self.counters.clear();
        if let Some(db) = self.db.take() {
            db.close();
        }
        self.hub = HubCache::default();
        self.inner.events.release_if_unused(&self.id);
    }
}

/// The flush deadline for writes waiting since `since`: the last multiple
/// of `interval` (counted from a process-wide instant) at most `interval`
/// after `since`. Buffered actors written to at different moments so flush
/// together, and their fsyncs share journal commits instead of each
/// stalling the disk on its own; no write waits longer than `interval`.
fn aligned_deadline(since: Instant, interval: std::time::Duration) -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    // The first write's own moment, not the call's: an epoch taken after
    // `since` put the first write of a process just past a boundary,
    // flushing it at once.
    let epoch = *EPOCH.get_or_init(|| since);
    let latest = since + interval;
    let Some(elapsed) = latest.checked_duration_since(epoch) else {
        return latest;
    };
    let interval_ns = interval.as_nanos().max(1);
    let past_boundary = elapsed.as_nanos() % interval_ns;
    latest - std::time::Duration::from_nanos(past_boundary as u64)
}

/// Runs an op, turning a panic inside libSQL (it unwraps TEXT that is not
/// UTF-8, for one) into an error for that op alone: the actor's thread,
/// its open transaction and its acknowledged writes live on.
fn apply_guarded(op: &Op, db: &mut ActorDb) -> Result<OpOutput, EngineError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op.apply(db))).unwrap_or_else(|panic| {
        let detail = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::warn!(%detail, "an operation panicked inside the storage layer");
        Err(EngineError::Sql(format!(
            "the result could not be read (a TEXT value that is not UTF-8? read it as a BLOB with CAST(... AS BLOB)): {detail}"
        )))
    })
}

/// Errors are answered to every op of a failed batch.
fn clone_error(err: &EngineError) -> EngineError {
    match err {
        EngineError::InsufficientStorage(m) => EngineError::InsufficientStorage(m.clone()),
        EngineError::Io(m) => EngineError::Io(m.clone()),
        EngineError::TooLarge(m) => EngineError::TooLarge(m.clone()),
        other => EngineError::Internal(format!("commit failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::events::Frame;
    use super::super::Engine;
    use crate::actor_id::ActorId;
    use crate::config::{Durability, EngineConfig};
    use crate::error::EngineError;
    use crate::store::sql::SqlRequest;
    use futures::executor::block_on;
    use libsql::Value;

    fn memory_engine(dir: &tempfile::TempDir) -> Engine {
        Engine::open(EngineConfig {
            data_dir: dir.path().to_owned(),
            durability: Durability::Memory,
            ..EngineConfig::default()
        })
        .unwrap()
    }

    fn counter_in_sql(engine: &Engine, id: &ActorId, name: &str) -> Value {
        let request: SqlRequest = serde_json::from_value(serde_json::json!({
            "sql": "SELECT value FROM _roost_counters WHERE name = ?1",
            "params": [name],
        }))
        .unwrap();
        let response = block_on(engine.sql(id, request, None)).unwrap();
        response.results[0].rows[0][0].0.clone()
    }

    #[test]
    fn flush_deadlines_fall_on_shared_boundaries_within_the_interval() {
        let interval = std::time::Duration::from_millis(100);
        let start = std::time::Instant::now();
        let deadlines: Vec<_> = (0..50)
            .map(|i| start + std::time::Duration::from_millis(i * 7))
            .map(|since| (since, super::aligned_deadline(since, interval)))
            .collect();
        for (since, deadline) in &deadlines {
            assert!(*deadline > *since && *deadline <= *since + interval);
        }
        let distinct: std::collections::BTreeSet<_> = deadlines.iter().map(|(_, d)| *d).collect();
        // 350 ms of first writes flush at four or five shared moments.
        assert!(distinct.len() <= 5, "{} distinct deadlines", distinct.len());
    }

    #[test]
    fn sql_sees_memory_counters_right_after_adds() {
        let dir = tempfile::tempdir().unwrap();
        let engine = memory_engine(&dir);
        let id = ActorId::parse("room").unwrap();
        for _ in 0..50 {
            block_on(engine.counter_add(&id, "n".into(), 1, None)).unwrap();
        }
        block_on(engine.counter_add(&id, "m".into(), -7, None)).unwrap();
        assert_eq!(counter_in_sql(&engine, &id, "n"), Value::Integer(50));
        assert_eq!(counter_in_sql(&engine, &id, "m"), Value::Integer(-7));
        block_on(engine.counter_add(&id, "n".into(), 3, None)).unwrap();
        assert_eq!(counter_in_sql(&engine, &id, "n"), Value::Integer(53));
        assert_eq!(block_on(engine.counter_get(&id, "n".into())).unwrap(), 53);
    }

    #[test]
    fn export_of_a_memory_actor_holds_its_counters() {
        let dir = tempfile::tempdir().unwrap();
        let engine = memory_engine(&dir);
        let id = ActorId::parse("room").unwrap();
        for _ in 0..20 {
            block_on(engine.counter_add(&id, "n".into(), 1, None)).unwrap();
        }
        let path = block_on(engine.export(&id)).unwrap();
        let copy = crate::store::block_on(libsql::Builder::new_local(&path).build()).unwrap();
        let conn = copy.connect().unwrap();
        let mut rows = crate::store::block_on(
            conn.query("SELECT value FROM _roost_counters WHERE name = 'n'", ()),
        )
        .unwrap();
        let row = crate::store::block_on(rows.next()).unwrap().unwrap();
        assert_eq!(row.get_value(0).unwrap(), Value::Integer(20));
        drop(rows);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn memory_counter_overflow_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let engine = memory_engine(&dir);
        let id = ActorId::parse("room").unwrap();
        block_on(engine.counter_add(&id, "n".into(), i64::MAX - 3, None)).unwrap();
        block_on(engine.counter_add(&id, "n".into(), 1, None)).unwrap();
        let refused = block_on(engine.counter_add(&id, "n".into(), 5, None));
        assert!(
            matches!(refused, Err(EngineError::InvalidRequest(_))),
            "{refused:?}"
        );
        assert_eq!(
            block_on(engine.counter_get(&id, "n".into())).unwrap(),
            i64::MAX - 2
        );
        assert_eq!(
            counter_in_sql(&engine, &id, "n"),
            Value::Integer(i64::MAX - 2)
        );
    }

    /// The values of the counter changes received so far, and the other
    /// changes' types.
    fn received(live: &mut tokio::sync::broadcast::Receiver<Frame>) -> Vec<String> {
        let mut seen = Vec::new();
        while let Ok(frame) = live.try_recv() {
            if let Frame::Change { json, .. } = frame {
                let event: serde_json::Value = serde_json::from_str(&json).unwrap();
                seen.push(match event["type"].as_str() {
                    Some("counter") => event["value"].to_string(),
                    other => format!("{other:?}"),
                });
            }
        }
        seen
    }

    #[test]
    fn durable_counter_changes_wait_for_the_journal_and_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(EngineConfig {
            data_dir: dir.path().to_owned(),
            durability: Durability::Durable,
            flush_interval_ms: 600_000,
            ..EngineConfig::default()
        })
        .unwrap();
        let engine = std::sync::Arc::new(engine);
        let id = ActorId::parse("gated").unwrap();
        let mut live = engine.events().hub(&id).subscribe();
        // 2, not 1: the stored value's record then has room for the next
        // values, so the adds below stay in memory and go to the journal.
        block_on(engine.counter_add(&id, "n".into(), 2, None)).unwrap();
        assert_eq!(received(&mut live), ["2"], "one event per increment");
        let paused = engine.inner.journal.pause();
        let adders: Vec<_> = (0..3)
            .map(|_| {
                let (engine, id) = (engine.clone(), id.clone());
                std::thread::spawn(move || block_on(engine.counter_add(&id, "n".into(), 1, None)))
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while engine.inner.journal.unsynced() < 3 {
            assert!(std::time::Instant::now() < deadline, "not journaled");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // A committed KV write queues behind the increments before it.
        let precondition = crate::store::kv::Precondition::None;
        block_on(engine.kv_put(&id, "k".into(), b"v".to_vec(), precondition, None)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(
            received(&mut live),
            Vec::<String>::new(),
            "nothing before the sync"
        );
        drop(paused);
        for adder in adders {
            adder.join().unwrap().unwrap();
        }
        let seen = received(&mut live);
        assert_eq!(seen[..3], ["3", "4", "5"]);
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert_ne!(seen[3], "5");
    }

    #[test]
    fn memory_counter_changes_are_published_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let engine = memory_engine(&dir);
        let id = ActorId::parse("room").unwrap();
        let mut live = engine.events().hub(&id).subscribe();
        for _ in 0..3 {
            block_on(engine.counter_add(&id, "n".into(), 2, None)).unwrap();
        }
        let values: Vec<i64> = (0..3)
            .map(|_| match live.try_recv().unwrap() {
                Frame::Change { json, .. } => {
                    let event: serde_json::Value = serde_json::from_str(&json).unwrap();
                    assert_eq!(event["type"], "counter");
                    event["value"].as_i64().unwrap()
                }
                other => panic!("unexpected frame {other:?}"),
            })
            .collect();
        assert_eq!(values, [2, 4, 6]);
    }

    #[test]
    fn a_full_memory_actor_refuses_new_counters_and_keeps_counting_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = EngineConfig {
            data_dir: dir.path().to_owned(),
            durability: Durability::Memory,
            ..EngineConfig::default()
        };
        config.limits.max_actor_bytes = 64 << 10;
        let engine = Engine::open(config).unwrap();
        let id = ActorId::parse("room").unwrap();
        block_on(engine.counter_add(&id, "old".into(), 2, None)).unwrap();
        let long_name = |i: usize| format!("{i:04}{}", "x".repeat(1000));
        let refused = (0..200)
            .map(|i| (i, block_on(engine.counter_add(&id, long_name(i), 1, None))))
            .find(|(_, added)| added.is_err());
        let Some((i, Err(EngineError::InsufficientStorage(_)))) = refused else {
            panic!("the database never filled up: {refused:?}");
        };
        assert_eq!(block_on(engine.counter_get(&id, long_name(i))).unwrap(), 0);
        for _ in 0..10 {
            block_on(engine.counter_add(&id, "old".into(), 1, None)).unwrap();
        }
        assert_eq!(counter_in_sql(&engine, &id, "old"), Value::Integer(12));
        assert_eq!(
            counter_in_sql(&engine, &id, &long_name(0)),
            Value::Integer(1)
        );
    }

    #[test]
    fn destroying_a_memory_actor_forgets_its_counters() {
        let dir = tempfile::tempdir().unwrap();
        let engine = memory_engine(&dir);
        let id = ActorId::parse("room").unwrap();
        for _ in 0..5 {
            block_on(engine.counter_add(&id, "n".into(), 1, None)).unwrap();
        }
        assert!(block_on(engine.destroy(&id)).unwrap());
        assert_eq!(block_on(engine.counter_get(&id, "n".into())).unwrap(), 0);
        assert_eq!(
            block_on(engine.counter_add(&id, "n".into(), 1, None)).unwrap(),
            1
        );
    }
}
