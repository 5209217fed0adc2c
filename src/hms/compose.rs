//! `POST /send` on Huawei: the common message as an `/hms/send` body.
//! `notification` → `message.notification` (`title`, `body`, `image`);
//! `data` → `message.data`, sent as the JSON text of the object (Push Kit
//! takes a string); the `hms` block's `android` passed through as Huawei's
//! AndroidConfig.

use serde_json::{Map, Value};

use crate::platform::RequestError;
use crate::platform::unified::{Unified, shown};

/// The `/hms/send` body (without tokens) for `message`.
pub fn compose(message: &Unified<'_>) -> Result<Vec<u8>, RequestError> {
    let mut body: Map<String, Value> = message.block("hms", &["android"])?;
    let notification = shown(message, true);
    if !notification.is_empty() {
        body.insert("notification".into(), Value::Object(notification));
    }
    if !message.data.is_empty() {
        body.insert("data".into(), Value::Object(message.data.clone()));
    }
    message.common(&mut body);
    Ok(serde_json::to_vec(&Value::Object(body)).unwrap_or_default())
}
