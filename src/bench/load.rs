//! The load generator: clients that each make one request at a time for a
//! warm-up and then a measured window, as tokio tasks ([`drive_after`]) or as OS
//! threads calling in process ([`drive_threads`]), and the latency and CPU
//! figures every suite reports.

use anyhow::{ensure, Context};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

use super::WARM_UP;

/// What one request got back, when it was answered at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// Done (a 2xx, or an allowed rate-limit decision).
    Done,
    /// A rate-limit decision that refused the request: still an answer.
    Denied,
}

/// One client: makes request number `k` of its own sequence.
pub(super) trait Caller: Send + 'static {
    /// `Err` holds a description of a failed request.
    fn call(&mut self, k: usize) -> impl Future<Output = Result<Answer, String>> + Send;
}

/// What the load generator saw during one scenario.
pub(super) struct Load {
    /// Latencies of the answered requests in the measured window.
    pub(super) latencies: Latencies,
    /// Answered requests in the measured window.
    pub(super) measured_ok: u64,
    /// Of those, rate-limit decisions that said no.
    pub(super) measured_denied: u64,
    /// Length of the measured window, until the last request finished.
    pub(super) elapsed: Duration,
    /// Answered requests including the warm-up: what the server must have stored.
    pub(super) total_ok: u64,
    /// Failed requests (non-2xx responses, transport failures), warm-up included.
    pub(super) errors: u64,
    pub(super) first_error: Option<String>,
    /// Cores other processes kept busy meanwhile (a noisy machine).
    pub(super) other_cores: Option<f64>,
}

impl Load {
    /// A measured load with `rps` requests in one second, all at
    /// `p99_micros`: report tests build rows from it.
    #[cfg(test)]
    pub(super) fn fixture(rps: u64, p99_micros: u64) -> Load {
        Load {
            latencies: Latencies::new(vec![p99_micros * 1000; 100]),
            measured_ok: rps,
            measured_denied: 0,
            elapsed: Duration::from_secs(1),
            total_ok: rps,
            errors: 0,
            first_error: None,
            other_cores: Some(0.0),
        }
    }

    /// Adds a later slice of the same scenario (rounds run in turn with
    /// other scenarios): counts and windows add up, latencies pool.
    pub(super) fn absorb(&mut self, later: Load) {
        let (before, after) = (self.elapsed.as_secs_f64(), later.elapsed.as_secs_f64());
        self.other_cores = match (self.other_cores, later.other_cores) {
            (Some(a), Some(b)) => Some((a * before + b * after) / (before + after).max(1e-9)),
            _ => None,
        };
        let mut nanos = std::mem::take(&mut self.latencies.0);
        nanos.extend(later.latencies.0);
        self.latencies = Latencies::new(nanos);
        self.measured_ok += later.measured_ok;
        self.measured_denied += later.measured_denied;
        self.elapsed += later.elapsed;
        self.total_ok += later.total_ok;
        self.errors += later.errors;
        self.first_error = self.first_error.take().or(later.first_error);
    }

    pub(super) fn requests_per_sec(&self) -> f64 {
        self.measured_ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Adds up the clients' shares once they have all finished.
    fn gather(
        clients: impl IntoIterator<Item = ClientLoad>,
        measure_from: Instant,
        cpu_before: Option<CpuSample>,
    ) -> Load {
        let mut nanos = Vec::new();
        let (mut total_ok, mut denied, mut errors, mut first_error, mut last) =
            (0, 0, 0, None, measure_from);
        for client in clients {
            nanos.extend(client.nanos);
            total_ok += client.total_ok;
            denied += client.measured_denied;
            errors += client.errors;
            first_error = first_error.or(client.first_error);
            last = last.max(client.finished.unwrap_or(measure_from));
        }
        let other_cores = cpu_before.and_then(|before| before.other_cores_until_now());
        Load {
            other_cores,
            measured_ok: nanos.len() as u64,
            measured_denied: denied,
            latencies: Latencies::new(nanos),
            elapsed: last.saturating_duration_since(measure_from),
            total_ok,
            errors,
            first_error,
        }
    }
}

/// When a scenario's clients warm up and are measured.
#[derive(Debug, Clone, Copy)]
struct Window {
    warm_up: Duration,
    measure: Duration,
    measure_from: Instant,
}

impl Window {
    fn starting_now(warm_up: Duration, measure: Duration) -> Self {
        Window {
            warm_up,
            measure,
            measure_from: Instant::now() + warm_up,
        }
    }

