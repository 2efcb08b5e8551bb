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

use crate::abi::{last_error, open};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use roost::ffi::calls::*;
use roost::ffi::completion::*;
use roost::ffi::handles::*;
use roost::ffi::ratelimit::{roost_ratelimit, roost_ratelimit_decision};
use roost::ffi::result::{roost_error_message, roost_last_error, roost_result_name};
use roost::ffi::roost_result::{self, *};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

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
// Arguments as a C caller passes them.

/// A `(pointer, length)` argument. A non-NULL pointer is always valid for
/// `len` bytes.
#[derive(Clone)]
enum Arg {
    /// `data` passed with `len`: its whole length or a prefix of it.
    Buf { data: Vec<u8>, len: usize },
    /// NULL with this length.
    Null(usize),
    /// A non-NULL pointer to no memory, with a length of 0.
    Dangling,
}

impl Arg {
    fn whole(data: impl Into<Vec<u8>>) -> Arg {
        let data = data.into();
        Arg::Buf {
            len: data.len(),
            data,
        }
    }

    fn ptr(&self) -> *const u8 {
        match self {
            Arg::Buf { data, .. } => data.as_ptr(),
            Arg::Null(_) => std::ptr::null(),
            Arg::Dangling => std::ptr::NonNull::dangling().as_ptr(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Arg::Buf { len, .. } | Arg::Null(len) => *len,
            Arg::Dangling => 0,
        }
    }

    /// The bytes roost reads, or `None` for NULL with a non-zero length.
    fn seen(&self) -> Option<&[u8]> {
        match self {
            Arg::Buf { data, len } => Some(&data[..*len]),
            Arg::Null(0) | Arg::Dangling => Some(&[]),
            Arg::Null(_) => None,
        }
    }

    fn is(&self, text: &str) -> bool {
        self.seen() == Some(text.as_bytes())
    }
}

impl fmt::Debug for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Buf { data, len } => {
                let shown = &data[..(*len).min(60)];
                let more = if *len > shown.len() { "..." } else { "" };
                write!(
                    f,
                    "Buf[{len} of {}] b\"{}\"{more}",
                    data.len(),
                    shown.escape_ascii()
                )
            }
            Arg::Null(len) => write!(f, "NULL[{len}]"),
            Arg::Dangling => write!(f, "Dangling[0]"),
        }
    }
}

/// The engine argument.
#[derive(Debug, Clone, Copy)]
enum Handle {
    Live,
    Null,
    /// Closed (twice) before the fuzzing started.
    Closed,
    /// A value no `roost_engine_open` returned: the ABI's tokens count up
    /// from 1, so these are never handed out.
    NeverOpened(usize),
}

/// The handles a run uses, as plain numbers so a case can move threads.
#[derive(Debug, Clone, Copy)]
struct Handles {
    live: usize,
    closed: usize,
}

impl Handles {
    fn get(self, handle: Handle) -> *mut roost_engine {
        match handle {
            Handle::Live => std::ptr::without_provenance_mut(self.live),
            Handle::Null => std::ptr::null_mut(),
            Handle::Closed => std::ptr::without_provenance_mut(self.closed),
            Handle::NeverOpened(token) => std::ptr::without_provenance_mut(token),
        }
    }
}

// ---------------------------------------------------------------------------
// Generators.

fn handle() -> impl Strategy<Value = Handle> {
    prop_oneof![
        17 => Just(Handle::Live),
        1 => Just(Handle::Null),
        1 => Just(Handle::Closed),
        1 => ((1usize << 48)..usize::MAX).prop_map(Handle::NeverOpened),
    ]
}

/// A handle that is not open: the only kind the fuzz closes.
fn dead_handle() -> impl Strategy<Value = Handle> {
    prop_oneof![
        Just(Handle::Null),
        Just(Handle::Closed),
        ((1usize << 48)..usize::MAX).prop_map(Handle::NeverOpened),
    ]
}

/// Lengths passed with a NULL pointer, including ones no buffer can have.
fn null_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        select(vec![
            1,
            7,
            4096,
            isize::MAX as usize,
            isize::MAX as usize + 1,
            usize::MAX,
        ]),
        any::<usize>(),
    ]
}

/// Passes generated bytes whole, or now and then only a prefix (which can
/// cut a UTF-8 character or a JSON document short).
fn passed(data: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Arg> {
    (data, any::<Index>(), 0..10u8).prop_map(|(data, cut, pick)| {
        let len = if pick == 0 {
            cut.index(data.len() + 1)
        } else {
            data.len()
        };
        Arg::Buf { data, len }
    })
}

fn invalid_utf8() -> impl Strategy<Value = Vec<u8>> {
    let broken: Vec<&'static [u8]> = vec![
        b"\xff",
        b"\xc3",
        b"\xe2\x82",
        b"\xed\xa0\x80",
        b"\xc0\x80",
        b"\xf4\x90\x80\x80",
        b"\x80",
    ];
    ("[a-z]{0,6}", select(broken), "[a-z]{0,6}")
        .prop_map(|(head, bad, tail)| [head.as_bytes(), bad, tail.as_bytes()].concat())
}

/// Misuse any `(pointer, length)` argument is exposed to.
fn misuse() -> impl Strategy<Value = Arg> {
    prop_oneof![
        null_len().prop_map(Arg::Null),
        Just(Arg::Null(0)),
        Just(Arg::Dangling),
        passed(vec(any::<u8>(), 0..48)),
        passed(invalid_utf8()),
    ]
}

fn text_from(choices: Vec<String>) -> impl Strategy<Value = Arg> {
    passed(select(choices).prop_map(String::into_bytes))
}

fn actor() -> BoxedStrategy<Arg> {
    let valid = vec![
        "fuzz-a".to_owned(),
        "fuzz-b".to_owned(),
        "fuzz \u{fc}n\u{ef}c\u{f8}d\u{e9} \u{1f980}".to_owned(),
        "fuzz@fra".to_owned(),
        IMPORTED_ACTOR.to_owned(),
        format!("fuzz-{}", "x".repeat(MAX_ACTOR_ID_BYTES - 5)),
    ];
    let invalid = vec![
        "fuzz\ncontrol".to_owned(),
        "fuzz\0nul".to_owned(),
        "fuzz\u{7f}".to_owned(),
        "fuzz\u{85}next-line".to_owned(),
        "x".repeat(MAX_ACTOR_ID_BYTES + 1),
        String::new(),
    ];
    prop_oneof![
        16 => text_from(valid),
        1 => text_from(invalid),
        1 => passed("\\PC{1,12}".prop_map(String::into_bytes)),
        2 => misuse(),
    ]
    .boxed()
}

