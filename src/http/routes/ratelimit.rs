//! `POST /v1/ratelimit/{key}`: one rate-limit decision (SPEC §6). The key's
//! limiter actor is found by hashing the key; routing in front of this
//! route sends the request to that actor's owner like any actor request.

use crate::http::problem::{ApiError, Denied};
use crate::http::AppState;
use crate::limiter::state::Spend;
use crate::limiter::{Decision, Policy};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// An inline policy (`limit` + `window_ms`) or a configured one (`policy`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitRequest {
    /// A policy configured with `--ratelimit-policy name=limit/window`.
    policy: Option<String>,
    /// Units of cost allowed per window.
    limit: Option<u64>,
    /// The window, in milliseconds.
    window_ms: Option<u64>,
    /// Units this request spends (default 1; 0 only looks).
    #[serde(default = "one")]
    cost: u64,
    /// `global` (default): one owner decides worldwide. `local`: a machine
    /// of the receiving region decides from that region's share, and the
    /// usage is synced to the global owner every second. `sync`: such
    /// usage, spent even past the limit (sent by roost itself).
    #[serde(default)]
    mode: Mode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Global,
    Local,
    Sync,
}

/// The actor that decides for `key` under `mode` on this machine: the
/// routing layer and the handler must agree on it.
pub fn deciding_actor(state: &AppState, key: &str, mode: Mode) -> crate::actor_id::ActorId {
    match mode {
        Mode::Local => state.engine.ratelimit_local_actor(key, &state.node.region),
        Mode::Global | Mode::Sync => state.engine.ratelimit_actor(key),
    }
}

/// A region's share of `policy` in local mode: the limit split evenly over
/// the cluster's regions, rounded up (so the worldwide total may exceed the
/// limit by at most one unit per region).
pub fn regional_share(policy: &Policy, regions: usize) -> Policy {
    Policy {
        limit: policy.limit.div_ceil(regions.max(1) as u64),
        window_ms: policy.window_ms,
    }
}

fn one() -> u64 {
    1
}

/// An allowed request's answer (a denied one is a 429 problem with the same fields).
#[derive(Serialize, utoipa::ToSchema)]
pub struct LimitAnswer {
    allowed: bool,
    /// Units that could still be spent now.
    remaining: u64,
    /// Milliseconds until the whole limit is available again.
    reset_ms: u64,
}

/// Spends `cost` of the key's allowance, or says when to retry.
#[utoipa::path(
    post,
    path = "/v1/ratelimit/{key}",
    tag = "ratelimit",
    params(("key" = String, Path, description = "What is limited: a client IP, a user, an API key")),
    request_body(content = LimitRequest, description = "`{\"limit\", \"window_ms\", \"cost\"}` or `{\"policy\", \"cost\"}`"),
    responses(
        (status = 200, body = LimitAnswer, description = "Allowed; `RateLimit-Policy` and `RateLimit` headers"),
        (status = 400, description = "invalid-request: no or bad policy, cost above the limit"),
        (status = 429, description = "rate-limited, with `Retry-After` and the same fields")
    )
)]
pub async fn decide(
    State(state): State<Arc<AppState>>,
    Path(key): Path<String>,
    crate::http::extract::JsonBody(body): crate::http::extract::JsonBody<LimitRequest>,
) -> Result<(HeaderMap, Json<LimitAnswer>), ApiError> {
    let (name, policy) = resolve(&state, &body)?;
    let actor = deciding_actor(&state, &key, body.mode);
    let (policy, spend) = match body.mode {
        Mode::Global => (policy, Spend::IfAllowed),
        Mode::Local => (
            regional_share(&policy, state.node.regions.len()),
            Spend::IfAllowed,
        ),
        Mode::Sync => (policy, Spend::Always),
    };
    let decision = state
        .engine
        .ratelimit_on(&actor, &key, policy, body.cost, spend)
        .await?;
    if body.mode == Mode::Local && decision.allowed && body.cost > 0 {
        let global = resolve(&state, &body)?.1;
        state.local_usage.record(&key, global, body.cost);
    }
    let headers = headers(name, &policy, &decision);
    if !decision.allowed {
        return Err(ApiError::RateLimited(Box::new(Denied {
            key,
            decision,
            headers,
        })));
    }
    Ok((
        headers,
        Json(LimitAnswer {
            allowed: true,
            remaining: decision.remaining,
            reset_ms: decision.reset_ms,
        }),
    ))
}

/// The policy the request names, with the name its headers carry.
fn resolve<'a>(state: &AppState, body: &'a LimitRequest) -> Result<(&'a str, Policy), ApiError> {
    match (&body.policy, body.limit, body.window_ms) {
        (Some(name), None, None) => match state.ratelimit_policies.get(name) {
            Some(policy) => Ok((name, policy)),
            None => Err(ApiError::InvalidRequest(format!(
                "no rate-limit policy named {name:?} is configured (configured: {:?})",
                state.ratelimit_policies.names()
            ))),
        },
        (None, Some(limit), Some(window_ms)) => Ok(("default", Policy::new(limit, window_ms)?)),
        (Some(_), _, _) => Err(ApiError::InvalidRequest(
            "give either \"policy\" or \"limit\" and \"window_ms\", not both".into(),
        )),
        (None, _, _) => Err(ApiError::InvalidRequest(
            "a rate-limit request needs \"limit\" and \"window_ms\", or a configured \"policy\""
                .into(),
        )),
    }
}

/// `RateLimit-Policy` and `RateLimit` as the IETF httpapi draft writes
/// them: quota `q` per window `w` seconds; `r` units remaining, full again
/// in `t` seconds. Built without `format!`: they are on every decision.
fn headers(name: &str, policy: &Policy, decision: &Decision) -> HeaderMap {
    // Room for the headers every response gets on its way out, too.
    let mut headers = HeaderMap::with_capacity(8);
    let window_s = policy.window_ms.div_ceil(1000).max(1);
    let reset_s = decision.reset_ms.div_ceil(1000);
    let pairs = [
        ("ratelimit-policy", ["q", "w"], [policy.limit, window_s]),
        ("ratelimit", ["r", "t"], [decision.remaining, reset_s]),
    ];
    for (header, params, values) in pairs {
        let mut value = String::with_capacity(name.len() + 32);
        value.push('"');
        value.push_str(name);
        value.push('"');
        for (param, number) in params.into_iter().zip(values) {
            value.push(';');
            value.push_str(param);
            value.push('=');
            value.push_str(itoa::Buffer::new().format(number));
        }
        if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
            headers.insert(HeaderName::from_static(header), value);
        }
    }
    headers
}
