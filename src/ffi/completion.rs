//! The non-blocking calls, for event loops (Bun, libuv, epoll servers):
//! each `_async` function queues an operation on the actor's thread and
//! returns at once; a `roost_callback` reports the result later, after a
//! durable write is on disk, without the caller's thread ever waiting.
//!
//! Contract: when an `_async` function returns `ROOST_OK`, its callback is
//! called exactly once (even if the engine is closed meanwhile: closing
//! lets queued operations finish); when it returns anything else, the
//! callback is never called. The callback runs on an engine thread (the
//! actor's, or the journal's for a durable counter op; or, for an operation
//! the engine refuses at once, on the calling thread before the function
//! returns), so it must be quick and thread-safe: it
//! should hand the result to its own thread (Bun: a threadsafe
//! `JSCallback`). It must not make blocking roost calls (they return
//! `ROOST_WOULD_DEADLOCK`); `_async` calls are fine.

use super::boundary::{actor_arg, as_callback, bytes_arg, text_arg};
use super::handles::{engine_of, roost_bytes, roost_engine};
use super::requests;
use super::result::{roost_result, set_last_error, Failure};
use crate::config::Limits;
use crate::engine::ops::{Op, OpOutput};
use crate::error::EngineError;
use crate::store::kv::Precondition;
use std::ffi::c_void;

/// Reports the result of an `_async` call, once. `user_data` is the
/// pointer given to the call, passed through untouched.
///
/// On success `result` is `ROOST_OK` and, depending on the call, `value` is
/// the counter value, the key's version, or 1/0 for existed/did not exist,
/// and `data`/`data_len` hold the value read or the JSON answer. On
/// failure `result` is the error code, `value` is 0 and `data` holds the
/// error detail as UTF-8 text (not NUL-terminated).
///
/// `data` is owned by the callee, whether the call failed or not: free it
/// with `roost_bytes_free((roost_bytes){data, data_len})` (or
/// `roost_bytes_release`), from any thread, now or later. It is NULL when
/// `data_len` is 0.
///
/// When an `_async` function returns `ROOST_OK`, its callback is called
/// exactly once, even if the engine is closed meanwhile (closing lets
/// queued operations finish); when it returns an error, never. The
/// callback runs on an engine thread (the actor's, or the journal's for a
/// durable counter op; a slow callback there delays every durable
/// increment) or on the calling thread, before the function returns, for
/// an operation the engine refuses at once. So it must be quick and
/// thread-safe, typically handing the result to its
/// own thread. Inside it, blocking roost calls return
/// `ROOST_WOULD_DEADLOCK`; `_async` calls are allowed. It must not unwind
/// (throw) into roost.
#[allow(non_camel_case_types)]
pub type roost_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        result: roost_result,
        value: i64,
        data: *mut u8,
        data_len: usize,
    ),
>;

type CallbackFn = unsafe extern "C" fn(*mut c_void, roost_result, i64, *mut u8, usize);

/// The promise to call the callback exactly once: if the engine drops the
/// reply without answering (an actor thread died), `Drop` answers instead.
struct Completion {
    callback: CallbackFn,
    user_data: *mut c_void,
    answered: bool,
}

// SAFETY: roost never dereferences `user_data`; the caller promises (see the
// module docs) that its callback may be called with it from another thread.
unsafe impl Send for Completion {}

impl Completion {
    fn answer(mut self, outcome: Result<OpOutput, EngineError>) {
        let parts =
            std::panic::catch_unwind(|| outcome.map_err(Failure::from).and_then(callback_parts))
                .unwrap_or_else(|_| {
                    Err(Failure::new(
                        roost_result::ROOST_PANIC,
                        "roost panicked while preparing an answer",
                    ))
                });
        self.deliver(parts);
    }

