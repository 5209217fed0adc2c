//! `POST /webpush/send`: the message checked as a whole (bad fields 400, a
//! payload over one record 413), then each subscription (see
//! [`crate::webpush::message`]): refused ones are listed in `rejected` with
//! the endpoint and a reason and never queued; the same endpoint twice is
//! counted in `duplicates` and sent once.

use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::body::{Body, bad_json};
use super::intake::{Intake, Rejections, Submission, parse_when, pick_app, submit};
use crate::api::{ApiError, AppState};
use crate::job::{Platform, TokenList};
use crate::webpush::message::{self, MessageError, SendRequest};

/// The gateway's own deadline is never shorter than this, so a message with
/// `ttl: 0` ("now or never" at the push service) still gets its tries.
const MIN_QUEUE_LIFE: Duration = Duration::from_secs(60);

/// `POST /webpush/send`.
pub async fn webpush(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let timer = state.metrics.api_latency.start_timer();
    let Some(default) = &state.webpush else {
        return Err(ApiError::not_configured("Web Push", "[webpush]"));
    };
    state.refuse_if_shutting_down()?;
    let Body::Json(bytes) = body else {
        return Err(ApiError::unsupported_media_type());
    };
    let req: SendRequest<'_> = serde_json::from_slice(&bytes).map_err(bad_json)?;
    let (service, app) = pick_app(default, &state.webpush_apps, req.app.as_deref())?;
    let msg = message::message(&req).map_err(|e| match e {
        MessageError::TooLarge { .. } => ApiError::too_large(e.to_string()),
        other => ApiError::bad_request(other.code(), other.to_string()),
    })?;
    let when = parse_when(req.send_at.as_deref(), req.delay_seconds)?;
    let checked = message::check_subscriptions(&req.subscriptions, service.policy());
    if checked.stored.is_empty() {
        return Err(ApiError::bad_request(
            "no_valid_tokens",
            "none of the subscriptions is valid; nothing was queued",
        )
        .with(json!({ "rejected": checked.rejected })));
    }
    let mut tokens = TokenList::with_capacity(checked.stored.len(), 200);
    for stored in &checked.stored {
        tokens.push(stored);
    }
    let mut rejected = Rejections::default();
    for r in &checked.rejected {
        rejected.push(&r.endpoint, r.reason);
    }
    let life = Duration::from_secs(u64::from(msg.ttl)).max(MIN_QUEUE_LIFE)
        + when.delay.unwrap_or_default();
    let submission = Submission {
        platform: Platform::WebPush,
        app,
        fields: message::encode_fields(&msg),
        intake: Intake {
            tokens,
            rejected,
            duplicates: checked.duplicates,
        },
        expires_at: Some(SystemTime::now() + life),
        when,
        notif_id: None,
    };
    let answer = submit(&state, submission).await?;
    timer.observe_duration();
    Ok(endpoint_named(answer).await)
}

/// The shared 202 names refused entries `token`; Web Push names them `endpoint`.
async fn endpoint_named(answer: Response) -> Response {
    let (parts, body) = answer.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let mut value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if let Some(list) = value.get_mut("rejected").and_then(Value::as_array_mut) {
        for entry in list {
            crate::api::webpush::rename(entry, "token", "endpoint");
        }
    }
    let mut response = (parts.status, axum::Json(value)).into_response();
    *response.headers_mut() = parts.headers;
    response
}
