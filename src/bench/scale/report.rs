//! The scale suite's report: creation, disk, cold opens, random access,
//! memory and WAL tables, and the four targets marked met or not.

use std::fmt::Write as _;
use std::time::Duration;

use super::access::{Access, Probe, Timed};
use super::create::{Creation, DiskUsage};
use super::memory::Resident;
use super::wal::{Sustained, JOURNAL_SIZE_LIMIT};
use super::{Plan, CALLERS, CREATE_CACHE, IDLE_TIMEOUT_MS, IN_FLIGHT, WRITE_EVERY};
use crate::bench::report::{cores, micros, thousands, write_heading};
use crate::bench::NOISY_CORES;

/// Opening a cold actor must take at most this at p99.
const COLD_OPEN_P99: Duration = Duration::from_micros(200);
/// Resident memory one open idle actor may keep.
const RSS_PER_ACTOR: f64 = 64.0 * 1024.0;
/// Allocated disk one tiny actor may take.
const DISK_PER_ACTOR: f64 = 16.0 * 1024.0;

/// Everything one run of the suite measured.
pub(super) struct Report {
    pub(super) started: String,
    pub(super) plan: Plan,
    pub(super) creation: Creation,
    pub(super) disk: DiskUsage,
    pub(super) probe: Result<Probe, String>,
    pub(super) resident: Result<Resident, String>,
    pub(super) access: Result<Access, String>,
    pub(super) wal: Result<Sustained, String>,
}

fn kib(bytes: f64) -> String {
    format!("{:.1}", bytes / 1024.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1_048_576.0)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "**met**"
    } else {
        "**not met**"
    }
}

impl Report {
    /// The first phase that failed, if any.
    pub(super) fn first_failure(&self) -> Option<String> {
        [
            ("cold-open probe", self.probe.as_ref().err()),
            ("idle memory", self.resident.as_ref().err()),
            ("random access", self.access.as_ref().err()),
            ("sustained writes", self.wal.as_ref().err()),
        ]
        .into_iter()
        .find_map(|(phase, err)| err.map(|err| format!("{phase} failed: {err}")))
    }

