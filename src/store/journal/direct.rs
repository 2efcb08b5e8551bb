//! Appends to a preallocated, zero-filled journal segment with
//! `O_DIRECT | O_DSYNC`: the write goes from the journal's buffer to the
//! device and is durable when it returns, without a copy into the page
//! cache or the page cache's own write-back.
//!
//! Direct I/O takes only whole, aligned blocks. The bytes of the last,
//! partial block already written are kept here and written again, in
//! front of the new records, with zeros after them up to the block's end:
//! the same bytes the block already holds, as the page cache's write-back
//! of a partial page would also rewrite them. [`DirectAppender::open`]
//! tries one write first, so a file system without direct I/O (tmpfs,
//! some network or overlay file systems) gets the plain `O_DSYNC` file.
//!
//! [`zero_fill`] makes such a segment the same way, a chunk at a time:
//! 32 MiB of zeros written through the page cache and then synced went to
//! the device in one burst, and the journal's next write waited behind
//! all of it (17–18 ms on the benchmark VM; at most 0.42 ms beside a fill
//! done this way).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

/// Offset and memory alignment of every write: a page, which covers any
/// device's logical block.
const BLOCK: usize = 4096;

/// Zeros written at a time by [`zero_fill`]: a journal write queued
/// behind one waits well under a millisecond.
const FILL_CHUNK: usize = 256 << 10;

/// One aligned block of the staging buffer.
#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Block([u8; BLOCK]);

/// A segment file opened for direct, synchronous appends.
pub struct DirectAppender {
    file: File,
    /// The partial last block already written, then the next records.
    staging: Vec<Block>,
    /// Bytes of that partial block at the start of `staging`.
    tail: usize,
}

impl DirectAppender {
    /// Opens the zero-filled file at `path` for direct appends from its
    /// start, if its file system takes them: `None` if it does not.
    pub fn open(path: &Path) -> std::io::Result<Option<DirectAppender>> {
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(path);
        let file = match opened {
            Ok(file) => file,
            Err(err) if refuses_direct(&err) => return Ok(None),
            Err(err) => return Err(err),
        };
        let appender = DirectAppender {
            file,
            staging: vec![Block([0; BLOCK])],
            tail: 0,
        };
        // Zeros over zeros: changes nothing, and tells whether the file
        // system takes an aligned direct write.
        match appender.file.write_all_at(appender.bytes(BLOCK), 0) {
            Ok(()) => Ok(Some(appender)),
            Err(err) if refuses_direct(&err) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Zero-fills the file at `path` to at least `bytes` (see
    /// [`zero_fill`]) and opens it for direct appends; `None` if its file
    /// system does not do direct I/O, for the caller to fill it another way.
    pub fn create(path: &Path, bytes: u64) -> std::io::Result<Option<DirectAppender>> {
        match zero_fill(path, bytes)? {
            true => DirectAppender::open(path),
            false => Ok(None),
        }
    }

    /// The file's size.
    pub fn file_len(&self) -> u64 {
        self.file.metadata().map_or(0, |m| m.len())
    }

    /// Writes `records` at `at`, the end of everything appended so far;
    /// durable once this returns.
    pub fn append(&mut self, at: u64, records: &[u8]) -> std::io::Result<()> {
        debug_assert_eq!(at % BLOCK as u64, self.tail as u64);
        let end = self.tail + records.len();
        let blocks = end.div_ceil(BLOCK);
        if self.staging.len() < blocks {
            self.staging.resize(blocks, Block([0; BLOCK]));
        }
        let tail = self.tail;
        let staged = self.bytes_mut(blocks * BLOCK);
        staged[tail..end].copy_from_slice(records);
        staged[end..].fill(0);
        self.file
            .write_all_at(self.bytes(blocks * BLOCK), at - tail as u64)?;
        // Keep the new partial block for the next write.
        let whole = end / BLOCK * BLOCK;
        self.bytes_mut(end).copy_within(whole..end, 0);
        self.tail = end - whole;
        Ok(())
    }

    fn bytes(&self, len: usize) -> &[u8] {
        &as_bytes(&self.staging)[..len]
    }

    fn bytes_mut(&mut self, len: usize) -> &mut [u8] {
        let blocks = &mut self.staging;
        // SAFETY: as in `as_bytes`: `Block` is a plain byte array without
        // padding; borrowed mutably through `&mut self`.
        let all = unsafe {
            std::slice::from_raw_parts_mut(blocks.as_mut_ptr().cast::<u8>(), blocks.len() * BLOCK)
        };
        &mut all[..len]
    }
}

/// Creates the file at `path` holding at least `bytes` zeros, written
/// directly a chunk at a time, each chunk followed by a pause as long as
/// its write (half the device's time is left to the journal), then
/// synced. `false` if the file system does not do direct I/O: the caller
/// fills the file another way.
pub fn zero_fill(path: &Path, bytes: u64) -> std::io::Result<bool> {
    let opened = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(err) if refuses_direct(&err) => return Ok(false),
        Err(err) => return Err(err),
    };
    // One allocation up front, so the writes below only fill it; where
    // the file system cannot, they allocate as they go.
    // SAFETY: a valid open descriptor; fallocate reads nothing else.
    let _ = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, bytes as libc::off_t) };
    let zeros = vec![Block([0; BLOCK]); FILL_CHUNK / BLOCK];
    let zeros = as_bytes(&zeros);
    let mut at = 0u64;
    while at < bytes {
        let len = ((bytes - at) as usize)
            .min(FILL_CHUNK)
            .next_multiple_of(BLOCK);
        let started = Instant::now();
        match file.write_all_at(&zeros[..len], at) {
            Err(err) if at == 0 && refuses_direct(&err) => return Ok(false),
            written => written?,
        }
        at += len as u64;
        std::thread::sleep(started.elapsed());
    }
    file.sync_all()?;
    Ok(true)
}

