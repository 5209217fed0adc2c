//! `POST /send` on APNs: the common message as an `/apns/send` body.
//!
//! - `notification.title`/`body` → `aps.alert`; `image` → a custom `image`
//!   key beside `aps` with `aps.mutable-content: 1`, for the app's
//!   notification service extension to fetch (APNs has no image field).
//! - `data` keys → custom keys beside `aps`.
//! - The `apns` block: `topic`, `push_type`, `priority`, `collapse_id`,
//!   `expiration` as on `/apns/send`; `sound`, `category`, `thread_id` into
//!   `aps`; `aps` merged over everything else in `aps`.
//! - No alert at all: a background push (`content-available: 1`,
//!   `push_type` `background`, priority 5) unless the block says otherwise.

use serde_json::{Map, Value};

use crate::platform::RequestError;
use crate::platform::unified::Unified;

const KNOWN: &[&str] = &[
    "topic",
    "push_type",
    "priority",
    "collapse_id",
    "expiration",
    "sound",
    "category",
    "thread_id",
    "aps",
];

/// The `/apns/send` body (without tokens) for `message`.
pub fn compose(message: &Unified<'_>) -> Result<Vec<u8>, RequestError> {
    let mut block = message.block("apns", KNOWN)?;
    let mut aps = Map::new();
    let alert = crate::platform::unified::shown(message, false);
    let silent = alert.is_empty();
    if !silent {
        aps.insert("alert".into(), Value::Object(alert));
    }
    for (from, to) in [
        ("sound", "sound"),
        ("category", "category"),
        ("thread_id", "thread-id"),
    ] {
        if let Some(v) = block.remove(from) {
            aps.insert(to.into(), v);
        }
    }
    let mut payload = Map::new();
    if let Some(image) = message.text("image") {
        aps.insert("mutable-content".into(), 1.into());
        payload.insert("image".into(), image.into());
    }
    match block.remove("aps") {
        None => {}
        Some(Value::Object(own)) => aps.extend(own),
        Some(_) => {
            return Err(
                RequestError::bad("bad_field", "apns.aps must be a JSON object")
                    .with(serde_json::json!({ "field": "apns.aps" })),
            );
        }
    }
    let background = silent && !aps.contains_key("alert");
    if background {
        aps.entry("content-available").or_insert(1.into());
        block.entry("push_type").or_insert("background".into());
        block.entry("priority").or_insert(5.into());
    }
    for (key, value) in message.data {
        if key == "aps" {
            return Err(RequestError::bad(
                "bad_field",
                "data.aps would replace the APNs aps dictionary; use the apns block's aps",
            )
            .with(serde_json::json!({ "field": "data.aps" })));
        }
        payload.insert(key.clone(), value.clone());
    }
    payload.insert("aps".into(), Value::Object(aps));
    let mut body = block;
    body.insert("payload".into(), Value::Object(payload));
    message.common(&mut body);
    Ok(serde_json::to_vec(&body).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn title_and_body_become_the_alert_and_data_sits_beside_aps() {
        let notification = map(json!({"title": "T", "body": "B"}));
        let data = map(json!({"order": "42"}));
        let block = map(json!({"sound": "default", "topic": "com.example"}));
        let body = compose(&Unified {
            notification: &notification,
            data: &data,
            block: Some(&block),
            app: None,
            send_at: None,
        })
        .expect("composed");
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            body["payload"]["aps"]["alert"],
            json!({"title": "T", "body": "B"})
        );
        assert_eq!(body["payload"]["aps"]["sound"], "default");
        assert_eq!(body["payload"]["order"], "42");
        assert_eq!(body["topic"], "com.example");
    }

    #[test]
    fn data_alone_is_a_background_push_and_unknown_block_keys_are_refused() {
        let empty = Map::new();
        let data = map(json!({"k": 1}));
        let body = compose(&Unified {
            notification: &empty,
            data: &data,
            block: None,
            app: None,
            send_at: None,
        })
        .expect("composed");
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["payload"]["aps"]["content-available"], 1);
        assert_eq!(body["push_type"], "background");
        let bad = map(json!({"topc": "x"}));
        let e = compose(&Unified {
            notification: &empty,
            data: &data,
            block: Some(&bad),
            app: None,
            send_at: None,
        })
        .expect_err("typo");
        assert!(e.message.contains("apns.topc"), "{}", e.message);
    }
}
