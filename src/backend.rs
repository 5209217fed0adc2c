//! The one seam between the API (and the gateway's drain) and where work is
//! kept. [`Backend`] admits a job through its [`Store`] before the 202, hands
//! work to the platforms (and takes it back at shutdown), answers report,
//! list and job reads, cancels, and drains.
//!
//! What every store shares is written here once: the scheduler of delayed
//! jobs, the hand-off to the platforms, this gateway's own books
//! ([`Reports`]) and the drain. What differs is the store's (see
//! [`crate::store`]); the backend never asks which store it has.

mod admit;
mod groups;
mod pulse;
mod window;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::books::{Counters, JobFilter, JobStatus, ListKind};
use crate::job::{Family, JobId, Platform};
use crate::metrics::Metrics;
use crate::outcome::{Arrival, Recorder};
use crate::platform::Registry;
use crate::queue::Admission;
use crate::report::Reports;
use crate::schedule::Scheduler;
use crate::store::{Hand, Recovered, Store, StoreError};

pub use admit::Stream;
pub use pulse::Rates;

/// The parts a backend is built from, bottom-up, in one pass.
pub struct Parts {
    /// Where work is kept; also one of `recorder`'s sinks.
    pub store: Arc<dyn Store>,
    /// This gateway's books (totals and the job table).
    pub reports: Arc<Reports>,
    /// The bound on unfinished tokens here; one of `recorder`'s sinks.
    pub admission: Arc<Admission>,
    /// The outcome fan-out, with `reports`, `admission` and the store among its sinks.
    pub recorder: Recorder,
    /// The platforms, by platform and app.
    pub registry: Registry,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Queued tokens held in memory at most, when the store keeps every
    /// token (`queue.window`); ignored otherwise.
    pub window: u64,
}

/// The seam. Cheap to clone.
#[derive(Clone)]
pub struct Backend(Arc<Inner>);

struct Inner {
    store: Arc<dyn Store>,
    reports: Arc<Reports>,
    admission: Arc<Admission>,
    scheduler: Arc<Scheduler>,
    hand: Hand,
    /// Memory's share of the queue, when the store keeps all of it.
    window: Option<window::Window>,
    metrics: Arc<Metrics>,
    /// The platforms' totals over the last minutes ([`pulse`]).
    history: pulse::History,
}

/// What a drain left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Tokens that reached an outcome during the drain.
    pub finished_during_drain: u64,
    /// Tokens still queued when the grace period ended, recorded as expired
    /// (`Shutdown`). Zero with a store that keeps them.
    pub abandoned: u64,
    /// Tokens still queued when the grace period ended and left in the
    /// store for the next start (`disk`) or another gateway (`redis`).
    pub kept: u64,
    /// Tokens whose request was still unanswered when the drain gave up: no
    /// outcome was recorded for them (they may or may not have been delivered).
    pub still_pending: u64,
    /// How long the drain took.
    pub took: Duration,
}

/// After the grace period: how long requests already in flight may take to
/// be answered before the process stops without their outcome.
const SETTLE: Duration = Duration::from_secs(3);

