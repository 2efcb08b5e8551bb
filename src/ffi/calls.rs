//! The blocking calls: each runs one engine operation and returns when the
//! actor has answered (for a `durable` actor, after the write is on disk).
//! They may be made from any thread except inside a completion callback.
//!
//! Common rules, stated once here and in `roost.h`: `actor`/`actor_len`
//! is the actor ID (1–512 bytes of UTF-8, no control characters); every
//! `(pointer, length)` pair may be NULL only with a length of 0; text
//! arguments must be UTF-8; out-params are written only when the call
//! returns `ROOST_OK`; on failure `roost_last_error` has the detail.

use super::boundary::{actor_arg, bytes_arg, text_arg, wait, Out};
use super::handles::{engine_for_blocking_call, engine_of, roost_bytes, roost_engine};
use super::requests;
use super::result::{roost_result, Failure};
use crate::store::kv::Precondition;

/// Adds `delta` to counter `name` of the actor (creating both if needed)
/// and writes the new value to `*out_value`. Overflowing a signed 64-bit
/// value is `ROOST_INVALID_REQUEST` and changes nothing.
#[no_mangle]
pub unsafe extern "C" fn roost_counter_add(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    name: *const u8,
    name_len: usize,
    delta: i64,
    out_value: *mut i64,
) -> roost_result {
    ffi_result! {
        let engine = engine_for_blocking_call(engine)?;
        // SAFETY (all argument reads): pointers are valid for their lengths by contract.
        let id = unsafe { actor_arg(actor, actor_len) }?;
        let name = unsafe { text_arg(name, name_len, "name") }?;
        let out = Out::required(out_value, "out_value")?;
        let value = wait(engine.counter_add(&id, name.to_owned(), delta, None))?;
        unsafe { out.set(value) };
        Ok(())
    }
}

/// Writes the value of counter `name` to `*out_value`: 0 if it was never set
/// (or the actor does not exist).
#[no_mangle]
pub unsafe extern "C" fn roost_counter_get(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    name: *const u8,
    name_len: usize,
    out_value: *mut i64,
) -> roost_result {
    ffi_result! {
        let engine = engine_for_blocking_call(engine)?;
        // SAFETY (all argument reads): pointers are valid for their lengths by contract.
        let id = unsafe { actor_arg(actor, actor_len) }?;
        let name = unsafe { text_arg(name, name_len, "name") }?;
        let out = Out::required(out_value, "out_value")?;
        let value = wait(engine.counter_get(&id, name.to_owned()))?;
        unsafe { out.set(value) };
        Ok(())
    }
}

/// Reads the value stored under `key` into `*out_value`, a buffer the
/// caller then owns and frees with `roost_bytes_free`. `ROOST_NOT_FOUND`
/// if the key (or the actor) does not exist. Keys are UTF-8.
#[no_mangle]
pub unsafe extern "C" fn roost_kv_get(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    key: *const u8,
    key_len: usize,
    out_value: *mut roost_bytes,
) -> roost_result {
    // SAFETY: forwarded from this function's contract; NULL version is allowed.
    unsafe {
        roost_kv_get_versioned(
            engine,
            actor,
            actor_len,
            key,
            key_len,
            out_value,
            std::ptr::null_mut(),
        )
    }
}

/// Like `roost_kv_get`, and also writes the key's version (for
/// `roost_kv_put_if` / `roost_kv_delete_if`) to `*out_version`, which may be
/// NULL. Versions are positive and increase with every write of the actor.
#[no_mangle]
pub unsafe extern "C" fn roost_kv_get_versioned(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    key: *const u8,
    key_len: usize,
    out_value: *mut roost_bytes,
    out_version: *mut i64,
) -> roost_result {
    ffi_result! {
        let engine = engine_for_blocking_call(engine)?;
        // SAFETY (all argument reads): pointers are valid for their lengths by contract.
        let id = unsafe { actor_arg(actor, actor_len) }?;
        let key = unsafe { text_arg(key, key_len, "key") }?;
        let out = Out::required(out_value, "out_value")?;
        let out_version = Out::optional(out_version);
        let entry = wait(engine.kv_get(&id, key.to_owned()))?.ok_or_else(|| {
            Failure::new(roost_result::ROOST_NOT_FOUND, format!("key {key:?} does not exist"))
        })?;
        unsafe { out_version.set(entry.version) };
        unsafe { out.set(roost_bytes::from_vec(entry.value)) };
        Ok(())
    }
}

