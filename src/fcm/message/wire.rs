//! The two request bodies of a Google message, built once per job: v1's
//! `message` (without its token) and legacy's body (without its ids), each
//! kept as the bytes that follow the per-token part.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::Priority;
use super::content::{NOTIFICATION_KEYS, V1Place};
use crate::fcm::blocks::Blocks;

/// What both bodies are made of, checked.
pub(super) struct Parts<'a> {
    pub data: Option<&'a Value>,
    pub notification: Option<&'a Value>,
    pub collapse_key: Option<&'a str>,
    pub priority: Option<Priority>,
    /// The request's `time_to_live`, as given (not `android.ttl`).
    pub time_to_live: Option<u32>,
    pub restricted_package_name: Option<&'a str>,
    pub dry_run: bool,
    /// v1 only: legacy requests never carry one.
    pub blocks: &'a Blocks,
}

/// Writes `s` as a JSON string.
pub(super) fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail; the fallback keeps the body valid JSON anyway.
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

/// Serializes an object's members without the braces: `,"k":v,...` followed by
/// `close`, or just `close` when empty.
fn tail(object: Map<String, Value>, close: &[u8]) -> Bytes {
    let mut out = Vec::new();
    if !object.is_empty() {
        let text = Value::Object(object).to_string();
        // `text` is `{...}`: keep the members, put a comma in front.
        out.push(b',');
        out.extend_from_slice(&text.as_bytes()[1..text.len() - 1]);
    }
    out.extend_from_slice(close);
    out.into()
}

/// Everything of `{"message":{"token":<TOKEN>` that follows the token.
pub(super) fn v1_tail(p: &Parts<'_>) -> Bytes {
    let mut message = Map::new();
    if let Some(data) = p.data {
        message.insert("data".into(), data.clone());
    }
    let mut top = Map::new();
    let mut android_notification = Map::new();
    if let Some(Value::Object(n)) = p.notification {
        for (key, value) in n {
            let place = NOTIFICATION_KEYS
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, p)| *p);
            match place {
                Some(V1Place::Notification(name)) => {
                    top.insert(name.into(), value.clone());
                }
                Some(V1Place::Android(name)) => {
                    android_notification.insert(name.into(), value.clone());
                }
                // check_notification refused every other key.
                None => {}
            }
        }
    }
    if !top.is_empty() {
        message.insert("notification".into(), Value::Object(top));
    }
    let mut android = Map::new();
    if let Some(key) = p.collapse_key {
        android.insert("collapse_key".into(), key.into());
    }
    if let Some(priority) = p.priority {
        android.insert("priority".into(), priority.v1().into());
    }
    if let Some(ttl) = p.time_to_live {
        // v1 takes a protobuf Duration: decimal seconds with an `s` suffix.
        android.insert("ttl".into(), format!("{ttl}s").into());
    }
    if !android_notification.is_empty() {
        android.insert("notification".into(), Value::Object(android_notification));
    }
    if let Some(package) = p.restricted_package_name {
        android.insert("restricted_package_name".into(), package.into());
    }
    if !android.is_empty() {
        message.insert("android".into(), Value::Object(android));
    }
    p.blocks.write(&mut message);
    if p.dry_run {
        tail(message, br#"},"validate_only":true}"#)
    } else {
        tail(message, b"}}")
    }
}

/// Everything of `{"registration_ids":[...]` (or the topic, or the
/// condition) that follows it.
pub(super) fn legacy_tail(p: &Parts<'_>) -> Bytes {
    let mut rest = Map::new();
    if let Some(data) = p.data {
        rest.insert("data".into(), data.clone());
    }
    if let Some(notification) = p.notification {
        rest.insert("notification".into(), notification.clone());
    }
    if let Some(key) = p.collapse_key {
        rest.insert("collapse_key".into(), key.into());
    }
    if let Some(priority) = p.priority {
        rest.insert("priority".into(), priority.legacy().into());
    }
    if let Some(ttl) = p.time_to_live {
        rest.insert("time_to_live".into(), ttl.into());
    }
    if let Some(package) = p.restricted_package_name {
        rest.insert("restricted_package_name".into(), package.into());
    }
    if p.dry_run {
        rest.insert("dry_run".into(), true.into());
    }
    tail(rest, b"}")
}
