//! The engine's shared write-ahead journal: one append-only log for the
//! durable counter increments of every actor.
//!
//! A durable increment used to be its own SQLite transaction and fsync on
//! its actor's file, so increments spread over many actors shared nothing
//! (each paid a transaction and waited for its own sync). Now the actor
//! applies the increment to its in-memory counter cache, appends one
//! record here, and answers once the journal's thread has written and
//! `fdatasync`ed the batch holding it: one sync for every actor's writes
//! that arrived meanwhile (group commit across actors). Actors write their
//! cached counters to their own files later, with the journal position
//! they reached (`_roost_meta.journal_lsn`), in the same transaction.
//!
//! After a crash, [`recover`] reads every segment and the engine re-applies
//! each record whose LSN is past its actor's stored position. A `Forget`
//! record (written before an actor's file is deleted or replaced) drops
//! the records before it, so a new actor under the same ID never inherits
//! them.
//!
//! Segments are files `journal/<first LSN>.log`; the newest is appended
//! to. Once it outgrows [`SEGMENT_BYTES`] a new one starts, and older ones
//! go when no actor still holds an unwritten record in them ([`Journal::hold`]).
//! LSNs only grow, across restarts too: the newest segment's name (always
//! kept) says where numbering continues.
//!
//! Segments are zero-filled ahead and written `O_DSYNC` (with direct I/O
//! where the file system takes it, see `direct`): a write is then durable
//! when it returns, without a separate sync or a metadata update. A run
//! starts with a 1 MiB one made at start-up; a busy journal moves on to
//! 32 MiB ones, made by a helper thread while the current one fills. Where
//! a segment cannot be zero-filled, it grows with each write and is
//! `fdatasync`ed after it.
//!
//! Record layout (little-endian): `len u32 | crc32 u32 | body`, body =
//! `lsn u64 | kind u8 | actor_len u32 | actor | [name_len u32 | name | by i64]`.
//! A torn or corrupt record ends its segment (a crash mid-append).

mod direct;

use crate::error::EngineError;
use crate::placement::SpawnFloating;
use crate::telemetry;
use direct::DirectAppender;
use parking_lot::{Condvar, Mutex};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A segment this big is closed and a new one started.
const SEGMENT_BYTES: u64 = 32 << 20;

/// A growing segment this big starts preparing a preallocated successor.
const PREPARE_AFTER: u64 = 1 << 20;

/// The first segment of a run, zero-filled at start-up where direct I/O
/// works: small, so an engine that writes little pays 1 MiB of disk, and
/// still one disk write per sync from the first increment on.
const FIRST_SEGMENT_BYTES: u64 = 1 << 20;

const KIND_COUNTER_ADD: u8 = 1;
const KIND_FORGET: u8 = 2;

/// When segments are preallocated and rotated, and how they are written
/// (fixed, but chosen in tests).
#[derive(Clone, Copy)]
struct Sizes {
    /// A segment this big is closed and a new one started.
    segment: u64,
    /// A growing segment this big starts preparing a preallocated successor.
    prepare_after: u64,
    /// Preallocated segments use direct I/O where the file system has it.
    direct: bool,
}

const SIZES: Sizes = Sizes {
    segment: SEGMENT_BYTES,
    prepare_after: PREPARE_AFTER,
    direct: true,
};

/// What one record says.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// `by` was added to the actor's counter `name`.
    CounterAdd {
        actor: String,
        name: String,
        by: i64,
    },
    /// The actor's file was deleted or replaced: earlier records are void.
    Forget { actor: String },
}

impl Entry {
    fn actor(&self) -> &str {
        match self {
            Entry::CounterAdd { actor, .. } | Entry::Forget { actor } => actor,
        }
    }
}

/// A record read back by [`recover`].
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub lsn: u64,
    pub entry: Entry,
}

/// Told whether the records up to an LSN are on disk.
pub type Waiter = Box<dyn FnOnce(Result<(), EngineError>) + Send>;

