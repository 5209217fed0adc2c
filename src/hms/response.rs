//! Push Kit's answers to `messages:send`, classified in one table. Every
//! answer is `{"code":"<8 digits>","msg":"…","requestId":"…"}` with an HTTP
//! status of Huawei's table (200, 400, 401, 404, 500, 502, 503).
//!
//! | answer | every token of the batch |
//! |---|---|
//! | `80000000` | success |
//! | `80100000` (partial) | `msg` is a JSON text `{"success","failure","illegal_tokens":[…]}`: the illegal tokens are unregistered, the rest succeeded; a `msg` that cannot be read fails the batch (`80100000`), loud, never resent |
//! | `80300007` (all tokens invalid, HTTP 400 or 200) | unregistered |
//! | `80200001`, `80200003`, or HTTP 401 | renew the access token, then resend at once (loud unless `80200003`, the routine expiry) |
//! | HTTP 503 (flow control) | retry with backoff, `Retry-After` honoured (`FlowControl`) |
//! | HTTP 5xx, HTTP 429, or `81000001` | retry with backoff, `Retry-After` honoured |
//! | HTTP 200 whose body has no code | success (Huawei's HTTP table: 200 is success) |
//! | any other code (`80100001`, `80100003`, `80300008`, `80300010`, …) | failed, the code as the reason, loud |
//! | any other status without a code | failed `HTTP<status>`, loud |
//!
//! Huawei reports tokens only in a partial answer; a batch is resent only
//! when Huawei did not take it (401, 5xx, flow control), never for one bad
//! token.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::job::Outcome;
use crate::retry::Verdict;

/// The result codes the gateway acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// `80000000`: every token accepted.
    Success,
    /// `80100000`: some tokens accepted; `msg` names the illegal ones.
    PartialSuccess,
    /// `80200001`: OAuth authentication error (no, a bad, or another app's token).
    AuthError,
    /// `80200003`: the access token expired.
    TokenExpired,
    /// `80300007`: every token of the request is invalid.
    AllTokensInvalid,
    /// `81000001`: Huawei's internal error.
    InternalError,
}

impl Code {
    /// Every code the table names.
    pub const ALL: [Code; 6] = [
        Code::Success,
        Code::PartialSuccess,
        Code::AuthError,
        Code::TokenExpired,
        Code::AllTokensInvalid,
        Code::InternalError,
    ];

    /// Huawei's eight digits.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Success => "80000000",
            Code::PartialSuccess => "80100000",
            Code::AuthError => "80200001",
            Code::TokenExpired => "80200003",
            Code::AllTokensInvalid => "80300007",
            Code::InternalError => "81000001",
        }
    }

    /// The code spelt `digits`, when the table names it.
    pub fn parse(digits: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == digits)
    }
}

/// The body of every answer.
#[derive(Debug, Default, Deserialize)]
pub struct Answer {
    /// The result code (a string of digits; a number is read too).
    #[serde(default, deserialize_with = "digits")]
    pub code: Option<String>,
    /// Its description; for `80100000` a JSON text.
    #[serde(default)]
    pub msg: Option<String>,
    /// Huawei's request id, for support tickets.
    #[serde(default, rename = "requestId")]
    pub request_id: Option<String>,
}

fn digits<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// `msg` of a partial answer.
#[derive(Debug, Default, Deserialize)]
struct Partial {
    #[serde(default)]
    illegal_tokens: Option<Vec<String>>,
    /// Huawei's newer spelling, illegal tokens grouped by reason.
    #[serde(default, rename = "illegalTokens")]
    illegal_by_reason: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

/// What an answer means for the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    /// The same verdict for every token of the batch.
    All(Verdict),
    /// A partial answer: these tokens are unregistered, every other one succeeded.
    Partial {
        /// The illegal tokens, as Huawei listed them.
        illegal: HashSet<String>,
    },
}

