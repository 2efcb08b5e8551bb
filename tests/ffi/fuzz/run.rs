//! Running generated calls: one case at a time, each blocking call checked
//! against what it may answer and what it must have written.

use super::args::{Handle, Handles};
use super::c_strings::{check_c_string, full_last_error, message_of};
use super::callbacks::{queue, settle, Pending};
use super::calls::Call;
use super::expect::Expect;
use super::outs::{json_answer, Outs};
use super::{
    CAS_FAILS, COUNTER_ADD_FAILS, GET_FAILS, IMPORT_FAILS, LIST_FAILS, MAX_ACTOR_BYTES,
    MAX_VALUE_BYTES, READ_FAILS, SQL_FAILS, WRITE_FAILS,
};
use crate::abi::last_error;
use roost::ffi::calls::*;
use roost::ffi::handles::*;
use roost::ffi::ratelimit::roost_ratelimit;
use roost::ffi::result::{roost_error_message, roost_last_error, roost_result_name};
use roost::ffi::roost_result::{self, *};
use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::mpsc;
use std::time::Duration;

/// Runs `body` on its own thread and fails if it takes longer than `limit`:
/// a hang is a finding too, not a test that never ends.
pub(super) fn within<T: Send + 'static>(
    limit: Duration,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
        let _ = tx.send(outcome);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("no answer within {limit:?}: a call hangs"),
    }
}

/// One case: every call in order, then the callbacks of the accepted
/// `_async` calls (even after a failure, so none leaks into the next case).
pub(super) fn run_case(handles: Handles, calls: &[Call]) -> Result<(), String> {
    let mut pending = HashMap::new();
    let mut first_failure = Ok(());
    for call in calls {
        if let Err(e) = run_call(handles, call, &mut pending) {
            first_failure = Err(format!("{call:?}: {e}"));
            break;
        }
    }
    let settled = settle(pending);
    first_failure.and(settled)
}

