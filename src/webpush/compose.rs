//! `POST /send` on Web Push: the common message as a `/webpush/send` body.
//!
//! - The payload is `{"title", "body", "image", "data"}` (what a service
//!   worker reads with `event.data.json()`).
//! - With the `webpush` block's `"declarative": true` it is Declarative Web
//!   Push: `{"web_push": 8030, "notification": {"title", "body", "navigate",
//!   "image"}, "data"}`, and `navigate` is required (400 without).
//! - The block's `ttl`, `urgency` and `topic` are the push service's
//!   headers, as on `/webpush/send`; its `notification` is merged over the
//!   shown fields (`icon`, `tag`, `actions`, …).

use serde_json::{Map, Value, json};

use super::declarative::WEB_PUSH;
use crate::platform::RequestError;
use crate::platform::unified::{Unified, shown};

const KNOWN: &[&str] = &[
    "ttl",
    "urgency",
    "topic",
    "declarative",
    "navigate",
    "notification",
];

/// The `/webpush/send` body (without subscriptions) for `message`.
pub fn compose(message: &Unified<'_>) -> Result<Vec<u8>, RequestError> {
    let mut block = message.block("webpush", KNOWN)?;
    let declarative = match block.remove("declarative") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => {
            return Err(RequestError::bad(
                "bad_field",
                "webpush.declarative must be true or false",
            )
            .with(json!({ "field": "webpush.declarative" })));
        }
    };
    let mut notification = shown(message, true);
    if let Some(navigate) = block.remove("navigate") {
        notification.insert("navigate".into(), navigate);
    }
    match block.remove("notification") {
        None => {}
        Some(Value::Object(own)) => notification.extend(own),
        Some(_) => {
            return Err(RequestError::bad(
                "bad_field",
                "webpush.notification must be a JSON object",
            )
            .with(json!({ "field": "webpush.notification" })));
        }
    }
    let payload = if declarative {
        if !notification.contains_key("navigate") {
            return Err(RequestError::bad(
                "bad_field",
                "Declarative Web Push needs webpush.navigate: the https URL the browser opens on a click",
            )
            .with(json!({ "field": "webpush.navigate" })));
        }
        let mut payload = Map::new();
        payload.insert("web_push".into(), WEB_PUSH.into());
        payload.insert("notification".into(), Value::Object(notification));
        payload
    } else {
        notification
    };
    let mut payload = payload;
    if !message.data.is_empty() {
        payload.insert("data".into(), Value::Object(message.data.clone()));
    }
    let mut body = block;
    body.insert("payload".into(), Value::Object(payload));
    message.common(&mut body);
    Ok(serde_json::to_vec(&Value::Object(body)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarative_needs_navigate_and_nests_the_notification() {
        let notification = json!({"title": "T", "body": "B"});
        let data = json!({"k": "v"});
        let with = json!({"declarative": true, "navigate": "https://example.com/x"});
        let unified = |block: &Value| {
            compose(&Unified {
                notification: notification.as_object().expect("object"),
                data: data.as_object().expect("object"),
                block: block.as_object(),
                app: None,
                send_at: None,
            })
        };
        let body: Value = serde_json::from_slice(&unified(&with).expect("composed")).expect("json");
        assert_eq!(body["payload"]["web_push"], 8030);
        assert_eq!(
            body["payload"]["notification"]["navigate"],
            "https://example.com/x"
        );
        assert_eq!(body["payload"]["data"]["k"], "v");
        assert!(unified(&json!({"declarative": true})).is_err());
        let plain: Value =
            serde_json::from_slice(&unified(&json!({})).expect("composed")).expect("json");
        assert_eq!(plain["payload"]["title"], "T");
    }
}
