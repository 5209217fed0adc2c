//! Google delivery as the API sees it: `POST /gcm/send` and `/fcm/send`
//! bodies (JSON, or GoCM's form with the payload as a JSON string), gorush's
//! Android notifications, and whether the upstream answered yet. The
//! message is checked here the way FCM (or the legacy API) would, so a bad
//! request is refused before any token is queued.

use std::any::Any;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::blocks::{BlockFields, legacy_refusal};
use super::message::{GoogleExtras, GoogleFields, GoogleMessage, Target};
use super::{GoogleService, gorush, token, topic};
use crate::job::Platform;
use crate::message::MessageError;
use crate::platform::request::{bad_json, form_int, parse_form, parse_when, unknown_form_field};
use crate::platform::{
    Built, Fields, Front, GorushMapping, Keep, Request, RequestError, SendBody, Status, When,
};
use crate::settings::Apps;

/// Every Google app, and what the API asks of them.
pub struct GoogleFront {
    platform: Platform,
    apps: Apps<GoogleService>,
}

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
    android: Option<&'a RawValue>,
    #[serde(borrow, default)]
    apns: Option<&'a RawValue>,
    #[serde(borrow, default)]
    webpush: Option<&'a RawValue>,
    #[serde(borrow, default)]
    fcm_options: Option<&'a RawValue>,
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
            blocks: BlockFields {
                android: raw(self.android),
                apns: raw(self.apns),
                webpush: raw(self.webpush),
                fcm_options: raw(self.fcm_options),
            },
        }
    }
}

/// A block's JSON text; `null` counts as absent.
fn raw(value: Option<&RawValue>) -> Option<&[u8]> {
    value
        .map(|v| v.get().as_bytes())
        .filter(|text| *text != b"null")
}

/// Registration tokens checked as FCM does; a topic or condition (already
/// checked) kept as it is.
fn keep<'a>(target: Target) -> Keep<'a> {
    Box::new(move |raw, out| {
        if target == Target::Tokens {
            return token::keep(raw, out).map_err(Into::into);
        }
        out.extend_from_slice(raw.as_bytes());
        Ok(())
    })
}

/// A topic or condition job has one "token": the topic or the condition.
fn targeted<'a>(
    topic: Option<&str>,
    condition: Option<&str>,
    tokens: Vec<Cow<'a, str>>,
) -> Result<(Vec<Cow<'a, str>>, Target), RequestError> {
    match topic::target(topic, condition, &tokens)? {
        Some((target, one)) => Ok((vec![Cow::Owned(one.into_owned())], target)),
        None => Ok((tokens, Target::Tokens)),
    }
}

impl GoogleFront {
    /// The front over `apps`, all of `platform` (FCM v1 or legacy GCM).
    pub fn new(platform: Platform, apps: Apps<GoogleService>) -> Self {
        Self { platform, apps }
    }

    fn pick(&self, app: Option<&str>) -> Result<Arc<str>, RequestError> {
        self.apps
            .pick(app)
            .map(|(_, name)| name)
            .map_err(|e| RequestError::bad("unknown_app", e.to_string()))
    }

    /// Checks the message and makes the request.
    fn request<'a>(
        &self,
        app: Arc<str>,
        fields: GoogleFields<'_>,
        extras: GoogleExtras<'_>,
        tokens: Vec<Cow<'a, str>>,
        when: When,
    ) -> Result<Request<'a>, MessageError> {
        // Legacy GCM has no blocks: refused, never dropped unseen.
        if self.platform == super::GCM
            && let Some(block) = fields.blocks.first_given()
        {
            return Err(legacy_refusal(block).into());
        }
        let stored = fields.to_stored_with(extras);
        let message = GoogleMessage::with_extras(fields, extras)?;
        Ok(Request {
            platform: self.platform,
            app,
            fields: stored,
            expires_at: message.expires_at(SystemTime::now()),
            message: Some(Built::new(message)),
            when,
            notif_id: None,
            tokens,
            keep: keep(extras.target),
            bytes_each: 160,
        })
    }
}

impl Front for GoogleFront {
    fn compose(
        &self,
        platform: crate::job::Platform,
        message: &crate::platform::Unified<'_>,
    ) -> Result<Vec<u8>, crate::platform::RequestError> {
        super::compose::compose(platform, message)
    }

