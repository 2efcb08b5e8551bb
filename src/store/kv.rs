//! The KV API over the reserved `_roost_kv` table.
//!
//! Every write takes a new version from the actor-wide `kv_clock`, so a
//! version is never reused, even after a delete and re-create: a
//! compare-and-set against an old version can never succeed by accident.

use super::{as_i64, ActorDb};
use crate::error::EngineError;
use crate::store::block_on;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as CURSOR_B64;
use base64::Engine as _;
use libsql::Value;
use serde::Serialize;

/// Most items one list call returns.
pub const MAX_LIST_LIMIT: usize = 1000;
/// Items a list call returns when no limit is given.
pub const DEFAULT_LIST_LIMIT: usize = 100;

/// A stored value and its version.
#[derive(Debug, Clone, PartialEq)]
pub struct KvEntry {
    pub value: Vec<u8>,
    pub version: i64,
}

/// The precondition of a write (HTTP `If-Match` / `If-None-Match: *`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Precondition {
    #[default]
    None,
    /// The key must currently hold this version.
    Version(i64),
    /// The key must not exist.
    Absent,
}

/// Which keys a list call visits; the HTTP query string and the C ABI's
/// JSON both deserialize straight into it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListQuery {
    pub prefix: Option<String>,
    pub start: Option<String>,
    pub end: Option<String>,
    pub limit: Option<usize>,
    pub reverse: bool,
    pub cursor: Option<String>,
    pub values: bool,
}

/// One listed key.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ListItem {
    pub key: String,
    pub version: i64,
    /// Only with `values=true`: text if UTF-8, else `{"base64": "..."}`.
    #[schema(value_type = Option<Object>)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "value_as_text"
    )]
    pub value: Option<Vec<u8>>,
}

/// A page of keys and the cursor for the next one (`None` at the end).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct ListPage {
    pub items: Vec<ListItem>,
    pub cursor: Option<String>,
}

// Listed values are shown as UTF-8 text when they are, else as base64.
fn value_as_text<S: serde::Serializer>(value: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    match value.as_deref().map(std::str::from_utf8) {
        Some(Ok(text)) => s.serialize_str(text),
        Some(Err(_)) => {
            let mut map = s.serialize_map(Some(1))?;
            let b64 = base64::engine::general_purpose::STANDARD
                .encode(value.as_deref().unwrap_or_default());
            map.serialize_entry("base64", &b64)?;
            map.end()
        }
        None => s.serialize_none(),
    }
}

impl ActorDb {
    pub fn kv_get(&mut self, key: &str) -> Result<Option<KvEntry>, EngineError> {
        let row = self.query_row(
            "SELECT value, version FROM _roost_kv WHERE key = ?1",
            [Value::Blob(key.as_bytes().to_vec())],
        )?;
        match row.as_deref() {
            Some([Value::Blob(value), version]) => Ok(Some(KvEntry {
                value: value.clone(),
                version: as_i64(version)?,
            })),
            Some(other) => Err(EngineError::Internal(format!("corrupt kv row {other:?}"))),
            None => Ok(None),
        }
    }

    /// Stores `value` under `key` if `precondition` holds; returns the new version.
    pub fn kv_put(
        &mut self,
        key: &str,
        value: &[u8],
        precondition: Precondition,
    ) -> Result<i64, EngineError> {
        self.check_precondition(key, precondition)?;
        let version = self.next_version()?;
        self.exec(
            "INSERT INTO _roost_kv (key, value, version) VALUES (?1, ?2, ?3)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version",
            vec![
                Value::Blob(key.as_bytes().to_vec()),
                Value::Blob(value.to_vec()),
                Value::Integer(version),
            ],
        )?;
        Ok(version)
    }

    /// Deletes `key` if `precondition` holds; returns whether it existed.
    pub fn kv_delete(
        &mut self,
        key: &str,
        precondition: Precondition,
    ) -> Result<bool, EngineError> {
        self.check_precondition(key, precondition)?;
        let deleted = self.exec(
            "DELETE FROM _roost_kv WHERE key = ?1",
            [Value::Blob(key.as_bytes().to_vec())],
        )?;
        Ok(deleted > 0)
    }

    fn check_precondition(
        &mut self,
        key: &str,
        precondition: Precondition,
    ) -> Result<(), EngineError> {
        if precondition == Precondition::None {
            return Ok(());
        }
        let current = self
            .query_row(
                "SELECT version FROM _roost_kv WHERE key = ?1",
                [Value::Blob(key.as_bytes().to_vec())],
            )?
            .and_then(|row| row.into_iter().next());
        let current = current.as_ref().map(as_i64).transpose()?;
        match (precondition, current) {
            (Precondition::Version(want), Some(have)) if want == have => Ok(()),
            (Precondition::Version(want), Some(have)) => Err(EngineError::VersionMismatch(
                format!("key is at version {have}, not {want}"),
            )),
            (Precondition::Version(want), None) => Err(EngineError::VersionMismatch(format!(
                "key does not exist (expected version {want})"
            ))),
            (Precondition::Absent, Some(have)) => Err(EngineError::VersionMismatch(format!(
                "key already exists at version {have}"
            ))),
            _ => Ok(()),
        }
    }

