//! The typed engine API that HTTP handlers and the C ABI call: one function
//! per behaviour, each a thin wrapper that builds an [`Op`] and unpacks its
//! output. From a non-async thread, drive them with `futures::executor::block_on`.

use super::ops::{Op, OpOutput};
use super::Engine;
use crate::actor_id::ActorId;
use crate::config::Durability;
use crate::error::EngineError;
use crate::limiter::state::{After, Spend};
use crate::limiter::{Decision, Policy};
use crate::store::kv::{KvEntry, ListPage, ListQuery, Precondition};
use crate::store::sql::{SqlRequest, SqlResponse};

fn unexpected(output: OpOutput) -> EngineError {
    EngineError::Internal(format!("unexpected engine output {output:?}"))
}

impl Engine {
    pub async fn sql(
        &self,
        id: &ActorId,
        request: SqlRequest,
        create_as: Option<Durability>,
    ) -> Result<SqlResponse, EngineError> {
        match self.call(id, Op::Sql(request), create_as).await? {
            OpOutput::Sql(response) => Ok(response),
            other => Err(unexpected(other)),
        }
    }

    pub async fn kv_get(&self, id: &ActorId, key: String) -> Result<Option<KvEntry>, EngineError> {
        match self.call(id, Op::KvGet { key }, None).await? {
            OpOutput::Entry(entry) => Ok(entry),
            other => Err(unexpected(other)),
        }
    }

