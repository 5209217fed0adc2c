//! `POST /webpush/send` and the `/webpush/report*` routes.
//!
//! The send body is checked up front (see [`crate::webpush::message`]): the
//! message as a whole (bad fields 400, payload over one record 413), then each
//! subscription, refused ones listed in `rejected` with a reason and never
//! queued, the same endpoint twice counted in `duplicates` and sent once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Query, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::report::{AppQuery, List, app_name, entries, report_of, totals};
use super::send::{Body, Intake, Rejected, Submission, accept, parse_when, pick_app};
use super::{ApiError, AppState, ok, require};
use crate::job::{Family, Platform, TokenList};
use crate::report::FamilyReport;
use crate::webpush::WebPushService;
use crate::webpush::message::{self, SendRequest};

/// The gateway's own queue deadline is never shorter than this, so a message
/// with `ttl: 0` ("now or never" at the push service) still gets its tries.
const MIN_QUEUE_LIFE: Duration = Duration::from_secs(60);

/// `POST /webpush/send`.
pub async fn send(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let timer = state.recorder.metrics.api_latency.start_timer();
    state.refuse_if_shutting_down()?;
    let Some(default) = &state.webpush else {
        return Err(ApiError::not_configured("Web Push", "[webpush]"));
    };
    let Body::Json(bytes) = body else {
        return Err(ApiError::unsupported_media_type());
    };
    let req: SendRequest<'_> = serde_json::from_slice(&bytes).map_err(super::send::bad_json)?;
    let (service, app): (&WebPushService, Arc<str>) =
        pick_app(default, &state.webpush_apps, req.app.as_deref())?;
    let msg = message::message(&req).map_err(|e| match e {
        message::MessageError::TooLarge { .. } => ApiError::too_large(e.to_string()),
        other => ApiError::bad_request(other.code(), other.to_string()),
    })?;
    let when = parse_when(req.send_at.as_deref(), req.delay_seconds)?;
    let checked = message::check_subscriptions(&req.subscriptions, service.policy());
    let mut tokens = TokenList::with_capacity(checked.stored.len(), 200);
    for stored in &checked.stored {
        tokens.push(stored);
    }
    if checked.stored.is_empty() {
        return Err(ApiError::bad_request(
            "no_valid_tokens",
            "none of the subscriptions is valid; nothing was queued",
        )
        .with(json!({ "rejected": checked.rejected })));
    }
    let rejected: Vec<Rejected<'_>> = checked
        .rejected
        .iter()
        .map(|r| Rejected {
            token: &r.endpoint,
            reason: r.reason,
        })
        .collect();
    let life = Duration::from_secs(u64::from(msg.ttl)).max(MIN_QUEUE_LIFE)
        + when.delay.unwrap_or_default();
    let service = service.clone();
    let submission = Submission {
        platform: Platform::WebPush,
        app,
        message: msg,
        intake: Intake {
            tokens,
            rejected,
            duplicates: checked.duplicates,
        },
        expires_at: Some(SystemTime::now() + life),
        when,
    };
    let answer = accept(&state, submission, move |job| service.enqueue(job))?;
    timer.observe_duration();
    Ok(rename_rejected(answer).await)
}

/// The shared answer names refused entries `token`; Web Push names them `endpoint`.
async fn rename_rejected(answer: Response) -> Response {
    let (parts, body) = answer.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let mut value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if let Some(list) = value.get_mut("rejected").and_then(Value::as_array_mut) {
        for entry in list {
            rename(entry, "token", "endpoint");
        }
    }
    let mut response = (parts.status, axum::Json(value)).into_response();
    *response.headers_mut() = parts.headers;
    response
}

fn rename(entry: &mut Value, from: &str, to: &str) {
    if let Some(obj) = entry.as_object_mut()
        && let Some(v) = obj.remove(from)
    {
        obj.insert(to.to_owned(), v);
    }
}

fn webpush_report<'a>(state: &'a AppState, q: &AppQuery) -> Result<&'a FamilyReport, ApiError> {
    require(state.webpush.is_some(), "Web Push", "[webpush]")?;
    report_of(state, Family::WebPush, q)
}

/// `GET /webpush/report`: the same totals as `/apns/report`.
pub async fn totals_route(
    State(state): State<AppState>,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    let report = webpush_report(&state, &q)?;
    let c = totals(&state, Family::WebPush, &q, report).await?;
    Ok(ok(json!({
        "attempts": c.attempts,
        "successes": c.successes,
        "failures": c.failures,
        "pending": c.pending,
        "retries": c.retries,
        "unregistered": c.unregistered,
        "expired": c.expired,
        "cancelled": c.cancelled,
        "accepted": c.accepted,
        "unattempted": c.unattempted,
        "possible_duplicates": c.possible_duplicates,
        "app": app_name(&q),
        "apps": state.recorder.reports.app_names(Family::WebPush),
        "lists": {
            "unregistered": { "size": report.unregistered.len(), "dropped": report.unregistered.dropped() },
            "failures": { "size": report.failures.len(), "dropped": report.failures.dropped() },
        },
    })))
}

/// `GET|DELETE /webpush/report/unregistered`: `{"subscriptions":[{"endpoint","timestamp"}]}`.
pub async fn unregistered(
    State(state): State<AppState>,
    method: Method,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    webpush_report(&state, &q)?;
    let mut subs = entries(&state, &method, Family::WebPush, &q, List::Unregistered).await?;
    subs.iter_mut().for_each(|e| rename(e, "token", "endpoint"));
    Ok(ok(json!({ "subscriptions": subs })))
}

/// `GET|DELETE /webpush/report/failures`: `{"failures":[{"endpoint","reason","status","at"}]}`.
pub async fn failures(
    State(state): State<AppState>,
    method: Method,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    webpush_report(&state, &q)?;
    let mut list = entries(&state, &method, Family::WebPush, &q, List::Failures).await?;
    list.iter_mut().for_each(|e| rename(e, "token", "endpoint"));
    Ok(ok(json!({ "failures": list })))
}
