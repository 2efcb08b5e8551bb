//! Forward routing for WebSockets: a machine that does not own the actor
//! opens a WebSocket to the owner first (so a refusal comes back as the
//! owner's HTTP answer), then accepts the client's upgrade and relays
//! frames both ways. It never serves the actor's room itself.

use super::membership::Member;
use super::placement::Node;
use super::routing::FORWARDED;
use crate::http::problem::ApiError;
use crate::http::AppState;
use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self as tung, protocol::frame::coding::CloseCode};

/// Headers the client handshake to the owner sets for itself.
const HANDSHAKE: &[&str] = &[
    "host",
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "content-length",
];

/// Whether the request asks for a WebSocket.
pub fn is_upgrade(request: &Request) -> bool {
    request
        .headers()
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

type Upstream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn forward(
    state: &std::sync::Arc<AppState>,
    owner: &Member,
    request: Request,
) -> Result<Response, ApiError> {
    let (mut parts, _body) = request.into_parts();
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let base = owner
        .address
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1);
    let mut handshake = format!("{base}{path}")
        .into_client_request()
        .map_err(|e| ApiError::InvalidRequest(format!("cannot reach the owner's socket: {e}")))?;
    for (name, value) in &parts.headers {
        if !HANDSHAKE.contains(&name.as_str()) {
            handshake.headers_mut().append(name, value.clone());
        }
    }
    let hop = super::routing::next_hop(&parts.headers);
    handshake.headers_mut().insert(FORWARDED, hop);
    let upstream = connect(&state.node, owner, handshake).await?;
    metrics::counter!(crate::telemetry::FORWARDS).increment(1);
    let limits = state.realtime.limits;
    let closing = state.realtime.closing.clone();
    let tracker = state.realtime.tasks.clone();
    Ok(upgrade
        .max_message_size(limits.max_message_bytes)
        .max_frame_size(limits.max_message_bytes)
        .on_upgrade(move |client| tracker.track_future(relay(client, upstream, closing))))
}

/// Opens the socket to the owner; its refusals become this answer.
async fn connect(
    node: &Node,
    owner: &Member,
    handshake: tung::handshake::client::Request,
) -> Result<Upstream, ApiError> {
    let unreachable = |detail: String| {
        ApiError::OwnerUnavailable(format!("owner {}: {detail}", owner.machine_id))
    };
    match tokio::time::timeout(
        node.forward_timeout,
        tokio_tungstenite::connect_async(handshake),
    )
    .await
    {
        Err(_) => Err(unreachable(format!(
            "no answer within {:?}",
            node.forward_timeout
        ))),
        Ok(Ok((upstream, _))) => Ok(upstream),
        Ok(Err(tung::Error::Http(answer))) => {
            let (parts, body) = answer.into_parts();
            let mut response = (parts.status, body.unwrap_or_default()).into_response();
            *response.headers_mut() = parts.headers;
            Err(ApiError::Relayed(Box::new(response)))
        }
        Ok(Err(err)) => Err(unreachable(err.to_string())),
    }
}

/// Relays frames until either side closes or the server shuts down.
async fn relay(
    client: WebSocket,
    upstream: Upstream,
    closing: tokio_util::sync::CancellationToken,
) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut owner_tx, mut owner_rx) = upstream.split();
    loop {
        tokio::select! {
            from_client = client_rx.next() => match from_client {
                Some(Ok(message)) => {
                    let closes = matches!(message, ws::Message::Close(_));
                    if owner_tx.send(to_owner(message)).await.is_err() || closes {
                        break;
                    }
                }
                Some(Err(_)) | None => break,
            },
            from_owner = owner_rx.next() => match from_owner {
                Some(Ok(message)) => {
                    let Some(message) = to_client(message) else { continue };
                    let closes = matches!(message, ws::Message::Close(_));
                    if client_tx.send(message).await.is_err() || closes {
                        break;
                    }
                }
                Some(Err(_)) | None => break,
            },
            () = closing.cancelled() => {
                let away = ws::CloseFrame { code: 1001, reason: "server shutting down; reconnect".into() };
                let _ = client_tx.send(ws::Message::Close(Some(away))).await;
                break;
            }
        }
    }
    let _ = owner_tx.close().await;
    let _ = client_tx.close().await;
}

fn to_owner(message: ws::Message) -> tung::Message {
    match message {
        ws::Message::Text(text) => tung::Message::text(text.as_str()),
        ws::Message::Binary(bytes) => tung::Message::Binary(bytes),
        ws::Message::Ping(bytes) => tung::Message::Ping(bytes),
        ws::Message::Pong(bytes) => tung::Message::Pong(bytes),
        ws::Message::Close(frame) => {
            tung::Message::Close(frame.map(|f| tung::protocol::CloseFrame {
                code: CloseCode::from(f.code),
                reason: f.reason.as_str().into(),
            }))
        }
    }
}

fn to_client(message: tung::Message) -> Option<ws::Message> {
    Some(match message {
        tung::Message::Text(text) => ws::Message::Text(text.as_str().into()),
        tung::Message::Binary(bytes) => ws::Message::Binary(bytes),
        tung::Message::Ping(bytes) => ws::Message::Ping(bytes),
        tung::Message::Pong(bytes) => ws::Message::Pong(bytes),
        tung::Message::Close(frame) => ws::Message::Close(frame.map(|f| ws::CloseFrame {
            code: f.code.into(),
            reason: f.reason.as_str().into(),
        })),
        tung::Message::Frame(_) => return None,
    })
}
