//! The actor engine: routes each operation to its actor's queue (run on a
//! thread while the actor has work, see `runner`), keeps a bounded set of
//! actors open (least recently used and idle ones are closed), and shuts
//! down by flushing every actor. It knows nothing of HTTP or C; both
//! fronts call the typed API in `api`.

mod actor;
pub mod api;
pub mod caller;
mod descriptors;
pub mod events;
mod flusher;
pub mod layout;
pub mod ops;
mod outbox;
mod recovery;
mod runner;
mod threads;
pub mod watchdog;

use crate::actor_id::ActorId;
use crate::config::{Durability, EngineConfig};
use crate::error::EngineError;
use crate::limiter::state::SharedLimiter;
use crate::placement::SpawnFloating;
use crate::store::catalog::Catalog;
use crate::telemetry;
pub use actor::Reply;
use actor::{Actor, Answer, Mail, Msg, Wake};
use crossbeam_channel::Sender;
use hashlink::linked_hash_map::Entry;
use hashlink::LinkedHashMap;
use ops::{Op, OpOutput};
use parking_lot::{Condvar, Mutex};
use runner::Runner;
use std::collections::HashMap;
use std::hash::RandomState;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use watchdog::Watchdog;

/// Stack for actor threads: SQLite keeps its work on the heap.
const ACTOR_STACK_BYTES: usize = 1 << 20;
/// Actor threads started ahead of need (see `threads`).
const SPARE_THREADS: usize = 4;

/// The embeddable engine. Cheap to share behind an `Arc`; safe to use from
/// many threads. Dropping it shuts it down.
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: EngineConfig,
    pub catalog: Catalog,
    pub watchdog: Watchdog,
    /// Durable actors' counter increments (see `store::journal`).
    pub journal: crate::store::journal::Journal,
    /// Actors whose files lack journaled increments while closed.
    pub stranded: recovery::Stranded,
    pub events: events::Events,
    /// The limiter actors' IDs, worked out once.
    pub limiter_ids: Vec<ActorId>,
    /// Rate-limit state of every actor that has decided, shared between
    /// its thread and callers (see `limiter::state`).
    pub(crate) limiters: parking_lot::RwLock<HashMap<ActorId, Arc<SharedLimiter>>>,
    registry: Mutex<Registry>,
    /// Actors handed off to another machine, and where they went (mirrors
    /// the catalog's `moved` table).
    moved: parking_lot::RwLock<HashMap<ActorId, String>>,
    /// Whether `moved` has entries: every op checks it, and a machine that
    /// never handed anything off should not pay for a map lookup.
    any_moved: AtomicBool,
    closed: AtomicBool,
    /// Actor threads, reused from parked and closed actors (see `threads`).
    threads: threads::Threads,
    /// Held until every actor has closed: one engine per data dir (actor
    /// files are opened without SQLite's own locks, see `store::vfs`).
    dir_lock: Mutex<Option<std::fs::File>>,
    reaper_wake: Condvar,
    /// Flush deadlines of actors without a thread (see `flusher`).
    flusher: flusher::FlushTimer,
    /// An empty actor file, copied for each new actor (see `lay_new_file`).
    new_actor: Vec<u8>,
}

struct Registry {
    /// Least recently used first: every use moves an actor's slot to the
    /// back, so eviction takes the front instead of scanning them all
    /// (a scan of 5,000 open actors per cold open, under this registry's
    /// lock, was a tenth of the CPU in the scale suite's random access).
    open: LinkedHashMap<ActorId, Slot, RandomState>,
    /// Evicted actors still finishing their queue.
    closing: HashMap<ActorId, Arc<Runner>>,
}

struct Slot {
    /// The actor's queue. Dropping it (with the slot) closes the actor once
    /// the queue is drained.
    tx: Sender<Mail>,
    runner: Arc<Runner>,
    last_used: Instant,
    pinned: Arc<AtomicBool>,
}

