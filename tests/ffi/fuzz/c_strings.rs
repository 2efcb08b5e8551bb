//! Checks of the C-string writers `roost_last_error` and
//! `roost_error_message`.

use roost::ffi::result::roost_last_error;
use roost::ffi::roost_result;
use std::ffi::{c_char, CStr};

/// The detail `roost_last_error` holds, however long.
pub(super) fn full_last_error() -> String {
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
pub(super) fn check_c_string(
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

pub(super) fn message_of(code: u32) -> &'static str {
    roost_result::from_code(code).map_or("unknown result code", roost_result::message)
}
