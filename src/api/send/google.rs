//! `POST /gcm/send` and `POST /fcm/send`: the Google fields of a JSON or
//! GoCM form body.

use std::borrow::Cow;
use std::time::SystemTime;

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::body::{Body, bad_json, form_int, parse_form};
use super::intake::{Submission, intake, parse_when, pick_app, submit};
use crate::api::{ApiError, AppState};
use crate::fcm::{GoogleExtras, GoogleFields, GoogleMessage, Target};

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
    topic: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    condition: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    app: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    send_at: Option<Cow<'a, str>>,
    #[serde(default)]
    delay_seconds: Option<i64>,
}

impl GoogleJson<'_> {
    /// The message fields of the body (the request and the fuzzer read them
    /// the same way).
    fn fields(&self) -> GoogleFields<'_> {
        GoogleFields {
            payload: self.payload.map(|p| p.get().as_bytes()),
            notification: self.notification.map(|p| p.get().as_bytes()),
            collapse_key: self.collapse_key.as_deref(),
            priority: self.priority.as_deref(),
            time_to_live: self.time_to_live,
        }
    }
}

/// `POST /gcm/send` and `POST /fcm/send`: the GoCM form or JSON.
pub async fn google(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let timer = state.metrics.api_latency.start_timer();
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
    let (mut topic, mut condition): (Option<&str>, Option<&str>) = (None, None);
    let (tokens, fields, when) = match &body {
        Body::Json(bytes) => {
            json = serde_json::from_slice::<GoogleJson<'_>>(bytes).map_err(bad_json)?;
            app_name = json.app.as_deref();
            (topic, condition) = (json.topic.as_deref(), json.condition.as_deref());
            let fields = json.fields();
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
                    "topic" => topic = Some(value),
                    "condition" => condition = Some(value),
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
    // A topic or condition job has one "token": the topic or the condition.
    let topic_tokens;
    let (tokens, target) = match crate::api::topic::target(topic, condition, tokens)? {
        Some((target, one)) => {
            topic_tokens = vec![one];
            (&topic_tokens, target)
        }
        None => (tokens, Target::Tokens),
    };
    if tokens.is_empty() {
        return Err(ApiError::bad_request(
            "no_tokens",
            "the request has no tokens: send tokens=<t1>&tokens=<t2> or \"tokens\": [...] (or \"topic\" / \"condition\")",
        ));
    }
    let extras = GoogleExtras {
        target,
        ..GoogleExtras::default()
    };
    let stored = fields.to_stored_with(extras);
    // Built here to refuse a bad request with a 400; the platform rebuilds
    // it from `stored` when it takes the job.
    let message = GoogleMessage::with_extras(fields, extras)?;
    let expires_at = message.expires_at(SystemTime::now());
    let intake = intake(tokens, 160, |token, buf| {
        if target == Target::Tokens {
            return crate::fcm::token::keep(token, buf);
        }
        buf.extend_from_slice(token.as_bytes());
        Ok(())
    });
    let submission = Submission {
        platform: service.platform(),
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

/// For `fuzz/` (`cargo fuzz`): a JSON body through parsing, message building
/// and token intake. Returns on any input.
#[doc(hidden)]
pub fn fuzz_json(bytes: &[u8]) {
    let Ok(json) = serde_json::from_slice::<GoogleJson<'_>>(bytes) else {
        return;
    };
    let fields = json.fields();
    let _ = fields.to_stored();
    let _ = GoogleMessage::new(fields);
    let _ = intake(&json.tokens, 160, crate::fcm::token::keep);
}
