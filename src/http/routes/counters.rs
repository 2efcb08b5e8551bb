//! `GET|POST /v1/actors/{id}/counters/{name}`.

use crate::http::extract::{CreateAs, JsonBody, Target};
use crate::http::problem::ApiError;
use crate::http::AppState;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    #[serde(default = "one")]
    by: i64,
}

fn one() -> i64 {
    1
}

#[derive(Serialize)]
pub struct CounterValue {
    value: i64,
}

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
