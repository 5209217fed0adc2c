//! FCM HTTP v1 answers: the `google.rpc.Status` error body, its FcmError
//! `errorCode`, and the mapping of every code to a [`Verdict`] in one table.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::job::Outcome;
use crate::retry::Verdict;

/// The `messages:send` URL for `project_id` under `endpoint` (no trailing slash).
pub fn send_url(endpoint: &str, project_id: &str) -> String {
    format!("{endpoint}/v1/projects/{project_id}/messages:send")
}

/// The FcmError `errorCode` of an error answer, with its usual status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// No more information (any status).
    UnspecifiedError,
    /// 400: the request, often the token, is malformed.
    InvalidArgument,
    /// 404: the token is no longer valid: delete it.
    Unregistered,
    /// 403: the token belongs to another sender (project).
    SenderIdMismatch,
    /// 429: sending too fast (project, device or topic quota).
    QuotaExceeded,
    /// 503: FCM overloaded.
    Unavailable,
    /// 500: FCM internal error.
    Internal,
    /// 401: the APNs certificate / web push key stored in Firebase was refused.
    ThirdPartyAuthError,
}

impl ErrorCode {
    /// Every documented code.
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::UnspecifiedError,
        ErrorCode::InvalidArgument,
        ErrorCode::Unregistered,
        ErrorCode::SenderIdMismatch,
        ErrorCode::QuotaExceeded,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::ThirdPartyAuthError,
    ];

    /// Google's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnspecifiedError => "UNSPECIFIED_ERROR",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::Unregistered => "UNREGISTERED",
            ErrorCode::SenderIdMismatch => "SENDER_ID_MISMATCH",
            ErrorCode::QuotaExceeded => "QUOTA_EXCEEDED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::ThirdPartyAuthError => "THIRD_PARTY_AUTH_ERROR",
        }
    }

    /// Parses Google's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";
const BAD_REQUEST_TYPE: &str = "type.googleapis.com/google.rpc.BadRequest";

#[derive(Deserialize)]
struct Envelope {
    error: Status,
}

/// `google.rpc.Status`.
#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<Detail>,
}

#[derive(Deserialize)]
struct Detail {
    #[serde(rename = "@type", default)]
    kind: String,
    #[serde(rename = "errorCode", default)]
    error_code: Option<String>,
    #[serde(rename = "fieldViolations", default)]
    field_violations: Vec<FieldViolation>,
}

#[derive(Deserialize)]
struct FieldViolation {
    #[serde(default)]
    field: String,
}

/// One classified answer; `loud` marks answers an operator must hear about
/// (the gateway's credentials or message are wrong, not just this token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// What to do with the token.
    pub verdict: Verdict,
    /// The FcmError code, when the answer carried one.
    pub code: Option<ErrorCode>,
    /// True when every token would get this answer.
    pub loud: bool,
}

