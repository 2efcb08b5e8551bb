//! "Nothing lost, nothing forked": clients record every operation they
//! issue (invocation and response times, and the answer) while real
//! `roost serve` processes are killed with `-9` at random moments; after
//! each restart the recovered state is checked against what was
//! acknowledged, every actor's exported database passes SQLite's
//! `integrity_check`, and the whole multi-crash history must be
//! linearizable (see `history.rs`).

use crate::harness::{seg, Process, TestServer};
use crate::history::{
    self, Counter, CounterOp, Op, Register, RegisterOp, RegisterOut, RegisterState,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The counter and the KV key every actor in these tests uses.
const COUNTER: &str = "n";

/// Crash cycles per loop: CI's bounded default, or `ROOST_CRASH_CYCLES`
/// for the long run (`ROOST_CRASH_CYCLES=50 cargo test --release --test it faults -- --nocapture`).
fn crash_cycles(default: usize) -> usize {
    std::env::var("ROOST_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
const KEY: &str = "reg";

type CounterHistory = Vec<Op<CounterOp, i64>>;
type RegisterHistory = Vec<Op<RegisterOp, RegisterOut>>;

/// Why a request has no answer to record.
#[derive(Debug)]
enum Failure {
    /// No (complete) response: the server died or the connection broke.
    /// The op may or may not have taken effect.
    Lost(String),
    /// A response the API does not allow for this request.
    Unexpected(String),
}

/// The few HTTP calls the clients make.
#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn new(base: &str) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        Api {
            client,
            base: base.to_owned(),
        }
    }

    fn url(&self, actor: &str, rest: &str) -> String {
        format!("{}/v1/actors/{}{}", self.base, seg(actor), rest)
    }

    async fn add(&self, actor: &str) -> Result<i64, Failure> {
        let response = self
            .client
            .post(self.url(actor, &format!("/counters/{COUNTER}")))
            .send()
            .await;
        counter_value(response).await
    }

    async fn counter(&self, actor: &str) -> Result<i64, Failure> {
        let response = self
            .client
            .get(self.url(actor, &format!("/counters/{COUNTER}")))
            .send()
            .await;
        counter_value(response).await
    }

    /// The value and version of the key, `None` if absent.
    async fn kv_get(&self, actor: &str) -> Result<Option<(String, i64)>, Failure> {
        let response = self
            .client
            .get(self.url(actor, &format!("/kv/{KEY}")))
            .send()
            .await
            .map_err(|e| Failure::Lost(e.to_string()))?;
        match response.status().as_u16() {
            404 => Ok(None),
            200 => {
                let version = etag(&response)?;
                let value = response
                    .text()
                    .await
                    .map_err(|e| Failure::Lost(e.to_string()))?;
                Ok(Some((value, version)))
            }
            _ => Err(unexpected(response).await),
        }
    }

    /// Compare-and-set: `If-Match: "<v>"`, or `If-None-Match: *` to create.
    async fn kv_put_if(
        &self,
        actor: &str,
        expect: Option<i64>,
        value: &str,
    ) -> Result<RegisterOut, Failure> {
        let request = self
            .client
            .put(self.url(actor, &format!("/kv/{KEY}")))
            .body(value.to_owned());
        let request = match expect {
            Some(version) => request.header("if-match", format!("\"{version}\"")),
            None => request.header("if-none-match", "*"),
        };
        let response = request
            .send()
            .await
            .map_err(|e| Failure::Lost(e.to_string()))?;
        match response.status().as_u16() {
            200 => {
                let version = etag(&response)?;
                // The answer is only complete once the body has arrived.
                response
                    .bytes()
                    .await
                    .map_err(|e| Failure::Lost(e.to_string()))?;
                Ok(RegisterOut::Stored(version))
            }
            412 => {
                response
                    .bytes()
                    .await
                    .map_err(|e| Failure::Lost(e.to_string()))?;
                Ok(RegisterOut::Mismatch)
            }
            _ => Err(unexpected(response).await),
        }
    }

    /// `GET /export`, written to `file`; the byte count.
    async fn export_to(&self, actor: &str, file: &Path) -> usize {
        let response = self
            .client
            .get(self.url(actor, "/export"))
            .send()
            .await
            .expect("export request");
        assert_eq!(response.status(), 200, "export of {actor}");
        let bytes = response.bytes().await.expect("export body");
        std::fs::write(file, &bytes).expect("write export");
        bytes.len()
    }
}

