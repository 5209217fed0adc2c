//! The one error type of the HTTP API: `{"error": "<code>", "message": "<text>"}`
//! with a 4xx/5xx status. Internals are logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human text: says what to change.
    pub message: String,
    /// Seconds for `Retry-After` (503s).
    pub retry_after: Option<u64>,
    /// Extra fields merged into the body (e.g. `rejected`).
    pub extra: Option<Value>,
}

/// The error code of an answer, for the metrics layer to count.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            extra: None,
        }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or unknown API key: send `Authorization: Bearer <key>` with a key from server.api_keys",
        )
    }

    /// 404 for a platform without a config section.
    pub fn not_configured(platform: &str, section: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "platform_not_configured",
            format!(
                "{platform} delivery is not configured on this gateway: add a {section} section to the config"
            ),
        )
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not take that method",
        )
    }

    /// 413.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    /// 413 `job_too_large`: more tokens than the whole queue holds.
    pub fn job_too_large(tokens: u64, capacity: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "job_too_large",
            format!(
                "this request has {tokens} valid tokens, more than queue.capacity ({capacity}) could ever hold; split it into requests of at most {capacity} tokens"
            ),
        )
    }

    /// 408 `body_timeout`.
    pub fn request_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", message)
    }

    /// Any error status with the code [`super::extract::code_for`] gives it
    /// (for answers that were not ours to begin with).
    pub fn from_status(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, super::extract::code_for(status), message)
    }

    /// 415.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/json or application/x-www-form-urlencoded",
        )
    }

    /// 409 `idempotency_key_in_progress` with `Retry-After: 1`: the first
    /// request with this key is still being answered.
    pub fn key_in_progress() -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_progress",
                "a request with this Idempotency-Key is still being answered; retry in a second to get its answer",
            )
        }
    }

    /// 422 `idempotency_key_reused`: the key was used for another request.
    pub fn key_reused() -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used for another request (another route, app or body); use a new key for a new request",
        )
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// 500; the detail is logged, the answer says only that it happened.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error answering a request");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the gateway log",
        )
    }

    /// Adds fields to the body (merged with fields added before).
    pub fn with(mut self, extra: Value) -> Self {
        self.extra = match (self.extra.take(), extra) {
            (Some(Value::Object(mut before)), Value::Object(more)) => {
                before.extend(more);
                Some(Value::Object(before))
            }
            (_, extra) => Some(extra),
        };
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code, "message": self.message });
        if let (Some(Value::Object(extra)), Some(map)) = (self.extra, body.as_object_mut()) {
            map.extend(extra);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

impl From<crate::message::MessageError> for ApiError {
    fn from(e: crate::message::MessageError) -> Self {
        match e {
            crate::message::MessageError::Field(f) => Self::bad_request("bad_field", f.to_string()),
            crate::message::MessageError::TooLarge(t) => Self::too_large(t.to_string()),
        }
    }
}

impl From<crate::platform::RequestError> for ApiError {
    fn from(e: crate::platform::RequestError) -> Self {
        use crate::platform::request::Refusal;
        let status = match e.refusal {
            Refusal::BadRequest => StatusCode::BAD_REQUEST,
            Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        };
        let mut error = Self::new(status, e.code, e.message);
        error.extra = e.extra;
        error
    }
}
