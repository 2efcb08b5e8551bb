//! `GET /v1/actors/{id}/ws` and `GET /v1/actors/{id}/events` (SPEC §8).
//!
//! A WebSocket joins the actor's hub: every text or binary message a client
//! sends goes to all of the actor's sockets (sender included) in the hub's
//! one order, interleaved with the actor's change events (JSON text).
//! Server-Sent Events carry the change events only, resumable with
//! `Last-Event-ID`. Both run only on the owner: routing in front replays
//! or forwards the request before it gets here.

use crate::engine::events::{Frame, Gap, Hub};
use crate::http::extract::Target;
use crate::http::problem::ApiError;
use crate::http::AppState;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, Stream, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// Close codes (RFC 6455 §7.4.1).
const GOING_AWAY: u16 = 1001;
const POLICY: u16 = 1008;
const TOO_BIG: u16 = 1009;
const PROTOCOL: u16 = 1002;
/// A socket that cannot take a frame for this long is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Joins the actor's room: broadcast of messages and change events.
#[utoipa::path(
    get,
    path = "/v1/actors/{id}/ws",
    tag = "realtime",
    params(("id" = String, Path, description = "Actor ID")),
    responses(
        (status = 101, description = "WebSocket: client messages broadcast in one order, plus change events as JSON text"),
        (status = 503, description = "too-many-sockets: the actor has its maximum of sockets")
    )
)]
pub async fn socket(
    State(state): State<Arc<AppState>>,
    target: Target,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    check_origin(&state, &headers)?;
    let limits = state.realtime.limits;
    let hub = state.engine.events().hub(&target.actor);
    let Some(slot) = hub.connect(limits.max_sockets_per_actor) else {
        state.engine.release_hub(&target.actor);
        return Err(ApiError::TooManySockets(format!(
            "actor {} already has {} sockets",
            target.actor, limits.max_sockets_per_actor
        )));
    };
    let live = hub.subscribe();
    let tracker = state.realtime.tasks.clone();
    Ok(upgrade
        .max_message_size(limits.max_message_bytes)
        .max_frame_size(limits.max_message_bytes)
        .on_upgrade(move |socket| {
            tracker.track_future(async move {
                let _slot = slot;
                run_socket(socket, &hub, live, &state).await;
                drop(hub);
                state.engine.release_hub(&target.actor);
            })
        }))
}

async fn run_socket(
    socket: WebSocket,
    hub: &Hub,
    mut live: tokio::sync::broadcast::Receiver<Frame>,
    state: &AppState,
) {
    let (mut sink, mut incoming) = socket.split();
    let closing = state.realtime.closing.clone();
    let close = loop {
        tokio::select! {
            received = incoming.next() => match received {
                Some(Ok(Message::Text(text))) => hub.publish_message(Frame::Text(Arc::from(text.as_str()))),
                Some(Ok(Message::Binary(bytes))) => hub.publish_message(Frame::Binary(bytes)),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => break None,
                // The socket is unusable after any error.
                Some(Err(err)) => break Some(receive_error(err)),
            },
            frame = live.recv() => match frame {
                Ok(Frame::Moved(to)) => break Some((GOING_AWAY, format!("the actor moved to {to}; reconnect"))),
                Ok(frame) => match deliver(&mut sink, frame, &mut live).await {
                    Delivered::All => {}
                    Delivered::Stalled => {
                        metrics::counter!(crate::telemetry::WS_DROPPED, "reason" => "stalled").increment(1);
                        return;
                    }
                    Delivered::Lagged(missed) => {
                        metrics::counter!(crate::telemetry::WS_DROPPED, "reason" => "lagged").increment(1);
                        break Some((POLICY, format!("too slow: {missed} messages behind")));
                    }
                },
                Err(RecvError::Lagged(missed)) => {
                    metrics::counter!(crate::telemetry::WS_DROPPED, "reason" => "lagged").increment(1);
                    break Some((POLICY, format!("too slow: {missed} messages behind")));
                }
                Err(RecvError::Closed) => break None,
            },
            () = closing.cancelled() => break Some((GOING_AWAY, "server shutting down; reconnect".into())),
        }
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(truncate(reason, 120)),
        };
        let _ = tokio::time::timeout(SEND_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
    }
}

/// The close code for a failed receive: 1009 for an oversized message,
/// 1002 for a protocol violation.
fn receive_error(err: axum::Error) -> (u16, String) {
    let detail = err.to_string();
    let inner = err.into_inner();
    match inner.downcast_ref::<tokio_tungstenite::tungstenite::Error>() {
        Some(tokio_tungstenite::tungstenite::Error::Capacity(_)) => (TOO_BIG, detail),
        _ => (PROTOCOL, detail),
    }
}

/// Browsers send `Origin`; a page from another site must not join rooms
/// with the visitor's network position (cross-site WebSocket hijacking).
/// Requests without `Origin` (not from a browser) are not affected.
fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(axum::http::header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default();
    let allowed = &state.realtime.allowed_origins;
    if is_local_origin(origin)
        || allowed
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "origin {origin:?} may not open sockets or event streams; allow it with --allowed-origins"
    )))
}

fn is_local_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = match rest.strip_prefix("[::1]") {
        Some(port) => return port.is_empty() || port.starts_with(':'),
        None => rest.split(':').next().unwrap_or_default(),
    };
    matches!(host, "localhost" | "127.0.0.1")
}

enum Delivered {
    All,
    Stalled,
    Lagged(u64),
}

/// Frames written per flush at most, when several are waiting.
const BATCH: usize = 64;

