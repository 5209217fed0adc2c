//! Reports: this gateway's running totals per family and app (`/apns/report`,
//! `/gcm/report`, …) and the job table behind `/jobs/{id}`. The drainable
//! lists are the store's ([`crate::store`]).
//!
//! [`Recorder`] is the only writer: every attempt's result and every terminal
//! outcome goes through it, which is what keeps `accepted = pending + Σ outcomes`
//! and `attempts = retries + attempted outcomes` true at every instant.

mod jobs;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::books::Posting;
pub use crate::books::{CanonicalEntry, Counters, FailureEntry, UnregisteredEntry};
use crate::floor::{DEFAULT_APP, lock};
use crate::job::{Family, JobProgress, OutcomeKind};
use crate::outcome::{Arrival, Finished, Sink};
pub use jobs::JobTable;

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

/// How long finished jobs are kept unless told otherwise: a week.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

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
            jobs: JobTable::new(max_jobs, DEFAULT_RETENTION),
            unknown: FamilyReport::default(),
        }
    }

    /// The same books, keeping finished jobs for `retention`
    /// (`server.job_retention_s`) instead of the default week.
    pub fn retaining(mut self, max_jobs: usize, retention: Duration) -> Self {
        self.jobs = JobTable::new(max_jobs, retention);
        self
    }

    /// A family's totals over all its apps.
    pub fn family_total(&self, family: Family) -> Counters {
        let mut total = Counters::default();
        for (_, report) in self.apps_of(family) {
            total.add_all(&report.counters());
        }
        total
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
        match arrival {
            // A chunk of a shared job is not the job: its status is the
            // store's. Held here only for the age of what is pending.
            Arrival::Taken => self.jobs.hold_chunk(progress),
            Arrival::New | Arrival::Recovered => self.jobs.insert(progress.clone()),
            // A stream's part: the job is in the table since it opened.
            Arrival::Grown => {}
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
            log_progress(f.progress, f.done);
        }
    }

    fn job_done(&self, progress: &JobProgress) {
        if progress.is_chunk() {
            // A chunk's progress is not its job's (the store's is).
            self.jobs.release_chunk(progress);
        } else {
            self.jobs.finished(progress);
            log_done(progress);
        }
    }
}

/// Jobs at least this large log a line (at debug) every 10% of the way.
const PROGRESS_LOG_MIN_TOKENS: u64 = 1000;

/// Logs a job's progress at debug when `done` crosses a tenth of it: info
/// has one line when a job is accepted and one when it is done, so a busy
/// gateway's log stays readable.
fn log_progress(progress: &JobProgress, done: u64) {
    let total = progress.total();
    if total >= PROGRESS_LOG_MIN_TOKENS
        && done < total
        && done * 10 / total != (done - 1) * 10 / total
    {
        tracing::debug!(job = %progress.id, platform = %progress.platform, done, total, percent = done * 100 / total, "job progress");
    }
}

/// Logs a finished job's totals at info: the operator's view of a send
/// without a metric query.
fn log_done(progress: &JobProgress) {
    let total = progress.total();
    let secs = progress.accepted_at.elapsed().as_secs_f64();
    tracing::info!(
            job = %progress.id,
            platform = %progress.platform,
            app = %progress.app,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Job, JobId, Outcome, TokenList};
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
            fields: Arc::from(&[][..]),
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
}
