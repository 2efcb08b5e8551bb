//! The engine handle and owned byte buffers.
//!
//! A `roost_engine *` is an opaque token, never a pointer to memory: the
//! engine lives in a table of open handles, and every call looks its token
//! up. Tokens are never reused, so a closed (or never-opened) handle is
//! detected and answered with `ROOST_CLOSED` instead of touching freed
//! memory; this is what makes double close and use-after-close safe. A
//! call in progress keeps its engine alive even if another thread closes
//! the handle meanwhile.

use super::boundary::{c_str_arg, in_callback, may_block, Out};
use super::result::{roost_result, Failure};
use crate::config::EngineConfig;
use crate::engine::Engine;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::ffi::c_char;
use std::sync::Arc;
use std::time::Duration;

/// An open engine: one data directory of actors. Create it with
/// `roost_engine_open`, release it with `roost_engine_close`. A handle may
/// be used from several threads at once.
#[allow(non_camel_case_types)]
pub struct roost_engine {
    _private: [u8; 0],
}

/// A byte buffer allocated by roost and owned by the caller once a call
/// has returned it: release it exactly once with `roost_bytes_free` (or
/// `roost_bytes_release`). `ptr` is NULL when `len` is 0. Do not change
/// `ptr` or `len` before freeing.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct roost_bytes {
    pub ptr: *mut u8,
    pub len: usize,
}

impl roost_bytes {
    /// Hands `data` to the caller.
    pub fn from_vec(data: Vec<u8>) -> roost_bytes {
        if data.is_empty() {
            return roost_bytes {
                ptr: std::ptr::null_mut(),
                len: 0,
            };
        }
        let boxed = data.into_boxed_slice();
        let len = boxed.len();
        roost_bytes {
            ptr: Box::into_raw(boxed).cast::<u8>(),
            len,
        }
    }
}

/// Longest `roost_engine_close` waits for actors to finish and flush.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(60);

struct HandleTable {
    next: usize,
    open: BTreeMap<usize, Arc<Engine>>,
}

static HANDLES: RwLock<HandleTable> = parking_lot::const_rwlock(HandleTable {
    next: 1,
    open: BTreeMap::new(),
});

/// The engine behind a handle, kept alive for the duration of one call.
pub fn engine_of(handle: *const roost_engine) -> Result<Arc<Engine>, Failure> {
    if handle.is_null() {
        return Err(Failure::new(
            roost_result::ROOST_NULL_POINTER,
            "engine is NULL",
        ));
    }
    HANDLES
        .read()
        .open
        .get(&(handle as usize))
        .cloned()
        .ok_or_else(|| {
            Failure::new(
                roost_result::ROOST_CLOSED,
                "the engine handle is closed or was never opened",
            )
        })
}

/// The engine behind a handle, for a call that waits for an actor.
pub fn engine_for_blocking_call(handle: *const roost_engine) -> Result<Arc<Engine>, Failure> {
    let engine = engine_of(handle)?;
    may_block()?;
    Ok(engine)
}

fn parse_config(json: &str) -> Result<EngineConfig, Failure> {
    serde_json::from_str(json).map_err(|e| {
        Failure::new(
            roost_result::ROOST_INVALID_CONFIG,
            format!("config JSON: {e}"),
        )
    })
}

