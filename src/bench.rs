//! `roost bench`: measures roost against baselines run in the same process,
//! prints a markdown report and appends it to `bench/RESULTS.md`.
//!
//! Every HTTP scenario is a server on `127.0.0.1:0` driven by an in-process
//! load generator: `--clients` tokio tasks, each with its own keep-alive
//! connection, looping `POST` for `--seconds` after a 1 s warm-up. The
//! baselines are a bare axum handler (the HTTP ceiling) and a naive SQLite
//! handler that fsyncs once per request (what group commit is measured
//! against). A last, in-process scenario times opening cold actors.

use anyhow::{anyhow, ensure, Context};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use clap::Args;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::http::{AppState, NodeInfo};
use crate::{ActorId, Durability, Engine, EngineConfig};

/// Unmeasured load before each scenario's measured window.
const WARM_UP: Duration = Duration::from_secs(1);
/// Actors in the many-actor scenario.
const SPREAD_ACTORS: usize = 100;
/// Throughput the durable single actor must beat (Durable Objects document
/// a soft limit of about 1,000 requests/s per object).
const DURABLE_TARGET_RPS: f64 = 10_000.0;
/// Buffered throughput must be at least this share of bare axum's.
const BUFFERED_TARGET_RATIO: f64 = 0.5;
/// Other processes using this many cores make a scenario's numbers suspect.
const NOISY_CORES: f64 = 0.25;
/// Opening a cold actor must take less than this at p99.
const COLD_OPEN_TARGET: Duration = Duration::from_millis(1);

/// Flags of `roost bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Short run: 3 s per scenario and 500 cold actors (under a minute).
    #[arg(long)]
    pub quick: bool,
    /// Measured seconds per scenario, after a 1 s warm-up [default: 10, or 3 with --quick].
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Concurrent clients, each with its own keep-alive connection.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Markdown file the dated report is appended to.
    #[arg(long, default_value = "bench/RESULTS.md")]
    pub out: PathBuf,
    /// Print the report without appending it to `--out`.
    #[arg(long)]
    pub no_write: bool,
}

/// The settings one run uses, resolved from the flags.
#[derive(Debug, Clone, Copy)]
struct Plan {
    measure: Duration,
    clients: usize,
    cold_actors: usize,
}

impl Plan {
    fn from_args(args: &BenchArgs) -> anyhow::Result<Self> {
        let seconds = args.seconds.unwrap_or(if args.quick { 3 } else { 10 });
        ensure!(seconds > 0, "--seconds must be at least 1");
        ensure!(args.clients > 0, "--clients must be at least 1");
        Ok(Plan {
            measure: Duration::from_secs(seconds),
            clients: args.clients,
            cold_actors: if args.quick { 500 } else { 2_000 },
        })
    }
}

/// Runs every scenario, prints the report and appends it to `--out`.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = Plan::from_args(&args)?;
    let started = utc_now();
    let mut rows = Vec::new();

    progress("bare axum");
    rows.push(bare_axum(plan).await.context("bare axum scenario")?);
    progress("naive sqlite");
    rows.push(naive_sqlite(plan).await.context("naive sqlite scenario")?);
    for (name, durability, actors) in [
        ("roost durable, 1 actor", Durability::Durable, 1),
        ("roost buffered, 1 actor", Durability::Buffered, 1),
        (
            "roost durable, 100 actors",
            Durability::Durable,
            SPREAD_ACTORS,
        ),
        ("roost memory, 1 actor", Durability::Memory, 1),
    ] {
        progress(name);
        rows.push(
            roost(name, durability, actors, plan)
                .await
                .with_context(|| format!("{name} scenario"))?,
        );
    }
    progress(&format!("cold open of {} actors", plan.cold_actors));
    // A failure here is reported rather than fatal, so the HTTP numbers survive.
    let cold = match tokio::task::spawn_blocking(move || cold_open(plan.cold_actors)).await {
        Ok(result) => result.map_err(|err| format!("{err:#}")),
        Err(err) => Err(format!("the scenario panicked: {err}")),
    };

    let report = Report {
        started,
        plan,
        rows,
        cold,
    };
    let text = report.render();
    println!("{text}");
    if !args.no_write {
        append_report(&args.out, &text)
            .with_context(|| format!("writing {}", args.out.display()))?;
        eprintln!("appended to {}", args.out.display());
    }
    match &report.cold {
        Ok(_) => Ok(()),
        Err(err) => Err(anyhow!("cold open scenario failed: {err}")),
    }
}

