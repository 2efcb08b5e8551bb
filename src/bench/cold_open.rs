//! The cold-open scenario, in process and without HTTP: what opening an
//! actor that is on disk but not in memory costs, against a warm read.

use anyhow::{ensure, Context};
use std::time::{Duration, Instant};

use super::fixture::ScratchDir;
use super::load::{duration_nanos, CpuSample, Latencies};
use super::scale::memory::status_field;
use crate::{ActorId, Durability, Engine, EngineConfig};

/// Longest wait for an earlier engine's threads to exit.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the measured engine gets to start before the first read.
const READY_AFTER: Duration = Duration::from_millis(200);

/// Opens the engine whose cold opens are timed, once an earlier engine of
/// this process has let its threads go. In production the measured engine
/// is a new process; here the earlier one's threads exit just as it starts
/// (each exit unmaps a stack: a TLB shoot-down that interrupts the other
/// core). The new engine then gets a moment to start its spare threads,
/// as a restarted server has long before its first request.
pub(super) fn open_settled(config: EngineConfig) -> anyhow::Result<Engine> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut threads = status_field("Threads:")?;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = status_field("Threads:")?;
        if now >= threads {
            break;
        }
        threads = now;
    }
    let engine = Engine::open(config).context("opening the measured engine")?;
    std::thread::sleep(READY_AFTER);
    Ok(engine)
}

/// Cold and warm latencies of a first and second read of each actor.
pub(super) struct ColdOpen {
    pub(super) actors: usize,
    pub(super) cold: Latencies,
    pub(super) warm: Latencies,
    /// Cores other processes kept busy during the timed reads.
    pub(super) other_cores: Option<f64>,
}

/// Creates `actors` durable actors, restarts the engine, then times the
/// first read of each (file open and read, on the calling thread: see
/// `engine::caller`) and a second one.
pub(super) fn cold_open(actors: usize) -> anyhow::Result<ColdOpen> {
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
    let engine = open_settled(config)?;
    let timed = |label: &str| -> anyhow::Result<Latencies> {
        let mut nanos = Vec::with_capacity(ids.len());
        for id in &ids {
            let started = Instant::now();
            let value = engine
                .block_on(engine.counter_get(id, "n".into()))
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
