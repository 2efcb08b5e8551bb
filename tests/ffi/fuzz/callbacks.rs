//! `_async` calls: queueing them, recording their completion callbacks,
//! and checking each answer once the case settles.

use super::args::{Arg, Handle, Handles};
use super::calls::{AsyncOp, Call};
use super::expect::Expect;
use super::outs::{json_answer, take};
use super::{
    COUNTER_ADD_FAILS, GET_FAILS, LIST_FAILS, MAX_VALUE_BYTES, READ_FAILS, SQL_FAILS, WRITE_FAILS,
};
use crate::abi::last_error;
use roost::ffi::completion::*;
use roost::ffi::handles::*;
use roost::ffi::roost_result::{self, *};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub(super) struct Answer {
    id: usize,
    code: roost_result,
    value: i64,
    data: Vec<u8>,
    null_iff_empty: bool,
}

/// Every callback's answer, keyed by the call's `user_data`.
pub(super) static ANSWERS: Mutex<Vec<Answer>> = Mutex::new(Vec::new());
static ANSWERED: Condvar = Condvar::new();
/// `user_data` of the next `_async` call; the first is NULL.
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn record_answer(
    user_data: *mut c_void,
    code: roost_result,
    value: i64,
    data: *mut u8,
    data_len: usize,
) {
    let null_iff_empty = data.is_null() == (data_len == 0);
    let data = if data.is_null() {
        Vec::new()
    } else {
        take(roost_bytes {
            ptr: data,
            len: data_len,
        })
    };
    ANSWERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Answer {
            id: user_data.addr(),
            code,
            value,
            data,
            null_iff_empty,
        });
    ANSWERED.notify_all();
}

/// What the callback of an accepted `_async` call may report.
pub(super) struct Pending {
    call: String,
    op: AsyncOp,
    expect: Expect,
    sound_fails: &'static [roost_result],
}

/// Waits for the callback of every accepted call, then checks each answer
/// and that no refused call was answered.
pub(super) fn settle(mut pending: HashMap<usize, Pending>) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut arrived = Vec::new();
    let mut answers = ANSWERS.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        arrived.append(&mut answers);
        if pending
            .keys()
            .all(|id| arrived.iter().any(|a: &Answer| a.id == *id))
        {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let missing: Vec<_> = pending
                .iter()
                .filter(|(id, _)| !arrived.iter().any(|a| a.id == **id))
                .map(|(_, p)| p.call.clone())
                .collect();
            return Err(format!("no callback within 60 s for {missing:?}"));
        }
        answers = ANSWERED
            .wait_timeout(answers, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    drop(answers);
    for answer in arrived {
        let Some(p) = pending.remove(&answer.id) else {
            return Err(format!(
                "callback {} ({}) answered a refused call, or answered twice",
                answer.id,
                answer.code.name()
            ));
        };
        check_answer(&answer, &p).map_err(|e| format!("{}: {e}", p.call))?;
    }
    Ok(())
}

fn check_answer(answer: &Answer, p: &Pending) -> Result<(), String> {
    let code = answer.code;
    if !p.expect.allows(code, p.sound_fails) {
        return Err(format!(
            "callback got {}: {}",
            code.name(),
            String::from_utf8_lossy(&answer.data)
        ));
    }
    if !answer.null_iff_empty {
        return Err("callback data is NULL with a length, or non-NULL and empty".into());
    }
    if code != ROOST_OK {
        if answer.value != 0 {
            return Err(format!(
                "failure {} with value {}",
                code.name(),
                answer.value
            ));
        }
        if answer.data.is_empty() || std::str::from_utf8(&answer.data).is_err() {
            return Err(format!("failure {} without a UTF-8 detail", code.name()));
        }
        return Ok(());
    }
    if p.expect.imported {
        return Ok(());
    }
    match p.op {
        AsyncOp::CounterAdd { .. } | AsyncOp::CounterGet { .. } if !answer.data.is_empty() => {
            Err("a counter answer carries data".into())
        }
        AsyncOp::KvGet { .. } | AsyncOp::KvPut { .. } if answer.value < 1 => {
            Err(format!("version {} is not positive", answer.value))
        }
        AsyncOp::KvDelete { .. } | AsyncOp::ActorDelete if !(0..=1).contains(&answer.value) => {
            Err(format!("existed is {}, not 0 or 1", answer.value))
        }
        AsyncOp::KvList { .. } | AsyncOp::Sql { .. } => json_answer(&answer.data).map(drop),
        _ => Ok(()),
    }
}

