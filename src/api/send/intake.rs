//! The platform-neutral half of a send: token intake (validate, fold
//! duplicates), `send_at`, the `app` field, and the one path every platform
//! takes to admit a job through the backend and answer 202.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::{ApiError, AppState};
use crate::floor::DEFAULT_APP;
use crate::job::{Platform, TokenList};
use crate::store::{AdmitError, NewJob};

pub use crate::api::rejections::{Rejected, Rejections};

/// The validated tokens of a request.
pub struct Intake<'a> {
    /// Accepted, deduplicated tokens.
    pub tokens: TokenList,
    /// Refused tokens (a bounded list, every one counted).
    pub rejected: Rejections<'a>,
    /// Tokens sent more than once (each delivered once).
    pub duplicates: usize,
}

/// Validates tokens with `keep` (which appends a token's kept form to the
/// buffer, or names the upstream's reason for refusing it), dropping
/// duplicates. A tight loop: no allocation per token.
pub fn intake<'a>(
    raw: &'a [Cow<'a, str>],
    bytes_each: usize,
    mut keep: impl FnMut(&str, &mut Vec<u8>) -> Result<(), &'static str>,
) -> Intake<'a> {
    let mut tokens = TokenList::with_capacity(raw.len(), bytes_each);
    let mut rejected = Rejections::default();
    let mut duplicates = 0;
    // Hash of token bytes -> index of the first token with that hash; an equal
    // hash with different bytes (vanishingly rare) just skips the check.
    let hasher = RandomState::new();
    let mut seen: HashMap<u64, u32> = HashMap::with_capacity(raw.len());
    for token in raw {
        let start = tokens.buffer().len();
        if let Err(reason) = keep(token, tokens.buffer()) {
            tokens.buffer().truncate(start);
            rejected.push(token, reason);
            continue;
        }
        let hash = hasher.hash_one(tokens.uncommitted());
        let index = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        match seen.entry(hash) {
            Entry::Occupied(first) if tokens.get(*first.get()) == tokens.uncommitted() => {
                tokens.buffer().truncate(start);
                duplicates += 1;
                continue;
            }
            Entry::Occupied(_) => {}
            Entry::Vacant(slot) => {
                slot.insert(index);
            }
        }
        tokens.commit();
    }
    Intake {
        tokens,
        rejected,
        duplicates,
    }
}

/// When a job should go out: now, or after a delay (`send_at` / `delay_seconds`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct When {
    /// Hold the job this long first.
    pub delay: Option<Duration>,
}

/// Longest a send may be delayed.
pub const MAX_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);

/// Reads `send_at` (RFC 3339, any offset) or `delay_seconds`; a time in the
/// past means now.
pub fn parse_when(send_at: Option<&str>, delay_seconds: Option<i64>) -> Result<When, ApiError> {
    let bad = |m: String| ApiError::bad_request("bad_field", m);
    let delay = match (send_at.filter(|s| !s.is_empty()), delay_seconds) {
        (Some(_), Some(_)) => {
            return Err(bad("send_at and delay_seconds cannot both be given".into()));
        }
        (None, None) => return Ok(When::default()),
        (None, Some(secs)) => {
            let secs = u64::try_from(secs)
                .map_err(|_| bad(format!("delay_seconds must be 0 or more, got {secs}")))?;
            Duration::from_secs(secs)
        }
        (Some(at), None) => {
            let at =
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| {
                        bad(format!(
                            "send_at must be an RFC 3339 time like 2026-11-23T18:00:00Z: {e}"
                        ))
                    })?;
            let at = SystemTime::from(at);
            at.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        }
    };
    if delay > MAX_DELAY {
        return Err(bad(format!(
            "a send may be delayed by at most {} days",
            MAX_DELAY.as_secs() / 86_400
        )));
    }
    Ok(When {
        delay: (!delay.is_zero()).then_some(delay),
    })
}