    /// Stores a value; returns its new version.
    pub async fn kv_put(
        &self,
        id: &ActorId,
        key: String,
        value: Vec<u8>,
        precondition: Precondition,
        create_as: Option<Durability>,
    ) -> Result<i64, EngineError> {
        match self
            .call(
                id,
                Op::KvPut {
                    key,
                    value,
                    precondition,
                },
                create_as,
            )
            .await?
        {
            OpOutput::Version(version) => Ok(version),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes a key; returns whether it existed.
    pub async fn kv_delete(
        &self,
        id: &ActorId,
        key: String,
        precondition: Precondition,
    ) -> Result<bool, EngineError> {
        match self
            .call(id, Op::KvDelete { key, precondition }, None)
            .await?
        {
            OpOutput::Existed(existed) => Ok(existed),
            other => Err(unexpected(other)),
        }
    }

    pub async fn kv_list(&self, id: &ActorId, query: ListQuery) -> Result<ListPage, EngineError> {
        match self.call(id, Op::KvList(query), None).await? {
            OpOutput::Page(page) => Ok(page),
            other => Err(unexpected(other)),
        }
    }

    /// Adds `by` to a counter; returns the new value.
    pub async fn counter_add(
        &self,
        id: &ActorId,
        name: String,
        by: i64,
        create_as: Option<Durability>,
    ) -> Result<i64, EngineError> {
        match self
            .call(id, Op::CounterAdd { name, by }, create_as)
            .await?
        {
            OpOutput::Counter(value) => Ok(value),
            other => Err(unexpected(other)),
        }
    }

    /// A counter's value (0 if never set).
    pub async fn counter_get(&self, id: &ActorId, name: String) -> Result<i64, EngineError> {
        match self.call(id, Op::CounterGet { name }, None).await? {
            OpOutput::Counter(value) => Ok(value),
            other => Err(unexpected(other)),
        }
    }

    /// Spends `cost` of `key`'s allowance under `policy` on the key's
    /// limiter actor (see [`crate::limiter`]). Limiter actors are buffered,
    /// or memory when the engine keeps nothing on disk.
    pub async fn ratelimit(
        &self,
        key: &str,
        policy: Policy,
        cost: u64,
    ) -> Result<Decision, EngineError> {
        let id = self.ratelimit_actor(key);
        self.ratelimit_on(&id, key, policy, cost, Spend::IfAllowed)
            .await
    }

    /// [`Engine::ratelimit`] on a chosen limiter actor (a regional one for
    /// `"mode": "local"`), optionally spending past the limit (usage synced
    /// from another region).
    pub async fn ratelimit_on(
        &self,
        id: &ActorId,
        key: &str,
        policy: Policy,
        cost: u64,
        spend: Spend,
    ) -> Result<Decision, EngineError> {
        super::ops::validate_ratelimit(key, &policy, cost, spend, &self.config().limits)?;
        if let Some(decision) = self.decide_here(id, key, &policy, cost, spend) {
            crate::telemetry::count_decision(decision.allowed);
            return Ok(decision);
        }
        let op = Op::RateLimit {
            key: key.to_owned(),
            policy,
            cost,
            spend,
        };
        let create_as = match self.config().durability {
            Durability::Memory => Durability::Memory,
            _ => Durability::Buffered,
        };
        match self.call(id, op, Some(create_as)).await? {
            OpOutput::RateLimit(decision) => {
                crate::telemetry::count_decision(decision.allowed);
                Ok(decision)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Decides on this thread from the limiter actor's shared state, when
    /// the actor has loaded it: no hop to the actor's thread, and no wait
    /// for a flush in progress there. `None`: the actor must decide.
    fn decide_here(
        &self,
        id: &ActorId,
        key: &str,
        policy: &Policy,
        cost: u64,
        spend: Spend,
    ) -> Option<Decision> {
        if self.inner.closed.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let limiters = self.inner.limiters.read();
        let (decision, after) = limiters.get(id)?.decide_live(key, policy, cost, spend)?;
        drop(limiters);
        if after == After::WakeActor {
            self.wake(id);
        }
        Some(decision)
    }

    /// The limiter actor that holds `key`.
    pub fn ratelimit_actor(&self, key: &str) -> ActorId {
        let shard = crate::limiter::shard_of(key, self.config().ratelimit_shards);
        self.inner.limiter_ids[shard].clone()
    }

    /// The limiter actor that holds `key`'s share in `region` (local mode).
    pub fn ratelimit_local_actor(&self, key: &str, region: &str) -> ActorId {
        crate::limiter::regional_shard_actor(key, self.config().ratelimit_shards, region)
    }

    /// Removes the actor and its data; returns whether it existed.
    pub async fn destroy(&self, id: &ActorId) -> Result<bool, EngineError> {
        match self.call(id, Op::Destroy, None).await? {
            OpOutput::Existed(existed) => Ok(existed),
            other => Err(unexpected(other)),
        }
    }
}

impl Engine {
    /// A consistent SQLite copy of the actor in a temporary file that the
    /// caller owns and must remove.
    pub async fn export(&self, id: &ActorId) -> Result<std::path::PathBuf, EngineError> {
        match self.call(id, Op::Export, None).await? {
            OpOutput::File(path) => Ok(path),
            other => Err(unexpected(other)),
        }
    }

    /// Hands the actor off to machine `to` (see `cluster::handoff`): its
    /// final copy in a temporary file the caller owns, with its durability,
    /// or `None` for a memory actor. Every later op here answers `Moved`.
    pub async fn hand_off(
        &self,
        id: &ActorId,
        to: &str,
    ) -> Result<Option<(std::path::PathBuf, Durability)>, EngineError> {
        match self
            .call(id, Op::HandOff { to: to.to_owned() }, None)
            .await?
        {
            OpOutput::HandedOff(copy) => Ok(copy),
            other => Err(unexpected(other)),
        }
    }

    /// Replaces the actor's state with the SQLite file at `upload` (taken
    /// over and removed). A bad file changes nothing.
    pub async fn import(
        &self,
        id: &ActorId,
        upload: std::path::PathBuf,
        create_as: Option<Durability>,
    ) -> Result<(), EngineError> {
        match self
            .call(id, Op::Import { path: upload }, create_as)
            .await?
        {
            OpOutput::Imported => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}
