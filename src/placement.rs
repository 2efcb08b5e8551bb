//! Which cores the runtime's threads run on.
//!
//! On the two-vCPU benchmark VM (the size of a Fly `shared-cpu-2x`
//! machine) the kernel was seen keeping both tokio workers on one core,
//! taking turns in 4 ms slices, for seconds at a time, while the other
//! core sat idle 43% of the time between the journal thread's short
//! waits (its idle spells were too short for the kernel to pull a worker
//! over). Every durable request then waited out whole slices (see
//! bench/README, "Workers pinned to cores"). So [`runtime`] starts one
//! worker per allowed CPU and, when asked, pins worker *i* to the *i*-th
//! of them: the kernel can no longer stack them.
//!
//! Every other thread floats over all the CPUs the process was allowed
//! at start: the journal, actor and flush threads, tokio's blocking pool,
//! child processes. A new thread inherits its creator's CPU mask, and
//! many are started by a pinned worker, so each one resets its own mask
//! when it starts ([`SpawnFloating`], [`float_this_thread`]).

use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// Longest [`runtime`] waits for its workers to start.
const WORKERS_START_WITHIN: Duration = Duration::from_secs(5);

/// What [`runtime`] found when it started.
struct Placement {
    /// The process's CPU mask at start: every thread but a pinned worker keeps it.
    floating: libc::cpu_set_t,
    /// The CPUs in that mask, in order.
    cpus: Vec<usize>,
    /// Workers the runtime starts.
    expected: usize,
    /// Their thread ids, in the order they started.
    workers: Mutex<Vec<libc::pid_t>>,
    started: Condvar,
}

static PLACEMENT: OnceLock<Placement> = OnceLock::new();

/// Whether the workers have ever been pinned: until then every thread
/// inherits the floating mask and has nothing to reset.
static EVER_PINNED: AtomicBool = AtomicBool::new(false);

/// The workers did not all start in time: no thread is recorded as one
/// any more (a late one could be a blocking thread), and none is pinned.
static GAVE_UP: AtomicBool = AtomicBool::new(false);

/// Builds the process's multi-thread runtime, one worker per allowed CPU,
/// and pins the workers if `pin` (see [`pin_workers`]).
pub fn runtime(pin: bool) -> std::io::Result<tokio::runtime::Runtime> {
    let floating = current_mask(0)?;
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `floating` is an initialized set and the index is in range.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &floating) })
        .collect();
    let expected = std::thread::available_parallelism().map_or(1, |n| n.get());
    let placement = PLACEMENT.get_or_init(|| Placement {
        floating,
        cpus,
        expected,
        workers: Mutex::new(Vec::new()),
        started: Condvar::new(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(expected)
        .enable_all()
        .on_thread_start(register_thread)
        .build()?;
    // No task can start a blocking thread before `build` returns, so the
    // first threads to register are the workers. Wait for all of them, so
    // that a later thread is never taken for one.
    let mut workers = placement.workers.lock();
    while workers.len() < placement.expected {
        if placement
            .started
            .wait_for(&mut workers, WORKERS_START_WITHIN)
            .timed_out()
        {
            GAVE_UP.store(true, Ordering::Release);
            // Before any log subscriber exists: straight to stderr.
            eprintln!("roost: not every runtime worker started in time; workers stay unpinned");
            return Ok(runtime);
        }
    }
    drop(workers);
    // Pinning only saves time: a system that refuses it still serves.
    if pin {
        if let Err(err) = pin_workers(true) {
            eprintln!("roost: could not pin the runtime's workers ({err}); they stay unpinned");
        }
    }
    Ok(runtime)
}

/// Runs first on every thread the runtime starts: records a worker, or
/// lets a blocking-pool thread float.
fn register_thread() {
    let Some(placement) = PLACEMENT.get() else {
        return;
    };
    let mut workers = placement.workers.lock();
    if workers.len() < placement.expected && !GAVE_UP.load(Ordering::Acquire) {
        workers.push(thread_id());
        placement.started.notify_all();
    } else {
        drop(workers);
        float_this_thread();
    }
}

/// Pins worker *i* to the *i*-th allowed CPU (`on`), or lets every worker
/// float again. Does nothing outside [`runtime`], where there are more
/// workers than CPUs (two would share one core anyway), or on one CPU
/// (pinned and floating are the same mask there).
pub fn pin_workers(on: bool) -> std::io::Result<()> {
    let Some(placement) = PLACEMENT.get() else {
        return Ok(());
    };
    let workers = placement.workers.lock();
    let all_started = workers.len() == placement.expected && !GAVE_UP.load(Ordering::Acquire);
    if !all_started || !can_pin(placement.cpus.len(), workers.len()) {
        return Ok(());
    }
    if on {
        EVER_PINNED.store(true, Ordering::Release);
    }
    for (worker, cpu) in workers.iter().zip(&placement.cpus) {
        let mask = match on {
            true => single_cpu(*cpu),
            false => placement.floating,
        };
        set_mask(*worker, &mask)?;
    }
    Ok(())
}

/// While it lives, the workers float; then they are pinned again if they
/// were. The benchmark measures other processes' servers (Redis) this
/// way: pinned clients would keep the server from either core.
pub struct Unpinned {
    repin: bool,
}

impl Unpinned {
    pub fn new() -> Unpinned {
        let repin = workers_pinned();
        if repin && pin_workers(false).is_err() {
            tracing::warn!("could not unpin the runtime's workers");
        }
        Unpinned { repin }
    }
}

impl Default for Unpinned {
    fn default() -> Self {
        Unpinned::new()
    }
}

impl Drop for Unpinned {
    fn drop(&mut self) {
        if self.repin && pin_workers(true).is_err() {
            tracing::warn!("could not pin the runtime's workers again");
        }
    }
}

/// Whether the runtime's workers are pinned now, each to a core of its own
/// (never on one CPU, where that is the floating mask).
pub fn workers_pinned() -> bool {
    let Some(placement) = PLACEMENT.get() else {
        return false;
    };
    let workers = placement.workers.lock();
    can_pin(placement.cpus.len(), workers.len())
        && workers.iter().zip(&placement.cpus).all(|(worker, cpu)| {
            current_mask(*worker).is_ok_and(|mask| same(&mask, &single_cpu(*cpu)))
        })
}

/// Lets the calling thread run on every CPU the process was allowed at
/// start, whatever its creator's mask. A no-op until workers were pinned.
pub fn float_this_thread() {
    if !EVER_PINNED.load(Ordering::Acquire) {
        return;
    }
    if let Some(placement) = PLACEMENT.get() {
        // Failing leaves the thread on its creator's core: slower, not wrong.
        let _ = set_mask(0, &placement.floating);
    }
}

/// [`std::thread::Builder::spawn`] for a thread that floats (see
/// [`float_this_thread`]), whichever thread starts it.
pub trait SpawnFloating {
    fn spawn_floating<F, T>(self, f: F) -> std::io::Result<std::thread::JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static;
}

impl SpawnFloating for std::thread::Builder {
    fn spawn_floating<F, T>(self, f: F) -> std::io::Result<std::thread::JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.spawn(move || {
            float_this_thread();
            f()
        })
    }
}

/// Makes `command`'s process float, whichever thread starts it.
pub fn float_child(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let Some(placement) = PLACEMENT.get() else {
        return;
    };
    let mask = placement.floating;
    // SAFETY: between fork and exec the hook makes one raw system call,
    // which is async-signal-safe, and touches no lock or allocation.
    unsafe {
        command.pre_exec(move || {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mask);
            Ok(())
        });
    }
}