impl Slot {
    /// Queues `mail` and makes sure a thread will run it.
    fn send(&self, mail: Mail) {
        // The runner holds the receiver as long as the slot holds the
        // runner: the send cannot fail.
        let _ = self.tx.send(mail);
        self.runner.wake();
    }

    /// Drops the queue's sender, so the actor drains its queue, flushes and
    /// closes; returns its runner, whose `done` is set once it has.
    fn retire(self) -> Arc<Runner> {
        let runner = self.release();
        runner.wake();
        runner
    }

    /// [`Slot::retire`] without putting the actor on a thread: the caller
    /// must `claim` the runner and run it (or find it already running).
    fn release(self) -> Arc<Runner> {
        let Slot { tx, runner, .. } = self;
        runner.mark_released();
        drop(tx);
        runner
    }
}

/// Threads that close parked actors at shutdown at most. Each close is a
/// checkpoint and an fsync, so a few run at once; one thread per actor
/// (as waking each would start) meant thousands of threads at once.
const SHUTDOWN_CLOSERS: usize = 16;

/// Runs `turns` (closing actors) on at most [`SHUTDOWN_CLOSERS`] threads
/// of their own, without waiting for them, and returns how many threads
/// it started; if it could start none, it runs them all on this one.
fn close_in_parallel(turns: Vec<Box<dyn FnOnce() + Send>>) -> usize {
    let closers = turns.len().min(SHUTDOWN_CLOSERS);
    let queue = Arc::new(Mutex::new(turns));
    let mut started = 0;
    for _ in 0..closers {
        let queue = queue.clone();
        let spawned = std::thread::Builder::new()
            .name("roost-close".into())
            .stack_size(ACTOR_STACK_BYTES)
            .spawn_floating(move || loop {
                let Some(turn) = queue.lock().pop() else {
                    return;
                };
                turn();
            });
        started += usize::from(spawned.is_ok());
    }
    if started == 0 {
        loop {
            let Some(turn) = queue.lock().pop() else {
                break;
            };
            turn();
        }
    }
    started
}

/// Set when an actor has closed its database and let go of the engine.
#[derive(Default)]
pub(crate) struct Done {
    finished: Mutex<bool>,
    cv: Condvar,
}

impl Done {
    fn set(&self) {
        *self.finished.lock() = true;
        self.cv.notify_all();
    }

    pub fn wait(&self) {
        let mut finished = self.finished.lock();
        while !*finished {
            self.cv.wait(&mut finished);
        }
    }

    fn wait_until(&self, deadline: Instant) -> bool {
        let mut finished = self.finished.lock();
        while !*finished {
            if self.cv.wait_until(&mut finished, deadline).timed_out() {
                return *finished;
            }
        }
        true
    }
}

/// What the engine knows about one actor without opening it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActorInfo {
    pub id: ActorId,
    pub durability: Durability,
    pub size_bytes: u64,
    pub open: bool,
}

/// A page of stored actors.
#[derive(Debug, Clone, PartialEq)]
pub struct ActorPage {
    pub actors: Vec<(String, u64)>,
    pub cursor: Option<String>,
}

