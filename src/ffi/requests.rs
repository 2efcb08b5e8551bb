//! Translation between C arguments and engine requests: the JSON request
//! shapes (the same as the HTTP API's), preconditions, and JSON answers.

use super::result::{roost_result, Failure};
use crate::config::Limits;
use crate::engine::{ActorInfo, ActorPage};
use crate::store::kv::{ListQuery, Precondition};
use crate::store::sql::SqlRequest;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// `expected_version` of the compare-and-set calls that means "the key
/// must not exist". Versions of stored keys start at 1.
pub const ROOST_VERSION_ABSENT: i64 = 0;

/// `expected_version` of the compare-and-set calls that means "whatever
/// the version": the write is unconditional, and the call still reports
/// the new version (`roost_kv_put_if`) or whether the key existed
/// (`roost_kv_delete_if`).
pub const ROOST_VERSION_ANY: i64 = -1;

/// Parses a JSON request body within the body-size limit.
pub fn json_request<T: DeserializeOwned>(
    raw: &[u8],
    limits: &Limits,
    what: &str,
) -> Result<T, Failure> {
    if raw.len() > limits.max_body_bytes {
        return Err(Failure::new(
            roost_result::ROOST_TOO_LARGE,
            format!(
                "{what} is {} bytes; the limit is {}",
                raw.len(),
                limits.max_body_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(raw).map_err(|e| {
        Failure::new(
            roost_result::ROOST_INVALID_UTF8,
            format!("{what} is not valid UTF-8 ({e})"),
        )
    })?;
    serde_json::from_str(text)
        .map_err(|e| Failure::new(roost_result::ROOST_INVALID_REQUEST, format!("{what}: {e}")))
}

/// A SQL request: `{"sql", "params"?}` or `{"statements": [...]}`.
pub fn sql_request(raw: &[u8], limits: &Limits) -> Result<SqlRequest, Failure> {
    json_request(raw, limits, "SQL request")
}

/// `{"prefix", "start", "end", "limit", "reverse", "cursor", "values"}`.
pub fn list_query(raw: &[u8], limits: &Limits) -> Result<ListQuery, Failure> {
    if raw.is_empty() {
        return Ok(ListQuery::default());
    }
    json_request(raw, limits, "list query")
}

/// The actor list query: `{"prefix", "limit", "cursor"}`, the cursor being
/// the one a previous page returned (the last ID it listed).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActorListQuery {
    pub prefix: String,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

pub fn actor_list_query(raw: &[u8], limits: &Limits) -> Result<ActorListQuery, Failure> {
    if raw.is_empty() {
        Ok(ActorListQuery::default())
    } else {
        json_request(raw, limits, "actor list query")
    }
}

/// The precondition named by a compare-and-set call's `expected_version`.
pub fn precondition(expected_version: i64) -> Result<Precondition, Failure> {
    match expected_version {
        ROOST_VERSION_ANY => Ok(Precondition::None),
        ROOST_VERSION_ABSENT => Ok(Precondition::Absent),
        v if v > 0 => Ok(Precondition::Version(v)),
        v => Err(Failure::new(
            roost_result::ROOST_INVALID_REQUEST,
            format!(
                "expected_version {v} is not a version, ROOST_VERSION_ABSENT or ROOST_VERSION_ANY"
            ),
        )),
    }
}

/// Serializes an answer for the caller.
pub fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, Failure> {
    serde_json::to_vec(value).map_err(|e| {
        Failure::new(
            roost_result::ROOST_INTERNAL,
            format!("cannot encode the answer as JSON: {e}"),
        )
    })
}

#[derive(Serialize)]
struct ListedActor<'a> {
    id: &'a str,
    size_bytes: u64,
}

#[derive(Serialize)]
struct ActorList<'a> {
    actors: Vec<ListedActor<'a>>,
    cursor: Option<&'a str>,
}

/// `{"actors": [{"id", "size_bytes"}], "cursor": null or the last ID}`.
pub fn actor_page_json(page: &ActorPage) -> Result<Vec<u8>, Failure> {
    to_json(&ActorList {
        actors: page
            .actors
            .iter()
            .map(|(id, size_bytes)| ListedActor {
                id,
                size_bytes: *size_bytes,
            })
            .collect(),
        cursor: page.cursor.as_deref(),
    })
}

#[derive(Serialize)]
struct ActorDescription<'a> {
    id: &'a str,
    durability: &'static str,
    size_bytes: u64,
    open: bool,
}

/// `{"id", "durability", "size_bytes", "open"}`.
pub fn actor_info_json(info: &ActorInfo) -> Result<Vec<u8>, Failure> {
    to_json(&ActorDescription {
        id: info.id.as_str(),
        durability: info.durability.as_str(),
        size_bytes: info.size_bytes,
        open: info.open,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_versions_map_to_preconditions() {
        assert_eq!(precondition(0).ok(), Some(Precondition::Absent));
        assert_eq!(precondition(7).ok(), Some(Precondition::Version(7)));
        assert_eq!(precondition(-1).ok(), Some(Precondition::None));
        assert_eq!(
            precondition(-2).err().map(|f| f.code),
            Some(roost_result::ROOST_INVALID_REQUEST)
        );
    }

    #[test]
    fn list_queries_reject_unknown_keys_and_accept_empty_input() {
        let limits = Limits::default();
        assert!(list_query(b"", &limits).is_ok());
        let query =
            list_query(br#"{"prefix": "a", "limit": 5, "reverse": true}"#, &limits).unwrap();
        assert_eq!(query.prefix.as_deref(), Some("a"));
        assert_eq!(query.limit, Some(5));
        assert!(query.reverse);
        let bad = list_query(br#"{"prefx": "a"}"#, &limits)
            .err()
            .map(|f| f.code);
        assert_eq!(bad, Some(roost_result::ROOST_INVALID_REQUEST));
        let not_utf8 = list_query(b"{\"prefix\": \"\xff\"}", &limits)
            .err()
            .map(|f| f.code);
        assert_eq!(not_utf8, Some(roost_result::ROOST_INVALID_UTF8));
    }
}
