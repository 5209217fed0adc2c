//! One project's quota shared by a cluster: every gateway leases its tokens
//! from one bucket kept in a [`QuotaStore`] (Redis, for the `redis` backend),
//! so N gateways together send `max_per_minute`, not N times it.
//!
//! A send cannot wait for a round trip to the store, so [`SharedBucket`]
//! keeps a small local reserve (a quarter of the cluster bucket, at most) and
//! a task of its own tops it up when it runs low. The cluster bucket holds a
//! tenth of a second's worth, like [`super::Bucket`]: over 20 s the cluster
//! sends within `burst + N × reserve` messages of the quota.
//!
//! A 429 pause is written to the store, so every gateway pauses: each lease
//! answers "paused for d" until it has passed.
//!
//! While the store cannot be reached, each gateway paces itself alone at the
//! full quota (an in-process [`super::Bucket`]) and says so once in the log:
//! delivery goes on, and FCM's 429s (which pause) are the backstop.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::Notify;

use super::{Allowance, Bucket, Clock, Pause};

/// The store could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("shared quota store: {0}")]
pub struct QuotaError(pub String);

/// A store's answer to a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// This many tokens (at least one, at most what was asked) are ours.
    Granted(u64),
    /// None free: the next one is due in this long.
    Empty(Duration),
    /// The project is paused (a 429) for this long still.
    Paused(Duration),
}

/// Where the cluster keeps its buckets, one per `key` (a project).
pub trait QuotaStore: Send + Sync + 'static {
    /// Takes up to `want` tokens of `key`'s bucket, which refills at
    /// `max_per_minute` and holds a tenth of a second's worth.
    fn lease<'a>(
        &'a self,
        key: &'a str,
        max_per_minute: u64,
        want: u64,
    ) -> BoxFuture<'a, Result<Lease, QuotaError>>;
    /// Pauses `key` for everyone for `d`, emptying its bucket, by the rule
    /// of [`super::Pause`] (the store keeps the cluster's pause and its
    /// cool-down).
    fn pause<'a>(&'a self, key: &'a str, d: Duration) -> BoxFuture<'a, Result<(), QuotaError>>;
}

#[derive(Debug)]
struct Local {
    /// Leased and not spent yet.
    tokens: u64,
    /// What the store said, or a 429 we saw ourselves.
    paused_until: Duration,
    /// Our own 429s, by the pause rule.
    pause: Pause,
    /// The store said "empty until then": no lease before it.
    lease_after: Duration,
    /// A pause to write to the store (the longest asked for since the last write).
    pause_to_share: Option<Duration>,
    /// The last lease failed: pace alone on `fallback`.
    store_down: bool,
}

struct Inner {
    key: String,
    max_per_minute: u64,
    /// Tokens asked for at once.
    reserve: u64,
    store: Arc<dyn QuotaStore>,
    clock: Arc<dyn Clock>,
    local: Mutex<Local>,
    fallback: Bucket,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        crate::floor::lock(&self.local)
    }
}

/// The cluster-wide [`Allowance`] (see the module docs).
pub struct SharedBucket {
    inner: Arc<Inner>,
    /// Wakes the refill task: the reserve ran low, a pause is to be shared,
    /// or (on drop) the bucket is gone.
    wake: Arc<Notify>,
}

impl std::fmt::Debug for SharedBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBucket")
            .field("key", &self.inner.key)
            .field("max_per_minute", &self.inner.max_per_minute)
            .finish_non_exhaustive()
    }
}

impl Drop for SharedBucket {
    fn drop(&mut self) {
        // The task holds only a weak reference: woken, it finds us gone.
        self.wake.notify_one();
    }
}

impl SharedBucket {
    /// A bucket for `key` at `max_per_minute` over `store`, and the task that
    /// keeps its reserve (spawned on the current runtime; it ends when the
    /// bucket is dropped).
    pub fn start(
        key: impl Into<String>,
        max_per_minute: u64,
        store: Arc<dyn QuotaStore>,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        let reserve = ((super::burst(max_per_minute) / 4.0) as u64).max(1);
        let inner = Arc::new(Inner {
            key: key.into(),
            max_per_minute,
            reserve,
            store,
            fallback: Bucket::new(max_per_minute, clock.clone()),
            clock,
            local: Mutex::new(Local {
                tokens: 0,
                paused_until: Duration::ZERO,
                pause: Pause::default(),
                lease_after: Duration::ZERO,
                pause_to_share: None,
                store_down: false,
            }),
        });
        let wake = Arc::new(Notify::new());
        tokio::spawn(refill(Arc::downgrade(&inner), wake.clone()));
        // The first lease goes out at once, before the first send asks.
        wake.notify_one();
        Arc::new(Self { inner, wake })
    }

    /// True while the store cannot be reached (pacing alone meanwhile).
    pub fn store_down(&self) -> bool {
        self.inner.lock().store_down
    }
}

