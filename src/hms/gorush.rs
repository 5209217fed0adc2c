//! A gorush Huawei notification (`platform: 3`) as an HMS job, the fields
//! named as gorush names them:
//!
//! | gorush field | Push Kit |
//! |---|---|
//! | `tokens`, `to` (a token) | `message.token` (in batches) |
//! | `title`, `message`, `image` | `message.notification.title`, `.body`, `.image` |
//! | `huawei_notification{…}` | `android.notification` (gorush's HMS AndroidNotification; `click_action` defaults to `{"type":3}`) |
//! | `sound` (a string) | `android.notification.sound` (else `default_sound: true` on a notification) |
//! | `data` (an object) or `huawei_data` (a string) | `message.data`, as a string |
//! | `priority: "high"` | `android.urgency: "HIGH"` (`"normal"`: `"NORMAL"`) |
//! | `huawei_collapse_key`, `huawei_ttl`, `category`, `bi_tag`, `fast_app_target` | `android.collapse_key`, `.ttl`, `.category`, `.bi_tag`, `.fast_app_target` |
//! | `dry_run` | `validate_only` |
//!
//! Refused rather than dropped (each would change what the device shows):
//! `badge` (Huawei's badge needs the app's launcher class: give
//! `huawei_notification.badge`), `topic` and `condition` (not carried for
//! Huawei), and FCM's or APNs' own objects (`notification`, `android`,
//! `apns`, `webpush`). gorush's `app_id` / `app_secret` are refused too:
//! credentials live in `[hms]` (name an app with `app`). Ignored, as on
//! Android: `fcm_options` (an analytics label), `retry`, and the iOS-only
//! fields.

use std::borrow::Cow;

use serde_json::{Map, Value, json};

use super::message::HmsFields;
use crate::platform::{Fields, NotificationError};

/// The HMS side of one notification.
#[derive(Debug, Default)]
pub struct HmsPlan<'a> {
    /// Device tokens (`tokens` plus a token in `to`).
    pub tokens: Vec<Cow<'a, str>>,
    /// The message, not checked yet.
    pub fields: HmsFields,
}

/// Fields gorush accepts for Huawei that this gateway cannot honour.
const REFUSED: [(&str, &str); 9] = [
    (
        "badge",
        "a Huawei badge needs the app's launcher activity: send huawei_notification.badge {\"class\", \"set_num\" or \"add_num\"}",
    ),
    ("topic", "HMS topics are not carried; send tokens"),
    ("condition", "HMS conditions are not carried; send tokens"),
    (
        "notification",
        "an FCM notification object is not carried for Huawei; use title, message, image or huawei_notification",
    ),
    (
        "android",
        "an FCM AndroidConfig is not carried for Huawei; use huawei_notification and the huawei_* fields",
    ),
    ("apns", "an APNs override is not carried for Huawei"),
    ("webpush", "an FCM WebpushConfig is not carried for Huawei"),
    (
        "app_id",
        "credentials live in the gateway's [hms] section; name one of its apps with \"app\"",
    ),
    (
        "app_secret",
        "credentials live in the gateway's [hms] section; name one of its apps with \"app\"",
    ),
];