fn progress(scenario: &str) {
    eprintln!("bench: {scenario}...");
}

// ---------------------------------------------------------------- scenarios

/// One measured HTTP scenario.
struct Row {
    name: &'static str,
    load: Load,
    /// Whether the stored count equals the number of acknowledged requests.
    check: CountCheck,
    /// Compared with the naive SQLite baseline (durable roost rows).
    against_naive: bool,
}

struct CountCheck {
    stored: i64,
    acknowledged: u64,
}

impl CountCheck {
    fn matched(&self) -> bool {
        u64::try_from(self.stored).is_ok_and(|stored| stored == self.acknowledged)
    }
}

/// `POST /inc/{name}` over a locked in-memory map: the HTTP ceiling.
async fn bare_axum(plan: Plan) -> anyhow::Result<Row> {
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
    let server = Server::start(|listener, stop| async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
    })
    .await?;
    let targets = vec![format!("{}/inc/hits", server.base)];
    let load = drive(&client(plan)?, &targets, plan).await?;
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
async fn naive_sqlite(plan: Plan) -> anyhow::Result<Row> {
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
    let server = Server::start(|listener, stop| async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
    })
    .await?;
    let targets = vec![format!("{}/inc/hits", server.base)];
    let load = drive(&client(plan)?, &targets, plan).await?;
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
async fn roost(
    name: &'static str,
    durability: Durability,
    actors: usize,
    plan: Plan,
) -> anyhow::Result<Row> {
    let dir = ScratchDir::new("roost")?;
    let config = EngineConfig {
        data_dir: dir.path().to_path_buf(),
        durability,
        ..Default::default()
    };
    let engine = Arc::new(tokio::task::spawn_blocking(move || Engine::open(config)).await??);
    // No token: the server only listens on loopback, as `roost serve` would.
    let node = NodeInfo::single("bench".into(), "local".into(), None);
    let state = Arc::new(AppState::new(engine.clone(), node));
    let server = Server::start(|listener, stop| crate::http::serve(listener, state, stop)).await?;
    let targets: Vec<String> = match actors {
        1 => vec![format!("{}/v1/actors/bench/counters/hits", server.base)],
        n => (0..n)
            .map(|i| format!("{}/v1/actors/bench-{i}/counters/hits", server.base))
            .collect(),
    };
    let client = client(plan)?;
    let load = drive(&client, &targets, plan).await?;
    let mut stored = 0;
    for url in &targets {
        stored += counter_value(&client, url).await?;
    }
    drop(client);
    server.stop().await;
    let clean =
        tokio::task::spawn_blocking(move || engine.shutdown(Duration::from_secs(30))).await?;
    ensure!(clean, "the engine did not shut down within 30 s");
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

/// Cold and warm latencies of a first and second read of each actor.
struct ColdOpen {
    actors: usize,
    cold: Latencies,
    warm: Latencies,
    /// Cores other processes kept busy during the timed reads.
    other_cores: Option<f64>,
}

/// Creates `actors` durable actors, restarts the engine, then times the
/// first read of each (thread spawn, file open, read) and a second one.
fn cold_open(actors: usize) -> anyhow::Result<ColdOpen> {
    let dir = ScratchDir::new("cold")?;
    let config = EngineConfig {
        data_dir: dir.path().to_path_buf(),
        durability: Durability::Durable,
        max_open_actors: actors + 64,
        idle_timeout_ms: 3_600_000,
        ..Default::default()
    };
    let ids = (0..actors)
        .map(|i| ActorId::parse(&format!("cold-{i}")))
        .collect::<Result<Vec<_>, _>>()?;

    let engine = Engine::open(config.clone()).context("opening the setup engine")?;
    // Created 64 at a time so their fsyncs overlap; setup is not measured.
    for chunk in ids.chunks(64) {
        let adds = chunk
            .iter()
            .map(|id| engine.counter_add(id, "n".into(), 1, None));
        futures::executor::block_on(futures::future::try_join_all(adds))
            .context("creating the actors")?;
    }
    ensure!(
        engine.shutdown(Duration::from_secs(60)),
        "setup engine did not shut down within 60 s"
    );
    drop(engine);

    let engine = Engine::open(config).context("reopening the engine")?;
    let timed = |label: &str| -> anyhow::Result<Latencies> {
        let mut nanos = Vec::with_capacity(ids.len());
        for id in &ids {
            let started = Instant::now();
            let value = futures::executor::block_on(engine.counter_get(id, "n".into()))
                .with_context(|| format!("{label} read of {}", id.as_str()))?;
            nanos.push(duration_nanos(started.elapsed()));
            ensure!(
                value == 1,
                "{label} read of {} returned {value}, expected 1",
                id.as_str()
            );
        }
        Ok(Latencies::new(nanos))
    };
    let cpu_before = CpuSample::now();
    let cold = timed("cold")?;
    let warm = timed("warm")?;
    let other_cores = cpu_before.and_then(|before| before.other_cores_until_now());
    ensure!(
        engine.shutdown(Duration::from_secs(60)),
        "engine did not shut down within 60 s"
    );
    Ok(ColdOpen {
        actors,
        cold,
        warm,
        other_cores,
    })
}

// ----------------------------------------------------------- load generator

/// What the load generator saw during one scenario.
struct Load {
    /// Latencies of the 2xx responses in the measured window.
    latencies: Latencies,
    /// 2xx responses in the measured window.
    measured_ok: u64,
    /// Length of the measured window, until the last request finished.
    elapsed: Duration,
    /// 2xx responses including the warm-up: what the server must have stored.
    total_ok: u64,
    /// Non-2xx responses and transport failures, warm-up included.
    errors: u64,
    first_error: Option<String>,
    /// Cores other processes kept busy meanwhile (a noisy machine).
    other_cores: Option<f64>,
}

impl Load {
    fn requests_per_sec(&self) -> f64 {
        self.measured_ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One task's share of a [`Load`].
#[derive(Default)]
struct TaskLoad {
    nanos: Vec<u64>,
    total_ok: u64,
    errors: u64,
    first_error: Option<String>,
    finished: Option<Instant>,
}

/// A client whose pool keeps one idle connection per task.
fn client(plan: Plan) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(plan.clients)
        .tcp_nodelay(true)
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// Runs `plan.clients` tasks, each looping `POST` over `targets` (request
/// `k` of task `i` goes to `targets[(i + k) % len]`), for the warm-up and
/// then the measured window.
async fn drive(client: &reqwest::Client, targets: &[String], plan: Plan) -> anyhow::Result<Load> {
    ensure!(!targets.is_empty(), "no target URLs");
    let targets: Arc<[String]> = targets.into();
    let cpu_before = CpuSample::now();
    let measure_from = Instant::now() + WARM_UP;
    let until = measure_from + plan.measure;
    let mut tasks = JoinSet::new();
    for task in 0..plan.clients {
        let (client, targets) = (client.clone(), targets.clone());
        tasks.spawn(async move {
            let mut load = TaskLoad::default();
            for k in 0usize.. {
                let started = Instant::now();
                if started >= until {
                    break;
                }
                let url = &targets[(task + k) % targets.len()];
                let outcome = match client.post(url.as_str()).send().await {
                    Ok(response) => {
                        let status = response.status();
                        // Reading the body returns the connection to the pool.
                        match response.bytes().await {
                            Ok(_) if status.is_success() => Ok(()),
                            Ok(body) => {
                                Err(format!("{status}: {}", String::from_utf8_lossy(&body)))
                            }
                            Err(err) => Err(format!("reading the response: {err}")),
                        }
                    }
                    Err(err) => Err(format!("{err:#}")),
                };
                let finished = Instant::now();
                match outcome {
                    Ok(()) => {
                        load.total_ok += 1;
                        if started >= measure_from {
                            load.nanos.push(duration_nanos(finished - started));
                            load.finished = Some(finished);
                        }
                    }
                    Err(err) => {
                        load.errors += 1;
                        load.first_error.get_or_insert(err);
                    }
                }
            }
            load
        });
    }

    let mut nanos = Vec::new();
    let (mut total_ok, mut errors, mut first_error, mut last) = (0, 0, None, measure_from);
    while let Some(task) = tasks.join_next().await {
        let task = task.context("a load task panicked")?;
        nanos.extend(task.nanos);
        total_ok += task.total_ok;
        errors += task.errors;
        first_error = first_error.or(task.first_error);
        last = last.max(task.finished.unwrap_or(measure_from));
    }
    let other_cores = cpu_before.and_then(|before| before.other_cores_until_now());
    Ok(Load {
        other_cores,
        measured_ok: nanos.len() as u64,
        latencies: Latencies::new(nanos),
        elapsed: last.saturating_duration_since(measure_from),
        total_ok,
        errors,
        first_error,
    })
}

/// Sorted latencies in nanoseconds.
struct Latencies(Vec<u64>);

impl Latencies {
    fn new(mut nanos: Vec<u64>) -> Self {
        nanos.sort_unstable();
        Latencies(nanos)
    }

    /// The `pct`th percentile (nearest rank), or zero when empty.
    fn percentile(&self, pct: usize) -> Duration {
        let rank = (self.0.len() * pct).div_ceil(100).max(1);
        Duration::from_nanos(self.0.get(rank - 1).copied().unwrap_or(0))
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// CPU time of the whole machine and of this process, from `/proc`, to
/// tell how busy other processes kept the cores during a scenario.
struct CpuSample {
    at: Instant,
    /// user + nice + system + steal ticks of all cores: time the cores were
    /// busy, or taken by the hypervisor for other guests.
    machine_ticks: u64,
    /// utime + stime ticks of this process.
    own_ticks: u64,
}

/// `USER_HZ`: the unit of `/proc/stat` and `/proc/self/stat` on Linux.
const TICKS_PER_SEC: f64 = 100.0;

impl CpuSample {
    /// `None` where `/proc` is not available.
    fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let machine_ticks = stat
            .lines()
            .find_map(|line| line.strip_prefix("cpu "))?
            .split_whitespace()
            .enumerate()
            // user, nice, system, idle, iowait, irq, softirq, steal, ...
            .filter(|(i, _)| matches!(i, 0..=2 | 7))
            .map(|(_, field)| field.parse::<u64>().ok())
            .sum::<Option<u64>>()?;
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which may itself hold spaces:
        // utime and stime are the 12th and 13th.
        let (_, after_comm) = own.rsplit_once(')')?;
        let own_ticks = after_comm
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|field| field.parse::<u64>().ok())
            .sum::<Option<u64>>()?;
        Some(CpuSample {
            at: Instant::now(),
            machine_ticks,
            own_ticks,
        })
    }

    /// Average cores used by everything but this process since `self`.
    fn other_cores_until_now(&self) -> Option<f64> {
        let now = CpuSample::now()?;
        let machine = now.machine_ticks.saturating_sub(self.machine_ticks);
        let own = now.own_ticks.saturating_sub(self.own_ticks);
        let seconds = now.at.duration_since(self.at).as_secs_f64().max(1e-3);
        Some(machine.saturating_sub(own) as f64 / TICKS_PER_SEC / seconds)
    }
}

/// A server on `127.0.0.1:0` that stops when told to.
struct Server {
    base: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start<F, Fut>(serve: F) -> anyhow::Result<Server>
    where
        F: FnOnce(
            tokio::net::TcpListener,
            std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
        ) -> Fut,
        Fut: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            Box::pin(async move {
                let _ = stopped.await;
            }),
        ));
        Ok(Server { base, stop, task })
    }

    /// Signals a graceful shutdown and waits for it (at most 10 s).
    async fn stop(self) {
        let _ = self.stop.send(());
        let abort = self.task.abort_handle();
        match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => eprintln!("bench: server failed: {err}"),
            Ok(Err(err)) => eprintln!("bench: server task failed: {err}"),
            Err(_) => {
                eprintln!("bench: server did not stop within 10 s; aborting it");
                abort.abort();
            }
        }
    }
}

