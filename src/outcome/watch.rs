//! Waiting for a job's per-token outcomes (`?wait`, gorush's sync mode):
//! a [`Sink`] that keeps the outcomes of the jobs someone watches and hands
//! them over when the job is done ([`Sink::job_done`]).
//!
//! A waiter holds a one-shot receiver, nothing else: no worker, no lock,
//! no timer but its own deadline. The job's last outcome wakes it. Jobs no
//! one watches cost one atomic load per outcome.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Finished, Sink};
use crate::floor::lock;
use crate::job::{JobId, JobProgress, Outcome};

/// One token's outcome, as a waiter gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenResult {
    /// Its index within the job.
    pub index: u32,
    /// The token as its platform shows it.
    pub token: String,
    /// What became of it.
    pub outcome: Outcome,
}

#[derive(Default)]
struct Entry {
    results: Vec<TokenResult>,
    done: Option<oneshot::Sender<Vec<TokenResult>>>,
}

/// The watched jobs. One per gateway, among the recorder's sinks.
#[derive(Default)]
pub struct Watch {
    /// Jobs watched now: zero means no outcome takes the lock.
    watched: AtomicUsize,
    jobs: Mutex<HashMap<JobId, Entry>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("watched", &self.watched.load(Ordering::Relaxed))
            .finish()
    }
}

impl Watch {
    /// Starts watching job `id`: call it before the job is admitted, so no
    /// outcome can come first. The watch ends when the [`Waiter`] is dropped.
    pub fn watch(self: &Arc<Self>, id: JobId) -> Waiter {
        let (tx, rx) = oneshot::channel();
        lock(&self.jobs).insert(
            id,
            Entry {
                results: Vec::new(),
                done: Some(tx),
            },
        );
        self.watched.fetch_add(1, Ordering::AcqRel);
        Waiter {
            id,
            rx: Some(rx),
            watch: self.clone(),
        }
    }

    /// Jobs watched now.
    pub fn watched(&self) -> usize {
        self.watched.load(Ordering::Acquire)
    }
}

impl Sink for Watch {
    fn finished(&self, f: &Finished<'_>) {
        if self.watched.load(Ordering::Acquire) == 0 {
            return;
        }
        if let Some(entry) = lock(&self.jobs).get_mut(&f.progress.id) {
            entry.results.push(TokenResult {
                index: f.index,
                token: f.token.to_owned(),
                outcome: f.outcome.clone(),
            });
        }
    }

    fn job_done(&self, progress: &JobProgress) {
        if self.watched.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut jobs = lock(&self.jobs);
        if let Some(entry) = jobs.get_mut(&progress.id)
            && let Some(done) = entry.done.take()
        {
            let mut results = std::mem::take(&mut entry.results);
            results.sort_by_key(|r| r.index);
            // The waiter may have gone: then no one wants them.
            let _ = done.send(results);
        }
    }
}

/// Someone waiting for one job (see [`Watch::watch`]).
pub struct Waiter {
    id: JobId,
    rx: Option<oneshot::Receiver<Vec<TokenResult>>>,
    watch: Arc<Watch>,
}

impl Waiter {
    /// The job's outcomes, in token order, when it is done within `within`;
    /// `None` when it is not.
    pub async fn wait(mut self, within: Duration) -> Option<Vec<TokenResult>> {
        let rx = self.rx.take()?;
        match tokio::time::timeout(within, rx).await {
            Ok(Ok(results)) => Some(results),
            _ => None,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if lock(&self.watch.jobs).remove(&self.id).is_some() {
            self.watch.watched.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Recorder;

    #[tokio::test]
    async fn a_waiter_is_woken_by_the_last_outcome_with_every_token_in_order() {
        let watch = Arc::new(Watch::default());
        let recorder = Recorder::new(vec![watch.clone()]);
        let progress = JobProgress::new(JobId::new(), crate::job::test::PLATFORM, 2);
        let other = JobProgress::new(JobId::new(), crate::job::test::PLATFORM, 1);
        let waiter = watch.watch(progress.id);
        assert_eq!(watch.watched(), 1);
        let failed = Outcome::Failed {
            reason: Arc::from("BadDeviceToken"),
            status: 400,
        };
        recorder.finish_shown(&progress, 1, "b", failed.clone(), true, None);
        recorder.finish_shown(&other, 0, "x", Outcome::Success, true, None);
        recorder.finish_shown(&progress, 0, "a", Outcome::Success, true, None);
        let results = waiter.wait(Duration::from_secs(5)).await.expect("done");
        assert_eq!(
            results
                .iter()
                .map(|r| (r.token.as_str(), r.outcome.clone()))
                .collect::<Vec<_>>(),
            vec![("a", Outcome::Success), ("b", failed)]
        );
        assert_eq!(watch.watched(), 0, "the watch ends with its waiter");
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_not_done_within_the_wait_gives_none_and_is_forgotten() {
        let watch = Arc::new(Watch::default());
        let id = JobId::new();
        let waiter = watch.watch(id);
        assert_eq!(waiter.wait(Duration::from_secs(1)).await, None);
        assert_eq!(watch.watched(), 0);
        assert!(lock(&watch.jobs).is_empty());
    }
}