/// Classifies a v1 answer's status, body and `Retry-After` into a verdict.
///
/// | errorCode / status | verdict |
/// |---|---|
/// | 200 | success |
/// | `UNREGISTERED` (404) | unregistered |
/// | `INVALID_ARGUMENT` (400) | failed; loud unless it names the token |
/// | `SENDER_ID_MISMATCH` (403) | failed |
/// | `THIRD_PARTY_AUTH_ERROR` (401) | failed, loud |
/// | `QUOTA_EXCEEDED` (429), `UNAVAILABLE` (503), `INTERNAL` (500) | retry, honouring `Retry-After` |
/// | 401 without a code (`UNAUTHENTICATED`) | refresh the access token, retry |
/// | 403 without a code (`PERMISSION_DENIED`), 404 without a code | failed, loud |
/// | `UNSPECIFIED_ERROR` or no code: 429 / 5xx | retry |
/// | `UNSPECIFIED_ERROR` or no code: other 4xx | failed |
pub fn classify(status: u16, body: &[u8], retry_after: Option<Duration>) -> Classified {
    if (200..300).contains(&status) {
        return Classified {
            verdict: Verdict::Done(Outcome::Success),
            code: None,
            loud: false,
        };
    }
    let parsed = serde_json::from_slice::<Envelope>(body)
        .ok()
        .map(|e| e.error);
    let code_text = parsed.as_ref().and_then(|s| {
        s.details
            .iter()
            .find(|d| d.kind == FCM_ERROR_TYPE)
            .and_then(|d| d.error_code.clone())
    });
    let code = code_text.as_deref().and_then(ErrorCode::parse);
    let label: Arc<str> = match (&code_text, &parsed) {
        (Some(text), _) => Arc::from(text.as_str()),
        (None, Some(s)) if !s.status.is_empty() => Arc::from(s.status.as_str()),
        _ => Arc::from(format!("HTTP{status}")),
    };
    let done = |outcome, loud| Classified {
        verdict: Verdict::Done(outcome),
        code,
        loud,
    };
    let failed = |loud| {
        done(
            Outcome::Failed {
                reason: label.clone(),
                status,
            },
            loud,
        )
    };
    let retry = || Classified {
        verdict: Verdict::Retry {
            reason: label.clone(),
            retry_after,
        },
        code,
        loud: false,
    };
    match code {
        Some(ErrorCode::Unregistered) => done(Outcome::Unregistered { timestamp_ms: None }, false),
        Some(ErrorCode::InvalidArgument) => failed(!parsed.as_ref().is_some_and(names_the_token)),
        Some(ErrorCode::SenderIdMismatch) => failed(false),
        Some(ErrorCode::ThirdPartyAuthError) => failed(true),
        Some(ErrorCode::QuotaExceeded | ErrorCode::Unavailable | ErrorCode::Internal) => retry(),
        Some(ErrorCode::UnspecifiedError) | None => match status {
            401 => Classified {
                verdict: Verdict::RefreshCredentials {
                    reason: label.clone(),
                },
                code,
                loud: false,
            },
            403 | 404 => failed(true),
            429 | 500..=599 => retry(),
            _ => failed(false),
        },
    }
}