/// A directory under the system temp dir, removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(label: &str) -> anyhow::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "roost-bench-{label}-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(ScratchDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(err) = std::fs::remove_dir_all(&self.0) {
            eprintln!("bench: could not remove {}: {err}", self.0.display());
        }
    }
}

// ------------------------------------------------------------------- report

struct Report {
    started: String,
    plan: Plan,
    rows: Vec<Row>,
    cold: Result<ColdOpen, String>,
}

impl Report {
    fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|row| row.name == name)
    }

    fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) -> std::fmt::Result {
        let plan = self.plan;
        writeln!(
            out,
            "## {} — roost {}",
            self.started,
            env!("CARGO_PKG_VERSION")
        )?;
        writeln!(out)?;
        writeln!(out, "- machine: {}", machine())?;
        writeln!(out, "- command: `{}`", command_line())?;
        writeln!(
            out,
            "- settings: {} s measured per scenario after a {} s warm-up, {} clients (one keep-alive \
             connection each), {} cold actors",
            plan.measure.as_secs(),
            WARM_UP.as_secs(),
            plan.clients,
            plan.cold_actors
        )?;
        writeln!(out)?;

        let bare = self.row("bare axum");
        let naive = self.row("naive sqlite");
        writeln!(
            out,
            "| scenario | requests/s | p50 ms | p99 ms | errors | rps × bare axum | p99 × bare axum | \
             rps × naive sqlite | stored count | other CPU (cores) |"
        )?;
        writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")?;
        for row in &self.rows {
            let load = &row.load;
            let rps = load.requests_per_sec();
            let p99 = load.latencies.percentile(99);
            let vs_bare_rps = bare.map(|b| ratio(rps, b.load.requests_per_sec()));
            let vs_bare_p99 = bare.map(|b| {
                ratio(
                    p99.as_secs_f64(),
                    b.load.latencies.percentile(99).as_secs_f64(),
                )
            });
            let vs_naive = naive
                .filter(|_| row.against_naive)
                .map(|n| ratio(rps, n.load.requests_per_sec()));
            let check = if row.check.matched() {
                format!("matches ({})", thousands(row.check.acknowledged))
            } else {
                format!(
                    "**MISMATCH**: {} stored, {} acknowledged",
                    row.check.stored, row.check.acknowledged
                )
            };
            writeln!(
                out,
                "| {} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} |",
                row.name,
                thousands(rps.round() as u64),
                millis(load.latencies.percentile(50)),
                millis(p99),
                if load.errors == 0 {
                    "0".to_owned()
                } else {
                    format!("**{}**", load.errors)
                },
                vs_bare_rps.unwrap_or_else(dash),
                vs_bare_p99.unwrap_or_else(dash),
                vs_naive.unwrap_or_else(dash),
                check,
                cores(load.other_cores)
            )?;
        }
        writeln!(out)?;
        for row in self.rows.iter().filter(|row| row.load.errors > 0) {
            writeln!(
                out,
                "**{} had {} failed requests**; first: {}",
                row.name,
                row.load.errors,
                row.load.first_error.as_deref().unwrap_or("unknown")
            )?;
            writeln!(out)?;
        }

        let noisy: Vec<String> = self
            .rows
            .iter()
            .map(|row| (row.name, row.load.other_cores))
            .chain([(
                "cold open",
                self.cold.as_ref().ok().and_then(|c| c.other_cores),
            )])
            .filter_map(|(name, other)| {
                other
                    .filter(|cores| *cores >= NOISY_CORES)
                    .map(|cores| format!("{name} ({cores:.2})"))
            })
            .collect();
        if !noisy.is_empty() {
            writeln!(
                out,
                "**Noisy run**: other processes kept cores busy during {}; those numbers are \
                 lower than this machine can do.",
                noisy.join(", ")
            )?;
            writeln!(out)?;
        }

        self.write_cold(out)?;

        writeln!(out, "Targets:")?;
        writeln!(out)?;
        match self.row("roost durable, 1 actor") {
            Some(row) => {
                let rps = row.load.requests_per_sec();
                writeln!(
                    out,
                    "- durable single actor well over 10,000 increments/s (Durable Objects document a \
                     soft limit of 1,000 requests/s per object): {} increments/s — **{}**",
                    thousands(rps.round() as u64),
                    verdict(rps > DURABLE_TARGET_RPS, row)
                )?;
            }
            None => writeln!(out, "- durable single actor: not measured")?,
        }
        match (self.row("roost buffered, 1 actor"), bare) {
            (Some(row), Some(bare)) => {
                let share = row.load.requests_per_sec() / bare.load.requests_per_sec().max(1e-9);
                writeln!(
                    out,
                    "- buffered within 2x of the bare axum handler (throughput ratio ≥ {BUFFERED_TARGET_RATIO}): \
                     {share:.2}× — **{}**",
                    verdict(share >= BUFFERED_TARGET_RATIO, row)
                )?;
            }
            _ => writeln!(out, "- buffered vs bare axum: not measured")?,
        }
        let cold_p99 = self.cold.as_ref().map(|cold| cold.cold.percentile(99));
        match cold_p99 {
            Ok(p99) => {
                writeln!(
                out,
                "- opening a cold actor costs well under 1 ms (p99 < 1 ms): p99 {:.1} µs — **{}**",
                micros(p99),
                if p99 < COLD_OPEN_TARGET { "met" } else { "not met" }
            )
            }
            Err(_) => writeln!(
                out,
                "- opening a cold actor costs well under 1 ms: **not met** (the scenario failed)"
            ),
        }
    }

    fn write_cold(&self, out: &mut String) -> std::fmt::Result {
        let cold = match &self.cold {
            Ok(cold) => cold,
            Err(err) => {
                writeln!(out, "Cold open: **failed**: {err}")?;
                return writeln!(out);
            }
        };
        writeln!(
            out,
            "Cold open: {} durable actors written, engine restarted, then each read twice in process \
             (no HTTP). The first read starts the actor (thread, file open, read); the second is the \
             warm baseline. Files are in the OS page cache. Other CPU meanwhile: {} cores.",
            thousands(cold.actors as u64),
            cores(cold.other_cores)
        )?;
        writeln!(out)?;
        writeln!(out, "| read | p50 µs | p99 µs |")?;
        writeln!(out, "|---|---:|---:|")?;
        let (c50, c99) = (cold.cold.percentile(50), cold.cold.percentile(99));
        let (w50, w99) = (cold.warm.percentile(50), cold.warm.percentile(99));
        writeln!(
            out,
            "| cold (first) | {:.1} | {:.1} |",
            micros(c50),
            micros(c99)
        )?;
        writeln!(
            out,
            "| warm (second) | {:.1} | {:.1} |",
            micros(w50),
            micros(w99)
        )?;
        writeln!(
            out,
            "| cold ÷ warm | {} | {} |",
            ratio(c50.as_secs_f64(), w50.as_secs_f64()),
            ratio(c99.as_secs_f64(), w99.as_secs_f64())
        )?;
        writeln!(out)
    }
}

