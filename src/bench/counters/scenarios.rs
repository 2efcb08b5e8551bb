//! The counter suite's network rows: one increment per request (an HTTP
//! `POST`, or a Redis `INCR`) to a server each row starts once, measured a
//! round at a time; the stored total is read back at the end.

use anyhow::{anyhow, ensure, Context};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

use crate::bench::fixture::{RoostServer, ScratchDir, Server};
use crate::bench::load::{drive_after, http_client, Answer, Load, Slice};
use crate::bench::redis::{fresh_prefix, Persistence, Redis};
use crate::bench::wire::{resp_command, RawHttp, RawRedis};
use crate::Durability;

/// A row's server, started once and kept up for the whole suite, so the
/// rows can be measured in interleaved rounds.
pub(super) enum Subject {
    /// `POST`s without a body over `targets`, request `k` of client `i` to
    /// `targets[(i + k) % len]`.
    Http {
        targets: Vec<String>,
        server: HttpServer,
    },
    /// `INCR` of one key over one connection per client.
    Redis { redis: Redis, key: Arc<str> },
}

/// The HTTP servers of the counter rows.
pub(super) enum HttpServer {
    Bare {
        server: Server,
        counts: Counts,
    },
    Naive {
        server: Server,
        db: Db,
        _database: libsql::Database,
        _dir: ScratchDir,
    },
    Roost {
        roost: RoostServer,
        /// Increments made before the rounds (one per actor).
        primed: u64,
    },
}

type Counts = Arc<parking_lot::Mutex<HashMap<String, i64>>>;
type Db = Arc<std::sync::Mutex<libsql::Connection>>;

impl Subject {
    /// `POST /inc/{name}` over a locked in-memory map: the HTTP ceiling.
    pub(super) async fn bare_axum() -> anyhow::Result<Subject> {
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
        Ok(Subject::Http {
            targets: vec![format!("{}/inc/hits", server.base)],
            server: HttpServer::Bare { server, counts },
        })
    }

    /// One libSQL connection behind a mutex: every request is its own
    /// transaction with its own fsync (WAL, `synchronous=FULL`).
    pub(super) async fn naive_sqlite() -> anyhow::Result<Subject> {
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
        Ok(Subject::Http {
            targets: vec![format!("{}/inc/hits", server.base)],
            server: HttpServer::Naive {
                server,
                db,
                _database: database,
                _dir: dir,
            },
        })
    }

    /// A redis-server with `persistence`, and its version; `None` when it
    /// is not installed.
    pub(super) async fn redis(
        persistence: Persistence,
    ) -> anyhow::Result<Option<(Subject, Option<String>)>> {
        let Some(redis) = Redis::start(persistence).await? else {
            return Ok(None);
        };
        let version = redis.version().await;
        let key: Arc<str> = format!("{}hits", fresh_prefix()).into();
        Ok(Some((Subject::Redis { redis, key }, version)))
    }

    /// A real roost server over a fresh data dir, incrementing one counter
    /// per request on `actors` actors.
    pub(super) async fn roost(
        durability: Durability,
        actors: usize,
        clients: usize,
    ) -> anyhow::Result<Subject> {
        let roost = RoostServer::start(durability).await?;
        let base = &roost.server.base;
        let targets: Vec<String> = match actors {
            1 => vec![format!("{base}/v1/actors/bench/counters/hits")],
            n => (0..n)
                .map(|i| format!("{base}/v1/actors/bench-{i}/counters/hits"))
                .collect(),
        };
        // Every actor exists before the clock starts: the row measures
        // increments, and creating actors is the scale suite's figure (the
        // clients' sweep over 1,000 new actors outlasted the warm-up).
        let primed = match actors {
            1 => 0,
            _ => prime(&targets, clients).await?,
        };
        Ok(Subject::Http {
            targets,
            server: HttpServer::Roost { roost, primed },
        })
    }

    /// One measured round with `clients` clients.
    pub(super) async fn round(&self, clients: usize, slice: Slice) -> anyhow::Result<Load> {
        match self {
            Subject::Http { targets, .. } => {
                let posters = RawHttp::for_urls(targets, b"", clients, false)?;
                drive_after(posters, slice.warm_up, slice.measure, &[]).await
            }
            Subject::Redis { redis, key } => {
                let _floating = crate::placement::Unpinned::new();
                let incr = vec![resp_command(&[b"INCR", key.as_bytes()])];
                let callers = RawRedis::many(redis, incr, 1, |_| Answer::Done, clients)?;
                drive_after(callers, slice.warm_up, slice.measure, &redis.helpers()).await
            }
        }
    }

    /// Reads the stored count back and stops the server; returns the count
    /// and the increments acknowledged outside the rounds.
    pub(super) async fn finish(self) -> anyhow::Result<(i64, u64)> {
        match self {
            Subject::Redis { redis, key } => {
                let mut conn = redis.connection().await?;
                let stored: Option<i64> = ::redis::cmd("GET")
                    .arg(&*key)
                    .query_async(&mut conn)
                    .await
                    .context("reading the count back")?;
                // Dropping the handle stops the server and removes its dir.
                drop(redis);
                Ok((stored.unwrap_or(0), 0))
            }
            Subject::Http { targets, server } => match server {
                HttpServer::Bare { server, counts } => {
                    server.stop().await;
                    let stored = counts.lock().values().sum();
                    Ok((stored, 0))
                }
                HttpServer::Naive { server, db, .. } => {
                    server.stop().await;
                    let stored = tokio::task::spawn_blocking(move || naive_total(&db)).await??;
                    Ok((stored, 0))
                }
                HttpServer::Roost { roost, primed } => {
                    let client = http_client(1)?;
                    let mut stored = 0;
                    for url in &targets {
                        stored += counter_value(&client, url).await?;
                    }
                    drop(client);
                    roost.stop().await?;
                    Ok((stored, primed))
                }
            },
        }
    }
}

/// The naive handler's stored total.
fn naive_total(db: &Db) -> anyhow::Result<i64> {
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
}

/// One increment of every target, `clients` at a time; returns how many.
async fn prime(targets: &[String], clients: usize) -> anyhow::Result<u64> {
    let client = http_client(clients)?;
    let mut posts = futures::stream::iter(targets)
        .map(|url| {
            let client = &client;
            async move { client.post(url).send().await?.error_for_status() }
        })
        .buffer_unordered(clients);
    let mut primed = 0;
    while let Some(answer) = posts.next().await {
        answer.context("priming the actors")?;
        primed += 1;
    }
    Ok(primed)
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
