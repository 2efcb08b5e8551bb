//! The output gate for a durable actor's change events: an event that a
//! journaled counter increment caused is published only once the journal
//! has synced that increment, as its caller is answered only then.
//!
//! Without the gate a subscriber could see a value that a crash in the
//! next ~100 µs undoes. Events that must wait are queued per actor, in the
//! actor's order; each sync releases the queue's head up to the LSN it
//! covers, so events stay in that order whichever waiter runs first. An
//! event with no journal record of its own (a committed KV write) queues
//! behind any that wait, so it cannot overtake them.

use super::events::{Change, Hub};
use crate::store::journal::Journal;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;

/// One actor's events waiting for the journal.
#[derive(Clone, Default)]
pub(crate) struct Outbox(Arc<Mutex<VecDeque<Held>>>);

struct Held {
    /// Published once the journal has synced up to here.
    lsn: u64,
    /// Whether the journal record at `lsn` is this event's own: if that
    /// sync fails, the change never happened.
    journaled: bool,
    hub: Arc<Hub>,
    change: Change,
}

impl Outbox {
    /// Publishes `change` on `hub` once the journal has synced `journaled`
    /// (the LSN of its own record, if any) and every event queued before.
    pub fn publish(
        &self,
        journal: &Journal,
        hub: &Arc<Hub>,
        change: Change,
        journaled: Option<u64>,
    ) {
        let mut queue = self.0.lock();
        let gate = journaled.or_else(|| queue.back().map(|held| held.lsn));
        match gate {
            Some(lsn) if journal.synced() < lsn => {
                queue.push_back(Held {
                    lsn,
                    journaled: journaled.is_some(),
                    hub: hub.clone(),
                    change,
                });
                drop(queue);
                let outbox = self.clone();
                journal.wait(
                    lsn,
                    Box::new(move |synced| outbox.release(lsn, synced.is_ok())),
                );
            }
            _ => {
                // Everything queued is synced too (the gate is the newest).
                release_up_to(&mut queue, u64::MAX, true);
                hub.publish_change(&change);
            }
        }
    }

    /// The journal has synced up to `lsn`, or (`synced == false`) failed to.
    fn release(&self, lsn: u64, synced: bool) {
        release_up_to(&mut self.0.lock(), lsn, synced);
    }
}

/// Publishes the queued events up to `lsn`, in order; drops instead those
/// whose own record failed to sync.
fn release_up_to(queue: &mut VecDeque<Held>, lsn: u64, synced: bool) {
    while queue.front().is_some_and(|held| held.lsn <= lsn) {
        if let Some(held) = queue.pop_front() {
            if synced || !held.journaled {
                held.hub.publish_change(&held.change);
            }
        }
    }
}
