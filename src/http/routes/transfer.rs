//! `GET /v1/actors/{id}/export` streams a consistent SQLite copy of the
//! actor; `PUT /v1/actors/{id}/import` replaces its state with an uploaded
//! SQLite file, validated first so a bad upload changes nothing.

use crate::http::extract::{CreateAs, Target};
use crate::http::problem::ApiError;
use crate::http::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// A consistent SQLite file of the actor, taken while it keeps serving.
#[utoipa::path(
    get,
    path = "/v1/actors/{id}/export",
    tag = "actors",
    params(("id" = String, Path, description = "Actor ID")),
    responses(
        (status = 200, description = "The SQLite database file", content_type = "application/vnd.sqlite3"),
        (status = 404, description = "not-found: the actor has no state")
    )
)]
pub async fn export(
    State(state): State<Arc<AppState>>,
    target: Target,
) -> Result<Response, ApiError> {
    let path = state.engine.export(&target.actor).await?;
    let mut response = sqlite_file(&path).await?;
    let name = format!(
        "attachment; filename=\"{}.db\"",
        &target.actor.file_stem()[..16]
    );
    if let Ok(value) = name.parse() {
        response.headers_mut().insert(CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// Streams the temporary SQLite file at `path` (an export or a hand-off
/// copy) as the response body, and removes its name.
pub async fn sqlite_file(path: &std::path::Path) -> Result<Response, ApiError> {
    let file = tokio::fs::File::open(path).await;
    // The open handle keeps the data readable; the name can go now.
    let _ = tokio::fs::remove_file(path).await;
    let file = file.map_err(crate::error::EngineError::from)?;
    let length = file.metadata().await.map(|m| m.len()).ok();
    let mut response = Body::from_stream(tokio_util::io::ReaderStream::new(file)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        "application/vnd.sqlite3".parse().expect("static header"),
    );
    if let Some(length) = length {
        headers.insert(CONTENT_LENGTH, length.into());
    }
    Ok(response)
}

/// Replaces the actor's state with an uploaded SQLite file.
#[utoipa::path(
    put,
    path = "/v1/actors/{id}/import",
    tag = "actors",
    params(("id" = String, Path, description = "Actor ID")),
    request_body(content = Vec<u8>, content_type = "application/vnd.sqlite3", description = "A SQLite database file"),
    responses(
        (status = 204, description = "Imported"),
        (status = 400, description = "invalid-request: not a sound SQLite database"),
        (status = 413, description = "payload-too-large: over the actor size limit")
    )
)]
pub async fn import(
    State(state): State<Arc<AppState>>,
    target: Target,
    CreateAs(create_as): CreateAs,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let limit = state.engine.config().limits.max_actor_bytes;
    let upload = state.engine.temp_file("import");
    let received = receive(body, &upload, limit).await;
    if let Err(err) = received {
        let _ = tokio::fs::remove_file(&upload).await;
        return Err(err);
    }
    state
        .engine
        .import(&target.actor, upload, create_as)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Streams the body to `path`, refusing more than `limit` bytes.
async fn receive(body: Body, path: &std::path::Path, limit: u64) -> Result<(), ApiError> {
    let io = |e: std::io::Error| ApiError::from(crate::error::EngineError::from(e));
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::InvalidRequest(format!("upload interrupted: {e}")))?;
        total += chunk.len() as u64;
        if total > limit {
            crate::http::extract::linger(&mut stream).await;
            return Err(ApiError::PayloadTooLarge(format!(
                "uploads are limited to {limit} bytes"
            )));
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.sync_all().await.map_err(io)?;
    Ok(())
}
