//! Hand-off: how an actor changes owner (a machine joined its home region)
//! without ever being served by two machines.
//!
//! Before the owner serves an actor it does not store, it asks every other
//! machine of the home region to hand it over, in parallel:
//!
//! - a machine that stores the actor and agrees (by its own membership)
//!   that the asker is the owner answers with the actor's final copy; from
//!   that moment it serves nothing of the actor (a tombstone in its catalog
//!   survives restarts) and sends its requests to the new owner;
//! - a machine that does not store it answers "not here", unless by its own
//!   view it is the owner itself (it could create the actor any moment);
//! - any refusal, or a machine that does not answer, means the owner cannot
//!   be sure no copy exists: the request gets 503 `owner-unavailable`, never
//!   a second, empty actor.
//!
//! The owner imports the copy, then confirms, and only then does the old
//! machine delete its files: a crash in between loses nothing (the old
//! machine sends the same copy again). Until a machine is asked, it keeps
//! serving the actors it stores, so an actor is always served by the one
//! machine that holds its live copy.

use super::membership::Member;
use super::placement::Placement;
use crate::actor_id::ActorId;
use crate::config::Durability;
use crate::error::EngineError;
use crate::http::problem::ApiError;
use crate::http::AppState;
use futures::StreamExt;
use std::path::PathBuf;
use tokio::io::AsyncWriteExt;

/// Names the machine asking for an actor (hand-off requests).
pub const CLAIMANT: &str = "roost-claimant";
/// The durability of a handed-off actor (hand-off answers).
pub const DURABILITY: &str = "roost-durability";

const STRIPES: usize = 64;

/// Per-actor coordination (striped): one claim at a time, and one hand-off
/// at a time, which waits for the requests this machine is serving from
/// its copy. Claims and hand-offs use separate locks: a claim waits on
/// other machines, which may be claiming from this one.
pub struct Handoffs {
    claims: Vec<tokio::sync::Mutex<()>>,
    serving: Vec<tokio::sync::RwLock<()>>,
}

impl Default for Handoffs {
    fn default() -> Self {
        Handoffs {
            claims: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            serving: (0..STRIPES).map(|_| tokio::sync::RwLock::new(())).collect(),
        }
    }
}

fn stripe(id: &ActorId) -> usize {
    let stem = id.file_stem();
    usize::from_str_radix(&stem[..4], 16).unwrap_or_default() % STRIPES
}

impl Handoffs {
    /// Held while claiming the actor.
    pub async fn lock(&self, id: &ActorId) -> tokio::sync::MutexGuard<'_, ()> {
        self.claims[stripe(id)].lock().await
    }

    /// Held while serving a request from a copy this machine may be asked
    /// to hand off: the hand-off waits, and later requests see where the
    /// actor went instead of failing half-way.
    pub async fn serving(&self, id: &ActorId) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.serving[stripe(id)].read().await
    }

    /// Held while handing the actor off (no request is being served from it).
    pub async fn exclusive(&self, id: &ActorId) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.serving[stripe(id)].write().await
    }
}

/// What one machine answered a hand-off request.
enum Answer {
    /// Its copy (`None`: a memory actor, whose state does not travel).
    Handed(Option<(PathBuf, Durability)>),
    NotHere,
    /// It refused or could not be reached: it may hold the actor.
    Doubt(String),
}

/// Makes sure this machine, the actor's owner, holds the actor's only
/// copy before it serves it: fetched from the region's other machines if
/// one of them has it, or confirmed new.
pub async fn ensure_held(state: &AppState, id: &ActorId) -> Result<(), ApiError> {
    if state.engine.holds(id) {
        return Ok(());
    }
    let home = state.node.home_region(id)?;
    let membership = &state.node.membership;
    let mut peers = state.node.peers_in(&home);
    // A drained machine holds nothing: its silence proves nothing either way.
    peers.retain(|peer| !membership.is_drained(&peer.machine_id));
    if peers.is_empty() && state.engine.moved_to(id).is_none() {
        return Ok(());
    }
    let _claim = state.handoffs.lock(id).await;
    if state.engine.holds(id) {
        return Ok(());
    }
    let answers = futures::future::join_all(peers.iter().map(|peer| ask(state, peer, id))).await;
    let mut handed = None;
    let mut doubts = Vec::new();
    for (peer, answer) in peers.iter().zip(answers) {
        match answer {
            Answer::Handed(copy) if handed.is_none() => handed = Some((peer, copy)),
            Answer::Handed(copy) => {
                tracing::error!(actor = %id, machine = %peer.machine_id, "a second machine handed the actor over; keeping the first copy");
                if let Some((path, _)) = copy {
                    let _ = tokio::fs::remove_file(path).await;
                }
            }
            Answer::NotHere => {}
            Answer::Doubt(why) => doubts.push(format!("{}: {why}", peer.machine_id)),
        }
    }
    if let Some((peer, copy)) = handed {
        match copy {
            Some((path, durability)) => state.engine.import(id, path, Some(durability)).await?,
            None => state.engine.forget_moved(id)?,
        }
        metrics::counter!(crate::telemetry::HANDOFFS, "side" => "received").increment(1);
        tracing::info!(actor = %id, from = %peer.machine_id, "actor handed over");
        confirm(state, peer, id).await;
        return Ok(());
    }
    if !doubts.is_empty() {
        return Err(ApiError::OwnerUnavailable(format!(
            "cannot confirm that no other machine holds actor {id} yet ({})",
            doubts.join("; ")
        )));
    }
    // Nobody has it: a new actor (or one deleted where it had moved to).
    state.engine.forget_moved(id)?;
    Ok(())
}

