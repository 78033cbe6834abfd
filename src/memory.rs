//! glibc malloc settings that keep the server's memory flat.
//!
//! By default glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after
//! which multi-MB buffers come from per-thread heaps that keep their freed pages. Measured on the
//! 200-image request (`make bench`, two sessions): fixing the threshold at 128 KiB (with
//! `malloc_trim` after loading) lowers peak RSS from ~170 to ~153 MB with the optimized-graph cache
//! and from ~203 to ~180 MB without, at the same time per image, because the per-image buffers are
//! reused (see `detector::Model::detect`) and ORT's arena allocates once.

/// The threshold objdet sets: glibc's own default, made fixed.
pub const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Fixes glibc's mmap threshold, unless the operator configured malloc through glibc's own
/// variables (`tuned_by_env`: `config::ProcessConfig::malloc_tuned_by_env`), which win.
/// Returns whether it changed anything. A no-op on non-glibc targets.
pub fn tune_malloc(tuned_by_env: bool) -> bool {
    if tuned_by_env {
        return false;
    }
    set_mmap_threshold(MMAP_THRESHOLD)
}

/// Returns freed heap pages to the OS (after loading the model, whose parsing leaves freed blocks).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own heaps; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Puts the calling thread in Linux's idle scheduling class (`SCHED_IDLE`): it runs only on
/// otherwise idle cores. For work that must not slow the requests being served (building the pool
/// sessions after start-up). An unprivileged thread cannot undo it; use a thread of its own.
pub fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for SCHED_IDLE.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the thread's priority");
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_mmap_threshold(bytes: i32) -> bool {
    // SAFETY: mallopt is thread-safe and only changes glibc's allocation policy for later calls.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_mmap_threshold(_bytes: i32) -> bool {
    false
}
