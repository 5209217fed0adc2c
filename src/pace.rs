//! Pacing FCM to its quota: Firebase lets a project send `max_per_minute`
//! messages (600,000 by default), counting every message, 4xx answers
//! included. Sending faster only collects 429s and burns retries, so the
//! worker asks an [`Allowance`] before every request.
//!
//! [`Bucket`] is the in-process allowance: a token bucket refilled at
//! `max_per_minute / 60` per second holding at most a tenth of a second's
//! worth (so over any 20 s the rate is within 1% of the quota, and a
//! start-up burst stays small). A 429 with `Retry-After` pauses the whole
//! project: nothing is let through until it has passed.
//!
//! [`shared::SharedBucket`] is the cluster's allowance: several gateways
//! sharing one project's quota lease tokens from one bucket kept by a
//! [`shared::QuotaStore`] (the `redis` backend's). Time comes from a
//! [`Clock`] so tests run the buckets on a clock they move themselves.
//!
//! This is a floor: it knows neither FCM nor the queue. The platform asks an
//! [`Allowance`]; the wiring picks which one, one per project.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub mod shared;

/// A sleep returned by a [`Clock`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Time for the pacer: monotonic, from an arbitrary origin.
pub trait Clock: Send + Sync {
    /// Now, since the clock's origin.
    fn now(&self) -> Duration;
    /// Resolves once the clock reads `at` or later.
    fn sleep_until(&self, at: Duration) -> Sleep;
}

/// The runtime's clock (tokio time, so it follows a paused test runtime too).
#[derive(Debug)]
pub struct SystemClock {
    origin: tokio::time::Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn sleep_until(&self, at: Duration) -> Sleep {
        Box::pin(tokio::time::sleep_until(self.origin + at))
    }
}

/// A clock that moves only when told ([`ManualClock::advance`]): tests pace a
/// real worker against a real mock in "test time", independent of how fast
/// the machine is.
#[derive(Debug)]
pub struct ManualClock {
    now: tokio::sync::watch::Sender<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self {
            now: tokio::sync::watch::Sender::new(Duration::ZERO),
        }
    }
}

impl ManualClock {
    /// Moves the clock forward, waking every sleep that is due.
    pub fn advance(&self, d: Duration) {
        self.now.send_modify(|now| *now += d);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.now.borrow()
    }

    fn sleep_until(&self, until: Duration) -> Sleep {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // An error means the clock is gone: then nothing will ever wake
            // this sleep, which is what a stopped clock means.
            if rx.wait_for(|now| *now >= until).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

/// Permission to send, one message at a time.
pub trait Allowance: Send + Sync {
    /// Takes one message's worth now, or says when (on [`Allowance::clock`])
    /// one is free.
    fn take(&self) -> Result<(), Duration>;
    /// The upstream said "slow down" (429 + `Retry-After`): nothing goes
    /// before `d` has passed (see [`Pause`] for when a 429 does not pause).
    /// True when this call paused or lengthened a pause.
    fn pause(&self, d: Duration) -> bool;
    /// Messages that could go at once now (for the metrics gauge).
    fn available(&self) -> f64;
    /// The clock waits are measured on.
    fn clock(&self) -> &dyn Clock;
}

/// The project's pause, and the rule for when a 429 pauses.
///
/// FCM answers 429 `QUOTA_EXCEEDED` both for the project's quota and for one
/// device's or topic's own rate, and the answer does not say which. So:
/// - a 429 outside any pause pauses the project for its `Retry-After`;
/// - one during a pause (requests that were in flight) may only lengthen it;
/// - one in the cool-down after a pause (as long as the pause was) is left
///   to its token's own retry: a few devices over their own limit then cost
///   at most half the time, instead of stalling the project one pause after
///   another. A project really over quota still pauses again after the
///   cool-down, and the 429s in between do not count against the quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pause {
    /// Nothing goes before this (on the clock).
    pub until: Duration,
    /// How long the last pause was (its cool-down is as long).
    pub len: Duration,
}

impl Pause {
    /// Applies a 429 asking for `d` at `now`; true when it paused or
    /// lengthened the pause.
    pub fn apply(&mut self, now: Duration, d: Duration) -> bool {
        let want = now + d;
        if now < self.until {
            if want > self.until {
                self.len += want - self.until;
                self.until = want;
                return true;
            }
            return false;
        }
        if now < self.until + self.len {
            return false;
        }
        *self = Self {
            until: want,
            len: d,
        };
        true
    }

    /// True while nothing may go.
    pub fn active(&self, now: Duration) -> bool {
        now < self.until
    }
}

#[derive(Debug)]
struct State {
    tokens: f64,
    at: Duration,
    pause: Pause,
}

/// The in-process token bucket (see the module docs).
pub struct Bucket {
    per_second: f64,
    burst: f64,
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    granted: AtomicU64,
    blocked: AtomicBool,
    /// When the last refused sender may try again (nanoseconds on the clock).
    retry_at_ns: AtomicU64,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("per_second", &self.per_second)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

/// What a bucket for `max_per_minute` holds when full: a tenth of a second's
/// worth, at least one message. The same for the in-process [`Bucket`] and
/// the cluster's ([`shared`]).
pub fn burst(max_per_minute: u64) -> f64 {
    (max_per_minute.max(1) as f64 / 600.0).max(1.0)
}

impl Bucket {
    /// A full bucket for `max_per_minute` (at least 1) on `clock`.
    pub fn new(max_per_minute: u64, clock: Arc<dyn Clock>) -> Self {
        let per_second = max_per_minute.max(1) as f64 / 60.0;
        let burst = burst(max_per_minute);
        let at = clock.now();
        Self {
            per_second,
            burst,
            state: Mutex::new(State {
                tokens: burst,
                at,
                pause: Pause::default(),
            }),
            clock,
            granted: AtomicU64::new(0),
            blocked: AtomicBool::new(false),
            retry_at_ns: AtomicU64::new(0),
        }
    }

