//! What an open idle actor keeps in memory: the process's resident set
//! before and after opening many actors and leaving them idle.

use anyhow::{ensure, Context};
use futures::StreamExt;
use rand::{rngs::StdRng, SeedableRng};
use std::path::Path;
use std::time::{Duration, Instant};

use super::{actor, config, shut_down, Plan, COUNTER, IN_FLIGHT};
use crate::Engine;

/// How often the resident set is sampled while waiting for it to settle.
const SETTLE: Duration = Duration::from_millis(250);
/// Longest wait for threads of earlier phases to exit and their memory to
/// go back to the OS.
const MAX_SETTLE: Duration = Duration::from_secs(10);
/// A resident set that falls by less than this per sample has settled.
const SETTLED_WITHIN: u64 = 1 << 20;

/// The process's resident set and open descriptors with 0, half and all
/// of `actors` open and idle.
pub(super) struct Resident {
    pub(super) actors: usize,
    pub(super) rss: [u64; 3],
    pub(super) fds: [u64; 3],
    /// The process's threads at each sample (idle actors park theirs).
    pub(super) threads: [u64; 3],
    /// Bytes in use in the system allocator at each sample: SQLite's heap
    /// and what actor threads allocate (see `crate::alloc`). SQLite keeps
    /// no totals of its own (see `store::vfs`).
    pub(super) system_heap: [u64; 3],
}

impl Resident {
    /// Growth per actor while opening the first half.
    pub(super) fn first_half(&self) -> f64 {
        self.rss[1].saturating_sub(self.rss[0]) as f64 / (self.actors / 2).max(1) as f64
    }

    /// Growth per actor while opening the second half: memory that threads
    /// of earlier phases left to the allocator, which the first half may
    /// reuse unseen, is used up by then.
    pub(super) fn second_half(&self) -> f64 {
        let second_half = self.actors - self.actors / 2;
        self.rss[2].saturating_sub(self.rss[1]) as f64 / second_half.max(1) as f64
    }

    /// The larger half: what the target is judged on.
    pub(super) fn per_actor(&self) -> f64 {
        self.first_half().max(self.second_half())
    }

    /// The system heap per actor, all of them open against none.
    pub(super) fn system_heap_per_actor(&self) -> f64 {
        self.system_heap[2].saturating_sub(self.system_heap[0]) as f64 / self.actors.max(1) as f64
    }

    pub(super) fn fds_per_actor(&self) -> f64 {
        self.fds[2].saturating_sub(self.fds[0]) as f64 / self.actors as f64
    }
}

/// Opens `plan.idle` random actors (a read each) in a fresh engine whose
/// cache holds them all, sampling `VmRSS` before, halfway and after.
pub(super) fn resident(dir: &Path, plan: &Plan) -> anyhow::Result<Resident> {
    let engine = Engine::open(config(dir, plan.idle + 64)).context("opening the engine")?;
    let mut rng = StdRng::seed_from_u64(2);
    let picked = rand::seq::index::sample(&mut rng, plan.actors, plan.idle).into_vec();
    let (first, second) = picked.split_at(plan.idle / 2);
    let mut rss = [0; 3];
    let mut fds = [0; 3];
    let mut threads = [0; 3];
    let mut system_heap = [0; 3];
    for (step, batch) in [&[][..], first, second].into_iter().enumerate() {
        open_all(&engine, batch)?;
        rss[step] = settled_rss()?;
        fds[step] = open_fds()?;
        threads[step] = status_field("Threads:")?;
        system_heap[step] = system_heap_in_use();
    }
    let open = engine.open_actors();
    ensure!(
        open == plan.idle,
        "{open} actors were open, expected {}: some were closed early",
        plan.idle
    );
    shut_down(engine, Duration::from_secs(120))?;
    Ok(Resident {
        actors: plan.idle,
        rss,
        fds,
        threads,
        system_heap,
    })
}

/// Reads each actor once, [`IN_FLIGHT`] at a time, which opens it.
fn open_all(engine: &Engine, picked: &[usize]) -> anyhow::Result<()> {
    let mut reads = futures::stream::iter(picked)
        .map(|&i| async move {
            let id = actor(i)?;
            let value = engine
                .counter_get(&id, COUNTER.into())
                .await
                .with_context(|| format!("reading {id}"))?;
            ensure!(value >= 1, "{id} counted {value}");
            anyhow::Ok(())
        })
        .buffer_unordered(IN_FLIGHT);
    futures::executor::block_on(async {
        while let Some(read) = reads.next().await {
            read?;
        }
        Ok(())
    })
}

/// `VmRSS` once it has stopped falling. Before the first sample, memory
/// that earlier phases freed goes back to the OS, so the actors opened
/// next take fresh pages instead of reusing it unseen.
fn settled_rss() -> anyhow::Result<u64> {
    release_free_heap();
    let deadline = Instant::now() + MAX_SETTLE;
    let mut last = resident_bytes()?;
    loop {
        std::thread::sleep(SETTLE);
        let now = resident_bytes()?;
        if now + SETTLED_WITHIN >= last || Instant::now() >= deadline {
            return Ok(now);
        }
        last = now;
    }
}

/// Trims glibc's malloc, which SQLite allocates from (Rust code uses
/// mimalloc, which returns freed pages by itself).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_heap() {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes no pointers; it only releases free memory.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_heap() {}

/// Bytes glibc's malloc has handed out and not had back (small blocks and
/// mapped large ones).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn system_heap_in_use() -> u64 {
    // SAFETY: mallinfo2 takes nothing and returns a struct of counts.
    let info = unsafe { libc::mallinfo2() };
    (info.uordblks + info.hblkhd) as u64
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn system_heap_in_use() -> u64 {
    0
}

/// `VmRSS` of this process, in bytes.
fn resident_bytes() -> anyhow::Result<u64> {
    Ok(status_field("VmRSS:")? * 1024)
}

/// A number from `/proc/self/status` (`VmRSS:` is in KiB).
pub(in crate::bench) fn status_field(name: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .with_context(|| format!("no {name} in /proc/self/status"))
}

fn open_fds() -> anyhow::Result<u64> {
    Ok(std::fs::read_dir("/proc/self/fd")
        .context("reading /proc/self/fd")?
        .count() as u64)
}
