//! A thin SQLite VFS, "roost", over the unix one without file locks (see
//! [`BASE`]): the same files, except that every main database opened
//! through it keeps its `-wal` file between connections (SQLite's
//! "persistent WAL") and its WAL index in memory of our own (see `shm`).
//!
//! Without it, each close of an actor deletes its WAL and the next open
//! creates it again: an inode allocation, a directory update and, on the
//! first commit, a directory fsync, which dominated a cold actor's open.
//! With it, a cleanly closed actor leaves a zero-length `-wal` (SQLite
//! truncates it after the final checkpoint), so it costs no disk blocks and
//! the next open only opens it. Recovery is unchanged: a WAL that still
//! holds frames after a crash is replayed as always.
//!
//! The libsql crate exposes no connection handle for
//! `SQLITE_FCNTL_PERSIST_WAL`, but SQLite reads that setting from the main
//! database file's own `xFileControl`, which we can reach when the file is
//! opened.

use libsql::ffi;
use std::ffi::{c_int, CStr};
use std::sync::OnceLock;

/// The name actor databases are opened with (`?vfs=roost` in their URI).
pub const NAME: &CStr = c"roost";

/// The unix VFS without file locks. Each actor file has one connection, in
/// `locking_mode = EXCLUSIVE`, and the engine holds the data dir's lock
/// file, so POSIX locks would guard nothing. Skipping them also skips the
/// unix VFS's process-wide list of open inodes, which every open walked
/// under a global mutex: with thousands of actors open, that walk was most
/// of a cold open. (This VFS has no shared memory of its own; `shm` adds
/// it for main databases.)
const BASE: &CStr = c"unix-none";

/// Registers the VFS once per process (after setting SQLite's memory
/// options); later calls return the first outcome. On failure callers fall
/// back to plain paths and the default VFS.
pub fn register() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        configure_memory();
        // libsql sets SQLite's threading mode once, before SQLite starts;
        // the lookup below would start SQLite first and make that fail, so
        // let libsql go first (an in-memory open does it).
        if super::block_on(libsql::Builder::new_local(":memory:").build()).is_err() {
            return false;
        }
        // SAFETY: sqlite3_vfs_find returns a registered VFS (or NULL), which
        // SQLite never frees; the copy we register is leaked, so it lives as
        // long as the process, as sqlite3_vfs_register requires.
        unsafe {
            let base = ffi::sqlite3_vfs_find(BASE.as_ptr());
            if base.is_null() || (*base).xOpen.is_none() {
                return false;
            }
            super::syscalls::install(base);
            let mut vfs = *base;
            vfs.pNext = std::ptr::null_mut();
            vfs.zName = NAME.as_ptr();
            vfs.pAppData = base.cast();
            vfs.xOpen = Some(open);
            vfs.xFullPathname = Some(full_pathname);
            vfs.szOsFile = super::shm::file_bytes((*base).szOsFile);
            let vfs = Box::leak(Box::new(vfs));
            ffi::sqlite3_vfs_register(vfs, 0) == ffi::SQLITE_OK
        }
    })
}

/// Bytes per slot and slots of each connection's lookaside allocator.
/// SQLite's default (1200 × 100, about 120 KiB) was most of an idle
/// actor's memory; one connection per actor makes it a per-actor cost.
const LOOKASIDE: (c_int, c_int) = (256, 32);

/// Process-wide memory settings; SQLite accepts them only before it starts,
/// so they are skipped (SQLITE_MISUSE) if something started it already.
///
/// Memory statistics are turned off. With them on, every allocation and
/// free SQLite makes takes one process-wide mutex to keep the totals: a
/// cold open makes hundreds, and they came to a ninth of its instructions
/// (counted under cachegrind); every actor thread contends for that mutex.
/// roost reads none of the totals, nor sets a heap limit (which needs them).
fn configure_memory() {
    // SAFETY: sqlite3_config is called before sqlite3_initialize (or
    // refuses); LOOKASIDE takes two ints, MEMSTATUS one.
    unsafe {
        ffi::sqlite3_config(ffi::SQLITE_CONFIG_LOOKASIDE, LOOKASIDE.0, LOOKASIDE.1);
        ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int);
    }
}

/// The default VFS's `xOpen`, then persistent WAL for main databases.
///
/// Every other method is the default VFS's own, copied into our struct; the
/// unix VFS reads nothing from its `sqlite3_vfs` argument but `pAppData`,
/// which is why `open` hands the base VFS (kept in our `pAppData`) to the
/// base `xOpen` instead of ours.
unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite calls this with the struct registered above, whose
    // pAppData is the base VFS, and with a file buffer of szOsFile bytes
    // (the base's size, copied). The base's methods are set once it opens.
    unsafe {
        let base: *mut ffi::sqlite3_vfs = (*vfs).pAppData.cast();
        let Some(base_open) = (*base).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        let rc = base_open(base, name, file, flags, out_flags);
        if rc == ffi::SQLITE_OK && flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
            let methods = (*file).pMethods;
            if let Some(control) = methods.as_ref().and_then(|m| m.xFileControl) {
                let mut persist: c_int = 1;
                // A VFS without the setting answers NOTFOUND: WAL files
                // are then deleted on close as usual, which is only slower.
                control(
                    file,
                    ffi::SQLITE_FCNTL_PERSIST_WAL,
                    (&mut persist as *mut c_int).cast(),
                );
            }
            super::shm::install(file);
        }
        rc
    }
}

