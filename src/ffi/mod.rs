//! The C ABI: the engine for any language with a C FFI (Bun's `bun:ffi`,
//! C, Python's ctypes...), declared in `include/roost.h`, which cbindgen
//! generates from the `///` docs here.
//!
//! Built after rustls-ffi: opaque handles (`roost_engine`), `roost_result`
//! codes with stable numbers, every pointer and length checked before use,
//! out-params written only on success, a `catch_unwind` around every
//! exported body so no panic reaches C, and every buffer roost returns owned
//! by the caller and released with `roost_bytes_free`. The calls only
//! translate: all behaviour lives in the engine, shared with the HTTP API.
//!
//! - `result`: result codes, the exhaustive engine-error mapping, messages.
//! - `handles`: the engine handle table (safe double close) and buffers.
//! - `calls`: blocking calls, one per engine operation.
//! - `completion`: the same operations with a completion callback, for
//!   event loops that must not wait for a durable commit.
//! - `ratelimit`: rate-limit decisions (they never wait for a commit).
//! - `requests`: JSON request and answer shapes (those of the HTTP API).

#![deny(unsafe_op_in_unsafe_fn)]
// The exported names follow C conventions (`roost_engine`, `ROOST_OK`).
#![allow(non_camel_case_types)]
// Every exported function checks its pointers itself; its doc comment (which
// becomes the C header's) states what the caller must guarantee.
#![allow(clippy::missing_safety_doc)]

// Declared in the order `roost.h` presents them.
#[macro_use]
mod boundary;
pub mod calls;
pub mod completion;
pub mod handles;
pub mod ratelimit;
pub mod requests;
pub mod result;

pub use completion::roost_callback;
pub use handles::{roost_bytes, roost_engine};
pub use ratelimit::roost_ratelimit_decision;
pub use requests::{ROOST_VERSION_ABSENT, ROOST_VERSION_ANY};
pub use result::roost_result;
