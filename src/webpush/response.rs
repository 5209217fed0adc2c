//! Push-service answers (RFC 8030 §5–§8) mapped to a [`Verdict`] in one table:
//!
//! | answer                         | verdict                                   |
//! |--------------------------------|-------------------------------------------|
//! | 2xx (201 Created, 202)         | success                                   |
//! | 404, 410                       | unregistered: the back end purges it      |
//! | 413                            | failed `PayloadTooLarge`                  |
//! | 400, 401, 403                  | failed; 401/403 (VAPID) logged loudly     |
//! | other 4xx, 1xx/3xx             | failed (redirects are never followed)     |
//! | 429, 5xx                       | retry, honouring `Retry-After`            |
//! | transport error                | retry                                     |
//! | past the message's TTL         | expired `TtlExpired` (see [`past_ttl`])   |
//!
//! The failure reason is the service's own word when its JSON body has a short
//! `reason` (Apple: `VapidPkHashMismatch`, `BadJwtToken`…), else the status word.

use std::sync::Arc;
use std::time::Duration;

use crate::job::Outcome;
use crate::retry::Verdict;

/// One classified answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// What to do with the subscription.
    pub verdict: Verdict,
    /// A credential problem (VAPID refused): log loudly, it hits every message.
    pub loud: bool,
}

/// The status word used as reason when the body gives none.
pub fn status_word(status: u16) -> &'static str {
    match status {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        410 => "Gone",
        413 => "PayloadTooLarge",
        429 => "TooManyRequests",
        500 => "InternalServerError",
        502 => "BadGateway",
        503 => "ServiceUnavailable",
        504 => "GatewayTimeout",
        300..=399 => "Redirect",
        _ => "UnexpectedStatus",
    }
}

/// A short reason word from the body (`{"reason": "..."}`), if there is one.
fn body_reason(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let r = v.get("reason")?.as_str()?;
    let ok =
        !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    ok.then(|| r.to_owned())
}

/// Classifies one answer.
pub fn classify(status: u16, body: &[u8], retry_after: Option<Duration>) -> Classified {
    let reason = || -> Arc<str> {
        Arc::from(body_reason(body).unwrap_or_else(|| status_word(status).to_owned()))
    };
    let verdict = match status {
        200..=299 => Verdict::Done(Outcome::Success),
        404 | 410 => Verdict::Done(Outcome::Unregistered { timestamp_ms: None }),
        413 => Verdict::Done(Outcome::Failed {
            reason: Arc::from("PayloadTooLarge"),
            status,
        }),
        429 | 500..=599 => Verdict::Retry {
            reason: reason(),
            retry_after,
        },
        _ => Verdict::Done(Outcome::Failed {
            reason: reason(),
            status,
        }),
    };
    Classified {
        verdict,
        loud: matches!(status, 401 | 403),
    }
}

/// A request that got no answer (connect, TLS, reset, timeout): retried.
pub fn transport_error() -> Verdict {
    Verdict::Retry {
        reason: Arc::from("TransportError"),
        retry_after: None,
    }
}

/// The outcome of a message whose TTL ran out before it was delivered.
pub fn ttl_expired() -> Outcome {
    Outcome::Expired {
        reason: Arc::from("TtlExpired"),
    }
}

/// True when a message accepted at `accepted_ms` with `ttl_s` seconds to live
/// is past its TTL at `now_ms` (TTL 0 means "now or never": only the first try).
pub fn past_ttl(accepted_ms: u64, ttl_s: u32, now_ms: u64) -> bool {
    now_ms > accepted_ms.saturating_add(u64::from(ttl_s) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(o: Outcome) -> Verdict {
        Verdict::Done(o)
    }

    fn failed(reason: &str, status: u16) -> Verdict {
        done(Outcome::Failed {
            reason: Arc::from(reason),
            status,
        })
    }

    #[test]
    fn the_table_row_by_row() {
        let ra = Some(Duration::from_secs(7));
        type Row = (u16, &'static [u8], Option<Duration>, Verdict, bool);
        let rows: Vec<Row> = vec![
            (201, b"", None, done(Outcome::Success), false),
            (202, b"", None, done(Outcome::Success), false),
            (
                404,
                b"",
                None,
                done(Outcome::Unregistered { timestamp_ms: None }),
                false,
            ),
            (
                410,
                b"{\"reason\":\"Unregistered\"}",
                None,
                done(Outcome::Unregistered { timestamp_ms: None }),
                false,
            ),
            (413, b"", None, failed("PayloadTooLarge", 413), false),
            (400, b"", None, failed("BadRequest", 400), false),
            (
                400,
                b"{\"reason\":\"BadWebPushTopic\"}",
                None,
                failed("BadWebPushTopic", 400),
                false,
            ),
            (401, b"", None, failed("Unauthorized", 401), true),
            (
                403,
                b"{\"reason\":\"VapidPkHashMismatch\"}",
                None,
                failed("VapidPkHashMismatch", 403),
                true,
            ),
            (403, b"not json", None, failed("Forbidden", 403), true),
            (
                429,
                b"",
                ra,
                Verdict::Retry {
                    reason: Arc::from("TooManyRequests"),
                    retry_after: ra,
                },
                false,
            ),
            (
                500,
                b"",
                None,
                Verdict::Retry {
                    reason: Arc::from("InternalServerError"),
                    retry_after: None,
                },
                false,
            ),
            (
                503,
                b"",
                ra,
                Verdict::Retry {
                    reason: Arc::from("ServiceUnavailable"),
                    retry_after: ra,
                },
                false,
            ),
            (
                502,
                b"",
                None,
                Verdict::Retry {
                    reason: Arc::from("BadGateway"),
                    retry_after: None,
                },
                false,
            ),
            (301, b"", None, failed("Redirect", 301), false),
            (405, b"", None, failed("UnexpectedStatus", 405), false),
        ];
        for (status, body, retry_after, verdict, loud) in rows {
            let c = classify(status, body, retry_after);
            assert_eq!(c.verdict, verdict, "status {status}");
            assert_eq!(c.loud, loud, "loud for {status}");
        }
    }

    #[test]
    fn long_or_odd_body_reasons_fall_back_to_the_status_word() {
        let long = format!("{{\"reason\":\"{}\"}}", "x".repeat(65));
        assert_eq!(
            classify(400, long.as_bytes(), None).verdict,
            failed("BadRequest", 400)
        );
        assert_eq!(
            classify(400, br#"{"reason":"has spaces in it"}"#, None).verdict,
            failed("BadRequest", 400)
        );
    }

    #[test]
    fn transport_errors_retry_and_ttl_expiry_is_expired() {
        assert!(matches!(
            transport_error(),
            Verdict::Retry {
                retry_after: None,
                ..
            }
        ));
        assert_eq!(
            ttl_expired(),
            Outcome::Expired {
                reason: Arc::from("TtlExpired")
            }
        );
        assert!(!past_ttl(1_000, 60, 61_000));
        assert!(past_ttl(1_000, 60, 61_001));
        assert!(past_ttl(1_000, 0, 1_001));
    }
}
