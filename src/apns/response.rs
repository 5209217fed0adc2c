//! APNs answers: every documented reason, with its status, mapped to a
//! [`Verdict`] in one table.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::job::Outcome;
use crate::retry::Verdict;

/// The `reason` APNs gives with a non-200 status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// 400: collapse id over 64 bytes.
    BadCollapseId,
    /// 400: token malformed or for the other environment.
    BadDeviceToken,
    /// 400: bad `apns-expiration`.
    BadExpirationDate,
    /// 400: bad `apns-id`.
    BadMessageId,
    /// 400: bad `apns-priority`.
    BadPriority,
    /// 400: bad `apns-topic`.
    BadTopic,
    /// 400: token does not match the topic.
    DeviceTokenNotForTopic,
    /// 400: a header repeated.
    DuplicateHeaders,
    /// 400: the connection sat idle too long.
    IdleTimeout,
    /// 400: bad `apns-push-type`.
    InvalidPushType,
    /// 400: no token in the path.
    MissingDeviceToken,
    /// 400: no `apns-topic` where one is required.
    MissingTopic,
    /// 400: empty payload.
    PayloadEmpty,
    /// 400: topic not allowed.
    TopicDisallowed,
    /// 403: certificate is bad.
    BadCertificate,
    /// 403: certificate is for the other environment.
    BadCertificateEnvironment,
    /// 403: provider token too old: renew it.
    ExpiredProviderToken,
    /// 403: action not allowed.
    Forbidden,
    /// 403: provider token not valid or signature failed.
    InvalidProviderToken,
    /// 403: no provider token and no certificate.
    MissingProviderToken,
    /// 403: the key id is not for this team/environment.
    UnrelatedKeyIdInToken,
    /// 403: key environment mismatch.
    BadEnvironmentKeyInToken,
    /// 404: bad request path.
    BadPath,
    /// 405: not POST.
    MethodNotAllowed,
    /// 410: the device token has expired.
    ExpiredToken,
    /// 410: the token is no longer active for the topic.
    Unregistered,
    /// 413: payload too large.
    PayloadTooLarge,
    /// 429: provider token changed too often.
    TooManyProviderTokenUpdates,
    /// 429: too many requests for one token.
    TooManyRequests,
    /// 500: APNs internal error.
    InternalServerError,
    /// 503: APNs unavailable.
    ServiceUnavailable,
    /// 503: APNs is shutting down this server.
    Shutdown,
    /// 400 (broadcast): `apns-channel-id` is missing.
    MissingChannelId,
    /// 400 (broadcast): `apns-channel-id` is not a valid channel id.
    BadChannelId,
    /// 404 (broadcast): the channel does not exist (deleted, or another app's).
    ChannelNotRegistered,
    /// 400 (broadcast): broadcast is not enabled for this app (Apple's
    /// "Setting up broadcast push notifications").
    FeatureNotEnabled,
    /// Anything not documented (kept as text in the outcome).
    Other,
}

impl Reason {
    /// Every documented reason.
    pub const ALL: [Reason; 36] = [
        Reason::BadCollapseId,
        Reason::BadDeviceToken,
        Reason::BadExpirationDate,
        Reason::BadMessageId,
        Reason::BadPriority,
        Reason::BadTopic,
        Reason::DeviceTokenNotForTopic,
        Reason::DuplicateHeaders,
        Reason::IdleTimeout,
        Reason::InvalidPushType,
        Reason::MissingDeviceToken,
        Reason::MissingTopic,
        Reason::PayloadEmpty,
        Reason::TopicDisallowed,
        Reason::BadCertificate,
        Reason::BadCertificateEnvironment,
        Reason::ExpiredProviderToken,
        Reason::Forbidden,
        Reason::InvalidProviderToken,
        Reason::MissingProviderToken,
        Reason::UnrelatedKeyIdInToken,
        Reason::BadEnvironmentKeyInToken,
        Reason::BadPath,
        Reason::MethodNotAllowed,
        Reason::ExpiredToken,
        Reason::Unregistered,
        Reason::PayloadTooLarge,
        Reason::TooManyProviderTokenUpdates,
        Reason::TooManyRequests,
        Reason::InternalServerError,
        Reason::ServiceUnavailable,
        Reason::Shutdown,
        Reason::MissingChannelId,
        Reason::BadChannelId,
        Reason::ChannelNotRegistered,
        Reason::FeatureNotEnabled,
    ];

