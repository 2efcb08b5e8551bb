//! Result codes of the C ABI and the per-thread detail of the last failure.
//!
//! Every fallible function returns a [`roost_result`]. The numbers are part
//! of the ABI: they never change, new codes only get new numbers. Each
//! [`EngineError`] maps to exactly one code through an exhaustive `match`,
//! so a new engine error fails to compile until it has a code here.

use crate::actor_id::ActorIdError;
use crate::error::EngineError;
use std::cell::RefCell;
use std::ffi::c_char;

/// The outcome of a roost call. `ROOST_OK` (0) is success; every other
/// value is a failure whose detail `roost_last_error` returns on the thread
/// that made the call. The numbers are stable across releases.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum roost_result {
    /// Success.
    ROOST_OK = 0,
    /// The key (or actor) does not exist.
    ROOST_NOT_FOUND = 1,
    /// A required pointer was NULL (or NULL with a non-zero length).
    ROOST_NULL_POINTER = 2,
    /// A text argument (ID, key, name, JSON) is not valid UTF-8.
    ROOST_INVALID_UTF8 = 3,
    /// The actor ID is empty, longer than 512 bytes or has a control character.
    ROOST_INVALID_ACTOR_ID = 4,
    /// The configuration JSON is malformed or has an unknown key or bad value.
    ROOST_INVALID_CONFIG = 5,
    /// The SQL failed to prepare or run.
    ROOST_SQL_ERROR = 6,
    /// The SQL was refused by the authorizer (ATTACH, extensions, pragmas...).
    ROOST_SQL_DENIED = 7,
    /// A statement ran past `query_timeout_ms` and was interrupted.
    ROOST_QUERY_TIMEOUT = 8,
    /// A key, value, request or result exceeds its configured limit.
    ROOST_TOO_LARGE = 9,
    /// A compare-and-set precondition did not hold.
    ROOST_VERSION_MISMATCH = 10,
    /// An I/O error from the file system.
    ROOST_IO = 11,
    /// The disk (or the actor's size limit) is full.
    ROOST_INSUFFICIENT_STORAGE = 12,
    /// The engine handle is closed, was never opened, or is shutting down.
    ROOST_CLOSED = 13,
    /// roost panicked; the panic was caught at the boundary.
    ROOST_PANIC = 14,
    /// A bug or an unexpected state inside roost.
    ROOST_INTERNAL = 15,
    /// The request is malformed (bad JSON shape, empty key, bad cursor...).
    ROOST_INVALID_REQUEST = 16,
    /// A blocking call was made from inside a completion callback, where
    /// waiting for an actor could wait for the calling thread itself.
    ROOST_WOULD_DEADLOCK = 17,
}

use roost_result::*;

/// Every code, in numeric order.
const ALL_RESULTS: [roost_result; 18] = [
    ROOST_OK,
    ROOST_NOT_FOUND,
    ROOST_NULL_POINTER,
    ROOST_INVALID_UTF8,
    ROOST_INVALID_ACTOR_ID,
    ROOST_INVALID_CONFIG,
    ROOST_SQL_ERROR,
    ROOST_SQL_DENIED,
    ROOST_QUERY_TIMEOUT,
    ROOST_TOO_LARGE,
    ROOST_VERSION_MISMATCH,
    ROOST_IO,
    ROOST_INSUFFICIENT_STORAGE,
    ROOST_CLOSED,
    ROOST_PANIC,
    ROOST_INTERNAL,
    ROOST_INVALID_REQUEST,
    ROOST_WOULD_DEADLOCK,
];

impl roost_result {
    /// Every code, in numeric order.
    pub fn all() -> [roost_result; 18] {
        ALL_RESULTS
    }

    /// The code with this number, if there is one (C may pass any integer).
    pub fn from_code(code: u32) -> Option<roost_result> {
        ALL_RESULTS.get(code as usize).copied()
    }

