//! Idempotency keys and groups in Redis, shared by every gateway:
//!
//! - `S:idem:<scope>/<key>`: a [`Record`] (JSON): in flight (`SET NX`, PX
//!   [`FLIGHT_LEASE`]) or kept (PX until it expires: Redis expires it, no
//!   gateway scans for it).
//! - `S:group:<id>`: a group's job ids (a hash field), expiring
//!   `server.job_retention_s` after its last job's send time.
//!
//! An admission with a claim runs as one script ([`GUARDED_SCRIPT`]): it
//! reads the key, and only when the key is free or still held by the
//! claim's own reservation does it run the admission's commands and keep
//! the answer. A reservation that lapsed while its request stalled can
//! therefore never let two jobs through: whichever admission's script runs
//! second finds the first one's answer and writes nothing.

use redis::AsyncCommands;

use super::{RedisError, RedisStore};
use crate::floor::now_ms;
use crate::job::JobId;
use crate::store::keys::{Claim, FLIGHT_LEASE, Found, IdemKey, KeepIf, Kept, Owner, Record, Taken};

/// KEYS = the idempotency key; ARGV = the claim's own reservation (the
/// exact value), the number of commands, then per command its argument
/// count and its arguments. Returns the key's value when it is taken (the
/// commands not run), nothing when they ran. Checks come before any write,
/// so a refused claim writes nothing. Every key the commands name shares
/// the stream's hash tag (one Redis Cluster slot).
const GUARDED_SCRIPT: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return cur end
local i = 3
for _ = 1, tonumber(ARGV[2]) do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return false
";

/// KEYS = the idempotency key; ARGV = `free` or `bound`, the reservation
/// (free) or the job id (bound), the new value, its PX. Keeps the value
/// when the key is free or held by that reservation (`free`), or holds an
/// answer bound to that job (`bound`). Returns 1 when it did.
const KEEP_SCRIPT: &str = r"
local cur = redis.call('GET', KEYS[1])
local ok = false
if ARGV[1] == 'free' then
  ok = (not cur) or cur == ARGV[2]
elseif cur then
  local decoded, r = pcall(cjson.decode, cur)
  ok = decoded and type(r.kept) == 'table' and r.kept.job == ARGV[2]
end
if ok then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
  return 1
end
return 0
";

/// KEYS = the idempotency key; ARGV = the reservation. Deletes the key
/// when it still holds that reservation.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
";

/// The stored value of a reservation.
fn flight(owner: Owner) -> String {
    serde_json::to_string(&Record::Flight(owner)).unwrap_or_default()
}

/// The stored value of a kept answer, and its PX (at least 1 ms).
pub(super) fn kept_record(kept: &Kept) -> (String, u64) {
    kept_value(kept)
}

/// [`kept_record`], for this module.
fn kept_value(kept: &Kept) -> (String, u64) {
    let value = serde_json::to_string(&Record::Kept(kept.clone())).unwrap_or_default();
    (value, kept.expires_at_ms.saturating_sub(now_ms()).max(1))
}

/// What a key's value says, for a request that wanted it.
fn taken(value: &str) -> Taken {
    match serde_json::from_str::<Record>(value) {
        Ok(Record::Kept(kept)) => Taken::Kept(Box::new(kept)),
        // A reservation (or a value this version cannot read): not ours.
        _ => Taken::InFlight,
    }
}

impl RedisStore {
    pub(super) fn idem_key(&self, key: &IdemKey) -> String {
        self.key(format_args!("idem:{}", key.stored()))
    }

    pub(super) fn group_key(&self, id: &str) -> String {
        self.key(format_args!("group:{id}"))
    }

