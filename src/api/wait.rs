//! What a send request asks besides its body ([`Ask`]): its reserved
//! idempotency key ([`super::idempotency`]) and `?wait=1..30`, the seconds
//! it waits for its job's per-token outcomes.
//!
//! A waiting request holds a one-shot receiver and nothing else (see
//! [`crate::outcome::watch`]): no worker, no lock. It is woken by its job's
//! last outcome, or answers 202 `"state": "running"` when the wait ends
//! first.

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde_json::{Map, Value, json};

use super::idempotency::Guard;
use super::{ApiError, AppState};
use crate::job::{Family, Outcome};
use crate::outcome::watch::TokenResult;

/// The most tokens a waited-for job may hold.
pub const MAX_WAITED_TOKENS: u64 = 1_000;

/// The longest `wait`, in seconds.
pub const MAX_WAIT_S: u64 = 30;

/// What a send request asks besides its body.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    /// Its reserved `Idempotency-Key`, when it sent one.
    pub guard: Option<Guard>,
    /// `?wait`: how long to wait for the job's outcomes.
    pub wait: Option<Duration>,
}

impl Ask {
    /// Refuses a waited-for job that cannot be waited for: over
    /// [`MAX_WAITED_TOKENS`] tokens (400 `wait_too_large`) or scheduled
    /// (400 `wait_with_schedule`). Nothing was queued.
    pub fn check(&self, tokens: u64, scheduled: bool) -> Result<(), ApiError> {
        if self.wait.is_none() {
            return Ok(());
        }
        if scheduled {
            return Err(ApiError::bad_request(
                "wait_with_schedule",
                "wait cannot be combined with send_at or delay_seconds: the job would not run within the wait; nothing was queued",
            ));
        }
        if tokens > MAX_WAITED_TOKENS {
            return Err(ApiError::bad_request(
                "wait_too_large",
                format!(
                    "wait is for at most {MAX_WAITED_TOKENS} tokens; this request has {tokens} accepted tokens. Nothing was queued: send without wait, or in smaller requests"
                ),
            ));
        }
        Ok(())
    }
}

/// Reads `wait` from a query string: `None` without one; 1–30 whole seconds.
pub fn parse_wait(query: Option<&str>) -> Result<Option<Duration>, ApiError> {
    let Some(value) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("wait="))
    else {
        return Ok(None);
    };
    match value.parse::<u64>() {
        Ok(s) if (1..=MAX_WAIT_S).contains(&s) => Ok(Some(Duration::from_secs(s))),
        _ => Err(ApiError::bad_request(
            "bad_wait",
            format!("wait must be whole seconds from 1 to {MAX_WAIT_S}, not {value:?}"),
        )),
    }
}

impl FromRequestParts<AppState> for Ask {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, ApiError> {
        Ok(Self {
            guard: parts.extensions.get::<Guard>().cloned(),
            wait: parse_wait(parts.uri.query())?,
        })
    }
}

/// An unregistered token's reason and HTTP status, as its upstream says it.
fn unregistered(family: Family) -> Option<(&'static str, u16)> {
    match family.name() {
        "apns" => Some(("Unregistered", 410)),
        "fcm" => Some(("UNREGISTERED", 404)),
        "gcm" => Some(("NotRegistered", 200)),
        "webpush" => Some(("Gone", 410)),
        _ => None,
    }
}

/// One token's entry of `results`: `token` (or `endpoint`), `outcome`,
/// and `reason`, `status`, `canonical` when they apply.
pub fn result_json(family: Family, result: &TokenResult) -> Value {
    let mut entry = Map::new();
    entry.insert(family.info().token_key.into(), json!(result.token));
    entry.insert("outcome".into(), json!(result.outcome.kind().as_str()));
    match &result.outcome {
        Outcome::Success | Outcome::Cancelled => {}
        Outcome::Unregistered { .. } => {
            if let Some((reason, status)) = unregistered(family) {
                entry.insert("reason".into(), json!(reason));
                entry.insert("status".into(), json!(status));
            }
        }
        Outcome::Canonical { new_token } => {
            entry.insert("canonical".into(), json!(new_token));
        }
        Outcome::Failed { reason, status } => {
            entry.insert("reason".into(), json!(&**reason));
            if *status != 0 {
                entry.insert("status".into(), json!(status));
            }
        }
        Outcome::Expired { reason } => {
            entry.insert("reason".into(), json!(&**reason));
        }
    }
    Value::Object(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn wait_is_whole_seconds_from_1_to_30() {
        assert_eq!(parse_wait(None).ok(), Some(None));
        assert_eq!(parse_wait(Some("a=1")).ok(), Some(None));
        assert_eq!(
            parse_wait(Some("a=1&wait=5")).ok(),
            Some(Some(Duration::from_secs(5)))
        );
        for bad in ["wait=0", "wait=31", "wait=x", "wait="] {
            assert!(parse_wait(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_waited_job_is_small_and_not_scheduled() {
        let ask = Ask {
            guard: None,
            wait: Some(Duration::from_secs(1)),
        };
        assert!(ask.check(1_000, false).is_ok());
        assert!(ask.check(1_001, false).is_err());
        assert!(ask.check(1, true).is_err());
        assert!(Ask::default().check(1_000_000, true).is_ok());
    }

    #[test]
    fn results_carry_the_upstreams_words() {
        let apns = crate::apns::FAMILY;
        let r = |outcome| TokenResult {
            index: 0,
            token: "ab".into(),
            outcome,
        };
        assert_eq!(
            result_json(apns, &r(Outcome::Success)),
            json!({"token": "ab", "outcome": "success"})
        );
        assert_eq!(
            result_json(apns, &r(Outcome::Unregistered { timestamp_ms: None })),
            json!({"token": "ab", "outcome": "unregistered", "reason": "Unregistered", "status": 410})
        );
        let failed = Outcome::Failed {
            reason: Arc::from("BadDeviceToken"),
            status: 400,
        };
        assert_eq!(
            result_json(apns, &r(failed)),
            json!({"token": "ab", "outcome": "failed", "reason": "BadDeviceToken", "status": 400})
        );
    }
}
