//! `/healthz` (the process answers), `/readyz` (it can serve: the data dir
//! takes writes and the journal has not failed a write or sync), and the problem
//! answer for unknown routes.

use crate::http::problem::ApiError;
use crate::http::AppState;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

/// Liveness: the process answers. No auth.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive")))]
pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the data dir takes writes and the journal works. No auth.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses((status = 200, description = "Ready"), (status = 503, description = "Not ready"))
)]
pub async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let engine = state.engine.clone();
    let unready = tokio::task::spawn_blocking(move || engine.unready_reason())
        .await
        .unwrap_or_else(|_| Some("the readiness probe failed".into()));
    match unready {
        None => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": reason})),
        ),
    }
}

pub async fn no_route(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}
