//! Delayed sends: jobs with `send_at` / `delay_seconds` wait here, one heap
//! entry per job (not a task or timer per token), and are released to their
//! platform's queue when due. Their tokens count as pending the whole time,
//! so admission and the books treat them like any accepted work.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::job::{JobId, Outcome};

/// What to do with a held job: release it to its queue, or end it (every
/// token recorded with the given outcome).
pub struct Held {
    /// Queues the job.
    pub release: Box<dyn FnOnce() + Send>,
    /// Finishes every token with this outcome (`cancelled` when the sender
    /// cancels, `expired` when the process shuts down first).
    pub cancel: Box<dyn FnOnce(Outcome) + Send>,
}

/// The scheduler: a heap of due times and the held jobs by id.
#[derive(Default)]
pub struct Scheduler {
    state: Mutex<State>,
    notify: Notify,
}

#[derive(Default)]
struct State {
    due: BinaryHeap<Reverse<(Instant, u64, JobId)>>,
    held: HashMap<JobId, Held>,
    sequence: u64,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("held", &self.len())
            .finish()
    }
}

impl Scheduler {
    /// Starts the release task.
    pub fn start() -> Arc<Self> {
        let scheduler = Arc::new(Self::default());
        tokio::spawn(run(scheduler.clone()));
        scheduler
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::floor::lock(&self.state)
    }

    /// Holds job `id` until `delay` has passed.
    pub fn hold(&self, id: JobId, delay: Duration, held: Held) {
        {
            let mut state = self.lock();
            state.sequence += 1;
            let sequence = state.sequence;
            state
                .due
                .push(Reverse((Instant::now() + delay, sequence, id)));
            state.held.insert(id, held);
        }
        self.notify.notify_one();
    }

    /// Cancels a held job. False when it is not (or no longer) held here.
    pub fn cancel(&self, id: &JobId) -> bool {
        // The heap entry stays and is skipped when it comes due.
        let held = self.lock().held.remove(id);
        match held {
            Some(held) => {
                (held.cancel)(Outcome::Cancelled);
                true
            }
            None => false,
        }
    }

    /// Jobs held now.
    pub fn len(&self) -> usize {
        self.lock().held.len()
    }

    /// True when no job is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends everything held as expired (`Shutdown`): a delayed send must not go
    /// out early, and the process is going away. Returns how many jobs.
    pub fn expire_all(&self) -> usize {
        let held: Vec<Held> = self.lock().held.drain().map(|(_, h)| h).collect();
        let n = held.len();
        for h in held {
            (h.cancel)(Outcome::Expired {
                reason: "Shutdown".into(),
            });
        }
        n
    }

    /// Drops everything held without an outcome: the backend keeps those
    /// jobs (and their `send_at`) for the next start. Returns how many jobs.
    pub fn forget_all(&self) -> usize {
        let mut state = self.lock();
        state.due.clear();
        let n = state.held.len();
        state.held.clear();
        n
    }

    /// Takes the jobs due by `now`; returns them and the next due time.
    fn take_due(&self, now: Instant) -> (Vec<Held>, Option<Instant>) {
        let mut state = self.lock();
        let mut ready = Vec::new();
        while let Some(Reverse((due, _, id))) = state.due.peek().copied() {
            if due > now {
                return (ready, Some(due));
            }
            state.due.pop();
            if let Some(held) = state.held.remove(&id) {
                ready.push(held);
            }
        }
        (ready, None)
    }
}

async fn run(scheduler: Arc<Scheduler>) {
    loop {
        let notified = scheduler.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (ready, next) = scheduler.take_due(Instant::now());
        for held in ready {
            (held.release)();
        }
        match next {
            Some(due) => {
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep_until(due) => {}
                }
            }
            None => notified.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting(released: &Arc<AtomicUsize>, cancelled: &Arc<AtomicUsize>) -> Held {
        let (r, c) = (released.clone(), cancelled.clone());
        Held {
            release: Box::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
            }),
            cancel: Box::new(move |_| {
                c.fetch_add(1, Ordering::SeqCst);
            }),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn releases_when_due_and_cancels_on_request() {
        let scheduler = Scheduler::start();
        let (released, cancelled) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (a, b) = (JobId::new(), JobId::new());
        scheduler.hold(a, Duration::from_secs(60), counting(&released, &cancelled));
        scheduler.hold(b, Duration::from_secs(120), counting(&released, &cancelled));
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(released.load(Ordering::SeqCst), 0);
        assert!(scheduler.cancel(&b));
        assert!(!scheduler.cancel(&b), "cancelled once");
        tokio::time::sleep(Duration::from_secs(31)).await;
        tokio::task::yield_now().await;
        assert_eq!(released.load(Ordering::SeqCst), 1);
        assert_eq!(cancelled.load(Ordering::SeqCst), 1);
        assert!(scheduler.is_empty());
        assert!(!scheduler.cancel(&a), "already released");
    }
}
