//! What one Google job sends: the data and notification (shared by every token)
//! and the delivery options, validated once at the API and pre-serialized so
//! that per-token work is splicing the token into a prepared body.
//!
//! # Data values become strings
//!
//! FCM v1 only accepts string values in `message.data` (the mock, like Google,
//! answers 400 otherwise), while GoCM senders routinely send numbers, booleans
//! and nested objects. Every value is therefore converted once, here:
//! strings stay as they are; numbers, booleans and `null` become their JSON text
//! (`1.5` → `"1.5"`, `true` → `"true"`, `null` → `"null"`); arrays and objects
//! become their compact JSON serialization (`{"a":1}` → `"{\"a\":1}"`). The
//! legacy API gets the same strings, which is also what the device would have
//! seen from it.

use bytes::Bytes;

use crate::message::field_error;
pub use crate::message::{FieldError, MessageError, PayloadTooLarge};
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime};

/// Longest `time_to_live` Google accepts: 28 days, in seconds.
pub const MAX_TIME_TO_LIVE: i64 = 2_419_200;

/// FCM's limit on data plus notification, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 4096;

/// Delivery priority (`priority`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// `high`: wake the device now (v1: `android.priority = HIGH`).
    High,
    /// `normal`: may be delayed for battery (v1: `NORMAL`).
    Normal,
}

impl Priority {
    /// Parses `high` or `normal`, any case.
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("high") {
            Some(Priority::High)
        } else if s.eq_ignore_ascii_case("normal") {
            Some(Priority::Normal)
        } else {
            None
        }
    }

    fn legacy(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
        }
    }

    fn v1(self) -> &'static str {
        match self {
            Priority::High => "HIGH",
            Priority::Normal => "NORMAL",
        }
    }
}

/// The fields of a `/gcm/send` request, as received.
#[derive(Debug, Default, Clone)]
pub struct GoogleFields<'a> {
    /// `payload`: the data, a serialized JSON object (GoCM sends it as a JSON
    /// string form field; the JSON API serializes its object).
    pub payload: Option<&'a [u8]>,
    /// `notification`: a serialized JSON object, optional.
    pub notification: Option<&'a [u8]>,
    /// `collapse_key`.
    pub collapse_key: Option<&'a str>,
    /// `priority`: `high` or `normal`.
    pub priority: Option<&'a str>,
    /// `time_to_live` in seconds, 0..=2419200.
    pub time_to_live: Option<i64>,
}

/// Who a Google job's "tokens" are. A topic or condition job has exactly one
/// "token", the topic name or the condition, and FCM fans the message out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Device registration tokens (`message.token`, `registration_ids`).
    #[default]
    Tokens,
    /// A topic name (`message.topic`; legacy `to: /topics/<name>`).
    Topic,
    /// A topic condition (`message.condition`; legacy `condition`).
    Condition,
}

/// Options beyond the `/gcm/send` fields, used by the gorush routes and the
/// topic sends. `Default` is what `/gcm/send` with tokens means.
#[derive(Debug, Clone, Copy, Default)]
pub struct GoogleExtras<'a> {
    /// What the job's tokens are.
    pub target: Target,
    /// v1 `validate_only` / legacy `dry_run`: FCM checks, nothing is delivered.
    pub dry_run: bool,
    /// v1 `android.restricted_package_name` / legacy `restricted_package_name`.
    pub restricted_package_name: Option<&'a str>,
}

/// The request fields as a backend stores them (JSON), so every gateway and
/// every restart rebuilds the same message ([`GoogleMessage::from_stored`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    payload: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    notification: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    collapse_key: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    priority: Option<std::borrow::Cow<'a, str>>,
    time_to_live: Option<i64>,
    #[serde(default, skip_serializing_if = "is_tokens")]
    target: Target,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    dry_run: bool,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    restricted_package_name: Option<std::borrow::Cow<'a, str>>,
}

fn is_tokens(t: &Target) -> bool {
    *t == Target::Tokens
}

impl GoogleFields<'_> {
    /// The stored form of these fields.
    pub fn to_stored(&self) -> Vec<u8> {
        self.to_stored_with(GoogleExtras::default())
    }

    /// The stored form of these fields and `extras`.
    pub fn to_stored_with(&self, extras: GoogleExtras<'_>) -> Vec<u8> {
        let stored = Stored {
            target: extras.target,
            dry_run: extras.dry_run,
            restricted_package_name: extras.restricted_package_name.map(Into::into),
            payload: self.payload.map(String::from_utf8_lossy),
            notification: self.notification.map(String::from_utf8_lossy),
            collapse_key: self.collapse_key.map(Into::into),
            priority: self.priority.map(Into::into),
            time_to_live: self.time_to_live,
        };
        serde_json::to_vec(&stored).unwrap_or_default()
    }
}

