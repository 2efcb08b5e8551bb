//! Helpers of the minimal cases kept for bugs the fuzz found: short
//! calls that answer only a code, and corrupting an export.

use super::outs::take;
use roost::ffi::calls::*;
use roost::ffi::handles::*;
use roost::ffi::roost_result::{self, *};

pub(super) const NOT_UTF8_TEXT: [&str; 2] = [
    r#"{"sql": "SELECT CAST(x'ff' AS TEXT)"}"#,
    r#"{"sql": "SELECT char(55296)"}"#,
];

pub(super) fn sql_code(engine: *mut roost_engine, actor: &str, request: &str) -> roost_result {
    let mut out = roost_bytes {
        ptr: std::ptr::null_mut(),
        len: 0,
    };
    let code = unsafe {
        roost_sql(
            engine,
            actor.as_ptr(),
            actor.len(),
            request.as_ptr(),
            request.len(),
            &mut out,
        )
    };
    if code == ROOST_OK {
        take(out);
    }
    code
}

pub(super) fn put_code(engine: *mut roost_engine, actor: &str, key: &str) -> roost_result {
    unsafe {
        roost_kv_put(
            engine,
            actor.as_ptr(),
            actor.len(),
            key.as_ptr(),
            key.len(),
            b"v".as_ptr(),
            1,
        )
    }
}

pub(super) fn get_code(engine: *mut roost_engine, actor: &str, key: &str) -> roost_result {
    let mut out = roost_bytes {
        ptr: std::ptr::null_mut(),
        len: 0,
    };
    let code = unsafe {
        roost_kv_get(
            engine,
            actor.as_ptr(),
            actor.len(),
            key.as_ptr(),
            key.len(),
            &mut out,
        )
    };
    if code == ROOST_OK {
        take(out);
    }
    code
}

/// Flips `mask` into the last byte of every copy of `marker` in `db`.
pub(super) fn corrupt(db: &[u8], marker: &[u8], mask: u8) -> Vec<u8> {
    let mut db = db.to_vec();
    let ends: Vec<usize> = db
        .windows(marker.len())
        .enumerate()
        .filter(|(_, window)| *window == marker)
        .map(|(at, _)| at + marker.len() - 1)
        .collect();
    assert!(
        !ends.is_empty(),
        "{} is not in the export",
        marker.escape_ascii()
    );
    for end in ends {
        db[end] ^= mask;
    }
    db
}
