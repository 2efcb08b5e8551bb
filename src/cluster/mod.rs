//! The cluster: which machines exist (membership), which one owns an actor
//! (placement), and how a request that lands on the wrong machine reaches
//! the owner (routing: `fly-replay` on Fly, forwarding elsewhere).

pub mod drain;
pub mod handoff;
pub mod membership;
pub mod placement;
pub mod routing;
pub mod socket_proxy;
pub mod usage_sync;

pub use membership::{Member, Membership};
pub use placement::Node;

use clap::ValueEnum;

/// How a machine answers requests for actors it does not own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Routing {
    /// 409 `wrong-owner` with `fly-replay`, so Fly's proxy re-sends it.
    Replay,
    /// Proxy the request to the owner and return its answer.
    Forward,
}
