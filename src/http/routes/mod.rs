//! Handlers, one file per resource. Each only translates HTTP to the
//! engine's typed API and back.

pub mod actors;
pub mod counters;
pub mod health;
pub mod kv;
pub mod sql;
