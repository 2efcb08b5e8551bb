//! Disk faults with a real filesystem running out: the data dir on a small
//! tmpfs. Writes that do not fit fail with 507 `insufficient-storage` and are
//! not acknowledged; everything acknowledged before stays readable; the
//! server keeps serving and takes writes again once space returns. A
//! read-only data dir stops start-up with a clear error.
//!
//! Mounting needs root (CI runs as root); elsewhere these tests say so and
//! pass without running.

use crate::harness::{code, Process};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, options: &str) -> Option<Self> {
        if !is_root() {
            eprintln!("not root: cannot mount a tmpfs; skipping");
            return None;
        }
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed as root");
        Some(Tmpfs(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

async fn put(
    client: &reqwest::Client,
    base: &str,
    actor: &str,
    key: &str,
    bytes: usize,
) -> (u16, Value) {
    let response = client
        .put(format!("{base}/v1/actors/{actor}/kv/{key}"))
        .body(vec![b'x'; bytes])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_with_507_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("mnt"), "size=8m") else {
        return;
    };
    // Space that "comes back" later, as when an operator frees some.
    let ballast = fs.0.join("ballast");
    std::fs::write(&ballast, vec![0u8; 2 << 20]).unwrap();
    let process = Process::start(&fs.0.join("data"), &[]);
    let base = process.url.clone();
    let client = reqwest::Client::new();

    // Acknowledged before the disk fills.
    for key in ["a", "b", "c"] {
        assert_eq!(put(&client, &base, "keeper", key, 1000).await.0, 200);
    }
    let mut acknowledged = 0usize;
    let mut refusal = None;
    for i in 0..200 {
        let (status, body) = put(&client, &base, "filler", &format!("k{i}"), 256 << 10).await;
        match status {
            200 => acknowledged += 1,
            _ => {
                refusal = Some((status, body));
                break;
            }
        }
    }
    let (status, body) = refusal.expect("8 MiB filled without a refusal");
    assert_eq!(
        (status, code(&body)),
        (507, "insufficient-storage"),
        "{body}"
    );
    assert!(acknowledged > 0);

    // Still serving: reads of everything acknowledged, health, other writes fail cleanly.
    for key in ["a", "b", "c"] {
        let got = client
            .get(format!("{base}/v1/actors/keeper/kv/{key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200);
        assert_eq!(got.bytes().await.unwrap().len(), 1000);
    }
    for i in 0..acknowledged {
        let got = client
            .get(format!("{base}/v1/actors/filler/kv/k{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200, "acknowledged k{i} lost");
    }
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, body) = put(&client, &base, "newcomer", "k", 512 << 10).await;
    assert_eq!(
        (status, code(&body)),
        (507, "insufficient-storage"),
        "{body}"
    );

    // Space returns: writes are taken again, on old and new actors.
    std::fs::remove_file(&ballast).unwrap();
    assert_eq!(put(&client, &base, "filler", "after", 1000).await.0, 200);
    assert_eq!(put(&client, &base, "newcomer", "k", 1000).await.0, 200);
    assert_eq!(
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    drop(process);
}

#[test]
fn a_read_only_data_dir_stops_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("ro"), "ro,size=1m") else {
        return;
    };
    let output = Command::new(env!("CARGO_BIN_EXE_roost"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(fs.0.join("data"))
        .output()
        .expect("run roost serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot open data dir"), "{stderr}");
    assert!(stderr.contains("Read-only file system"), "{stderr}");
}
