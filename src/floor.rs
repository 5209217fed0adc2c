//! The shared floor: the few helpers every module may use and that import
//! nothing of ours. [`crate::job`] (the shared nouns) builds on this alone.

use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// The app every top-level config section describes.
pub const DEFAULT_APP: &str = "default";

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    ms_since_epoch(SystemTime::now())
}

/// Milliseconds since the Unix epoch at `t` (0 before the epoch).
pub fn ms_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Locks `m`, ignoring poisoning. Every lock of ours guards a few field
/// writes that a panic cannot leave half-done in a way that loses work or
/// unbalances the books, so a poisoned lock is still safe to use; stopping
/// the gateway over it would lose more than it saves.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