    /// Runs `pipe`'s commands and keeps `claim`'s answer, in one script,
    /// when the claim's key is free or still its own; `Some` (nothing
    /// written) when it is taken.
    pub(super) async fn guarded(
        &self,
        pipe: &redis::Pipeline,
        claim: &Claim,
    ) -> Result<Option<Taken>, RedisError> {
        let key = self.idem_key(&claim.key);
        let (value, px) = kept_value(&claim.kept);
        let mut keep = redis::cmd("SET");
        keep.arg(&key).arg(&value).arg("PX").arg(px);
        let commands: Vec<&redis::Cmd> = pipe.cmd_iter().chain([&keep]).collect();
        let mut script = redis::cmd("EVAL");
        script
            .arg(GUARDED_SCRIPT)
            .arg(1)
            .arg(&key)
            .arg(flight(claim.owner))
            .arg(commands.len());
        for cmd in commands {
            let args: Vec<&[u8]> = cmd
                .args_iter()
                .filter_map(|a| match a {
                    redis::Arg::Simple(bytes) => Some(bytes),
                    redis::Arg::Cursor => None,
                })
                .collect();
            script.arg(args.len());
            for arg in args {
                script.arg(arg);
            }
        }
        let mut conn = self.connection()?;
        let r: redis::RedisResult<Option<String>> = script.query_async(&mut conn).await;
        Ok(self.fail("EVAL (admit with a key)", r)?.map(|v| taken(&v)))
    }

    /// [`crate::store::Store::reserve`]: `SET NX` with a short lease, or
    /// what the key holds.
    pub(super) async fn reserve_key(
        &self,
        key: &IdemKey,
        owner: Owner,
    ) -> Result<Found, RedisError> {
        let stored = self.idem_key(key);
        let lease = u64::try_from(FLIGHT_LEASE.as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.connection()?;
        // Twice at most: a value that expires between the SET and the GET
        // leaves the key free for the second SET.
        for _ in 0..2 {
            let set: redis::RedisResult<Option<String>> = redis::cmd("SET")
                .arg(&stored)
                .arg(flight(owner))
                .arg("NX")
                .arg("PX")
                .arg(lease)
                .query_async(&mut conn)
                .await;
            if self.fail("SET NX (idempotency key)", set)?.is_some() {
                return Ok(Found::Reserved);
            }
            let r: redis::RedisResult<Option<String>> = conn.get(&stored).await;
            if let Some(value) = self.fail("GET (idempotency key)", r)? {
                return Ok(match taken(&value) {
                    Taken::Kept(kept) => Found::Kept(*kept),
                    Taken::InFlight => Found::InFlight,
                });
            }
        }
        Ok(Found::InFlight)
    }

    /// [`crate::store::Store::keep`].
    pub(super) async fn keep_answer(
        &self,
        key: &IdemKey,
        kept: &Kept,
        when: KeepIf,
    ) -> Result<bool, RedisError> {
        let (mode, guard) = match when {
            KeepIf::Free(owner) => ("free", flight(owner)),
            KeepIf::Bound(job) => ("bound", job.to_string()),
        };
        let (value, px) = kept_value(kept);
        let mut conn = self.connection()?;
        let r: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg(KEEP_SCRIPT)
            .arg(1)
            .arg(self.idem_key(key))
            .arg(mode)
            .arg(guard)
            .arg(value)
            .arg(px)
            .query_async(&mut conn)
            .await;
        Ok(self.fail("EVAL (keep an answer)", r)? == 1)
    }

    /// [`crate::store::Store::release`].
    pub(super) async fn release_key(&self, key: &IdemKey, owner: Owner) -> Result<(), RedisError> {
        let mut conn = self.connection()?;
        let r: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg(RELEASE_SCRIPT)
            .arg(1)
            .arg(self.idem_key(key))
            .arg(flight(owner))
            .query_async(&mut conn)
            .await;
        self.fail("EVAL (release a key)", r).map(drop)
    }

    /// Deletes `key` (stored form) when it still holds `value`: an answer
    /// kept with an admission that was withdrawn. Best effort, logged.
    pub(super) async fn release_value(&self, key: &str, value: &str) {
        let Ok(mut conn) = self.connection() else {
            return;
        };
        let r: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg(RELEASE_SCRIPT)
            .arg(1)
            .arg(key)
            .arg(value)
            .query_async(&mut conn)
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "the key of a withdrawn admission could not be let go; a retry gets its 202 until it expires");
        }
    }

    /// A group's jobs.
    pub(super) async fn read_group(&self, id: JobId) -> Result<Option<Vec<JobId>>, RedisError> {
        let mut conn = self.connection()?;
        let r: redis::RedisResult<Option<String>> =
            conn.hget(self.group_key(&id.to_string()), "jobs").await;
        Ok(self
            .fail("HGET (group)", r)?
            .map(|jobs| jobs.split(' ').filter_map(JobId::parse).collect()))
    }
}
