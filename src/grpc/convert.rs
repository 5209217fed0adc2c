//! Proto messages to the HTTP API's JSON and back. Only shapes change here:
//! every rule about a field is the HTTP route's, applied when the adapter
//! sends the JSON through it.

use bytes::Bytes;
use prost_types::value::Kind;
use serde_json::{Map, Value, json};
use tonic::Status;

use super::proto::gorush::NotificationRequest;
use super::proto::pushgate::{JobStatus, Rejection, SendReply, SendRequest};
use super::status::Answer;

// === Struct ===

/// A `google.protobuf.Struct` as the JSON object it stands for.
pub fn struct_to_json(s: &prost_types::Struct) -> Map<String, Value> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), value_to_json(v)))
        .collect()
}

/// A `google.protobuf.Value` as JSON. Struct numbers are doubles: a whole
/// number is written as an integer (`3`, not `3.0`), as a JSON client would
/// have sent it, so `{"badge": 3}` and FCM's string data (`"3"`) come out
/// as over HTTP. NaN and infinities, which JSON cannot carry, become `null`.
pub fn value_to_json(v: &prost_types::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::NumberValue(n)) => number(*n),
        Some(Kind::StructValue(s)) => Value::Object(struct_to_json(s)),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value_to_json).collect()),
    }
}

/// 2^53: every whole double below it is exactly an integer.
const EXACT: f64 = 9_007_199_254_740_992.0;

fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < EXACT {
        // In range and whole: the cast is exact.
        #[allow(clippy::cast_possible_truncation)]
        return Value::from(n as i64);
    }
    serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
}

// === gorush ===

/// gorush's `NotificationRequest` as the notification gorush's REST API
/// takes, named as its JSON names them (`notify.PushNotification`), with the
/// values gorush's own gRPC server puts there: `priority` is the enum's name
/// in lower case (so an unset priority is `"normal"`), `badge` only when
/// above 0, empty strings and `false` left out, `key` unused.
pub fn notification(n: &NotificationRequest) -> Value {
    let mut m = Map::new();
    m.insert("tokens".into(), json!(n.tokens));
    m.insert("platform".into(), json!(n.platform));
    for (key, value) in [
        ("message", &n.message),
        ("title", &n.title),
        ("topic", &n.topic),
        ("category", &n.category),
        ("sound", &n.sound),
        ("thread-id", &n.thread_id),
        ("image", &n.image),
        ("notif_id", &n.id),
        ("push_type", &n.push_type),
    ] {
        if !value.is_empty() {
            m.insert(key.into(), json!(value));
        }
    }
    if n.badge > 0 {
        m.insert("badge".into(), json!(n.badge));
    }
    for (key, value) in [
        ("content_available", n.content_available),
        ("mutable_content", n.mutable_content),
        ("development", n.development),
    ] {
        if value {
            m.insert(key.into(), json!(true));
        }
    }
    if let Some(alert) = &n.alert {
        let mut a = Map::new();
        for (key, value) in [
            ("title", &alert.title),
            ("body", &alert.body),
            ("subtitle", &alert.subtitle),
            ("action", &alert.action),
            ("action-loc-key", &alert.action_loc_key),
            ("launch-image", &alert.launch_image),
            ("loc-key", &alert.loc_key),
            ("title-loc-key", &alert.title_loc_key),
        ] {
            if !value.is_empty() {
                a.insert(key.into(), json!(value));
            }
        }
        for (key, value) in [
            ("loc-args", &alert.loc_args),
            ("title-loc-args", &alert.title_loc_args),
        ] {
            if !value.is_empty() {
                a.insert(key.into(), json!(value));
            }
        }
        if !a.is_empty() {
            m.insert("alert".into(), Value::Object(a));
        }
    }
    if let Some(data) = &n.data {
        m.insert("data".into(), Value::Object(struct_to_json(data)));
    }
    m.insert(
        "priority".into(),
        json!(n.priority().as_str_name().to_ascii_lowercase()),
    );
    if let Some(options) = &n.fcm_options
        && !options.analytics_label.is_empty()
    {
        m.insert(
            "fcm_options".into(),
            json!({ "analytics_label": options.analytics_label }),
        );
    }
    Value::Object(m)
}

// === pushgate.v1 ===

/// The platform of a `SendRequest`: which HTTP send route it goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /apns/send`.
    Apns,
    /// `POST /fcm/send`.
    Fcm,
    /// `POST /gcm/send`.
    Gcm,
    /// `POST /webpush/send`: tokens are subscriptions.
    WebPush,
    /// `POST /hms/send`.
    Hms,
}

