//! gorush's `POST /api/push` as a platform sees it: a platform gorush has a
//! number for maps one notification to its own [`Request`]
//! ([`GorushMapping`]), reading the notification's fields through
//! [`Fields`], whose every failure names the notification's index and the
//! field, as gorush's 400 answer must.

use serde_json::{Map, Value, json};

use super::request::{Request, RequestError};
use crate::message::MessageError;

/// How gorush's `/api/push` reaches a platform (its family's
/// [`crate::job::GorushPlatform`] says which notifications are its).
pub trait GorushMapping: Send + Sync {
    /// One notification as this platform's request, tokens included.
    fn read<'a>(&self, fields: &Fields<'a>) -> Result<Request<'a>, RequestError>;
}

impl From<NotificationError> for RequestError {
    /// A 400 naming the notification's index and field.
    fn from(e: NotificationError) -> Self {
        RequestError::bad("bad_notification", e.to_string())
            .with(json!({ "index": e.index, "field": e.field }))
    }
}

impl Fields<'_> {
    /// A request error about this notification (an unknown app, a bad
    /// topic), its message prefixed with the notification and field it
    /// names, and the index added to the answer.
    pub fn retag(&self, mut e: RequestError) -> RequestError {
        let field = e
            .extra
            .as_ref()
            .and_then(|x| x["field"].as_str())
            .map(|f| format!(".{f}"))
            .unwrap_or_default();
        e.message = format!("notifications[{}]{field}: {}", self.index, e.message);
        let mut extra = e.extra.take().unwrap_or_else(|| json!({}));
        extra["index"] = json!(self.index);
        e.with(extra)
    }

    /// A message that does not build, as gorush's answer names it: a bad
    /// field is a 400 naming the notification's index and the field in
    /// gorush's words (`rename`: ours to gorush's), a message too large a 413.
    pub fn message_error(&self, e: MessageError, rename: &[(&str, &str)]) -> RequestError {
        let (field, problem, too_large) = match &e {
            MessageError::Field(f) => (&*f.field, f.problem.clone(), false),
            MessageError::TooLarge(t) => ("payload", t.to_string(), true),
        };
        let field = rename
            .iter()
            .find(|(ours, _)| *ours == field && !too_large)
            .map_or(field, |(_, theirs)| *theirs);
        let error = self.error(field, problem);
        if too_large {
            RequestError::too_large(error.to_string())
                .with(json!({ "index": self.index, "field": field }))
        } else {
            error.into()
        }
    }
}

/// A notification field that cannot be used as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("notifications[{index}].{field}: {problem}")]
pub struct NotificationError {
    /// Position in `notifications`.
    pub index: usize,
    /// The field, in gorush's spelling.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

/// One notification object and its index.
pub struct Fields<'a> {
    /// Position in `notifications`.
    pub index: usize,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    /// Wraps notification `index`, which must be an object.
    pub fn new(index: usize, value: &'a Value) -> Result<Self, NotificationError> {
        match value {
            Value::Object(map) => Ok(Self { index, map }),
            _ => Err(NotificationError {
                index,
                field: String::new(),
                problem: "a notification must be a JSON object".into(),
            }),
        }
    }

    /// An error about `field`.
    pub fn error(&self, field: &str, problem: impl Into<String>) -> NotificationError {
        NotificationError {
            index: self.index,
            field: field.to_owned(),
            problem: problem.into(),
        }
    }

    /// The raw value; JSON `null` counts as absent.
    pub fn raw(&self, field: &str) -> Option<&'a Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    /// A string field (absent or `""` = `None`).
    pub fn str(&self, field: &str) -> Result<Option<&'a str>, NotificationError> {
        match self.raw(field) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.error(field, format!("must be a string, got {other}"))),
        }
    }

    /// The first of several spellings that is present (gorush's `thread-id`
    /// beside the `thread_id` some clients send).
    pub fn str_any(&self, fields: &[&str]) -> Result<Option<&'a str>, NotificationError> {
        for f in fields {
            if let Some(s) = self.str(f)? {
                return Ok(Some(s));
            }
        }
        Ok(None)
    }

    /// A boolean field (absent = `false`).
    pub fn bool(&self, field: &str) -> Result<bool, NotificationError> {
        match self.raw(field) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.error(field, format!("must be true or false, got {other}"))),
        }
    }

    /// An integer field.
    pub fn int(&self, field: &str) -> Result<Option<i64>, NotificationError> {
        match self.raw(field) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.error(field, format!("must be an integer, got {n}"))),
            Some(other) => Err(self.error(field, format!("must be an integer, got {other}"))),
        }
    }

    /// A number field.
    pub fn number(&self, field: &str) -> Result<Option<f64>, NotificationError> {
        match self.raw(field) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(self.error(field, format!("must be a number, got {other}"))),
        }
    }

    /// An object field.
    pub fn object(&self, field: &str) -> Result<Option<&'a Map<String, Value>>, NotificationError> {
        match self.raw(field) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(other) => Err(self.error(field, format!("must be a JSON object, got {other}"))),
        }
    }

    /// An array-of-strings field (absent = empty).
    pub fn strings(&self, field: &str) -> Result<Vec<&'a str>, NotificationError> {
        match self.raw(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str().ok_or_else(|| {
                        self.error(
                            &format!("{field}[{i}]"),
                            format!("must be a string, got {v}"),
                        )
                    })
                })
                .collect(),
            Some(other) => {
                Err(self.error(field, format!("must be an array of strings, got {other}")))
            }
        }
    }

    /// Refuses `fields` when present: gorush fields this gateway cannot honour
    /// and must not silently drop.
    pub fn refuse(&self, fields: &[(&str, &str)]) -> Result<(), NotificationError> {
        for (field, why) in fields {
            if self.raw(field).is_some() {
                return Err(self.error(field, *why));
            }
        }
        Ok(())
    }
}