/// Imports replace only [`IMPORTED_ACTOR`] (never a prefix of it), so
/// that the other actors' answers can be held to their documented shapes.
fn import_target() -> BoxedStrategy<Arg> {
    prop_oneof![
        6 => Just(Arg::whole(IMPORTED_ACTOR)),
        1 => Just(Arg::whole("x".repeat(MAX_ACTOR_ID_BYTES + 1))),
        1 => Just(Arg::Null(0)),
        2 => misuse().prop_filter("a prefix of the import target", |arg| {
            let prefix = |seen: &[u8]| IMPORTED_ACTOR.as_bytes().starts_with(seen);
            !arg.seen().is_some_and(|seen| !seen.is_empty() && prefix(seen))
        }),
    ]
    .boxed()
}

/// KV keys, counter names and rate-limit keys.
fn key() -> BoxedStrategy<Arg> {
    let valid = vec![
        "k".to_owned(),
        "key \u{fc}".to_owned(),
        "counter".to_owned(),
        "\u{1f980}".to_owned(),
        "k".repeat(MAX_KEY_BYTES),
    ];
    let invalid = vec![String::new(), "k".repeat(MAX_KEY_BYTES + 1)];
    prop_oneof![
        14 => text_from(valid),
        1 => text_from(invalid),
        1 => passed("\\PC{1,12}".prop_map(String::into_bytes)),
        2 => misuse(),
    ]
    .boxed()
}

fn value() -> BoxedStrategy<Arg> {
    prop_oneof![
        8 => passed(vec(any::<u8>(), 0..64)),
        1 => Just(Arg::whole(Vec::new())),
        1 => Just(Arg::whole(vec![0xA5; MAX_VALUE_BYTES])),
        1 => Just(Arg::whole(vec![0x5A; MAX_VALUE_BYTES + 1])),
        2 => misuse(),
    ]
    .boxed()
}

fn i64_arg() -> impl Strategy<Value = i64> {
    prop_oneof![
        select(vec![
            0,
            1,
            -1,
            -2,
            i64::MIN,
            i64::MIN + 1,
            i64::MAX,
            i64::MAX - 1
        ]),
        -3i64..20,
        any::<i64>(),
    ]
}

fn u64_arg() -> impl Strategy<Value = u64> {
    prop_oneof![
        select(vec![
            0,
            1,
            2,
            5,
            60_000,
            MAX_RATE_LIMIT,
            MAX_RATE_LIMIT + 1,
            MAX_WINDOW_MS,
            MAX_WINDOW_MS + 1,
            u64::MAX,
        ]),
        0u64..10,
        any::<u64>(),
    ]
}

/// A rate-limit policy and cost: mostly sound, else any numbers.
fn rate_policy() -> impl Strategy<Value = (u64, u64, u64)> {
    prop_oneof![
        3 => (1u64..100, 1u64..120_000)
            .prop_flat_map(|(limit, window_ms)| (Just(limit), Just(window_ms), 0..=limit)),
        2 => (u64_arg(), u64_arg(), u64_arg()),
    ]
}

fn json_leaf() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        select(vec![0i64, 1, -1, i64::MIN, i64::MAX]).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        Just(Value::from("nul \0 inside")),
        Just(json!({"base64": "AAEC/w=="})),
        Just(json!({"base64": "not base64!"})),
        Just(json!({"base64": 7})),
    ]
    .boxed()
}

fn json_value() -> BoxedStrategy<Value> {
    json_leaf()
        .prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Value::Array),
                btree_map("[a-z_:$@]{0,6}", inner, 0..4)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
        .boxed()
}

/// An object with any of `fields` (each from its generator), and now and
/// then a field no request has.
fn object_of(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let picks: Vec<_> = fields
        .into_iter()
        .map(|(name, field)| prop::option::weighted(0.4, field).prop_map(move |v| (name, v)))
        .collect();
    (picks, prop::option::weighted(0.1, json_value()))
        .prop_map(|(picks, stray)| {
            let mut object: Map<String, Value> = picks
                .into_iter()
                .filter_map(|(name, v)| v.map(|v| (name.to_owned(), v)))
                .collect();
            if let Some(stray) = stray {
                object.insert("no_such_field".to_owned(), stray);
            }
            Value::Object(object)
        })
        .boxed()
}

/// Where a `VACUUM INTO` in [`SQL`] would write if the authorizer let it.
const ESCAPED_FILE: &str = "/tmp/roost-fuzz-escaped.db";

/// Statements for generated requests. Text that is not UTF-8 is left to
/// the ignored bug tests at the end: it kills the actor.
const SQL: &[&str] = &[
    "SELECT 1",
    "SELECT ?, ?2",
    "SELECT :name, $name, @name",
    "CREATE TABLE IF NOT EXISTS t (a, b)",
    "INSERT INTO t VALUES (?, ?)",
    "INSERT INTO t VALUES (randomblob(64), 'x')",
    "SELECT * FROM t",
    "UPDATE t SET a = a || 'x'",
    "DROP TABLE t",
    "SELECT * FROM no_such_table",
    "not SQL at all",
    "",
    ";",
    "SELECT 1; SELECT 2",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT s",
    "ATTACH DATABASE ':memory:' AS other",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA writable_schema = ON",
    "PRAGMA integrity_check",
    "SELECT load_extension('/nonexistent')",
    "VACUUM",
    "VACUUM INTO '/tmp/roost-fuzz-escaped.db'",
    "DELETE FROM _roost_kv",
    "INSERT INTO _roost_kv VALUES ('k', 'v', -5)",
    "UPDATE _roost_counters SET value = 'x'",
    "DROP TABLE _roost_meta",
    "SELECT * FROM sqlite_master",
    "SELECT * FROM _roost_kv",
    "SELECT 9223372036854775807 + 1",
    "SELECT 1e999, -1e999, 0.0 / 0",
    "SELECT x'00ff'",
    "SELECT zeroblob(300000)",
    "SELECT randomblob(1000)",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    "CREATE TRIGGER IF NOT EXISTS tr AFTER INSERT ON t BEGIN SELECT 1; END",
];

fn sql_params() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => vec(json_leaf(), 0..4).prop_map(Value::Array),
        2 => btree_map(select(vec!["name", ":name", "$name", "@name", "", "?1"]), json_leaf(), 0..3)
            .prop_map(|fields| {
                Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        1 => json_value(),
    ]
    .boxed()
}

fn sql_statement() -> BoxedStrategy<Value> {
    (select(SQL), prop::option::weighted(0.5, sql_params()))
        .prop_map(|(sql, params)| match params {
            Some(params) => json!({"sql": sql, "params": params}),
            None => json!({"sql": sql}),
        })
        .boxed()
}

fn sql_shape() -> BoxedStrategy<Value> {
    prop_oneof![
        6 => sql_statement(),
        3 => vec(sql_statement(), 0..4).prop_map(|s| json!({"statements": s})),
        1 => object_of(vec![
            ("sql", json_value()),
            ("params", json_value()),
            ("statements", json_value()),
        ]),
        1 => json_value(),
    ]
    .boxed()
}