/// Whether `workers` can each have a core of their own among `cpus`, in a
/// way that differs from floating: on one CPU both masks are that CPU.
fn can_pin(cpus: usize, workers: usize) -> bool {
    workers > 0 && cpus >= workers && cpus > 1
}

fn single_cpu(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut mask: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` came from iterating 0..CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut mask) };
    mask
}

fn same(a: &libc::cpu_set_t, b: &libc::cpu_set_t) -> bool {
    // SAFETY: initialized sets, indices in range.
    (0..libc::CPU_SETSIZE as usize)
        .all(|cpu| unsafe { libc::CPU_ISSET(cpu, a) == libc::CPU_ISSET(cpu, b) })
}

/// The CPU mask of thread `tid` (0: the calling thread).
fn current_mask(tid: libc::pid_t) -> std::io::Result<libc::cpu_set_t> {
    // SAFETY: an all-zero cpu_set_t is valid; the kernel fills it.
    let mut mask: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer and size describe `mask`.
    let rc =
        unsafe { libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut mask) };
    match rc {
        0 => Ok(mask),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Sets the CPU mask of thread `tid` (0: the calling thread).
fn set_mask(tid: libc::pid_t, mask: &libc::cpu_set_t) -> std::io::Result<()> {
    // SAFETY: the pointer and size describe `mask`.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), mask) };
    match rc {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

fn thread_id() -> libc::pid_t {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_pinned_only_with_a_core_each_and_more_than_one_core() {
        assert!(can_pin(2, 2));
        assert!(can_pin(4, 2));
        assert!(!can_pin(1, 1), "one CPU: pinned is the same as floating");
        assert!(!can_pin(2, 3), "two workers would share a core");
        assert!(!can_pin(2, 0));
    }

    /// The CPUs the calling thread may run on.
    fn my_cpus() -> Vec<usize> {
        let mask = current_mask(0).unwrap();
        // SAFETY: an initialized set, indices in range.
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &mask) })
            .collect()
    }

    /// The only test in this binary that builds the placed runtime (its
    /// state is process-wide).
    #[test]
    fn workers_pin_one_per_core_unpin_for_a_while_and_threads_they_start_float() {
        let all = my_cpus();
        let runtime = runtime(true).unwrap();
        let on_worker =
            |f: fn() -> Vec<usize>| runtime.block_on(runtime.spawn(async move { f() })).unwrap();
        if all.len() < 2 {
            // One core: pinned and floating are the same mask, so nothing
            // is pinned and the report says the workers float.
            assert!(!workers_pinned());
            assert_eq!(on_worker(my_cpus), all);
            return;
        }
        assert!(workers_pinned());
        let seen = on_worker(my_cpus);
        assert_eq!(seen.len(), 1, "a task runs on a pinned worker");
        // The runtime's first blocking thread, started by a pinned worker.
        let blocking = runtime
            .block_on(runtime.spawn(async { tokio::task::spawn_blocking(my_cpus).await }))
            .unwrap()
            .unwrap();
        assert_eq!(blocking, all, "the blocking pool floats");
        // A plain thread started by a pinned worker inherits its core: why
        // engine threads are started with `spawn_floating`.
        let inherited = on_worker(|| std::thread::spawn(my_cpus).join().unwrap());
        assert_eq!(inherited.len(), 1);
        let floated = on_worker(|| {
            std::thread::Builder::new()
                .spawn_floating(my_cpus)
                .unwrap()
                .join()
                .unwrap()
        });
        assert_eq!(floated, all);
        {
            let _floating = Unpinned::new();
            assert!(!workers_pinned());
            assert_eq!(on_worker(my_cpus), all);
        }
        assert!(workers_pinned(), "pinned again once the guard is gone");
    }
}
