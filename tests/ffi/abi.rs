//! The exported functions called as C would call them.

use roost::ffi::calls::*;
use roost::ffi::completion::*;
use roost::ffi::handles::*;
use roost::ffi::result::{roost_error_message, roost_last_error, roost_result_name};
use roost::ffi::roost_result::{self, *};
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

pub(crate) fn open(config: &str) -> Result<*mut roost_engine, roost_result> {
    let config = CString::new(config).expect("no NUL in config");
    let mut engine: *mut roost_engine = std::ptr::null_mut();
    match unsafe { roost_engine_open(config.as_ptr(), &mut engine) } {
        ROOST_OK => Ok(engine),
        code => Err(code),
    }
}

pub(crate) fn open_in(dir: &Path, durability: &str) -> *mut roost_engine {
    let config = serde_json::json!({"data_dir": dir, "durability": durability}).to_string();
    open(&config).unwrap_or_else(|code| panic!("open failed: {code:?}: {}", last_error()))
}

pub(crate) fn last_error() -> String {
    let mut buf = vec![0 as c_char; 1024];
    unsafe { roost_last_error(buf.as_mut_ptr(), buf.len()) };
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Takes ownership of a returned buffer: copies it out and frees it.
fn take(bytes: roost_bytes) -> Vec<u8> {
    let copy = if bytes.ptr.is_null() {
        Vec::new()
    } else {
        unsafe { std::slice::from_raw_parts(bytes.ptr, bytes.len) }.to_vec()
    };
    unsafe { roost_bytes_free(bytes) };
    copy
}

fn empty() -> roost_bytes {
    roost_bytes {
        ptr: std::ptr::null_mut(),
        len: 0,
    }
}

fn add(
    engine: *mut roost_engine,
    actor: &str,
    name: &str,
    delta: i64,
) -> Result<i64, roost_result> {
    let mut value = 0i64;
    let code = unsafe {
        roost_counter_add(
            engine,
            actor.as_ptr(),
            actor.len(),
            name.as_ptr(),
            name.len(),
            delta,
            &mut value,
        )
    };
    if code == ROOST_OK {
        Ok(value)
    } else {
        Err(code)
    }
}

fn get_counter(engine: *mut roost_engine, actor: &str, name: &str) -> Result<i64, roost_result> {
    let mut value = -1i64;
    match unsafe {
        roost_counter_get(
            engine,
            actor.as_ptr(),
            actor.len(),
            name.as_ptr(),
            name.len(),
            &mut value,
        )
    } {
        ROOST_OK => Ok(value),
        code => Err(code),
    }
}

fn put(engine: *mut roost_engine, actor: &str, key: &str, value: &[u8]) -> roost_result {
    unsafe {
        roost_kv_put(
            engine,
            actor.as_ptr(),
            actor.len(),
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
        )
    }
}

fn get(engine: *mut roost_engine, actor: &str, key: &str) -> Result<Vec<u8>, roost_result> {
    let mut out = empty();
    match unsafe {
        roost_kv_get(
            engine,
            actor.as_ptr(),
            actor.len(),
            key.as_ptr(),
            key.len(),
            &mut out,
        )
    } {
        ROOST_OK => Ok(take(out)),
        code => Err(code),
    }
}

fn sql(
    engine: *mut roost_engine,
    actor: &str,
    request: &str,
) -> Result<serde_json::Value, roost_result> {
    let mut out = empty();
    match unsafe {
        roost_sql(
            engine,
            actor.as_ptr(),
            actor.len(),
            request.as_ptr(),
            request.len(),
            &mut out,
        )
    } {
        ROOST_OK => Ok(serde_json::from_slice(&take(out)).expect("SQL answer is JSON")),
        code => Err(code),
    }
}

#[test]
fn version_matches_cargo_toml() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("Cargo.toml");
    let version = manifest
        .lines()
        .find_map(|line| line.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("a version line in Cargo.toml");
    let reported = unsafe { CStr::from_ptr(roost::ffi::handles::roost_version()) };
    assert_eq!(reported.to_str(), Ok(version));
}

#[test]
fn counters_kv_and_sql_work_in_memory_mode() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_in(dir.path(), "memory");
    assert_eq!(get_counter(engine, "room", "hits"), Ok(0), "never set is 0");
    assert_eq!(add(engine, "room", "hits", 1), Ok(1));
    assert_eq!(add(engine, "room", "hits", 41), Ok(42));
    assert_eq!(add(engine, "room", "hits", -2), Ok(40));
    assert_eq!(get_counter(engine, "room", "hits"), Ok(40));

    assert_eq!(get(engine, "room", "k"), Err(ROOST_NOT_FOUND));
    assert_eq!(put(engine, "room", "k", b"v\0binary\xff"), ROOST_OK);
    assert_eq!(
        get(engine, "room", "k").as_deref(),
        Ok(&b"v\0binary\xff"[..])
    );
    assert_eq!(put(engine, "room", "empty", b""), ROOST_OK);
    assert_eq!(get(engine, "room", "empty"), Ok(Vec::new()));
    let key = "k";
    assert_eq!(
        unsafe { roost_kv_delete(engine, "room".as_ptr(), 4, key.as_ptr(), key.len()) },
        ROOST_OK
    );
    assert_eq!(get(engine, "room", "k"), Err(ROOST_NOT_FOUND));
    assert_eq!(
        unsafe { roost_kv_delete(engine, "room".as_ptr(), 4, key.as_ptr(), key.len()) },
        ROOST_OK,
        "deleting an absent key is not an error"
    );

    sql(
        engine,
        "room",
        r#"{"sql": "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)"}"#,
    )
    .unwrap();
    let inserted = sql(
        engine,
        "room",
        r#"{"sql": "INSERT INTO t (name) VALUES (?), (?)", "params": ["a", "b"]}"#,
    )
    .unwrap();
    assert_eq!(inserted["results"][0]["rows_affected"], 2);
    let rows = sql(
        engine,
        "room",
        r#"{"sql": "SELECT id, name FROM t ORDER BY id"}"#,
    )
    .unwrap();
    assert_eq!(
        rows["results"][0]["columns"],
        serde_json::json!(["id", "name"])
    );
    assert_eq!(
        rows["results"][0]["rows"],
        serde_json::json!([[1, "a"], [2, "b"]])
    );
    roost_engine_close(engine);
}

