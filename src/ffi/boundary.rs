//! What every exported function does at the edge: catch panics, check
//! pointer arguments before touching them, write out-params only on
//! success, and wait for the engine without blocking longer than needed.

use super::result::{roost_result, set_last_error, Failure};
use crate::actor_id::ActorId;
use std::any::Any;
use std::cell::Cell;
use std::ffi::c_char;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// Runs an exported function's body; a panic becomes the return type's
/// panic value (`ROOST_PANIC`, 0, NULL or nothing) and never unwinds into C.
macro_rules! ffi_panic_boundary {
    ($($body:tt)*) => {
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| { $($body)* })) {
            Ok(value) => value,
            Err(payload) => $crate::ffi::boundary::panicked(payload),
        }
    };
}

/// The body of a function returning `roost_result`: a block that evaluates
/// to `Result<(), Failure>` and may use `?`.
macro_rules! ffi_result {
    ($($body:tt)*) => {
        ffi_panic_boundary! {
            // The closure gives the body its own `?` and `return`.
            #[allow(clippy::redundant_closure_call)]
            let outcome = (|| -> ::std::result::Result<(), $crate::ffi::result::Failure> { $($body)* })();
            $crate::ffi::result::finish(outcome)
        }
    };
}

/// What an exported function returns when its body panicked.
pub trait PanicValue {
    fn panic_value() -> Self;
}

impl PanicValue for roost_result {
    fn panic_value() -> Self {
        roost_result::ROOST_PANIC
    }
}

impl PanicValue for () {
    fn panic_value() -> Self {}
}

impl PanicValue for usize {
    fn panic_value() -> Self {
        0
    }
}

impl PanicValue for *const c_char {
    fn panic_value() -> Self {
        std::ptr::null()
    }
}

/// Records a caught panic as the thread's last error.
pub fn panicked<T: PanicValue>(payload: Box<dyn Any + Send>) -> T {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".into());
    set_last_error(format!("ROOST_PANIC: {message}"));
    // The payload's own destructor could panic; leaking it is harmless.
    std::mem::forget(payload);
    T::panic_value()
}

fn null(what: &str) -> Failure {
    Failure::new(roost_result::ROOST_NULL_POINTER, format!("{what} is NULL"))
}

/// Borrows `len` bytes at `ptr`. NULL is accepted only with a length of 0.
///
/// # Safety
/// A non-NULL `ptr` is valid for `len` bytes of reads for the returned lifetime.
pub unsafe fn bytes_arg<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8], Failure> {
    if ptr.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(Failure::new(
                roost_result::ROOST_NULL_POINTER,
                format!("{what} is NULL with a length of {len}"),
            ))
        };
    }
    if len > isize::MAX as usize {
        return Err(Failure::new(
            roost_result::ROOST_TOO_LARGE,
            format!("{what} length {len} is not a possible buffer size"),
        ));
    }
    // SAFETY: non-NULL and, by the caller's contract, valid for `len` bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Borrows `len` bytes at `ptr` as UTF-8 text.
///
/// # Safety
/// As [`bytes_arg`].
pub unsafe fn text_arg<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a str, Failure> {
    // SAFETY: forwarded from this function's contract.
    let raw = unsafe { bytes_arg(ptr, len, what) }?;
    std::str::from_utf8(raw).map_err(|e| {
        Failure::new(
            roost_result::ROOST_INVALID_UTF8,
            format!("{what} is not valid UTF-8 ({e})"),
        )
    })
}

/// Validates an actor ID argument.
///
/// # Safety
/// As [`bytes_arg`].
pub unsafe fn actor_arg(ptr: *const u8, len: usize) -> Result<ActorId, Failure> {
    // SAFETY: forwarded from this function's contract.
    let raw = unsafe { bytes_arg(ptr, len, "actor") }?;
    ActorId::from_bytes(raw).map_err(|e| Failure::from(crate::error::EngineError::from(e)))
}

/// Reads a NUL-terminated UTF-8 string.
///
/// # Safety
/// A non-NULL `ptr` points to a NUL-terminated string.
pub unsafe fn c_str_arg<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let text = unsafe { std::ffi::CStr::from_ptr(ptr) };
    text.to_str().map_err(|e| {
        Failure::new(
            roost_result::ROOST_INVALID_UTF8,
            format!("{what} is not valid UTF-8 ({e})"),
        )
    })
}

/// An out-param, checked before the operation runs and written only after
/// it succeeded.
pub struct Out<T>(*mut T);

impl<T> Out<T> {
    /// An out-param the caller must provide.
    pub fn required(ptr: *mut T, what: &str) -> Result<Out<T>, Failure> {
        if ptr.is_null() {
            Err(null(what))
        } else {
            Ok(Out(ptr))
        }
    }

