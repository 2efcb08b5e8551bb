//! Handlers, one file per resource. Each only translates HTTP to the
//! engine's typed API and back, and carries its OpenAPI description.

pub mod actors;
pub mod cluster;
pub mod counters;
pub mod health;
pub mod kv;
pub mod meta;
pub mod ratelimit;
pub mod realtime;
pub mod sql;
pub mod transfer;

use crate::http::problem::ApiError;
use crate::http::AppState;
use std::sync::Arc;

/// Runs blocking engine work (catalog reads, file I/O) off the async workers.
pub async fn blocking<T: Send + 'static>(
    state: &Arc<AppState>,
    work: impl FnOnce(&crate::engine::Engine) -> Result<T, crate::error::EngineError> + Send + 'static,
) -> Result<T, ApiError> {
    let engine = state.engine.clone();
    tokio::task::spawn_blocking(move || work(&engine))
        .await
        .map_err(|e| ApiError::Engine(crate::error::EngineError::Internal(e.to_string())))?
        .map_err(ApiError::from)
}
