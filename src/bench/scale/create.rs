//! Creating the actors, and what they then take on disk.

use anyhow::{ensure, Context};
use futures::StreamExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{actor, config, shut_down, Plan, COUNTER, CREATE_CACHE, IN_FLIGHT};
use crate::bench::load::{duration_nanos, CpuSample, Latencies};
use crate::bench::report::thousands;
use crate::Engine;

/// How long creating the actors took.
pub(super) struct Creation {
    /// Until the last create was acknowledged.
    pub(super) elapsed: Duration,
    /// Closing the actors still open afterwards (their WALs are checkpointed).
    pub(super) shutdown: Duration,
    /// Of each create: thread start, file creation, first write, fsync.
    pub(super) latencies: Latencies,
    pub(super) other_cores: Option<f64>,
}

/// Creates `plan.actors` durable actors, [`IN_FLIGHT`] at a time, each by
/// one counter increment, keeping at most [`CREATE_CACHE`] open.
pub(super) fn create(dir: &Path, plan: &Plan) -> anyhow::Result<Creation> {
    let engine = Engine::open(config(dir, CREATE_CACHE)).context("opening the engine")?;
    let cpu_before = CpuSample::now();
    let started = Instant::now();
    let engine_ref = &engine;
    let mut creates = futures::stream::iter(0..plan.actors)
        .map(|i| async move {
            let id = actor(i)?;
            let sent = Instant::now();
            let value = engine_ref
                .counter_add(&id, COUNTER.into(), 1, None)
                .await
                .with_context(|| format!("creating {id}"))?;
            ensure!(value == 1, "new actor {id} counted {value}, expected 1");
            Ok(duration_nanos(sent.elapsed()))
        })
        .buffer_unordered(IN_FLIGHT);
    let mut nanos = Vec::with_capacity(plan.actors);
    let report_every = (plan.actors / 10).max(10_000);
    futures::executor::block_on(async {
        while let Some(created) = creates.next().await {
            nanos.push(created?);
            if nanos.len() % report_every == 0 {
                let rate = nanos.len() as f64 / started.elapsed().as_secs_f64();
                eprintln!(
                    "bench: created {} of {} ({rate:.0}/s)",
                    thousands(nanos.len() as u64),
                    thousands(plan.actors as u64)
                );
            }
        }
        anyhow::Ok(())
    })?;
    let elapsed = started.elapsed();
    let other_cores = cpu_before.and_then(|before| before.other_cores_until_now());
    drop(creates);
    let shutdown = shut_down(engine, Duration::from_secs(600))?;
    Ok(Creation {
        elapsed,
        shutdown,
        latencies: Latencies::new(nanos),
        other_cores,
    })
}

/// Allocated (`st_blocks` × 512) and apparent (`st_size`) bytes of some
/// files or directories, and how many there are.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Bytes {
    pub(super) allocated: u64,
    pub(super) apparent: u64,
    pub(super) count: u64,
}

impl Bytes {
    fn add(&mut self, meta: &std::fs::Metadata) {
        self.allocated += meta.blocks() * 512;
        self.apparent += meta.len();
        self.count += 1;
    }

    pub(super) fn total(parts: &[Bytes]) -> Bytes {
        parts.iter().fold(Bytes::default(), |sum, part| Bytes {
            allocated: sum.allocated + part.allocated,
            apparent: sum.apparent + part.apparent,
            count: sum.count + part.count,
        })
    }
}

/// What the data dir takes on disk, by kind.
#[derive(Debug, Default)]
pub(super) struct DiskUsage {
    /// Databases under `actors/`.
    pub(super) actor_files: Bytes,
    /// The data dir and every directory in it.
    pub(super) dirs: Bytes,
    /// The catalog and anything else.
    pub(super) other: Bytes,
    /// Actors' `-wal` files left behind, and their bytes: the `roost` VFS keeps
    /// an actor's WAL between opens (SQLite's persistent WAL), and a clean
    /// close empties it.
    pub(super) wal_files: u64,
    pub(super) wal_bytes: u64,
}

/// Walks `root` without following symlinks.
pub(super) fn disk_usage(root: &Path) -> anyhow::Result<DiskUsage> {
    let actors = root.join("actors");
    let mut usage = DiskUsage::default();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let meta = std::fs::symlink_metadata(&dir).with_context(|| format!("{}", dir.display()))?;
        usage.dirs.add(&meta);
        for entry in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
                continue;
            }
            // Inside an actor directory, not the layout's mark beside them.
            let of_actor = dir.starts_with(&actors) && dir != actors;
            match of_actor {
                true => usage.actor_files.add(&meta),
                false => usage.other.add(&meta),
            }
            if of_actor && entry.file_name().to_string_lossy().ends_with("-wal") {
                usage.wal_files += 1;
                usage.wal_bytes += meta.len();
            }
        }
    }
    Ok(usage)
}

impl DiskUsage {
    pub(super) fn total(&self) -> Bytes {
        Bytes::total(&[self.actor_files, self.dirs, self.other])
    }
}
