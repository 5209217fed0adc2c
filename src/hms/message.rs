//! One Push Kit message, checked the way Huawei checks it so a bad request is
//! refused before any token is queued, and kept in the form every request of
//! the job reuses:
//!
//! - `data` is sent as a string, as Huawei requires (an object in the
//!   request becomes its JSON text);
//! - `notification` holds `title`, `body`, `image` (strings, the image an
//!   https URL);
//! - `android` (Huawei's AndroidConfig) is passed through, checked where
//!   Huawei documents a rule (`urgency`, `ttl`, `collapse_key`, the
//!   notification's `click_action`);
//! - a notification message gets `android.notification.click_action`
//!   `{"type":3}` (open the app) when it names none, Huawei's default and a
//!   field Huawei requires, and must have a title and a body;
//! - the message without its tokens is at most 4096 bytes (Huawei's limit;
//!   413 otherwise).
//!
//! The stored form is that checked message (JSON); [`HmsMessage::from_stored`]
//! rebuilds it when a store hands the job to a worker.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::message::{MessageError, PayloadTooLarge, field_error};

/// Largest message without its `token` array, compact JSON (Huawei's
/// "message body size exceeds the default value (4096 bytes)", 80300008).
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// The keys of `message.notification`.
const NOTIFICATION_KEYS: [&str; 3] = ["title", "body", "image"];

/// Huawei's "open the app" click action: the default of a notification that
/// names none.
fn open_app() -> Value {
    json!({"type": 3})
}

/// A message as a request gives it, before it is checked.
#[derive(Debug, Clone, Default)]
pub struct HmsFields {
    /// `data`: a JSON object (sent as its text) or a string.
    pub data: Option<Value>,
    /// `notification`: `{title, body, image}`.
    pub notification: Option<Value>,
    /// `android`: Huawei's AndroidConfig, passed through.
    pub android: Option<Value>,
    /// Ask Huawei to check the message without delivering it.
    pub validate_only: bool,
}

/// A checked message, ready to send to any batch of the job's tokens.
#[derive(Debug, Clone)]
pub struct HmsMessage {
    /// `message` without its `token` array (the stored and measured form).
    message: Map<String, Value>,
    validate_only: bool,
    /// Everything of the body that follows the token array.
    tail: Bytes,
    /// `android.ttl`, when given.
    ttl: Option<Duration>,
}