/// True when an `INVALID_ARGUMENT` is about the registration token rather than
/// the message: a field violation on `message.token`, or Google's wording.
fn names_the_token(status: &Status) -> bool {
    status
        .details
        .iter()
        .filter(|d| d.kind == BAD_REQUEST_TYPE)
        .flat_map(|d| &d.field_violations)
        .any(|v| v.field == "message.token")
        || status.message.contains("registration token")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(status: u16, name: &str, code: Option<&str>) -> Vec<u8> {
        let mut error = json!({"code": status, "message": "m", "status": name});
        if let Some(code) = code {
            error["details"] = json!([{"@type": FCM_ERROR_TYPE, "errorCode": code}]);
        }
        json!({ "error": error }).to_string().into_bytes()
    }

    fn kind(c: &Classified) -> &'static str {
        match &c.verdict {
            Verdict::Done(Outcome::Success) => "success",
            Verdict::Done(Outcome::Unregistered { .. }) => "unregistered",
            Verdict::Done(Outcome::Failed { .. }) => "failed",
            Verdict::Done(_) => "other",
            Verdict::Retry { .. } => "retry",
            Verdict::RefreshCredentials { .. } => "refresh",
        }
    }

    #[test]
    fn every_code_round_trips() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
        }
        assert_eq!(ErrorCode::parse("NEW_THING"), None);
    }

    #[test]
    fn documented_answers_map_to_the_right_verdict() {
        // (status, google status, errorCode, verdict, loud)
        let table: &[(u16, &str, Option<&str>, &str, bool)] = &[
            (200, "", None, "success", false),
            (
                404,
                "NOT_FOUND",
                Some("UNREGISTERED"),
                "unregistered",
                false,
            ),
            (
                400,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                "failed",
                true,
            ),
            (
                403,
                "PERMISSION_DENIED",
                Some("SENDER_ID_MISMATCH"),
                "failed",
                false,
            ),
            (
                401,
                "UNAUTHENTICATED",
                Some("THIRD_PARTY_AUTH_ERROR"),
                "failed",
                true,
            ),
            (
                429,
                "RESOURCE_EXHAUSTED",
                Some("QUOTA_EXCEEDED"),
                "retry",
                false,
            ),
            (503, "UNAVAILABLE", Some("UNAVAILABLE"), "retry", false),
            (500, "INTERNAL", Some("INTERNAL"), "retry", false),
            (
                400,
                "INVALID_ARGUMENT",
                Some("UNSPECIFIED_ERROR"),
                "failed",
                false,
            ),
            (
                503,
                "UNAVAILABLE",
                Some("UNSPECIFIED_ERROR"),
                "retry",
                false,
            ),
            (401, "UNAUTHENTICATED", None, "refresh", false),
            (403, "PERMISSION_DENIED", None, "failed", true),
            (404, "NOT_FOUND", None, "failed", true),
            (429, "RESOURCE_EXHAUSTED", None, "retry", false),
            (502, "", None, "retry", false),
            (500, "INTERNAL", None, "retry", false),
            (413, "", None, "failed", false),
            (400, "INVALID_ARGUMENT", None, "failed", false),
        ];
        for &(status, name, code, want, loud) in table {
            let c = classify(status, &body(status, name, code), None);
            assert_eq!((kind(&c), c.loud), (want, loud), "{status} {name} {code:?}");
            assert_eq!(c.code, code.and_then(ErrorCode::parse));
        }
        // Every documented code appears in the table.
        for c in ErrorCode::ALL {
            assert!(
                table.iter().any(|row| row.2 == Some(c.as_str())),
                "{c:?} untested"
            );
        }
    }

    #[test]
    fn failures_keep_the_code_and_status() {
        match classify(
            403,
            &body(403, "PERMISSION_DENIED", Some("SENDER_ID_MISMATCH")),
            None,
        )
        .verdict
        {
            Verdict::Done(Outcome::Failed { reason, status }) => {
                assert_eq!((&*reason, status), ("SENDER_ID_MISMATCH", 403));
            }
            other => panic!("{other:?}"),
        }
        match classify(403, &body(403, "PERMISSION_DENIED", None), None).verdict {
            Verdict::Done(Outcome::Failed { reason, .. }) => {
                assert_eq!(&*reason, "PERMISSION_DENIED");
            }
            other => panic!("{other:?}"),
        }
        match classify(418, b"<html>", None).verdict {
            Verdict::Done(Outcome::Failed { reason, .. }) => assert_eq!(&*reason, "HTTP418"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_token_is_quiet_and_invalid_message_is_loud() {
        let token = json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
            "message": "The registration token is not a valid FCM registration token",
            "details": [{"@type": FCM_ERROR_TYPE, "errorCode": "INVALID_ARGUMENT"},
                        {"@type": BAD_REQUEST_TYPE, "fieldViolations": [{"field": "message.token", "description": "x"}]}]}});
        assert!(!classify(400, token.to_string().as_bytes(), None).loud);
        let message = json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
            "message": "Invalid value at 'message.data[0].value'",
            "details": [{"@type": FCM_ERROR_TYPE, "errorCode": "INVALID_ARGUMENT"}]}});
        assert!(classify(400, message.to_string().as_bytes(), None).loud);
    }

    #[test]
    fn retry_after_is_passed_on() {
        let after = Some(Duration::from_secs(7));
        assert_eq!(
            classify(
                429,
                &body(429, "RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED")),
                after
            )
            .verdict,
            Verdict::Retry {
                reason: "QUOTA_EXCEEDED".into(),
                retry_after: after
            }
        );
    }

    #[test]
    fn url_has_the_project() {
        assert_eq!(
            send_url("https://fcm.googleapis.com", "p1"),
            "https://fcm.googleapis.com/v1/projects/p1/messages:send"
        );
    }
}