/// The journal; appends from any thread, one thread writes and syncs.
pub struct Journal {
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct Shared {
    dir: PathBuf,
    sizes: Sizes,
    state: Mutex<State>,
    /// Wakes the writer (records to write, or stop).
    work: Condvar,
    /// Every record up to this LSN is on disk.
    synced: AtomicU64,
    /// First unwritten LSN of each actor still holding records (a count
    /// per LSN): segments past the smallest must stay.
    holds: Mutex<BTreeMap<u64, usize>>,
    /// Held by a test to stop the writer before its next write.
    #[cfg(test)]
    paused: Mutex<()>,
    /// Set by a test: the next batch fails as a failed write would.
    #[cfg(test)]
    fail_next_write: std::sync::atomic::AtomicBool,
}

struct State {
    /// Encoded records not yet handed to the writer.
    buf: Vec<u8>,
    next_lsn: u64,
    waiters: Vec<(u64, Waiter)>,
    /// A failed sync: the file's state is unknown, so nothing more is
    /// promised until the engine restarts.
    failed: Option<String>,
    stopping: bool,
}

/// Everything found on disk at start-up.
pub struct Recovered {
    /// Records still in force, in LSN order (`Forget`s already applied).
    pub records: Vec<Record>,
    /// The LSN the next record gets.
    pub next_lsn: u64,
}

/// Reads every segment under `dir` (made if missing).
pub fn recover(dir: &Path) -> Result<Recovered, EngineError> {
    std::fs::create_dir_all(dir)?;
    let segments = segments(dir)?;
    let mut next_lsn = segments.last().map_or(1, |(base, _)| *base).max(1);
    let mut records: Vec<Record> = Vec::new();
    for (_, path) in &segments {
        let bytes = std::fs::read(path)?;
        let (found, complete) = decode_all(&bytes);
        if !complete {
            tracing::warn!(segment = %path.display(), "journal segment ends in a torn record (a crash mid-append); the records before it are kept");
        }
        for record in found {
            next_lsn = next_lsn.max(record.lsn + 1);
            if let Entry::Forget { actor } = &record.entry {
                records.retain(|r| r.entry.actor() != actor);
            } else {
                records.push(record);
            }
        }
    }
    records.sort_by_key(|r| r.lsn);
    Ok(Recovered { records, next_lsn })
}

impl Journal {
    /// Starts a fresh segment at `next_lsn` and drops the old ones (the
    /// caller has applied what [`recover`] returned), except those needed
    /// by `holds` (the first LSN of each actor whose records could not be
    /// applied: held as by [`Journal::hold`]), then starts the writer.
    pub fn start(dir: &Path, next_lsn: u64, holds: &[u64]) -> Result<Journal, EngineError> {
        Self::start_sized(dir, next_lsn, holds, SIZES)
    }

