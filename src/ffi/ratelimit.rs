//! Rate limiting through the C ABI (SPEC §6): one call that spends a key's
//! allowance under a GCRA policy, the same decision `POST
//! /v1/ratelimit/{key}` makes. The key is hashed to a limiter actor that
//! decides in memory and writes its state on the buffered schedule, so a
//! decision never waits for a disk write, even on a `durable` engine.

use super::boundary::{text_arg, wait, Out};
use super::handles::{engine_for_blocking_call, roost_engine};
use super::result::roost_result;
use crate::limiter::{Decision, Policy};

/// The answer of `roost_ratelimit`. A denied request is a decision
/// (`allowed` is false), not an error.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct roost_ratelimit_decision {
    /// Whether the request was allowed (and its cost spent).
    pub allowed: bool,
    /// Units of cost that could still be spent right now.
    pub remaining: u64,
    /// Milliseconds until the whole `limit` is available again.
    pub reset_ms: u64,
    /// Milliseconds until this request would be allowed: 0 when allowed,
    /// at least 1 when denied.
    pub retry_after_ms: u64,
}

impl From<Decision> for roost_ratelimit_decision {
    fn from(decision: Decision) -> Self {
        roost_ratelimit_decision {
            allowed: decision.allowed,
            remaining: decision.remaining,
            reset_ms: decision.reset_ms,
            retry_after_ms: decision.retry_after_ms,
        }
    }
}

/// Decides one request against the rate limit of `key` (a client IP, a user
/// or API key: 1 to `max_key_bytes` bytes of UTF-8) under the policy
/// `limit` units of cost per `window_ms` milliseconds (GCRA: a burst of up
/// to `limit`, then one unit every `window_ms / limit`). When allowed, the
/// request spends `cost` units; a `cost` of 0 only looks. Writes the
/// decision to `*out_decision`.
///
/// `ROOST_OK` whether the request was allowed or denied: a denial is
/// `allowed == false` with `retry_after_ms` set. `ROOST_INVALID_REQUEST`
/// for an empty key, a `limit` of 0 or above 1,000,000,000, a `window_ms`
/// of 0 or above 366 days, or a `cost` above `limit` (it could never be
/// allowed); `ROOST_TOO_LARGE` for a key over `max_key_bytes`. Nothing is
/// spent on failure.
///
/// A key's state does not record its policy: use one policy per key (give
/// keys a prefix per policy to keep several limits apart). State lives
/// in limiter actors (`roost-ratelimit-NNN`): in memory on a `memory`
/// engine, otherwise `buffered`, so it survives `roost_engine_close` and
/// reopening, but a crash may forget decisions since the last flush (that
/// errs towards allowing). The call never waits for an fsync.
#[no_mangle]
pub unsafe extern "C" fn roost_ratelimit(
    engine: *mut roost_engine,
    key: *const u8,
    key_len: usize,
    limit: u64,
    window_ms: u64,
    cost: u64,
    out_decision: *mut roost_ratelimit_decision,
) -> roost_result {
    ffi_result! {
        let engine = engine_for_blocking_call(engine)?;
        // SAFETY: the key pointer is valid for its length by contract.
        let key = unsafe { text_arg(key, key_len, "key") }?;
        let out = Out::required(out_decision, "out_decision")?;
        let policy = Policy::new(limit, window_ms)?;
        let decision = wait(engine.ratelimit(key, policy, cost))?;
        unsafe { out.set(decision.into()) };
        Ok(())
    }
}
