//! Reading and checking a `messages:send` body the way Push Kit does: the
//! request shape, the `message` structure, the token count and the size.
//! The order of the checks and the code each one fails with are the table
//! in the module docs of `mock::hms`.

use serde_json::{Map, Value};

use super::codes::Code;
use super::inbox::Notification;

/// Most tokens one request may name.
pub(super) const MAX_TOKENS: usize = 1000;
/// Largest `message` without its `token` array, in bytes of compact JSON
/// ("message body size (tokens excluded) over the default 4096 bytes").
pub(super) const MAX_MESSAGE_BYTES: usize = 4096;

const REQUEST_FIELDS: [&str; 3] = ["validate_only", "message", "review"];
const MESSAGE_FIELDS: [&str; 8] = [
    "data",
    "notification",
    "android",
    "apns",
    "webpush",
    "token",
    "topic",
    "condition",
];
const NOTIFICATION_FIELDS: [&str; 3] = ["title", "body", "image"];

/// A send request that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct SendRequest {
    pub validate_only: bool,
    pub tokens: Vec<String>,
    pub data: Option<String>,
    pub notification: Option<Notification>,
    pub android: Option<Value>,
}

/// A failed check: the code to answer and the `msg` saying what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refused {
    pub code: Code,
    pub msg: String,
}

fn refused<T>(code: Code, msg: impl Into<String>) -> Result<T, Refused> {
    Err(Refused {
        code,
        msg: msg.into(),
    })
}

/// Parses and checks a send body.
pub(super) fn parse(body: &[u8]) -> Result<SendRequest, Refused> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(e) => return refused(Code::ParameterError, format!("Invalid JSON body: {e}")),
    };
    let Value::Object(request) = value else {
        return refused(
            Code::ParameterError,
            "The request body must be a JSON object",
        );
    };
    // Huawei finds no token when `message` is missing or misspelt, and says
    // so before it minds any other field.
    let Some(message) = request.get("message") else {
        return refused(Code::TokenCount, "No message, so no token to send to");
    };
    let validate_only = match request.get("validate_only") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return refused(Code::ParameterError, "validate_only must be a boolean"),
    };
    if let Some(key) = request
        .keys()
        .find(|k| !REQUEST_FIELDS.contains(&k.as_str()))
    {
        return refused(
            Code::ParameterError,
            format!("Unknown request parameter: {key}"),
        );
    }
    let Value::Object(message) = message else {
        return refused(Code::IncorrectMessage, "message must be an object");
    };
    let tokens = tokens(message)?;
    if let Some(key) = message
        .keys()
        .find(|k| !MESSAGE_FIELDS.contains(&k.as_str()))
    {
        return refused(
            Code::IncorrectMessage,
            format!("Unknown field message.{key}"),
        );
    }
    let data = match message.get("data") {
        None => None,
        Some(Value::String(data)) => Some(data.clone()),
        Some(_) => {
            return refused(
                Code::IncorrectMessage,
                "message.data must be a string (send a JSON object as its text)",
            );
        }
    };
    let notification = message.get("notification").map(notification).transpose()?;
    let android = message.get("android");
    if let Some(android) = android {
        check_android(android, notification.as_ref())?;
    }
    for key in ["apns", "webpush"] {
        if message.get(key).is_some_and(|v| !v.is_object()) {
            return refused(
                Code::IncorrectMessage,
                format!("message.{key} must be an object"),
            );
        }
    }
    let android_payload =
        android.is_some_and(|a| a.get("notification").is_some() || a.get("data").is_some());
    if data.is_none() && notification.is_none() && !android_payload {
        return refused(
            Code::IncorrectMessage,
            "The message has no payload: set data, notification or android.notification",
        );
    }
    let size = size_without_tokens(message);
    if size > MAX_MESSAGE_BYTES {
        return refused(
            Code::MessageTooBig,
            format!("The message is {size} bytes without its tokens; at most {MAX_MESSAGE_BYTES}"),
        );
    }
    Ok(SendRequest {
        validate_only,
        tokens,
        data,
        notification,
        android: android.cloned(),
    })
}

