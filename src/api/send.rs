//! `POST /apns/send` ([`apns`]) and `POST /gcm/send` / `/fcm/send` ([`google`]):
//! read the body (JSON or form), validate every field and token, admit the
//! job into the bounded queue, answer 202. Nothing here waits on an upstream.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::apns::ApnsMessage;
use crate::apns::message::ApnsFields;
use crate::fcm::{GoogleFields, GoogleMessage};
use crate::job::{
    DeviceToken, Job, JobId, JobProgress, Outcome, Platform, TokenError, TokenList,
    check_registration_token,
};
use crate::queue::cluster::{NewJob, StoredFields};
use crate::report::DEFAULT_APP;
use crate::schedule::Held;

/// A request body, read within `server.max_body_bytes`.
pub enum Body {
    /// `application/json`.
    Json(Bytes),
    /// `application/x-www-form-urlencoded` (the GoCM form).
    Form(Bytes),
}

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let is_form = match content_type.as_str() {
            "application/json" => false,
            // curl -d sends this by default; GoCM clients rely on it.
            "application/x-www-form-urlencoded" => true,
            _ => return Err(ApiError::unsupported_media_type()),
        };
        let bytes = super::extract::read_body(req, state.max_body_bytes).await?;
        Ok(if is_form {
            Body::Form(bytes)
        } else {
            Body::Json(bytes)
        })
    }
}

pub use super::rejections::{Rejected, Rejections};

/// The validated tokens of a request.
pub struct Intake<'a> {
    /// Accepted, deduplicated tokens.
    pub tokens: TokenList,
    /// Refused tokens (a bounded list, every one counted).
    pub rejected: Rejections<'a>,
    /// Tokens sent more than once (each delivered once).
    pub duplicates: usize,
}

/// Validates tokens with `decode` (which appends a token's stored bytes to the
/// buffer), dropping duplicates. A tight loop: no allocation per token.
pub fn intake<'a>(
    raw: &'a [Cow<'a, str>],
    bytes_each: usize,
    mut decode: impl FnMut(&str, &mut Vec<u8>) -> Result<(), TokenError>,
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
        if let Err(e) = decode(token, tokens.buffer()) {
            tokens.buffer().truncate(start);
            rejected.push(token, e.as_str());
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
pub struct Submission<'a, M> {
    /// Where it goes.
    pub platform: Platform,
    /// Whose credentials.
    pub app: Arc<str>,
    /// The message, built once.
    pub message: M,
    /// The validated tokens.
    pub intake: Intake<'a>,
    /// Nothing is sent after this.
    pub expires_at: Option<SystemTime>,
    /// Now, or after a delay.
    pub when: When,
}

impl<'a, M> Submission<'a, M> {
    /// The same request carrying another form of its message.
    fn with_message<N>(self, message: N) -> Submission<'a, N> {
        let Submission {
            platform,
            app,
            intake,
            expires_at,
            when,
            ..
        } = self;
        Submission {
            platform,
            app,
            message,
            intake,
            expires_at,
            when,
        }
    }
}

/// Hands a validated request to the configured backend: the shared queue
/// (which stores the request's fields) or this process's queue (which holds
/// the built message).
async fn submit<M: Send + Sync + 'static>(
    state: &AppState,
    submission: Submission<'_, M>,
    stored: Option<StoredFields>,
    enqueue: impl FnOnce(Arc<Job<M>>) + Send + 'static,
) -> Result<Response, ApiError> {
    match stored {
        Some(fields) => accept_shared(state, submission.with_message(fields)).await,
        None => accept(state, submission, enqueue),
    }
}

