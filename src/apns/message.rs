//! What one APNs job sends: the payload (shared by every token) and the
//! headers, each validated when built so workers never re-check.

use bytes::Bytes;
use http::HeaderValue;

use crate::message::field_error;
pub use crate::message::{FieldError, MessageError, PayloadTooLarge};

/// `apns-push-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PushType {
    /// A visible notification (the default).
    #[default]
    Alert,
    /// Content-available background update.
    Background,
    /// Location query.
    Location,
    /// VoIP call (PushKit); payload limit 5120 bytes.
    Voip,
    /// watchOS complication.
    Complication,
    /// File provider change.
    FileProvider,
    /// MDM check-in.
    Mdm,
    /// Live Activity update.
    LiveActivity,
    /// Push to Talk.
    PushToTalk,
    /// Widget reload.
    Widgets,
    /// Control Center control reload.
    Controls,
}

impl PushType {
    /// Every push type, for docs and tests.
    pub const ALL: [PushType; 11] = [
        PushType::Alert,
        PushType::Background,
        PushType::Location,
        PushType::Voip,
        PushType::Complication,
        PushType::FileProvider,
        PushType::Mdm,
        PushType::LiveActivity,
        PushType::PushToTalk,
        PushType::Widgets,
        PushType::Controls,
    ];

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            PushType::Alert => "alert",
            PushType::Background => "background",
            PushType::Location => "location",
            PushType::Voip => "voip",
            PushType::Complication => "complication",
            PushType::FileProvider => "fileprovider",
            PushType::Mdm => "mdm",
            PushType::LiveActivity => "liveactivity",
            PushType::PushToTalk => "pushtotalk",
            PushType::Widgets => "widgets",
            PushType::Controls => "controls",
        }
    }

    /// Parses the header value.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Largest payload Apple accepts for this push type.
    pub fn max_payload(self) -> usize {
        match self {
            PushType::Voip => 5120,
            _ => 4096,
        }
    }
}

/// `apns-priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// 10: deliver immediately.
    Immediate = 10,
    /// 5: deliver at a power-friendly time.
    PowerConsiderate = 5,
    /// 1: lowest, may be coalesced.
    Low = 1,
}

impl Priority {
    /// Parses 10, 5 or 1.
    pub fn from_number(n: i64) -> Option<Self> {
        match n {
            10 => Some(Priority::Immediate),
            5 => Some(Priority::PowerConsiderate),
            1 => Some(Priority::Low),
            _ => None,
        }
    }

    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Priority::Immediate => "10",
            Priority::PowerConsiderate => "5",
            Priority::Low => "1",
        })
    }
}

/// The per-job part of every APNs request, with header values prebuilt.
#[derive(Debug, Clone)]
pub struct ApnsMessage {
    /// The JSON payload, sent as is.
    pub payload: Bytes,
    /// `apns-topic`.
    pub topic: HeaderValue,
    /// `apns-push-type`.
    pub push_type: PushType,
    /// `apns-priority`, when given.
    pub priority: Option<Priority>,
    /// `apns-expiration` (seconds since epoch; 0 = try once), when given.
    pub expiration: Option<u64>,
    /// `apns-collapse-id`, when given.
    pub collapse_id: Option<HeaderValue>,
    /// A broadcast (see [`crate::apns::broadcast`]): the request path
    /// `/4/broadcasts/apps/<bundle>`, and the job's one "token" is the channel
    /// id (its base64 text). `None` for device sends.
    pub broadcast: Option<Bytes>,
}

/// The fields of a send request, as received.
#[derive(Debug, Default, Clone)]
pub struct ApnsFields<'a> {
    /// Serialized JSON payload.
    pub payload: &'a [u8],
    /// `topic`; falls back to `apns.topic`.
    pub topic: Option<&'a str>,
    /// `push_type`.
    pub push_type: Option<&'a str>,
    /// `priority`.
    pub priority: Option<i64>,
    /// `expiration`.
    pub expiration: Option<i64>,
    /// `collapse_id`.
    pub collapse_id: Option<&'a str>,
}

