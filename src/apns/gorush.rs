//! A gorush iOS notification (`platform: 1`) as an APNs request: what gorush puts
//! in headers becomes our APNs header fields, what it puts in the payload
//! becomes the JSON payload (the same keys gorush's payload builder writes).
//!
//! | gorush field | APNs |
//! |---|---|
//! | `topic`, `push_type`, `collapse_id`, `expiration` | `apns-topic`, `apns-push-type`, `apns-collapse-id`, `apns-expiration` |
//! | `priority` `high` / `normal` | `apns-priority` 10 / 5 |
//! | `message` (no `title`) | `aps.alert` (a string) |
//! | `title`, `message`, `alert{…}` | `aps.alert.{title,body,subtitle,loc-key,…}` |
//! | `badge`, `category`, `thread-id`, `url-args`, `interruption_level` | `aps.badge`, `aps.category`, `aps.thread-id`, `aps.url-args`, `aps.interruption-level` |
//! | `sound` (string or `{name,volume,critical}`), `name`, `volume` | `aps.sound` |
//! | `content_available`, `mutable_content` | `aps.content-available: 1`, `aps.mutable-content: 1` |
//! | Live Activity keys | `aps.content-state`, `aps.timestamp`, `aps.event`, `aps.stale-date`, `aps.dismissal-date`, `aps.attributes-type`, `aps.attributes`, `aps.relevance-score` |
//! | `data` | custom keys beside `aps` |
//! | `apns.payload`, `apns.headers` (README example) | merged into the payload / headers |

use serde_json::{Map, Value, json};

use crate::platform::{Fields, NotificationError};

/// The APNs side of one notification: header fields and the payload.
#[derive(Debug, Default)]
pub struct ApplePlan<'a> {
    /// `apns-topic` (falls back to `apns.topic`).
    pub topic: Option<&'a str>,
    /// `apns-push-type`.
    pub push_type: Option<&'a str>,
    /// `apns-priority` as a number.
    pub priority: Option<i64>,
    /// `apns-expiration`.
    pub expiration: Option<i64>,
    /// `apns-collapse-id`.
    pub collapse_id: Option<&'a str>,
    /// The serialized payload.
    pub payload: Vec<u8>,
}

/// `alert{…}` keys gorush copies into `aps.alert`.
const ALERT_STRINGS: [&str; 9] = [
    "title",
    "body",
    "subtitle",
    "title-loc-key",
    "loc-key",
    "action-loc-key",
    "launch-image",
    "action",
    "summary-arg",
];
const ALERT_ARRAYS: [&str; 2] = ["title-loc-args", "loc-args"];

/// Maps one iOS notification.
pub fn plan<'a>(f: &Fields<'a>) -> Result<ApplePlan<'a>, NotificationError> {
    let mut aps = Map::new();
    let title = f.str("title")?;
    let message = f.str("message")?;
    if let (Some(m), None) = (message, title) {
        aps.insert("alert".into(), m.into());
    }
    if let Some(badge) = f.int("badge")? {
        // gorush: a negative badge leaves the badge alone, 0 clears it.
        if badge >= 0 {
            aps.insert("badge".into(), badge.into());
        }
    }
    if f.bool("mutable_content")? {
        aps.insert("mutable-content".into(), 1.into());
    }
    if let Some(sound) = sound(f)? {
        aps.insert("sound".into(), sound);
    }
    if f.bool("content_available")? {
        aps.insert("content-available".into(), 1.into());
    }
    let url_args = f.strings("url-args")?;
    if !url_args.is_empty() {
        aps.insert("url-args".into(), json!(url_args));
    }
    if let Some(thread) = f.str_any(&["thread-id", "thread_id"])? {
        aps.insert("thread-id".into(), thread.into());
    }
    if let Some(level) = f.str("interruption_level")? {
        if !["passive", "active", "time-sensitive", "critical"].contains(&level) {
            return Err(f.error(
                "interruption_level",
                format!("{level:?} is not passive, active, time-sensitive or critical"),
            ));
        }
        aps.insert("interruption-level".into(), level.into());
    }
    if let Some(category) = f.str("category")? {
        aps.insert("category".into(), category.into());
    }
    alert(f, &mut aps, title, message)?;
    live_activity(f, &mut aps)?;

    let mut payload = Map::new();
    if let Some(data) = f.object("data")? {
        for (key, value) in data {
            if key == "aps" {
                return Err(f.error("data", "the key \"aps\" is APNs' own; put custom keys only"));
            }
            payload.insert(key.clone(), value.clone());
        }
    }
    let mut plan = ApplePlan {
        topic: f.str("topic")?,
        push_type: f.str("push_type")?,
        priority: match f.str("priority")? {
            None => None,
            Some("high") => Some(10),
            Some("normal") => Some(5),
            Some(other) => {
                return Err(f.error(
                    "priority",
                    format!("{other:?} is not \"high\" or \"normal\""),
                ));
            }
        },
        expiration: f.int("expiration")?,
        collapse_id: f.str("collapse_id")?,
        payload: Vec::new(),
    };
    if let Some(id) = f.str("apns_id")?
        && uuid::Uuid::try_parse(id).is_err()
    {
        return Err(f.error("apns_id", format!("{id:?} is not a canonical UUID")));
    }
    apns_config(f, &mut plan, &mut aps, &mut payload)?;
    payload.insert("aps".into(), Value::Object(aps));
    plan.payload = Value::Object(payload).to_string().into_bytes();
    Ok(plan)
}

