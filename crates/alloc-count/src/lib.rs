//! A counting global allocator for the tests that prove a hot path makes no heap
//! allocation per I/O (test support only; never a dependency of a library).
//!
//! A test binary installs it with
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: alloc_count::Counting = alloc_count::Counting;
//! ```
//!
//! and then counts in one of two ways:
//! - [`on_this_thread`]: only the calling thread's allocations while a closure runs, so the
//!   test harness's other threads (its main loop, timers) cannot disturb the count;
//! - [`process_total`] before and after: every thread's, for a path that crosses threads
//!   (a host and a target in one process); such a test must be alone in its binary.
//!
//! Installing it is per test binary: benchmarks and other tests keep the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// The allocator: forwards every call to [`System`] unchanged and counts allocations and
/// reallocations (deallocations are not counted).
pub struct Counting;

static PROCESS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's count while [`on_this_thread`] runs; `None` otherwise.
    static THREAD: Cell<Option<u64>> = const { Cell::new(None) };
}

fn count() {
    PROCESS.fetch_add(1, Ordering::Relaxed);
    // `try_with`: the thread-local may already be gone while a thread exits.
    let _ = THREAD.try_with(|t| {
        if let Some(n) = t.get() {
            t.set(Some(n + 1));
        }
    });
}

// SAFETY: forwards every call to `System` with the same arguments; counting allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns its result with the number of heap allocations (and reallocations)
/// the calling thread made meanwhile. Zero whenever [`Counting`] is not the global allocator,
/// so a test asserting zero should also assert [`installed`].
pub fn on_this_thread<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let outer = THREAD.with(|t| t.replace(Some(0)));
    let r = f();
    let n = THREAD.with(|t| t.replace(outer)).unwrap_or(0);
    if let Some(o) = outer {
        THREAD.with(|t| t.set(Some(o + n)));
    }
    (r, n)
}

/// Allocations (and reallocations) made by every thread of the process so far.
pub fn process_total() -> u64 {
    PROCESS.load(Ordering::Relaxed)
}

/// Whether [`Counting`] is the global allocator of this binary (it has seen an allocation).
pub fn installed() -> bool {
    let before = process_total();
    std::hint::black_box(Box::new(0u8));
    process_total() > before
}
