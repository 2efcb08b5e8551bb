//! The WAL index of every actor database, in memory that is only resident
//! where SQLite has touched it.
//!
//! SQLite keeps a WAL database's index (which page is in which WAL frame)
//! in 32 KiB regions of "shared memory". With `locking_mode = EXCLUSIVE`
//! it allocates them on its heap and zeroes them, so every open actor paid
//! 32 KiB for its first region: half of an idle actor's memory. An actor
//! that has only been read since it opened touches just the index header
//! in the first 4 KiB page; the rest matters once frames are appended.
//!
//! So the `roost` VFS (see `vfs`) gives main databases their own shared
//! memory methods: each region is a 32 KiB slot of an anonymous mapping,
//! which the kernel backs with a page only when it is first written. A
//! released slot is handed back to the kernel (`MADV_DONTNEED`, so it reads
//! as zeros again) and reused. Nothing is written to disk (no `-shm` file):
//! each actor file has exactly one connection, so the index is never shared
//! between processes or connections, and locks on it guard nothing.
//! After a crash the index is rebuilt from the WAL on the next open, as it
//! is for any WAL database whose `-shm` is gone.

use libsql::ffi;
use parking_lot::Mutex;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// SQLite's wal-index region size (`WALINDEX_PGSZ`): the only size it asks for.
const REGION_BYTES: usize = 32 * 1024;
/// Regions mapped at a time: one mapping, so thousands of actors do not
/// need thousands of kernel memory areas.
const REGIONS_PER_CHUNK: usize = 64;

/// Free regions (their addresses), each reading as zeros.
static FREE: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// Set when a main database could not be given these methods (its VFS
/// methods were not the ones they were made from): actors then fall back
/// to exclusive locking, which keeps the index on SQLite's heap.
static MISSING: AtomicBool = AtomicBool::new(false);

/// Whether every actor database opened so far has this shared memory, so
/// WAL works without exclusive locking.
pub fn available() -> bool {
    !MISSING.load(Ordering::Acquire)
}

/// One file's mapped regions, in order.
#[derive(Default)]
struct Regions(Vec<usize>);

/// Our methods, made from the base VFS's methods for main databases, and
/// the base methods they were made from.
struct Methods {
    base: *const ffi::sqlite3_io_methods,
    ours: ffi::sqlite3_io_methods,
}

// SAFETY: both are static tables of function pointers SQLite never frees.
unsafe impl Send for Methods {}
unsafe impl Sync for Methods {}

static METHODS: OnceLock<Methods> = OnceLock::new();

/// Where, in each `sqlite3_file` the VFS allocates, our `Regions` pointer
/// lives: just past the base VFS's own struct.
static SLOT_OFFSET: OnceLock<usize> = OnceLock::new();

/// The file size the VFS must ask SQLite for, given the base's, keeping
/// room for our pointer.
pub fn file_bytes(base: c_int) -> c_int {
    let offset = (base as usize).next_multiple_of(align_of::<*mut Regions>());
    let _ = SLOT_OFFSET.set(offset);
    (offset + size_of::<*mut Regions>()) as c_int
}

/// Gives a just-opened main database our shared memory methods.
///
/// # Safety
/// `file` must be a file the base VFS has just opened successfully, in a
/// buffer of at least [`file_bytes`] bytes.
pub unsafe fn install(file: *mut ffi::sqlite3_file) {
    // SAFETY: per the contract, `file` is open and its pMethods is the
    // base's static table (or NULL).
    unsafe {
        let base = (*file).pMethods;
        let Some(offset) = SLOT_OFFSET.get() else {
            MISSING.store(true, Ordering::Release);
            return;
        };
        let methods = METHODS.get_or_init(|| Methods {
            base,
            ours: ours_from(base),
        });
        if base.is_null() || !std::ptr::eq(methods.base, base) || (*base).iVersion < 2 {
            MISSING.store(true, Ordering::Release);
            return;
        }
        slot(file, *offset).write(std::ptr::null_mut());
        (*file).pMethods = &methods.ours;
    }
}

