//! Admission: a submission kept by the store before the 202, then (when
//! this gateway delivers it) counted and handed to its platform, or held
//! until its delay; and the streamed job, whose tokens arrive in parts.

use std::sync::Arc;
use std::time::Duration;

use super::{Backend, Inner};
use crate::job::{JobId, JobProgress, Outcome, TokenList};
use crate::outcome::Arrival;
use crate::platform::Handoff;
use crate::schedule::Held;
use crate::store::{
    AdmitError, Admitted, Claim, Found, IdemKey, KeepIf, Kept, NewJob, Owner, Planned, StoreError,
    Submission,
};

impl Backend {
    /// Admits one job (a submission of one, without a claim). Returns its
    /// id; once this returns, the job survives whatever the store survives.
    pub async fn admit(&self, job: NewJob) -> Result<JobId, AdmitError> {
        let id = JobId::new();
        self.submit(Submission::one(id, job)).await?;
        Ok(id)
    }

    /// Admits a submission: its jobs, its group and its claim kept by the
    /// store in one write, as durably as it can; then each job this gateway
    /// delivers is counted and handed to its platform (or held until its
    /// delay). Returns the jobs' ids, in order. Nothing is admitted when
    /// this fails.
    pub async fn submit(&self, submission: Submission) -> Result<Vec<JobId>, AdmitError> {
        let admitted = self.0.store.admit(&submission).await?;
        let mut ids = Vec::with_capacity(admitted.len());
        for (Planned { id, job }, admitted) in submission.into_jobs().into_iter().zip(admitted) {
            ids.push(id);
            self.begin(id, job, admitted);
        }
        Ok(ids)
    }

    /// What follows a job's admission.
    fn begin(&self, id: JobId, job: NewJob, admitted: Admitted) {
        match admitted {
            Admitted::Here(progress) => {
                // Counted before it is queued, so no outcome can precede its acceptance.
                self.0
                    .hand
                    .recorder
                    .accepted(&progress, progress.total(), Arrival::New);
                let handoff = Handoff {
                    id,
                    app: job.app,
                    fields: Arc::from(job.fields),
                    built: job.message,
                    send: Handoff::all(&job.tokens),
                    tokens: job.tokens,
                    progress,
                    expires_at: job.expires_at,
                };
                match job.delay {
                    Some(delay) => self.hold(handoff, delay),
                    None => self.offer(handoff),
                }
            }
            Admitted::Shared => {
                // Counted in a gateway's books when it takes a chunk; the
                // metric counts the acceptance here, where it happened.
                self.0
                    .metrics
                    .accepted
                    .with_label_values(&[job.platform.as_str(), &job.app])
                    .inc_by(job.tokens.len() as u64);
            }
        }
    }

    /// Opens job `id`, whose tokens arrive in parts (a stream): `job`
    /// carries no tokens and no delay; `claim` is kept with it. Parts go
    /// through [`Stream::append`], each kept before it is handed to its
    /// platform; [`Stream::close`] ends it.
    pub async fn open_stream(
        &self,
        id: JobId,
        job: NewJob,
        claim: Option<&Claim>,
    ) -> Result<Stream, AdmitError> {
        let admitted = self.0.store.open_stream(id, &job, claim).await?;
        let progress = match admitted {
            Admitted::Here(progress) => {
                self.0.hand.recorder.accepted(&progress, 0, Arrival::New);
                Some(progress)
            }
            Admitted::Shared => None,
        };
        Ok(Stream {
            backend: self.clone(),
            id,
            job,
            progress,
            next: 0,
        })
    }

    /// Reads an idempotency key and, when it is free, reserves it for
    /// `owner` (see [`crate::store::Store::reserve`]).
    pub async fn reserve(&self, key: &IdemKey, owner: Owner) -> Result<Found, StoreError> {
        self.0.store.reserve(key, owner).await
    }

    /// Keeps an answer under `key` when `when` allows; returns whether it did.
    pub async fn keep(&self, key: &IdemKey, kept: &Kept, when: KeepIf) -> Result<bool, StoreError> {
        self.0.store.keep(key, kept, when).await
    }

    /// Ends `owner`'s reservation of `key` without an answer.
    pub async fn release(&self, key: &IdemKey, owner: Owner) {
        self.0.store.release(key, owner).await;
    }

    /// Hands a job to its platform: through the window when memory holds
    /// only a window of the queue (it may wait in the store for room).
    pub(super) fn offer(&self, handoff: Handoff) {
        Self::offer_to(&self.0, handoff);
    }

