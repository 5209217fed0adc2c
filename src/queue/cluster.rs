//! The `redis` queue backend: several gateways share one Redis stream, each
//! token is sent by one of them, and a `kill -9` loses nothing answered 202.
//!
//! Keys (all start with `queue.stream`, written `S` here):
//! - `S`: the stream. One entry per [`Chunk`] (up to [`CHUNK_TOKENS`] tokens
//!   of one job), XADDed before the 202 goes out.
//! - `S:done:<entry>`: a set of the chunk's tokens that have an outcome. A
//!   chunk reclaimed from a dead gateway resends only tokens not in it.
//! - `S:report:<family>:<app>`: the cluster-wide report counters (a hash).
//! - `S:list:<family>:<app>:<list>`: the report lists, newest first, trimmed
//!   to `report.max_list`.
//! - `S:job:<id>`: the job's total and outcome counts, for `GET /jobs/{id}`.
//! - `S:delayed`: delayed chunks, scored by due time (ms), moved to the stream
//!   when due.
//!
//! Consuming: a gateway reads with XREADGROUP in the shared group, at most
//! [`CHUNKS_IN_FLIGHT`] chunks at a time (so the others get their share, and a
//! crash can cost at most that many chunks' unfinished tokens). Outcomes are
//! buffered and written every [`FLUSH_EVERY`] in one MULTI/EXEC: done-set
//! members, counter deltas, list entries, and the XACK + XDEL of every chunk
//! whose tokens all have an outcome. A gateway keeps its own chunks' idle time
//! low (XCLAIM JUSTID), and XAUTOCLAIMs chunks idle longer than
//! `queue.claim_idle_ms`: their consumer died.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::StreamId;
use redis::{AsyncCommands, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::apns::ApnsService;
use crate::apns::message::{ApnsFields, ApnsMessage};
use crate::config::RedisQueueConfig;
use crate::fcm::{GoogleFields, GoogleMessage, GoogleService};
use crate::job::{Family, Job, JobId, JobProgress, Outcome, OutcomeKind, Platform, TokenList};
use crate::report::{Counters, DEFAULT_APP, Recorder, now_ms};

/// Tokens per stream entry: large enough that a 100k-token job is 100
/// entries, small enough that a reclaimed chunk is quick to re-read.
pub const CHUNK_TOKENS: usize = 1000;
/// Chunks one gateway works on at once; bounds what a crash can resend.
pub const CHUNKS_IN_FLIGHT: usize = 4;
/// How often buffered outcomes are written to Redis.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Records a chunk's outcomes: KEYS = done set, stream; ARGV = max_list,
/// entry id, then per token: token, report key, outcome field, attempt
/// field, job key, job field, list key ('' = none), list entry. A token
/// already in the done set, or any token of a chunk already acked and
/// deleted, is skipped, so outcomes are counted once whatever the retries.
const FLUSH_SCRIPT: &str = r"
if #redis.call('XRANGE', KEYS[2], ARGV[2], ARGV[2]) == 0 then return 0 end
local max = tonumber(ARGV[1])
for i = 3, #ARGV, 8 do
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then
    redis.call('HINCRBY', ARGV[i+1], ARGV[i+2], 1)
    redis.call('HINCRBY', ARGV[i+1], ARGV[i+3], 1)
    redis.call('HINCRBY', ARGV[i+4], ARGV[i+5], 1)
    if ARGV[i+6] ~= '' then
      redis.call('LPUSH', ARGV[i+6], ARGV[i+7])
      redis.call('LTRIM', ARGV[i+6], 0, max - 1)
    end
  end
end
return 0
";

/// How long a job's status is kept in Redis.
const JOB_TTL_S: i64 = 7 * 24 * 3600;

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

/// The request fields a consumer needs to rebuild the message: the validated
/// request as received, so every gateway builds the same message.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StoredFields {
    /// `/apns/send`.
    Apns {
        /// Serialized JSON payload.
        payload: String,
        /// `topic`.
        topic: Option<String>,
        /// `push_type`.
        push_type: Option<String>,
        /// `priority`.
        priority: Option<i64>,
        /// `expiration`.
        expiration: Option<i64>,
        /// `collapse_id`.
        collapse_id: Option<String>,
    },
    /// `/gcm/send`, `/fcm/send`.
    Google {
        /// `payload`.
        payload: Option<String>,
        /// `notification`.
        notification: Option<String>,
        /// `collapse_key`.
        collapse_key: Option<String>,
        /// `priority`.
        priority: Option<String>,
        /// `time_to_live`.
        time_to_live: Option<i64>,
    },
}

impl StoredFields {
    /// Copies APNs request fields.
    pub fn apns(f: &ApnsFields<'_>) -> Self {
        StoredFields::Apns {
            payload: String::from_utf8_lossy(f.payload).into_owned(),
            topic: f.topic.map(str::to_owned),
            push_type: f.push_type.map(str::to_owned),
            priority: f.priority,
            expiration: f.expiration,
            collapse_id: f.collapse_id.map(str::to_owned),
        }
    }

    /// Copies Google request fields.
    pub fn google(f: &GoogleFields<'_>) -> Self {
        let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
        StoredFields::Google {
            payload: text(f.payload),
            notification: text(f.notification),
            collapse_key: f.collapse_key.map(str::to_owned),
            priority: f.priority.map(str::to_owned),
            time_to_live: f.time_to_live,
        }
    }
}

