//! Fuzz-style misuse of the whole C ABI (the fault suite's "only error
//! codes, no crash"): random byte strings, invalid UTF-8, truncated and
//! malformed JSON, NULL pointers with zero and non-zero lengths, extreme
//! numbers, NULL out-params, closed and never-opened handles. Every call
//! must answer with a code its documentation allows for those arguments
//! (never `ROOST_PANIC`), leave its out-params alone when it fails, keep
//! `roost_last_error` truthful, and leave acknowledged data intact.
//!
//! Only misuse a callee can detect is generated: a non-NULL pointer always
//! points to at least `len` readable bytes (overstating a buffer's length
//! is undefined behaviour by contract). Runs use a fixed seed so CI is
//! repeatable; `PROPTEST_RNG_SEED=<n>` explores other inputs and
//! `PROPTEST_CASES` enlarges a run.

mod args;
mod bugs;
mod c_strings;
mod callbacks;
mod calls;
mod engine_open;
mod expect;
mod generators;
mod outs;
mod requests;
mod run;
mod setup;

use crate::abi::{last_error, open};
use args::Handles;
use bugs::{corrupt, get_code, put_code, sql_code, NOT_UTF8_TEXT};
use c_strings::{check_c_string, full_last_error, message_of};
use callbacks::ANSWERS;
use calls::{buffer_len, call, out};
use engine_open::{config_input, open_case};
use generators::null_len;
use outs::{take, Outs};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use requests::ESCAPED_FILE;
use roost::ffi::calls::*;
use roost::ffi::handles::*;
use roost::ffi::ratelimit::roost_ratelimit_decision;
use roost::ffi::result::{roost_error_message, roost_last_error, roost_result_name};
use roost::ffi::roost_result::{self, *};
use run::{run_case, within};
use serde_json::json;
use setup::{
    assert_keepsake_intact, export_sample, fuzz_config, ok, open_engine, runner, store_keepsake,
};
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::PoisonError;
use std::time::Duration;

/// Limits of the fuzzed engine, small so that "too large" is cheap to reach.
const MAX_KEY_BYTES: usize = 64;
const MAX_VALUE_BYTES: usize = 4096;
const MAX_BODY_BYTES: usize = 16 << 10;
const MAX_ACTOR_BYTES: usize = 1 << 20;
const MAX_RESULT_BYTES: usize = 256 << 10;
/// Fixed limits from `roost.h`.
const MAX_ACTOR_ID_BYTES: usize = 512;
const MAX_RATE_LIMIT: u64 = 1_000_000_000;
const MAX_WINDOW_MS: u64 = 366 * 24 * 60 * 60 * 1000;

/// Acknowledged before the fuzzing starts; no generated argument names it.
const KEEP_ACTOR: &str = "keepsake \u{2602} not fuzzed";
const KEEP_COUNTER: &str = "visits";
const KEEP_COUNT: i64 = 42;
const KEEP_KEY: &str = "treasure";
const KEEP_VALUE: &[u8] = b"gold\0\xff";

/// The actor whose state random imports replace: its content may be
/// anything a SQLite file can hold, so answers about it are only
/// required to be well-formed errors.
const IMPORTED_ACTOR: &str = "fuzz-imported";

/// Codes any call touching the disk may meet whatever its arguments.
const ENVIRONMENT: [roost_result; 2] = [ROOST_IO, ROOST_INSUFFICIENT_STORAGE];

/// Codes a call with sound arguments may still answer, besides `ROOST_OK`.
const COUNTER_ADD_FAILS: &[roost_result] = &[ROOST_INVALID_REQUEST];
const READ_FAILS: &[roost_result] = &[];
const GET_FAILS: &[roost_result] = &[ROOST_NOT_FOUND];
const WRITE_FAILS: &[roost_result] = &[];
const CAS_FAILS: &[roost_result] = &[ROOST_VERSION_MISMATCH];
const LIST_FAILS: &[roost_result] = &[ROOST_INVALID_REQUEST, ROOST_TOO_LARGE];
const SQL_FAILS: &[roost_result] = &[
    ROOST_INVALID_REQUEST,
    ROOST_SQL_ERROR,
    ROOST_SQL_DENIED,
    ROOST_QUERY_TIMEOUT,
    ROOST_TOO_LARGE,
];
const IMPORT_FAILS: &[roost_result] = &[ROOST_INVALID_REQUEST, ROOST_TOO_LARGE];
/// Extra answers allowed about [`IMPORTED_ACTOR`], whose file may hold
/// anything a sound SQLite file can that import accepts (its own tables,
/// say). Import refuses reserved rows roost could not serve, so
/// `ROOST_INTERNAL` is not among them.
const IMPORTED_FAILS: &[roost_result] = &[
    ROOST_NOT_FOUND,
    ROOST_SQL_ERROR,
    ROOST_INVALID_REQUEST,
    ROOST_TOO_LARGE,
];

