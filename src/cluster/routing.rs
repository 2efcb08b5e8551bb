//! Routing in front of every `/v1/actors/{id}...` route. A request for an
//! actor this machine owns passes through. Any other is, depending on the
//! mode, answered 409 `wrong-owner` with `fly-replay` (Fly's proxy then
//! re-sends it to the owner; nothing here read the body or touched state),
//! or forwarded to the owner with its body streamed both ways. A request
//! that was already replayed or forwarded and still missed the owner gets
//! 503 `owner-unavailable`, never another hop.
//!
//! Membership changes move actors (see `handoff`): the owner fetches an
//! actor it does not store before serving it, a machine still holding an
//! actor that now hashes elsewhere serves it until it is asked for it, and
//! one that handed it off sends its requests to where it went.

use super::membership::Member;
use super::placement::{Node, Placement};
use super::Routing;
use crate::actor_id::ActorId;
use crate::http::extract::{actor_in_path, ratelimit_key_in_path};
use crate::http::problem::ApiError;
use crate::http::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

/// Set on a request one machine forwards to another.
pub const FORWARDED: &str = "roost-forwarded";
/// Set by Fly's proxy on a replayed request.
pub const REPLAY_SOURCE: &str = "fly-replay-src";

pub async fn route(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    // Invalid IDs and unknown regions are reported by the handler itself.
    if !may_route_elsewhere(&state) {
        return Ok(next.run(request).await);
    }
    let path = request.uri().path().to_owned();
    let (request, actor) = match ratelimit_key_in_path(&path) {
        Some(key) => {
            // Which limiter decides depends on the body's "mode".
            let (request, mode) = peek_mode(request, &state).await?;
            let actor = crate::http::routes::ratelimit::deciding_actor(&state, &key, mode);
            (request, Some(actor))
        }
        None => (
            request,
            actor_in_path(&path).and_then(|raw| ActorId::parse(&raw).ok()),
        ),
    };
    let Some(actor) = actor else {
        return Ok(next.run(request).await);
    };
    let placement = match state.node.place(&actor) {
        Err(_) => return Ok(next.run(request).await),
        Ok(Placement::Here) => {
            super::handoff::ensure_held(&state, &actor).await?;
            return Ok(next.run(request).await);
        }
        Ok(elsewhere) => elsewhere,
    };
    // The live copy is served where it is, whatever the hash now says; a
    // hand-off of it waits until this request is answered.
    let serving = state.handoffs.serving(&actor).await;
    // A machine that left without a drain took the actor with it: route by
    // the hash again (its new owner starts it afresh, SPEC §4).
    let moved = state
        .engine
        .moved_to(&actor)
        .and_then(|to| state.node.member(&to));
    let placement = match &moved {
        Some(member) => Placement::Owner(member.clone()),
        None if state.engine.holds(&actor) => {
            let response = next.run(request).await;
            drop(serving);
            return Ok(response);
        }
        None => placement,
    };
    drop(serving);
    // One more hop is allowed to follow a hand-off: machines that have not
    // yet learnt of a drain still send this actor's requests here.
    let follows_handoff = moved.is_some()
        && state.node.routing == Routing::Forward
        && request.headers().get(FORWARDED).is_some_and(|v| v == "1")
        && !request.headers().contains_key(REPLAY_SOURCE);
    if arrived_rerouted(request.headers()) && !follows_handoff {
        return Err(ApiError::OwnerUnavailable(format!(
            "this request was already re-routed and {} still does not own the actor",
            state.node.machine_id
        )));
    }
    match (state.node.routing, placement) {
        (Routing::Replay, placement) => Err(replay(&request, &placement)),
        (Routing::Forward, Placement::Owner(owner))
            if super::socket_proxy::is_upgrade(&request) =>
        {
            super::socket_proxy::forward(&state, &owner, request).await
        }
        (Routing::Forward, Placement::Owner(owner)) => forward(&state.node, &owner, request).await,
        (Routing::Forward, _) => Err(ApiError::OwnerUnavailable(
            "no machine of the actor's home region is known yet".into(),
        )),
    }
}