    /// Apple's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadCollapseId => "BadCollapseId",
            Reason::BadDeviceToken => "BadDeviceToken",
            Reason::BadExpirationDate => "BadExpirationDate",
            Reason::BadMessageId => "BadMessageId",
            Reason::BadPriority => "BadPriority",
            Reason::BadTopic => "BadTopic",
            Reason::DeviceTokenNotForTopic => "DeviceTokenNotForTopic",
            Reason::DuplicateHeaders => "DuplicateHeaders",
            Reason::IdleTimeout => "IdleTimeout",
            Reason::InvalidPushType => "InvalidPushType",
            Reason::MissingDeviceToken => "MissingDeviceToken",
            Reason::MissingTopic => "MissingTopic",
            Reason::PayloadEmpty => "PayloadEmpty",
            Reason::TopicDisallowed => "TopicDisallowed",
            Reason::BadCertificate => "BadCertificate",
            Reason::BadCertificateEnvironment => "BadCertificateEnvironment",
            Reason::ExpiredProviderToken => "ExpiredProviderToken",
            Reason::Forbidden => "Forbidden",
            Reason::InvalidProviderToken => "InvalidProviderToken",
            Reason::MissingProviderToken => "MissingProviderToken",
            Reason::UnrelatedKeyIdInToken => "UnrelatedKeyIdInToken",
            Reason::BadEnvironmentKeyInToken => "BadEnvironmentKeyInToken",
            Reason::BadPath => "BadPath",
            Reason::MethodNotAllowed => "MethodNotAllowed",
            Reason::ExpiredToken => "ExpiredToken",
            Reason::Unregistered => "Unregistered",
            Reason::PayloadTooLarge => "PayloadTooLarge",
            Reason::TooManyProviderTokenUpdates => "TooManyProviderTokenUpdates",
            Reason::TooManyRequests => "TooManyRequests",
            Reason::InternalServerError => "InternalServerError",
            Reason::ServiceUnavailable => "ServiceUnavailable",
            Reason::Shutdown => "Shutdown",
            Reason::MissingChannelId => "MissingChannelId",
            Reason::BadChannelId => "BadChannelId",
            Reason::ChannelNotRegistered => "ChannelNotRegistered",
            Reason::FeatureNotEnabled => "FeatureNotEnabled",
            Reason::Other => "Other",
        }
    }

    /// Parses Apple's spelling; unknown text is `Other`.
    pub fn parse(s: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .unwrap_or(Reason::Other)
    }
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(borrow, default)]
    reason: Option<&'a str>,
    #[serde(default)]
    timestamp: Option<u64>,
}

/// One classified answer; `loud` marks answers an operator must hear about
/// (credentials refused), logged at error level by the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// What to do with the token.
    pub verdict: Verdict,
    /// The reason as parsed.
    pub reason: Reason,
    /// True when the whole gateway is misconfigured, not just this token.
    pub loud: bool,
}