impl Route {
    /// Reads `SendRequest.platform`.
    pub fn parse(platform: &str) -> Result<Self, Status> {
        Ok(match platform {
            "apns" => Self::Apns,
            "fcm" => Self::Fcm,
            "gcm" => Self::Gcm,
            "webpush" => Self::WebPush,
            "hms" => Self::Hms,
            "" => {
                return Err(Status::invalid_argument(
                    "platform: required (apns, fcm, gcm, webpush or hms)",
                ));
            }
            other => {
                return Err(Status::invalid_argument(format!(
                    "platform: {other:?} is not apns, fcm, gcm, webpush or hms"
                )));
            }
        })
    }

    /// The HTTP route.
    pub fn path(self) -> &'static str {
        match self {
            Self::Apns => "/apns/send",
            Self::Fcm => "/fcm/send",
            Self::Gcm => "/gcm/send",
            Self::WebPush => "/webpush/send",
            Self::Hms => "/hms/send",
        }
    }

    /// The body field the tokens go in.
    fn tokens_field(self) -> &'static str {
        match self {
            Self::WebPush => "subscriptions",
            _ => "tokens",
        }
    }

    /// One token as the JSON value the route takes: a string, or for Web
    /// Push the subscription object its text holds. Text that is not JSON
    /// stays a string, which the route rejects as it would over HTTP.
    pub fn token(self, token: &str) -> Value {
        match self {
            Self::WebPush => serde_json::from_str(token).unwrap_or_else(|_| json!(token)),
            _ => json!(token),
        }
    }
}

/// The send body without tokens: `message`'s fields plus `app`. The tokens
/// belong in `tokens` (a message naming them is refused, so no token is
/// sent twice or lost), and an `app` in both places must agree.
pub fn message_body(route: Route, req: &SendRequest) -> Result<Map<String, Value>, Status> {
    let mut body = req.message.as_ref().map(struct_to_json).unwrap_or_default();
    for key in ["tokens", "subscriptions"] {
        if body.contains_key(key) {
            return Err(Status::invalid_argument(format!(
                "message.{key}: put the {} in SendRequest.tokens, not in the message",
                route.tokens_field()
            )));
        }
    }
    if !req.app.is_empty() {
        match body.get("app") {
            Some(Value::String(a)) if a != &req.app => {
                return Err(Status::invalid_argument(format!(
                    "app: {:?} differs from message.app {a:?}; give it once",
                    req.app
                )));
            }
            _ => {
                body.insert("app".into(), json!(req.app));
            }
        }
    }
    Ok(body)
}

/// The whole JSON send body of a `SendRequest`.
pub fn send_body(route: Route, req: &SendRequest) -> Result<Value, Status> {
    let mut body = message_body(route, req)?;
    let tokens = req.tokens.iter().map(|t| route.token(t)).collect();
    body.insert(route.tokens_field().into(), Value::Array(tokens));
    Ok(Value::Object(body))
}

/// Line 1 of a streamed (NDJSON) send: the body without tokens.
pub fn ndjson_header(route: Route, req: &SendRequest) -> Result<Bytes, Status> {
    let mut line = Value::Object(message_body(route, req)?).to_string();
    line.push('\n');
    Ok(Bytes::from(line))
}

/// Token lines of a streamed send: one JSON value a line (serialized JSON
/// has no raw newline, so a subscription's text cannot split its line).
pub fn ndjson_tokens<'a>(route: Route, tokens: impl IntoIterator<Item = &'a String>) -> Bytes {
    let mut out = String::new();
    for t in tokens {
        out.push_str(&route.token(t).to_string());
        out.push('\n');
    }
    Bytes::from(out)
}

/// A send's 2xx answer as a `SendReply`. Refused entries are named `token`
/// (Web Push: `endpoint`) over HTTP; both become `Rejection.token`.
pub fn send_reply(answer: &Answer) -> SendReply {
    let b = &answer.body;
    let rejected: Vec<Rejection> = b["rejected"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| Rejection {
            token: text(r.get("token").or_else(|| r.get("endpoint"))),
            reason: text(r.get("reason")),
        })
        .collect();
    SendReply {
        job: text(b.get("job")),
        accepted: b["accepted"].as_u64().unwrap_or(0),
        duplicates: b["duplicates"].as_u64().unwrap_or(0),
        rejected_count: b["rejected_count"]
            .as_u64()
            .unwrap_or(rejected.len() as u64),
        rejected,
        replayed: answer.replayed || b["replayed"].as_bool().unwrap_or(false),
    }
}

/// `GET /jobs/{id}` as a `JobStatus`.
pub fn job_status(b: &Value) -> JobStatus {
    let n = |k: &str| b[k].as_u64().unwrap_or(0);
    JobStatus {
        job: text(b.get("job")),
        platform: text(b.get("platform")),
        state: text(b.get("state")),
        total: n("total"),
        successes: n("successes"),
        failures: n("failures"),
        unregistered: n("unregistered"),
        canonicals: n("canonicals"),
        expired: n("expired"),
        cancelled: n("cancelled"),
        pending: n("pending"),
    }
}

/// A JSON string's text; anything else as its JSON text (`null`: empty).
fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