/// Longest `apns-topic` accepted: a bundle id plus the longest suffix a push
/// type adds (`.push-type.liveactivity`). Apple documents no number; 255
/// bytes is far above any real bundle id and keeps headers small.
pub const MAX_TOPIC_BYTES: usize = 255;

/// Longest `apns-collapse-id` (Apple: "must not exceed 64 bytes").
pub const MAX_COLLAPSE_ID_BYTES: usize = 64;

/// A topic is a bundle id (Apple: only A–Z, a–z, 0–9, `-` and `.`), with
/// the suffix of its push type, at most [`MAX_TOPIC_BYTES`].
pub fn check_topic(topic: &str) -> Result<HeaderValue, MessageError> {
    let ok = !topic.is_empty()
        && topic.len() <= MAX_TOPIC_BYTES
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    ok.then(|| HeaderValue::from_str(topic).ok())
        .flatten()
        .ok_or_else(|| {
            field_error(
                "topic",
                format!(
                    "must be a bundle id: letters, digits, '-' and '.' only, at most {MAX_TOPIC_BYTES} bytes"
                ),
            )
            .into()
        })
}

/// A collapse id is visible ASCII (`!` to `~`, no space or control
/// character), at most [`MAX_COLLAPSE_ID_BYTES`].
pub fn check_collapse_id(id: &str) -> Result<HeaderValue, MessageError> {
    if id.len() > MAX_COLLAPSE_ID_BYTES {
        return Err(field_error(
            "collapse_id",
            format!("at most {MAX_COLLAPSE_ID_BYTES} bytes, got {}", id.len()),
        )
        .into());
    }
    id.bytes()
        .all(|b| b.is_ascii_graphic())
        .then(|| HeaderValue::from_str(id).ok())
        .flatten()
        .ok_or_else(|| {
            field_error(
                "collapse_id",
                "must be visible ASCII ('!' to '~': no space, tab, control or non-ASCII character)",
            )
            .into()
        })
}

/// The request fields as a backend stores them (JSON): the validated
/// request as received, so every gateway and every restart rebuilds the
/// same message ([`ApnsMessage::from_stored`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    payload: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    topic: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    push_type: Option<std::borrow::Cow<'a, str>>,
    priority: Option<i64>,
    expiration: Option<i64>,
    #[serde(borrow)]
    collapse_id: Option<std::borrow::Cow<'a, str>>,
    /// A broadcast's bundle id (absent for device sends).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    broadcast: Option<std::borrow::Cow<'a, str>>,
}

impl ApnsFields<'_> {
    /// The stored form of these fields.
    pub fn to_stored(&self) -> Vec<u8> {
        let stored = Stored {
            payload: String::from_utf8_lossy(self.payload),
            topic: self.topic.map(Into::into),
            push_type: self.push_type.map(Into::into),
            priority: self.priority,
            expiration: self.expiration,
            collapse_id: self.collapse_id.map(Into::into),
            broadcast: None,
        };
        serde_json::to_vec(&stored).unwrap_or_default()
    }
}

/// The stored form of a broadcast to `bundle` (rebuilt by
/// [`ApnsMessage::from_stored`] through [`crate::apns::broadcast::message`]).
pub fn broadcast_to_stored(
    fields: &crate::apns::broadcast::BroadcastFields<'_>,
    bundle: &str,
) -> Vec<u8> {
    let stored = Stored {
        payload: String::from_utf8_lossy(fields.payload),
        topic: None,
        push_type: None,
        priority: fields.priority,
        expiration: fields.expiration,
        collapse_id: None,
        broadcast: Some(bundle.into()),
    };
    serde_json::to_vec(&stored).unwrap_or_default()
}

impl ApnsMessage {
    /// Rebuilds a message from [`ApnsFields::to_stored`]'s bytes.
    pub fn from_stored(stored: &[u8], default_topic: Option<&str>) -> Result<Self, MessageError> {
        let s: Stored<'_> = serde_json::from_slice(stored)
            .map_err(|e| field_error("stored", format!("unreadable stored APNs message: {e}")))?;
        if let Some(bundle) = &s.broadcast {
            return crate::apns::broadcast::message(
                crate::apns::broadcast::BroadcastFields {
                    payload: s.payload.as_bytes(),
                    priority: s.priority,
                    expiration: s.expiration,
                },
                bundle,
            );
        }
        Self::new(
            ApnsFields {
                payload: s.payload.as_bytes(),
                topic: s.topic.as_deref(),
                push_type: s.push_type.as_deref(),
                priority: s.priority,
                expiration: s.expiration,
                collapse_id: s.collapse_id.as_deref(),
            },
            default_topic,
        )
    }

