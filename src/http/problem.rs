//! RFC 9457 problem responses. [`ApiError`] is the HTTP layer's error; each
//! variant (and each engine error) maps to one status and one stable code.

use crate::error::EngineError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ApiError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    OwnerUnavailable(String),
    /// The actor already has its maximum of WebSockets.
    #[error("{0}")]
    TooManySockets(String),
    /// Another machine's answer, passed on as it is (a forwarded
    /// WebSocket handshake the owner refused).
    #[error("the owner refused the request")]
    Relayed(Box<Response>),
    /// A rate-limit decision said no.
    #[error("rate limit for key {:?} exceeded; retry in {} ms", .0.key, .0.decision.retry_after_ms)]
    RateLimited(Box<Denied>),
    /// Another machine owns the actor; `replay` is the `fly-replay` value.
    #[error("{detail}")]
    WrongOwner {
        detail: String,
        replay: String,
        cache: Option<String>,
    },
}

/// What a 429 carries besides the problem fields.
#[derive(Debug)]
pub struct Denied {
    pub key: String,
    pub decision: crate::limiter::Decision,
    /// `RateLimit-Policy` and `RateLimit`.
    pub headers: axum::http::HeaderMap,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: String,
    /// Extension members of a rate-limit denial.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    decision: Option<crate::limiter::Decision>,
}

impl ApiError {
    /// Status, stable code and title of this error.
    pub fn classify(&self) -> (StatusCode, &'static str, &'static str) {
        use EngineError as E;
        use StatusCode as S;
        match self {
            ApiError::Engine(err) => match err {
                E::InvalidActorId(_) => (S::BAD_REQUEST, "invalid-actor-id", "Invalid actor ID"),
                E::UnknownRegion(_) => (S::BAD_REQUEST, "unknown-region", "Unknown region"),
                E::InvalidRequest(_) => (S::BAD_REQUEST, "invalid-request", "Invalid request"),
                E::Sql(_) => (S::BAD_REQUEST, "sql-error", "SQL error"),
                E::SqlDenied(_) => (S::FORBIDDEN, "sql-denied", "SQL denied"),
                E::QueryTimeout(_) => (S::REQUEST_TIMEOUT, "query-timeout", "Query timed out"),
                E::TooLarge(_) => (
                    S::PAYLOAD_TOO_LARGE,
                    "payload-too-large",
                    "Payload too large",
                ),
                E::VersionMismatch(_) => (
                    S::PRECONDITION_FAILED,
                    "version-mismatch",
                    "Version mismatch",
                ),
                E::NotFound(_) => (S::NOT_FOUND, "not-found", "Not found"),
                E::InsufficientStorage(_) => (
                    S::INSUFFICIENT_STORAGE,
                    "insufficient-storage",
                    "Insufficient storage",
                ),
                E::Closed => (S::SERVICE_UNAVAILABLE, "owner-unavailable", "Shutting down"),
                E::Moved { .. } => (
                    S::SERVICE_UNAVAILABLE,
                    "owner-unavailable",
                    "Owner unavailable",
                ),
                E::InvalidConfig(_) | E::Io(_) | E::Internal(_) => {
                    (S::INTERNAL_SERVER_ERROR, "internal", "Internal error")
                }
            },
            ApiError::Unauthorized(_) => (S::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            ApiError::Forbidden(_) => (S::FORBIDDEN, "forbidden", "Forbidden"),
            ApiError::InvalidRequest(_) => (S::BAD_REQUEST, "invalid-request", "Invalid request"),
            ApiError::PayloadTooLarge(_) => (
                S::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
            ),
            ApiError::NotFound(_) => (S::NOT_FOUND, "not-found", "Not found"),
            ApiError::OwnerUnavailable(_) => (
                S::SERVICE_UNAVAILABLE,
                "owner-unavailable",
                "Owner unavailable",
            ),
            ApiError::WrongOwner { .. } => (S::CONFLICT, "wrong-owner", "Wrong owner"),
            ApiError::RateLimited(_) => (S::TOO_MANY_REQUESTS, "rate-limited", "Rate limited"),
            ApiError::Relayed(response) => (response.status(), "relayed", "Relayed"),
            ApiError::TooManySockets(_) => (
                S::SERVICE_UNAVAILABLE,
                "too-many-sockets",
                "Too many sockets",
            ),
            ApiError::RequestTimeout(_) => {
                (S::REQUEST_TIMEOUT, "request-timeout", "Request timed out")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Relayed(response) = self {
            return *response;
        }
        let (status, code, title) = self.classify();
        let replay = match &self {
            ApiError::WrongOwner { replay, cache, .. } => Some((replay.clone(), cache.clone())),
            _ => None,
        };
        if status.is_server_error() {
            tracing::warn!(%code, error = %self, "request failed");
        }
        let body = Problem {
            kind: format!("urn:roost:error:{code}"),
            title,
            status: status.as_u16(),
            detail: self.to_string(),
            decision: match &self {
                ApiError::RateLimited(denied) => Some(denied.decision),
                _ => None,
            },
        };
        let mut response = (status, serde_json::to_vec(&body).unwrap_or_default()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some((replay, cache)) = replay {
            metrics::counter!(crate::telemetry::REPLAYS).increment(1);
            if let Ok(value) = HeaderValue::from_str(&replay) {
                headers.insert("fly-replay", value);
            }
            if let Some(Ok(pattern)) = cache.map(|c| HeaderValue::from_str(&c)) {
                headers.insert("fly-replay-cache", pattern);
                headers.insert("fly-replay-cache-ttl-secs", HeaderValue::from_static("60"));
            }
        }
        if let ApiError::RateLimited(denied) = self {
            let retry_s = denied.decision.retry_after_ms.div_ceil(1000).max(1);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_s));
            headers.extend(denied.headers);
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
