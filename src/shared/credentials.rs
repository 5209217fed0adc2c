//! The `redis` backend's [`CredentialStore`]: the cluster's provider tokens
//! under `{<stream>}:cred:<key>` (JSON, expiring with the token) and their
//! mint locks under `{<stream>}:cred:<key>:lock` (SET NX PX).
//!
//! The stored value is a bearer credential: Redis is trusted with it as it
//! is with the queue (use AUTH and `rediss://` off the host). It is never
//! logged.

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::link::RedisQueueConfig;
use crate::shared_credential::{BoxFuture, Credential, CredentialStore, StoreError};

/// Credentials in Redis, on a connection of their own (made on first use, so
/// a gateway started while Redis is down still starts).
pub struct RedisCredentials {
    prefix: String,
    conn: super::link::LazyConnection,
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
            conn: super::link::LazyConnection::new(
                super::link::client(config)?,
                super::link::RESPONSE_TIMEOUT,
            ),
            prefix: format!("{}:cred:", super::link::stream_key(&config.stream)),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        self.conn.get().await.map_err(|e| store_error("connect", e))
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
            let set: Option<String> = redis::cmd("SET")
                .arg(format!("{}:lock", self.key(key)))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(u64::try_from(hold.as_millis()).unwrap_or(u64::MAX).max(1))
                .query_async(&mut conn)
                .await
                .map_err(|e| store_error("SET NX", e))?;
            Ok(set.is_some())
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
            redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(self.key(key))
                .arg(body)
                .arg("PX")
                .arg(keep_ms)
                .ignore()
                .cmd("DEL")
                .arg(format!("{}:lock", self.key(key)))
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| store_error("SET", e))
        })
    }
}
