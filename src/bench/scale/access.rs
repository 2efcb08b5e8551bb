//! Reading and writing actors picked at random among all of them: cold
//! opens by a single caller, then several callers through the bounded
//! cache, with cold opens told apart from cache hits.

use anyhow::{ensure, Context};
use parking_lot::Mutex;
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use super::{actor, config, shut_down, Plan, CALLERS, COUNTER, WRITE_EVERY};
use crate::bench::load::{duration_nanos, CpuSample, Latencies};
use crate::Engine;

/// First and second reads of actors opened one at a time, and the file
/// system's share of such an open.
pub(super) struct Probe {
    pub(super) cold: Latencies,
    pub(super) warm: Latencies,
    /// Opening and reading other actors' files directly, without SQLite.
    pub(super) raw: Latencies,
}

/// Bytes the baseline reads from the start of an actor file: its first
/// page (the header and schema), as an open's first read.
const RAW_READ_BYTES: usize = 4096;

/// Reads `plan.probe` distinct random actors in a fresh engine, one at a
/// time (file open and read, on this thread: see `engine::caller`), then
/// reads each again.
///
/// Between the cold reads it opens and reads the files of as many other
/// random actors directly: the baseline of what the file system alone
/// costs, measured on files that have sat on disk as long as the actors'
/// (a file untouched for a while may have left the page cache, and then
/// any open waits for the disk).
pub(super) fn probe(dir: &Path, plan: &Plan) -> anyhow::Result<Probe> {
    let engine = crate::bench::cold_open::open_settled(config(dir, plan.probe + 64))?;
    let mut rng = StdRng::seed_from_u64(1);
    let baseline = plan.probe.min(plan.actors - plan.probe);
    let picked = rand::seq::index::sample(&mut rng, plan.actors, plan.probe + baseline).into_vec();
    let (picked, others) = picked.split_at(plan.probe);
    let read = |i: usize, label: &str| -> anyhow::Result<u64> {
        let id = actor(i)?;
        let started = Instant::now();
        let value = engine
            .block_on(engine.counter_get(&id, COUNTER.into()))
            .with_context(|| format!("{label} read of {id}"))?;
        let nanos = duration_nanos(started.elapsed());
        ensure!(value >= 1, "{label} read of {id} returned {value}");
        Ok(nanos)
    };
    let (mut cold, mut raw) = (Vec::with_capacity(picked.len()), Vec::new());
    for (n, &i) in picked.iter().enumerate() {
        if let Some(&other) = others.get(n) {
            raw.push(read_file_start(dir, other)?);
        }
        cold.push(read(i, "cold")?);
    }
    let warm = picked
        .iter()
        .map(|&i| read(i, "warm"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    shut_down(engine, Duration::from_secs(60))?;
    Ok(Probe {
        cold: Latencies::new(cold),
        warm: Latencies::new(warm),
        raw: Latencies::new(raw),
    })
}

/// Opens the `i`th actor's file, reads its first page and closes it: the
/// nanoseconds that took. Opened with `O_NOATIME`, as the engine opens
/// actor files (a first read after a write would otherwise journal an
/// access time).
fn read_file_start(dir: &Path, i: usize) -> anyhow::Result<u64> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let path = crate::engine::layout::actor_path(dir, &actor(i)?);
    let mut page = [0u8; RAW_READ_BYTES];
    let started = Instant::now();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let read = file.read_at(&mut page, 0)?;
    drop(file);
    let nanos = duration_nanos(started.elapsed());
    ensure!(read > 0, "{} is empty", path.display());
    Ok(nanos)
}

/// What the callers saw, by whether the actor was open and the op wrote.
pub(super) struct Access {
    pub(super) elapsed: Duration,
    pub(super) cold_reads: Timed,
    pub(super) cold_writes: Timed,
    pub(super) warm_reads: Timed,
    pub(super) warm_writes: Timed,
    pub(super) errors: u64,
    pub(super) first_error: Option<String>,
    pub(super) other_cores: Option<f64>,
    /// Open actors at the end, and what the LRU model expected.
    pub(super) open_at_end: usize,
    pub(super) expected_open: usize,
}

impl Access {
    pub(super) fn ops(&self) -> usize {
        self.all().map(|timed| timed.count).sum()
    }

    pub(super) fn all(&self) -> impl Iterator<Item = &Timed> {
        [
            &self.cold_reads,
            &self.cold_writes,
            &self.warm_reads,
            &self.warm_writes,
        ]
        .into_iter()
    }

    pub(super) fn hit_rate(&self) -> f64 {
        let warm = self.warm_reads.count + self.warm_writes.count;
        warm as f64 / self.ops().max(1) as f64
    }
}

/// Latencies of one kind of op, and how many there were.
pub(super) struct Timed {
    pub(super) count: usize,
    pub(super) latencies: Latencies,
}

impl Timed {
    fn new(nanos: Vec<u64>) -> Self {
        Timed {
            count: nanos.len(),
            latencies: Latencies::new(nanos),
        }
    }
}

/// One caller's latencies, in nanoseconds, by [`Kind::index`].
#[derive(Default)]
struct CallerLoad {
    nanos: [Vec<u64>; 4],
    errors: u64,
    first_error: Option<String>,
    finished: Option<Instant>,
}

/// [`CALLERS`] threads loop random ops (one write in [`WRITE_EVERY`]) for
/// `plan.window`, through a fresh engine that keeps `plan.cache` actors open.
pub(super) fn random_access(dir: &Path, plan: &Plan) -> anyhow::Result<Access> {
    let engine = Engine::open(config(dir, plan.cache)).context("opening the engine")?;
    let model = Mutex::new(LruModel::new(plan.cache));
    let cpu_before = CpuSample::now();
    let started = Instant::now();
    let until = started + plan.window;
    let loads = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CALLERS)
            .map(|caller| {
                let (engine, model) = (&engine, &model);
                scope.spawn(move || {
                    crate::placement::float_this_thread();
                    let mut rng = StdRng::seed_from_u64(100 + caller as u64);
                    let mut load = CallerLoad::default();
                    for k in 0usize.. {
                        if Instant::now() >= until {
                            break;
                        }
                        let i = rng.gen_range(0..plan.actors);
                        let write = k % WRITE_EVERY == WRITE_EVERY - 1;
                        let warm = model.lock().touch(i);
                        let sent = Instant::now();
                        match call(engine, i, write) {
                            Ok(()) => {
                                let kind = usize::from(warm) * 2 + usize::from(write);
                                load.nanos[kind].push(duration_nanos(sent.elapsed()));
                                load.finished = Some(Instant::now());
                            }
                            Err(err) => {
                                load.errors += 1;
                                load.first_error.get_or_insert(format!("{err:#}"));
                            }
                        }
                    }
                    load
                })
            })
            .collect();
        crate::bench::load::join_all(handles)
    })?;
    let other_cores = cpu_before.and_then(|before| before.other_cores_until_now());
    let open_at_end = engine.open_actors();
    let expected_open = model.lock().len();
    shut_down(engine, Duration::from_secs(120))?;

    let mut by_kind: [Vec<u64>; 4] = Default::default();
    let (mut errors, mut first_error, mut last) = (0, None, started);
    for load in loads {
        for (all, mine) in by_kind.iter_mut().zip(load.nanos) {
            all.extend(mine);
        }
        errors += load.errors;
        first_error = first_error.or(load.first_error);
        last = last.max(load.finished.unwrap_or(started));
    }
    let [cold_reads, cold_writes, warm_reads, warm_writes] = by_kind.map(Timed::new);
    Ok(Access {
        elapsed: last - started,
        cold_reads,
        cold_writes,
        warm_reads,
        warm_writes,
        errors,
        first_error,
        other_cores,
        open_at_end,
        expected_open,
    })
}