/// Stores `value` (any bytes, may be empty) under `key`, creating the
/// actor if needed. roost copies the value; the caller keeps its buffer.
#[no_mangle]
pub unsafe extern "C" fn roost_kv_put(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
) -> roost_result {
    ffi_result! {
        // SAFETY: forwarded from this function's contract.
        unsafe { put(engine, actor, actor_len, key, key_len, value, value_len, Precondition::None, Out::optional(std::ptr::null_mut())) }
    }
}

/// Compare-and-set: stores `value` under `key` only if the key is now at
/// `expected_version` (or, with `ROOST_VERSION_ABSENT` (0), does not
/// exist); otherwise `ROOST_VERSION_MISMATCH` and nothing changes.
/// `ROOST_VERSION_ANY` (-1) stores unconditionally. Writes the new version
/// to `*out_version`, which may be NULL.
#[no_mangle]
pub unsafe extern "C" fn roost_kv_put_if(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    expected_version: i64,
    out_version: *mut i64,
) -> roost_result {
    ffi_result! {
        let condition = requests::precondition(expected_version)?;
        // SAFETY: forwarded from this function's contract.
        unsafe { put(engine, actor, actor_len, key, key_len, value, value_len, condition, Out::optional(out_version)) }
    }
}

#[allow(clippy::too_many_arguments)]
unsafe fn put(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    condition: Precondition,
    out_version: Out<i64>,
) -> Result<(), Failure> {
    let engine = engine_for_blocking_call(engine)?;
    // SAFETY (all argument reads): pointers are valid for their lengths by contract.
    let id = unsafe { actor_arg(actor, actor_len) }?;
    let key = unsafe { text_arg(key, key_len, "key") }?;
    let value = unsafe { bytes_arg(value, value_len, "value") }?;
    let version = wait(engine.kv_put(&id, key.to_owned(), value.to_vec(), condition, None))?;
    unsafe { out_version.set(version) };
    Ok(())
}

/// Deletes `key`. `ROOST_OK` whether or not it existed.
#[no_mangle]
pub unsafe extern "C" fn roost_kv_delete(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    key: *const u8,
    key_len: usize,
) -> roost_result {
    ffi_result! {
        // SAFETY: forwarded from this function's contract.
        unsafe { delete(engine, actor, actor_len, key, key_len, Precondition::None, Out::optional(std::ptr::null_mut())) }
    }
}

/// Deletes `key` only if it is now at `expected_version` (0,
/// `ROOST_VERSION_ABSENT`: only if it does not exist, which deletes
/// nothing); otherwise `ROOST_VERSION_MISMATCH`. `ROOST_VERSION_ANY` (-1)
/// deletes unconditionally. Writes whether the key existed to
/// `*out_existed`, which may be NULL.
#[no_mangle]
pub unsafe extern "C" fn roost_kv_delete_if(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    key: *const u8,
    key_len: usize,
    expected_version: i64,
    out_existed: *mut bool,
) -> roost_result {
    ffi_result! {
        let condition = requests::precondition(expected_version)?;
        // SAFETY: forwarded from this function's contract.
        unsafe { delete(engine, actor, actor_len, key, key_len, condition, Out::optional(out_existed)) }
    }
}

unsafe fn delete(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    key: *const u8,
    key_len: usize,
    condition: Precondition,
    out_existed: Out<bool>,
) -> Result<(), Failure> {
    let engine = engine_for_blocking_call(engine)?;
    // SAFETY (all argument reads): pointers are valid for their lengths by contract.
    let id = unsafe { actor_arg(actor, actor_len) }?;
    let key = unsafe { text_arg(key, key_len, "key") }?;
    let existed = wait(engine.kv_delete(&id, key.to_owned(), condition))?;
    unsafe { out_existed.set(existed) };
    Ok(())
}