    fn start_sized(
        dir: &Path,
        next_lsn: u64,
        holds: &[u64],
        sizes: Sizes,
    ) -> Result<Journal, EngineError> {
        std::fs::create_dir_all(dir)?;
        // Half made when the last run stopped.
        let _ = std::fs::remove_file(dir.join(PREPARED));
        let file = first_segment(dir, next_lsn, sizes)?;
        let keep_from = holds.iter().copied().fold(next_lsn, u64::min);
        remove_segments_before(dir, keep_from)?;
        let mut held = BTreeMap::new();
        for lsn in holds {
            *held.entry(*lsn).or_default() += 1;
        }
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            sizes,
            state: Mutex::new(State {
                buf: Vec::with_capacity(64 << 10),
                next_lsn,
                waiters: Vec::new(),
                failed: None,
                stopping: false,
            }),
            work: Condvar::new(),
            synced: AtomicU64::new(next_lsn - 1),
            holds: Mutex::new(held),
            #[cfg(test)]
            paused: Mutex::new(()),
            #[cfg(test)]
            fail_next_write: Default::default(),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("roost-journal".into())
                .spawn_floating(move || shared.write_loop(file, next_lsn))?
        };
        Ok(Journal {
            shared,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Appends `entry`; returns its LSN. It is on disk once [`Journal::wait`]
    /// says so.
    pub fn append(&self, entry: &Entry) -> Result<u64, EngineError> {
        self.append_with(|buf, lsn| encode(buf, lsn, entry))
    }

    /// [`Journal::append`] of a counter increment, from borrowed parts (the
    /// hot path: no copies of the ID and name).
    pub fn append_counter_add(&self, actor: &str, name: &str, by: i64) -> Result<u64, EngineError> {
        self.append_with(|buf, lsn| encode_counter_add(buf, lsn, actor, name, by))
    }

    fn append_with(&self, encode: impl FnOnce(&mut Vec<u8>, u64)) -> Result<u64, EngineError> {
        let mut state = self.shared.state.lock();
        if let Some(failed) = &state.failed {
            return Err(EngineError::Io(failed.clone()));
        }
        if state.stopping {
            return Err(EngineError::Closed);
        }
        let lsn = state.next_lsn;
        state.next_lsn += 1;
        let was_empty = state.buf.is_empty();
        encode(&mut state.buf, lsn);
        drop(state);
        if was_empty {
            self.shared.work.notify_one();
        }
        Ok(lsn)
    }

    /// The highest LSN on disk.
    pub fn synced(&self) -> u64 {
        self.shared.synced()
    }

    /// Calls `waiter` once every record up to `lsn` is on disk (at once if
    /// it is), or with the error that kept it off.
    pub fn wait(&self, lsn: u64, waiter: Waiter) {
        self.shared.wait(lsn, waiter)
    }

    /// What an actor's journaled counter cache keeps of the journal.
    pub fn sync_gate(&self) -> SyncGate {
        SyncGate(self.shared.clone())
    }

    /// Appends `entry` and waits on this thread until it is on disk.
    pub fn append_and_sync(&self, entry: &Entry) -> Result<(), EngineError> {
        let lsn = self.append(entry)?;
        self.shared.wait_here(lsn)
    }

    #[cfg(test)]
    fn append_and_sync_lsn(&self, entry: &Entry) -> u64 {
        let lsn = self.append(entry).unwrap();
        self.append_and_sync(&Entry::Forget {
            actor: String::new(),
        })
        .unwrap();
        lsn
    }

    /// The records of `actor` still in force (past its last `Forget`), as
    /// on disk once everything appended so far is synced: for an actor
    /// reopened while its file lacks some of them.
    pub fn read_back(&self, actor: &str) -> Result<Vec<Record>, EngineError> {
        let appended = self.shared.state.lock().next_lsn - 1;
        self.shared.wait_here(appended)?;
        let mut records = Vec::new();
        for (_, path) in segments(&self.shared.dir)? {
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                // Trimmed meanwhile: it held none of a held actor's records.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err.into()),
            };
            // The writer may be appending past `appended`: a torn tail
            // there is expected, and only records up to `appended` count.
            for record in decode_all(&bytes).0 {
                if record.lsn > appended || record.entry.actor() != actor {
                    continue;
                }
                match record.entry {
                    Entry::Forget { .. } => records.clear(),
                    Entry::CounterAdd { .. } => records.push(record),
                }
            }
        }
        // In LSN order already: segments come oldest first, records in order.
        Ok(records)
    }

    /// Why the journal takes no more records: a sync failed, and nothing
    /// more is promised until the engine restarts.
    pub fn failure(&self) -> Option<String> {
        self.shared.state.lock().failed.clone()
    }

    /// Fails the journal as a failed sync would.
    #[cfg(test)]
    pub fn fail(&self, why: &str) {
        self.shared.state.lock().failed = Some(why.into());
    }

    /// Records appended and not yet synced.
    #[cfg(test)]
    pub fn unsynced(&self) -> u64 {
        self.shared.state.lock().next_lsn - 1 - self.synced()
    }

    /// Fails the writer's next batch, written or not, as a failed write
    /// would (nothing of it reaches the file).
    #[cfg(test)]
    pub fn fail_next_write(&self) {
        self.shared.fail_next_write.store(true, Ordering::Release);
    }

    /// Stops the writer before its next write until the guard drops.
    #[cfg(test)]
    pub fn pause(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.shared.paused.lock()
    }

    /// An actor holds unwritten records from `lsn` on: keep them.
    pub fn hold(&self, lsn: u64) {
        *self.shared.holds.lock().entry(lsn).or_default() += 1;
    }

    /// The actor that held from `lsn` has written them to its file.
    pub fn release(&self, lsn: u64) {
        let mut holds = self.shared.holds.lock();
        if let Some(count) = holds.get_mut(&lsn) {
            *count -= 1;
            if *count == 0 {
                holds.remove(&lsn);
            }
        }
    }

    /// Writes what is pending, stops the writer and, if no actor holds
    /// records any more, drops every segment but a fresh empty one.
    pub fn close(&self) {
        self.shared.state.lock().stopping = true;
        self.shared.work.notify_one();
        if let Some(writer) = self.writer.lock().take() {
            let _ = writer.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

/// Waits until the journal has synced a position: held by an actor's
/// journaled counter cache, which writes no increment to the actor's file
/// before its record is synced (see [`Shared::finish`]).
#[derive(Clone)]
pub struct SyncGate(Arc<Shared>);

impl SyncGate {
    /// Returns once every record up to `lsn` is on disk (at once if it
    /// is), or the error that kept it off.
    pub fn wait(&self, lsn: u64) -> Result<(), EngineError> {
        match self.covers(lsn) {
            true => Ok(()),
            false => self.0.wait_here(lsn),
        }
    }

    /// Whether every record up to `lsn` is on disk now.
    pub fn covers(&self, lsn: u64) -> bool {
        self.0.synced() >= lsn
    }
}

impl Shared {
    fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    fn wait(&self, lsn: u64, waiter: Waiter) {
        if self.synced() >= lsn {
            return waiter(Ok(()));
        }
        let mut state = self.state.lock();
        // The writer publishes `synced` under this lock: no lost wake-up.
        if self.synced() >= lsn {
            drop(state);
            return waiter(Ok(()));
        }
        if let Some(failed) = &state.failed {
            let err = EngineError::Io(failed.clone());
            drop(state);
            return waiter(Err(err));
        }
        state.waiters.push((lsn, waiter));
    }

    /// Waits on this thread until every record up to `lsn` is on disk.
    fn wait_here(&self, lsn: u64) -> Result<(), EngineError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.wait(
            lsn,
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
        rx.recv()
            .unwrap_or_else(|_| Err(EngineError::Internal("the journal stopped".into())))
    }

    fn write_loop(&self, file: SegmentFile, base: u64) {
        let mut segment = Segment::new(file, base, self.sizes);
        let mut next: Option<Preparing> = None;
        let mut spare = Vec::with_capacity(64 << 10);
        let mut last_written = base - 1;
        loop {
            let (batch, last) = {
                let mut state = self.state.lock();
                while state.buf.is_empty() && !state.stopping {
                    self.work.wait(&mut state);
                }
                if state.buf.is_empty() {
                    break;
                }
                let batch = std::mem::replace(&mut state.buf, std::mem::take(&mut spare));
                (batch, state.next_lsn - 1)
            };
            if segment.must_rotate(batch.len() as u64, next.as_ref()) {
                self.rotate_into(&mut segment, &mut next, last_written + 1);
            }
            #[cfg(test)]
            let paused = self.paused.lock();
            let started = std::time::Instant::now();
            let result = match self.injected_failure() {
                Some(err) => Err(err),
                None => segment.write(&batch),
            };
            #[cfg(test)]
            drop(paused);
            metrics::histogram!(telemetry::JOURNAL_SYNC_DURATION)
                .record(started.elapsed().as_secs_f64());
            if result.is_ok() {
                metrics::histogram!(telemetry::JOURNAL_SYNC_RECORDS)
                    .record((last - last_written) as f64);
                last_written = last;
            }
            spare = batch;
            spare.clear();
            self.finish(last, result);
            if next.is_none() && segment.wants_successor() {
                next = Some(Preparing::start(&self.dir, self.sizes));
            }
        }
        // Stopped: with nothing held, the records are all in actor files.
        if self.holds.lock().is_empty() && self.state.lock().failed.is_none() {
            let next_lsn = self.state.lock().next_lsn;
            if next_lsn > segment.base && self.rotate(next_lsn).is_err() {
                tracing::warn!("could not trim the journal at shutdown");
            }
        }
        if let Some(preparing) = next {
            preparing.discard();
            let _ = std::fs::remove_file(self.dir.join(PREPARED));
        }
    }

    /// Moves to a new segment starting at `base`: the prepared one if there
    /// is one (waiting for it only if this one is full), else a growing one.
    fn rotate_into(&self, segment: &mut Segment, next: &mut Option<Preparing>, base: u64) {
        let ready = match next.take() {
            Some(preparing) if preparing.is_ready() || segment.preallocated() => preparing.finish(),
            other => {
                *next = other;
                None
            }
        };
        let opened = match ready {
            Some(file) => install_prepared(&self.dir, file, base),
            None => new_segment(&self.dir, base).map(SegmentFile::Growing),
        };
        match opened {
            Ok(file) => {
                *segment = Segment::new(file, base, self.sizes);
                // The file-system sync before removal may take a while:
                // not on this thread, which every durable increment waits on.
                let (dir, keep_from) = (self.dir.clone(), self.keep_from(base));
                let trimmed = std::thread::Builder::new()
                    .name("roost-journal-trim".into())
                    .spawn_floating(move || {
                        if let Err(err) = remove_segments_before(&dir, keep_from) {
                            tracing::warn!(error = %err, "could not remove old journal segments");
                        }
                    });
                if let Err(err) = trimmed {
                    tracing::warn!(error = %err, "could not start trimming the journal");
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not start a new journal segment; appending to the old one");
            }
        }
    }

    /// The first LSN still needed, if the newest segment starts at `base`.
    fn keep_from(&self, base: u64) -> u64 {
        self.holds
            .lock()
            .keys()
            .next()
            .copied()
            .unwrap_or(base)
            .min(base)
    }

    /// The failure a test asked the next batch to have, if any.
    #[cfg(test)]
    fn injected_failure(&self) -> Option<std::io::Error> {
        self.fail_next_write
            .swap(false, Ordering::AcqRel)
            .then(|| std::io::Error::other("injected write failure"))
    }

    #[cfg(not(test))]
    fn injected_failure(&self) -> Option<std::io::Error> {
        None
    }

    /// Answers the waiters of a written batch ending at `last`.
    ///
    /// A failed write or sync fails the journal until the engine restarts,
    /// as PostgreSQL panics on a failed WAL write: after a failed `fsync`
    /// the kernel may have dropped the dirty pages and cleared the error,
    /// so a later sync could succeed without them, and nothing written
    /// after them could be trusted. The batch's increments are refused,
    /// and no actor file ever takes them ([`SyncGate`]): a refusal means
    /// "not applied", except that records whose write succeeded before a
    /// failed sync may have reached the disk, and a restart replays them.
    fn finish(&self, last: u64, result: std::io::Result<()>) {
        let result = result.map_err(EngineError::from);
        let mut state = self.state.lock();
        let ready: Vec<(u64, Waiter)> = match &result {
            Ok(()) => {
                self.synced.store(last, Ordering::Release);
                let (done, waiting) = std::mem::take(&mut state.waiters)
                    .into_iter()
                    .partition(|(lsn, _)| *lsn <= last);
                state.waiters = waiting;
                done
            }
            Err(err) => {
                tracing::error!(error = %err, "journal write failed; its increments are refused and durable increments stop until a restart");
                state.failed = Some(format!("the journal could not be written: {err}"));
                std::mem::take(&mut state.waiters)
            }
        };
        drop(state);
        for (_, waiter) in ready {
            waiter(match &result {
                Ok(()) => Ok(()),
                Err(err) => Err(clone_io(err)),
            });
        }
    }

    /// Starts segment `base` and drops the old ones no actor still needs.
    fn rotate(&self, base: u64) -> Result<File, EngineError> {
        let file = new_segment(&self.dir, base)?;
        remove_segments_before(&self.dir, self.keep_from(base))?;
        Ok(file)
    }
}

/// The segment being appended to.
struct Segment {
    file: SegmentFile,
    base: u64,
    /// Bytes of records in it.
    len: u64,
    /// Bytes it holds before a new one starts: what was zero-filled, or
    /// the segment size for a growing one.
    capacity: u64,
    sizes: Sizes,
}

/// How a segment's file takes its writes.
enum SegmentFile {
    /// Grows with each write, `fdatasync`ed after it.
    Growing(File),
    /// Zero-filled to [`SEGMENT_BYTES`] ahead and opened `O_DSYNC`: a write
    /// is durable when it returns, and needs no metadata update (the size
    /// and the blocks are already on disk), which made each sync cheaper.
    Preallocated(File),
    /// The same, written with direct I/O where the file system takes it:
    /// less CPU and a shorter wait per write (see `direct`).
    Direct(DirectAppender),
}

impl Segment {
    fn new(file: SegmentFile, base: u64, sizes: Sizes) -> Segment {
        let capacity = match &file {
            SegmentFile::Growing(_) => sizes.segment,
            SegmentFile::Preallocated(file) => file.metadata().map_or(sizes.segment, |m| m.len()),
            SegmentFile::Direct(appender) => appender.file_len(),
        };
        Segment {
            file,
            base,
            len: 0,
            capacity,
            sizes,
        }
    }

    /// Writes and syncs `batch` after the records already here. Any
    /// failure fails the journal (see [`Shared::finish`]).
    fn write(&mut self, batch: &[u8]) -> std::io::Result<()> {
        match &mut self.file {
            SegmentFile::Growing(file) => {
                file.write_all_at(batch, self.len)?;
                file.sync_data()?;
            }
            SegmentFile::Preallocated(file) => file.write_all_at(batch, self.len)?,
            SegmentFile::Direct(appender) => appender.append(self.len, batch)?,
        }
        self.len += batch.len() as u64;
        Ok(())
    }

    /// Zero-filled ahead, so it never grows.
    fn preallocated(&self) -> bool {
        !matches!(self.file, SegmentFile::Growing(_))
    }

    /// Whether `incoming` bytes should go to a new segment: this one is
    /// full, or it grows and a preallocated one is ready.
    fn must_rotate(&self, incoming: u64, next: Option<&Preparing>) -> bool {
        match self.preallocated() {
            // An empty one takes any batch (written past its end if need be).
            true => self.len > 0 && self.len + incoming > self.capacity,
            false => {
                self.len >= self.capacity || (self.len > 0 && next.is_some_and(Preparing::is_ready))
            }
        }
    }

    /// Whether to start preparing the next segment: only a journal in real
    /// use pays for one (an engine that never writes much keeps its small
    /// first segment).
    fn wants_successor(&self) -> bool {
        match self.preallocated() {
            true => self.len >= self.capacity / 2,
            false => self.len >= self.sizes.prepare_after,
        }
    }
}

/// A zero-filled segment being made by a helper thread.
struct Preparing(std::thread::JoinHandle<Result<SegmentFile, EngineError>>);

impl Preparing {
    fn start(dir: &Path, sizes: Sizes) -> Preparing {
        let path = dir.join(PREPARED);
        Preparing(std::thread::spawn(move || {
            prepare_segment(&path, sizes.segment, sizes.direct)
        }))
    }

    fn is_ready(&self) -> bool {
        self.0.is_finished()
    }

    /// The prepared file (waiting for it), or `None` if it failed.
    fn finish(self) -> Option<SegmentFile> {
        match self.0.join() {
            Ok(Ok(file)) => Some(file),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "could not preallocate a journal segment");
                None
            }
            Err(_) => None,
        }
    }

    fn discard(self) {
        let _ = self.0.join();
    }
}

/// The file a segment is prepared in before it gets its name.
const PREPARED: &str = "next.prep";

fn prepare_segment(path: &Path, bytes: u64, direct: bool) -> Result<SegmentFile, EngineError> {
    use std::os::unix::fs::OpenOptionsExt;
    if direct {
        if let Some(appender) = DirectAppender::create(path, bytes)? {
            return Ok(SegmentFile::Direct(appender));
        }
    }
    // No direct I/O here: zeros through the page cache, then synced.
    let filling = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)?;
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < bytes {
        let chunk = (bytes - at).min(zeros.len() as u64) as usize;
        filling.write_all_at(&zeros[..chunk], at)?;
        at += chunk as u64;
    }
    filling.sync_all()?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DSYNC)
        .open(path)?;
    Ok(SegmentFile::Preallocated(file))
}

/// Gives the prepared file its segment name.
fn install_prepared(dir: &Path, file: SegmentFile, base: u64) -> Result<SegmentFile, EngineError> {
    std::fs::rename(dir.join(PREPARED), segment_path(dir, base))?;
    File::open(dir)?.sync_all()?;
    Ok(file)
}

fn clone_io(err: &EngineError) -> EngineError {
    match err {
        EngineError::InsufficientStorage(m) => EngineError::InsufficientStorage(m.clone()),
        other => EngineError::Io(other.to_string()),
    }
}

/// Segments under `dir`, oldest first, with their first LSN.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, EngineError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let base = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(base) = base {
            found.push((base, path));
        }
    }
    found.sort();
    Ok(found)
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// The segment a run starts with: a small zero-filled one written with
/// direct I/O, or else (no direct I/O, no room) a growing one.
fn first_segment(dir: &Path, base: u64, sizes: Sizes) -> Result<SegmentFile, EngineError> {
    let path = segment_path(dir, base);
    if sizes.direct {
        let bytes = FIRST_SEGMENT_BYTES.min(sizes.segment);
        match DirectAppender::create(&path, bytes) {
            Ok(Some(appender)) => {
                File::open(dir)?.sync_all()?;
                return Ok(SegmentFile::Direct(appender));
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(error = %err, "could not preallocate the first journal segment; it grows as it goes");
            }
        }
    }
    new_segment(dir, base).map(SegmentFile::Growing)
}