fn text_value(choices: Vec<&'static str>) -> BoxedStrategy<Value> {
    prop_oneof![
        4 => select(choices).prop_map(Value::from),
        1 => "\\PC{0,8}".prop_map(Value::from),
        1 => json_leaf(),
    ]
    .boxed()
}

fn limit_value() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => select(vec![0i64, 1, 2, 100, 1000, 1001, -1, i64::MAX]).prop_map(Value::from),
        1 => Just(json!(1e20)),
        1 => Just(json!(2.5)),
        1 => json_leaf(),
    ]
    .boxed()
}

fn flag_value() -> BoxedStrategy<Value> {
    prop_oneof![3 => any::<bool>().prop_map(Value::Bool), 1 => json_leaf()].boxed()
}

fn kv_list_shape() -> BoxedStrategy<Value> {
    let keys = || text_value(vec!["", "k", "key", "\u{fc}", "\0", "\u{1f980}"]);
    object_of(vec![
        ("prefix", keys()),
        ("start", keys()),
        ("end", keys()),
        ("limit", limit_value()),
        ("reverse", flag_value()),
        (
            "cursor",
            text_value(vec!["", "k", "abc", "!!!", "AAAA", "eyJrIjoxfQ=="]),
        ),
        ("values", flag_value()),
    ])
}

fn actor_list_shape() -> BoxedStrategy<Value> {
    object_of(vec![
        ("prefix", text_value(vec!["", "fuzz", "f", "\u{fc}", "\0"])),
        ("limit", limit_value()),
        (
            "cursor",
            text_value(vec!["", "fuzz-a", "zzz", "\u{10ffff}"]),
        ),
    ])
}

const MALFORMED_JSON: &[&str] = &[
    "{",
    "}",
    "[]",
    "null",
    "0",
    "\"text\"",
    " ",
    "{\"sql\": \"SELECT 1\"",
    "{\"sql\": \"\\ud800\"}",
    "{\"sql\": 1e400}",
    "{\"limit\": 1e400}",
    "{\"sql\": \"SELECT 1\"} trailing",
    "{\"sql\": \"SELECT 1\",}",
    "{'sql': 'SELECT 1'}",
    "{\"sql\": \"SELECT 1\", \"sql\": \"SELECT 2\"}",
    "{\"prefix\": \"a\", \"prefix\": \"b\"}",
    "\u{feff}{}",
];

/// JSON request text: well-formed shapes (whole or cut short), malformed
/// text, nesting past any parser's limit, an oversized body, raw bytes.
fn json_text(shapes: BoxedStrategy<Value>) -> BoxedStrategy<Arg> {
    let oversized = json!({"sql": format!("SELECT '{}'", "x".repeat(MAX_BODY_BYTES))}).to_string();
    prop_oneof![
        12 => passed(shapes.prop_map(|v| v.to_string().into_bytes())),
        2 => passed(select(MALFORMED_JSON).prop_map(|s| s.as_bytes().to_vec())),
        1 => Just(Arg::whole("[".repeat(MAX_BODY_BYTES / 2))),
        1 => Just(Arg::whole(b"{\"prefix\": \"\xff\", \"sql\": \"\xc3\"}".to_vec())),
        1 => Just(Arg::whole(oversized)),
        2 => misuse(),
    ]
    .boxed()
}

/// Database files to import: an export of a real actor, whole, cut short
/// or with flipped bytes, and files that are no database at all.
fn database(sample: Vec<u8>) -> BoxedStrategy<Arg> {
    let flipped = {
        let sample = sample.clone();
        vec((any::<Index>(), 1..=255u8), 1..4).prop_map(move |flips| {
            let mut db = sample.clone();
            for (at, mask) in flips {
                let at = at.index(db.len());
                db[at] ^= mask;
            }
            db
        })
    };
    let mut header_only = b"SQLite format 3\0".to_vec();
    header_only.resize(4096, 0);
    prop_oneof![
        2 => passed(Just(sample)),
        4 => passed(flipped),
        1 => passed(vec(any::<u8>(), 0..256)),
        1 => Just(Arg::whole(header_only)),
        1 => Just(Arg::whole(vec![0; MAX_ACTOR_BYTES + 1])),
        2 => misuse(),
    ]
    .boxed()
}

/// One call of the ABI. `out*: false` passes NULL for that out-param.
#[derive(Debug, Clone)]
enum Call {
    CounterAdd {
        engine: Handle,
        actor: Arg,
        name: Arg,
        delta: i64,
        out: bool,
    },
    CounterGet {
        engine: Handle,
        actor: Arg,
        name: Arg,
        out: bool,
    },
    KvGet {
        engine: Handle,
        actor: Arg,
        key: Arg,
        out: bool,
    },
    KvGetVersioned {
        engine: Handle,
        actor: Arg,
        key: Arg,
        out: bool,
        out_version: bool,
    },
    KvPut {
        engine: Handle,
        actor: Arg,
        key: Arg,
        value: Arg,
    },
    KvPutIf {
        engine: Handle,
        actor: Arg,
        key: Arg,
        value: Arg,
        expected: i64,
        out_version: bool,
    },
    KvDelete {
        engine: Handle,
        actor: Arg,
        key: Arg,
    },
    KvDeleteIf {
        engine: Handle,
        actor: Arg,
        key: Arg,
        expected: i64,
        out_existed: bool,
    },
    KvList {
        engine: Handle,
        actor: Arg,
        query: Arg,
        out: bool,
    },
    Sql {
        engine: Handle,
        actor: Arg,
        request: Arg,
        out: bool,
    },
    ActorDelete {
        engine: Handle,
        actor: Arg,
        out_existed: bool,
    },
    ActorInfo {
        engine: Handle,
        actor: Arg,
        out: bool,
    },
    ActorList {
        engine: Handle,
        query: Arg,
        out: bool,
    },
    ActorExport {
        engine: Handle,
        actor: Arg,
        out: bool,
    },
    ActorImport {
        engine: Handle,
        actor: Arg,
        db: Arg,
    },
    RateLimit {
        engine: Handle,
        key: Arg,
        limit: u64,
        window_ms: u64,
        cost: u64,
        out: bool,
    },
    Async {
        engine: Handle,
        actor: Arg,
        op: AsyncOp,
        callback: bool,
    },
    /// `roost_engine_close` of a handle that is not open.
    CloseDead {
        engine: Handle,
    },
    LastError {
        len: usize,
        null: bool,
    },
    ErrorMessage {
        code: u32,
        len: usize,
        null: bool,
    },
}

