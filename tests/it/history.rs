//! A small linearizability checker (Wing & Gong's search, with Lowe's
//! memoization) and the two object models roost's tests need: a counter
//! (`add(d) -> new value`, `get -> value`) and a versioned register
//! (`put_if(version) -> new version | mismatch`, `get -> (value, version)`).
//!
//! A history is a list of operations, each with the moment it was invoked
//! and the moment its response arrived. It is linearizable if the
//! operations can be put in one order that (a) respects real time: an
//! operation that answered before another was invoked comes first, and
//! (b) replays on the sequential model giving every recorded answer.
//!
//! An operation whose answer was lost (the server died, the connection
//! broke) is *pending*: it may or may not have taken effect, with whatever
//! result, but not after `ret` (the moment the server was known dead; or
//! `u64::MAX` if unknown).
//!
//! The search is depth-first over "which operation takes effect next",
//! memoizing every (set of operations done, model state) it has seen, so
//! each configuration is explored once.

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;

/// One operation of a history. Times are nanoseconds since a test epoch.
#[derive(Clone, Debug)]
pub struct Op<I, O> {
    /// Who issued it (for failure reports only).
    pub client: usize,
    pub call: u64,
    /// The response time; for a pending op, the latest moment it could
    /// have taken effect.
    pub ret: u64,
    pub input: I,
    /// `None`: pending, the answer never arrived.
    pub output: Option<O>,
}

/// A sequential specification.
pub trait Model {
    type State: Clone + Eq + Hash + Debug;
    type Input: Debug;
    type Output: Debug;

    /// Every state the object may be in after `input` ran on `state` and
    /// answered `output` (`None`: any answer). Empty: not possible.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Vec<Self::State>;
}

/// Why a history is not linearizable (or could not be decided).
#[derive(Debug)]
pub enum Verdict {
    /// No order works. The report is taken at the deepest point the search
    /// reached: how many completed ops it had placed, the model state
    /// there, and the ops that could come next and all failed.
    NotLinearizable {
        placed: usize,
        completed: usize,
        state: String,
        stuck_on: Vec<String>,
    },
    /// The search gave up after `budget` configurations.
    TooLarge { budget: usize },
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::NotLinearizable {
                placed,
                completed,
                state,
                stuck_on,
            } => {
                writeln!(
                    f,
                    "not linearizable: at best {placed} of {completed} answered ops fit \
                     an order; then the state was {state} and none of these could go next:"
                )?;
                stuck_on.iter().try_for_each(|op| writeln!(f, "  {op}"))
            }
            Verdict::TooLarge { budget } => {
                write!(f, "undecided: gave up after {budget} configurations")
            }
        }
    }
}

/// Configurations explored before giving up.
const DEFAULT_BUDGET: usize = 2_000_000;

/// Statistics of a successful check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub ops: usize,
    pub pending: usize,
    pub configurations: usize,
}

pub fn check<M: Model>(
    model: &M,
    init: M::State,
    history: &[Op<M::Input, M::Output>],
) -> Result<Checked, Verdict> {
    check_with_budget(model, init, history, DEFAULT_BUDGET)
}

/// A set of op indices, plus its Zobrist fingerprint for the memo table.
#[derive(Clone)]
struct Done {
    bits: Vec<u64>,
    fingerprint: u128,
}

impl Done {
    fn contains(&self, i: usize) -> bool {
        self.bits[i / 64] & (1 << (i % 64)) != 0
    }
    fn with(&self, i: usize, keys: &[u128]) -> Done {
        let mut next = self.clone();
        next.bits[i / 64] |= 1 << (i % 64);
        next.fingerprint ^= keys[i];
        next
    }
}

struct Frame<S> {
    done: Done,
    /// Lowest index (in call order) not yet done.
    first: usize,
    state: S,
    completed_done: usize,
    /// (op, next state) pairs still to try from here.
    choices: Vec<(usize, S)>,
}

