//! [`Admission`]: the gateway-wide bound on accepted, unfinished tokens
//! (`queue.capacity`); a full gateway answers 503 rather than grow. It is
//! an outcome sink: every terminal outcome frees one token's room.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::job::JobProgress;
use crate::outcome::{Arrival, Finished, Sink};

/// The gateway-wide bound on unfinished tokens.
#[derive(Debug)]
pub struct Admission {
    capacity: u64,
    pending: AtomicU64,
}

/// The queue has no room for a request's tokens.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("queue full: {pending} of {capacity} tokens pending, {wanted} more refused")]
pub struct QueueFull {
    /// Tokens pending when refused.
    pub pending: u64,
    /// `queue.capacity`.
    pub capacity: u64,
    /// Tokens the request carried.
    pub wanted: u64,
}

impl Admission {
    /// A bound of `capacity` tokens.
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            pending: AtomicU64::new(0),
        }
    }

    /// Reserves room for `n` tokens, all or nothing.
    pub fn try_admit(&self, n: u64) -> Result<(), QueueFull> {
        let mut current = self.pending.load(Ordering::Relaxed);
        loop {
            if current.saturating_add(n) > self.capacity {
                return Err(QueueFull {
                    pending: current,
                    capacity: self.capacity,
                    wanted: n,
                });
            }
            match self.pending.compare_exchange_weak(
                current,
                current + n,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }

    /// Counts `n` tokens taken from the shared queue (backend `redis`): they
    /// were admitted cluster-wide when accepted, so no bound applies here;
    /// counting them keeps `pending` and the releases balanced.
    pub fn force_admit(&self, n: u64) {
        self.pending.fetch_add(n, Ordering::AcqRel);
    }

    /// Frees room for `n` tokens that reached an outcome (or were handed
    /// back to the backend's store at shutdown).
    pub fn release(&self, n: u64) {
        let _ = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(n))
            });
    }

    /// Tokens admitted and not yet released.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// `queue.capacity`.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

impl Sink for Admission {
    fn accepted(&self, progress: &Arc<JobProgress>, n: u64, arrival: Arrival) {
        // Jobs accepted here (and streams' parts) reserved their room in
        // `try_admit` before being counted; a recovered job needs room for
        // its unfinished tokens only, a taken chunk for its tokens.
        match arrival {
            Arrival::New | Arrival::Grown => {}
            Arrival::Recovered => self.force_admit(progress.pending()),
            Arrival::Taken => self.force_admit(n),
        }
    }

    fn finished(&self, _finished: &Finished<'_>) {
        self.release(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_is_all_or_nothing() {
        let a = Admission::new(10);
        assert!(a.try_admit(6).is_ok());
        let full = a.try_admit(5).expect_err("over capacity");
        assert_eq!((full.pending, full.wanted), (6, 5));
        assert_eq!(a.pending(), 6);
        a.release(6);
        assert!(a.try_admit(10).is_ok());
    }
}
