//! The rate-limit suite's rows: a bare axum handler (the HTTP ceiling),
//! roost over loopback HTTP, Redis INCR + PEXPIRE NX, and roost in process.

use anyhow::{ensure, Context};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Plan, POLICY};
use crate::bench::fixture::{RoostServer, ScratchDir, Server};
use crate::bench::load::{drive_after, drive_threads, Answer, Load, Slice};
use crate::bench::redis::{fresh_prefix, Redis};
use crate::bench::wire::{resp_command, RawHttp, RawRedis};
use crate::{Durability, Engine, EngineConfig};

/// Every HTTP row sends the same body: the suite's policy, cost 1.
fn request_body() -> String {
    format!(
        r#"{{"limit":{},"window_ms":{},"cost":1}}"#,
        POLICY.limit, POLICY.window_ms
    )
}

/// One round of `clients` tasks `POST`ing decisions to
/// `{base}/v1/ratelimit/{key}`, request `k` of task `i` for
/// `keys[(i + k) % len]`, over lean raw-socket clients (see `wire`).
pub(super) async fn decide_over_http(
    base: &str,
    keys: &[String],
    clients: usize,
    slice: Slice,
) -> anyhow::Result<Load> {
    let urls: Vec<String> = keys
        .iter()
        .map(|key| format!("{base}/v1/ratelimit/{key}"))
        .collect();
    let clients = RawHttp::for_urls(&urls, request_body().as_bytes(), clients, true)?;
    drive_after(clients, slice.warm_up, slice.measure, &[]).await
}

/// The request the bare handler reads (roost's, without named policies).
#[derive(Deserialize)]
struct LimitRequest {
    limit: u64,
    window_ms: u64,
    cost: u64,
}

#[derive(Serialize)]
struct LimitAnswer {
    allowed: bool,
    remaining: u64,
    reset_ms: u64,
}

/// One key's fixed window: when it started and what it has spent.
struct Window {
    started: Instant,
    spent: u64,
}

/// A server answering `POST /v1/ratelimit/{key}` by deciding on a fixed
/// window per key in a locked in-memory map: the HTTP ceiling.
pub(super) async fn bare_axum() -> anyhow::Result<Server> {
    type Windows = Arc<parking_lot::Mutex<HashMap<String, Window>>>;
    async fn decide(
        State(windows): State<Windows>,
        UrlPath(key): UrlPath<String>,
        Json(request): Json<LimitRequest>,
    ) -> (StatusCode, Json<LimitAnswer>) {
        let now = Instant::now();
        let length = Duration::from_millis(request.window_ms);
        let mut windows = windows.lock();
        let window = windows.entry(key).or_insert(Window {
            started: now,
            spent: 0,
        });
        if now.duration_since(window.started) >= length {
            *window = Window {
                started: now,
                spent: 0,
            };
        }
        let allowed = window.spent + request.cost <= request.limit;
        if allowed {
            window.spent += request.cost;
        }
        let answer = LimitAnswer {
            allowed,
            remaining: request.limit.saturating_sub(window.spent),
            reset_ms: u64::try_from(
                length
                    .saturating_sub(now.duration_since(window.started))
                    .as_millis(),
            )
            .unwrap_or(u64::MAX),
        };
        let status = match allowed {
            true => StatusCode::OK,
            false => StatusCode::TOO_MANY_REQUESTS,
        };
        (status, Json(answer))
    }

    let app = Router::new()
        .route("/v1/ratelimit/{key}", post(decide))
        .with_state(Windows::default());
    Server::axum(app).await
}

/// A real roost server: `POST /v1/ratelimit/{key}` over loopback.
pub(super) async fn roost_http() -> anyhow::Result<RoostServer> {
    RoostServer::start(Durability::Durable).await
}

/// `Engine::ratelimit` from `threads` OS threads, no HTTP: what a decision
/// costs an application that embeds roost.
pub(super) async fn roost_in_process(
    keys: Arc<[String]>,
    threads: usize,
    plan: Plan,
) -> anyhow::Result<Load> {
    tokio::task::spawn_blocking(move || {
        let dir = ScratchDir::new("ratelimit")?;
        let engine = Engine::open(EngineConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        })
        .context("opening the engine")?;
        let load = drive_threads(threads, plan.measure, |thread, k| {
            let key = &keys[(thread + k) % keys.len()];
            match futures::executor::block_on(engine.ratelimit(key, POLICY, 1)) {
                Ok(decision) if decision.allowed => Ok(Answer::Done),
                Ok(_) => Ok(Answer::Denied),
                Err(err) => Err(err.to_string()),
            }
        });
        ensure!(
            engine.shutdown(Duration::from_secs(30)),
            "the engine did not shut down within 30 s"
        );
        load
    })
    .await?
}

/// The pattern roost's limiter replaces: `INCR key` then `PEXPIRE key
/// window NX`, sent as one pipeline (one round trip, not a MULTI
/// transaction: NX makes the pair safe to repeat) over one connection per
/// client; a count above the limit is a denial.
pub(super) async fn redis_fixed_window(
    redis: &Redis,
    keys: &[String],
    clients: usize,
    slice: Slice,
) -> anyhow::Result<Load> {
    let _floating = crate::placement::Unpinned::new();
    let prefix = fresh_prefix();
    let callers = RawRedis::many(redis, incr_expire(&prefix, keys), 2, judge, clients)?;
    drive_after(callers, slice.warm_up, slice.measure, &redis.helpers()).await
}

/// Each key's `INCR` + `PEXPIRE NX` pipeline, encoded once before the run.
fn incr_expire(prefix: &str, keys: &[String]) -> Vec<Vec<u8>> {
    let window = POLICY.window_ms.to_string();
    keys.iter()
        .map(|key| {
            let key = format!("{prefix}{key}");
            let mut pipeline = resp_command(&[b"INCR", key.as_bytes()]);
            pipeline.extend(resp_command(&[
                b"PEXPIRE",
                key.as_bytes(),
                window.as_bytes(),
                b"NX",
            ]));
            pipeline
        })
        .collect()
}

/// The count `INCR` returned, against the policy's limit.
fn judge(count: i64) -> Answer {
    match u64::try_from(count).is_ok_and(|count| count <= POLICY.limit) {
        true => Answer::Done,
        false => Answer::Denied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::load::Caller;

    #[tokio::test]
    async fn one_decision_counts_and_sets_the_window_once() {
        let Some(server) = Redis::find(None).await.expect("starting redis-server") else {
            return;
        };
        let mut conn = server.connection().await.expect("connecting");
        let keys = ["k".to_owned()];
        let mut callers = RawRedis::many(
            &server,
            incr_expire("roost-bench-test:", &keys),
            2,
            judge,
            1,
        )
        .expect("a raw client");
        for _ in 0..3 {
            assert_eq!(callers[0].call(0).await, Ok(Answer::Done));
        }
        let (count, ttl): (u64, i64) = ::redis::pipe()
            .get("roost-bench-test:k")
            .cmd("PTTL")
            .arg("roost-bench-test:k")
            .query_async(&mut conn)
            .await
            .expect("reading back");
        assert_eq!(count, 3);
        assert!(ttl > 0 && ttl <= POLICY.window_ms as i64, "PTTL {ttl}");
    }
}
