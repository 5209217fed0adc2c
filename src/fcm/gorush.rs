//! A gorush Android notification (`platform: 2`) as a Google job (FCM v1, or
//! the legacy API when `[gcm]` is the configured one).
//!
//! | gorush field | FCM v1 / legacy |
//! |---|---|
//! | `title`, `message`, `image` | `notification.title`, `.body`, `.image` |
//! | `notification{…}` | `notification` / `android.notification` keys (icon, color, tag, click_action, sound, …) |
//! | `sound` (a string) | `android.notification.sound` |
//! | `data` | `data` (values made strings) |
//! | `priority`, `collapse_key`, `time_to_live` | `android.priority`, `.collapse_key`, `.ttl` |
//! | `restricted_package_name` | `android.restricted_package_name` |
//! | `dry_run` | v1 `validate_only` / legacy `dry_run` |
//! | `topic`, `condition`, `to: /topics/…` | `message.topic` / `.condition` (legacy `to`, `condition`) |
//! | `to` (a token) | one more token, as gorush does |

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::platform::{Fields, NotificationError};

/// The Google side of one notification.
#[derive(Debug, Default)]
pub struct GooglePlan<'a> {
    /// Device tokens (`tokens` plus a token in `to`).
    pub tokens: Vec<Cow<'a, str>>,
    /// `topic` (or `to: /topics/<name>`).
    pub topic: Option<&'a str>,
    /// `condition`.
    pub condition: Option<&'a str>,
    /// Serialized data object, when any.
    pub data: Option<Vec<u8>>,
    /// Serialized notification object, when any.
    pub notification: Option<Vec<u8>>,
    /// `collapse_key`.
    pub collapse_key: Option<&'a str>,
    /// `priority`.
    pub priority: Option<&'a str>,
    /// `time_to_live`.
    pub time_to_live: Option<i64>,
    /// `restricted_package_name`.
    pub restricted_package_name: Option<&'a str>,
    /// `dry_run`.
    pub dry_run: bool,
}

/// Fields that would change what FCM delivers and that pushgate cannot
/// carry yet: refused rather than dropped.
const REFUSED: [(&str, &str); 3] = [
    (
        "android",
        "FCM v1 AndroidConfig objects are not carried; use priority, collapse_key, time_to_live, notification{…}",
    ),
    (
        "apns",
        "an APNs override for FCM is not carried; send iOS devices with platform 1",
    ),
    ("webpush", "an FCM WebpushConfig is not carried"),
];

/// Maps one Android notification.
pub fn plan<'a>(
    f: &Fields<'a>,
    tokens: Vec<Cow<'a, str>>,
) -> Result<GooglePlan<'a>, NotificationError> {
    f.refuse(&REFUSED)?;
    let mut plan = GooglePlan {
        tokens,
        topic: f.str("topic")?,
        condition: f.str("condition")?,
        collapse_key: f.str("collapse_key")?,
        priority: f.str("priority")?,
        time_to_live: f.int("time_to_live")?,
        restricted_package_name: f.str("restricted_package_name")?,
        dry_run: f.bool("dry_run")?,
        ..GooglePlan::default()
    };
    match f.str("to")? {
        Some(to) if to.starts_with("/topics/") => {
            if plan.topic.is_some() {
                return Err(f.error("to", "give the topic in \"topic\" or in \"to\", not both"));
            }
            plan.topic = Some(to);
        }
        Some(to) => plan.tokens.push(Cow::Borrowed(to)),
        None => {}
    }
    let mut notification = f.object("notification")?.cloned().unwrap_or_default();
    for (field, key) in [("title", "title"), ("message", "body"), ("image", "image")] {
        if let Some(v) = f.str(field)? {
            notification.insert(key.into(), v.into());
        }
    }
    match f.raw("sound") {
        Some(Value::String(s)) if !s.is_empty() => {
            notification.insert("sound".into(), s.clone().into());
        }
        // gorush reads only a string sound for Android.
        _ => {}
    }
    // gorush's older `notification` spelling of the image.
    if let Some(url) = notification.remove("image_url") {
        notification.entry("image").or_insert(url);
    }
    if !notification.is_empty() {
        plan.notification = Some(Value::Object(notification).to_string().into_bytes());
    }
    if let Some(data) = f.object("data")? {
        let data: Map<String, Value> = data.clone();
        if !data.is_empty() {
            plan.data = Some(Value::Object(data).to_string().into_bytes());
        }
    }
    Ok(plan)
}
