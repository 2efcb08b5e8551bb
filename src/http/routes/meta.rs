//! `GET /metrics` (Prometheus text) and `GET /v1/openapi.json`.

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;

/// Prometheus text exposition of every roost metric.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"))
)]
pub async fn metrics() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        crate::telemetry::prometheus().render(),
    )
}

/// This API's OpenAPI 3.1 document. No auth.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "OpenAPI document", content_type = "application/json"))
)]
pub async fn openapi() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(crate::http::openapi())
}