/// Values out-params hold before a call; no call answers them.
const UNWRITTEN_I64: i64 = 0x5EED_5EED_5EED_5EED;
const UNWRITTEN_BYTE: u8 = 0xA5;
const UNWRITTEN_DECISION: roost_ratelimit_decision = roost_ratelimit_decision {
    allowed: true,
    remaining: 0x5EED,
    reset_ms: 0x5EED,
    retry_after_ms: 0x5EED,
};
const UNWRITTEN_PTR: usize = 0x5EED0;

/// How long one generated case may take before the test calls it a hang.
const CASE_DEADLINE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// The tests.

/// Generated cases of the whole-ABI fuzz; each is 1 to 11 calls.
const CALL_CASES: u32 = 1000;
const OPEN_CASES: u32 = 256;
const TEXT_CASES: u32 = 1000;

#[test]
fn every_call_answers_misuse_with_a_documented_code_and_keeps_acknowledged_data() {
    let dir = tempfile::tempdir().unwrap();
    let live_dir = dir.path().join("live");
    let live = open_engine(&fuzz_config(&live_dir));
    let version = store_keepsake(live);
    let sample = export_sample(live);
    let closed = open_engine(&fuzz_config(&dir.path().join("closed")));
    roost_engine_close(closed);
    roost_engine_close(closed);
    let handles = Handles {
        live: live.addr(),
        closed: closed.addr(),
    };

    let outcome = runner(CALL_CASES).run(&vec(call(sample), 1..12), |calls| {
        within(CASE_DEADLINE, move || run_case(handles, &calls)).map_err(TestCaseError::fail)
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }

    assert_keepsake_intact(live, version);
    assert!(
        !Path::new(ESCAPED_FILE).exists(),
        "user SQL wrote {ESCAPED_FILE}"
    );
    let (actor, name) = ("after the fuzz", "n");
    let mut count = 0;
    ok(
        unsafe {
            roost_counter_add(
                live,
                actor.as_ptr(),
                actor.len(),
                name.as_ptr(),
                name.len(),
                1,
                &mut count,
            )
        },
        "a write after the fuzz",
    );
    assert_eq!(count, 1);
    roost_engine_close(live);
    assert_eq!(
        ANSWERS.lock().unwrap_or_else(PoisonError::into_inner).len(),
        0,
        "a callback arrived after its case was settled"
    );
    let reopened = open_engine(&fuzz_config(&live_dir));
    assert_keepsake_intact(reopened, version);
    roost_engine_close(reopened);
}

#[test]
fn engine_open_answers_garbage_configs_and_closed_handles_stay_closed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    roost_engine_close(std::ptr::null_mut());
    roost_engine_close(std::ptr::without_provenance_mut(usize::MAX));
    let next_case = AtomicUsize::new(0);
    let base = dir.path().to_path_buf();
    let outcome = runner(OPEN_CASES).run(&(config_input(), out()), |(input, out)| {
        let case = next_case.fetch_add(1, Ordering::Relaxed);
        let (base, file): (PathBuf, PathBuf) = (base.clone(), file.clone());
        within(CASE_DEADLINE, move || {
            open_case(&base, &file, case, &input, out)
        })
        .map_err(TestCaseError::fail)
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

#[test]
fn error_texts_fit_any_buffer_and_empty_buffers_free_safely() {
    within(Duration::from_secs(10), || {
        assert_eq!(
            unsafe { roost_last_error(std::ptr::null_mut(), 0) },
            0,
            "empty before the first failure"
        );
        check_c_string("", 8, false, |buf, len| unsafe {
            roost_last_error(buf, len)
        })
        .unwrap();
    });
    let version = unsafe { CStr::from_ptr(roost::ffi::handles::roost_version()) };
    assert!(version.to_str().is_ok_and(|v| !v.is_empty()));

    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(&json!({"data_dir": dir.path(), "durability": "memory"}).to_string());
    let (actor, stored) = ("texts", "stored");
    ok(
        unsafe {
            roost_kv_put(
                engine,
                actor.as_ptr(),
                actor.len(),
                stored.as_ptr(),
                stored.len(),
                b"v".as_ptr(),
                1,
            )
        },
        "a value to free",
    );
    let token = engine.addr();
    let inputs = (
        prop_oneof![0u32..20, any::<u32>()],
        buffer_len(),
        prop::bool::weighted(0.2),
        "\\PC{1,24}",
        null_len(),
        any::<bool>(),
    );
    let outcome = runner(TEXT_CASES).run(&inputs, |(code, len, null, key, junk_len, release)| {
        let engine: *mut roost_engine = std::ptr::without_provenance_mut(token);
        let name = roost_result_name(code);
        let expected = roost_result::from_code(code).map(roost_result::name);
        let got = (!name.is_null()).then(|| unsafe { CStr::from_ptr(name) }.to_str().ok());
        prop_assert_eq!(got, expected.map(Some), "roost_result_name({})", code);
        check_c_string(message_of(code), len, null, |buf, len| unsafe {
            roost_error_message(code, buf, len)
        })
        .map_err(TestCaseError::fail)?;

        // A detail that quotes the key, to cut multi-byte text at any length.
        let mut out = Outs::new();
        let got = unsafe {
            roost_kv_get(
                engine,
                actor.as_ptr(),
                actor.len(),
                key.as_ptr(),
                key.len(),
                out.bytes(true),
            )
        };
        prop_assert_eq!(got, ROOST_NOT_FOUND);
        prop_assert!(out.untouched());
        let detail = full_last_error();
        prop_assert!(detail.starts_with("ROOST_NOT_FOUND: "), "{}", detail);
        check_c_string(&detail, len, null, |buf, len| unsafe {
            roost_last_error(buf, len)
        })
        .map_err(TestCaseError::fail)?;

        // Empty and NULL buffers free as nothing; a released struct is reset.
        let empty = || roost_bytes {
            ptr: std::ptr::null_mut(),
            len: 0,
        };
        unsafe { roost_bytes_free(empty()) };
        unsafe {
            roost_bytes_free(roost_bytes {
                ptr: std::ptr::null_mut(),
                len: junk_len,
            })
        };
        unsafe { roost_bytes_release(std::ptr::null_mut()) };
        let mut null_with_len = roost_bytes {
            ptr: std::ptr::null_mut(),
            len: junk_len,
        };
        unsafe { roost_bytes_release(&mut null_with_len) };
        prop_assert!(null_with_len.ptr.is_null() && null_with_len.len == 0);
        let mut value = empty();
        let got = unsafe {
            roost_kv_get(
                engine,
                actor.as_ptr(),
                actor.len(),
                stored.as_ptr(),
                stored.len(),
                &mut value,
            )
        };
        prop_assert_eq!(got, ROOST_OK);
        if release {
            unsafe { roost_bytes_release(&mut value) };
            prop_assert!(value.ptr.is_null() && value.len == 0);
            unsafe { roost_bytes_release(&mut value) };
        } else {
            prop_assert_eq!(take(value), b"v".to_vec());
        }
        Ok(())
    });
    roost_engine_close(engine);
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

// ---------------------------------------------------------------------------
// Bugs the fuzz found, kept as minimal cases until src fixes them.

#[test]

fn sql_text_that_is_not_utf8_answers_an_error_and_the_actor_lives_on() {
    for durability in ["durable", "buffered", "memory"] {
        let dir = tempfile::tempdir().unwrap();
        let engine =
            open_engine(&json!({"data_dir": dir.path(), "durability": durability}).to_string());
        for request in NOT_UTF8_TEXT {
            let code = sql_code(engine, "a", request);
            assert!(
                code == ROOST_OK || SQL_FAILS.contains(&code),
                "{durability}: {request} answered {}: {}",
                code.name(),
                last_error()
            );
            assert_eq!(
                put_code(engine, "a", "k"),
                ROOST_OK,
                "{durability}: the next call: {}",
                last_error()
            );
        }
        roost_engine_close(engine);
    }
}

#[test]

fn a_query_that_fails_keeps_acknowledged_buffered_writes() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"data_dir": dir.path(), "durability": "buffered"}).to_string();
    let engine = open_engine(&config);
    assert_eq!(put_code(engine, "a", "acknowledged"), ROOST_OK);
    sql_code(engine, "a", NOT_UTF8_TEXT[0]);
    assert_eq!(
        get_code(engine, "a", "acknowledged"),
        ROOST_OK,
        "lost before close"
    );
    roost_engine_close(engine);
    let engine = open_engine(&config);
    assert_eq!(
        get_code(engine, "a", "acknowledged"),
        ROOST_OK,
        "lost after close"
    );
    roost_engine_close(engine);
}

#[test]
fn an_import_roost_cannot_serve_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(&json!({"data_dir": dir.path()}).to_string());
    assert_eq!(put_code(engine, "source", "kv-key-marker"), ROOST_OK);
    let mut export = roost_bytes {
        ptr: std::ptr::null_mut(),
        len: 0,
    };
    ok(
        unsafe { roost_actor_export(engine, "source".as_ptr(), 6, &mut export) },
        "export",
    );
    let export = take(export);
    for (marker, mask) in [(&b"kv-key-marker"[..], 0x80), (&b"kv_clock"[..], 0x01)] {
        let db = corrupt(&export, marker, mask);
        let actor = format!("imported {}", marker.escape_ascii());
        let code = unsafe {
            roost_actor_import(engine, actor.as_ptr(), actor.len(), db.as_ptr(), db.len())
        };
        if code != ROOST_OK {
            assert_eq!(code, ROOST_INVALID_REQUEST, "{actor}: {}", last_error());
            continue;
        }
        let mut page = roost_bytes {
            ptr: std::ptr::null_mut(),
            len: 0,
        };
        let listed = unsafe {
            roost_kv_list(
                engine,
                actor.as_ptr(),
                actor.len(),
                std::ptr::null(),
                0,
                &mut page,
            )
        };
        assert_eq!(
            listed,
            ROOST_OK,
            "{actor} was imported, then kv_list: {}",
            last_error()
        );
        take(page);
        assert_eq!(
            put_code(engine, &actor, "k"),
            ROOST_OK,
            "{actor} was imported, then put: {}",
            last_error()
        );
    }
    roost_engine_close(engine);
}

