//! The nouns every module shares: a [`Job`] is one accepted send request (one
//! shared message, many tokens), and every token of it ends in exactly one
//! [`Outcome`].

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::SystemTime;

mod kind;
mod token;

#[cfg(test)]
pub use kind::test;
pub use kind::{
    Catalog, Family, FamilyInfo, GorushPlatform, ListKind, ListRoute, Platform, PlatformInfo,
    Totals,
};
pub use token::{SUBSCRIPTION_KEYS, TokenCodec, TokenList, decode_hex, hex_encode};

/// A job's identifier: a random UUID, rendered without hyphens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(uuid::Uuid);

impl JobId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// The id as a number (the disk store's key).
    pub fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }

    /// The id [`JobId::as_u128`] gave.
    pub fn from_u128(n: u128) -> Self {
        Self(uuid::Uuid::from_u128(n))
    }

    /// Parses the form produced by `Display` (hyphens optional).
    pub fn parse(s: &str) -> Option<Self> {
        uuid::Uuid::try_parse(s).ok().map(Self)
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.simple())
    }
}

/// One accepted send request: a message of type `M` shared by all its tokens.
#[derive(Debug)]
pub struct Job<M> {
    /// The job's id, returned in the 202 answer.
    pub id: JobId,
    /// The credential set (`app` request field); `default` is the top-level section.
    pub app: Arc<str>,
    /// The message, built once per job.
    pub message: M,
    /// The tokens, validated at the API.
    pub tokens: TokenList,
    /// Live counts, shared with the job table.
    pub progress: Arc<JobProgress>,
    /// After this instant nothing more is sent; remaining tokens become `expired`.
    pub expires_at: Option<SystemTime>,
}

impl<M> Job<M> {
    /// The outcome a token gets instead of being sent now, if any: the job was
    /// cancelled, or its expiration has passed. Workers ask before every send.
    pub fn hold(&self) -> Option<Outcome> {
        if self.progress.is_cancelled() {
            Some(Outcome::Cancelled)
        } else if self.expires_at.is_some_and(|at| SystemTime::now() > at) {
            Some(Outcome::Expired {
                reason: "Expired".into(),
            })
        } else {
            None
        }
    }

    /// True when the job's expiration falls within `delay` from now: a retry
    /// that late would go out after it, so the token expires instead.
    pub fn expires_within(&self, delay: std::time::Duration) -> bool {
        self.expires_at
            .is_some_and(|at| SystemTime::now() + delay > at)
    }

    /// Token `index` as the sender knows it (its platform's codec).
    pub fn token_shown(&self, index: u32) -> std::borrow::Cow<'_, str> {
        self.progress.platform.codec().show(self.tokens.get(index))
    }

    /// The range covering every token.
    pub fn all(&self) -> Range<u32> {
        0..u32::try_from(self.tokens.len()).unwrap_or(u32::MAX)
    }
}

/// A terminal outcome for one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered (APNs 200, FCM message name, legacy message_id).
    Success,
    /// The token is no longer valid (APNs 410, FCM UNREGISTERED, legacy NotRegistered):
    /// the back end should delete it. APNs gives the time it became invalid.
    Unregistered {
        /// Milliseconds since the epoch, when the upstream said.
        timestamp_ms: Option<u64>,
    },
    /// Delivered, and legacy GCM named a newer token to use from now on.
    Canonical {
        /// The replacement registration id.
        new_token: String,
    },
    /// Refused for good; retrying would not help.
    Failed {
        /// The upstream's reason (e.g. `BadDeviceToken`) or ours.
        reason: Arc<str>,
        /// The HTTP status, 0 when none (transport errors).
        status: u16,
    },
    /// Not delivered before retries or the message's expiration ran out.
    Expired {
        /// The last retryable reason seen, or `Expired` when the deadline passed first.
        reason: Arc<str>,
    },
    /// The sender cancelled the job (`DELETE /jobs/{id}`) before this token was sent.
    Cancelled,
}