impl Engine {
    /// Opens the engine over `config.data_dir`, creating it if needed.
    pub fn open(config: EngineConfig) -> Result<Engine, EngineError> {
        if !(1..=crate::limiter::MAX_SHARDS).contains(&config.ratelimit_shards) {
            return Err(EngineError::InvalidConfig(format!(
                "ratelimit_shards must be between 1 and {}, not {}",
                crate::limiter::MAX_SHARDS,
                config.ratelimit_shards
            )));
        }
        std::fs::create_dir_all(&config.data_dir)?;
        let mut config = config;
        // Actor paths are built under it, and SQLite need not resolve
        // links in a canonical path (see `store::vfs`).
        config.data_dir = std::fs::canonicalize(&config.data_dir)?;
        let lock = lock_data_dir(&config.data_dir)?;
        descriptors::reserve(config.max_open_actors, &lock);
        layout::upgrade(&config.data_dir)?;
        // Exports and uploads in flight when the process died are garbage.
        let _ = std::fs::remove_dir_all(config.data_dir.join("tmp"));
        std::fs::create_dir_all(config.data_dir.join("tmp"))?;
        // Before libsql starts SQLite (the catalog is its first database):
        // memory settings only apply then.
        crate::store::vfs::register();
        let catalog = Catalog::open(&config.data_dir.join("catalog.db"))?;
        let new_actor = crate::store::new_actor_image(&config.data_dir.join("tmp").join("new.db"))?;
        let moved: HashMap<ActorId, String> = catalog
            .all_moved()?
            .into_iter()
            .filter_map(|(id, to)| Some((ActorId::parse(&id).ok()?, to)))
            .collect();
        let watchdog = Watchdog::start()?;
        let (journal, stranded) = recovery::open_journal(&config, &watchdog)?;
        let limiter_ids = (0..config.ratelimit_shards as usize)
            .map(crate::limiter::shard_id)
            .collect();
        let open_capacity = config.max_open_actors.min(1 << 16);
        let inner = Arc::new(Inner {
            config,
            catalog,
            watchdog,
            journal,
            stranded,
            events: events::Events::default(),
            limiter_ids,
            limiters: Default::default(),
            // Sized for the cache up front: growing it rehashes every open
            // actor under the lock, which stalled the opens at each doubling.
            registry: Mutex::new(Registry {
                open: LinkedHashMap::with_capacity_and_hasher(open_capacity, RandomState::new()),
                closing: HashMap::new(),
            }),
            any_moved: AtomicBool::new(!moved.is_empty()),
            moved: parking_lot::RwLock::new(moved),
            closed: AtomicBool::new(false),
            threads: threads::Threads::new("roost-actor", ACTOR_STACK_BYTES, SPARE_THREADS),
            reaper_wake: Condvar::new(),
            flusher: flusher::FlushTimer::default(),
            dir_lock: Mutex::new(Some(lock)),
            new_actor,
        });
        let timer = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("roost-flusher".into())
            .spawn_floating(move || flusher::run(timer))?;
        let reaper = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("roost-reaper".into())
            .spawn_floating(move || reap_idle(reaper))?;
        Ok(Engine { inner })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Change events and message fan-out, per actor.
    pub fn events(&self) -> &events::Events {
        &self.inner.events
    }

    /// A listener left: forget the actor's hub unless someone else listens
    /// or the actor is open (and may still publish).
    pub fn release_hub(&self, id: &ActorId) {
        if !self.inner.registry.lock().open.contains_key(id) {
            self.inner.events.release_if_unused(id);
        }
    }

    /// Queues `op` for the actor; `reply` gets the result. Never
    /// blocks on I/O, so async runtimes and event loops may call it.
    pub fn submit(&self, id: &ActorId, op: Op, create_as: Option<Durability>, reply: Reply) {
        if let Err(err) = op.validate(&self.inner.config.limits) {
            return reply(Err(err));
        }
        if self.inner.closed.load(Ordering::Acquire) {
            return reply(Err(EngineError::Closed));
        }
        let msg = Msg {
            op,
            create_as,
            reply,
        };
        let mut registry = self.inner.registry.lock();
        if let Some(slot) = registry.open.to_back(id) {
            slot.last_used = Instant::now();
            return slot.send(Mail::Op(msg));
        }
        // Checked again under the lock `shutdown` takes after setting it:
        // no actor opens after shutdown has closed them all.
        if self.inner.closed.load(Ordering::Acquire) {
            drop(registry);
            return (msg.reply)(Err(EngineError::Closed));
        }
        self.spawn_actor(&mut registry, id, msg);
    }

    /// Opens a slot for `id` with `msg` first in its queue. (A thread that
    /// cannot be started answers the queued ops with an error; the next op
    /// tries again.)
    fn spawn_actor(&self, registry: &mut Registry, id: &ActorId, msg: Msg) {
        self.open_slot(registry, id).send(Mail::Op(msg));
    }

    /// A new slot for `id` (which has none), with no thread yet, evicting
    /// the least recently used actor if the cache is full.
    fn open_slot<'r>(&self, registry: &'r mut Registry, id: &ActorId) -> &'r Slot {
        if registry.open.len() >= self.inner.config.max_open_actors {
            evict_lru(&self.inner, registry);
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let pinned = Arc::new(AtomicBool::new(false));
        let predecessor = registry.closing.get(id).map(|r| r.done.clone());
        let cell = Mutex::new(Actor::new(id.clone(), self.inner.clone(), pinned.clone()));
        let runner = Runner::new(id.clone(), cell, rx, predecessor, self.inner.clone());
        let slot = Slot {
            tx,
            runner,
            last_used: Instant::now(),
            pinned,
        };
        metrics::counter!(telemetry::ACTOR_OPENS).increment(1);
        metrics::gauge!(telemetry::OPEN_ACTORS).set((registry.open.len() + 1) as f64);
        match registry.open.entry(id.clone()) {
            Entry::Vacant(vacant) => vacant.insert(slot),
            Entry::Occupied(mut occupied) => {
                occupied.insert(slot);
                occupied.to_back();
                occupied.into_mut()
            }
        }
    }