#[test]
fn a_read_the_authorizer_refuses_is_sql_denied() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_engine(&json!({"data_dir": dir.path()}).to_string());
    let schema =
        r#"{"sql": "CREATE TABLE notes (colmarker TEXT); INSERT INTO notes VALUES ('x')"}"#;
    assert_eq!(
        sql_code(engine, "source", schema),
        ROOST_OK,
        "{}",
        last_error()
    );
    let mut export = roost_bytes {
        ptr: std::ptr::null_mut(),
        len: 0,
    };
    ok(
        unsafe { roost_actor_export(engine, "source".as_ptr(), 6, &mut export) },
        "export",
    );
    let db = corrupt(&take(export), b"colmarker", 0x80);
    let actor = "imported";
    ok(
        unsafe { roost_actor_import(engine, actor.as_ptr(), actor.len(), db.as_ptr(), db.len()) },
        "import",
    );
    let code = sql_code(engine, actor, r#"{"sql": "SELECT * FROM notes"}"#);
    assert!(
        code == ROOST_OK || code == ROOST_SQL_DENIED,
        "{}: {}",
        code.name(),
        last_error()
    );
    roost_engine_close(engine);
}

#[test]

fn a_huge_ratelimit_shard_count_is_refused_or_served() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({
        "data_dir": dir.path(),
        "durability": "memory",
        "ratelimit_shards": u32::MAX,
    })
    .to_string();
    within(Duration::from_secs(60), move || match open(&config) {
        Ok(engine) => roost_engine_close(engine),
        Err(code) => assert_eq!(code, ROOST_INVALID_CONFIG, "{}", last_error()),
    });
}
