//! Reports: running totals per family (`/apns/report`, `/gcm/report`), the
//! bounded drainable lists (unregistered, failures, canonical), and the job
//! table behind `/jobs/{id}`.
//!
//! [`Recorder`] is the only writer: every attempt's result and every terminal
//! outcome goes through it, which is what keeps `accepted = pending + Σ outcomes`
//! and `attempts = retries + attempted outcomes` true at every instant.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use crate::books::{CanonicalEntry, Counters, FailureEntry, UnregisteredEntry};
use crate::books::{ListEntry, ListKind, Posting};
use crate::floor::{DEFAULT_APP, lock};
use crate::job::{Family, JobId, JobProgress, OutcomeKind};
use crate::outcome::{Arrival, Finished, Sink};

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

/// One family's totals and lists.
#[derive(Debug)]
pub struct FamilyReport {
    counters: Mutex<Counters>,
    /// The drainable lists, in [`ListKind::ALL`] order.
    lists: [BoundedList<ListEntry>; 3],
}

impl FamilyReport {
    fn new(max_list: usize) -> Self {
        Self {
            counters: Mutex::new(Counters::default()),
            lists: ListKind::ALL.map(|_| BoundedList::new(max_list)),
        }
    }

    /// One of its lists.
    pub fn list(&self, kind: ListKind) -> &BoundedList<ListEntry> {
        &self.lists[kind as usize]
    }

    /// A copy of the unregistered list, oldest first.
    pub fn unregistered(&self) -> Vec<UnregisteredEntry> {
        self.snapshot(ListKind::Unregistered, |e| match e {
            ListEntry::Unregistered(u) => Some(u),
            _ => None,
        })
    }

    /// A copy of the failures list, oldest first.
    pub fn failures(&self) -> Vec<FailureEntry> {
        self.snapshot(ListKind::Failures, |e| match e {
            ListEntry::Failure(f) => Some(f),
            _ => None,
        })
    }

    /// A copy of the canonical list, oldest first.
    pub fn canonical(&self) -> Vec<CanonicalEntry> {
        self.snapshot(ListKind::Canonical, |e| match e {
            ListEntry::Canonical(c) => Some(c),
            _ => None,
        })
    }

    fn snapshot<T>(&self, kind: ListKind, pick: impl Fn(ListEntry) -> Option<T>) -> Vec<T> {
        self.list(kind)
            .snapshot()
            .into_iter()
            .filter_map(pick)
            .collect()
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

/// One family's reports, by app, default first.
type AppReports = Vec<(Arc<str>, FamilyReport)>;

/// All reports of the process: per family, per app, plus the job table.
#[derive(Debug)]
pub struct Reports {
    families: Vec<(Family, AppReports)>,
    /// Recent jobs.
    pub jobs: JobTable,
    options: ReportOptions,
    list_dropped: Option<prometheus::IntCounterVec>,
}

/// How a [`Reports`] sink behaves, which depends on the backend.
#[derive(Debug, Clone, Copy)]
pub struct ReportOptions {
    /// Keep the drainable lists here (false when the backend keeps them).
    pub lists: bool,
    /// Log each job's progress (false when a job reaches us in chunks).
    pub log_progress: bool,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            lists: true,
            log_progress: true,
        }
    }
}

impl Reports {
    /// Empty reports for the default app of every family, lists bounded to
    /// `max_list`, `max_jobs` jobs remembered.
    pub fn new(max_list: usize, max_jobs: usize) -> Self {
        Self::with_apps(max_list, max_jobs, &[], ReportOptions::default())
    }

    /// Empty reports for the default app of every family plus the named apps
    /// given per family.
    pub fn with_apps(
        max_list: usize,
        max_jobs: usize,
        apps: &[(Family, Vec<String>)],
        options: ReportOptions,
    ) -> Self {
        let families = Family::ALL
            .into_iter()
            .map(|family| {
                let named = apps
                    .iter()
                    .filter(|(f, _)| *f == family)
                    .flat_map(|(_, names)| names.iter().map(String::as_str));
                let reports = std::iter::once(DEFAULT_APP)
                    .chain(named)
                    .map(|name| (Arc::from(name), FamilyReport::new(max_list)))
                    .collect();
                (family, reports)
            })
            .collect();
        Self {
            families,
            jobs: JobTable::new(max_jobs),
            options,
            list_dropped: None,
        }
    }

