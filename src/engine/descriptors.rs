//! Growing the process's descriptor table once, at start-up, to the size
//! its open actors will need.
//!
//! Linux grows a process's table of file descriptors by doubling it when a
//! new descriptor does not fit, and in a multi-threaded process each
//! doubling waits for an RCU grace period: 5–20 ms on a 2-core VM. Every
//! open actor holds two descriptors (its database and its WAL), so a host
//! filling a cache of thousands of actors paid that wait on the cold open
//! that crossed 256, 512, 1,024, 2,048… descriptors. The table never
//! shrinks, so taking one high descriptor at start-up, and closing it at
//! once, pays all of those waits before the first request.

/// Descriptors one open actor holds: its database and its WAL.
const PER_ACTOR: usize = 2;
/// Descriptors for everything else: connections, the journal, the catalog.
const SPARE: usize = 1_024;

/// Grows the table to hold the descriptors of `max_open_actors` open actors
/// (at most the soft limit on open files). Best effort: if the descriptor
/// cannot be taken, the table grows as descriptors are opened, as before.
pub(super) fn reserve(max_open_actors: usize, any_open: &impl std::os::fd::AsRawFd) {
    let limit = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft);
    let wanted = max_open_actors
        .saturating_mul(PER_ACTOR)
        .saturating_add(SPARE);
    let highest = wanted
        .min(usize::try_from(limit).unwrap_or(usize::MAX))
        .saturating_sub(1);
    let Ok(highest) = libc::c_int::try_from(highest) else {
        return;
    };
    // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor we hold onto the
    // lowest free number at or above `highest`; the copy is closed at once
    // and refers to the same open file, which stays open through the
    // original.
    unsafe {
        let copy = libc::fcntl(any_open.as_raw_fd(), libc::F_DUPFD_CLOEXEC, highest);
        if copy >= 0 {
            libc::close(copy);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's size, as the kernel reports it.
    fn table_size() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("FDSize:")).unwrap();
        line["FDSize:".len()..].trim().parse().unwrap()
    }

    #[test]
    fn the_table_holds_every_open_actor_after_reserving() {
        let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
        let actors = 3_000.min((limit as usize).saturating_sub(SPARE) / PER_ACTOR);
        let file = tempfile::tempfile().unwrap();
        reserve(actors, &file);
        assert!(
            table_size() >= actors * PER_ACTOR + SPARE,
            "table {} for {actors} actors",
            table_size()
        );
        // Only the table grew: the descriptor taken for it, the highest
        // one, is closed again.
        let highest = actors * PER_ACTOR + SPARE - 1;
        let next = std::fs::File::open("/dev/null").unwrap();
        assert!((std::os::fd::AsRawFd::as_raw_fd(&next) as usize) < highest);
    }
}
