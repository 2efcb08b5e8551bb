//! `POST /v1/actors/{id}/sql`.

use crate::http::extract::{CreateAs, JsonBody, Target};
use crate::http::problem::ApiError;
use crate::http::AppState;
use crate::store::sql::{SqlRequest, SqlResponse};
use axum::extract::State;
use axum::Json;
use std::sync::Arc;

/// Runs one statement, or a batch of statements in one transaction.
#[utoipa::path(
    post,
    path = "/v1/actors/{id}/sql",
    tag = "sql",
    params(("id" = String, Path, description = "Actor ID (one percent-encoded segment)")),
    request_body = SqlRequest,
    responses(
        (status = 200, description = "One result per statement", body = SqlResponse),
        (status = 400, description = "sql-error, invalid-request, invalid-actor-id"),
        (status = 403, description = "sql-denied"),
        (status = 408, description = "query-timeout"),
        (status = 413, description = "payload-too-large")
    )
)]
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
