//! Retry mechanism, knowing no platform: exponential backoff with full jitter,
//! capped, with the upstream's `Retry-After` taking precedence. `apns/` and
//! `fcm/` classify answers; this module only says when to try again, or that
//! the token has run out of tries.

use std::time::{Duration, SystemTime};

/// Backoff settings (`[retry] base_ms`, `cap_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay ceiling for the first retry; doubles each retry.
    pub base: Duration,
    /// No delay is longer than this (unless the upstream asks for longer).
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(200),
            cap: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before retry number `retry` (1-based): uniformly random in
    /// `[0, min(cap, base * 2^(retry-1))]` ("full jitter"), so that a burst of
    /// failures does not come back as a burst. A `Retry-After` from the upstream
    /// wins when it is longer.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exp = retry.saturating_sub(1).min(31);
        let ceiling = self
            .base
            .saturating_mul(1u32 << exp)
            .min(self.cap)
            .as_millis();
        let jittered = Duration::from_millis(fastrand::u64(0..=ceiling as u64));
        match retry_after {
            Some(after) if after > jittered => after,
            _ => jittered,
        }
    }
}

impl Backoff {
    /// Delay before reconnect number `failures` (1-based): "equal jitter",
    /// half fixed and half random, so a dead upstream is never hammered in a
    /// tight loop even when the random half comes out at zero.
    pub fn reconnect_delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(31);
        let ceiling = self.base.saturating_mul(1u32 << exp).min(self.cap);
        let half = ceiling / 2;
        half + Duration::from_millis(fastrand::u64(0..=half.as_millis() as u64))
    }
}

/// What to do with a token after a retryable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after this delay.
    RetryIn(Duration),
    /// Out of tries: the token's outcome is `expired`.
    GiveUp,
}

/// Decides the next step for a token whose attempt number `attempt` (1-based)
/// just failed in a retryable way.
pub fn next(
    backoff: &Backoff,
    attempt: u32,
    max_retries: u32,
    retry_after: Option<Duration>,
) -> Next {
    if attempt > max_retries {
        Next::GiveUp
    } else {
        Next::RetryIn(backoff.delay(attempt, retry_after))
    }
}

/// Longest wait a `Retry-After` may ask for; a longer one (or a later date)
/// is read as this, so one bogus header cannot park a token for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Parses a `Retry-After` value (RFC 9110 §10.2.3) as a wait from `now`:
/// delay-seconds, or an HTTP date in any of the three forms RFC 9110 tells
/// recipients to accept (IMF-fixdate, RFC 850, asctime). A date in the past
/// is zero; every wait is at most [`MAX_RETRY_AFTER`]. APNs and Google send
/// seconds today, Huawei and some push services dates; one reader serves all.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// An answer's `Retry-After`, read at `now` ([`parse_retry_after`]).
pub fn retry_after_at(headers: &http::HeaderMap, now: SystemTime) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now))
}

/// An answer's `Retry-After`, read now.
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    retry_after_at(headers, SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_stays_under_the_doubling_ceiling_and_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
        };
        for _ in 0..200 {
            assert!(b.delay(1, None) <= Duration::from_millis(100));
            assert!(b.delay(3, None) <= Duration::from_millis(400));
            assert!(b.delay(30, None) <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn retry_after_wins_when_longer() {
        let b = Backoff::default();
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(60))),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn gives_up_after_max_retries() {
        let b = Backoff::default();
        assert!(matches!(next(&b, 1, 2, None), Next::RetryIn(_)));
        assert!(matches!(next(&b, 2, 2, None), Next::RetryIn(_)));
        assert_eq!(next(&b, 3, 2, None), Next::GiveUp);
        assert_eq!(next(&b, 1, 0, None), Next::GiveUp);
    }

    #[test]
    fn reconnect_delay_never_drops_below_half_the_ceiling() {
        let b = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
        };
        for _ in 0..100 {
            let d = b.reconnect_delay(1);
            assert!(
                d >= Duration::from_millis(500) && d <= Duration::from_secs(1),
                "{d:?}"
            );
            assert!(b.reconnect_delay(20) >= Duration::from_secs(30));
        }
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date_in_any_form() {
        // 2015-10-21T07:28:00Z is 10 s after `now`.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_470);
        let ten = Some(Duration::from_secs(10));
        assert_eq!(parse_retry_after(" 5 ", now), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), ten);
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", now),
            ten
        );
        assert_eq!(parse_retry_after("Wed Oct 21 07:28:00 2015", now), ten);
        let later = now + Duration::from_secs(60);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", later),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("Sat, 01 Jan 2050 00:00:00 GMT", now),
            Some(MAX_RETRY_AFTER)
        );
        for bad in ["soon", "-1", "1.5", ""] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
        let mut headers = http::HeaderMap::new();
        assert_eq!(retry_after_at(&headers, now), None);
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after_at(&headers, now), ten);
    }
}

/// What one attempt's answer means for its token, decided by the platform's
/// classification table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A terminal outcome.
    Done(crate::job::Outcome),
    /// Try again later (throttled, server trouble, transport error).
    Retry {
        /// The upstream's reason, for metrics and for the `expired` outcome.
        reason: std::sync::Arc<str>,
        /// The upstream's `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// The credential was stale: renew it, then retry at once.
    RefreshCredentials {
        /// The upstream's reason.
        reason: std::sync::Arc<str>,
    },
}