/// Admits a job and queues it, or hands it to the scheduler; returns the 202 answer.
pub fn accept<M: Send + Sync + 'static>(
    state: &AppState,
    submission: Submission<'_, M>,
    enqueue: impl FnOnce(Arc<Job<M>>) + Send + 'static,
) -> Result<Response, ApiError> {
    let Submission {
        platform,
        app,
        message,
        intake,
        expires_at,
        when,
    } = submission;
    let Intake {
        tokens,
        rejected,
        duplicates,
    } = intake;
    refuse_if_no_valid_token(&tokens, &rejected)?;
    let total = tokens.len() as u64;
    refuse_if_larger_than_queue(state, total)?;
    state.recorder.admission.try_admit(total).map_err(|full| {
        ApiError::unavailable(
            "queue_full",
            format!(
                "the queue holds {} of {} tokens; this request's {} do not fit. Retry later",
                full.pending, full.capacity, full.wanted
            ),
            1,
        )
    })?;
    let id = JobId::new();
    let progress = Arc::new(JobProgress::for_app(id, platform, app.clone(), total));
    // Counted before it is queued, so no outcome can precede its acceptance.
    state.recorder.accept(&progress);
    let job = Arc::new(Job {
        id,
        app,
        message,
        tokens,
        progress,
        expires_at,
    });
    let scheduled = when.delay;
    if let Some(delay) = scheduled {
        job.progress.set_scheduled(true);
        let released = job.clone();
        let cancelled = job.clone();
        let recorder = state.recorder.clone();
        state.scheduler.hold(
            id,
            delay,
            Held {
                release: Box::new(move || {
                    released.progress.set_scheduled(false);
                    enqueue(released);
                }),
                cancel: Box::new(move |outcome: Outcome| {
                    if outcome == Outcome::Cancelled {
                        cancelled.progress.cancel();
                    }
                    cancelled.progress.set_scheduled(false);
                    recorder.finish_unsent(&cancelled, cancelled.all(), &outcome);
                }),
            },
        );
    } else {
        enqueue(job);
    }
    tracing::info!(job = %id, platform = %platform, tokens = total, rejected = rejected.count(), delay_s = scheduled.map(|d| d.as_secs()), "job accepted");
    Ok(accepted_answer(
        state, platform, id, total, &rejected, duplicates, when,
    ))
}

/// The `redis` backend's [`accept`]: the job's chunks are in Redis before
/// the 202 goes out. Redis unreachable is a 503 `queue_unavailable`, never a
/// 202. `queue.capacity` bounds the tokens waiting in the stream, counted in
/// whole chunks (XLEN × chunk size), cluster-wide.
pub async fn accept_shared(
    state: &AppState,
    submission: Submission<'_, StoredFields>,
) -> Result<Response, ApiError> {
    let Some(cluster) = state.recorder.cluster.clone() else {
        return Err(ApiError::internal(anyhow::anyhow!(
            "accept_shared without a shared queue"
        )));
    };
    let Submission {
        platform,
        app,
        message: fields,
        intake,
        expires_at,
        when,
    } = submission;
    let Intake {
        tokens,
        rejected,
        duplicates,
    } = intake;
    refuse_if_no_valid_token(&tokens, &rejected)?;
    let total = tokens.len() as u64;
    refuse_if_larger_than_queue(state, total)?;
    let unavailable = |e: crate::queue::cluster::RedisError| {
        tracing::warn!(error = %e, "send refused: the shared queue is unreachable");
        ApiError::unavailable(
            "queue_unavailable",
            "the shared queue (Redis) cannot be reached; nothing was queued. Retry later",
            1,
        )
    };
    let capacity = state.recorder.admission.capacity();
    let queued = cluster.queued_chunks().await.map_err(unavailable)?
        * crate::queue::cluster::CHUNK_TOKENS as u64;
    if queued.saturating_add(total) > capacity {
        return Err(ApiError::unavailable(
            "queue_full",
            format!(
                "the shared queue holds about {queued} of {capacity} tokens; this request's {total} do not fit. Retry later"
            ),
            1,
        ));
    }
    let rendered: Vec<String> = (0..tokens.len())
        .map(|i| platform.render_token(tokens.get(u32::try_from(i).unwrap_or(u32::MAX))))
        .collect();
    let id = JobId::new();
    cluster
        .accept(NewJob {
            id,
            platform,
            app: app.clone(),
            fields,
            tokens: rendered,
            expires_at,
            delay: when.delay,
        })
        .await
        .map_err(unavailable)?;
    state
        .recorder
        .metrics
        .accepted
        .with_label_values(&[platform.as_str(), &app])
        .inc_by(total);
    tracing::info!(job = %id, platform = %platform, tokens = total, rejected = rejected.count(), delay_s = when.delay.map(|d| d.as_secs()), "job accepted into the shared queue");
    Ok(accepted_answer(
        state, platform, id, total, &rejected, duplicates, when,
    ))
}

/// A job that could not fit even in an empty queue is 413, not "retry later".
fn refuse_if_larger_than_queue(state: &AppState, total: u64) -> Result<(), ApiError> {
    let capacity = state.recorder.admission.capacity();
    if total > capacity {
        Err(ApiError::job_too_large(total, capacity))
    } else {
        Ok(())
    }
}

fn refuse_if_no_valid_token(tokens: &TokenList, rejected: &Rejections<'_>) -> Result<(), ApiError> {
    if tokens.is_empty() {
        Err(ApiError::bad_request(
            "no_valid_tokens",
            "none of the tokens is valid; nothing was queued",
        )
        .with(rejected.fields()))
    } else {
        Ok(())
    }
}

