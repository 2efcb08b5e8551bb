//! `GET|POST /v1/actors/{id}/counters/{name}`.

use crate::http::extract::{CreateAs, JsonBody, Target};
use crate::http::problem::ApiError;
use crate::http::AppState;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `{"by": n}`; an empty body adds 1.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    #[serde(default = "one")]
    by: i64,
}

fn one() -> i64 {
    1
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CounterValue {
    value: i64,
}

/// Adds to a counter and returns its new value.
#[utoipa::path(
    post,
    path = "/v1/actors/{id}/counters/{name}",
    tag = "counters",
    params(
        ("id" = String, Path, description = "Actor ID"),
        ("name" = String, Path, description = "Counter name")
    ),
    request_body(content = Option<AddBody>, description = "Optional; default adds 1"),
    responses(
        (status = 200, body = CounterValue),
        (status = 400, description = "invalid-request (including overflow)")
    )
)]
pub async fn add(
    State(state): State<Arc<AppState>>,
    target: Target,
    CreateAs(create_as): CreateAs,
    JsonBody(body): JsonBody<AddBody>,
) -> Result<Json<CounterValue>, ApiError> {
    let name = target.name()?;
    let value = state
        .engine
        .counter_add(&target.actor, name, body.by, create_as)
        .await?;
    Ok(Json(CounterValue { value }))
}

/// A counter's value (0 if never set).
#[utoipa::path(
    get,
    path = "/v1/actors/{id}/counters/{name}",
    tag = "counters",
    params(
        ("id" = String, Path, description = "Actor ID"),
        ("name" = String, Path, description = "Counter name")
    ),
    responses((status = 200, body = CounterValue))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    target: Target,
) -> Result<Json<CounterValue>, ApiError> {
    let value = state
        .engine
        .counter_get(&target.actor, target.name()?)
        .await?;
    Ok(Json(CounterValue { value }))
}
