//! Per-request metrics and access logs, with a request id that is taken
//! from `x-request-id` when the caller sent one and echoed back.

use super::extract::actor_in_path;
use super::AppState;
use crate::telemetry;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use std::time::Instant;

const REQUEST_ID: &str = "x-request-id";

pub async fn observe(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .filter(|v| v.len() <= 128)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        request.headers_mut().insert(REQUEST_ID, value);
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = route_label(&path);
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    // Static label values: no allocation per request on the hot path.
    let labels = [
        ("route", route),
        ("method", method_label(&method)),
        ("status", status_label(status)),
    ];
    metrics::counter!(telemetry::HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(telemetry::HTTP_DURATION, &labels).record(elapsed.as_secs_f64());
    if state.limits.access_log {
        let actor = actor_in_path(&path);
        tracing::info!(
            target: "roost::access",
            request_id,
            method = %method,
            route,
            actor = actor.as_deref().unwrap_or(""),
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    }
    response
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