impl Outcome {
    /// The metrics label and job-count bucket for this outcome.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Success => OutcomeKind::Success,
            Outcome::Unregistered { .. } => OutcomeKind::Unregistered,
            Outcome::Canonical { .. } => OutcomeKind::Canonical,
            Outcome::Failed { .. } => OutcomeKind::Failed,
            Outcome::Expired { .. } => OutcomeKind::Expired,
            Outcome::Cancelled => OutcomeKind::Cancelled,
        }
    }
}

/// An [`Outcome`] without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeKind {
    /// See [`Outcome::Success`].
    Success,
    /// See [`Outcome::Unregistered`].
    Unregistered,
    /// See [`Outcome::Canonical`].
    Canonical,
    /// See [`Outcome::Failed`].
    Failed,
    /// See [`Outcome::Expired`].
    Expired,
    /// See [`Outcome::Cancelled`].
    Cancelled,
}

impl OutcomeKind {
    /// Every kind, in report order.
    pub const ALL: [OutcomeKind; 6] = [
        OutcomeKind::Success,
        OutcomeKind::Unregistered,
        OutcomeKind::Canonical,
        OutcomeKind::Failed,
        OutcomeKind::Expired,
        OutcomeKind::Cancelled,
    ];

    /// Lower-case label.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Success => "success",
            OutcomeKind::Unregistered => "unregistered",
            OutcomeKind::Canonical => "canonical",
            OutcomeKind::Failed => "failed",
            OutcomeKind::Expired => "expired",
            OutcomeKind::Cancelled => "cancelled",
        }
    }

    fn index(self) -> usize {
        self as usize
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
    /// Tokens accepted.
    pub total: u64,
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
            total,
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
            notif_id: None,
            unique_ids: Default::default(),
            chunk: false,
        }
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
        let done: u64 = counts.iter().sum();
        self.finished.store(done, Ordering::Release);
        if done >= self.total {
            // Kept when the store said when (`finished_at`).
            let _ = self.finished_ms.compare_exchange(
                0,
                crate::floor::now_ms().max(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
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
        match (self.pending(), self.is_cancelled(), self.is_scheduled()) {
            (0, true, _) => "cancelled",
            (0, false, _) => "done",
            (_, true, _) => "cancelling",
            (_, false, true) => "scheduled",
            (_, false, false) => "running",
        }
    }

    /// Outcome counts in [`OutcomeKind::ALL`] order.
    pub fn counts(&self) -> [u64; 6] {
        OutcomeKind::ALL.map(|k| self.count(k))
    }

    /// Counts one terminal outcome; returns how many tokens are finished now.
    /// The last one stamps the job's finish time.
    pub fn record(&self, kind: OutcomeKind) -> u64 {
        self.outcomes[kind.index()].fetch_add(1, Ordering::Relaxed);
        let done = self.finished.fetch_add(1, Ordering::AcqRel) + 1;
        if done == self.total {
            self.finished_ms
                .store(crate::floor::now_ms().max(1), Ordering::Release);
        }
        done
    }

    /// Tokens that have reached `kind`.
    pub fn count(&self, kind: OutcomeKind) -> u64 {
        self.outcomes[kind.index()].load(Ordering::Relaxed)
    }

    /// Tokens without a terminal outcome yet.
    pub fn pending(&self) -> u64 {
        let done: u64 = OutcomeKind::ALL.iter().map(|&k| self.count(k)).sum();
        self.total.saturating_sub(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_progress_counts_pending() {
        let p = JobProgress::new(JobId::new(), test::PLATFORM, 3);
        p.record(OutcomeKind::Success);
        p.record(OutcomeKind::Failed);
        assert_eq!(p.pending(), 1);
        assert_eq!(p.count(OutcomeKind::Success), 1);
    }

    #[test]
    fn job_id_round_trips() {
        let id = JobId::new();
        assert_eq!(JobId::parse(&id.to_string()), Some(id));
        assert_eq!(JobId::parse("nope"), None);
    }
}
