//! `POST /send`'s message as a platform reads it: the common
//! `notification` and `data`, and the platform's own block. Each platform
//! maps it to its own send body ([`super::Front::compose`]), which it then
//! reads like any other, so a `/send` message is checked exactly as the
//! platform's own route checks it.

use serde_json::{Map, Value};

use super::request::RequestError;

/// The common message of a `POST /send`, for one platform.
#[derive(Debug, Clone, Copy)]
pub struct Unified<'a> {
    /// `notification`: `title`, `body`, `image` (empty when not given).
    pub notification: &'a Map<String, Value>,
    /// `data`, shared by every target (empty when not given).
    pub data: &'a Map<String, Value>,
    /// The platform's own block (`apns`, `fcm`, `gcm`, `hms`, `webpush`),
    /// when given.
    pub block: Option<&'a Map<String, Value>>,
    /// `app`.
    pub app: Option<&'a str>,
    /// `send_at`.
    pub send_at: Option<&'a str>,
}

impl<'a> Unified<'a> {
    /// A string of `notification` (`title`, `body`, `image`).
    pub fn text(&self, key: &str) -> Option<&'a str> {
        self.notification.get(key).and_then(Value::as_str)
    }

    /// The block, refusing any key outside `known` (named as
    /// `<platform>.<key>`, so a typo is not silently dropped).
    pub fn block(
        &self,
        platform: &str,
        known: &[&str],
    ) -> Result<Map<String, Value>, RequestError> {
        let block = self.block.cloned().unwrap_or_default();
        if let Some(key) = block.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(RequestError::bad(
                "unknown_field",
                format!(
                    "{platform}.{key} is not a field of the {platform} block; it takes {}",
                    known.join(", ")
                ),
            )
            .with(serde_json::json!({ "field": format!("{platform}.{key}") })));
        }
        Ok(block)
    }

    /// The fields every native body carries: `app` and `send_at`.
    pub fn common(&self, body: &mut Map<String, Value>) {
        if let Some(app) = self.app {
            body.insert("app".into(), app.into());
        }
        if let Some(at) = self.send_at {
            body.insert("send_at".into(), at.into());
        }
    }
}

/// The `notification` object a platform shows: `title`, `body` and, when
/// `with_image`, `image`, from the common notification.
pub fn shown(message: &Unified<'_>, with_image: bool) -> Map<String, Value> {
    let mut keys = vec!["title", "body"];
    if with_image {
        keys.push("image");
    }
    keys.into_iter()
        .filter_map(|k| message.text(k).map(|v| (k.to_owned(), Value::from(v))))
        .collect()
}