/// `sound` (a string, or `{name, volume, critical}`), then `name` and
/// `volume`, which turn the sound into a dictionary as gorush's builder does.
fn sound(f: &Fields<'_>) -> Result<Option<Value>, NotificationError> {
    let mut sound = match f.raw("sound") {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(Value::String(s.clone())),
        Some(Value::Object(m)) => Some(Value::Object(sound_dict(f, m)?)),
        Some(other) => {
            return Err(f.error(
                "sound",
                format!("must be a string or {{name, volume, critical}}, got {other}"),
            ));
        }
    };
    let name = f.str("name")?;
    let volume = f.number("volume")?.filter(|v| *v > 0.0);
    if name.is_some() || volume.is_some() {
        let mut dict = match sound.take() {
            Some(Value::Object(m)) => m,
            Some(Value::String(s)) => Map::from_iter([("name".to_owned(), Value::String(s))]),
            _ => Map::new(),
        };
        if let Some(name) = name {
            dict.insert("name".into(), name.into());
        }
        if let Some(volume) = volume {
            dict.insert("volume".into(), volume.into());
        }
        sound = Some(Value::Object(dict));
    }
    Ok(sound)
}

fn sound_dict(
    f: &Fields<'_>,
    m: &Map<String, Value>,
) -> Result<Map<String, Value>, NotificationError> {
    let mut out = Map::new();
    for (key, value) in m {
        let ok = match key.as_str() {
            "name" => value.is_string(),
            "volume" => value.is_number(),
            "critical" => value.is_i64() || value.is_boolean(),
            _ => {
                return Err(f.error(
                    &format!("sound.{key}"),
                    "unknown key; a sound dictionary has name, volume and critical",
                ));
            }
        };
        if !ok {
            return Err(f.error(
                &format!("sound.{key}"),
                format!("has the wrong type: {value}"),
            ));
        }
        let value = match (key.as_str(), value) {
            // APNs wants critical as 1 or 0.
            ("critical", Value::Bool(b)) => Value::from(u8::from(*b)),
            // gorush omits a zero critical or volume (omitempty).
            ("critical" | "volume", Value::Number(n)) if n.as_f64() == Some(0.0) => continue,
            _ => value.clone(),
        };
        out.insert(key.clone(), value);
    }
    Ok(out)
}