/// A plain absolute path as it is; anything else as the base VFS makes it.
///
/// The unix VFS resolves symbolic links in every path it opens, with one
/// `lstat` per path component: five or more system calls on every cold
/// actor open. The engine opens actors under its canonical data dir (no
/// links, no `.` or `..`), and its actor files are never links, so there
/// is nothing to resolve. A relative or unusual path still goes the long
/// way.
unsafe extern "C" fn full_pathname(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const std::ffi::c_char,
    n_out: c_int,
    out: *mut std::ffi::c_char,
) -> c_int {
    // SAFETY: SQLite passes our registered struct (pAppData is the base
    // VFS), a NUL-terminated name and an output buffer of n_out bytes.
    unsafe {
        let path = CStr::from_ptr(name).to_bytes_with_nul();
        if is_plain_absolute(&path[..path.len() - 1]) && path.len() <= n_out as usize {
            std::ptr::copy_nonoverlapping(path.as_ptr(), out.cast::<u8>(), path.len());
            return ffi::SQLITE_OK;
        }
        let base: *mut ffi::sqlite3_vfs = (*vfs).pAppData.cast();
        match (*base).xFullPathname {
            Some(full) => full(base, name, n_out, out),
            None => ffi::SQLITE_CANTOPEN,
        }
    }
}

/// Absolute, and already in the form the unix VFS would write it: no empty,
/// `.` or `..` component and no trailing slash.
fn is_plain_absolute(path: &[u8]) -> bool {
    path.len() > 1
        && path[0] == b'/'
        && path[1..]
            .split(|&byte| byte == b'/')
            .all(|part| !matches!(part, b"" | b"." | b".."))
}

/// The URI that opens `path` through this VFS: `file:` + the path with
/// every byte outside the unreserved set and `/` percent-encoded (a data
/// dir may hold `?`, `#` or `%`).
pub fn uri(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 16);
    out.push_str("file:");
    for byte in path.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out.push_str("?vfs=");
    out.push_str(&NAME.to_string_lossy());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_encodes_everything_sqlite_would_parse() {
        assert_eq!(
            uri("/data/a b?c#d%e.db"),
            "file:/data/a%20b%3Fc%23d%25e.db?vfs=roost"
        );
        assert_eq!(uri("rel/x.db"), "file:rel/x.db?vfs=roost");
    }

    #[test]
    fn only_plain_absolute_paths_skip_the_base_vfs() {
        assert!(is_plain_absolute(b"/data/actors/ab/x.db"));
        for path in [
            &b"rel/x.db"[..],
            b"/",
            b"/data//x.db",
            b"/data/./x.db",
            b"/data/../x.db",
            b"/data/x.db/",
        ] {
            assert!(
                !is_plain_absolute(path),
                "{}",
                String::from_utf8_lossy(path)
            );
        }
    }

    #[test]
    fn full_pathname_keeps_plain_paths_and_leaves_the_rest_to_the_base_vfs() {
        assert!(register());
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        let link = real.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        // SAFETY: both VFSs are registered; buffers are mxPathname + 1 bytes.
        let full = |vfs: &CStr, path: &std::path::Path| unsafe {
            let vfs = ffi::sqlite3_vfs_find(vfs.as_ptr());
            let mut out = vec![0 as std::ffi::c_char; (*vfs).mxPathname as usize + 1];
            let name = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
            let rc = (*vfs).xFullPathname.unwrap()(
                vfs,
                name.as_ptr(),
                out.len() as c_int,
                out.as_mut_ptr(),
            );
            (rc & 0xff, CStr::from_ptr(out.as_ptr()).to_owned())
        };
        let plain = real.join("a.db");
        assert_eq!(full(NAME, &plain), full(BASE, &plain));
        // A plain path through a link is kept as it is (the base VFS would
        // resolve it; the engine's data dir is canonical, so it never has
        // to), and names the same directory, where the WAL then goes.
        let linked = link.join("a.db");
        let kept = std::ffi::CString::new(linked.to_str().unwrap()).unwrap();
        assert_eq!(full(NAME, &linked), (0, kept));
        assert_eq!(full(BASE, &linked), full(BASE, &plain));
        // Anything but a plain absolute path is made as the base makes it.
        for odd in [real.join("x/../a.db"), real.join(".//a.db")] {
            assert_eq!(full(NAME, &odd), full(BASE, &odd), "{}", odd.display());
        }
    }

    #[test]
    fn registers_once_under_its_name() {
        assert!(register());
        assert!(register());
        // SAFETY: looking up a registered VFS by a NUL-terminated name.
        let found = unsafe { ffi::sqlite3_vfs_find(NAME.as_ptr()) };
        assert!(!found.is_null());
        // SAFETY: found is a live registered VFS with a NUL-terminated name.
        assert_eq!(unsafe { CStr::from_ptr((*found).zName) }, NAME);
    }
}
