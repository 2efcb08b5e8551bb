//! Generated engine configurations for `roost_engine_open`, and one case
//! of opening, smoke-testing, closing and reopening an engine.

use super::expect::Expect;
use super::generators::invalid_utf8;
use super::outs::take;
use super::requests::{json_leaf, json_value, MALFORMED_JSON};
use super::run::within;
use super::{UNWRITTEN_DECISION, UNWRITTEN_I64, UNWRITTEN_PTR};
use crate::abi::last_error;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use roost::ffi::calls::*;
use roost::ffi::completion::*;
use roost::ffi::handles::*;
use roost::ffi::ratelimit::roost_ratelimit;
use roost::ffi::roost_result::{self, *};
use serde_json::{json, Map, Value};
use std::ffi::{c_void, CStr, CString};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Where a generated configuration puts its data.
#[derive(Debug, Clone)]
pub(super) enum DataDir {
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
pub(super) enum ConfigInput {
    Null,
    /// Random text (without NUL); a JSON object gets a fresh `data_dir`.
    Raw(Vec<u8>),
    Object {
        fields: Vec<Setting>,
        data_dir: DataDir,
        stray: Option<Value>,
    },
}

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

pub(super) fn config_input() -> BoxedStrategy<ConfigInput> {
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

pub(super) fn open_case(
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