/// An answer classified, and whether the gateway's configuration or message
/// is at fault (to log loudly: every batch will fail the same way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    /// What to do with the batch.
    pub outcome: Classified,
    /// True when an operator must hear about it.
    pub loud: bool,
    /// The code, or `HTTP<status>` without one, for the log.
    pub code: String,
}

fn failed(reason: &str, status: u16) -> Verdict {
    Verdict::Done(Outcome::Failed {
        reason: Arc::from(reason),
        status,
    })
}

/// Classifies one answer (see the module table). `retry_after` is the
/// answer's `Retry-After`.
pub fn classify(status: u16, body: &[u8], retry_after: Option<Duration>) -> Classification {
    let answer: Answer = serde_json::from_slice(body).unwrap_or_default();
    let word = answer
        .code
        .clone()
        .unwrap_or_else(|| format!("HTTP{status}"));
    let done = |outcome: Classified, loud: bool| Classification {
        outcome,
        loud,
        code: word.clone(),
    };
    let all = |verdict: Verdict, loud: bool| done(Classified::All(verdict), loud);
    let retry = |reason: &str| Verdict::Retry {
        reason: Arc::from(reason),
        retry_after,
    };
    let code = answer.code.as_deref().and_then(Code::parse);
    match (code, status) {
        // An expired token is routine; a rejected one (80200001) should not
        // happen to a token Huawei just granted for this app id: say so.
        (Some(Code::AuthError | Code::TokenExpired), _) | (_, 401) => all(
            Verdict::RefreshCredentials {
                reason: Arc::from(word.as_str()),
            },
            code != Some(Code::TokenExpired),
        ),
        (_, 503) => all(retry("FlowControl"), false),
        (Some(Code::InternalError), _) | (_, 429 | 500..=599) => all(retry(&word), false),
        (Some(Code::Success), _) => all(Verdict::Done(Outcome::Success), false),
        (Some(Code::AllTokensInvalid), _) => all(
            Verdict::Done(Outcome::Unregistered { timestamp_ms: None }),
            false,
        ),
        (Some(Code::PartialSuccess), _) => match partial(answer.msg.as_deref()) {
            Some(illegal) => done(Classified::Partial { illegal }, false),
            None => all(failed(&word, status), true),
        },
        (None, 200) if answer.code.is_none() => all(Verdict::Done(Outcome::Success), false),
        (None, _) => all(failed(&word, status), true),
    }
}