    /// Runs `future` (an engine call) on this thread and waits for it, as a
    /// blocking caller (see [`caller`]): a cold actor is opened right here.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        caller::blocking(|| futures::executor::block_on(future))
    }

    /// Runs `op` and waits for its result.
    pub async fn call(
        &self,
        id: &ActorId,
        op: Op,
        create_as: Option<Durability>,
    ) -> Result<OpOutput, EngineError> {
        let op = match self.try_inline(id, op, create_as) {
            Ok(Answer::Ready(answer)) => return answer,
            Ok(Answer::AfterSync(lsn, answer)) => return self.after_sync(lsn, answer).await,
            Err(op) => op,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            id,
            op,
            create_as,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        rx.await.unwrap_or_else(|_| {
            Err(EngineError::Internal(
                "the actor stopped before answering".into(),
            ))
        })
    }

    /// `answer`, once the journal has synced up to `lsn`.
    async fn after_sync(
        &self,
        lsn: u64,
        answer: Result<OpOutput, EngineError>,
    ) -> Result<OpOutput, EngineError> {
        if self.inner.journal.synced() >= lsn {
            return answer;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.inner.journal.wait(
            lsn,
            Box::new(move |synced| {
                let _ = tx.send(synced);
            }),
        );
        match rx.await {
            Ok(synced) => synced.and(answer),
            Err(_) => Err(EngineError::Internal("the journal stopped".into())),
        }
    }

    /// Runs a cheap op (KV, counters), or for a blocking caller user SQL,
    /// on the calling thread when the actor is open, answers without an
    /// fsync (buffered or memory; a durable actor's reads), nothing is
    /// queued before it and its thread is not busy: no thread hop at all.
    /// A blocking caller also opens a cold actor itself (see [`caller`]).
    /// Otherwise hands the op back to be queued.
    fn try_inline(
        &self,
        id: &ActorId,
        op: Op,
        create_as: Option<Durability>,
    ) -> Result<Answer, Op> {
        if !op.may_run_on_caller(caller::is_blocking()) || self.inner.closed.load(Ordering::Acquire)
        {
            return Err(op);
        }
        let runner = {
            let mut registry = self.inner.registry.lock();
            let Some(slot) = registry.open.to_back(id) else {
                if caller::is_blocking() && !registry.closing.contains_key(id) {
                    return self.open_inline(registry, id, op, create_as);
                }
                return Err(op);
            };
            if !slot.tx.is_empty() {
                return Err(op);
            }
            slot.last_used = Instant::now();
            slot.runner.clone()
        };
        // A blocking caller would otherwise queue the op and sleep until the
        // actor's thread answers: two thread wake-ups, far longer than the
        // op. Waiting for the lock is shorter. An async worker must not wait.
        let mut actor = if caller::is_blocking() && runner.worth_waiting_for(&op) {
            runner.cell.lock()
        } else {
            let Some(actor) = runner.cell.try_lock() else {
                return Err(op);
            };
            actor
        };
        // Checked again under the actor's lock: ops queued before this one
        // run first.
        if !runner.queue_is_empty() || !actor.runs_inline(&op) {
            return Err(op);
        }
        if let Err(err) = op.validate(&self.inner.config.limits) {
            return Ok(Answer::Ready(Err(err)));
        }
        let (answer, wake) = actor.run_inline(op, create_as);
        drop(actor);
        self.arrange_flush(id, &runner, wake);
        Ok(answer)
    }

    /// A blocking caller's cold open (see [`caller`]): a slot for `id`
    /// whose database this thread opens, holding the actor's lock, before
    /// running `op` here. Ops that arrive meanwhile queue and wait for the
    /// lock; an op that cannot run inline (a durable write) queues after
    /// them, for the actor's thread, once the database is open.
    fn open_inline(
        &self,
        mut registry: parking_lot::MutexGuard<'_, Registry>,
        id: &ActorId,
        op: Op,
        create_as: Option<Durability>,
    ) -> Result<Answer, Op> {
        if let Err(err) = op.validate(&self.inner.config.limits) {
            return Ok(Answer::Ready(Err(err)));
        }
        if self.inner.closed.load(Ordering::Acquire) {
            return Ok(Answer::Ready(Err(EngineError::Closed)));
        }
        let runner = self.open_slot(&mut registry, id).runner.clone();
        // Nobody else can hold the new actor's lock yet: the registry's is
        // still held.
        let mut actor = runner.cell.lock();
        drop(registry);
        if let Err(answer) = actor.open_inline(&op, create_as) {
            return Ok(Answer::Ready(answer));
        }
        if !runner.queue_is_empty() || !actor.runs_inline(&op) {
            return Err(op);
        }
        let (answer, wake) = actor.run_inline(op, create_as);
        drop(actor);
        self.arrange_flush(id, &runner, wake);
        Ok(answer)
    }

    /// After an inline op: a flush due now wakes the actor's thread; one
    /// due later is the flush timer's (a thread the actor has meanwhile
    /// sees the deadline itself).
    fn arrange_flush(&self, id: &ActorId, runner: &Arc<Runner>, wake: Wake) {
        match wake {
            Wake::Nothing => {}
            Wake::FlushAt(at) => self.inner.flusher.schedule(at, runner),
            Wake::FlushNow => self.wake(id),
        }
    }

    /// Wakes the actor's thread to re-read its flush deadline.
    pub(crate) fn wake(&self, id: &ActorId) {
        if let Some(slot) = self.inner.registry.lock().open.get(id) {
            slot.send(Mail::Wake);
        }
    }

    /// Describes a stored (or in-memory) actor without opening it.
    pub fn info(&self, id: &ActorId) -> Result<ActorInfo, EngineError> {
        let (open, pinned) = {
            let registry = self.inner.registry.lock();
            let slot = registry.open.get(id);
            (
                slot.is_some(),
                slot.is_some_and(|s| s.pinned.load(Ordering::Acquire)),
            )
        };
        let durability = match self.inner.catalog.durability(id.as_str())? {
            Some(mode) if self.inner.actor_file(id).exists() => mode,
            _ if pinned => Durability::Memory,
            _ => return Err(EngineError::NotFound(format!("actor {id} does not exist"))),
        };
        Ok(ActorInfo {
            id: id.clone(),
            durability,
            size_bytes: self.inner.size_on_disk(id),
            open,
        })
    }

    /// Actors stored on this machine (and in-memory ones), in ID order.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ActorPage, EngineError> {
        let limit = limit.clamp(1, 1000);
        let mut ids = self.inner.catalog.list(prefix, after, limit + 1)?;
        {
            let registry = self.inner.registry.lock();
            ids.extend(
                registry
                    .open
                    .iter()
                    .filter(|(id, slot)| {
                        slot.pinned.load(Ordering::Acquire)
                            && id.as_str().starts_with(prefix)
                            && after.is_none_or(|a| id.as_str() > a)
                    })
                    .map(|(id, _)| id.as_str().to_owned()),
            );
        }
        ids.sort();
        ids.dedup();
        let more = ids.len() > limit;
        ids.truncate(limit);
        let cursor = if more { ids.last().cloned() } else { None };
        let actors = ids
            .into_iter()
            .filter_map(|id| {
                let actor = ActorId::parse(&id).ok()?;
                let stored = self.inner.actor_file(&actor).exists();
                let size = self.inner.size_on_disk(&actor);
                let here = (stored || self.is_pinned(&actor)) && self.moved_to(&actor).is_none();
                here.then_some((id, size))
            })
            .collect();
        Ok(ActorPage { actors, cursor })
    }

    fn is_pinned(&self, id: &ActorId) -> bool {
        let registry = self.inner.registry.lock();
        registry
            .open
            .get(id)
            .is_some_and(|s| s.pinned.load(Ordering::Acquire))
    }

    /// The machine the actor was handed off to, if it was.
    pub fn moved_to(&self, id: &ActorId) -> Option<String> {
        self.inner.moved_to(id)
    }

    /// Whether any actor was ever handed off from here (and not back).
    pub fn has_moved(&self) -> bool {
        self.inner.any_moved.load(Ordering::Acquire)
    }

    /// Forgets that the actor was handed off: it may live here again (the
    /// machine it went to no longer has it).
    pub fn forget_moved(&self, id: &ActorId) -> Result<(), EngineError> {
        self.inner.forget_moved(id)
    }

    /// Whether the actor's file is here, handed off or not.
    pub fn has_file(&self, id: &ActorId) -> bool {
        self.inner.actor_file(id).exists()
    }

    /// Whether this machine stores the actor (on disk or pinned in memory)
    /// and has not handed it off. A file check, no database query.
    pub fn holds(&self, id: &ActorId) -> bool {
        self.moved_to(id).is_none() && (self.inner.actor_file(id).exists() || self.is_pinned(id))
    }

    /// A fresh temporary path in the data dir (for uploads to import).
    pub fn temp_file(&self, what: &str) -> PathBuf {
        self.inner.temp_file(what)
    }

    /// Open actors that hold a thread (the rest are parked).
    #[cfg(test)]
    pub(crate) fn scheduled_actors(&self) -> usize {
        let registry = self.inner.registry.lock();
        registry
            .open
            .values()
            .filter(|slot| slot.runner.is_scheduled())
            .count()
    }

    /// Open actors holding writes their file lacks.
    #[cfg(test)]
    pub(crate) fn actors_owing_a_flush(&self) -> usize {
        let runners: Vec<_> = {
            let registry = self.inner.registry.lock();
            registry
                .open
                .values()
                .map(|slot| slot.runner.clone())
                .collect()
        };
        runners
            .iter()
            .filter(|runner| runner.cell.lock().flush_deadline().is_some())
            .count()
    }

    /// Number of open actors, parked or not.
    pub fn open_actors(&self) -> usize {
        self.inner.registry.lock().open.len()
    }

    /// Why the engine cannot take durable writes, if it cannot (for
    /// readiness checks): its journal failed a write or sync (only a restart brings
    /// it back), or the data dir refuses new files.
    pub fn unready_reason(&self) -> Option<String> {
        if let Some(failed) = self.inner.journal.failure() {
            return Some(format!("{failed}; restart the process"));
        }
        if !self.data_dir_writable() {
            return Some("data dir is not writable".into());
        }
        None
    }

    /// Whether the data dir accepts writes (for readiness checks).
    pub fn data_dir_writable(&self) -> bool {
        let probe = self.inner.config.data_dir.join(".ready-probe");
        let ok = std::fs::write(&probe, b"ok").is_ok();
        let _ = std::fs::remove_file(&probe);
        ok
    }

    /// Stops taking ops, lets every actor finish its queue, flushes buffered
    /// actors and closes all databases. Waits at most `timeout`.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        self.inner.closed.store(true, Ordering::Release);
        let mut turns = Vec::new();
        let dones: Vec<Arc<Done>> = {
            let mut registry = self.inner.registry.lock();
            metrics::counter!(telemetry::ACTOR_CLOSES, "reason" => "shutdown")
                .increment(registry.open.len() as u64);
            let mut dones = Vec::with_capacity(registry.open.len());
            for (_, slot) in registry.open.drain() {
                let runner = slot.release();
                dones.push(runner.done.clone());
                turns.extend(runner.claim());
            }
            metrics::gauge!(telemetry::OPEN_ACTORS).set(0.0);
            dones.extend(registry.closing.values().map(|r| r.done.clone()));
            dones
        };
        // Parked actors need a thread to close; running ones close on their
        // own once their queue is drained.
        close_in_parallel(turns);
        self.inner.reaper_wake.notify_all();
        self.inner.flusher.notify();
        let deadline = Instant::now() + timeout;
        let closed = dones.iter().all(|done| done.wait_until(deadline));
        if closed {
            // Every actor has written its journaled counters to its file:
            // the journal may go (it keeps what any actor could not).
            self.inner.journal.close();
            // Every actor file is closed: another engine may take the dir
            // now, even while this one's last references are dropped.
            self.inner.dir_lock.lock().take();
        }
        closed
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown(Duration::from_secs(60));
    }
}

