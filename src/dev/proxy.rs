//! The Fly-like front proxy of `roost dev`. Like Fly's proxy it sends a
//! request to one machine (the `fly-prefer-region` header picks the entry
//! region, as on Fly; otherwise machines take turns), and when the answer
//! carries `fly-replay` (`instance=<id>`, `region=<r1,r2>` or
//! `elsewhere=true`, fields separated by `;`) it sends the same request to
//! that target with `fly-replay-src`, once. An optional delay is added to
//! every hop that leaves the entry region, to simulate distance.

use crate::cluster::Member;
use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Largest request body the proxy buffers (it must, to replay it).
const MAX_BODY: usize = 64 << 20;

pub struct Proxy {
    members: Vec<Member>,
    delay: Duration,
    next: AtomicUsize,
    client: reqwest::Client,
}

impl Proxy {
    pub fn new(members: Vec<Member>, delay: Duration) -> Self {
        Proxy {
            members,
            delay,
            next: AtomicUsize::new(0),
            client: reqwest::Client::new(),
        }
    }

    fn entry(&self, headers: &HeaderMap) -> Option<&Member> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let preferred = headers
            .get("fly-prefer-region")
            .and_then(|v| v.to_str().ok());
        let candidates: Vec<&Member> = match preferred {
            Some(region) => self.members.iter().filter(|m| m.region == region).collect(),
            None => self.members.iter().collect(),
        };
        let pool = if candidates.is_empty() {
            self.members.iter().collect()
        } else {
            candidates
        };
        pool.get(turn % pool.len().max(1)).copied()
    }

    /// Where a `fly-replay` value sends the request next.
    fn target(&self, replay: &str, current: &Member) -> Option<&Member> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        for field in replay.split(';') {
            let Some((key, value)) = field.trim().split_once('=') else {
                continue;
            };
            match key {
                "instance" => return self.members.iter().find(|m| m.machine_id == value),
                "region" => {
                    for region in value.split(',') {
                        let pool: Vec<&Member> = self
                            .members
                            .iter()
                            .filter(|m| m.region == region.trim())
                            .collect();
                        if !pool.is_empty() {
                            return Some(pool[turn % pool.len()]);
                        }
                    }
                    return None;
                }
                "elsewhere" if value == "true" => {
                    return self
                        .members
                        .iter()
                        .find(|m| m.machine_id != current.machine_id);
                }
                _ => {}
            }
        }
        None
    }
}

pub fn app(proxy: Arc<Proxy>) -> Router {
    Router::new().fallback(handle).with_state(proxy)
}

fn failure(status: StatusCode, detail: String) -> Response {
    let body = serde_json::json!({
        "type": "urn:roost:error:owner-unavailable",
        "title": "Proxy error",
        "status": status.as_u16(),
        "detail": detail,
    });
    (
        status,
        [("content-type", "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(err) => {
            return failure(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("proxy body limit: {err}"),
            )
        }
    };
    let Some(entry) = proxy.entry(&parts.headers) else {
        return failure(StatusCode::SERVICE_UNAVAILABLE, "no machines".into());
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut target = entry;
    let mut replay_source: Option<String> = None;
    for hop in 0..2 {
        if target.region != entry.region {
            tokio::time::sleep(proxy.delay).await;
        }
        let answer = match send(
            &proxy,
            target,
            &parts,
            &path,
            &body,
            replay_source.as_deref(),
        )
        .await
        {
            Ok(answer) => answer,
            Err(err) => {
                return failure(
                    StatusCode::BAD_GATEWAY,
                    format!("machine {} failed: {err}", target.machine_id),
                )
            }
        };
        let replay = answer
            .headers()
            .get("fly-replay")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match replay {
            Some(replay) if hop == 0 => {
                let Some(next) = proxy.target(&replay, target) else {
                    return failure(
                        StatusCode::BAD_GATEWAY,
                        format!("cannot replay to {replay:?}"),
                    );
                };
                let micros = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_micros())
                    .unwrap_or(0);
                replay_source = Some(format!(
                    "instance={};region={};t={micros}",
                    target.machine_id, target.region
                ));
                target = next;
            }
            _ => return relay(answer).await,
        }
    }
    failure(StatusCode::BAD_GATEWAY, "replay loop".into())
}

async fn send(
    proxy: &Proxy,
    target: &Member,
    parts: &axum::http::request::Parts,
    path: &str,
    body: &Bytes,
    replay_source: Option<&str>,
) -> Result<reqwest::Response, reqwest::Error> {
    let mut headers = parts.headers.clone();
    for hop in ["host", "connection", "content-length", "transfer-encoding"] {
        headers.remove(hop);
    }
    if let Some(source) = replay_source.and_then(|s| HeaderValue::from_str(s).ok()) {
        headers.insert("fly-replay-src", source);
    }
    proxy
        .client
        .request(parts.method.clone(), format!("{}{path}", target.address))
        .headers(headers)
        .body(body.clone())
        .send()
        .await
}

async fn relay(answer: reqwest::Response) -> Response {
    let status = answer.status();
    let mut headers = answer.headers().clone();
    for hop in ["connection", "transfer-encoding", "content-length"] {
        headers.remove(hop);
    }
    let mut response = Body::from_stream(answer.bytes_stream()).into_response();
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