async fn counter_value(
    response: Result<reqwest::Response, reqwest::Error>,
) -> Result<i64, Failure> {
    let response = response.map_err(|e| Failure::Lost(e.to_string()))?;
    if response.status() != 200 {
        return Err(unexpected(response).await);
    }
    let body: serde_json::Value = response
        .json()
        .await
        .map_err(|e| Failure::Lost(e.to_string()))?;
    body["value"]
        .as_i64()
        .ok_or_else(|| Failure::Unexpected(format!("counter body {body}")))
}

fn etag(response: &reqwest::Response) -> Result<i64, Failure> {
    response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim_matches('"').parse().ok())
        .ok_or_else(|| Failure::Unexpected(format!("no version ETag: {:?}", response.headers())))
}

async fn unexpected(response: reqwest::Response) -> Failure {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    Failure::Unexpected(format!("{status}: {body}"))
}

/// SQLite's own verdict on a database file, read by Python's sqlite3.
fn integrity_check(file: &Path) -> String {
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute('PRAGMA integrity_check').fetchone()[0])")
        .arg(file)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Everything every client saw, per actor, with times since the epoch.
struct Log {
    epoch: Instant,
    inner: Mutex<Histories>,
}

#[derive(Default)]
struct Histories {
    counters: HashMap<String, CounterHistory>,
    registers: HashMap<String, RegisterHistory>,
    unexpected: Vec<String>,
    /// Requests that got no answer (expected only when a server dies).
    lost: Vec<String>,
}

impl Log {
    fn new() -> Arc<Self> {
        Arc::new(Log {
            epoch: Instant::now(),
            inner: Mutex::default(),
        })
    }

    /// Nanoseconds since the epoch.
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).expect("fits")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Histories> {
        self.inner.lock().expect("log lock")
    }

    /// Records an op that started at `call`; `Err` makes it pending (its
    /// `ret` is fixed by `seal_pending` once the server is known dead).
    fn record<O>(&self, client: usize, result: Result<O, Failure>) -> (Option<O>, u64) {
        match result {
            Ok(output) => (Some(output), self.now()),
            Err(Failure::Lost(why)) => {
                self.lock().lost.push(format!("client {client}: {why}"));
                (None, u64::MAX)
            }
            Err(Failure::Unexpected(what)) => {
                self.lock()
                    .unexpected
                    .push(format!("client {client}: {what}"));
                (None, u64::MAX)
            }
        }
    }

    fn counter_op(&self, actor: &str, op: Op<CounterOp, i64>) {
        self.lock()
            .counters
            .entry(actor.to_owned())
            .or_default()
            .push(op);
    }

    fn register_op(&self, actor: &str, op: Op<RegisterOp, RegisterOut>) {
        self.lock()
            .registers
            .entry(actor.to_owned())
            .or_default()
            .push(op);
    }

    /// The server died at `dead_at`: no unanswered op took effect later.
    fn seal_pending(&self, dead_at: u64) {
        let mut inner = self.lock();
        let Histories {
            counters,
            registers,
            ..
        } = &mut *inner;
        for op in counters.values_mut().flatten() {
            if op.ret == u64::MAX {
                op.ret = dead_at;
            }
        }
        for op in registers.values_mut().flatten() {
            if op.ret == u64::MAX {
                op.ret = dead_at;
            }
        }
    }

    fn counter_history(&self, actor: &str) -> CounterHistory {
        self.lock().counters.get(actor).cloned().unwrap_or_default()
    }

    fn register_history(&self, actor: &str) -> RegisterHistory {
        self.lock()
            .registers
            .get(actor)
            .cloned()
            .unwrap_or_default()
    }
}