/// `title` and `message` with a title, then every `alert{…}` key.
fn alert(
    f: &Fields<'_>,
    aps: &mut Map<String, Value>,
    title: Option<&str>,
    message: Option<&str>,
) -> Result<(), NotificationError> {
    let given = f.object("alert")?;
    let mut dict = Map::new();
    if let Some(t) = title {
        dict.insert("title".into(), t.into());
        if let Some(m) = message {
            dict.insert("body".into(), m.into());
        }
    }
    if let Some(given) = given {
        for (key, value) in given {
            let field = format!("alert.{key}");
            if value.is_null() || value.as_str() == Some("") {
                continue;
            }
            if ALERT_STRINGS.contains(&key.as_str()) {
                if !value.is_string() {
                    return Err(f.error(&field, "must be a string"));
                }
            } else if ALERT_ARRAYS.contains(&key.as_str()) {
                if !value
                    .as_array()
                    .is_some_and(|a| a.iter().all(Value::is_string))
                {
                    return Err(f.error(&field, "must be an array of strings"));
                }
            } else if key == "summary-arg-count" {
                if !value.is_u64() {
                    return Err(f.error(&field, "must be a positive integer"));
                }
            } else {
                return Err(f.error(
                    &field,
                    "unknown alert key (see gorush's \"iOS alert payload\" table)",
                ));
            }
            dict.insert(key.clone(), value.clone());
        }
    }
    if dict.is_empty() {
        return Ok(());
    }
    // A string alert (`message` without `title`) becomes the body, so adding
    // alert keys never loses the message.
    if let Some(Value::String(body)) = aps.remove("alert") {
        dict.entry("body").or_insert(Value::String(body));
    }
    aps.insert("alert".into(), Value::Object(dict));
    Ok(())
}

/// The Live Activity keys, written into `aps` under the same names.
fn live_activity(f: &Fields<'_>, aps: &mut Map<String, Value>) -> Result<(), NotificationError> {
    if let Some(state) = f.object("content-state")? {
        aps.insert("content-state".into(), Value::Object(state.clone()));
    }
    for key in ["stale-date", "dismissal-date", "timestamp"] {
        if let Some(n) = f.int(key)?
            && n > 0
        {
            aps.insert(key.into(), n.into());
        }
    }
    if let Some(event) = f.str("event")? {
        if !["start", "update", "end"].contains(&event) {
            return Err(f.error("event", format!("{event:?} is not start, update or end")));
        }
        aps.insert("event".into(), event.into());
    }
    if let Some(t) = f.str("attributes-type")? {
        aps.insert("attributes-type".into(), t.into());
    }
    if let Some(a) = f.object("attributes")? {
        aps.insert("attributes".into(), Value::Object(a.clone()));
    }
    if let Some(score) = f.number("relevance-score")? {
        aps.insert("relevance-score".into(), score.into());
    }
    if aps.get("event").and_then(Value::as_str) == Some("start")
        && !(aps.contains_key("attributes-type") && aps.contains_key("attributes"))
    {
        return Err(f.error(
            "attributes-type",
            "a Live Activity start needs attributes-type and attributes",
        ));
    }
    Ok(())
}

/// gorush's README shows an FCM-style `apns: {headers, payload}` object on
/// an iOS notification: its payload keys are merged (into `aps` key by key),
/// its headers read as the matching header fields.
fn apns_config<'a>(
    f: &Fields<'a>,
    plan: &mut ApplePlan<'a>,
    aps: &mut Map<String, Value>,
    payload: &mut Map<String, Value>,
) -> Result<(), NotificationError> {
    let Some(config) = f.object("apns")? else {
        return Ok(());
    };
    for (key, value) in config {
        match (key.as_str(), value) {
            ("payload", Value::Object(given)) => {
                for (k, v) in given {
                    match (k.as_str(), v) {
                        ("aps", Value::Object(more)) => {
                            for (ak, av) in more {
                                aps.insert(ak.clone(), av.clone());
                            }
                        }
                        ("aps", _) => {
                            return Err(f.error("apns.payload.aps", "must be a JSON object"));
                        }
                        _ => {
                            payload.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            ("headers", Value::Object(headers)) => {
                for (name, v) in headers {
                    let field = format!("apns.headers.{name}");
                    let text = v
                        .as_str()
                        .ok_or_else(|| f.error(&field, "must be a string"))?;
                    let number = || {
                        text.parse::<i64>()
                            .map_err(|_| f.error(&field, "must be a number in a string"))
                    };
                    match name.to_ascii_lowercase().as_str() {
                        "apns-priority" => plan.priority = Some(number()?),
                        "apns-expiration" => plan.expiration = Some(number()?),
                        "apns-collapse-id" => plan.collapse_id = Some(text),
                        "apns-push-type" => plan.push_type = Some(text),
                        "apns-topic" => plan.topic = Some(text),
                        _ => return Err(f.error(&field, "not an APNs header pushgate can set")),
                    }
                }
            }
            _ => {
                return Err(f.error(
                    &format!("apns.{key}"),
                    "only apns.payload and apns.headers (objects) are read",
                ));
            }
        }
    }
    Ok(())
}
