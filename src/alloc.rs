//! The binary's global allocator: mimalloc, except on actor threads.
//!
//! mimalloc keeps a heap per thread, with a page per size class the thread
//! has used. Request threads are few and busy, which is what it is good at.
//! Actor threads are many (one per open actor) and mostly idle, and each
//! held about 70 KiB of its own half-empty mimalloc pages: the largest part
//! of an idle actor's memory. Actor threads therefore allocate from the
//! system allocator, shared by all threads (SQLite, which does most of an
//! actor's allocating, already uses it; the binary keeps glibc to one
//! arena, see [`use_one_system_arena`]).
//!
//! Memory often moves between the two kinds of thread (an answer built on
//! an actor thread is freed by a request thread), so a free goes to
//! whichever allocator owns the pointer, asked of mimalloc's page map.

use libmimalloc_sys::mi_is_in_heap_region;
use mimalloc::MiMalloc;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // Const-initialised and without a destructor: safe to read from inside
    // the allocator, even while the thread exits.
    static SYSTEM_HEAP: Cell<bool> = const { Cell::new(false) };
}

/// Makes the calling thread allocate from the system allocator from now on
/// (when [`RoostAlloc`] is the global allocator; otherwise it changes nothing).
pub fn use_system_heap_on_this_thread() {
    SYSTEM_HEAP.with(|flag| flag.set(true));
}

/// Makes every thread share glibc's main arena (call before any thread
/// starts; a no-op on other C libraries).
///
/// glibc gives threads arenas of their own, and such an arena grows one
/// `mprotect` call per 4 KiB page (only the main arena grows in steps of
/// `M_TOP_PAD`). Opening a cold actor allocates about 50 KiB from SQLite,
/// so on a growing heap each open made about eight of them, each taking
/// the process's memory-map lock: with one arena, cold opens took 86–108 µs
/// at p50 instead of 116–122 µs (scale and counter suites, alternating
/// runs). Small allocations still go through glibc's per-thread caches
/// without the arena's lock, and the hot request threads use mimalloc.
pub fn use_one_system_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocator settings.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

fn on_system_heap() -> bool {
    SYSTEM_HEAP.with(Cell::get)
}

/// mimalloc for most threads, the system allocator for actor threads.
pub struct RoostAlloc;

impl RoostAlloc {
    fn owner_of(ptr: *mut u8) -> &'static dyn GlobalAlloc {
        // SAFETY: mi_is_in_heap_region only looks the address up in
        // mimalloc's page map; any pointer value is allowed.
        if unsafe { mi_is_in_heap_region(ptr.cast()) } {
            &MiMalloc
        } else {
            &System
        }
    }

    fn for_this_thread() -> &'static dyn GlobalAlloc {
        if on_system_heap() {
            &System
        } else {
            &MiMalloc
        }
    }
}

// SAFETY: every block is allocated by one of two correct allocators and
// given back to the one that owns it (mimalloc's page map tells them apart),
// with the layout it was allocated with.
unsafe impl GlobalAlloc for RoostAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        unsafe { Self::for_this_thread().alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        unsafe { Self::for_this_thread().alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from its owner.
        unsafe { Self::owner_of(ptr).dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as dealloc; the block stays with the allocator that owns it.
        unsafe { Self::owner_of(ptr).realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block's address, sent between threads as an integer.
    fn allocate_on_new_thread(system: bool, layout: Layout) -> usize {
        std::thread::spawn(move || {
            if system {
                use_system_heap_on_this_thread();
            }
            // SAFETY: a non-zero layout; the block is freed by the caller.
            let ptr = unsafe { RoostAlloc.alloc(layout) };
            assert!(!ptr.is_null());
            // SAFETY: the block is `layout.size()` bytes long.
            unsafe { ptr.write_bytes(0xAB, layout.size()) };
            ptr as usize
        })
        .join()
        .unwrap()
    }

    #[test]
    fn blocks_go_back_to_their_own_allocator_from_any_thread() {
        let layout = Layout::from_size_align(200, 8).unwrap();
        let from_actor = allocate_on_new_thread(true, layout) as *mut u8;
        let from_worker = allocate_on_new_thread(false, layout) as *mut u8;
        // SAFETY: both addresses are live blocks of `layout` from RoostAlloc.
        unsafe {
            assert!(!mi_is_in_heap_region(from_actor.cast()));
            assert!(mi_is_in_heap_region(from_worker.cast()));
            // Grown on this (mimalloc) thread, the system block stays with
            // the system allocator, contents intact.
            let grown = RoostAlloc.realloc(from_actor, layout, 4096);
            assert!(!mi_is_in_heap_region(grown.cast()));
            assert_eq!(*grown.add(199), 0xAB);
            RoostAlloc.dealloc(grown, Layout::from_size_align(4096, 8).unwrap());
            RoostAlloc.dealloc(from_worker, layout);
        }
    }
}
