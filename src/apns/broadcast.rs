//! Broadcast push (iOS 18 Live Activities): one request updates every device
//! subscribed to a channel. This module validates a broadcast up front, so a
//! bad one is a 400 before anything is queued, and builds its
//! [`ApnsMessage`]; the connection actors send it like a device push of one
//! "token" (the channel id), to `POST /4/broadcasts/apps/<bundle>`.

use super::message::{ApnsMessage, Priority, PushType};
use crate::message::{FieldError, MessageError, PayloadTooLarge, field_error};
use bytes::Bytes;

/// Apple's limit on a broadcast payload, in bytes.
pub const MAX_PAYLOAD: usize = 5120;

/// Longest channel id accepted. Apple's ids are opaque base64 of no stated
/// size; this only bounds what a header and a report entry may carry.
pub const MAX_CHANNEL_ID: usize = 1024;

/// The fields of `POST /apns/broadcast`, as received.
#[derive(Debug, Default, Clone)]
pub struct BroadcastFields<'a> {
    /// Serialized JSON payload.
    pub payload: &'a [u8],
    /// `apns-priority` (10, 5 or 1); default 10.
    pub priority: Option<i64>,
    /// `apns-expiration` (0 or UNIX seconds); default 0.
    pub expiration: Option<i64>,
}

/// Checks a channel id: non-empty base64 (standard or URL-safe alphabet,
/// optional padding), never assuming a size.
pub fn check_channel_id(id: &str) -> Result<(), FieldError> {
    let body = id.trim_end_matches('=');
    let ok = !body.is_empty()
        && id.len() <= MAX_CHANNEL_ID
        && id.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(field_error(
            "channel_id",
            "must be the base64 channel id APNs returned when the channel was created",
        ))
    }
}

/// The bundle id in an app's topic: Apple's per-push-type suffixes removed.
pub fn bundle_of(topic: &str) -> &str {
    for suffix in [
        ".push-type.liveactivity",
        ".voip-ptt",
        ".voip",
        ".complication",
    ] {
        if let Some(bundle) = topic.strip_suffix(suffix) {
            return bundle;
        }
    }
    topic
}

/// `/4/broadcasts/apps/<bundle>`.
pub fn path(bundle: &str) -> String {
    format!("/4/broadcasts/apps/{bundle}")
}

/// Validates a broadcast for `bundle` and builds its message.
///
/// The payload must be a JSON object of at most 5,120 bytes whose `aps`
/// holds `event` (`update` or `end`), `timestamp` (UNIX seconds) and
/// `content-state` (an object): what ActivityKit needs to apply the update.
pub fn message(fields: BroadcastFields<'_>, bundle: &str) -> Result<ApnsMessage, MessageError> {
    let payload = fields.payload.trim_ascii();
    if payload.len() > MAX_PAYLOAD {
        return Err(PayloadTooLarge {
            what: "payload",
            size: payload.len(),
            limit: MAX_PAYLOAD,
            upstream: "APNs (broadcast)",
        }
        .into());
    }
    super::live_activity::check(payload, super::live_activity::Via::Channel)?;
    let priority = match fields.priority {
        None => Priority::Immediate,
        Some(n) => Priority::from_number(n)
            .ok_or_else(|| field_error("priority", format!("{n} is not 10, 5 or 1")))?,
    };
    let expiration = u64::try_from(fields.expiration.unwrap_or(0))
        .map_err(|_| field_error("expiration", "must be 0 or a UNIX time in seconds"))?;
    if bundle.is_empty() {
        return Err(field_error(
            "app",
            "the app has no apns.topic to take the bundle id from",
        )
        .into());
    }
    let topic = http::HeaderValue::from_str(bundle)
        .map_err(|_| field_error("app", "the app's topic is not a valid bundle id"))?;
    let path = path(bundle);
    if http::uri::PathAndQuery::try_from(path.as_str()).is_err() {
        return Err(field_error("app", "the app's topic is not a valid bundle id").into());
    }
    Ok(ApnsMessage {
        payload: Bytes::copy_from_slice(payload),
        topic,
        push_type: PushType::LiveActivity,
        priority: Some(priority),
        expiration: Some(expiration),
        collapse_id: None,
        broadcast: Some(Bytes::from(path)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &[u8] =
        br#"{"aps":{"event":"update","timestamp":1700000000,"content-state":{"score":"1-0"}}}"#;

    fn fields(payload: &[u8]) -> BroadcastFields<'_> {
        BroadcastFields {
            payload,
            ..Default::default()
        }
    }

    #[test]
    fn a_valid_broadcast_gets_every_required_header_value() {
        let m = message(fields(GOOD), "com.example.app").expect("valid");
        assert_eq!(m.push_type, PushType::LiveActivity);
        assert_eq!(m.priority, Some(Priority::Immediate));
        assert_eq!(m.expiration, Some(0));
        assert_eq!(
            m.broadcast.as_deref(),
            Some(&b"/4/broadcasts/apps/com.example.app"[..])
        );
    }

    #[test]
    fn payloads_without_event_timestamp_or_content_state_are_refused() {
        for bad in [
            &br#"[]"#[..],
            br#"{"x":1}"#,
            br#"{"aps":{"timestamp":1,"content-state":{}}}"#,
            br#"{"aps":{"event":"start","timestamp":1,"content-state":{}}}"#,
            br#"{"aps":{"event":"update","content-state":{}}}"#,
            br#"{"aps":{"event":"update","timestamp":"now","content-state":{}}}"#,
            br#"{"aps":{"event":"update","timestamp":1}}"#,
            br#"{"aps":{"event":"update","timestamp":1,"content-state":[]}}"#,
            b"not json",
        ] {
            assert!(
                matches!(message(fields(bad), "b"), Err(MessageError::Field(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn the_limit_is_5120_bytes() {
        let pad = "x".repeat(MAX_PAYLOAD);
        let big = format!(
            r#"{{"aps":{{"event":"update","timestamp":1,"content-state":{{"p":"{pad}"}}}}}}"#
        );
        assert!(matches!(
            message(fields(big.as_bytes()), "b"),
            Err(MessageError::TooLarge(_))
        ));
    }

    #[test]
    fn priority_and_expiration_are_checked() {
        let mut f = fields(GOOD);
        f.priority = Some(7);
        assert!(message(f.clone(), "b").is_err());
        f.priority = Some(5);
        f.expiration = Some(-1);
        assert!(message(f.clone(), "b").is_err());
        f.expiration = Some(1_900_000_000);
        let m = message(f, "b").expect("valid");
        assert_eq!(m.expiration, Some(1_900_000_000));
    }

    #[test]
    fn channel_ids_are_any_base64() {
        for good in ["dHdpbGlnaHQ=", "YQ", "a-b_c", &"A".repeat(400)] {
            assert!(check_channel_id(good).is_ok(), "{good}");
        }
        for bad in ["", "===", "has space", "a=b", "é"] {
            assert!(check_channel_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bundle_ids_lose_push_type_suffixes() {
        assert_eq!(bundle_of("com.x.push-type.liveactivity"), "com.x");
        assert_eq!(bundle_of("com.x.voip"), "com.x");
        assert_eq!(bundle_of("com.x"), "com.x");
    }
}
