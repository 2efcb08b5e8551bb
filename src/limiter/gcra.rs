//! GCRA, the generic cell rate algorithm (the "leaky bucket as a meter" of
//! ATM networks, and what redis-cell and many API gateways use).
//!
//! A policy of `limit` per `window` admits one unit of cost every
//! `window / limit` (the emission interval) and tolerates a burst of up to
//! `limit` units. The whole state of a key is one instant, the theoretical
//! arrival time (TAT): when the key's bucket would be empty again. A request
//! of cost `c` at `now` is allowed when `max(TAT, now) + c·interval − window
//! ≤ now`, and then moves TAT forward by `c·interval`.
//!
//! Why not a fixed window: two windows meeting at an edge admit `2·limit`
//! in a moment. GCRA admits at most `limit + d·limit/window` in any span of
//! length `d`, so a full second burst needs a full window of quiet first.
//! Why not a sliding log: it stores one entry per request; GCRA stores 8
//! bytes per key and decides in a few arithmetic operations.

use crate::error::EngineError;
use serde::{Deserialize, Serialize};

/// Largest `limit` accepted (keeps every product below in range).
pub const MAX_LIMIT: u64 = 1_000_000_000;
/// Largest window accepted: 366 days.
pub const MAX_WINDOW_MS: u64 = 366 * 24 * 3600 * 1000;

/// `limit` units of cost per `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub limit: u64,
    pub window_ms: u64,
}

impl Policy {
    pub fn new(limit: u64, window_ms: u64) -> Result<Self, EngineError> {
        let policy = Policy { limit, window_ms };
        policy.validate()?;
        Ok(policy)
    }

    pub fn validate(&self) -> Result<(), EngineError> {
        if self.limit == 0 || self.limit > MAX_LIMIT {
            return Err(EngineError::InvalidRequest(format!(
                "limit must be between 1 and {MAX_LIMIT}, not {}",
                self.limit
            )));
        }
        if self.window_ms == 0 || self.window_ms > MAX_WINDOW_MS {
            return Err(EngineError::InvalidRequest(format!(
                "window_ms must be between 1 and {MAX_WINDOW_MS}, not {}",
                self.window_ms
            )));
        }
        Ok(())
    }

    /// Checks a request's cost against this policy: more than `limit` could
    /// never be allowed, so it is a caller error rather than a denial.
    pub fn check_cost(&self, cost: u64) -> Result<(), EngineError> {
        if cost > self.limit {
            return Err(EngineError::InvalidRequest(format!(
                "cost {cost} exceeds the policy's limit of {}",
                self.limit
            )));
        }
        Ok(())
    }

    fn window_us(&self) -> i64 {
        (self.window_ms * 1000) as i64
    }

    /// Microseconds that `units` of cost occupy (at least 1 per unit).
    fn occupied_us(&self, units: u64) -> i64 {
        let exact = u128::from(units) * u128::from(self.window_ms) * 1000 / u128::from(self.limit);
        exact.max(u128::from(units)) as i64
    }

    /// Whole units that fit in `free_us` microseconds of the window.
    fn units_in(&self, free_us: i64) -> u64 {
        if free_us <= 0 {
            return 0;
        }
        let units = free_us as u128 * u128::from(self.limit) / (u128::from(self.window_ms) * 1000);
        (units as u64).min(self.limit)
    }
}

/// The answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub allowed: bool,
    /// Units that could still be spent right now.
    pub remaining: u64,
    /// Milliseconds until the full `limit` is available again.
    pub reset_ms: u64,
    /// Milliseconds until this request would be allowed (0 when allowed).
    pub retry_after_ms: u64,
}

/// Decides a request of `cost` at `now_us` given the key's TAT (`None`: a
/// key never seen or fully recovered). Returns the decision and the new
/// TAT to store when the request was allowed with a non-zero cost.
pub fn decide(
    policy: &Policy,
    tat_us: Option<i64>,
    now_us: i64,
    cost: u64,
) -> (Decision, Option<i64>) {
    let window = policy.window_us();
    let tat = tat_us.map_or(now_us, |t| t.max(now_us));
    let candidate = tat + policy.occupied_us(cost);
    let allow_at = candidate - window;
    if allow_at <= now_us {
        let decision = Decision {
            allowed: true,
            remaining: policy.units_in(now_us + window - candidate),
            reset_ms: ceil_ms(candidate - now_us),
            retry_after_ms: 0,
        };
        (decision, (cost > 0).then_some(candidate))
    } else {
        let decision = Decision {
            allowed: false,
            remaining: policy.units_in(now_us + window - tat),
            reset_ms: ceil_ms(tat - now_us),
            retry_after_ms: ceil_ms(allow_at - now_us).max(1),
        };
        (decision, None)
    }
}

