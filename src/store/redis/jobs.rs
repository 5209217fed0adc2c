//! Jobs by time, cluster-wide: `S:jobs:live` (a ZSET of unfinished job ids
//! scored by acceptance, ms) and `S:jobs:done` (finished job ids scored by
//! finish time). The accepting gateway adds a job to `live` in the
//! MULTI/EXEC that queues it; the gateway whose flush writes a job's last
//! outcome moves it to `done` ([`DONE_SCRIPT`], in the same MULTI/EXEC as
//! those outcomes) and restarts the job hash's TTL. Both sets are trimmed by
//! score (`server.job_retention_s`) there and at admission, and the job
//! hash expires after the same time: nothing is ever scanned to expire.
//!
//! `GET /jobs` reads the newest ids of a set and their hashes in one
//! pipeline; running and scheduled jobs (both in `live`) are told apart by
//! the hash's `due`, looking at the newest [`LIVE_SCAN`] unfinished jobs
//! at most.

use std::collections::HashMap;

use redis::AsyncCommands;

use crate::books::{JobFilter, JobStatus};
use crate::floor::now_ms;
use crate::job::OutcomeKind;

use super::{RedisError, RedisStore};

/// Unfinished jobs looked at, at most, for a running or scheduled list.
pub const LIVE_SCAN: usize = 10_000;
/// Hashes read per round trip while listing.
const PAGE: usize = 200;

/// Marks a job finished if every token has an outcome and no more come (a
/// streamed job is open until its stream ends): KEYS = the job's
/// hash, `live`, `done`; ARGV = the job id, now (ms), the retention cutoff
/// (ms), the retention (s). Once only (the hash's `finished_at` says so);
/// returns the totals (total, then the outcome counts in
/// [`OutcomeKind::ALL`] order, platform, app, accepted_at) the first time,
/// 0 otherwise.
/// Trims both sets by score on the way.
pub(super) const DONE_SCRIPT: &str = r"
local f = redis.call('HMGET', KEYS[1], 'total', 'success', 'unregistered', 'canonical', 'failed', 'expired', 'cancelled', 'finished_at', 'platform', 'app', 'accepted_at', 'open')
if not f[1] or f[8] or f[12] == '1' then return 0 end
local total = tonumber(f[1]) or 0
local counts, done = {}, 0
for i = 2, 7 do
  counts[i - 1] = tonumber(f[i]) or 0
  done = done + counts[i - 1]
end
if done < total then return 0 end
redis.call('HSET', KEYS[1], 'finished_at', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[3])
return {total, counts[1], counts[2], counts[3], counts[4], counts[5], counts[6], f[9] or '', f[10] or '', tonumber(f[11]) or 0}
";

/// Moves a cancelled job's delayed chunks to the stream at once: KEYS =
/// the job's hash, the delayed set, the stream; ARGV = the job id. Its
/// chunks share its due time (the hash's `due`), so only that score is
/// read. Returns how many chunks moved.
pub(super) const RELEASE_CANCELLED_SCRIPT: &str = r"
local due = redis.call('HGET', KEYS[1], 'due')
if not due then return 0 end
local moved = 0
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], due, due)) do
  local ok, c = pcall(cjson.decode, m)
  if ok and c.job == ARGV[1] then
    redis.call('XADD', KEYS[3], '*', 'c', m)
    redis.call('ZREM', KEYS[2], m)
    moved = moved + 1
  end
end
if moved > 0 then redis.call('HDEL', KEYS[1], 'due') end
return moved
";

