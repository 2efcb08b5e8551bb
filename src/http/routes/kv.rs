//! `/v1/actors/{id}/kv[/{key}]`: raw values with versions as ETags,
//! `If-Match` / `If-None-Match: *` for compare-and-set, and paged listing.

use crate::http::extract::{CreateAs, QueryParams, RawBody, Target};
use crate::http::problem::ApiError;
use crate::http::AppState;
use crate::store::kv::{ListPage, ListQuery, Precondition};
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// Reads `If-Match: "<v>"` and `If-None-Match: *`.
fn precondition(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    if let Some(value) = headers.get(IF_NONE_MATCH) {
        return match value.to_str() {
            Ok("*") => Ok(Precondition::Absent),
            _ => Err(ApiError::InvalidRequest(
                "If-None-Match supports only `*`".into(),
            )),
        };
    }
    let Some(value) = headers.get(IF_MATCH) else {
        return Ok(Precondition::None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    let text = text.strip_prefix("W/").unwrap_or(text);
    let version = text.trim_matches('"');
    version.parse().map(Precondition::Version).map_err(|_| {
        ApiError::InvalidRequest(format!("If-Match must be a version ETag, got {text:?}"))
    })
}

/// The raw value, with its version as the ETag.
#[utoipa::path(
    get,
    path = "/v1/actors/{id}/kv/{key}",
    tag = "kv",
    params(("id" = String, Path, description = "Actor ID"), ("key" = String, Path, description = "Key")),
    responses(
        (status = 200, description = "The value; `ETag: \"<version>\"`", content_type = "application/octet-stream"),
        (status = 404, description = "not-found")
    )
)]
pub async fn get(State(state): State<Arc<AppState>>, target: Target) -> Result<Response, ApiError> {
    let key = target.name()?;
    match state.engine.kv_get(&target.actor, key.clone()).await? {
        Some(entry) => Ok((
            [
                (ETAG, etag(entry.version)),
                (
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
            ],
            entry.value,
        )
            .into_response()),
        None => Err(ApiError::NotFound(format!("key {key:?} does not exist"))),
    }
}

/// Stores the raw body; `If-Match` / `If-None-Match: *` for compare-and-set.
#[utoipa::path(
    put,
    path = "/v1/actors/{id}/kv/{key}",
    tag = "kv",
    params(
        ("id" = String, Path, description = "Actor ID"),
        ("key" = String, Path, description = "Key"),
        ("If-Match" = Option<String>, Header, description = "Write only if the key is at this version"),
        ("If-None-Match" = Option<String>, Header, description = "`*`: write only if the key does not exist")
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Stored; `{\"version\"}` and the new ETag"),
        (status = 412, description = "version-mismatch"),
        (status = 413, description = "payload-too-large")
    )
)]
pub async fn put(
    State(state): State<Arc<AppState>>,
    target: Target,
    CreateAs(create_as): CreateAs,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let condition = precondition(&headers)?;
    let version = state
        .engine
        .kv_put(
            &target.actor,
            target.name()?,
            body.to_vec(),
            condition,
            create_as,
        )
        .await?;
    Ok(([(ETAG, etag(version))], Json(json!({"version": version}))).into_response())
}

/// Deletes a key (204 whether or not it existed); `If-Match` honoured.
#[utoipa::path(
    delete,
    path = "/v1/actors/{id}/kv/{key}",
    tag = "kv",
    params(
        ("id" = String, Path, description = "Actor ID"),
        ("key" = String, Path, description = "Key"),
        ("If-Match" = Option<String>, Header, description = "Delete only if the key is at this version")
    ),
    responses((status = 204, description = "Deleted"), (status = 412, description = "version-mismatch"))
)]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    target: Target,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let condition = precondition(&headers)?;
    state
        .engine
        .kv_delete(&target.actor, target.name()?, condition)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Keys in order, paged with an opaque cursor.
#[utoipa::path(
    get,
    path = "/v1/actors/{id}/kv",
    tag = "kv",
    params(
        ("id" = String, Path, description = "Actor ID"),
        ("prefix" = Option<String>, Query, description = "Only keys starting with this"),
        ("start" = Option<String>, Query, description = "First key (inclusive)"),
        ("end" = Option<String>, Query, description = "Last key (exclusive)"),
        ("limit" = Option<usize>, Query, description = "Page size, default 100, at most 1000"),
        ("reverse" = Option<bool>, Query, description = "Descending order"),
        ("cursor" = Option<String>, Query, description = "From the previous page"),
        ("values" = Option<bool>, Query, description = "Include values")
    ),
    responses((status = 200, body = ListPage))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    target: Target,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<ListPage>, ApiError> {
    Ok(Json(state.engine.kv_list(&target.actor, query).await?))
}