#[derive(Debug, Clone)]
enum AsyncOp {
    CounterAdd { name: Arg, delta: i64 },
    CounterGet { name: Arg },
    KvGet { key: Arg },
    KvPut { key: Arg, value: Arg },
    KvDelete { key: Arg },
    KvList { query: Arg },
    Sql { request: Arg },
    ActorDelete,
}

fn out() -> impl Strategy<Value = bool> {
    prop::bool::weighted(0.9)
}

fn async_op() -> BoxedStrategy<AsyncOp> {
    prop_oneof![
        (key(), i64_arg()).prop_map(|(name, delta)| AsyncOp::CounterAdd { name, delta }),
        key().prop_map(|name| AsyncOp::CounterGet { name }),
        key().prop_map(|key| AsyncOp::KvGet { key }),
        (key(), value()).prop_map(|(key, value)| AsyncOp::KvPut { key, value }),
        key().prop_map(|key| AsyncOp::KvDelete { key }),
        json_text(kv_list_shape()).prop_map(|query| AsyncOp::KvList { query }),
        json_text(sql_shape()).prop_map(|request| AsyncOp::Sql { request }),
        Just(AsyncOp::ActorDelete),
    ]
    .boxed()
}

fn buffer_len() -> impl Strategy<Value = usize> {
    prop_oneof![select(vec![0usize, 1, 2, 3, 4, 8, 9]), 0usize..200]
}