impl Inner {
    pub fn actor_file(&self, id: &ActorId) -> PathBuf {
        layout::actor_path(&self.config.data_dir, id)
    }

    /// Puts a new actor's file at `file` (see [`layout::lay_new_file`]).
    pub fn lay_new_file(&self, file: &std::path::Path) -> Result<(), EngineError> {
        layout::lay_new_file(file, &self.new_actor, &self.temp_file("new-actor"))
    }

    /// A fresh path for a temporary file on the data dir's file system, so
    /// renames into place are atomic.
    pub fn temp_file(&self, what: &str) -> PathBuf {
        let name = format!("{what}-{:016x}.db", rand::random::<u64>());
        self.config.data_dir.join("tmp").join(name)
    }

    /// The rate-limit state shared with `id`'s thread, made on first use.
    pub fn limiter(&self, id: &ActorId) -> Arc<SharedLimiter> {
        if let Some(shared) = self.limiters.read().get(id) {
            return shared.clone();
        }
        self.limiters
            .write()
            .entry(id.clone())
            .or_insert_with(|| Arc::new(SharedLimiter::new(self.config.flush_max_ops)))
            .clone()
    }

    /// The shared rate-limit state of `id`, if it ever decided.
    pub fn existing_limiter(&self, id: &ActorId) -> Option<Arc<SharedLimiter>> {
        self.limiters.read().get(id).cloned()
    }

