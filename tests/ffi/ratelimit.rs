//! `roost_ratelimit` called as C would call it: decisions, misuse, and the
//! limiter's state across an engine close and reopen.

use crate::abi::{last_error, open, open_in};
use roost::ffi::handles::{roost_engine, roost_engine_close};
use roost::ffi::ratelimit::{roost_ratelimit, roost_ratelimit_decision};
use roost::ffi::roost_result::{self, *};
use std::mem::{offset_of, size_of};
use std::time::Duration;

const MINUTE_MS: u64 = 60_000;

/// What an out-param holds before a call; a failed call must leave it so.
const UNTOUCHED: roost_ratelimit_decision = roost_ratelimit_decision {
    allowed: true,
    remaining: 77,
    reset_ms: 77,
    retry_after_ms: 77,
};

fn decide(
    engine: *mut roost_engine,
    key: &[u8],
    limit: u64,
    window_ms: u64,
    cost: u64,
) -> Result<roost_ratelimit_decision, roost_result> {
    let mut out = UNTOUCHED;
    match unsafe {
        roost_ratelimit(
            engine,
            key.as_ptr(),
            key.len(),
            limit,
            window_ms,
            cost,
            &mut out,
        )
    } {
        ROOST_OK => Ok(out),
        code => {
            assert_eq!(out, UNTOUCHED, "out-param written on failure");
            Err(code)
        }
    }
}

fn allowed(engine: *mut roost_engine, key: &str, limit: u64, window_ms: u64) -> bool {
    decide(engine, key.as_bytes(), limit, window_ms, 1)
        .unwrap_or_else(|code| panic!("{code:?}: {}", last_error()))
        .allowed
}

#[test]
fn the_decision_struct_has_the_layout_bindings_read() {
    // bindings/bun reads `allowed` as byte 0 and the rest as u64 words 1-3.
    assert_eq!(size_of::<roost_ratelimit_decision>(), 32);
    assert_eq!(offset_of!(roost_ratelimit_decision, allowed), 0);
    assert_eq!(offset_of!(roost_ratelimit_decision, remaining), 8);
    assert_eq!(offset_of!(roost_ratelimit_decision, reset_ms), 16);
    assert_eq!(offset_of!(roost_ratelimit_decision, retry_after_ms), 24);
}

#[test]
fn a_burst_gets_exactly_the_limit_then_a_denial_that_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_in(dir.path(), "memory");
    for spent in 1..=5 {
        let decision = decide(engine, b"10.0.0.1", 5, MINUTE_MS, 1).unwrap();
        assert!(decision.allowed, "request {spent} of 5");
        assert_eq!(decision.remaining, 5 - spent);
        assert_eq!(decision.retry_after_ms, 0);
        assert!(decision.reset_ms > 0 && decision.reset_ms <= spent * 12_000);
    }
    let denied = decide(engine, b"10.0.0.1", 5, MINUTE_MS, 1).expect("a denial is ROOST_OK");
    assert!(!denied.allowed);
    assert_eq!(denied.remaining, 0);
    // One unit frees up every window / limit = 12 s.
    assert!(
        (11_000..=12_000).contains(&denied.retry_after_ms),
        "{denied:?}"
    );
    assert!(
        (59_000..=MINUTE_MS).contains(&denied.reset_ms),
        "{denied:?}"
    );
    assert!(
        allowed(engine, "10.0.0.2", 5, MINUTE_MS),
        "another key has its own allowance"
    );
    roost_engine_close(engine);
}

#[test]
fn a_denied_request_is_allowed_once_its_retry_time_has_passed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_in(dir.path(), "memory");
    // Two per 300 ms: one unit back every 150 ms.
    assert!(allowed(engine, "client", 2, 300));
    assert!(allowed(engine, "client", 2, 300));
    let denied = decide(engine, b"client", 2, 300, 1).unwrap();
    assert!(!denied.allowed);
    assert!((1..=150).contains(&denied.retry_after_ms), "{denied:?}");
    std::thread::sleep(Duration::from_millis(denied.retry_after_ms));
    let retried = decide(engine, b"client", 2, 300, 1).unwrap();
    assert!(retried.allowed, "retried after {denied:?}: {retried:?}");
    assert_eq!(retried.remaining, 0);
    roost_engine_close(engine);
}

#[test]
fn cost_spends_several_units_and_zero_only_looks() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_in(dir.path(), "memory");
    let look = decide(engine, b"k", 10, MINUTE_MS, 0).unwrap();
    assert!(look.allowed);
    assert_eq!(look.remaining, 10);
    let spent = decide(engine, b"k", 10, MINUTE_MS, 7).unwrap();
    assert!(spent.allowed);
    assert_eq!(spent.remaining, 3);
    assert_eq!(decide(engine, b"k", 10, MINUTE_MS, 0).unwrap().remaining, 3);
    let too_dear = decide(engine, b"k", 10, MINUTE_MS, 4).unwrap();
    assert!(!too_dear.allowed, "4 units when 3 remain");
    assert_eq!(too_dear.remaining, 3, "a denial spends nothing");
    assert!(decide(engine, b"k", 10, MINUTE_MS, 3).unwrap().allowed);

    assert_eq!(
        decide(engine, b"fresh", 10, MINUTE_MS, 11),
        Err(ROOST_INVALID_REQUEST),
        "a cost above the limit could never be allowed"
    );
    assert!(last_error().contains("cost 11"), "{}", last_error());
    assert!(decide(engine, b"fresh", 10, MINUTE_MS, 10).unwrap().allowed);
    roost_engine_close(engine);
}

