//! `POST /send` on Google: the common message as an `/fcm/send` body.
//!
//! - FCM v1: `notification` → `message.notification` (`title`, `body`,
//!   `image`); `data` → `message.data`, every value a string (others as
//!   their JSON text, as on `/fcm/send`); the `fcm` block's `android`,
//!   `apns`, `webpush`, `fcm_options` passed through, and `priority`,
//!   `collapse_key`, `time_to_live` as on `/fcm/send`.
//! - Legacy GCM: the same `notification` and `data`; the `gcm` block's
//!   `notification` merged over the common one, its other fields
//!   (`collapse_key`, `priority`, `time_to_live`, …) as on `/gcm/send`.

use serde_json::Value;

use crate::job::Platform;
use crate::platform::RequestError;
use crate::platform::unified::{Unified, shown};

const V1: &[&str] = &[
    "android",
    "apns",
    "webpush",
    "fcm_options",
    "priority",
    "collapse_key",
    "time_to_live",
];

const LEGACY: &[&str] = &[
    "notification",
    "priority",
    "collapse_key",
    "time_to_live",
    "restricted_package_name",
    "dry_run",
];

/// The Google send body (without tokens) for `message` on `platform`.
pub fn compose(platform: Platform, message: &Unified<'_>) -> Result<Vec<u8>, RequestError> {
    let word = platform.as_str();
    let legacy = platform == super::GCM;
    let mut body = message.block(word, if legacy { LEGACY } else { V1 })?;
    let mut notification = shown(message, true);
    if let Some(own) = body.remove("notification") {
        match own {
            Value::Object(own) => notification.extend(own),
            _ => {
                return Err(RequestError::bad(
                    "bad_field",
                    format!("{word}.notification must be a JSON object"),
                )
                .with(serde_json::json!({ "field": format!("{word}.notification") })));
            }
        }
    }
    if !notification.is_empty() {
        body.insert("notification".into(), Value::Object(notification));
    }
    if !message.data.is_empty() {
        body.insert("payload".into(), Value::Object(message.data.clone()));
    }
    message.common(&mut body);
    Ok(serde_json::to_vec(&Value::Object(body)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v1_gets_title_body_image_and_the_blocks_as_given() {
        let notification = json!({"title": "T", "body": "B", "image": "https://i.example/x.png"});
        let data = json!({"order": 42});
        let block = json!({"android": {"direct_boot_ok": true}});
        let body = compose(
            super::super::FCM,
            &Unified {
                notification: notification.as_object().expect("object"),
                data: data.as_object().expect("object"),
                block: block.as_object(),
                app: Some("default"),
                send_at: None,
            },
        )
        .expect("composed");
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["notification"]["image"], "https://i.example/x.png");
        assert_eq!(body["payload"]["order"], 42);
        assert_eq!(body["android"]["direct_boot_ok"], true);
        assert_eq!(body["app"], "default");
    }
}
