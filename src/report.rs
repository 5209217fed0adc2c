//! Reports: running totals per family (`/apns/report`, `/gcm/report`), the
//! bounded drainable lists (unregistered, failures, canonical), and the job
//! table behind `/jobs/{id}`.
//!
//! [`Recorder`] is the only writer: every attempt's result and every terminal
//! outcome goes through it, which is what keeps `accepted = pending + Σ outcomes`
//! and `attempts = retries + attempted outcomes` true at every instant.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::job::{Family, Job, JobId, JobProgress, Outcome, OutcomeKind};
use crate::metrics::Metrics;
use crate::queue::Admission;
use crate::webhook::{Event, WebhookSink};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters and lists stay consistent under any panic point (each update is
    // a few field writes), so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Running totals for one family since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Tokens accepted.
    pub accepted: u64,
    /// Upstream answers (or transport failures) received, one per token attempt.
    pub attempts: u64,
    /// Attempts that were scheduled again.
    pub retries: u64,
    /// Accepted tokens without a terminal outcome yet.
    pub pending: u64,
    /// Outcome `success`.
    pub successes: u64,
    /// Outcome `failed`.
    pub failures: u64,
    /// Outcome `unregistered`.
    pub unregistered: u64,
    /// Outcome `canonical`.
    pub canonicals: u64,
    /// Outcome `expired`.
    pub expired: u64,
    /// Outcome `cancelled`.
    pub cancelled: u64,
    /// Terminal outcomes reached without an attempt (expired while queued,
    /// left when the process shut down).
    pub unattempted: u64,
    /// Tokens resent after their connection dropped mid-request.
    pub possible_duplicates: u64,
}

impl Counters {
    /// Sum of terminal outcomes.
    pub fn finished(&self) -> u64 {
        self.successes
            + self.failures
            + self.unregistered
            + self.canonicals
            + self.expired
            + self.cancelled
    }

    /// True when the books balance: every accepted token is pending or finished,
    /// and every attempt either finished a token or was retried.
    pub fn balanced(&self) -> bool {
        self.accepted == self.pending + self.finished()
            && self.attempts == self.retries + self.finished() - self.unattempted
    }

    fn add(&mut self, kind: OutcomeKind) {
        match kind {
            OutcomeKind::Success => self.successes += 1,
            OutcomeKind::Failed => self.failures += 1,
            OutcomeKind::Unregistered => self.unregistered += 1,
            OutcomeKind::Canonical => self.canonicals += 1,
            OutcomeKind::Expired => self.expired += 1,
            OutcomeKind::Cancelled => self.cancelled += 1,
        }
    }
}

/// A list with a size bound: oldest entries are dropped first, and counted.
#[derive(Debug)]
pub struct BoundedList<T> {
    entries: Mutex<VecDeque<T>>,
    max: usize,
    dropped: AtomicU64,
}

impl<T> BoundedList<T> {
    /// A list keeping at most `max` entries.
    pub fn new(max: usize) -> Self {
        Self {
            entries: Mutex::new(VecDeque::new()),
            max,
            dropped: AtomicU64::new(0),
        }
    }

    /// Appends, dropping the oldest entry when full. Returns true if one was dropped.
    pub fn push(&self, entry: T) -> bool {
        let mut entries = lock(&self.entries);
        let dropped = if entries.len() >= self.max {
            entries.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        };
        if self.max > 0 {
            entries.push_back(entry);
        }
        dropped
    }

    /// Takes every entry, leaving the list empty, in one step: nothing added
    /// concurrently is lost, it lands in the next drain.
    pub fn drain(&self) -> Vec<T> {
        lock(&self.entries).drain(..).collect()
    }

    /// Entries dropped so far because the list was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Clone> BoundedList<T> {
    /// A copy of the entries, oldest first.
    pub fn snapshot(&self) -> Vec<T> {
        lock(&self.entries).iter().cloned().collect()
    }
}

