//! The Web Push request as the API receives it, checked once: the message
//! (payload, TTL, urgency, topic) and every subscription, in the stored forms
//! the queue and backends keep (bytes), and back.
//!
//! Stored subscription: `p256dh (65) || auth (16) || endpoint URL`; shown
//! (reports, webhook) as the endpoint alone (see `job::TokenCodec::Subscription`).
//! Stored message fields: JSON text (see [`encode_fields`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::client::{Subscription, Urgency, WebPushMessage, valid_topic};
use super::declarative;
use super::ece::{self, AUTH_LEN, PUBLIC_KEY_LEN, UaKeys};
use super::origin::{Endpoint, OriginPolicy};

/// Default `TTL` when the request gives none: one day.
pub const DEFAULT_TTL: u32 = 86_400;
/// Longest `TTL` accepted: 28 days (push services cap it near there).
pub const MAX_TTL: u32 = 28 * 86_400;
/// Bytes of the stored keys before the endpoint.
const KEYS_LEN: usize = PUBLIC_KEY_LEN + AUTH_LEN;

/// The send body (`POST /webpush/send`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest<'a> {
    /// The subscriptions, as `PushSubscription.toJSON()` gives them (none in
    /// a stream's header or a `POST /send` body: they come one by one).
    #[serde(borrow, default)]
    pub subscriptions: Vec<&'a RawValue>,
    /// An object (sent as its JSON text) or a string (sent as is).
    #[serde(borrow)]
    pub payload: Option<&'a RawValue>,
    /// Seconds the push service keeps the message for an offline browser.
    pub ttl: Option<u32>,
    /// `very-low`, `low`, `normal`, `high`.
    pub urgency: Option<String>,
    /// Replaces an undelivered message with the same topic.
    pub topic: Option<String>,
    /// Declarative Web Push: `payload` is the notification (`title`,
    /// `navigate`, …) or already a declarative message
    /// ([`super::declarative::build`]).
    #[serde(default)]
    pub declarative: bool,
    /// Which `[webpush.apps.<name>]`.
    pub app: Option<String>,
    /// RFC 3339 time to send at.
    pub send_at: Option<String>,
    /// Or seconds from now.
    pub delay_seconds: Option<i64>,
}

#[derive(Deserialize)]
struct SubscriptionIn<'a> {
    #[serde(borrow)]
    endpoint: std::borrow::Cow<'a, str>,
    keys: KeysIn<'a>,
}

#[derive(Deserialize)]
struct KeysIn<'a> {
    #[serde(borrow)]
    p256dh: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    auth: std::borrow::Cow<'a, str>,
}

/// Why the message itself is refused (the whole request: 400 or 413).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// No payload, or neither an object nor a string.
    #[error("payload must be a JSON object or a string")]
    Payload,
    /// Too large for one record.
    #[error("payload is {len} bytes; Web Push carries at most {max} bytes (4096 encrypted)", max = ece::MAX_PLAINTEXT)]
    TooLarge {
        /// The plaintext length.
        len: usize,
    },
    /// TTL above the maximum.
    #[error("ttl must be 0..={MAX_TTL} seconds")]
    Ttl,
    /// Not an urgency word.
    #[error("urgency must be one of very-low, low, normal, high")]
    Urgency,
    /// Not a valid topic.
    #[error("topic must be 1 to 32 characters of A-Z a-z 0-9 - _")]
    Topic,
    /// A declarative push message the browser would not show.
    #[error("{0}")]
    Declarative(crate::message::FieldError),
}

impl MessageError {
    /// The request field at fault, for the 400 answer's `field`.
    pub fn field(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            MessageError::Payload | MessageError::TooLarge { .. } => Some("payload".into()),
            MessageError::Ttl => Some("ttl".into()),
            MessageError::Urgency => Some("urgency".into()),
            MessageError::Topic => Some("topic".into()),
            MessageError::Declarative(e) => Some(e.field.as_ref().into()),
        }
    }

    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            MessageError::TooLarge { .. } => "payload_too_large",
            _ => "bad_field",
        }
    }
}

