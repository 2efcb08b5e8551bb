//! Actor threads, reused. When an actor parks or closes (see `runner`),
//! its thread waits here for the next actor with work, so a cold open
//! skips creating a thread: mapping its stack and guard page, `clone`, and
//! the new thread's own setup, which on this kind of VM took about as long
//! as opening the actor's database.
//!
//! At most [`MAX_IDLE`] threads wait, each for at most [`IDLE_FOR`]; the
//! rest exit. Jobs are the runner's turns, which catch their own panics,
//! so a thread is never returned broken.

use crate::placement::SpawnFloating;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Threads kept waiting for work at most.
const MAX_IDLE: usize = 64;
/// How long an unused thread waits before it exits.
const IDLE_FOR: Duration = Duration::from_secs(30);

type Job = Box<dyn FnOnce() + Send>;
/// Waiting threads, each by a number of its own and its job's sender.
type Waiting = Mutex<Vec<(u64, Sender<Job>)>>;

/// Hands jobs to waiting threads, or to new ones.
pub(crate) struct Threads {
    name: &'static str,
    stack_bytes: usize,
    /// The waiting threads, the most recently parked last.
    idle: Arc<Waiting>,
    /// Threads kept started ahead of need, so that even a run of cold
    /// opens (after a restart nothing has closed yet) finds one waiting.
    spare: usize,
    /// Wakes the thread that starts spare threads.
    low: Sender<()>,
}

impl Threads {
    pub fn new(name: &'static str, stack_bytes: usize, spare: usize) -> Self {
        let idle: Arc<Waiting> = Arc::default();
        let (low, wake) = bounded(1);
        let watched = Arc::downgrade(&idle);
        // Without it every thread is started on demand, as before.
        let _ = std::thread::Builder::new()
            .name(format!("{name}-spares"))
            .spawn_floating(move || keep_spares(name, stack_bytes, spare, watched, wake));
        let _ = low.try_send(());
        Threads {
            name,
            stack_bytes,
            idle,
            spare,
            low,
        }
    }

    /// Runs `job` on a waiting thread, or on a new one.
    pub fn spawn(&self, job: Job) -> std::io::Result<()> {
        let mut job = job;
        loop {
            let (waiting, left) = {
                let mut idle = self.idle.lock();
                (idle.pop(), idle.len())
            };
            let Some((_, waiting)) = waiting else {
                break;
            };
            if left < self.spare {
                let _ = self.low.try_send(());
            }
            match waiting.send(job) {
                Ok(()) => return Ok(()),
                // That thread gave up waiting just now: try another.
                Err(unsent) => job = unsent.0,
            }
        }
        let _ = self.low.try_send(());
        start(
            self.name,
            self.stack_bytes,
            Some(job),
            Arc::downgrade(&self.idle),
        )
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.idle.lock().len()
    }
}

fn start(
    name: &'static str,
    stack_bytes: usize,
    first: Option<Job>,
    idle: Weak<Waiting>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(stack_bytes)
        .spawn_floating(move || work(first, idle))
        .map(drop)
}

/// Each time it is woken, starts as many threads as `spare` exceeds the
/// waiting ones (a wake-up before they park may start a few too many; they
/// wait like the others and exit unused after [`IDLE_FOR`]); ends with the
/// pool.
fn keep_spares(
    name: &'static str,
    stack_bytes: usize,
    spare: usize,
    idle: Weak<Waiting>,
    wake: Receiver<()>,
) {
    while wake.recv().is_ok() {
        let Some(pool) = idle.upgrade() else { return };
        let waiting = pool.lock().len();
        drop(pool);
        for _ in waiting..spare {
            if start(name, stack_bytes, None, idle.clone()).is_err() {
                break;
            }
        }
    }
}

/// A thread's life: its first job (a spare has none), then any later ones
/// handed to it while it waits, until none comes in time or the pool is
/// dropped (which drops the senders, and so wakes every waiting thread).
fn work(first: Option<Job>, idle: Weak<Waiting>) {
    let mut job = first;
    loop {
        if let Some(job) = job.take() {
            job();
        }
        let Some((number, rx)) = park(&idle) else {
            return;
        };
        job = Some(match rx.recv_timeout(IDLE_FOR) {
            Ok(next) => next,
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                if let Some(idle) = idle.upgrade() {
                    idle.lock().retain(|(n, _)| *n != number);
                }
                // A job handed over just before it left still runs.
                match rx.try_recv() {
                    Ok(next) => next,
                    Err(_) => return,
                }
            }
        });
    }
}

/// Registers the calling thread as waiting; `None` when enough already do.
fn park(idle: &Weak<Waiting>) -> Option<(u64, Receiver<Job>)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let idle = idle.upgrade()?;
    let mut waiting = idle.lock();
    if waiting.len() >= MAX_IDLE {
        return None;
    }
    let number = NEXT.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = bounded(1);
    waiting.push((number, tx));
    Some((number, rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_thread_runs_the_next_job() {
        let threads = Threads::new("roost-test", 64 << 10, 0);
        let (tx, rx) = crossbeam_channel::unbounded();
        let ids: Vec<_> = (0..3)
            .map(|_| {
                let tx = tx.clone();
                threads
                    .spawn(Box::new(move || {
                        tx.send(std::thread::current().id()).unwrap();
                    }))
                    .unwrap();
                let id = rx.recv().unwrap();
                // Let the thread park before the next job arrives.
                while threads.waiting() == 0 {
                    std::thread::yield_now();
                }
                id
            })
            .collect();
        assert!(ids.windows(2).all(|pair| pair[0] == pair[1]), "{ids:?}");
        assert_eq!(threads.waiting(), 1);
    }

    #[test]
    fn busy_threads_do_not_block_new_jobs() {
        let threads = Threads::new("roost-test", 64 << 10, 0);
        let (release_tx, release_rx) = crossbeam_channel::unbounded::<()>();
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        for _ in 0..4 {
            let (release, done) = (release_rx.clone(), done_tx.clone());
            threads
                .spawn(Box::new(move || {
                    release.recv().unwrap();
                    done.send(()).unwrap();
                }))
                .unwrap();
        }
        // All four wait at once, so each has a thread of its own.
        for _ in 0..4 {
            release_tx.send(()).unwrap();
        }
        for _ in 0..4 {
            done_rx.recv().unwrap();
        }
    }
}
