//! The per-statement time limit. libSQL has no progress handler, so one
//! watchdog thread interrupts statements that run past their deadline.
//! It ticks only while some statement is armed, and sleeps otherwise.

use crate::placement::SpawnFloating;
use libsql::Connection;
use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(10);

/// One actor connection as the watchdog sees it.
pub struct QuerySlot {
    conn: Connection,
    // Deadline of the running statement; the mutex orders disarm before
    // any interrupt, so a finished statement is never interrupted late.
    deadline: Mutex<Option<Instant>>,
    fired: AtomicBool,
    watchdog: Arc<Shared>,
}

impl QuerySlot {
    /// Arms the time limit for the statement about to run.
    pub fn arm(self: &Arc<Self>, timeout_ms: u64) -> Armed {
        self.fired.store(false, Ordering::Relaxed);
        *self.deadline.lock() = Some(Instant::now() + Duration::from_millis(timeout_ms));
        if self.watchdog.armed.fetch_add(1, Ordering::AcqRel) == 0 {
            // Taking the lock the watchdog sleeps under means it is either
            // already waiting (and gets this wake-up) or will see `armed`.
            let _slots = self.watchdog.slots.lock();
            self.watchdog.wake.notify_one();
        }
        Armed(self.clone())
    }

    /// A slot no watchdog watches, for engine-internal connections that
    /// run no user SQL.
    pub fn detached(conn: Connection) -> Arc<Self> {
        Arc::new(QuerySlot {
            conn,
            deadline: Mutex::new(None),
            fired: AtomicBool::new(false),
            watchdog: Arc::new(Shared::default()),
        })
    }

    /// Whether the watchdog interrupted the last statement (and forget it).
    pub fn take_fired(&self) -> bool {
        self.fired.swap(false, Ordering::Relaxed)
    }
}

/// Disarms on drop.
pub struct Armed(Arc<QuerySlot>);

impl Drop for Armed {
    fn drop(&mut self) {
        *self.0.deadline.lock() = None;
        self.0.watchdog.armed.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Default)]
struct Shared {
    slots: Mutex<Vec<Weak<QuerySlot>>>,
    armed: AtomicUsize,
    wake: Condvar,
    stop: AtomicBool,
}

/// Owns the watchdog thread; stops it on drop.
pub struct Watchdog {
    shared: Arc<Shared>,
}

impl Watchdog {
    pub fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("roost-watchdog".into())
            .spawn_floating(move || run(&worker))?;
        Ok(Watchdog { shared })
    }

    /// Registers a connection so its statements can be time-limited.
    pub fn slot(&self, conn: Connection) -> Arc<QuerySlot> {
        let slot = Arc::new(QuerySlot {
            conn,
            deadline: Mutex::new(None),
            fired: AtomicBool::new(false),
            watchdog: self.shared.clone(),
        });
        self.shared.slots.lock().push(Arc::downgrade(&slot));
        slot
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify_all();
    }
}

fn run(shared: &Shared) {
    while !shared.stop.load(Ordering::Acquire) {
        if shared.armed.load(Ordering::Acquire) == 0 {
            let mut slots = shared.slots.lock();
            slots.retain(|s| s.strong_count() > 0);
            if shared.armed.load(Ordering::Acquire) == 0 && !shared.stop.load(Ordering::Acquire) {
                shared.wake.wait_for(&mut slots, Duration::from_secs(5));
            }
            continue;
        }
        std::thread::sleep(TICK);
        let now = Instant::now();
        let live: Vec<Arc<QuerySlot>> = {
            let mut slots = shared.slots.lock();
            slots.retain(|s| s.strong_count() > 0);
            slots.iter().filter_map(Weak::upgrade).collect()
        };
        for slot in live {
            let deadline = slot.deadline.lock();
            if matches!(*deadline, Some(d) if d <= now) {
                slot.fired.store(true, Ordering::Relaxed);
                let _ = slot.conn.interrupt();
            }
        }
    }
}