/// Builds the message from the request's fields.
pub fn message(req: &SendRequest<'_>) -> Result<WebPushMessage, MessageError> {
    let raw = req.payload.ok_or(MessageError::Payload)?;
    let payload: Vec<u8> = match raw.get().trim_start().as_bytes().first() {
        Some(b'{') => {
            let object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(raw.get()).map_err(|_| MessageError::Payload)?;
            if req.declarative {
                let built = declarative::build(object).map_err(MessageError::Declarative)?;
                serde_json::to_vec(&built).map_err(|_| MessageError::Payload)?
            } else {
                // A payload already in the declarative shape is checked as one.
                if declarative::is_declarative(&object) {
                    declarative::check(&object).map_err(MessageError::Declarative)?;
                }
                raw.get().as_bytes().to_vec()
            }
        }
        Some(b'"') if req.declarative => {
            return Err(MessageError::Declarative(crate::message::field_error(
                "payload",
                "must be an object with title and navigate when declarative is true",
            )));
        }
        Some(b'"') => serde_json::from_str::<String>(raw.get())
            .map_err(|_| MessageError::Payload)?
            .into_bytes(),
        _ => return Err(MessageError::Payload),
    };
    if payload.len() > ece::MAX_PLAINTEXT {
        return Err(MessageError::TooLarge { len: payload.len() });
    }
    let ttl = req.ttl.unwrap_or(DEFAULT_TTL);
    if ttl > MAX_TTL {
        return Err(MessageError::Ttl);
    }
    let urgency = match req.urgency.as_deref() {
        None | Some("") => None,
        Some(u) => Some(Urgency::parse(u).ok_or(MessageError::Urgency)?),
    };
    let topic = match req.topic.as_deref() {
        None | Some("") => None,
        Some(t) if valid_topic(t) => Some(Arc::from(t)),
        Some(_) => return Err(MessageError::Topic),
    };
    Ok(WebPushMessage {
        payload: Arc::from(payload),
        ttl,
        urgency,
        topic,
    })
}

/// How long the gateway keeps trying a message of `ttl` seconds, counted
/// from when it is due (accepted, or its `send_at`): its TTL, so a message
/// that waited past it in the queue expires unsent; a TTL of 0 ("now or
/// never" at the push service) still gets [`MIN_QUEUE_LIFE`] of tries, each
/// sent with `TTL: 0`.
pub fn queue_life(ttl: u32) -> Duration {
    match ttl {
        0 => MIN_QUEUE_LIFE,
        s => Duration::from_secs(u64::from(s)),
    }
}

/// The gateway's own deadline for a message with `TTL: 0`.
pub const MIN_QUEUE_LIFE: Duration = Duration::from_secs(60);

/// The `TTL` to send at `now`: what is left of the message's `ttl` before
/// `expires_at` (the instant [`queue_life`] set when the job was accepted),
/// in whole seconds rounded up, so a message sent at once carries the TTL
/// it was given and one that waited loses every whole second it waited.
/// Never more than `ttl`, 0 once past it.
pub fn ttl_left(ttl: u32, expires_at: Option<SystemTime>, now: SystemTime) -> u32 {
    let Some(at) = expires_at else { return ttl };
    let left = at.duration_since(now).unwrap_or_default();
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX).min(ttl)
}

/// One refused subscription in the 202 answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejected {
    /// The endpoint as sent (empty when there was none).
    pub endpoint: String,
    /// Why.
    pub reason: &'static str,
}

/// The checked subscriptions of a request.
#[derive(Debug, Default)]
pub struct Checked {
    /// Stored forms, deduplicated by endpoint.
    pub stored: Vec<Vec<u8>>,
    /// Refused ones.
    pub rejected: Vec<Rejected>,
    /// Endpoints given more than once (each sent once).
    pub duplicates: usize,
}

