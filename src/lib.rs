//! roost: a self-hosted answer to Durable Objects.
//!
//! Every actor ID is served by one single-threaded actor that owns one
//! libSQL database (SQL, KV and counters). The [`engine`] is independent of
//! any front: the HTTP server in [`http`] and the C ABI both drive it.

pub mod actor_id;
pub mod alloc;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod dev;
pub mod engine;
pub mod error;
pub mod ffi;
pub mod http;
pub mod limiter;
pub mod placement;
pub mod server;
pub mod store;
pub mod telemetry;

pub use actor_id::ActorId;
pub use config::{Durability, EngineConfig, Limits};
pub use engine::Engine;
pub use error::EngineError;
