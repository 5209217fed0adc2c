//! `webpush`: FCM v1's `WebpushConfig`, for web apps that receive through
//! FCM. Passed through as given, checked where FCM or RFC 8030 documents a
//! rule:
//!
//! | member | rule |
//! |---|---|
//! | `headers` | string values; `TTL` seconds, `Urgency` `very-low`/`low`/`normal`/`high`, `Topic` 1 to 32 of `A-Z a-z 0-9 - _` (RFC 8030 §5) |
//! | `data` | string values only |
//! | `notification` | an object (the Web Notification's options, as the browser takes them) |
//! | `fcm_options.link` | an `https://` URL (FCM: "For all URL values, HTTPS is required") |
//! | `fcm_options.analytics_label` | FCM's pattern |

use serde_json::{Map, Value};

use super::check::{Obj, check_fcm_options, is_https_url};
use crate::message::FieldError;

/// Checks a `webpush` block.
pub fn check(webpush: &Map<String, Value>) -> Result<(), FieldError> {
    let obj = Obj::new("webpush", webpush);
    if let Some(headers) = obj.string_map("headers")? {
        for (name, value) in headers {
            let text = value.as_str().unwrap_or_default();
            let field = format!("headers.{name}");
            let problem = match name.to_ascii_lowercase().as_str() {
                "ttl" if text.parse::<u64>().is_err() => Some("must be seconds, as a string"),
                "urgency" if !matches!(text, "very-low" | "low" | "normal" | "high") => {
                    Some("must be very-low, low, normal or high")
                }
                "topic" if !is_topic(text) => Some("must be 1 to 32 of A-Z a-z 0-9 - _"),
                _ => None,
            };
            if let Some(problem) = problem {
                return Err(obj.error(&field, problem));
            }
        }
    }
    obj.string_map("data")?;
    obj.object("notification")?;
    if let Some(options) = obj.object("fcm_options")? {
        let options = Obj::new("webpush.fcm_options", options);
        check_fcm_options(options)?;
        if let Some(link) = options.string("link")?
            && !is_https_url(link)
        {
            return Err(options.error(
                "link",
                format!("{link:?} is not an https:// URL (FCM requires HTTPS)"),
            ));
        }
    }
    Ok(())
}

/// RFC 8030 §5.4: 1 to 32 characters of the base64url alphabet.
fn is_topic(t: &str) -> bool {
    (1..=32).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn webpush(v: Value) -> Result<(), FieldError> {
        check(v.as_object().expect("an object"))
    }

    #[test]
    fn the_documented_members_pass() {
        webpush(json!({
            "headers": {"TTL": "60", "Urgency": "high", "Topic": "news-1"},
            "data": {"k": "v"},
            "notification": {"title": "t", "body": "b", "requireInteraction": true},
            "fcm_options": {"link": "https://example.com/x", "analytics_label": "w"}
        }))
        .expect("valid");
    }

    #[test]
    fn each_rule_names_its_member() {
        for (block, field) in [
            (json!({"headers": {"TTL": 60}}), "webpush.headers.TTL"),
            (json!({"headers": {"TTL": "soon"}}), "webpush.headers.TTL"),
            (
                json!({"headers": {"Urgency": "now"}}),
                "webpush.headers.Urgency",
            ),
            (
                json!({"headers": {"Topic": "a b"}}),
                "webpush.headers.Topic",
            ),
            (json!({"data": {"n": 1}}), "webpush.data.n"),
            (json!({"notification": "hi"}), "webpush.notification"),
            (
                json!({"fcm_options": {"link": "http://example.com"}}),
                "webpush.fcm_options.link",
            ),
            (
                json!({"fcm_options": {"link": "/relative"}}),
                "webpush.fcm_options.link",
            ),
            (
                json!({"fcm_options": {"analytics_label": ""}}),
                "webpush.fcm_options.analytics_label",
            ),
        ] {
            match webpush(block.clone()) {
                Err(e) => assert_eq!(e.field, field, "{block}"),
                Ok(()) => panic!("{block} passed"),
            }
        }
    }
}
