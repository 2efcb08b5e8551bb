//! The counter suite's HTTP scenarios: `POST` one increment per request
//! and compare the stored total with the acknowledged increments.

use anyhow::{anyhow, ensure, Context};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

use super::{CountCheck, Plan, Row};
use crate::bench::fixture::{RoostServer, ScratchDir, Server};
use crate::bench::load::{drive, http_client, Load, Poster};
use crate::Durability;

/// `plan.clients` tasks `POST`ing without a body over `targets`.
async fn post_load(
    client: &reqwest::Client,
    targets: &[String],
    plan: Plan,
) -> anyhow::Result<Load> {
    let posters = Poster::many(client, targets, plan.clients, None, false)?;
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
    let load = post_load(&http_client(plan.clients)?, &targets, plan).await?;
    server.stop().await;
    let stored = counts.lock().values().sum();
    Ok(Row {
        name: "bare axum",
        check: CountCheck {
            stored,
            acknowledged: load.total_ok,
        },
        load,
        against_naive: false,
    })
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
    let load = post_load(&http_client(plan.clients)?, &targets, plan).await?;
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
    Ok(Row {
        name: "naive sqlite",
        check: CountCheck {
            stored,
            acknowledged: load.total_ok,
        },
        load,
        against_naive: false,
    })
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
    let client = http_client(plan.clients)?;
    let load = post_load(&client, &targets, plan).await?;
    let mut stored = 0;
    for url in &targets {
        stored += counter_value(&client, url).await?;
    }
    drop(client);
    roost.stop().await?;
    Ok(Row {
        name,
        check: CountCheck {
            stored,
            acknowledged: load.total_ok,
        },
        load,
        against_naive: durability == Durability::Durable,
    })
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
