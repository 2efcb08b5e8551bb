//! The counter suite's network scenarios: one increment per request (an
//! HTTP `POST`, or a Redis `INCR`), and the stored total compared with the
//! acknowledged increments.

use anyhow::{anyhow, ensure, Context};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

use super::{Measured, Outcome, Plan, Row, BARE_AXUM, NAIVE_SQLITE};
use crate::bench::fixture::{RoostServer, ScratchDir, Server};
use crate::bench::load::{drive, http_client, Answer, Caller, Load, Poster};
use crate::bench::redis::{fresh_prefix, Persistence, Redis};
use crate::bench::report::CountCheck;
use crate::Durability;

/// `plan.clients` tasks `POST`ing without a body over `targets`.
async fn post_load(targets: &[String], plan: Plan) -> anyhow::Result<Load> {
    let posters = Poster::many(targets, plan.clients, None, false)?;
    drive(posters, plan.measure, &[]).await
}

/// `POST /inc/{name}` over a locked in-memory map: the HTTP ceiling.
pub(super) async fn bare_axum(plan: Plan) -> anyhow::Result<Row> {
    type Counts = Arc<parking_lot::Mutex<HashMap<String, i64>>>;
    async fn inc(State(counts): State<Counts>, UrlPath(name): UrlPath<String>) -> Json<Value> {
        let mut counts = counts.lock();
        let value = counts.entry(name).or_insert(0);
        *value += 1;
        Json(json!({ "value": *value }))
    }

    let counts: Counts = Arc::default();
    let app = Router::new()
        .route("/inc/{name}", post(inc))
        .with_state(counts.clone());
    let server = Server::axum(app).await?;
    let targets = vec![format!("{}/inc/hits", server.base)];
    let load = post_load(&targets, plan).await?;
    server.stop().await;
    let stored = counts.lock().values().sum();
    Ok(measured(BARE_AXUM, load, stored, false))
}

/// One libSQL connection behind a mutex: every request is its own
/// transaction with its own fsync (WAL, `synchronous=FULL`).
pub(super) async fn naive_sqlite(plan: Plan) -> anyhow::Result<Row> {
    type Db = Arc<std::sync::Mutex<libsql::Connection>>;
    const UPSERT: &str = "INSERT INTO c(name, value) VALUES (?1, 1) \
                          ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value";

    fn increment(db: &Db, name: String) -> anyhow::Result<i64> {
        let conn = db
            .lock()
            .map_err(|_| anyhow!("connection mutex poisoned"))?;
        futures::executor::block_on(async {
            let mut rows = conn.query(UPSERT, libsql::params![name]).await?;
            let row = rows.next().await?.context("upsert returned no row")?;
            Ok::<i64, anyhow::Error>(row.get::<i64>(0)?)
        })
    }

    async fn inc(
        State(db): State<Db>,
        UrlPath(name): UrlPath<String>,
    ) -> Result<Json<Value>, (StatusCode, String)> {
        let failed = |err: String| (StatusCode::INTERNAL_SERVER_ERROR, err);
        let value = tokio::task::spawn_blocking(move || increment(&db, name))
            .await
            .map_err(|err| failed(err.to_string()))?
            .map_err(|err| failed(format!("{err:#}")))?;
        Ok(Json(json!({ "value": value })))
    }

    let dir = ScratchDir::new("naive")?;
    let database = libsql::Builder::new_local(dir.path().join("counters.db"))
        .build()
        .await?;
    let conn = database.connect()?;
    let mut mode = conn.query("PRAGMA journal_mode=WAL", ()).await?;
    let journal = match mode.next().await? {
        Some(row) => row.get::<String>(0)?,
        None => String::new(),
    };
    while mode.next().await?.is_some() {}
    ensure!(
        journal.eq_ignore_ascii_case("wal"),
        "journal_mode is {journal:?}, not WAL"
    );
    conn.execute("PRAGMA synchronous=FULL", ()).await?;
    conn.execute(
        "CREATE TABLE c (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        (),
    )
    .await?;
    let db: Db = Arc::new(std::sync::Mutex::new(conn));

    let app = Router::new()
        .route("/inc/{name}", post(inc))
        .with_state(db.clone());
    let server = Server::axum(app).await?;
    let targets = vec![format!("{}/inc/hits", server.base)];
    let load = post_load(&targets, plan).await?;
    server.stop().await;

    let stored = tokio::task::spawn_blocking(move || -> anyhow::Result<i64> {
        let conn = db
            .lock()
            .map_err(|_| anyhow!("connection mutex poisoned"))?;
        futures::executor::block_on(async {
            let mut rows = conn
                .query("SELECT coalesce(sum(value), 0) FROM c", ())
                .await?;
            let row = rows.next().await?.context("sum returned no row")?;
            Ok::<i64, anyhow::Error>(row.get::<i64>(0)?)
        })
    })
    .await??;
    drop(database);
    Ok(measured(NAIVE_SQLITE, load, stored, false))
}

