//! Change events and real-time fan-out (SPEC §8). Each actor that someone
//! listens to has a [`Hub`]: one ordered stream of frames — the actor's
//! committed changes and the messages its WebSocket clients send — that
//! every listener sees in the same order.
//!
//! Fan-out is a bounded broadcast ring: a listener that falls more than
//! [`QUEUE_FRAMES`] behind is told it lagged and is dropped, so a slow
//! client never makes memory grow. Change events are also kept in a short
//! backlog so a Server-Sent-Events client can resume with `Last-Event-ID`.
//!
//! A hub exists only while someone listens or its actor is open; nothing is
//! kept for actors nobody watches.

use crate::actor_id::ActorId;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Frames a listener may fall behind before it is dropped.
pub const QUEUE_FRAMES: usize = 256;
/// Change events kept for resuming streams.
pub const BACKLOG_EVENTS: usize = 512;

/// One item of an actor's stream.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A committed change, as JSON with its `seq`.
    Change { seq: u64, json: Arc<str> },
    /// A client's text message.
    Text(Arc<str>),
    /// A client's binary message.
    Binary(Bytes),
    /// The actor was handed off to this machine: listeners here must
    /// reconnect (and will reach it there).
    Moved(Arc<str>),
}

/// What changed (the `seq` is added when it is published).
#[derive(Debug, Clone)]
pub enum Change {
    KvPut { key: String, version: i64 },
    KvDelete { key: String },
    Counter { name: String, value: i64 },
}

impl Change {
    fn to_json(&self, seq: u64) -> String {
        let value = match self {
            Change::KvPut { key, version } => {
                serde_json::json!({"type": "kv.put", "key": key, "version": version, "seq": seq})
            }
            Change::KvDelete { key } => {
                serde_json::json!({"type": "kv.delete", "key": key, "seq": seq})
            }
            Change::Counter { name, value } => {
                serde_json::json!({"type": "counter", "name": name, "value": value, "seq": seq})
            }
        };
        value.to_string()
    }
}

/// A resumed subscription: what to replay, then what to follow.
pub struct Subscription {
    pub replay: Vec<Frame>,
    /// Set when the requested position is older than the backlog: events
    /// between it and `oldest` are gone.
    pub gap: Option<Gap>,
    pub live: broadcast::Receiver<Frame>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub requested: u64,
    /// The first `seq` this stream can still deliver.
    pub oldest: u64,
}

/// One actor's stream.
pub struct Hub {
    tx: broadcast::Sender<Frame>,
    state: Mutex<HubState>,
}

struct HubState {
    next_seq: u64,
    backlog: VecDeque<Frame>,
    connections: usize,
}

impl Hub {
    fn new() -> Self {
        // Starting from the clock keeps `seq` increasing across hubs of the
        // same actor (after a restart, or after nobody listened for a while),
        // so an old Last-Event-ID is never mistaken for a new event.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        Hub {
            tx: broadcast::channel(QUEUE_FRAMES).0,
            state: Mutex::new(HubState {
                next_seq: start,
                backlog: VecDeque::with_capacity(16),
                connections: 0,
            }),
        }
    }

    /// Publishes a committed change; returns its `seq`.
    pub fn publish_change(&self, change: &Change) -> u64 {
        let mut state = self.state.lock();
        let seq = state.next_seq;
        state.next_seq += 1;
        let frame = Frame::Change {
            seq,
            json: change.to_json(seq).into(),
        };
        if state.backlog.len() == BACKLOG_EVENTS {
            state.backlog.pop_front();
        }
        state.backlog.push_back(frame.clone());
        // Sent under the lock: every listener sees one order.
        let _ = self.tx.send(frame);
        seq
    }

    /// Broadcasts a client's message to every listener, in stream order.
    pub fn publish_message(&self, frame: Frame) {
        let _state = self.state.lock();
        let _ = self.tx.send(frame);
    }

    /// Follows the stream from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Frame> {
        let _state = self.state.lock();
        self.tx.subscribe()
    }

    /// Follows the stream, first replaying the changes after `after`.
    pub fn resume(&self, after: Option<u64>) -> Subscription {
        let state = self.state.lock();
        let live = self.tx.subscribe();
        let Some(after) = after else {
            return Subscription {
                replay: Vec::new(),
                gap: None,
                live,
            };
        };
        let oldest = match state.backlog.front() {
            Some(Frame::Change { seq, .. }) => *seq,
            _ => state.next_seq,
        };
        let gap = (after.saturating_add(1) < oldest || after >= state.next_seq).then_some(Gap {
            requested: after,
            oldest,
        });
        let replay = state
            .backlog
            .iter()
            .filter(|frame| matches!(frame, Frame::Change { seq, .. } if *seq > after))
            .cloned()
            .collect();
        Subscription { replay, gap, live }
    }

    /// Takes one of `max` connection slots; `None` when all are taken.
    pub fn connect(self: &Arc<Self>, max: usize) -> Option<Connection> {
        let mut state = self.state.lock();
        if state.connections >= max {
            return None;
        }
        state.connections += 1;
        Some(Connection(self.clone()))
    }

    pub fn listeners(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// A held connection slot, given back when dropped.
pub struct Connection(Arc<Hub>);

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.state.lock().connections -= 1;
    }
}

