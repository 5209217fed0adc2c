//! A job's live counts, shared by its workers, the recorder, the job table
//! and the store that keeps it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::{JobId, OutcomeKind, Platform};

/// Live per-job counts. Written by the recorder, read by `GET /jobs/{id}`.
#[derive(Debug)]
pub struct JobProgress {
    /// The job's id.
    pub id: JobId,
    /// Which upstream it goes to.
    pub platform: Platform,
    /// The credential set (`app`) it uses; reports and metrics carry it.
    pub app: Arc<str>,
    /// Tokens accepted so far (a streamed job's grows as its parts arrive).
    total: AtomicU64,
    /// A streamed job still receiving tokens: not done, whatever its counts.
    open: AtomicBool,
    /// A streamed job whose stream was cut before its end: what arrived is
    /// sent, nothing more will come.
    truncated: AtomicBool,
    /// When the job was accepted (for tokens/s in the summary line).
    pub accepted_at: std::time::Instant,
    outcomes: [AtomicU64; 6],
    finished: AtomicU64,
    /// Held by the scheduler until its `send_at`.
    scheduled: std::sync::atomic::AtomicBool,
    /// `DELETE /jobs/{id}` was called: unsent tokens end as `cancelled`.
    cancelled: std::sync::atomic::AtomicBool,
    /// Tokens at or past this index may not be handed to a worker yet: a
    /// durable backend first records that they may be in flight, so a
    /// restart counts them as possible duplicates. `u32::MAX` = no bound.
    lease: AtomicU32,
    /// The sender's correlation id (gorush `notif_id`), if any.
    pub notif_id: Option<Arc<str>>,
    /// One past the highest token index handed to a worker so far.
    handed: AtomicU32,
    /// The first `apns-unique-id`s APNs returned for this job's deliveries.
    unique_ids: std::sync::Mutex<Vec<Box<str>>>,
    /// A chunk of a job another gateway accepted (a shared store's unit of
    /// work), not a whole job: its counts are not the job's.
    chunk: bool,
}

impl JobProgress {
    /// A job of the default app with `total` accepted tokens and no outcome yet.
    pub fn new(id: JobId, platform: Platform, total: u64) -> Self {
        Self::for_app(id, platform, Arc::from(crate::floor::DEFAULT_APP), total)
    }

    /// A job of `app` with `total` accepted tokens and no outcome yet.
    pub fn for_app(id: JobId, platform: Platform, app: Arc<str>, total: u64) -> Self {
        Self {
            id,
            platform,
            app,
            total: AtomicU64::new(total),
            open: AtomicBool::new(false),
            truncated: AtomicBool::new(false),
            accepted_at: std::time::Instant::now(),
            outcomes: Default::default(),
            finished: AtomicU64::new(0),
            scheduled: Default::default(),
            cancelled: Default::default(),
            lease: AtomicU32::new(u32::MAX),
            handed: AtomicU32::new(0),
            notif_id: None,
            unique_ids: Default::default(),
            chunk: false,
        }
    }

    /// The same job, open: a stream whose tokens arrive in parts
    /// ([`JobProgress::grow`]) until it is closed.
    pub fn streaming(self) -> Self {
        self.open.store(true, Ordering::Release);
        self
    }

