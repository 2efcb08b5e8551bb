//! Flush deadlines of actors without a thread.
//!
//! A `buffered` actor (or a durable one with journaled counters) that has
//! writes its file lacks must flush them by a deadline. It used to keep its
//! thread until then: a thousand such actors held a thousand threads, and
//! each one woke, flushed, parked and gave its thread back (most then
//! exited) every interval. Now an actor parks whether or not a flush is
//! pending, and leaves the deadline here; one timer thread hands the due
//! flushes to a few pool threads, which flush each actor under its lock
//! and park it again ([`Runner::flush_turn`]).

use super::runner::Runner;
use super::Inner;
use parking_lot::{Condvar, Mutex};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Pool threads flushing due actors at once at most.
const FLUSH_THREADS: usize = 4;

/// Longest sleep of the timer thread (it also checks for shutdown).
const MAX_SLEEP: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct FlushTimer {
    /// By deadline, then order of scheduling.
    due: Mutex<BTreeMap<(Instant, u64), Weak<Runner>>>,
    seq: AtomicU64,
    wake: Condvar,
}

impl FlushTimer {
    /// Flushes `runner`'s actor at `at` unless it has a thread by then (a
    /// thread flushes its own actor).
    pub fn schedule(&self, at: Instant, runner: &Arc<Runner>) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let mut due = self.due.lock();
        let sooner = due.keys().next().is_none_or(|(first, _)| at < *first);
        due.insert((at, seq), Arc::downgrade(runner));
        drop(due);
        if sooner {
            self.wake.notify_one();
        }
    }

    /// Wakes the timer thread (at shutdown).
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Removes and returns the runners due by `now`; otherwise waits for the
    /// next deadline (or a sooner one, or [`MAX_SLEEP`]) and returns none.
    fn take_due(&self) -> Vec<Arc<Runner>> {
        let mut due = self.due.lock();
        let now = Instant::now();
        let next = due.keys().next().map(|(at, _)| *at);
        match next {
            Some(at) if at <= now => {
                let later = due.split_off(&(now, u64::MAX));
                let ready = std::mem::replace(&mut *due, later);
                ready.into_values().filter_map(|r| r.upgrade()).collect()
            }
            _ => {
                let sleep = next.map_or(MAX_SLEEP, |at| (at - now).min(MAX_SLEEP));
                self.wake.wait_for(&mut due, sleep);
                Vec::new()
            }
        }
    }
}

/// The timer thread's body: runs until the engine is gone or shut down.
pub(crate) fn run(inner: Weak<Inner>) {
    loop {
        let Some(engine) = inner.upgrade() else {
            return;
        };
        if engine.closed.load(Ordering::Acquire) {
            return;
        }
        let ready = engine.flusher.take_due();
        if !ready.is_empty() {
            flush_on_pool(&engine, ready);
        }
    }
}

/// Runs the flush turns of `ready` on at most [`FLUSH_THREADS`] pool threads.
fn flush_on_pool(engine: &Inner, ready: Vec<Arc<Runner>>) {
    let workers = ready.len().min(FLUSH_THREADS);
    let queue = Arc::new(Mutex::new(ready));
    for _ in 0..workers {
        let queue = queue.clone();
        let job = Box::new(move || {
            crate::alloc::use_system_heap_on_this_thread();
            loop {
                let Some(runner) = queue.lock().pop() else {
                    return;
                };
                runner.flush_turn();
            }
        });
        if let Err(err) = engine.threads.spawn(job) {
            tracing::warn!(error = %err, "could not start a flush thread; the flushes wait for the next one");
            break;
        }
    }
    // None could start: flush here rather than drop the deadlines.
    if workers > 0 && Arc::strong_count(&queue) == 1 {
        while let Some(runner) = queue.lock().pop() {
            runner.flush_turn();
        }
    }
}