    /// Validates the fields the way APNs would, so a bad request is refused
    /// before any token is queued.
    pub fn new(fields: ApnsFields<'_>, default_topic: Option<&str>) -> Result<Self, MessageError> {
        let push_type = match fields.push_type {
            None | Some("") => PushType::Alert,
            Some(s) => PushType::parse(s).ok_or_else(|| {
                field_error("push_type", format!("unknown push type {s:?}; one of alert, background, location, voip, complication, fileprovider, mdm, liveactivity, pushtotalk, widgets, controls"))
            })?,
        };
        let payload = trim_json(fields.payload);
        if !payload.starts_with(b"{") {
            return Err(field_error("payload", "must be a JSON object").into());
        }
        let limit = push_type.max_payload();
        if payload.len() > limit {
            return Err(PayloadTooLarge {
                what: "payload",
                size: payload.len(),
                limit,
                upstream: "APNs (for this push type)",
            }
            .into());
        }
        if push_type == PushType::LiveActivity {
            super::live_activity::check(payload, super::live_activity::Via::Device)?;
        }
        let topic = fields
            .topic
            .filter(|t| !t.is_empty())
            .or(default_topic)
            .ok_or_else(|| field_error("topic", "no topic given and no apns.topic configured"))?;
        let topic = match push_type {
            // Apple requires these suffixes; adding them here saves every sender
            // from a DeviceTokenNotForTopic it cannot explain.
            PushType::Voip if !topic.ends_with(".voip") => format!("{topic}.voip"),
            PushType::Complication if !topic.ends_with(".complication") => {
                format!("{topic}.complication")
            }
            PushType::LiveActivity if !topic.ends_with(".push-type.liveactivity") => {
                format!("{topic}.push-type.liveactivity")
            }
            PushType::PushToTalk if !topic.ends_with(".voip-ptt") => format!("{topic}.voip-ptt"),
            _ => topic.to_owned(),
        };
        let topic = check_topic(&topic)?;
        let priority = match fields.priority {
            None => None,
            Some(n) => Some(
                Priority::from_number(n)
                    .ok_or_else(|| field_error("priority", format!("{n} is not 10, 5 or 1")))?,
            ),
        };
        if priority == Some(Priority::Immediate) && push_type == PushType::Background {
            return Err(
                field_error("priority", "background pushes must use priority 5 or 1").into(),
            );
        }
        let expiration =
            match fields.expiration {
                None => None,
                Some(n) => Some(u64::try_from(n).map_err(|_| {
                    field_error("expiration", "must be 0 or a UNIX time in seconds")
                })?),
            };
        let collapse_id = match fields.collapse_id {
            None | Some("") => None,
            Some(id) => Some(check_collapse_id(id)?),
        };
        Ok(Self {
            payload: Bytes::copy_from_slice(payload),
            topic,
            push_type,
            priority,
            expiration,
            collapse_id,
            broadcast: None,
        })
    }

    /// The priority header, when one was given.
    pub fn priority_header(&self) -> Option<HeaderValue> {
        self.priority.map(Priority::header)
    }
}

