//! The consuming side: the reader (XREADGROUP, one chunk per free slot),
//! the reclaimer (heartbeat and XAUTOCLAIM), and the delayed-chunk mover.
//! A chunk becomes a local job handed to its platform through the registry.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use redis::streams::StreamId;
use redis::{AsyncCommands, Value};
use tokio::sync::OwnedSemaphorePermit;

use crate::floor::{lock, now_ms};
use crate::job::{JobId, JobProgress, TokenList};
use crate::outcome::Arrival;
use crate::platform::Handoff;
use crate::shared::link::RedisQueueConfig;
use crate::shared::primary::Primary;
use crate::store::Hand;

use super::wire::Chunk;
use super::{InFlight, RedisStore, backoff};

/// The consuming side: turns stream entries into local jobs.
#[derive(Clone)]
pub(super) struct Consumer {
    pub(super) cluster: Arc<RedisStore>,
    pub(super) hand: Hand,
}

impl Consumer {
    fn config(&self) -> &RedisQueueConfig {
        &self.cluster.config
    }

    /// XREADGROUP one chunk per free slot, on a connection of its own: a
    /// blocking read would hold up every other command on a shared one.
    pub(super) async fn read(self, reader: Primary) {
        let mut failures = 0u32;
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
            let mut c = match reader.connect().await {
                Ok(c) => c,
                Err(e) => {
                    failures += 1;
                    self.cluster.healthy.store(false, Ordering::Relaxed);
                    if failures == 1 || failures.is_multiple_of(20) {
                        tracing::warn!(error = %e, "cannot connect to Redis to read the queue; retrying");
                    }
                    tokio::time::sleep(backoff(failures)).await;
                    continue;
                }
            };
            let options = redis::streams::StreamReadOptions::default()
                .group(&self.config().group, &self.config().consumer)
                .count(1)
                .block(1000);
            let streams = [self.config().stream.as_str()];
            let asked = std::time::Instant::now();
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
                        lock(&self.cluster.window).read(asked.elapsed());
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
    pub(super) async fn reclaim(self) {
        let idle = self.config().claim_idle;
        let every = (idle / 3).max(Duration::from_millis(100));
        // Failovers already looked at (see `heartbeat`).
        let mut moves = self.cluster.primary.moves();
        // Runs until the process exits, shutdown included: chunks still being
        // finished during the drain must not look abandoned to the others.
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self.heartbeat(&mut moves).await {
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
    /// than `claim_idle_ms`) is not taken back. After a failover (`moves`
    /// behind the primary's), also counts the chunks the new primary
    /// forgot we read ([`Consumer::count_forgotten`]).
    async fn heartbeat(&self, moves: &mut u64) -> redis::RedisResult<()> {
        let moved = self.cluster.primary.moves();
        let ours: HashSet<String> = lock(&self.cluster.entries).iter().cloned().collect();
        if ours.is_empty() {
            *moves = moved;
            return Ok(());
        }
        let mut conn = self.cluster.link()?;
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
        if moved != *moves {
            self.count_forgotten(&ours, &ids);
            *moves = moved;
        }
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

    /// After a failover: chunks this gateway holds that the new primary
    /// does not list as ours were read on the old one, and the read never
    /// reached the replica. For the new primary they are new work, which any
    /// gateway may read again and send whole, while this one finishes them:
    /// every token of theirs is counted in `possible_duplicates`.
    fn count_forgotten(&self, ours: &HashSet<String>, still_ours: &[&String]) {
        let kept: HashSet<&str> = still_ours.iter().map(|s| s.as_str()).collect();
        let forgotten: Vec<Arc<InFlight>> = lock(&self.cluster.chunks)
            .values()
            .filter(|c| ours.contains(&c.entry) && !kept.contains(c.entry.as_str()))
            .cloned()
            .collect();
        for chunk in forgotten {
            let n = chunk.progress.total();
            tracing::warn!(entry = %chunk.entry, tokens = n, "the new Redis primary does not know this gateway holds a chunk: another may send it too (counted as possible duplicates)");
            self.hand.recorder.possible_duplicates(&chunk.progress, n);
        }
    }

    /// Claims one idle chunk; false when there is none.
    async fn claim_one(
        &self,
        permit: OwnedSemaphorePermit,
        idle: Duration,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.cluster.link()?;
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
    /// two gateways never move the same chunk twice; publishes staged jobs
    /// whose gateway did not ([`super::staged`]).
    pub(super) async fn move_delayed(self) {
        const SCRIPT: &str = "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100) \
            for _, m in ipairs(due) do redis.call('XADD', KEYS[2], '*', 'c', m); redis.call('ZREM', KEYS[1], m) end \
            return #due";
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = self.cluster.stop.notified() => return,
            }
            let Ok(mut conn) = self.cluster.link() else {
                continue;
            };
            let moved: redis::RedisResult<i64> = redis::cmd("EVAL")
                .arg(SCRIPT)
                .arg(2)
                .arg(self.cluster.delayed_key())
                .arg(&self.config().stream)
                .arg(now_ms())
                .query_async(&mut conn)
                .await;
            match moved {
                Ok(n) if n > 0 => tracing::debug!(chunks = n, "delayed chunks are due: queued"),
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "cannot move delayed chunks"),
            }
            if let Err(e) = self.cluster.publish_overdue().await {
                tracing::debug!(error = %e, "cannot publish overdue staged jobs");
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
        let mut conn = self.cluster.link()?;
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
        let size = tokens.len() as u64;
        tokens.retain(|t| !done.contains(t));
        if tokens.is_empty() {
            self.ack_now(entry.id, permit);
            return;
        }
        let (Some(platform), Some(id)) = (
            self.cluster.catalog.platform(&chunk.platform),
            JobId::parse(&chunk.job),
        ) else {
            tracing::error!(entry = %entry.id, platform = chunk.platform, "queue entry names an unknown platform; dropping it");
            self.ack_now(entry.id, permit);
            return;
        };
        let app: Arc<str> = Arc::from(chunk.app.as_str());
        let progress = Arc::new(
            JobProgress::for_app(id, platform, app.clone(), tokens.len() as u64)
                .as_chunk()
                .with_notif_id(chunk.notif_id.as_deref().map(Arc::from)),
        );
        // A job cancelled before this chunk was read (a delayed one, say)
        // sends nothing; if Redis cannot say, the 500 ms check catches it.
        let cancelled: redis::RedisResult<bool> = match self.cluster.link() {
            Ok(mut conn) => conn.exists(self.cluster.cancel_key(&chunk.job)).await,
            Err(e) => Err(e),
        };
        if cancelled.unwrap_or(false) {
            progress.cancel();
        }
        let in_flight = Arc::new(InFlight {
            entry: entry.id.clone(),
            size,
            remaining: AtomicU64::new(tokens.len() as u64),
            first_outcome: std::sync::OnceLock::new(),
            finished_at: std::sync::OnceLock::new(),
            progress: progress.clone(),
            _permit: permit,
        });
        lock(&self.cluster.entries).insert(entry.id.clone());
        lock(&self.cluster.chunks).insert(Arc::as_ptr(&progress) as usize, in_flight);
        self.hand
            .recorder
            .accepted(&progress, tokens.len() as u64, Arrival::Taken);
        if resent {
            // These had no outcome when their gateway died: some may have
            // been delivered already. Counted, so the bound is visible.
            self.hand
                .recorder
                .possible_duplicates(&progress, tokens.len() as u64);
        }
        let expires_at = chunk
            .expires_at_ms
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
        let mut list = TokenList::with_capacity(tokens.len(), 32);
        for t in &tokens {
            platform.codec().keep_wire(t, list.buffer());
            list.commit();
        }
        let send = Handoff::all(&list);
        let handoff = Handoff {
            id,
            app,
            fields: Arc::from(chunk.fields.into_bytes()),
            built: None,
            tokens: list,
            send,
            progress: progress.clone(),
            expires_at,
        };
        self.hand.deliver(handoff);
    }

    fn ack_now(&self, entry: String, permit: OwnedSemaphorePermit) {
        let cluster = self.cluster.clone();
        let mut buffer = lock(&cluster.buffer);
        buffer.acks.push(entry);
        drop(buffer);
        drop(permit);
        cluster.flush_now.notify_one();
    }
}
