//! A [`Lane`]: one app of one platform's in-process queue, and the steps
//! every worker shares, written once: rebuild a handed-off job's message and
//! queue its tokens ([`Deliver`]), and settle an answer's verdict into an
//! outcome, a retry or an expiry. A platform's workers pull from the lane's
//! queue and classify answers; what follows a verdict is the lane's.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use super::handoff::{Built, Deliver, Handoff, Refused};
use crate::job::{Job, Outcome, OutcomeKind, Platform};
use crate::message::MessageError;
use crate::outcome::Recorder;
use crate::queue::{DispatchQueue, Work};
use crate::retry::{self, Backoff, Next, Verdict};

/// Rebuilds a platform's message from the bytes it stored at the API.
type Rebuild<M> = Box<dyn Fn(&[u8]) -> Result<M, MessageError> + Send + Sync>;

/// One app's queue of one platform, and how its verdicts settle.
pub struct Lane<M> {
    platform: Platform,
    queue: DispatchQueue<M>,
    recorder: Recorder,
    backoff: Backoff,
    max_retries: u32,
    deadline_reason: Option<Arc<str>>,
    rebuild: Rebuild<M>,
}

impl<M> std::fmt::Debug for Lane<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("platform", &self.platform)
            .field("depth", &self.queue.depth())
            .finish()
    }
}

/// What settling a verdict did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The tokens reached this outcome.
    Finished(OutcomeKind),
    /// The tokens go again after a delay.
    Retried,
    /// Out of retries, or a retry would come after the job's deadline.
    Expired,
}

/// How a lane is set up.
pub struct LaneSettings<M> {
    /// Whose jobs it carries.
    pub platform: Platform,
    /// The outcome fan-out.
    pub recorder: Recorder,
    /// Delays between retries.
    pub backoff: Backoff,
    /// Retries per token.
    pub max_retries: u32,
    /// The reason a token ends with when a retry would come after its job's
    /// deadline; `None`: the last retryable reason.
    pub deadline_reason: Option<&'static str>,
    /// Rebuilds the platform's message from its stored bytes.
    pub rebuild: Rebuild<M>,
}

impl<M: Send + Sync + 'static> Lane<M> {
    /// A lane with an empty queue.
    pub fn new(settings: LaneSettings<M>) -> Arc<Self> {
        let LaneSettings {
            platform,
            recorder,
            backoff,
            max_retries,
            deadline_reason,
            rebuild,
        } = settings;
        Arc::new(Self {
            platform,
            queue: DispatchQueue::new(),
            recorder,
            backoff,
            max_retries,
            deadline_reason: deadline_reason.map(Arc::from),
            rebuild,
        })
    }

    /// Where its workers take work from.
    pub fn queue(&self) -> &DispatchQueue<M> {
        &self.queue
    }

    /// The outcome fan-out.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Ends token `index` with an upstream's answer (`unique_id`: the
    /// upstream's id for this delivery, when it gave one).
    pub fn finish(&self, job: &Job<M>, index: u32, outcome: Outcome, unique_id: Option<&str>) {
        self.recorder
            .finish_noted(job, index, outcome, true, unique_id);
    }

    /// Applies one verdict to every token of `tokens`, all at attempt
    /// number `attempts`: an outcome, a retry through the queue's timer
    /// heap (no task sleeps per token), or an expiry.
    pub fn settle(
        &self,
        job: &Arc<Job<M>>,
        tokens: Range<u32>,
        attempts: u32,
        verdict: Verdict,
        unique_id: Option<&str>,
    ) -> Settled {
        match verdict {
            Verdict::Done(outcome) => {
                let kind = outcome.kind();
                for index in tokens {
                    self.finish(job, index, outcome.clone(), unique_id);
                }
                Settled::Finished(kind)
            }
            Verdict::Retry {
                reason,
                retry_after,
            } => self.retry(
                job,
                tokens.map(|i| (i, reason.clone())),
                attempts,
                retry_after,
            ),
            // The caller dropped the stale credential: go again straight away
            // (the backoff still adds a little jitter).
            Verdict::RefreshCredentials { reason } => self.retry(
                job,
                tokens.map(|i| (i, reason.clone())),
                attempts,
                Some(Duration::ZERO),
            ),
        }
    }

    /// Schedules `entries` (index and retry reason, ascending) for another
    /// attempt, or ends them expired when out of retries or time.
    /// Consecutive indices travel as one piece of work.
    pub fn retry(
        &self,
        job: &Arc<Job<M>>,
        entries: impl IntoIterator<Item = (u32, Arc<str>)>,
        attempts: u32,
        retry_after: Option<Duration>,
    ) -> Settled {
        let attempt = attempts + 1;
        let next = retry::next(&self.backoff, attempt, self.max_retries, retry_after);
        match next {
            Next::RetryIn(delay) if !job.expires_within(delay) => {
                let mut run: Option<Range<u32>> = None;
                for (index, reason) in entries {
                    self.recorder.retry(&job.progress, &reason);
                    run = match run {
                        Some(r) if r.end == index => Some(r.start..index + 1),
                        Some(r) => {
                            self.push_retry(job, r, attempt, delay);
                            Some(index..index + 1)
                        }
                        None => Some(index..index + 1),
                    };
                }
                if let Some(r) = run {
                    self.push_retry(job, r, attempt, delay);
                }
                Settled::Retried
            }
            _ => {
                let late = matches!(next, Next::RetryIn(_));
                for (index, reason) in entries {
                    let reason = match (&self.deadline_reason, late) {
                        (Some(deadline), true) => deadline.clone(),
                        _ => reason,
                    };
                    self.finish(job, index, Outcome::Expired { reason }, None);
                }
                Settled::Expired
            }
        }
    }

    fn push_retry(&self, job: &Arc<Job<M>>, tokens: Range<u32>, attempts: u32, delay: Duration) {
        let work = Work {
            job: job.clone(),
            tokens,
            attempts,
        };
        self.queue.push_after(work, delay);
    }
}