    /// Tokens accepted so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Acquire)
    }

    /// Counts `n` more tokens of a streamed job as accepted.
    pub fn grow(&self, n: u64) {
        self.total.fetch_add(n, Ordering::AcqRel);
    }

    /// Ends a streamed job: no more tokens come (`truncated`: its stream was
    /// cut before its end).
    pub fn close(&self, truncated: bool) {
        if truncated {
            self.truncated.store(true, Ordering::Release);
        }
        self.open.store(false, Ordering::Release);
    }

    /// True while a streamed job receives tokens.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// True when a streamed job's stream was cut before its end.
    pub fn is_truncated(&self) -> bool {
        self.truncated.load(Ordering::Acquire)
    }

    /// The same, as a chunk of a shared job (see the field).
    pub fn as_chunk(mut self) -> Self {
        self.chunk = true;
        self
    }

    /// True for a chunk of a shared job.
    pub fn is_chunk(&self) -> bool {
        self.chunk
    }

    /// The same job carrying the sender's correlation id.
    pub fn with_notif_id(mut self, notif_id: Option<Arc<str>>) -> Self {
        self.notif_id = notif_id;
        self
    }

    /// The same job with its hand-out bound at `lease` (a durable backend
    /// starts it low and raises it as it records progress).
    pub fn with_lease(self, lease: u32) -> Self {
        self.lease.store(lease, Ordering::Release);
        self
    }

    /// Sets the outcome counts a store recovered for this job.
    pub fn restore(&self, counts: [u64; 6]) {
        for (slot, n) in self.outcomes.iter().zip(counts) {
            slot.store(n, Ordering::Relaxed);
        }
        self.finished.store(counts.iter().sum(), Ordering::Release);
    }

    /// The hand-out bound (see the field).
    pub fn lease(&self) -> u32 {
        self.lease.load(Ordering::Acquire)
    }

    /// Raises the hand-out bound (never lowers it).
    pub fn extend_lease(&self, to: u32) {
        self.lease.fetch_max(to, Ordering::AcqRel);
    }

    /// Notes tokens up to `end` (exclusive) as handed to a worker.
    pub fn hand_out(&self, end: u32) {
        self.handed.fetch_max(end, Ordering::AcqRel);
    }

    /// One past the highest token index handed out so far.
    pub fn handed(&self) -> u32 {
        self.handed.load(Ordering::Acquire)
    }

    /// Unique ids kept per job: a broadcast has one; a large sandbox job
    /// keeps a sample, enough for a support request.
    pub const MAX_UNIQUE_IDS: usize = 100;

    /// Keeps an upstream delivery id (`apns-unique-id`), up to [`Self::MAX_UNIQUE_IDS`].
    pub fn note_unique_id(&self, id: &str) {
        let mut ids = crate::floor::lock(&self.unique_ids);
        if ids.len() < Self::MAX_UNIQUE_IDS {
            ids.push(Box::from(id));
        }
    }

    /// The delivery ids kept so far.
    pub fn unique_ids(&self) -> Vec<String> {
        crate::floor::lock(&self.unique_ids)
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Marks the job as held by the scheduler (or released from it).
    pub fn set_scheduled(&self, scheduled: bool) {
        self.scheduled.store(scheduled, Ordering::Release);
    }

    /// True while the scheduler holds the job.
    pub fn is_scheduled(&self) -> bool {
        self.scheduled.load(Ordering::Acquire)
    }

    /// Asks workers to finish unsent tokens as `cancelled`. Returns false if it
    /// was already cancelled.
    pub fn cancel(&self) -> bool {
        !self.cancelled.swap(true, Ordering::AcqRel)
    }

    /// True once cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// `scheduled`, `running`, `done` or `cancelled`, for `/jobs/{id}`.
    pub fn state(&self) -> &'static str {
        crate::job::state_of(
            self.pending(),
            self.is_cancelled(),
            self.is_scheduled(),
            self.is_open(),
        )
    }

    /// Outcome counts in [`OutcomeKind::ALL`] order.
    pub fn counts(&self) -> [u64; 6] {
        OutcomeKind::ALL.map(|k| self.count(k))
    }

    /// Counts one terminal outcome; returns how many tokens are finished now.
    pub fn record(&self, kind: OutcomeKind) -> u64 {
        self.outcomes[kind.index()].fetch_add(1, Ordering::Relaxed);
        self.finished.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Tokens that have reached `kind`.
    pub fn count(&self, kind: OutcomeKind) -> u64 {
        self.outcomes[kind.index()].load(Ordering::Relaxed)
    }

    /// Tokens without a terminal outcome yet.
    pub fn pending(&self) -> u64 {
        let done: u64 = OutcomeKind::ALL.iter().map(|&k| self.count(k)).sum();
        self.total().saturating_sub(done)
    }
}