/// "met" only when the number is good and the scenario was clean.
fn verdict(good: bool, row: &Row) -> &'static str {
    match (good, row.load.errors == 0 && row.check.matched()) {
        (true, true) => "met",
        (true, false) => "not met (the scenario had errors or a count mismatch)",
        (false, _) => "not met",
    }
}

fn ratio(value: f64, base: f64) -> String {
    if base > 0.0 {
        format!("{:.2}×", value / base)
    } else {
        dash()
    }
}

fn cores(other: Option<f64>) -> String {
    other.map_or_else(dash, |cores| format!("{cores:.2}"))
}

fn dash() -> String {
    "—".to_owned()
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("roost {}", args.join(" "))
}

/// Cores, CPU model and total memory, from `/proc` where available.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = proc_field(&cpuinfo, "model name").unwrap_or("unknown CPU");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = proc_field(&meminfo, "MemTotal")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or_else(
            || "unknown memory".to_owned(),
            |kib| format!("{:.1} GiB RAM", kib as f64 / 1_048_576.0),
        );
    format!("{cores} cores (nproc), {model}, {memory}")
}

/// The value of the first `key: value` line of a `/proc` file.
fn proc_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name.trim() == key).then(|| value.trim())
    })
}

/// `YYYY-MM-DD HH:MM UTC`, without a date crate.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        of_day / 3600,
        of_day % 3600 / 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

