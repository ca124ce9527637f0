//! Giving freed heap memory back to the operating system after large, rare work.
//!
//! glibc's allocator keeps what a thread freed in that thread's arena for reuse; after a
//! fan-out to thousands of namespaces, or a plugin compilation on a blocking thread, tens
//! of MiB stay resident although nothing uses them. [`release_free_memory`] asks glibc
//! (`malloc_trim(0)`, see malloc_trim(3)) to return the free pages of every arena, so the
//! idle RSS reflects what the caches hold. Elsewhere (musl, other systems) it does nothing.

/// How many targets a reconcile must have touched for its end to release freed memory.
/// Below this, what a reconcile frees is small and reused by the next one.
pub const LARGE_RECONCILE_TARGETS: usize = 256;

/// Returns the free pages of every malloc arena to the operating system. It walks every
/// arena under its lock: call it after rare, large work, not per request.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only reads and updates the allocator's own state under its
    // locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