fn new_segment(dir: &Path, base: u64) -> Result<File, EngineError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(segment_path(dir, base))?;
    File::open(dir)?.sync_all()?;
    Ok(file)
}

/// Removes the segments whose records all come before `keep_from` (each
/// segment ends where the next begins; the newest is always kept).
///
/// Actors write journaled increments to their files without an fsync of
/// their own (see `ActorDb::commit_unsynced`): one `syncfs` of the data
/// dir's file system, after those writes and before any segment goes,
/// makes them all durable first.
fn remove_segments_before(dir: &Path, keep_from: u64) -> Result<(), EngineError> {
    let all = segments(dir)?;
    let doomed: Vec<&PathBuf> = all
        .windows(2)
        .filter(|pair| pair[1].0 <= keep_from)
        .map(|pair| &pair[0].1)
        .collect();
    if doomed.is_empty() {
        return Ok(());
    }
    sync_file_system(dir)?;
    for path in doomed {
        match std::fs::remove_file(path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err.into()),
            _ => {}
        }
    }
    Ok(())
}

/// `syncfs(2)` of the file system holding `dir`.
fn sync_file_system(dir: &Path) -> Result<(), EngineError> {
    use std::os::fd::AsRawFd;
    let handle = File::open(dir)?;
    // SAFETY: a valid open descriptor; syncfs reads nothing else.
    if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

fn encode(buf: &mut Vec<u8>, lsn: u64, entry: &Entry) {
    match entry {
        Entry::CounterAdd { actor, name, by } => encode_counter_add(buf, lsn, actor, name, *by),
        Entry::Forget { actor } => framed(buf, lsn, KIND_FORGET, |buf| push_str(buf, actor)),
    }
}

fn encode_counter_add(buf: &mut Vec<u8>, lsn: u64, actor: &str, name: &str, by: i64) {
    framed(buf, lsn, KIND_COUNTER_ADD, |buf| {
        push_str(buf, actor);
        push_str(buf, name);
        buf.extend_from_slice(&by.to_le_bytes());
    })
}

fn push_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// Appends one record: its header, then `lsn`, `kind` and what `body` adds.
fn framed(buf: &mut Vec<u8>, lsn: u64, kind: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 8]);
    buf.extend_from_slice(&lsn.to_le_bytes());
    buf.push(kind);
    body(buf);
    let body_len = (buf.len() - start - 8) as u32;
    let crc = crc32fast::hash(&buf[start + 8..]);
    buf[start..start + 4].copy_from_slice(&body_len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Every whole record in `bytes`, and whether they filled it exactly.
fn decode_all(bytes: &[u8]) -> (Vec<Record>, bool) {
    let mut records = Vec::new();
    let mut rest = bytes;
    // A preallocated segment's unused tail is zeros.
    while !rest.iter().all(|b| *b == 0) {
        match decode_one(rest) {
            Some((record, used)) => {
                records.push(record);
                rest = &rest[used..];
            }
            None => return (records, false),
        }
    }
    (records, true)
}

fn decode_one(bytes: &[u8]) -> Option<(Record, usize)> {
    let body_len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let body = bytes.get(8..8 + body_len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let mut reader = Reader(body);
    let lsn = u64::from_le_bytes(reader.take(8)?.try_into().ok()?);
    let kind = reader.take(1)?[0];
    let actor = reader.string()?;
    let entry = match kind {
        KIND_COUNTER_ADD => {
            let name = reader.string()?;
            let by = i64::from_le_bytes(reader.take(8)?.try_into().ok()?);
            Entry::CounterAdd { actor, name, by }
        }
        KIND_FORGET => Entry::Forget { actor },
        _ => return None,
    };
    Some((Record { lsn, entry }, 8 + body_len))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }

    fn string(&mut self) -> Option<String> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(actor: &str, name: &str, by: i64) -> Entry {
        Entry::CounterAdd {
            actor: actor.into(),
            name: name.into(),
            by,
        }
    }

    #[test]
    fn synced_records_come_back_in_order_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let recovered = recover(&path).unwrap();
        assert!(recovered.records.is_empty());
        let journal = Journal::start(&path, recovered.next_lsn, &[]).unwrap();
        let first = journal.append(&add("a", "n", 1)).unwrap();
        journal.append_and_sync(&add("b", "m", -5)).unwrap();
        assert!(journal.synced() > first);
        // No clean close: as after kill -9.
        std::mem::forget(journal);
        let again = recover(&path).unwrap();
        assert_eq!(
            again.records,
            vec![
                Record {
                    lsn: first,
                    entry: add("a", "n", 1)
                },
                Record {
                    lsn: first + 1,
                    entry: add("b", "m", -5)
                },
            ]
        );
        assert_eq!(again.next_lsn, first + 2);
    }

    #[test]
    fn a_running_journal_reads_back_one_actors_records_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journal = Journal::start(&path, 1, &[]).unwrap();
        journal.append_counter_add("a", "n", 1).unwrap();
        journal
            .append(&Entry::Forget { actor: "a".into() })
            .unwrap();
        let kept = journal.append_counter_add("a", "n", 2).unwrap();
        journal.append_counter_add("b", "n", 3).unwrap();
        // Not synced yet: read back waits for them.
        let records = journal.read_back("a").unwrap();
        assert_eq!(
            records,
            vec![Record {
                lsn: kept,
                entry: add("a", "n", 2)
            }]
        );
        assert_eq!(journal.read_back("c").unwrap(), vec![]);
    }

    #[test]
    fn a_forget_voids_only_its_actors_earlier_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journal = Journal::start(&path, 1, &[]).unwrap();
        journal.append(&add("a", "n", 1)).unwrap();
        journal.append(&add("b", "n", 2)).unwrap();
        journal
            .append(&Entry::Forget { actor: "a".into() })
            .unwrap();
        journal.append_and_sync(&add("a", "n", 3)).unwrap();
        std::mem::forget(journal);
        let entries: Vec<Entry> = recover(&path)
            .unwrap()
            .records
            .into_iter()
            .map(|r| r.entry)
            .collect();
        assert_eq!(entries, vec![add("b", "n", 2), add("a", "n", 3)]);
    }

    #[test]
    fn a_torn_tail_keeps_the_records_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journal = Journal::start(&path, 1, &[]).unwrap();
        journal.append_and_sync(&add("a", "n", 1)).unwrap();
        journal.append_and_sync(&add("a", "n", 2)).unwrap();
        std::mem::forget(journal);
        let (_, segment) = segments(&path).unwrap().pop().unwrap();
        let bytes = std::fs::read(&segment).unwrap();
        // The two records' bytes (a zero-filled segment goes on past them).
        let mut written = Vec::new();
        encode(&mut written, 1, &add("a", "n", 1));
        encode(&mut written, 2, &add("a", "n", 2));
        assert_eq!(&bytes[..written.len()], &written[..]);
        std::fs::write(&segment, &bytes[..written.len() - 3]).unwrap();
        let recovered = recover(&path).unwrap();
        assert_eq!(recovered.records.len(), 1);
        // The torn record's LSN is not reused: numbering is past the base.
        assert!(recovered.next_lsn >= 2);
    }

    #[test]
    fn numbering_continues_across_clean_restarts_with_an_empty_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journal = Journal::start(&path, 1, &[]).unwrap();
        for _ in 0..10 {
            journal.append(&add("a", "n", 1)).unwrap();
        }
        journal.append_and_sync(&add("a", "n", 1)).unwrap();
        journal.close();
        drop(journal);
        // Nothing was held: the records are gone, the numbering is not.
        let recovered = recover(&path).unwrap();
        assert!(recovered.records.is_empty());
        assert_eq!(recovered.next_lsn, 12);
    }

    #[test]
    fn held_records_survive_a_clean_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journal = Journal::start(&path, 1, &[]).unwrap();
        let lsn = journal.append(&add("a", "n", 1)).unwrap();
        journal.hold(lsn);
        journal.close();
        assert_eq!(recover(&path).unwrap().records.len(), 1);
    }

    #[test]
    fn old_segments_go_once_no_actor_holds_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        std::fs::create_dir_all(&path).unwrap();
        for base in [1u64, 10, 20] {
            new_segment(&path, base).unwrap();
        }
        remove_segments_before(&path, 15).unwrap();
        let left: Vec<u64> = segments(&path)
            .unwrap()
            .into_iter()
            .map(|(b, _)| b)
            .collect();
        // Segment 10 may hold LSN 15..19; segment 20 is the newest.
        assert_eq!(left, vec![10, 20]);
    }

    #[test]
    fn records_move_into_preallocated_segments_and_come_back_from_them() {
        for direct in [true, false] {
            records_move_into_preallocated_segments(direct);
        }
    }

    fn records_move_into_preallocated_segments(direct: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let sizes = Sizes {
            segment: 64 << 10,
            prepare_after: 4 << 10,
            direct,
        };
        let journal = Journal::start_sized(&path, 1, &[], sizes).unwrap();
        let mut expected = Vec::new();
        let mut held = None;
        for i in 0..4000i64 {
            let entry = add(&format!("actor-{}", i % 7), "n", i);
            let lsn = journal.append_and_sync_lsn(&entry);
            if i == 2500 {
                // From here on an actor still needs its records.
                journal.hold(lsn);
                held = Some(lsn);
            }
            expected.push(Record { lsn, entry });
        }
        // About 200 KiB of records: several preallocated segments, and
        // the ones before the hold are gone.
        let left = segments(&path).unwrap();
        assert!(left.len() >= 2, "{left:?}");
        let held = held.unwrap();
        assert!(left[0].0 <= held && left[0].0 > 1, "{left:?}");
        std::mem::forget(journal);
        let recovered = recover(&path).unwrap();
        // Each add was followed by a synced marker (a `Forget` of no actor).
        assert_eq!(recovered.next_lsn, 8001);
        let from = recovered.records.first().unwrap().lsn;
        assert!(from <= held);
        let kept: Vec<Record> = expected.into_iter().filter(|r| r.lsn >= from).collect();
        assert_eq!(recovered.records, kept);
    }

    #[test]
    fn corrupt_bytes_decode_to_nothing_without_panicking() {
        for bytes in [
            &b""[..],
            b"\xff\xff\xff\xff",
            b"\x04\0\0\0\0\0\0\0abcd",
            &[0u8; 64],
        ] {
            let (records, _) = decode_all(bytes);
            assert!(records.is_empty());
        }
    }
}
