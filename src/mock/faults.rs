//! Fault injection shared by the mock upstreams.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

/// Faults a mock injects. All off by default: a mock with `Faults::default()`
/// answers like a healthy upstream.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Fraction (0.0..=1.0) of requests answered with a retryable server error.
    pub error_rate: f64,
    /// Every Nth request (counted across connections) is throttled (429).
    pub throttle_every: Option<u64>,
    /// Seconds sent in `Retry-After` on a throttled answer.
    pub retry_after_s: u64,
    /// Send `Retry-After` as an HTTP date (IMF-fixdate, that many seconds
    /// ahead) instead of seconds, as Huawei and some push services do; every
    /// client must read both (RFC 9110 §10.2.3).
    pub retry_after_date: bool,
    /// Send GOAWAY on a connection after it has carried this many streams.
    pub goaway_after: Option<u64>,
    /// Close the TCP connection abruptly after this many streams (in-flight ones
    /// get no answer). Mock APNs: when `goaway_after` is set too, connections
    /// take turns (the first gets GOAWAY, the second the drop, and so on) so one
    /// run sees both.
    pub drop_after: Option<u64>,
    /// Mock APNs only: after this many streams on a connection, stop reading and
    /// answering while keeping TCP open (a stalled peer or a black-holed path;
    /// PINGs go unanswered too). The connection is let go after two minutes.
    pub stall_after: Option<u64>,
    /// Delay before every answer.
    pub latency_ms: u64,
    /// Tokens whose first attempt fails with a retryable error.
    pub flaky: HashSet<String>,
}

impl Faults {
    /// The `Retry-After` value a throttled answer of `seconds` carries:
    /// seconds, or the HTTP date that far ahead with `retry_after_date`.
    pub fn retry_after(&self, seconds: u64) -> http::HeaderValue {
        if self.retry_after_date {
            let at = std::time::SystemTime::now() + std::time::Duration::from_secs(seconds);
            if let Ok(v) = http::HeaderValue::try_from(httpdate::fmt_http_date(at)) {
                return v;
            }
        }
        http::HeaderValue::from(seconds)
    }

    /// Reads a flaky-token file: one token per line, blank lines and `#` comments skipped.
    pub fn load_flaky(path: &std::path::Path) -> std::io::Result<HashSet<String>> {
        let text = std::fs::read_to_string(path)?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect())
    }
}

/// Per-server fault state: the request counter behind `throttle_every`.
#[derive(Debug, Default)]
pub struct FaultClock {
    requests: AtomicU64,
}

/// What the fault plan says about one request, decided before the token's own rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    /// Answer normally.
    None,
    /// Answer 429 with `Retry-After: retry_after_s`.
    Throttle { retry_after_s: u64 },
    /// Answer a retryable server error (APNs 503/500, FCM 503 UNAVAILABLE).
    ServerError,
}

impl FaultClock {
    /// Decides the injected fault for the next request.
    pub fn next(&self, faults: &Faults) -> Injected {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(every) = faults.throttle_every
            && every > 0
            && n.is_multiple_of(every)
        {
            return Injected::Throttle {
                retry_after_s: faults.retry_after_s,
            };
        }
        if faults.error_rate > 0.0 && fastrand::f64() < faults.error_rate {
            return Injected::ServerError;
        }
        Injected::None
    }
}