/// A token the upstream says is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnregisteredEntry {
    /// The token as the sender gave it (APNs: lower-case hex).
    pub token: String,
    /// When it became invalid (APNs' timestamp) or when we learned it, ms since epoch.
    pub timestamp: u64,
}

/// A token that failed for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureEntry {
    /// The token.
    pub token: String,
    /// The upstream's reason.
    pub reason: String,
    /// The HTTP status (0 for transport errors).
    pub status: u16,
    /// When, ms since epoch.
    pub at: u64,
}

/// A legacy GCM canonical id: use `canonical` instead of `original` from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CanonicalEntry {
    /// The token that was sent.
    pub original: String,
    /// The token to store instead.
    pub canonical: String,
}

/// One family's totals and lists.
#[derive(Debug)]
pub struct FamilyReport {
    counters: Mutex<Counters>,
    /// Tokens to purge.
    pub unregistered: BoundedList<UnregisteredEntry>,
    /// Permanent failures.
    pub failures: BoundedList<FailureEntry>,
    /// Canonical replacements (Google legacy only).
    pub canonical: BoundedList<CanonicalEntry>,
}

impl FamilyReport {
    fn new(max_list: usize) -> Self {
        Self {
            counters: Mutex::new(Counters::default()),
            unregistered: BoundedList::new(max_list),
            failures: BoundedList::new(max_list),
            canonical: BoundedList::new(max_list),
        }
    }

    /// A consistent copy of the totals.
    pub fn counters(&self) -> Counters {
        *lock(&self.counters)
    }
}

/// The job table: recent jobs' progress, bounded (oldest forgotten first).
#[derive(Debug)]
pub struct JobTable {
    inner: Mutex<JobTableInner>,
    max: usize,
}

#[derive(Debug, Default)]
struct JobTableInner {
    by_id: HashMap<JobId, Arc<JobProgress>>,
    order: VecDeque<JobId>,
}

impl JobTable {
    fn new(max: usize) -> Self {
        Self {
            inner: Mutex::new(JobTableInner::default()),
            max: max.max(1),
        }
    }

    /// Remembers a job.
    pub fn insert(&self, progress: Arc<JobProgress>) {
        let mut inner = lock(&self.inner);
        if inner.order.len() >= self.max
            && let Some(oldest) = inner.order.pop_front()
        {
            inner.by_id.remove(&oldest);
        }
        inner.order.push_back(progress.id);
        inner.by_id.insert(progress.id, progress);
    }

    /// A job's progress, if still remembered.
    pub fn get(&self, id: &JobId) -> Option<Arc<JobProgress>> {
        lock(&self.inner).by_id.get(id).cloned()
    }
}

/// All reports of the process.
#[derive(Debug)]
pub struct Reports {
    apple: Vec<(Arc<str>, FamilyReport)>,
    google: Vec<(Arc<str>, FamilyReport)>,
    /// Recent jobs.
    pub jobs: JobTable,
}

/// The app every top-level config section describes.
pub const DEFAULT_APP: &str = "default";

impl Reports {
    /// Empty reports for the default app only, lists bounded to `max_list`,
    /// `max_jobs` jobs remembered.
    pub fn new(max_list: usize, max_jobs: usize) -> Self {
        Self::with_apps(max_list, max_jobs, &[], &[])
    }

    /// Empty reports for the default app plus the named apps of each family.
    pub fn with_apps(
        max_list: usize,
        max_jobs: usize,
        apple: &[String],
        google: &[String],
    ) -> Self {
        let family = |names: &[String]| {
            std::iter::once(DEFAULT_APP)
                .chain(names.iter().map(String::as_str))
                .map(|name| (Arc::from(name), FamilyReport::new(max_list)))
                .collect()
        };
        Self {
            apple: family(apple),
            google: family(google),
            jobs: JobTable::new(max_jobs),
        }
    }

