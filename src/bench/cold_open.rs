//! The cold-open scenario, in process and without HTTP: what opening an
//! actor that is on disk but not in memory costs, against a warm read.

use anyhow::{ensure, Context};
use std::time::{Duration, Instant};

use super::fixture::ScratchDir;
use super::load::{duration_nanos, CpuSample, Latencies};
use crate::{ActorId, Durability, Engine, EngineConfig};

/// Cold and warm latencies of a first and second read of each actor.
pub(super) struct ColdOpen {
    pub(super) actors: usize,
    pub(super) cold: Latencies,
    pub(super) warm: Latencies,
    /// Cores other processes kept busy during the timed reads.
    pub(super) other_cores: Option<f64>,
}

/// Creates `actors` durable actors, restarts the engine, then times the
/// first read of each (thread spawn, file open, read) and a second one.
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