impl HmsMessage {
    /// Checks `fields` and builds the message.
    pub fn new(fields: HmsFields) -> Result<Self, MessageError> {
        let HmsFields {
            data,
            notification,
            android,
            validate_only,
        } = fields;
        let mut message = Map::new();
        if let Some(data) = data_text(data)? {
            message.insert("data".into(), Value::String(data));
        }
        let notification = notification.map(check_notification).transpose()?;
        let mut android = android.map(|a| object("android", a)).transpose()?;
        let ttl = match &mut android {
            Some(a) => check_android(a, notification.as_ref())?,
            None => None,
        };
        if let Some(n) = &notification {
            // A notification message: Huawei needs a click action, and a
            // title and a body (here or in android.notification).
            let a = android.get_or_insert_with(Map::new);
            if !a.contains_key("notification") {
                a.insert("notification".into(), json!({"click_action": open_app()}));
                check_titles(&Map::new(), Some(n))?;
            }
        }
        if let Some(n) = notification {
            message.insert("notification".into(), Value::Object(n));
        }
        if let Some(a) = android {
            message.insert("android".into(), Value::Object(a));
        }
        let has_payload = message.contains_key("data")
            || message.contains_key("notification")
            || message
                .get("android")
                .is_some_and(|a| a.get("notification").is_some() || a.get("data").is_some());
        if !has_payload {
            return Err(field_error(
                "data",
                "nothing to send: give data, a notification or android.notification",
            )
            .into());
        }
        let text = Value::Object(message.clone()).to_string();
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(PayloadTooLarge {
                what: "the message without its tokens",
                size: text.len(),
                limit: MAX_MESSAGE_BYTES,
                upstream: "Push Kit",
            }
            .into());
        }
        // `{"data":…}` → `,"data":…}`; an empty message cannot get here.
        let mut tail = Vec::with_capacity(text.len() + 1);
        tail.push(b',');
        tail.extend_from_slice(&text.as_bytes()[1..]);
        tail.push(b'}');
        Ok(Self {
            message,
            validate_only,
            tail: tail.into(),
            ttl,
        })
    }

    /// The stored form: the checked message and `validate_only`.
    pub fn to_stored(&self) -> Vec<u8> {
        let mut stored = json!({ "message": self.message });
        if self.validate_only {
            stored["validate_only"] = Value::Bool(true);
        }
        stored.to_string().into_bytes()
    }

    /// Rebuilds a message from [`HmsMessage::to_stored`]'s bytes.
    pub fn from_stored(stored: &[u8]) -> Result<Self, MessageError> {
        let unreadable =
            |e: String| field_error("stored", format!("unreadable stored HMS message: {e}"));
        let value: Value = serde_json::from_slice(stored).map_err(|e| unreadable(e.to_string()))?;
        let Some(Value::Object(mut message)) = value.get("message").cloned() else {
            return Err(unreadable("no message object".into()).into());
        };
        Self::new(HmsFields {
            data: message.remove("data"),
            notification: message.remove("notification"),
            android: message.remove("android"),
            validate_only: value["validate_only"].as_bool().unwrap_or(false),
        })
    }

    /// True when Huawei is only asked to check the message.
    pub fn validate_only(&self) -> bool {
        self.validate_only
    }

    /// `message.data` as sent, when any.
    pub fn data(&self) -> Option<&str> {
        self.message.get("data").and_then(Value::as_str)
    }

    /// The `messages:send` body for `tokens` (at most 1,000, the caller's
    /// batch): `{"validate_only":…,"message":{"token":[…],…}}`, every token
    /// JSON-escaped.
    pub fn body<'t>(&self, tokens: impl IntoIterator<Item = &'t str>) -> Bytes {
        let head: &[u8] = if self.validate_only {
            br#"{"validate_only":true,"message":{"token":["#
        } else {
            br#"{"validate_only":false,"message":{"token":["#
        };
        let mut body = Vec::with_capacity(head.len() + self.tail.len() + 200 * 64);
        body.extend_from_slice(head);
        for (i, token) in tokens.into_iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            // Writing a &str into a Vec cannot fail; the fallback keeps the
            // body valid JSON anyway.
            if serde_json::to_writer(&mut body, token).is_err() {
                body.extend_from_slice(b"\"\"");
            }
        }
        body.push(b']');
        body.extend_from_slice(&self.tail);
        body.into()
    }

    /// The instant after which the gateway must not send this message, for a
    /// job first sendable at `from`: `from + android.ttl`. `None` without a
    /// TTL, and for a TTL of 0 (Huawei's to enforce; sent once).
    pub fn expires_at(&self, from: SystemTime) -> Option<SystemTime> {
        self.ttl
            .filter(|t| !t.is_zero())
            .and_then(|t| from.checked_add(t))
    }
}

/// A `POST /send` target's own fields on Push Kit: its `data` merged over
/// the shared data (sent, as always, as the JSON text of the object); its
/// `badge` as `android.notification.badge.set_num` when the message names
/// the badge's `class` (Huawei requires it), else not sent.
impl crate::message::personal::Personalise for HmsMessage {
    fn personalise(
        &self,
        _stored: &[u8],
        personal: &crate::message::personal::Personal,
    ) -> Result<Self, MessageError> {
        let mut message = self.message.clone();
        if !personal.data.is_empty() {
            let mut data = match self.data().map(serde_json::from_str::<Value>) {
                Some(Ok(Value::Object(map))) => map,
                Some(_) => {
                    return Err(field_error(
                        "data",
                        "a target's data merges only over a shared data object",
                    )
                    .into());
                }
                None => Map::new(),
            };
            personal.merge_data(&mut data);
            message.insert("data".into(), Value::Object(data));
        }
        if let Some(badge) = personal.badge
            && let Some(Value::Object(b)) = message
                .get_mut("android")
                .and_then(|a| a.get_mut("notification"))
                .and_then(|n| n.get_mut("badge"))
            && b.contains_key("class")
        {
            b.remove("add_num");
            b.insert("set_num".into(), badge.into());
        }
        Self::new(HmsFields {
            data: message.remove("data"),
            notification: message.remove("notification"),
            android: message.remove("android"),
            validate_only: self.validate_only,
        })
    }
}