/// The base table with the shared-memory methods and `xClose` replaced.
///
/// # Safety
/// `base` must be NULL or a valid methods table.
unsafe fn ours_from(base: *const ffi::sqlite3_io_methods) -> ffi::sqlite3_io_methods {
    // SAFETY: per the contract; the copy is only used when `base` is valid.
    let mut ours = match unsafe { base.as_ref() } {
        Some(base) => *base,
        // SAFETY: an all-NULL table (never installed: `install` checks).
        None => unsafe { std::mem::zeroed() },
    };
    ours.xClose = Some(close);
    ours.xShmMap = Some(map);
    ours.xShmLock = Some(lock);
    ours.xShmBarrier = Some(barrier);
    ours.xShmUnmap = Some(unmap);
    ours
}

/// The address of `file`'s `Regions` pointer.
///
/// # Safety
/// `file` must be a buffer of at least `offset + 8` bytes.
unsafe fn slot(file: *mut ffi::sqlite3_file, offset: usize) -> *mut *mut Regions {
    // SAFETY: per the contract; the offset is aligned for a pointer.
    unsafe { file.cast::<u8>().add(offset).cast() }
}

/// # Safety
/// `file` must have been given our methods by [`install`].
unsafe fn regions(file: *mut ffi::sqlite3_file) -> *mut *mut Regions {
    let offset = SLOT_OFFSET.get().copied().unwrap_or_default();
    // SAFETY: `install` ran, so the buffer has room for the slot.
    unsafe { slot(file, offset) }
}

unsafe extern "C" fn map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    bytes: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    if bytes as usize != REGION_BYTES || region < 0 {
        return ffi::SQLITE_IOERR_SHMSIZE;
    }
    let index = region as usize;
    // SAFETY: SQLite calls this on a file we installed, with a valid `out`.
    unsafe {
        let slot = regions(file);
        if (*slot).is_null() {
            *slot = Box::into_raw(Box::default());
        }
        let mapped = &mut (**slot).0;
        while mapped.len() <= index && extend != 0 {
            match take_region() {
                Some(address) => {
                    prefault_for_write(address);
                    mapped.push(address);
                }
                None => {
                    *out = std::ptr::null_mut();
                    return ffi::SQLITE_IOERR_SHMMAP;
                }
            }
        }
        *out = mapped
            .get(index)
            .map_or(std::ptr::null_mut(), |&address| address as *mut c_void);
    }
    ffi::SQLITE_OK
}

/// One connection per file: nothing to lock against.
unsafe extern "C" fn lock(_: *mut ffi::sqlite3_file, _: c_int, _: c_int, _: c_int) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn barrier(_: *mut ffi::sqlite3_file) {
    std::sync::atomic::fence(Ordering::SeqCst);
}

unsafe extern "C" fn unmap(file: *mut ffi::sqlite3_file, _delete: c_int) -> c_int {
    // SAFETY: SQLite calls this on a file we installed.
    unsafe { release(file) };
    ffi::SQLITE_OK
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls this on a file we installed, once; the base
    // close is the one of the table ours was made from.
    unsafe {
        release(file);
        match METHODS.get().and_then(|m| (*m.base).xClose) {
            Some(base_close) => base_close(file),
            None => ffi::SQLITE_OK,
        }
    }
}

/// Returns `file`'s regions to the free list.
///
/// # Safety
/// `file` must have been given our methods by [`install`].
unsafe fn release(file: *mut ffi::sqlite3_file) {
    // SAFETY: the slot holds NULL or a pointer from `Box::into_raw`.
    let regions = unsafe {
        let slot = regions(file);
        let taken = *slot;
        *slot = std::ptr::null_mut();
        if taken.is_null() {
            return;
        }
        Box::from_raw(taken)
    };
    for &address in &regions.0 {
        give_back(address);
    }
}

