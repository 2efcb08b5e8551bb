//! What a call may answer: the codes its documentation allows for the
//! arguments it was given.

use super::args::{Arg, Handle};
use super::{
    ENVIRONMENT, IMPORTED_ACTOR, IMPORTED_FAILS, MAX_ACTOR_ID_BYTES, MAX_BODY_BYTES, MAX_KEY_BYTES,
    MAX_RATE_LIMIT, MAX_WINDOW_MS,
};
use roost::ffi::roost_result::{self, *};
use serde_json::Value;

/// The codes a call's documentation allows for its arguments.
#[derive(Debug, Default)]
pub(super) struct Expect {
    /// Codes of arguments that are certainly wrong: the call must fail
    /// with one of them (the order of the checks is not documented).
    faults: Vec<roost_result>,
    /// Codes arguments of unknown validity (parsed JSON) may cause.
    pub(super) maybe: Vec<roost_result>,
    /// Whether the call is about [`IMPORTED_ACTOR`].
    pub(super) imported: bool,
}

impl Expect {
    pub(super) fn fault(&mut self, code: roost_result) -> &mut Self {
        self.faults.push(code);
        self
    }

    pub(super) fn handle(&mut self, handle: Handle) -> &mut Self {
        match handle {
            Handle::Live => self,
            Handle::Null => self.fault(ROOST_NULL_POINTER),
            Handle::Closed | Handle::NeverOpened(_) => self.fault(ROOST_CLOSED),
        }
    }

    pub(super) fn present(&mut self, present: bool) -> &mut Self {
        if !present {
            self.fault(ROOST_NULL_POINTER);
        }
        self
    }

    /// "1–512 bytes of UTF-8, no control characters".
    pub(super) fn actor(&mut self, actor: &Arg) -> &mut Self {
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
    pub(super) fn key(&mut self, key: &Arg) -> &mut Self {
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

    pub(super) fn bytes(&mut self, bytes: &Arg, max: usize) -> &mut Self {
        match bytes.seen() {
            None => self.fault(ROOST_NULL_POINTER),
            Some(raw) if raw.len() > max => self.fault(ROOST_TOO_LARGE),
            Some(_) => self,
        }
    }

    /// A JSON request; `empty_ok` when empty input means "the defaults".
    pub(super) fn json(&mut self, text: &Arg, empty_ok: bool) -> &mut Self {
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
    pub(super) fn version(&mut self, expected: i64) -> &mut Self {
        if expected < -1 {
            self.fault(ROOST_INVALID_REQUEST);
        }
        self
    }

    pub(super) fn policy(&mut self, limit: u64, window_ms: u64, cost: u64) -> &mut Self {
        let bad_limit = limit == 0 || limit > MAX_RATE_LIMIT;
        let bad_window = window_ms == 0 || window_ms > MAX_WINDOW_MS;
        if bad_limit || bad_window || cost > limit {
            self.fault(ROOST_INVALID_REQUEST);
        }
        self
    }

    /// Calls about [`IMPORTED_ACTOR`] may also answer [`IMPORTED_FAILS`].
    pub(super) fn about(&mut self, actor: &Arg) -> &mut Self {
        if actor.is(IMPORTED_ACTOR) {
            self.imported = true;
            self.maybe.extend_from_slice(IMPORTED_FAILS);
        }
        self
    }

    /// Whether a blocking call may answer `code`.
    pub(super) fn allows(&self, code: roost_result, sound_fails: &[roost_result]) -> bool {
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
    pub(super) fn allows_queueing(&self, code: roost_result) -> bool {
        if self.faults.is_empty() {
            code == ROOST_OK || self.maybe.contains(&code)
        } else {
            self.faults.contains(&code) || self.maybe.contains(&code)
        }
    }
}