/// A real roost server over a fresh data dir, incrementing one counter per
/// request on `actors` actors.
pub(super) async fn roost(
    name: &'static str,
    durability: Durability,
    actors: usize,
    plan: Plan,
) -> anyhow::Result<Row> {
    let roost = RoostServer::start(durability).await?;
    let base = &roost.server.base;
    let targets: Vec<String> = match actors {
        1 => vec![format!("{base}/v1/actors/bench/counters/hits")],
        n => (0..n)
            .map(|i| format!("{base}/v1/actors/bench-{i}/counters/hits"))
            .collect(),
    };
    let load = post_load(&targets, plan).await?;
    let client = http_client(1)?;
    let mut stored = 0;
    for url in &targets {
        stored += counter_value(&client, url).await?;
    }
    drop(client);
    roost.stop().await?;
    Ok(measured(
        name,
        load,
        stored,
        durability == Durability::Durable,
    ))
}

/// A row that ran, with its stored count.
fn measured(name: &'static str, load: Load, stored: i64, against_naive: bool) -> Row {
    let check = CountCheck {
        stored,
        acknowledged: load.total_ok,
    };
    Row {
        name,
        outcome: Outcome::Measured(Measured { load, check }),
        against_naive,
    }
}

/// `INCR` of one key over one connection per client, on a redis-server
/// this row starts with `persistence` and stops afterwards; the row and,
/// when a server ran, its version.
pub(super) async fn redis_incr(
    name: &'static str,
    persistence: Persistence,
    plan: Plan,
) -> (Row, Option<String>) {
    let row = |outcome| Row {
        name,
        outcome,
        against_naive: false,
    };
    let redis = match Redis::start(persistence).await {
        Ok(Some(redis)) => redis,
        Ok(None) => return (row(Outcome::Skipped("redis-server not installed")), None),
        Err(err) => return (row(Outcome::Failed(format!("{err:#}"))), None),
    };
    let version = redis.version().await;
    let result = async {
        let key: Arc<str> = format!("{}hits", fresh_prefix()).into();
        let mut callers = Vec::with_capacity(plan.clients);
        for _ in 0..plan.clients {
            callers.push(Incr {
                conn: redis.connection().await?,
                key: key.clone(),
            });
        }
        let load = drive(callers, plan.measure, &redis.helpers()).await?;
        let mut conn = redis.connection().await?;
        let stored: Option<i64> = ::redis::cmd("GET")
            .arg(&*key)
            .query_async(&mut conn)
            .await
            .context("reading the count back")?;
        Ok::<_, anyhow::Error>((load, stored.unwrap_or(0)))
    }
    .await;
    // Stops the server (and removes its directory) before the next row.
    drop(redis);
    match result {
        Ok((load, stored)) => (measured(name, load, stored, false), version),
        Err(err) => (row(Outcome::Failed(format!("{err:#}"))), version),
    }
}

/// One Redis client: `INCR` of the row's key.
struct Incr {
    conn: ::redis::aio::MultiplexedConnection,
    key: Arc<str>,
}

impl Caller for Incr {
    async fn call(&mut self, _k: usize) -> Result<Answer, String> {
        ::redis::cmd("INCR")
            .arg(&*self.key)
            .query_async::<i64>(&mut self.conn)
            .await
            .map(|_| Answer::Done)
            .map_err(|err| err.to_string())
    }
}

/// `GET` of a roost counter: `{"value": n}`.
async fn counter_value(client: &reqwest::Client, url: &str) -> anyhow::Result<i64> {
    let body: Value = client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    body["value"]
        .as_i64()
        .with_context(|| format!("GET {url} returned {body} without an integer value"))
}
