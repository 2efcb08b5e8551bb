//! Metrics: names, descriptions, and the Prometheus recorder behind
//! `GET /metrics`. The engine and the HTTP layer record through the
//! `metrics` macros; one process-wide recorder collects everything.

use crate::placement::SpawnFloating;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::sync::OnceLock;

pub const HTTP_REQUESTS: &str = "roost_http_requests_total";
pub const HTTP_DURATION: &str = "roost_http_request_duration_seconds";
pub const HTTP_CONNECTIONS: &str = "roost_http_connections";
pub const HTTP_CONNECTIONS_REFUSED: &str = "roost_http_connections_refused_total";
pub const OPEN_ACTORS: &str = "roost_open_actors";
pub const ACTOR_THREADS: &str = "roost_actor_threads";
pub const ACTOR_OPENS: &str = "roost_actor_opens_total";
pub const ACTOR_CLOSES: &str = "roost_actor_closes_total";
pub const COMMIT_BATCH_OPS: &str = "roost_commit_batch_ops";
pub const COMMIT_DURATION: &str = "roost_commit_duration_seconds";
pub const JOURNAL_SYNC_RECORDS: &str = "roost_journal_sync_records";
pub const JOURNAL_SYNC_DURATION: &str = "roost_journal_sync_duration_seconds";
pub const BUFFERED_OPS: &str = "roost_buffered_pending_ops";
pub const BUFFERED_BYTES: &str = "roost_buffered_pending_bytes";
pub const TRANSACTION_REPLAYS: &str = "roost_transaction_replays_total";
pub const QUERY_TIMEOUTS: &str = "roost_query_timeouts_total";
pub const FORWARDS: &str = "roost_forwards_total";
pub const REPLAYS: &str = "roost_replays_total";
pub const RATELIMIT_DECISIONS: &str = "roost_ratelimit_decisions_total";
pub const WS_DROPPED: &str = "roost_ws_dropped_total";
pub const HANDOFFS: &str = "roost_handoffs_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
/// How often queued histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The process-wide Prometheus handle, installing the recorder on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let latency = [
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
        ];
        let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), &latency)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(COMMIT_DURATION.into()), &latency))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(COMMIT_BATCH_OPS.into()), &sizes))
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(JOURNAL_SYNC_DURATION.into()), &latency)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(JOURNAL_SYNC_RECORDS.into()), &sizes)
            });
        let recorder = match builder {
            Ok(builder) => builder.build_recorder(),
            Err(_) => PrometheusBuilder::new().build_recorder(),
        };
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then /metrics
        // renders this (empty) one rather than crashing.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        // Histogram samples queue up until folded into their buckets; a
        // server nobody scrapes would otherwise keep every sample.
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("roost-metrics".into())
            .spawn_floating(move || loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            });
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(HTTP_REQUESTS, "HTTP requests by route, method and status");
    describe_counter!(
        HANDOFFS,
        "Actors handed to a new owner (side=given) or received (side=received)"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency by route, method and status"
    );
    describe_gauge!(HTTP_CONNECTIONS, "Open client connections");
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED,
        "Connections closed on arrival because --max-connections were open"
    );
    describe_gauge!(OPEN_ACTORS, "Actors with an open database");
    describe_gauge!(
        ACTOR_THREADS,
        "Open actors on a thread (the others are parked until their next op)"
    );
    describe_counter!(ACTOR_OPENS, "Actor threads started");
    describe_counter!(
        ACTOR_CLOSES,
        "Actors closed, by reason (idle, lru, shutdown)"
    );
    describe_histogram!(
        COMMIT_BATCH_OPS,
        "Operations sharing one commit (group commit size)"
    );
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "Time to commit a batch, fsync included"
    );
    describe_histogram!(
        JOURNAL_SYNC_RECORDS,
        "Durable counter increments sharing one journal sync"
    );
    describe_histogram!(
        JOURNAL_SYNC_DURATION,
        Unit::Seconds,
        "Time to write and sync a batch of journal records"
    );
    describe_gauge!(
        BUFFERED_OPS,
        "Acknowledged buffered writes waiting for a flush"
    );
    describe_gauge!(
        BUFFERED_BYTES,
        Unit::Bytes,
        "Approximate size of buffered writes waiting for a flush"
    );
    describe_counter!(
        TRANSACTION_REPLAYS,
        "Transactions SQLite rolled back on its own, replayed by the engine"
    );
    describe_counter!(QUERY_TIMEOUTS, "Statements interrupted by the time limit");
    describe_counter!(FORWARDS, "Requests forwarded to the owning machine");
    describe_counter!(REPLAYS, "Requests answered with fly-replay");
    describe_counter!(
        WS_DROPPED,
        "WebSockets dropped for falling behind (lagged) or not taking frames (stalled)"
    );
    describe_counter!(
        RATELIMIT_DECISIONS,
        "Rate-limit decisions by outcome (allowed true/false)"
    );
}

/// Counts one rate-limit decision. The handles are looked up once, after
/// the recorder is installed: the macro's per-call lookup would cost more
/// than the decision itself.
pub fn count_decision(allowed: bool) {
    static COUNTERS: OnceLock<[metrics::Counter; 2]> = OnceLock::new();
    let counter =
        |allowed: &'static str| metrics::counter!(RATELIMIT_DECISIONS, "allowed" => allowed);
    if HANDLE.get().is_none() {
        return counter(if allowed { "true" } else { "false" }).increment(1);
    }
    let [denied, admitted] = COUNTERS.get_or_init(|| [counter("false"), counter("true")]);
    match allowed {
        true => admitted.increment(1),
        false => denied.increment(1),
    }
}

/// Labels of one HTTP request's metrics; all static, so no allocation.
pub type RequestLabels = [(&'static str, &'static str); 3];

/// Counts one HTTP request and records its duration, through handles kept
/// per label set once the recorder is installed.
pub fn record_request(labels: RequestLabels, seconds: f64) {
    type Handles = (metrics::Counter, metrics::Histogram);
    // Looked up on every request: foldhash rather than SipHash (the keys
    // are our own labels, nothing a client chooses).
    type Cache = HashMap<RequestLabels, Handles, foldhash::fast::FixedState>;
    static CACHE: OnceLock<parking_lot::RwLock<Cache>> = OnceLock::new();
    if HANDLE.get().is_none() {
        metrics::counter!(HTTP_REQUESTS, &labels).increment(1);
        metrics::histogram!(HTTP_DURATION, &labels).record(seconds);
        return;
    }
    let cache = CACHE.get_or_init(Default::default);
    if let Some((count, duration)) = cache.read().get(&labels) {
        count.increment(1);
        duration.record(seconds);
        return;
    }
    let handles = (
        metrics::counter!(HTTP_REQUESTS, &labels),
        metrics::histogram!(HTTP_DURATION, &labels),
    );
    handles.0.increment(1);
    handles.1.record(seconds);
    cache.write().insert(labels, handles);
}