/// Counts the refused tokens and builds the 202 answer, for either backend.
fn accepted_answer(
    state: &AppState,
    platform: Platform,
    id: JobId,
    total: u64,
    rejected: &Rejections<'_>,
    duplicates: usize,
    when: When,
) -> Response {
    for (reason, n) in rejected.by_reason() {
        state
            .recorder
            .metrics
            .rejected
            .with_label_values(&[platform.as_str(), reason])
            .inc_by(*n);
    }
    let mut body = json!({ "job": id.to_string(), "accepted": total, "duplicates": duplicates });
    if let (Some(map), Value::Object(fields)) = (body.as_object_mut(), rejected.fields()) {
        map.extend(fields);
    }
    if let Some(delay) = when.delay {
        body["scheduled_in_s"] = json!(delay.as_secs());
    }
    (StatusCode::ACCEPTED, Json(body)).into_response()
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

/// Fields shared by every form body: the repeated `tokens`, the `payload`
/// JSON string, and everything else for the platform to interpret.
pub struct FormBody<'a> {
    /// `tokens` (also `tokens[]`, `token`).
    pub tokens: Vec<Cow<'a, str>>,
    /// `payload`, checked to be JSON.
    pub payload: Option<Box<RawValue>>,
    /// Other fields, in order.
    pub fields: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

/// Splits a form body into tokens, payload and other fields.
pub fn parse_form(bytes: &[u8]) -> Result<FormBody<'_>, ApiError> {
    let mut body = FormBody {
        tokens: Vec::new(),
        payload: None,
        fields: Vec::new(),
    };
    for (key, value) in form_urlencoded::parse(bytes) {
        match &*key {
            "tokens" | "tokens[]" | "token" => body.tokens.push(value),
            "payload" => {
                let raw = RawValue::from_string(value.into_owned()).map_err(|e| {
                    ApiError::bad_request("bad_payload", format!("payload is not JSON: {e}"))
                })?;
                body.payload = Some(raw);
            }
            _ => body.fields.push((key, value)),
        }
    }
    Ok(body)
}

/// Parses an integer form field, naming it on failure.
pub fn form_int(field: &str, value: &str) -> Result<i64, ApiError> {
    value.trim().parse().map_err(|_| {
        ApiError::bad_request(
            "bad_field",
            format!("{field} must be an integer, got {value:?}"),
        )
    })
}

/// Maps serde's message for a bad JSON body to our error.
pub fn bad_json(e: serde_json::Error) -> ApiError {
    ApiError::bad_request(
        "bad_json",
        format!("request body is not valid JSON for this route: {e}"),
    )
}

// ===== APNs =====

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApnsJson<'a> {
    #[serde(borrow, default)]
    tokens: Vec<Cow<'a, str>>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(borrow, default)]
    topic: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    push_type: Option<Cow<'a, str>>,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    expiration: Option<i64>,
    #[serde(borrow, default)]
    collapse_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    app: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    send_at: Option<Cow<'a, str>>,
    #[serde(default)]
    delay_seconds: Option<i64>,
}

