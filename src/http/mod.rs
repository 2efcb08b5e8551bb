//! The HTTP front: axum routes over the engine, problem+json errors,
//! bearer-token and JWT auth, metrics and access logs, request limits, and
//! the `roost-region` / `roost-machine` headers. [`app`] builds the router;
//! [`serve`] runs it on an already-bound listener, so tests bind port 0 and
//! `roost serve` binds its address. Routes are registered together with
//! their OpenAPI description, so the document cannot miss one.

mod auth;
pub(crate) mod extract;
mod idle;
pub mod listener;
mod observe;
pub mod problem;
pub(crate) mod routes;

use crate::engine::Engine;
use axum::middleware;
use axum::Router;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// This machine and its view of the cluster.
pub use crate::cluster::Node as NodeInfo;

/// Who may call the API.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Full-access bearer token (`ROOST_TOKEN`).
    pub token: Option<String>,
    /// HS256 secret for scoped JWTs (`ROOST_JWT_SECRET`).
    pub jwt_secret: Option<String>,
}

/// Limits the HTTP layer enforces on every request.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub request_timeout: Duration,
    pub max_concurrent_requests: usize,
    /// Emit one `roost::access` log event per request.
    pub access_log: bool,
    /// Longest a connection may go without a request in progress: a
    /// request's headers must complete within it, and a new or idle
    /// keep-alive connection is closed after it (see `idle`).
    pub header_timeout: Duration,
    /// Open connections at most; more are closed on arrival.
    pub max_connections: usize,
    /// Headers per request at most (beyond: 431).
    pub max_headers: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 4096,
            access_log: false,
            header_timeout: Duration::from_secs(10),
            max_connections: 16_384,
            max_headers: 100,
        }
    }
}

/// Shared by every handler.
pub struct AppState {
    pub engine: Arc<Engine>,
    pub node: NodeInfo,
    pub auth: AuthConfig,
    pub limits: HttpLimits,
    /// `--ratelimit-policy` values, by name.
    pub ratelimit_policies: crate::limiter::NamedPolicies,
    /// WebSockets and event streams.
    pub realtime: Realtime,
    /// Local-mode rate-limit usage waiting to be reported to global owners.
    pub local_usage: crate::cluster::usage_sync::LocalUsage,
    /// Actor hand-offs in progress (one per actor at a time).
    pub handoffs: crate::cluster::handoff::Handoffs,
    /// This machine's drain, once started.
    pub drain: crate::cluster::drain::Drain,
}

/// Limits on WebSockets.
#[derive(Debug, Clone, Copy)]
pub struct RealtimeLimits {
    pub max_sockets_per_actor: usize,
    /// Largest message a client may send (beyond: close 1009).
    pub max_message_bytes: usize,
}

impl Default for RealtimeLimits {
    fn default() -> Self {
        RealtimeLimits {
            max_sockets_per_actor: 1024,
            max_message_bytes: 64 << 10,
        }
    }
}

/// Long-lived connections (WebSockets, event streams): told to close on
/// shutdown and waited for, since they outlive their HTTP request.
#[derive(Debug, Clone, Default)]
pub struct Realtime {
    pub limits: RealtimeLimits,
    /// Browser origins allowed to open sockets and streams besides the
    /// machine's own (`localhost`, `127.0.0.1`, `[::1]`); `*` allows any.
    pub allowed_origins: Vec<String>,
    pub closing: tokio_util::sync::CancellationToken,
    pub tasks: tokio_util::task::TaskTracker,
}

impl AppState {
    /// State with no auth (loopback only) and default limits.
    pub fn new(engine: Arc<Engine>, node: NodeInfo) -> Self {
        AppState {
            engine,
            node,
            auth: AuthConfig::default(),
            limits: HttpLimits::default(),
            ratelimit_policies: Default::default(),
            realtime: Realtime::default(),
            local_usage: Default::default(),
            handoffs: Default::default(),
            drain: Default::default(),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "roost",
        description = "Durable-Object-style actors: one libSQL database per actor ID, with SQL, KV and counters."
    ),
    tags(
        (name = "actors", description = "Listing, describing, deleting, exporting and importing actors"),
        (name = "sql", description = "SQL on the actor's database"),
        (name = "kv", description = "Versioned key-value storage"),
        (name = "counters", description = "Atomic counters"),
        (name = "realtime", description = "WebSocket rooms and change-event streams"),
        (name = "ratelimit", description = "Global rate limiting on limiter actors (GCRA)"),
        (name = "cluster", description = "Moving actors between machines: hand-off and draining"),
        (name = "operations", description = "Health, readiness, metrics and this document")
    )
)]
struct ApiDoc;

/// Routes that need a token (when one is configured).
fn api_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(routes::actors::list))
        .routes(routes!(routes::actors::describe, routes::actors::destroy))
        .routes(routes!(routes::sql::run))
        .routes(routes!(routes::kv::list))
        .routes(routes!(
            routes::kv::get,
            routes::kv::put,
            routes::kv::delete
        ))
        .routes(routes!(routes::counters::get, routes::counters::add))
        .routes(routes!(routes::transfer::export))
        .routes(routes!(routes::transfer::import))
        .routes(routes!(routes::ratelimit::decide))
        .routes(routes!(routes::realtime::socket))
        .routes(routes!(routes::realtime::events))
        .routes(routes!(routes::meta::metrics))
        .routes(routes!(routes::cluster::give, routes::cluster::confirm))
        .routes(routes!(routes::cluster::claim))
        .routes(routes!(routes::cluster::leaving))
        .routes(routes!(
            routes::cluster::drain,
            routes::cluster::drain_progress
        ))
}

/// Routes anyone may call.
fn public_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(routes::health::live))
        .routes(routes!(routes::health::ready))
        .routes(routes!(routes::meta::openapi))
}

/// The OpenAPI 3.1 document of every route.
pub fn openapi() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let (_, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
            .merge(api_routes())
            .merge(public_routes())
            .split_for_parts();
        api
    })
}

/// The whole HTTP service: the routes, behind the [`observe::Edge`].
pub type App = observe::Edge<Router>;

/// The full service. Request bodies need no router-wide limit: every route
/// that reads one does so through `extract::RawBody`/`JsonBody` (at most
/// `max_body_bytes`) or streams it with its own cap (imports).
pub fn app(state: Arc<AppState>) -> App {
    crate::telemetry::prometheus();
    let (api, _) = api_routes().split_for_parts();
    let (public, _) = public_routes().split_for_parts();
    let api = api.route_layer(middleware::from_fn_with_state(state.clone(), auth::gate));
    let router = Router::new()
        .merge(public)
        .merge(api)
        .fallback(routes::health::no_route)
        .with_state(state.clone());
    observe::Edge::new(state, router)
}

/// Serves `app` on `listener` until `shutdown` resolves, then finishes
/// in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.limits.clone();
    let realtime = state.realtime.clone();
    let closing = realtime.closing.clone();
    let shutdown = async move {
        shutdown.await;
        // Sockets get a "going away" close frame, so clients reconnect
        // (to the new owner, if this machine is leaving).
        closing.cancel();
    };
    let sync = tokio::spawn(crate::cluster::usage_sync::run(
        state.clone(),
        realtime.closing.clone(),
    ));
    let served = listener::run(listener, app(state), &limits, shutdown).await;
    realtime.tasks.close();
    realtime.tasks.wait().await;
    let _ = sync.await;
    served
}