fn object(field: &'static str, value: Value) -> Result<Map<String, Value>, MessageError> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(field_error(field, format!("must be a JSON object, got {other}")).into()),
    }
}

/// `data` as the string Huawei takes: a string as is, an object as its JSON
/// text; an empty one is none.
fn data_text(data: Option<Value>) -> Result<Option<String>, MessageError> {
    match data {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Object(map)) if map.is_empty() => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v.to_string())),
        Some(other) => Err(field_error(
            "data",
            format!("must be a JSON object or a string, got {other}"),
        )
        .into()),
    }
}

fn check_notification(value: Value) -> Result<Map<String, Value>, MessageError> {
    let n = object("notification", value)?;
    for (key, value) in &n {
        if !NOTIFICATION_KEYS.contains(&key.as_str()) {
            return Err(field_error(
                "notification",
                format!("unknown key {key:?}: Push Kit takes title, body and image"),
            )
            .into());
        }
        let Value::String(text) = value else {
            return Err(field_error(
                "notification",
                format!("{key} must be a string, got {value}"),
            )
            .into());
        };
        if key == "image" && !text.starts_with("https://") {
            return Err(field_error("notification", "image must be an https:// URL").into());
        }
    }
    Ok(n)
}

/// A title and a body, in `android.notification` or `message.notification`.
fn check_titles(
    android: &Map<String, Value>,
    common: Option<&Map<String, Value>>,
) -> Result<(), MessageError> {
    for key in ["title", "body"] {
        let given = |m: &Map<String, Value>| {
            m.get(key)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        };
        if !given(android) && !common.is_some_and(given) {
            return Err(field_error(
                "notification",
                format!("a notification needs a {key} (notification.{key} or android.notification.{key})"),
            )
            .into());
        }
    }
    Ok(())
}

/// Huawei's TTL text (`86400`, `86400s`, up to nine decimals) as a duration.
fn parse_ttl(ttl: &str) -> Option<Duration> {
    let number = ttl.strip_suffix(['s', 'S']).unwrap_or(ttl);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 9 {
        return None;
    }
    if number.contains('.') && fraction.is_empty() {
        return None;
    }
    let secs: u64 = whole.parse().ok()?;
    let nanos = format!("{fraction:0<9}").parse::<u32>().ok()?;
    Some(Duration::new(secs, nanos))
}

/// Checks the documented rules of `android` and completes its notification;
/// returns its TTL.
fn check_android(
    a: &mut Map<String, Value>,
    common: Option<&Map<String, Value>>,
) -> Result<Option<Duration>, MessageError> {
    let bad = |problem: String| -> MessageError { field_error("android", problem).into() };
    if let Some(key) = a.get("collapse_key")
        && !key.as_i64().is_some_and(|k| (-1..=100).contains(&k))
    {
        return Err(bad(format!(
            "collapse_key must be an integer from -1 to 100, got {key}"
        )));
    }
    if let Some(urgency) = a.get("urgency")
        && !matches!(urgency.as_str(), Some("HIGH" | "NORMAL"))
    {
        return Err(bad(format!(
            "urgency must be \"HIGH\" or \"NORMAL\", got {urgency}"
        )));
    }
    let ttl = match a.get("ttl") {
        None => None,
        Some(t) => Some(t.as_str().and_then(parse_ttl).ok_or_else(|| {
            bad(format!(
                "ttl must be seconds as text, like \"86400s\", got {t}"
            ))
        })?),
    };
    for key in ["category", "bi_tag", "data", "receipt_id"] {
        if let Some(v) = a.get(key)
            && !v.is_string()
        {
            return Err(bad(format!("{key} must be a string, got {v}")));
        }
    }
    if let Some(v) = a.get("fast_app_target")
        && !matches!(v.as_i64(), Some(1 | 2))
    {
        return Err(bad(format!("fast_app_target must be 1 or 2, got {v}")));
    }
    if let Some(v) = a.get("target_user_type")
        && !matches!(v.as_i64(), Some(0 | 1))
    {
        return Err(bad(format!("target_user_type must be 0 or 1, got {v}")));
    }
    match a.get_mut("notification") {
        None => {}
        Some(Value::Object(n)) => {
            for key in ["title", "body", "image"] {
                if let Some(v) = n.get(key)
                    && !v.is_string()
                {
                    return Err(bad(format!("notification.{key} must be a string, got {v}")));
                }
            }
            let click = n.entry("click_action").or_insert_with(open_app);
            check_click_action(click).map_err(bad)?;
            check_titles(n, common)?;
        }
        Some(other) => return Err(bad(format!("notification must be an object, got {other}"))),
    }
    Ok(ttl)
}

