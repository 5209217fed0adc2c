//! A send request as a platform reads it, whichever front it came through
//! (HTTP JSON or form, a stream's first line, gRPC): the body, what the
//! platform makes of it ([`Request`]: the app, the stored message, the raw
//! tokens and how to keep each), and why it refuses one ([`RequestError`],
//! with a stable code a front maps to its own status).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::job::Platform;
use crate::message::MessageError;

/// A send body.
#[derive(Debug, Clone)]
pub enum SendBody {
    /// `application/json`: the fields and the tokens.
    Json(Bytes),
    /// `application/x-www-form-urlencoded` (the GoCM form).
    Form(Bytes),
    /// The first line of a stream (NDJSON, gRPC `SendStream`): the JSON
    /// fields without tokens, which follow one by one.
    Header(Bytes),
}

impl SendBody {
    /// The JSON text of a JSON body or a stream's header.
    pub fn json(&self) -> Option<&[u8]> {
        match self {
            SendBody::Json(b) | SendBody::Header(b) => Some(b),
            SendBody::Form(_) => None,
        }
    }

    /// True for a stream's header: the tokens come later.
    pub fn is_header(&self) -> bool {
        matches!(self, SendBody::Header(_))
    }
}

/// How a front answers a refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Bad input (HTTP 400).
    BadRequest,
    /// Larger than the upstream takes (HTTP 413).
    TooLarge,
    /// A body type the route does not take (HTTP 415).
    UnsupportedMedia,
}

/// Why a request is refused, before anything is queued.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// How a front answers it.
    pub refusal: Refusal,
    /// Stable machine-readable code (`bad_field`, `no_tokens`, …).
    pub code: &'static str,
    /// What to change.
    pub message: String,
    /// Extra answer fields (e.g. `field`, `rejected`).
    pub extra: Option<Value>,
}

impl RequestError {
    /// A 400 with a code.
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            refusal: Refusal::BadRequest,
            code,
            message: message.into(),
            extra: None,
        }
    }

    /// A 413.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self {
            refusal: Refusal::TooLarge,
            code: "too_large",
            message: message.into(),
            extra: None,
        }
    }

    /// A 415: this route takes JSON only.
    pub fn json_only() -> Self {
        Self {
            refusal: Refusal::UnsupportedMedia,
            code: "unsupported_media_type",
            message: "send Content-Type: application/json".into(),
            extra: None,
        }
    }

    /// Adds fields to the answer.
    pub fn with(mut self, extra: Value) -> Self {
        self.extra = Some(extra);
        self
    }
}

impl From<MessageError> for RequestError {
    fn from(e: MessageError) -> Self {
        match e {
            MessageError::Field(f) => {
                Self::bad("bad_field", f.to_string()).with(serde_json::json!({ "field": f.field }))
            }
            MessageError::TooLarge(t) => Self::too_large(t.to_string()),
        }
    }
}

/// Maps serde's message for a bad JSON body to a 400.
pub fn bad_json(e: serde_json::Error) -> RequestError {
    RequestError::bad(
        "bad_json",
        format!("request body is not valid JSON for this route: {e}"),
    )
}

/// A refused token: how to show it in the answer, and the upstream's own
/// word for why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRefused {
    /// The token as the answer shows it; `None`: as sent.
    pub shown: Option<String>,
    /// The reason (`BadDeviceToken`, `InvalidRegistration`, …).
    pub reason: &'static str,
}

impl From<&'static str> for TokenRefused {
    fn from(reason: &'static str) -> Self {
        Self {
            shown: None,
            reason,
        }
    }
}

/// Checks one raw token and appends its kept form (its platform's codec) to
/// the buffer, or refuses it.
pub type Keep<'a> = Box<dyn Fn(&str, &mut Vec<u8>) -> Result<(), TokenRefused> + Send + Sync + 'a>;

/// A send request as its platform read it: ready to admit once its tokens
/// are taken in.
pub struct Request<'a> {
    /// Where it goes (for Google: FCM v1 or legacy, whichever is configured).
    pub platform: Platform,
    /// Whose credentials.
    pub app: Arc<str>,
    /// The message in its platform's stored form.
    pub fields: Vec<u8>,
    /// The message as the platform built it (handed to its lane when the job
    /// is delivered here, so it is not built again).
    pub message: Option<super::Built>,
    /// Nothing is sent after this.
    pub expires_at: Option<SystemTime>,
    /// Now, or after a delay.
    pub when: When,
    /// The sender's correlation id (gorush `notif_id`).
    pub notif_id: Option<Arc<str>>,
    /// The raw tokens of the body (none for a stream's header): each one a
    /// device token, a topic, or (Web Push) a subscription's JSON text.
    pub tokens: Vec<Cow<'a, str>>,
    /// Checks one raw token and appends its kept form.
    pub keep: Keep<'a>,
    /// About how many bytes one kept token takes, to size buffers.
    pub bytes_each: usize,
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("platform", &self.platform)
            .field("app", &self.app)
            .field("tokens", &self.tokens.len())
            .field("when", &self.when)
            .finish_non_exhaustive()
    }
}

