//! One call of the ABI (`Call`, `AsyncOp`) and the strategies that
//! generate them.

use super::args::{Arg, Handle};
use super::generators::{
    actor, dead_handle, handle, i64_arg, import_target, key, rate_policy, value,
};
use super::requests::{actor_list_shape, database, json_text, kv_list_shape, sql_shape};
use proptest::prelude::*;
use proptest::sample::select;

/// One call of the ABI. `out*: false` passes NULL for that out-param.
#[derive(Debug, Clone)]
pub(super) enum Call {
    CounterAdd {
        engine: Handle,
        actor: Arg,
        name: Arg,
        delta: i64,
        out: bool,
    },
    CounterGet {
        engine: Handle,
        actor: Arg,
        name: Arg,
        out: bool,
    },
    KvGet {
        engine: Handle,
        actor: Arg,
        key: Arg,
        out: bool,
    },
    KvGetVersioned {
        engine: Handle,
        actor: Arg,
        key: Arg,
        out: bool,
        out_version: bool,
    },
    KvPut {
        engine: Handle,
        actor: Arg,
        key: Arg,
        value: Arg,
    },
    KvPutIf {
        engine: Handle,
        actor: Arg,
        key: Arg,
        value: Arg,
        expected: i64,
        out_version: bool,
    },
    KvDelete {
        engine: Handle,
        actor: Arg,
        key: Arg,
    },
    KvDeleteIf {
        engine: Handle,
        actor: Arg,
        key: Arg,
        expected: i64,
        out_existed: bool,
    },
    KvList {
        engine: Handle,
        actor: Arg,
        query: Arg,
        out: bool,
    },
    Sql {
        engine: Handle,
        actor: Arg,
        request: Arg,
        out: bool,
    },
    ActorDelete {
        engine: Handle,
        actor: Arg,
        out_existed: bool,
    },
    ActorInfo {
        engine: Handle,
        actor: Arg,
        out: bool,
    },
    ActorList {
        engine: Handle,
        query: Arg,
        out: bool,
    },
    ActorExport {
        engine: Handle,
        actor: Arg,
        out: bool,
    },
    ActorImport {
        engine: Handle,
        actor: Arg,
        db: Arg,
    },
    RateLimit {
        engine: Handle,
        key: Arg,
        limit: u64,
        window_ms: u64,
        cost: u64,
        out: bool,
    },
    Async {
        engine: Handle,
        actor: Arg,
        op: AsyncOp,
        callback: bool,
    },
    /// `roost_engine_close` of a handle that is not open.
    CloseDead {
        engine: Handle,
    },
    LastError {
        len: usize,
        null: bool,
    },
    ErrorMessage {
        code: u32,
        len: usize,
        null: bool,
    },
}

#[derive(Debug, Clone)]
pub(super) enum AsyncOp {
    CounterAdd { name: Arg, delta: i64 },
    CounterGet { name: Arg },
    KvGet { key: Arg },
    KvPut { key: Arg, value: Arg },
    KvDelete { key: Arg },
    KvList { query: Arg },
    Sql { request: Arg },
    ActorDelete,
}

pub(super) fn out() -> impl Strategy<Value = bool> {
    prop::bool::weighted(0.9)
}

fn async_op() -> BoxedStrategy<AsyncOp> {
    prop_oneof![
        (key(), i64_arg()).prop_map(|(name, delta)| AsyncOp::CounterAdd { name, delta }),
        key().prop_map(|name| AsyncOp::CounterGet { name }),
        key().prop_map(|key| AsyncOp::KvGet { key }),
        (key(), value()).prop_map(|(key, value)| AsyncOp::KvPut { key, value }),
        key().prop_map(|key| AsyncOp::KvDelete { key }),
        json_text(kv_list_shape()).prop_map(|query| AsyncOp::KvList { query }),
        json_text(sql_shape()).prop_map(|request| AsyncOp::Sql { request }),
        Just(AsyncOp::ActorDelete),
    ]
    .boxed()
}