/// Lists keys in byte order. `query_json` (may be empty: list from the
/// start) is `{"prefix", "start", "end", "limit", "reverse", "cursor",
/// "values"}`, all optional: `start` inclusive, `end` exclusive, `limit`
/// 1–1000 (default 100), `cursor` from the previous page, `values` to
/// include values. Writes `{"items": [{"key", "version", "value"?}],
/// "cursor": null or string}` to `*out_json` (owned by the caller, free
/// with `roost_bytes_free`); a value is a JSON string when it is UTF-8,
/// else `{"base64": "..."}`.
#[no_mangle]
pub unsafe extern "C" fn roost_kv_list(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    query_json: *const u8,
    query_len: usize,
    out_json: *mut roost_bytes,
) -> roost_result {
    ffi_result! {
        let engine = engine_for_blocking_call(engine)?;
        // SAFETY (all argument reads): pointers are valid for their lengths by contract.
        let id = unsafe { actor_arg(actor, actor_len) }?;
        let raw = unsafe { bytes_arg(query_json, query_len, "query_json") }?;
        let out = Out::required(out_json, "out_json")?;
        let query = requests::list_query(raw, &engine.config().limits)?;
        let page = wait(engine.kv_list(&id, query))?;
        let json = requests::to_json(&page)?;
        unsafe { out.set(roost_bytes::from_vec(json)) };
        Ok(())
    }
}

/// Runs SQL on the actor's database (creating the actor if needed).
/// `request_json` is the body of the HTTP SQL endpoint: `{"sql": "...",
/// "params": [...] or {...}}`, or `{"statements": [{"sql", "params"?},
/// ...]}` which runs in one transaction (all or nothing). Values: `null`,
/// integers, floats, strings, blobs as `{"base64": "..."}`. Writes
/// `{"results": [{"columns", "rows", "rows_affected", "last_insert_rowid"}]}`
/// to `*out_json` (owned by the caller, free with `roost_bytes_free`).
#[no_mangle]
pub unsafe extern "C" fn roost_sql(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    request_json: *const u8,
    len: usize,
    out_json: *mut roost_bytes,
) -> roost_result {
    ffi_result! {
        let engine = engine_for_blocking_call(engine)?;
        // SAFETY (all argument reads): pointers are valid for their lengths by contract.
        let id = unsafe { actor_arg(actor, actor_len) }?;
        let raw = unsafe { bytes_arg(request_json, len, "request_json") }?;
        let out = Out::required(out_json, "out_json")?;
        let request = requests::sql_request(raw, &engine.config().limits)?;
        let response = wait(engine.sql(&id, request, None))?;
        let json = requests::to_json(&response)?;
        unsafe { out.set(roost_bytes::from_vec(json)) };
        Ok(())
    }
}

/// Removes the actor and all its data. Writes whether it existed to
/// `*out_existed`, which may be NULL.
#[no_mangle]
pub unsafe extern "C" fn roost_actor_delete(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    out_existed: *mut bool,
) -> roost_result {
    ffi_result! {
        let engine = engine_for_blocking_call(engine)?;
        // SAFETY: pointers are valid for their lengths by contract.
        let id = unsafe { actor_arg(actor, actor_len) }?;
        let out = Out::optional(out_existed);
        let existed = wait(engine.destroy(&id))?;
        unsafe { out.set(existed) };
        Ok(())
    }
}

/// Describes an actor without opening it: writes `{"id", "durability",
/// "size_bytes", "open"}` to `*out_json` (owned by the caller, free with
/// `roost_bytes_free`). `ROOST_NOT_FOUND` if the actor has no state.
#[no_mangle]
pub unsafe extern "C" fn roost_actor_info(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    out_json: *mut roost_bytes,
) -> roost_result {
    ffi_result! {
        let engine = engine_of(engine)?;
        // SAFETY: pointers are valid for their lengths by contract.
        let id = unsafe { actor_arg(actor, actor_len) }?;
        let out = Out::required(out_json, "out_json")?;
        let json = requests::actor_info_json(&engine.info(&id)?)?;
        unsafe { out.set(roost_bytes::from_vec(json)) };
        Ok(())
    }
}