fn url(peer: &Member, id: &ActorId) -> String {
    let segment =
        percent_encoding::utf8_percent_encode(id.as_str(), percent_encoding::NON_ALPHANUMERIC);
    format!("{}/v1/cluster/handoff/{segment}", peer.address)
}

/// A machine-to-machine request: names this machine, carries the cluster's
/// token, and gives up after the forward timeout.
pub fn internal(state: &AppState, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
    let mut request = state
        .node
        .client
        .request(method, url)
        .header(CLAIMANT, &state.node.machine_id)
        .timeout(state.node.forward_timeout);
    if let Some(token) = &state.auth.token {
        request = request.bearer_auth(token);
    }
    request
}

async fn ask(state: &AppState, peer: &Member, id: &ActorId) -> Answer {
    let answer = match internal(state, reqwest::Method::POST, url(peer, id))
        .send()
        .await
    {
        Ok(answer) => answer,
        Err(err) => return Answer::Doubt(format!("unreachable: {err}")),
    };
    match answer.status().as_u16() {
        204 => Answer::NotHere,
        200 => {
            let durability = answer
                .headers()
                .get(DURABILITY)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<Durability>().ok());
            match durability {
                Some(Durability::Memory) => Answer::Handed(None),
                Some(durability) => match download(state, answer).await {
                    Ok(path) => Answer::Handed(Some((path, durability))),
                    Err(err) => Answer::Doubt(format!("copy not received: {err}")),
                },
                None => Answer::Doubt("answer without a durability".into()),
            }
        }
        status => {
            let detail = answer
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|p| p["detail"].as_str().map(str::to_owned))
                .unwrap_or_default();
            Answer::Doubt(format!("{status} {detail}"))
        }
    }
}

/// Streams a handed-off copy to a temporary file (synced: it is imported
/// and then the sender deletes its own).
async fn download(state: &AppState, answer: reqwest::Response) -> Result<PathBuf, EngineError> {
    let path = state.engine.temp_file("handoff");
    let limit = state.engine.config().limits.max_actor_bytes;
    let written = async {
        let mut file = tokio::fs::File::create(&path).await?;
        let mut total = 0u64;
        let mut body = answer.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| EngineError::Io(format!("copy interrupted: {e}")))?;
            total += chunk.len() as u64;
            if total > limit {
                return Err(EngineError::TooLarge(format!("copy over {limit} bytes")));
            }
            file.write_all(&chunk).await?;
        }
        file.sync_all().await?;
        Ok(())
    }
    .await;
    match written {
        Ok(()) => Ok(path),
        Err(err) => {
            let _ = tokio::fs::remove_file(&path).await;
            Err(err)
        }
    }
}

/// Tells the old holder it may delete its copy. If this is lost, the old
/// holder keeps a file it never serves (and sends it again if asked).
async fn confirm(state: &AppState, peer: &Member, id: &ActorId) {
    let sent = internal(state, reqwest::Method::DELETE, url(peer, id))
        .send()
        .await;
    match sent {
        Ok(answer) if answer.status().is_success() => {}
        Ok(answer) => {
            tracing::warn!(actor = %id, machine = %peer.machine_id, status = %answer.status(), "hand-off not confirmed")
        }
        Err(err) => {
            tracing::warn!(actor = %id, machine = %peer.machine_id, error = %err, "hand-off not confirmed")
        }
    }
}

/// What this machine answers `claimant`, which asks for actor `id`.
pub enum Verdict {
    /// Hand it over (this machine stores it and agrees).
    HandOver,
    NotHere,
    Refuse(String),
}

/// Decides a hand-off request (under the actor's exclusive lock).
pub fn judge(state: &AppState, id: &ActorId, claimant: &str) -> Result<Verdict, ApiError> {
    // A hand-off to a machine that has left since (without a drain) no
    // longer counts: the actor went with it.
    let moved = state
        .engine
        .moved_to(id)
        .filter(|to| state.node.member(to).is_some());
    if let Some(to) = moved {
        return Ok(if to != claimant {
            Verdict::Refuse(format!("the actor moved to {to}"))
        } else if state.engine.has_file(id) {
            // Sent before, not confirmed: send the same state again.
            Verdict::HandOver
        } else {
            Verdict::NotHere
        });
    }
    let placement = state.node.place(id)?;
    let claimant_owns = matches!(&placement, Placement::Owner(m) if m.machine_id == claimant);
    Ok(match (state.engine.holds(id), placement) {
        (true, _) if claimant_owns => Verdict::HandOver,
        (true, placement) | (false, placement @ Placement::Here) => Verdict::Refuse(format!(
            "by {}'s membership the owner is {}",
            state.node.machine_id,
            describe(&placement, &state.node.machine_id)
        )),
        (false, _) => Verdict::NotHere,
    })
}

fn describe(placement: &Placement, me: &str) -> String {
    match placement {
        Placement::Here => me.to_owned(),
        Placement::Owner(member) => member.machine_id.clone(),
        Placement::Region(region) => format!("unknown (no machine of {region})"),
    }
}
