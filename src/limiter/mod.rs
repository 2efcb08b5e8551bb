//! Rate limiting on actors (SPEC §6): a key (an IP, a user, an API key) is
//! hashed to one of a fixed number of limiter actors, whose owner decides
//! alone, so the limit is global across machines and regions.
//!
//! The algorithm is GCRA (see [`gcra`]); each key's state is one timestamp
//! kept in the actor's memory and written to its database on the buffered
//! schedule (see [`state`]), so a restart keeps every client's allowance.

pub mod gcra;
pub mod policy;
pub mod state;

pub use gcra::{Decision, Policy};
pub use policy::NamedPolicies;

use crate::actor_id::ActorId;
use sha2::{Digest, Sha256};

/// Limiter actors per cluster unless configured. Every machine must use the
/// same number: it decides which actor (and so which owner) holds a key.
pub const DEFAULT_SHARDS: u32 = 16;
/// Most limiter actors a cluster may spread keys over.
pub const MAX_SHARDS: u32 = 4096;

/// The actor that holds `key`'s state. Its ID has no region suffix, so it
/// lives in the default region and the limit is one worldwide limit.
pub fn shard_actor(key: &str, shards: u32) -> ActorId {
    shard_id(shard_of(key, shards))
}

/// Which of `shards` limiter actors holds `key`.
pub fn shard_of(key: &str, shards: u32) -> usize {
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(shards.max(1))) as usize
}

/// The ID of limiter actor number `shard`.
pub fn shard_id(shard: usize) -> ActorId {
    ActorId::parse(&format!("roost-ratelimit-{shard:03}"))
        .expect("a generated limiter actor ID is valid")
}

/// The actor that holds `key`'s regional share in `region` (local mode):
/// homed in that region, so a machine there decides.
pub fn regional_shard_actor(key: &str, shards: u32, region: &str) -> ActorId {
    let global = shard_actor(key, shards);
    ActorId::parse(&format!("{}-local@{region}", global.as_str())).unwrap_or(global)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_every_shard_and_stay_put() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            seen.insert(shard_actor(&format!("10.0.0.{i}"), 16).as_str().to_owned());
        }
        assert_eq!(seen.len(), 16);
        assert_eq!(shard_actor("1.2.3.4", 16), shard_actor("1.2.3.4", 16));
        assert_eq!(shard_actor("x", 0).as_str(), "roost-ratelimit-000");
    }
}