impl Backend {
    /// Puts the parts together, resumes what the store held at start and
    /// starts the store's own loops. No field is set afterwards.
    pub fn start(parts: Parts) -> Result<Self, StoreError> {
        let Parts {
            store,
            reports,
            admission,
            recorder,
            registry,
            metrics,
            window,
        } = parts;
        let hand = Hand { registry, recorder };
        let window = store
            .reloads()
            .then(|| window::Window::start(window, store.clone(), hand.clone()));
        let backend = Self(Arc::new(Inner {
            store,
            reports,
            admission,
            scheduler: Scheduler::start(),
            hand,
            window,
            metrics,
            history: pulse::History::default(),
        }));
        backend.resume(backend.0.store.recover());
        backend.0.store.start(&backend.0.hand)?;
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(pulse::run(Arc::downgrade(&backend.0)));
        }
        Ok(backend)
    }

    /// Rebuilds the books from what the store held and hands its unfinished
    /// jobs to their platforms again (delayed ones back to the scheduler).
    fn resume(&self, recovered: Recovered) {
        let started = Instant::now();
        let inner = &self.0;
        let Recovered {
            counters,
            finished,
            jobs,
        } = recovered;
        for (family, app, counters) in counters {
            inner.reports.restore(family, &app, counters);
        }
        for progress in finished {
            inner.reports.jobs.insert(progress);
        }
        let (mut resumed, mut tokens, mut duplicates) = (0u64, 0u64, 0u64);
        for job in jobs {
            let progress = job.handoff.progress.clone();
            inner
                .hand
                .recorder
                .accepted(&progress, progress.total(), Arrival::Recovered);
            if job.possible_duplicates > 0 {
                inner
                    .hand
                    .recorder
                    .possible_duplicates(&progress, job.possible_duplicates);
            }
            resumed += 1;
            tokens += progress.pending();
            duplicates += job.possible_duplicates;
            match job.wait {
                Some(wait) => self.hold(job.handoff, wait),
                None => self.offer(job.handoff),
            }
        }
        if resumed > 0 {
            tracing::info!(
                jobs = resumed,
                pending_tokens = tokens,
                possible_duplicates = duplicates,
                took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "{} store recovered: unfinished jobs resume",
                self.name()
            );
        }
    }

    /// `memory`, `disk` or `redis`.
    pub fn name(&self) -> &'static str {
        self.0.store.name()
    }

    /// What becomes of unsent tokens if the process stops now.
    pub fn fate(&self) -> &'static str {
        self.0.store.fate()
    }

    /// This gateway's books: the totals and the job table.
    pub fn reports(&self) -> &Arc<Reports> {
        &self.0.reports
    }

    /// The outcome fan-out.
    pub fn recorder(&self) -> &Recorder {
        &self.0.hand.recorder
    }

    /// The registered platforms.
    pub fn registry(&self) -> &Registry {
        &self.0.hand.registry
    }

    /// The gateway-wide bound.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.0.admission
    }

    /// Why the store is not ready (for `/readyz`), if it is not.
    pub fn problem(&self) -> Option<String> {
        self.0.store.problem()
    }

    // ===== reads =====

    /// The gateways sharing the store, their chunks, the stream's length and
    /// lag (`GET /cluster`); `None` when the store is not shared.
    pub async fn cluster_view(&self) -> Option<Result<Value, StoreError>> {
        match self.0.store.cluster_view() {
            Some(view) => Some(view.await),
            None => None,
        }
    }

    /// A family's app's totals (cluster-wide with a shared store).
    pub async fn counters(&self, family: Family, app: &str) -> Result<Counters, StoreError> {
        match self.0.store.counters(family, app) {
            Some(read) => read.await,
            None => Ok(self
                .0
                .reports
                .app(family, app)
                .map(|r| r.counters())
                .unwrap_or_default()),
        }
    }

    /// A drainable list's entries, oldest first; with `drain`, emptied in
    /// the same step (nothing added meanwhile is lost: it lands in the next read).
    pub async fn list(
        &self,
        family: Family,
        app: &str,
        list: ListKind,
        drain: bool,
    ) -> Result<Vec<Value>, StoreError> {
        self.0.store.list(family, app, list, drain).await
    }

    /// A list's size and how many entries it dropped because it was full.
    pub fn list_stats(&self, family: Family, app: &str, list: ListKind) -> (usize, u64) {
        self.0.store.list_stats(family, app, list)
    }

    /// A job's status; `None` when unknown (or forgotten: older than the
    /// last `report.max_jobs` jobs).
    pub async fn job(&self, id: JobId) -> Result<Option<JobStatus>, StoreError> {
        if let Some(read) = self.0.store.job(id)
            && let Some(status) = read.await?
        {
            return Ok(Some(status));
        }
        Ok(self.0.reports.jobs.get(&id).map(|p| JobStatus::of(&p)))
    }

    /// Up to `limit` jobs `filter` admits, newest first: unfinished ones
    /// by admission, then finished ones by finish time (`GET /jobs`). The
    /// store answers what it lists itself (finished jobs on disk; every job
    /// with redis), this gateway's job table the rest.
    pub async fn jobs(
        &self,
        filter: JobFilter,
        limit: usize,
    ) -> Result<Vec<JobStatus>, StoreError> {
        if let Some(read) = self.0.store.jobs(filter, limit) {
            return read.await;
        }
        let table = &self.0.reports.jobs;
        let of = |jobs: Vec<Arc<crate::job::JobProgress>>| -> Vec<JobStatus> {
            jobs.iter().map(|p| JobStatus::of(p)).collect()
        };
        if filter != JobFilter::All {
            return Ok(of(table.list(filter, limit)));
        }
        // Unfinished jobs are this gateway's; finished ones may be the store's.
        let mut out: Vec<JobStatus> = of(table.list(JobFilter::All, limit))
            .into_iter()
            .filter(|s| s.pending() > 0)
            .collect();
        let rest = limit.saturating_sub(out.len());
        if rest > 0 {
            match self.0.store.jobs(JobFilter::Done, rest) {
                Some(read) => out.extend(read.await?),
                None => out.extend(of(table.list(JobFilter::Done, rest))),
            }
        }
        Ok(out)
    }

    /// Since when (ms since the epoch) the oldest unfinished token this
    /// gateway holds has been due; `None` when none is pending.
    pub fn oldest_pending_since(&self) -> Option<u64> {
        self.0.reports.jobs.oldest_pending_since()
    }

    /// Cancels a job: tokens not yet sent end as `cancelled` (a scheduled
    /// job at once, a running one as workers reach its tokens). `None` when
    /// the job is unknown.
    pub async fn cancel(&self, id: JobId) -> Result<Option<JobStatus>, StoreError> {
        let local = self.0.reports.jobs.get(&id);
        let known = self.0.store.cancel(id, local.as_deref()).await?;
        match local {
            // A scheduled job ends at once; a running one as workers reach it.
            Some(progress) if !self.0.scheduler.cancel(&id) => {
                progress.cancel();
            }
            Some(_) => {}
            None if !known => return Ok(None),
            None => {}
        }
        self.job(id).await
    }

    /// Each registered platform's finished tokens per second over the
    /// last [`pulse::WINDOW`], one point per [`pulse::SAMPLE_EVERY`].
    pub fn rates(&self) -> Rates {
        self.0.history.rates()
    }

    /// How often [`Backend::rates`] has a point, and how far back it reaches.
    pub fn rate_window(&self) -> (Duration, Duration) {
        (pulse::SAMPLE_EVERY, pulse::WINDOW)
    }

    /// Tokens admitted here and not yet finished.
    pub fn pending(&self) -> u64 {
        self.0.admission.pending()
    }

    /// `queue.capacity`.
    pub fn capacity(&self) -> u64 {
        self.0.admission.capacity()
    }

    /// Tokens waiting in each platform's queue, by platform.
    pub fn queue_depths(&self) -> Vec<(Platform, usize)> {
        let mut depths: Vec<(Platform, usize)> = Vec::new();
        for (platform, _, service) in self.0.hand.registry.all() {
            match depths.iter_mut().find(|(p, _)| *p == platform) {
                Some((_, d)) => *d += service.queue_depth(),
                None => depths.push((platform, service.queue_depth())),
            }
        }
        depths
    }

    // ===== drain =====

    /// Graceful drain (the API already refuses new sends): keep delivering
    /// until nothing is pending or `grace` runs out, then stop the workers,
    /// let requests in flight settle, and deal with what is left: a store
    /// that keeps unsent work (disk, redis) keeps it for the next start or
    /// another gateway; otherwise it is recorded as expired (`Shutdown`).
    /// Logs the totals.
    pub async fn drain(&self, grace: Duration) -> DrainReport {
        let started = Instant::now();
        let inner = &self.0;
        let keeps = inner.store.keeps_unsent();
        let held = if keeps {
            inner.scheduler.forget_all()
        } else {
            inner.scheduler.expire_all()
        };
        if held > 0 && !keeps {
            tracing::warn!(
                jobs = held,
                "delayed jobs not yet due were dropped by the shutdown (recorded as expired: Shutdown)"
            );
        }
        inner.store.stop_taking();
        let admission = inner.admission.clone();
        let before = admission.pending();
        tracing::info!(
            pending = before,
            grace_s = grace.as_secs(),
            backend = self.name(),
            "draining: new sends are refused"
        );
        let deadline = started + grace;
        let mut last_log = Instant::now();
        while admission.pending() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if last_log.elapsed() >= Duration::from_secs(5) {
                tracing::info!(pending = admission.pending(), "draining");
                last_log = Instant::now();
            }
        }
        // Stop taking work. Requests in flight still finish, and tokens a
        // worker had taken but not sent come back to its queue, so sweep the
        // queues until nothing is pending or the requests had their moment.
        for (_, _, service) in inner.hand.registry.all() {
            service.close();
        }
        inner.store.detach();
        let (mut abandoned, mut kept) = (0, 0);
        if let Some(window) = &inner.window {
            // What waits in the store for room stays there for the next start.
            let left = window.close();
            admission.release(left);
            kept += left;
        }
        let settle_deadline = Instant::now() + SETTLE;
        loop {
            for (platform, _, service) in inner.hand.registry.all() {
                if keeps {
                    let left = service.forget_queued();
                    admission.release(left);
                    kept += left;
                } else {
                    let left = service.abandon_queued();
                    inner
                        .metrics
                        .shutdown_abandoned
                        .with_label_values(&[platform.as_str()])
                        .inc_by(left);
                    abandoned += left;
                }
            }
            if admission.pending() == 0 || Instant::now() >= settle_deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        inner.store.close().await;
        let still_pending = admission.pending();
        let finished = before.saturating_sub(still_pending + abandoned + kept);
        let report = DrainReport {
            finished_during_drain: finished,
            abandoned,
            kept,
            still_pending,
            took: started.elapsed(),
        };
        self.log_totals();
        let took_ms = u64::try_from(report.took.as_millis()).unwrap_or(u64::MAX);
        if abandoned > 0 || still_pending > 0 {
            tracing::warn!(
                abandoned,
                kept,
                still_pending,
                finished,
                took_ms,
                "shutdown left work undelivered: abandoned tokens are recorded as expired (Shutdown), still_pending ones were in flight when the process stopped"
            );
        } else if kept > 0 {
            tracing::info!(
                kept,
                finished,
                took_ms,
                backend = self.name(),
                "drained: {kept} unsent tokens kept in the store for the next start"
            );
        } else {
            tracing::info!(finished, took_ms, "drained: nothing left pending");
        }
        report
    }

    fn log_totals(&self) {
        for family in self.0.reports.families() {
            let c = self.0.reports.family(family).counters();
            if c.accepted > 0 {
                tracing::info!(
                    family = family.name(),
                    accepted = c.accepted,
                    pending = c.pending,
                    successes = c.successes,
                    failures = c.failures,
                    unregistered = c.unregistered,
                    expired = c.expired,
                    possible_duplicates = c.possible_duplicates,
                    "final totals"
                );
            }
        }
    }
}
