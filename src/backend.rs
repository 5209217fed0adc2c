//! The one seam between the API (and the gateway's drain) and where work
//! is kept. [`Backend`] admits a job durably before its 202, hands work to
//! the platforms registered in [`Registry`] (and takes it back at shutdown),
//! records outcomes through the [`Recorder`] fan-out it was built with,
//! answers report, list and job reads, cancels, and drains.
//!
//! It is one type with a [`Store`] inside, not a trait: the three stores
//! differ in a handful of places (where counters live, what "durable"
//! means, what is left at shutdown), and a `match` in each of those places
//! keeps them side by side, visible, with no boxed futures. The parts they
//! share (admission, the scheduler, the local books, the handoff to the
//! platforms) are written once. Callers never ask which store they have.
//!
//! - `memory`: nothing outlives the process.
//! - `disk`: an embedded store in `queue.data_dir`, see [`crate::store::disk`].
//! - `redis`: a stream shared by several gateways, see [`crate::store::redis`].

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::books::{Counters, JobStatus, ListKind};
use crate::delivery::{Handoff, Refused, Registry};
use crate::floor::{ms_since_epoch, now_ms};
use crate::job::{Family, JobId, JobProgress, Outcome, Platform, TokenList};
use crate::metrics::Metrics;
use crate::outcome::{Arrival, Recorder};
use crate::queue::Admission;
use crate::report::Reports;
use crate::schedule::{Held, Scheduler};
use crate::store::disk::format::JobRecord;
use crate::store::disk::writer::LEASE_START;
use crate::store::disk::{self, StoreError};
use crate::store::redis::{CHUNK_TOKENS, ChunkedJob, RedisError, RedisStore};

/// A validated send request, as the API hands it over.
#[derive(Debug)]
pub struct NewJob {
    /// Where it goes.
    pub platform: Platform,
    /// Whose credentials.
    pub app: Arc<str>,
    /// The message as its platform stores it ([`crate::delivery`]).
    pub fields: Vec<u8>,
    /// The validated, deduplicated tokens (stored form).
    pub tokens: TokenList,
    /// Nothing is sent after this.
    pub expires_at: Option<SystemTime>,
    /// Hold the job this long first (`send_at` / `delay_seconds`).
    pub delay: Option<Duration>,
    /// The sender's correlation id (gorush `notif_id`), shown on the job
    /// status and carried on its webhook events.
    pub notif_id: Option<Arc<str>>,
}

/// Why a job was not admitted. Every variant is a 503 with `Retry-After`:
/// nothing was queued, the sender may try again.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// `queue.capacity` would be exceeded.
    #[error(
        "the queue holds {pending} of {capacity} tokens; this request's {wanted} do not fit. Retry later"
    )]
    Full {
        /// Tokens pending (or, with redis, about that many queued).
        pending: u64,
        /// `queue.capacity`.
        capacity: u64,
        /// Tokens the request carried.
        wanted: u64,
    },
    /// The store cannot be reached (redis) or refused the write.
    #[error("{0}")]
    Unavailable(String),
    /// The disk is full: nothing was accepted.
    #[error("{0}")]
    StorageFull(String),
}

/// A read or cancel the store could not answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReadError(pub String);

impl From<RedisError> for ReadError {
    fn from(e: RedisError) -> Self {
        ReadError(e.to_string())
    }
}

impl From<StoreError> for ReadError {
    fn from(e: StoreError) -> Self {
        ReadError(e.to_string())
    }
}

/// Where work is kept.
pub enum Store {
    /// In this process only.
    Memory,
    /// The embedded store in `queue.data_dir`, with what it held at start.
    Disk(Arc<disk::DiskStore>, Option<disk::Recovered>),
    /// A Redis stream several gateways share.
    Redis(Arc<RedisStore>),
}

impl Store {
    /// `memory`, `disk` or `redis`.
    pub fn name(&self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Disk(..) => "disk",
            Store::Redis(_) => "redis",
        }
    }

    /// True when this store keeps its own report lists (the local books then keep none).
    pub fn keeps_lists(&self) -> bool {
        matches!(self, Store::Disk(..))
    }

    /// True when jobs reach this gateway in chunks (per-job progress lines would be noise).
    pub fn chunked(&self) -> bool {
        matches!(self, Store::Redis(_))
    }

    /// The store's own outcome sink, if it keeps outcomes.
    pub fn sink(&self) -> Option<Arc<dyn crate::outcome::Sink>> {
        match self {
            Store::Memory => None,
            Store::Disk(store, _) => Some(store.clone()),
            Store::Redis(cluster) => Some(cluster.clone()),
        }
    }
}

