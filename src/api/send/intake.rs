//! The platform-neutral half of a send: token intake (each token checked by
//! its platform, duplicates folded by how the platform shows a token), and
//! the one path every platform takes from a read [`Request`] to the 202.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::idempotency::{Guard, KeptWithJob};
use crate::api::wait::{Ask, result_json};
use crate::api::{ApiError, AppState};
use crate::job::{Family, JobId, Platform, TokenList};
use crate::message::personal::{self, Personal};
use crate::platform::{Keep, Request, TokenRefused};
use crate::store::{AdmitError, KeepIf, NewJob, Submission};

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
    let mut taker = Taker::new(keep, raw.len(), bytes_each);
    let mut rejected = Rejections::default();
    for token in raw {
        if let Err(refused) = taker.take(token) {
            rejected.refuse(refused, || Cow::Borrowed(token));
        }
    }
    Intake {
        duplicates: taker.duplicates,
        tokens: taker.tokens,
        rejected,
    }
}

/// Takes tokens one at a time: each checked by its platform (kept in its
/// platform's form, or refused), duplicates folded. The tokens it holds can
/// be handed on in parts ([`Taker::take_part`], a streamed job); a token
/// sent again after its part was handed on is still folded.
pub struct Taker<'k> {
    keep: &'k Keep<'k>,
    bytes_each: usize,
    /// The tokens held, not yet handed on.
    tokens: TokenList,
    hasher: RandomState,
    /// Hash of a held token's kept bytes -> its index, checked byte for byte.
    held: HashMap<u64, u32>,
    /// Hashes of the tokens of parts handed on. Their bytes are gone, so a
    /// match is taken on the 64-bit hash alone: at ten million tokens the
    /// odds that a new token is wrongly folded are about one in 10^5 per
    /// stream, and such a token is counted as a duplicate, never lost.
    earlier: HashSet<u64>,
    /// Tokens folded as duplicates so far.
    pub duplicates: usize,
}

impl<'k> Taker<'k> {
    /// A taker sized for about `tokens` tokens of `bytes_each` bytes.
    pub fn new(keep: &'k Keep<'k>, tokens: usize, bytes_each: usize) -> Self {
        Self {
            keep,
            bytes_each,
            tokens: TokenList::with_capacity(tokens, bytes_each),
            hasher: RandomState::new(),
            held: HashMap::with_capacity(tokens),
            earlier: HashSet::new(),
            duplicates: 0,
        }
    }

    /// Takes one raw token: kept (or folded as a duplicate), or refused.
    pub fn take(&mut self, raw: &str) -> Result<(), TokenRefused> {
        self.take_with(raw, None)
    }

    /// Takes one raw token with a target's own fields (`POST /send`): kept
    /// with them as its trailer ([`crate::message::personal`]). Duplicates
    /// are folded by the token alone: a device named twice gets one
    /// message, with the first target's fields.
    pub fn take_personal(&mut self, raw: &str, personal: &Personal) -> Result<(), TokenRefused> {
        self.take_with(raw, Some(personal))
    }

    fn take_with(&mut self, raw: &str, personal: Option<&Personal>) -> Result<(), TokenRefused> {
        let start = self.tokens.buffer().len();
        if let Err(refused) = (self.keep)(raw, self.tokens.buffer()) {
            self.tokens.buffer().truncate(start);
            return Err(refused);
        }
        let hash = self.hasher.hash_one(self.tokens.uncommitted());
        let index = self.tokens.range().end;
        let duplicate = match self.held.entry(hash) {
            // The first may carry a personal trailer (`POST /send`): the
            // same token all the same.
            Entry::Occupied(first) => {
                let (held, new) = (self.tokens.get(*first.get()), self.tokens.uncommitted());
                held.strip_prefix(new)
                    .is_some_and(|rest| rest.first().is_none_or(|&b| b == personal::MARK))
            }
            Entry::Vacant(slot) => {
                slot.insert(index);
                self.earlier.contains(&hash)
            }
        };
        if duplicate {
            self.tokens.buffer().truncate(start);
            self.duplicates += 1;
            return Ok(());
        }
        if let Some(personal) = personal
            && personal.append_to(self.tokens.buffer()).is_err()
        {
            self.tokens.buffer().truncate(start);
            return Err(TokenRefused::from("TargetDataTooLarge"));
        }
        self.tokens.commit();
        Ok(())
    }

    /// Tokens held, not yet handed on.
    pub fn held(&self) -> usize {
        self.tokens.len()
    }

    /// Hands on the tokens held, as the next part of the job (its indices
    /// follow the previous part's).
    pub fn take_part(&mut self) -> TokenList {
        let next = self.tokens.range().end;
        let capacity = self.tokens.len();
        let part = std::mem::replace(
            &mut self.tokens,
            TokenList::with_capacity(capacity, self.bytes_each).with_base(next),
        );
        self.earlier.extend(self.held.drain().map(|(hash, _)| hash));
        part
    }
}

