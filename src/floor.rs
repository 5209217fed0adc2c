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

/// A rate limit for one kind of log line: [`Throttle::ready`] says yes at
/// most once per period, so a burst of 100k identical refusals (bad
/// credentials, a message every token fails on) logs one line, not 100k.
#[derive(Debug)]
pub struct Throttle {
    every_ms: u64,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Throttle {
    /// At most one line per `every`.
    pub const fn new(every: std::time::Duration) -> Self {
        Self {
            every_ms: every.as_millis() as u64,
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// True when a line may go out now (and counts it).
    pub fn ready(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = now_ms();
        let last = self.last_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= self.every_ms
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_lets_one_line_through_per_period() {
        let t = Throttle::new(std::time::Duration::from_secs(3600));
        assert!(t.ready());
        assert!(!t.ready());
        assert!(!t.ready());
    }
}