/// Writes `first` and whatever else is already queued, then flushes once:
/// one write per burst instead of one per frame.
async fn deliver(
    sink: &mut futures::stream::SplitSink<WebSocket, Message>,
    first: Frame,
    live: &mut tokio::sync::broadcast::Receiver<Frame>,
) -> Delivered {
    if !matches!(
        within(SEND_TIMEOUT, sink.feed(message(first))).await,
        Some(Ok(()))
    ) {
        return Delivered::Stalled;
    }
    for _ in 1..BATCH {
        let frame = match live.try_recv() {
            Ok(frame) => frame,
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(missed)) => {
                return Delivered::Lagged(missed)
            }
            Err(_) => break,
        };
        if !matches!(
            within(SEND_TIMEOUT, sink.feed(message(frame))).await,
            Some(Ok(()))
        ) {
            return Delivered::Stalled;
        }
    }
    match within(SEND_TIMEOUT, sink.flush()).await {
        Some(Ok(())) => Delivered::All,
        _ => Delivered::Stalled,
    }
}

/// Runs `work` with a deadline, arming a timer only if it does not finish
/// at once (a timer per frame would cost more than the frame).
async fn within<F: std::future::Future>(deadline: Duration, work: F) -> Option<F::Output> {
    let mut work = std::pin::pin!(work);
    if let std::task::Poll::Ready(output) = futures::poll!(work.as_mut()) {
        return Some(output);
    }
    tokio::time::timeout(deadline, work).await.ok()
}

fn message(frame: Frame) -> Message {
    match frame {
        Frame::Change { json, .. } => Message::Text(Utf8Bytes::from(&*json)),
        Frame::Text(text) => Message::Text(Utf8Bytes::from(&*text)),
        Frame::Binary(bytes) => Message::Binary(bytes),
        // The socket loop closes instead of sending this.
        Frame::Moved(to) => Message::Text(Utf8Bytes::from(format!(
            "{{\"type\": \"moved\", \"to\": \"{to}\"}}"
        ))),
    }
}

/// Close reasons must fit in a control frame (125 bytes).
fn truncate(mut text: String, max: usize) -> String {
    while text.len() > max {
        text.pop();
    }
    text
}

/// Streams the actor's change events; `Last-Event-ID` resumes.
#[utoipa::path(
    get,
    path = "/v1/actors/{id}/events",
    tag = "realtime",
    params(
        ("id" = String, Path, description = "Actor ID"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this seq")
    ),
    responses((status = 200, description = "text/event-stream of change events; a `reset` event first when the backlog no longer reaches back to Last-Event-ID"))
)]
pub async fn events(
    State(state): State<Arc<AppState>>,
    target: Target,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_origin(&state, &headers)?;
    let after = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::InvalidRequest("Last-Event-ID must be a seq (a whole number)".into())
                })?,
        ),
    };
    let hub = state.engine.events().hub(&target.actor);
    let subscription = hub.resume(after);
    drop(hub);
    let release = Release {
        state: state.clone(),
        actor: target.actor.clone(),
    };
    let stream = change_stream(subscription, state.realtime.closing.clone(), release);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn change_stream(
    subscription: crate::engine::events::Subscription,
    closing: tokio_util::sync::CancellationToken,
    release: Release,
) -> impl Stream<Item = Result<Event, std::convert::Infallible>> {
    let crate::engine::events::Subscription { replay, gap, live } = subscription;
    let first = gap.map(reset_event).into_iter();
    let replayed = replay.into_iter().filter_map(sse_event);
    let head = futures::stream::iter(first.chain(replayed).map(Ok));
    let tail = futures::stream::unfold(
        (live, closing, release),
        |(mut live, closing, release)| async move {
            loop {
                let frame = tokio::select! {
                    frame = live.recv() => frame,
                    () = closing.cancelled() => return None,
                };
                match frame {
                    // The actor went to another machine: the client reconnects.
                    Ok(Frame::Moved(_)) => return None,
                    Ok(frame) => {
                        if let Some(event) = sse_event(frame) {
                            return Some((Ok(event), (live, closing, release)));
                        }
                    }
                    // Fell behind: end the stream; the client resumes from its
                    // Last-Event-ID out of the backlog.
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    head.chain(tail)
}

fn sse_event(frame: Frame) -> Option<Event> {
    match frame {
        Frame::Change { seq, json } => Some(Event::default().id(seq.to_string()).data(&*json)),
        Frame::Text(_) | Frame::Binary(_) | Frame::Moved(_) => None,
    }
}

fn reset_event(gap: Gap) -> Event {
    let detail = serde_json::json!({
        "type": "reset",
        "requested": gap.requested,
        "oldest": gap.oldest,
        "detail": "the backlog no longer reaches back to Last-Event-ID: events in between are lost; re-read the state, then follow from here",
    });
    Event::default().event("reset").data(detail.to_string())
}

/// Lets the hub go when the stream ends (client gone or shutdown).
struct Release {
    state: Arc<AppState>,
    actor: crate::actor_id::ActorId,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.state.engine.release_hub(&self.actor);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_this_machines_origins_are_local() {
        for local in [
            "http://localhost",
            "http://localhost:3000",
            "https://127.0.0.1:8443",
            "http://[::1]:8080",
        ] {
            assert!(super::is_local_origin(local), "{local}");
        }
        for foreign in [
            "null",
            "https://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.nip.io",
            "file://",
            "http://[::1]evil",
        ] {
            assert!(!super::is_local_origin(foreign), "{foreign}");
        }
    }
}