    fn deliver(&mut self, parts: Result<(i64, Vec<u8>), Failure>) {
        self.answered = true;
        let (result, value, data) = match parts {
            Ok((value, data)) => (roost_result::ROOST_OK, value, data),
            Err(failure) => {
                set_last_error(format!("{}: {}", failure.code.name(), failure.detail));
                (failure.code, 0, failure.detail.into_bytes())
            }
        };
        let data = roost_bytes::from_vec(data);
        // SAFETY: the callback and its user_data come from the caller, who
        // promised the callback is sound to call once with these arguments.
        as_callback(|| unsafe {
            (self.callback)(self.user_data, result, value, data.ptr, data.len)
        });
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.answered {
            self.deliver(Err(Failure::new(
                roost_result::ROOST_INTERNAL,
                "the actor stopped before answering",
            )));
        }
    }
}

/// The `value` and `data` an engine output is reported with.
fn callback_parts(output: OpOutput) -> Result<(i64, Vec<u8>), Failure> {
    match output {
        OpOutput::Counter(value) | OpOutput::Version(value) => Ok((value, Vec::new())),
        OpOutput::Existed(existed) => Ok((i64::from(existed), Vec::new())),
        OpOutput::Entry(Some(entry)) => Ok((entry.version, entry.value)),
        OpOutput::Entry(None) => Err(Failure::new(
            roost_result::ROOST_NOT_FOUND,
            "the key does not exist",
        )),
        OpOutput::Sql(response) => Ok((0, requests::to_json(&response)?)),
        OpOutput::Page(page) => Ok((0, requests::to_json(&page)?)),
        other => Err(Failure::new(
            roost_result::ROOST_INTERNAL,
            format!("unexpected engine output {other:?}"),
        )),
    }
}

/// Checks the arguments, builds the op and queues it; the callback gets
/// the answer. Any failure here is returned and the callback is not called.
unsafe fn submit(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    callback: roost_callback,
    user_data: *mut c_void,
    build: impl FnOnce(&Limits) -> Result<Op, Failure>,
) -> Result<(), Failure> {
    let engine = engine_of(engine)?;
    // SAFETY: the pointer is valid for its length by contract.
    let id = unsafe { actor_arg(actor, actor_len) }?;
    let callback = callback
        .ok_or_else(|| Failure::new(roost_result::ROOST_NULL_POINTER, "callback is NULL"))?;
    let limits = &engine.config().limits;
    let op = build(limits)?;
    op.validate(limits)?;
    let completion = Completion {
        callback,
        user_data,
        answered: false,
    };
    engine.submit(
        &id,
        op,
        None,
        Box::new(move |outcome| completion.answer(outcome)),
    );
    Ok(())
}

/// `roost_counter_add` without waiting: the callback gets the new value in `value`.
#[no_mangle]
pub unsafe extern "C" fn roost_counter_add_async(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    name: *const u8,
    name_len: usize,
    delta: i64,
    callback: roost_callback,
    user_data: *mut c_void,
) -> roost_result {
    ffi_result! {
        // SAFETY: pointers are valid for their lengths by contract.
        let name = unsafe { text_arg(name, name_len, "name") }?;
        unsafe {
            submit(engine, actor, actor_len, callback, user_data, |_| {
                Ok(Op::CounterAdd { name: name.to_owned(), by: delta })
            })
        }
    }
}

/// `roost_counter_get` without waiting: the callback gets the value in `value`.
#[no_mangle]
pub unsafe extern "C" fn roost_counter_get_async(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    name: *const u8,
    name_len: usize,
    callback: roost_callback,
    user_data: *mut c_void,
) -> roost_result {
    ffi_result! {
        // SAFETY: pointers are valid for their lengths by contract.
        let name = unsafe { text_arg(name, name_len, "name") }?;
        unsafe {
            submit(engine, actor, actor_len, callback, user_data, |_| {
                Ok(Op::CounterGet { name: name.to_owned() })
            })
        }
    }
}