fn run_call(
    handles: Handles,
    call: &Call,
    pending: &mut HashMap<usize, Pending>,
) -> Result<(), String> {
    let mut expect = Expect::default();
    let mut outs = Outs::new();
    let before = last_error();
    let e = |handle: &Handle| handles.get(*handle);
    // SAFETY (every call below): each non-NULL pointer is valid for its
    // length and each out-param points to a live local.
    let (code, sound_fails) = unsafe {
        match call {
            Call::CounterAdd {
                engine,
                actor,
                name,
                delta,
                out,
            } => {
                expect
                    .handle(*engine)
                    .actor(actor)
                    .about(actor)
                    .key(name)
                    .present(*out);
                let code = roost_counter_add(
                    e(engine),
                    actor.ptr(),
                    actor.len(),
                    name.ptr(),
                    name.len(),
                    *delta,
                    outs.value(*out),
                );
                (code, COUNTER_ADD_FAILS)
            }
            Call::CounterGet {
                engine,
                actor,
                name,
                out,
            } => {
                expect
                    .handle(*engine)
                    .actor(actor)
                    .about(actor)
                    .key(name)
                    .present(*out);
                let code = roost_counter_get(
                    e(engine),
                    actor.ptr(),
                    actor.len(),
                    name.ptr(),
                    name.len(),
                    outs.value(*out),
                );
                (code, READ_FAILS)
            }
            Call::KvGet {
                engine,
                actor,
                key,
                out,
            } => {
                expect
                    .handle(*engine)
                    .actor(actor)
                    .about(actor)
                    .key(key)
                    .present(*out);
                let code = roost_kv_get(
                    e(engine),
                    actor.ptr(),
                    actor.len(),
                    key.ptr(),
                    key.len(),
                    outs.bytes(*out),
                );
                (code, GET_FAILS)
            }
            Call::KvGetVersioned {
                engine,
                actor,
                key,
                out,
                out_version,
            } => {
                expect
                    .handle(*engine)
                    .actor(actor)
                    .about(actor)
                    .key(key)
                    .present(*out);
                let code = roost_kv_get_versioned(
                    e(engine),
                    actor.ptr(),
                    actor.len(),
                    key.ptr(),
                    key.len(),
                    outs.bytes(*out),
                    outs.version(*out_version),
                );
                (code, GET_FAILS)
            }
            Call::KvPut {
                engine,
                actor,
                key,
                value,
            } => {
                expect
                    .handle(*engine)
                    .actor(actor)
                    .about(actor)
                    .key(key)
                    .bytes(value, MAX_VALUE_BYTES);
                let code = roost_kv_put(
                    e(engine),
                    actor.ptr(),
                    actor.len(),
                    key.ptr(),
                    key.len(),
                    value.ptr(),
                    value.len(),
                );
                (code, WRITE_FAILS)
            }
            Call::KvPutIf {
                engine,
                actor,
                key,
                value,
                expected,
                out_version,
            } => {
                expect
                    .handle(*engine)
                    .actor(actor)
                    .about(actor)
                    .key(key)
                    .bytes(value, MAX_VALUE_BYTES)
                    .version(*expected);
                let code = roost_kv_put_if(
                    e(engine),
                    actor.ptr(),
                    actor.len(),
                    key.ptr(),
                    key.len(),
                    value.ptr(),
                    value.len(),
                    *expected,
                    outs.version(*out_version),
                );
                (code, CAS_FAILS)
            }
            Call::KvDelete { engine, actor, key } => {
                expect.handle(*engine).actor(actor).about(actor).key(key);
                let code =
                    roost_kv_delete(e(engine), actor.ptr(), actor.len(), key.ptr(), key.len());
                (code, WRITE_FAILS)
            }
            Call::KvDeleteIf {
                engine,
                actor,
                key,
                expected,
                out_existed,
            } => {
                expect
                    .handle(*engine)
                    .actor(actor)
                    .about(actor)
                    .key(key)
                    .version(*expected);
                let code = roost_kv_delete_if(
                    e(engine),
                    actor.ptr(),
                    actor.len(),
                    key.ptr(),
                    key.len(),
                    *expected,
                    outs.existed(*out_existed),
                );
                (code, CAS_FAILS)
            }
            Call::KvList {
                engine,
                actor,
                query,
                out,
            } => {
                expect
                    .handle(*engine)
                    .actor(actor)
                    .about(actor)
                    .json(query, true)
                    .present(*out);
                let code = roost_kv_list(
                    e(engine),
                    actor.ptr(),
                    actor.len(),
                    query.ptr(),
                    query.len(),
                    outs.bytes(*out),
                );
                (code, LIST_FAILS)
            }
            Call::Sql {
                engine,
                actor,
                request,
                out,
            } => {
                expect
                    .handle(*engine)
                    .actor(actor)
                    .about(actor)
                    .json(request, false)
                    .present(*out);
                let code = roost_sql(
                    e(engine),
                    actor.ptr(),
                    actor.len(),
                    request.ptr(),
                    request.len(),
                    outs.bytes(*out),
                );
                (code, SQL_FAILS)
            }
            Call::ActorDelete {
                engine,
                actor,
                out_existed,
            } => {
                expect.handle(*engine).actor(actor).about(actor);
                let code = roost_actor_delete(
                    e(engine),
                    actor.ptr(),
                    actor.len(),
                    outs.existed(*out_existed),
                );
                (code, WRITE_FAILS)
            }
            Call::ActorInfo { engine, actor, out } => {
                expect
                    .handle(*engine)
                    .actor(actor)
                    .about(actor)
                    .present(*out);
                let code = roost_actor_info(e(engine), actor.ptr(), actor.len(), outs.bytes(*out));
                (code, GET_FAILS)
            }
            Call::ActorList { engine, query, out } => {
                expect.handle(*engine).json(query, true).present(*out);
                let code = roost_actor_list(e(engine), query.ptr(), query.len(), outs.bytes(*out));
                (code, LIST_FAILS)
            }
            Call::ActorExport { engine, actor, out } => {
                expect
                    .handle(*engine)
                    .actor(actor)
                    .about(actor)
                    .present(*out);
                let code =
                    roost_actor_export(e(engine), actor.ptr(), actor.len(), outs.bytes(*out));
                (code, GET_FAILS)
            }
            Call::ActorImport { engine, actor, db } => {
                expect
                    .handle(*engine)
                    .actor(actor)
                    .about(actor)
                    .bytes(db, MAX_ACTOR_BYTES);
                let code =
                    roost_actor_import(e(engine), actor.ptr(), actor.len(), db.ptr(), db.len());
                (code, IMPORT_FAILS)
            }
            Call::RateLimit {
                engine,
                key,
                limit,
                window_ms,
                cost,
                out,
            } => {
                expect
                    .handle(*engine)
                    .key(key)
                    .policy(*limit, *window_ms, *cost)
                    .present(*out);
                let code = roost_ratelimit(
                    e(engine),
                    key.ptr(),
                    key.len(),
                    *limit,
                    *window_ms,
                    *cost,
                    outs.decision(*out),
                );
                (code, READ_FAILS)
            }
            Call::Async {
                engine,
                actor,
                op,
                callback,
            } => {
                return queue(handles, call, *engine, actor, op, *callback, pending);
            }
            Call::CloseDead { engine } => {
                roost_engine_close(e(engine));
                return Ok(());
            }
            Call::LastError { len, null } => {
                let detail = full_last_error();
                return check_c_string(&detail, *len, *null, |buf, len| roost_last_error(buf, len));
            }
            Call::ErrorMessage { code, len, null } => {
                let name = roost_result_name(*code);
                let expected_name = roost_result::from_code(*code).map(roost_result::name);
                let got_name = (!name.is_null()).then(|| CStr::from_ptr(name).to_str().ok());
                if got_name != expected_name.map(Some) {
                    return Err(format!("roost_result_name({code}) is {got_name:?}"));
                }
                return check_c_string(message_of(*code), *len, *null, |buf, len| {
                    roost_error_message(*code, buf, len)
                });
            }
        }
    };
    if !expect.allows(code, sound_fails) {
        return Err(format!(
            "answered {} ({}); allowed: {expect:?} or {sound_fails:?}",
            code.name(),
            last_error()
        ));
    }
    if code != ROOST_OK {
        if !outs.untouched() {
            return Err(format!("{} wrote an out-param", code.name()));
        }
        let detail = last_error();
        if !detail.starts_with(&format!("{}: ", code.name())) {
            return Err(format!("{} with last error {detail:?}", code.name()));
        }
        return Ok(());
    }
    if last_error() != before {
        return Err("a successful call changed roost_last_error".into());
    }
    check_success(call, &mut outs, expect.imported)
}

