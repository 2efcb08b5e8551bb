//! Local-mode rate limiting (SPEC §6 `"mode": "local"`): a machine in the
//! receiving region decides from the region's share of the limit, and
//! reports what it allowed to the key's global owner every
//! [`SYNC_INTERVAL`] — the "sync every N seconds" pattern — so global-mode
//! decisions for the same key count that usage too.
//!
//! Overshoot bound: with `R` regions each deciding from `ceil(limit / R)`,
//! local mode admits at most `limit + R − 1` units per burst worldwide;
//! global-mode decisions on the same key see local usage at most one sync
//! interval (plus a hop) late.

use super::placement::Placement;
use super::routing::FORWARDED;
use crate::http::AppState;
use crate::limiter::state::Spend;
use crate::limiter::Policy;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How often allowed local usage is reported to the global owners.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Usage allowed locally and not yet reported, by key.
#[derive(Debug, Default)]
pub struct LocalUsage {
    pending: Mutex<HashMap<String, (Policy, u64)>>,
}

impl LocalUsage {
    pub fn record(&self, key: &str, policy: Policy, cost: u64) {
        let mut pending = self.pending.lock();
        let entry = pending.entry(key.to_owned()).or_insert((policy, 0));
        entry.0 = policy;
        entry.1 = entry.1.saturating_add(cost);
    }

    pub fn is_empty(&self) -> bool {
        self.pending.lock().is_empty()
    }

    fn take(&self) -> HashMap<String, (Policy, u64)> {
        std::mem::take(&mut *self.pending.lock())
    }
}

/// Reports local usage every interval until `stop`, then once more.
pub async fn run(state: Arc<AppState>, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(SYNC_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            () = stop.cancelled() => true,
        };
        report_all(&state).await;
        if stopping {
            return;
        }
    }
}

/// Sends every pending report; a failed one waits for the next round.
pub async fn report_all(state: &AppState) {
    for (key, (policy, cost)) in state.local_usage.take() {
        if let Err(err) = report(state, &key, policy, cost).await {
            tracing::debug!(%key, error = %err, "local rate-limit usage not synced yet");
            state.local_usage.record(&key, policy, cost);
        }
    }
}

async fn report(state: &AppState, key: &str, policy: Policy, cost: u64) -> Result<(), String> {
    let id = state.engine.ratelimit_actor(key);
    match state.node.place(&id).map_err(|e| e.to_string())? {
        Placement::Here => state
            .engine
            .ratelimit_on(&id, key, policy, cost, Spend::Always)
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Placement::Owner(owner) => {
            let segment =
                percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC);
            let mut request = state
                .node
                .client
                .post(format!("{}/v1/ratelimit/{segment}", owner.address))
                .header(FORWARDED, "1")
                .timeout(state.node.forward_timeout)
                .json(&serde_json::json!({
                    "limit": policy.limit,
                    "window_ms": policy.window_ms,
                    "cost": cost,
                    "mode": "sync",
                }));
            if let Some(token) = &state.auth.token {
                request = request.bearer_auth(token);
            }
            let answer = request.send().await.map_err(|e| e.to_string())?;
            // 429 means the usage was counted and the key is now over.
            match answer.status().as_u16() {
                200 | 429 => Ok(()),
                other => Err(format!("owner {} answered {other}", owner.machine_id)),
            }
        }
        Placement::Region(region) => Err(format!("no machine of region {region} is known")),
    }
}