/// Reads actor `i`'s counter, or adds 1 to it.
fn call(engine: &Engine, i: usize, write: bool) -> anyhow::Result<()> {
    let id = actor(i)?;
    let value = match write {
        true => engine.block_on(engine.counter_add(&id, COUNTER.into(), 1, None)),
        false => engine.block_on(engine.counter_get(&id, COUNTER.into())),
    }
    .with_context(|| format!("{} {id}", if write { "writing" } else { "reading" }))?;
    // Every actor was created with 1 and only grows: a write sees at least 2.
    ensure!(value > i64::from(write), "{id} counted {value}");
    Ok(())
}

/// Which actors the engine holds open, by the spec's rule: the `capacity`
/// most recently used ones (the idle timeout is longer than the run). Kept
/// in the bench so that telling a cold open from a hit costs the engine
/// nothing; `open_at_end` checks it against the engine's own count.
struct LruModel {
    capacity: usize,
    clock: u64,
    used_at: HashMap<usize, u64>,
    by_use: BTreeMap<u64, usize>,
}

impl LruModel {
    fn new(capacity: usize) -> Self {
        LruModel {
            capacity,
            clock: 0,
            used_at: HashMap::with_capacity(capacity + 1),
            by_use: BTreeMap::new(),
        }
    }

    /// Marks actor `i` used; returns whether it was open before.
    fn touch(&mut self, i: usize) -> bool {
        self.clock += 1;
        let was_open = match self.used_at.insert(i, self.clock) {
            Some(previous) => {
                self.by_use.remove(&previous);
                true
            }
            None => false,
        };
        self.by_use.insert(self.clock, i);
        if self.used_at.len() > self.capacity {
            if let Some((_, oldest)) = self.by_use.pop_first() {
                self.used_at.remove(&oldest);
            }
        }
        was_open
    }

    fn len(&self) -> usize {
        self.used_at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_model_evicts_the_least_recently_used() {
        let mut model = LruModel::new(2);
        assert!(!model.touch(1));
        assert!(!model.touch(2));
        assert!(model.touch(1));
        assert!(!model.touch(3)); // evicts 2, used before 1
        assert!(model.touch(1));
        assert!(!model.touch(2));
        assert_eq!(model.len(), 2);
    }
}