#[test]
fn durable_writes_survive_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_in(dir.path(), "durable");
    assert_eq!(add(engine, "user:1", "visits", 5), Ok(5));
    assert_eq!(put(engine, "user:1", "name", b"ada"), ROOST_OK);
    sql(
        engine,
        "user:1",
        r#"{"sql": "CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi')"}"#,
    )
    .unwrap();
    roost_engine_close(engine);

    let engine = open_in(dir.path(), "durable");
    assert_eq!(get_counter(engine, "user:1", "visits"), Ok(5));
    assert_eq!(get(engine, "user:1", "name").as_deref(), Ok(&b"ada"[..]));
    let rows = sql(engine, "user:1", r#"{"sql": "SELECT body FROM notes"}"#).unwrap();
    assert_eq!(rows["results"][0]["rows"], serde_json::json!([["hi"]]));
    roost_engine_close(engine);
}

/// The engine turns SQLite's memory statistics off before SQLite starts
/// (see `store::vfs`): had they stayed on, this count would be above zero.
#[test]
fn sqlite_keeps_no_memory_statistics_in_an_embedding_process() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_in(dir.path(), "durable");
    assert_eq!(add(engine, "user:1", "visits", 1), Ok(1));
    assert_eq!(unsafe { libsql::ffi::sqlite3_memory_used() }, 0);
    roost_engine_close(engine);
}

