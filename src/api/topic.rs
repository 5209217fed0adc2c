//! `"topic"` and `"condition"` on `/gcm/send` and `/fcm/send` (and gorush's
//! `/api/push`): one FCM message to a topic or a condition, carried as a job
//! of one "token", the topic name or the condition text.

use std::borrow::Cow;

use super::ApiError;
use crate::fcm::Target;
use crate::fcm::topic::{check_condition, check_topic};

/// Reads the target of a Google send: `None` for device tokens; for a topic
/// or a condition its kind and the one "token" the job carries. Tokens,
/// topic and condition are mutually exclusive (an empty one counts as absent).
pub fn target<'a>(
    topic: Option<&'a str>,
    condition: Option<&'a str>,
    tokens: &[Cow<'_, str>],
) -> Result<Option<(Target, Cow<'a, str>)>, ApiError> {
    let topic = topic.filter(|t| !t.is_empty());
    let condition = condition.filter(|c| !c.trim().is_empty());
    let bad = |field: &str, m: String| {
        ApiError::bad_request("bad_field", m).with(serde_json::json!({ "field": field }))
    };
    match (topic, condition) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(bad(
            "topic",
            "give either \"topic\" or \"condition\", not both".into(),
        )),
        (Some(_), None) | (None, Some(_)) if !tokens.is_empty() => Err(bad(
            "tokens",
            "a topic or condition send goes to the topic's subscribers: leave \"tokens\" out"
                .into(),
        )),
        (Some(topic), None) => {
            let bare = check_topic(topic).map_err(|e| bad("topic", e.to_string()))?;
            Ok(Some((Target::Topic, Cow::Borrowed(bare))))
        }
        (None, Some(condition)) => {
            check_condition(condition).map_err(|e| bad("condition", e.to_string()))?;
            Ok(Some((Target::Condition, Cow::Borrowed(condition))))
        }
    }
}