/// One stream entry: some tokens of one job, and what is needed to send them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chunk {
    /// The job id.
    pub job: String,
    /// `apns`, `fcm` or `gcm`.
    pub platform: String,
    /// The app (credential set).
    pub app: String,
    /// Index of this chunk within its job (makes delayed members unique).
    pub index: u32,
    /// The request fields.
    pub fields: StoredFields,
    /// After this (ms since epoch) nothing more is sent.
    pub expires_at_ms: Option<u64>,
    /// The tokens as the sender wrote them (APNs: lower-case hex).
    pub tokens: Vec<String>,
}

fn platform_of(name: &str) -> Option<Platform> {
    match name {
        "apns" => Some(Platform::Apns),
        "fcm" => Some(Platform::Fcm),
        "gcm" => Some(Platform::Gcm),
        _ => None,
    }
}

fn family_name(family: Family) -> &'static str {
    match family {
        Family::Apple => "apns",
        Family::Google => "gcm",
        Family::WebPush => "webpush",
    }
}

/// An accepted job, as [`Cluster::accept`] writes it.
#[derive(Debug)]
pub struct NewJob {
    /// The id answered in the 202.
    pub id: JobId,
    /// The upstream.
    pub platform: Platform,
    /// The app (credential set).
    pub app: Arc<str>,
    /// The validated request fields.
    pub fields: StoredFields,
    /// The tokens, rendered as the sender wrote them.
    pub tokens: Vec<String>,
    /// After this nothing more is sent.
    pub expires_at: Option<SystemTime>,
    /// Hold the job this long first (`send_at` / `delay_seconds`).
    pub delay: Option<Duration>,
}

/// Where consumed chunks are delivered: this gateway's services.
#[derive(Clone, Default)]
pub struct Targets {
    /// `[apns]`.
    pub apns: Option<ApnsService>,
    /// `[apns.apps.*]`.
    pub apns_apps: BTreeMap<String, ApnsService>,
    /// `[fcm]` or `[gcm]`.
    pub google: Option<GoogleService>,
    /// `[fcm.apps.*]` / `[gcm.apps.*]`.
    pub google_apps: BTreeMap<String, GoogleService>,
}

impl Targets {
    fn apns(&self, app: &str) -> Option<&ApnsService> {
        if app == DEFAULT_APP {
            self.apns.as_ref()
        } else {
            self.apns_apps.get(app)
        }
    }

    fn google(&self, app: &str) -> Option<&GoogleService> {
        if app == DEFAULT_APP {
            self.google.as_ref()
        } else {
            self.google_apps.get(app)
        }
    }
}

/// A chunk this gateway is delivering.
struct InFlight {
    entry: String,
    remaining: AtomicU64,
    // Keeps the registry key (the progress address) from being reused.
    progress: Arc<JobProgress>,
    // Returned when the chunk's ack is written: a slot for the next chunk.
    _permit: OwnedSemaphorePermit,
}

/// Writes not yet sent to Redis.
#[derive(Default)]
struct Buffer {
    done: HashMap<String, Vec<String>>,
    increments: HashMap<String, HashMap<&'static str, i64>>,
    lists: HashMap<String, Vec<String>>,
    acks: Vec<String>,
    finished: Vec<Arc<InFlight>>,
}

impl Buffer {
    fn is_empty(&self) -> bool {
        self.done.is_empty()
            && self.increments.is_empty()
            && self.lists.is_empty()
            && self.acks.is_empty()
    }

    fn add(&mut self, key: String, field: &'static str, n: i64) {
        *self
            .increments
            .entry(key)
            .or_default()
            .entry(field)
            .or_default() += n;
    }

    /// Puts back writes whose flush failed, ahead of newer ones.
    fn absorb(&mut self, older: Buffer) {
        for (k, mut v) in older.done {
            let slot = self.done.entry(k).or_default();
            v.append(slot);
            *slot = v;
        }
        for (k, fields) in older.increments {
            let slot = self.increments.entry(k).or_default();
            for (f, n) in fields {
                *slot.entry(f).or_default() += n;
            }
        }
        for (k, mut v) in older.lists {
            let slot = self.lists.entry(k).or_default();
            v.append(slot);
            *slot = v;
        }
        let mut acks = older.acks;
        acks.append(&mut self.acks);
        self.acks = acks;
        let mut finished = older.finished;
        finished.append(&mut self.finished);
        self.finished = finished;
    }
}