/// The per-job part of every Google request, pre-serialized for both APIs.
#[derive(Debug, Clone)]
pub struct GoogleMessage {
    /// What the job's tokens are (devices, or one topic or condition).
    pub target: Target,
    /// `collapse_key`, when given.
    pub collapse_key: Option<String>,
    /// `priority`, when given.
    pub priority: Option<Priority>,
    /// `time_to_live` in seconds, when given.
    pub time_to_live: Option<u32>,
    /// Serialized data (after string conversion) plus notification, in bytes.
    pub payload_size: usize,
    /// v1: everything of `{"message":{"token":<TOKEN>` that follows the token.
    v1_tail: Bytes,
    /// Legacy: everything of `{"registration_ids":[...]` that follows the list.
    legacy_tail: Bytes,
}

/// Notification keys sent as given to the legacy API, and where v1 puts them.
const NOTIFICATION_KEYS: [(&str, V1Place); 13] = [
    ("title", V1Place::Notification("title")),
    ("body", V1Place::Notification("body")),
    ("image", V1Place::Notification("image")),
    ("icon", V1Place::Android("icon")),
    ("color", V1Place::Android("color")),
    ("sound", V1Place::Android("sound")),
    ("tag", V1Place::Android("tag")),
    ("click_action", V1Place::Android("click_action")),
    ("body_loc_key", V1Place::Android("body_loc_key")),
    ("body_loc_args", V1Place::Android("body_loc_args")),
    ("title_loc_key", V1Place::Android("title_loc_key")),
    ("title_loc_args", V1Place::Android("title_loc_args")),
    ("android_channel_id", V1Place::Android("channel_id")),
];

