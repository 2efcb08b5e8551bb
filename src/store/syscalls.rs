//! Three of the system calls SQLite's unix VFS makes, replaced through its
//! table of overridable calls (`xSetSystemCall`, shared by every unix VFS
//! in the process), because each cost a cold actor open a metadata update
//! in the filesystem's journal or a needless syscall:
//!
//! - `open` adds `O_NOATIME`: with `relatime`, the first read of a file
//!   after a write records an access time, which dirties its inode (ext4
//!   journals that). Where the process may not use the flag (a file of
//!   another user, without root), the open is retried without it.
//! - `fchown`: running as root, SQLite gives each WAL it opens the owner
//!   and group of its database, even when the WAL has them already (it
//!   still updates the inode's change time). The call is skipped when that
//!   owner and group are the process's own, which a file it created has.
//!   Any other owner is still applied, so a root process never leaves a
//!   root-owned WAL beside a database of another user.
//! - `geteuid` (asked before each such `fchown`) is read once: roost never
//!   changes its user.

use libsql::ffi;
use std::ffi::{c_char, c_int, CStr};
use std::sync::OnceLock;

/// The process's effective user and group, read once.
fn own_ids() -> (libc::uid_t, libc::gid_t) {
    static IDS: OnceLock<(libc::uid_t, libc::gid_t)> = OnceLock::new();
    // SAFETY: geteuid and getegid cannot fail.
    *IDS.get_or_init(|| unsafe { (libc::geteuid(), libc::getegid()) })
}

unsafe extern "C" fn open_noatime(path: *const c_char, flags: c_int, mode: c_int) -> c_int {
    // SAFETY: SQLite passes a NUL-terminated path, as open(2) needs.
    unsafe {
        let fd = libc::open(path, flags | libc::O_NOATIME, mode as libc::c_uint);
        if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
            return libc::open(path, flags, mode as libc::c_uint);
        }
        fd
    }
}

unsafe extern "C" fn fchown_unless_own(fd: c_int, uid: libc::uid_t, gid: libc::gid_t) -> c_int {
    if (uid, gid) == own_ids() {
        return 0;
    }
    // SAFETY: fchown takes any descriptor and ids; a bad one is an error.
    unsafe { libc::fchown(fd, uid, gid) }
}

unsafe extern "C" fn geteuid_once() -> libc::uid_t {
    own_ids().0
}

type Open = unsafe extern "C" fn(*const c_char, c_int, c_int) -> c_int;
type Fchown = unsafe extern "C" fn(c_int, libc::uid_t, libc::gid_t) -> c_int;
type Geteuid = unsafe extern "C" fn() -> libc::uid_t;

/// The replacements, as SQLite's table holds them (type-erased).
fn replacements() -> [(&'static CStr, unsafe extern "C" fn()); 3] {
    // SAFETY: SQLite casts each entry back to the signature of the call it
    // names before calling it; these have exactly those signatures.
    unsafe {
        [
            (
                c"open",
                std::mem::transmute::<Open, unsafe extern "C" fn()>(open_noatime),
            ),
            (
                c"fchown",
                std::mem::transmute::<Fchown, unsafe extern "C" fn()>(fchown_unless_own),
            ),
            (
                c"geteuid",
                std::mem::transmute::<Geteuid, unsafe extern "C" fn()>(geteuid_once),
            ),
        ]
    }
}

/// Installs the replacements in the unix VFS `base`; a call SQLite does
/// not know is left as it is.
///
/// # Safety
/// `base` must be a registered unix VFS (never freed by SQLite).
pub(super) unsafe fn install(base: *mut ffi::sqlite3_vfs) {
    own_ids();
    // SAFETY: the caller vouches for base; the names are NUL-terminated.
    unsafe {
        let Some(set) = (*base).xSetSystemCall else {
            return;
        };
        for (name, call) in replacements() {
            set(base, name.as_ptr(), Some(call));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_vfs_chowns_through_the_replacement() {
        assert!(crate::store::vfs::register());
        let file = tempfile::NamedTempFile::new().unwrap();
        let before = file.as_file().metadata().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        // SAFETY: the unix VFS is registered; its "fchown" entry has the
        // signature of fchown(2), and the descriptor is open.
        let rc = unsafe {
            let base = ffi::sqlite3_vfs_find(c"unix-none".as_ptr());
            let get = (*base).xGetSystemCall.unwrap();
            let call = get(base, c"fchown".as_ptr()).unwrap();
            let call = std::mem::transmute::<unsafe extern "C" fn(), Fchown>(call);
            let (uid, gid) = own_ids();
            call(std::os::fd::AsRawFd::as_raw_fd(file.as_file()), uid, gid)
        };
        assert_eq!(rc, 0);
        // The real fchown(2) would have updated the change time.
        let after = file.as_file().metadata().unwrap();
        assert_eq!(
            (before.ctime(), before.ctime_nsec()),
            (after.ctime(), after.ctime_nsec())
        );
    }

    #[test]
    fn open_creates_and_reopens_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        for flags in [libc::O_RDWR | libc::O_CREAT, libc::O_RDONLY] {
            // SAFETY: a valid path; the descriptor is closed at once.
            let fd = unsafe { open_noatime(c_path.as_ptr(), flags, 0o644) };
            assert!(fd >= 0, "{}", std::io::Error::last_os_error());
            unsafe { libc::close(fd) };
        }
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
    }

    #[test]
    fn geteuid_is_the_process_own() {
        // SAFETY: both only read the process's user.
        assert_eq!(unsafe { geteuid_once() }, unsafe { libc::geteuid() });
    }
}
