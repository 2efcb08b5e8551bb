//! The real-time suite: WebSocket fan-out through actor rooms, in two
//! shapes — 1 actor × 100 sockets and 1,000 actors × 2 sockets — against a
//! bare axum server that relays each room's messages through one
//! `tokio::sync::broadcast` channel (the ceiling for any WebSocket
//! fan-out on this machine).
//!
//! In each room one socket sends 16-byte binary messages (send time,
//! sequence) and every socket of the room, the sender included, receives
//! them. Senders keep at most [`WINDOW`] messages ahead of their room's
//! slowest socket, so the servers are measured at their delivery rate and
//! nobody is dropped for falling behind. A delivery is one message reaching
//! one socket; its latency is from the send call to its arrival.

mod baseline;
mod clients;

use anyhow::ensure;
use std::fmt::Write as _;
use std::time::Duration;

use super::fixture::{RoostServer, Server};
use super::report::{cores, micros, ratio, thousands, utc_now, write_heading};
use super::{progress, BenchArgs, Finished, WARM_UP};
use crate::Durability;
use clients::FanOut;

/// Messages a sender may be ahead of its room's slowest socket.
const WINDOW: u64 = 32;

/// Rooms and sockets per room.
#[derive(Debug, Clone, Copy)]
struct Shape {
    actors: usize,
    sockets: usize,
}

const SHAPES: [Shape; 2] = [
    Shape {
        actors: 1,
        sockets: 100,
    },
    Shape {
        actors: 1000,
        sockets: 2,
    },
];

fn measure_for(args: &BenchArgs) -> anyhow::Result<Duration> {
    let seconds = args.seconds.unwrap_or(if args.quick { 2 } else { 10 });
    ensure!(seconds > 0, "--seconds must be at least 1");
    Ok(Duration::from_secs(seconds))
}

/// Checks the flags this suite reads.
pub(super) fn check_args(args: &BenchArgs) -> anyhow::Result<()> {
    measure_for(args).map(drop)
}

struct Row {
    shape: Shape,
    server: &'static str,
    fan_out: FanOut,
}

pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<Finished> {
    let started = utc_now();
    let measure = measure_for(args)?;
    let mut rows = Vec::new();
    let mut failure = None;
    for shape in SHAPES {
        let label = format!("{} × {}", shape.actors, shape.sockets);
        progress(&format!("fan-out {label}, bare axum broadcast"));
        let bare = Server::axum(baseline::app()).await?;
        let fan_out = clients::run(&bare.base, shape.actors, shape.sockets, measure).await;
        bare.stop().await;
        rows.push(Row {
            shape,
            server: "bare axum broadcast",
            fan_out: fan_out?,
        });
        progress(&format!("fan-out {label}, roost"));
        let roost = RoostServer::start(Durability::Memory).await?;
        let fan_out = clients::run(&roost.server.base, shape.actors, shape.sockets, measure).await;
        if let Err(err) = roost.stop().await {
            failure.get_or_insert(err);
        }
        rows.push(Row {
            shape,
            server: "roost",
            fan_out: fan_out?,
        });
    }
    Ok(Finished::new(render(&started, measure, &rows)?, failure))
}

fn render(started: &str, measure: Duration, rows: &[Row]) -> anyhow::Result<String> {
    let mut out = String::new();
    write_heading(&mut out, started, ": WebSocket fan-out")?;
    writeln!(
        out,
        "- settings: {} s measured per row after a {} s warm-up; \
         16-byte binary messages; one sender per room keeps at most {WINDOW} messages ahead of the \
         room's slowest socket; every socket of a room (sender included) receives every message; \
         clients are tokio-tungstenite tasks in the bench process\n",
        measure.as_secs(),
        WARM_UP.as_secs()
    )?;
    writeln!(
        out,
        "| shape (actors × sockets) | server | messages sent/s | deliveries/s | p50 µs | p99 µs | \
         deliveries × bare | p99 × bare | dropped sockets | other CPU (cores) |"
    )?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for row in rows {
        let bare = rows
            .iter()
            .find(|r| r.server.starts_with("bare") && r.shape.actors == row.shape.actors)
            .map(|r| &r.fan_out);
        let f = &row.fan_out;
        let (throughput, tail) = match bare {
            Some(b) => (
                ratio(f.deliveries_per_sec(), b.deliveries_per_sec()),
                ratio(
                    f.latencies.percentile(99).as_secs_f64(),
                    b.latencies.percentile(99).as_secs_f64(),
                ),
            ),
            None => ("—".into(), "—".into()),
        };
        writeln!(
            out,
            "| {} × {} | {} | {} | {} | {:.1} | {:.1} | {throughput} | {tail} | {} | {} |",
            row.shape.actors,
            row.shape.sockets,
            row.server,
            thousands(f.sent_per_sec() as u64),
            thousands(f.deliveries_per_sec() as u64),
            micros(f.latencies.percentile(50)),
            micros(f.latencies.percentile(99)),
            f.dropped,
            cores(f.other_cores),
        )?;
    }
    writeln!(
        out,
        "\nNo target is set for fan-out; the ratios show what roost's actor hub \
         (one order per room, change events, limits, slow-consumer drops) costs \
         against a bare broadcast relay."
    )?;
    Ok(out)
}