/// `message.token`: an array of 1..=1000 strings.
fn tokens(message: &Map<String, Value>) -> Result<Vec<String>, Refused> {
    let targets = ["topic", "condition"]
        .into_iter()
        .filter(|k| message.contains_key(*k))
        .count();
    let Some(token) = message.get("token") else {
        if targets > 0 {
            return refused(
                Code::ParameterError,
                "message.topic and message.condition are not modelled by the mock; use message.token",
            );
        }
        return refused(Code::TokenCount, "message.token is missing");
    };
    if targets > 0 {
        return refused(
            Code::ParameterError,
            "Exactly one of message.token, message.topic and message.condition may be set",
        );
    }
    let Value::Array(items) = token else {
        return refused(
            Code::IncorrectMessage,
            "message.token must be an array of strings",
        );
    };
    if items.is_empty() || items.len() > MAX_TOKENS {
        return refused(
            Code::TokenCount,
            format!(
                "message.token holds {} tokens; 1 to {MAX_TOKENS} allowed",
                items.len()
            ),
        );
    }
    items
        .iter()
        .map(|item| match item {
            Value::String(token) => Ok(token.clone()),
            _ => refused(
                Code::IncorrectMessage,
                "message.token must be an array of strings",
            ),
        })
        .collect()
}

/// `message.notification`: an object of optional strings.
fn notification(value: &Value) -> Result<Notification, Refused> {
    let Value::Object(fields) = value else {
        return refused(
            Code::IncorrectMessage,
            "message.notification must be an object",
        );
    };
    if let Some(key) = fields
        .keys()
        .find(|k| !NOTIFICATION_FIELDS.contains(&k.as_str()))
    {
        return refused(
            Code::IncorrectMessage,
            format!("Unknown field message.notification.{key}"),
        );
    }
    let text = |key: &str| match fields.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => refused(
            Code::IncorrectMessage,
            format!("message.notification.{key} must be a string"),
        ),
    };
    Ok(Notification {
        title: text("title")?,
        body: text("body")?,
        image: text("image")?,
    })
}

/// The documented rules of `message.android`; other fields pass through.
fn check_android(android: &Value, common: Option<&Notification>) -> Result<(), Refused> {
    let Value::Object(a) = android else {
        return refused(Code::IncorrectMessage, "message.android must be an object");
    };
    let bad = |what: &str| refused(Code::IncorrectMessage, format!("message.android.{what}"));
    if let Some(key) = a.get("collapse_key")
        && !key.as_i64().is_some_and(|k| (-1..=100).contains(&k))
    {
        return refused(
            Code::InvalidCollapseKey,
            "message.android.collapse_key must be an integer from -1 to 100",
        );
    }
    if let Some(urgency) = a.get("urgency")
        && !matches!(urgency.as_str(), Some("HIGH" | "NORMAL"))
    {
        return bad("urgency must be HIGH or NORMAL");
    }
    if let Some(ttl) = a.get("ttl")
        && !ttl.as_str().is_some_and(is_ttl)
    {
        return bad("ttl must be seconds as text, like \"86400\" or \"86400s\"");
    }
    for key in ["category", "bi_tag", "data", "receipt_id"] {
        if a.get(key).is_some_and(|v| !v.is_string()) {
            return bad(&format!("{key} must be a string"));
        }
    }
    if let Some(target) = a.get("fast_app_target")
        && !matches!(target.as_i64(), Some(1 | 2))
    {
        return bad("fast_app_target must be 1 or 2");
    }
    if let Some(kind) = a.get("target_user_type")
        && !matches!(kind.as_i64(), Some(0 | 1))
    {
        return bad("target_user_type must be 0 or 1");
    }
    match a.get("notification") {
        None => Ok(()),
        Some(Value::Object(n)) => check_android_notification(n, common),
        Some(_) => bad("notification must be an object"),
    }
}

