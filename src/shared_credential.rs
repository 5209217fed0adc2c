//! One provider credential for a whole cluster: the APNs provider token (JWT)
//! and the FCM OAuth access token are minted by one gateway and reused by
//! all, instead of each gateway renewing its own (Apple answers
//! `TooManyProviderTokenUpdates` when one key's tokens are renewed more often
//! than about once per 20 minutes; N gateways with one `.p8` each would).
//!
//! This is a floor: it knows neither the platforms nor the queue. A backend
//! that several gateways share (Redis) implements [`CredentialStore`]; the
//! platforms' auth modules are handed a [`SharedCredentials`] and call
//! [`SharedCredentials::decide`] to learn whether to reuse the stored token
//! or mint a new one.
//!
//! The rule, per credential key:
//! - a stored token younger than its `renew_at` is used as is;
//! - an older one (or none) is renewed by whoever takes the mint lock (SET NX
//!   PX, held [`LOCK_HOLD`]); the others keep the token they have (still
//!   valid: renewal starts well before expiry) and look again later;
//! - a lock holder that dies before storing costs one [`LOCK_HOLD`]: the
//!   lock expires and the next gateway to look mints.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A boxed future, so the traits stay object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long a minting gateway holds the lock: long enough to sign a JWT or
/// fetch an OAuth token, short enough that a dead holder costs little.
pub const LOCK_HOLD: Duration = Duration::from_secs(15);