/// What one client does: random counter adds and reads, and KV
/// compare-and-set against the last version it saw (reading the key when
/// it does not know it), until `deadline` or the first lost answer.
async fn mixed_client(
    api: Api,
    client: usize,
    tag: String,
    counter_actors: Vec<String>,
    register_actors: Vec<String>,
    log: Arc<Log>,
    deadline: Instant,
) {
    let mut rng = StdRng::from_entropy();
    // Last version seen per actor: None = unknown, Some(None) = absent.
    let mut known: HashMap<String, Option<Option<i64>>> = HashMap::new();
    for n in 0.. {
        if Instant::now() >= deadline {
            return;
        }
        let answered = if rng.gen_bool(0.5) {
            let actor = &counter_actors[rng.gen_range(0..counter_actors.len())];
            let call = log.now();
            let (input, result) = if rng.gen_bool(0.8) {
                (CounterOp::Add(1), api.add(actor).await)
            } else {
                (CounterOp::Get, api.counter(actor).await)
            };
            let (output, ret) = log.record(client, result);
            log.counter_op(
                actor,
                Op {
                    client,
                    call,
                    ret,
                    input,
                    output,
                },
            );
            output.is_some()
        } else {
            let actor = &register_actors[rng.gen_range(0..register_actors.len())];
            let seen = known.entry(actor.clone()).or_default();
            let call = log.now();
            let (input, output, ret) = match *seen {
                None => {
                    let (output, ret) = log.record(client, api.kv_get(actor).await);
                    if let Some(value) = &output {
                        *seen = Some(value.as_ref().map(|(_, version)| *version));
                    }
                    (RegisterOp::Get, output.map(RegisterOut::Value), ret)
                }
                Some(expect) => {
                    let value = format!("{tag}-c{client}-{n}");
                    let result = api.kv_put_if(actor, expect, &value).await;
                    let (output, ret) = log.record(client, result);
                    *seen = match output {
                        Some(RegisterOut::Stored(version)) => Some(Some(version)),
                        _ => None,
                    };
                    (RegisterOp::PutIf { expect, value }, output, ret)
                }
            };
            let answered = output.is_some();
            log.register_op(
                actor,
                Op {
                    client,
                    call,
                    ret,
                    input,
                    output,
                },
            );
            answered
        };
        if !answered {
            return;
        }
    }
}

/// Runs `history::check` and fails the test with the verdict.
fn assert_linearizable<M: history::Model>(
    what: &str,
    model: &M,
    init: M::State,
    ops: &[Op<M::Input, M::Output>],
) -> history::Checked {
    match history::check(model, init, ops) {
        Ok(checked) => checked,
        Err(verdict) => panic!(
            "{what}: history of {} ops is not accepted: {verdict}",
            ops.len()
        ),
    }
}