/// The shared queue: a handle on Redis, the chunks in flight here, and the
/// buffered outcome writes.
pub struct Cluster {
    conn: ConnectionManager,
    config: RedisQueueConfig,
    url: String,
    max_list: usize,
    buffer: Mutex<Buffer>,
    /// Chunks in flight here, by the address of their `JobProgress`.
    chunks: Mutex<HashMap<usize, Arc<InFlight>>>,
    entries: Mutex<HashSet<String>>,
    slots: Arc<Semaphore>,
    healthy: AtomicBool,
    stopping: AtomicBool,
    detached: AtomicBool,
    /// Set every `claim_idle_ms / 3`: the reader looks for idle chunks first.
    claim_due: AtomicBool,
    flushing: tokio::sync::Mutex<()>,
    stop: Notify,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("url", &self.url)
            .field("stream", &self.config.stream)
            .field("consumer", &self.config.consumer)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each update is a few inserts; a panic cannot leave them half-done.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `redis://user:secret@host` → `redis://host`: never log the password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

async fn manager(client: redis::Client) -> redis::RedisResult<ConnectionManager> {
    // Fail a command within seconds when Redis is gone, so a send answers 503
    // rather than hang; the manager reconnects on the next command.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(5))
        .set_number_of_retries(1)
        .set_max_delay(1000);
    ConnectionManager::new_with_config(client, config).await
}

impl Cluster {
    /// Connects to Redis and creates the consumer group if it does not exist.
    pub async fn connect(
        config: &RedisQueueConfig,
        max_list: usize,
    ) -> Result<Arc<Self>, RedisError> {
        let url = redact(&config.url);
        let err = |what| {
            let url = redact(&config.url);
            move |source| RedisError { what, url, source }
        };
        let client = redis::Client::open(config.url.as_str()).map_err(err("URL"))?;
        let conn = manager(client).await.map_err(err("connect"))?;
        let cluster = Arc::new(Self {
            conn,
            config: config.clone(),
            url,
            max_list,
            buffer: Mutex::default(),
            chunks: Mutex::default(),
            entries: Mutex::default(),
            slots: Arc::new(Semaphore::new(CHUNKS_IN_FLIGHT)),
            healthy: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            detached: AtomicBool::new(false),
            claim_due: AtomicBool::new(false),
            flushing: tokio::sync::Mutex::new(()),
            stop: Notify::new(),
        });
        cluster.ensure_group().await.map_err(err("XGROUP CREATE"))?;
        Ok(cluster)
    }

    async fn ensure_group(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
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

    /// False while Redis is unreachable (`/readyz` fails).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn key(&self, rest: std::fmt::Arguments<'_>) -> String {
        format!("{}:{rest}", self.config.stream)
    }

    fn report_key(&self, family: Family, app: &str) -> String {
        self.key(format_args!("report:{}:{app}", family_name(family)))
    }

    fn list_key(&self, family: Family, app: &str, list: &str) -> String {
        self.key(format_args!("list:{}:{app}:{list}", family_name(family)))
    }

    fn job_key(&self, id: &str) -> String {
        self.key(format_args!("job:{id}"))
    }

    fn cancel_key(&self, id: &str) -> String {
        self.key(format_args!("cancel:{id}"))
    }

    /// Cancels a job on every gateway: each cancels its chunks of it within
    /// half a second (a chunk read later, too, within half a second of being
    /// read). False when Redis does not know the job.
    pub async fn cancel(&self, id: &str) -> Result<bool, RedisError> {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<bool> = conn.exists(self.job_key(id)).await;
        if !self.fail("EXISTS", r)? {
            return Ok(false);
        }
        let r: redis::RedisResult<()> = conn.set_ex(self.cancel_key(id), 1, JOB_TTL_S as u64).await;
        self.fail("SET", r)?;
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

    // ===== accept =====

    /// Chunks waiting in the stream (sent or not), counted by XLEN: acked
    /// chunks are deleted, so this is the cluster's unfinished work.
    pub async fn queued_chunks(&self) -> Result<u64, RedisError> {
        let mut conn = self.conn.clone();
        let r = conn.xlen(&self.config.stream).await;
        self.fail("XLEN", r)
    }

    /// Writes a job's chunks (to the stream, or to the delayed set when
    /// `delay` is given) and counts it accepted, in one MULTI/EXEC: all of it
    /// is in Redis before the caller answers 202, or none of it is.
    pub async fn accept(&self, job: NewJob) -> Result<(), RedisError> {
        let NewJob {
            id,
            platform,
            app,
            fields,
            tokens,
            expires_at,
            delay,
        } = job;
        let app = app.as_ref();
        let total = tokens.len() as i64;
        let expires_at_ms = expires_at.and_then(|t| {
            t.duration_since(UNIX_EPOCH)
                .ok()
                .and_then(|d| u64::try_from(d.as_millis()).ok())
        });
        let mut pipe = redis::pipe();
        pipe.atomic();
        let due = delay
            .map(|d| now_ms().saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
        let mut chunk = Chunk {
            job: id.to_string(),
            platform: platform.as_str().to_owned(),
            app: app.to_owned(),
            index: 0,
            fields,
            expires_at_ms,
            tokens: Vec::new(),
        };
        let mut rest = tokens;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(CHUNK_TOKENS));
            chunk.tokens = std::mem::replace(&mut rest, tail);
            let body = serde_json::to_string(&chunk).unwrap_or_default();
            match due {
                Some(due) => pipe.zadd(self.delayed_key(), body, due).ignore(),
                None => pipe.xadd(&self.config.stream, "*", &[("c", body)]).ignore(),
            };
            chunk.index += 1;
        }
        pipe.hincr(self.report_key(platform.family(), app), "accepted", total)
            .ignore();
        let job = self.job_key(&chunk.job);
        pipe.hset_multiple(&job, &[("platform", platform.as_str()), ("app", app)])
            .ignore()
            .hincr(&job, "total", total)
            .ignore()
            .expire(&job, JOB_TTL_S)
            .ignore();
        let mut conn = self.conn.clone();
        let r = pipe.query_async::<()>(&mut conn).await;
        self.fail("XADD", r)?;
        self.healthy.store(true, Ordering::Relaxed);
        Ok(())
    }