    /// An out-param the caller may leave NULL when it does not want the value.
    pub fn optional(ptr: *mut T) -> Out<T> {
        Out(ptr)
    }

    /// Stores the value (nothing for a NULL optional out-param).
    ///
    /// # Safety
    /// A non-NULL pointer is valid for a write of `T` (alignment not needed).
    pub unsafe fn set(self, value: T) {
        if !self.0.is_null() {
            // SAFETY: checked non-NULL; validity is the caller's contract.
            unsafe { self.0.write_unaligned(value) }
        }
    }
}

thread_local! {
    /// Set while this thread runs a completion callback (an engine thread).
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// Runs `callback` marked as a completion callback on this thread.
pub fn as_callback<R>(callback: impl FnOnce() -> R) -> R {
    // A reply dropped while its thread exits still gets answered.
    crate::engine::caller::while_set(&IN_CALLBACK, callback)
}

/// Whether this thread is inside a completion callback.
pub fn in_callback() -> bool {
    IN_CALLBACK.try_with(Cell::get).unwrap_or(false)
}

/// Refuses a blocking call from a completion callback: it runs on an
/// engine thread (an actor's, the journal's), and waiting there for the
/// engine may wait for itself.
pub fn may_block() -> Result<(), Failure> {
    if in_callback() {
        Err(Failure::new(
            roost_result::ROOST_WOULD_DEADLOCK,
            "blocking roost calls are not allowed inside a completion callback; use the _async form",
        ))
    } else {
        Ok(())
    }
}

thread_local! {
    /// This thread's idle [`Signal`], for [`wait`].
    static SIGNAL: Cell<Option<Arc<Signal>>> = const { Cell::new(None) };
}

/// How long a caller keeps yielding before it sleeps until woken. Most
/// in-memory ops answer within a few microseconds, less than a sleep and a
/// wake-up cost the two threads.
const PATIENCE: Duration = Duration::from_micros(100);

struct Signal {
    thread: Thread,
    woken: AtomicBool,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Drives an engine future to completion on this thread: it yields the CPU
/// for a moment, then parks until the actor's thread wakes it.
///
/// Yielding, not spinning: when the machine is busy the actor's thread may
/// be queued on this very CPU, and a spinning caller would keep it from
/// running until the spin ends (measured: 100x slower under load). On an
/// idle machine `yield_now` returns at once and costs about as little as a
/// spin.
pub fn wait<F: Future>(future: F) -> F::Output {
    // The thread's signal is reused (most calls answer inline, so setting
    // one up would be a large share of their cost); it is taken out while
    // in use so that a nested wait gets its own.
    let signal = SIGNAL
        .try_with(Cell::take)
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            Arc::new(Signal {
                thread: thread::current(),
                woken: AtomicBool::new(false),
            })
        });
    signal.woken.store(false, Ordering::Relaxed);
    // The caller waits anyway: a cold actor is opened on this thread.
    let output = crate::engine::caller::blocking(|| drive(future, &signal));
    let _ = SIGNAL.try_with(|slot| slot.set(Some(signal)));
    output
}

fn drive<F: Future>(future: F, signal: &Arc<Signal>) -> F::Output {
    let waker = Waker::from(signal.clone());
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        let started = Instant::now();
        while !signal.woken.swap(false, Ordering::Acquire) {
            if started.elapsed() < PATIENCE {
                thread::yield_now();
            } else {
                thread::park();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exploding_call() -> roost_result {
        ffi_result! {
            panic!("boom at the boundary")
        }
    }

    #[test]
    fn a_panic_becomes_roost_panic_with_its_message() {
        assert_eq!(exploding_call(), roost_result::ROOST_PANIC);
        let mut buf = [0 as c_char; 128];
        unsafe { super::super::result::roost_last_error(buf.as_mut_ptr(), buf.len()) };
        let detail = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
        assert_eq!(detail.to_str(), Ok("ROOST_PANIC: boom at the boundary"));
    }

    #[test]
    fn wait_drives_a_future_woken_from_another_thread() {
        let (tx, rx) = futures::channel::oneshot::channel();
        let sender = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            let _ = tx.send(7);
        });
        assert_eq!(wait(rx), Ok(7));
        let _ = sender.join();
    }

    #[test]
    fn callbacks_are_marked_and_unmarked() {
        assert!(!in_callback());
        as_callback(|| {
            assert!(in_callback());
            assert!(may_block().is_err());
        });
        assert!(!in_callback());
        assert!(may_block().is_ok());
    }
}