/// `POST /apns/send`.
pub async fn apns(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let timer = state.recorder.metrics.api_latency.start_timer();
    let Some(service) = state.apns.as_ref() else {
        return Err(ApiError::not_configured("APNs", "[apns]"));
    };
    state.refuse_if_shutting_down()?;
    let form;
    let json;
    let mut app_name: Option<&str> = None;
    let (tokens, payload, fields, when) = match &body {
        Body::Json(bytes) => {
            json = serde_json::from_slice::<ApnsJson<'_>>(bytes).map_err(bad_json)?;
            app_name = json.app.as_deref();
            let fields = ApnsFields {
                payload: json.payload.map(|p| p.get().as_bytes()).unwrap_or_default(),
                topic: json.topic.as_deref(),
                push_type: json.push_type.as_deref(),
                priority: json.priority,
                expiration: json.expiration,
                collapse_id: json.collapse_id.as_deref(),
            };
            let when = parse_when(json.send_at.as_deref(), json.delay_seconds)?;
            (&json.tokens, json.payload.is_some(), fields, when)
        }
        Body::Form(bytes) => {
            form = parse_form(bytes)?;
            let mut fields = ApnsFields {
                payload: form
                    .payload
                    .as_ref()
                    .map(|p| p.get().as_bytes())
                    .unwrap_or_default(),
                ..ApnsFields::default()
            };
            let (mut send_at, mut delay_seconds) = (None, None);
            for (key, value) in &form.fields {
                match &**key {
                    "topic" => fields.topic = Some(value),
                    "push_type" => fields.push_type = Some(value),
                    "priority" => fields.priority = Some(form_int("priority", value)?),
                    "expiration" => fields.expiration = Some(form_int("expiration", value)?),
                    "collapse_id" => fields.collapse_id = Some(value),
                    "send_at" => send_at = Some(&**value),
                    "delay_seconds" => delay_seconds = Some(form_int("delay_seconds", value)?),
                    "app" => app_name = Some(value),
                    other => {
                        return Err(ApiError::bad_request(
                            "unknown_field",
                            format!("unknown form field {other:?}"),
                        ));
                    }
                }
            }
            (
                &form.tokens,
                form.payload.is_some(),
                fields,
                parse_when(send_at, delay_seconds)?,
            )
        }
    };
    let (service, app) = pick_app(service, &state.apns_apps, app_name)?;
    if tokens.is_empty() {
        return Err(ApiError::bad_request(
            "no_tokens",
            "the request has no tokens: send \"tokens\": [\"<hex>\", ...]",
        ));
    }
    if !payload {
        return Err(ApiError::bad_request(
            "no_payload",
            "the request has no payload: send \"payload\": {\"aps\": {...}}",
        ));
    }
    let expires_at = fields
        .expiration
        .filter(|&e| e > 0)
        .map(|e| UNIX_EPOCH + Duration::from_secs(e.unsigned_abs()));
    let stored = state
        .recorder
        .cluster
        .as_ref()
        .map(|_| StoredFields::apns(&fields));
    let message = ApnsMessage::new(fields, service.default_topic.as_deref())?;
    let intake = intake(tokens, 32, |hex, buf| {
        DeviceToken::decode_into(hex, buf).map(drop)
    });
    let service = service.clone();
    let submission = Submission {
        platform: Platform::Apns,
        app,
        message,
        intake,
        expires_at,
        when,
    };
    let answer = submit(&state, submission, stored, move |job| service.enqueue(job)).await;
    timer.observe_duration();
    answer
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
        let result = intake(&raw, 32, |hex, buf| {
            DeviceToken::decode_into(hex, buf).map(drop)
        });
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

    #[test]
    fn form_keeps_repeated_tokens_and_checks_payload_json() {
        let form =
            parse_form(b"tokens=a&tokens=b&payload=%7B%22x%22%3A1%7D&topic=t").expect("form");
        assert_eq!(form.tokens, vec!["a", "b"]);
        assert_eq!(form.payload.as_ref().map(|p| p.get()), Some("{\"x\":1}"));
        assert_eq!(form.fields.len(), 1);
        assert!(parse_form(b"payload=%7Bnot").is_err());
    }
}

// ===== Google (FCM v1 or legacy GCM) =====

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GoogleJson<'a> {
    #[serde(borrow, default)]
    tokens: Vec<Cow<'a, str>>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(borrow, default)]
    notification: Option<&'a RawValue>,
    #[serde(borrow, default)]
    collapse_key: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    priority: Option<Cow<'a, str>>,
    #[serde(default)]
    time_to_live: Option<i64>,
    #[serde(borrow, default)]
    app: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    send_at: Option<Cow<'a, str>>,
    #[serde(default)]
    delay_seconds: Option<i64>,
}

