//! Admission that waits for replicas (`queue.redis_min_replicas` ≥ 1): a
//! job is staged, acknowledged, then published, so no gateway can take it
//! before enough replicas hold it, and a job answered 503 can be taken back
//! whole.
//!
//! 1. **Stage**: the admission's MULTI/EXEC (the job's status, `accepted`,
//!    everything [`RedisStore::accept`] writes) puts the chunks in a list of
//!    their own, `S:staged:<job>/<first token>`, instead of the stream, and
//!    notes the list in `S:staged` with a deadline (the server's clock, plus
//!    [`STAGE_GRACE`] and the replica timeout). `WAIT n timeout` follows in
//!    the same round trip.
//! 2. **Enough replicas**: [`PUBLISH`] moves the chunks to the stream (or,
//!    with `send_at`, to the delayed set) and the 202 goes out. The job is on
//!    a replica already: if this gateway or the primary dies before the
//!    publish, any gateway publishes it once the deadline has passed (the
//!    delayed-chunk loop calls [`RedisStore::publish_overdue`]).
//! 3. **Too few**: [`WITHDRAW`] deletes the staged chunks and takes the
//!    tokens back out of `accepted` and the job's total (a job left with
//!    none is deleted, status and listing with it), and the send answers 503
//!    `queue_unreplicated`. Nothing of it was sent: no gateway reads a
//!    staged list. If the withdrawal itself cannot be written (the primary
//!    is gone too), the staged copy may have reached a replica and be
//!    published after the deadline: the sender, told 503, may then see the
//!    job delivered as well as its retry (the same ambiguity as any write
//!    whose answer is lost).
//!
//! Without replicas to wait for, none of this runs: chunks go straight to
//! the stream in one MULTI/EXEC, as before.

use std::time::Duration;

use super::{RedisError, RedisStore};
use crate::job::JobId;
use crate::shared::replicas::{self, Shortfall};
use crate::store::StoreError;

/// A staged admission is published by another gateway only this long after
/// its `WAIT` should have ended: long enough that its own gateway publishes
/// or withdraws it first, short enough that a job acknowledged just before a
/// failover waits seconds, not minutes.
pub const STAGE_GRACE: Duration = Duration::from_secs(10);

/// Now in ms on the server's clock (`redis.replicate_commands` makes `TIME`
/// legal before a write on Redis 5–6; Redis 7 always replicates effects).
const NOW: &str = "if redis.replicate_commands then redis.replicate_commands() end \
    local t = redis.call('TIME') \
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) ";

/// KEYS[1] `S:staged`; ARGV: the staged list's name (`<job>/<first>`), the
/// grace in ms. Notes the list with its deadline.
const NOTE: &str = "redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) return 1";

/// KEYS: `S:staged`, the stream, the delayed set; ARGV: the key prefix
/// (`S:`), then the staged lists' names, or none for every overdue one (20 at
/// a time). Each list's chunks go to the stream, or to the delayed set when
/// its job has a `due` time; the list and its note are deleted. Returns the
/// chunks moved.
pub const PUBLISH: &str = "local names = {} \
    if #ARGV > 1 then for i = 2, #ARGV do names[#names + 1] = ARGV[i] end \
    else names = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 20) end \
    local moved = 0 \
    for _, name in ipairs(names) do \
      local list = ARGV[1] .. 'staged:' .. name \
      local job = string.match(name, '^[^/]+') \
      local due = redis.call('HGET', ARGV[1] .. 'job:' .. job, 'due') \
      for _, body in ipairs(redis.call('LRANGE', list, 0, -1)) do \
        if due then redis.call('ZADD', KEYS[3], due, body) \
        else redis.call('XADD', KEYS[2], '*', 'c', body) end \
        moved = moved + 1 \
      end \
      redis.call('DEL', list) \
      redis.call('ZREM', KEYS[1], name) \
    end \
    return moved";

/// KEYS: the staged list, `S:staged`, the report key, the job key,
/// `S:jobs:live`; ARGV: the list's name, the job id, its tokens. Returns 0
/// when the list was published already (too late to withdraw), else 1.
pub const WITHDRAW: &str = "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end \
    local n = tonumber(ARGV[3]) \
    redis.call('DEL', KEYS[1]) \
    redis.call('ZREM', KEYS[2], ARGV[1]) \
    redis.call('HINCRBY', KEYS[3], 'accepted', -n) \
    local total = redis.call('HINCRBY', KEYS[4], 'total', -n) \
    if total <= 0 and redis.call('HGET', KEYS[4], 'open') ~= '1' then \
      redis.call('DEL', KEYS[4]) \
      redis.call('ZREM', KEYS[5], ARGV[2]) \
    end \
    return 1";

/// One admission's staged list: one job's tokens (a streamed job's part).
#[derive(Debug)]
pub struct Stage {
    /// `<job>/<first token index>`: unique per admission, parts of a
    /// streamed job included.
    name: String,
    /// `S:staged:<name>`: where the admission's chunks go.
    pub list: String,
    job: String,
    /// The job's report key (its `accepted` counter).
    report: String,
    /// The admission's tokens.
    tokens: u64,
}

