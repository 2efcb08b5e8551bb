//! Putting an actor on a thread, and taking it off again.
//!
//! An open actor needs a thread only while it has work. One that has had
//! no mail for [`PARK_AFTER`] gives its thread back to the pool in
//! `threads` and stays open: its connection, caches and queue are kept in
//! its [`Runner`]. A flush it still owes is left to the engine's flush
//! timer (see `flusher`), which runs it on a pool thread when due. The
//! next mail puts it on a waiting thread again, which costs about what
//! waking its own blocked thread did. So thousands of open, idle actors
//! hold a few dozen threads instead of one each, and none of their stacks.

use super::actor::{Actor, Mail};
use super::ops::Op;
use super::{Done, Inner};
use crate::actor_id::ActorId;
use crate::error::EngineError;
use crate::telemetry;
use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an actor without mail keeps its thread.
const PARK_AFTER: Duration = Duration::from_millis(100);

/// Most ops taken from the queue into one batch.
const MAX_BATCH: usize = 512;

/// An open actor and its queue; shared by its registry slot and, while it
/// runs, its thread.
pub(crate) struct Runner {
    id: ActorId,
    /// The actor's state. Its thread locks it per batch; callers may lock it
    /// to run a cheap op inline (see `Engine::call`).
    pub cell: Mutex<Actor>,
    /// The actor's [`Actor::durable_flag`].
    durable: Arc<AtomicBool>,
    rx: Receiver<Mail>,
    pub done: Arc<Done>,
    /// The previous runner of this actor, still closing when this one was
    /// made: two connections must never write one file at once.
    predecessor: Mutex<Option<Arc<Done>>>,
    /// Whether a thread runs this actor or has been asked to.
    scheduled: Mutex<bool>,
    /// The slot let go of the queue: the actor is to close.
    released: AtomicBool,
    inner: Arc<Inner>,
}

/// How a turn of the actor on a thread ended.
enum Exit {
    /// No mail for a while: the actor stays open without a thread.
    Parked,
    /// Its slot was dropped and its queue drained: the database is closed.
    Closed,
}

impl Runner {
    pub fn new(
        id: ActorId,
        cell: Mutex<Actor>,
        rx: Receiver<Mail>,
        predecessor: Option<Arc<Done>>,
        inner: Arc<Inner>,
    ) -> Arc<Runner> {
        let durable = cell.lock().durable_flag();
        Arc::new(Runner {
            id,
            cell,
            durable,
            rx,
            done: Arc::default(),
            predecessor: Mutex::new(predecessor),
            scheduled: Mutex::new(false),
            released: AtomicBool::new(false),
            inner,
        })
    }

    pub fn is_scheduled(&self) -> bool {
        *self.scheduled.lock()
    }

    /// Whether a blocking caller should wait for the actor's lock to run
    /// `op` itself (see `Engine::try_inline`) rather than queue it: for a
    /// read or an in-memory counter or limiter op, which hold the lock for
    /// a microsecond or two. Not for a durable actor's writes, which go to
    /// its thread all the same (a caller that waited for the lock would
    /// only queue later, after the batch it could have joined). Not for KV
    /// writes or user SQL either: callers that wait for each other's
    /// longer turns contend, and are preempted while holding the lock,
    /// whereas the actor's thread runs queued ops back to back. Measured
    /// with 8 callers on 2 cores, waiting gave KV gets 2× the ops/s, but
    /// SQL 0.6× the ops/s and KV puts 2–3× the p99.
    pub fn worth_waiting_for(&self, op: &Op) -> bool {
        match op {
            Op::CounterAdd { .. } | Op::RateLimit { .. } => !self.durable.load(Ordering::Acquire),
            op => op.is_cheap() && op.reads_only(),
        }
    }

    pub fn queue_is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// The slot dropped its sender: once the queue drains, the actor closes.
    pub fn mark_released(&self) {
        self.released.store(true, Ordering::Release);
    }

