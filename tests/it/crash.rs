//! Real `roost serve` processes: `kill -9` loses no acknowledged durable
//! write, SIGTERM loses no buffered write, and unsafe start-ups are refused.

use crate::harness::{seg, Process};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Acked {
    /// Highest acknowledged value per (actor, counter).
    counters: HashMap<String, i64>,
    /// Acknowledged KV puts: (actor, key) → value.
    puts: HashMap<(String, String), String>,
}

/// Writers that record every acknowledged result until the server dies.
async fn write_until_dead(process_url: String, writers: usize, acked: Arc<Mutex<Acked>>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (client, acked, base) = (client.clone(), acked.clone(), process_url.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let actor = format!("crash-{}", (w + n) % 4);
                let result = if n % 2 == 0 {
                    let url = format!("{base}/v1/actors/{}/counters/hits", seg(&actor));
                    match client.post(url).send().await {
                        Ok(r) if r.status() == 200 => {
                            let value = r
                                .json::<serde_json::Value>()
                                .await
                                .ok()
                                .and_then(|v| v["value"].as_i64());
                            value.map(|v| {
                                let mut acked = acked.lock().unwrap();
                                let best = acked.counters.entry(actor.clone()).or_default();
                                *best = (*best).max(v);
                            })
                        }
                        _ => None,
                    }
                } else {
                    let key = format!("w{w}-{n}");
                    let url = format!("{base}/v1/actors/{}/kv/{key}", seg(&actor));
                    match client.put(url).body(format!("value-{w}-{n}")).send().await {
                        Ok(r) if r.status() == 200 => {
                            acked
                                .lock()
                                .unwrap()
                                .puts
                                .insert((actor.clone(), key), format!("value-{w}-{n}"));
                            Some(())
                        }
                        _ => None,
                    }
                };
                if result.is_none() {
                    return;
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

async fn verify(process: &Process, acked: &Acked) -> usize {
    let client = reqwest::Client::new();
    for (actor, min) in &acked.counters {
        let value = hits(&client, process, actor).await;
        assert!(value >= *min, "{actor}: acknowledged {min}, found {value}");
    }
    for ((actor, key), value) in &acked.puts {
        let got = client
            .get(process.actor(actor, &format!("/kv/{key}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.status(),
            200,
            "acknowledged put {actor}/{key} is missing"
        );
        assert_eq!(&got.text().await.unwrap(), value);
    }
    acked.counters.len() + acked.puts.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_concurrent_durable_writes_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    for cycle in 0..3 {
        let mut process = Process::start(dir.path(), &["--durability", "durable"]);
        let acked = Arc::new(Mutex::new(Acked::default()));
        let writers = tokio::spawn(write_until_dead(process.url.clone(), 16, acked.clone()));
        tokio::time::sleep(Duration::from_millis(700 + 300 * cycle)).await;
        process.kill9();
        writers.await.unwrap();
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        assert!(
            acked.puts.len() > 50,
            "cycle {cycle}: too few writes to mean anything"
        );
        let restarted = Process::start(dir.path(), &[]);
        let checked = verify(&restarted, &acked).await;
        assert!(checked > 50);
        drop(restarted);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_buffered_mode_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut process = Process::start(
        dir.path(),
        &[
            "--durability",
            "buffered",
            "--flush-interval-ms",
            "600000",
            "--flush-max-ops",
            "1000000",
        ],
    );
    let client = reqwest::Client::new();
    let mut acked = Acked::default();
    for i in 0..200 {
        let actor = format!("buf-{}", i % 5);
        let r = client
            .post(process.actor(&actor, "/counters/hits"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let value = r.json::<serde_json::Value>().await.unwrap()["value"]
            .as_i64()
            .unwrap();
        acked.counters.insert(actor.clone(), value);
        let key = format!("k{i}");
        let r = client
            .put(process.actor(&actor, &format!("/kv/{key}")))
            .body(format!("v{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        acked.puts.insert((actor, key), format!("v{i}"));
    }
    let status = process.terminate();
    assert!(
        status.success(),
        "graceful shutdown exits 0, got {status:?}"
    );
    let restarted = Process::start(dir.path(), &[]);
    assert_eq!(verify(&restarted, &acked).await, 205);
    for (actor, value) in &acked.counters {
        let stored = hits(&client, &restarted, actor).await;
        assert_eq!(stored, *value, "{actor}: exact, not just at least");
    }
}

#[test]
fn non_loopback_listen_without_a_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_roost"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("ROOST_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("without a token"), "{stderr}");
}

#[test]
fn an_unwritable_data_dir_fails_at_start_up() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_roost"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "/proc/roost-cannot-live-here",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("data dir"), "{stderr}");
}

/// Adds `by` to `actor`'s counter `hits` and returns the acknowledged value.
async fn add_hits(client: &reqwest::Client, process: &Process, actor: &str) -> i64 {
    let r = client
        .post(process.actor(actor, "/counters/hits"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<serde_json::Value>().await.unwrap()["value"]
        .as_i64()
        .unwrap()
}

async fn hits(client: &reqwest::Client, process: &Process, actor: &str) -> i64 {
    let body: serde_json::Value = client
        .get(process.actor(actor, "/counters/hits"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["value"].as_i64().unwrap()
}

/// Durable increments are answered once the shared journal has them, and
/// actors write them to their own files every few flush intervals. After
/// `kill -9` the restart replays exactly what the files lack: every value
/// comes back exact, whether its increments were written to the file,
/// still only in the journal, or split between the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_replays_journaled_increments_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut expected: HashMap<String, i64> = HashMap::new();
    for cycle in 0..2 {
        // Short flushes: files take increments while more keep coming.
        let mut process = Process::start(
            dir.path(),
            &["--durability", "durable", "--flush-interval-ms", "40"],
        );
        let started = std::time::Instant::now();
        let mut n = 0;
        while started.elapsed() < Duration::from_millis(900) {
            let actor = format!("journaled-{}", n % 40);
            let value = add_hits(&client, &process, &actor).await;
            let count = expected.entry(actor.clone()).or_default();
            *count += 1;
            assert_eq!(value, *count, "cycle {cycle}: {actor}");
            n += 1;
        }
        assert!(n > 200, "cycle {cycle}: only {n} increments");
        process.kill9();
        let restarted = Process::start(dir.path(), &[]);
        for (actor, count) in &expected {
            assert_eq!(
                hits(&client, &restarted, actor).await,
                *count,
                "cycle {cycle}: {actor}"
            );
        }
        drop(restarted);
    }
}

/// A deleted actor's journaled increments never come back into a new
/// actor of the same ID, even when the process dies before any flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_delete_does_not_resurrect_journaled_increments() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let mut process = Process::start(
        dir.path(),
        &["--durability", "durable", "--flush-interval-ms", "600000"],
    );
    for _ in 0..20 {
        add_hits(&client, &process, "reborn").await;
        add_hits(&client, &process, "bystander").await;
    }
    let deleted = client
        .delete(process.actor("reborn", ""))
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success(), "{}", deleted.status());
    assert_eq!(add_hits(&client, &process, "reborn").await, 1);
    assert_eq!(add_hits(&client, &process, "reborn").await, 2);
    process.kill9();
    let restarted = Process::start(dir.path(), &[]);
    assert_eq!(hits(&client, &restarted, "reborn").await, 2);
    assert_eq!(hits(&client, &restarted, "bystander").await, 20);
}

/// Under sustained durable load the journal moves from its small first
/// segment to 32 MiB zero-filled ones, written with direct I/O where the
/// file system has it. `kill -9` while increments go there: every
/// acknowledged value survives, and none is counted twice on replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_the_journal_writes_a_preallocated_segment_loses_nothing() {
    const ACTORS: usize = 50;
    const WRITERS: usize = 32;
    let dir = tempfile::tempdir().unwrap();
    let mut process = Process::start(dir.path(), &["--durability", "durable"]);
    // Per actor: the highest acknowledged value, and the increments sent.
    let acked = Arc::new(Mutex::new(vec![(0i64, 0i64); ACTORS]));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (client, acked) = (client.clone(), acked.clone());
            let url = |a: usize| process.actor(&format!("segment-{a}"), "/counters/hits");
            let urls: Vec<String> = (0..ACTORS).map(url).collect();
            tokio::spawn(async move {
                for n in 0.. {
                    let a = (w + n) % ACTORS;
                    acked.lock().unwrap()[a].1 += 1;
                    let Ok(r) = client.post(&urls[a]).send().await else {
                        return;
                    };
                    if r.status() != 200 {
                        return;
                    }
                    let Ok(body) = r.json::<serde_json::Value>().await else {
                        return;
                    };
                    let value = body["value"].as_i64().expect("a counter value");
                    let mut acked = acked.lock().unwrap();
                    acked[a].0 = acked[a].0.max(value);
                }
            })
        })
        .collect();

    // Wait until the newest segment is a preallocated one (32 MiB ahead),
    // then let increments land in it for a while.
    let journal = dir.path().join("journal");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let newest = std::fs::read_dir(&journal)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .max_by_key(|e| e.file_name());
        let len = newest
            .and_then(|e| e.metadata().ok())
            .map_or(0, |m| m.len());
        if len >= 32 << 20 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no preallocated segment after 2 minutes of durable increments"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    process.kill9();
    for writer in writers {
        writer.await.unwrap();
    }

    let acked = acked.lock().unwrap().clone();
    let total: i64 = acked.iter().map(|(value, _)| value).sum();
    assert!(total > 20_000, "only {total} acknowledged increments");
    let restarted = Process::start(dir.path(), &[]);
    for (a, (acknowledged, sent)) in acked.iter().enumerate() {
        let actor = format!("segment-{a}");
        let value = hits(&client, &restarted, &actor).await;
        assert!(
            value >= *acknowledged && value <= *sent,
            "{actor}: {acknowledged} acknowledged, {sent} sent, {value} after the restart"
        );
    }
}
