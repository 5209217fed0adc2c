//! The outcome fan-out. Workers hold a [`Recorder`] and tell it what became
//! of each token; it hands every event, in order, to each [`Sink`]
//! registered when the gateway was built: the reports, the metrics, the
//! webhook, the admission bound and the backend's own store. A sink is told,
//! never asked, so no sink knows any other, and none knows the workers.
//!
//! Calls are synchronous and cheap (a few counter writes, or a push into a
//! buffer the sink flushes on its own schedule), which is what keeps
//! `accepted = pending + Σ outcomes` true at every instant.

pub mod watch;

use std::ops::Range;
use std::sync::Arc;

use crate::books::Posting;
use crate::floor::now_ms;
use crate::job::{Job, JobProgress, Outcome};

/// How a job came to be counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Accepted by this gateway's API just now.
    New,
    /// A chunk taken from a shared queue (backend `redis`): accepted
    /// cluster-wide earlier, counted in this gateway's books now.
    Taken,
    /// Reloaded from the gateway's own store at start (backend `disk`): the
    /// stored counters already hold it.
    Recovered,
    /// More tokens of a job accepted here and still open (a stream's part).
    Grown,
}

/// One token's terminal outcome.
#[derive(Debug)]
pub struct Finished<'a> {
    /// The job (or chunk) it belongs to.
    pub progress: &'a JobProgress,
    /// Its index within the job's tokens.
    pub index: u32,
    /// The token as its platform's codec shows it.
    pub token: &'a str,
    /// The outcome.
    pub outcome: &'a Outcome,
    /// False when no upstream answer led to it (expired while queued, cancelled).
    pub attempted: bool,
    /// The upstream's id for this delivery (`apns-unique-id`), when it gave one.
    pub unique_id: Option<&'a str>,
    /// Tokens of the job (or chunk) finished now, this one included.
    pub done: u64,
}

impl Finished<'_> {
    /// What it changes in its family's books (the one mapping, see
    /// [`Posting::finished`]).
    pub fn posting(&self) -> Posting {
        Posting::finished(self.token, self.outcome, self.attempted, now_ms())
    }
}

/// Something that wants to hear about outcomes. Every method has a no-op
/// default, so a sink implements only what it keeps.
pub trait Sink: Send + Sync + 'static {
    /// `n` tokens of a job were counted as accepted (pending): all of a whole
    /// job's, or the part of a stream that just arrived.
    fn accepted(&self, _progress: &Arc<JobProgress>, _n: u64, _arrival: Arrival) {}
    /// One attempt of one token will be retried.
    fn retried(&self, _progress: &JobProgress, _reason: &str) {}
    /// `n` tokens are being resent after their connection dropped mid-request.
    fn possible_duplicates(&self, _progress: &JobProgress, _n: u64) {}
    /// A token reached its terminal outcome.
    fn finished(&self, _finished: &Finished<'_>) {}
    /// A job (or a shared job's chunk) is done: every token it took has
    /// finished and no more come. Told once, after the last `finished`.
    fn job_done(&self, _progress: &JobProgress) {}
}

/// The fan-out every worker holds: cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    sinks: Arc<[Arc<dyn Sink>]>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl Recorder {
    /// A fan-out to `sinks`, told in this order.
    pub fn new(sinks: Vec<Arc<dyn Sink>>) -> Self {
        Self {
            sinks: sinks.into(),
        }
    }

    /// Counts a job's tokens as accepted: called before the job is queued,
    /// so no worker can finish a token that was not yet counted.
    pub fn accepted(&self, progress: &Arc<JobProgress>, n: u64, arrival: Arrival) {
        for s in self.sinks.iter() {
            s.accepted(progress, n, arrival);
        }
    }

    /// Records an attempt of one of `progress`'s tokens that will be retried.
    pub fn retry(&self, progress: &JobProgress, reason: &str) {
        for s in self.sinks.iter() {
            s.retried(progress, reason);
        }
    }

    /// Records `n` tokens of `progress` resent because their connection dropped mid-request.
    pub fn possible_duplicates(&self, progress: &JobProgress, n: u64) {
        for s in self.sinks.iter() {
            s.possible_duplicates(progress, n);
        }
    }

    /// Ends tokens of `job` that will not be sent (expired, cancelled, left at
    /// shutdown) with `outcome`, without an attempt. Returns how many.
    pub fn finish_unsent<M>(&self, job: &Job<M>, tokens: Range<u32>, outcome: &Outcome) -> u64 {
        let n = tokens.len() as u64;
        for index in tokens {
            self.finish(job, index, outcome.clone(), false);
        }
        n
    }

    /// Records token `index` of `job`'s terminal outcome. `attempted` is false
    /// when no upstream answer led to it (expired while queued, cancelled).
    pub fn finish<M>(&self, job: &Job<M>, index: u32, outcome: Outcome, attempted: bool) {
        self.finish_noted(job, index, outcome, attempted, None);
    }

    /// [`Recorder::finish`], keeping the upstream's id for this delivery
    /// (`apns-unique-id`) in the job's status and on its webhook event.
    pub fn finish_noted<M>(
        &self,
        job: &Job<M>,
        index: u32,
        outcome: Outcome,
        attempted: bool,
        unique_id: Option<&str>,
    ) {
        let token = job.token_shown(index);
        self.finish_shown(&job.progress, index, &token, outcome, attempted, unique_id);
    }

    /// Records a terminal outcome for a caller that holds the token as
    /// shown rather than the job. The job's progress is counted here, once,
    /// before any sink hears of it; the sinks then keep what they keep.
    pub fn finish_shown(
        &self,
        progress: &JobProgress,
        index: u32,
        token: &str,
        outcome: Outcome,
        attempted: bool,
        unique_id: Option<&str>,
    ) {
        if let Some(id) = unique_id {
            progress.note_unique_id(id);
        }
        let done = progress.record(outcome.kind());
        let job_done = done >= progress.total() && progress.try_finish();
        let finished = Finished {
            progress,
            index,
            token,
            outcome: &outcome,
            attempted,
            unique_id,
            done,
        };
        for s in self.sinks.iter() {
            s.finished(&finished);
        }
        if job_done {
            self.job_done(progress);
        }
    }

    /// Ends a streamed job: no more tokens come (`truncated`: its stream was
    /// cut before its end). When every token it took has finished already,
    /// the job is done now.
    pub fn close(&self, progress: &JobProgress, truncated: bool) {
        progress.close(truncated);
        if progress.try_finish() {
            self.job_done(progress);
        }
    }

    fn job_done(&self, progress: &JobProgress) {
        for s in self.sinks.iter() {
            s.job_done(progress);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobId, OutcomeKind};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl Sink for Log {
        fn finished(&self, f: &Finished<'_>) {
            crate::floor::lock(&self.0).push(format!("{}:{}:{}", f.index, f.token, f.done));
        }
    }

    #[test]
    fn the_recorder_counts_the_job_before_any_sink_hears() {
        let log = Arc::new(Log::default());
        let recorder = Recorder::new(vec![log.clone()]);
        let p = JobProgress::new(JobId::new(), crate::job::test::PLATFORM, 2);
        recorder.finish_shown(&p, 0, "a", Outcome::Success, true, None);
        recorder.finish_shown(&p, 1, "b", Outcome::Cancelled, false, None);
        assert_eq!(*crate::floor::lock(&log.0), vec!["0:a:1", "1:b:2"]);
        assert_eq!((p.count(OutcomeKind::Cancelled), p.pending()), (1, 0));
    }
}
