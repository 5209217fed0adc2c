//! From an HTTP answer of the API to a gRPC status: the one mapping, so every
//! method answers an HTTP error the same way (DESIGN "gRPC (tonic), beside
//! HTTP", the status codes).
//!
//! | HTTP | gRPC |
//! |---|---|
//! | 400, 413, 415 | `INVALID_ARGUMENT` |
//! | 401 | `UNAUTHENTICATED` |
//! | 403 | `PERMISSION_DENIED` |
//! | 404 | `NOT_FOUND` |
//! | 408 (the body stopped arriving) | `DEADLINE_EXCEEDED` |
//! | 409 `idempotency_key_in_progress` | `ABORTED`, `retry-after` |
//! | 422 `idempotency_key_reused` | `FAILED_PRECONDITION` |
//! | 429 | `RESOURCE_EXHAUSTED`, `retry-after` |
//! | 503 `queue_full` | `RESOURCE_EXHAUSTED`, `retry-after` |
//! | other 503 (draining, store down) | `UNAVAILABLE`, `retry-after` |
//! | 500 | `INTERNAL` |
//! | other 5xx | `UNAVAILABLE` |
//! | anything else that is not 2xx | `UNKNOWN` |
//!
//! The gRPC message is the HTTP error's `message` (it names the field); the
//! HTTP error code (`queue_full`, `bad_json`, …) rides along in the metadata
//! as `pushgate-error`, and `Retry-After` as `retry-after`.

use http::StatusCode;
use serde_json::Value;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

/// One answer of the HTTP API, read back.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its `Retry-After` header, when it has one.
    pub retry_after: Option<String>,
    /// Its `Idempotency-Replayed: true` header.
    pub replayed: bool,
    /// Its JSON body (`Null` when there is none, or it is not JSON).
    pub body: Value,
}

/// The gRPC code for an HTTP status and the API's error code.
pub fn code_for(status: StatusCode, error: &str) -> Code {
    match status.as_u16() {
        200..=299 => Code::Ok,
        400 | 413 | 415 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        408 => Code::DeadlineExceeded,
        409 => Code::Aborted,
        422 => Code::FailedPrecondition,
        429 => Code::ResourceExhausted,
        503 if error == "queue_full" => Code::ResourceExhausted,
        500 => Code::Internal,
        501..=599 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// The status for an answer that is not a success.
pub fn status_of(answer: &Answer) -> Status {
    let error = answer.body["error"].as_str().unwrap_or_default();
    let code = code_for(answer.status, error);
    let message = match answer.body["message"].as_str() {
        Some(m) => m.to_owned(),
        None => format!("the API answered {}", answer.status),
    };
    let mut metadata = MetadataMap::new();
    if let Ok(value) = MetadataValue::try_from(error)
        && !error.is_empty()
    {
        metadata.insert("pushgate-error", value);
    }
    if let Some(value) = answer
        .retry_after
        .as_deref()
        .and_then(|s| MetadataValue::try_from(s).ok())
    {
        metadata.insert("retry-after", value);
    }
    Status::with_metadata(code, message, metadata)
}

/// The canonical upper-case name of a code, as gRPC's documents and the
/// `code` label of `pushgate_grpc_requests_total` spell it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(status: u16, error: &str, retry_after: Option<&str>) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).expect("a status"),
            retry_after: retry_after.map(str::to_owned),
            replayed: false,
            body: json!({ "error": error, "message": format!("{error}: tokens[3] is not hex") }),
        }
    }

    /// Every row of the table, including the ones no test can provoke over
    /// a socket (409/422 until idempotency keys land, 500).
    #[test]
    fn every_http_answer_maps_to_its_code() {
        let table = [
            (400, "bad_json", Code::InvalidArgument),
            (400, "bad_notification", Code::InvalidArgument),
            (413, "job_too_large", Code::InvalidArgument),
            (415, "unsupported_media_type", Code::InvalidArgument),
            (401, "unauthorized", Code::Unauthenticated),
            (403, "forbidden", Code::PermissionDenied),
            (404, "platform_not_configured", Code::NotFound),
            (404, "not_found", Code::NotFound),
            (408, "body_timeout", Code::DeadlineExceeded),
            (409, "idempotency_key_in_progress", Code::Aborted),
            (422, "idempotency_key_reused", Code::FailedPrecondition),
            (429, "too_many_requests", Code::ResourceExhausted),
            (503, "queue_full", Code::ResourceExhausted),
            (503, "shutting_down", Code::Unavailable),
            (503, "queue_unavailable", Code::Unavailable),
            (503, "storage_full", Code::Unavailable),
            (500, "internal", Code::Internal),
            (502, "bad_gateway", Code::Unavailable),
            (418, "teapot", Code::Unknown),
            (202, "", Code::Ok),
        ];
        for (status, error, code) in table {
            assert_eq!(
                code_for(StatusCode::from_u16(status).expect("a status"), error),
                code,
                "{status} {error}"
            );
            if code != Code::Ok {
                let s = status_of(&answer(status, error, None));
                assert_eq!(s.code(), code, "{status} {error}");
                assert_eq!(s.message(), format!("{error}: tokens[3] is not hex"));
                assert_eq!(
                    s.metadata()
                        .get("pushgate-error")
                        .and_then(|v| v.to_str().ok()),
                    Some(error)
                );
            }
        }
    }

    #[test]
    fn retry_after_rides_in_the_metadata() {
        for (status, error) in [
            (503, "queue_full"),
            (409, "idempotency_key_in_progress"),
            (503, "shutting_down"),
        ] {
            let s = status_of(&answer(status, error, Some("1")));
            assert_eq!(
                s.metadata()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()),
                Some("1"),
                "{status} {error}"
            );
        }
        let s = status_of(&answer(400, "bad_json", None));
        assert!(s.metadata().get("retry-after").is_none());
    }

    #[test]
    fn an_answer_without_a_json_error_still_says_what_happened() {
        let s = status_of(&Answer {
            status: StatusCode::BAD_GATEWAY,
            retry_after: None,
            replayed: false,
            body: Value::Null,
        });
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().contains("502"), "{}", s.message());
        assert!(s.metadata().get("pushgate-error").is_none());
    }

    #[test]
    fn code_names_are_the_canonical_ones() {
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(Code::Ok), "OK");
    }
}