pub fn check_with_budget<M: Model>(
    model: &M,
    init: M::State,
    history: &[Op<M::Input, M::Output>],
    budget: usize,
) -> Result<Checked, Verdict> {
    let mut order: Vec<&Op<M::Input, M::Output>> = history.iter().collect();
    order.sort_by_key(|op| (op.call, op.ret));
    let n = order.len();
    let completed = order.iter().filter(|op| op.output.is_some()).count();
    let pending = n - completed;
    // Deterministic pseudo-random keys (splitmix64), so failures reproduce.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let keys: Vec<u128> = (0..n)
        .map(|_| (u128::from(next()) << 64) | u128::from(next()))
        .collect();

    // The ops that may take effect next, and the states each may lead to.
    // Sorted by call time, an op can go next iff no undone op answered
    // before it was invoked; undone ops later in call order answered after
    // their own (later) call, so a running minimum over the scan suffices.
    let choices = |done: &Done, first: usize, state: &M::State| -> Vec<(usize, M::State)> {
        let mut out = Vec::new();
        let mut min_ret = u64::MAX;
        for (i, op) in order.iter().enumerate().skip(first) {
            if op.call > min_ret {
                break;
            }
            if done.contains(i) {
                continue;
            }
            min_ret = min_ret.min(op.ret);
            let mut nexts = model.step(state, &op.input, op.output.as_ref());
            if op.output.is_none() && !nexts.contains(state) {
                // A pending op may also never have happened.
                nexts.push(state.clone());
            }
            out.extend(nexts.into_iter().map(|s| (i, s)));
        }
        // Depth-first pops from the back: try completed ops before pending
        // ones, and earlier calls first.
        out.sort_by_key(|(i, _)| std::cmp::Reverse((order[*i].output.is_none(), *i)));
        out
    };

    let done = Done {
        bits: vec![0; n.div_ceil(64)],
        fingerprint: 0,
    };
    let mut seen: HashSet<(u128, M::State)> = HashSet::new();
    seen.insert((0, init.clone()));
    let mut stack = vec![Frame {
        choices: choices(&done, 0, &init),
        done,
        first: 0,
        state: init,
        completed_done: 0,
    }];
    let mut deepest: Option<(usize, String, Vec<String>)> = None;
    while let Some(top) = stack.last_mut() {
        if top.completed_done == completed {
            return Ok(Checked {
                ops: completed,
                pending,
                configurations: seen.len(),
            });
        }
        let Some((i, state)) = top.choices.pop() else {
            let frame = stack.pop().expect("non-empty");
            if deepest
                .as_ref()
                .is_none_or(|(placed, _, _)| frame.completed_done > *placed)
            {
                deepest = Some((frame.completed_done, format!("{:?}", frame.state), {
                    let mut min_ret = u64::MAX;
                    let mut next_ops = Vec::new();
                    for (j, op) in order.iter().enumerate().skip(frame.first) {
                        if op.call > min_ret {
                            break;
                        }
                        if !frame.done.contains(j) {
                            min_ret = min_ret.min(op.ret);
                            next_ops.push(format!(
                                "client {}: {:?} -> {:?} [{}..{}]",
                                op.client, op.input, op.output, op.call, op.ret
                            ));
                        }
                    }
                    next_ops
                }));
            }
            continue;
        };
        let done = top.done.with(i, &keys);
        if !seen.insert((done.fingerprint, state.clone())) {
            continue;
        }
        if seen.len() > budget {
            return Err(Verdict::TooLarge { budget });
        }
        let mut first = top.first;
        while first < n && done.contains(first) {
            first += 1;
        }
        let completed_done = top.completed_done + usize::from(order[i].output.is_some());
        stack.push(Frame {
            choices: choices(&done, first, &state),
            done,
            first,
            state,
            completed_done,
        });
    }
    let (placed, state, stuck_on) = deepest.unwrap_or_default();
    Err(Verdict::NotLinearizable {
        placed,
        completed,
        state,
        stuck_on,
    })
}

/// A counter: `add(d)` answers the new value, `get` the current one.
pub struct Counter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterOp {
    Add(i64),
    Get,
}

impl Model for Counter {
    type State = i64;
    type Input = CounterOp;
    type Output = i64;

    fn step(&self, state: &i64, input: &CounterOp, output: Option<&i64>) -> Vec<i64> {
        let after = match input {
            CounterOp::Add(d) => state + d,
            CounterOp::Get => *state,
        };
        match output {
            Some(seen) if *seen != after => vec![],
            _ => vec![after],
        }
    }
}

