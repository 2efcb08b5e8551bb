//! Out-params filled with values no call answers, and the helpers that
//! copy out and free returned buffers.

use super::{UNWRITTEN_BYTE, UNWRITTEN_DECISION, UNWRITTEN_I64, UNWRITTEN_PTR};
use roost::ffi::handles::*;
use roost::ffi::ratelimit::roost_ratelimit_decision;
use serde_json::Value;

/// Out-params filled with values no call answers, to see what was written.
pub(super) struct Outs {
    value: i64,
    pub(super) version: i64,
    pub(super) existed: u8,
    bytes: roost_bytes,
    pub(super) decision: roost_ratelimit_decision,
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
    pub(super) fn new() -> Outs {
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

    pub(super) fn value(&mut self, present: bool) -> *mut i64 {
        slot(present, &mut self.value)
    }

    pub(super) fn version(&mut self, present: bool) -> *mut i64 {
        slot(present, &mut self.version)
    }

    /// A byte roost writes a `bool` into, read back as a byte.
    pub(super) fn existed(&mut self, present: bool) -> *mut bool {
        slot(present, &mut self.existed).cast()
    }

    pub(super) fn bytes(&mut self, present: bool) -> *mut roost_bytes {
        slot(present, &mut self.bytes)
    }

    pub(super) fn decision(&mut self, present: bool) -> *mut roost_ratelimit_decision {
        slot(present, &mut self.decision)
    }

    pub(super) fn untouched(&self) -> bool {
        self.value == UNWRITTEN_I64
            && self.version == UNWRITTEN_I64
            && self.existed == UNWRITTEN_BYTE
            && self.bytes.ptr.addr() == UNWRITTEN_PTR
            && self.bytes.len == UNWRITTEN_PTR
            && self.decision == UNWRITTEN_DECISION
    }

    /// Copies out and frees the buffer a successful call wrote.
    pub(super) fn take_bytes(&mut self) -> Result<Vec<u8>, String> {
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
pub(super) fn take(bytes: roost_bytes) -> Vec<u8> {
    let copy = if bytes.ptr.is_null() {
        Vec::new()
    } else {
        // SAFETY: roost returned this buffer with this length.
        unsafe { std::slice::from_raw_parts(bytes.ptr, bytes.len) }.to_vec()
    };
    unsafe { roost_bytes_free(bytes) };
    copy
}

pub(super) fn json_answer(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "answer is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )
    })
}
