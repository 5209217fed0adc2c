//! One connection to whichever Redis node is the primary now: the one
//! `queue.redis_url` names, or the one the Sentinels name, found again when
//! it stops answering as the primary.
//!
//! A [`Primary`] holds a self-reconnecting connection ([`link::manager`])
//! and hands out [`Conn`]s, which are that connection plus a watch on what
//! it answers. An answer that says the node is no longer the primary
//! (`READONLY`, `MASTERDOWN`, `LOADING`), or, with Sentinel, any broken
//! connection or timeout, drops the connection: until a task of its own
//! (one per `Primary`) has found the primary again, [`Primary::get`] fails at
//! once, so a send answers 503 instead of waiting on a dead node. The task
//! asks every 200 ms to 1 s; the redis crate's Sentinel client checks with
//! `ROLE` that the node it names is the primary before it is used.
//!
//! With a plain URL the connection reconnects to the same address by itself
//! (a managed service's endpoint follows its primary); it is dropped and
//! made again only on `READONLY` and the like, which a reconnect to the
//! same name fixes once the endpoint has moved.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::sentinel::SentinelClient;
use redis::{Client, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::sync::Notify;

use super::link::{self, LinkError, RedisQueueConfig};
use crate::floor::lock;

/// Sentinel's answer and the primary's `ROLE` check, together, take at most
/// this long.
const FIND_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the primary is.
enum Target {
    /// `queue.redis_url`'s host.
    Url(Client),
    /// Whichever node the Sentinels name.
    Sentinel {
        client: tokio::sync::Mutex<SentinelClient>,
        /// `master@sentinels`, for logs.
        name: String,
    },
}

/// The connection now, and what is known about the primary.
#[derive(Default)]
struct State {
    /// The connection and its generation (bumped at every new connection).
    live: Option<(u64, ConnectionManager)>,
    generation: u64,
    /// A finder task is running.
    finding: bool,
    /// The primary's address when last found.
    address: Option<String>,
    /// Times the primary was found at another address.
    moves: u64,
    /// Why the last attempt to find it failed.
    last_error: Option<String>,
}

struct Inner {
    target: Target,
    response_timeout: Duration,
    /// Which connection this is, for logs (`queue`, `reader`, ...).
    role: &'static str,
    state: Mutex<State>,
    /// Woken after every attempt to find the primary, found or not.
    attempted: Notify,
}

/// The primary, followed. Cheap to clone. See the module documentation.
#[derive(Clone)]
pub struct Primary(Arc<Inner>);

impl std::fmt::Debug for Primary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Primary")
            .field("role", &self.0.role)
            .field("address", &lock(&self.0.state).address)
            .finish_non_exhaustive()
    }
}

impl Primary {
    /// Nothing is connected until the first [`Primary::get`] or
    /// [`Primary::connect`]. `role` names the connection in logs; commands
    /// fail after `response_timeout`.
    pub fn new(
        config: &RedisQueueConfig,
        role: &'static str,
        response_timeout: Duration,
    ) -> Result<Self, LinkError> {
        let target = match &config.sentinel {
            Some(sentinel) => Target::Sentinel {
                client: tokio::sync::Mutex::new(link::sentinel_client(config, sentinel)?),
                name: sentinel.describe(),
            },
            None => Target::Url(link::client(config)?),
        };
        Ok(Self(Arc::new(Inner {
            target,
            response_timeout,
            role,
            state: Mutex::default(),
            attempted: Notify::new(),
        })))
    }

    /// The connection to the primary, or at once an error while it is being
    /// found (which this starts, when it is not running yet).
    pub fn get(&self) -> RedisResult<Conn> {
        let mut state = lock(&self.0.state);
        if let Some((generation, manager)) = &state.live {
            return Ok(Conn {
                manager: manager.clone(),
                generation: *generation,
                primary: Arc::downgrade(&self.0),
            });
        }
        self.start_finding(&mut state);
        Err(not_found(state.last_error.as_deref()))
    }