/// Lists the engine's actors (stored ones and open in-memory ones) in ID
/// order. `query_json` (may be empty) is `{"prefix", "limit", "cursor"}`,
/// all optional, `limit` 1–1000 (default 100), `cursor` as returned by the
/// previous page. Writes `{"actors": [{"id", "size_bytes"}], "cursor": null
/// or string}` to `*out_json` (owned by the caller, free with
/// `roost_bytes_free`).
#[no_mangle]
pub unsafe extern "C" fn roost_actor_list(
    engine: *mut roost_engine,
    query_json: *const u8,
    query_len: usize,
    out_json: *mut roost_bytes,
) -> roost_result {
    ffi_result! {
        let engine = engine_of(engine)?;
        // SAFETY: pointers are valid for their lengths by contract.
        let raw = unsafe { bytes_arg(query_json, query_len, "query_json") }?;
        let out = Out::required(out_json, "out_json")?;
        let query = requests::actor_list_query(raw, &engine.config().limits)?;
        let page = engine.list(&query.prefix, query.cursor.as_deref(), query.limit.unwrap_or(100))?;
        let json = requests::actor_page_json(&page)?;
        unsafe { out.set(roost_bytes::from_vec(json)) };
        Ok(())
    }
}

/// Writes a consistent copy of the actor's database, a SQLite file (what
/// `GET /v1/actors/{id}/export` returns), to `*out_db` (owned by the
/// caller, free with `roost_bytes_free`). The copy is taken between
/// operations and held in memory. `ROOST_NOT_FOUND` if the actor has no
/// state.
#[no_mangle]
pub unsafe extern "C" fn roost_actor_export(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    out_db: *mut roost_bytes,
) -> roost_result {
    ffi_result! {
        let engine = engine_for_blocking_call(engine)?;
        // SAFETY: pointers are valid for their lengths by contract.
        let id = unsafe { actor_arg(actor, actor_len) }?;
        let out = Out::required(out_db, "out_db")?;
        let path = wait(engine.export(&id))?;
        let copy = std::fs::read(&path);
        // The engine hands the file over; it is ours to remove either way.
        let _ = std::fs::remove_file(&path);
        let copy = copy.map_err(crate::error::EngineError::from)?;
        unsafe { out.set(roost_bytes::from_vec(copy)) };
        Ok(())
    }
}

/// Replaces the actor's state with the SQLite database in `db`/`db_len`
/// (for example one `roost_actor_export` returned), creating the actor if
/// needed. The file is validated first: one that is not a sound SQLite
/// database is `ROOST_INVALID_REQUEST`, one over `max_actor_bytes` is
/// `ROOST_TOO_LARGE`, and either leaves the actor unchanged. `memory`
/// actors cannot import. roost copies the bytes.
#[no_mangle]
pub unsafe extern "C" fn roost_actor_import(
    engine: *mut roost_engine,
    actor: *const u8,
    actor_len: usize,
    db: *const u8,
    db_len: usize,
) -> roost_result {
    ffi_result! {
        let engine = engine_for_blocking_call(engine)?;
        // SAFETY: pointers are valid for their lengths by contract.
        let id = unsafe { actor_arg(actor, actor_len) }?;
        let data = unsafe { bytes_arg(db, db_len, "db") }?;
        let limit = engine.config().limits.max_actor_bytes;
        if data.len() as u64 > limit {
            return Err(Failure::new(
                roost_result::ROOST_TOO_LARGE,
                format!("the database is {} bytes; actors are limited to {limit}", data.len()),
            ));
        }
        let upload = engine.temp_file("import");
        if let Err(err) = std::fs::write(&upload, data) {
            let _ = std::fs::remove_file(&upload);
            return Err(crate::error::EngineError::from(err).into());
        }
        let imported = wait(engine.import(&id, upload.clone(), None));
        // The actor removes the upload; this covers an op refused before it ran.
        let _ = std::fs::remove_file(&upload);
        imported?;
        Ok(())
    }
}