    /// When the actor was last used: ops go through its slot, rate-limit
    /// decisions made by callers only touch its shared state.
    fn last_used(&self, id: &ActorId, slot: &Slot) -> Instant {
        let decided = self
            .existing_limiter(id)
            .and_then(|shared| shared.last_used());
        decided.map_or(slot.last_used, |at| at.max(slot.last_used))
    }

    pub fn moved_to(&self, id: &ActorId) -> Option<String> {
        if !self.any_moved.load(Ordering::Acquire) {
            return None;
        }
        self.moved.read().get(id).cloned()
    }

    /// Durably records that `id` now lives on machine `to`.
    pub fn record_moved(&self, id: &ActorId, to: &str) -> Result<(), EngineError> {
        self.catalog.mark_moved(id.as_str(), to)?;
        let mut moved = self.moved.write();
        moved.insert(id.clone(), to.to_owned());
        self.any_moved.store(true, Ordering::Release);
        Ok(())
    }

    /// `id` lives here again.
    pub fn forget_moved(&self, id: &ActorId) -> Result<(), EngineError> {
        if self.moved_to(id).is_none() {
            return Ok(());
        }
        self.catalog.clear_moved(id.as_str())?;
        let mut moved = self.moved.write();
        moved.remove(id);
        self.any_moved.store(!moved.is_empty(), Ordering::Release);
        Ok(())
    }