/// A validated send request, ready to be admitted.
pub struct Submission<'a> {
    /// Where it goes.
    pub platform: Platform,
    /// Whose credentials.
    pub app: Arc<str>,
    /// The message in its platform's stored form.
    pub fields: Vec<u8>,
    /// The validated tokens.
    pub intake: Intake<'a>,
    /// Nothing is sent after this.
    pub expires_at: Option<SystemTime>,
    /// Now, or after a delay.
    pub when: When,
    /// The sender's correlation id (gorush `notif_id`).
    pub notif_id: Option<Arc<str>>,
}

/// Admits a validated request through the backend and builds the 202
/// answer: the one path for every platform and every backend.
pub async fn submit(state: &AppState, submission: Submission<'_>) -> Result<Response, ApiError> {
    let Submission {
        platform,
        app,
        fields,
        intake,
        expires_at,
        when,
        notif_id,
    } = submission;
    let Intake {
        tokens,
        rejected,
        duplicates,
    } = intake;
    if tokens.is_empty() {
        return Err(ApiError::bad_request(
            "no_valid_tokens",
            "none of the tokens is valid; nothing was queued",
        )
        .with(rejected.fields()));
    }
    let total = tokens.len() as u64;
    let id = state
        .backend
        .admit(NewJob {
            platform,
            app,
            fields,
            tokens,
            expires_at,
            delay: when.delay,
            notif_id,
        })
        .await
        .map_err(|e| match e {
            // Could never fit, even in an empty queue: not "retry later".
            AdmitError::Full {
                capacity, wanted, ..
            } if wanted > capacity => ApiError::job_too_large(wanted, capacity),
            AdmitError::Full { .. } => ApiError::unavailable("queue_full", e.to_string(), 1),
            AdmitError::Store(e) => {
                tracing::warn!(error = %e.detail(), "send refused: the store cannot keep the job");
                ApiError::unavailable(
                    e.code(),
                    "the queue backend cannot keep this job now; nothing was queued. Retry later",
                    e.retry_after(),
                )
            }
        })?;
    tracing::info!(job = %id, platform = %platform, tokens = total, rejected = rejected.count(), delay_s = when.delay.map(|d| d.as_secs()), backend = state.backend.name(), "job accepted");
    for (reason, n) in rejected.by_reason() {
        state
            .metrics
            .rejected
            .with_label_values(&[platform.as_str(), reason])
            .inc_by(*n);
    }
    let mut body = json!({ "job": id.to_string(), "accepted": total, "duplicates": duplicates });
    if let (Some(map), serde_json::Value::Object(fields)) =
        (body.as_object_mut(), rejected.fields())
    {
        map.extend(fields);
    }
    if let Some(delay) = when.delay {
        body["scheduled_in_s"] = json!(delay.as_secs());
    }
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Picks the service for the `app` field: absent, empty or `default` is the
/// top-level section; an unknown name is a 400 listing the known ones.
pub fn pick_app<'a, S>(
    default: &'a S,
    named: &'a BTreeMap<String, S>,
    app: Option<&str>,
) -> Result<(&'a S, Arc<str>), ApiError> {
    match app {
        None | Some("") | Some(DEFAULT_APP) => Ok((default, Arc::from(DEFAULT_APP))),
        Some(name) => named
            .get_key_value(name)
            .map(|(k, s)| (s, Arc::from(k.as_str())))
            .ok_or_else(|| {
                let known: Vec<&str> = std::iter::once(DEFAULT_APP)
                    .chain(named.keys().map(String::as_str))
                    .collect();
                ApiError::bad_request(
                    "unknown_app",
                    format!("unknown app {name:?}; known apps: {known:?}"),
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intake_rejects_bad_tokens_and_folds_duplicates_across_case() {
        let good = "ab".repeat(32);
        let upper = good.to_uppercase();
        let raw: Vec<Cow<'_, str>> = vec![
            good.as_str().into(),
            "zz".into(),
            upper.as_str().into(),
            "cd".repeat(32).into(),
        ];
        let result = intake(&raw, 64, crate::apns::token::keep);
        assert_eq!(result.tokens.len(), 2);
        assert_eq!(result.duplicates, 1);
        assert_eq!(result.rejected.count(), 1);
        assert_eq!(
            (
                result.rejected.listed()[0].token,
                result.rejected.listed()[0].reason
            ),
            ("zz", "BadDeviceToken")
        );
    }
}
