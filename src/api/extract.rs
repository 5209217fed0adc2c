//! Extractors whose rejections are our `{"error","message"}` answers, the
//! body reader of the send routes, and a last-resort layer that turns any
//! other non-JSON error answer (axum's own rejections) into one, so every
//! error the API gives is JSON and counted in `pushgate_api_errors_total`.

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::ApiError;
use super::error::ErrorCode;
use crate::listener::BodyTimedOut;

/// `axum::extract::Query` with a 400 `bad_query` rejection (e.g. `?app=a&app=b`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| Self(q))
            .map_err(|e| ApiError::bad_request("bad_query", e.body_text()))
    }
}

/// `axum::extract::Path` with a 400 `bad_path` rejection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(p)| Self(p))
            .map_err(|e| ApiError::bad_request("bad_path", e.body_text()))
    }
}

/// Reads a request body of at most `limit` bytes. A declared
/// `Content-Length` over the limit is refused before a byte is read (and the
/// connection closes, its body unread).
///
/// - over the limit: 413 `too_large`;
/// - stopped arriving for `server.body_timeout_s`: 408 `body_timeout`;
/// - anything else the connection reports (malformed chunked encoding, a
///   body cut short): 400 `bad_body`.
pub async fn read_body(request: Request, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::too_large(format!(
            "request body is over server.max_body_bytes ({limit} bytes); split the tokens over several requests"
        ))
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|e| classify_body_error(&e, too_large))
}

/// Why a body without a length limit could not be read (see [`read_body`]).
pub fn body_error(e: &axum::Error) -> ApiError {
    classify_body_error(e, || ApiError::too_large("the request body is too large"))
}

fn classify_body_error(e: &axum::Error, too_large: impl FnOnce() -> ApiError) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return too_large();
        }
        if let Some(timed_out) = err.downcast_ref::<BodyTimedOut>() {
            return ApiError::request_timeout(format!(
                "the request body stopped arriving for {} s (server.body_timeout_s)",
                timed_out.0.as_secs()
            ));
        }
        source = err.source();
    }
    ApiError::bad_request(
        "bad_body",
        format!("the request body could not be read: {e}"),
    )
}

/// Largest non-JSON error body carried over into the JSON answer's message.
const MAX_MESSAGE: usize = 512;

/// Turns an error answer that is not ours (no [`ErrorCode`]: axum's own
/// rejections, hyper-level refusals) into `{"error","message"}`, keeping its
/// status and its text as the message.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<ErrorCode>().is_some()
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_MESSAGE * 4).await {
        Ok(bytes) => {
            let mut text = String::from_utf8_lossy(&bytes).into_owned();
            if text.len() > MAX_MESSAGE {
                let cut = (0..=MAX_MESSAGE)
                    .rev()
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(0);
                text.truncate(cut);
            }
            text
        }
        Err(_) => String::new(),
    };
    let message = if text.trim().is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned()
    } else {
        text
    };
    let mut answer = ApiError::from_status(status, message).into_response();
    // Keep headers such as Allow or Retry-After; the body is ours now.
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

/// The code for an error status without one of ours.
pub fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "body_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}
