//! The `redis` backend's store: several gateways share one Redis stream, each
//! token is sent by one of them, and a `kill -9` loses nothing answered 202.
//!
//! Keys (all start with `{<queue.stream>}`, the hash tag, written `S` here,
//! so they all hash to one Redis Cluster slot; see [`link::stream_key`]):
//! - `S`: the stream. One entry per [`Chunk`] (up to [`CHUNK_TOKENS`] tokens
//!   of one job), XADDed before the 202 goes out.
//! - `S:done:<entry>`: a set of the chunk's tokens that have an outcome. A
//!   chunk reclaimed from a dead gateway resends only tokens not in it.
//! - `S:report:<family>:<app>`: the cluster-wide report counters (a hash).
//! - `S:list:<family>:<app>:<list>`: the report lists, newest first, trimmed
//!   to `report.max_list`.
//! - `S:job:<id>`: the job's total and outcome counts, for `GET /jobs/{id}`;
//!   it expires `server.job_retention_s` after the job finished.
//! - `S:jobs:live`, `S:jobs:done`: unfinished jobs by acceptance and
//!   finished ones by finish time, for `GET /jobs` ([`jobs`]).
//! - `S:delayed`: delayed chunks, scored by due time (ms), moved to the stream
//!   when due.
//! - `S:cred:<key>` and `S:cred:<key>:lock`: the cluster's shared provider
//!   tokens and their mint locks ([`credentials`]).
//!
//! Consuming: a gateway reads with XREADGROUP in the shared group, holding a
//! window of chunks sized from measured round trips ([`window`], at most
//! [`CHUNKS_IN_FLIGHT`]: so the others get their share, and a crash can cost
//! at most that many chunks' unfinished tokens). Outcomes are buffered and
//! written in one MULTI/EXEC as soon as a chunk completes, and at least
//! every [`FLUSH_EVERY`]: done-set members, counter deltas, list entries,
//! and the XACK + XDEL of every chunk whose tokens all have an outcome, in
//! the same script call as its last outcomes. A chunk finished within one
//! flush never gets a done set: its counts are summed in the script. A gateway keeps its own chunks' idle time
//! low (XCLAIM JUSTID), and XAUTOCLAIMs chunks idle longer than
//! `queue.claim_idle_ms`: their consumer died.

//!
//! Split by concern: [`wire`] (the stream entry and key names), [`consume`]
//! (the reader, reclaimer and delayed-chunk loops), [`flush`] (buffered
//! outcomes, written in batches), [`read`] (report counters, lists, jobs),
//! [`link`] (URL, TLS, AUTH), [`window`] (chunks held, from round trips),
//! [`credentials`] (the shared provider tokens), [`view`] (`GET /cluster`),
//! [`staged`] (admission that waits for replicas: `queue.redis_min_replicas`),
//! [`seam`] (the [`crate::store::Store`] impl over all of it).
//!
//! Every connection follows the primary ([`crate::shared::primary`]): the
//! URL's host, or the one the Sentinels name, found again after a failover.

mod accept;
pub mod consume;
pub mod flush;
mod jobs;
mod keys;
pub mod read;
mod seam;
pub mod staged;
pub mod view;
pub mod window;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::floor::lock;
use crate::job::{Catalog, Family, JobProgress};
use crate::shared::link::{self, RedisQueueConfig};
use crate::shared::primary::{Conn, Primary};
use crate::shared::replicas::AckFailures;

use self::flush::Buffer;

/// Tokens per stream entry: large enough that a 100k-token job is 100
/// entries, small enough that a reclaimed chunk is quick to re-read.
pub const CHUNK_TOKENS: usize = 1000;
/// The most chunks one gateway holds at once (the window's maximum, see
/// [`window`]); bounds what a crash can resend: this many chunks' tokens
/// without a written outcome.
pub const CHUNKS_IN_FLIGHT: usize = window::MAX_WINDOW;
/// Buffered outcomes are written at least this often (and at once when a
/// chunk completes).
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Redis could not be reached or refused a command.
#[derive(Debug, thiserror::Error)]
#[error("redis {what} ({url}): {source}")]
pub struct RedisError {
    /// What we were doing.
    pub what: &'static str,
    /// `queue.redis_url` without its password.
    pub url: String,
    /// The client's error.
    #[source]
    pub source: redis::RedisError,
}

