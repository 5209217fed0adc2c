//! Declarative Web Push (W3C Push API, "declarative push message"; Safari
//! 18.4+): a payload the browser shows itself, without a service worker.
//! `/webpush/send` builds one from `"declarative": true`, or takes a payload
//! already in that shape (an object with `web_push`), and checks it the way
//! the browser's parser would, so a message every browser would drop (or
//! show as a plain push) is refused once, up front, naming the member.
//!
//! | member | rule |
//! |---|---|
//! | `web_push` | the number 8030 |
//! | `notification` | an object, required |
//! | `notification.title` | a string, required |
//! | `notification.navigate` | an absolute URL, required (opened on a click) |
//! | `notification.lang`, `body`, `tag`, `image`, `icon`, `badge` | strings |
//! | `notification.dir` | `auto`, `ltr` or `rtl` |
//! | `notification.silent`, `renotify`, `require_interaction` | booleans |
//! | `notification.timestamp` | an integer, 0 or more (ms since the epoch) |
//! | `notification.actions[i]` | `action` and `title` strings, `navigate` an absolute URL |
//! | `app_badge` | an integer, 0 or more |
//! | `mutable` | a boolean (true: a service worker may change it first) |
//!
//! Members the table does not name go through untouched.

use serde_json::{Map, Value};

use crate::message::{FieldError, field_error};

/// The `web_push` member's only value: the RFC number of Web Push.
pub const WEB_PUSH: u64 = 8030;

/// Members of a `"declarative": true` payload that belong at the top of
/// the message, beside `notification`, not inside it.
const TOP_LEVEL: [&str; 2] = ["app_badge", "mutable"];

/// True when `payload` is already a declarative push message (has `web_push`).
pub fn is_declarative(payload: &Map<String, Value>) -> bool {
    payload.contains_key("web_push")
}

/// The declarative message for a `"declarative": true` request: a payload
/// already in that shape as it is, else the payload is the notification
/// (`{"title", "body", "navigate", …}`) and is wrapped as
/// `{"web_push": 8030, "notification": {…}}`, its `app_badge` and `mutable`
/// lifted beside `notification`. Checked either way ([`check`]).
pub fn build(payload: Map<String, Value>) -> Result<Map<String, Value>, FieldError> {
    let message = if is_declarative(&payload) {
        payload
    } else {
        let mut notification = payload;
        let mut message = Map::new();
        message.insert("web_push".into(), Value::from(WEB_PUSH));
        let lifted: Vec<(String, Value)> = TOP_LEVEL
            .iter()
            .filter_map(|k| notification.remove(*k).map(|v| ((*k).to_owned(), v)))
            .collect();
        message.insert("notification".into(), Value::Object(notification));
        message.extend(lifted);
        message
    };
    check(&message)?;
    Ok(message)
}

/// Checks a declarative push message (the table above).
pub fn check(message: &Map<String, Value>) -> Result<(), FieldError> {
    let at = |name: &str| format!("payload.{name}");
    if message.get("web_push").and_then(Value::as_u64) != Some(WEB_PUSH) {
        return Err(field_error(
            at("web_push"),
            format!("must be the number {WEB_PUSH} in a declarative push message"),
        ));
    }
    let Some(Value::Object(n)) = message.get("notification") else {
        return Err(field_error(
            at("notification"),
            "is required: an object with at least title and navigate",
        ));
    };
    let n_at = |name: &str| at(&format!("notification.{name}"));
    match n.get("title") {
        Some(Value::String(_)) => {}
        Some(_) => return Err(field_error(n_at("title"), "must be a string")),
        None => return Err(field_error(n_at("title"), "is required")),
    }
    match n.get("navigate") {
        Some(Value::String(u)) => check_url(&n_at("navigate"), u)?,
        Some(_) => return Err(field_error(n_at("navigate"), "must be a URL string")),
        None => {
            return Err(field_error(
                n_at("navigate"),
                "is required: the absolute URL the browser opens on a click",
            ));
        }
    }
    for name in ["lang", "body", "tag", "image", "icon", "badge"] {
        if n.get(name).is_some_and(|v| !v.is_string()) {
            return Err(field_error(n_at(name), "must be a string"));
        }
    }
    if let Some(dir) = n.get("dir")
        && !matches!(dir.as_str(), Some("auto" | "ltr" | "rtl"))
    {
        return Err(field_error(
            n_at("dir"),
            "must be \"auto\", \"ltr\" or \"rtl\"",
        ));
    }
    for name in ["silent", "renotify", "require_interaction"] {
        if n.get(name).is_some_and(|v| !v.is_boolean()) {
            return Err(field_error(n_at(name), "must be true or false"));
        }
    }
    if n.get("timestamp").is_some_and(|v| !v.is_u64()) {
        return Err(field_error(
            n_at("timestamp"),
            "must be an integer, milliseconds since the epoch",
        ));
    }
    if let Some(actions) = n.get("actions") {
        let Some(actions) = actions.as_array() else {
            return Err(field_error(n_at("actions"), "must be an array"));
        };
        for (i, action) in actions.iter().enumerate() {
            check_action(&n_at(&format!("actions[{i}]")), action)?;
        }
    }
    if message.get("app_badge").is_some_and(|v| !v.is_u64()) {
        return Err(field_error(
            at("app_badge"),
            "must be an integer, 0 or more",
        ));
    }
    if message.get("mutable").is_some_and(|v| !v.is_boolean()) {
        return Err(field_error(at("mutable"), "must be true or false"));
    }
    Ok(())
}