    /// The flush timer's turn (see `flusher`): flushes the actor if its
    /// deadline has come and leaves it parked, without the wait for mail a
    /// full turn makes. An actor that has a thread is left to it; one with
    /// mail, or whose slot is gone, gets a full turn.
    pub fn flush_turn(self: &Arc<Self>) {
        {
            let mut scheduled = self.scheduled.lock();
            if *scheduled || self.predecessor.lock().is_some() {
                return;
            }
            *scheduled = true;
        }
        let flushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut actor = self.cell.lock();
            actor.flush_if_due();
            actor.flush_deadline()
        }));
        let next = match flushed {
            Ok(next) => next,
            Err(_) => {
                self.after_panic();
                return self.clone().closed();
            }
        };
        let mut scheduled = self.scheduled.lock();
        if self.rx.is_empty() && !self.released.load(Ordering::Acquire) {
            *scheduled = false;
            drop(scheduled);
            if let Some(at) = next {
                self.inner.flusher.schedule(at, self);
            }
            return;
        }
        drop(scheduled);
        metrics::gauge!(telemetry::ACTOR_THREADS).increment(1.0);
        let runner = self.clone();
        if let Err(err) = self.inner.threads.spawn(Box::new(move || runner.turn())) {
            self.could_not_start(err);
        }
    }

    /// Makes sure a thread will see what was just queued, or that the
    /// slot's sender is gone. A parked actor is handed to a thread; one that
    /// is running will find the mail itself.
    pub fn wake(self: &Arc<Self>) {
        let Some(turn) = self.claim() else {
            return;
        };
        if let Err(err) = self.inner.threads.spawn(turn) {
            self.could_not_start(err);
        }
    }

    fn could_not_start(&self, err: std::io::Error) {
        tracing::error!(actor = %self.id, error = %err, "could not start an actor thread");
        metrics::gauge!(telemetry::ACTOR_THREADS).decrement(1.0);
        *self.scheduled.lock() = false;
        // Nothing will run the queued ops: answer them rather than
        // leave their callers waiting.
        while let Ok(mail) = self.rx.try_recv() {
            if let Mail::Op(msg) = mail {
                (msg.reply)(Err(EngineError::Internal(format!(
                    "cannot start actor thread: {err}"
                ))));
            }
        }
    }

    /// Marks the actor as run by a thread and returns the job that runs it,
    /// for the caller to put on a thread; `None` when a thread has it
    /// already (and will find new mail, or the dropped sender, itself).
    pub fn claim(self: &Arc<Self>) -> Option<Box<dyn FnOnce() + Send>> {
        {
            let mut scheduled = self.scheduled.lock();
            if *scheduled {
                return None;
            }
            *scheduled = true;
        }
        metrics::gauge!(telemetry::ACTOR_THREADS).increment(1.0);
        let runner = self.clone();
        Some(Box::new(move || runner.turn()))
    }

    /// One turn on a pool thread: runs the actor until it parks or closes.
    fn turn(self: Arc<Self>) {
        crate::alloc::use_system_heap_on_this_thread();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run()));
        metrics::gauge!(telemetry::ACTOR_THREADS).decrement(1.0);
        match outcome {
            Ok(Exit::Parked) => return,
            Ok(Exit::Closed) => {}
            Err(_) => self.after_panic(),
        }
        self.closed();
    }

    /// The actor closed (or was retired after a panic): forget its closing
    /// entry and say it is done.
    fn closed(self: Arc<Self>) {
        let mut registry = self.inner.registry.lock();
        if registry
            .closing
            .get(&self.id)
            .is_some_and(|r| Arc::ptr_eq(r, &self))
        {
            registry.closing.remove(&self.id);
        }
        drop(registry);
        // Close the connection and release the engine before saying so:
        // whoever waits on `done` may reopen the same files at once.
        let done = self.done.clone();
        drop(self);
        done.set();
    }

    /// The actor's body panicked: retire it. Its slot goes (the next op
    /// starts a fresh actor, which waits for this one's connection to close)
    /// and its queued ops are dropped, so their callers get an error.
    fn after_panic(self: &Arc<Self>) {
        tracing::error!(actor = %self.id, "actor thread panicked");
        if let Some(limiter) = self.inner.existing_limiter(&self.id) {
            limiter.retire();
        }
        let mut registry = self.inner.registry.lock();
        let ours = registry
            .open
            .get(&self.id)
            .is_some_and(|slot| Arc::ptr_eq(&slot.runner, self));
        if ours {
            registry.open.remove(&self.id);
            registry.closing.insert(self.id.clone(), self.clone());
        }
        drop(registry);
        while self.rx.try_recv().is_ok() {}
        self.cell.lock().abandon();
    }

    /// Runs batches of ops in arrival order until the actor parks or its
    /// slot is dropped (then flushes and closes it).
    fn run(self: &Arc<Self>) -> Exit {
        if let Some(previous) = self.predecessor.lock().take() {
            previous.wait();
        }
        let mut idle_since = Instant::now();
        loop {
            let deadline = self.cell.lock().flush_deadline();
            let park_at = idle_since + PARK_AFTER;
            let first = match self
                .rx
                .recv_deadline(deadline.map_or(park_at, |d| d.min(park_at)))
            {
                Ok(mail) => mail,
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) if deadline.is_some_and(|d| d <= Instant::now()) => {
                    self.cell.lock().flush_if_due();
                    continue;
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() < park_at => continue,
                Err(RecvTimeoutError::Timeout) => match self.park() {
                    Some(Ok(mail)) => mail,
                    Some(Err(())) => break,
                    None => {
                        // Parked: a flush still owed is the timer's now.
                        if let Some(at) = self.cell.lock().flush_deadline() {
                            self.inner.flusher.schedule(at, self);
                        }
                        return Exit::Parked;
                    }
                },
            };
            let mut batch = Vec::with_capacity(self.rx.len().min(MAX_BATCH) + 1);
            batch.push(first);
            batch.extend(self.rx.try_iter().take(MAX_BATCH - 1));
            let mut actor = self.cell.lock();
            for mail in batch {
                if let Mail::Op(msg) = mail {
                    actor.handle(msg);
                }
            }
            actor.end_batch();
            drop(actor);
            idle_since = Instant::now();
        }
        self.cell.lock().close();
        Exit::Closed
    }

    /// Gives the thread back unless mail came in meanwhile (`Some(Ok)`) or
    /// the slot is gone (`Some(Err)`). Checked under the same lock `wake`
    /// takes after queueing, so no mail is left without a thread.
    fn park(&self) -> Option<Result<Mail, ()>> {
        let mut scheduled = self.scheduled.lock();
        match self.rx.try_recv() {
            Ok(mail) => Some(Ok(mail)),
            Err(TryRecvError::Disconnected) => Some(Err(())),
            Err(TryRecvError::Empty) => {
                *scheduled = false;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{ActorId, Durability, Engine, EngineConfig};
    use futures::executor::block_on;
    use std::time::{Duration, Instant};

    fn engine(dir: &tempfile::TempDir, durability: Durability, max_open_actors: usize) -> Engine {
        Engine::open(EngineConfig {
            data_dir: dir.path().to_path_buf(),
            durability,
            max_open_actors,
            flush_interval_ms: 50,
            ..Default::default()
        })
        .unwrap()
    }

    /// Whether `holds` becomes true within 5 s.
    fn eventually(holds: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if holds() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        holds()
    }

    fn add(engine: &Engine, id: &ActorId) -> i64 {
        block_on(engine.counter_add(id, "n".into(), 1, None)).unwrap()
    }

    fn count(engine: &Engine, id: &ActorId) -> i64 {
        block_on(engine.counter_get(id, "n".into())).unwrap()
    }

    fn shuts_down(engine: &Engine) -> bool {
        engine.shutdown(Duration::from_secs(10))
    }

    #[test]
    fn an_idle_actor_gives_its_thread_back_and_stays_open() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(&dir, Durability::Durable, 16);
        let id = ActorId::parse("a").unwrap();
        assert_eq!(add(&engine, &id), 1);
        assert!(
            eventually(|| engine.scheduled_actors() == 0),
            "never parked"
        );
        assert_eq!(engine.open_actors(), 1);
        assert_eq!(add(&engine, &id), 2);
        assert_eq!(count(&engine, &id), 2);
        assert!(eventually(|| engine.scheduled_actors() == 0));
        assert!(shuts_down(&engine), "a parked actor did not close");
    }

    /// The open actors' IDs, least recently used first.
    fn open_ids(engine: &Engine) -> Vec<String> {
        let registry = engine.inner.registry.lock();
        registry
            .open
            .keys()
            .map(|id| id.as_str().to_owned())
            .collect()
    }

    #[test]
    fn eviction_takes_the_least_recently_used_and_passes_over_pinned_actors() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(&dir, Durability::Durable, 3);
        let id = |name: &str| ActorId::parse(name).unwrap();
        let pinned = id("pinned");
        let memory = engine.counter_add(&pinned, "n".into(), 1, Some(Durability::Memory));
        assert_eq!(block_on(memory).unwrap(), 1);
        add(&engine, &id("a"));
        add(&engine, &id("b"));
        count(&engine, &id("a"));
        assert_eq!(open_ids(&engine), ["pinned", "b", "a"]);
        // Full: `pinned` is the oldest but lives only in memory; `b` goes.
        add(&engine, &id("c"));
        assert_eq!(open_ids(&engine), ["a", "pinned", "c"]);
        add(&engine, &id("d"));
        assert_eq!(open_ids(&engine), ["pinned", "c", "d"]);
        assert_eq!(count(&engine, &id("pinned")), 1, "never closed");
        assert_eq!(count(&engine, &id("b")), 1, "reopened with its data");
        assert!(shuts_down(&engine));
    }

    #[test]
    fn a_parked_actor_closes_when_evicted_and_reopens_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(&dir, Durability::Durable, 1);
        let (a, b) = (ActorId::parse("a").unwrap(), ActorId::parse("b").unwrap());
        add(&engine, &a);
        assert!(eventually(|| engine.scheduled_actors() == 0));
        // Opening b evicts the parked a, which must get a thread to close.
        add(&engine, &b);
        assert_eq!(add(&engine, &a), 2);
        assert_eq!(engine.open_actors(), 1);
        assert!(shuts_down(&engine));
    }

    /// Writers pause around the park delay while a small cache evicts
    /// running and parked actors alike, and blocking callers open evicted
    /// actors on their own threads while others queue ops for them: every
    /// acknowledged increment is stored, and the engine shuts down cleanly.
    #[test]
    fn parking_waking_and_evicting_under_load_lose_no_write() {
        use rand::{Rng, SeedableRng};
        const ACTORS: usize = 24;
        let dir = tempfile::tempdir().unwrap();
        for durability in [Durability::Durable, Durability::Buffered] {
            let engine = engine(&dir, durability, 8);
            let prefix = format!("{durability:?}-");
            let acknowledged: Vec<usize> = std::thread::scope(|scope| {
                let writers: Vec<_> = (0..6u64)
                    .map(|seed| {
                        let (engine, prefix) = (&engine, &prefix);
                        scope.spawn(move || {
                            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                            let mut done = vec![0; ACTORS];
                            let until = Instant::now() + Duration::from_millis(1500);
                            while Instant::now() < until {
                                let i = rng.gen_range(0..ACTORS);
                                let id = ActorId::parse(&format!("{prefix}{i}")).unwrap();
                                // Half the writers are blocking callers,
                                // which open cold actors themselves.
                                match seed % 2 {
                                    0 => engine
                                        .block_on(engine.counter_add(&id, "n".into(), 1, None))
                                        .unwrap(),
                                    _ => add(engine, &id),
                                };
                                done[i] += 1;
                                // Around PARK_AFTER, so actors park and wake often.
                                let pause = rng.gen_range(0..140);
                                std::thread::sleep(Duration::from_millis(pause));
                            }
                            done
                        })
                    })
                    .collect();
                writers
                    .into_iter()
                    .fold(vec![0; ACTORS], |mut sum, writer| {
                        for (total, n) in sum.iter_mut().zip(writer.join().unwrap()) {
                            *total += n;
                        }
                        sum
                    })
            });
            for (i, &expected) in acknowledged.iter().enumerate() {
                let id = ActorId::parse(&format!("{prefix}{i}")).unwrap();
                let stored = count(&engine, &id);
                assert_eq!(stored, expected as i64, "{id}");
            }
            assert!(shuts_down(&engine), "did not shut down");
        }
    }

    #[test]
    fn shutdown_closes_many_parked_actors_on_a_few_threads() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<ActorId> = (0..200)
            .map(|i| ActorId::parse(&format!("p{i}")).unwrap())
            .collect();
        let engine = engine(&dir, Durability::Durable, 1000);
        for id in &ids {
            add(&engine, id);
        }
        assert!(
            eventually(|| engine.scheduled_actors() == 0),
            "never parked"
        );
        assert!(shuts_down(&engine), "parked actors did not close");
        drop(engine);
        let engine = self::engine(&dir, Durability::Durable, 1000);
        for id in &ids {
            assert_eq!(count(&engine, id), 1, "{id}");
        }
        assert!(shuts_down(&engine));
    }

    #[test]
    fn closers_run_every_turn_on_at_most_their_cap_of_threads() {
        use std::collections::HashSet;
        use std::sync::{Arc, Mutex};
        let ran = Arc::new(Mutex::new(Vec::new()));
        let turns: Vec<Box<dyn FnOnce() + Send>> = (0..100)
            .map(|_| {
                let ran = ran.clone();
                Box::new(move || ran.lock().unwrap().push(std::thread::current().id()))
                    as Box<dyn FnOnce() + Send>
            })
            .collect();
        let started = super::super::close_in_parallel(turns);
        assert!((1..=super::super::SHUTDOWN_CLOSERS).contains(&started));
        assert!(eventually(|| ran.lock().unwrap().len() == 100));
        let threads: HashSet<_> = ran.lock().unwrap().iter().copied().collect();
        assert!(threads.len() <= super::super::SHUTDOWN_CLOSERS);
    }

    #[test]
    fn a_write_made_inline_on_a_parked_actor_is_flushed_by_the_timer_without_a_thread() {
        for durability in [Durability::Buffered, Durability::Durable] {
            let dir = tempfile::tempdir().unwrap();
            let engine = engine(&dir, durability, 16);
            let id = ActorId::parse("a").unwrap();
            // The first add creates the counter's row (written at once).
            add(&engine, &id);
            add(&engine, &id);
            assert!(eventually(
                || engine.scheduled_actors() == 0 && engine.actors_owing_a_flush() == 0
            ));
            // Runs inline (open, queue empty): the actor owes a flush and
            // stays parked; the timer flushes it.
            add(&engine, &id);
            assert_eq!(engine.actors_owing_a_flush(), 1, "{durability:?}");
            assert!(
                eventually(|| engine.actors_owing_a_flush() == 0),
                "{durability:?}: never flushed"
            );
            assert_eq!(engine.scheduled_actors(), 0);
            assert_eq!(count(&engine, &id), 3);
        }
    }

    #[test]
    fn many_actors_owing_flushes_hold_no_threads() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(&dir, Durability::Buffered, 1000);
        let ids: Vec<ActorId> = (0..300)
            .map(|i| ActorId::parse(&format!("many-{i}")).unwrap())
            .collect();
        for id in &ids {
            add(&engine, id);
            add(&engine, id);
        }
        assert!(eventually(
            || engine.scheduled_actors() == 0 && engine.actors_owing_a_flush() == 0
        ));
        for id in &ids {
            add(&engine, id);
        }
        // Every one owes a flush (50 ms), none holds a thread for it.
        assert!(
            engine.scheduled_actors() <= 4,
            "{}",
            engine.scheduled_actors()
        );
        assert!(eventually(|| engine.actors_owing_a_flush() == 0));
        for id in &ids {
            assert_eq!(count(&engine, id), 3);
        }
        assert!(shuts_down(&engine));
    }
}
