//! The clients of one fan-out row: sockets, senders with a window, and the
//! delivery counts and latencies they record.

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

use super::super::load::{duration_nanos, CpuSample, Latencies};
use super::super::WARM_UP;
use super::WINDOW;

/// What one row measured.
pub(super) struct FanOut {
    pub(super) sent: u64,
    pub(super) delivered: u64,
    pub(super) elapsed: Duration,
    pub(super) latencies: Latencies,
    /// Sockets the server closed during the run.
    pub(super) dropped: u64,
    pub(super) other_cores: Option<f64>,
}

impl FanOut {
    pub(super) fn sent_per_sec(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64()
    }

    pub(super) fn deliveries_per_sec(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64()
    }
}

/// Shared by every task of a row.
struct Shared {
    epoch: Instant,
    /// Deliveries and sends count only while set.
    measuring: AtomicBool,
    stop: AtomicBool,
    delivered: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
}

/// One room: how many messages each of its sockets has received.
struct Room {
    received: Vec<AtomicU64>,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(super) async fn run(
    base: &str,
    actors: usize,
    sockets: usize,
    measure: Duration,
) -> anyhow::Result<FanOut> {
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        delivered: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
    });
    let ws_base = base.replacen("http://", "ws://", 1);
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    for actor in 0..actors {
        let room = Arc::new(Room {
            received: (0..sockets).map(|_| AtomicU64::new(0)).collect(),
        });
        let url = format!("{ws_base}/v1/actors/fanout-{actor}/ws");
        let mut sinks = Vec::new();
        for index in 0..sockets {
            let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .with_context(|| format!("connecting socket {index} of room {actor}"))?;
            let (sink, stream) = socket.split();
            sinks.push(sink);
            let samples = Arc::new(Mutex::new(Vec::new()));
            readers.push((
                tokio::spawn(read(
                    stream,
                    room.clone(),
                    index,
                    shared.clone(),
                    samples.clone(),
                )),
                samples,
            ));
        }
        let sink = sinks.swap_remove(0);
        drop(sinks);
        senders.push(tokio::spawn(send(sink, room, shared.clone())));
    }
    tokio::time::sleep(WARM_UP).await;
    let cpu = CpuSample::now();
    let (sent0, delivered0) = (
        shared.sent.load(Ordering::Acquire),
        shared.delivered.load(Ordering::Acquire),
    );
    shared.measuring.store(true, Ordering::Release);
    let started = Instant::now();
    tokio::time::sleep(measure).await;
    shared.measuring.store(false, Ordering::Release);
    let elapsed = started.elapsed();
    let sent = shared.sent.load(Ordering::Acquire) - sent0;
    let delivered = shared.delivered.load(Ordering::Acquire) - delivered0;
    let other_cores = cpu.and_then(|c| c.other_cores_until_now());
    shared.stop.store(true, Ordering::Release);
    for sender in senders {
        let _ = sender.await;
    }
    let mut nanos = Vec::new();
    for (reader, samples) in readers {
        reader.abort();
        let _ = reader.await;
        nanos.append(&mut samples.lock());
    }
    Ok(FanOut {
        sent,
        delivered,
        elapsed,
        latencies: Latencies::new(nanos),
        dropped: shared.dropped.load(Ordering::Acquire),
        other_cores,
    })
}

/// Sends stamped messages, never more than [`WINDOW`] ahead of the room.
async fn send(
    mut sink: futures::stream::SplitSink<Socket, Message>,
    room: Arc<Room>,
    shared: Arc<Shared>,
) {
    let mut seq = 0u64;
    while !shared.stop.load(Ordering::Acquire) {
        let slowest = room
            .received
            .iter()
            .map(|r| r.load(Ordering::Acquire))
            .min()
            .unwrap_or(0);
        if seq >= slowest + WINDOW {
            tokio::task::yield_now().await;
            continue;
        }
        let now = duration_nanos(shared.epoch.elapsed());
        let mut payload = Vec::with_capacity(16);
        payload.extend_from_slice(&now.to_le_bytes());
        payload.extend_from_slice(&seq.to_le_bytes());
        if sink.send(Message::binary(payload)).await.is_err() {
            return;
        }
        seq += 1;
        if shared.measuring.load(Ordering::Acquire) {
            shared.sent.fetch_add(1, Ordering::AcqRel);
        }
    }
    let _ = sink.close().await;
}

/// Counts deliveries and records their latency into `samples` (read
/// after the task is stopped).
async fn read(
    mut stream: futures::stream::SplitStream<Socket>,
    room: Arc<Room>,
    index: usize,
    shared: Arc<Shared>,
    samples: Arc<Mutex<Vec<u64>>>,
) {
    while let Some(message) = stream.next().await {
        match message {
            Ok(Message::Binary(payload)) if payload.len() == 16 => {
                let mut stamp = [0u8; 8];
                stamp.copy_from_slice(&payload[..8]);
                let sent_at = u64::from_le_bytes(stamp);
                room.received[index].fetch_add(1, Ordering::AcqRel);
                if shared.measuring.load(Ordering::Acquire) {
                    shared.delivered.fetch_add(1, Ordering::AcqRel);
                    let latency = duration_nanos(shared.epoch.elapsed()).saturating_sub(sent_at);
                    samples.lock().push(latency);
                }
                if shared.stop.load(Ordering::Acquire) {
                    return;
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if !shared.stop.load(Ordering::Acquire) {
        shared.dropped.fetch_add(1, Ordering::AcqRel);
    }
}