/// `POST /gcm/send` and `POST /fcm/send`: the GoCM form or JSON.
pub async fn google(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let timer = state.recorder.metrics.api_latency.start_timer();
    let Some(service) = state.google.as_ref() else {
        return Err(ApiError::not_configured(
            "Google (FCM/GCM)",
            "[fcm] or [gcm]",
        ));
    };
    state.refuse_if_shutting_down()?;
    let form;
    let json;
    let notification_form;
    let mut app_name: Option<&str> = None;
    let (tokens, fields, when) = match &body {
        Body::Json(bytes) => {
            json = serde_json::from_slice::<GoogleJson<'_>>(bytes).map_err(bad_json)?;
            app_name = json.app.as_deref();
            let fields = GoogleFields {
                payload: json.payload.map(|p| p.get().as_bytes()),
                notification: json.notification.map(|p| p.get().as_bytes()),
                collapse_key: json.collapse_key.as_deref(),
                priority: json.priority.as_deref(),
                time_to_live: json.time_to_live,
            };
            let when = parse_when(json.send_at.as_deref(), json.delay_seconds)?;
            (&json.tokens, fields, when)
        }
        Body::Form(bytes) => {
            form = parse_form(bytes)?;
            let mut fields = GoogleFields {
                payload: form.payload.as_ref().map(|p| p.get().as_bytes()),
                ..GoogleFields::default()
            };
            let mut notification = None;
            let (mut send_at, mut delay_seconds) = (None, None);
            for (key, value) in &form.fields {
                match &**key {
                    "notification" => notification = Some(value),
                    "collapse_key" => fields.collapse_key = Some(value),
                    "priority" => fields.priority = Some(value),
                    "time_to_live" => fields.time_to_live = Some(form_int("time_to_live", value)?),
                    "send_at" => send_at = Some(&**value),
                    "delay_seconds" => delay_seconds = Some(form_int("delay_seconds", value)?),
                    "app" => app_name = Some(value),
                    other => {
                        return Err(ApiError::bad_request(
                            "unknown_field",
                            format!("unknown form field {other:?}"),
                        ));
                    }
                }
            }
            notification_form = notification
                .map(|n| {
                    RawValue::from_string(n.to_string()).map_err(|e| {
                        ApiError::bad_request("bad_field", format!("notification is not JSON: {e}"))
                    })
                })
                .transpose()?;
            fields.notification = notification_form.as_ref().map(|n| n.get().as_bytes());
            (&form.tokens, fields, parse_when(send_at, delay_seconds)?)
        }
    };
    let (service, app) = pick_app(service, &state.google_apps, app_name)?;
    if tokens.is_empty() {
        return Err(ApiError::bad_request(
            "no_tokens",
            "the request has no tokens: send tokens=<t1>&tokens=<t2> or \"tokens\": [...]",
        ));
    }
    let stored = state
        .recorder
        .cluster
        .as_ref()
        .map(|_| StoredFields::google(&fields));
    let message = GoogleMessage::new(fields)?;
    let expires_at = message.expires_at(SystemTime::now());
    let intake = intake(tokens, 160, |token, buf| {
        check_registration_token(token)?;
        buf.extend_from_slice(token.as_bytes());
        Ok(())
    });
    let platform = service.platform();
    let service = service.clone();
    let submission = Submission {
        platform,
        app,
        message,
        intake,
        expires_at,
        when,
    };
    let answer = submit(&state, submission, stored, move |job| service.enqueue(job)).await;
    timer.observe_duration();
    answer
}

/// Entry points for `fuzz/` (`cargo fuzz`): the body parsers and what they
/// feed, without a server. Each must return (never panic) on any input.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// An APNs JSON body: parse, build the message, take in the tokens.
    pub fn apns_json(bytes: &[u8]) {
        let Ok(json) = serde_json::from_slice::<ApnsJson<'_>>(bytes) else {
            return;
        };
        let fields = ApnsFields {
            payload: json.payload.map(|p| p.get().as_bytes()).unwrap_or_default(),
            topic: json.topic.as_deref(),
            push_type: json.push_type.as_deref(),
            priority: json.priority,
            expiration: json.expiration,
            collapse_id: json.collapse_id.as_deref(),
        };
        let _ = parse_when(json.send_at.as_deref(), json.delay_seconds);
        let _ = ApnsMessage::new(fields, Some("com.example"));
        let _ = intake(&json.tokens, 32, |hex, buf| {
            DeviceToken::decode_into(hex, buf).map(drop)
        });
    }

    /// A Google JSON body: parse, build the message, take in the tokens.
    pub fn google_json(bytes: &[u8]) {
        let Ok(json) = serde_json::from_slice::<GoogleJson<'_>>(bytes) else {
            return;
        };
        let fields = GoogleFields {
            payload: json.payload.map(|p| p.get().as_bytes()),
            notification: json.notification.map(|p| p.get().as_bytes()),
            collapse_key: json.collapse_key.as_deref(),
            priority: json.priority.as_deref(),
            time_to_live: json.time_to_live,
        };
        let _ = GoogleMessage::new(fields);
        let _ = intake(&json.tokens, 160, |token, buf| {
            check_registration_token(token)?;
            buf.extend_from_slice(token.as_bytes());
            Ok(())
        });
    }

    /// A form body (GoCM): split it and check the integer fields.
    pub fn form(bytes: &[u8]) {
        if let Ok(form) = parse_form(bytes) {
            for (key, value) in &form.fields {
                let _ = form_int(key, value);
            }
            let _ = intake(&form.tokens, 32, |hex, buf| {
                DeviceToken::decode_into(hex, buf).map(drop)
            });
        }
    }
}