    /// The code's name as spelled in `roost.h`, NUL-terminated.
    fn name_nul(self) -> &'static str {
        match self {
            ROOST_OK => "ROOST_OK\0",
            ROOST_NOT_FOUND => "ROOST_NOT_FOUND\0",
            ROOST_NULL_POINTER => "ROOST_NULL_POINTER\0",
            ROOST_INVALID_UTF8 => "ROOST_INVALID_UTF8\0",
            ROOST_INVALID_ACTOR_ID => "ROOST_INVALID_ACTOR_ID\0",
            ROOST_INVALID_CONFIG => "ROOST_INVALID_CONFIG\0",
            ROOST_SQL_ERROR => "ROOST_SQL_ERROR\0",
            ROOST_SQL_DENIED => "ROOST_SQL_DENIED\0",
            ROOST_QUERY_TIMEOUT => "ROOST_QUERY_TIMEOUT\0",
            ROOST_TOO_LARGE => "ROOST_TOO_LARGE\0",
            ROOST_VERSION_MISMATCH => "ROOST_VERSION_MISMATCH\0",
            ROOST_IO => "ROOST_IO\0",
            ROOST_INSUFFICIENT_STORAGE => "ROOST_INSUFFICIENT_STORAGE\0",
            ROOST_CLOSED => "ROOST_CLOSED\0",
            ROOST_PANIC => "ROOST_PANIC\0",
            ROOST_INTERNAL => "ROOST_INTERNAL\0",
            ROOST_INVALID_REQUEST => "ROOST_INVALID_REQUEST\0",
            ROOST_WOULD_DEADLOCK => "ROOST_WOULD_DEADLOCK\0",
        }
    }

    /// The code's name as spelled in `roost.h`.
    pub fn name(self) -> &'static str {
        self.name_nul().trim_end_matches('\0')
    }

    /// The code's fixed, human-readable text.
    pub fn message(self) -> &'static str {
        match self {
            ROOST_OK => "success",
            ROOST_NOT_FOUND => "not found",
            ROOST_NULL_POINTER => "a required pointer argument was NULL",
            ROOST_INVALID_UTF8 => "an argument is not valid UTF-8",
            ROOST_INVALID_ACTOR_ID => "invalid actor ID",
            ROOST_INVALID_CONFIG => "invalid engine configuration",
            ROOST_SQL_ERROR => "SQL error",
            ROOST_SQL_DENIED => "SQL denied by the authorizer",
            ROOST_QUERY_TIMEOUT => "query exceeded its time limit and was interrupted",
            ROOST_TOO_LARGE => "too large for the configured limit",
            ROOST_VERSION_MISMATCH => "version mismatch",
            ROOST_IO => "I/O error",
            ROOST_INSUFFICIENT_STORAGE => "insufficient storage",
            ROOST_CLOSED => "the engine is closed",
            ROOST_PANIC => "roost panicked (a bug); the panic was caught",
            ROOST_INTERNAL => "internal error",
            ROOST_INVALID_REQUEST => "invalid request",
            ROOST_WOULD_DEADLOCK => "a blocking call was made inside a completion callback",
        }
    }
}

impl From<&EngineError> for roost_result {
    fn from(err: &EngineError) -> roost_result {
        match err {
            EngineError::InvalidActorId(reason) => match reason {
                ActorIdError::InvalidUtf8 => ROOST_INVALID_UTF8,
                ActorIdError::Empty
                | ActorIdError::TooLong(_)
                | ActorIdError::ControlCharacter(_) => ROOST_INVALID_ACTOR_ID,
            },
            // In-process there are no regions to route to; a region only
            // matters to the server, so this is a request the caller can fix.
            EngineError::UnknownRegion(_) => ROOST_INVALID_REQUEST,
            EngineError::InvalidRequest(_) => ROOST_INVALID_REQUEST,
            EngineError::InvalidConfig(_) => ROOST_INVALID_CONFIG,
            EngineError::Sql(_) => ROOST_SQL_ERROR,
            EngineError::SqlDenied(_) => ROOST_SQL_DENIED,
            EngineError::QueryTimeout(_) => ROOST_QUERY_TIMEOUT,
            EngineError::TooLarge(_) => ROOST_TOO_LARGE,
            EngineError::VersionMismatch(_) => ROOST_VERSION_MISMATCH,
            EngineError::NotFound(_) => ROOST_NOT_FOUND,
            // Only a cluster moves actors; in process, the actor is not here.
            EngineError::Moved { .. } => ROOST_NOT_FOUND,
            EngineError::InsufficientStorage(_) => ROOST_INSUFFICIENT_STORAGE,
            EngineError::Io(_) => ROOST_IO,
            EngineError::Closed => ROOST_CLOSED,
            EngineError::Internal(_) => ROOST_INTERNAL,
        }
    }
}

/// A failed call on the Rust side: its code and the detail for `roost_last_error`.
#[derive(Debug)]
pub struct Failure {
    pub code: roost_result,
    pub detail: String,
}

impl Failure {
    pub fn new(code: roost_result, detail: impl Into<String>) -> Failure {
        Failure {
            code,
            detail: detail.into(),
        }
    }
}

