//! The ceiling: an axum WebSocket server that relays every message of a
//! room to the room's sockets through one broadcast channel, with nothing
//! else (no actors, no ordering lock, no limits beyond the channel's ring).

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::broadcast;

type Rooms = Arc<Mutex<HashMap<String, broadcast::Sender<Message>>>>;

pub(super) fn app() -> Router {
    Router::new()
        .route("/v1/actors/{id}/ws", get(join))
        .with_state(Rooms::default())
}

async fn join(
    State(rooms): State<Rooms>,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let tx = rooms
        .lock()
        .entry(id)
        .or_insert_with(|| broadcast::channel(crate::engine::events::QUEUE_FRAMES).0)
        .clone();
    upgrade.on_upgrade(move |socket| relay(socket, tx))
}

async fn relay(socket: WebSocket, tx: broadcast::Sender<Message>) {
    let mut rx = tx.subscribe();
    let (mut sink, mut stream) = socket.split();
    loop {
        tokio::select! {
            incoming = stream.next() => match incoming {
                Some(Ok(message @ (Message::Binary(_) | Message::Text(_)))) => {
                    let _ = tx.send(message);
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            outgoing = rx.recv() => match outgoing {
                Ok(message) => {
                    if sink.send(message).await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            },
        }
    }
}
