//! `apns`: FCM v1's `ApnsConfig`, for iOS apps that receive through FCM.
//! Passed through as given, checked where FCM or Apple documents a rule:
//!
//! | member | rule |
//! |---|---|
//! | `headers` | string values (FCM: "Header values must be strings"); `apns-priority` 10, 5 or 1; `apns-expiration` UNIX seconds; `apns-collapse-id` at most 64 bytes (Apple) |
//! | `payload` | an object; its `aps`, when given, an object |
//! | `fcm_options` | `analytics_label` as FCM's pattern; `image` a string |
//! | `live_activity_token` | the Live Activity's push (or push-to-start) token, as text; FCM needs the Live Activity's `aps` in `payload` beside it (Apple: `event` start, update or end; `timestamp` UNIX seconds) |

use serde_json::{Map, Value};

use super::check::{Obj, check_fcm_options};
use crate::message::FieldError;

/// Apple's limit on `apns-collapse-id`.
const MAX_COLLAPSE_ID: usize = 64;

/// Checks an `apns` block.
pub fn check(apns: &Map<String, Value>) -> Result<(), FieldError> {
    let obj = Obj::new("apns", apns);
    if let Some(headers) = obj.string_map("headers")? {
        check_headers(&obj, headers)?;
    }
    let payload = obj.object("payload")?;
    let aps = match payload {
        Some(p) => Obj::new("apns.payload", p).object("aps")?,
        None => None,
    };
    if let Some(options) = obj.object("fcm_options")? {
        let options = Obj::new("apns.fcm_options", options);
        check_fcm_options(options)?;
        options.string("image")?;
    }
    if let Some(token) = obj.string("live_activity_token")? {
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(obj.error(
                "live_activity_token",
                "must be the Live Activity's push token (or push-to-start token) as text, without spaces",
            ));
        }
        let Some(aps) = aps else {
            return Err(obj.error(
                "payload",
                "a live_activity_token needs the Live Activity's aps in apns.payload (event, timestamp, content-state)",
            ));
        };
        check_live_activity(Obj::new("apns.payload.aps", aps))?;
    }
    Ok(())
}

fn check_headers(obj: &Obj<'_>, headers: &Map<String, Value>) -> Result<(), FieldError> {
    for (name, value) in headers {
        let text = value.as_str().unwrap_or_default();
        let field = format!("headers.{name}");
        match name.to_ascii_lowercase().as_str() {
            "apns-priority" if !matches!(text, "10" | "5" | "1") => {
                return Err(obj.error(&field, format!("{text:?} is not \"10\", \"5\" or \"1\"")));
            }
            "apns-expiration" if text.parse::<u64>().is_err() => {
                return Err(obj.error(&field, "must be 0 or a UNIX time in seconds, as a string"));
            }
            "apns-collapse-id" if text.len() > MAX_COLLAPSE_ID => {
                return Err(obj.error(&field, format!("at most {MAX_COLLAPSE_ID} bytes")));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The Live Activity keys Apple documents a rule for.
fn check_live_activity(aps: Obj<'_>) -> Result<(), FieldError> {
    match aps.get("event") {
        Some(Value::String(e)) if matches!(e.as_str(), "start" | "update" | "end") => {}
        Some(other) => {
            return Err(aps.error(
                "event",
                format!("{other} is not \"start\", \"update\" or \"end\""),
            ));
        }
        None => {
            return Err(aps.error(
                "event",
                "is required for a Live Activity: start, update or end",
            ));
        }
    }
    if !aps.get("timestamp").is_some_and(Value::is_u64) {
        return Err(aps.error("timestamp", "is required for a Live Activity: UNIX seconds"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apns(v: Value) -> Result<(), FieldError> {
        check(v.as_object().expect("an object"))
    }

    #[test]
    fn a_live_activity_update_through_fcm_passes() {
        apns(json!({
            "live_activity_token": "80b1c2d3",
            "headers": {"apns-priority": "10", "apns-push-type": "liveactivity", "apns-expiration": "0"},
            "payload": {"aps": {"event": "update", "timestamp": 1700000000, "content-state": {"score": "1-0"}}},
            "fcm_options": {"analytics_label": "la", "image": "https://example.com/i.png"}
        }))
        .expect("valid");
        // Without a Live Activity token, the payload is FCM's and Apple's business.
        apns(json!({"payload": {"aps": {"alert": "hi"}, "custom": 1}})).expect("valid");
    }

    #[test]
    fn each_rule_names_its_member() {
        for (block, field) in [
            (
                json!({"headers": {"apns-priority": 10}}),
                "apns.headers.apns-priority",
            ),
            (
                json!({"headers": {"apns-priority": "7"}}),
                "apns.headers.apns-priority",
            ),
            (
                json!({"headers": {"apns-expiration": "tomorrow"}}),
                "apns.headers.apns-expiration",
            ),
            (
                json!({"headers": {"apns-collapse-id": "x".repeat(65)}}),
                "apns.headers.apns-collapse-id",
            ),
            (json!({"payload": []}), "apns.payload"),
            (json!({"payload": {"aps": "alert"}}), "apns.payload.aps"),
            (
                json!({"fcm_options": {"analytics_label": "a b"}}),
                "apns.fcm_options.analytics_label",
            ),
            (
                json!({"live_activity_token": ""}),
                "apns.live_activity_token",
            ),
            (json!({"live_activity_token": "t"}), "apns.payload"),
            (
                json!({"live_activity_token": "t", "payload": {"aps": {"timestamp": 1}}}),
                "apns.payload.aps.event",
            ),
            (
                json!({"live_activity_token": "t", "payload": {"aps": {"event": "stop", "timestamp": 1}}}),
                "apns.payload.aps.event",
            ),
            (
                json!({"live_activity_token": "t", "payload": {"aps": {"event": "end"}}}),
                "apns.payload.aps.timestamp",
            ),
        ] {
            match apns(block.clone()) {
                Err(e) => assert_eq!(e.field, field, "{block}"),
                Ok(()) => panic!("{block} passed"),
            }
        }
    }
}
