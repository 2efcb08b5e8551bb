//! Where a real `roost serve` process runs its threads: with the default
//! `--pin-workers true`, one tokio worker pinned to each allowed core and
//! every other thread (journal, actor threads, blocking pool) free to run
//! on any; with `--pin-workers false`, every thread free.

use crate::harness::Process;
use serde_json::json;

/// The CPUs in a `Cpus_allowed_list` such as `0-3,6`.
fn cpu_list(text: &str) -> Vec<usize> {
    text.trim()
        .split(',')
        .filter(|part| !part.is_empty())
        .flat_map(|part| match part.split_once('-') {
            Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).collect::<Vec<usize>>(),
            None => vec![part.parse().unwrap()],
        })
        .collect()
}

fn allowed_cpus(status: &str) -> Vec<usize> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in status");
    cpu_list(line)
}

/// Every thread of process `pid`: its name and the CPUs it may run on.
fn threads(pid: u32) -> Vec<(String, Vec<usize>)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        let (Ok(name), Ok(status)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("status")),
        ) else {
            continue; // the thread exited meanwhile
        };
        threads.push((name.trim().to_owned(), allowed_cpus(&status)));
    }
    threads
}

/// Starts a server with `extra` flags and makes it start actor threads, the
/// journal and a blocking-pool thread (the readiness check), so that threads
/// started by workers are among those checked.
async fn busy_server(dir: &std::path::Path, extra: &[&str]) -> Process {
    let process = Process::start(dir, extra);
    let client = reqwest::Client::new();
    for n in 0..8 {
        let id = format!("placed-{n}");
        let sql = json!({ "sql": "CREATE TABLE IF NOT EXISTS t (x INTEGER)" });
        let made = client
            .post(process.actor(&id, "/sql"))
            .json(&sql)
            .send()
            .await
            .unwrap();
        assert_eq!(made.status(), 200);
        let added = client
            .post(process.actor(&id, "/counters/n"))
            .json(&json!({ "by": 1 }))
            .send()
            .await
            .unwrap();
        assert_eq!(added.status(), 200);
    }
    let ready = client
        .get(format!("{}/readyz", process.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    process
}

#[tokio::test]
async fn serve_pins_one_worker_per_core_and_lets_every_other_thread_float() {
    let cpus = allowed_cpus(&std::fs::read_to_string("/proc/self/status").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let process = busy_server(dir.path(), &[]).await;
    let threads = threads(process.child.id());
    assert!(threads.iter().any(|(name, _)| name == "roost-journal"));
    assert!(threads
        .iter()
        .any(|(name, _)| name.starts_with("roost-actor")));
    if cpus.len() < 2 {
        // One core: pinned and free are the same thing.
        assert!(threads.iter().all(|(_, allowed)| *allowed == cpus));
        return;
    }
    let (pinned, free): (Vec<_>, Vec<_>) =
        threads.iter().partition(|(_, allowed)| allowed.len() == 1);
    let mut pinned_cpus: Vec<usize> = pinned.iter().map(|(_, allowed)| allowed[0]).collect();
    pinned_cpus.sort_unstable();
    assert_eq!(
        pinned_cpus, cpus,
        "one worker on each allowed core: {threads:?}"
    );
    assert!(
        pinned.iter().all(|(name, _)| name.starts_with("tokio")),
        "{pinned:?}"
    );
    assert!(
        free.iter().all(|(_, allowed)| *allowed == cpus),
        "every other thread may run on any core: {free:?}"
    );
}

#[tokio::test]
async fn pin_workers_false_leaves_every_thread_free() {
    let cpus = allowed_cpus(&std::fs::read_to_string("/proc/self/status").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let process = busy_server(dir.path(), &["--pin-workers", "false"]).await;
    let threads = threads(process.child.id());
    assert!(threads.iter().any(|(name, _)| name == "roost-journal"));
    assert!(
        threads.iter().all(|(_, allowed)| *allowed == cpus),
        "{threads:?}"
    );
}

#[test]
fn cpu_lists_parse() {
    assert_eq!(cpu_list("0-1\n"), vec![0, 1]);
    assert_eq!(cpu_list("0,2-3,7"), vec![0, 2, 3, 7]);
}