fn trim_json(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

/// A `POST /send` target's own fields on APNs: its `data` keys beside
/// `aps` (over the shared ones), its `badge` as `aps.badge`; the payload
/// limit of the push type still holds.
impl crate::message::personal::Personalise for ApnsMessage {
    fn personalise(
        &self,
        _stored: &[u8],
        personal: &crate::message::personal::Personal,
    ) -> Result<Self, MessageError> {
        let mut payload: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&self.payload)
                .map_err(|e| field_error("payload", format!("not a JSON object: {e}")))?;
        for (key, value) in &personal.data {
            if key != "aps" {
                payload.insert(key.clone(), value.clone());
            }
        }
        if let Some(badge) = personal.badge {
            let aps = payload
                .entry("aps")
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if let Some(aps) = aps.as_object_mut() {
                aps.insert("badge".into(), badge.into());
            }
        }
        let bytes = serde_json::to_vec(&payload).unwrap_or_default();
        let limit = self.push_type.max_payload();
        if bytes.len() > limit {
            return Err(PayloadTooLarge {
                what: "payload with this target's data",
                size: bytes.len(),
                limit,
                upstream: "APNs (for this push type)",
            }
            .into());
        }
        Ok(Self {
            payload: Bytes::from(bytes),
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(payload: &[u8]) -> ApnsFields<'_> {
        ApnsFields {
            payload,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_to_alert_and_config_topic() {
        let m = ApnsMessage::new(fields(br#" {"aps":{}} "#), Some("com.example")).expect("valid");
        assert_eq!(m.push_type, PushType::Alert);
        assert_eq!(m.topic, "com.example");
        assert_eq!(&m.payload[..], br#"{"aps":{}}"#);
    }

    #[test]
    fn push_types_round_trip() {
        for t in PushType::ALL {
            assert_eq!(PushType::parse(t.as_str()), Some(t));
        }
        assert_eq!(PushType::parse("sms"), None);
    }

    #[test]
    fn payload_limits_follow_push_type() {
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(4090));
        assert!(matches!(
            ApnsMessage::new(fields(big.as_bytes()), Some("t")),
            Err(MessageError::TooLarge(_))
        ));
        let voip = ApnsFields {
            push_type: Some("voip"),
            ..fields(big.as_bytes())
        };
        let m = ApnsMessage::new(voip, Some("com.example")).expect("voip allows 5120");
        assert_eq!(m.topic, "com.example.voip");
    }

    #[test]
    fn bad_fields_are_named() {
        let long_collapse_id = "x".repeat(65);
        let cases: Vec<(ApnsFields<'_>, &str)> = vec![
            (
                ApnsFields {
                    priority: Some(7),
                    ..fields(b"{}")
                },
                "priority",
            ),
            (
                ApnsFields {
                    push_type: Some("sms"),
                    ..fields(b"{}")
                },
                "push_type",
            ),
            (
                ApnsFields {
                    collapse_id: Some(&long_collapse_id),
                    ..fields(b"{}")
                },
                "collapse_id",
            ),
            (
                ApnsFields {
                    expiration: Some(-1),
                    ..fields(b"{}")
                },
                "expiration",
            ),
            (fields(b"[1]"), "payload"),
            (
                ApnsFields {
                    push_type: Some("background"),
                    priority: Some(10),
                    ..fields(b"{}")
                },
                "priority",
            ),
        ];
        for (f, name) in cases {
            match ApnsMessage::new(f, Some("t")) {
                Err(MessageError::Field(e)) => assert_eq!(e.field, name),
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(matches!(
            ApnsMessage::new(fields(b"{}"), None),
            Err(MessageError::Field(FieldError { field, .. })) if field == "topic"
        ));
    }

    #[test]
    fn topic_and_collapse_id_are_checked_as_their_messages_say() {
        for good in ["com.example", "com.example-app.voip", "A1.b2"] {
            assert!(check_topic(good).is_ok(), "{good:?}");
        }
        let huge = "a".repeat(100_000);
        for bad in [
            "com.exämple",
            "com.example😀",
            "com.\texample",
            "com example",
            "",
            huge.as_str(),
            "com_example",
        ] {
            assert!(check_topic(bad).is_err(), "{bad:?}");
        }
        assert!(check_topic(&"a".repeat(MAX_TOPIC_BYTES)).is_ok());
        assert!(check_topic(&"a".repeat(MAX_TOPIC_BYTES + 1)).is_err());
        for good in ["x", "thread-1", "!~{}", &"x".repeat(64)] {
            assert!(check_collapse_id(good).is_ok(), "{good:?}");
        }
        for bad in ["a b", "a\tb", "ä", "😀", &"x".repeat(65), "a\u{7f}"] {
            assert!(check_collapse_id(bad).is_err(), "{bad:?}");
        }
    }
}