/// A register with versions for compare-and-set (roost's KV key).
pub struct Register;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOp {
    Get,
    /// Store `value` if the key is at `expect` (`None`: if it is absent).
    PutIf {
        expect: Option<i64>,
        value: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterOut {
    /// `get`: the value and its version, or absent.
    Value(Option<(String, i64)>),
    /// `put_if` succeeded with this new version.
    Stored(i64),
    /// `put_if`'s precondition failed; nothing changed.
    Mismatch,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegisterState {
    pub value: Option<String>,
    pub version: Version,
}

/// A register's version as far as the history tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    Exactly(i64),
    /// Unknown but greater than this: a pending write took effect and no
    /// one has read its version yet.
    Above(i64),
}

impl Version {
    fn may_be(self, v: i64) -> bool {
        match self {
            Version::Exactly(k) => v == k,
            Version::Above(k) => v > k,
        }
    }
    fn may_differ_from(self, v: i64) -> bool {
        match self {
            Version::Exactly(k) => v != k,
            Version::Above(_) => true,
        }
    }
    fn floor(self) -> i64 {
        match self {
            Version::Exactly(k) | Version::Above(k) => k,
        }
    }
}

impl RegisterState {
    pub fn absent() -> Self {
        RegisterState {
            value: None,
            version: Version::Exactly(0),
        }
    }

    pub fn holding(value: &str, version: i64) -> Self {
        RegisterState {
            value: Some(value.to_owned()),
            version: Version::Exactly(version),
        }
    }
}

impl Model for Register {
    type State = RegisterState;
    type Input = RegisterOp;
    type Output = RegisterOut;

    fn step(
        &self,
        state: &RegisterState,
        input: &RegisterOp,
        output: Option<&RegisterOut>,
    ) -> Vec<RegisterState> {
        match (input, output) {
            (RegisterOp::Get, None) => vec![state.clone()],
            (RegisterOp::Get, Some(RegisterOut::Value(None))) => {
                if state.value.is_none() {
                    vec![state.clone()]
                } else {
                    vec![]
                }
            }
            (RegisterOp::Get, Some(RegisterOut::Value(Some((value, version))))) => {
                if state.value.as_ref() == Some(value) && state.version.may_be(*version) {
                    vec![RegisterState::holding(value, *version)]
                } else {
                    vec![]
                }
            }
            (RegisterOp::Get, Some(_))
            | (RegisterOp::PutIf { .. }, Some(RegisterOut::Value(_))) => {
                vec![]
            }
            (RegisterOp::PutIf { expect, value }, output) => {
                // Could the precondition hold / fail in this state, and
                // what version did the key hold if it held?
                let (may_hold, may_fail, old) = match (expect, &state.value) {
                    (None, None) => (true, false, state.version.floor()),
                    (None, Some(_)) => (false, true, 0),
                    (Some(_), None) => (false, true, 0),
                    (Some(e), Some(_)) => (
                        state.version.may_be(*e),
                        state.version.may_differ_from(*e),
                        *e,
                    ),
                };
                let mut out = Vec::new();
                match output {
                    Some(RegisterOut::Stored(new)) => {
                        if may_hold && *new > old {
                            out.push(RegisterState::holding(value, *new));
                        }
                    }
                    Some(RegisterOut::Mismatch) => {
                        if may_fail {
                            out.push(state.clone());
                        }
                    }
                    Some(RegisterOut::Value(_)) => {}
                    None => {
                        if may_hold {
                            out.push(RegisterState {
                                value: Some(value.clone()),
                                version: Version::Above(old),
                            });
                        }
                        // Unanswered: it may also never have run (lost with
                        // the crash before it executed or committed), even
                        // where its precondition would have held.
                        out.push(state.clone());
                    }
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An op that ran from `call` to `ret` on `client`.
    fn op<I, O>(client: usize, call: u64, ret: u64, input: I, output: O) -> Op<I, O> {
        Op {
            client,
            call,
            ret,
            input,
            output: Some(output),
        }
    }

    fn pending<I, O>(client: usize, call: u64, ret: u64, input: I) -> Op<I, O> {
        Op {
            client,
            call,
            ret,
            input,
            output: None,
        }
    }

    fn get(value: &str, version: i64) -> RegisterOut {
        RegisterOut::Value(Some((value.to_owned(), version)))
    }

    fn put(expect: Option<i64>, value: &str) -> RegisterOp {
        RegisterOp::PutIf {
            expect,
            value: value.to_owned(),
        }
    }

    use CounterOp::{Add, Get};

    #[test]
    fn overlapping_adds_may_take_effect_in_either_order() {
        let history = [
            op(0, 0, 10, Add(1), 2),
            op(1, 1, 9, Add(1), 1),
            op(2, 11, 12, Get, 2),
        ];
        let checked = check(&Counter, 0, &history).expect("linearizable");
        assert_eq!(checked.ops, 3);
    }

    #[test]
    fn a_read_overlapping_a_write_may_see_either_side() {
        for seen in [0, 1] {
            let history = [op(0, 0, 10, Add(1), 1), op(1, 2, 8, Get, seen)];
            assert!(check(&Counter, 0, &history).is_ok(), "get -> {seen}");
        }
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_add_is_caught() {
        let history = [op(0, 0, 10, Add(1), 1), op(1, 11, 12, Get, 0)];
        let verdict = check(&Counter, 0, &history).expect_err("stale read");
        assert!(
            matches!(verdict, Verdict::NotLinearizable { placed: 1, .. }),
            "{verdict:?}"
        );
    }

    #[test]
    fn two_adds_returning_the_same_value_are_caught() {
        let history = [op(0, 0, 10, Add(1), 1), op(1, 1, 11, Add(1), 1)];
        assert!(check(&Counter, 0, &history).is_err());
    }

    #[test]
    fn a_value_going_backwards_is_caught_even_with_overlap_elsewhere() {
        let history = [
            op(0, 0, 5, Add(1), 1),
            op(1, 6, 20, Add(1), 2),
            op(2, 7, 8, Get, 2),
            op(3, 9, 10, Get, 1),
        ];
        assert!(check(&Counter, 0, &history).is_err());
    }

    #[test]
    fn a_pending_compare_and_set_may_never_have_run_even_if_it_would_have_won() {
        // Found by the crash loop: the key is known at version 538, a CAS
        // expecting 538 is in flight when the server dies, and the restart
        // still reads version 538.
        let history = [
            op(0, 0, 1, put(None, "a"), RegisterOut::Stored(538)),
            pending(1, 2, 50, put(Some(538), "b")),
            op(2, 60, 61, RegisterOp::Get, get("a", 538)),
        ];
        assert!(check(&Register, RegisterState::absent(), &history).is_ok());
    }

    #[test]
    fn a_pending_add_may_or_may_not_have_happened() {
        for later in [1, 2] {
            let history = [
                op(0, 0, 1, Add(1), 1),
                pending(1, 2, 50, Add(1)),
                op(2, 60, 61, Get, later),
            ];
            assert!(check(&Counter, 0, &history).is_ok(), "get -> {later}");
        }
        // But it can't have happened twice, nor after the crash bound.
        let history = [
            op(0, 0, 1, Add(1), 1),
            pending(1, 2, 50, Add(1)),
            op(2, 60, 61, Get, 3),
        ];
        assert!(check(&Counter, 0, &history).is_err());
        let history = [
            pending(1, 2, 50, Add(1)),
            op(2, 60, 61, Get, 0),
            op(2, 62, 63, Get, 1),
        ];
        assert!(check(&Counter, 0, &history).is_err());
    }

    #[test]
    fn register_cas_history_that_is_linearizable() {
        let history = [
            op(0, 0, 5, put(None, "a"), RegisterOut::Stored(1)),
            // Two racing CAS from version 1: one wins.
            op(1, 6, 20, put(Some(1), "b"), RegisterOut::Stored(2)),
            op(2, 7, 21, put(Some(1), "c"), RegisterOut::Mismatch),
            // A read during the race sees the old value.
            op(3, 8, 9, RegisterOp::Get, get("a", 1)),
            op(3, 22, 23, RegisterOp::Get, get("b", 2)),
            op(0, 24, 25, put(None, "x"), RegisterOut::Mismatch),
        ];
        let checked = check(&Register, RegisterState::absent(), &history).expect("linearizable");
        assert_eq!(checked.ops, 6);
    }

    #[test]
    fn register_stale_read_after_acknowledged_cas_is_caught() {
        let history = [
            op(0, 0, 5, put(None, "a"), RegisterOut::Stored(1)),
            op(1, 6, 10, put(Some(1), "b"), RegisterOut::Stored(2)),
            op(2, 11, 12, RegisterOp::Get, get("a", 1)),
        ];
        assert!(check(&Register, RegisterState::absent(), &history).is_err());
    }

    #[test]
    fn register_two_winners_of_one_cas_are_caught() {
        let history = [
            op(0, 0, 5, put(None, "a"), RegisterOut::Stored(1)),
            op(1, 6, 20, put(Some(1), "b"), RegisterOut::Stored(2)),
            op(2, 7, 21, put(Some(1), "c"), RegisterOut::Stored(3)),
        ];
        assert!(check(&Register, RegisterState::absent(), &history).is_err());
    }

    #[test]
    fn register_mismatch_against_the_current_version_is_caught() {
        let history = [
            op(0, 0, 5, put(None, "a"), RegisterOut::Stored(1)),
            op(1, 6, 7, put(Some(1), "b"), RegisterOut::Mismatch),
        ];
        assert!(check(&Register, RegisterState::absent(), &history).is_err());
    }

    #[test]
    fn register_pending_write_is_resolved_by_a_later_read() {
        let base = [
            op(0, 0, 5, put(None, "a"), RegisterOut::Stored(1)),
            pending(1, 6, 50, put(Some(1), "b")),
        ];
        let with = |read: RegisterOut| {
            let mut h = base.to_vec();
            h.push(op(2, 60, 61, RegisterOp::Get, read));
            check(&Register, RegisterState::absent(), &h)
        };
        assert!(with(get("a", 1)).is_ok(), "it did not happen");
        assert!(with(get("b", 7)).is_ok(), "it happened, as version 7");
        assert!(with(get("c", 7)).is_err(), "no one wrote c");
        assert!(
            with(get("b", 1)).is_err(),
            "a new write needs a new version"
        );
    }
}