    fn offer_to(inner: &Inner, handoff: Handoff) {
        let now = match &inner.window {
            Some(window) => window.offer(handoff),
            None => Some(handoff),
        };
        if let Some(handoff) = now {
            inner.hand.deliver(handoff);
        }
    }

    /// Queued tokens in memory, the most memory holds, and tokens waiting
    /// in the store for room; `None` when memory holds the whole queue.
    pub fn window(&self) -> Option<(u64, u64, u64)> {
        self.0.window.as_ref().map(|w| {
            let (held, limit) = w.held();
            (held, limit, w.parked())
        })
    }

    /// Holds a job in the scheduler until `delay` has passed.
    pub(super) fn hold(&self, handoff: Handoff, delay: Duration) {
        let id = handoff.id;
        handoff.progress.set_scheduled(true);
        let handoff = Arc::new(std::sync::Mutex::new(Some(handoff)));
        let (release, cancel) = (handoff.clone(), handoff);
        let (backend, hand_c) = (Arc::downgrade(&self.0), self.0.hand.clone());
        self.0.scheduler.hold(
            id,
            delay,
            Held {
                release: Box::new(move || {
                    if let Some(h) = crate::floor::lock(&release).take() {
                        h.progress.set_scheduled(false);
                        if let Some(inner) = backend.upgrade() {
                            Self::offer_to(&inner, h);
                        }
                    }
                }),
                cancel: Box::new(move |outcome: Outcome| {
                    if let Some(h) = crate::floor::lock(&cancel).take() {
                        if outcome == Outcome::Cancelled {
                            h.progress.cancel();
                        }
                        h.progress.set_scheduled(false);
                        h.finish(&outcome, &hand_c.recorder);
                    }
                }),
            },
        );
    }
}

/// A job whose tokens arrive in parts (see [`Backend::open_stream`]).
pub struct Stream {
    backend: Backend,
    id: JobId,
    /// What every part carries: platform, app, message (no tokens).
    job: NewJob,
    /// Its progress, when this gateway delivers it.
    progress: Option<Arc<JobProgress>>,
    /// The job's index of the next part's first token.
    next: u32,
}

/// How long a part waits between asks for room in a full queue: the
/// stream's reader waits with it, so the sender is paced by TCP.
const ROOM_WAIT: Duration = Duration::from_millis(25);

impl Stream {
    /// The job's id.
    pub fn id(&self) -> JobId {
        self.id
    }

    /// Tokens appended so far.
    pub fn total(&self) -> u64 {
        u64::from(self.next)
    }

    /// Keeps one part (waiting while the queue is full: the caller stops
    /// reading meanwhile, which paces its sender), then counts it and hands
    /// it to its platform. A part that could never fit is refused.
    pub async fn append(&mut self, tokens: TokenList) -> Result<(), AdmitError> {
        if tokens.is_empty() {
            return Ok(());
        }
        let tokens = tokens.with_base(self.next);
        let n = tokens.len() as u64;
        let inner = &self.backend.0;
        loop {
            match inner.store.append(self.id, &self.job, &tokens).await {
                Ok(()) => break,
                Err(AdmitError::Full {
                    capacity, wanted, ..
                }) if wanted <= capacity => tokio::time::sleep(ROOM_WAIT).await,
                Err(e) => return Err(e),
            }
        }
        self.next = tokens.range().end;
        match &self.progress {
            Some(progress) => {
                // Counted before it is queued, so no outcome precedes it.
                progress.grow(n);
                inner.hand.recorder.accepted(progress, n, Arrival::Grown);
                Backend::offer_to(
                    inner,
                    Handoff {
                        id: self.id,
                        app: self.job.app.clone(),
                        fields: Arc::from(self.job.fields.as_slice()),
                        built: None,
                        send: Handoff::all(&tokens),
                        tokens,
                        progress: progress.clone(),
                        expires_at: self.job.expires_at,
                    },
                );
            }
            None => inner
                .metrics
                .accepted
                .with_label_values(&[self.job.platform.as_str(), &self.job.app])
                .inc_by(n),
        }
        Ok(())
    }

    /// Ends the stream: no more parts (`truncated`: it was cut before its end).
    pub async fn close(self, truncated: bool) -> Result<(), StoreError> {
        let closed = self.backend.0.store.close_stream(self.id, truncated).await;
        if let Some(progress) = &self.progress {
            self.backend.0.hand.recorder.close(progress, truncated);
        }
        closed
    }
}