    // ===== outcomes (called by the recorder) =====

    /// Records a terminal outcome cluster-wide. Chunks of this gateway also
    /// note the token done, and are acked once every token is.
    pub fn finished(
        &self,
        progress: &JobProgress,
        token: &str,
        outcome: &Outcome,
        attempted: bool,
    ) {
        if !attempted && self.detached.load(Ordering::Acquire) {
            // Shutting down: what is left stays pending in the stream for
            // another gateway, rather than being recorded as expired.
            return;
        }
        let in_flight = lock(&self.chunks)
            .get(&(progress as *const JobProgress as usize))
            .cloned();
        let family = progress.platform.family();
        let kind = outcome.kind();
        let report = self.report_key(family, &progress.app);
        let attempt_field = if attempted { "attempts" } else { "unattempted" };
        let job = self.job_key(&progress.id.to_string());
        let list = match outcome {
            Outcome::Unregistered { timestamp_ms } => Some((
                "unregistered",
                serde_json::json!({"token": token, "timestamp": timestamp_ms.unwrap_or_else(now_ms)}),
            )),
            Outcome::Canonical { new_token } => Some((
                "canonical",
                serde_json::json!({"original": token, "canonical": new_token}),
            )),
            Outcome::Failed { reason, status } => Some((
                "failures",
                serde_json::json!({"token": token, "reason": reason.as_ref(), "status": status, "at": now_ms()}),
            )),
            _ => None,
        }
        .map(|(name, entry)| (self.list_key(family, &progress.app, name), entry.to_string()));
        let mut buffer = lock(&self.buffer);
        let Some(chunk) = in_flight else {
            // Not a chunk of the shared queue: count it as it comes.
            buffer.add(report.clone(), attempt_field, 1);
            buffer.add(report, counter_field(kind), 1);
            buffer.add(job, kind.as_str(), 1);
            if let Some((key, entry)) = list {
                buffer.lists.entry(key).or_default().push(entry);
            }
            return;
        };
        // Written by FLUSH_SCRIPT, which counts a token only the first time
        // its outcome reaches the chunk's done set: a flush retried after an
        // ambiguous failure, or a chunk finished by two gateways, counts once.
        let (list_key, list_entry) = list.unwrap_or_default();
        buffer.done.entry(chunk.entry.clone()).or_default().extend([
            token.to_owned(),
            report,
            counter_field(kind).to_owned(),
            attempt_field.to_owned(),
            job,
            kind.as_str().to_owned(),
            list_key,
            list_entry,
        ]);
        if chunk.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            lock(&self.chunks).remove(&(progress as *const JobProgress as usize));
            buffer.acks.push(chunk.entry.clone());
            buffer.finished.push(chunk);
        }
    }

    /// Counts an attempt that will be retried.
    pub fn retried(&self, progress: &JobProgress) {
        let key = self.report_key(progress.platform.family(), &progress.app);
        let mut buffer = lock(&self.buffer);
        buffer.add(key.clone(), "attempts", 1);
        buffer.add(key, "retries", 1);
    }

    /// Counts tokens that may have been delivered twice.
    pub fn possible_duplicates(&self, progress: &JobProgress, n: u64) {
        let key = self.report_key(progress.platform.family(), &progress.app);
        lock(&self.buffer).add(key, "possible_duplicates", n as i64);
    }

    /// Writes the buffered outcomes in one MULTI/EXEC. On failure they stay
    /// buffered for the next try, so nothing is lost while Redis is away.
    pub async fn flush(&self) -> Result<(), RedisError> {
        // One flush at a time (the loop and the shutdown both call it): a
        // chunk's done-set writes must reach Redis before its ack and DEL.
        let _one = self.flushing.lock().await;
        let taken = std::mem::take(&mut *lock(&self.buffer));
        if taken.is_empty() {
            // Chunks with nothing to write (all done before) still free a slot.
            drop(taken);
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let max = self.max_list.max(1);
        for (entry, outcomes) in &taken.done {
            pipe.cmd("EVAL")
                .arg(FLUSH_SCRIPT)
                .arg(2)
                .arg(self.done_key(entry))
                .arg(&self.config.stream)
                .arg(max)
                .arg(entry)
                .arg(outcomes)
                .ignore();
        }
        for (key, fields) in &taken.increments {
            for (field, n) in fields {
                pipe.hincr(key, *field, *n).ignore();
            }
        }
        let max = max as isize;
        for (key, entries) in &taken.lists {
            pipe.lpush(key, entries)
                .ignore()
                .ltrim(key, 0, max - 1)
                .ignore();
        }
        if !taken.acks.is_empty() {
            pipe.xack(&self.config.stream, &self.config.group, &taken.acks)
                .ignore()
                .xdel(&self.config.stream, &taken.acks)
                .ignore();
            for entry in &taken.acks {
                pipe.del(self.done_key(entry)).ignore();
            }
        }
        let mut conn = self.conn.clone();
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => {
                self.healthy.store(true, Ordering::Relaxed);
                let mut entries = lock(&self.entries);
                for chunk in &taken.finished {
                    entries.remove(&chunk.entry);
                }
                // Dropping `taken` returns the finished chunks' slots.
                Ok(())
            }
            Err(source) => {
                lock(&self.buffer).absorb(taken);
                self.fail("MULTI (outcomes)", Err(source))
            }
        }
    }