    fn apps_of(&self, family: Family) -> &[(Arc<str>, FamilyReport)] {
        match family {
            Family::Apple => &self.apple,
            Family::Google => &self.google,
        }
    }

    /// The default app's report of a family.
    pub fn family(&self, family: Family) -> &FamilyReport {
        // `with_apps` always puts the default app first.
        &self.apps_of(family)[0].1
    }

    /// One app's report, if the app exists. A linear scan: a gateway serves a
    /// handful of apps, and this beats hashing on every outcome.
    pub fn app(&self, family: Family, app: &str) -> Option<&FamilyReport> {
        self.apps_of(family)
            .iter()
            .find(|(name, _)| &**name == app)
            .map(|(_, r)| r)
    }

    /// The app names of a family, default first.
    pub fn app_names(&self, family: Family) -> Vec<&str> {
        self.apps_of(family)
            .iter()
            .map(|(name, _)| &**name)
            .collect()
    }

    /// The report a job writes to.
    fn of(&self, progress: &JobProgress) -> &FamilyReport {
        let family = progress.platform.family();
        self.app(family, &progress.app)
            .unwrap_or_else(|| self.family(family))
    }
}

/// The single writer of reports, admission, outcome metrics and webhook events.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// The reports written.
    pub reports: Arc<Reports>,
    /// The bound released as tokens finish.
    pub admission: Arc<Admission>,
    /// Metrics updated alongside.
    pub metrics: Arc<Metrics>,
    /// Where outcome events go, when `[webhook]` is configured.
    pub webhook: Option<WebhookSink>,
    /// The shared queue (backend `redis`): outcomes are also written there,
    /// so reports are cluster-wide.
    pub cluster: Option<Arc<crate::queue::cluster::Cluster>>,
}

impl Recorder {
    /// A recorder without a webhook.
    pub fn new(reports: Arc<Reports>, admission: Arc<Admission>, metrics: Arc<Metrics>) -> Self {
        Self {
            reports,
            admission,
            metrics,
            webhook: None,
            cluster: None,
        }
    }

    /// Counts a chunk taken from the shared queue (backend `redis`) in this
    /// gateway's own books: the cluster counted it accepted already.
    pub fn take(&self, progress: &Arc<JobProgress>) {
        {
            let mut c = lock(&self.reports.of(progress).counters);
            c.accepted += progress.total;
            c.pending += progress.total;
        }
        self.admission.force_admit(progress.total);
    }

    /// Counts `n` tokens of `progress` as accepted: called before the job is
    /// queued, so no worker can finish a token that was not yet counted.
    pub fn accept(&self, progress: &Arc<JobProgress>) {
        let platform = progress.platform;
        {
            let mut c = lock(&self.reports.of(progress).counters);
            c.accepted += progress.total;
            c.pending += progress.total;
        }
        self.reports.jobs.insert(progress.clone());
        self.metrics
            .accepted
            .with_label_values(&[platform.as_str(), &progress.app])
            .inc_by(progress.total);
    }

    /// Records an attempt of one of `progress`'s tokens that will be retried.
    pub fn retry(&self, progress: &JobProgress, reason: &str) {
        let platform = progress.platform;
        {
            let mut c = lock(&self.reports.of(progress).counters);
            c.attempts += 1;
            c.retries += 1;
        }
        if let Some(cluster) = &self.cluster {
            cluster.retried(progress);
        }
        self.metrics
            .attempts
            .with_label_values(&[platform.as_str()])
            .inc();
        self.metrics
            .retries
            .with_label_values(&[platform.as_str(), reason])
            .inc();
    }

    /// Records `n` tokens of `progress` resent because their connection dropped mid-request.
    pub fn possible_duplicates(&self, progress: &JobProgress, n: u64) {
        let platform = progress.platform;
        lock(&self.reports.of(progress).counters).possible_duplicates += n;
        if let Some(cluster) = &self.cluster {
            cluster.possible_duplicates(progress, n);
        }
        self.metrics
            .possible_duplicates
            .with_label_values(&[platform.as_str()])
            .inc_by(n);
    }

