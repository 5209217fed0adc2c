//! `POST /apns/send`: the APNs fields of a JSON or form body.

use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::body::{Body, bad_json, form_int, parse_form};
use super::intake::{Submission, intake, parse_when, pick_app, submit};
use crate::api::{ApiError, AppState};
use crate::apns::ApnsMessage;
use crate::apns::message::ApnsFields;
use crate::job::Platform;

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

impl ApnsJson<'_> {
    /// The message fields of the body (the request and the fuzzer read them
    /// the same way).
    fn fields(&self) -> ApnsFields<'_> {
        ApnsFields {
            payload: self.payload.map(|p| p.get().as_bytes()).unwrap_or_default(),
            topic: self.topic.as_deref(),
            push_type: self.push_type.as_deref(),
            priority: self.priority,
            expiration: self.expiration,
            collapse_id: self.collapse_id.as_deref(),
        }
    }
}

/// `POST /apns/send`.
pub async fn apns(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let timer = state.metrics.api_latency.start_timer();
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
            let fields = json.fields();
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
    let stored = fields.to_stored();
    // Built here to refuse a bad request with a 400; the platform rebuilds
    // it from `stored` when it takes the job.
    ApnsMessage::new(fields, service.default_topic.as_deref())?;
    let intake = intake(tokens, 64, crate::apns::token::keep);
    let submission = Submission {
        platform: Platform::Apns,
        app,
        fields: stored,
        intake,
        expires_at,
        when,
        notif_id: None,
    };
    let answer = submit(&state, submission).await;
    timer.observe_duration();
    answer
}

/// For `fuzz/` (`cargo fuzz`): a JSON body through parsing, message building,
/// the stored form's round trip and token intake. Returns on any input; a
/// message that builds must rebuild from its stored form.
#[doc(hidden)]
pub fn fuzz_json(bytes: &[u8]) {
    let Ok(json) = serde_json::from_slice::<ApnsJson<'_>>(bytes) else {
        return;
    };
    let fields = json.fields();
    let _ = parse_when(json.send_at.as_deref(), json.delay_seconds);
    if ApnsMessage::new(fields.clone(), Some("com.example")).is_ok() {
        let rebuilt = ApnsMessage::from_stored(&fields.to_stored(), Some("com.example"));
        assert!(
            rebuilt.is_ok(),
            "a valid message did not survive its stored form: {rebuilt:?}"
        );
    }
    let _ = intake(&json.tokens, 64, crate::apns::token::keep);
}