    /// Counts list entries dropped because a list was full in `counter`
    /// (labels: platform, outcome).
    pub fn counting_drops(mut self, counter: prometheus::IntCounterVec) -> Self {
        self.list_dropped = Some(counter);
        self
    }

    fn apps_of(&self, family: Family) -> &[(Arc<str>, FamilyReport)] {
        self.families
            .iter()
            .find(|(f, _)| *f == family)
            .map_or(&[], |(_, apps)| apps.as_slice())
    }

    /// The default app's report of a family.
    pub fn family(&self, family: Family) -> &FamilyReport {
        // `with_apps` builds every family, default app first.
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

    /// Sets an app's counters, as a backend recovered them at start.
    pub fn restore(&self, family: Family, app: &str, counters: Counters) {
        if let Some(report) = self.app(family, app) {
            *lock(&report.counters) = counters;
        }
    }
}

impl Sink for Reports {
    fn accepted(&self, progress: &Arc<JobProgress>, arrival: Arrival) {
        if arrival != Arrival::Recovered {
            lock(&self.of(progress).counters).post(&Posting::accepted(progress.total));
        }
        if arrival != Arrival::Taken {
            // A chunk of a shared job is not the job: its status is the backend's.
            self.jobs.insert(progress.clone());
        }
    }

    fn retried(&self, progress: &JobProgress, _reason: &str) {
        lock(&self.of(progress).counters).post(&Posting::retried());
    }

    fn possible_duplicates(&self, progress: &JobProgress, n: u64) {
        lock(&self.of(progress).counters).post(&Posting::possible_duplicates(n));
    }

    fn finished(&self, f: &Finished<'_>) {
        let progress = f.progress;
        let family = self.of(progress);
        let posting = f.posting();
        lock(&family.counters).post(&posting);
        if self.options.lists
            && let Some(entry) = posting.entry
            && family.list(entry.list()).push(entry)
            && let Some(counter) = &self.list_dropped
        {
            counter
                .with_label_values(&[progress.platform.as_str(), f.outcome.kind().as_str()])
                .inc();
        }
        if self.options.log_progress {
            log_progress(progress, f.done);
        }
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
    use crate::job::{Job, Outcome, Platform, TokenList};
    use crate::outcome::Recorder;

    fn job(n: u32) -> Job<()> {
        let mut tokens = TokenList::default();
        for i in 0..n {
            tokens.push(format!("t{i}").as_bytes());
        }
        let id = JobId::new();
        Job {
            id,
            app: DEFAULT_APP.into(),
            message: (),
            tokens,
            progress: Arc::new(JobProgress::new(id, Platform::Gcm, u64::from(n))),
            expires_at: None,
        }
    }

    #[test]
    fn books_balance_through_every_kind_of_outcome() {
        let reports = Arc::new(Reports::new(10, 10));
        let r = Recorder::new(vec![reports.clone()]);
        let j = job(6);
        let p = &j.progress;
        r.accepted(p, Arrival::New);
        r.retry(p, "ServiceUnavailable");
        r.finish(&j, 0, Outcome::Success, true);
        r.finish(
            &j,
            1,
            Outcome::Unregistered {
                timestamp_ms: Some(7),
            },
            true,
        );
        r.finish(
            &j,
            2,
            Outcome::Failed {
                reason: "BadDeviceToken".into(),
                status: 400,
            },
            true,
        );
        r.finish(
            &j,
            3,
            Outcome::Expired {
                reason: "Expired".into(),
            },
            false,
        );
        let c = reports.family(Family::Google).counters();
        assert!(c.balanced(), "{c:?}");
        assert_eq!((c.accepted, c.pending, c.attempts, c.retries), (6, 2, 4, 1));
        assert_eq!(p.pending(), 2);
        let unregistered = reports
            .family(Family::Google)
            .list(ListKind::Unregistered)
            .snapshot();
        assert_eq!(
            unregistered,
            vec![ListEntry::Unregistered(UnregisteredEntry {
                token: "t1".into(),
                timestamp: 7
            })]
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