    pub(super) fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) -> std::fmt::Result {
        let plan = &self.plan;
        write_heading(out, &self.started, ": scale")?;
        writeln!(
            out,
            "- settings: {} durable actors created by one counter increment each, {IN_FLIGHT} \
             in flight, at most {CREATE_CACHE} open; random access by {CALLERS} threads for {} s (one op in {WRITE_EVERY} a \
             write) with at most {} actors open; {} cold opens by one caller; {} idle open \
             actors; idle timeout {} s; in process, no HTTP",
            thousands(plan.actors as u64),
            plan.window.as_secs(),
            thousands(plan.cache as u64),
            thousands(plan.probe as u64),
            thousands(plan.idle as u64),
            IDLE_TIMEOUT_MS / 1000,
        )?;
        writeln!(out)?;
        self.write_creation(out)?;
        self.write_access(out)?;
        self.write_resident(out)?;
        self.write_wal(out)?;
        self.write_targets(out)
    }

    fn write_creation(&self, out: &mut String) -> std::fmt::Result {
        let (c, d, n) = (&self.creation, &self.disk, self.plan.actors as f64);
        let rate = n / c.elapsed.as_secs_f64().max(1e-9);
        writeln!(out, "| creation | actors/s | total s | per 10,000 actors s | create p50 ms | create p99 ms | shutdown s | other CPU (cores) |")?;
        writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
        writeln!(
            out,
            "| {} durable actors | {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.1} | {} |",
            thousands(self.plan.actors as u64),
            thousands(rate.round() as u64),
            c.elapsed.as_secs_f64(),
            10_000.0 / rate,
            micros(c.latencies.percentile(50)) / 1e3,
            micros(c.latencies.percentile(99)) / 1e3,
            c.shutdown.as_secs_f64(),
            cores(c.other_cores),
        )?;
        writeln!(out)?;
        writeln!(
            out,
            "| disk after a clean shutdown | count | allocated MiB | apparent MiB | allocated per actor KiB | apparent per actor KiB |"
        )?;
        writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
        for (name, bytes) in [
            ("actor files (`.db`, and any `-wal`)", d.actor_files),
            ("directories", d.dirs),
            ("catalog and the rest", d.other),
            ("**total**", d.total()),
        ] {
            writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {} |",
                thousands(bytes.count),
                mib(bytes.allocated),
                mib(bytes.apparent),
                kib(bytes.allocated as f64 / n),
                kib(bytes.apparent as f64 / n),
            )?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "{} actor `-wal` files left after the clean shutdown, {} bytes in all (the `roost` \
             VFS keeps an actor's WAL between opens; a clean close empties it).",
            d.wal_files, d.wal_bytes
        )?;
        writeln!(out)
    }

    fn write_access(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "| ops | count | share | p50 µs | p99 µs | ops/s | other CPU (cores) |"
        )?;
        writeln!(out, "|---|---:|---:|---:|---:|---:|---:|")?;
        match &self.probe {
            Ok(probe) => {
                for (name, latencies) in [
                    ("cold open + read, 1 caller", &probe.cold),
                    ("warm read of the same, 1 caller", &probe.warm),
                    (
                        "baseline: open + read 4 KiB of another actor's file, no SQLite",
                        &probe.raw,
                    ),
                ] {
                    writeln!(
                        out,
                        "| {name} | {} | — | {:.1} | {:.1} | — | — |",
                        thousands(latencies.len() as u64),
                        micros(latencies.percentile(50)),
                        micros(latencies.percentile(99)),
                    )?;
                }
                let ratio = |pct| {
                    micros(probe.cold.percentile(pct)) / micros(probe.raw.percentile(pct)).max(1e-9)
                };
                writeln!(
                    out,
                    "| cold open ÷ baseline | | — | {:.2}× | {:.2}× | — | — |",
                    ratio(50),
                    ratio(99),
                )?;
            }
            Err(err) => writeln!(out, "| cold opens, 1 caller | failed: {err} | | | | | |")?,
        }
        match &self.access {
            Ok(access) => {
                let total = access.ops().max(1) as f64;
                let secs = access.elapsed.as_secs_f64().max(1e-9);
                writeln!(
                    out,
                    "| random access, {CALLERS} callers | {} | 100% | | | {} | {} |",
                    thousands(access.ops() as u64),
                    thousands((total / secs).round() as u64),
                    cores(access.other_cores),
                )?;
                for (name, timed) in [
                    ("… cold read (actor not open)", &access.cold_reads),
                    ("… cold write", &access.cold_writes),
                    ("… warm read (cache hit)", &access.warm_reads),
                    ("… warm write", &access.warm_writes),
                ] {
                    write_timed(out, name, timed, total)?;
                }
                writeln!(out)?;
                writeln!(
                    out,
                    "Cache hit rate {:.1}% with {} of {} actors open at most; {} open at the end \
                     (the bench's LRU model, which tells hits from cold opens, expected {}).",
                    access.hit_rate() * 100.0,
                    thousands(self.plan.cache as u64),
                    thousands(self.plan.actors as u64),
                    thousands(access.open_at_end as u64),
                    thousands(access.expected_open as u64),
                )?;
                if access.errors > 0 {
                    writeln!(out)?;
                    writeln!(
                        out,
                        "**{} ops failed**; first: {}",
                        access.errors,
                        access.first_error.as_deref().unwrap_or("unknown")
                    )?;
                }
                if access.other_cores.is_some_and(|c| c >= NOISY_CORES) {
                    writeln!(out)?;
                    writeln!(out, "**Noisy run**: other processes kept {} cores busy during random access; its numbers are lower bounds.", cores(access.other_cores))?;
                }
            }
            Err(err) => writeln!(out, "| random access | failed: {err} | | | | | |")?,
        }
        writeln!(out)
    }

    fn write_resident(&self, out: &mut String) -> std::fmt::Result {
        let r = match &self.resident {
            Ok(r) => r,
            Err(err) => return writeln!(out, "Idle open actors: failed: {err}\n"),
        };
        writeln!(out, "| idle open actors | VmRSS before | with half open | with all open | per actor, first half | per actor, second half | of it the system heap (SQLite's and actor threads') | fds per actor | threads before / with all open |")?;
        writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        writeln!(
            out,
            "| {} | {} MiB | {} MiB | {} MiB | {} KiB | {} KiB | {} KiB | {:.2} | {} / {} |",
            thousands(r.actors as u64),
            mib(r.rss[0]),
            mib(r.rss[1]),
            mib(r.rss[2]),
            kib(r.first_half()),
            kib(r.second_half()),
            kib(r.system_heap_per_actor()),
            r.fds_per_actor(),
            r.threads[0],
            r.threads[2],
        )?;
        writeln!(out)
    }

    fn write_wal(&self, out: &mut String) -> std::fmt::Result {
        let s = match &self.wal {
            Ok(s) => s,
            Err(err) => return writeln!(out, "Sustained writes: failed: {err}\n"),
        };
        writeln!(
            out,
            "| sustained writes, {} s | writes/s | max WAL | last WAL | samples without a WAL |",
            s.window.as_secs()
        )?;
        writeln!(out, "|---|---:|---:|---:|---:|")?;
        for (i, trace) in s.actors.iter().enumerate() {
            writeln!(
                out,
                "| actor {i}, {} | {} | {} KiB | {} KiB | {} of {} |",
                trace.durability.as_str(),
                thousands((trace.writes as f64 / s.window.as_secs_f64()).round() as u64),
                kib(trace.max_bytes as f64),
                kib(trace.last_bytes as f64),
                trace.missing,
                trace.samples,
            )?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "{} `-wal` files left after a clean shutdown, {} bytes in all (kept between opens, \
             emptied by a clean close).",
            s.left_after_shutdown, s.left_bytes
        )?;
        writeln!(out)
    }

    fn write_targets(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "Targets (issue #8):")?;
        writeln!(out)?;
        match &self.probe {
            Ok(probe) => {
                let p99 = probe.cold.percentile(99);
                let under_load = match &self.access {
                    Ok(a) => format!(
                        "; under random access by {CALLERS} callers, cold reads p99 {:.1} µs",
                        micros(a.cold_reads.latencies.percentile(99))
                    ),
                    Err(_) => String::new(),
                };
                writeln!(
                    out,
                    "- cold actor open p99 ≤ 200 µs (one caller, open + read): p99 {:.1} µs \
                     (the file system alone, opening and reading another actor's file: p99 \
                     {:.1} µs){under_load} — {}",
                    micros(p99),
                    micros(probe.raw.percentile(99)),
                    verdict(p99 <= COLD_OPEN_P99),
                )?;
            }
            Err(_) => writeln!(
                out,
                "- cold actor open p99 ≤ 200 µs: not measured — **not met**"
            )?,
        }
        match &self.resident {
            Ok(r) => writeln!(
                out,
                "- RSS per open idle actor ≤ 64 KiB (the larger half): {} KiB — {}",
                kib(r.per_actor()),
                verdict(r.per_actor() <= RSS_PER_ACTOR),
            )?,
            Err(_) => writeln!(
                out,
                "- RSS per open idle actor ≤ 64 KiB: not measured — **not met**"
            )?,
        }
        let per_actor = self.disk.total().allocated as f64 / self.plan.actors as f64;
        writeln!(
            out,
            "- ≤ 16 KiB disk per tiny actor (allocated, catalog and directories included): {} KiB — {}",
            kib(per_actor),
            verdict(per_actor <= DISK_PER_ACTOR),
        )?;
        match &self.wal {
            Ok(s) => {
                let max = s.actors.iter().map(|t| t.max_bytes).max().unwrap_or(0);
                writeln!(
                    out,
                    "- WAL files bounded under sustained load (every sampled WAL ≤ journal_size_limit, {} MiB): max {} KiB — {}",
                    JOURNAL_SIZE_LIMIT >> 20,
                    kib(max as f64),
                    verdict(max <= JOURNAL_SIZE_LIMIT),
                )?;
            }
            Err(_) => writeln!(out, "- WAL files bounded: not measured — **not met**")?,
        }
        Ok(())
    }
}

fn write_timed(out: &mut String, name: &str, timed: &Timed, total: f64) -> std::fmt::Result {
    writeln!(
        out,
        "| {name} | {} | {:.1}% | {:.1} | {:.1} | | |",
        thousands(timed.count as u64),
        timed.count as f64 / total * 100.0,
        micros(timed.latencies.percentile(50)),
        micros(timed.latencies.percentile(99)),
    )
}
