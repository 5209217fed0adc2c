//! The platform-neutral half of a send: token intake (each token checked by
//! its platform, duplicates folded by how the platform shows a token), and
//! the one path every platform takes from a read [`Request`] to the 202.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, RandomState};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::{ApiError, AppState};
use crate::job::{Family, Platform, TokenList};
use crate::platform::{Keep, Request};
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

/// Checks tokens with `keep` (which appends a token's kept form to the
/// buffer, or refuses it), dropping duplicates: two tokens are the same when
/// they are kept alike. A tight loop: no allocation per accepted token.
pub fn intake<'a>(raw: &'a [Cow<'a, str>], bytes_each: usize, keep: &Keep<'_>) -> Intake<'a> {
    let mut tokens = TokenList::with_capacity(raw.len(), bytes_each);
    let mut rejected = Rejections::default();
    let mut duplicates = 0;
    // Hash of token bytes -> index of the first token with that hash; an equal
    // hash with different bytes (vanishingly rare) just skips the check.
    let hasher = RandomState::new();
    let mut seen: HashMap<u64, u32> = HashMap::with_capacity(raw.len());
    for token in raw {
        let start = tokens.buffer().len();
        if let Err(refused) = keep(token, tokens.buffer()) {
            tokens.buffer().truncate(start);
            match refused.shown {
                Some(shown) => rejected.push(Cow::Owned(shown), refused.reason),
                None => rejected.push(Cow::Borrowed(token), refused.reason),
            }
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

/// Admits a read request through the backend and builds the 202 answer:
/// the one path for every platform and every backend. `family` names
/// refused tokens its way (`token`, or `endpoint` for Web Push).
pub async fn submit(
    state: &AppState,
    family: Family,
    request: Request<'_>,
) -> Result<Response, ApiError> {
    let Request {
        platform,
        app,
        fields,
        message,
        expires_at,
        when,
        notif_id,
        tokens,
        keep,
        bytes_each,
    } = request;
    let intake = intake(&tokens, bytes_each, &keep);
    let job = Job {
        app,
        fields,
        message,
        expires_at,
        delay: when.delay,
        notif_id,
    };
    admit(state, family, platform, intake, job).await
}

/// What a job carries besides its tokens.
pub struct Job {
    /// Whose credentials.
    pub app: std::sync::Arc<str>,
    /// The message in its platform's stored form.
    pub fields: Vec<u8>,
    /// The message as its platform built it.
    pub message: Option<crate::platform::Built>,
    /// Nothing is sent after this.
    pub expires_at: Option<std::time::SystemTime>,
    /// Hold the job this long first.
    pub delay: Option<std::time::Duration>,
    /// The sender's correlation id (gorush `notif_id`).
    pub notif_id: Option<std::sync::Arc<str>>,
}

/// Admits a job whose tokens are taken in.
pub async fn admit(
    state: &AppState,
    family: Family,
    platform: Platform,
    intake: Intake<'_>,
    job: Job,
) -> Result<Response, ApiError> {
    let Intake {
        tokens,
        rejected,
        duplicates,
    } = intake;
    let key = family.info().token_key;
    if tokens.is_empty() {
        return Err(ApiError::bad_request(
            "no_valid_tokens",
            "none of the tokens is valid; nothing was queued",
        )
        .with(rejected.fields(key)));
    }
    let total = tokens.len() as u64;
    let delay = job.delay;
    let id = state
        .backend
        .admit(NewJob {
            platform,
            app: job.app,
            fields: job.fields,
            message: job.message,
            tokens,
            expires_at: job.expires_at,
            delay,
            notif_id: job.notif_id,
        })
        .await
        .map_err(admit_error)?;
    tracing::info!(job = %id, platform = %platform, tokens = total, rejected = rejected.count(), delay_s = delay.map(|d| d.as_secs()), backend = state.backend.name(), "job accepted");
    for (reason, n) in rejected.by_reason() {
        state
            .metrics
            .rejected
            .with_label_values(&[platform.as_str(), reason])
            .inc_by(*n);
    }
    let mut body = json!({ "job": id.to_string(), "accepted": total, "duplicates": duplicates });
    if let (Some(map), serde_json::Value::Object(fields)) =
        (body.as_object_mut(), rejected.fields(key))
    {
        map.extend(fields);
    }
    if let Some(delay) = delay {
        body["scheduled_in_s"] = json!(delay.as_secs());
    }
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Why the backend did not admit a job, as the client sees it.
pub fn admit_error(e: AdmitError) -> ApiError {
    match e {
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
        let keep: Keep<'_> =
            Box::new(|raw, out| crate::apns::token::keep(raw, out).map_err(Into::into));
        let result = intake(&raw, 64, &keep);
        assert_eq!(result.tokens.len(), 2);
        assert_eq!(result.duplicates, 1);
        assert_eq!(result.rejected.count(), 1);
        assert_eq!(
            (
                &*result.rejected.listed()[0].token,
                result.rejected.listed()[0].reason
            ),
            ("zz", "BadDeviceToken")
        );
    }
}