    /// Ends tokens of `job` that will not be sent (expired, cancelled, left at
    /// shutdown) with `outcome`, without an attempt. Returns how many.
    pub fn finish_unsent<M>(&self, job: &Job<M>, tokens: Range<u32>, outcome: &Outcome) -> u64 {
        let n = tokens.len() as u64;
        for index in tokens {
            self.finish(
                &job.progress,
                || job.token_string(index),
                outcome.clone(),
                false,
            );
        }
        n
    }

    /// Records a token's terminal outcome. `attempted` is false when no upstream
    /// answer led to it (expired while queued, shutdown). `token` renders the
    /// token, called only when a list or the webhook needs it.
    pub fn finish(
        &self,
        progress: &JobProgress,
        token: impl FnOnce() -> String,
        outcome: Outcome,
        attempted: bool,
    ) {
        self.finish_noted(progress, token, outcome, attempted, None);
    }

    /// [`Recorder::finish`], keeping the upstream's id for this delivery
    /// (`apns-unique-id`, which Apple asks for in support requests) in the
    /// job's status and the webhook event.
    pub fn finish_noted(
        &self,
        progress: &JobProgress,
        token: impl FnOnce() -> String,
        outcome: Outcome,
        attempted: bool,
        unique_id: Option<&str>,
    ) {
        if let Some(id) = unique_id {
            progress.note_unique_id(id);
        }
        let platform = progress.platform;
        let family = self.reports.of(progress);
        let kind = outcome.kind();
        {
            let mut c = lock(&family.counters);
            if attempted {
                c.attempts += 1;
            } else {
                c.unattempted += 1;
            }
            c.pending -= 1;
            c.add(kind);
        }
        let done = progress.record(kind);
        self.admission.release(1);
        if attempted {
            self.metrics
                .attempts
                .with_label_values(&[platform.as_str()])
                .inc();
        }
        let reason = match &outcome {
            Outcome::Failed { reason, .. } | Outcome::Expired { reason } => reason.as_ref(),
            _ => "",
        };
        self.metrics.outcome(platform, &progress.app, kind, reason);
        let needs_token =
            self.webhook.is_some() || self.cluster.is_some() || kind != OutcomeKind::Success;
        let token = needs_token.then(token).unwrap_or_default();
        if let Some(cluster) = &self.cluster {
            cluster.finished(progress, &token, &outcome, attempted);
        }
        if let Some(webhook) = &self.webhook {
            webhook.offer(Event {
                job: progress.id.to_string(),
                platform: platform.as_str(),
                token: token.clone(),
                outcome: kind.as_str(),
                reason: (!reason.is_empty()).then(|| reason.to_owned()),
                canonical: match &outcome {
                    Outcome::Canonical { new_token } => Some(new_token.clone()),
                    _ => None,
                },
                apns_unique_id: unique_id.map(str::to_owned),
            });
        }
        let list_dropped = match outcome {
            Outcome::Success | Outcome::Expired { .. } | Outcome::Cancelled => false,
            Outcome::Unregistered { timestamp_ms } => family.unregistered.push(UnregisteredEntry {
                token,
                timestamp: timestamp_ms.unwrap_or_else(now_ms),
            }),
            Outcome::Canonical { new_token } => family.canonical.push(CanonicalEntry {
                original: token,
                canonical: new_token,
            }),
            Outcome::Failed { reason, status } => family.failures.push(FailureEntry {
                token,
                reason: reason.to_string(),
                status,
                at: now_ms(),
            }),
        };
        if list_dropped {
            self.metrics
                .list_dropped
                .with_label_values(&[platform.as_str(), kind.as_str()])
                .inc();
        }
        if self.cluster.is_none() {
            log_progress(progress, done);
        }
        // With the shared queue a progress is one chunk of a job, not the job:
        // per-chunk progress lines would be noise (the job's status is in Redis).
    }
}