/// Checks one subscription (its JSON text): shape, endpoint (https,
/// allowed origin, no private address), `p256dh` a P-256 point, `auth` 16
/// bytes. Returns its stored form, or the endpoint as sent (empty when there
/// was none) with the reason it is refused.
pub fn check_one(raw: &str, policy: &OriginPolicy) -> Result<Vec<u8>, Rejected> {
    let sub: SubscriptionIn<'_> = match serde_json::from_str(raw) {
        Ok(s) => s,
        Err(_) => {
            let endpoint = serde_json::from_str::<serde_json::Value>(raw)
                .ok()
                .and_then(|v| {
                    v.get("endpoint")
                        .and_then(|e| e.as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_default();
            return Err(Rejected {
                endpoint,
                reason: "InvalidSubscription",
            });
        }
    };
    let endpoint = policy.check(&sub.endpoint).map_err(|e| Rejected {
        endpoint: sub.endpoint.clone().into_owned(),
        reason: e.as_str(),
    })?;
    let keys = UaKeys::parse(&sub.keys.p256dh, &sub.keys.auth).map_err(|e| Rejected {
        endpoint: endpoint.url.clone(),
        reason: match e {
            ece::KeyError::Auth => "InvalidAuthSecret",
            _ => "InvalidP256dh",
        },
    })?;
    Ok(store(&Subscription { endpoint, keys }))
}

/// Checks every subscription ([`check_one`]), deduplicated by endpoint (the
/// first one wins).
pub fn check_subscriptions(raw: &[&RawValue], policy: &OriginPolicy) -> Checked {
    let mut out = Checked::default();
    let mut seen: HashSet<Vec<u8>> = HashSet::with_capacity(raw.len());
    for value in raw {
        match check_one(value.get(), policy) {
            Ok(stored) => {
                if seen.insert(stored[KEYS_LEN..].to_vec()) {
                    out.stored.push(stored);
                } else {
                    out.duplicates += 1;
                }
            }
            Err(rejected) => out.rejected.push(rejected),
        }
    }
    out
}

/// The stored form of a subscription.
pub fn store(sub: &Subscription) -> Vec<u8> {
    let mut out = Vec::with_capacity(KEYS_LEN + sub.endpoint.url.len());
    out.extend_from_slice(sub.keys.public());
    out.extend_from_slice(sub.keys.auth());
    out.extend_from_slice(sub.endpoint.url.as_bytes());
    out
}

/// A stored subscription back (the endpoint was checked when stored; its
/// origin is recomputed). `None` for bytes that were never [`store`]d.
pub fn load(stored: &[u8]) -> Option<Subscription> {
    if stored.len() <= KEYS_LEN {
        return None;
    }
    let keys = UaKeys::new(&stored[..PUBLIC_KEY_LEN], &stored[PUBLIC_KEY_LEN..KEYS_LEN]).ok()?;
    let url = std::str::from_utf8(&stored[KEYS_LEN..]).ok()?;
    let origin = url::Url::parse(url).ok()?.origin().ascii_serialization();
    Some(Subscription {
        endpoint: Endpoint {
            url: url.to_owned(),
            origin,
        },
        keys,
    })
}

/// How a stored subscription is shown: its endpoint.
pub fn render(stored: &[u8]) -> String {
    String::from_utf8_lossy(stored.get(KEYS_LEN..).unwrap_or_default()).into_owned()
}

/// The stored message: JSON text, so every backend (the `redis` one keeps
/// fields as text) carries it unchanged and every restart rebuilds the same
/// message ([`decode_fields`]).
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored<'a> {
    #[serde(borrow)]
    payload: std::borrow::Cow<'a, str>,
    ttl: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    urgency: Option<&'a str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
}

/// The stored form of the message fields.
pub fn encode_fields(msg: &WebPushMessage) -> Vec<u8> {
    let stored = Stored {
        // Built from JSON text at the API, so always UTF-8.
        payload: String::from_utf8_lossy(&msg.payload),
        ttl: msg.ttl,
        urgency: msg.urgency.map(Urgency::as_str),
        topic: msg.topic.as_deref(),
    };
    serde_json::to_vec(&stored).unwrap_or_default()
}

/// The message fields back; an error for bytes [`encode_fields`] never wrote.
pub fn decode_fields(bytes: &[u8]) -> Result<WebPushMessage, crate::message::MessageError> {
    let bad = |problem: String| crate::message::field_error("stored", problem);
    let s: Stored<'_> = serde_json::from_slice(bytes)
        .map_err(|e| bad(format!("unreadable stored Web Push message: {e}")))?;
    let urgency = match s.urgency {
        None => None,
        Some(u) => Some(Urgency::parse(u).ok_or_else(|| bad(format!("urgency {u:?}")))?),
    };
    Ok(WebPushMessage {
        payload: Arc::from(s.payload.as_bytes()),
        ttl: s.ttl,
        urgency,
        topic: s.topic.map(Arc::from),
    })
}

/// A `POST /send` target's own fields in a Web Push payload (an object,
/// plain or declarative): its `data` merged over the payload's `data`
/// member, its `badge` as `app_badge` (the declarative member; a service
/// worker hands it to `navigator.setAppBadge`).
impl crate::message::personal::Personalise for WebPushMessage {
    fn personalise(
        &self,
        _stored: &[u8],
        personal: &crate::message::personal::Personal,
    ) -> Result<Self, crate::message::MessageError> {
        use serde_json::Value;
        let mut payload: serde_json::Map<String, Value> = serde_json::from_slice(&self.payload)
            .map_err(|_| {
                crate::message::field_error(
                    "payload",
                    "a target's data needs a JSON object payload",
                )
            })?;
        if !personal.data.is_empty() {
            let data = payload
                .entry("data")
                .or_insert_with(|| Value::Object(Default::default()));
            if !data.is_object() {
                *data = Value::Object(Default::default());
            }
            if let Some(map) = data.as_object_mut() {
                personal.merge_data(map);
            }
        }
        if let Some(badge) = personal.badge {
            payload.insert("app_badge".into(), badge.into());
        }
        let bytes = serde_json::to_vec(&payload).unwrap_or_default();
        if bytes.len() > ece::MAX_PLAINTEXT {
            return Err(crate::message::PayloadTooLarge {
                what: "payload with this target's data",
                size: bytes.len(),
                limit: ece::MAX_PLAINTEXT,
                upstream: "one Web Push record",
            }
            .into());
        }
        Ok(WebPushMessage {
            payload: Arc::from(bytes),
            ..self.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P256DH: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

    fn req(body: &str) -> SendRequest<'_> {
        serde_json::from_str(body).expect("request parses")
    }

    #[test]
    fn payload_objects_are_sent_as_json_text_and_strings_as_is() {
        let m = message(&req(r#"{"subscriptions":[],"payload":{"title":"hi"}}"#)).expect("ok");
        assert_eq!(&*m.payload, br#"{"title":"hi"}"#);
        assert_eq!(m.ttl, DEFAULT_TTL);
        let m = message(&req(
            r#"{"subscriptions":[],"payload":"plain \u00e9","ttl":0,"urgency":"high","topic":"news"}"#,
        ))
        .expect("ok");
        assert_eq!(&*m.payload, "plain é".as_bytes());
        assert_eq!(
            (m.ttl, m.urgency, m.topic.as_deref()),
            (0, Some(Urgency::High), Some("news"))
        );
    }

    #[test]
    fn bad_message_fields_are_refused() {
        for (body, err) in [
            (r#"{"subscriptions":[]}"#, MessageError::Payload),
            (
                r#"{"subscriptions":[],"payload":[1]}"#,
                MessageError::Payload,
            ),
            (
                r#"{"subscriptions":[],"payload":"x","ttl":99999999}"#,
                MessageError::Ttl,
            ),
            (
                r#"{"subscriptions":[],"payload":"x","urgency":"now"}"#,
                MessageError::Urgency,
            ),
            (
                r#"{"subscriptions":[],"payload":"x","topic":"a b"}"#,
                MessageError::Topic,
            ),
        ] {
            assert_eq!(message(&req(body)), Err(err), "{body}");
        }
        let big = format!(
            r#"{{"subscriptions":[],"payload":"{}"}}"#,
            "x".repeat(ece::MAX_PLAINTEXT + 1)
        );
        assert!(matches!(
            message(&req(&big)),
            Err(MessageError::TooLarge { .. })
        ));
        let fits = format!(
            r#"{{"subscriptions":[],"payload":"{}"}}"#,
            "x".repeat(ece::MAX_PLAINTEXT)
        );
        assert!(message(&req(&fits)).is_ok());
    }

    #[test]
    fn subscriptions_are_checked_one_by_one_and_deduplicated() {
        let policy = OriginPolicy::new(&[]).expect("policy");
        let good = |e: &str| {
            format!(r#"{{"endpoint":"{e}","keys":{{"p256dh":"{P256DH}","auth":"{AUTH}"}}}}"#)
        };
        let body = format!(
            r#"{{"subscriptions":[{},{},{},{},{},{},{},{}],"payload":"x"}}"#,
            good("https://fcm.googleapis.com/fcm/send/a"),
            good("https://fcm.googleapis.com/fcm/send/a"),
            good("http://fcm.googleapis.com/fcm/send/b"),
            good("https://evil.example/x"),
            good("https://169.254.169.254/latest"),
            r#"{"endpoint":"https://fcm.googleapis.com/c","keys":{"p256dh":"AAAA","auth":"BTBZMqHH6r4Tts7J_aSIgg"}}"#,
            r#"{"endpoint":"https://fcm.googleapis.com/d","keys":{"p256dh":"BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4","auth":"AAAA"}}"#,
            r#"{"endpoint":"https://fcm.googleapis.com/e"}"#,
        );
        let r = req(&body);
        let checked = check_subscriptions(&r.subscriptions, &policy);
        assert_eq!(checked.stored.len(), 1);
        assert_eq!(checked.duplicates, 1);
        let reasons: Vec<&str> = checked.rejected.iter().map(|r| r.reason).collect();
        assert_eq!(
            reasons,
            [
                "EndpointNotHttps",
                "OriginNotAllowed",
                "OriginNotAllowed",
                "InvalidP256dh",
                "InvalidAuthSecret",
                "InvalidSubscription"
            ]
        );
        assert_eq!(checked.rejected[5].endpoint, "https://fcm.googleapis.com/e");
        let sub = load(&checked.stored[0]).expect("loads");
        assert_eq!(sub.endpoint.url, "https://fcm.googleapis.com/fcm/send/a");
        assert_eq!(sub.endpoint.origin, "https://fcm.googleapis.com");
        assert_eq!(
            render(&checked.stored[0]),
            "https://fcm.googleapis.com/fcm/send/a"
        );
        assert!(load(b"short").is_none());
    }

    /// The subscription in the README's curl example is one the API accepts.
    #[test]
    fn the_readme_example_subscription_is_valid() {
        let readme = include_str!("../../README.md");
        let p256dh = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM";
        let auth = "tBHItJI5svbpez7KI4CCXg";
        assert!(readme.contains(p256dh) && readme.contains(auth));
        assert!(UaKeys::parse(p256dh, auth).is_ok());
    }

    #[test]
    fn the_ttl_sent_is_what_the_queue_left_of_it() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let at = Some(t0 + queue_life(3600));
        assert_eq!(ttl_left(3600, at, t0), 3600);
        assert_eq!(ttl_left(3600, at, t0 + Duration::from_millis(20)), 3600);
        assert_eq!(ttl_left(3600, at, t0 + Duration::from_millis(1500)), 3599);
        assert_eq!(ttl_left(3600, at, t0 + Duration::from_secs(600)), 3000);
        assert_eq!(ttl_left(3600, at, t0 + Duration::from_secs(3600)), 0);
        assert_eq!(ttl_left(3600, at, t0 + Duration::from_secs(9000)), 0);
        // TTL 0 keeps its minute of tries, each sent as 0.
        let at = Some(t0 + queue_life(0));
        assert_eq!(queue_life(0), MIN_QUEUE_LIFE);
        assert_eq!(ttl_left(0, at, t0), 0);
        // A scheduled job's deadline counts from its send time.
        let at = Some(t0 + Duration::from_secs(7200) + queue_life(60));
        assert_eq!(ttl_left(60, at, t0), 60);
        assert_eq!(ttl_left(60, at, t0 + Duration::from_secs(7230)), 30);
        assert_eq!(ttl_left(60, None, t0), 60);
    }

    #[test]
    fn fields_round_trip() {
        for msg in [
            WebPushMessage {
                payload: Arc::from(&b"{\"a\":1}"[..]),
                ttl: 60,
                urgency: Some(Urgency::Low),
                topic: Some(Arc::from("t")),
            },
            WebPushMessage {
                payload: Arc::from("plain é".as_bytes()),
                ttl: 0,
                urgency: None,
                topic: None,
            },
        ] {
            assert_eq!(decode_fields(&encode_fields(&msg)).ok(), Some(msg));
        }
        assert!(decode_fields(&[0, 0]).is_err());
        assert!(decode_fields(br#"{"payload":"x","ttl":1,"urgency":"soon"}"#).is_err());
    }
}