/// `roost_kv_get_versioned` without waiting: the callback gets the value in
/// `data` and its version in `value`, or `ROOST_NOT_FOUND`.
#[no_mangle]
pub unsafe extern "C" fn roost_kv_get_async(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    key: *const u8,
    key_len: usize,
    callback: roost_callback,
    user_data: *mut c_void,
) -> roost_result {
    ffi_result! {
        // SAFETY: pointers are valid for their lengths by contract.
        let key = unsafe { text_arg(key, key_len, "key") }?;
        unsafe {
            submit(engine, actor, actor_len, callback, user_data, |_| {
                Ok(Op::KvGet { key: key.to_owned() })
            })
        }
    }
}

/// `roost_kv_put` without waiting: the callback gets the new version in
/// `value`. The value is copied before this function returns.
#[no_mangle]
pub unsafe extern "C" fn roost_kv_put_async(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    callback: roost_callback,
    user_data: *mut c_void,
) -> roost_result {
    ffi_result! {
        // SAFETY: pointers are valid for their lengths by contract.
        let key = unsafe { text_arg(key, key_len, "key") }?;
        let value = unsafe { bytes_arg(value, value_len, "value") }?;
        unsafe {
            submit(engine, actor, actor_len, callback, user_data, |_| {
                Ok(Op::KvPut {
                    key: key.to_owned(),
                    value: value.to_vec(),
                    precondition: Precondition::None,
                })
            })
        }
    }
}

/// `roost_kv_delete` without waiting: the callback gets 1 in `value` if the
/// key existed, else 0.
#[no_mangle]
pub unsafe extern "C" fn roost_kv_delete_async(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    key: *const u8,
    key_len: usize,
    callback: roost_callback,
    user_data: *mut c_void,
) -> roost_result {
    ffi_result! {
        // SAFETY: pointers are valid for their lengths by contract.
        let key = unsafe { text_arg(key, key_len, "key") }?;
        unsafe {
            submit(engine, actor, actor_len, callback, user_data, |_| {
                Ok(Op::KvDelete { key: key.to_owned(), precondition: Precondition::None })
            })
        }
    }
}

/// `roost_kv_list` without waiting: the callback gets the JSON page in `data`.
#[no_mangle]
pub unsafe extern "C" fn roost_kv_list_async(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    query_json: *const u8,
    query_len: usize,
    callback: roost_callback,
    user_data: *mut c_void,
) -> roost_result {
    ffi_result! {
        // SAFETY: pointers are valid for their lengths by contract.
        let raw = unsafe { bytes_arg(query_json, query_len, "query_json") }?;
        unsafe {
            submit(engine, actor, actor_len, callback, user_data, |limits| {
                Ok(Op::KvList(requests::list_query(raw, limits)?))
            })
        }
    }
}

/// `roost_sql` without waiting: the callback gets the JSON answer in `data`.
#[no_mangle]
pub unsafe extern "C" fn roost_sql_async(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    request_json: *const u8,
    len: usize,
    callback: roost_callback,
    user_data: *mut c_void,
) -> roost_result {
    ffi_result! {
        // SAFETY: pointers are valid for their lengths by contract.
        let raw = unsafe { bytes_arg(request_json, len, "request_json") }?;
        unsafe {
            submit(engine, actor, actor_len, callback, user_data, |limits| {
                Ok(Op::Sql(requests::sql_request(raw, limits)?))
            })
        }
    }
}

/// `roost_actor_delete` without waiting: the callback gets 1 in `value` if
/// the actor existed, else 0.
#[no_mangle]
pub unsafe extern "C" fn roost_actor_delete_async(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    callback: roost_callback,
    user_data: *mut c_void,
) -> roost_result {
    ffi_result! {
        // SAFETY: pointers are valid for their lengths by contract.
        unsafe { submit(engine, actor, actor_len, callback, user_data, |_| Ok(Op::Destroy)) }
    }
}