/// The roost version (the crate's version, e.g. `"0.1.0"`), as a static
/// NUL-terminated string that must not be freed.
#[no_mangle]
pub extern "C" fn roost_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Opens an engine over a data directory (created if missing) and writes
/// its handle to `*out_engine`.
///
/// `config_json` is a NUL-terminated JSON object; every key is optional:
/// `data_dir` (default `"./roost-data"`), `durability` (`"durable"`,
/// `"buffered"` or `"memory"`; the default for new actors), `flush_interval_ms`,
/// `flush_max_ops`, `max_open_actors`, `idle_timeout_ms`, `ratelimit_shards`
/// (limiter actors the `roost_ratelimit` keys are spread over), and the limits
/// `max_body_bytes`, `max_key_bytes`, `max_value_bytes`, `max_actor_bytes`,
/// `max_result_bytes`, `query_timeout_ms`. `"{}"` opens `./roost-data`
/// with the defaults. An unknown key or a bad value is `ROOST_INVALID_CONFIG`.
///
/// On success `*out_engine` holds a handle that the caller owns and must
/// release with `roost_engine_close`; on failure it is left unchanged.
/// Close every engine before the process exits: an engine left open is not
/// flushed, so `buffered` writes since its last flush would be lost.
///
/// Two engines must not share a data directory at once. Reopening one just
/// closed is fine: this call waits (up to 2 s) for the old engine's files.
#[no_mangle]
pub unsafe extern "C" fn roost_engine_open(
    config_json: *const c_char,
    out_engine: *mut *mut roost_engine,
) -> roost_result {
    ffi_result! {
        let out = Out::required(out_engine, "out_engine")?;
        // SAFETY: NUL-terminated by this function's contract.
        let config = parse_config(unsafe { c_str_arg(config_json, "config_json") }?)?;
        let engine = Arc::new(Engine::open(config)?);
        let token = {
            let mut table = HANDLES.write();
            let token = table.next;
            table.next += 1;
            table.open.insert(token, engine);
            token
        };
        // SAFETY: checked non-NULL; validity is this function's contract.
        unsafe { out.set(std::ptr::without_provenance_mut(token)) };
        Ok(())
    }
}

/// Closes an engine: stops taking new operations, lets every actor finish
/// the operations already queued (their completion callbacks run), flushes
/// buffered writes, closes all databases and releases the handle. Waits
/// for that (at most 60 s).
///
/// Afterwards the handle is invalid: every call with it returns
/// `ROOST_CLOSED`, and closing it again does nothing. `NULL` does nothing.
/// Calls already running on other threads finish normally or with
/// `ROOST_CLOSED`. From inside a completion callback the close returns at
/// once and the flush finishes on a background thread.
#[no_mangle]
pub extern "C" fn roost_engine_close(engine: *mut roost_engine) {
    ffi_panic_boundary! {
        if engine.is_null() {
            return;
        }
        let Some(engine) = HANDLES.write().open.remove(&(engine as usize)) else {
            return;
        };
        if in_callback() {
            // This thread is an actor's; shutting down waits for every actor.
            let spawned = std::thread::Builder::new()
                .name("roost-close".into())
                .spawn(move || {
                    engine.shutdown(CLOSE_TIMEOUT);
                });
            if let Err(err) = spawned {
                tracing::error!(error = %err, "cannot start a thread to close the engine");
            }
            return;
        }
        engine.shutdown(CLOSE_TIMEOUT);
    }
}

/// Frees a buffer returned by roost. `{NULL, 0}` (an empty result or a
/// zeroed struct) is accepted and does nothing. Each buffer must be freed
/// exactly once, with the `ptr` and `len` roost returned.
#[no_mangle]
pub unsafe extern "C" fn roost_bytes_free(bytes: roost_bytes) {
    ffi_panic_boundary! {
        if bytes.ptr.is_null() {
            return;
        }
        // SAFETY: by contract, `ptr`/`len` came from `roost_bytes::from_vec`.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(bytes.ptr, bytes.len)) });
    }
}

/// Frees the buffer `*bytes` owns and resets `*bytes` to `{NULL, 0}`, so a
/// second release of the same struct does nothing. For languages whose FFI
/// cannot pass a struct by value. `bytes` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn roost_bytes_release(bytes: *mut roost_bytes) {
    ffi_panic_boundary! {
        if bytes.is_null() {
            return;
        }
        // SAFETY: non-NULL and valid by contract; the struct is reset before freeing.
        let owned = unsafe {
            let owned = bytes.read_unaligned();
            bytes.write_unaligned(roost_bytes {
                ptr: std::ptr::null_mut(),
                len: 0,
            });
            owned
        };
        // SAFETY: forwarded from this function's contract.
        unsafe { roost_bytes_free(owned) };
    }
}
