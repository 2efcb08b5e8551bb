//! `POST /v1/actors/{id}/sql`.

use crate::http::extract::{CreateAs, JsonBody, Target};
use crate::http::problem::ApiError;
use crate::http::AppState;
use crate::store::sql::{SqlRequest, SqlResponse};
use axum::extract::State;
use axum::Json;
use std::sync::Arc;

pub async fn run(
    State(state): State<Arc<AppState>>,
    target: Target,
    CreateAs(create_as): CreateAs,
    JsonBody(request): JsonBody<SqlRequest>,
) -> Result<Json<SqlResponse>, ApiError> {
    Ok(Json(
        state.engine.sql(&target.actor, request, create_as).await?,
    ))
}