    fn size_on_disk(&self, id: &ActorId) -> u64 {
        let file = self.actor_file(id);
        ["", "-wal"]
            .iter()
            .map(|suffix| {
                let mut path = file.clone().into_os_string();
                path.push(suffix);
                std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
            })
            .sum()
    }
}

/// Takes the data dir's lock file, refusing a dir another engine (in this
/// process or another) holds. The OS drops the lock when its holder exits,
/// however it exits.
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, EngineError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("roost.lock"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(EngineError::Io(format!(
            "data dir {} is in use by another roost engine",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(err)) => Err(err.into()),
    }
}

/// Closes the least recently used actor that is not pinned in memory.
fn evict_lru(inner: &Inner, registry: &mut Registry) {
    // The front is the least recently used. Passed over, to the back: an
    // actor pinned in memory, and a limiter actor whose callers decided
    // since its last op (they touch its shared state, not its slot). Two
    // passes see every actor again with its use brought up to date, so
    // they end without a victim only when every open actor is pinned.
    for _ in 0..registry.open.len() * 2 {
        let Some((id, slot)) = registry.open.front() else {
            return;
        };
        let id = id.clone();
        let pinned = slot.pinned.load(Ordering::Acquire);
        let last_used = inner.last_used(&id, slot);
        if !pinned && last_used <= slot.last_used {
            close_slot(registry, &id, "lru");
            return;
        }
        if let Some(slot) = registry.open.to_back(&id) {
            slot.last_used = last_used;
        }
    }
}

fn close_slot(registry: &mut Registry, id: &ActorId, reason: &'static str) {
    if let Some(slot) = registry.open.remove(id) {
        // Dropping the sender lets the actor drain its queue, flush and close.
        registry.closing.insert(id.clone(), slot.retire());
        metrics::counter!(telemetry::ACTOR_CLOSES, "reason" => reason).increment(1);
        metrics::gauge!(telemetry::OPEN_ACTORS).set(registry.open.len() as f64);
    }
}

/// Closes actors idle for longer than `idle_timeout`.
fn reap_idle(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(inner) = inner.upgrade() else { return };
        let idle = inner.config.idle_timeout();
        let tick = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut registry = inner.registry.lock();
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let now = Instant::now();
        let idle_ids: Vec<ActorId> = registry
            .open
            .iter_mut()
            .filter(|(_, slot)| {
                !slot.pinned.load(Ordering::Acquire)
                    && slot.tx.is_empty()
                    && now.duration_since(slot.last_used) >= idle
            })
            .filter_map(|(id, slot)| {
                slot.last_used = inner.last_used(id, slot);
                (now.duration_since(slot.last_used) >= idle).then(|| id.clone())
            })
            .collect();
        for id in &idle_ids {
            close_slot(&mut registry, id, "idle");
        }
        // A closing actor whose thread could not be started (the system
        // was out of threads) is tried again.
        for runner in registry.closing.values() {
            if !runner.is_scheduled() {
                runner.wake();
            }
        }
        inner.reaper_wake.wait_for(&mut registry, tick);
    }
}
