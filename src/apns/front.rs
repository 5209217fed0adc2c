//! APNs as the API sees it: `POST /apns/send` bodies (JSON, or a form with
//! the payload as a JSON string), gorush's iOS notifications, and how the
//! connections are doing. Every app's message is checked here, the way APNs
//! would, so a bad request is refused before any token is queued.

use std::any::Any;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::gorush;
use super::message::{ApnsFields, ApnsMessage};
use super::{ApnsService, token};
use crate::message::MessageError;
use crate::platform::request::{bad_json, form_int, parse_form, parse_when, unknown_form_field};
use crate::platform::{
    Built, Fields, Front, GorushMapping, Request, RequestError, SendBody, Status, When,
};
use crate::settings::Apps;

/// Every APNs app, and what the API asks of them.
pub struct ApnsFront {
    apps: Apps<ApnsService>,
}

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

/// Where APNs tokens are checked: hex device tokens, kept as lower-case hex.
fn keep<'a>() -> crate::platform::Keep<'a> {
    Box::new(|raw, out| token::keep(raw, out).map_err(Into::into))
}

impl ApnsFront {
    /// The front over `apps`.
    pub fn new(apps: Apps<ApnsService>) -> Self {
        Self { apps }
    }

    /// Every app's service.
    pub fn apps(&self) -> &Apps<ApnsService> {
        &self.apps
    }

    /// The app a request names.
    pub fn pick(&self, app: Option<&str>) -> Result<(&ApnsService, Arc<str>), RequestError> {
        self.apps
            .pick(app)
            .map_err(|e| RequestError::bad("unknown_app", e.to_string()))
    }

    /// Checks `fields` for the app `service` is, and makes the request.
    fn request<'a>(
        service: &ApnsService,
        app: Arc<str>,
        fields: ApnsFields<'_>,
        tokens: Vec<Cow<'a, str>>,
        when: When,
    ) -> Result<Request<'a>, MessageError> {
        let expires_at = fields
            .expiration
            .filter(|&e| e > 0)
            .map(|e| UNIX_EPOCH + Duration::from_secs(e.unsigned_abs()));
        let stored = fields.to_stored();
        let message = ApnsMessage::new(fields, service.default_topic.as_deref())?;
        Ok(Request {
            platform: crate::apns::PLATFORM,
            app,
            fields: stored,
            message: Some(Built::new(message)),
            expires_at,
            when,
            notif_id: None,
            tokens,
            keep: keep(),
            bytes_each: 64,
        })
    }
}

impl Front for ApnsFront {
    fn compose(
        &self,
        _platform: crate::job::Platform,
        message: &crate::platform::Unified<'_>,
    ) -> Result<Vec<u8>, crate::platform::RequestError> {
        super::compose::compose(message)
    }

    fn read<'a>(&self, body: &'a SendBody) -> Result<Request<'a>, RequestError> {
        let form;
        let json;
        let (app, tokens, payload, fields, when) = match body {
            SendBody::Json(bytes) | SendBody::Header(bytes) => {
                json = serde_json::from_slice::<ApnsJson<'_>>(bytes).map_err(bad_json)?;
                let when = parse_when(json.send_at.as_deref(), json.delay_seconds)?;
                let tokens = json.tokens.clone();
                (
                    json.app.as_deref(),
                    tokens,
                    json.payload.is_some(),
                    json.fields(),
                    when,
                )
            }
            SendBody::Form(bytes) => {
                form = parse_form(bytes)?;
                let mut fields = ApnsFields {
                    payload: form
                        .payload
                        .as_ref()
                        .map(|p| p.get().as_bytes())
                        .unwrap_or_default(),
                    ..ApnsFields::default()
                };
                let (mut send_at, mut delay_seconds, mut app) = (None, None, None);
                for (key, value) in &form.fields {
                    match &**key {
                        "topic" => fields.topic = Some(value),
                        "push_type" => fields.push_type = Some(value),
                        "priority" => fields.priority = Some(form_int("priority", value)?),
                        "expiration" => fields.expiration = Some(form_int("expiration", value)?),
                        "collapse_id" => fields.collapse_id = Some(value),
                        "send_at" => send_at = Some(&**value),
                        "delay_seconds" => delay_seconds = Some(form_int("delay_seconds", value)?),
                        "app" => app = Some(&**value),
                        other => return Err(unknown_form_field(other)),
                    }
                }
                let when = parse_when(send_at, delay_seconds)?;
                (
                    app,
                    form.tokens.clone(),
                    form.payload.is_some(),
                    fields,
                    when,
                )
            }
        };
        let (service, app) = self.pick(app)?;
        if tokens.is_empty() && !body.is_header() {
            return Err(RequestError::bad(
                "no_tokens",
                "the request has no tokens: send \"tokens\": [\"<hex>\", ...]",
            ));
        }
        if !payload {
            return Err(RequestError::bad(
                "no_payload",
                "the request has no payload: send \"payload\": {\"aps\": {...}}",
            ));
        }
        Ok(Self::request(service, app, fields, tokens, when)?)
    }

    fn status(&self) -> Status {
        let per_app: Vec<usize> = self.apps.values().map(ApnsService::connected).collect();
        Status {
            connections: Some(per_app.iter().sum()),
            // Every app must be connected.
            problem: per_app
                .contains(&0)
                .then(|| "an APNs app has no open connection".to_owned()),
        }
    }

    fn gorush(&self) -> Option<&dyn GorushMapping> {
        Some(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl GorushMapping for ApnsFront {
    fn read<'a>(&self, f: &Fields<'a>) -> Result<Request<'a>, RequestError> {
        let plan = gorush::plan(f)?;
        let tokens: Vec<Cow<'a, str>> = f
            .strings("tokens")?
            .into_iter()
            .map(Cow::Borrowed)
            .collect();
        if tokens.is_empty() {
            return Err(f
                .error("tokens", "please provide at least one device token")
                .into());
        }
        let fields = ApnsFields {
            payload: &plan.payload,
            topic: plan.topic,
            push_type: plan.push_type,
            priority: plan.priority,
            expiration: plan.expiration,
            collapse_id: plan.collapse_id,
        };
        let (service, app) = self.pick(f.str("app")?).map_err(|e| f.retag(e))?;
        let mut request = Self::request(service, app, fields, tokens, When::default())
            .map_err(|e| f.message_error(e, &[]))?;
        request.notif_id = f.str("notif_id")?.map(Arc::from);
        Ok(request)
    }
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
    let mut buf = Vec::new();
    for t in &json.tokens {
        buf.clear();
        let _ = token::keep(t, &mut buf);
    }
}