    fn until(&self) -> Instant {
        self.measure_from + self.measure
    }
}

/// One client's share of a [`Load`].
#[derive(Default)]
struct ClientLoad {
    nanos: Vec<u64>,
    /// Answers during the warm-up, to size `nanos` once for the window.
    warm_up_answers: u64,
    measured_denied: u64,
    total_ok: u64,
    errors: u64,
    first_error: Option<String>,
    finished: Option<Instant>,
}

impl ClientLoad {
    fn record(
        &mut self,
        outcome: Result<Answer, String>,
        started: Instant,
        finished: Instant,
        window: Window,
    ) {
        match outcome {
            Ok(answer) => {
                self.total_ok += 1;
                if started < window.measure_from {
                    self.warm_up_answers += 1;
                    return;
                }
                if self.nanos.capacity() == 0 {
                    // Growing by doubling would copy (and fault in fresh
                    // pages) while the other clients are being measured.
                    let expected = self.warm_up_answers as f64 * window.measure.as_secs_f64()
                        / window.warm_up.as_secs_f64().max(1e-3);
                    self.nanos.reserve((expected * 1.25).min(1e8) as usize);
                }
                self.nanos.push(duration_nanos(finished - started));
                self.finished = Some(finished);
                if answer == Answer::Denied {
                    self.measured_denied += 1;
                }
            }
            Err(err) => {
                self.errors += 1;
                self.first_error.get_or_insert(err);
            }
        }
    }
}

/// A client whose pool keeps one idle connection per task.
pub(super) fn http_client(clients: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .tcp_nodelay(true)
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// One round of a scenario measured in interleaved rounds (rows take
/// turns, so drift of the machine over the run hits every row alike).
#[derive(Debug, Clone, Copy)]
pub(super) struct Slice {
    pub(super) warm_up: Duration,
    pub(super) measure: Duration,
}

impl Slice {
    /// Round `round` of `rounds` sharing `measure`: a full warm-up first,
    /// a short one after (the server is warm, only connections are new).
    pub(super) fn round(round: u32, measure: Duration, rounds: u32) -> Slice {
        Slice {
            warm_up: match round {
                0 => super::WARM_UP,
                _ => super::ROUND_WARM_UP,
            },
            measure: measure / rounds.max(1),
        }
    }
}

/// Runs every caller as its own tokio task, looping requests for
/// `warm_up` and then `measure`. `helpers` are processes (PIDs) serving the
/// requests, whose CPU time is not counted as other processes'.
pub(super) async fn drive_after<C: Caller>(
    callers: Vec<C>,
    warm_up: Duration,
    measure: Duration,
    helpers: &[u32],
) -> anyhow::Result<Load> {
    ensure!(!callers.is_empty(), "no clients");
    let cpu_before = CpuSample::with_helpers(helpers);
    let window = Window::starting_now(warm_up, measure);
    let mut tasks = JoinSet::new();
    for mut caller in callers {
        tasks.spawn(async move {
            let mut load = ClientLoad::default();
            for k in 0usize.. {
                let started = Instant::now();
                if started >= window.until() {
                    break;
                }
                let outcome = caller.call(k).await;
                load.record(outcome, started, Instant::now(), window);
            }
            load
        });
    }
    let mut clients = Vec::new();
    while let Some(task) = tasks.join_next().await {
        clients.push(task.context("a load task panicked")?);
    }
    Ok(Load::gather(clients, window.measure_from, cpu_before))
}

/// Runs `threads` OS threads, each looping `call(thread, k)` for the
/// warm-up and then `measure`. Blocks the calling thread throughout.
pub(super) fn drive_threads<F>(threads: usize, measure: Duration, call: F) -> anyhow::Result<Load>
where
    F: Fn(usize, usize) -> Result<Answer, String> + Sync,
{
    drive_threads_after(threads, WARM_UP, measure, call)
}

/// [`drive_threads`] with a warm-up of its own: suites of many short
/// in-process rows warm up for less than the HTTP suites' second.
pub(super) fn drive_threads_after<F>(
    threads: usize,
    warm_up: Duration,
    measure: Duration,
    call: F,
) -> anyhow::Result<Load>
where
    F: Fn(usize, usize) -> Result<Answer, String> + Sync,
{
    ensure!(threads > 0, "no clients");
    let cpu_before = CpuSample::now();
    let window = Window::starting_now(warm_up, measure);
    let call = &call;
    let clients = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                scope.spawn(move || {
                    crate::placement::float_this_thread();
                    let mut load = ClientLoad::default();
                    for k in 0usize.. {
                        let started = Instant::now();
                        if started >= window.until() {
                            break;
                        }
                        let outcome = call(thread, k);
                        load.record(outcome, started, Instant::now(), window);
                    }
                    load
                })
            })
            .collect();
        join_all(handles)
    })?;
    Ok(Load::gather(clients, window.measure_from, cpu_before))
}