    /// The connection to the primary; when it is not known now, the result
    /// of the next attempt to find it (a few seconds at most).
    pub async fn connect(&self) -> RedisResult<Conn> {
        let attempted = self.0.attempted.notified();
        tokio::pin!(attempted);
        attempted.as_mut().enable();
        if let Ok(conn) = self.get() {
            return Ok(conn);
        }
        let bound = FIND_TIMEOUT + link::CONNECT_TIMEOUT + Duration::from_secs(1);
        let _ = tokio::time::timeout(bound, attempted).await;
        self.get()
    }

    /// Times the primary was found at a new address since this started: a
    /// failover happened (and writes made just before it may be gone).
    pub fn moves(&self) -> u64 {
        lock(&self.0.state).moves
    }

    /// Where the primary was last found (`host:port`).
    pub fn address(&self) -> Option<String> {
        lock(&self.0.state).address.clone()
    }

    fn start_finding(&self, state: &mut State) {
        if state.finding {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        state.finding = true;
        runtime.spawn(find(Arc::downgrade(&self.0)));
    }
}

impl Inner {
    /// One attempt: the primary's client, then a connection to it.
    async fn find_once(&self) -> RedisResult<(ConnectionManager, String)> {
        let client = match &self.target {
            Target::Url(client) => client.clone(),
            Target::Sentinel { client, .. } => {
                let mut sentinel = client.lock().await;
                tokio::time::timeout(FIND_TIMEOUT, sentinel.async_get_client())
                    .await
                    .map_err(|_| {
                        RedisError::from(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no answer from the Sentinels in time",
                        ))
                    })??
            }
        };
        let address = client.get_connection_info().addr.to_string();
        let manager = link::manager(client, self.response_timeout).await?;
        Ok((manager, address))
    }

    fn describe(&self) -> &str {
        match &self.target {
            Target::Url(_) => "queue.redis_url",
            Target::Sentinel { name, .. } => name,
        }
    }

    /// True when `e` says the node may no longer be the primary.
    fn lost(&self, e: &RedisError) -> bool {
        if matches!(
            e.kind(),
            ErrorKind::ReadOnly | ErrorKind::MasterDown | ErrorKind::BusyLoadingError
        ) {
            return true;
        }
        matches!(self.target, Target::Sentinel { .. })
            && (e.is_unrecoverable_error()
                || e.is_io_error()
                || e.is_timeout()
                || e.is_connection_dropped()
                || e.is_connection_refusal())
    }

    /// Drops connection `generation` (if it is still the one in use) after
    /// `e`, and starts finding the primary again.
    fn report(self: &Arc<Self>, generation: u64, e: &RedisError) {
        if !self.lost(e) {
            return;
        }
        let mut state = lock(&self.state);
        if !matches!(&state.live, Some((g, _)) if *g == generation) {
            return;
        }
        state.live = None;
        tracing::warn!(connection = self.role, primary = ?state.address, error = %e, "the Redis primary stopped answering as the primary; finding it again");
        Primary(self.clone()).start_finding(&mut state);
    }
}

/// Finds the primary, retrying 200 ms doubling to 1 s, until it is found or
/// the [`Primary`] is dropped.
async fn find(inner: Weak<Inner>) {
    let mut failures = 0u32;
    loop {
        let Some(me) = inner.upgrade() else {
            return;
        };
        match me.find_once().await {
            Ok((manager, address)) => {
                let mut state = lock(&me.state);
                state.generation += 1;
                let generation = state.generation;
                if state.address.as_deref() != Some(address.as_str())
                    && let Some(before) = state.address.replace(address.clone())
                {
                    state.moves += 1;
                    tracing::info!(connection = me.role, from = %before, to = %address, "the Redis primary moved");
                }
                state.live = Some((generation, manager));
                state.finding = false;
                state.last_error = None;
                drop(state);
                me.attempted.notify_waiters();
                return;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(20) {
                    tracing::warn!(connection = me.role, target = me.describe(), error = %e, "cannot reach the Redis primary; retrying");
                }
                lock(&me.state).last_error = Some(e.to_string());
                me.attempted.notify_waiters();
            }
        }
        drop(me);
        tokio::time::sleep(retry_after(failures)).await;
    }
}

/// 200 ms doubling to 1 s: a promoted replica is found within a second.
fn retry_after(failures: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << failures.min(4)).min(1000))
}

