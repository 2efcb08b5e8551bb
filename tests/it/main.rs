//! Integration tests: real servers on port 0, real HTTP, real libSQL files,
//! and real `roost serve` processes for crash and shutdown tests.

mod abuse;
mod api;
mod cluster;
mod crash;
mod deploy;
mod disk;
mod faults;
mod handoff;
mod harness;
mod history;
mod hostile;
mod lifecycle;
mod operations;
mod placement;
mod ratelimit;
mod realtime;
