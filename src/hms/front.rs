//! Huawei Push Kit as the API sees it: `POST /hms/send` bodies (JSON only;
//! a form body is 415, Push Kit has no GoCM past to stay compatible with),
//! gorush's Huawei notifications (`platform: 3`), and whether Huawei granted
//! an access token yet. The message is checked here the way Huawei would
//! check it, so a bad request is refused before any token is queued.

use std::any::Any;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::Value;

use super::message::{HmsFields, HmsMessage};
use super::{HmsService, gorush, token};
use crate::message::MessageError;
use crate::platform::request::{bad_json, parse_when};
use crate::platform::{
    Built, Fields, Front, GorushMapping, Request, RequestError, SendBody, Status, When,
};
use crate::settings::Apps;

/// Our message fields in gorush's words, for its 400 answers.
const RENAMED: &[(&str, &str)] = &[
    ("notification", "message"),
    ("android", "huawei_notification"),
];

/// Every HMS app, and what the API asks of them.
pub struct HmsFront {
    apps: Apps<HmsService>,
}

/// `POST /hms/send` as JSON (or a stream's first line, without `tokens`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HmsJson<'a> {
    #[serde(borrow, default)]
    tokens: Vec<Cow<'a, str>>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    notification: Option<Value>,
    #[serde(default)]
    android: Option<Value>,
    #[serde(borrow, default)]
    app: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    send_at: Option<Cow<'a, str>>,
    #[serde(default)]
    delay_seconds: Option<i64>,
}

impl HmsFront {
    /// The front over `apps`.
    pub fn new(apps: Apps<HmsService>) -> Self {
        Self { apps }
    }

    fn pick(&self, app: Option<&str>) -> Result<Arc<str>, RequestError> {
        self.apps
            .pick(app)
            .map(|(_, name)| name)
            .map_err(|e| RequestError::bad("unknown_app", e.to_string()))
    }
}

/// Checks the message and makes the request.
fn request<'a>(
    app: Arc<str>,
    fields: HmsFields,
    tokens: Vec<Cow<'a, str>>,
    when: When,
) -> Result<Request<'a>, MessageError> {
    let message = HmsMessage::new(fields)?;
    // Huawei counts the TTL from when it gets the message: after the delay.
    let sendable = SystemTime::now() + when.delay.unwrap_or_default();
    Ok(Request {
        platform: super::PLATFORM,
        app,
        fields: message.to_stored(),
        expires_at: message.expires_at(sendable),
        message: Some(Built::new(message)),
        when,
        notif_id: None,
        tokens,
        keep: Box::new(|raw, out| token::keep(raw, out).map_err(Into::into)),
        bytes_each: 200,
    })
}

impl Front for HmsFront {
    fn compose(
        &self,
        _platform: crate::job::Platform,
        message: &crate::platform::Unified<'_>,
    ) -> Result<Vec<u8>, crate::platform::RequestError> {
        super::compose::compose(message)
    }

    fn read<'a>(&self, body: &'a SendBody) -> Result<Request<'a>, RequestError> {
        let Some(bytes) = body.json() else {
            return Err(RequestError::json_only());
        };
        let json: HmsJson<'a> = serde_json::from_slice(bytes).map_err(bad_json)?;
        let when = parse_when(json.send_at.as_deref(), json.delay_seconds)?;
        let app = self.pick(json.app.as_deref())?;
        if json.tokens.is_empty() && !body.is_header() {
            return Err(RequestError::bad(
                "no_tokens",
                "the request has no tokens: send \"tokens\": [\"<push token>\", …]",
            ));
        }
        let fields = HmsFields {
            data: json.data,
            notification: json.notification,
            android: json.android,
            validate_only: false,
        };
        Ok(request(app, fields, json.tokens, when)?)
    }

    /// Requests go through reqwest's pool, which does not count connections.
    fn status(&self) -> Status {
        let ready = self.apps.values().all(HmsService::ready);
        Status {
            connections: None,
            problem: (!ready).then(|| {
                "Huawei Push Kit has not granted an access token nor answered a send yet".to_owned()
            }),
        }
    }

    fn gorush(&self) -> Option<&dyn GorushMapping> {
        Some(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl GorushMapping for HmsFront {
    fn read<'a>(&self, f: &Fields<'a>) -> Result<Request<'a>, RequestError> {
        let plan = gorush::plan(f)?;
        if plan.tokens.is_empty() {
            return Err(f
                .error("tokens", "please provide at least one device token")
                .into());
        }
        let app = self.pick(f.str("app")?).map_err(|e| f.retag(e))?;
        let mut request = request(app, plan.fields, plan.tokens, When::default())
            .map_err(|e| f.message_error(e, RENAMED))?;
        request.notif_id = f.str("notif_id")?.map(Arc::from);
        Ok(request)
    }
}