    // ===== reading =====

    /// Starts the reader, the reclaimer, the delayed-chunk mover and the
    /// flusher. `recorder` must be the one holding this cluster.
    pub fn start(self: &Arc<Self>, recorder: Recorder, targets: Targets) -> Result<(), RedisError> {
        let reader_client =
            redis::Client::open(self.config.url.as_str()).map_err(|source| RedisError {
                what: "URL",
                url: self.url.clone(),
                source,
            })?;
        let consumer = Consumer {
            cluster: self.clone(),
            recorder,
            targets,
        };
        tokio::spawn(consumer.clone().read(reader_client));
        tokio::spawn(consumer.clone().reclaim());
        tokio::spawn(consumer.move_delayed());
        tokio::spawn(self.clone().flush_loop());
        Ok(())
    }

    /// Runs until the process exits, the drain included: outcomes of the
    /// chunks finished during a shutdown are written (and acked) as they come.
    async fn flush_loop(self: Arc<Self>) {
        let mut failures = 0u32;
        loop {
            match self.flush().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(50) {
                        tracing::warn!(error = %e, "cannot write outcomes to Redis; keeping them and retrying");
                    }
                }
            }
            tokio::time::sleep(backoff(failures).max(FLUSH_EVERY)).await;
        }
    }

    /// Stops taking chunks. Chunks in flight keep going.
    pub fn stop_reading(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop.notify_waiters();
    }

    /// From now on, tokens finished without an attempt (the shutdown sweep)
    /// are left pending in Redis for another gateway to reclaim.
    pub fn detach(&self) {
        self.detached.store(true, Ordering::Release);
    }

    /// Tokens of chunks this gateway holds without an outcome.
    pub fn local_pending(&self) -> u64 {
        lock(&self.chunks)
            .values()
            .map(|c| c.remaining.load(Ordering::Relaxed))
            .sum()
    }

    // ===== reports =====

    /// The cluster-wide counters of one family's app.
    pub async fn counters(&self, family: Family, app: &str) -> Result<Counters, RedisError> {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<HashMap<String, i64>> =
            conn.hgetall(self.report_key(family, app)).await;
        let map = self.fail("HGETALL", r)?;
        let get = |f: &str| u64::try_from(map.get(f).copied().unwrap_or(0)).unwrap_or(0);
        let mut c = Counters {
            accepted: get("accepted"),
            attempts: get("attempts"),
            retries: get("retries"),
            pending: 0,
            successes: get("successes"),
            failures: get("failures"),
            unregistered: get("unregistered"),
            canonicals: get("canonicals"),
            expired: get("expired"),
            cancelled: get("cancelled"),
            unattempted: get("unattempted"),
            possible_duplicates: get("possible_duplicates"),
        };
        c.pending = c.accepted.saturating_sub(c.finished());
        Ok(c)
    }

    /// A report list, oldest first; with `drain`, emptied in the same step.
    pub async fn list(
        &self,
        family: Family,
        app: &str,
        list: &str,
        drain: bool,
    ) -> Result<Vec<serde_json::Value>, RedisError> {
        let key = self.list_key(family, app, list);
        let mut pipe = redis::pipe();
        pipe.atomic().lrange(&key, 0, -1);
        if drain {
            pipe.del(&key).ignore();
        }
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<(Vec<String>,)> = pipe.query_async(&mut conn).await;
        let (raw,) = self.fail("LRANGE", r)?;
        Ok(raw
            .iter()
            .rev()
            .filter_map(|s| serde_json::from_str(s).ok())
            .collect())
    }

    /// A job's status from Redis, in the shape of `GET /jobs/{id}`.
    pub async fn job(&self, id: &str) -> Result<Option<serde_json::Value>, RedisError> {
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<HashMap<String, String>> = conn.hgetall(self.job_key(id)).await;
        let map = self.fail("HGETALL", r)?;
        if map.is_empty() {
            return Ok(None);
        }
        let get = |f: &str| map.get(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let total = get("total");
        let done: u64 = OutcomeKind::ALL.iter().map(|k| get(k.as_str())).sum();
        let pending = total.saturating_sub(done);
        Ok(Some(serde_json::json!({
            "job": id,
            "platform": map.get("platform").cloned().unwrap_or_default(),
            "state": match (pending, get("cancelled") > 0) {
                (0, true) => "cancelled",
                (0, false) => "done",
                (_, true) => "cancelling",
                _ => "running",
            },
            "total": total,
            "successes": get("success"),
            "failures": get("failed"),
            "unregistered": get("unregistered"),
            "canonicals": get("canonical"),
            "expired": get("expired"),
            "cancelled": get("cancelled"),
            "pending": pending,
        })))
    }
}