/// An Android notification message: a click action, and a title and a body
/// here or in `message.notification`.
fn check_android_notification(
    n: &Map<String, Value>,
    common: Option<&Notification>,
) -> Result<(), Refused> {
    let bad = |what: &str| {
        refused(
            Code::IncorrectMessage,
            format!("message.android.notification.{what}"),
        )
    };
    for key in ["title", "body", "image"] {
        if n.get(key).is_some_and(|v| !v.is_string()) {
            return bad(&format!("{key} must be a string"));
        }
    }
    let Some(Value::Object(click)) = n.get("click_action") else {
        return bad("click_action is required in a notification message");
    };
    let text = |key: &str| {
        click
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    match click.get("type").and_then(Value::as_i64) {
        Some(1) if text("intent").is_none() && text("action").is_none() => {
            return bad("click_action of type 1 needs intent or action");
        }
        Some(2) if !text("url").is_some_and(|u| u.starts_with("https://")) => {
            return bad("click_action of type 2 needs an https url");
        }
        Some(1..=3) => {}
        _ => return bad("click_action.type must be 1, 2 or 3"),
    }
    for key in ["title", "body"] {
        let here = n
            .get(key)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        let there = common
            .and_then(|c| {
                if key == "title" {
                    c.title.as_deref()
                } else {
                    c.body.as_deref()
                }
            })
            .is_some_and(|s| !s.is_empty());
        if !here && !there {
            return bad(&format!(
                "{key} or message.notification.{key} is required in a notification message"
            ));
        }
    }
    Ok(())
}

/// Huawei's TTL text: `\d+`, `\d+s`, or with up to nine decimals.
fn is_ttl(ttl: &str) -> bool {
    let number = ttl.strip_suffix(['s', 'S']).unwrap_or(ttl);
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && fraction.is_none_or(|f| digits(f) && f.len() <= 9)
}

/// The compact JSON size of `message` without its `token` array.
fn size_without_tokens(message: &Map<String, Value>) -> usize {
    let mut rest = message.clone();
    rest.remove("token");
    serde_json::to_vec(&Value::Object(rest)).map_or(usize::MAX, |v| v.len())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(body: Value) -> Result<SendRequest, Refused> {
        parse(body.to_string().as_bytes())
    }

    fn code(body: Value) -> Code {
        match check(body) {
            Ok(_) => panic!("accepted"),
            Err(refused) => refused.code,
        }
    }

    fn click() -> Value {
        json!({"type": 3})
    }

    #[test]
    fn a_full_message_is_read() {
        let request = check(json!({
            "validate_only": true,
            "message": {
                "data": "{\"k\":\"v\"}",
                "notification": {"title": "T", "body": "B"},
                "android": {"urgency": "HIGH", "ttl": "86400s", "collapse_key": -1,
                            "notification": {"click_action": click()}},
                "token": ["a", "b"],
            }
        }))
        .expect("accepted");
        assert!(request.validate_only);
        assert_eq!(request.tokens, ["a", "b"]);
        assert_eq!(request.data.as_deref(), Some("{\"k\":\"v\"}"));
        assert_eq!(
            request.notification.and_then(|n| n.title),
            Some("T".to_owned())
        );
        assert!(request.android.is_some());
    }

    #[test]
    fn request_level_mistakes_are_parameter_errors() {
        assert_eq!(
            parse(b"not json").map_err(|r| r.code),
            Err(Code::ParameterError)
        );
        assert_eq!(code(json!([1])), Code::ParameterError);
        assert_eq!(
            code(json!({"validate_only": "no", "message": {"data": "x", "token": ["a"]}})),
            Code::ParameterError
        );
        assert_eq!(
            code(json!({"review": [], "extra": 1, "message": {"data": "x", "token": ["a"]}})),
            Code::ParameterError
        );
        assert_eq!(
            code(json!({"message": {"data": "x", "topic": "news"}})),
            Code::ParameterError
        );
    }

    #[test]
    fn token_counts_outside_one_to_a_thousand_are_refused() {
        assert_eq!(code(json!({"validate_only": false})), Code::TokenCount);
        assert_eq!(
            code(json!({"messages": {"data": "x", "token": ["a"]}})),
            Code::TokenCount
        );
        assert_eq!(code(json!({"message": {"data": "x"}})), Code::TokenCount);
        assert_eq!(
            code(json!({"message": {"data": "x", "token": []}})),
            Code::TokenCount
        );
        let many: Vec<String> = (0..=MAX_TOKENS).map(|i| format!("t{i}")).collect();
        assert_eq!(
            code(json!({"message": {"data": "x", "token": many}})),
            Code::TokenCount
        );
        let most: Vec<String> = (0..MAX_TOKENS).map(|i| format!("t{i}")).collect();
        assert!(check(json!({"message": {"data": "x", "token": most}})).is_ok());
    }

    #[test]
    fn structure_mistakes_are_incorrect_message() {
        let cases = [
            json!({"message": "x"}),
            json!({"message": {"data": "x", "token": "a"}}),
            json!({"message": {"data": "x", "token": [1]}}),
            json!({"message": {"data": {"k": "v"}, "token": ["a"]}}),
            json!({"message": {"data": "x", "tokens": ["b"], "token": ["a"]}}),
            json!({"message": {"notification": {"title": 1}, "token": ["a"]}}),
            json!({"message": {"notification": {"tittle": "x"}, "token": ["a"]}}),
            json!({"message": {"token": ["a"]}}),
            json!({"message": {"data": "x", "android": [], "token": ["a"]}}),
            json!({"message": {"data": "x", "android": {"urgency": "high"}, "token": ["a"]}}),
            json!({"message": {"data": "x", "android": {"ttl": 60}, "token": ["a"]}}),
            json!({"message": {"data": "x", "android": {"data": {}}, "token": ["a"]}}),
            json!({"message": {"android": {"notification": {"title": "t", "body": "b"}},
                               "token": ["a"]}}),
            json!({"message": {"android": {"notification": {"title": "t", "body": "b",
                               "click_action": {"type": 1}}}, "token": ["a"]}}),
            json!({"message": {"android": {"notification": {"title": "t",
                               "click_action": click()}}, "token": ["a"]}}),
            json!({"message": {"data": "x", "apns": "x", "token": ["a"]}}),
        ];
        for body in cases {
            assert_eq!(code(body.clone()), Code::IncorrectMessage, "{body}");
        }
    }

    #[test]
    fn the_common_notification_completes_the_android_one() {
        let body = json!({"message": {
            "notification": {"title": "t", "body": "b"},
            "android": {"notification": {"click_action": {"type": 1, "intent": "#Intent;end"}}},
            "token": ["a"],
        }});
        assert!(check(body).is_ok());
    }

    #[test]
    fn collapse_keys_outside_the_range_have_their_own_code() {
        for key in [json!(-2), json!(101), json!("1")] {
            let body =
                json!({"message": {"data": "x", "android": {"collapse_key": key}, "token": ["a"]}});
            assert_eq!(code(body), Code::InvalidCollapseKey);
        }
    }

    #[test]
    fn the_size_limit_leaves_the_tokens_out() {
        // `{"data":"…"}` is 11 bytes around the text.
        let fits = "x".repeat(MAX_MESSAGE_BYTES - 11);
        let tokens: Vec<String> = (0..MAX_TOKENS)
            .map(|i| format!("token-{i:0>100}"))
            .collect();
        assert!(check(json!({"message": {"data": fits, "token": tokens}})).is_ok());
        let over = "x".repeat(MAX_MESSAGE_BYTES - 10);
        assert_eq!(
            code(json!({"message": {"data": over, "token": ["a"]}})),
            Code::MessageTooBig
        );
    }

    #[test]
    fn ttl_text_follows_huawei_pattern() {
        for good in ["86400", "86400s", "1.5", "1.123456789S"] {
            assert!(is_ttl(good), "{good}");
        }
        for bad in ["", "s", "1.", ".5", "1.1234567890", "1h", "-1"] {
            assert!(!is_ttl(bad), "{bad}");
        }
    }
}
