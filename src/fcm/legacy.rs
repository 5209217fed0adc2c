//! Legacy (GCM-compatible) multicast answers: the per-id `results` array and
//! the whole-batch status, each mapped to a [`Verdict`] in one table.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::job::Outcome;
use crate::retry::Verdict;

/// The per-id `error` words of the legacy API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultError {
    /// No registration id in the request.
    MissingRegistration,
    /// The id is malformed.
    InvalidRegistration,
    /// The app was uninstalled or the id expired: delete it.
    NotRegistered,
    /// The id is for another package.
    InvalidPackageName,
    /// The id belongs to another sender.
    MismatchSenderId,
    /// A parameter has the wrong type or value.
    InvalidParameters,
    /// Data plus notification over 4096 bytes.
    MessageTooBig,
    /// A data key is reserved.
    InvalidDataKey,
    /// `time_to_live` outside 0..=2419200.
    InvalidTtl,
    /// FCM timed out: retry.
    Unavailable,
    /// FCM internal error: retry.
    InternalServerError,
    /// Too many messages to one device: retry later.
    DeviceMessageRateExceeded,
    /// Too many messages to one topic: retry later.
    TopicsMessageRateExceeded,
    /// The APNs credentials in Firebase were refused.
    InvalidApnsCredential,
}

impl ResultError {
    /// Every documented word.
    pub const ALL: [ResultError; 14] = [
        ResultError::MissingRegistration,
        ResultError::InvalidRegistration,
        ResultError::NotRegistered,
        ResultError::InvalidPackageName,
        ResultError::MismatchSenderId,
        ResultError::InvalidParameters,
        ResultError::MessageTooBig,
        ResultError::InvalidDataKey,
        ResultError::InvalidTtl,
        ResultError::Unavailable,
        ResultError::InternalServerError,
        ResultError::DeviceMessageRateExceeded,
        ResultError::TopicsMessageRateExceeded,
        ResultError::InvalidApnsCredential,
    ];

    /// Google's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultError::MissingRegistration => "MissingRegistration",
            ResultError::InvalidRegistration => "InvalidRegistration",
            ResultError::NotRegistered => "NotRegistered",
            ResultError::InvalidPackageName => "InvalidPackageName",
            ResultError::MismatchSenderId => "MismatchSenderId",
            ResultError::InvalidParameters => "InvalidParameters",
            ResultError::MessageTooBig => "MessageTooBig",
            ResultError::InvalidDataKey => "InvalidDataKey",
            ResultError::InvalidTtl => "InvalidTtl",
            ResultError::Unavailable => "Unavailable",
            ResultError::InternalServerError => "InternalServerError",
            ResultError::DeviceMessageRateExceeded => "DeviceMessageRateExceeded",
            ResultError::TopicsMessageRateExceeded => "TopicsMessageRateExceeded",
            ResultError::InvalidApnsCredential => "InvalidApnsCredential",
        }
    }

    /// Parses Google's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// A 200 answer of the legacy API.
#[derive(Debug, Deserialize)]
pub struct Answer {
    /// One entry per registration id, in request order.
    pub results: Vec<ResultEntry>,
}

/// One entry of `results`.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ResultEntry {
    /// Set when delivered.
    #[serde(default)]
    pub message_id: Option<String>,
    /// A newer id for the same device (with `message_id`).
    #[serde(default)]
    pub registration_id: Option<String>,
    /// Why not delivered.
    #[serde(default)]
    pub error: Option<String>,
}

