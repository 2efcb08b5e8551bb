//! Request extractors that turn every malformed input into a specific
//! problem code instead of axum's plain-text rejections.

use super::problem::ApiError;
use super::AppState;
use crate::actor_id::{ActorId, ActorIdError};
use crate::config::Durability;
use crate::error::EngineError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, RawPathParams, Request};
use axum::http::request::Parts;
use bytes::BytesMut;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// The `{id}` of an actor route, validated, with its home region checked,
/// plus the route's `{key}` or `{name}` if it has one.
pub struct Target {
    pub actor: ActorId,
    pub home_region: String,
    pub name: Option<String>,
}

impl FromRequestParts<Arc<AppState>> for Target {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        // Borrowed, already percent-decoded captures: no map and no copies
        // on every request, unlike `Path<HashMap<..>>`.
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            // Percent-decoding to invalid UTF-8 is the only way a path fails here.
            .map_err(|_| EngineError::InvalidActorId(ActorIdError::InvalidUtf8))?;
        let capture = |wanted: &str| {
            params
                .iter()
                .find_map(|(key, value)| (key == wanted).then_some(value))
        };
        let raw = capture("id").ok_or_else(|| ApiError::NotFound("no actor in path".into()))?;
        let actor = ActorId::parse(raw).map_err(EngineError::from)?;
        let home_region = state.node.home_region(&actor)?;
        let name = capture("key")
            .or_else(|| capture("name"))
            .map(str::to_owned);
        Ok(Target {
            actor,
            home_region,
            name,
        })
    }
}

impl Target {
    /// The `{key}` / `{name}` segment (present on the routes that use it).
    pub fn name(&self) -> Result<String, ApiError> {
        self.name
            .clone()
            .ok_or_else(|| ApiError::InvalidRequest("missing key in path".into()))
    }
}

/// A JSON body; an empty body deserializes from `{}` when `T` allows it.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(JsonBody)
            .map_err(|e| ApiError::InvalidRequest(format!("malformed JSON body: {e}")))
    }
}

/// The raw body, bounded by the configured size limit.
pub struct RawBody(pub Bytes);

/// Most bytes of an oversized body read and dropped before answering 413.
const LINGER_BYTES: usize = 64 << 20;
/// Longest the server keeps draining an oversized body.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);

impl FromRequest<Arc<AppState>> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let limit = state.engine.config().limits.max_body_bytes;
        let mut stream = req.into_body().into_data_stream();
        let mut body = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::InvalidRequest(format!("unreadable body: {e}")))?;
            if body.len() + chunk.len() > limit {
                linger(&mut stream).await;
                return Err(ApiError::PayloadTooLarge(format!(
                    "request body exceeds {limit} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(RawBody(body.freeze()))
    }
}

/// Lingering close: takes in (and drops) what the client is still sending
/// after its body was refused, within bounds, so the connection is not reset
/// under it before it reads the 413.
pub async fn linger<S, E>(stream: &mut S)
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut drained = 0usize;
    while drained < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(more))) => drained += more.len(),
            _ => break,
        }
    }
}

/// Query-string parameters.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<Arc<AppState>> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| QueryParams(q))
            .map_err(|e| {
                ApiError::InvalidRequest(format!("invalid query string: {}", e.body_text()))
            })
    }
}

/// The `roost-durability` header: the mode for an actor this request creates.
pub struct CreateAs(pub Option<Durability>);

impl<S: Send + Sync> FromRequestParts<S> for CreateAs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.headers.get("roost-durability") {
            None => Ok(CreateAs(None)),
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|v| v.parse().ok())
                .map(|mode| CreateAs(Some(mode)))
                .ok_or_else(|| {
                    ApiError::InvalidRequest(
                        "roost-durability must be durable, buffered or memory".into(),
                    )
                }),
        }
    }
}

/// The decoded actor ID of a `/v1/actors/{id}...` path, for middleware that
/// runs before routing (auth, access logs).
/// The key of a `/v1/ratelimit/{key}` path, decoded.
pub fn ratelimit_key_in_path(path: &str) -> Option<String> {
    let segment = path.strip_prefix("/v1/ratelimit/")?;
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()?;
    (!decoded.is_empty() && !segment.contains('/')).then(|| decoded.into_owned())
}

pub fn actor_in_path(path: &str) -> Option<String> {
    let segment = path.strip_prefix("/v1/actors/")?.split('/').next()?;
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()?;
    (!decoded.is_empty()).then(|| decoded.into_owned())
}