    /// Messages let through so far.
    pub fn granted(&self) -> u64 {
        self.granted.load(Ordering::Relaxed)
    }

    /// True when the last [`Allowance::take`] was refused and the refused
    /// sender's wait is not over yet on the clock (it sleeps).
    pub fn blocked(&self) -> bool {
        self.blocked.load(Ordering::Relaxed)
            && Duration::from_nanos(self.retry_at_ns.load(Ordering::Relaxed)) > self.clock.now()
    }

    fn refuse(&self, at: Duration) -> Result<(), Duration> {
        self.retry_at_ns.store(
            u64::try_from(at.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.blocked.store(true, Ordering::Relaxed);
        Err(at)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::floor::lock(&self.state)
    }

    fn refill(&self, state: &mut State, now: Duration) {
        let elapsed = now.saturating_sub(state.at).as_secs_f64();
        state.tokens = (state.tokens + elapsed * self.per_second).min(self.burst);
        state.at = now;
    }
}

impl Allowance for Bucket {
    fn take(&self) -> Result<(), Duration> {
        let now = self.clock.now();
        let mut state = self.lock();
        if state.pause.active(now) {
            return self.refuse(state.pause.until);
        }
        self.refill(&mut state, now);
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            self.granted.fetch_add(1, Ordering::Relaxed);
            self.blocked.store(false, Ordering::Relaxed);
            Ok(())
        } else {
            let missing = 1.0 - state.tokens;
            // At least a millisecond: a shorter wait would only spin.
            let wait = Duration::from_secs_f64(missing / self.per_second);
            self.refuse(now + wait.max(Duration::from_millis(1)))
        }
    }

    fn pause(&self, d: Duration) -> bool {
        let now = self.clock.now();
        let mut state = self.lock();
        if !state.pause.apply(now, d) {
            return false;
        }
        // Nothing saved up during the pause may burst out after it.
        state.tokens = 0.0;
        state.at = state.pause.until;
        true
    }

    fn available(&self) -> f64 {
        let now = self.clock.now();
        let mut state = self.lock();
        if state.pause.active(now) {
            return 0.0;
        }
        self.refill(&mut state, now);
        state.tokens
    }

    fn clock(&self) -> &dyn Clock {
        &*self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends as fast as the bucket allows for `secs` of clock time.
    fn drain_for(bucket: &Bucket, clock: &ManualClock, secs: u64) -> u64 {
        let end = clock.now() + Duration::from_secs(secs);
        let mut sent = 0;
        while clock.now() < end {
            match bucket.take() {
                Ok(()) => sent += 1,
                Err(at) => {
                    let wait = at.saturating_sub(clock.now());
                    clock.advance(wait.min(end - clock.now()).max(Duration::from_micros(1)))
                }
            }
        }
        sent
    }

    #[test]
    fn the_rate_over_20_s_is_within_5_percent_of_max_per_minute() {
        for per_minute in [60, 600, 6_000, 600_000] {
            let clock = Arc::new(ManualClock::default());
            let bucket = Bucket::new(per_minute, clock.clone());
            let sent = drain_for(&bucket, &clock, 20) as f64;
            let want = per_minute as f64 / 3.0;
            assert!(
                (sent - want).abs() <= want * 0.05,
                "{per_minute}/min: {sent} in 20 s, want {want}"
            );
        }
    }

    #[test]
    fn a_pause_stops_everything_and_saves_nothing_up() {
        let clock = Arc::new(ManualClock::default());
        let bucket = Bucket::new(6_000, clock.clone()); // 100/s, burst 10
        assert!(bucket.take().is_ok());
        bucket.pause(Duration::from_secs(5));
        let at = bucket.take().expect_err("paused");
        assert_eq!(at, Duration::from_secs(5));
        assert_eq!(bucket.available(), 0.0);
        clock.advance(Duration::from_secs(5));
        // No burst of 500 after the pause: the bucket starts empty.
        assert!(bucket.take().is_err());
        clock.advance(Duration::from_millis(10));
        assert!(bucket.take().is_ok());
        // In the cool-down after a pause (as long as it), a 429 does not
        // pause again: left to its token's retry.
        assert!(!bucket.pause(Duration::from_secs(3)));
        clock.advance(Duration::from_millis(10));
        assert!(bucket.take().is_ok(), "not paused");
        // After it, one does; a shorter one never shortens a longer one.
        clock.advance(Duration::from_secs(5));
        assert!(bucket.pause(Duration::from_secs(3)));
        assert!(!bucket.pause(Duration::from_secs(1)));
        assert_eq!(
            bucket.take().expect_err("paused"),
            Duration::from_millis(10_020) + Duration::from_secs(3)
        );
        // A longer one during it lengthens it.
        assert!(bucket.pause(Duration::from_secs(4)));
        assert_eq!(
            bucket.take().expect_err("paused"),
            Duration::from_millis(10_020) + Duration::from_secs(4)
        );
    }

    #[tokio::test]
    async fn manual_sleeps_wake_when_the_clock_passes_them() {
        let clock = Arc::new(ManualClock::default());
        let sleep = clock.sleep_until(Duration::from_secs(2));
        let task = tokio::spawn(sleep);
        clock.advance(Duration::from_secs(1));
        tokio::task::yield_now().await;
        assert!(!task.is_finished());
        clock.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("woken")
            .expect("joined");
    }
}