#[derive(Debug, Clone, Copy)]
enum V1Place {
    /// `message.notification.<name>`.
    Notification(&'static str),
    /// `message.android.notification.<name>`.
    Android(&'static str),
}

impl GoogleMessage {
    /// Rebuilds a message from [`GoogleFields::to_stored`]'s bytes.
    pub fn from_stored(stored: &[u8]) -> Result<Self, MessageError> {
        let s: Stored<'_> = serde_json::from_slice(stored)
            .map_err(|e| field_error("stored", format!("unreadable stored Google message: {e}")))?;
        Self::with_extras(
            GoogleFields {
                payload: s.payload.as_deref().map(str::as_bytes),
                notification: s.notification.as_deref().map(str::as_bytes),
                collapse_key: s.collapse_key.as_deref(),
                priority: s.priority.as_deref(),
                time_to_live: s.time_to_live,
            },
            GoogleExtras {
                target: s.target,
                dry_run: s.dry_run,
                restricted_package_name: s.restricted_package_name.as_deref(),
            },
        )
    }

    /// Validates the fields the way FCM would, so a bad request is refused
    /// before any token is queued, and prepares both request bodies.
    pub fn new(fields: GoogleFields<'_>) -> Result<Self, MessageError> {
        Self::with_extras(fields, GoogleExtras::default())
    }

    /// [`GoogleMessage::new`] with the options of [`GoogleExtras`].
    pub fn with_extras(
        fields: GoogleFields<'_>,
        extras: GoogleExtras<'_>,
    ) -> Result<Self, MessageError> {
        let data = match fields.payload {
            None => Map::new(),
            Some(bytes) => stringify_data(parse_object("payload", bytes)?)?,
        };
        let notification = match fields.notification {
            None => None,
            Some(bytes) => {
                let object = parse_object("notification", bytes)?;
                check_notification(&object)?;
                (!object.is_empty()).then_some(object)
            }
        };
        if data.is_empty() && notification.is_none() {
            return Err(field_error(
                "payload",
                "nothing to send: give a payload (data object) or a notification",
            )
            .into());
        }
        let data_json = (!data.is_empty()).then_some(Value::Object(data));
        let notification_json = notification.map(Value::Object);
        let size = json_len(&data_json) + json_len(&notification_json);
        if size > MAX_PAYLOAD_BYTES {
            return Err(PayloadTooLarge {
                what: "data plus notification",
                size,
                limit: MAX_PAYLOAD_BYTES,
                upstream: "FCM",
            }
            .into());
        }
        let collapse_key = fields
            .collapse_key
            .filter(|k| !k.is_empty())
            .map(str::to_owned);
        let priority = match fields.priority {
            None | Some("") => None,
            Some(p) => Some(Priority::parse(p).ok_or_else(|| {
                field_error("priority", format!("{p:?} is not \"high\" or \"normal\""))
            })?),
        };
        let time_to_live = match fields.time_to_live {
            None => None,
            Some(ttl) if (0..=MAX_TIME_TO_LIVE).contains(&ttl) => u32::try_from(ttl).ok(),
            Some(ttl) => {
                return Err(field_error(
                    "time_to_live",
                    format!("{ttl} is outside 0..={MAX_TIME_TO_LIVE} seconds (28 days)"),
                )
                .into());
            }
        };
        let package = match extras.restricted_package_name {
            None | Some("") => None,
            Some(p) if p.len() <= 255 && !p.contains(char::is_whitespace) => Some(p),
            Some(p) => {
                return Err(field_error(
                    "restricted_package_name",
                    format!("{p:?} is not an Android package name"),
                )
                .into());
            }
        };
        let v1_tail = v1_tail(
            &data_json,
            notification_json.as_ref(),
            collapse_key.as_deref(),
            priority,
            time_to_live,
            package,
            extras.dry_run,
        );
        let mut legacy_tail = legacy_tail(
            data_json,
            notification_json,
            collapse_key.as_deref(),
            priority,
            time_to_live,
        );
        if package.is_some() || extras.dry_run {
            legacy_tail = legacy_extras(&legacy_tail, package, extras.dry_run);
        }
        Ok(Self {
            target: extras.target,
            collapse_key,
            priority,
            time_to_live,
            payload_size: size,
            v1_tail,
            legacy_tail,
        })
    }

    /// The instant after which the gateway must not send this message, for a
    /// job accepted at `accepted`: `accepted + time_to_live`. `None` when no
    /// TTL was given, and also for a TTL of 0, which means "deliver now or
    /// drop" to FCM: FCM enforces that itself, and the gateway must still send
    /// it once.
    pub fn expires_at(&self, accepted: SystemTime) -> Option<SystemTime> {
        match self.time_to_live {
            None | Some(0) => None,
            Some(ttl) => accepted.checked_add(Duration::from_secs(u64::from(ttl))),
        }
    }

    /// The v1 `messages:send` body for one token:
    /// `{"message":{"token":<TOKEN>, ...rest}}`, the token JSON-escaped.
    /// A topic or condition job names its target instead of a token.
    pub fn v1_body(&self, token: &str) -> Bytes {
        let head: &[u8] = match self.target {
            Target::Tokens => br#"{"message":{"token":"#,
            Target::Topic => br#"{"message":{"topic":"#,
            Target::Condition => br#"{"message":{"condition":"#,
        };
        let mut body = Vec::with_capacity(head.len() + token.len() + 2 + self.v1_tail.len());
        body.extend_from_slice(head);
        push_json_string(&mut body, token);
        body.extend_from_slice(&self.v1_tail);
        body.into()
    }

    /// The legacy multicast body for `tokens`:
    /// `{"registration_ids":[...], ...rest}`, every token JSON-escaped.
    /// A topic job sends `{"to":"/topics/<name>"`, a condition job
    /// `{"condition":<condition>` (each has one "token").
    pub fn legacy_body<'t>(&self, tokens: impl IntoIterator<Item = &'t str>) -> Bytes {
        let mut body = Vec::with_capacity(self.legacy_tail.len() + 64 * 1024);
        if self.target != Target::Tokens {
            let target = tokens.into_iter().next().unwrap_or_default();
            if self.target == Target::Topic {
                body.extend_from_slice(br#"{"to":"#);
                push_json_string(&mut body, &format!("/topics/{target}"));
            } else {
                body.extend_from_slice(br#"{"condition":"#);
                push_json_string(&mut body, target);
            }
            body.extend_from_slice(&self.legacy_tail);
            return body.into();
        }
        body.extend_from_slice(br#"{"registration_ids":["#);
        for (i, token) in tokens.into_iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            push_json_string(&mut body, token);
        }
        body.push(b']');
        body.extend_from_slice(&self.legacy_tail);
        body.into()
    }
}

fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail; the fallback keeps the body valid JSON anyway.
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

fn json_len(value: &Option<Value>) -> usize {
    value.as_ref().map_or(0, |v| v.to_string().len())
}

fn parse_object(field: &'static str, bytes: &[u8]) -> Result<Map<String, Value>, FieldError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(field_error(field, "must be a JSON object")),
        Err(e) => Err(field_error(field, format!("not valid JSON ({e})"))),
    }
}

/// Applies the string conversion of the module docs and refuses the keys FCM
/// reserves, which it would refuse for every token.
fn stringify_data(data: Map<String, Value>) -> Result<Map<String, Value>, FieldError> {
    let mut out = Map::new();
    for (key, value) in data {
        if key.is_empty()
            || key == "from"
            || key == "message_type"
            || key.starts_with("google.")
            || key.starts_with("gcm.")
        {
            return Err(field_error(
                "payload",
                format!("key {key:?} is reserved by FCM (from, message_type, google.*, gcm.*)"),
            ));
        }
        let text = match value {
            Value::String(s) => s,
            other => other.to_string(),
        };
        out.insert(key, Value::String(text));
    }
    Ok(out)
}

/// Accepts only keys both APIs can carry, with the types v1 expects, so a job
/// is never refused token by token at the upstream.
fn check_notification(object: &Map<String, Value>) -> Result<(), FieldError> {
    for (key, value) in object {
        if !NOTIFICATION_KEYS.iter().any(|(k, _)| k == key) {
            let known: Vec<&str> = NOTIFICATION_KEYS.iter().map(|(k, _)| *k).collect();
            return Err(field_error(
                "notification",
                format!("unsupported key {key:?}; use {}", known.join(", ")),
            ));
        }
        let ok = if key.ends_with("_loc_args") {
            value
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string))
        } else {
            value.is_string()
        };
        if !ok {
            let want = if key.ends_with("_loc_args") {
                "an array of strings"
            } else {
                "a string"
            };
            return Err(field_error(
                "notification",
                format!("notification.{key} must be {want}"),
            ));
        }
    }
    Ok(())
}