fn as_bytes(blocks: &[Block]) -> &[u8] {
    // SAFETY: `Block` is a plain byte array without padding, so `blocks`
    // is `blocks.len() * BLOCK` initialized bytes.
    unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast::<u8>(), blocks.len() * BLOCK) }
}

/// A file system that does not do direct I/O refuses the open or the
/// aligned write with `EINVAL`.
fn refuses_direct(err: &std::io::Error) -> bool {
    err.raw_os_error() == Some(libc::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_filled_file_holds_at_least_the_zeros_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let bytes = 2 * FILL_CHUNK as u64 + 100;
        if !zero_fill(&path, bytes).unwrap() {
            eprintln!("no direct I/O on this file system; the caller fills the file");
            return;
        }
        let on_disk = std::fs::read(&path).unwrap();
        assert!(on_disk.len() as u64 >= bytes);
        assert!(on_disk.iter().all(|b| *b == 0));
    }

    #[test]
    fn appends_land_after_each_other_whatever_their_alignment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        if !zero_fill(&path, 5 * BLOCK as u64).unwrap() {
            std::fs::write(&path, vec![0u8; 5 * BLOCK]).unwrap();
        }
        let Some(mut appender) = DirectAppender::open(&path).unwrap() else {
            eprintln!("no direct I/O on this file system; the plain file is used");
            return;
        };
        let mut expected = Vec::new();
        // Small, block-crossing and block-ending appends.
        for (i, len) in [10usize, 4000, 86, 5000, 3192, 1].into_iter().enumerate() {
            let records = vec![i as u8 + 1; len];
            appender.append(expected.len() as u64, &records).unwrap();
            expected.extend_from_slice(&records);
        }
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk.len(), 5 * BLOCK, "the file keeps its size");
        assert_eq!(&on_disk[..expected.len()], &expected[..]);
        assert!(on_disk[expected.len()..].iter().all(|b| *b == 0));
    }
}