/// Classifies a status, body and `Retry-After` into a verdict.
pub fn classify(status: u16, body: &[u8], retry_after: Option<Duration>) -> Classified {
    if status == 200 {
        return Classified {
            verdict: Verdict::Done(Outcome::Success),
            reason: Reason::Other,
            loud: false,
        };
    }
    let parsed: Option<ErrorBody<'_>> = serde_json::from_slice(body).ok();
    let text = parsed.as_ref().and_then(|b| b.reason).unwrap_or("");
    let reason = Reason::parse(text);
    let label: Arc<str> = if reason == Reason::Other {
        if text.is_empty() {
            Arc::from(format!("HTTP{status}"))
        } else {
            Arc::from(text)
        }
    } else {
        Arc::from(reason.as_str())
    };
    let failed = |loud| Classified {
        verdict: Verdict::Done(Outcome::Failed {
            reason: label.clone(),
            status,
        }),
        reason,
        loud,
    };
    let retry = || Classified {
        verdict: Verdict::Retry {
            reason: label.clone(),
            retry_after,
        },
        reason,
        loud: false,
    };
    match (status, reason) {
        (410, _) => Classified {
            verdict: Verdict::Done(Outcome::Unregistered {
                timestamp_ms: parsed.and_then(|b| b.timestamp),
            }),
            reason,
            loud: false,
        },
        (403, Reason::ExpiredProviderToken) => Classified {
            verdict: Verdict::RefreshCredentials {
                reason: label.clone(),
            },
            reason,
            loud: false,
        },
        (403, _) => failed(true),
        // IdleTimeout is about the connection, not the token.
        (400, Reason::IdleTimeout) => retry(),
        (429, _) => retry(),
        (500..=599, _) => retry(),
        _ => failed(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(reason: &str) -> Vec<u8> {
        format!("{{\"reason\":\"{reason}\"}}").into_bytes()
    }

    #[test]
    fn every_reason_round_trips() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), r);
        }
        assert_eq!(Reason::parse("SomethingNew"), Reason::Other);
    }

    #[test]
    fn documented_answers_map_to_the_right_verdict() {
        use Verdict::*;
        let table: &[(u16, &str, &str)] = &[
            (400, "BadCollapseId", "failed"),
            (400, "BadDeviceToken", "failed"),
            (400, "BadExpirationDate", "failed"),
            (400, "BadMessageId", "failed"),
            (400, "BadPriority", "failed"),
            (400, "BadTopic", "failed"),
            (400, "DeviceTokenNotForTopic", "failed"),
            (400, "DuplicateHeaders", "failed"),
            (400, "IdleTimeout", "retry"),
            (400, "InvalidPushType", "failed"),
            (400, "MissingDeviceToken", "failed"),
            (400, "MissingTopic", "failed"),
            (400, "PayloadEmpty", "failed"),
            (400, "TopicDisallowed", "failed"),
            (403, "BadCertificate", "failed"),
            (403, "BadCertificateEnvironment", "failed"),
            (403, "ExpiredProviderToken", "refresh"),
            (403, "Forbidden", "failed"),
            (403, "InvalidProviderToken", "failed"),
            (403, "MissingProviderToken", "failed"),
            (403, "UnrelatedKeyIdInToken", "failed"),
            (403, "BadEnvironmentKeyInToken", "failed"),
            (404, "BadPath", "failed"),
            (405, "MethodNotAllowed", "failed"),
            (410, "ExpiredToken", "unregistered"),
            (410, "Unregistered", "unregistered"),
            (413, "PayloadTooLarge", "failed"),
            (429, "TooManyProviderTokenUpdates", "retry"),
            (429, "TooManyRequests", "retry"),
            (500, "InternalServerError", "retry"),
            (503, "ServiceUnavailable", "retry"),
            (503, "Shutdown", "retry"),
            (400, "MissingChannelId", "failed"),
            (400, "BadChannelId", "failed"),
            (404, "ChannelNotRegistered", "failed"),
            (400, "FeatureNotEnabled", "failed"),
        ];
        assert_eq!(table.len(), Reason::ALL.len());
        for &(status, reason, want) in table {
            let got = match classify(status, &body(reason), None).verdict {
                Done(Outcome::Failed {
                    reason: r,
                    status: s,
                }) => {
                    assert_eq!((&*r, s), (reason, status));
                    "failed"
                }
                Done(Outcome::Unregistered { .. }) => "unregistered",
                Retry { .. } => "retry",
                RefreshCredentials { .. } => "refresh",
                other => panic!("{status} {reason}: {other:?}"),
            };
            assert_eq!(got, want, "{status} {reason}");
        }
    }

    #[test]
    fn unregistered_keeps_apples_timestamp() {
        let c = classify(
            410,
            br#"{"reason":"Unregistered","timestamp":1700000000123}"#,
            None,
        );
        assert_eq!(
            c.verdict,
            Verdict::Done(Outcome::Unregistered {
                timestamp_ms: Some(1_700_000_000_123)
            })
        );
    }

    #[test]
    fn credential_refusals_are_loud_and_token_errors_are_not() {
        assert!(classify(403, &body("InvalidProviderToken"), None).loud);
        assert!(!classify(400, &body("BadDeviceToken"), None).loud);
    }

    #[test]
    fn unknown_answers_keep_their_text_and_follow_the_status_class() {
        match classify(400, &body("BrandNew"), None).verdict {
            Verdict::Done(Outcome::Failed { reason, .. }) => assert_eq!(&*reason, "BrandNew"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(502, b"<html>", None).verdict,
            Verdict::Retry { .. }
        ));
        let after = Some(Duration::from_secs(3));
        assert_eq!(
            classify(429, &body("TooManyRequests"), after).verdict,
            Verdict::Retry {
                reason: "TooManyRequests".into(),
                retry_after: after
            }
        );
    }
}
