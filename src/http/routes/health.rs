//! `/healthz` (the process answers), `/readyz` (it can serve: the data dir
//! takes writes), and the problem answer for unknown routes.

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

/// Readiness: the data dir takes writes. No auth.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses((status = 200, description = "Ready"), (status = 503, description = "Not ready"))
)]
pub async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let engine = state.engine.clone();
    let writable = tokio::task::spawn_blocking(move || engine.data_dir_writable())
        .await
        .unwrap_or(false);
    if writable {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": "data dir is not writable"})),
        )
    }
}

pub async fn no_route(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {}", uri.path()))
}