/// The parts a backend is built from, bottom-up, in one pass.
pub struct Parts {
    /// Where work is kept.
    pub store: Store,
    /// This gateway's books (reports and job table).
    pub reports: Arc<Reports>,
    /// The bound on unfinished tokens; one of `recorder`'s sinks.
    pub admission: Arc<Admission>,
    /// The outcome fan-out, with `reports`, `admission` and the store's sink among its sinks.
    pub recorder: Recorder,
    /// The platforms, by platform and app.
    pub registry: Registry,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// The seam. Cheap to clone.
#[derive(Clone)]
pub struct Backend(Arc<Inner>);

struct Inner {
    store: Store,
    reports: Arc<Reports>,
    admission: Arc<Admission>,
    scheduler: Arc<Scheduler>,
    hand: Hand,
    metrics: Arc<Metrics>,
}

/// What hands a job to its platform: shared with the scheduler's closures.
#[derive(Clone)]
struct Hand {
    registry: Registry,
    recorder: Recorder,
}

impl Hand {
    /// Hands `handoff` to its platform; a platform that is not configured
    /// (or a message that no longer builds) fails its tokens, so the books
    /// still balance.
    fn deliver(&self, handoff: Handoff) {
        let Err(Refused { error, handoff }) = self.registry.deliver(handoff) else {
            return;
        };
        tracing::error!(job = %handoff.id, problem = %error, "cannot deliver a job; its tokens are recorded as failed");
        let outcome = Outcome::Failed {
            reason: "NotConfigured".into(),
            status: 0,
        };
        self.finish_all(&handoff, &outcome);
    }

    fn finish_all(&self, handoff: &Handoff, outcome: &Outcome) {
        let platform = handoff.progress.platform;
        for range in &handoff.send {
            for index in range.clone() {
                let token = platform.codec().show(handoff.tokens.get(index));
                self.recorder.finish_shown(
                    &handoff.progress,
                    index,
                    &token,
                    outcome.clone(),
                    false,
                    None,
                );
            }
        }
    }
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
    /// Puts the parts together and starts the store's own loops (the redis
    /// reader, the disk recovery and flusher). No field is set afterwards.
    pub fn start(parts: Parts) -> anyhow::Result<Self> {
        let Parts {
            store,
            reports,
            admission,
            recorder,
            registry,
            metrics,
        } = parts;
        let hand = Hand { registry, recorder };
        let mut store = store;
        let recovered = match &mut store {
            Store::Disk(_, recovered) => recovered.take(),
            _ => None,
        };
        if let Store::Redis(cluster) = &store {
            cluster.start(hand.recorder.clone(), hand.registry.clone())?;
        }
        let backend = Self(Arc::new(Inner {
            store,
            reports,
            admission,
            scheduler: Scheduler::start(),
            hand,
            metrics,
        }));
        if let (Store::Disk(disk, _), Some(recovered)) = (&backend.0.store, recovered) {
            backend.recover(disk, recovered);
        }
        Ok(backend)
    }