/// Joins scoped threads in order; a panicked thread is an error.
pub(super) fn join_all<T>(
    handles: Vec<std::thread::ScopedJoinHandle<'_, T>>,
) -> anyhow::Result<Vec<T>> {
    handles
        .into_iter()
        .map(|handle| {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))
        })
        .collect()
}

/// Sorted latencies in nanoseconds.
pub(super) struct Latencies(Vec<u64>);

impl Latencies {
    pub(super) fn new(mut nanos: Vec<u64>) -> Self {
        nanos.sort_unstable();
        Latencies(nanos)
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// The `pct`th percentile (nearest rank), or zero when empty.
    pub(super) fn percentile(&self, pct: usize) -> Duration {
        let rank = (self.0.len() * pct).div_ceil(100).max(1);
        Duration::from_nanos(self.0.get(rank - 1).copied().unwrap_or(0))
    }
}

pub(super) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// CPU time of the whole machine and of this process (and any helper
/// process a scenario started, such as a redis-server), from `/proc`, to
/// tell how busy other processes kept the cores during a scenario.
pub(super) struct CpuSample {
    at: Instant,
    /// user + nice + system + steal ticks of all cores: time the cores were
    /// busy, or taken by the hypervisor for other guests.
    machine_ticks: u64,
    /// utime + stime ticks of this process and its helpers.
    own_ticks: u64,
    helpers: Vec<u32>,
}

/// `USER_HZ`: the unit of `/proc/stat` and `/proc/self/stat` on Linux.
const TICKS_PER_SEC: f64 = 100.0;

impl CpuSample {
    /// `None` where `/proc` is not available.
    pub(super) fn now() -> Option<Self> {
        CpuSample::with_helpers(&[])
    }

    /// Counts the processes `helpers` (by PID) as part of the benchmark.
    pub(super) fn with_helpers(helpers: &[u32]) -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let machine_ticks = stat
            .lines()
            .find_map(|line| line.strip_prefix("cpu "))?
            .split_whitespace()
            .enumerate()
            // user, nice, system, idle, iowait, irq, softirq, steal, ...
            .filter(|(i, _)| matches!(i, 0..=2 | 7))
            .map(|(_, field)| field.parse::<u64>().ok())
            .sum::<Option<u64>>()?;
        let own_ticks = std::iter::once("/proc/self/stat".to_owned())
            .chain(helpers.iter().map(|pid| format!("/proc/{pid}/stat")))
            .map(|path| process_ticks(&path))
            .sum::<Option<u64>>()?;
        Some(CpuSample {
            at: Instant::now(),
            machine_ticks,
            own_ticks,
            helpers: helpers.to_vec(),
        })
    }

    /// Average cores used by everything but this process since `self`.
    pub(super) fn other_cores_until_now(&self) -> Option<f64> {
        let now = CpuSample::with_helpers(&self.helpers)?;
        let machine = now.machine_ticks.saturating_sub(self.machine_ticks);
        let own = now.own_ticks.saturating_sub(self.own_ticks);
        let seconds = now.at.duration_since(self.at).as_secs_f64().max(1e-3);
        Some(machine.saturating_sub(own) as f64 / TICKS_PER_SEC / seconds)
    }
}

/// utime + stime ticks from a `/proc/<pid>/stat` file.
fn process_ticks(path: &str) -> Option<u64> {
    let own = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which may itself hold spaces:
    // utime and stime are the 12th and 13th.
    let (_, after_comm) = own.rsplit_once(')')?;
    after_comm
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|field| field.parse::<u64>().ok())
        .sum::<Option<u64>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let latencies = Latencies::new((1..=100).rev().collect());
        assert_eq!(latencies.percentile(50), Duration::from_nanos(50));
        assert_eq!(latencies.percentile(99), Duration::from_nanos(99));
        assert_eq!(Latencies::new(vec![]).percentile(99), Duration::ZERO);
    }
}