/// The illegal tokens of a partial answer's `msg`; `None` when it is not the
/// documented JSON text.
fn partial(msg: Option<&str>) -> Option<HashSet<String>> {
    let p: Partial = serde_json::from_str(msg?).ok()?;
    match (p.illegal_tokens, p.illegal_by_reason) {
        (None, None) => None,
        (listed, grouped) => Some(
            listed
                .into_iter()
                .flatten()
                .chain(grouped.into_iter().flat_map(|g| g.into_values().flatten()))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: &str, msg: &str) -> Vec<u8> {
        serde_json::json!({"code": code, "msg": msg, "requestId": "1"})
            .to_string()
            .into_bytes()
    }

    fn verdict(c: &Classification) -> &Verdict {
        match &c.outcome {
            Classified::All(v) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_code_round_trips() {
        for c in Code::ALL {
            assert_eq!(Code::parse(c.as_str()), Some(c));
        }
        assert_eq!(Code::parse("80100001"), None);
    }

    #[test]
    fn success_is_success_for_every_token() {
        let c = classify(200, &answer("80000000", "Success"), None);
        assert_eq!(verdict(&c), &Verdict::Done(Outcome::Success));
        assert!(!c.loud);
    }

    #[test]
    fn a_partial_answer_lists_the_illegal_tokens_and_the_rest_succeeded() {
        let msg = r#"{"success":2,"failure":2,"illegal_tokens":["bad-1","bad-2"]}"#;
        let c = classify(200, &answer("80100000", msg), None);
        assert_eq!(
            c.outcome,
            Classified::Partial {
                illegal: ["bad-1", "bad-2"].map(String::from).into()
            }
        );
        // Huawei's newer spelling groups them by reason.
        let msg = r#"{"illegalTokens":{"tokenFormatError":["x"]},"success":1,"failure":1}"#;
        let c = classify(200, &answer("80100000", msg), None);
        assert_eq!(
            c.outcome,
            Classified::Partial {
                illegal: ["x".to_owned()].into()
            }
        );
        // A msg that cannot be read: the batch fails loudly, never resent.
        let c = classify(200, &answer("80100000", "Some tokens are invalid"), None);
        assert!(c.loud);
        assert_eq!(
            verdict(&c),
            &Verdict::Done(Outcome::Failed {
                reason: "80100000".into(),
                status: 200
            })
        );
    }

    #[test]
    fn all_tokens_invalid_is_unregistered_with_either_status() {
        for status in [400, 200] {
            let c = classify(
                status,
                &answer("80300007", "All the tokens are invalid"),
                None,
            );
            assert_eq!(
                verdict(&c),
                &Verdict::Done(Outcome::Unregistered { timestamp_ms: None })
            );
            assert!(!c.loud);
        }
    }

    #[test]
    fn a_rejected_or_expired_access_token_is_renewed() {
        for (status, code) in [(401, "80200001"), (401, "80200003"), (200, "80200003")] {
            let c = classify(status, &answer(code, "OAuth"), None);
            assert_eq!(
                verdict(&c),
                &Verdict::RefreshCredentials {
                    reason: code.into()
                }
            );
            assert_eq!(c.loud, code == "80200001", "{code}");
        }
        let c = classify(401, b"", None);
        assert_eq!(
            verdict(&c),
            &Verdict::RefreshCredentials {
                reason: "HTTP401".into()
            }
        );
    }

    #[test]
    fn flow_control_and_server_errors_are_retried_with_retry_after() {
        let after = Some(Duration::from_secs(2));
        let c = classify(503, &answer("81000001", "Flow control"), after);
        assert_eq!(
            verdict(&c),
            &Verdict::Retry {
                reason: "FlowControl".into(),
                retry_after: after
            }
        );
        let c = classify(503, b"", None);
        assert_eq!(
            verdict(&c),
            &Verdict::Retry {
                reason: "FlowControl".into(),
                retry_after: None
            }
        );
        for (status, body, reason) in [
            (500, answer("81000001", "System internal error"), "81000001"),
            (502, b"<html>bad gateway</html>".to_vec(), "HTTP502"),
            (504, Vec::new(), "HTTP504"),
            (429, Vec::new(), "HTTP429"),
            (200, answer("81000001", "System internal error"), "81000001"),
        ] {
            let c = classify(status, &body, after);
            assert_eq!(
                verdict(&c),
                &Verdict::Retry {
                    reason: reason.into(),
                    retry_after: after
                },
                "{status}"
            );
            assert!(!c.loud);
        }
    }

    #[test]
    fn other_codes_fail_with_the_code_as_the_reason_loudly() {
        for (status, code) in [
            (400, "80100001"),
            (400, "80100003"),
            (400, "80100013"),
            (400, "80300008"),
            (400, "80300010"),
            (403, "80300002"),
        ] {
            let c = classify(status, &answer(code, "no"), None);
            assert_eq!(
                verdict(&c),
                &Verdict::Done(Outcome::Failed {
                    reason: code.into(),
                    status
                }),
                "{code}"
            );
            assert!(c.loud, "{code}");
            assert_eq!(c.code, code);
        }
        let c = classify(404, b"Not Found", None);
        assert_eq!(
            verdict(&c),
            &Verdict::Done(Outcome::Failed {
                reason: "HTTP404".into(),
                status: 404
            })
        );
        assert!(c.loud);
        // 200 is success in Huawei's HTTP table, even when the body says nothing.
        let c = classify(200, b"", None);
        assert_eq!(verdict(&c), &Verdict::Done(Outcome::Success));
        // A number is read as a code too.
        let c = classify(200, br#"{"code":80000000}"#, None);
        assert_eq!(verdict(&c), &Verdict::Done(Outcome::Success));
    }
}