/// A chunk this gateway is delivering.
struct InFlight {
    entry: String,
    /// Tokens in the stream entry, those done before it was reclaimed
    /// included: its done set must hold this many before it is acked.
    size: u64,
    remaining: AtomicU64,
    /// When its first and its last outcome arrived (the window's `S`; the
    /// last also starts its ack delay).
    first_outcome: OnceLock<Instant>,
    finished_at: OnceLock<Instant>,
    // Keeps the registry key (the progress address) from being reused.
    progress: Arc<JobProgress>,
    // Returned when the chunk's ack is written: a slot for the next chunk.
    _permit: OwnedSemaphorePermit,
}

/// The shared queue: a handle on Redis, the chunks in flight here, and the
/// buffered outcome writes.
pub struct RedisStore {
    /// This store, for the tasks [`Store::start`] spawns.
    me: std::sync::Weak<Self>,
    /// `queue.capacity`: tokens the stream may hold, cluster-wide.
    capacity: u64,
    /// How chunks' platform names are read back.
    catalog: Catalog,
    /// The connection most commands share (a gateway started while Redis
    /// is down waits for it in the background; see [`RedisStore::connect`]).
    primary: Primary,
    /// Connections of their own for admissions that wait for replicas
    /// (`WAIT` holds up every other command of its connection); none
    /// without `queue.redis_min_replicas`.
    admission: Vec<Primary>,
    next_admission: AtomicUsize,
    /// Admissions too few replicas acknowledged are counted here.
    ack_failures: AckFailures,
    config: RedisQueueConfig,
    url: String,
    max_list: usize,
    /// `server.job_retention_s`: how long a finished job's status is kept.
    retention: Duration,
    buffer: Mutex<Buffer>,
    /// Chunks in flight here, by the address of their `JobProgress`.
    chunks: Mutex<HashMap<usize, Arc<InFlight>>>,
    entries: Mutex<HashSet<String>>,
    slots: Arc<Semaphore>,
    /// Permits `slots` was given: the window now.
    window_now: AtomicUsize,
    window: Mutex<window::Window>,
    /// Woken when a chunk completes: its ack is written at once.
    flush_now: Notify,
    healthy: AtomicBool,
    stopping: AtomicBool,
    detached: AtomicBool,
    /// Set every `claim_idle_ms / 3`: the reader looks for idle chunks first.
    claim_due: AtomicBool,
    flushing: tokio::sync::Mutex<()>,
    stop: Notify,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("stream", &self.config.stream)
            .field("consumer", &self.config.consumer)
            .finish()
    }
}

/// Never log the password: see [`link::masked_url`].
fn redact(url: &str) -> String {
    link::masked_url(url)
}

/// Where the primary is, for logs and errors: the URL without its password,
/// or the Sentinels' master name and addresses.
fn describe(config: &RedisQueueConfig) -> String {
    match &config.sentinel {
        Some(sentinel) => format!("sentinel {}", sentinel.describe()),
        None => redact(&config.url),
    }
}

/// Admissions that wait for replicas share this many connections.
const ADMISSION_CONNECTIONS: usize = 4;

