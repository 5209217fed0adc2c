//! Replica acknowledgement (`queue.redis_min_replicas`): a write followed by
//! `WAIT n timeout` in the same round trip, on the same connection.
//!
//! Redis replicates asynchronously: a write the primary acknowledged is lost
//! if the primary dies before a replica has it, and Sentinel promotes that
//! replica. `WAIT` blocks the client until `n` replicas acknowledged every
//! write it made before, or the timeout passed, and answers how many did.
//! Sentinel promotes the replica with the most of the stream, so a write one
//! replica acknowledged survives the loss of the primary. (It does not make
//! Redis strongly consistent: two failures at once can still lose it.)
//!
//! The write and its `WAIT` go out as one pipeline, so they cannot land on
//! two connections (a reconnect in between would make `WAIT` count a new
//! client's writes: none). `WAIT` blocks the connection's other commands
//! for as long as it waits, so the callers that wait have connections of
//! their own.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisError, RedisResult, Value};

/// `queue.redis_min_replicas` and `queue.redis_replica_timeout_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaAcks {
    /// Replicas that must acknowledge a write; 0 = do not wait.
    pub min: u32,
    /// How long to wait for them.
    pub timeout: Duration,
}

impl Default for ReplicaAcks {
    fn default() -> Self {
        Self {
            min: 0,
            timeout: Duration::from_millis(500),
        }
    }
}

impl ReplicaAcks {
    /// True when writes wait for replicas.
    pub fn wanted(&self) -> bool {
        self.min > 0
    }

    fn timeout_ms(&self) -> u64 {
        u64::try_from(self.timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

/// Counts writes too few replicas acknowledged, by what was written (`job`,
/// `credential`, `quota`): `pushgate_redis_replica_ack_failures_total`.
/// The default counts nowhere (tests, tools).
#[derive(Debug, Clone, Default)]
pub struct AckFailures(Option<prometheus::IntCounterVec>);

impl AckFailures {
    /// Counts into `counter` (one label: `write`).
    pub fn new(counter: prometheus::IntCounterVec) -> Self {
        Self(Some(counter))
    }

    /// One more `write` too few replicas acknowledged.
    pub fn record(&self, write: &str) {
        if let Some(c) = &self.0 {
            c.with_label_values(&[write]).inc();
        }
    }
}

/// The primary made a write; too few replicas had it in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "written on the Redis primary, but {got} of the {wanted} replicas asked for acknowledged it within {timeout_ms} ms"
)]
pub struct Shortfall {
    /// `queue.redis_min_replicas`.
    pub wanted: u32,
    /// Replicas that acknowledged.
    pub got: u32,
    /// `queue.redis_replica_timeout_ms`.
    pub timeout_ms: u64,
}

/// A write the primary made, and whether enough replicas acknowledged it.
#[derive(Debug)]
pub struct Written<T> {
    /// What the write answered.
    pub value: T,
    /// `Some` when too few replicas acknowledged it.
    pub shortfall: Option<Shortfall>,
}

/// Runs `pipe`'s commands in one MULTI/EXEC followed by `WAIT` (none when
/// `acks` wants no replica), and returns every command's result (the ones
/// `ignore()`d included, in order). An error means the transaction was
/// refused (nothing of it was written) or its answer was lost (it may have
/// been).
pub async fn exec<C: ConnectionLike>(
    conn: &mut C,
    pipe: &Pipeline,
    acks: ReplicaAcks,
) -> RedisResult<Written<Vec<Value>>> {
    let mut sent = redis::pipe();
    sent.cmd("MULTI");
    let mut n = 0;
    for cmd in pipe.cmd_iter() {
        sent.add_command(cmd.clone());
        n += 1;
    }
    sent.cmd("EXEC");
    if acks.wanted() {
        sent.add_command(wait(acks));
    }
    let replies = conn.req_packed_commands(&sent, 0, sent.len()).await?;
    let mut replies = replies.into_iter();
    // MULTI's OK, then one QUEUED (or the refusal) per command.
    for reply in replies.by_ref().take(n + 1) {
        reply.extract_error()?;
    }
    let value = match replies.next() {
        Some(Value::Array(results)) => results
            .into_iter()
            .map(Value::extract_error)
            .collect::<RedisResult<Vec<_>>>()?,
        Some(other) => {
            other.extract_error()?;
            return Err(unexpected("EXEC"));
        }
        None => return Err(unexpected("EXEC")),
    };
    let shortfall = check(acks, replies.next())?;
    Ok(Written { value, shortfall })
}

/// Runs one command followed by `WAIT` (none when `acks` wants no replica)
/// and returns its result.
pub async fn query<C: ConnectionLike>(
    conn: &mut C,
    cmd: &Cmd,
    acks: ReplicaAcks,
) -> RedisResult<Written<Value>> {
    if !acks.wanted() {
        let value = conn.req_packed_command(cmd).await?.extract_error()?;
        return Ok(Written {
            value,
            shortfall: None,
        });
    }
    let mut sent = redis::pipe();
    sent.add_command(cmd.clone()).add_command(wait(acks));
    let mut replies = conn.req_packed_commands(&sent, 0, 2).await?.into_iter();
    let value = replies
        .next()
        .ok_or_else(|| unexpected("the command"))?
        .extract_error()?;
    let shortfall = check(acks, replies.next())?;
    Ok(Written { value, shortfall })
}

fn wait(acks: ReplicaAcks) -> Cmd {
    let mut cmd = redis::cmd("WAIT");
    cmd.arg(acks.min).arg(acks.timeout_ms());
    cmd
}

/// `WAIT`'s answer against what was asked; nothing to check when nothing
/// was asked.
fn check(acks: ReplicaAcks, reply: Option<Value>) -> RedisResult<Option<Shortfall>> {
    if !acks.wanted() {
        return Ok(None);
    }
    let got = match reply.map(Value::extract_error).transpose()? {
        Some(Value::Int(n)) => u32::try_from(n).unwrap_or(0),
        _ => return Err(unexpected("WAIT")),
    };
    Ok((got < acks.min).then_some(Shortfall {
        wanted: acks.min,
        got,
        timeout_ms: acks.timeout_ms(),
    }))
}

fn unexpected(what: &str) -> RedisError {
    RedisError::from((
        redis::ErrorKind::ResponseError,
        "unexpected answer",
        format!("no reply to {what}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_is_asked_only_for_replicas() {
        assert!(!ReplicaAcks::default().wanted());
        let acks = ReplicaAcks {
            min: 2,
            timeout: Duration::from_millis(250),
        };
        assert!(acks.wanted());
        assert_eq!(check(acks, Some(Value::Int(2))).ok(), Some(None));
        assert_eq!(check(ReplicaAcks::default(), None).ok(), Some(None));
        assert_eq!(
            check(acks, Some(Value::Int(1))).ok(),
            Some(Some(Shortfall {
                wanted: 2,
                got: 1,
                timeout_ms: 250,
            }))
        );
        assert!(check(acks, None).is_err());
    }
}