fn not_found(last: Option<&str>) -> RedisError {
    let detail = match last {
        Some(e) => format!("finding the Redis primary (last attempt: {e})"),
        None => "finding the Redis primary".to_owned(),
    };
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        detail,
    ))
}

/// A connection to the primary that reports, to its [`Primary`], answers
/// saying the node is not the primary any more. Use it as any redis
/// connection (`query_async(&mut conn)`, `AsyncCommands`).
#[derive(Clone)]
pub struct Conn {
    manager: ConnectionManager,
    generation: u64,
    primary: Weak<Inner>,
}

impl Conn {
    fn observe(&self, e: &RedisError) {
        if let Some(primary) = self.primary.upgrade() {
            primary.report(self.generation, e);
        }
    }

    /// Looks at an answer: an error, or a reply holding `READONLY` and the
    /// like (inside a pipeline's replies or a transaction's results).
    fn watch<T: Replies>(&self, result: &RedisResult<T>) {
        match result {
            Err(e) => self.observe(e),
            Ok(replies) => {
                if let Some(e) = replies.refusal() {
                    self.observe(&e);
                }
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.manager.req_packed_command(cmd).await;
            self.watch(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self.manager.req_packed_commands(cmd, offset, count).await;
            self.watch(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.manager.get_db()
    }
}

/// Replies that may carry a node's refusal to act as the primary.
trait Replies {
    fn refusal(&self) -> Option<RedisError>;
}

impl Replies for Value {
    fn refusal(&self) -> Option<RedisError> {
        match self {
            Value::ServerError(e) if matches!(e.code(), "READONLY" | "MASTERDOWN" | "LOADING") => {
                Some(self.clone().extract_error().err()?)
            }
            Value::Array(items) => items.iter().find_map(|v| match v {
                Value::ServerError(_) => v.refusal(),
                _ => None,
            }),
            _ => None,
        }
    }
}

impl Replies for Vec<Value> {
    fn refusal(&self) -> Option<RedisError> {
        self.iter().find_map(Replies::refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_promoted_replica_is_asked_for_within_a_second() {
        assert_eq!(retry_after(1), Duration::from_millis(200));
        assert_eq!(retry_after(2), Duration::from_millis(400));
        assert_eq!(retry_after(3), Duration::from_millis(800));
        assert_eq!(retry_after(30), Duration::from_secs(1));
    }

    #[test]
    fn a_replica_refusing_writes_is_seen_inside_replies() {
        let readonly =
            redis::parse_redis_value(b"-READONLY You can't write against a read only replica.\r\n")
                .expect("parse");
        assert!(readonly.refusal().is_some());
        let nested = Value::Array(vec![Value::Okay, readonly.clone()]);
        assert!(nested.refusal().is_some());
        assert!(vec![Value::Int(1), nested].refusal().is_some());
        let other = redis::parse_redis_value(b"-ERR wrong number of arguments\r\n").expect("parse");
        assert!(other.refusal().is_none());
        assert!(Value::Int(3).refusal().is_none());
    }

    #[tokio::test]
    async fn while_the_primary_is_unknown_get_fails_at_once() {
        let mut config = RedisQueueConfig {
            url: "redis://127.0.0.1:1".into(),
            password: None,
            ca_pem: None,
            stream: "s".into(),
            group: "g".into(),
            consumer: "c".into(),
            claim_idle: Duration::from_secs(30),
            sentinel: None,
            replicas: Default::default(),
        };
        let primary = Primary::new(&config, "test", Duration::from_secs(1)).expect("primary");
        let started = std::time::Instant::now();
        assert!(primary.get().is_err());
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(primary.connect().await.is_err());
        config.sentinel = Some(link::SentinelConfig {
            sentinels: vec![("127.0.0.1".into(), 1)],
            master: "m".into(),
            password: None,
        });
        let sentinel = Primary::new(&config, "test", Duration::from_secs(1)).expect("sentinel");
        let e = sentinel.connect().await.err().expect("no sentinel there");
        assert!(e.to_string().contains("finding the Redis primary"), "{e}");
        assert_eq!(sentinel.moves(), 0);
    }
}
