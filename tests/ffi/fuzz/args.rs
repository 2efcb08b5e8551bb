//! Arguments as a C caller passes them: `(pointer, length)` buffers and
//! engine handles, live or not.

use roost::ffi::handles::roost_engine;
use std::fmt;

/// A `(pointer, length)` argument. A non-NULL pointer is always valid for
/// `len` bytes.
#[derive(Clone)]
pub(super) enum Arg {
    /// `data` passed with `len`: its whole length or a prefix of it.
    Buf { data: Vec<u8>, len: usize },
    /// NULL with this length.
    Null(usize),
    /// A non-NULL pointer to no memory, with a length of 0.
    Dangling,
}

impl Arg {
    pub(super) fn whole(data: impl Into<Vec<u8>>) -> Arg {
        let data = data.into();
        Arg::Buf {
            len: data.len(),
            data,
        }
    }

    pub(super) fn ptr(&self) -> *const u8 {
        match self {
            Arg::Buf { data, .. } => data.as_ptr(),
            Arg::Null(_) => std::ptr::null(),
            Arg::Dangling => std::ptr::NonNull::dangling().as_ptr(),
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Arg::Buf { len, .. } | Arg::Null(len) => *len,
            Arg::Dangling => 0,
        }
    }

    /// The bytes roost reads, or `None` for NULL with a non-zero length.
    pub(super) fn seen(&self) -> Option<&[u8]> {
        match self {
            Arg::Buf { data, len } => Some(&data[..*len]),
            Arg::Null(0) | Arg::Dangling => Some(&[]),
            Arg::Null(_) => None,
        }
    }

    pub(super) fn is(&self, text: &str) -> bool {
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
pub(super) enum Handle {
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
pub(super) struct Handles {
    pub(super) live: usize,
    pub(super) closed: usize,
}

impl Handles {
    pub(super) fn get(self, handle: Handle) -> *mut roost_engine {
        match handle {
            Handle::Live => std::ptr::without_provenance_mut(self.live),
            Handle::Null => std::ptr::null_mut(),
            Handle::Closed => std::ptr::without_provenance_mut(self.closed),
            Handle::NeverOpened(token) => std::ptr::without_provenance_mut(token),
        }
    }
}