/// Runs an `_async` call; an accepted one is settled at the end of the case.
pub(super) fn queue(
    handles: Handles,
    call: &Call,
    engine: Handle,
    actor: &Arg,
    op: &AsyncOp,
    callback: bool,
    pending: &mut HashMap<usize, Pending>,
) -> Result<(), String> {
    let mut expect = Expect::default();
    expect
        .handle(engine)
        .actor(actor)
        .about(actor)
        .present(callback);
    let sound_fails = match op {
        AsyncOp::CounterAdd { name, .. } => {
            expect.key(name);
            COUNTER_ADD_FAILS
        }
        AsyncOp::CounterGet { name } => {
            expect.key(name);
            READ_FAILS
        }
        AsyncOp::KvGet { key } => {
            expect.key(key);
            GET_FAILS
        }
        AsyncOp::KvPut { key, value } => {
            expect.key(key).bytes(value, MAX_VALUE_BYTES);
            WRITE_FAILS
        }
        AsyncOp::KvDelete { key } => {
            expect.key(key);
            WRITE_FAILS
        }
        AsyncOp::KvList { query } => {
            expect.json(query, true);
            LIST_FAILS
        }
        AsyncOp::Sql { request } => {
            expect.json(request, false);
            SQL_FAILS
        }
        AsyncOp::ActorDelete => WRITE_FAILS,
    };
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let user_data = std::ptr::without_provenance_mut::<c_void>(id);
    let cb: roost_callback = if callback { Some(record_answer) } else { None };
    let (e, a, n) = (handles.get(engine), actor.ptr(), actor.len());
    // SAFETY: each non-NULL pointer is valid for its length; the callback
    // only records its answer.
    let code = unsafe {
        match op {
            AsyncOp::CounterAdd { name, delta } => {
                roost_counter_add_async(e, a, n, name.ptr(), name.len(), *delta, cb, user_data)
            }
            AsyncOp::CounterGet { name } => {
                roost_counter_get_async(e, a, n, name.ptr(), name.len(), cb, user_data)
            }
            AsyncOp::KvGet { key } => {
                roost_kv_get_async(e, a, n, key.ptr(), key.len(), cb, user_data)
            }
            AsyncOp::KvPut { key, value } => roost_kv_put_async(
                e,
                a,
                n,
                key.ptr(),
                key.len(),
                value.ptr(),
                value.len(),
                cb,
                user_data,
            ),
            AsyncOp::KvDelete { key } => {
                roost_kv_delete_async(e, a, n, key.ptr(), key.len(), cb, user_data)
            }
            AsyncOp::KvList { query } => {
                roost_kv_list_async(e, a, n, query.ptr(), query.len(), cb, user_data)
            }
            AsyncOp::Sql { request } => {
                roost_sql_async(e, a, n, request.ptr(), request.len(), cb, user_data)
            }
            AsyncOp::ActorDelete => roost_actor_delete_async(e, a, n, cb, user_data),
        }
    };
    if !expect.allows_queueing(code) {
        return Err(format!(
            "returned {} ({}); allowed: {expect:?}",
            code.name(),
            last_error()
        ));
    }
    if code == ROOST_OK {
        let call = format!("{call:?}");
        let op = op.clone();
        pending.insert(
            id,
            Pending {
                call,
                op,
                expect,
                sound_fails,
            },
        );
    } else if !last_error().starts_with(&format!("{}: ", code.name())) {
        return Err(format!(
            "{} with last error {:?}",
            code.name(),
            last_error()
        ));
    }
    Ok(())
}