    fn next_version(&mut self) -> Result<i64, EngineError> {
        let row = self.query_row(
            "UPDATE _roost_meta SET value = value + 1 WHERE key = 'kv_clock' RETURNING value",
            (),
        )?;
        match row.as_deref() {
            Some([clock]) => as_i64(clock),
            _ => Err(EngineError::Internal("kv_clock row is missing".into())),
        }
    }

    pub fn kv_list(&mut self, query: &ListQuery) -> Result<ListPage, EngineError> {
        let limit = query
            .limit
            .unwrap_or(DEFAULT_LIST_LIMIT)
            .clamp(1, MAX_LIST_LIMIT);
        let mut clauses: Vec<&str> = Vec::new();
        let mut params: Vec<Value> = Vec::new();
        let mut bound = |clause: &'static str, key: Vec<u8>, params: &mut Vec<Value>| {
            clauses.push(clause);
            params.push(Value::Blob(key));
        };
        if let Some(prefix) = query.prefix.as_deref().filter(|p| !p.is_empty()) {
            bound("key >= ?", prefix.as_bytes().to_vec(), &mut params);
            if let Some(upper) = prefix_successor(prefix.as_bytes()) {
                bound("key < ?", upper, &mut params);
            }
        }
        if let Some(start) = &query.start {
            bound("key >= ?", start.as_bytes().to_vec(), &mut params);
        }
        if let Some(end) = &query.end {
            bound("key < ?", end.as_bytes().to_vec(), &mut params);
        }
        if let Some(cursor) = &query.cursor {
            let after = decode_cursor(cursor)?;
            let clause = if query.reverse { "key < ?" } else { "key > ?" };
            bound(clause, after, &mut params);
        }
        let columns = if query.values {
            "key, version, value"
        } else {
            "key, version"
        };
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let order = if query.reverse { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT {columns} FROM _roost_kv {filter} ORDER BY key {order} LIMIT {}",
            limit + 1
        );
        let mut items = Vec::with_capacity(limit.min(64));
        let mut more = false;
        // A page also ends early once its values fill the response budget.
        let mut budget = self.limits().max_result_bytes;
        {
            let mut rows = block_on(self.conn.query(&sql, params)).map_err(|e| self.error(e))?;
            while let Some(row) = block_on(rows.next()).map_err(|e| self.error(e))? {
                if items.len() == limit || (budget == 0 && !items.is_empty()) {
                    more = true;
                    break;
                }
                let key = match row.get_value(0).map_err(|e| self.error(e))? {
                    Value::Blob(k) => String::from_utf8(k)
                        .map_err(|_| EngineError::Internal("kv key is not UTF-8".into()))?,
                    other => {
                        return Err(EngineError::Internal(format!("corrupt kv key {other:?}")))
                    }
                };
                let version = as_i64(&row.get_value(1).map_err(|e| self.error(e))?)?;
                let value = if query.values {
                    match row.get_value(2).map_err(|e| self.error(e))? {
                        Value::Blob(v) => Some(v),
                        other => {
                            return Err(EngineError::Internal(format!(
                                "corrupt kv value {other:?}"
                            )))
                        }
                    }
                } else {
                    None
                };
                let size = key.len() + value.as_ref().map_or(0, Vec::len) + 32;
                budget = budget.saturating_sub(size);
                items.push(ListItem {
                    key,
                    version,
                    value,
                });
            }
        }
        let cursor = match (more, items.last()) {
            (true, Some(last)) => Some(CURSOR_B64.encode(last.key.as_bytes())),
            _ => None,
        };
        Ok(ListPage { items, cursor })
    }
}

/// The smallest byte string greater than every string starting with `prefix`.
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < 0xff {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}

fn decode_cursor(cursor: &str) -> Result<Vec<u8>, EngineError> {
    CURSOR_B64
        .decode(cursor.as_bytes())
        .map_err(|_| EngineError::InvalidRequest("cursor is not one this server issued".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prefix_successor_carries_over_0xff() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(&[0xff, 0xff]), None);
    }

    proptest! {
        #[test]
        fn foreign_cursors_never_panic(cursor in "\\PC{0,64}") {
            let _ = decode_cursor(&cursor);
        }

        #[test]
        fn successor_bounds_every_extension(prefix in proptest::collection::vec(any::<u8>(), 1..8), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
            if let Some(upper) = prefix_successor(&prefix) {
                let mut key = prefix.clone();
                key.extend(tail);
                prop_assert!(key < upper);
                prop_assert!(prefix < upper);
            }
        }
    }
}
