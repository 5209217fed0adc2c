//! What a Google message says, checked: `data` made strings (see the
//! module docs of [`super`]) and the `notification` keys both APIs carry,
//! with where v1 puts each.

use serde_json::{Map, Value};

use crate::message::{FieldError, field_error};

/// Where v1 puts a `notification` key.
#[derive(Debug, Clone, Copy)]
pub(super) enum V1Place {
    /// `message.notification.<name>`.
    Notification(&'static str),
    /// `message.android.notification.<name>`.
    Android(&'static str),
}

/// Notification keys sent as given to the legacy API, and where v1 puts them.
pub(super) const NOTIFICATION_KEYS: [(&str, V1Place); 13] = [
    ("title", V1Place::Notification("title")),
    ("body", V1Place::Notification("body")),
    ("image", V1Place::Notification("image")),
    ("icon", V1Place::Android("icon")),
    ("color", V1Place::Android("color")),
    ("sound", V1Place::Android("sound")),
    ("tag", V1Place::Android("tag")),
    ("click_action", V1Place::Android("click_action")),
    ("body_loc_key", V1Place::Android("body_loc_key")),
    ("body_loc_args", V1Place::Android("body_loc_args")),
    ("title_loc_key", V1Place::Android("title_loc_key")),
    ("title_loc_args", V1Place::Android("title_loc_args")),
    ("android_channel_id", V1Place::Android("channel_id")),
];

/// Applies the string conversion of the module docs and refuses the keys FCM
/// reserves, which it would refuse for every token.
pub(super) fn stringify_data(data: Map<String, Value>) -> Result<Map<String, Value>, FieldError> {
    let mut out = Map::new();
    for (key, value) in data {
        if key.is_empty()
            || key == "from"
            || key == "message_type"
            || key.starts_with("google.")
            || key.starts_with("gcm.")
        {
            return Err(field_error(
                "payload",
                format!("key {key:?} is reserved by FCM (from, message_type, google.*, gcm.*)"),
            ));
        }
        let text = match value {
            Value::String(s) => s,
            other => other.to_string(),
        };
        out.insert(key, Value::String(text));
    }
    Ok(out)
}

/// Accepts only keys both APIs can carry, with the types v1 expects, so a job
/// is never refused token by token at the upstream.
pub(super) fn check_notification(object: &Map<String, Value>) -> Result<(), FieldError> {
    for (key, value) in object {
        if !NOTIFICATION_KEYS.iter().any(|(k, _)| k == key) {
            let known: Vec<&str> = NOTIFICATION_KEYS.iter().map(|(k, _)| *k).collect();
            return Err(field_error(
                "notification",
                format!(
                    "unsupported key {key:?}; use {} (or the android block for the rest of FCM's AndroidNotification)",
                    known.join(", ")
                ),
            ));
        }
        let ok = if key.ends_with("_loc_args") {
            value
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string))
        } else {
            value.is_string()
        };
        if !ok {
            let want = if key.ends_with("_loc_args") {
                "an array of strings"
            } else {
                "a string"
            };
            return Err(field_error(
                "notification",
                format!("notification.{key} must be {want}"),
            ));
        }
    }
    Ok(())
}
