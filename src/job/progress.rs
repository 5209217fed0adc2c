//! A job's live counts, shared by its workers, the recorder, the job table
//! and the store that keeps it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::{JobId, OutcomeKind, Platform};

/// How near its lease a job's workers come before its store is asked to
/// raise it ([`LeaseBell`]): far enough that the store's commit lands
/// before they reach it.
pub const LEASE_LOW: u32 = 2048;

/// Asks a durable store to raise a job's lease now, rather than on its next
/// timed commit: workers near the bound would otherwise wait for the timer.
#[derive(Clone)]
pub struct LeaseBell(Arc<dyn Fn() + Send + Sync>);

impl LeaseBell {
    /// A bell that calls `ring`.
    pub fn new(ring: impl Fn() + Send + Sync + 'static) -> Self {
        Self(Arc::new(ring))
    }
}

impl std::fmt::Debug for LeaseBell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseBell")
    }
}

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
    /// When it was accepted, ms since the epoch (for `GET /jobs`' order and
    /// the status page's rates).
    accepted_ms: u64,
    /// When it was last released to its platform (ms since the epoch): its
    /// acceptance, or the end of its `send_at` wait. What a pending token's
    /// age counts from.
    running_since_ms: AtomicU64,
    /// When its last token finished (ms since the epoch); 0 until then.
    finished_ms: AtomicU64,
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
    /// Rung once the workers come within [`LEASE_LOW`] of the lease.
    bell: Option<LeaseBell>,
    /// The bell was rung and the lease not raised since.
    rung: AtomicBool,
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
            accepted_ms: crate::floor::now_ms(),
            running_since_ms: AtomicU64::new(crate::floor::now_ms()),
            finished_ms: AtomicU64::new(0),
            outcomes: Default::default(),
            finished: AtomicU64::new(0),
            scheduled: Default::default(),
            cancelled: Default::default(),
            lease: AtomicU32::new(u32::MAX),
            handed: AtomicU32::new(0),
            bell: None,
            rung: AtomicBool::new(false),
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
        // SeqCst with `record` and `try_finish`: whichever of the last
        // outcome and the close comes second sees the other.
        self.open.store(false, Ordering::SeqCst);
    }

    /// True once, for the call that finds the job done (closed, every token
    /// finished): it stamps the finish time. The last outcome and a
    /// stream's close both ask; only one of them gets true.
    pub fn try_finish(&self) -> bool {
        !self.open.load(Ordering::SeqCst)
            && self.finished.load(Ordering::SeqCst) >= self.total()
            && self.stamp_finished()
    }

    /// True while a streamed job receives tokens.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
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

    /// The same job, ringing `bell` when its workers near the lease.
    pub fn with_bell(mut self, bell: LeaseBell) -> Self {
        self.bell = Some(bell);
        self
    }

    /// True when workers have started on the job and come within
    /// [`LEASE_LOW`] tokens of its lease: time to raise it.
    pub fn near_lease(&self) -> bool {
        let handed = self.handed();
        handed > 0 && handed.saturating_add(LEASE_LOW) > self.lease()
    }

    /// Sets the outcome counts a store recovered for this job.
    pub fn restore(&self, counts: [u64; 6]) {
        for (slot, n) in self.outcomes.iter().zip(counts) {
            slot.store(n, Ordering::Relaxed);
        }
        let done: u64 = counts.iter().sum();
        self.finished.store(done, Ordering::Release);
        if done >= self.total() && !self.is_open() {
            self.stamp_finished();
        }
    }

    /// Stamps the finish time, unless it is stamped already (or a store
    /// said when); true when this call stamped it.
    fn stamp_finished(&self) -> bool {
        self.finished_ms
            .compare_exchange(
                0,
                crate::floor::now_ms().max(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// The same job, finished at `ms` (ms since the epoch), as a store kept it.
    pub fn finished_at(self, ms: u64) -> Self {
        self.finished_ms.store(ms, Ordering::Release);
        self
    }

    /// When it was accepted, ms since the epoch.
    pub fn accepted_ms(&self) -> u64 {
        self.accepted_ms
    }

    /// When its last token finished, ms since the epoch; `None` while it runs.
    pub fn finished_ms(&self) -> Option<u64> {
        match self.finished_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some(ms),
        }
    }

    /// Since when its pending tokens have been due (ms since the epoch): its
    /// acceptance, or the end of its `send_at` wait.
    pub fn running_since_ms(&self) -> u64 {
        self.running_since_ms.load(Ordering::Acquire)
    }

    /// The hand-out bound (see the field).
    pub fn lease(&self) -> u32 {
        self.lease.load(Ordering::Acquire)
    }

    /// Raises the hand-out bound (never lowers it).
    pub fn extend_lease(&self, to: u32) {
        self.lease.fetch_max(to, Ordering::AcqRel);
        self.rung.store(false, Ordering::Release);
    }

    /// Notes tokens up to `end` (exclusive) as handed to a worker; rings
    /// the bell (once per raise) when that brings them near the lease.
    pub fn hand_out(&self, end: u32) {
        self.handed.fetch_max(end, Ordering::AcqRel);
        if let Some(bell) = &self.bell
            && self.near_lease()
            && !self.rung.swap(true, Ordering::AcqRel)
        {
            (bell.0)();
        }
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

    /// Marks the job as held by the scheduler (or released from it: its
    /// tokens are due from now).
    pub fn set_scheduled(&self, scheduled: bool) {
        if !scheduled && self.scheduled.load(Ordering::Acquire) {
            self.running_since_ms
                .store(crate::floor::now_ms(), Ordering::Release);
        }
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

    /// Counts one terminal outcome; returns how many tokens are finished
    /// now (then ask [`JobProgress::try_finish`]).
    pub fn record(&self, kind: OutcomeKind) -> u64 {
        self.outcomes[kind.index()].fetch_add(1, Ordering::Relaxed);
        self.finished.fetch_add(1, Ordering::SeqCst) + 1
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bell_rings_once_as_workers_near_the_lease_and_again_after_each_raise() {
        let rings = Arc::new(AtomicU32::new(0));
        let counted = rings.clone();
        let progress = JobProgress::new(JobId::new(), crate::job::test::PLATFORM, 100_000)
            .with_lease(10_000)
            .with_bell(LeaseBell::new(move || {
                counted.fetch_add(1, Ordering::Relaxed);
            }));
        progress.hand_out(1_000);
        assert_eq!(rings.load(Ordering::Relaxed), 0, "far from the lease");
        progress.hand_out(9_000);
        progress.hand_out(9_500);
        assert_eq!(rings.load(Ordering::Relaxed), 1, "once until raised");
        progress.extend_lease(20_000);
        progress.hand_out(19_000);
        assert_eq!(rings.load(Ordering::Relaxed), 2);
    }
}
