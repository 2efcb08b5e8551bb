//! `/v1/cluster/handoff/{id}`: the machine-to-machine side of moving an
//! actor to its new owner (see `cluster::handoff`). Full-access token only.

use crate::actor_id::ActorId;
use crate::cluster::handoff::{judge, Verdict, CLAIMANT, DURABILITY};
use crate::http::problem::ApiError;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// The actor and the machine asking for it, from a hand-off request.
fn handoff_request(raw: &str, headers: &HeaderMap) -> Result<(ActorId, String), ApiError> {
    let id = ActorId::parse(raw).map_err(crate::error::EngineError::from)?;
    let claimant = headers
        .get(CLAIMANT)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| ApiError::InvalidRequest(format!("the {CLAIMANT} header is required")))?;
    Ok((id, claimant))
}

/// Hands the actor to the asking machine if this one stores it and agrees
/// the asker owns it; afterwards this machine serves none of it.
#[utoipa::path(
    post,
    path = "/v1/cluster/handoff/{id}",
    tag = "cluster",
    params(
        ("id" = String, Path, description = "Actor ID"),
        ("roost-claimant" = String, Header, description = "Machine ID of the new owner")
    ),
    responses(
        (status = 200, description = "The actor's final copy (SQLite file; empty for a memory actor), its durability in `roost-durability`", content_type = "application/vnd.sqlite3"),
        (status = 204, description = "This machine does not hold the actor and does not own it"),
        (status = 503, description = "owner-unavailable: this machine disagrees about the owner (membership not in step yet)")
    )
)]
pub async fn give(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (id, claimant) = handoff_request(&raw, &headers)?;
    // Not the claim lock: two machines claiming from each other must not
    // wait for each other.
    let _no_requests = state.handoffs.exclusive(&id).await;
    match judge(&state, &id, &claimant)? {
        Verdict::NotHere => return Ok(StatusCode::NO_CONTENT.into_response()),
        Verdict::Refuse(why) => return Err(ApiError::OwnerUnavailable(why)),
        Verdict::HandOver => {}
    }
    let copy = state.engine.hand_off(&id, &claimant).await?;
    state.engine.events().announce_moved(&id, &claimant);
    metrics::counter!(crate::telemetry::HANDOFFS, "side" => "given").increment(1);
    tracing::info!(actor = %id, to = %claimant, "actor handed off");
    let Some((path, durability)) = copy else {
        return Ok(([(DURABILITY, "memory")], StatusCode::OK).into_response());
    };
    let mut response = super::transfer::sqlite_file(&path).await?;
    response.headers_mut().insert(
        DURABILITY,
        durability
            .as_str()
            .parse()
            .expect("durability names are ASCII"),
    );
    Ok(response)
}

/// The new owner has the actor: delete the handed-off files (the tombstone
/// stays, so this machine keeps sending the actor's requests there).
#[utoipa::path(
    delete,
    path = "/v1/cluster/handoff/{id}",
    tag = "cluster",
    params(
        ("id" = String, Path, description = "Actor ID"),
        ("roost-claimant" = String, Header, description = "Machine ID of the new owner")
    ),
    responses(
        (status = 204, description = "The old copy is gone"),
        (status = 503, description = "owner-unavailable: the actor was not handed to this claimant")
    )
)]
pub async fn confirm(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (id, claimant) = handoff_request(&raw, &headers)?;
    let _no_requests = state.handoffs.exclusive(&id).await;
    match state.engine.moved_to(&id) {
        Some(to) if to == claimant => {
            state.engine.destroy(&id).await?;
            Ok(StatusCode::NO_CONTENT)
        }
        Some(to) => Err(ApiError::OwnerUnavailable(format!(
            "the actor was handed to {to}, not {claimant}"
        ))),
        None => Err(ApiError::OwnerUnavailable(format!(
            "the actor was not handed off by {}",
            state.node.machine_id
        ))),
    }
}

/// Makes this machine, the actor's owner, fetch the actor now (a draining
/// machine asks this for each actor it holds).
#[utoipa::path(
    post,
    path = "/v1/cluster/claim/{id}",
    tag = "cluster",
    params(("id" = String, Path, description = "Actor ID")),
    responses(
        (status = 204, description = "This machine holds the actor"),
        (status = 503, description = "owner-unavailable: not the owner by this machine's membership, or the hand-off cannot complete yet")
    )
)]
pub async fn claim(
    State(state): State<Arc<AppState>>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = ActorId::parse(&raw).map_err(crate::error::EngineError::from)?;
    match state.node.place(&id)? {
        crate::cluster::placement::Placement::Here => {
            crate::cluster::handoff::ensure_held(&state, &id).await?;
            Ok(StatusCode::NO_CONTENT)
        }
        _ => Err(ApiError::OwnerUnavailable(format!(
            "{} does not own actor {id} by its membership",
            state.node.machine_id
        ))),
    }
}

/// Another machine announces that it is draining: it owns nothing from now on.
#[utoipa::path(
    post,
    path = "/v1/cluster/leaving/{machine}",
    tag = "cluster",
    params(
        ("machine" = String, Path, description = "Machine ID of the draining machine"),
        ("drained" = Option<bool>, Query, description = "It holds no actor any more")
    ),
    responses((status = 204, description = "Noted"))
)]
pub async fn leaving(
    State(state): State<Arc<AppState>>,
    Path(machine): Path<String>,
    axum::extract::Query(notice): axum::extract::Query<LeavingNotice>,
) -> StatusCode {
    let membership = &state.node.membership;
    if !membership.is_leaving(&machine) {
        tracing::info!(%machine, "machine is draining; it owns nothing from now on");
    }
    if notice.drained {
        if !membership.is_drained(&machine) {
            tracing::info!(%machine, "machine is drained; it holds no actor");
        }
        membership.mark_drained(&machine);
    } else {
        membership.mark_leaving(&machine);
    }
    StatusCode::NO_CONTENT
}

#[derive(serde::Deserialize)]
pub struct LeavingNotice {
    #[serde(default)]
    drained: bool,
}

/// Starts draining this machine: its actors move to their next owners, and
/// it owns nothing new. Poll `GET` until `remaining` is 0, then remove it.
#[utoipa::path(
    post,
    path = "/v1/cluster/drain",
    tag = "cluster",
    responses(
        (status = 202, description = "Draining", body = crate::cluster::drain::Progress),
        (status = 400, description = "invalid-request: no other machine to hand actors to")
    )
)]
pub async fn drain(
    State(state): State<Arc<AppState>>,
) -> Result<(StatusCode, axum::Json<crate::cluster::drain::Progress>), ApiError> {
    if state.node.is_alone() {
        return Err(ApiError::InvalidRequest(
            "this machine is the cluster's only one: there is nobody to hand its actors to".into(),
        ));
    }
    crate::cluster::drain::start(&state)?;
    Ok((StatusCode::ACCEPTED, axum::Json(state.drain.progress())))
}

/// How far this machine's drain has come.
#[utoipa::path(
    get,
    path = "/v1/cluster/drain",
    tag = "cluster",
    responses((status = 200, description = "Progress", body = crate::cluster::drain::Progress))
)]
pub async fn drain_progress(
    State(state): State<Arc<AppState>>,
) -> axum::Json<crate::cluster::drain::Progress> {
    axum::Json(state.drain.progress())
}