/// A zeroed region: a free one, or one of a newly mapped chunk.
fn take_region() -> Option<usize> {
    let mut free = FREE.lock();
    if let Some(address) = free.pop() {
        return Some(address);
    }
    let bytes = REGION_BYTES * REGIONS_PER_CHUNK;
    // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
    let chunk = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if chunk == libc::MAP_FAILED {
        return None;
    }
    // Huge pages would make a header write resident as 2 MiB; without the
    // advice (an old kernel) it is only more memory.
    // SAFETY: advising our own fresh mapping.
    unsafe { libc::madvise(chunk, bytes, libc::MADV_NOHUGEPAGE) };
    let first = chunk as usize;
    free.extend((1..REGIONS_PER_CHUNK).map(|i| first + i * REGION_BYTES));
    Some(first)
}

/// Makes the first page of a region SQLite has just been given resident
/// and writable, still zero.
///
/// SQLite reads a region before it first writes it (the index header, the
/// page numbers of a first frame). A page first read is the kernel's shared
/// zero page, mapped read-only; the write that follows swaps in a page of
/// its own, and unmapping the zero page flushes that address from the TLB
/// of every CPU the process runs on: an interrupt to the other cores on
/// each cold open. Written first, the page comes in writable at once.
fn prefault_for_write(address: usize) {
    // SAFETY: `address` is the start of a region of one of our mappings,
    // which reads as zeros; writing a zero leaves it so.
    unsafe { std::ptr::write_volatile(address as *mut u8, 0) };
}

/// Drops a region's pages (it reads as zeros again) and frees it.
fn give_back(address: usize) {
    // SAFETY: `address` is a whole region of one of our mappings, no longer
    // used by SQLite.
    let dropped =
        unsafe { libc::madvise(address as *mut c_void, REGION_BYTES, libc::MADV_DONTNEED) };
    if dropped == 0 {
        FREE.lock().push(address);
    }
    // Otherwise the region is leaked rather than reused with stale bytes.
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which of the region's pages are resident.
    fn resident_pages(address: usize) -> Vec<bool> {
        let mut flags = [0u8; REGION_BYTES / 4096];
        // SAFETY: a page-aligned region of our mapping; one byte per page.
        let asked = unsafe {
            libc::mincore(
                address as *mut c_void,
                REGION_BYTES,
                flags.as_mut_ptr().cast(),
            )
        };
        assert_eq!(asked, 0);
        flags.iter().map(|f| f & 1 != 0).collect()
    }

    #[test]
    fn a_region_taken_for_sqlite_has_its_first_page_resident_and_zero() {
        let address = take_region().expect("mapping a chunk");
        prefault_for_write(address);
        assert!(resident_pages(address)[0], "the first page is not resident");
        // SAFETY: a region we own, REGION_BYTES long.
        let bytes = unsafe { std::slice::from_raw_parts(address as *const u8, REGION_BYTES) };
        assert!(bytes.iter().all(|&b| b == 0));
        give_back(address);
    }

    #[test]
    fn a_region_given_back_reads_as_zeros_when_taken_again() {
        let address = take_region().expect("mapping a chunk");
        // SAFETY: a region we own, REGION_BYTES long.
        let bytes = unsafe { std::slice::from_raw_parts_mut(address as *mut u8, REGION_BYTES) };
        assert!(bytes.iter().all(|&b| b == 0));
        bytes.fill(0xAB);
        give_back(address);
        // Other tests may take regions meanwhile: look for ours among a few.
        let mut taken = Vec::new();
        let mut seen = false;
        for _ in 0..REGIONS_PER_CHUNK * 2 {
            let again = take_region().expect("taking a region");
            // SAFETY: as above.
            let bytes = unsafe { std::slice::from_raw_parts(again as *const u8, REGION_BYTES) };
            assert!(
                bytes.iter().all(|&b| b == 0),
                "a reused region held old bytes"
            );
            taken.push(again);
            if again == address {
                seen = true;
                break;
            }
        }
        assert!(seen, "the region was not reused");
        for address in taken {
            give_back(address);
        }
    }
}
