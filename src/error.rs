//! The engine's error type. Every front (HTTP, C ABI) maps each variant to
//! its own code exhaustively, so a new variant fails to compile until it has
//! an HTTP status and a C result code.

use crate::actor_id::ActorIdError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("invalid actor id: {0}")]
    InvalidActorId(#[from] ActorIdError),
    #[error("region `{0}` is not configured")]
    UnknownRegion(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("SQL error: {0}")]
    Sql(String),
    #[error("SQL denied: {0}")]
    SqlDenied(String),
    #[error("query exceeded the {0} ms time limit and was interrupted")]
    QueryTimeout(u64),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("version mismatch: {0}")]
    VersionMismatch(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("insufficient storage: {0}")]
    InsufficientStorage(String),
    #[error("I/O error: {0}")]
    Io(String),
    #[error("the engine is shut down")]
    Closed,
    /// The actor was handed off to another machine (cluster moves).
    #[error("actor {id} has moved to machine {to}")]
    Moved { id: String, to: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<std::io::Error> for EngineError {
    fn from(err: std::io::Error) -> Self {
        // ENOSPC and EDQUOT mean the disk is full, not that it is broken.
        match err.raw_os_error() {
            Some(28) | Some(122) => EngineError::InsufficientStorage(err.to_string()),
            _ => EngineError::Io(err.to_string()),
        }
    }
}