fn check_action(path: &str, action: &Value) -> Result<(), FieldError> {
    let Some(action) = action.as_object() else {
        return Err(field_error(path.to_owned(), "must be an object"));
    };
    for name in ["action", "title"] {
        if !action.get(name).is_some_and(Value::is_string) {
            return Err(field_error(
                format!("{path}.{name}"),
                "is required: a string",
            ));
        }
    }
    match action.get("navigate") {
        None => Ok(()),
        Some(Value::String(u)) => check_url(&format!("{path}.navigate"), u),
        Some(_) => Err(field_error(
            format!("{path}.navigate"),
            "must be a URL string",
        )),
    }
}

/// An absolute URL (the browser parses `navigate` without a base).
fn check_url(field: &str, url: &str) -> Result<(), FieldError> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "https" | "http") => Ok(()),
        _ => Err(field_error(
            field.to_owned(),
            format!("{url:?} is not an absolute http(s) URL"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("an object")
    }

    #[test]
    fn a_notification_is_wrapped_and_a_message_kept() {
        let built = build(object(json!({
            "title": "Order shipped", "body": "It is on its way",
            "navigate": "https://shop.example/orders/42", "app_badge": 3, "mutable": true,
            "data": {"order": "42"}
        })))
        .expect("valid");
        assert_eq!(
            Value::Object(built),
            json!({
                "web_push": 8030,
                "notification": {"title": "Order shipped", "body": "It is on its way",
                                 "navigate": "https://shop.example/orders/42",
                                 "data": {"order": "42"}},
                "app_badge": 3, "mutable": true
            })
        );
        let given = json!({"web_push": 8030, "notification": {"title": "t", "navigate": "https://a.example/"}});
        assert_eq!(
            Value::Object(build(object(given.clone())).expect("valid")),
            given
        );
    }

    #[test]
    fn each_rule_names_its_member() {
        let ok = json!({"title": "t", "navigate": "https://a.example/"});
        let with = |k: &str, v: Value| {
            let mut m = object(json!({"web_push": 8030, "notification": ok.clone()}));
            m.insert(k.into(), v);
            m
        };
        let note = |k: &str, v: Value| {
            let mut n = object(ok.clone());
            n.insert(k.into(), v);
            object(json!({"web_push": 8030, "notification": n}))
        };
        for (message, field) in [
            (with("web_push", json!(8031)), "payload.web_push"),
            (with("web_push", json!("8030")), "payload.web_push"),
            (with("notification", json!("hi")), "payload.notification"),
            (
                object(
                    json!({"web_push": 8030, "notification": {"navigate": "https://a.example/"}}),
                ),
                "payload.notification.title",
            ),
            (
                object(json!({"web_push": 8030, "notification": {"title": "t"}})),
                "payload.notification.navigate",
            ),
            (
                note("navigate", json!("/relative")),
                "payload.notification.navigate",
            ),
            (
                note("navigate", json!("javascript:alert(1)")),
                "payload.notification.navigate",
            ),
            (note("title", json!(1)), "payload.notification.title"),
            (note("body", json!(1)), "payload.notification.body"),
            (note("dir", json!("up")), "payload.notification.dir"),
            (note("silent", json!("no")), "payload.notification.silent"),
            (
                note("timestamp", json!(-1)),
                "payload.notification.timestamp",
            ),
            (
                note("actions", json!([{"action": "a"}])),
                "payload.notification.actions[0].title",
            ),
            (
                note(
                    "actions",
                    json!([{"action": "a", "title": "A", "navigate": "x"}]),
                ),
                "payload.notification.actions[0].navigate",
            ),
            (with("app_badge", json!(-2)), "payload.app_badge"),
            (with("mutable", json!("true")), "payload.mutable"),
        ] {
            match check(&message) {
                Err(e) => assert_eq!(e.field, field, "{message:?}"),
                Ok(()) => panic!("{message:?} passed"),
            }
        }
        assert_eq!(
            build(object(json!({"title": "t"})))
                .expect_err("no navigate")
                .field,
            "payload.notification.navigate"
        );
    }
}