impl<M: Send + Sync + 'static> Deliver for Lane<M> {
    fn platform(&self) -> Platform {
        self.platform
    }

    fn deliver(&self, mut handoff: Handoff) -> Result<(), Refused> {
        let built = handoff.built.take().and_then(Built::take::<M>);
        let message = match built.map_or_else(|| (self.rebuild)(&handoff.fields), Ok) {
            Ok(m) => m,
            Err(e) => return Err(Refused::message(e, handoff)),
        };
        let (job, send) = handoff.into_job(message);
        self.queue.push_ranges(&job, send);
        Ok(())
    }

    fn queue_depth(&self) -> usize {
        self.queue.depth()
    }

    fn close(&self) {
        self.queue.close();
    }

    fn abandon_queued(&self) -> u64 {
        self.queue.abandon(&self.recorder)
    }

    fn forget_queued(&self) -> u64 {
        self.queue.forget()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::job::{JobId, JobProgress, TokenList, test};

    fn handoff(built: Option<Built>) -> Handoff {
        let mut tokens = TokenList::default();
        tokens.push(b"t");
        let id = JobId::new();
        Handoff {
            id,
            app: "default".into(),
            fields: Arc::from(&b"stored"[..]),
            built,
            send: Handoff::all(&tokens),
            tokens,
            progress: Arc::new(JobProgress::new(id, test::PLATFORM, 1)),
            expires_at: None,
        }
    }

    /// A job the API just built reaches the queue as built; only one read
    /// back from a store is rebuilt from its stored bytes.
    #[test]
    fn a_built_message_is_not_built_again() {
        let rebuilt = Arc::new(AtomicUsize::new(0));
        let counter = rebuilt.clone();
        let lane: Arc<Lane<String>> = Lane::new(LaneSettings {
            platform: test::PLATFORM,
            recorder: Recorder::new(Vec::new()),
            backoff: Backoff::default(),
            max_retries: 1,
            deadline_reason: None,
            rebuild: Box::new(move |stored| {
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(String::from_utf8_lossy(stored).into_owned())
            }),
        });
        lane.deliver(handoff(Some(Built::new("built".to_owned()))))
            .expect("queued");
        lane.deliver(handoff(None)).expect("queued");
        assert_eq!(rebuilt.load(Ordering::Relaxed), 1);
        let first = lane.queue().try_pop(10).expect("work");
        assert_eq!(first.job.message, "built");
        let second = lane.queue().try_pop(10).expect("work");
        assert_eq!(second.job.message, "stored");
    }
}
