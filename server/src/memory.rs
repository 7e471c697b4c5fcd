//! Giving memory back to the system as the backlog moves through it.
//!
//! mcqd's memory is bounded by design (queued messages live on disk, see
//! `queue::Backlog`), but glibc's allocator keeps what is freed unless told
//! otherwise, so RSS would record the high-water mark of every transient
//! peak instead of what is in use. The peaks come once per sealed segment:
//! its index is built and written (buffers of 24 bytes per message in the
//! segment) and its queues' locators there are freed as they are paged out.
//! Measured on the development VM, filling 16 queues with 100-byte messages
//! (16 MiB segments): RSS crept up by 10-25 MiB over the first few million
//! messages, 45 MiB of it free heap that `malloc_trim` returned.

/// Makes the allocator give large blocks back when they are freed: a fixed
/// 1 MiB mmap threshold (glibc's default raises the threshold after each
/// large free, so the next large blocks come from the heap and stay).
/// Called once, before any thread starts.
pub fn return_large_frees() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Returns the free heap to the system: after a segment's index is written
/// and its messages paged out (once per segment, about a millisecond).
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim is thread-safe and only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
