//! Configuration in one place: the engine's settings (also read from JSON by
//! the C ABI), and the CLI flags with their `ROOST_*` environment twins.

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// When a write is acknowledged (see SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// After it is on stable storage (group-committed fsync).
    #[default]
    Durable,
    /// Once applied in memory; flushed on a schedule.
    Buffered,
    /// Never written to disk.
    Memory,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Durable => "durable",
            Durability::Buffered => "buffered",
            Durability::Memory => "memory",
        }
    }
}

impl FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "durable" => Ok(Durability::Durable),
            "buffered" => Ok(Durability::Buffered),
            "memory" => Ok(Durability::Memory),
            other => Err(format!(
                "unknown durability {other:?} (durable, buffered, memory)"
            )),
        }
    }
}

/// Size and time limits; exceeding one is an error, never a crash.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_actor_bytes: u64,
    pub max_result_bytes: usize,
    pub query_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1 << 20,
            max_key_bytes: 2 << 10,
            max_value_bytes: 1 << 20,
            max_actor_bytes: 1 << 30,
            max_result_bytes: 16 << 20,
            query_timeout_ms: 5000,
        }
    }
}

/// Everything the engine needs; HTTP and the C ABI both build one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    pub durability: Durability,
    pub flush_interval_ms: u64,
    pub flush_max_ops: usize,
    pub max_open_actors: usize,
    pub idle_timeout_ms: u64,
    /// Limiter actors that rate-limit keys are spread over; the same on
    /// every machine of a cluster (it decides which actor holds a key).
    pub ratelimit_shards: u32,
    #[serde(flatten)]
    pub limits: Limits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            data_dir: PathBuf::from("./roost-data"),
            durability: Durability::Durable,
            flush_interval_ms: 1000,
            flush_max_ops: 1000,
            max_open_actors: 1024,
            idle_timeout_ms: 60_000,
            ratelimit_shards: crate::limiter::DEFAULT_SHARDS,
            limits: Limits::default(),
        }
    }
}

