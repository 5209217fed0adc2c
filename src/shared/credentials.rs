//! The `redis` backend's [`CredentialStore`]: the cluster's provider tokens
//! under `{<stream>}:cred:<key>` (JSON, expiring with the token) and their
//! mint locks under `{<stream>}:cred:<key>:lock` (SET NX PX).
//!
//! The stored value is a bearer credential: Redis is trusted with it as it
//! is with the queue (use AUTH and `rediss://` off the host). It is never
//! logged.
//!
//! With `queue.redis_min_replicas`, the lock and the credential wait for
//! that many replicas (`WAIT`), so a failover does not forget a token the
//! cluster already uses (and have a second one minted). Too few
//! acknowledgements are counted and logged, not refused: the write is on the
//! primary either way, and refusing it would only have each gateway sign its
//! own, which sharing is there to avoid.

use std::time::Duration;

use super::link::RedisQueueConfig;
use super::primary::{Conn, Primary};
use super::replicas::{self, AckFailures, ReplicaAcks, Shortfall};
use crate::shared_credential::{BoxFuture, Credential, CredentialStore, StoreError};

/// Credentials in Redis, on a connection of their own (made on first use, so
/// a gateway started while Redis is down still starts).
pub struct RedisCredentials {
    prefix: String,
    conn: Primary,
    acks: ReplicaAcks,
    failures: AckFailures,
}

impl std::fmt::Debug for RedisCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCredentials")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn store_error(what: &str, e: redis::RedisError) -> StoreError {
    StoreError(format!("redis {what}: {e}"))
}

impl RedisCredentials {
    /// A store for the cluster of `config` (its stream names the keys).
    pub fn new(config: &RedisQueueConfig) -> Result<Self, super::link::LinkError> {
        Ok(Self {
            conn: Primary::new(
                config,
                "credentials",
                super::link::RESPONSE_TIMEOUT + config.replicas.timeout,
            )?,
            prefix: format!("{}:cred:", super::link::stream_key(&config.stream)),
            acks: config.replicas,
            failures: AckFailures::default(),
        })
    }

    /// The same store, counting writes too few replicas acknowledged.
    pub fn counting(mut self, failures: AckFailures) -> Self {
        self.failures = failures;
        self
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        self.conn
            .connect()
            .await
            .map_err(|e| store_error("connect", e))
    }

    /// Too few acknowledgements are counted and logged; the write stands
    /// (see the module documentation).
    fn note(&self, what: &str, shortfall: Option<Shortfall>) {
        if let Some(e) = shortfall {
            self.failures.record("credential");
            tracing::warn!(error = %e, "shared credential {what}: kept, but not on enough replicas");
        }
    }
}

impl CredentialStore for RedisCredentials {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Credential>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let raw: Option<String> = redis::cmd("GET")
                .arg(self.key(key))
                .query_async(&mut conn)
                .await
                .map_err(|e| store_error("GET", e))?;
            // Unreadable (another version's shape): as if absent, so it is renewed.
            Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
        })
    }

    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        hold: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let mut set = redis::cmd("SET");
            set.arg(format!("{}:lock", self.key(key)))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(u64::try_from(hold.as_millis()).unwrap_or(u64::MAX).max(1));
            let written = replicas::query(&mut conn, &set, self.acks)
                .await
                .map_err(|e| store_error("SET NX", e))?;
            self.note("lock", written.shortfall);
            Ok(written.value != redis::Value::Nil)
        })
    }

    fn store<'a>(
        &'a self,
        key: &'a str,
        credential: &'a Credential,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let body = serde_json::to_string(credential)
                .map_err(|e| StoreError(format!("encoding the credential: {e}")))?;
            let keep_ms = credential
                .expires_at_ms
                .saturating_sub(credential.minted_at_ms)
                .max(1);
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(self.key(key))
                .arg(body)
                .arg("PX")
                .arg(keep_ms)
                .cmd("DEL")
                .arg(format!("{}:lock", self.key(key)));
            let written = replicas::exec(&mut conn, &pipe, self.acks)
                .await
                .map_err(|e| store_error("SET", e))?;
            self.note("store", written.shortfall);
            Ok(())
        })
    }
}
