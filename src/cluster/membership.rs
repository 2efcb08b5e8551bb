//! Membership: the set of `(machine_id, region, address)` that make up the
//! cluster, from a static `--peers` list or from Fly's internal DNS
//! (`_instances.internal` TXT), refreshed periodically.
//!
//! A member that disappears from DNS is kept for a grace period: a machine
//! that restarts must not hand its actors to another one (that would fork
//! their state); requests for its actors get 503 until it is back.
//!
//! A member that is draining (leaving for good, see `drain`) stays a member
//! (it may still hold actors to hand over) but owns nothing new.

use parking_lot::RwLock;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One machine of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub machine_id: String,
    pub region: String,
    /// Base URL, e.g. `http://[fdaa::1]:8080`.
    pub address: String,
}

/// The current members; cheap to read on every request.
#[derive(Debug, Default)]
pub struct Membership {
    members: RwLock<Arc<Vec<Member>>>,
    /// The members that may own actors: all but the leaving ones.
    owners: RwLock<Arc<Vec<Member>>>,
    leaving: RwLock<BTreeSet<String>>,
    /// Leaving members that reported holding no actor any more.
    drained: RwLock<BTreeSet<String>>,
    last_seen: RwLock<BTreeMap<String, Instant>>,
}

impl Membership {
    pub fn new(members: Vec<Member>) -> Self {
        let membership = Membership::default();
        membership.replace(members);
        membership
    }

    /// A snapshot of the members, sorted by machine id.
    pub fn members(&self) -> Arc<Vec<Member>> {
        self.members.read().clone()
    }

    /// The members that may own actors (not leaving), sorted by machine id.
    pub fn owners(&self) -> Arc<Vec<Member>> {
        self.owners.read().clone()
    }

    /// `machine_id` is leaving: it owns nothing from now on.
    pub fn mark_leaving(&self, machine_id: &str) {
        let added = self.leaving.write().insert(machine_id.to_owned());
        if added {
            let members = self.members().as_ref().clone();
            self.replace(members);
        }
    }

    pub fn is_leaving(&self, machine_id: &str) -> bool {
        self.leaving.read().contains(machine_id)
    }

    /// `machine_id` left and holds no actor: nobody needs to ask it for
    /// one, so its absence blocks nothing (see `handoff::ensure_held`).
    pub fn mark_drained(&self, machine_id: &str) {
        self.mark_leaving(machine_id);
        self.drained.write().insert(machine_id.to_owned());
    }

    pub fn is_drained(&self, machine_id: &str) -> bool {
        self.drained.read().contains(machine_id)
    }

    fn replace(&self, mut members: Vec<Member>) {
        members.sort_by(|a, b| a.machine_id.cmp(&b.machine_id));
        members.dedup_by(|a, b| a.machine_id == b.machine_id);
        let leaving = self.leaving.read();
        let owners = members
            .iter()
            .filter(|m| !leaving.contains(&m.machine_id))
            .cloned()
            .collect();
        *self.owners.write() = Arc::new(owners);
        *self.members.write() = Arc::new(members);
    }

    /// Merges a fresh discovery: new machines join at once; missing ones
    /// stay until they have been gone for `grace`.
    pub fn observe(&self, seen: Vec<Member>, grace: Duration) {
        let now = Instant::now();
        let mut last_seen = self.last_seen.write();
        for member in &seen {
            last_seen.insert(member.machine_id.clone(), now);
        }
        let mut merged: BTreeMap<String, Member> = seen
            .into_iter()
            .map(|m| (m.machine_id.clone(), m))
            .collect();
        for old in self.members().iter() {
            // A drained machine that is gone left nothing behind to wait for.
            let recent = last_seen
                .get(&old.machine_id)
                .is_some_and(|t| now.duration_since(*t) < grace)
                && !self.is_leaving(&old.machine_id);
            if recent {
                merged
                    .entry(old.machine_id.clone())
                    .or_insert_with(|| old.clone());
            }
        }
        last_seen.retain(|id, _| merged.contains_key(id));
        drop(last_seen);
        self.replace(merged.into_values().collect());
    }
}