fn check_click_action(click: &Value) -> Result<(), String> {
    let Value::Object(c) = click else {
        return Err(format!(
            "notification.click_action must be an object, got {click}"
        ));
    };
    let text = |key: &str| c.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
    match c.get("type").and_then(Value::as_i64) {
        Some(1) if text("intent").is_none() && text("action").is_none() => {
            Err("notification.click_action of type 1 needs an intent or an action".into())
        }
        Some(2) if !text("url").is_some_and(|u| u.starts_with("https://")) => {
            Err("notification.click_action of type 2 needs an https url".into())
        }
        Some(1..=3) => Ok(()),
        _ => Err("notification.click_action.type must be 1 (intent or action), 2 (url) or 3 (open the app)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::FieldError;

    fn build(
        data: Option<Value>,
        notification: Option<Value>,
        android: Option<Value>,
    ) -> Result<HmsMessage, MessageError> {
        HmsMessage::new(HmsFields {
            data,
            notification,
            android,
            validate_only: false,
        })
    }

    fn body_json(m: &HmsMessage, tokens: &[&str]) -> Value {
        serde_json::from_slice(&m.body(tokens.iter().copied())).expect("the body is JSON")
    }

    #[test]
    fn data_is_sent_as_a_string_and_tokens_as_an_array() {
        let m = build(Some(json!({"order": 42, "k": "v"})), None, None).expect("valid");
        let body = body_json(&m, &["t1", "t\"2"]);
        assert_eq!(body["validate_only"], false);
        assert_eq!(body["message"]["token"], json!(["t1", "t\"2"]));
        let data = body["message"]["data"].as_str().expect("data is a string");
        assert_eq!(
            serde_json::from_str::<Value>(data).expect("its JSON text"),
            json!({"order": 42, "k": "v"})
        );
        let text = build(Some(json!("plain text")), None, None).expect("valid");
        assert_eq!(body_json(&text, &["t"])["message"]["data"], "plain text");
        assert_eq!(text.data(), Some("plain text"));
    }

    #[test]
    fn a_notification_gets_the_open_app_click_action_and_needs_title_and_body() {
        let m = build(
            None,
            Some(json!({"title": "T", "body": "B", "image": "https://x/i.png"})),
            None,
        )
        .expect("valid");
        let body = body_json(&m, &["t"]);
        assert_eq!(body["message"]["notification"]["title"], "T");
        assert_eq!(
            body["message"]["android"]["notification"]["click_action"],
            json!({"type": 3})
        );
        // The caller's android block is kept, completed only where Huawei needs it.
        let m = build(
            None,
            Some(json!({"title": "T", "body": "B"})),
            Some(json!({"urgency": "HIGH", "ttl": "3600s", "notification": {"sound": "ding"}})),
        )
        .expect("valid");
        let android = &body_json(&m, &["t"])["message"]["android"];
        assert_eq!(android["urgency"], "HIGH");
        assert_eq!(android["notification"]["sound"], "ding");
        assert_eq!(android["notification"]["click_action"], json!({"type": 3}));
        assert!(build(None, Some(json!({"title": "T"})), None).is_err());
        assert!(build(None, None, Some(json!({"notification": {"title": "T"}}))).is_err());
    }

    #[test]
    fn validate_only_and_the_stored_form_round_trip() {
        let m = HmsMessage::new(HmsFields {
            data: Some(json!({"a": "b"})),
            notification: Some(json!({"title": "T", "body": "B"})),
            android: Some(json!({"collapse_key": 3})),
            validate_only: true,
        })
        .expect("valid");
        let again = HmsMessage::from_stored(&m.to_stored()).expect("rebuilt");
        assert!(again.validate_only());
        assert_eq!(again.body(["x"]), m.body(["x"]));
        assert_eq!(body_json(&again, &["x"])["validate_only"], true);
        assert!(HmsMessage::from_stored(b"{}").is_err());
        assert!(HmsMessage::from_stored(b"nope").is_err());
    }

    #[test]
    fn bad_fields_are_named() {
        let field = |r: Result<HmsMessage, MessageError>| match r {
            Err(MessageError::Field(FieldError { field, .. })) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(build(Some(json!([1])), None, None)), "data");
        assert_eq!(field(build(None, None, None)), "data");
        assert_eq!(field(build(Some(json!({})), None, None)), "data");
        assert_eq!(
            field(build(
                None,
                Some(json!({"title": "T", "body": "B", "icon": "x"})),
                None
            )),
            "notification"
        );
        assert_eq!(
            field(build(None, Some(json!({"title": 1, "body": "B"})), None)),
            "notification"
        );
        assert_eq!(
            field(build(
                None,
                Some(json!({"title": "T", "body": "B", "image": "http://x"})),
                None
            )),
            "notification"
        );
        for android in [
            json!([]),
            json!({"urgency": "high"}),
            json!({"ttl": 60}),
            json!({"ttl": "1h"}),
            json!({"collapse_key": 101}),
            json!({"data": {}}),
            json!({"fast_app_target": 3}),
            json!({"notification": {"title": "T", "body": "B", "click_action": {"type": 1}}}),
            json!({"notification": {"title": "T", "body": "B", "click_action": {"type": 2, "url": "http://x"}}}),
            json!({"notification": {"title": "T", "body": "B", "click_action": {"type": 4}}}),
            json!({"notification": []}),
        ] {
            assert_eq!(
                field(build(Some(json!("d")), None, Some(android.clone()))),
                "android",
                "{android}"
            );
        }
    }

    #[test]
    fn the_size_limit_leaves_the_tokens_out_and_is_413() {
        // `{"data":"…"}` is 11 bytes around the text.
        let fits = "x".repeat(MAX_MESSAGE_BYTES - 11);
        let m = build(Some(json!(fits)), None, None).expect("fits");
        let tokens: Vec<String> = (0..1000).map(|i| format!("{i:0>120}")).collect();
        assert!(m.body(tokens.iter().map(String::as_str)).len() > 100_000);
        let over = "x".repeat(MAX_MESSAGE_BYTES - 10);
        assert!(matches!(
            build(Some(json!(over)), None, None),
            Err(MessageError::TooLarge(_))
        ));
    }

    #[test]
    fn ttl_text_sets_the_deadline() {
        assert_eq!(parse_ttl("86400s"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("1.5"), Some(Duration::from_millis(1500)));
        for bad in ["", "s", "1.", ".5", "1.1234567890", "1h", "-1"] {
            assert_eq!(parse_ttl(bad), None, "{bad}");
        }
        let m = build(Some(json!("d")), None, Some(json!({"ttl": "60s"}))).expect("valid");
        let t0 = SystemTime::UNIX_EPOCH;
        assert_eq!(m.expires_at(t0), Some(t0 + Duration::from_secs(60)));
        let zero = build(Some(json!("d")), None, Some(json!({"ttl": "0"}))).expect("valid");
        assert_eq!(zero.expires_at(t0), None);
    }
}