    fn read<'a>(&self, body: &'a SendBody) -> Result<Request<'a>, RequestError> {
        let form;
        let json;
        let notification_form;
        let (app, tokens, fields, when, topic, condition) = match body {
            SendBody::Json(bytes) | SendBody::Header(bytes) => {
                json = serde_json::from_slice::<GoogleJson<'_>>(bytes).map_err(bad_json)?;
                let when = parse_when(json.send_at.as_deref(), json.delay_seconds)?;
                (
                    json.app.as_deref(),
                    json.tokens.clone(),
                    json.fields(),
                    when,
                    json.topic.as_deref(),
                    json.condition.as_deref(),
                )
            }
            SendBody::Form(bytes) => {
                form = parse_form(bytes)?;
                let mut fields = GoogleFields {
                    payload: form.payload.as_ref().map(|p| p.get().as_bytes()),
                    ..GoogleFields::default()
                };
                let mut notification = None;
                let (mut send_at, mut delay_seconds, mut app) = (None, None, None);
                let (mut topic, mut condition) = (None, None);
                for (key, value) in &form.fields {
                    match &**key {
                        "notification" => notification = Some(value),
                        "collapse_key" => fields.collapse_key = Some(value),
                        "priority" => fields.priority = Some(value),
                        "time_to_live" => {
                            fields.time_to_live = Some(form_int("time_to_live", value)?)
                        }
                        "send_at" => send_at = Some(&**value),
                        "delay_seconds" => delay_seconds = Some(form_int("delay_seconds", value)?),
                        "app" => app = Some(&**value),
                        "topic" => topic = Some(&**value),
                        "condition" => condition = Some(&**value),
                        other => return Err(unknown_form_field(other)),
                    }
                }
                notification_form = notification
                    .map(|n| {
                        RawValue::from_string(n.to_string()).map_err(|e| {
                            RequestError::bad("bad_field", format!("notification is not JSON: {e}"))
                        })
                    })
                    .transpose()?;
                fields.notification = notification_form.as_ref().map(|n| n.get().as_bytes());
                let when = parse_when(send_at, delay_seconds)?;
                (app, form.tokens.clone(), fields, when, topic, condition)
            }
        };
        let app = self.pick(app)?;
        let (tokens, target) = targeted(topic, condition, tokens)?;
        if tokens.is_empty() && !body.is_header() {
            return Err(RequestError::bad(
                "no_tokens",
                "the request has no tokens: send tokens=<t1>&tokens=<t2> or \"tokens\": [...] (or \"topic\" / \"condition\")",
            ));
        }
        let extras = GoogleExtras {
            target,
            ..GoogleExtras::default()
        };
        Ok(self.request(app, fields, extras, tokens, when)?)
    }

    fn status(&self) -> Status {
        // FCM v1 over our own HTTP/2 connections: counted. Legacy GCM (and
        // FCM over HTTP/1.1) rides reqwest's pool, which does not say.
        let connections = self
            .apps
            .values()
            .map(GoogleService::connected)
            .sum::<Option<usize>>();
        let ready = self.apps.values().all(GoogleService::ready);
        Status {
            connections,
            problem: (!ready)
                .then(|| "Google delivery has not reached its upstream yet".to_owned()),
        }
    }

    fn gorush(&self) -> Option<&dyn GorushMapping> {
        Some(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl GorushMapping for GoogleFront {
    fn read<'a>(&self, f: &Fields<'a>) -> Result<Request<'a>, RequestError> {
        let tokens: Vec<Cow<'a, str>> = f
            .strings("tokens")?
            .into_iter()
            .map(Cow::Borrowed)
            .collect();
        let mut plan = gorush::plan(f, tokens)?;
        let tokens = std::mem::take(&mut plan.tokens);
        let (tokens, target) =
            targeted(plan.topic, plan.condition, tokens).map_err(|e| f.retag(e))?;
        if tokens.is_empty() {
            return Err(f
                .error(
                    "tokens",
                    "please provide at least one device token, or a topic or condition",
                )
                .into());
        }
        let app = self.pick(f.str("app")?).map_err(|e| f.retag(e))?;
        let fields = GoogleFields {
            payload: plan.data.as_deref(),
            notification: plan.notification.as_deref(),
            collapse_key: plan.collapse_key,
            priority: plan.priority,
            time_to_live: plan.time_to_live,
            blocks: BlockFields::default(),
        };
        let extras = GoogleExtras {
            target,
            dry_run: plan.dry_run,
            restricted_package_name: plan.restricted_package_name,
        };
        let mut request = self
            .request(app, fields, extras, tokens, When::default())
            .map_err(|e| f.message_error(e, &[("payload", "data")]))?;
        request.notif_id = f.str("notif_id")?.map(Arc::from);
        Ok(request)
    }
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
    let mut buf = Vec::new();
    for t in &json.tokens {
        buf.clear();
        let _ = token::keep(t, &mut buf);
    }
}
