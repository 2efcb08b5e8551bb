//! Placement: an actor's home region (its `@region` suffix or the default)
//! and its owner, the rendezvous (highest-random-weight) hash of the ID
//! over the home region's machines. Every machine computes the same owner
//! from the same membership; adding a machine moves only the actors that
//! now hash to it.

use super::membership::{Member, Membership};
use super::Routing;
use crate::actor_id::ActorId;
use crate::error::EngineError;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::Arc;

/// See [`Node::forward_timeout`].
pub const DEFAULT_FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// This machine and its view of the cluster.
#[derive(Debug, Clone)]
pub struct Node {
    pub machine_id: String,
    pub region: String,
    pub default_region: String,
    /// Regions configured even when no member is in them yet.
    pub regions: BTreeSet<String>,
    pub membership: Arc<Membership>,
    pub routing: Routing,
    /// Forwards requests to owners (forward routing).
    pub client: reqwest::Client,
    /// Longest a forwarded request waits for the owner's response head
    /// before the caller gets 503 (a stopped or partitioned owner).
    pub forward_timeout: std::time::Duration,
}

/// Where a request for an actor should be served.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// This machine owns the actor.
    Here,
    /// Another machine does.
    Owner(Member),
    /// The home region has no known machine yet.
    Region(String),
}

impl Node {
    /// A single machine serving every region it knows: its own and the default.
    pub fn single(machine_id: String, region: String, default_region: Option<String>) -> Self {
        let me = Member {
            machine_id: machine_id.clone(),
            region: region.clone(),
            address: String::new(),
        };
        Self::cluster(me, Vec::new(), default_region, Routing::Forward)
    }

    /// This machine (`me`) among `peers`.
    pub fn cluster(
        me: Member,
        peers: Vec<Member>,
        default_region: Option<String>,
        routing: Routing,
    ) -> Self {
        let default_region = default_region.unwrap_or_else(|| me.region.clone());
        let mut members = peers;
        if !members.iter().any(|m| m.machine_id == me.machine_id) {
            members.push(me.clone());
        }
        let mut regions: BTreeSet<String> = members.iter().map(|m| m.region.clone()).collect();
        regions.insert(default_region.clone());
        Node {
            machine_id: me.machine_id,
            region: me.region,
            default_region,
            regions,
            membership: Arc::new(Membership::new(members)),
            routing,
            client: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(2))
                .build()
                .unwrap_or_default(),
            forward_timeout: DEFAULT_FORWARD_TIMEOUT,
        }
    }

    /// This machine is the only one it knows, in the only region it knows:
    /// it owns every actor it can serve, so routing has nothing to decide.
    pub fn is_alone(&self) -> bool {
        self.regions.len() <= 1
            && self
                .membership
                .members()
                .iter()
                .all(|m| m.machine_id == self.machine_id)
    }

    /// The actor's home region: its `@region` suffix, else the default.
    pub fn home_region(&self, id: &ActorId) -> Result<String, EngineError> {
        match id.region_suffix() {
            Some(region) if self.knows_region(region) => Ok(region.to_owned()),
            Some(region) => Err(EngineError::UnknownRegion(region.to_owned())),
            None => Ok(self.default_region.clone()),
        }
    }

    fn knows_region(&self, region: &str) -> bool {
        self.regions.contains(region)
            || self.membership.members().iter().any(|m| m.region == region)
    }

    /// The other machines of `region`.
    pub fn peers_in(&self, region: &str) -> Vec<Member> {
        self.membership
            .members()
            .iter()
            .filter(|m| m.region == region && m.machine_id != self.machine_id)
            .cloned()
            .collect()
    }

    /// The member with this machine ID, if it is one.
    pub fn member(&self, machine_id: &str) -> Option<Member> {
        self.membership
            .members()
            .iter()
            .find(|m| m.machine_id == machine_id)
            .cloned()
    }

    /// Who serves `id`.
    pub fn place(&self, id: &ActorId) -> Result<Placement, EngineError> {
        let home = self.home_region(id)?;
        let owners = self.membership.owners();
        Ok(match owner_of(id, &home, &owners) {
            Some(owner) if owner.machine_id == self.machine_id => Placement::Here,
            Some(owner) => Placement::Owner(owner.clone()),
            None => Placement::Region(home),
        })
    }
}

/// The rendezvous owner of `id` among the members of `region`.
pub fn owner_of<'a>(id: &ActorId, region: &str, members: &'a [Member]) -> Option<&'a Member> {
    members
        .iter()
        .filter(|m| m.region == region)
        .max_by_key(|m| (weight(&m.machine_id, id), m.machine_id.as_str()))
}

fn weight(machine_id: &str, id: &ActorId) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(machine_id.as_bytes());
    hasher.update([0u8]);
    hasher.update(id.as_str().as_bytes());
    let digest = hasher.finalize();
    u64::from_be_bytes(digest[..8].try_into().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, region: &str) -> Member {
        Member {
            machine_id: id.into(),
            region: region.into(),
            address: format!("http://{id}"),
        }
    }

    #[test]
    fn owners_stay_in_the_home_region_and_spread() {
        let members = vec![
            member("f1", "fra"),
            member("f2", "fra"),
            member("i1", "iad"),
        ];
        let mut counts = std::collections::BTreeMap::new();
        for i in 0..1000 {
            let id = ActorId::parse(&format!("room-{i}")).unwrap();
            let owner = owner_of(&id, "fra", &members).unwrap();
            assert_eq!(owner.region, "fra");
            *counts.entry(owner.machine_id.clone()).or_insert(0) += 1;
        }
        assert!(counts.values().all(|&c| c > 400), "{counts:?}");
        assert!(owner_of(&ActorId::parse("x").unwrap(), "syd", &members).is_none());
    }

    #[test]
    fn a_new_machine_takes_only_actors_that_hash_to_it() {
        let before = vec![member("f1", "fra"), member("f2", "fra")];
        let mut after = before.clone();
        after.push(member("f3", "fra"));
        for i in 0..1000 {
            let id = ActorId::parse(&format!("room-{i}")).unwrap();
            let old = owner_of(&id, "fra", &before).unwrap();
            let new = owner_of(&id, "fra", &after).unwrap();
            assert!(
                new == old || new.machine_id == "f3",
                "{id} moved between old machines"
            );
        }
    }

    #[test]
    fn placement_uses_suffix_or_default_region() {
        let me = member("f1", "fra");
        let node = Node::cluster(
            me,
            vec![member("i1", "iad")],
            Some("iad".into()),
            Routing::Forward,
        );
        let at = |id: &str| node.place(&ActorId::parse(id).unwrap()).unwrap();
        assert_eq!(at("room@fra"), Placement::Here);
        assert!(matches!(at("room@iad"), Placement::Owner(m) if m.machine_id == "i1"));
        assert!(matches!(at("plain"), Placement::Owner(m) if m.machine_id == "i1"));
        assert!(node.place(&ActorId::parse("x@zz").unwrap()).is_err());
    }
}
