//! Cooperative cancellation: the binary's SIGINT/SIGTERM handler sets a flag that long loops
//! (the ensemble between passes, the sliding window between batches) check, so a run stops
//! within one batch, its staging folder is removed, and the process exits 130.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Asks every running loop to stop (safe to call from a signal handler thread).
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// True once cancellation was requested.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