/// Parses a 200 body expecting `count` results; `None` when the body is not
/// the documented shape or the count differs (the answer cannot be matched to
/// the ids sent).
///
/// A topic or condition send (one "id") is answered with one object instead:
/// `{"message_id": <number>}` or `{"error": "<reason>"}`.
pub fn parse_answer(body: &[u8], count: usize) -> Option<Vec<ResultEntry>> {
    if let Ok(answer) = serde_json::from_slice::<Answer>(body) {
        return (answer.results.len() == count).then_some(answer.results);
    }
    if count != 1 {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let message_id = value.get("message_id").map(|m| match m {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let error = value
        .get("error")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    (message_id.is_some() || error.is_some()).then_some(vec![ResultEntry {
        message_id,
        registration_id: None,
        error,
    }])
}

/// Classifies one result entry. `retry_after` is the batch answer's header.
///
/// | entry | verdict |
/// |---|---|
/// | `message_id` + `registration_id` | canonical |
/// | `message_id` | success |
/// | `NotRegistered` | unregistered |
/// | `Unavailable`, `InternalServerError`, `DeviceMessageRateExceeded`, `TopicsMessageRateExceeded` | retry that id |
/// | any other error, documented or not | failed |
/// | neither `message_id` nor `error` | failed (`MalformedResult`) |
pub fn classify_result(entry: &ResultEntry, retry_after: Option<Duration>) -> Verdict {
    if entry.message_id.is_some() {
        return Verdict::Done(match &entry.registration_id {
            Some(new) if !new.is_empty() => Outcome::Canonical {
                new_token: new.clone(),
            },
            _ => Outcome::Success,
        });
    }
    let Some(text) = entry.error.as_deref() else {
        return Verdict::Done(Outcome::Failed {
            reason: "MalformedResult".into(),
            status: 200,
        });
    };
    match ResultError::parse(text) {
        Some(ResultError::NotRegistered) => {
            Verdict::Done(Outcome::Unregistered { timestamp_ms: None })
        }
        Some(
            e @ (ResultError::Unavailable
            | ResultError::InternalServerError
            | ResultError::DeviceMessageRateExceeded
            | ResultError::TopicsMessageRateExceeded),
        ) => Verdict::Retry {
            reason: e.as_str().into(),
            retry_after,
        },
        _ => Verdict::Done(Outcome::Failed {
            reason: Arc::from(text),
            status: 200,
        }),
    }
}

/// What a non-200 batch answer means for every id of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchVerdict {
    /// Applied to each id.
    pub verdict: Verdict,
    /// True when the gateway's configuration is at fault (log loudly).
    pub loud: bool,
}

/// Classifies a non-200 batch answer.
///
/// | status | verdict |
/// |---|---|
/// | 401 | failed `Unauthorized`, loud (the server key is wrong) |
/// | 400 | failed `BadRequest`, loud (the gateway built a bad request) |
/// | 429, 5xx | retry the whole batch, honouring `Retry-After` |
/// | other | failed `HTTP<status>` |
pub fn classify_batch(status: u16, retry_after: Option<Duration>) -> BatchVerdict {
    let failed = |reason: &str, loud| BatchVerdict {
        verdict: Verdict::Done(Outcome::Failed {
            reason: reason.into(),
            status,
        }),
        loud,
    };
    match status {
        401 => failed("Unauthorized", true),
        400 => failed("BadRequest", true),
        429 | 500..=599 => BatchVerdict {
            verdict: Verdict::Retry {
                reason: format!("HTTP{status}").into(),
                retry_after,
            },
            loud: false,
        },
        _ => failed(&format!("HTTP{status}"), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(e: &str) -> ResultEntry {
        ResultEntry {
            error: Some(e.into()),
            ..Default::default()
        }
    }

    #[test]
    fn every_error_round_trips() {
        for e in ResultError::ALL {
            assert_eq!(ResultError::parse(e.as_str()), Some(e));
        }
        assert_eq!(ResultError::parse("Nope"), None);
    }

    #[test]
    fn documented_results_map_to_the_right_verdict() {
        let table: &[(&str, &str)] = &[
            ("MissingRegistration", "failed"),
            ("InvalidRegistration", "failed"),
            ("NotRegistered", "unregistered"),
            ("InvalidPackageName", "failed"),
            ("MismatchSenderId", "failed"),
            ("InvalidParameters", "failed"),
            ("MessageTooBig", "failed"),
            ("InvalidDataKey", "failed"),
            ("InvalidTtl", "failed"),
            ("Unavailable", "retry"),
            ("InternalServerError", "retry"),
            ("DeviceMessageRateExceeded", "retry"),
            ("TopicsMessageRateExceeded", "retry"),
            ("InvalidApnsCredential", "failed"),
            ("SomethingNew", "failed"),
        ];
        for e in ResultError::ALL {
            assert!(
                table.iter().any(|row| row.0 == e.as_str()),
                "{e:?} untested"
            );
        }
        for &(word, want) in table {
            let got = match classify_result(&error(word), None) {
                Verdict::Done(Outcome::Failed { reason, status }) => {
                    assert_eq!((&*reason, status), (word, 200));
                    "failed"
                }
                Verdict::Done(Outcome::Unregistered { .. }) => "unregistered",
                Verdict::Retry { reason, .. } => {
                    assert_eq!(&*reason, word);
                    "retry"
                }
                other => panic!("{word}: {other:?}"),
            };
            assert_eq!(got, want, "{word}");
        }
    }

    #[test]
    fn delivered_results_are_success_or_canonical() {
        let ok = ResultEntry {
            message_id: Some("0:1".into()),
            ..Default::default()
        };
        assert_eq!(classify_result(&ok, None), Verdict::Done(Outcome::Success));
        let canonical = ResultEntry {
            message_id: Some("0:1".into()),
            registration_id: Some("new-x".into()),
            error: None,
        };
        assert_eq!(
            classify_result(&canonical, None),
            Verdict::Done(Outcome::Canonical {
                new_token: "new-x".into()
            })
        );
        assert!(matches!(
            classify_result(&ResultEntry::default(), None),
            Verdict::Done(Outcome::Failed { .. })
        ));
    }

    #[test]
    fn batch_statuses_map_to_the_right_verdict() {
        let after = Some(Duration::from_secs(2));
        let b = classify_batch(401, None);
        assert!(b.loud);
        assert_eq!(
            b.verdict,
            Verdict::Done(Outcome::Failed {
                reason: "Unauthorized".into(),
                status: 401
            })
        );
        assert!(matches!(
            classify_batch(400, None).verdict,
            Verdict::Done(Outcome::Failed { ref reason, status: 400 }) if &**reason == "BadRequest"
        ));
        for status in [429, 500, 502, 503] {
            assert_eq!(
                classify_batch(status, after).verdict,
                Verdict::Retry {
                    reason: format!("HTTP{status}").into(),
                    retry_after: after
                }
            );
        }
        assert!(matches!(
            classify_batch(404, None).verdict,
            Verdict::Done(Outcome::Failed { status: 404, .. })
        ));
    }

    #[test]
    fn answers_must_match_the_batch() {
        let body = br#"{"multicast_id":1,"success":1,"failure":1,"canonical_ids":0,
            "results":[{"message_id":"0:1"},{"error":"NotRegistered"}]}"#;
        assert_eq!(parse_answer(body, 2).map(|r| r.len()), Some(2));
        assert!(parse_answer(body, 3).is_none());
        assert!(parse_answer(b"<html>", 2).is_none());
    }
}