/// When a job should go out: now, or after a delay (`send_at` / `delay_seconds`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct When {
    /// Hold the job this long first.
    pub delay: Option<Duration>,
}

/// Longest a send may be delayed.
pub const MAX_DELAY: Duration = Duration::from_secs(30 * 24 * 3600);

/// Reads `send_at` (RFC 3339, any offset) or `delay_seconds`; a time in the
/// past means now.
pub fn parse_when(send_at: Option<&str>, delay_seconds: Option<i64>) -> Result<When, RequestError> {
    let bad = |m: String| RequestError::bad("bad_field", m);
    let delay = match (send_at.filter(|s| !s.is_empty()), delay_seconds) {
        (Some(_), Some(_)) => {
            return Err(bad("send_at and delay_seconds cannot both be given".into()));
        }
        (None, None) => return Ok(When::default()),
        (None, Some(secs)) => {
            let secs = u64::try_from(secs)
                .map_err(|_| bad(format!("delay_seconds must be 0 or more, got {secs}")))?;
            Duration::from_secs(secs)
        }
        (Some(at), None) => {
            let at =
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| {
                        bad(format!(
                            "send_at must be an RFC 3339 time like 2026-11-23T18:00:00Z: {e}"
                        ))
                    })?;
            let at = SystemTime::from(at);
            at.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        }
    };
    if delay > MAX_DELAY {
        return Err(bad(format!(
            "a send may be delayed by at most {} days",
            MAX_DELAY.as_secs() / 86_400
        )));
    }
    Ok(When {
        delay: (!delay.is_zero()).then_some(delay),
    })
}

/// Fields shared by every form body: the repeated `tokens`, the `payload`
/// JSON string, and everything else for the platform to interpret.
pub struct FormBody<'a> {
    /// `tokens` (also `tokens[]`, `token`).
    pub tokens: Vec<Cow<'a, str>>,
    /// `payload`, checked to be JSON.
    pub payload: Option<Box<RawValue>>,
    /// Other fields, in order.
    pub fields: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

/// Splits a form body into tokens, payload and other fields.
pub fn parse_form(bytes: &[u8]) -> Result<FormBody<'_>, RequestError> {
    let mut body = FormBody {
        tokens: Vec::new(),
        payload: None,
        fields: Vec::new(),
    };
    for (key, value) in form_urlencoded::parse(bytes) {
        match &*key {
            "tokens" | "tokens[]" | "token" => body.tokens.push(value),
            "payload" => {
                let raw = RawValue::from_string(value.into_owned()).map_err(|e| {
                    RequestError::bad("bad_payload", format!("payload is not JSON: {e}"))
                })?;
                body.payload = Some(raw);
            }
            _ => body.fields.push((key, value)),
        }
    }
    Ok(body)
}

/// Parses an integer form field, naming it on failure.
pub fn form_int(field: &str, value: &str) -> Result<i64, RequestError> {
    value.trim().parse().map_err(|_| {
        RequestError::bad(
            "bad_field",
            format!("{field} must be an integer, got {value:?}"),
        )
    })
}

/// The 400 for a form field the route does not know.
pub fn unknown_form_field(name: &str) -> RequestError {
    RequestError::bad("unknown_field", format!("unknown form field {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_keeps_repeated_tokens_and_checks_payload_json() {
        let form =
            parse_form(b"tokens=a&tokens=b&payload=%7B%22x%22%3A1%7D&topic=t").expect("form");
        assert_eq!(form.tokens, vec!["a", "b"]);
        assert_eq!(form.payload.as_ref().map(|p| p.get()), Some("{\"x\":1}"));
        assert_eq!(form.fields.len(), 1);
        assert!(parse_form(b"payload=%7Bnot").is_err());
    }

    #[test]
    fn send_at_and_delay_seconds_exclude_each_other() {
        assert!(parse_when(Some("2026-01-01T00:00:00Z"), Some(1)).is_err());
        assert_eq!(parse_when(None, Some(0)).expect("now"), When::default());
        assert!(parse_when(None, Some(-1)).is_err());
        assert!(parse_when(Some("tomorrow"), None).is_err());
    }
}