impl RedisStore {
    /// Connects to Redis and creates the consumer group if it does not exist.
    /// When Redis cannot be reached the cluster is returned unconnected and
    /// keeps trying in the background (backoff 200 ms doubling to 2 s):
    /// until then `/readyz` answers 503 and sends 503 `queue_unavailable`.
    /// Only a URL that cannot be used at all is an error.
    pub async fn connect(
        config: &RedisQueueConfig,
        max_list: usize,
        capacity: u64,
        retention: Duration,
        catalog: Catalog,
        ack_failures: AckFailures,
    ) -> Result<Arc<Self>, RedisError> {
        let url = describe(config);
        let err = |what| {
            let url = describe(config);
            move |source| RedisError { what, url, source }
        };
        let primary = Primary::new(config, "queue", link::RESPONSE_TIMEOUT)
            .map_err(|e| err("URL")(e.source))?;
        let admission = if config.replicas.wanted() {
            (0..ADMISSION_CONNECTIONS)
                .map(|_| {
                    Primary::new(
                        config,
                        "admission",
                        link::RESPONSE_TIMEOUT + config.replicas.timeout,
                    )
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err("URL")(e.source))?
        } else {
            Vec::new()
        };
        // Found in the background from now, so the first sends find them.
        for link in &admission {
            let _ = link.get();
        }
        let first = primary.connect().await;
        let mut config = config.clone();
        // Every key of the stream shares its hash tag (one Redis Cluster slot).
        config.stream = link::stream_key(&config.stream);
        let cluster = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            primary,
            admission,
            next_admission: AtomicUsize::new(0),
            ack_failures,
            config,
            url,
            max_list,
            retention,
            capacity,
            catalog,
            buffer: Mutex::default(),
            chunks: Mutex::default(),
            entries: Mutex::default(),
            slots: Arc::new(Semaphore::new(window::MIN_WINDOW)),
            window_now: AtomicUsize::new(window::MIN_WINDOW),
            window: Mutex::default(),
            flush_now: Notify::new(),
            healthy: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            detached: AtomicBool::new(false),
            claim_due: AtomicBool::new(false),
            flushing: tokio::sync::Mutex::new(()),
            stop: Notify::new(),
        });
        match first {
            Ok(_) => {
                cluster.ensure_group().await.map_err(err("XGROUP CREATE"))?;
            }
            Err(e) => {
                cluster.healthy.store(false, Ordering::Relaxed);
                tracing::warn!(url = %cluster.url, error = %e, "waiting for Redis: the gateway serves, /readyz answers 503 until it is reached");
                tokio::spawn(cluster.clone().wait_for_redis());
            }
        }
        Ok(cluster)
    }

    /// Retries the first connection until it succeeds, then creates the group.
    async fn wait_for_redis(self: Arc<Self>) {
        let mut failures = 1u32;
        loop {
            tokio::time::sleep(backoff(failures)).await;
            match self.primary.connect().await {
                Ok(_) => {
                    match self.ensure_group().await {
                        Ok(()) => {
                            self.healthy.store(true, Ordering::Relaxed);
                            tracing::info!(url = %self.url, "connected to Redis");
                        }
                        // The reader recreates a missing group (NOGROUP).
                        Err(e) => {
                            tracing::warn!(error = %e, "connected to Redis, cannot create the consumer group yet")
                        }
                    }
                    return;
                }
                Err(e) => {
                    failures += 1;
                    if failures.is_multiple_of(20) {
                        tracing::warn!(url = %self.url, error = %e, "waiting for Redis");
                    }
                }
            }
        }
    }

    /// The shared connection to the primary; an error at once while the
    /// primary is not known (not reached yet, or being found again).
    fn link(&self) -> redis::RedisResult<Conn> {
        self.primary.get()
    }

    /// A connection for one admission: one of its own when admissions wait
    /// for replicas, else the shared one.
    fn admission_link(&self) -> redis::RedisResult<Conn> {
        if self.admission.is_empty() {
            return self.link();
        }
        let i = self.next_admission.fetch_add(1, Ordering::Relaxed) % self.admission.len();
        self.admission[i].get()
    }

    async fn ensure_group(&self) -> redis::RedisResult<()> {
        let mut conn = self.link()?;
        // From "0": chunks added before any gateway of the group ran are sent too.
        let created: redis::RedisResult<()> = conn
            .xgroup_create_mkstream(&self.config.stream, &self.config.group, "0")
            .await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }

    /// This gateway's consumer name.
    pub fn consumer(&self) -> &str {
        &self.config.consumer
    }

    /// The settings, with `stream` as the hash-tagged key.
    pub fn redis_config(&self) -> &RedisQueueConfig {
        &self.config
    }

    /// A handle on the shared connection (for read-only views).
    pub fn connection(&self) -> Result<Conn, RedisError> {
        self.link().map_err(|e| self.failed("connect", e))
    }

    /// Reports a failed command: marks Redis unreachable and adds context.
    pub fn failed(&self, what: &'static str, source: redis::RedisError) -> RedisError {
        self.healthy.store(false, Ordering::Relaxed);
        RedisError {
            what,
            url: self.url.clone(),
            source,
        }
    }

    /// Feeds the finished chunks' timings to the window and resizes it.
    fn measure(&self, finished: &[Arc<InFlight>], acked_at: Instant) {
        if finished.is_empty() {
            return;
        }
        let target = {
            let mut window = lock(&self.window);
            for chunk in finished {
                if let (Some(first), Some(last)) =
                    (chunk.first_outcome.get(), chunk.finished_at.get())
                {
                    window.chunk(last.duration_since(*first), acked_at.duration_since(*last));
                }
            }
            window.size()
        };
        self.resize(target);
    }

    fn resize(&self, target: usize) {
        let now = self.window_now.load(Ordering::Acquire);
        if target > now {
            self.slots.add_permits(target - now);
            self.window_now.store(target, Ordering::Release);
            tracing::debug!(window = target, "chunk window widened");
        } else if target < now {
            // Only free permits can be taken back; the rest shrink later.
            let forgotten = self.slots.forget_permits(now - target);
            if forgotten > 0 {
                self.window_now.store(now - forgotten, Ordering::Release);
                tracing::debug!(window = now - forgotten, "chunk window narrowed");
            }
        }
    }

    /// Chunks this gateway may hold now (the window).
    pub fn window(&self) -> usize {
        self.window_now.load(Ordering::Acquire)
    }

    /// False while Redis is unreachable (`/readyz` fails).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn key(&self, rest: std::fmt::Arguments<'_>) -> String {
        format!("{}:{rest}", self.config.stream)
    }

    fn report_key(&self, family: Family, app: &str) -> String {
        self.key(format_args!("report:{}:{app}", family.name()))
    }

    fn list_key(&self, family: Family, app: &str, list: &str) -> String {
        self.key(format_args!("list:{}:{app}:{list}", family.name()))
    }

    fn job_key(&self, id: &str) -> String {
        self.key(format_args!("job:{id}"))
    }

    fn cancel_key(&self, id: &str) -> String {
        self.key(format_args!("cancel:{id}"))
    }

    /// Marks a job cancelled for every gateway. False when Redis does not
    /// know the job.
    async fn write_cancel(&self, id: &str) -> Result<bool, RedisError> {
        let mut conn = self.connection()?;
        let r: redis::RedisResult<bool> = conn.exists(self.job_key(id)).await;
        if !self.fail("EXISTS", r)? {
            return Ok(false);
        }
        let ttl = u64::try_from(self.retention_s()).unwrap_or(u64::MAX);
        let r: redis::RedisResult<()> = conn.set_ex(self.cancel_key(id), 1, ttl).await;
        self.fail("SET", r)?;
        // A job still waiting for its send_at ends now, not at its send
        // time: its delayed chunks go to the stream, where whichever gateway
        // reads them finds the cancel and records every token cancelled.
        let r: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg(jobs::RELEASE_CANCELLED_SCRIPT)
            .arg(3)
            .arg(self.job_key(id))
            .arg(self.delayed_key())
            .arg(&self.config.stream)
            .arg(id)
            .query_async(&mut conn)
            .await;
        self.fail("EVAL (cancel delayed)", r)?;
        Ok(true)
    }

    fn done_key(&self, entry: &str) -> String {
        self.key(format_args!("done:{entry}"))
    }

    fn delayed_key(&self) -> String {
        self.key(format_args!("delayed"))
    }

    fn fail<T>(&self, what: &'static str, r: redis::RedisResult<T>) -> Result<T, RedisError> {
        r.map_err(|source| {
            self.healthy.store(false, Ordering::Relaxed);
            RedisError {
                what,
                url: self.url.clone(),
                source,
            }
        })
    }

    /// Writes the last outcomes at shutdown, retrying for a few seconds.
    async fn flush_at_close(&self) {
        for _ in 0..20 {
            match self.flush().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write the last outcomes to Redis; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    /// Tokens of chunks this gateway holds without an outcome.
    pub fn local_pending(&self) -> u64 {
        lock(&self.chunks)
            .values()
            .map(|c| c.remaining.load(Ordering::Relaxed))
            .sum()
    }
}

/// 200 ms doubling to 2 s: how long to wait after `failures` failures in a row
/// (short enough that work resumes within seconds of Redis coming back).
fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(6)).min(2000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password() {
        assert_eq!(
            redact("redis://:s3cret@db:6379/0"),
            "redis://:********@db:6379/0"
        );
        assert_eq!(
            redact("rediss://app:s3cret@db:6380"),
            "rediss://app:********@db:6380"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