/// What the refill task should do next.
enum Step {
    SharePause(Duration),
    Lease(u64),
    /// Nothing now: wait to be woken, or until this time on the clock.
    Idle(Option<Duration>),
}

fn next_step(inner: &Inner) -> Step {
    let now = inner.clock.now();
    let mut local = inner.lock();
    if let Some(d) = local.pause_to_share.take() {
        return Step::SharePause(d);
    }
    let due = local.paused_until.max(local.lease_after);
    if now < due {
        return Step::Idle(Some(due));
    }
    // Top up at half the reserve, so a steady sender never waits on the store.
    if local.tokens <= inner.reserve / 2 {
        Step::Lease(inner.reserve - local.tokens)
    } else {
        Step::Idle(None)
    }
}

/// How long to leave a store that failed alone before trying it again.
const STORE_RETRY: Duration = Duration::from_secs(1);

async fn refill(inner: Weak<Inner>, wake: Arc<Notify>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        match next_step(&strong) {
            Step::SharePause(d) => {
                if let Err(e) = strong.store.pause(&strong.key, d).await {
                    tracing::warn!(key = %strong.key, error = %e, "cannot share an FCM pause with the cluster");
                }
            }
            Step::Lease(want) => {
                let answer = strong
                    .store
                    .lease(&strong.key, strong.max_per_minute, want)
                    .await;
                let now = strong.clock.now();
                let mut local = strong.lock();
                match answer {
                    Ok(lease) => {
                        if local.store_down {
                            tracing::info!(key = %strong.key, "the shared FCM quota is reachable again: pacing with the cluster");
                        }
                        local.store_down = false;
                        match lease {
                            Lease::Granted(n) => local.tokens += n,
                            Lease::Empty(d) => local.lease_after = now + d,
                            Lease::Paused(d) => {
                                local.paused_until = local.paused_until.max(now + d);
                                local.tokens = 0;
                            }
                        }
                    }
                    Err(e) => {
                        if !local.store_down {
                            tracing::warn!(key = %strong.key, error = %e, "cannot reach the shared FCM quota: this gateway paces alone at the full max_per_minute until it can");
                        }
                        local.store_down = true;
                        local.lease_after = now + STORE_RETRY;
                    }
                }
            }
            Step::Idle(until) => {
                let clock = strong.clock.clone();
                // Never sleep holding the bucket alive: drop wakes us.
                drop(strong);
                match until {
                    Some(at) => {
                        tokio::select! {
                            () = clock.sleep_until(at) => {}
                            () = wake.notified() => {}
                        }
                    }
                    None => wake.notified().await,
                }
            }
        }
    }
}

impl Allowance for SharedBucket {
    fn take(&self) -> Result<(), Duration> {
        let now = self.inner.clock.now();
        let mut local = self.inner.lock();
        if now < local.paused_until {
            return Err(local.paused_until);
        }
        if local.store_down {
            drop(local);
            return self.inner.fallback.take();
        }
        if local.tokens > 0 {
            local.tokens -= 1;
            if local.tokens <= self.inner.reserve / 2 {
                self.wake.notify_one();
            }
            return Ok(());
        }
        self.wake.notify_one();
        // A lease is on its way (a round trip to the store) or due later.
        Err(local.lease_after.max(now + Duration::from_millis(1)))
    }

    fn pause(&self, d: Duration) -> bool {
        let now = self.inner.clock.now();
        let paused = {
            let mut local = self.inner.lock();
            let paused = local.pause.apply(now, d);
            if paused {
                local.paused_until = local.paused_until.max(local.pause.until);
                // Leased before the 429: not to be spent right after it.
                local.tokens = 0;
                local.pause_to_share = Some(local.pause_to_share.map_or(d, |p| p.max(d)));
            }
            paused
        };
        self.inner.fallback.pause(d);
        self.wake.notify_one();
        paused
    }

    fn available(&self) -> f64 {
        let now = self.inner.clock.now();
        let local = self.inner.lock();
        if now < local.paused_until {
            0.0
        } else if local.store_down {
            drop(local);
            self.inner.fallback.available()
        } else {
            local.tokens as f64
        }
    }