/// Every hub, by actor.
#[derive(Default)]
pub struct Events {
    hubs: Mutex<HashMap<ActorId, Arc<Hub>>>,
    /// Bumped whenever a hub is created, so actors re-check for one.
    generation: AtomicU64,
}

impl Events {
    /// The actor's hub, created on first use.
    pub fn hub(&self, id: &ActorId) -> Arc<Hub> {
        let mut hubs = self.hubs.lock();
        hubs.entry(id.clone())
            .or_insert_with(|| {
                self.generation.fetch_add(1, Ordering::AcqRel);
                Arc::new(Hub::new())
            })
            .clone()
    }

    pub(crate) fn existing(&self, id: &ActorId) -> Option<Arc<Hub>> {
        self.hubs.lock().get(id).cloned()
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Forgets the actor's hub when nobody listens any more.
    pub(crate) fn release_if_unused(&self, id: &ActorId) {
        let mut hubs = self.hubs.lock();
        if hubs.get(id).is_some_and(|hub| hub.listeners() == 0) {
            hubs.remove(id);
        }
    }

    /// Tells the actor's listeners, if any, that it moved to machine `to`.
    pub fn announce_moved(&self, id: &ActorId, to: &str) {
        if let Some(hub) = self.existing(id) {
            hub.publish_message(Frame::Moved(Arc::from(to)));
        }
    }

    pub fn hub_count(&self) -> usize {
        self.hubs.lock().len()
    }
}

/// An actor's view of its hub, re-checked only when hubs were created.
#[derive(Default)]
pub(crate) struct HubCache {
    generation: u64,
    hub: Option<Arc<Hub>>,
}

impl HubCache {
    pub fn get(&mut self, events: &Events, id: &ActorId) -> Option<&Arc<Hub>> {
        let now = events.generation();
        if now != self.generation {
            self.generation = now;
            self.hub = events.existing(id);
        }
        self.hub.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(i: i64) -> Change {
        Change::Counter {
            name: "n".into(),
            value: i,
        }
    }

    #[test]
    fn resume_replays_after_a_seq_and_reports_gaps() {
        let hub = Hub::new();
        let first = hub.publish_change(&change(1));
        for i in 2..=5 {
            hub.publish_change(&change(i));
        }
        let sub = hub.resume(Some(first + 1));
        assert_eq!(sub.gap, None);
        let seqs: Vec<u64> = sub
            .replay
            .iter()
            .map(|f| match f {
                Frame::Change { seq, .. } => *seq,
                _ => 0,
            })
            .collect();
        assert_eq!(seqs, [first + 2, first + 3, first + 4]);
        for i in 0..BACKLOG_EVENTS as i64 {
            hub.publish_change(&change(i));
        }
        let late = hub.resume(Some(first));
        assert_eq!(late.gap.map(|g| g.requested), Some(first));
        assert_eq!(late.replay.len(), BACKLOG_EVENTS);
        let future = hub.resume(Some(u64::MAX - 1));
        assert!(future.gap.is_some());
    }

    #[test]
    fn connection_slots_are_bounded_and_given_back() {
        let hub = Arc::new(Hub::new());
        let a = hub.connect(2).unwrap();
        let _b = hub.connect(2).unwrap();
        assert!(hub.connect(2).is_none());
        drop(a);
        assert!(hub.connect(2).is_some());
    }
}
