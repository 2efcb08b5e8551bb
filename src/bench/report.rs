//! What every suite's report shares: number formatting, the machine and
//! command lines, the date, and appending to `bench/RESULTS.md`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `## <date> — roost <version><suffix>` and the machine and command lines.
pub(super) fn write_heading(out: &mut String, started: &str, suffix: &str) -> std::fmt::Result {
    writeln!(
        out,
        "## {started} — roost {}{suffix}",
        env!("CARGO_PKG_VERSION")
    )?;
    writeln!(out)?;
    writeln!(out, "- machine: {}", machine())?;
    writeln!(out, "- command: `{}`", command_line())?;
    writeln!(out, "- runtime: {}", runtime())
}

/// How the runtime's workers were placed (see `placement`).
fn runtime() -> String {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    match crate::placement::workers_pinned() {
        true => format!(
            "{workers} tokio workers, each pinned to a core of its own (as `roost serve` \
             pins them by default); floating while a Redis row is measured"
        ),
        false if workers < 2 => "1 tokio worker on the only CPU (nothing to pin)".to_owned(),
        false => format!("{workers} tokio workers, placed by the kernel (`--pin-workers false`)"),
    }
}

pub(super) fn ratio(value: f64, base: f64) -> String {
    if base > 0.0 {
        format!("{:.2}×", value / base)
    } else {
        dash()
    }
}

pub(super) fn cores(other: Option<f64>) -> String {
    other.map_or_else(dash, |cores| format!("{cores:.2}"))
}

pub(super) fn dash() -> String {
    "—".to_owned()
}

pub(super) fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(super) fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Whether a stored count equals the number of acknowledged increments
/// (warm-up included): a lost or doubled write shows as a mismatch.
pub(super) struct CountCheck {
    pub(super) stored: i64,
    pub(super) acknowledged: u64,
}

impl CountCheck {
    pub(super) fn matched(&self) -> bool {
        u64::try_from(self.stored).is_ok_and(|stored| stored == self.acknowledged)
    }

    /// `matches (N)`, or the mismatch in bold.
    pub(super) fn render(&self) -> String {
        match self.matched() {
            true => format!("matches ({})", thousands(self.acknowledged)),
            false => format!(
                "**MISMATCH**: {} stored, {} acknowledged",
                self.stored, self.acknowledged
            ),
        }
    }
}

/// `1234567` → `1,234,567`.
pub(super) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("roost {}", args.join(" "))
}

/// Cores, CPU model and total memory, from `/proc` where available.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = proc_field(&cpuinfo, "model name").unwrap_or("unknown CPU");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = proc_field(&meminfo, "MemTotal")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or_else(
            || "unknown memory".to_owned(),
            |kib| format!("{:.1} GiB RAM", kib as f64 / 1_048_576.0),
        );
    format!("{cores} cores (nproc), {model}, {memory}")
}

/// The value of the first `key: value` line of a `/proc` file.
fn proc_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name.trim() == key).then(|| value.trim())
    })
}

/// `YYYY-MM-DD HH:MM UTC`, without a date crate.
pub(super) fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        of_day / 3600,
        of_day % 3600 / 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

const RESULTS_HEADER: &str = "# Benchmark results\n\n\
Every number in this file comes from `bench/run` (`roost bench`; see `bench/README.md`), \
one dated section per run, newest last. Ratios compare rows of the same run: \
`rps × bare axum` is the row's requests/s divided by the bare axum handler's (1.00× = the HTTP \
ceiling; higher is better), `p99 × bare axum` is its p99 latency divided by bare axum's (lower is \
better), and `rps × naive sqlite` divides a durable roost row's requests/s by a handler that \
fsyncs once per request (above 1× is what group commit buys). `stored count` checks that the \
final counter equals the number of acknowledged increments (warm-up included). \
`other CPU` is the average number of cores busy outside the benchmark process during the \
scenario (other programs, kernel threads such as writeback, and time stolen by the \
hypervisor); a run that shares its cores \
says so, and its numbers are lower bounds.\n";

/// Appends `report` to `path`, starting the file with its header if new.
pub(super) fn append_report(path: &Path, report: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err.into()),
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if existing.trim().is_empty() {
        file.write_all(RESULTS_HEADER.as_bytes())?;
    }
    let separator = match existing.trim().is_empty() {
        true => "\n",
        false if existing.ends_with("\n\n") => "",
        false if existing.ends_with('\n') => "\n",
        false => "\n\n",
    };
    write!(file, "{separator}{report}")?;
    Ok(())
}

/// The "noisy run" warning naming the rows other processes slowed down
/// (nothing when `noisy` is empty).
pub(super) fn write_noisy(out: &mut String, noisy: &[String]) -> std::fmt::Result {
    if noisy.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "**Noisy run**: other processes kept cores busy during {}; those numbers are \
         lower than this machine can do.",
        noisy.join(", ")
    )?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