    fn clock(&self) -> &dyn Clock {
        &*self.inner.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::floor::lock;
    use crate::pace::ManualClock;

    /// A store in memory: one [`Bucket`] per key on the test's clock, the
    /// same rule as the Redis script.
    struct MemoryStore {
        clock: Arc<ManualClock>,
        buckets: Mutex<std::collections::HashMap<String, Arc<Bucket>>>,
        down: std::sync::atomic::AtomicBool,
        pauses: Mutex<Vec<Duration>>,
    }

    impl MemoryStore {
        fn new(clock: Arc<ManualClock>) -> Arc<Self> {
            Arc::new(Self {
                clock,
                buckets: Mutex::default(),
                down: Default::default(),
                pauses: Mutex::default(),
            })
        }

        fn bucket(&self, key: &str, max_per_minute: u64) -> Arc<Bucket> {
            lock(&self.buckets)
                .entry(key.to_owned())
                .or_insert_with(|| Arc::new(Bucket::new(max_per_minute, self.clock.clone())))
                .clone()
        }
    }

    impl QuotaStore for MemoryStore {
        fn lease<'a>(
            &'a self,
            key: &'a str,
            max_per_minute: u64,
            want: u64,
        ) -> BoxFuture<'a, Result<Lease, QuotaError>> {
            Box::pin(async move {
                if self.down.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(QuotaError("down".into()));
                }
                let bucket = self.bucket(key, max_per_minute);
                let mut granted = 0;
                while granted < want {
                    match bucket.take() {
                        Ok(()) => granted += 1,
                        Err(at) if granted == 0 => {
                            let now = self.clock.now();
                            return Ok(
                                if bucket.available() == 0.0
                                    && at > now + Duration::from_millis(100)
                                {
                                    Lease::Paused(at - now)
                                } else {
                                    Lease::Empty(at.saturating_sub(now))
                                },
                            );
                        }
                        Err(_) => break,
                    }
                }
                Ok(Lease::Granted(granted))
            })
        }

        fn pause<'a>(&'a self, key: &'a str, d: Duration) -> BoxFuture<'a, Result<(), QuotaError>> {
            Box::pin(async move {
                lock(&self.pauses).push(d);
                self.bucket(key, 60).pause(d);
                Ok(())
            })
        }
    }

    /// Lets the refill tasks run until they are idle.
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    /// Drains `buckets` as fast as they allow for `secs` of clock time, in
    /// 10 ms steps; returns what each sent.
    async fn drain_for(buckets: &[Arc<SharedBucket>], clock: &ManualClock, secs: u64) -> Vec<u64> {
        let mut sent = vec![0; buckets.len()];
        for _ in 0..secs * 100 {
            settle().await;
            for (b, n) in buckets.iter().zip(&mut sent) {
                while b.take().is_ok() {
                    *n += 1;
                    settle().await;
                }
            }
            clock.advance(Duration::from_millis(10));
        }
        sent
    }

    #[tokio::test]
    async fn three_gateways_share_one_quota_within_5_percent_over_20_s() {
        let clock = Arc::new(ManualClock::default());
        let store = MemoryStore::new(clock.clone());
        let per_minute = 6_000; // 100/s: 2,000 in 20 s for all three together
        let buckets: Vec<_> = (0..3)
            .map(|_| SharedBucket::start("project", per_minute, store.clone(), clock.clone()))
            .collect();
        let sent = drain_for(&buckets, &clock, 20).await;
        let total: u64 = sent.iter().sum();
        let want = per_minute as f64 / 3.0;
        assert!(
            (total as f64 - want).abs() <= want * 0.05,
            "{sent:?}: {total} in 20 s, want {want}"
        );
        assert!(sent.iter().all(|&n| n > 0), "every gateway sent: {sent:?}");
    }

    #[tokio::test]
    async fn a_pause_on_one_gateway_pauses_the_others_through_the_store() {
        let clock = Arc::new(ManualClock::default());
        let store = MemoryStore::new(clock.clone());
        let a = SharedBucket::start("project", 6_000, store.clone(), clock.clone());
        let b = SharedBucket::start("project", 6_000, store.clone(), clock.clone());
        settle().await;
        a.pause(Duration::from_secs(5));
        assert!(a.take().is_err(), "paused at once, locally");
        settle().await;
        assert_eq!(*lock(&store.pauses), [Duration::from_secs(5)]);
        // b spends its reserve (leased before the 429), then learns of the pause.
        while b.take().is_ok() {
            settle().await;
        }
        settle().await;
        clock.advance(Duration::from_secs(1));
        settle().await;
        assert!(b.take().is_err(), "b is paused too");
        assert_eq!(b.available(), 0.0);
        clock.advance(Duration::from_secs(4) + Duration::from_millis(50));
        let sent = drain_for(&[a.clone(), b.clone()], &clock, 1).await;
        assert!(
            sent.iter().sum::<u64>() > 0,
            "both go again after it: {sent:?}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_store_paces_alone_then_rejoins() {
        let clock = Arc::new(ManualClock::default());
        let store = MemoryStore::new(clock.clone());
        store.down.store(true, std::sync::atomic::Ordering::Relaxed);
        let a = SharedBucket::start("project", 6_000, store.clone(), clock.clone());
        settle().await;
        assert!(a.store_down());
        // Alone at the full quota: 100/s.
        let sent = drain_for(std::slice::from_ref(&a), &clock, 2).await[0];
        assert!((190..=212).contains(&sent), "{sent} in 2 s alone");
        store
            .down
            .store(false, std::sync::atomic::Ordering::Relaxed);
        clock.advance(STORE_RETRY);
        settle().await;
        assert!(!a.store_down(), "back with the cluster");
    }
}