#[test]
fn bad_configs_are_rejected_with_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_string_lossy().into_owned();
    let with = |extra: &str| format!(r#"{{"data_dir": {data_dir:?}{extra}}}"#);
    for bad in [
        with(r#", "durabilty": "memory""#),
        with(r#", "max_key_bytez": 10"#),
        with(r#", "durability": "fast""#),
        with(r#", "flush_interval_ms": -1"#),
        with(r#", "max_value_bytes": "big""#),
        "not json".to_owned(),
        "[]".to_owned(),
    ] {
        assert_eq!(open(&bad).err(), Some(ROOST_INVALID_CONFIG), "{bad}");
        assert!(
            last_error().starts_with("ROOST_INVALID_CONFIG: "),
            "{}",
            last_error()
        );
    }
    let good = with(r#", "durability": "memory", "max_key_bytes": 10, "query_timeout_ms": 100"#);
    let engine = open(&good).expect("limit keys are accepted");
    roost_engine_close(engine);

    let mut engine: *mut roost_engine = std::ptr::null_mut();
    assert_eq!(
        unsafe { roost_engine_open(std::ptr::null(), &mut engine) },
        ROOST_NULL_POINTER
    );
    let not_utf8 = b"{\"data_dir\": \"\xff\"}\0";
    assert_eq!(
        unsafe { roost_engine_open(not_utf8.as_ptr().cast(), &mut engine) },
        ROOST_INVALID_UTF8
    );
    let config = CString::new(good).unwrap();
    assert_eq!(
        unsafe { roost_engine_open(config.as_ptr(), std::ptr::null_mut()) },
        ROOST_NULL_POINTER
    );
    assert!(engine.is_null(), "out-params are untouched on failure");
}

#[test]
fn null_pointers_are_refused_before_anything_changes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_in(dir.path(), "memory");
    let (actor, name) = ("a", "n");
    let null_out = unsafe {
        roost_counter_add(
            engine,
            actor.as_ptr(),
            1,
            name.as_ptr(),
            1,
            1,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(null_out, ROOST_NULL_POINTER);
    assert_eq!(
        get_counter(engine, actor, name),
        Ok(0),
        "the add did not run"
    );

    let mut value = 7i64;
    let null_engine = unsafe {
        roost_counter_add(
            std::ptr::null_mut(),
            actor.as_ptr(),
            1,
            name.as_ptr(),
            1,
            1,
            &mut value,
        )
    };
    assert_eq!(null_engine, ROOST_NULL_POINTER);
    assert_eq!(value, 7, "out-param untouched");
    let null_actor =
        unsafe { roost_counter_add(engine, std::ptr::null(), 5, name.as_ptr(), 1, 1, &mut value) };
    assert_eq!(null_actor, ROOST_NULL_POINTER);
    let null_actor_empty =
        unsafe { roost_counter_add(engine, std::ptr::null(), 0, name.as_ptr(), 1, 1, &mut value) };
    assert_eq!(
        null_actor_empty, ROOST_INVALID_ACTOR_ID,
        "NULL with length 0 is an empty ID"
    );
    let null_value = unsafe {
        roost_kv_put(
            engine,
            actor.as_ptr(),
            1,
            name.as_ptr(),
            1,
            std::ptr::null(),
            3,
        )
    };
    assert_eq!(null_value, ROOST_NULL_POINTER);
    let null_json = unsafe {
        roost_sql(
            engine,
            actor.as_ptr(),
            1,
            std::ptr::null(),
            10,
            &mut empty(),
        )
    };
    assert_eq!(null_json, ROOST_NULL_POINTER);
    let null_out_json = unsafe {
        roost_sql(
            engine,
            actor.as_ptr(),
            1,
            b"{}".as_ptr(),
            2,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(null_out_json, ROOST_NULL_POINTER);
    let null_kv_out = unsafe {
        roost_kv_get(
            engine,
            actor.as_ptr(),
            1,
            name.as_ptr(),
            1,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(null_kv_out, ROOST_NULL_POINTER);
    assert!(last_error().contains("out_value"), "{}", last_error());
    roost_engine_close(engine);
}

#[test]
fn bad_ids_keys_and_json_get_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_in(dir.path(), "memory");
    assert_eq!(add(engine, "", "n", 1), Err(ROOST_INVALID_ACTOR_ID));
    assert_eq!(add(engine, "a\nb", "n", 1), Err(ROOST_INVALID_ACTOR_ID));
    assert_eq!(
        add(engine, &"x".repeat(513), "n", 1),
        Err(ROOST_INVALID_ACTOR_ID)
    );
    let mut value = 0;
    let bad_utf8 = [0xffu8, 0xfe];
    let code =
        unsafe { roost_counter_add(engine, bad_utf8.as_ptr(), 2, "n".as_ptr(), 1, 1, &mut value) };
    assert_eq!(code, ROOST_INVALID_UTF8);
    let code =
        unsafe { roost_counter_add(engine, "a".as_ptr(), 1, bad_utf8.as_ptr(), 2, 1, &mut value) };
    assert_eq!(code, ROOST_INVALID_UTF8);
    let code = unsafe {
        roost_kv_put(
            engine,
            "a".as_ptr(),
            1,
            bad_utf8.as_ptr(),
            2,
            "v".as_ptr(),
            1,
        )
    };
    assert_eq!(code, ROOST_INVALID_UTF8);
    assert_eq!(
        put(engine, "a", "", b"v"),
        ROOST_INVALID_REQUEST,
        "empty key"
    );
    assert_eq!(
        sql(engine, "a", r#"{"sql": 5}"#).err(),
        Some(ROOST_INVALID_REQUEST)
    );
    assert_eq!(
        sql(engine, "a", r#"{"sql": "SELECT 1""#).err(),
        Some(ROOST_INVALID_REQUEST)
    );
    assert_eq!(
        sql(engine, "a", r#"{"sql": "SELEC 1"}"#).err(),
        Some(ROOST_SQL_ERROR)
    );
    assert_eq!(
        sql(engine, "a", r#"{"sql": "ATTACH 'x.db' AS x"}"#).err(),
        Some(ROOST_SQL_DENIED)
    );
    let not_utf8_json = b"{\"sql\": \"SELECT '\xff'\"}";
    let code = unsafe {
        roost_sql(
            engine,
            "a".as_ptr(),
            1,
            not_utf8_json.as_ptr(),
            not_utf8_json.len(),
            &mut empty(),
        )
    };
    assert_eq!(code, ROOST_INVALID_UTF8);
    assert_eq!(add(engine, "a", "n", i64::MAX), Ok(i64::MAX));
    assert_eq!(
        add(engine, "a", "n", 1),
        Err(ROOST_INVALID_REQUEST),
        "overflow"
    );
    assert_eq!(get_counter(engine, "a", "n"), Ok(i64::MAX));
    roost_engine_close(engine);
}

#[test]
fn oversized_keys_values_and_requests_are_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "data_dir": dir.path(), "durability": "memory",
        "max_key_bytes": 8, "max_value_bytes": 16, "max_body_bytes": 64,
    });
    let engine = open(&config.to_string()).unwrap();
    assert_eq!(put(engine, "a", "12345678", &[1; 16]), ROOST_OK);
    assert_eq!(put(engine, "a", "123456789", b"v"), ROOST_TOO_LARGE);
    assert_eq!(put(engine, "a", "k", &[1; 17]), ROOST_TOO_LARGE);
    assert_eq!(add(engine, "a", "123456789", 1), Err(ROOST_TOO_LARGE));
    let long_sql = format!(r#"{{"sql": "SELECT '{}'"}}"#, "x".repeat(64));
    assert_eq!(sql(engine, "a", &long_sql).err(), Some(ROOST_TOO_LARGE));
    assert!(
        last_error().starts_with("ROOST_TOO_LARGE"),
        "{}",
        last_error()
    );
    roost_engine_close(engine);
}

#[test]
fn double_close_and_use_after_close_are_answered_not_crashed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_in(dir.path(), "durable");
    assert_eq!(add(engine, "a", "n", 1), Ok(1));
    roost_engine_close(engine);
    roost_engine_close(engine);
    roost_engine_close(std::ptr::null_mut());
    assert_eq!(add(engine, "a", "n", 1), Err(ROOST_CLOSED));
    assert_eq!(put(engine, "a", "k", b"v"), ROOST_CLOSED);
    let other = open_in(dir.path(), "durable");
    assert_ne!(other, engine, "handles are never reused");
    assert_eq!(
        add(engine, "a", "n", 1),
        Err(ROOST_CLOSED),
        "the old handle stays closed"
    );
    assert_eq!(add(other, "a", "n", 1), Ok(2));
    roost_engine_close(other);
    let never_opened = 0xdead_beef_usize as *mut roost_engine;
    assert_eq!(add(never_opened, "a", "n", 1), Err(ROOST_CLOSED));
}

#[test]
fn compare_and_set_uses_versions() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_in(dir.path(), "memory");
    let (actor, key) = ("cas", "k");
    let put_if = |value: &[u8], expected: i64, out: &mut i64| unsafe {
        roost_kv_put_if(
            engine,
            actor.as_ptr(),
            actor.len(),
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            expected,
            out,
        )
    };
    let mut first = 0;
    assert_eq!(
        put_if(b"one", roost::ffi::ROOST_VERSION_ABSENT, &mut first),
        ROOST_OK
    );
    assert!(first > 0);
    let mut unchanged = -5;
    assert_eq!(put_if(b"x", 0, &mut unchanged), ROOST_VERSION_MISMATCH);
    assert_eq!(unchanged, -5);
    assert_eq!(
        put_if(b"x", first + 100, &mut unchanged),
        ROOST_VERSION_MISMATCH
    );
    assert_eq!(put_if(b"x", -3, &mut unchanged), ROOST_INVALID_REQUEST);
    let mut any = 0;
    assert_eq!(
        put_if(b"x", roost::ffi::ROOST_VERSION_ANY, &mut any),
        ROOST_OK
    );
    assert!(any > first);
    let mut second = 0;
    assert_eq!(put_if(b"two", any, &mut second), ROOST_OK);
    assert!(second > first);

    let mut out = empty();
    let mut version = 0;
    let code = unsafe {
        roost_kv_get_versioned(
            engine,
            actor.as_ptr(),
            3,
            key.as_ptr(),
            1,
            &mut out,
            &mut version,
        )
    };
    assert_eq!(code, ROOST_OK);
    assert_eq!(take(out), b"two");
    assert_eq!(version, second);

    let mut existed = false;
    let stale = unsafe {
        roost_kv_delete_if(
            engine,
            actor.as_ptr(),
            3,
            key.as_ptr(),
            1,
            first,
            &mut existed,
        )
    };
    assert_eq!(stale, ROOST_VERSION_MISMATCH);
    let current = unsafe {
        roost_kv_delete_if(
            engine,
            actor.as_ptr(),
            3,
            key.as_ptr(),
            1,
            second,
            &mut existed,
        )
    };
    assert_eq!(current, ROOST_OK);
    assert!(existed);
    roost_engine_close(engine);
}

#[test]
fn kv_list_actor_list_info_and_delete_answer_json() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_in(dir.path(), "durable");
    for key in ["a/1", "a/2", "a/3", "b/1"] {
        assert_eq!(put(engine, "lister", key, key.as_bytes()), ROOST_OK);
    }
    assert_eq!(put(engine, "lister", "a/bin", b"\xff"), ROOST_OK);
    let list = |query: &str| -> serde_json::Value {
        let mut out = empty();
        let code = unsafe {
            roost_kv_list(
                engine,
                "lister".as_ptr(),
                6,
                query.as_ptr(),
                query.len(),
                &mut out,
            )
        };
        assert_eq!(code, ROOST_OK, "{}", last_error());
        serde_json::from_slice(&take(out)).unwrap()
    };
    let page = list(r#"{"prefix": "a/", "limit": 2, "values": true}"#);
    assert_eq!(page["items"][0]["key"], "a/1");
    assert_eq!(page["items"][0]["value"], "a/1");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    let cursor = page["cursor"].as_str().expect("more pages").to_owned();
    let rest = list(&format!(
        r#"{{"prefix": "a/", "cursor": {cursor:?}, "values": true}}"#
    ));
    assert_eq!(rest["items"][0]["key"], "a/3");
    assert_eq!(
        rest["items"][1]["value"],
        serde_json::json!({"base64": "/w=="})
    );
    assert!(rest["cursor"].is_null());
    assert_eq!(
        list("")["items"].as_array().map(Vec::len),
        Some(5),
        "empty query lists all"
    );
    let mut out = empty();
    let bad = unsafe {
        roost_kv_list(
            engine,
            "lister".as_ptr(),
            6,
            b"{\"x\":1}".as_ptr(),
            7,
            &mut out,
        )
    };
    assert_eq!(bad, ROOST_INVALID_REQUEST);

    assert_eq!(add(engine, "other", "n", 1), Ok(1));
    let mut out = empty();
    assert_eq!(
        unsafe { roost_actor_list(engine, std::ptr::null(), 0, &mut out) },
        ROOST_OK
    );
    let actors: serde_json::Value = serde_json::from_slice(&take(out)).unwrap();
    let ids: Vec<&str> = actors["actors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(ids, ["lister", "other"]);
    let query = r#"{"limit": 1}"#;
    let mut out = empty();
    assert_eq!(
        unsafe { roost_actor_list(engine, query.as_ptr(), query.len(), &mut out) },
        ROOST_OK
    );
    let first: serde_json::Value = serde_json::from_slice(&take(out)).unwrap();
    assert_eq!(first["cursor"], "lister");

    let mut out = empty();
    assert_eq!(
        unsafe { roost_actor_info(engine, "lister".as_ptr(), 6, &mut out) },
        ROOST_OK
    );
    let info: serde_json::Value = serde_json::from_slice(&take(out)).unwrap();
    assert_eq!(info["durability"], "durable");
    assert_eq!(info["id"], "lister");

    let mut existed = false;
    assert_eq!(
        unsafe { roost_actor_delete(engine, "lister".as_ptr(), 6, &mut existed) },
        ROOST_OK
    );
    assert!(existed);
    let mut out = empty();
    assert_eq!(
        unsafe { roost_actor_info(engine, "lister".as_ptr(), 6, &mut out) },
        ROOST_NOT_FOUND
    );
    assert_eq!(get(engine, "lister", "a/1"), Err(ROOST_NOT_FOUND));
    roost_engine_close(engine);
}

#[test]
fn export_and_import_move_an_actor() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_in(dir.path(), "durable");
    assert_eq!(add(engine, "source", "n", 7), Ok(7));
    assert_eq!(put(engine, "source", "k", b"moved"), ROOST_OK);
    let mut db = empty();
    assert_eq!(
        unsafe { roost_actor_export(engine, "source".as_ptr(), 6, &mut db) },
        ROOST_OK
    );
    let file = take(db);
    assert!(file.starts_with(b"SQLite format 3\0"));
    let code = unsafe { roost_actor_import(engine, "copy".as_ptr(), 4, file.as_ptr(), file.len()) };
    assert_eq!(code, ROOST_OK, "{}", last_error());
    assert_eq!(get_counter(engine, "copy", "n"), Ok(7));
    assert_eq!(get(engine, "copy", "k").as_deref(), Ok(&b"moved"[..]));

    let garbage = b"not a database at all";
    let code =
        unsafe { roost_actor_import(engine, "copy".as_ptr(), 4, garbage.as_ptr(), garbage.len()) };
    assert_eq!(code, ROOST_INVALID_REQUEST);
    assert_eq!(
        get_counter(engine, "copy", "n"),
        Ok(7),
        "a bad import changes nothing"
    );
    let mut none = empty();
    assert_eq!(
        unsafe { roost_actor_export(engine, "nobody".as_ptr(), 6, &mut none) },
        ROOST_NOT_FOUND
    );
    assert_eq!(
        unsafe { roost_actor_export(engine, "source".as_ptr(), 6, std::ptr::null_mut()) },
        ROOST_NULL_POINTER
    );
    roost_engine_close(engine);
    let leftovers = std::fs::read_dir(dir.path().join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "no temporary files are left behind");
}

#[test]
fn error_texts_truncate_and_report_their_full_length() {
    let mut buf = [0 as c_char; 8];
    let full = unsafe { roost_error_message(ROOST_NOT_FOUND as u32, buf.as_mut_ptr(), buf.len()) };
    assert_eq!(full, "not found".len());
    assert_eq!(
        unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str(),
        Ok("not fou")
    );
    assert_eq!(
        unsafe { roost_error_message(0, std::ptr::null_mut(), 0) },
        "success".len()
    );
    let unknown = unsafe { roost_error_message(9999, buf.as_mut_ptr(), buf.len()) };
    assert_eq!(unknown, "unknown result code".len());
    let name = unsafe { CStr::from_ptr(roost_result_name(ROOST_CLOSED as u32)) };
    assert_eq!(name.to_str(), Ok("ROOST_CLOSED"));
    assert!(roost_result_name(9999).is_null());

    assert_eq!(
        add(std::ptr::null_mut(), "a", "n", 1),
        Err(ROOST_NULL_POINTER)
    );
    let detail = last_error();
    assert_eq!(detail, "ROOST_NULL_POINTER: engine is NULL");
    let needed = unsafe { roost_last_error(std::ptr::null_mut(), 0) };
    assert_eq!(needed, detail.len());
}

#[test]
fn bytes_free_accepts_empty_and_release_resets() {
    unsafe { roost_bytes_free(empty()) };
    unsafe { roost_bytes_release(std::ptr::null_mut()) };
    let dir = tempfile::tempdir().unwrap();
    let engine = open_in(dir.path(), "memory");
    assert_eq!(put(engine, "a", "k", b"value"), ROOST_OK);
    let mut out = empty();
    assert_eq!(
        unsafe { roost_kv_get(engine, "a".as_ptr(), 1, "k".as_ptr(), 1, &mut out) },
        ROOST_OK
    );
    assert_eq!(out.len, 5);
    unsafe { roost_bytes_release(&mut out) };
    assert!(out.ptr.is_null());
    assert_eq!(out.len, 0);
    unsafe { roost_bytes_release(&mut out) };
    roost_engine_close(engine);
}

/// Collects callback answers: `(code, value, data)`.
#[derive(Default)]
struct Answers {
    got: Mutex<Vec<(roost_result, i64, Vec<u8>)>>,
    changed: Condvar,
}

impl Answers {
    fn wait_for(&self, count: usize) -> Vec<(roost_result, i64, Vec<u8>)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = self.got.lock().unwrap();
        while got.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "only {} of {count} callbacks arrived",
                got.len()
            );
            got = self.changed.wait_timeout(got, left).unwrap().0;
        }
        got.clone()
    }

    fn user_data(&self) -> *mut c_void {
        (self as *const Answers).cast_mut().cast()
    }
}

unsafe extern "C" fn collect(
    user_data: *mut c_void,
    result: roost_result,
    value: i64,
    data: *mut u8,
    len: usize,
) {
    let answers = unsafe { &*user_data.cast::<Answers>() };
    let data = take(roost_bytes { ptr: data, len });
    answers.got.lock().unwrap().push((result, value, data));
    answers.changed.notify_all();
}

#[test]
fn async_calls_answer_each_callback_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_in(dir.path(), "durable");
    let answers = Answers::default();
    let ops = 300;
    for _ in 0..ops {
        let code = unsafe {
            roost_counter_add_async(
                engine,
                "async".as_ptr(),
                5,
                "n".as_ptr(),
                1,
                1,
                Some(collect),
                answers.user_data(),
            )
        };
        assert_eq!(code, ROOST_OK);
    }
    let got = answers.wait_for(ops);
    let mut values: Vec<i64> = got
        .iter()
        .map(|(code, value, _)| {
            assert_eq!(*code, ROOST_OK);
            *value
        })
        .collect();
    values.sort_unstable();
    assert_eq!(values, (1..=ops as i64).collect::<Vec<_>>());

    let answers = Answers::default();
    let (key, value) = ("k", b"durable value");
    let code = unsafe {
        roost_kv_put_async(
            engine,
            "async".as_ptr(),
            5,
            key.as_ptr(),
            1,
            value.as_ptr(),
            value.len(),
            Some(collect),
            answers.user_data(),
        )
    };
    assert_eq!(code, ROOST_OK);
    answers.wait_for(1);
    for (key, want) in [("k", ROOST_OK), ("absent", ROOST_NOT_FOUND)] {
        let code = unsafe {
            roost_kv_get_async(
                engine,
                "async".as_ptr(),
                5,
                key.as_ptr(),
                key.len(),
                Some(collect),
                answers.user_data(),
            )
        };
        assert_eq!(code, ROOST_OK);
        let got = answers.wait_for(if want == ROOST_OK { 2 } else { 3 });
        let (code, _, data) = got.last().unwrap();
        assert_eq!(*code, want);
        if want == ROOST_OK {
            assert_eq!(data, value);
        } else {
            assert!(!data.is_empty(), "failures carry their detail");
        }
    }
    let request = r#"{"sql": "SELECT 40 + 2 AS answer"}"#;
    let code = unsafe {
        roost_sql_async(
            engine,
            "async".as_ptr(),
            5,
            request.as_ptr(),
            request.len(),
            Some(collect),
            answers.user_data(),
        )
    };
    assert_eq!(code, ROOST_OK);
    let got = answers.wait_for(4);
    let answer: serde_json::Value = serde_json::from_slice(&got[3].2).unwrap();
    assert_eq!(answer["results"][0]["rows"][0][0], 42);
    roost_engine_close(engine);
}

#[test]
fn async_refusals_return_an_error_and_skip_the_callback() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_in(dir.path(), "memory");
    let answers = Answers::default();
    let refused = [
        unsafe {
            roost_counter_add_async(
                engine,
                "".as_ptr(),
                0,
                "n".as_ptr(),
                1,
                1,
                Some(collect),
                answers.user_data(),
            )
        },
        unsafe {
            roost_counter_add_async(
                engine,
                "a".as_ptr(),
                1,
                "n".as_ptr(),
                1,
                1,
                None,
                answers.user_data(),
            )
        },
        unsafe {
            roost_kv_put_async(
                engine,
                "a".as_ptr(),
                1,
                "".as_ptr(),
                0,
                "v".as_ptr(),
                1,
                Some(collect),
                answers.user_data(),
            )
        },
        unsafe {
            roost_sql_async(
                engine,
                "a".as_ptr(),
                1,
                "{".as_ptr(),
                1,
                Some(collect),
                answers.user_data(),
            )
        },
        unsafe {
            roost_counter_add_async(
                std::ptr::null_mut(),
                "a".as_ptr(),
                1,
                "n".as_ptr(),
                1,
                1,
                Some(collect),
                answers.user_data(),
            )
        },
    ];
    assert_eq!(
        refused,
        [
            ROOST_INVALID_ACTOR_ID,
            ROOST_NULL_POINTER,
            ROOST_INVALID_REQUEST,
            ROOST_INVALID_REQUEST,
            ROOST_NULL_POINTER
        ]
    );
    roost_engine_close(engine);
    let closed = unsafe {
        roost_counter_add_async(
            engine,
            "a".as_ptr(),
            1,
            "n".as_ptr(),
            1,
            1,
            Some(collect),
            answers.user_data(),
        )
    };
    assert_eq!(closed, ROOST_CLOSED);
    assert!(answers.got.lock().unwrap().is_empty());
}

/// Tries a blocking call from inside a callback and records its code.
unsafe extern "C" fn call_back_in(
    user_data: *mut c_void,
    _: roost_result,
    _: i64,
    data: *mut u8,
    len: usize,
) {
    let (engine, answers) = unsafe { *user_data.cast::<(*mut roost_engine, *const Answers)>() };
    unsafe { roost_bytes_free(roost_bytes { ptr: data, len }) };
    let nested = add(engine, "a", "n", 1).err().unwrap_or(ROOST_OK);
    let answers = unsafe { &*answers };
    answers.got.lock().unwrap().push((nested, 0, Vec::new()));
    answers.changed.notify_all();
}

#[test]
fn blocking_calls_inside_a_callback_are_refused_not_deadlocked() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_in(dir.path(), "memory");
    let answers = Answers::default();
    let mut context = (engine, &answers as *const Answers);
    let code = unsafe {
        roost_counter_add_async(
            engine,
            "a".as_ptr(),
            1,
            "n".as_ptr(),
            1,
            1,
            Some(call_back_in),
            (&mut context as *mut (*mut roost_engine, *const Answers)).cast(),
        )
    };
    assert_eq!(code, ROOST_OK);
    assert_eq!(answers.wait_for(1)[0].0, ROOST_WOULD_DEADLOCK);
    assert_eq!(
        get_counter(engine, "a", "n"),
        Ok(1),
        "only the async add ran"
    );
    roost_engine_close(engine);
}

#[test]
fn closing_waits_for_queued_async_writes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_in(dir.path(), "buffered");
    let answers = Answers::default();
    for i in 0..200 {
        let key = format!("k{i}");
        let code = unsafe {
            roost_kv_put_async(
                engine,
                "q".as_ptr(),
                1,
                key.as_ptr(),
                key.len(),
                b"v".as_ptr(),
                1,
                Some(collect),
                answers.user_data(),
            )
        };
        assert_eq!(code, ROOST_OK);
    }
    roost_engine_close(engine);
    assert_eq!(
        answers.got.lock().unwrap().len(),
        200,
        "every callback ran before close returned"
    );
    let engine = open_in(dir.path(), "buffered");
    assert_eq!(get(engine, "q", "k199").as_deref(), Ok(&b"v"[..]));
    roost_engine_close(engine);
}

#[test]
fn engine_handles_are_shared_across_threads() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_in(dir.path(), "durable") as usize;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..50 {
                    add(engine as *mut roost_engine, "shared", "n", 1).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(
        get_counter(engine as *mut roost_engine, "shared", "n"),
        Ok(200)
    );
    roost_engine_close(engine as *mut roost_engine);
}

#[test]
fn every_result_code_has_a_name_and_a_message() {
    for code in roost_result::all() {
        let name = unsafe { CStr::from_ptr(roost_result_name(code as u32)) };
        assert!(name.to_str().unwrap().starts_with("ROOST_"));
        let len = unsafe { roost_error_message(code as u32, std::ptr::null_mut(), 0) };
        assert!(len > 0);
    }
}

#[test]
fn closing_while_other_threads_call_answers_ok_or_closed() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open_in(dir.path(), "buffered") as usize;
    let callers: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                let actor = format!("racer-{i}");
                let mut closed_seen = false;
                for _ in 0..2000 {
                    match add(engine as *mut roost_engine, &actor, "n", 1) {
                        Ok(_) => assert!(!closed_seen, "no success after ROOST_CLOSED"),
                        Err(ROOST_CLOSED) => closed_seen = true,
                        Err(other) => panic!("unexpected {other:?}: {}", last_error()),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    roost_engine_close(engine as *mut roost_engine);
    for caller in callers {
        caller.join().unwrap();
    }
}