/// Why a staged admission was not published.
#[derive(Debug, thiserror::Error)]
#[error("{shortfall}; {fate}")]
pub struct Unreplicated {
    /// What `WAIT` answered.
    pub shortfall: Shortfall,
    /// What became of the staged jobs.
    pub fate: &'static str,
}

impl RedisStore {
    /// The staged list for the admission of `id`'s `tokens` tokens from
    /// `first` on, counted under `report`, when admissions wait for
    /// replicas.
    pub(super) fn stage_for(
        &self,
        id: JobId,
        first: u32,
        report: &str,
        tokens: u64,
    ) -> Option<Stage> {
        if !self.config.replicas.wanted() {
            return None;
        }
        let job = id.to_string();
        let name = format!("{job}/{first}");
        Some(Stage {
            list: self.key(format_args!("staged:{name}")),
            name,
            job,
            report: report.to_owned(),
            tokens,
        })
    }

    fn staged_key(&self) -> String {
        self.key(format_args!("staged"))
    }

    /// Writes `pipe` (an admission of one job or several, each job's chunks
    /// in its stage's list) and waits for the replicas, then publishes the
    /// stages, or withdraws them all when too few acknowledged. See the
    /// module documentation.
    pub(super) async fn commit_staged(
        &self,
        mut pipe: redis::Pipeline,
        stages: &[Stage],
    ) -> Result<(), StoreError> {
        let acks = self.config.replicas;
        let grace = STAGE_GRACE + acks.timeout;
        for stage in stages {
            pipe.cmd("EVAL")
                .arg(format!("{NOW}{NOTE}"))
                .arg(1)
                .arg(self.staged_key())
                .arg(&stage.name)
                .arg(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX));
        }
        let mut conn = self
            .admission_link()
            .map_err(|e| self.failed("connect", e).into_store())?;
        let written = replicas::exec(&mut conn, &pipe, acks)
            .await
            .map_err(|e| self.failed("MULTI (admission)", e).into_store())?;
        self.healthy
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let Some(shortfall) = written.shortfall else {
            // On enough replicas: published now, or by whichever gateway
            // finds them overdue.
            let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
            if let Err(e) = self.publish(&mut conn, Some(&names)).await {
                tracing::warn!(stages = ?names, error = %e, "admitted on enough replicas, not published yet: another gateway publishes it after {} s", grace.as_secs());
            }
            return Ok(());
        };
        self.ack_failures.record("job");
        let mut withdraw = redis::pipe();
        for stage in stages {
            withdraw
                .cmd("EVAL")
                .arg(WITHDRAW)
                .arg(5)
                .arg(&stage.list)
                .arg(self.staged_key())
                .arg(&stage.report)
                .arg(self.job_key(&stage.job))
                .arg(self.live_key())
                .arg(&stage.name)
                .arg(&stage.job)
                .arg(stage.tokens);
        }
        let withdrawn: redis::RedisResult<Vec<i64>> = withdraw.query_async(&mut conn).await;
        let fate = match withdrawn {
            Ok(w) if w.iter().all(|n| *n == 1) => {
                "withdrawn: nothing of it was sent or counted as accepted"
            }
            Ok(_) => "already published by another gateway: it will be delivered",
            Err(e) => {
                tracing::warn!(error = %e, "cannot withdraw an admission too few replicas acknowledged");
                "not withdrawn (Redis did not answer): it may still be delivered"
            }
        };
        Err(StoreError::Unreplicated {
            store: "redis",
            source: Box::new(Unreplicated { shortfall, fate }),
        })
    }

    /// Publishes the staged lists `names`, or (`None`) the overdue ones of
    /// any gateway; the chunks moved.
    async fn publish(
        &self,
        conn: &mut crate::shared::primary::Conn,
        names: Option<&[&str]>,
    ) -> redis::RedisResult<u64> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(format!("{NOW}{PUBLISH}"))
            .arg(3)
            .arg(self.staged_key())
            .arg(&self.config.stream)
            .arg(self.delayed_key())
            .arg(self.key(format_args!("")));
        for name in names.unwrap_or_default() {
            cmd.arg(*name);
        }
        cmd.query_async(conn).await
    }

    /// Publishes admissions acknowledged by enough replicas whose own
    /// gateway did not publish them by their deadline (it died, or the
    /// primary failed over first). Called every half second.
    pub(super) async fn publish_overdue(&self) -> Result<u64, RedisError> {
        if !self.config.replicas.wanted() {
            return Ok(0);
        }
        let mut conn = self.connection()?;
        let r = self.publish(&mut conn, None).await;
        let moved = self.fail("EVAL (publish staged)", r)?;
        if moved > 0 {
            tracing::info!(
                chunks = moved,
                "published jobs their gateway acknowledged but did not publish"
            );
        }
        Ok(moved)
    }
}