fn counter_field(kind: OutcomeKind) -> &'static str {
    match kind {
        OutcomeKind::Success => "successes",
        OutcomeKind::Failed => "failures",
        OutcomeKind::Unregistered => "unregistered",
        OutcomeKind::Canonical => "canonicals",
        OutcomeKind::Expired => "expired",
        OutcomeKind::Cancelled => "cancelled",
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

/// The consuming side: turns stream entries into local jobs.
#[derive(Clone)]
struct Consumer {
    cluster: Arc<Cluster>,
    recorder: Recorder,
    targets: Targets,
}

impl Consumer {
    fn config(&self) -> &RedisQueueConfig {
        &self.cluster.config
    }

    /// XREADGROUP one chunk per free slot, on a connection of its own: a
    /// blocking read would hold up every other command on a shared one.
    async fn read(self, client: redis::Client) {
        let mut failures = 0u32;
        let mut conn: Option<ConnectionManager> = None;
        loop {
            let permit = tokio::select! {
                p = self.cluster.slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = self.cluster.stop.notified() => return,
            };
            if self.cluster.stopping.load(Ordering::Acquire) {
                return;
            }
            if self.cluster.claim_due.load(Ordering::Acquire) {
                match self.claim_one(permit, self.config().claim_idle).await {
                    // Maybe more: try again with the next slot.
                    Ok(true) => {}
                    Ok(false) => self.cluster.claim_due.store(false, Ordering::Release),
                    Err(e) => {
                        self.cluster.claim_due.store(false, Ordering::Release);
                        tracing::debug!(error = %e, "XAUTOCLAIM failed");
                    }
                }
                continue;
            }
            let c = match &conn {
                Some(c) => c.clone(),
                None => match manager(client.clone()).await {
                    Ok(c) => {
                        conn = Some(c.clone());
                        c
                    }
                    Err(e) => {
                        failures += 1;
                        self.cluster.healthy.store(false, Ordering::Relaxed);
                        if failures == 1 || failures.is_multiple_of(20) {
                            tracing::warn!(error = %e, "cannot connect to Redis to read the queue; retrying");
                        }
                        tokio::time::sleep(backoff(failures)).await;
                        continue;
                    }
                },
            };
            let mut c = c;
            let options = redis::streams::StreamReadOptions::default()
                .group(&self.config().group, &self.config().consumer)
                .count(1)
                .block(1000);
            let streams = [self.config().stream.as_str()];
            let read: redis::RedisResult<Option<redis::streams::StreamReadReply>> = tokio::select! {
                r = c.xread_options(&streams, &[">"], &options) => r,
                _ = self.cluster.stop.notified() => return,
            };
            match read {
                Ok(reply) => {
                    failures = 0;
                    self.cluster.healthy.store(true, Ordering::Relaxed);
                    let entry = reply
                        .and_then(|r| r.keys.into_iter().next())
                        .and_then(|k| k.ids.into_iter().next());
                    if let Some(entry) = entry {
                        self.start(entry, permit, None).await;
                    }
                }
                Err(e) => {
                    failures += 1;
                    self.cluster.healthy.store(false, Ordering::Relaxed);
                    if e.code() == Some("NOGROUP") {
                        // Redis lost its data (restarted without persistence):
                        // recreate the group so new work flows again.
                        let _ = self.cluster.ensure_group().await;
                    } else if failures == 1 || failures.is_multiple_of(20) {
                        tracing::warn!(error = %e, "cannot read the queue from Redis; retrying");
                    }
                    tokio::time::sleep(backoff(failures)).await;
                }
            }
        }
    }

    /// Keeps this gateway's chunks from looking idle, and has the reader look
    /// for chunks idle past `claim_idle_ms` (their gateway died).
    async fn reclaim(self) {
        let idle = self.config().claim_idle;
        let every = (idle / 3).max(Duration::from_millis(100));
        // Runs until the process exits, shutdown included: chunks still being
        // finished during the drain must not look abandoned to the others.
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self.heartbeat().await {
                tracing::debug!(error = %e, "cannot refresh our chunks' idle time");
                continue;
            }
            if !self.cluster.stopping.load(Ordering::Acquire) {
                // The reader takes over idle chunks with its next free slot,
                // ahead of new work: under load a slot never stays free for
                // long, and a dead gateway's chunks must not wait for the
                // stream to drain.
                self.cluster.claim_due.store(true, Ordering::Release);
            }
        }
    }

    /// Resets the idle time of the chunks this gateway still owns. Only
    /// those: a chunk another gateway took over (we were cut off for longer
    /// than `claim_idle_ms`) is not taken back.
    async fn heartbeat(&self) -> redis::RedisResult<()> {
        let ours: HashSet<String> = lock(&self.cluster.entries).iter().cloned().collect();
        if ours.is_empty() {
            return Ok(());
        }
        let mut conn = self.cluster.conn.clone();
        let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&self.config().stream)
            .arg(&self.config().group)
            .arg("-")
            .arg("+")
            .arg(ours.len() * 2 + 16)
            .arg(&self.config().consumer)
            .query_async(&mut conn)
            .await?;
        let ids: Vec<&String> = pending
            .iter()
            .map(|(id, ..)| id)
            .filter(|id| ours.contains(*id))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        redis::cmd("XCLAIM")
            .arg(&self.config().stream)
            .arg(&self.config().group)
            .arg(&self.config().consumer)
            .arg(0)
            .arg(&ids)
            .arg("JUSTID")
            .query_async::<Value>(&mut conn)
            .await
            .map(drop)
    }

    /// Claims one idle chunk; false when there is none.
    async fn claim_one(
        &self,
        permit: OwnedSemaphorePermit,
        idle: Duration,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.cluster.conn.clone();
        let reply: redis::streams::StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.config().stream)
            .arg(&self.config().group)
            .arg(&self.config().consumer)
            .arg(u64::try_from(idle.as_millis()).unwrap_or(u64::MAX))
            .arg("0-0")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        let Some(entry) = reply.claimed.into_iter().next() else {
            return Ok(false);
        };
        if lock(&self.cluster.entries).contains(&entry.id) {
            // Already ours and in flight (the heartbeat was late): keep going.
            return Ok(true);
        }
        let done: HashSet<String> = conn.smembers(self.cluster.done_key(&entry.id)).await?;
        tracing::info!(entry = %entry.id, already_done = done.len(), "reclaimed a chunk from a gateway that stopped answering");
        self.start(entry, permit, Some(done)).await;
        Ok(true)
    }

    /// Moves due delayed chunks to the stream, atomically (a Lua script), so
    /// two gateways never move the same chunk twice.
    async fn move_delayed(self) {
        const SCRIPT: &str = "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100) \
            for _, m in ipairs(due) do redis.call('XADD', KEYS[2], '*', 'c', m); redis.call('ZREM', KEYS[1], m) end \
            return #due";
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = self.cluster.stop.notified() => return,
            }
            let mut conn = self.cluster.conn.clone();
            let moved: redis::RedisResult<i64> = redis::cmd("EVAL")
                .arg(SCRIPT)
                .arg(2)
                .arg(self.cluster.delayed_key())
                .arg(&self.config().stream)
                .arg(now_ms())
                .query_async(&mut conn)
                .await;
            match moved {
                Ok(n) if n > 0 => tracing::info!(chunks = n, "delayed chunks are due: queued"),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "cannot move delayed chunks"),
            }
            if let Err(e) = self.apply_cancellations().await {
                tracing::debug!(error = %e, "cannot read cancellations");
            }
        }
    }

    /// Cancels local chunks of jobs cancelled on any gateway
    /// (`DELETE /jobs/{id}` sets `S:cancel:<id>`): their unsent tokens end
    /// as `cancelled`, like a cancel in one process.
    async fn apply_cancellations(&self) -> redis::RedisResult<()> {
        let running: Vec<Arc<JobProgress>> = lock(&self.cluster.chunks)
            .values()
            .filter(|c| !c.progress.is_cancelled())
            .map(|c| c.progress.clone())
            .collect();
        if running.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = running
            .iter()
            .map(|p| self.cluster.cancel_key(&p.id.to_string()))
            .collect();
        let mut conn = self.cluster.conn.clone();
        let flags: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        for (progress, flag) in running.iter().zip(flags) {
            if flag.is_some() {
                progress.cancel();
            }
        }
        Ok(())
    }

    /// Turns an entry into a local job and queues it. `done` (for a
    /// reclaimed chunk) holds the tokens that already have an outcome.
    async fn start(
        &self,
        entry: StreamId,
        permit: OwnedSemaphorePermit,
        done: Option<HashSet<String>>,
    ) {
        let chunk = entry
            .get::<String>("c")
            .and_then(|c| serde_json::from_str::<Chunk>(&c).ok());
        let Some(chunk) = chunk else {
            tracing::error!(entry = %entry.id, "unreadable queue entry (not written by this version?); dropping it");
            self.ack_now(entry.id, permit);
            return;
        };
        let resent = done.is_some();
        let done = done.unwrap_or_default();
        let mut tokens: Vec<String> = chunk.tokens;
        tokens.retain(|t| !done.contains(t));
        if tokens.is_empty() {
            self.ack_now(entry.id, permit);
            return;
        }
        let (Some(platform), Some(id)) = (platform_of(&chunk.platform), JobId::parse(&chunk.job))
        else {
            tracing::error!(entry = %entry.id, platform = chunk.platform, "queue entry names an unknown platform; dropping it");
            self.ack_now(entry.id, permit);
            return;
        };
        let app: Arc<str> = Arc::from(chunk.app.as_str());
        let progress = Arc::new(JobProgress::for_app(
            id,
            platform,
            app.clone(),
            tokens.len() as u64,
        ));
        // A job cancelled before this chunk was read (a delayed one, say)
        // sends nothing; if Redis cannot say, the 500 ms check catches it.
        let mut conn = self.cluster.conn.clone();
        let cancelled: redis::RedisResult<bool> =
            conn.exists(self.cluster.cancel_key(&chunk.job)).await;
        if cancelled.unwrap_or(false) {
            progress.cancel();
        }
        let in_flight = Arc::new(InFlight {
            entry: entry.id.clone(),
            remaining: AtomicU64::new(tokens.len() as u64),
            progress: progress.clone(),
            _permit: permit,
        });
        lock(&self.cluster.entries).insert(entry.id.clone());
        lock(&self.cluster.chunks).insert(Arc::as_ptr(&progress) as usize, in_flight);
        self.recorder.take(&progress);
        if resent {
            // These had no outcome when their gateway died: some may have
            // been delivered already. Counted, so the bound is visible.
            self.recorder
                .possible_duplicates(&progress, tokens.len() as u64);
        }
        let expires_at = chunk
            .expires_at_ms
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
        let built = match (&chunk.fields, platform) {
            (StoredFields::Apns { .. }, Platform::Apns) => self.targets.apns(&chunk.app).map(|s| {
                let message = rebuild_apns(&chunk.fields, s.default_topic.as_deref());
                message.map(|m| {
                    s.enqueue(job(
                        id,
                        app.clone(),
                        m,
                        &tokens,
                        &progress,
                        expires_at,
                        |t, b| {
                            crate::job::DeviceToken::decode_into(t, b)
                                .map(drop)
                                .map_err(drop)
                        },
                    ))
                })
            }),
            (StoredFields::Google { .. }, Platform::Fcm | Platform::Gcm) => {
                self.targets.google(&chunk.app).map(|s| {
                    let message = rebuild_google(&chunk.fields);
                    message.map(|m| {
                        s.enqueue(job(
                            id,
                            app.clone(),
                            m,
                            &tokens,
                            &progress,
                            expires_at,
                            |t, b| {
                                b.extend_from_slice(t.as_bytes());
                                Ok(())
                            },
                        ))
                    })
                })
            }
            _ => None,
        };
        let problem = match built {
            Some(Ok(())) => return,
            Some(Err(e)) => format!("message no longer valid: {e}"),
            None => format!("this gateway has no {} app {:?}", chunk.platform, chunk.app),
        };
        tracing::error!(entry = %entry.id, %problem, "cannot deliver a queued chunk; its tokens are recorded as failed");
        let reason: Arc<str> = Arc::from("NotConfigured");
        for t in &tokens {
            self.recorder.finish(
                &progress,
                || t.clone(),
                Outcome::Failed {
                    reason: reason.clone(),
                    status: 0,
                },
                false,
            );
        }
    }

    fn ack_now(&self, entry: String, permit: OwnedSemaphorePermit) {
        let cluster = self.cluster.clone();
        let mut buffer = lock(&cluster.buffer);
        buffer.acks.push(entry);
        drop(buffer);
        drop(permit);
    }
}

