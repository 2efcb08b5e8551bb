//! What every request passes through first, in one service: the request
//! id (taken from `x-request-id` when the caller sent one, echoed back),
//! the concurrency cap and the request timeout, per-request metrics and
//! access logs, and the `roost-region` / `roost-machine` headers.
//!
//! One hand-written layer rather than a stack of middleware: each layer
//! costs every request a clone of the service below it and a boxed future,
//! and on a rate-limit decision those were most of the server's own time.

use super::extract::actor_in_path;
use super::problem::ApiError;
use super::AppState;
use crate::telemetry;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::Semaphore;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const REGION: HeaderName = HeaderName::from_static("roost-region");
const MACHINE: HeaderName = HeaderName::from_static("roost-machine");

/// The service in front of the router (see the module docs).
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    state: Arc<AppState>,
    /// Requests being handled at most (`max_concurrent_requests`); more wait.
    permits: Arc<Semaphore>,
    served_by: Arc<[(HeaderName, HeaderValue)]>,
}

impl<S> Edge<S> {
    pub fn new(state: Arc<AppState>, inner: S) -> Self {
        let permits = Arc::new(Semaphore::new(
            state
                .limits
                .max_concurrent_requests
                .clamp(1, Semaphore::MAX_PERMITS),
        ));
        let served_by = [
            (REGION, &state.node.region),
            (MACHINE, &state.node.machine_id),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, HeaderValue::from_str(value).ok()?)))
        .collect();
        Edge {
            inner,
            state,
            permits,
            served_by,
        }
    }
}

impl<S, B> tower::Service<axum::http::Request<B>> for Edge<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let mut request = request.map(axum::body::Body::new);
        // The clone stays; the service that was polled ready serves.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (state, permits, served_by) = (
            self.state.clone(),
            self.permits.clone(),
            self.served_by.clone(),
        );
        let request_id = request
            .headers()
            .get(REQUEST_ID)
            .filter(|v| v.len() <= 128 && v.to_str().is_ok())
            .cloned()
            .unwrap_or_else(fresh_request_id);
        request.headers_mut().insert(REQUEST_ID, request_id.clone());
        let method = method_label(request.method());
        let route = route_label(request.uri().path());
        let logged_path = state
            .limits
            .access_log
            .then(|| request.uri().path().to_owned());
        Box::pin(async move {
            let mut response = match permits.acquire().await {
                Ok(_permit) => {
                    match tokio::time::timeout(state.limits.request_timeout, inner.call(request))
                        .await
                    {
                        Ok(Ok(response)) => response,
                        Ok(Err(never)) => match never {},
                        Err(_) => ApiError::RequestTimeout(
                            "the request took too long and was abandoned".into(),
                        )
                        .into_response(),
                    }
                }
                // Never closed; answered all the same.
                Err(_) => ApiError::Engine(crate::error::EngineError::Closed).into_response(),
            };
            let headers = response.headers_mut();
            headers.reserve(3);
            headers.insert(REQUEST_ID, request_id.clone());
            // A forwarded answer keeps the owner's names.
            for (name, value) in served_by.iter() {
                headers.entry(name).or_insert_with(|| value.clone());
            }
            let status = response.status().as_u16();
            let elapsed = started.elapsed();
            let labels = [
                ("route", route),
                ("method", method),
                ("status", status_label(status)),
            ];
            telemetry::record_request(labels, elapsed.as_secs_f64());
            if let Some(path) = logged_path {
                let actor = actor_in_path(&path);
                tracing::info!(
                    target: "roost::access",
                    request_id = request_id.to_str().unwrap_or_default(),
                    method,
                    route,
                    actor = actor.as_deref().unwrap_or(""),
                    status,
                    latency_ms = elapsed.as_secs_f64() * 1000.0,
                    "request"
                );
            }
            Ok(response)
        })
    }
}

/// 16 random hex digits.
fn fresh_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bits = rand::random::<u64>();
    let mut digits = [0u8; 16];
    for digit in digits.iter_mut().rev() {
        *digit = HEX[(bits & 0xf) as usize];
        bits >>= 4;
    }
    HeaderValue::from_bytes(&digits).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    match *method {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        M::PATCH => "PATCH",
        _ => "other",
    }
}

fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        408 => "408",
        409 => "409",
        412 => "412",
        413 => "413",
        429 => "429",
        500 => "500",
        503 => "503",
        507 => "507",
        other => match other / 100 {
            1 => "1xx",
            2 => "2xx",
            3 => "3xx",
            4 => "4xx",
            _ => "5xx",
        },
    }
}

/// The route template of a path, so metric labels stay few.
fn route_label(path: &str) -> &'static str {
    let Some(rest) = path.strip_prefix("/v1/actors") else {
        return match path {
            "/healthz" => "/healthz",
            "/readyz" => "/readyz",
            "/metrics" => "/metrics",
            "/v1/openapi.json" => "/v1/openapi.json",
            _ if path.starts_with("/v1/ratelimit/") => "/v1/ratelimit/{key}",
            _ => "other",
        };
    };
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [""] => "/v1/actors",
        [_] => "/v1/actors/{id}",
        [_, "sql"] => "/v1/actors/{id}/sql",
        [_, "kv"] => "/v1/actors/{id}/kv",
        [_, "kv", _] => "/v1/actors/{id}/kv/{key}",
        [_, "counters", _] => "/v1/actors/{id}/counters/{name}",
        [_, "export"] => "/v1/actors/{id}/export",
        [_, "import"] => "/v1/actors/{id}/import",
        [_, "ws"] => "/v1/actors/{id}/ws",
        [_, "events"] => "/v1/actors/{id}/events",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn labels_are_route_templates() {
        assert_eq!(
            super::route_label("/v1/actors/a%2Fb/kv/x"),
            "/v1/actors/{id}/kv/{key}"
        );
        assert_eq!(super::route_label("/v1/actors"), "/v1/actors");
        assert_eq!(super::route_label("/v1/actors/x"), "/v1/actors/{id}");
        assert_eq!(super::route_label("/nope"), "other");
    }
}