/// A token as stored for the cluster.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// The header value to send (`bearer <jwt>`, `Bearer <token>`). Secret.
    pub value: String,
    /// When it was minted (ms since epoch, by the minter's clock).
    pub minted_at_ms: u64,
    /// From then on it should be renewed (it still works for a while).
    pub renew_at_ms: u64,
    /// From then on it must not be used.
    pub expires_at_ms: u64,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("value", &"<redacted>")
            .field("minted_at_ms", &self.minted_at_ms)
            .field("renew_at_ms", &self.renew_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// The store could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("shared credential store: {0}")]
pub struct StoreError(pub String);

/// Where the cluster keeps its credentials (the `redis` backend).
pub trait CredentialStore: Send + Sync + 'static {
    /// The stored credential of `key`, if any.
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Credential>, StoreError>>;
    /// Takes the mint lock of `key` for `hold` unless someone holds it; true
    /// when we have it.
    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        hold: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// Stores a freshly minted credential (kept until it expires) and
    /// releases the lock.
    fn store<'a>(
        &'a self,
        key: &'a str,
        credential: &'a Credential,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// Milliseconds since the epoch; injectable so tests can run an hour in a
/// moment.
pub trait Clock: Send + Sync + 'static {
    /// Now, in ms since the epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        Self(AtomicU64::new(start_ms))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(
            u64::try_from(by.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What to do about one credential.
#[derive(Debug)]
pub enum Decision {
    /// Use this one (the stored one, or ours if it is newer).
    Use(Credential),
    /// Mint a new one and [`SharedCredentials::publish`] it: we hold the lock.
    Mint,
    /// Another gateway is minting: keep what you have, look again soon.
    Wait,
}

/// A store and a clock, handed to the platforms' auth modules.
#[derive(Clone)]
pub struct SharedCredentials {
    store: Arc<dyn CredentialStore>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SharedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedCredentials")
    }
}

impl SharedCredentials {
    /// Credentials kept in `store`, aged by `clock`.
    pub fn new(store: Arc<dyn CredentialStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// Now, by the injected clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Decides between reusing and minting `key`'s credential, given the one
    /// this gateway holds (`ours`).
    pub async fn decide(
        &self,
        key: &str,
        ours: Option<&Credential>,
    ) -> Result<Decision, StoreError> {
        let now = self.now_ms();
        let stored = self.store.load(key).await?;
        let best = match (stored, ours) {
            (Some(s), Some(o)) if o.minted_at_ms > s.minted_at_ms => Some(o.clone()),
            (Some(s), _) => Some(s),
            (None, o) => o.cloned(),
        };
        if let Some(best) = best.filter(|c| now < c.renew_at_ms) {
            return Ok(Decision::Use(best));
        }
        if self.store.try_lock(key, LOCK_HOLD).await? {
            // Someone may have stored a new one between our read and the lock.
            if let Some(fresh) = self.store.load(key).await?.filter(|c| now < c.renew_at_ms) {
                return Ok(Decision::Use(fresh));
            }
            return Ok(Decision::Mint);
        }
        Ok(Decision::Wait)
    }

    /// Stores what we minted after [`Decision::Mint`].
    pub async fn publish(&self, key: &str, credential: &Credential) -> Result<(), StoreError> {
        self.store.store(key, credential).await
    }
}

/// An in-process store for the tests of this module and of the credentials
/// that use it (`oauth`).
#[cfg(test)]
pub(crate) mod memory {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// An in-process store: the contract, without Redis.
    #[derive(Default)]
    pub(crate) struct MemoryStore {
        clock: Arc<ManualClock>,
        values: Mutex<HashMap<String, Credential>>,
        locks: Mutex<HashMap<String, u64>>,
    }

    impl MemoryStore {
        /// An empty store whose locks expire by `clock`.
        pub(crate) fn new(clock: Arc<ManualClock>) -> Self {
            Self {
                clock,
                ..Default::default()
            }
        }
    }

    impl CredentialStore for MemoryStore {
        fn load<'a>(
            &'a self,
            key: &'a str,
        ) -> BoxFuture<'a, Result<Option<Credential>, StoreError>> {
            Box::pin(async move { Ok(self.values.lock().expect("lock").get(key).cloned()) })
        }
        fn try_lock<'a>(
            &'a self,
            key: &'a str,
            hold: Duration,
        ) -> BoxFuture<'a, Result<bool, StoreError>> {
            Box::pin(async move {
                let now = self.clock.now_ms();
                let mut locks = self.locks.lock().expect("lock");
                match locks.get(key) {
                    Some(until) if *until > now => Ok(false),
                    _ => {
                        locks.insert(key.to_owned(), now + hold.as_millis() as u64);
                        Ok(true)
                    }
                }
            })
        }
        fn store<'a>(
            &'a self,
            key: &'a str,
            credential: &'a Credential,
        ) -> BoxFuture<'a, Result<(), StoreError>> {
            Box::pin(async move {
                self.values
                    .lock()
                    .expect("lock")
                    .insert(key.to_owned(), credential.clone());
                self.locks.lock().expect("lock").remove(key);
                Ok(())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::memory::MemoryStore;
    use super::*;

    fn credential(now: u64) -> Credential {
        Credential {
            value: format!("bearer {now}"),
            minted_at_ms: now,
            renew_at_ms: now + 40 * 60_000,
            expires_at_ms: now + 60 * 60_000,
        }
    }

    #[tokio::test]
    async fn one_mints_the_others_wait_then_reuse_and_a_dead_holder_costs_one_lock_hold() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let store = Arc::new(MemoryStore::new(clock.clone()));
        let shared = SharedCredentials::new(store, clock.clone());
        assert!(matches!(shared.decide("k", None).await, Ok(Decision::Mint)));
        // A second gateway asks while the first is minting.
        assert!(matches!(shared.decide("k", None).await, Ok(Decision::Wait)));
        let first = credential(clock.now_ms());
        shared.publish("k", &first).await.expect("store");
        match shared.decide("k", None).await {
            Ok(Decision::Use(c)) => assert_eq!(c, first),
            other => panic!("{other:?}"),
        }
        // Due for renewal: one takes the lock and dies without storing.
        clock.advance(Duration::from_secs(40 * 60));
        assert!(matches!(
            shared.decide("k", Some(&first)).await,
            Ok(Decision::Mint)
        ));
        assert!(matches!(
            shared.decide("k", Some(&first)).await,
            Ok(Decision::Wait)
        ));
        // One lock hold later the next gateway mints.
        clock.advance(LOCK_HOLD);
        assert!(matches!(
            shared.decide("k", Some(&first)).await,
            Ok(Decision::Mint)
        ));
        assert!(format!("{first:?}").contains("<redacted>"));
    }
}