/// What a successful blocking call must have written.
fn check_success(call: &Call, outs: &mut Outs, imported: bool) -> Result<(), String> {
    let positive = |version: i64, asked: bool| {
        if asked && !imported && version < 1 {
            Err(format!("version {version} is not positive"))
        } else {
            Ok(())
        }
    };
    let existed = |byte: u8, asked: bool| {
        if asked && byte > 1 {
            Err(format!("existed is byte {byte:#x}"))
        } else {
            Ok(())
        }
    };
    match call {
        Call::KvGet { .. } => outs.take_bytes().map(drop),
        Call::KvGetVersioned { out_version, .. } => {
            outs.take_bytes()?;
            positive(outs.version, *out_version)
        }
        Call::KvPutIf { out_version, .. } => positive(outs.version, *out_version),
        Call::KvDeleteIf { out_existed, .. } | Call::ActorDelete { out_existed, .. } => {
            existed(outs.existed, *out_existed)
        }
        Call::KvList { .. } | Call::Sql { .. } | Call::ActorList { .. } => {
            json_answer(&outs.take_bytes()?).map(drop)
        }
        Call::ActorInfo { actor, .. } => {
            let info = json_answer(&outs.take_bytes()?)?;
            let id = actor.seen().map(String::from_utf8_lossy);
            if info["id"].as_str() != id.as_deref() {
                return Err(format!("info {info} is about another actor"));
            }
            Ok(())
        }
        Call::ActorExport { .. } => {
            let db = outs.take_bytes()?;
            if !db.starts_with(b"SQLite format 3\0") {
                return Err(format!("export of {} bytes is no SQLite file", db.len()));
            }
            Ok(())
        }
        Call::RateLimit { limit, .. } => {
            let d = outs.decision;
            if d.allowed != (d.retry_after_ms == 0) || d.remaining > *limit {
                return Err(format!("incoherent decision {d:?}"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}