pub(super) fn buffer_len() -> impl Strategy<Value = usize> {
    prop_oneof![select(vec![0usize, 1, 2, 3, 4, 8, 9]), 0usize..200]
}

pub(super) fn call(sample: Vec<u8>) -> BoxedStrategy<Call> {
    prop_oneof![
        1 => (handle(), actor(), key(), i64_arg(), out()).prop_map(
            |(engine, actor, name, delta, out)| Call::CounterAdd { engine, actor, name, delta, out }
        ),
        1 => (handle(), actor(), key(), out())
            .prop_map(|(engine, actor, name, out)| Call::CounterGet { engine, actor, name, out }),
        1 => (handle(), actor(), key(), out())
            .prop_map(|(engine, actor, key, out)| Call::KvGet { engine, actor, key, out }),
        1 => (handle(), actor(), key(), out(), any::<bool>()).prop_map(
            |(engine, actor, key, out, out_version)| Call::KvGetVersioned {
                engine,
                actor,
                key,
                out,
                out_version
            }
        ),
        3 => (handle(), actor(), key(), value())
            .prop_map(|(engine, actor, key, value)| Call::KvPut { engine, actor, key, value }),
        2 => (handle(), actor(), key(), value(), i64_arg(), any::<bool>()).prop_map(
            |(engine, actor, key, value, expected, out_version)| Call::KvPutIf {
                engine,
                actor,
                key,
                value,
                expected,
                out_version
            }
        ),
        1 => (handle(), actor(), key())
            .prop_map(|(engine, actor, key)| Call::KvDelete { engine, actor, key }),
        1 => (handle(), actor(), key(), i64_arg(), any::<bool>()).prop_map(
            |(engine, actor, key, expected, out_existed)| Call::KvDeleteIf {
                engine,
                actor,
                key,
                expected,
                out_existed
            }
        ),
        1 => (handle(), actor(), json_text(kv_list_shape()), out())
            .prop_map(|(engine, actor, query, out)| Call::KvList { engine, actor, query, out }),
        3 => (handle(), actor(), json_text(sql_shape()), out())
            .prop_map(|(engine, actor, request, out)| Call::Sql { engine, actor, request, out }),
        1 => (handle(), actor(), any::<bool>()).prop_map(
            |(engine, actor, out_existed)| Call::ActorDelete { engine, actor, out_existed }
        ),
        1 => (handle(), actor(), out())
            .prop_map(|(engine, actor, out)| Call::ActorInfo { engine, actor, out }),
        1 => (handle(), json_text(actor_list_shape()), out())
            .prop_map(|(engine, query, out)| Call::ActorList { engine, query, out }),
        1 => (handle(), actor(), out())
            .prop_map(|(engine, actor, out)| Call::ActorExport { engine, actor, out }),
        2 => (handle(), import_target(), database(sample))
            .prop_map(|(engine, actor, db)| Call::ActorImport { engine, actor, db }),
        2 => (handle(), key(), rate_policy(), out()).prop_map(
            |(engine, key, (limit, window_ms, cost), out)| Call::RateLimit {
                engine,
                key,
                limit,
                window_ms,
                cost,
                out
            }
        ),
        4 => (handle(), actor(), async_op(), out())
            .prop_map(|(engine, actor, op, callback)| Call::Async { engine, actor, op, callback }),
        1 => dead_handle()
            .prop_map(|engine| Call::CloseDead { engine }),
        1 => (buffer_len(), prop::bool::weighted(0.2))
            .prop_map(|(len, null)| Call::LastError { len, null }),
        1 => (prop_oneof![0u32..20, any::<u32>()], buffer_len(), prop::bool::weighted(0.2))
            .prop_map(|(code, len, null)| Call::ErrorMessage { code, len, null }),
    ]
    .boxed()
}
