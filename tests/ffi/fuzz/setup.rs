//! Setup shared by the tests: the proptest runner, the fuzzed engine's
//! config, and the acknowledged data the fuzz must leave intact.

use super::outs::take;
use super::{
    KEEP_ACTOR, KEEP_COUNT, KEEP_COUNTER, KEEP_KEY, KEEP_VALUE, MAX_ACTOR_BYTES, MAX_BODY_BYTES,
    MAX_KEY_BYTES, MAX_RESULT_BYTES, MAX_VALUE_BYTES,
};
use crate::abi::{last_error, open};
use proptest::test_runner::{Config, RngSeed, TestRunner};
use roost::ffi::calls::*;
use roost::ffi::handles::*;
use roost::ffi::roost_result::{self, *};
use serde_json::json;
use std::path::Path;

/// The seed of a run without `PROPTEST_RNG_SEED`.
const FIXED_SEED: u64 = 0x0072_6f6f_7374;

/// A proptest runner with `default_cases` unless `PROPTEST_CASES` says
/// otherwise, and a fixed seed unless `PROPTEST_RNG_SEED` picks another.
/// Failures are not persisted (no files next to the tests).
pub(super) fn runner(default_cases: u32) -> TestRunner {
    let mut config = Config {
        failure_persistence: None,
        max_shrink_time: 60_000,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = default_cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(FIXED_SEED);
    }
    TestRunner::new(config)
}

pub(super) fn fuzz_config(dir: &Path) -> String {
    json!({
        "data_dir": dir,
        "durability": "durable",
        "query_timeout_ms": 300,
        "max_key_bytes": MAX_KEY_BYTES,
        "max_value_bytes": MAX_VALUE_BYTES,
        "max_body_bytes": MAX_BODY_BYTES,
        "max_actor_bytes": MAX_ACTOR_BYTES,
        "max_result_bytes": MAX_RESULT_BYTES,
    })
    .to_string()
}

pub(super) fn open_engine(config: &str) -> *mut roost_engine {
    open(config).unwrap_or_else(|code| panic!("open failed: {code:?}: {}", last_error()))
}

pub(super) fn ok(code: roost_result, what: &str) {
    assert_eq!(code, ROOST_OK, "{what}: {}", last_error());
}

/// Acknowledges the keepsake counter and key; returns the key's version.
pub(super) fn store_keepsake(engine: *mut roost_engine) -> i64 {
    let (actor, name, key) = (KEEP_ACTOR, KEEP_COUNTER, KEEP_KEY);
    let (mut count, mut version) = (0, 0);
    ok(
        unsafe {
            roost_counter_add(
                engine,
                actor.as_ptr(),
                actor.len(),
                name.as_ptr(),
                name.len(),
                KEEP_COUNT,
                &mut count,
            )
        },
        "keepsake counter",
    );
    assert_eq!(count, KEEP_COUNT);
    ok(
        unsafe {
            roost_kv_put_if(
                engine,
                actor.as_ptr(),
                actor.len(),
                key.as_ptr(),
                key.len(),
                KEEP_VALUE.as_ptr(),
                KEEP_VALUE.len(),
                roost::ffi::ROOST_VERSION_ANY,
                &mut version,
            )
        },
        "keepsake key",
    );
    version
}

pub(super) fn assert_keepsake_intact(engine: *mut roost_engine, version: i64) {
    let (actor, name, key) = (KEEP_ACTOR, KEEP_COUNTER, KEEP_KEY);
    let mut count = 0;
    ok(
        unsafe {
            roost_counter_get(
                engine,
                actor.as_ptr(),
                actor.len(),
                name.as_ptr(),
                name.len(),
                &mut count,
            )
        },
        "keepsake counter",
    );
    assert_eq!(count, KEEP_COUNT, "the acknowledged counter changed");
    let mut value = roost_bytes {
        ptr: std::ptr::null_mut(),
        len: 0,
    };
    let mut stored_version = 0;
    ok(
        unsafe {
            roost_kv_get_versioned(
                engine,
                actor.as_ptr(),
                actor.len(),
                key.as_ptr(),
                key.len(),
                &mut value,
                &mut stored_version,
            )
        },
        "keepsake key",
    );
    assert_eq!(take(value), KEEP_VALUE, "the acknowledged value changed");
    assert_eq!(
        stored_version, version,
        "the acknowledged key was rewritten"
    );
}

/// An export of a small actor (a user table, keys, a counter) to mutate.
pub(super) fn export_sample(engine: *mut roost_engine) -> Vec<u8> {
    let actor = "fuzz-source";
    let request = r#"{"statements": [
        {"sql": "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, blob BLOB)"},
        {"sql": "CREATE INDEX notes_body ON notes (body)"},
        {"sql": "INSERT INTO notes (body, blob) VALUES (?, ?), (?, ?)",
         "params": ["first", {"base64": "AAEC"}, "second \u00fc", null]}
    ]}"#;
    let mut answer = roost_bytes {
        ptr: std::ptr::null_mut(),
        len: 0,
    };
    ok(
        unsafe {
            roost_sql(
                engine,
                actor.as_ptr(),
                actor.len(),
                request.as_ptr(),
                request.len(),
                &mut answer,
            )
        },
        "sample SQL",
    );
    take(answer);
    for key in ["a", "b", "c"] {
        ok(
            unsafe {
                roost_kv_put(
                    engine,
                    actor.as_ptr(),
                    actor.len(),
                    key.as_ptr(),
                    key.len(),
                    b"value".as_ptr(),
                    5,
                )
            },
            "sample key",
        );
    }
    let mut db = roost_bytes {
        ptr: std::ptr::null_mut(),
        len: 0,
    };
    ok(
        unsafe { roost_actor_export(engine, actor.as_ptr(), actor.len(), &mut db) },
        "sample export",
    );
    take(db)
}