fn rebuild_apns(
    fields: &StoredFields,
    default_topic: Option<&str>,
) -> Result<ApnsMessage, crate::message::MessageError> {
    let StoredFields::Apns {
        payload,
        topic,
        push_type,
        priority,
        expiration,
        collapse_id,
    } = fields
    else {
        return Err(crate::message::field_error("platform", "not an APNs chunk").into());
    };
    ApnsMessage::new(
        ApnsFields {
            payload: payload.as_bytes(),
            topic: topic.as_deref(),
            push_type: push_type.as_deref(),
            priority: *priority,
            expiration: *expiration,
            collapse_id: collapse_id.as_deref(),
        },
        default_topic,
    )
}

fn rebuild_google(fields: &StoredFields) -> Result<GoogleMessage, crate::message::MessageError> {
    let StoredFields::Google {
        payload,
        notification,
        collapse_key,
        priority,
        time_to_live,
    } = fields
    else {
        return Err(crate::message::field_error("platform", "not a Google chunk").into());
    };
    GoogleMessage::new(GoogleFields {
        payload: payload.as_deref().map(str::as_bytes),
        notification: notification.as_deref().map(str::as_bytes),
        collapse_key: collapse_key.as_deref(),
        priority: priority.as_deref(),
        time_to_live: *time_to_live,
    })
}