    /// Rebuilds the books from what the disk store held and hands its
    /// unfinished jobs to their platforms again (delayed ones back to the
    /// scheduler). Tokens below a job's lease without an outcome may have
    /// been in flight when the process died: resent, and counted in
    /// `possible_duplicates`.
    fn recover(&self, disk: &Arc<disk::DiskStore>, recovered: disk::Recovered) {
        let started = Instant::now();
        let inner = &self.0;
        for (key, counters) in recovered.counters {
            let Some((family, app)) = key.split_once('/') else {
                continue;
            };
            if let Some(family) = Family::parse(family) {
                inner.reports.restore(family, app, counters);
            }
        }
        let progress_of = |id: u128, state: &disk::format::JobState| {
            let platform = Platform::parse(&state.platform)?;
            let p = JobProgress::for_app(
                JobId::from_u128(id),
                platform,
                Arc::from(state.app.as_str()),
                state.total,
            )
            .with_notif_id(state.notif_id.as_deref().map(Arc::from));
            p.restore(state.counts);
            if state.cancelled {
                p.cancel();
            }
            Some(p)
        };
        for (id, state) in &recovered.finished {
            if let Some(p) = progress_of(*id, state) {
                inner.reports.jobs.insert(Arc::new(p));
            }
        }
        let (mut jobs, mut tokens, mut duplicates) = (0u64, 0u64, 0u64);
        for (id, state, record) in recovered.jobs {
            let Some(progress) = progress_of(id, &state) else {
                tracing::error!(job = %JobId::from_u128(id), platform = state.platform, "a stored job names an unknown platform; left on disk");
                continue;
            };
            let send = state.unfinished();
            // This run's lease counts from the first token left to send.
            let first = send.first().map_or(0, |r| r.start);
            let progress = Arc::new(progress.with_lease(first.saturating_add(LEASE_START)));
            inner.hand.recorder.accepted(&progress, Arrival::Recovered);
            disk.attach(progress.id, progress.clone());
            let maybe_sent: u64 = send
                .iter()
                .map(|r| u64::from(r.end.min(state.lease).saturating_sub(r.start)))
                .sum();
            if maybe_sent > 0 {
                inner
                    .hand
                    .recorder
                    .possible_duplicates(&progress, maybe_sent);
            }
            jobs += 1;
            tokens += progress.pending();
            duplicates += maybe_sent;
            let handoff = Handoff {
                id: progress.id,
                app: progress.app.clone(),
                fields: Arc::from(record.fields),
                tokens: record.tokens,
                send,
                progress,
                expires_at: record
                    .expires_at_ms
                    .map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms)),
            };
            match record.due_ms.map(|due| due.saturating_sub(now_ms())) {
                Some(wait) if wait > 0 && !handoff.progress.is_cancelled() => {
                    self.hold(handoff, Duration::from_millis(wait));
                }
                _ => inner.hand.deliver(handoff),
            }
        }
        tracing::info!(
            jobs,
            pending_tokens = tokens,
            possible_duplicates = duplicates,
            took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "disk store recovered: unfinished jobs resume"
        );
    }

    /// `memory`, `disk` or `redis`.
    pub fn name(&self) -> &'static str {
        self.0.store.name()
    }

    /// This gateway's books: the reports and the job table.
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
        match &self.0.store {
            Store::Memory => None,
            Store::Disk(d, _) => (!d.healthy()).then(|| {
                format!(
                    "the disk store (queue.data_dir = {}) cannot write",
                    d.dir().display()
                )
            }),
            Store::Redis(c) => {
                (!c.healthy()).then(|| "the shared queue (Redis) is unreachable".to_owned())
            }
        }
    }

    // ===== admit =====

    /// Admits a job: counted, stored as durably as the store allows, then
    /// handed to its platform (or held until its delay). Returns its id;
    /// once this returns, the job survives whatever the store survives.
    pub async fn admit(&self, job: NewJob) -> Result<JobId, AdmitError> {
        match &self.0.store {
            Store::Redis(cluster) => self.admit_shared(cluster, job).await,
            Store::Memory => self.admit_local(job, None).await,
            Store::Disk(disk, _) => self.admit_local(job, Some(disk)).await,
        }
    }

    /// `memory` and `disk`: counted against `queue.capacity`, written to the
    /// disk store (and fsynced, in a commit shared with concurrent sends)
    /// before anything else sees it.
    async fn admit_local(
        &self,
        job: NewJob,
        disk: Option<&Arc<disk::DiskStore>>,
    ) -> Result<JobId, AdmitError> {
        let NewJob {
            platform,
            app,
            fields,
            tokens,
            expires_at,
            delay,
            notif_id,
        } = job;
        let total = tokens.len() as u64;
        self.0
            .admission
            .try_admit(total)
            .map_err(|full| AdmitError::Full {
                pending: full.pending,
                capacity: full.capacity,
                wanted: full.wanted,
            })?;
        let id = JobId::new();
        let progress =
            JobProgress::for_app(id, platform, app.clone(), total).with_notif_id(notif_id);
        let progress = Arc::new(match disk {
            Some(_) => progress.with_lease(LEASE_START),
            None => progress,
        });
        if let Some(disk) = disk {
            let record = JobRecord::encode_parts(
                platform.as_str(),
                &app,
                &fields,
                expires_at.map(ms_since_epoch),
                delay.map(|d| {
                    now_ms().saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                }),
                &tokens,
            );
            if let Err(e) = disk.admit(record, progress.clone()).await {
                self.0.admission.release(total);
                tracing::warn!(error = %e, "send refused: the disk store cannot write");
                return Err(match e {
                    StoreError::Full(_) => AdmitError::StorageFull(
                        "the disk holding queue.data_dir is full; nothing was accepted. Retry later".into(),
                    ),
                    StoreError::Io(m) => AdmitError::Unavailable(format!(
                        "the disk store cannot write ({m}); nothing was accepted. Retry later"
                    )),
                });
            }
        }
        // Counted before it is queued, so no outcome can precede its acceptance.
        self.0.hand.recorder.accepted(&progress, Arrival::New);
        let send = Handoff::all(&tokens);
        let handoff = Handoff {
            id,
            app,
            fields: Arc::from(fields),
            tokens,
            send,
            progress,
            expires_at,
        };
        match delay {
            Some(delay) => self.hold(handoff, delay),
            None => self.0.hand.deliver(handoff),
        }
        Ok(id)
    }

    /// Holds a job in the scheduler until `delay` has passed.
    fn hold(&self, handoff: Handoff, delay: Duration) {
        let id = handoff.id;
        let progress = handoff.progress.clone();
        progress.set_scheduled(true);
        let handoff = Arc::new(std::sync::Mutex::new(Some(handoff)));
        let (release, cancel) = (handoff.clone(), handoff);
        let (hand_r, hand_c) = (self.0.hand.clone(), self.0.hand.clone());
        self.0.scheduler.hold(
            id,
            delay,
            Held {
                release: Box::new(move || {
                    if let Some(h) = crate::floor::lock(&release).take() {
                        h.progress.set_scheduled(false);
                        hand_r.deliver(h);
                    }
                }),
                cancel: Box::new(move |outcome: Outcome| {
                    if let Some(h) = crate::floor::lock(&cancel).take() {
                        if outcome == Outcome::Cancelled {
                            h.progress.cancel();
                        }
                        h.progress.set_scheduled(false);
                        hand_c.finish_all(&h, &outcome);
                    }
                }),
            },
        );
    }

    /// The `redis` admission: the job's chunks are in Redis before the 202
    /// goes out. `queue.capacity` bounds the tokens waiting in the stream,
    /// counted in whole chunks (XLEN × chunk size), cluster-wide.
    async fn admit_shared(&self, cluster: &RedisStore, job: NewJob) -> Result<JobId, AdmitError> {
        let NewJob {
            platform,
            app,
            fields,
            tokens,
            expires_at,
            delay,
            notif_id,
        } = job;
        let total = tokens.len() as u64;
        let unavailable = |e: RedisError| {
            tracing::warn!(error = %e, "send refused: the shared queue is unreachable");
            AdmitError::Unavailable(
                "the shared queue (Redis) cannot be reached; nothing was queued. Retry later"
                    .into(),
            )
        };
        let capacity = self.0.admission.capacity();
        let queued = cluster.queued_chunks().await.map_err(unavailable)? * CHUNK_TOKENS as u64;
        if queued.saturating_add(total) > capacity {
            return Err(AdmitError::Full {
                pending: queued,
                capacity,
                wanted: total,
            });
        }
        let rendered: Vec<String> = (0..tokens.len())
            .map(|i| {
                let kept = tokens.get(u32::try_from(i).unwrap_or(u32::MAX));
                platform.codec().wire(kept).into_owned()
            })
            .collect();
        let id = JobId::new();
        cluster
            .accept(ChunkedJob {
                id,
                platform,
                app: app.clone(),
                fields: String::from_utf8_lossy(&fields).into_owned(),
                tokens: rendered,
                expires_at,
                delay,
                notif_id,
            })
            .await
            .map_err(unavailable)?;
        // Counted in this gateway's books when a gateway takes a chunk.
        self.0
            .metrics
            .accepted
            .with_label_values(&[platform.as_str(), &app])
            .inc_by(total);
        Ok(id)
    }

    // ===== reads =====

    /// The gateways sharing the store, their chunks, the stream's length and
    /// lag (`GET /cluster`); `None` when the store is not shared.
    pub async fn cluster_view(
        &self,
    ) -> Option<Result<crate::store::redis::view::ClusterView, ReadError>> {
        match &self.0.store {
            Store::Redis(cluster) => Some(
                crate::store::redis::view::read(cluster)
                    .await
                    .map_err(ReadError::from),
            ),
            Store::Memory | Store::Disk(..) => None,
        }
    }

    /// A family's app's totals.
    pub async fn counters(&self, family: Family, app: &str) -> Result<Counters, ReadError> {
        match &self.0.store {
            Store::Redis(cluster) => Ok(cluster.counters(family, app).await?),
            Store::Memory | Store::Disk(..) => Ok(self
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
    ) -> Result<Vec<Value>, ReadError> {
        match &self.0.store {
            Store::Redis(cluster) => Ok(cluster.list(family, app, list.name(), drain).await?),
            Store::Disk(disk, _) => Ok(disk.list(family, app, list, drain).await?),
            Store::Memory => Ok(self.local_list(family, app, list, drain)),
        }
    }

    fn local_list(&self, family: Family, app: &str, list: ListKind, drain: bool) -> Vec<Value> {
        let Some(report) = self.0.reports.app(family, app) else {
            return Vec::new();
        };
        let list = report.list(list);
        let taken = if drain { list.drain() } else { list.snapshot() };
        taken
            .into_iter()
            .filter_map(|e| serde_json::to_value(e).ok())
            .collect()
    }

    /// A list's size and how many entries it dropped because it was full.
    pub fn list_stats(&self, family: Family, app: &str, list: ListKind) -> (usize, u64) {
        if let Store::Disk(disk, _) = &self.0.store {
            let s = disk.list_stats(family, app, list);
            return (s.size, s.dropped);
        }
        let Some(report) = self.0.reports.app(family, app) else {
            return (0, 0);
        };
        let list = report.list(list);
        (list.len(), list.dropped())
    }

    /// A job's status; `None` when unknown (or forgotten: older than the
    /// last `report.max_jobs` jobs).
    pub async fn job(&self, id: JobId) -> Result<Option<JobStatus>, ReadError> {
        if let Store::Redis(cluster) = &self.0.store
            && let Some(status) = cluster.job(&id.to_string()).await?
        {
            // Any gateway may deliver a job's tokens: its status lives in Redis.
            return Ok(Some(status));
        }
        Ok(self.0.reports.jobs.get(&id).map(|p| JobStatus::of(&p)))
    }

    /// Cancels a job: tokens not yet sent end as `cancelled` (a scheduled
    /// job at once, a running one as workers reach its tokens). `None` when
    /// the job is unknown.
    pub async fn cancel(&self, id: JobId) -> Result<Option<JobStatus>, ReadError> {
        if let Store::Redis(cluster) = &self.0.store
            && cluster.cancel(&id.to_string()).await?
        {
            // The job's chunks may be on any gateway; each sees the
            // cancellation in Redis.
            return self.job(id).await;
        }
        let Some(progress) = self.0.reports.jobs.get(&id) else {
            return Ok(None);
        };
        if let Store::Disk(disk, _) = &self.0.store
            && progress.pending() > 0
        {
            // On disk first: a restart must not send what the sender cancelled.
            disk.cancel(id).await?;
        }
        if !self.0.scheduler.cancel(&id) {
            progress.cancel();
        }
        self.job(id).await
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
    /// let requests in flight settle, and deal with what is left: `memory`
    /// records it as expired (`Shutdown`); `disk` and `redis` keep it for
    /// the next start or another gateway. Logs the totals.
    pub async fn drain(&self, grace: Duration) -> DrainReport {
        let started = Instant::now();
        let inner = &self.0;
        let keeps = !matches!(inner.store, Store::Memory);
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
        if let Store::Redis(cluster) = &inner.store {
            // Take no more chunks; what is in the stream waits for the others.
            cluster.stop_reading();
        }
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
        if let Store::Redis(cluster) = &inner.store {
            // Unfinished tokens stay pending in the stream (another gateway
            // reclaims them after claim_idle_ms) instead of ending as expired.
            cluster.detach();
        }
        let (mut abandoned, mut kept) = (0, 0);
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
        self.flush_store().await;
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

    /// Writes what the store still buffers (the last outcomes).
    async fn flush_store(&self) {
        if let Store::Disk(disk, _) = &self.0.store {
            if let Err(e) = disk.flush().await {
                tracing::error!(error = %e, "cannot write the last outcomes to the disk store; their tokens will be sent again at the next start");
            }
            disk.close();
        }
        if let Store::Redis(cluster) = &self.0.store {
            for _ in 0..20 {
                match cluster.flush().await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot write the last outcomes to Redis; retrying");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }
        }
    }

    fn log_totals(&self) {
        for family in Family::ALL {
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

/// The ranges of `0..total` not in `done` (sorted, disjoint).
pub fn unfinished(total: u32, done: &[Range<u32>]) -> Vec<Range<u32>> {
    let mut out = Vec::new();
    let mut at = 0;
    for r in done {
        if r.start > at {
            out.push(at..r.start);
        }
        at = at.max(r.end);
    }
    if at < total {
        out.push(at..total);
    }
    out
}