const RESULTS_HEADER: &str = "# Benchmark results\n\n\
Every number in this file comes from `bench/run` (`roost bench`; see `bench/README.md`), \
one dated section per run, newest last. Ratios compare rows of the same run: \
`rps × bare axum` is the row's requests/s divided by the bare axum handler's (1.00× = the HTTP \
ceiling; higher is better), `p99 × bare axum` is its p99 latency divided by bare axum's (lower is \
better), and `rps × naive sqlite` divides a durable roost row's requests/s by a handler that \
fsyncs once per request (above 1× is what group commit buys). `stored count` checks that the \
final counter equals the number of acknowledged increments (warm-up included). \
`other CPU` is the average number of cores busy outside the benchmark process during the \
scenario (other programs, kernel threads such as writeback, and time stolen by the \
hypervisor); a run that shares its cores \
says so, and its numbers are lower bounds.\n";

/// Appends `report` to `path`, starting the file with its header if new.
fn append_report(path: &Path, report: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err.into()),
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if existing.trim().is_empty() {
        file.write_all(RESULTS_HEADER.as_bytes())?;
    }
    let separator = match existing.trim().is_empty() {
        true => "\n",
        false if existing.ends_with("\n\n") => "",
        false if existing.ends_with('\n') => "\n",
        false => "\n\n",
    };
    write!(file, "{separator}{report}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let latencies = Latencies::new((1..=100).rev().collect());
        assert_eq!(latencies.percentile(50), Duration::from_nanos(50));
        assert_eq!(latencies.percentile(99), Duration::from_nanos(99));
        assert_eq!(Latencies::new(vec![]).percentile(99), Duration::ZERO);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