/// After a restart: every acknowledged write of the whole run is there,
/// and every actor's database passes `integrity_check`. The reads are
/// recorded in the history. Returns (acknowledged writes of the whole run
/// so far that the recovered state covers, bytes exported).
async fn verify_recovery(
    api: &Api,
    log: &Log,
    actors: &[String],
    exports: &Path,
    round: usize,
) -> (usize, usize) {
    let mut verified = 0;
    let mut bytes = 0;
    for actor in actors {
        // Counter: at least the highest acknowledged value.
        let acked_max = log
            .counter_history(actor)
            .iter()
            .filter(|op| op.input == CounterOp::Add(1))
            .filter_map(|op| op.output)
            .max()
            .unwrap_or(0);
        let call = log.now();
        let value = api.counter(actor).await.expect("counter after restart");
        let ret = log.now();
        log.counter_op(
            actor,
            Op {
                client: usize::MAX,
                call,
                ret,
                input: CounterOp::Get,
                output: Some(value),
            },
        );
        assert!(
            value >= acked_max,
            "{actor}: {acked_max} was acknowledged, {value} survived the crash"
        );
        verified += log
            .counter_history(actor)
            .iter()
            .filter(|op| op.input == CounterOp::Add(1) && op.output.is_some())
            .count();

        // KV: the last acknowledged CAS write, or a later (unanswered) one.
        let register = log.register_history(actor);
        let last_acked = register
            .iter()
            .filter_map(|op| match (&op.input, &op.output) {
                (RegisterOp::PutIf { value, .. }, Some(RegisterOut::Stored(version))) => {
                    Some((*version, value.clone()))
                }
                _ => None,
            })
            .max();
        let unanswered: HashSet<&String> = register
            .iter()
            .filter_map(|op| match (&op.input, &op.output) {
                (RegisterOp::PutIf { value, .. }, None) => Some(value),
                _ => None,
            })
            .collect();
        let call = log.now();
        let found = api.kv_get(actor).await.expect("kv after restart");
        let ret = log.now();
        if let Some((version, value)) = &last_acked {
            let Some((found_value, found_version)) = &found else {
                panic!("{actor}: acknowledged {value:?} at version {version}, the key is gone")
            };
            if found_version == version {
                assert_eq!(found_value, value, "{actor}: same version, other value");
            } else {
                assert!(
                    found_version > version && unanswered.contains(found_value),
                    "{actor}: acknowledged {value:?} at version {version}, \
                     found {found_value:?} at {found_version}, which no unanswered write explains"
                );
            }
            verified += register
                .iter()
                .filter(|op| matches!(op.output, Some(RegisterOut::Stored(_))))
                .count();
        }
        log.register_op(
            actor,
            Op {
                client: usize::MAX,
                call,
                ret,
                input: RegisterOp::Get,
                output: Some(RegisterOut::Value(found)),
            },
        );

        // The file itself is sound.
        let file = exports.join(format!("{actor}-{round}.db"));
        bytes += api.export_to(actor, &file).await;
        assert_eq!(
            integrity_check(&file),
            "ok",
            "{actor} after restart {round}"
        );
    }
    (verified, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_durable_loses_no_acknowledged_write_and_keeps_integrity() {
    let cycles = crash_cycles(4);
    const WRITERS: usize = 12;
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, exports) = (dir.path().join("data"), dir.path().join("exports"));
    std::fs::create_dir_all(&exports).expect("exports dir");
    let actors: Vec<String> = (0..3).map(|i| format!("durable-{i}")).collect();
    let log = Log::new();
    let mut rng = StdRng::from_entropy();
    let (mut verified, mut exported) = (0, 0);
    let mut kill_points = Vec::new();

    for cycle in 0..=cycles {
        let mut process = Process::start(&data, &["--durability", "durable"]);
        let api = Api::new(&process.url);
        if cycle > 0 {
            let (v, b) = verify_recovery(&api, &log, &actors, &exports, cycle).await;
            verified = v;
            exported += b;
        }
        if cycle == cycles {
            let status = process.terminate();
            assert!(status.success(), "clean shutdown: {status:?}");
            break;
        }
        let writes_before = log.lock().counters.values().map(Vec::len).sum::<usize>();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                tokio::spawn(mixed_client(
                    api.clone(),
                    w,
                    format!("cycle{cycle}"),
                    actors.clone(),
                    actors.clone(),
                    log.clone(),
                    Instant::now() + Duration::from_secs(30),
                ))
            })
            .collect();
        let kill_after = Duration::from_millis(rng.gen_range(300..900));
        tokio::time::sleep(kill_after).await;
        process.kill9();
        log.seal_pending(log.now());
        kill_points.push(kill_after.as_millis());
        for writer in writers {
            writer.await.expect("writer task");
        }
        let writes_now = log.lock().counters.values().map(Vec::len).sum::<usize>();
        assert!(
            writes_now - writes_before > 20,
            "cycle {cycle}: too few counter ops ({}) to mean anything",
            writes_now - writes_before
        );
    }
    let unexpected = std::mem::take(&mut log.lock().unexpected);
    assert!(
        unexpected.is_empty(),
        "answers the API does not allow: {unexpected:#?}"
    );

    // No counter value was handed out twice over the whole run, and every
    // restart continued above what the crash left.
    let mut checked_ops = 0;
    let mut pending = 0;
    let check_started = Instant::now();
    for actor in &actors {
        let counter = log.counter_history(actor);
        let mut handed_out = HashSet::new();
        for op in &counter {
            if let (CounterOp::Add(_), Some(value)) = (op.input, op.output) {
                assert!(
                    handed_out.insert(value),
                    "{actor}: value {value} was returned by two adds"
                );
            }
        }
        let c = assert_linearizable(actor, &Counter, 0, &counter);
        let r = assert_linearizable(
            actor,
            &Register,
            RegisterState::absent(),
            &log.register_history(actor),
        );
        checked_ops += c.ops + r.ops;
        pending += c.pending + r.pending;
    }
    let lost = log.lock().lost.len();
    eprintln!(
        "durable crash loop: {cycles} kill -9 cycles (at {kill_points:?} ms), \
         {verified} acknowledged writes verified after restarts, {exported} bytes exported and \
         integrity-checked, {checked_ops} answered ops + {pending} unanswered ({lost} lost \
         connections) linearizable (checked in {:?}), total {:?}",
        check_started.elapsed(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_buffered_kill9_loses_at_most_the_flush_window() {
    let cycles = crash_cycles(3);
    const FLUSH_MS: u64 = 200;
    /// Flush interval plus generous slack for a loaded CI machine: a write
    /// acknowledged this long before the kill must have survived it.
    const WINDOW: Duration = Duration::from_millis(FLUSH_MS + 500);
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, exports) = (dir.path().join("data"), dir.path().join("exports"));
    std::fs::create_dir_all(&exports).expect("exports dir");
    let flush = FLUSH_MS.to_string();
    let args = ["--durability", "buffered", "--flush-interval-ms", &flush];
    let actors: Vec<String> = (0..4).map(|i| format!("buffered-{i}")).collect();
    let mut rng = StdRng::from_entropy();
    // What the last restart found per actor (on disk, so never lost later).
    let mut recovered: HashMap<String, i64> = HashMap::new();
    // Per actor, this cycle's acknowledged (value, ack time).
    let mut acked: HashMap<String, Vec<(i64, Instant)>> = HashMap::new();
    let mut kill_at = Instant::now();
    let (mut acked_total, mut lost_total, mut bytes) = (0usize, 0i64, 0usize);
    let mut oldest_lost = Duration::ZERO;

    for cycle in 0..=cycles {
        let mut process = Process::start(&data, &args);
        let api = Api::new(&process.url);
        if cycle > 0 {
            for actor in &actors {
                let value = api.counter(actor).await.expect("counter after restart");
                let acks = acked.remove(actor).unwrap_or_default();
                let before = recovered.get(actor).copied().unwrap_or(0);
                let max_acked = acks.last().map_or(before, |(v, _)| *v);
                // Acknowledged long enough before the kill: flushed.
                let must_have = acks
                    .iter()
                    .filter(|(_, at)| *at + WINDOW <= kill_at)
                    .map(|(v, _)| *v)
                    .max()
                    .unwrap_or(before);
                assert!(
                    value >= must_have,
                    "{actor}: {must_have} was acknowledged over {WINDOW:?} before the kill, \
                     only {value} survived"
                );
                // At most the one add in flight at the kill can be there
                // without its acknowledgement.
                assert!(
                    value <= max_acked + 1,
                    "{actor}: {max_acked} acknowledged, {value} recovered"
                );
                if let Some((_, at)) = acks.iter().find(|(v, _)| *v == value + 1) {
                    oldest_lost = oldest_lost.max(kill_at - *at);
                }
                lost_total += (max_acked - value).max(0);
                acked_total += acks.len();
                recovered.insert(actor.clone(), value);
                let file = exports.join(format!("{actor}-{cycle}.db"));
                bytes += api.export_to(actor, &file).await;
                assert_eq!(
                    integrity_check(&file),
                    "ok",
                    "{actor} after restart {cycle}"
                );
            }
        }
        if cycle == cycles {
            let status = process.terminate();
            assert!(status.success(), "clean shutdown: {status:?}");
            break;
        }
        // One sequential writer per actor: each add answers the next value.
        let writers: Vec<_> = actors
            .iter()
            .map(|actor| {
                let (api, actor) = (api.clone(), actor.clone());
                let mut expected = recovered.get(&actor).copied().unwrap_or(0) + 1;
                tokio::spawn(async move {
                    let mut acks = Vec::new();
                    loop {
                        let value = match api.add(&actor).await {
                            Ok(value) => value,
                            Err(Failure::Lost(_)) => break,
                            Err(Failure::Unexpected(what)) => panic!("{actor}: {what}"),
                        };
                        acks.push((value, Instant::now()));
                        assert_eq!(
                            value, expected,
                            "{actor}: a lone writer's adds count up by one"
                        );
                        expected += 1;
                    }
                    (actor, acks)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(800..1400))).await;
        kill_at = Instant::now();
        process.kill9();
        for writer in writers {
            let (actor, acks) = writer.await.expect("writer task");
            assert!(
                acks.len() > 10,
                "{actor}: too few adds ({}) to mean anything",
                acks.len()
            );
            acked.insert(actor, acks);
        }
    }
    eprintln!(
        "buffered crash loop: {cycles} kill -9 cycles, {acked_total} acknowledged adds, \
         {lost_total} lost (all within the window; the oldest lost was acknowledged \
         {oldest_lost:?} before the kill, allowed {WINDOW:?}), {bytes} bytes exported and \
         integrity-checked, total {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_history_is_linearizable() {
    const CLIENTS: usize = 8;
    let started = Instant::now();
    let server = TestServer::start().await;
    let api = Api::new(&server.url);
    let log = Log::new();
    let (counter_actor, register_actor) = ("lin-counter".to_owned(), "lin-register".to_owned());
    let deadline = Instant::now() + Duration::from_secs(2);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(mixed_client(
                api.clone(),
                c,
                "lin".into(),
                vec![counter_actor.clone()],
                vec![register_actor.clone()],
                log.clone(),
                deadline,
            ))
        })
        .collect();
    for client in clients {
        client.await.expect("client task");
    }
    let (unexpected, lost) = {
        let mut inner = log.lock();
        (std::mem::take(&mut inner.unexpected), inner.lost.clone())
    };
    assert!(unexpected.is_empty(), "{unexpected:#?}");
    assert!(
        lost.is_empty(),
        "no request may fail without a crash: {lost:#?}"
    );

    let check_started = Instant::now();
    let counter = log.counter_history(&counter_actor);
    let register = log.register_history(&register_actor);
    let c = assert_linearizable("counter", &Counter, 0, &counter);
    let r = assert_linearizable("register", &Register, RegisterState::absent(), &register);
    let stored = register
        .iter()
        .filter(|op| matches!(op.output, Some(RegisterOut::Stored(_))))
        .count();
    assert!(
        c.ops > 100 && stored > 10,
        "too little happened: {c:?}, {stored} CAS won"
    );
    let checked_in = check_started.elapsed();

    // The checker is not vacuous on these very histories: one answer
    // altered to a stale read, or a value handed out twice, is caught.
    let mutants_started = Instant::now();
    let mutants = [
        ("stale counter read", stale_counter_read(&counter)),
        ("counter value returned twice", duplicate_add(&counter)),
    ];
    for (what, mutant) in mutants {
        let mutant = mutant.unwrap_or_else(|| panic!("history too thin for a {what}"));
        let verdict = history::check(&Counter, 0, &mutant);
        assert!(
            matches!(verdict, Err(history::Verdict::NotLinearizable { .. })),
            "a {what} must be rejected, got {verdict:?}"
        );
    }
    let mutant = stale_register_read(&register).expect("history too thin for a stale KV read");
    let verdict = history::check(&Register, RegisterState::absent(), &mutant);
    assert!(
        matches!(verdict, Err(history::Verdict::NotLinearizable { .. })),
        "a stale KV read must be rejected, got {verdict:?}"
    );
    eprintln!(
        "linearizability: {} counter ops and {} register ops ({stored} successful CAS) from \
         {CLIENTS} clients, checked in {checked_in:?} ({} + {} configurations); 3 mutants \
         rejected in {:?}; total {:?}",
        c.ops,
        r.ops,
        c.configurations,
        r.configurations,
        mutants_started.elapsed(),
        started.elapsed()
    );
}

/// The history with a read from its second half made stale: it now
/// answers one less than an add that had answered before it began.
fn stale_counter_read(ops: &CounterHistory) -> Option<CounterHistory> {
    let (i, floor) = ops
        .iter()
        .enumerate()
        .skip(ops.len() / 2)
        .filter(|(_, op)| op.input == CounterOp::Get && op.output.is_some())
        .find_map(|(i, get)| {
            let floor = ops
                .iter()
                .filter(|op| op.input == CounterOp::Add(1) && op.ret < get.call)
                .filter_map(|op| op.output)
                .max()?;
            Some((i, floor))
        })?;
    let mut mutant = ops.clone();
    mutant[i].output = Some(floor - 1);
    Some(mutant)
}

/// The history with an add from its second half answering the value the
/// add before it got.
fn duplicate_add(ops: &CounterHistory) -> Option<CounterHistory> {
    let values: HashMap<i64, usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| op.input == CounterOp::Add(1))
        .filter_map(|(i, op)| Some((op.output?, i)))
        .collect();
    let (value, i) = values
        .iter()
        .filter(|(value, _)| values.contains_key(&(*value - 1)))
        .min_by_key(|(value, _)| (**value - values.len() as i64 / 2).abs())?;
    let mut mutant = ops.clone();
    mutant[*i].output = Some(value - 1);
    Some(mutant)
}

/// The history with a KV read from its second half answering the value
/// that the two latest CAS writes answered before it began had replaced.
fn stale_register_read(ops: &RegisterHistory) -> Option<RegisterHistory> {
    let (i, stale) = ops
        .iter()
        .enumerate()
        .skip(ops.len() / 2)
        .filter(|(_, op)| matches!(op.output, Some(RegisterOut::Value(Some(_)))))
        .find_map(|(i, get)| {
            let mut before: Vec<(i64, String)> = ops
                .iter()
                .filter(|op| op.ret < get.call)
                .filter_map(|op| match (&op.input, &op.output) {
                    (RegisterOp::PutIf { value, .. }, Some(RegisterOut::Stored(version))) => {
                        Some((*version, value.clone()))
                    }
                    _ => None,
                })
                .collect();
            before.sort();
            before.pop()?;
            let (version, value) = before.pop()?;
            Some((i, (value, version)))
        })?;
    let mut mutant = ops.clone();
    mutant[i].output = Some(RegisterOut::Value(Some(stale)));
    Some(mutant)
}