/// Parses `id=region=http://host:port,...`.
pub fn parse_peers(text: &str) -> Result<Vec<Member>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|peer| {
            let mut parts = peer.splitn(3, '=');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(id), Some(region), Some(address))
                    if !id.is_empty() && !region.is_empty() && address.starts_with("http") =>
                {
                    Ok(Member {
                        machine_id: id.to_owned(),
                        region: region.to_owned(),
                        address: address.trim_end_matches('/').to_owned(),
                    })
                }
                _ => Err(format!("peer {peer:?} is not `id=region=http://host:port`")),
            }
        })
        .collect()
}

/// Parses Fly's `_instances.internal` TXT answer:
/// `instance=<id>,app=<app>,ip=<ipv6>,region=<r>;instance=...`.
pub fn parse_fly_instances(txt: &str, port: u16) -> Vec<Member> {
    txt.split(';')
        .filter_map(|entry| {
            let fields: BTreeMap<&str, &str> = entry
                .split(',')
                .filter_map(|kv| kv.trim().split_once('='))
                .collect();
            let ip = fields.get("ip")?;
            let address = if ip.contains(':') {
                format!("http://[{ip}]:{port}")
            } else {
                format!("http://{ip}:{port}")
            };
            Some(Member {
                machine_id: (*fields.get("instance")?).to_owned(),
                region: (*fields.get("region")?).to_owned(),
                address,
            })
        })
        .collect()
}

/// Keeps `membership` in step with Fly's internal DNS for `app`.
pub async fn follow_fly_dns(
    membership: Arc<Membership>,
    port: u16,
    every: Duration,
    grace: Duration,
) {
    let resolver = match hickory_resolver::TokioResolver::builder_tokio() {
        Ok(builder) => builder.build(),
        Err(err) => {
            tracing::error!(error = %err, "no DNS resolver: membership stays static");
            return;
        }
    };
    loop {
        match resolver.txt_lookup("_instances.internal.").await {
            Ok(answer) => {
                let text: String = answer
                    .iter()
                    .map(|txt| {
                        txt.txt_data()
                            .iter()
                            .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
                            .collect::<String>()
                    })
                    .collect::<Vec<_>>()
                    .join(";");
                let seen = parse_fly_instances(&text, port);
                if !seen.is_empty() {
                    membership.observe(seen, grace);
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "membership refresh failed; keeping the last view")
            }
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_peers_parse_and_bad_ones_are_named() {
        let peers = parse_peers("a=fra=http://127.0.0.1:1, b=iad=http://h:2/").unwrap();
        assert_eq!(peers[1].address, "http://h:2");
        assert!(parse_peers("a=fra").unwrap_err().contains("a=fra"));
    }

    #[test]
    fn fly_instances_parse() {
        let txt = "instance=148e212a1e0789,app=roost,ip=fdaa:0:1::2,region=fra;instance=3d8d9,app=roost,ip=fdaa:0:1::3,region=iad";
        let members = parse_fly_instances(txt, 8080);
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].address, "http://[fdaa:0:1::2]:8080");
        assert_eq!(members[1].region, "iad");
    }

    #[test]
    fn missing_members_stay_for_the_grace_period() {
        let m = |id: &str| Member {
            machine_id: id.into(),
            region: "fra".into(),
            address: "http://x".into(),
        };
        let membership = Membership::new(vec![]);
        membership.observe(vec![m("a"), m("b")], Duration::from_secs(60));
        membership.observe(vec![m("a")], Duration::from_secs(60));
        assert_eq!(
            membership.members().len(),
            2,
            "b restarting keeps its actors"
        );
        membership.observe(vec![m("a")], Duration::ZERO);
        assert_eq!(membership.members().len(), 1, "b is gone for good");
    }

    #[test]
    fn a_leaving_member_owns_nothing_and_goes_without_a_grace_period() {
        let m = |id: &str| Member {
            machine_id: id.into(),
            region: "fra".into(),
            address: "http://x".into(),
        };
        let membership = Membership::new(vec![m("a"), m("b")]);
        membership.mark_leaving("b");
        assert_eq!(membership.members().len(), 2, "b may still hold actors");
        assert_eq!(membership.owners().as_ref(), &vec![m("a")]);
        membership.observe(vec![m("a")], Duration::from_secs(600));
        assert_eq!(membership.members().as_ref(), &vec![m("a")]);
        assert!(!membership.is_drained("b"));
        membership.mark_drained("b");
        assert!(membership.is_drained("b") && membership.is_leaving("b"));
    }
}
