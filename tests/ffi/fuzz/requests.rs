//! Generators of request bodies: JSON values and shapes, the SQL corpus,
//! malformed JSON text, and database files to import.

use super::args::Arg;
use super::generators::{misuse, passed};
use super::{MAX_ACTOR_BYTES, MAX_BODY_BYTES};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_json::{json, Map, Value};

pub(super) fn json_leaf() -> BoxedStrategy<Value> {
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

pub(super) fn json_value() -> BoxedStrategy<Value> {
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
pub(super) const ESCAPED_FILE: &str = "/tmp/roost-fuzz-escaped.db";

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

pub(super) fn sql_shape() -> BoxedStrategy<Value> {
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

pub(super) fn kv_list_shape() -> BoxedStrategy<Value> {
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

pub(super) fn actor_list_shape() -> BoxedStrategy<Value> {
    object_of(vec![
        ("prefix", text_value(vec!["", "fuzz", "f", "\u{fc}", "\0"])),
        ("limit", limit_value()),
        (
            "cursor",
            text_value(vec!["", "fuzz-a", "zzz", "\u{10ffff}"]),
        ),
    ])
}

pub(super) const MALFORMED_JSON: &[&str] = &[
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
pub(super) fn json_text(shapes: BoxedStrategy<Value>) -> BoxedStrategy<Arg> {
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
pub(super) fn database(sample: Vec<u8>) -> BoxedStrategy<Arg> {
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