impl EngineConfig {
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms.max(1))
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms.max(1))
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "roost",
    version,
    about = "Durable-Object-style actors on libSQL"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve(Box<ServeArgs>),
    /// Run a local multi-region cluster behind a Fly-like proxy.
    Dev(crate::dev::DevArgs),
    /// Measure roost against baselines run in the same process.
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ROOST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Directory holding the actors' databases.
    #[arg(long, env = "ROOST_DATA_DIR", default_value = "./roost-data")]
    pub data_dir: PathBuf,
    /// Default durability of new actors.
    #[arg(long, env = "ROOST_DURABILITY", value_enum, default_value_t = Durability::Durable)]
    pub durability: Durability,
    /// Buffered mode: longest a write waits before it is flushed.
    #[arg(long, env = "ROOST_FLUSH_INTERVAL_MS", default_value_t = 1000)]
    pub flush_interval_ms: u64,
    /// Buffered mode: writes that force a flush before the interval ends.
    #[arg(long, env = "ROOST_FLUSH_MAX_OPS", default_value_t = 1000)]
    pub flush_max_ops: usize,
    /// Most actors open at once (least recently used are closed first).
    #[arg(long, env = "ROOST_MAX_OPEN_ACTORS", default_value_t = 1024)]
    pub max_open_actors: usize,
    /// Close an actor after this long without requests.
    #[arg(long, env = "ROOST_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,
    /// Per-statement time limit for user SQL.
    #[arg(long, env = "ROOST_QUERY_TIMEOUT_MS", default_value_t = 5000)]
    pub query_timeout_ms: u64,
    /// Largest accepted request body.
    #[arg(long, env = "ROOST_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Largest actor database.
    #[arg(long, env = "ROOST_MAX_ACTOR_BYTES", default_value_t = 1 << 30)]
    pub max_actor_bytes: u64,
    /// This machine's region.
    #[arg(long, env = "FLY_REGION", default_value = "local")]
    pub region: String,
    /// This machine's id (default: generated once and kept in the data dir).
    #[arg(long, env = "FLY_MACHINE_ID")]
    pub machine_id: Option<String>,
    /// The other machines: `id=region=http://host:port,...` (this one may be listed too).
    #[arg(long, env = "ROOST_PEERS")]
    pub peers: Option<String>,
    /// Non-owned requests: `replay` (fly-replay, default on Fly) or `forward` (default elsewhere).
    #[arg(long, env = "ROOST_ROUTING", value_enum)]
    pub routing: Option<crate::cluster::Routing>,
    /// Forward routing: longest to wait for the owner's answer before replying 503.
    #[arg(long, env = "ROOST_FORWARD_TIMEOUT_MS", default_value_t = 10_000)]
    pub forward_timeout_ms: u64,
    /// On Fly: the app whose machines are discovered through internal DNS.
    #[arg(long, env = "FLY_APP_NAME")]
    pub fly_app: Option<String>,
    /// Home region of IDs without an `@region` suffix.
    #[arg(long, env = "ROOST_DEFAULT_REGION")]
    pub default_region: Option<String>,
    /// Full-access bearer token; without one, only loopback addresses are served.
    #[arg(long, env = "ROOST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// HS256 secret for scoped JWTs (`{"actors": ["room-*"], "perm": "r"|"rw", "exp"}`).
    #[arg(long, env = "ROOST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Longest one request may take before it is abandoned (408).
    #[arg(long, env = "ROOST_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Requests served at once; more wait their turn.
    #[arg(long, env = "ROOST_MAX_CONCURRENT_REQUESTS", default_value_t = 4096)]
    pub max_concurrent_requests: usize,
    /// Longest a client may take to send a request's headers, or anything on a new or idle connection.
    #[arg(long, env = "ROOST_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// Open client connections at most; more are closed on arrival.
    #[arg(long, env = "ROOST_MAX_CONNECTIONS", default_value_t = 16_384)]
    pub max_connections: usize,
    /// WebSockets one actor may have open at once.
    #[arg(long, env = "ROOST_WS_MAX_SOCKETS_PER_ACTOR", default_value_t = 1024)]
    pub ws_max_sockets_per_actor: usize,
    /// Largest WebSocket message a client may send (beyond: close 1009).
    #[arg(long, env = "ROOST_WS_MAX_MESSAGE_BYTES", default_value_t = 64 << 10)]
    pub ws_max_message_bytes: usize,
    /// Browser origins (besides localhost) allowed to open WebSockets and event streams; `null` for file:// pages, `*` for any.
    #[arg(long, env = "ROOST_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Log one `roost::access` event per request (request id, actor, status, latency).
    #[arg(long, env = "ROOST_ACCESS_LOG")]
    pub access_log: bool,
    /// Longest a graceful shutdown waits for in-flight requests.
    #[arg(long, env = "ROOST_SHUTDOWN_TIMEOUT_MS", default_value_t = 20_000)]
    pub shutdown_timeout_ms: u64,
    /// Pin each runtime worker to a CPU of its own (`false`: let the kernel place them).
    #[arg(long, env = "ROOST_PIN_WORKERS", default_value_t = true, action = clap::ArgAction::Set)]
    pub pin_workers: bool,
    /// A named rate-limit policy, `name=limit/window` (e.g. `api=100/60s`); repeatable.
    #[arg(
        long = "ratelimit-policy",
        env = "ROOST_RATELIMIT_POLICY",
        value_delimiter = ','
    )]
    pub ratelimit_policies: Vec<crate::limiter::policy::NamedPolicy>,
    /// Limiter actors that rate-limit keys are spread over (the same on every machine).
    #[arg(long, env = "ROOST_RATELIMIT_SHARDS", default_value_t = crate::limiter::DEFAULT_SHARDS,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub ratelimit_shards: u32,
    /// Log format.
    #[arg(long, env = "ROOST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl ServeArgs {
    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            data_dir: self.data_dir.clone(),
            durability: self.durability,
            flush_interval_ms: self.flush_interval_ms,
            flush_max_ops: self.flush_max_ops,
            max_open_actors: self.max_open_actors,
            idle_timeout_ms: self.idle_timeout_ms,
            ratelimit_shards: self.ratelimit_shards,
            limits: Limits {
                max_body_bytes: self.max_body_bytes,
                max_actor_bytes: self.max_actor_bytes,
                query_timeout_ms: self.query_timeout_ms,
                ..Limits::default()
            },
        }
    }
}
