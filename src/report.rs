//! Reports: this gateway's running totals per family and app (`/apns/report`,
//! `/gcm/report`, …) and the job table behind `/jobs/{id}`. The drainable
//! lists are the store's ([`crate::store`]).
//!
//! [`Recorder`] is the only writer: every attempt's result and every terminal
//! outcome goes through it, which is what keeps `accepted = pending + Σ outcomes`
//! and `attempts = retries + attempted outcomes` true at every instant.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::books::Posting;
pub use crate::books::{CanonicalEntry, Counters, FailureEntry, UnregisteredEntry};
use crate::floor::{DEFAULT_APP, lock};
use crate::job::{Family, JobId, JobProgress, OutcomeKind};
use crate::outcome::{Arrival, Finished, Sink};

/// One family's app's totals.
#[derive(Debug, Default)]
pub struct FamilyReport {
    counters: Mutex<Counters>,
}

impl FamilyReport {
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

/// This gateway's books: totals per family and app, and the job table.
/// The drainable lists belong to the store (memory, disk or Redis).
#[derive(Debug)]
pub struct Reports {
    families: Vec<(Family, AppReports)>,
    /// Recent jobs.
    pub jobs: JobTable,
    /// What a family not reported here reads as.
    unknown: FamilyReport,
}

impl Reports {
    /// Empty reports for the default app of `families`, `max_jobs` jobs
    /// remembered.
    pub fn new(max_jobs: usize, families: &[Family]) -> Self {
        let families: Vec<(Family, Vec<String>)> =
            families.iter().map(|f| (*f, Vec::new())).collect();
        Self::with_apps(max_jobs, &families)
    }

    /// The families reported.
    pub fn families(&self) -> impl Iterator<Item = Family> + '_ {
        self.families.iter().map(|(f, _)| *f)
    }

    /// Empty reports for `families`, each with its default app and the
    /// named apps given.
    pub fn with_apps(max_jobs: usize, families: &[(Family, Vec<String>)]) -> Self {
        let families = families
            .iter()
            .map(|(family, names)| {
                let named = names
                    .iter()
                    .map(String::as_str)
                    .filter(|n| *n != DEFAULT_APP);
                let reports = std::iter::once(DEFAULT_APP)
                    .chain(named)
                    .map(|name| (Arc::from(name), FamilyReport::default()))
                    .collect();
                (*family, reports)
            })
            .collect();
        Self {
            families,
            jobs: JobTable::new(max_jobs),
            unknown: FamilyReport::default(),
        }
    }

    fn apps_of(&self, family: Family) -> &[(Arc<str>, FamilyReport)] {
        self.families
            .iter()
            .find(|(f, _)| *f == family)
            .map_or(&[], |(_, apps)| apps.as_slice())
    }

    /// The default app's report of a family.
    pub fn family(&self, family: Family) -> &FamilyReport {
        // `with_apps` builds every family it is given, default app first; a
        // family it was not given reads (and counts) as an empty one.
        self.apps_of(family)
            .first()
            .map_or(&self.unknown, |(_, r)| r)
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
    fn accepted(&self, progress: &Arc<JobProgress>, n: u64, arrival: Arrival) {
        if arrival != Arrival::Recovered {
            lock(&self.of(progress).counters).post(&Posting::accepted(n));
        }
        if arrival == Arrival::New || arrival == Arrival::Recovered {
            // A chunk of a shared job is not the job: its status is the store's.
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
        lock(&self.of(f.progress).counters).post(&f.posting());
        if !f.progress.is_chunk() {
            // A chunk's progress is not its job's (the store's is).
            log_progress(f.progress, f.done);
        }
    }
}

/// Jobs at least this large log a line every 10% of the way.
const PROGRESS_LOG_MIN_TOKENS: u64 = 1000;

/// Logs a job's progress when `done` crosses a tenth of it, and its summary
/// when it finishes: the operator's view of a large send without a metric query.
fn log_progress(progress: &JobProgress, done: u64) {
    let total = progress.total();
    if progress.is_open() {
        // A stream still arriving: its total is not final.
        return;
    }
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
    use crate::job::{Job, Outcome, TokenList};
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
            progress: Arc::new(JobProgress::new(
                id,
                crate::job::test::PLATFORM,
                u64::from(n),
            )),
            expires_at: None,
        }
    }

    #[test]
    fn books_balance_through_every_kind_of_outcome() {
        let reports = Arc::new(Reports::new(10, &[crate::job::test::FAMILY]));
        let r = Recorder::new(vec![reports.clone()]);
        let j = job(6);
        let p = &j.progress;
        r.accepted(p, p.total(), Arrival::New);
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
        let c = reports.family(crate::job::test::FAMILY).counters();
        assert!(c.balanced(), "{c:?}");
        assert_eq!((c.accepted, c.pending, c.attempts, c.retries), (6, 2, 4, 1));
        assert_eq!(p.pending(), 2);
    }

    #[test]
    fn job_table_forgets_oldest() {
        let table = JobTable::new(2);
        let ids: Vec<_> = (0..3)
            .map(|_| {
                let p = Arc::new(JobProgress::new(
                    JobId::new(),
                    crate::job::test::PLATFORM,
                    1,
                ));
                table.insert(p.clone());
                p.id
            })
            .collect();
        assert!(table.get(&ids[0]).is_none());
        assert!(table.get(&ids[2]).is_some());
    }
}