/// Serializes an object's members without the braces: `,"k":v,...` followed by
/// `close`, or just `close` when empty.
fn tail(object: Map<String, Value>, close: &[u8]) -> Bytes {
    let mut out = Vec::new();
    if !object.is_empty() {
        let text = Value::Object(object).to_string();
        // `text` is `{...}`: keep the members, put a comma in front.
        out.push(b',');
        out.extend_from_slice(&text.as_bytes()[1..text.len() - 1]);
    }
    out.extend_from_slice(close);
    out.into()
}

fn v1_tail(
    data: &Option<Value>,
    notification: Option<&Value>,
    collapse_key: Option<&str>,
    priority: Option<Priority>,
    time_to_live: Option<u32>,
    restricted_package_name: Option<&str>,
    validate_only: bool,
) -> Bytes {
    let mut message = Map::new();
    if let Some(data) = data {
        message.insert("data".into(), data.clone());
    }
    let mut top = Map::new();
    let mut android_notification = Map::new();
    if let Some(Value::Object(n)) = notification {
        for (key, value) in n {
            let place = NOTIFICATION_KEYS
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, p)| *p);
            match place {
                Some(V1Place::Notification(name)) => {
                    top.insert(name.into(), value.clone());
                }
                Some(V1Place::Android(name)) => {
                    android_notification.insert(name.into(), value.clone());
                }
                // check_notification refused every other key.
                None => {}
            }
        }
    }
    if !top.is_empty() {
        message.insert("notification".into(), Value::Object(top));
    }
    let mut android = Map::new();
    if let Some(key) = collapse_key {
        android.insert("collapse_key".into(), key.into());
    }
    if let Some(p) = priority {
        android.insert("priority".into(), p.v1().into());
    }
    if let Some(ttl) = time_to_live {
        // v1 takes a protobuf Duration: decimal seconds with an `s` suffix.
        android.insert("ttl".into(), format!("{ttl}s").into());
    }
    if !android_notification.is_empty() {
        android.insert("notification".into(), Value::Object(android_notification));
    }
    if let Some(package) = restricted_package_name {
        android.insert("restricted_package_name".into(), package.into());
    }
    if !android.is_empty() {
        message.insert("android".into(), Value::Object(android));
    }
    if validate_only {
        tail(message, br#"},"validate_only":true}"#)
    } else {
        tail(message, b"}}")
    }
}

/// Adds `restricted_package_name` and `dry_run` to a legacy tail (`,...}`).
fn legacy_extras(tail: &[u8], package: Option<&str>, dry_run: bool) -> Bytes {
    let mut out = tail.strip_suffix(b"}").unwrap_or(tail).to_vec();
    if let Some(package) = package {
        out.extend_from_slice(br#","restricted_package_name":"#);
        push_json_string(&mut out, package);
    }
    if dry_run {
        out.extend_from_slice(br#","dry_run":true"#);
    }
    out.push(b'}');
    out.into()
}

fn legacy_tail(
    data: Option<Value>,
    notification: Option<Value>,
    collapse_key: Option<&str>,
    priority: Option<Priority>,
    time_to_live: Option<u32>,
) -> Bytes {
    let mut rest = Map::new();
    if let Some(data) = data {
        rest.insert("data".into(), data);
    }
    if let Some(notification) = notification {
        rest.insert("notification".into(), notification);
    }
    if let Some(key) = collapse_key {
        rest.insert("collapse_key".into(), key.into());
    }
    if let Some(p) = priority {
        rest.insert("priority".into(), p.legacy().into());
    }
    if let Some(ttl) = time_to_live {
        rest.insert("time_to_live".into(), ttl.into());
    }
    tail(rest, b"}")
}

#[cfg(test)]
mod tests;