/// Maps one Huawei notification.
pub fn plan<'a>(f: &Fields<'a>) -> Result<HmsPlan<'a>, NotificationError> {
    f.refuse(&REFUSED)?;
    let mut tokens: Vec<Cow<'a, str>> = f
        .strings("tokens")?
        .into_iter()
        .map(Cow::Borrowed)
        .collect();
    if let Some(to) = f.str("to")? {
        tokens.push(Cow::Borrowed(to));
    }

    let mut notification = Map::new();
    for (field, key) in [("title", "title"), ("message", "body"), ("image", "image")] {
        if let Some(v) = f.str(field)? {
            notification.insert(key.into(), v.into());
        }
    }
    let mut android = Map::new();
    let mut android_notification = f.object("huawei_notification")?.cloned();
    let shows = !notification.is_empty() || android_notification.is_some();
    if shows {
        let n = android_notification.get_or_insert_with(Map::new);
        match f.raw("sound") {
            Some(Value::String(s)) if !s.is_empty() => {
                n.insert("sound".into(), s.clone().into());
            }
            _ => {
                n.entry("default_sound").or_insert(Value::Bool(true));
            }
        }
    }
    if let Some(n) = android_notification {
        android.insert("notification".into(), Value::Object(n));
    }
    match f.str("priority")? {
        None => {}
        Some(p) if p.eq_ignore_ascii_case("high") => {
            android.insert("urgency".into(), json!("HIGH"));
        }
        Some(p) if p.eq_ignore_ascii_case("normal") => {
            android.insert("urgency".into(), json!("NORMAL"));
        }
        Some(p) => {
            return Err(f.error("priority", format!("{p:?} is not \"high\" or \"normal\"")));
        }
    }
    if let Some(key) = f.int("huawei_collapse_key")? {
        if !(-1..=100).contains(&key) {
            return Err(f.error("huawei_collapse_key", "must be from -1 to 100"));
        }
        android.insert("collapse_key".into(), json!(key));
    }
    for (field, key) in [
        ("huawei_ttl", "ttl"),
        ("category", "category"),
        ("bi_tag", "bi_tag"),
    ] {
        if let Some(v) = f.str(field)? {
            android.insert(key.into(), v.into());
        }
    }
    if let Some(target) = f.int("fast_app_target")? {
        android.insert("fast_app_target".into(), json!(target));
    }

    let data = match (f.object("data")?, f.str("huawei_data")?) {
        (Some(_), Some(_)) => {
            return Err(f.error("huawei_data", "give data or huawei_data, not both"));
        }
        (Some(object), None) => Some(Value::Object(object.clone())),
        (None, Some(text)) => Some(Value::String(text.to_owned())),
        (None, None) => None,
    };
    Ok(HmsPlan {
        tokens,
        fields: HmsFields {
            data,
            notification: (!notification.is_empty()).then_some(Value::Object(notification)),
            android: (!android.is_empty()).then_some(Value::Object(android)),
            validate_only: f.bool("dry_run")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hms::HmsMessage;

    fn plan_of(v: &Value) -> Result<HmsPlan<'_>, NotificationError> {
        plan(&Fields::new(0, v).expect("an object"))
    }

    #[test]
    fn gorush_fields_land_where_push_kit_wants_them() {
        let n = json!({
            "platform": 3, "tokens": ["a", "b"], "to": "c",
            "title": "T", "message": "M", "image": "https://x/i.png", "sound": "ding",
            "data": {"k": 1}, "priority": "high", "huawei_collapse_key": 2,
            "huawei_ttl": "3600s", "category": "IM", "bi_tag": "tag", "fast_app_target": 1,
            "dry_run": true,
        });
        let p = plan_of(&n).expect("mapped");
        assert_eq!(p.tokens, ["a", "b", "c"]);
        assert!(p.fields.validate_only);
        let m = HmsMessage::new(p.fields).expect("valid");
        let body: Value = serde_json::from_slice(&m.body(["a"])).expect("JSON");
        let msg = &body["message"];
        assert_eq!(body["validate_only"], true);
        assert_eq!(
            msg["notification"],
            json!({"title": "T", "body": "M", "image": "https://x/i.png"})
        );
        assert_eq!(msg["data"], "{\"k\":1}");
        let a = &msg["android"];
        assert_eq!(a["urgency"], "HIGH");
        assert_eq!(a["collapse_key"], 2);
        assert_eq!(a["ttl"], "3600s");
        assert_eq!(a["category"], "IM");
        assert_eq!(a["bi_tag"], "tag");
        assert_eq!(a["fast_app_target"], 1);
        assert_eq!(a["notification"]["sound"], "ding");
        assert_eq!(a["notification"]["click_action"], json!({"type": 3}));
    }

    #[test]
    fn huawei_notification_and_data_pass_through() {
        let n = json!({
            "platform": 3, "tokens": ["a"], "huawei_data": "raw text",
            "huawei_notification": {"title": "T", "body": "B",
                "click_action": {"type": 1, "action": "com.example.OPEN"}},
        });
        let m = HmsMessage::new(plan_of(&n).expect("mapped").fields).expect("valid");
        let body: Value = serde_json::from_slice(&m.body(["a"])).expect("JSON");
        assert_eq!(body["message"]["data"], "raw text");
        let an = &body["message"]["android"]["notification"];
        assert_eq!(an["click_action"]["action"], "com.example.OPEN");
        assert_eq!(an["default_sound"], true);
    }

    #[test]
    fn fields_that_cannot_be_honoured_are_refused_by_name() {
        for (extra, field) in [
            (json!({"badge": 3}), "badge"),
            (json!({"topic": "news"}), "topic"),
            (json!({"android": {}}), "android"),
            (json!({"notification": {"title": "x"}}), "notification"),
            (json!({"app_secret": "s"}), "app_secret"),
            (json!({"priority": "urgent"}), "priority"),
            (json!({"huawei_collapse_key": 101}), "huawei_collapse_key"),
            (json!({"data": {"a": 1}, "huawei_data": "x"}), "huawei_data"),
        ] {
            let mut n = json!({"platform": 3, "tokens": ["a"], "message": "M", "title": "T"});
            for (k, v) in extra.as_object().expect("object") {
                n[k] = v.clone();
            }
            match plan_of(&n) {
                Err(e) => assert_eq!(e.field, field, "{n}"),
                Ok(_) => panic!("accepted {n}"),
            }
        }
    }
}