/// A job's status from its hash (`None` for an empty one: expired or
/// unknown); `cancel` when its cancel key is set (`DELETE /jobs/{id}` on any
/// gateway), though no token has reached `cancelled` yet.
pub(super) fn status_of(
    id: &str,
    map: &HashMap<String, String>,
    cancel: bool,
    now: u64,
) -> Option<JobStatus> {
    if map.is_empty() {
        return None;
    }
    let get = |f: &str| map.get(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let total = get("total");
    let counts = OutcomeKind::ALL.map(|k| get(k.as_str()));
    let pending = total.saturating_sub(counts.iter().sum());
    let due = map.get("due").and_then(|v| v.parse::<u64>().ok());
    let scheduled = pending == total && due.is_some_and(|d| d > now);
    let at = |f: &str| map.get(f).and_then(|v| v.parse::<u64>().ok());
    Some(JobStatus {
        job: id.to_owned(),
        platform: map.get("platform").cloned().unwrap_or_default(),
        // A cancel after the last outcome changes nothing: the job is done.
        state: crate::job::state_of(
            pending,
            (cancel && pending > 0) || get("cancelled") > 0,
            scheduled,
            get("open") > 0,
        ),
        total,
        counts,
        notif_id: map.get("notif_id").cloned(),
        unique_ids: Vec::new(),
        truncated: get("truncated") > 0,
        accepted_at: at("accepted_at"),
        finished_at: at("finished_at"),
    })
}

/// What [`DONE_SCRIPT`] returns for a job it marked finished.
type DoneTotals = (u64, u64, u64, u64, u64, u64, u64, String, String, u64);

/// Logs a job [`DONE_SCRIPT`] marked finished (`answer`, 0 when it did not):
/// one info line per job, cluster-wide written by the gateway whose flush
/// finished it.
pub(super) fn log_done(id: &str, answer: &redis::Value) {
    let Ok((
        total,
        successes,
        unregistered,
        canonicals,
        failures,
        expired,
        cancelled,
        platform,
        app,
        accepted_at,
    )) = redis::from_redis_value::<DoneTotals>(answer)
    else {
        return;
    };
    let secs = (now_ms().saturating_sub(accepted_at) as f64 / 1000.0).max(1e-3);
    tracing::info!(
        job = id,
        platform,
        app,
        total,
        successes,
        failures,
        unregistered,
        canonicals,
        expired,
        cancelled,
        tokens_per_s = (total as f64 / secs).round(),
        "job done"
    );
}

impl RedisStore {
    pub(super) fn live_key(&self) -> String {
        self.key(format_args!("jobs:live"))
    }

    pub(super) fn done_jobs_key(&self) -> String {
        self.key(format_args!("jobs:done"))
    }

    /// Finished jobs older than this (ms) have expired.
    pub(super) fn cutoff(&self) -> u64 {
        now_ms().saturating_sub(u64::try_from(self.retention.as_millis()).unwrap_or(u64::MAX))
    }

    /// `server.job_retention_s`, for EXPIRE.
    pub(super) fn retention_s(&self) -> i64 {
        i64::try_from(self.retention.as_secs().max(1)).unwrap_or(i64::MAX)
    }

    /// The statuses of `ids`, in their order, skipping expired ones.
    pub(super) async fn statuses(&self, ids: &[String]) -> Result<Vec<JobStatus>, RedisError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hgetall(self.job_key(id)).exists(self.cancel_key(id));
        }
        let mut conn = self.connection()?;
        let r: redis::RedisResult<Vec<(HashMap<String, String>, bool)>> =
            pipe.query_async(&mut conn).await;
        let rows = self.fail("HGETALL (jobs)", r)?;
        let now = now_ms();
        Ok(ids
            .iter()
            .zip(rows)
            .filter_map(|(id, (map, cancel))| status_of(id, &map, cancel, now))
            .collect())
    }

    /// The newest ids of a set, `start..start + n`.
    async fn newest(&self, key: &str, start: usize, n: usize) -> Result<Vec<String>, RedisError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.connection()?;
        let stop = isize::try_from(start + n - 1).unwrap_or(isize::MAX);
        let start = isize::try_from(start).unwrap_or(isize::MAX);
        let r = conn.zrevrange(key, start, stop).await;
        self.fail("ZREVRANGE", r)
    }

    /// Up to `limit` jobs `filter` admits, newest first: unfinished ones by
    /// acceptance, then finished ones by finish time.
    pub(super) async fn list_jobs(
        &self,
        filter: JobFilter,
        limit: usize,
    ) -> Result<Vec<JobStatus>, RedisError> {
        let mut out = Vec::new();
        if filter != JobFilter::Done {
            let live = self.live_key();
            let mut start = 0;
            while out.len() < limit && start < LIVE_SCAN {
                let page = if filter == JobFilter::All {
                    limit - out.len()
                } else {
                    PAGE
                };
                let ids = self
                    .newest(&live, start, page.min(LIVE_SCAN - start))
                    .await?;
                let last_page = ids.len() < page;
                start += ids.len();
                for status in self.statuses(&ids).await? {
                    if out.len() < limit && status.pending() > 0 && filter.admits(status.state) {
                        out.push(status);
                    }
                }
                if last_page || ids.is_empty() {
                    break;
                }
            }
        }
        if matches!(filter, JobFilter::Done | JobFilter::All) && out.len() < limit {
            let ids = self
                .newest(&self.done_jobs_key(), 0, limit - out.len())
                .await?;
            out.extend(self.statuses(&ids).await?);
        }
        Ok(out)
    }
}