/// Spends `cost` whatever the state: usage that another region already
/// allowed (see SPEC §6 `"mode": "local"`) is counted here even when it
/// overshoots. The debt is capped at two windows so that one burst of
/// overshoot cannot lock a key out for longer than that.
pub fn spend(policy: &Policy, tat_us: Option<i64>, now_us: i64, cost: u64) -> (Decision, i64) {
    let window = policy.window_us();
    let tat = tat_us.map_or(now_us, |t| t.max(now_us));
    let spent = (tat + policy.occupied_us(cost)).min(now_us + 2 * window);
    let (decision, _) = decide(policy, Some(spent), now_us, 0);
    let within = spent - window <= now_us;
    (
        Decision {
            allowed: within,
            retry_after_ms: if within {
                0
            } else {
                ceil_ms(spent - window - now_us)
            },
            ..decision
        },
        spent,
    )
}

fn ceil_ms(us: i64) -> u64 {
    (us.max(0) as u64).div_ceil(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000;

    fn run(policy: &Policy, tat: &mut Option<i64>, now: i64, cost: u64) -> Decision {
        let (decision, next) = decide(policy, *tat, now, cost);
        if let Some(next) = next {
            *tat = Some(next);
        }
        decision
    }

    #[test]
    fn a_burst_gets_exactly_the_limit() {
        let policy = Policy::new(3, 1000).unwrap();
        let mut tat = None;
        let answers: Vec<_> = (0..5).map(|_| run(&policy, &mut tat, 0, 1)).collect();
        let allowed: Vec<_> = answers.iter().map(|d| d.allowed).collect();
        assert_eq!(allowed, [true, true, true, false, false]);
        let remaining: Vec<_> = answers.iter().map(|d| d.remaining).collect();
        assert_eq!(remaining, [2, 1, 0, 0, 0]);
        // One unit comes back every window / limit.
        assert_eq!(answers[3].retry_after_ms, 334);
        assert_eq!(answers[3].reset_ms, 1000);
    }

    #[test]
    fn units_come_back_at_the_emission_rate() {
        let policy = Policy::new(10, 1000).unwrap();
        let mut tat = None;
        for _ in 0..10 {
            assert!(run(&policy, &mut tat, 0, 1).allowed);
        }
        assert!(!run(&policy, &mut tat, 99_000, 1).allowed);
        assert!(run(&policy, &mut tat, 100_000, 1).allowed);
        assert!(!run(&policy, &mut tat, 100_000, 1).allowed);
        // After a whole quiet window the full burst is available again.
        let later = 5 * SECOND;
        assert_eq!(run(&policy, &mut tat, later, 0).remaining, 10);
    }

    #[test]
    fn no_double_burst_at_a_window_edge() {
        // A fixed window would allow 20 between t = 0.99 s and t = 1.01 s.
        let policy = Policy::new(10, 1000).unwrap();
        let mut tat = None;
        let near_edge = SECOND - 10_000;
        let mut allowed = 0;
        for step in 0..40 {
            let now = near_edge + step * 500;
            allowed += u32::from(run(&policy, &mut tat, now, 1).allowed);
        }
        assert_eq!(allowed, 10);
    }

    #[test]
    fn cost_is_weighed_and_zero_cost_only_looks() {
        let policy = Policy::new(10, 1000).unwrap();
        let mut tat = None;
        let first = run(&policy, &mut tat, 0, 7);
        assert!(first.allowed);
        assert_eq!(first.remaining, 3);
        let denied = run(&policy, &mut tat, 0, 4);
        assert!(!denied.allowed);
        assert_eq!(denied.remaining, 3);
        assert_eq!(denied.retry_after_ms, 100);
        let peek = run(&policy, &mut tat, 0, 0);
        assert!(peek.allowed);
        assert_eq!(peek.remaining, 3);
        assert!(policy.check_cost(11).is_err());
    }

    #[test]
    fn spending_counts_usage_even_past_the_limit_but_caps_the_debt() {
        let policy = Policy::new(10, 1000).unwrap();
        let (first, tat) = spend(&policy, None, 0, 6);
        assert!(first.allowed);
        assert_eq!(first.remaining, 4);
        let (over, tat) = spend(&policy, Some(tat), 0, 50);
        assert!(!over.allowed);
        assert_eq!(tat, 2 * SECOND, "debt capped at two windows");
        assert_eq!(over.retry_after_ms, 1000);
        let (decision, _) = decide(&policy, Some(tat), SECOND + 99_000, 1);
        assert!(!decision.allowed);
        let (decision, _) = decide(&policy, Some(tat), SECOND + 100_000, 1);
        assert!(decision.allowed);
    }

    #[test]
    fn policies_out_of_range_are_refused() {
        assert!(Policy::new(0, 1000).is_err());
        assert!(Policy::new(1, 0).is_err());
        assert!(Policy::new(MAX_LIMIT + 1, 1000).is_err());
        assert!(Policy::new(1, MAX_WINDOW_MS + 1).is_err());
        let huge = Policy::new(MAX_LIMIT, MAX_WINDOW_MS).unwrap();
        let (decision, _) = decide(&huge, None, i64::MAX / 4, MAX_LIMIT);
        assert!(decision.allowed);
    }
}