fn job<M>(
    id: JobId,
    app: Arc<str>,
    message: M,
    tokens: &[String],
    progress: &Arc<JobProgress>,
    expires_at: Option<SystemTime>,
    decode: impl Fn(&str, &mut Vec<u8>) -> Result<(), ()>,
) -> Arc<Job<M>> {
    let mut list = TokenList::with_capacity(tokens.len(), 32);
    for t in tokens {
        let start = list.buffer().len();
        if decode(t, list.buffer()).is_err() {
            // Validated at the API; a bad one here is not ours to send.
            list.buffer().truncate(start);
            list.buffer().extend_from_slice(t.as_bytes());
        }
        list.commit();
    }
    Arc::new(Job {
        id,
        app,
        message,
        tokens: list,
        progress: progress.clone(),
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password() {
        assert_eq!(redact("redis://:s3cret@db:6379/0"), "redis://db:6379/0");
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn buffer_absorb_keeps_every_write() {
        let mut newer = Buffer::default();
        newer.add("k".into(), "successes", 2);
        newer.acks.push("2-0".into());
        let mut older = Buffer::default();
        older.add("k".into(), "successes", 3);
        older.acks.push("1-0".into());
        older.done.insert("1-0".into(), vec!["a".into()]);
        newer.absorb(older);
        assert_eq!(newer.increments["k"]["successes"], 5);
        assert_eq!(newer.acks, vec!["1-0".to_owned(), "2-0".to_owned()]);
        assert_eq!(newer.done["1-0"], vec!["a".to_owned()]);
    }

    #[test]
    fn chunk_round_trips() {
        let chunk = Chunk {
            job: JobId::new().to_string(),
            platform: "apns".into(),
            app: "default".into(),
            index: 0,
            fields: StoredFields::Apns {
                payload: "{}".into(),
                topic: None,
                push_type: None,
                priority: Some(10),
                expiration: None,
                collapse_id: None,
            },
            expires_at_ms: None,
            tokens: vec!["ab".repeat(32)],
        };
        let text = serde_json::to_string(&chunk).expect("serialize");
        let back: Chunk = serde_json::from_str(&text).expect("parse");
        assert_eq!(back.tokens, chunk.tokens);
        assert!(rebuild_apns(&back.fields, Some("t")).is_ok());
    }
}
