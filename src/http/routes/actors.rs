//! `/v1/actors` (list) and `/v1/actors/{id}` (describe, delete).

use crate::actor_id::ActorId;
use crate::http::extract::{QueryParams, Target};
use crate::http::problem::ApiError;
use crate::http::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as CURSOR_B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Serialize, utoipa::ToSchema)]
pub struct ActorDescription {
    id: String,
    home_region: String,
    owner: String,
    durability: &'static str,
    size_bytes: u64,
    open: bool,
}

/// Describes an actor without opening it.
#[utoipa::path(
    get,
    path = "/v1/actors/{id}",
    tag = "actors",
    params(("id" = String, Path, description = "Actor ID")),
    responses((status = 200, body = ActorDescription), (status = 404, description = "not-found"))
)]
pub async fn describe(
    State(state): State<Arc<AppState>>,
    target: Target,
) -> Result<Json<ActorDescription>, ApiError> {
    let actor = target.actor.clone();
    let info = super::blocking(&state, move |engine| engine.info(&actor)).await?;
    Ok(Json(ActorDescription {
        id: info.id.to_string(),
        home_region: target.home_region,
        owner: state.node.machine_id.clone(),
        durability: info.durability.as_str(),
        size_bytes: info.size_bytes,
        open: info.open,
    }))
}

/// Removes the actor and all its data.
#[utoipa::path(
    delete,
    path = "/v1/actors/{id}",
    tag = "actors",
    params(("id" = String, Path, description = "Actor ID")),
    responses((status = 204, description = "Deleted"))
)]
pub async fn destroy(
    State(state): State<Arc<AppState>>,
    target: Target,
) -> Result<StatusCode, ApiError> {
    state.engine.destroy(&target.actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
    cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ListedActor {
    id: String,
    size_bytes: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ActorList {
    actors: Vec<ListedActor>,
    cursor: Option<String>,
}

/// Actors stored on this machine, in ID order, paged.
#[utoipa::path(
    get,
    path = "/v1/actors",
    tag = "actors",
    params(
        ("prefix" = Option<String>, Query, description = "Only IDs starting with this"),
        ("limit" = Option<usize>, Query, description = "Page size, default 100, at most 1000"),
        ("cursor" = Option<String>, Query, description = "From the previous page")
    ),
    responses((status = 200, body = ActorList))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<ActorList>, ApiError> {
    let after = params
        .cursor
        .map(|c| {
            CURSOR_B64
                .decode(c.as_bytes())
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|id| ActorId::parse(&id).ok())
                .ok_or_else(|| {
                    ApiError::InvalidRequest("cursor is not one this server issued".into())
                })
        })
        .transpose()?;
    let limit = params.limit.unwrap_or(100);
    let page = super::blocking(&state, move |engine| {
        engine.list(&params.prefix, after.as_ref().map(ActorId::as_str), limit)
    })
    .await?;
    Ok(Json(ActorList {
        actors: page
            .actors
            .into_iter()
            .map(|(id, size_bytes)| ListedActor { id, size_bytes })
            .collect(),
        cursor: page.cursor.map(|c| CURSOR_B64.encode(c.as_bytes())),
    }))
}
