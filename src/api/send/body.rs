//! Reading a send body: JSON or the GoCM form, within `server.max_body_bytes`,
//! and the helpers both platforms' parsers share.

use std::borrow::Cow;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde_json::value::RawValue;

use crate::api::{ApiError, AppState};

/// A request body, read within `server.max_body_bytes`.
pub enum Body {
    /// `application/json`.
    Json(Bytes),
    /// `application/x-www-form-urlencoded` (the GoCM form).
    Form(Bytes),
}

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let is_form = match content_type.as_str() {
            "application/json" => false,
            // curl -d sends this by default; GoCM clients rely on it.
            "application/x-www-form-urlencoded" => true,
            _ => return Err(ApiError::unsupported_media_type()),
        };
        let bytes = crate::api::extract::read_body(req, state.max_body_bytes).await?;
        Ok(if is_form {
            Body::Form(bytes)
        } else {
            Body::Json(bytes)
        })
    }
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
pub fn parse_form(bytes: &[u8]) -> Result<FormBody<'_>, ApiError> {
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
                    ApiError::bad_request("bad_payload", format!("payload is not JSON: {e}"))
                })?;
                body.payload = Some(raw);
            }
            _ => body.fields.push((key, value)),
        }
    }
    Ok(body)
}

/// Parses an integer form field, naming it on failure.
pub fn form_int(field: &str, value: &str) -> Result<i64, ApiError> {
    value.trim().parse().map_err(|_| {
        ApiError::bad_request(
            "bad_field",
            format!("{field} must be an integer, got {value:?}"),
        )
    })
}

/// Maps serde's message for a bad JSON body to our error.
pub fn bad_json(e: serde_json::Error) -> ApiError {
    ApiError::bad_request(
        "bad_json",
        format!("request body is not valid JSON for this route: {e}"),
    )
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
}