/// Admits a read request through the backend and builds the 202 answer:
/// the one path for every platform and every backend. `family` names
/// refused tokens its way (`token`, or `endpoint` for Web Push).
pub async fn submit(
    state: &AppState,
    family: Family,
    request: Request<'_>,
    ask: &Ask,
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
    admit(state, family, platform, intake, job, ask).await
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

/// Admits a job whose tokens are taken in, as `ask` asks: its answer kept
/// with it under its idempotency key, and waited for.
pub async fn admit(
    state: &AppState,
    family: Family,
    platform: Platform,
    intake: Intake<'_>,
    job: Job,
    ask: &Ask,
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
    ask.check(total, delay.is_some())?;
    let id = JobId::new();
    let mut body = accepted_fields(platform, &id.to_string(), total, duplicates, &rejected);
    if let Some(delay) = delay {
        body["scheduled_in_s"] = json!(delay.as_secs());
    }
    if ask.wait.is_some() {
        body["state"] = json!("running");
    }
    let mut submission = Submission::one(
        id,
        NewJob {
            platform,
            app: job.app,
            fields: job.fields,
            message: job.message,
            tokens,
            expires_at: job.expires_at,
            delay,
            notif_id: job.notif_id,
        },
    );
    if let Some(guard) = &ask.guard {
        submission = submission.with_claim(guard.claim(202, &body, id));
    }
    // Watched before it is admitted, so no outcome comes first.
    let waiter = ask.wait.map(|within| (state.watch.watch(id), within));
    if waiter.is_some() {
        submission = submission.watched();
    }
    state
        .backend
        .submit(submission)
        .await
        .map_err(admit_error)?;
    count_rejected(state, platform, &rejected);
    tracing::info!(job = %id, platform = %platform, tokens = total, rejected = rejected.count(), delay_s = delay.map(|d| d.as_secs()), backend = state.backend.name(), "job accepted");
    let mut status = StatusCode::ACCEPTED;
    if let Some((waiter, within)) = waiter
        && let Some(results) = waiter.wait(within).await
    {
        status = StatusCode::OK;
        body["state"] = json!("done");
        body["results"] = results.iter().map(|r| result_json(family, r)).collect();
        if let Some(guard) = &ask.guard {
            keep_final(state, guard, &body, id).await;
        }
    }
    let mut response = (status, Json(body)).into_response();
    if ask.guard.is_some() {
        response.extensions_mut().insert(KeptWithJob);
    }
    Ok(response)
}

/// Replaces the answer kept with job `id` (its 202) by its final one (a
/// waited-for 200). Not kept, a retry still gets the 202: logged, not
/// refused.
pub async fn keep_final(state: &AppState, guard: &Guard, body: &serde_json::Value, id: JobId) {
    let kept = guard.kept(200, body, Some(id));
    if let Err(e) = state
        .backend
        .keep(&guard.key, &kept, KeepIf::Bound(id))
        .await
    {
        tracing::warn!(error = %e.detail(), job = %id, "the final answer could not be kept under its Idempotency-Key; a retry gets the 202");
    }
}

/// The answer's body for an accepted job (`job`, `accepted`, `duplicates`
/// and the refused tokens), counting the refused ones in the metrics.
pub fn accepted_body(
    state: &AppState,
    platform: Platform,
    job: &str,
    accepted: u64,
    duplicates: usize,
    rejected: &Rejections<'_>,
) -> serde_json::Value {
    count_rejected(state, platform, rejected);
    accepted_fields(platform, job, accepted, duplicates, rejected)
}

/// Counts a request's refused tokens in the metrics (once its job is
/// admitted: a request refused whole, then retried, counts them once).
pub fn count_rejected(state: &AppState, platform: Platform, rejected: &Rejections<'_>) {
    for (reason, n) in rejected.by_reason() {
        state
            .metrics
            .rejected
            .with_label_values(&[platform.as_str(), reason])
            .inc_by(*n);
    }
}

/// [`accepted_body`] without the counting: the answer is built before the
/// job is admitted (it is kept with it under an idempotency key).
pub fn accepted_fields(
    platform: Platform,
    job: &str,
    accepted: u64,
    duplicates: usize,
    rejected: &Rejections<'_>,
) -> serde_json::Value {
    let mut body = json!({ "job": job, "accepted": accepted, "duplicates": duplicates });
    if let (Some(map), serde_json::Value::Object(fields)) = (
        body.as_object_mut(),
        rejected.fields(platform.family().info().token_key),
    ) {
        map.extend(fields);
    }
    body
}

/// Why the backend did not admit a job, as the client sees it.
pub fn admit_error(e: AdmitError) -> ApiError {
    match e {
        // Could never fit, even in an empty queue: not "retry later".
        AdmitError::Full {
            capacity, wanted, ..
        } if wanted > capacity => ApiError::job_too_large(wanted, capacity),
        AdmitError::Full { .. } => ApiError::unavailable("queue_full", e.to_string(), 1),
        // Answered before this by the idempotency layer; only a key taken by
        // another request between its reservation and this admission
        // (a shared store's lapsed reservation) gets here.
        AdmitError::KeyTaken(_) => ApiError::key_in_progress(),
        AdmitError::Store(e) => {
            tracing::warn!(error = %e.detail(), "send refused: the store cannot keep the job");
            ApiError::unavailable(e.code(), e.client_message(), e.retry_after())
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

    #[test]
    fn a_token_is_folded_whether_its_first_target_had_personal_fields_or_not() {
        let keep: Keep<'_> =
            Box::new(|raw, out| crate::apns::token::keep(raw, out).map_err(Into::into));
        let personal = crate::message::personal::Personal {
            badge: Some(1),
            ..Default::default()
        };
        let (a, b) = ("ab".repeat(32), "cd".repeat(32));
        let mut taker = Taker::new(&keep, 4, 64);
        taker.take_personal(&a, &personal).expect("kept");
        taker.take(&a).expect("folded");
        taker.take(&b).expect("kept");
        taker.take_personal(&b, &personal).expect("folded");
        assert_eq!((taker.held(), taker.duplicates), (2, 2));
    }
}