/// Whether any request could be served elsewhere: a machine alone owns
/// everything, unless it once handed actors off (to a machine gone since:
/// see `handoff::ensure_held`).
pub fn may_route_elsewhere(state: &AppState) -> bool {
    !state.node.is_alone() || state.engine.has_moved()
}

/// Reads a rate-limit request's small JSON body for its `mode`, and puts
/// it back. A body the handler will reject counts as the default mode.
async fn peek_mode(
    request: Request,
    state: &AppState,
) -> Result<(Request, crate::http::routes::ratelimit::Mode), ApiError> {
    let (parts, body) = request.into_parts();
    let limit = state.engine.config().limits.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(format!("request body over {limit} bytes")))?;
    #[derive(serde::Deserialize)]
    struct ModeOnly {
        #[serde(default)]
        mode: crate::http::routes::ratelimit::Mode,
    }
    let mode = serde_json::from_slice::<ModeOnly>(&bytes)
        .map(|m| m.mode)
        .unwrap_or_default();
    Ok((Request::from_parts(parts, Body::from(bytes)), mode))
}

/// The `roost-forwarded` value of a request sent on: `1` for the first
/// hop, `2` for the one that follows a hand-off.
pub fn next_hop(headers: &HeaderMap) -> HeaderValue {
    HeaderValue::from_static(if headers.contains_key(FORWARDED) {
        "2"
    } else {
        "1"
    })
}

fn arrived_rerouted(headers: &HeaderMap) -> bool {
    headers.contains_key(REPLAY_SOURCE) || headers.contains_key(FORWARDED)
}

/// The 409 that tells Fly's proxy where to send the request instead.
fn replay(request: &Request, placement: &Placement) -> ApiError {
    let target = match placement {
        Placement::Owner(owner) => format!("instance={}", owner.machine_id),
        Placement::Region(region) => format!("region={region}"),
        Placement::Here => String::new(),
    };
    // Read-only requests may let Fly cache the decision for this actor.
    let cache = (request.method() == Method::GET).then(|| {
        request
            .uri()
            .path()
            .split('/')
            .take(4)
            .collect::<Vec<_>>()
            .join("/")
            + "/*"
    });
    ApiError::WrongOwner {
        detail: format!("this machine does not own the actor; replay to {target}"),
        replay: target,
        cache,
    }
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut kept = headers.clone();
    for name in HOP_BY_HOP {
        kept.remove(*name);
    }
    kept
}

/// Proxies the request to `owner` and returns the owner's answer.
async fn forward(node: &Node, owner: &Member, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{}", owner.address, path);
    let hop = next_hop(&parts.headers);
    let mut headers = end_to_end(&parts.headers);
    headers.insert(HeaderName::from_static(FORWARDED), hop);
    metrics::counter!(crate::telemetry::FORWARDS).increment(1);
    let sent = node
        .client
        .request(parts.method, url)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send();
    let answer = match tokio::time::timeout(node.forward_timeout, sent).await {
        Ok(answer) => answer.map_err(|e| {
            ApiError::OwnerUnavailable(format!("owner {} is unreachable: {e}", owner.machine_id))
        })?,
        // Like any timeout, the outcome is unknown: the owner may still
        // apply the request when it wakes up.
        Err(_) => {
            return Err(ApiError::OwnerUnavailable(format!(
                "owner {} did not answer within {:?}; the request may or may not have been applied",
                owner.machine_id, node.forward_timeout
            )))
        }
    };
    let mut response = Response::builder().status(answer.status());
    if let Some(headers) = response.headers_mut() {
        *headers = end_to_end(answer.headers());
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .map_err(|e| ApiError::Engine(crate::error::EngineError::Internal(e.to_string())))
}
