//! The HTTP front: axum routes over the engine, problem+json errors,
//! bearer-token auth, and the `roost-region` / `roost-machine` headers.
//! [`app`] builds the router; [`serve`] runs it on an already-bound
//! listener, so tests bind port 0 and `roost serve` binds its address.

mod auth;
mod extract;
pub mod problem;
mod routes;

use crate::actor_id::ActorId;
use crate::engine::Engine;
use crate::error::EngineError;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderValue;
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

/// Who this machine is and which regions exist.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub machine_id: String,
    pub region: String,
    pub default_region: String,
    pub regions: BTreeSet<String>,
}

impl NodeInfo {
    /// A single machine serving every region it knows: its own and the default.
    pub fn single(machine_id: String, region: String, default_region: Option<String>) -> Self {
        let default_region = default_region.unwrap_or_else(|| region.clone());
        let regions = [region.clone(), default_region.clone()]
            .into_iter()
            .collect();
        NodeInfo {
            machine_id,
            region,
            default_region,
            regions,
        }
    }

    /// The actor's home region: its `@region` suffix, else the default.
    pub fn home_region(&self, id: &ActorId) -> Result<String, EngineError> {
        match id.region_suffix() {
            Some(region) if self.regions.contains(region) => Ok(region.to_owned()),
            Some(region) => Err(EngineError::UnknownRegion(region.to_owned())),
            None => Ok(self.default_region.clone()),
        }
    }
}

/// Shared by every handler.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub node: NodeInfo,
    pub token: Option<String>,
}

/// The full router.
pub fn app(state: Arc<AppState>) -> Router {
    let body_limit = state.engine.config().limits.max_body_bytes;
    let api = Router::new()
        .route("/v1/actors", get(routes::actors::list))
        .route(
            "/v1/actors/{id}",
            get(routes::actors::describe).delete(routes::actors::destroy),
        )
        .route("/v1/actors/{id}/sql", post(routes::sql::run))
        .route("/v1/actors/{id}/kv", get(routes::kv::list))
        .route(
            "/v1/actors/{id}/kv/{key}",
            get(routes::kv::get)
                .put(routes::kv::put)
                .delete(routes::kv::delete),
        )
        .route(
            "/v1/actors/{id}/counters/{name}",
            get(routes::counters::get).post(routes::counters::add),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(routes::health::live))
        .route("/readyz", get(routes::health::ready))
        .merge(api)
        .fallback(routes::health::no_route)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::map_response_with_state(
            state.clone(),
            served_by,
        ))
        .with_state(state)
}

/// Names the machine that answered, on every response.
async fn served_by(State(state): State<Arc<AppState>>, mut response: Response) -> Response {
    let headers = response.headers_mut();
    if let Ok(region) = HeaderValue::from_str(&state.node.region) {
        headers.insert("roost-region", region);
    }
    if let Ok(machine) = HeaderValue::from_str(&state.node.machine_id) {
        headers.insert("roost-machine", machine);
    }
    response
}

/// Serves `app` on `listener` until `shutdown` resolves, then finishes
/// in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}
