//! Tests of the C ABI from Rust: the header is current, and the exported
//! functions keep their contract (codes, out-params, ownership, misuse).
//! The same contract is exercised from C in `bindings/c` and from Bun in
//! `bindings/bun`.

mod abi;
mod fuzz;
mod header;
mod ratelimit;