fn call(sample: Vec<u8>) -> BoxedStrategy<Call> {
    prop_oneof![
        1 => (handle(), actor(), key(), i64_arg(), out()).prop_map(
            |(engine, actor, name, delta, out)| Call::CounterAdd { engine, actor, name, delta, out }
        ),
        1 => (handle(), actor(), key(), out())
            .prop_map(|(engine, actor, name, out)| Call::CounterGet { engine, actor, name, out }),
        1 => (handle(), actor(), key(), out())
            .prop_map(|(engine, actor, key, out)| Call::KvGet { engine, actor, key, out }),
        1 => (handle(), actor(), key(), out(), any::<bool>()).prop_map(
            |(engine, actor, key, out, out_version)| Call::KvGetVersioned {
                engine,
                actor,
                key,
                out,
                out_version
            }
        ),
        3 => (handle(), actor(), key(), value())
            .prop_map(|(engine, actor, key, value)| Call::KvPut { engine, actor, key, value }),
        2 => (handle(), actor(), key(), value(), i64_arg(), any::<bool>()).prop_map(
            |(engine, actor, key, value, expected, out_version)| Call::KvPutIf {
                engine,
                actor,
                key,
                value,
                expected,
                out_version
            }
        ),
        1 => (handle(), actor(), key())
            .prop_map(|(engine, actor, key)| Call::KvDelete { engine, actor, key }),
        1 => (handle(), actor(), key(), i64_arg(), any::<bool>()).prop_map(
            |(engine, actor, key, expected, out_existed)| Call::KvDeleteIf {
                engine,
                actor,
                key,
                expected,
                out_existed
            }
        ),
        1 => (handle(), actor(), json_text(kv_list_shape()), out())
            .prop_map(|(engine, actor, query, out)| Call::KvList { engine, actor, query, out }),
        3 => (handle(), actor(), json_text(sql_shape()), out())
            .prop_map(|(engine, actor, request, out)| Call::Sql { engine, actor, request, out }),
        1 => (handle(), actor(), any::<bool>()).prop_map(
            |(engine, actor, out_existed)| Call::ActorDelete { engine, actor, out_existed }
        ),
        1 => (handle(), actor(), out())
            .prop_map(|(engine, actor, out)| Call::ActorInfo { engine, actor, out }),
        1 => (handle(), json_text(actor_list_shape()), out())
            .prop_map(|(engine, query, out)| Call::ActorList { engine, query, out }),
        1 => (handle(), actor(), out())
            .prop_map(|(engine, actor, out)| Call::ActorExport { engine, actor, out }),
        2 => (handle(), import_target(), database(sample))
            .prop_map(|(engine, actor, db)| Call::ActorImport { engine, actor, db }),
        2 => (handle(), key(), rate_policy(), out()).prop_map(
            |(engine, key, (limit, window_ms, cost), out)| Call::RateLimit {
                engine,
                key,
                limit,
                window_ms,
                cost,
                out
            }
        ),
        4 => (handle(), actor(), async_op(), out())
            .prop_map(|(engine, actor, op, callback)| Call::Async { engine, actor, op, callback }),
        1 => dead_handle()
            .prop_map(|engine| Call::CloseDead { engine }),
        1 => (buffer_len(), prop::bool::weighted(0.2))
            .prop_map(|(len, null)| Call::LastError { len, null }),
        1 => (prop_oneof![0u32..20, any::<u32>()], buffer_len(), prop::bool::weighted(0.2))
            .prop_map(|(code, len, null)| Call::ErrorMessage { code, len, null }),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------
// What a call may answer.

/// The codes a call's documentation allows for its arguments.
#[derive(Debug, Default)]
struct Expect {
    /// Codes of arguments that are certainly wrong: the call must fail
    /// with one of them (the order of the checks is not documented).
    faults: Vec<roost_result>,
    /// Codes arguments of unknown validity (parsed JSON) may cause.
    maybe: Vec<roost_result>,
    /// Whether the call is about [`IMPORTED_ACTOR`].
    imported: bool,
}

impl Expect {
    fn fault(&mut self, code: roost_result) -> &mut Self {
        self.faults.push(code);
        self
    }

    fn handle(&mut self, handle: Handle) -> &mut Self {
        match handle {
            Handle::Live => self,
            Handle::Null => self.fault(ROOST_NULL_POINTER),
            Handle::Closed | Handle::NeverOpened(_) => self.fault(ROOST_CLOSED),
        }
    }

    fn present(&mut self, present: bool) -> &mut Self {
        if !present {
            self.fault(ROOST_NULL_POINTER);
        }
        self
    }

    /// "1–512 bytes of UTF-8, no control characters".
    fn actor(&mut self, actor: &Arg) -> &mut Self {
        let Some(raw) = actor.seen() else {
            return self.fault(ROOST_NULL_POINTER);
        };
        let Ok(id) = std::str::from_utf8(raw) else {
            return self.fault(ROOST_INVALID_UTF8);
        };
        if id.is_empty()
            || id.len() > MAX_ACTOR_ID_BYTES
            || id.chars().any(|c| c.is_ascii_control())
        {
            self.fault(ROOST_INVALID_ACTOR_ID);
        } else if id.chars().any(char::is_control) {
            // A C1 control: "control character" may or may not cover it.
            self.maybe.push(ROOST_INVALID_ACTOR_ID);
        }
        self
    }

    /// A key, counter name or rate-limit key: 1 to `max_key_bytes` of UTF-8.
    fn key(&mut self, key: &Arg) -> &mut Self {
        let Some(raw) = key.seen() else {
            return self.fault(ROOST_NULL_POINTER);
        };
        match std::str::from_utf8(raw) {
            Err(_) => self.fault(ROOST_INVALID_UTF8),
            Ok("") => self.fault(ROOST_INVALID_REQUEST),
            Ok(key) if key.len() > MAX_KEY_BYTES => self.fault(ROOST_TOO_LARGE),
            Ok(_) => self,
        }
    }

    fn bytes(&mut self, bytes: &Arg, max: usize) -> &mut Self {
        match bytes.seen() {
            None => self.fault(ROOST_NULL_POINTER),
            Some(raw) if raw.len() > max => self.fault(ROOST_TOO_LARGE),
            Some(_) => self,
        }
    }

    /// A JSON request; `empty_ok` when empty input means "the defaults".
    fn json(&mut self, text: &Arg, empty_ok: bool) -> &mut Self {
        let Some(raw) = text.seen() else {
            return self.fault(ROOST_NULL_POINTER);
        };
        if raw.len() > MAX_BODY_BYTES {
            return self.fault(ROOST_TOO_LARGE);
        }
        let Ok(text) = std::str::from_utf8(raw) else {
            return self.fault(ROOST_INVALID_UTF8);
        };
        if text.is_empty() && empty_ok {
            return self;
        }
        if serde_json::from_str::<Value>(text).is_err() {
            return self.fault(ROOST_INVALID_REQUEST);
        }
        self.maybe.push(ROOST_INVALID_REQUEST);
        self
    }

    /// `expected_version`: a version, `ROOST_VERSION_ABSENT` or `ROOST_VERSION_ANY`.
    fn version(&mut self, expected: i64) -> &mut Self {
        if expected < -1 {
            self.fault(ROOST_INVALID_REQUEST);
        }
        self
    }

    fn policy(&mut self, limit: u64, window_ms: u64, cost: u64) -> &mut Self {
        let bad_limit = limit == 0 || limit > MAX_RATE_LIMIT;
        let bad_window = window_ms == 0 || window_ms > MAX_WINDOW_MS;
        if bad_limit || bad_window || cost > limit {
            self.fault(ROOST_INVALID_REQUEST);
        }
        self
    }

    /// Calls about [`IMPORTED_ACTOR`] may also answer [`IMPORTED_FAILS`].
    fn about(&mut self, actor: &Arg) -> &mut Self {
        if actor.is(IMPORTED_ACTOR) {
            self.imported = true;
            self.maybe.extend_from_slice(IMPORTED_FAILS);
        }
        self
    }

    /// Whether a blocking call may answer `code`.
    fn allows(&self, code: roost_result, sound_fails: &[roost_result]) -> bool {
        if self.faults.is_empty() {
            code == ROOST_OK
                || self.maybe.contains(&code)
                || sound_fails.contains(&code)
                || ENVIRONMENT.contains(&code)
        } else {
            self.faults.contains(&code) || self.maybe.contains(&code)
        }
    }

    /// Whether an `_async` call may return `code`: it only checks and queues.
    fn allows_queueing(&self, code: roost_result) -> bool {
        if self.faults.is_empty() {
            code == ROOST_OK || self.maybe.contains(&code)
        } else {
            self.faults.contains(&code) || self.maybe.contains(&code)
        }
    }
}

// ---------------------------------------------------------------------------
// Out-params.

/// Out-params filled with values no call answers, to see what was written.
struct Outs {
    value: i64,
    version: i64,
    existed: u8,
    bytes: roost_bytes,
    decision: roost_ratelimit_decision,
}

/// `field` as an out-param, or NULL when the call passes none.
fn slot<T>(present: bool, field: &mut T) -> *mut T {
    if present {
        field
    } else {
        std::ptr::null_mut()
    }
}

impl Outs {
    fn new() -> Outs {
        Outs {
            value: UNWRITTEN_I64,
            version: UNWRITTEN_I64,
            existed: UNWRITTEN_BYTE,
            bytes: roost_bytes {
                ptr: std::ptr::without_provenance_mut(UNWRITTEN_PTR),
                len: UNWRITTEN_PTR,
            },
            decision: UNWRITTEN_DECISION,
        }
    }

    fn value(&mut self, present: bool) -> *mut i64 {
        slot(present, &mut self.value)
    }

    fn version(&mut self, present: bool) -> *mut i64 {
        slot(present, &mut self.version)
    }

    /// A byte roost writes a `bool` into, read back as a byte.
    fn existed(&mut self, present: bool) -> *mut bool {
        slot(present, &mut self.existed).cast()
    }

    fn bytes(&mut self, present: bool) -> *mut roost_bytes {
        slot(present, &mut self.bytes)
    }

    fn decision(&mut self, present: bool) -> *mut roost_ratelimit_decision {
        slot(present, &mut self.decision)
    }

    fn untouched(&self) -> bool {
        self.value == UNWRITTEN_I64
            && self.version == UNWRITTEN_I64
            && self.existed == UNWRITTEN_BYTE
            && self.bytes.ptr.addr() == UNWRITTEN_PTR
            && self.bytes.len == UNWRITTEN_PTR
            && self.decision == UNWRITTEN_DECISION
    }

    /// Copies out and frees the buffer a successful call wrote.
    fn take_bytes(&mut self) -> Result<Vec<u8>, String> {
        let bytes = std::mem::replace(
            &mut self.bytes,
            roost_bytes {
                ptr: std::ptr::null_mut(),
                len: 0,
            },
        );
        if bytes.ptr.addr() == UNWRITTEN_PTR {
            return Err("a successful call left its buffer out-param unwritten".into());
        }
        if bytes.ptr.is_null() != (bytes.len == 0) {
            return Err(format!(
                "returned buffer {:?} with length {}",
                bytes.ptr, bytes.len
            ));
        }
        Ok(take(bytes))
    }
}

/// Copies a returned buffer out and frees it.
fn take(bytes: roost_bytes) -> Vec<u8> {
    let copy = if bytes.ptr.is_null() {
        Vec::new()
    } else {
        // SAFETY: roost returned this buffer with this length.
        unsafe { std::slice::from_raw_parts(bytes.ptr, bytes.len) }.to_vec()
    };
    unsafe { roost_bytes_free(bytes) };
    copy
}

fn json_answer(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "answer is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )
    })
}

// ---------------------------------------------------------------------------
// Completion callbacks.

struct Answer {
    id: usize,
    code: roost_result,
    value: i64,
    data: Vec<u8>,
    null_iff_empty: bool,
}

/// Every callback's answer, keyed by the call's `user_data`.
static ANSWERS: Mutex<Vec<Answer>> = Mutex::new(Vec::new());
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
struct Pending {
    call: String,
    op: AsyncOp,
    expect: Expect,
    sound_fails: &'static [roost_result],
}

