//! Whether WAL files stay bounded under sustained writes: one durable
//! actor written by two threads (group commit) and a few buffered ones
//! written by a third, while a fourth samples the size of each `-wal` file.

use anyhow::{ensure, Context};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::shut_down;
use crate::bench::fixture::ScratchDir;
use crate::store::kv::Precondition;
use crate::{ActorId, Durability, Engine, EngineConfig};

/// What `src/store` sets `journal_size_limit` to: the bound a WAL file is
/// truncated back to after a checkpoint.
pub(super) const JOURNAL_SIZE_LIMIT: u64 = 8 << 20;
/// Buffered actors, all written round-robin by one thread.
const BUFFERED_ACTORS: usize = 3;
/// Keys each actor's writes cycle through, so its database stops growing.
const KEYS: usize = 1_000;
const VALUE_BYTES: usize = 100;
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// One written actor's WAL over the window.
pub(super) struct WalTrace {
    pub(super) durability: Durability,
    pub(super) writes: u64,
    pub(super) max_bytes: u64,
    pub(super) last_bytes: u64,
    /// Samples that found no `-wal` file (between a close and a reopen).
    pub(super) missing: u64,
    pub(super) samples: u64,
}

pub(super) struct Sustained {
    pub(super) window: Duration,
    pub(super) actors: Vec<WalTrace>,
    /// `-wal` files left after the engine shut down cleanly (kept
    /// between opens, see `DiskUsage::wal_files`), and their bytes.
    pub(super) left_after_shutdown: usize,
    pub(super) left_bytes: u64,
}

/// Writes for `window` in a data dir of its own, sampling every actor's WAL.
pub(super) fn sustained(window: Duration) -> anyhow::Result<Sustained> {
    let dir = ScratchDir::new("scale-wal")?;
    let engine = Engine::open(EngineConfig {
        data_dir: dir.path().to_path_buf(),
        durability: Durability::Durable,
        ..Default::default()
    })
    .context("opening the engine")?;
    let mut actors = vec![(ActorId::parse("wal-durable")?, Durability::Durable)];
    for i in 0..BUFFERED_ACTORS {
        actors.push((
            ActorId::parse(&format!("wal-buffered-{i}"))?,
            Durability::Buffered,
        ));
    }
    let wal_files: Vec<PathBuf> = actors
        .iter()
        .map(|(id, _)| wal_file(dir.path(), id))
        .collect();
    // The first write creates each actor with its durability.
    for (id, durability) in &actors {
        put(&engine, id, 0, Some(*durability))?;
    }
    for (path, (id, _)) in wal_files.iter().zip(&actors) {
        ensure!(
            path.exists(),
            "no WAL file of {id} at {}: has the engine's file layout changed?",
            path.display()
        );
    }

    let until = Instant::now() + window;
    let writing = AtomicBool::new(true);
    let (writes, samples) = std::thread::scope(|scope| {
        let durable = &actors[..1];
        let buffered = &actors[1..];
        let writers: Vec<_> = [durable, durable, buffered]
            .into_iter()
            .map(|targets| {
                let engine = &engine;
                scope.spawn(move || {
                    crate::placement::float_this_thread();
                    write_until(engine, targets, until)
                })
            })
            .collect();
        let sampler = scope.spawn(|| {
            crate::placement::float_this_thread();
            sample(&wal_files, &writing)
        });
        let writes: anyhow::Result<Vec<Vec<u64>>> = writers
            .into_iter()
            .map(|writer| {
                writer
                    .join()
                    .map_err(|_| anyhow::anyhow!("a writer thread panicked"))?
            })
            .collect();
        writing.store(false, Ordering::Release);
        let samples = sampler
            .join()
            .map_err(|_| anyhow::anyhow!("the sampler panicked"));
        (writes, samples)
    });
    let (writes, samples) = (writes?, samples?);
    shut_down(engine, Duration::from_secs(60))?;
    let left: Vec<u64> = wal_files
        .iter()
        .filter_map(|path| std::fs::metadata(path).ok())
        .map(|meta| meta.len())
        .collect();
    let (left_after_shutdown, left_bytes) = (left.len(), left.iter().sum());

    // Writers 0 and 1 wrote the durable actor; writer 2 the buffered ones.
    let per_actor = |a: usize| match a {
        0 => writes[0][0] + writes[1][0],
        _ => writes[2][a - 1],
    };
    let traces = actors
        .iter()
        .enumerate()
        .map(|(a, (_, durability))| {
            let sizes = &samples[a];
            WalTrace {
                durability: *durability,
                writes: per_actor(a),
                max_bytes: sizes.iter().flatten().copied().max().unwrap_or(0),
                last_bytes: sizes.last().copied().flatten().unwrap_or(0),
                missing: sizes.iter().filter(|s| s.is_none()).count() as u64,
                samples: sizes.len() as u64,
            }
        })
        .collect();
    Ok(Sustained {
        window,
        actors: traces,
        left_after_shutdown,
        left_bytes,
    })
}

/// The `-wal` file next to the engine's file of `id`.
fn wal_file(data_dir: &Path, id: &ActorId) -> PathBuf {
    let mut path = crate::engine::layout::actor_path(data_dir, id).into_os_string();
    path.push("-wal");
    PathBuf::from(path)
}

/// Puts key `k % KEYS` of `id`.
fn put(
    engine: &Engine,
    id: &ActorId,
    k: usize,
    create_as: Option<Durability>,
) -> anyhow::Result<()> {
    let key = format!("key-{}", k % KEYS);
    let value = vec![b'x'; VALUE_BYTES];
    futures::executor::block_on(engine.kv_put(id, key, value, Precondition::None, create_as))
        .with_context(|| format!("writing {id}"))?;
    Ok(())
}

/// Writes `targets` round-robin until `until`; returns each one's writes.
fn write_until(
    engine: &Engine,
    targets: &[(ActorId, Durability)],
    until: Instant,
) -> anyhow::Result<Vec<u64>> {
    let mut writes = vec![0; targets.len()];
    for k in 0usize.. {
        if Instant::now() >= until {
            break;
        }
        let t = k % targets.len();
        put(engine, &targets[t].0, k / targets.len(), None)?;
        writes[t] += 1;
    }
    Ok(writes)
}

/// Every WAL's size (`None`: no file) at each tick while `writing`.
fn sample(wal_files: &[PathBuf], writing: &AtomicBool) -> Vec<Vec<Option<u64>>> {
    let mut sizes = vec![Vec::new(); wal_files.len()];
    while writing.load(Ordering::Acquire) {
        for (path, trace) in wal_files.iter().zip(&mut sizes) {
            trace.push(std::fs::metadata(path).ok().map(|m| m.len()));
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    sizes
}