/// Jobs at least this large log a line every 10% of the way.
const PROGRESS_LOG_MIN_TOKENS: u64 = 1000;

/// Logs a job's progress when `done` crosses a tenth of it, and its summary
/// when it finishes: the operator's view of a large send without a metric query.
fn log_progress(progress: &JobProgress, done: u64) {
    let total = progress.total;
    if done == total {
        let secs = progress.accepted_at.elapsed().as_secs_f64();
        tracing::info!(
            job = %progress.id,
            platform = %progress.platform,
            total,
            successes = progress.count(OutcomeKind::Success),
            failures = progress.count(OutcomeKind::Failed),
            unregistered = progress.count(OutcomeKind::Unregistered),
            canonicals = progress.count(OutcomeKind::Canonical),
            expired = progress.count(OutcomeKind::Expired),
            cancelled = progress.count(OutcomeKind::Cancelled),
            tokens_per_s = (total as f64 / secs.max(1e-6)).round(),
            "job done"
        );
    } else if total >= PROGRESS_LOG_MIN_TOKENS && done * 10 / total != (done - 1) * 10 / total {
        tracing::info!(job = %progress.id, platform = %progress.platform, done, total, percent = done * 100 / total, "job progress");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Platform;

    fn recorder(max_list: usize) -> Recorder {
        Recorder::new(
            Arc::new(Reports::new(max_list, 10)),
            Arc::new(Admission::new(100)),
            Arc::new(Metrics::new().expect("metrics")),
        )
    }

    #[test]
    fn books_balance_through_every_kind_of_outcome() {
        let r = recorder(10);
        let p = Arc::new(JobProgress::new(JobId::new(), Platform::Apns, 6));
        r.admission.try_admit(6).expect("room");
        r.accept(&p);
        r.retry(&p, "ServiceUnavailable");
        r.finish(&p, || "a".into(), Outcome::Success, true);
        r.finish(
            &p,
            || "b".into(),
            Outcome::Unregistered {
                timestamp_ms: Some(7),
            },
            true,
        );
        r.finish(
            &p,
            || "c".into(),
            Outcome::Failed {
                reason: "BadDeviceToken".into(),
                status: 400,
            },
            true,
        );
        r.finish(
            &p,
            || "d".into(),
            Outcome::Expired {
                reason: "Expired".into(),
            },
            false,
        );
        let c = r.reports.family(Family::Apple).counters();
        assert!(c.balanced(), "{c:?}");
        assert_eq!((c.accepted, c.pending, c.attempts, c.retries), (6, 2, 4, 1));
        assert_eq!(p.pending(), 2);
        assert_eq!(r.admission.pending(), 2);
        let unregistered = r.reports.family(Family::Apple).unregistered.snapshot();
        assert_eq!(
            unregistered,
            vec![UnregisteredEntry {
                token: "b".into(),
                timestamp: 7
            }]
        );
    }

    #[test]
    fn bounded_list_drops_oldest_and_drains_atomically() {
        let list = BoundedList::new(2);
        assert!(!list.push(1));
        assert!(!list.push(2));
        assert!(list.push(3));
        assert_eq!(list.dropped(), 1);
        assert_eq!(list.drain(), vec![2, 3]);
        assert!(list.is_empty());
    }

    #[test]
    fn job_table_forgets_oldest() {
        let table = JobTable::new(2);
        let ids: Vec<_> = (0..3)
            .map(|_| {
                let p = Arc::new(JobProgress::new(JobId::new(), Platform::Gcm, 1));
                table.insert(p.clone());
                p.id
            })
            .collect();
        assert!(table.get(&ids[0]).is_none());
        assert!(table.get(&ids[2]).is_some());
    }
}
