//! Who may call `/v1`: the full-access `ROOST_TOKEN`, or an HS256 JWT signed
//! with `ROOST_JWT_SECRET` whose claims limit it to actor ID patterns and to
//! reading (`"perm": "r"`) or reading and writing (`"rw"`). 401 for a missing
//! or bad token, 403 for a valid one used outside its scope. Without any
//! configured credential the server only listens on loopback (enforced at
//! start-up), so every request is allowed.

use super::extract::actor_in_path;
use super::problem::ApiError;
use super::AppState;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The claims of a scoped token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Actor ID patterns; `*` matches any run of characters (`room-*`).
    pub actors: Vec<String>,
    pub perm: Perm,
    /// Expiry, seconds since the Unix epoch (required).
    pub exp: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Perm {
    #[serde(rename = "r")]
    Read,
    #[serde(rename = "rw")]
    ReadWrite,
}

/// Every API route's gate: who may call (this module), then where the
/// actor lives (`cluster::routing`). One middleware rather than two: each
/// layer costs every request a clone of the route and a boxed future.
pub async fn gate(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    check(&state, &request)?;
    if !crate::cluster::routing::may_route_elsewhere(&state) {
        return Ok(next.run(request).await);
    }
    // Boxed: routing's future is large, and this one is made per request.
    Box::pin(crate::cluster::routing::route(State(state), request, next)).await
}

/// Whether the request's bearer token lets it through.
fn check(state: &AppState, request: &Request) -> Result<(), ApiError> {
    let auth = &state.auth;
    if auth.token.is_none() && auth.jwt_secret.is_none() {
        return Ok(());
    }
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
    if auth
        .token
        .as_deref()
        .is_some_and(|t| constant_time_eq(presented.as_bytes(), t.as_bytes()))
    {
        return Ok(());
    }
    let Some(secret) = &auth.jwt_secret else {
        return Err(ApiError::Unauthorized("invalid bearer token".into()));
    };
    let claims = decode(presented, secret)?;
    let Some(actor) = actor_in_path(request.uri().path()) else {
        return Err(ApiError::Forbidden(
            "this route needs a full-access token".into(),
        ));
    };
    if !claims
        .actors
        .iter()
        .any(|pattern| glob_match(pattern, &actor))
    {
        return Err(ApiError::Forbidden(format!(
            "the token does not cover actor {actor:?}"
        )));
    }
    // A WebSocket is a GET but sends messages to everyone in the room.
    let reads = matches!(*request.method(), Method::GET | Method::HEAD)
        && !request.uri().path().ends_with("/ws");
    if !reads && claims.perm != Perm::ReadWrite {
        return Err(ApiError::Forbidden("the token is read-only".into()));
    }
    Ok(())
}

fn decode(token: &str, secret: &str) -> Result<Claims, ApiError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp"]);
    jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map(|data| data.claims)
    .map_err(|e| ApiError::Unauthorized(format!("invalid token: {e}")))
}

/// `*` matches any (possibly empty) run of characters; all else is literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let middle: Vec<&str> = parts.collect();
    let Some((last, middle)) = middle.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Compares without an early exit, so timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn globs() {
        assert!(glob_match("room-*", "room-1"));
        assert!(glob_match("room-*", "room-"));
        assert!(!glob_match("room-*", "user-1"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("a*b*c", "a-x-b-y-c"));
        assert!(!glob_match("a*b*c", "a-x-c"));
        assert!(glob_match("*@fra", "room@fra"));
        assert!(!glob_match("ab*ba", "aba"));
    }
}