impl From<EngineError> for Failure {
    fn from(err: EngineError) -> Failure {
        Failure {
            code: roost_result::from(&err),
            detail: err.to_string(),
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records `detail` as this thread's last failure.
pub fn set_last_error(detail: String) {
    // Ignored if the thread is being torn down: there is no caller left to read it.
    let _ = LAST_ERROR.try_with(|last| {
        if let Ok(mut last) = last.try_borrow_mut() {
            *last = detail;
        }
    });
}

/// Turns a body's outcome into the code returned to C, recording failures.
pub fn finish(outcome: Result<(), Failure>) -> roost_result {
    match outcome {
        Ok(()) => ROOST_OK,
        Err(failure) => {
            let code = failure.code;
            set_last_error(format!("{}: {}", code.name(), failure.detail));
            code
        }
    }
}

/// Copies `text` into `buf` as a NUL-terminated string, truncating at a
/// character boundary; returns the full length of `text` (without the NUL).
///
/// # Safety
/// `buf` is NULL or valid for `len` bytes of writes.
pub unsafe fn write_c_string(text: &str, buf: *mut c_char, len: usize) -> usize {
    if !buf.is_null() && len > 0 {
        let mut end = text.len().min(len - 1);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        // SAFETY: the caller promises `len` writable bytes; `end < len`.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), end);
            *buf.add(end) = 0;
        }
    }
    text.len()
}

/// Writes the fixed text of `result` into `buf` (`len` bytes) as a
/// NUL-terminated string, truncated to fit, and returns the text's full
/// length without the NUL (like `snprintf`). `buf` may be NULL when `len` is
/// 0, to ask for the length. An unknown code gets the text "unknown result
/// code". `result` is a plain integer so that any value is safe to pass.
#[no_mangle]
pub unsafe extern "C" fn roost_error_message(result: u32, buf: *mut c_char, len: usize) -> usize {
    ffi_panic_boundary! {
        let text = roost_result::from_code(result).map_or("unknown result code", roost_result::message);
        // SAFETY: forwarded from this function's contract.
        unsafe { write_c_string(text, buf, len) }
    }
}

/// The name of a result code as spelled in this header (`"ROOST_NOT_FOUND"`),
/// as a static NUL-terminated string that must not be freed; NULL for a
/// number that is not a roost code. For bindings that report errors by name.
#[no_mangle]
pub extern "C" fn roost_result_name(result: u32) -> *const c_char {
    ffi_panic_boundary! {
        roost_result::from_code(result).map_or(std::ptr::null(), |code| code.name_nul().as_ptr().cast())
    }
}

/// Writes the detail of the last failed roost call on this thread (for
/// example `"ROOST_INVALID_ACTOR_ID: invalid actor id: actor id is empty"`)
/// into `buf` as a NUL-terminated string, truncated to fit, and returns its
/// full length without the NUL. Successful calls leave it unchanged; it is
/// empty (returns 0) before the first failure. Inside a completion
/// callback it holds the detail of the failure being reported.
#[no_mangle]
pub unsafe extern "C" fn roost_last_error(buf: *mut c_char, len: usize) -> usize {
    ffi_panic_boundary! {
        LAST_ERROR
            .try_with(|last| match last.try_borrow() {
                // SAFETY: forwarded from this function's contract.
                Ok(detail) => unsafe { write_c_string(&detail, buf, len) },
                Err(_) => 0,
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_keep_their_numbers() {
        for (number, code) in roost_result::all().iter().enumerate() {
            assert_eq!(*code as u32, number as u32, "{}", code.name());
            assert_eq!(roost_result::from_code(number as u32), Some(*code));
        }
        assert_eq!(ROOST_OK as u32, 0);
        assert_eq!(ROOST_INTERNAL as u32, 15);
        assert_eq!(roost_result::from_code(ALL_RESULTS.len() as u32), None);
        assert_eq!(roost_result::from_code(u32::MAX), None);
    }

    #[test]
    fn truncation_keeps_utf8_whole_and_reports_the_full_length() {
        let mut buf = [0x55 as c_char; 4];
        // "é" is two bytes: with room for 3 bytes of text, only "aé" fits.
        let full = unsafe { write_c_string("aéb", buf.as_mut_ptr(), buf.len()) };
        assert_eq!(full, 4);
        let bytes: Vec<u8> = buf.iter().map(|b| *b as u8).collect();
        assert_eq!(&bytes, b"a\xc3\xa9\0");
        let mut small = [0x55 as c_char; 3];
        unsafe { write_c_string("aéb", small.as_mut_ptr(), small.len()) };
        assert_eq!(small[1], 0, "a split character is dropped, not cut");
        assert_eq!(unsafe { write_c_string("abc", std::ptr::null_mut(), 0) }, 3);
    }
}