#[test]
fn bad_policies_keys_and_pointers_get_their_codes_and_spend_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "data_dir": dir.path(), "durability": "memory", "max_key_bytes": 8,
    });
    let engine = open(&config.to_string()).unwrap();
    let key = b"user:1";
    let mut out = UNTOUCHED;

    let null_engine = unsafe {
        roost_ratelimit(
            std::ptr::null_mut(),
            key.as_ptr(),
            key.len(),
            3,
            MINUTE_MS,
            1,
            &mut out,
        )
    };
    assert_eq!(null_engine, ROOST_NULL_POINTER);
    let null_key =
        unsafe { roost_ratelimit(engine, std::ptr::null(), 4, 3, MINUTE_MS, 1, &mut out) };
    assert_eq!(null_key, ROOST_NULL_POINTER);
    let null_out = unsafe {
        roost_ratelimit(
            engine,
            key.as_ptr(),
            key.len(),
            3,
            MINUTE_MS,
            1,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(null_out, ROOST_NULL_POINTER);
    assert!(last_error().contains("out_decision"), "{}", last_error());
    assert_eq!(out, UNTOUCHED);
    let null_empty_key =
        unsafe { roost_ratelimit(engine, std::ptr::null(), 0, 3, MINUTE_MS, 1, &mut out) };
    assert_eq!(
        null_empty_key, ROOST_INVALID_REQUEST,
        "NULL with length 0 is an empty key"
    );
    assert_eq!(
        decide(engine, b"", 3, MINUTE_MS, 1),
        Err(ROOST_INVALID_REQUEST)
    );

    assert_eq!(
        decide(engine, b"\xff\xfe", 3, MINUTE_MS, 1),
        Err(ROOST_INVALID_UTF8)
    );
    assert_eq!(
        decide(engine, b"123456789", 3, MINUTE_MS, 1),
        Err(ROOST_TOO_LARGE),
        "a key over max_key_bytes"
    );
    assert_eq!(
        decide(engine, key, 0, MINUTE_MS, 1),
        Err(ROOST_INVALID_REQUEST)
    );
    assert!(last_error().contains("limit"), "{}", last_error());
    assert_eq!(
        decide(engine, key, 0, MINUTE_MS, 0),
        Err(ROOST_INVALID_REQUEST)
    );
    assert_eq!(decide(engine, key, 3, 0, 1), Err(ROOST_INVALID_REQUEST));
    assert_eq!(
        decide(engine, key, 1_000_000_001, MINUTE_MS, 1),
        Err(ROOST_INVALID_REQUEST)
    );
    assert_eq!(
        decide(engine, key, 3, 367 * 24 * 3600 * 1000, 1),
        Err(ROOST_INVALID_REQUEST)
    );
    assert_eq!(
        decide(engine, key, u64::MAX, u64::MAX, u64::MAX),
        Err(ROOST_INVALID_REQUEST)
    );

    let untouched = decide(engine, key, 3, MINUTE_MS, 0).unwrap();
    assert_eq!(untouched.remaining, 3, "no failed call spent anything");
    roost_engine_close(engine);
    assert_eq!(decide(engine, key, 3, MINUTE_MS, 1), Err(ROOST_CLOSED));
}

#[test]
fn a_spent_allowance_survives_close_and_reopen_unless_in_memory() {
    for durability in ["durable", "buffered"] {
        let dir = tempfile::tempdir().unwrap();
        let engine = open_in(dir.path(), durability);
        for _ in 0..3 {
            assert!(allowed(engine, "203.0.113.9", 3, 3_600_000), "{durability}");
        }
        assert!(allowed(engine, "203.0.113.10", 3, 3_600_000));
        roost_engine_close(engine);

        let engine = open_in(dir.path(), durability);
        let after = decide(engine, b"203.0.113.9", 3, 3_600_000, 1).unwrap();
        assert!(!after.allowed, "{durability}: reopened with {after:?}");
        assert!(after.retry_after_ms > 1_000_000, "{after:?}");
        let other = decide(engine, b"203.0.113.10", 3, 3_600_000, 0).unwrap();
        assert_eq!(other.remaining, 2, "{durability}");
        roost_engine_close(engine);
    }

    let dir = tempfile::tempdir().unwrap();
    let engine = open_in(dir.path(), "memory");
    for _ in 0..3 {
        assert!(allowed(engine, "203.0.113.9", 3, 3_600_000));
    }
    roost_engine_close(engine);
    let engine = open_in(dir.path(), "memory");
    assert!(
        allowed(engine, "203.0.113.9", 3, 3_600_000),
        "a memory engine starts afresh"
    );
    roost_engine_close(engine);
}

#[test]
fn decisions_from_many_threads_never_exceed_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_in(dir.path(), "buffered") as usize;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                (0..50)
                    .filter(|_| allowed(engine as *mut roost_engine, "shared", 100, 3_600_000))
                    .count()
            })
        })
        .collect();
    let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(admitted, 100, "200 requests against a limit of 100");
    roost_engine_close(engine as *mut roost_engine);
}
