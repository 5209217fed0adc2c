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
//!
//! # FCM v1's blocks
//!
//! `android`, `apns`, `webpush` and `fcm_options` ([`crate::fcm::blocks`])
//! ride in the v1 message as given, `android` over what the GoCM fields put
//! there; legacy GCM has none, and refuses a request that carries one.
//!
//! Split by concern: [`content`] checks what the message says, `wire`
//! writes the two bodies.

mod content;
mod wire;

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::{Map, Value};

use self::content::{check_notification, stringify_data};
use self::wire::{Parts, push_json_string};
use super::blocks::{BlockFields, parse_object};
use crate::message::field_error;
pub use crate::message::{FieldError, MessageError, PayloadTooLarge};

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
    /// FCM v1's `android`, `apns`, `webpush` and `fcm_options` blocks.
    pub blocks: BlockFields<'a>,
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
    /// FCM v1's blocks, each the JSON text of an object (absent in what
    /// older versions stored).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    android: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    apns: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    webpush: Option<Cow<'a, str>>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    fcm_options: Option<Cow<'a, str>>,
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
            android: self.blocks.android.map(String::from_utf8_lossy),
            apns: self.blocks.apns.map(String::from_utf8_lossy),
            webpush: self.blocks.webpush.map(String::from_utf8_lossy),
            fcm_options: self.blocks.fcm_options.map(String::from_utf8_lossy),
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
    /// How long FCM keeps the message, in seconds, when given:
    /// `android.ttl` (whole seconds) when the block has one, else
    /// `time_to_live`.
    pub time_to_live: Option<u32>,
    /// Serialized data (after string conversion) plus notification, in bytes.
    pub payload_size: usize,
    /// v1: everything of `{"message":{"token":<TOKEN>` that follows the token.
    v1_tail: Bytes,
    /// Legacy: everything of `{"registration_ids":[...]` that follows the list.
    legacy_tail: Bytes,
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
                blocks: BlockFields {
                    android: s.android.as_deref().map(str::as_bytes),
                    apns: s.apns.as_deref().map(str::as_bytes),
                    webpush: s.webpush.as_deref().map(str::as_bytes),
                    fcm_options: s.fcm_options.as_deref().map(str::as_bytes),
                },
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
        let blocks = fields.blocks.parse()?;
        let notification = match fields.notification {
            None => None,
            Some(bytes) => {
                let object = parse_object("notification", bytes)?;
                check_notification(&object)?;
                (!object.is_empty()).then_some(object)
            }
        };
        if data.is_empty() && notification.is_none() && !blocks.carries_content() {
            return Err(field_error(
                "payload",
                "nothing to send: give a payload (data object), a notification, or an android, apns or webpush block",
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
        let parts = Parts {
            data: data_json.as_ref(),
            notification: notification_json.as_ref(),
            collapse_key: collapse_key.as_deref(),
            priority,
            time_to_live,
            restricted_package_name: package,
            dry_run: extras.dry_run,
            blocks: &blocks,
        };
        let v1_tail = wire::v1_tail(&parts);
        let legacy_tail = wire::legacy_tail(&parts);
        // The gateway stops trying when FCM would drop the message:
        // `android.ttl` when the block gives one (it is what goes on the
        // wire), else `time_to_live`.
        let time_to_live = match blocks.android_ttl() {
            Some(ttl) => Some(u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX)),
            None => time_to_live,
        };
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

/// A `POST /send` target's own fields on Google: its `data` merged over
/// the shared data (then made strings like the rest). Its `badge`, when the
/// message shows a notification: FCM v1's
/// `android.notification.notification_count` and `apns.payload.aps.badge`
/// (legacy GCM has neither block and gets no badge); on a data-only
/// message, `data.badge` (a notification field would turn it into a shown
/// notification).
impl crate::message::personal::Personalise for GoogleMessage {
    fn personalise(
        &self,
        stored: &[u8],
        personal: &crate::message::personal::Personal,
    ) -> Result<Self, MessageError> {
        let mut s: Stored<'_> = serde_json::from_slice(stored)
            .map_err(|e| field_error("stored", format!("unreadable stored Google message: {e}")))?;
        let mut data = match s.payload.as_deref() {
            Some(text) => parse_object("payload", text.as_bytes())?,
            None => Map::new(),
        };
        personal.merge_data(&mut data);
        let shown = s.notification.is_some()
            || s.android
                .as_deref()
                .is_some_and(|a| a.contains("\"notification\""));
        if let Some(badge) = personal.badge {
            if !shown {
                data.insert("badge".into(), badge.to_string().into());
            } else {
                let set = |text: &mut Option<Cow<'_, str>>, path: &[&str], value: Value| {
                    let mut block = match text.as_deref().map(serde_json::from_str::<Value>) {
                        Some(Ok(Value::Object(map))) => map,
                        _ => Map::new(),
                    };
                    let mut at = &mut block;
                    for key in &path[..path.len() - 1] {
                        let next = at
                            .entry(key.to_string())
                            .or_insert_with(|| Value::Object(Map::new()));
                        if !next.is_object() {
                            *next = Value::Object(Map::new());
                        }
                        let Some(map) = next.as_object_mut() else {
                            return;
                        };
                        at = map;
                    }
                    at.insert(path[path.len() - 1].to_owned(), value);
                    *text = Some(Cow::Owned(Value::Object(block).to_string()));
                };
                set(
                    &mut s.android,
                    &["notification", "notification_count"],
                    badge.into(),
                );
                set(&mut s.apns, &["payload", "aps", "badge"], badge.into());
            }
        }
        s.payload = (!data.is_empty()).then(|| Cow::Owned(Value::Object(data).to_string()));
        let personalised = serde_json::to_vec(&s).unwrap_or_default();
        Self::from_stored(&personalised)
    }
}

fn json_len(value: &Option<Value>) -> usize {
    value.as_ref().map_or(0, |v| v.to_string().len())
}

#[cfg(test)]
mod tests;