/// Waits for the callback of every accepted call, then checks each answer
/// and that no refused call was answered.
fn settle(mut pending: HashMap<usize, Pending>) -> Result<(), String> {
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

// ---------------------------------------------------------------------------
// Running calls.

/// Runs `body` on its own thread and fails if it takes longer than `limit`:
/// a hang is a finding too, not a test that never ends.
fn within<T: Send + 'static>(limit: Duration, body: impl FnOnce() -> T + Send + 'static) -> T {
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

/// The detail `roost_last_error` holds, however long.
fn full_last_error() -> String {
    let len = unsafe { roost_last_error(std::ptr::null_mut(), 0) };
    let mut buf = vec![0 as c_char; len + 1];
    unsafe { roost_last_error(buf.as_mut_ptr(), buf.len()) };
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Checks how a C-string writer (`roost_last_error`, `roost_error_message`)
/// filled a `len`-byte buffer (or NULL) with `text`: it returns the full
/// length, writes a NUL-terminated prefix cut at a character boundary,
/// and nothing past `len`.
fn check_c_string(
    text: &str,
    len: usize,
    null: bool,
    write: impl FnOnce(*mut c_char, usize) -> usize,
) -> Result<(), String> {
    const CANARY: c_char = 0x55;
    let mut buf = vec![CANARY; len + 16];
    let ptr = if null {
        std::ptr::null_mut()
    } else {
        buf.as_mut_ptr()
    };
    let full = write(ptr, len);
    if full != text.len() {
        return Err(format!(
            "returned {full} for {text:?} ({} bytes)",
            text.len()
        ));
    }
    let bytes: Vec<u8> = buf.iter().map(|&b| b as u8).collect();
    if null || len == 0 {
        if bytes.iter().any(|&b| b != CANARY as u8) {
            return Err(format!("wrote into a buffer of length {len}"));
        }
        return Ok(());
    }
    let Some(nul) = bytes[..len].iter().position(|&b| b == 0) else {
        return Err(format!("no NUL within {len} bytes"));
    };
    let written = &bytes[..nul];
    let fits = text.len() < len;
    let prefix_ok = text.as_bytes().starts_with(written)
        && text.is_char_boundary(nul)
        && (fits && nul == text.len() || !fits && nul + 4 > len - 1);
    if !prefix_ok {
        return Err(format!(
            "wrote {:?} into {len} bytes for {text:?}",
            String::from_utf8_lossy(written)
        ));
    }
    if bytes[len..].iter().any(|&b| b != CANARY as u8) {
        return Err(format!("wrote past {len} bytes"));
    }
    Ok(())
}

fn message_of(code: u32) -> &'static str {
    roost_result::from_code(code).map_or("unknown result code", roost_result::message)
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

/// Runs an `_async` call; an accepted one is settled at the end of the case.
fn queue(
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

// ---------------------------------------------------------------------------
// Setup shared by the tests.

/// A proptest runner with `default_cases` unless `PROPTEST_CASES` says
/// otherwise, and a fixed seed unless `PROPTEST_RNG_SEED` picks another.
/// Failures are not persisted (no files next to the tests).
fn runner(default_cases: u32) -> TestRunner {
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

fn fuzz_config(dir: &Path) -> String {
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

fn open_engine(config: &str) -> *mut roost_engine {
    open(config).unwrap_or_else(|code| panic!("open failed: {code:?}: {}", last_error()))
}

fn ok(code: roost_result, what: &str) {
    assert_eq!(code, ROOST_OK, "{what}: {}", last_error());
}

/// Acknowledges the keepsake counter and key; returns the key's version.
fn store_keepsake(engine: *mut roost_engine) -> i64 {
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

fn assert_keepsake_intact(engine: *mut roost_engine, version: i64) {
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
fn export_sample(engine: *mut roost_engine) -> Vec<u8> {
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

/// One case: every call in order, then the callbacks of the accepted
/// `_async` calls (even after a failure, so none leaks into the next case).
fn run_case(handles: Handles, calls: &[Call]) -> Result<(), String> {
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

/// Where a generated configuration puts its data.
#[derive(Debug, Clone)]
enum DataDir {
    /// A new directory of the case's own.
    Fresh,
    /// A value that is not a path.
    Junk(Value),
    /// An existing regular file.
    File,
    /// A path with a NUL byte inside.
    NulInside,
}

/// A known setting: its name, its value, and whether the value has the
/// setting's type.
type Setting = (&'static str, Value, bool);

#[derive(Debug, Clone)]
enum ConfigInput {
    Null,
    /// Random text (without NUL); a JSON object gets a fresh `data_dir`.
    Raw(Vec<u8>),
    Object {
        fields: Vec<Setting>,
        data_dir: DataDir,
        stray: Option<Value>,
    },
}

/// The seed of a run without `PROPTEST_RNG_SEED`.
const FIXED_SEED: u64 = 0x0072_6f6f_7374;

/// Limiter shards the fuzz passes at most (the engine refuses more than
/// `MAX_SHARDS`; larger values only slow the case down).
const MAX_FUZZED_SHARDS: u64 = 1 << 16;

/// Whether a well-typed setting is still out of the engine's range; the
/// engine checks ranges before it touches `data_dir`.
fn out_of_range(name: &str, value: &Value) -> bool {
    name == "ratelimit_shards"
        && value
            .as_u64()
            .is_some_and(|n| n == 0 || n > u64::from(roost::limiter::MAX_SHARDS))
}

/// Unsigned settings: the largest value their type holds, and the largest
/// the fuzz passes.
const NUMERIC_SETTINGS: &[(&str, u64, u64)] = &[
    ("flush_interval_ms", u64::MAX, u64::MAX),
    ("flush_max_ops", usize::MAX as u64, u64::MAX),
    ("max_open_actors", usize::MAX as u64, u64::MAX),
    ("idle_timeout_ms", u64::MAX, u64::MAX),
    ("ratelimit_shards", u32::MAX as u64, MAX_FUZZED_SHARDS),
    ("max_body_bytes", usize::MAX as u64, u64::MAX),
    ("max_key_bytes", usize::MAX as u64, u64::MAX),
    ("max_value_bytes", usize::MAX as u64, u64::MAX),
    ("max_actor_bytes", u64::MAX, u64::MAX),
    ("max_result_bytes", usize::MAX as u64, u64::MAX),
    ("query_timeout_ms", u64::MAX, u64::MAX),
];

/// A value for a setting whose type holds up to `max`, paired with whether
/// it has that type; values of the type above `cap` are not generated.
fn setting(max: u64, cap: u64) -> BoxedStrategy<(Value, bool)> {
    let wrong_type = vec![
        json!(-1),
        json!(1.5),
        json!(1e20),
        json!("10"),
        Value::Null,
        json!(true),
        json!([]),
        json!({}),
    ];
    prop_oneof![
        6 => select(vec![0, 1, 2, 10, 1000, u32::MAX.into(), u64::from(u32::MAX) + 1, u64::MAX])
            .prop_map(move |n| (Value::from(n), n <= max)),
        2 => any::<u64>().prop_map(move |n| (Value::from(n), n <= max)),
        1 => select(wrong_type).prop_map(|v| (v, false)),
    ]
    .prop_filter("a value above the fuzz's cap", move |(value, typed)| {
        !typed || value.as_u64().is_none_or(|n| n <= cap)
    })
    .boxed()
}

fn config_input() -> BoxedStrategy<ConfigInput> {
    let durability = prop_oneof![
        select(vec!["durable", "buffered", "memory"]).prop_map(|d| (Value::from(d), true)),
        select(vec![
            json!("Durable"),
            json!(""),
            json!("fast"),
            json!(1),
            Value::Null
        ])
        .prop_map(|v| (v, false)),
    ];
    let mut fields: Vec<BoxedStrategy<Option<Setting>>> = NUMERIC_SETTINGS
        .iter()
        .map(|&(name, max, cap)| {
            prop::option::weighted(0.3, setting(max, cap))
                .prop_map(move |v| v.map(|(v, typed)| (name, v, typed)))
                .boxed()
        })
        .collect();
    fields.push(
        prop::option::weighted(0.6, durability)
            .prop_map(|v| v.map(|(v, typed)| ("durability", v, typed)))
            .boxed(),
    );
    let data_dir = prop_oneof![
        12 => Just(DataDir::Fresh),
        1 => json_leaf()
            .prop_filter("a string is a path", |v| !v.is_string())
            .prop_map(DataDir::Junk),
        1 => Just(DataDir::File),
        1 => Just(DataDir::NulInside),
    ];
    let object = (fields, data_dir, prop::option::weighted(0.1, json_value())).prop_map(
        |(fields, data_dir, stray)| ConfigInput::Object {
            fields: fields.into_iter().flatten().collect(),
            data_dir,
            stray,
        },
    );
    let raw = prop_oneof![
        vec(any::<u8>(), 0..48),
        select(MALFORMED_JSON).prop_map(|s| s.as_bytes().to_vec()),
        invalid_utf8(),
    ]
    .prop_map(|mut text| {
        text.retain(|&b| b != 0);
        ConfigInput::Raw(text)
    });
    prop_oneof![12 => object, 3 => raw, 1 => Just(ConfigInput::Null)].boxed()
}

/// The NUL-terminated config text of `input` (None for NULL) and what
/// `roost_engine_open` may answer for it.
fn render(input: &ConfigInput, fresh: &Path, file: &Path) -> (Option<CString>, Expect) {
    let mut expect = Expect::default();
    let with_dir = |mut object: Map<String, Value>| {
        object.insert("data_dir".into(), json!(fresh));
        Value::Object(object).to_string().into_bytes()
    };
    let text = match input {
        ConfigInput::Null => {
            expect.fault(ROOST_NULL_POINTER);
            return (None, expect);
        }
        ConfigInput::Raw(raw) => match serde_json::from_slice::<Value>(raw) {
            Ok(Value::Object(object)) => {
                expect.maybe.push(ROOST_INVALID_CONFIG);
                with_dir(object)
            }
            _ if std::str::from_utf8(raw).is_err() => {
                expect.fault(ROOST_INVALID_UTF8);
                raw.clone()
            }
            _ => {
                expect.fault(ROOST_INVALID_CONFIG);
                raw.clone()
            }
        },
        ConfigInput::Object {
            fields,
            data_dir,
            stray,
        } => {
            let mut object: Map<String, Value> = fields
                .iter()
                .map(|(name, value, _)| (name.to_string(), value.clone()))
                .collect();
            if fields
                .iter()
                .any(|(name, value, typed)| !typed || out_of_range(name, value))
                || stray.is_some()
            {
                expect.fault(ROOST_INVALID_CONFIG);
            }
            if let Some(stray) = stray {
                object.insert("no_such_setting".into(), stray.clone());
            }
            match data_dir {
                DataDir::Fresh => return (Some(CString::new(with_dir(object)).unwrap()), expect),
                DataDir::Junk(junk) => {
                    expect.fault(ROOST_INVALID_CONFIG);
                    object.insert("data_dir".into(), junk.clone());
                }
                DataDir::File => {
                    expect.fault(ROOST_IO);
                    object.insert("data_dir".into(), json!(file));
                }
                DataDir::NulInside => {
                    expect.fault(ROOST_IO);
                    object.insert(
                        "data_dir".into(),
                        json!(format!("{}/a\0b", fresh.display())),
                    );
                }
            }
            Value::Object(object).to_string().into_bytes()
        }
    };
    (
        Some(CString::new(text).expect("no NUL in config text")),
        expect,
    )
}

/// Codes a sound call on a freshly opened engine must never answer,
/// whatever its limits.
const NEVER_ON_AN_OPEN_ENGINE: &[roost_result] = &[
    ROOST_NULL_POINTER,
    ROOST_INVALID_UTF8,
    ROOST_INVALID_ACTOR_ID,
    ROOST_INVALID_CONFIG,
    ROOST_CLOSED,
    ROOST_PANIC,
    ROOST_INTERNAL,
    ROOST_WOULD_DEADLOCK,
];

/// Runs a few sound calls on an engine opened with a generated config;
/// returns whether it acknowledged adding 1 to the smoke counter.
fn smoke(engine: usize) -> Result<bool, String> {
    let engine: *mut roost_engine = std::ptr::without_provenance_mut(engine);
    let (actor, key) = ("smoke", "k");
    let (a, n) = (actor.as_ptr(), actor.len());
    let mut value = 0i64;
    let mut bytes = roost_bytes {
        ptr: std::ptr::null_mut(),
        len: 0,
    };
    let mut decision = UNWRITTEN_DECISION;
    let sql = r#"{"sql": "CREATE TABLE IF NOT EXISTS t (a); INSERT INTO t VALUES (1)"}"#;
    let mut answers = Vec::new();
    // SAFETY: every pointer is valid for its length.
    unsafe {
        let mut note = |what: &'static str, code: roost_result, bytes: &mut roost_bytes| {
            if code == ROOST_OK {
                take(std::mem::replace(
                    bytes,
                    roost_bytes {
                        ptr: std::ptr::null_mut(),
                        len: 0,
                    },
                ));
            }
            answers.push((what, code, last_error()));
        };
        let code = roost_counter_add(engine, a, n, key.as_ptr(), key.len(), 1, &mut value);
        note("counter_add", code, &mut bytes);
        let code = roost_kv_put(engine, a, n, key.as_ptr(), key.len(), b"v".as_ptr(), 1);
        note("kv_put", code, &mut bytes);
        let code = roost_kv_get(engine, a, n, key.as_ptr(), key.len(), &mut bytes);
        note("kv_get", code, &mut bytes);
        let code = roost_sql(engine, a, n, sql.as_ptr(), sql.len(), &mut bytes);
        note("sql", code, &mut bytes);
        let code = roost_kv_list(engine, a, n, std::ptr::null(), 0, &mut bytes);
        note("kv_list", code, &mut bytes);
        let code = roost_actor_list(engine, std::ptr::null(), 0, &mut bytes);
        note("actor_list", code, &mut bytes);
        let code = roost_ratelimit(engine, key.as_ptr(), key.len(), 5, 1000, 1, &mut decision);
        note("ratelimit", code, &mut bytes);
        let code = roost_actor_export(engine, a, n, &mut bytes);
        note("actor_export", code, &mut bytes);
    }
    let counted = answers[0].1 == ROOST_OK;
    for (what, code, detail) in answers {
        if NEVER_ON_AN_OPEN_ENGINE.contains(&code) {
            return Err(format!("{what} answered {}: {detail}", code.name()));
        }
        if code != ROOST_OK && !detail.starts_with(&format!("{}: ", code.name())) {
            return Err(format!(
                "{what} answered {} with last error {detail:?}",
                code.name()
            ));
        }
    }
    Ok(counted)
}

/// The smoke counter after a reopen: what a close must have kept.
fn reopened_count(config: &CStr) -> Result<i64, String> {
    let mut engine = std::ptr::null_mut();
    let code = unsafe { roost_engine_open(config.as_ptr(), &mut engine) };
    if code != ROOST_OK {
        return Err(format!(
            "reopening answered {}: {}",
            code.name(),
            last_error()
        ));
    }
    let (actor, key) = ("smoke", "k");
    let mut value = UNWRITTEN_I64;
    let code = unsafe {
        roost_counter_get(
            engine,
            actor.as_ptr(),
            actor.len(),
            key.as_ptr(),
            key.len(),
            &mut value,
        )
    };
    roost_engine_close(engine);
    match code {
        ROOST_OK => Ok(value),
        code => Err(format!(
            "reading after a reopen answered {}: {}",
            code.name(),
            last_error()
        )),
    }
}

/// Callbacks run for the writes [`queue_writes`] queued before a close.
static CLOSE_ANSWERS: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn count_answer(
    _user_data: *mut c_void,
    _code: roost_result,
    _value: i64,
    data: *mut u8,
    data_len: usize,
) {
    take(roost_bytes {
        ptr: data,
        len: data_len,
    });
    CLOSE_ANSWERS.fetch_add(1, Ordering::SeqCst);
}

/// Queues a few writes just before the engine is closed; returns how many
/// were accepted (each must be answered before the close returns).
fn queue_writes(engine: usize) -> usize {
    let engine: *mut roost_engine = std::ptr::without_provenance_mut(engine);
    let (actor, name) = ("smoke", "queued");
    (0..4)
        .filter(|_| {
            let code = unsafe {
                roost_counter_add_async(
                    engine,
                    actor.as_ptr(),
                    actor.len(),
                    name.as_ptr(),
                    name.len(),
                    1,
                    Some(count_answer),
                    std::ptr::null_mut(),
                )
            };
            code == ROOST_OK
        })
        .count()
}

fn open_case(
    base: &Path,
    file: &Path,
    case: usize,
    input: &ConfigInput,
    out: bool,
) -> Result<(), String> {
    let fresh = base.join(format!("case-{case}"));
    let (config, mut expect) = render(input, &fresh, file);
    expect.present(out);
    let unwritten: *mut roost_engine = std::ptr::without_provenance_mut(UNWRITTEN_PTR);
    let mut engine = unwritten;
    let out_ptr = if out {
        &mut engine
    } else {
        std::ptr::null_mut()
    };
    let config_ptr = config.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    let code = unsafe { roost_engine_open(config_ptr, out_ptr) };
    let allowed = [ROOST_INVALID_CONFIG];
    if !expect.allows(code, &allowed) {
        return Err(format!(
            "{config:?}: answered {} ({}); allowed: {expect:?}",
            code.name(),
            last_error()
        ));
    }
    if code != ROOST_OK {
        if engine != unwritten {
            return Err(format!("{config:?}: {} wrote the out-param", code.name()));
        }
        return Ok(());
    }
    if engine.is_null() || engine == unwritten {
        return Err(format!("{config:?}: ROOST_OK without a handle"));
    }
    let token = engine.addr();
    let smoked = within(Duration::from_secs(60), move || smoke(token));
    let answered_before = CLOSE_ANSWERS.load(Ordering::SeqCst);
    let queued = within(Duration::from_secs(60), move || queue_writes(token));
    within(Duration::from_secs(90), move || {
        roost_engine_close(std::ptr::without_provenance_mut(token))
    });
    let answered = CLOSE_ANSWERS.load(Ordering::SeqCst) - answered_before;
    if answered != queued {
        return Err(format!(
            "{config:?}: close returned with {answered} of {queued} queued callbacks run"
        ));
    }
    roost_engine_close(engine);
    let counted = smoked.map_err(|e| format!("{config:?}: {e}"))?;
    let config = config.expect("an engine opened without a config");
    let settings: Value = serde_json::from_slice(config.as_bytes()).unwrap_or_default();
    if counted && settings["durability"] != "memory" {
        let count = reopened_count(&config)?;
        if count != 1 {
            return Err(format!(
                "{config:?}: an acknowledged add left {count} after a close and reopen"
            ));
        }
    }
    let mut value = UNWRITTEN_I64;
    let code = unsafe { roost_counter_get(engine, b"a".as_ptr(), 1, b"n".as_ptr(), 1, &mut value) };
    if code != ROOST_CLOSED || value != UNWRITTEN_I64 {
        return Err(format!(
            "{config:?}: a call on the closed handle answered {}",
            code.name()
        ));
    }
    Ok(())
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

const NOT_UTF8_TEXT: [&str; 2] = [
    r#"{"sql": "SELECT CAST(x'ff' AS TEXT)"}"#,
    r#"{"sql": "SELECT char(55296)"}"#,
];

fn sql_code(engine: *mut roost_engine, actor: &str, request: &str) -> roost_result {
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

fn put_code(engine: *mut roost_engine, actor: &str, key: &str) -> roost_result {
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

fn get_code(engine: *mut roost_engine, actor: &str, key: &str) -> roost_result {
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

/// Flips `mask` into the last byte of every copy of `marker` in `db`.
fn corrupt(db: &[u8], marker: &[u8], mask: u8) -> Vec<u8> {
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
