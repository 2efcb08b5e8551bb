//! Draining: how a machine leaves the cluster for good without losing or
//! forking an actor. `POST /v1/cluster/drain` on the leaving machine:
//!
//! 1. writes a `draining` marker into its data dir (a restart resumes the
//!    drain) and stops owning anything: its own placement skips it;
//! 2. tells every other machine it is leaving (again every few seconds, so
//!    a machine that restarts meanwhile learns it too); they skip it as
//!    an owner as well, but still ask it for the actors it holds;
//! 3. asks each actor's new owner to claim it (`POST /v1/cluster/claim`),
//!    which fetches it through the ordinary hand-off (see `handoff`).
//!
//! `GET /v1/cluster/drain` reports how many actors are still here; at 0
//! the machine can be destroyed. From then on it also tells the others it
//! is drained, so once it is gone they do not wait for it to answer
//! hand-off requests (with static `--peers`, it may stay listed).

use super::placement::Placement;
use crate::actor_id::ActorId;
use crate::http::AppState;
use futures::StreamExt;
use parking_lot::Mutex;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The file in the data dir that says this machine is draining.
pub const MARKER: &str = "draining";
/// Pause between passes (and between announcements to the other machines).
const PASS_INTERVAL: Duration = Duration::from_secs(2);
/// Claims in flight at once.
const PARALLEL_CLAIMS: usize = 8;

/// Where a drain stands.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Progress {
    pub draining: bool,
    /// Actors still stored here (`null` until the first pass has counted).
    pub remaining: Option<u64>,
    /// Actors claimed by their new owners so far.
    pub moved: u64,
    /// Why the last actor that could not move did not.
    pub last_error: Option<String>,
}

#[derive(Default)]
pub struct Drain {
    started: AtomicBool,
    progress: Mutex<Progress>,
}

impl Drain {
    pub fn progress(&self) -> Progress {
        self.progress.lock().clone()
    }
}

/// Starts draining this machine (idempotent).
pub fn start(state: &Arc<AppState>) -> Result<(), crate::error::EngineError> {
    let marker = state.engine.config().data_dir.join(MARKER);
    if !marker.exists() {
        std::fs::write(&marker, state.node.machine_id.as_bytes())?;
        crate::store::sync_parent_dir(&marker)?;
    }
    state.node.membership.mark_leaving(&state.node.machine_id);
    if !state.drain.started.swap(true, Ordering::AcqRel) {
        state.drain.progress.lock().draining = true;
        tokio::spawn(run(state.clone()));
    }
    Ok(())
}

/// Resumes a drain that was under way when the machine stopped.
pub fn resume_if_marked(state: &Arc<AppState>) {
    if state.engine.config().data_dir.join(MARKER).exists() {
        if let Err(err) = start(state) {
            tracing::error!(error = %err, "cannot resume draining");
        }
    }
}

async fn run(state: Arc<AppState>) {
    loop {
        announce(&state).await;
        let pass = move_all(&state).await;
        {
            let mut progress = state.drain.progress.lock();
            progress.moved += pass.moved;
            progress.remaining = pass.remaining.or(progress.remaining);
            if pass.error.is_some() {
                progress.last_error = pass.error;
            }
        }
        tokio::time::sleep(PASS_INTERVAL).await;
    }
}

/// Tells every other machine that this one is leaving, and once a pass
/// found nothing left here, that it is drained.
async fn announce(state: &AppState) {
    let me = &state.node.machine_id;
    let drained = state.drain.progress.lock().remaining == Some(0);
    let members = state.node.membership.members();
    let peers = members.iter().filter(|m| m.machine_id != *me);
    futures::future::join_all(peers.map(|peer| {
        let url = format!(
            "{}/v1/cluster/leaving/{me}{}",
            peer.address,
            if drained { "?drained=true" } else { "" }
        );
        async move {
            if let Err(err) = super::handoff::internal(state, reqwest::Method::POST, url)
                .send()
                .await
            {
                tracing::debug!(machine = %peer.machine_id, error = %err, "leaving not announced yet");
            }
        }
    }))
    .await;
}

struct Pass {
    moved: u64,
    remaining: Option<u64>,
    error: Option<String>,
}

/// One pass over the actors stored here: each new owner is asked to claim.
async fn move_all(state: &Arc<AppState>) -> Pass {
    let ids = match stored_actors(state).await {
        Ok(ids) => ids,
        Err(err) => {
            return Pass {
                moved: 0,
                remaining: None,
                error: Some(err.to_string()),
            }
        }
    };
    let outcomes: Vec<Result<(), String>> = futures::stream::iter(ids)
        .map(|id| claim_by_owner(state, id))
        .buffer_unordered(PARALLEL_CLAIMS)
        .collect()
        .await;
    let moved = outcomes.iter().filter(|o| o.is_ok()).count() as u64;
    let error = outcomes.into_iter().find_map(Result::err);
    let remaining = stored_actors(state).await.ok().map(|ids| ids.len() as u64);
    Pass {
        moved,
        remaining,
        error,
    }
}

async fn stored_actors(
    state: &Arc<AppState>,
) -> Result<Vec<ActorId>, crate::http::problem::ApiError> {
    crate::http::routes::blocking(state, |engine| {
        let mut ids = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = engine.list("", after.as_deref(), 1000)?;
            ids.extend(
                page.actors
                    .iter()
                    .filter_map(|(id, _)| ActorId::parse(id).ok()),
            );
            match page.cursor {
                Some(cursor) => after = Some(cursor),
                None => return Ok(ids),
            }
        }
    })
    .await
}

async fn claim_by_owner(state: &AppState, id: ActorId) -> Result<(), String> {
    let owner = match state.node.place(&id).map_err(|e| e.to_string())? {
        Placement::Owner(owner) => owner,
        Placement::Here | Placement::Region(_) => {
            return Err(format!(
                "actor {id}: no other machine of its home region can take it"
            ))
        }
    };
    let segment =
        percent_encoding::utf8_percent_encode(id.as_str(), percent_encoding::NON_ALPHANUMERIC);
    let url = format!("{}/v1/cluster/claim/{segment}", owner.address);
    let answer = super::handoff::internal(state, reqwest::Method::POST, url)
        .send()
        .await
        .map_err(|e| format!("actor {id}: {} unreachable: {e}", owner.machine_id))?;
    if answer.status().is_success() {
        Ok(())
    } else {
        Err(format!(
            "actor {id}: {} answered {}",
            owner.machine_id,
            answer.status()
        ))
    }
}
