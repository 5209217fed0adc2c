//! The `redis` backend's [`QuotaStore`]: one token bucket per FCM project
//! under `{<stream>}:pace:<project>` (a hash: `tokens`, `at`,
//! `paused_until`), taken from and paused by Lua scripts, so a lease is one
//! atomic round trip whoever else is leasing.
//!
//! Time is the Redis server's (`TIME`): one clock for the whole cluster, so
//! gateways whose clocks disagree still share one rate. Tests may hand in a
//! clock of their own ([`RedisQuota::with_clock`]).
//!
//! With `queue.redis_min_replicas`, each lease and pause waits for that many
//! replicas (`WAIT`), so a failover does not hand out again what was leased.
//! Too few acknowledgements are counted and logged, and the lease is used
//! all the same: the tokens are taken on the primary either way, and
//! refusing them would only have this gateway pace alone at the full quota.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::link::RedisQueueConfig;
use super::primary::{Conn, Primary};
use super::replicas::{self, AckFailures, ReplicaAcks, Shortfall};
use crate::pace::burst;
use crate::pace::shared::{Lease, QuotaError, QuotaStore};
use crate::shared_credential::Clock;

/// Now in ms: ARGV's last value when it is a number (tests), else (an
/// empty string) the server's `TIME`.
/// (`redis.replicate_commands` makes `TIME` legal before a write on Redis
/// 5–6; Redis 7 always replicates effects and keeps it as a no-op.)
const NOW: &str = "local now = tonumber(ARGV[#ARGV]) \
    if not now then \
      if redis.replicate_commands then redis.replicate_commands() end \
      local t = redis.call('TIME') \
      now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 \
    end ";

/// KEYS[1] the bucket; ARGV: tokens per ms, burst, want, now.
/// Returns {granted, wait_ms, paused}.
const LEASE: &str = "local rate = tonumber(ARGV[1]) \
    local burst = tonumber(ARGV[2]) \
    local want = tonumber(ARGV[3]) \
    local s = redis.call('HMGET', KEYS[1], 'tokens', 'at', 'paused_until') \
    local tokens = tonumber(s[1]) or burst \
    local at = tonumber(s[2]) or now \
    local paused = tonumber(s[3]) or 0 \
    if now < paused then return {0, math.ceil(paused - now), 1} end \
    if now > at then tokens = math.min(burst, tokens + (now - at) * rate); at = now end \
    local granted = math.min(want, math.floor(tokens)) \
    tokens = tokens - granted \
    redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at), 'paused_until', tostring(paused)) \
    redis.call('PEXPIRE', KEYS[1], 60000) \
    if granted > 0 then return {granted, 0, 0} end \
    return {0, math.max(1, math.ceil((1 - tokens) / rate)), 0}";

/// KEYS[1] the bucket; ARGV: pause ms, now. The rule of
/// [`crate::pace::Pause`]: during a pause a 429 may only lengthen it, in the
/// cool-down after it (as long as it was) it does nothing, else it pauses;
/// the bucket starts empty when the pause ends. Returns 1 when it paused.
const PAUSE: &str = "local d = tonumber(ARGV[1]) \
    local s = redis.call('HMGET', KEYS[1], 'paused_until', 'pause_len') \
    local paused = tonumber(s[1]) or 0 \
    local len = tonumber(s[2]) or 0 \
    local until_ = now + d \
    if now < paused then \
      if until_ <= paused then return 0 end \
      len = len + (until_ - paused) \
    elseif now < paused + len then \
      return 0 \
    else \
      len = d \
    end \
    redis.call('HSET', KEYS[1], 'paused_until', tostring(until_), 'pause_len', tostring(len), 'tokens', '0', 'at', tostring(until_)) \
    redis.call('PEXPIRE', KEYS[1], 60000 + math.ceil(until_ - now + len)) \
    return 1";

/// A lease waits this long at most: a send never waits on it (the reserve
/// does), but a slow Redis should turn into pacing alone soon.
const QUOTA_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// FCM buckets in Redis, on a connection of their own (made on first use, so
/// a gateway started while Redis is down still starts).
pub struct RedisQuota {
    prefix: String,
    conn: Primary,
    clock: Option<Arc<dyn Clock>>,
    acks: ReplicaAcks,
    failures: AckFailures,
}

impl std::fmt::Debug for RedisQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQuota")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn quota_error(what: &str, e: redis::RedisError) -> QuotaError {
    QuotaError(format!("redis {what}: {e}"))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RedisQuota {
    /// Buckets for the cluster of `config` (its stream names the keys), on
    /// the server's clock.
    pub fn new(config: &RedisQueueConfig) -> Result<Self, super::link::LinkError> {
        Ok(Self {
            conn: Primary::new(
                config,
                "quota",
                QUOTA_RESPONSE_TIMEOUT + config.replicas.timeout,
            )?,
            prefix: format!("{}:pace:", super::link::stream_key(&config.stream)),
            clock: None,
            acks: config.replicas,
            failures: AckFailures::default(),
        })
    }

    /// The same buckets, counting writes too few replicas acknowledged.
    pub fn counting(mut self, failures: AckFailures) -> Self {
        self.failures = failures;
        self
    }

    fn note(&self, what: &str, shortfall: Option<Shortfall>) {
        if let Some(e) = shortfall {
            self.failures.record("quota");
            tracing::debug!(error = %e, "FCM quota {what}: used, but not on enough replicas");
        }
    }

    /// The same buckets on `clock` instead of the server's (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    async fn conn(&self) -> Result<Conn, QuotaError> {
        self.conn
            .connect()
            .await
            .map_err(|e| quota_error("connect", e))
    }

    fn script(&self, body: &str, key: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(format!("{NOW}{body}"))
            .arg(1)
            .arg(format!("{}{key}", self.prefix));
        cmd
    }

    /// The script's last argument: our clock's now, or "" for the server's.
    fn now_arg(&self, cmd: &mut redis::Cmd) {
        match &self.clock {
            Some(clock) => cmd.arg(clock.now_ms()),
            None => cmd.arg(""),
        };
    }
}

impl QuotaStore for RedisQuota {
    fn lease<'a>(
        &'a self,
        key: &'a str,
        max_per_minute: u64,
        want: u64,
    ) -> BoxFuture<'a, Result<Lease, QuotaError>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let mut cmd = self.script(LEASE, key);
            cmd.arg(max_per_minute.max(1) as f64 / 60_000.0)
                .arg(burst(max_per_minute))
                .arg(want.max(1));
            self.now_arg(&mut cmd);
            let written = replicas::query(&mut conn, &cmd, self.acks)
                .await
                .map_err(|e| quota_error("EVAL lease", e))?;
            self.note("lease", written.shortfall);
            let (granted, wait_ms, paused): (u64, u64, u64) =
                redis::from_owned_redis_value(written.value)
                    .map_err(|e| quota_error("EVAL lease", e))?;
            let wait = Duration::from_millis(wait_ms);
            Ok(match (granted, paused) {
                (0, 0) => Lease::Empty(wait),
                (0, _) => Lease::Paused(wait),
                (n, _) => Lease::Granted(n),
            })
        })
    }

    fn pause<'a>(&'a self, key: &'a str, d: Duration) -> BoxFuture<'a, Result<(), QuotaError>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let mut cmd = self.script(PAUSE, key);
            cmd.arg(ms(d));
            self.now_arg(&mut cmd);
            let written = replicas::query(&mut conn, &cmd, self.acks)
                .await
                .map_err(|e| quota_error("EVAL pause", e))?;
            self.note("pause", written.shortfall);
            Ok(())
        })
    }
}
