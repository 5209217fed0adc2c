//! `POST /v1/{app_id}/messages:send`: authentication, the message checks,
//! the injected faults and the per-token outcome rules of the module docs.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use http::{HeaderMap, StatusCode, header};

use super::codes::Code;
use super::inbox::ReceivedMessage;
use super::message::{self, SendRequest};
use super::{Shared, TokenCheck};
use crate::mock::faults::Injected;

/// `Retry-After` of the `busy` token marker's flow-control answer.
const BUSY_RETRY_AFTER_S: u64 = 1;

/// The bearer token of `Authorization: Bearer <token>` (scheme case-insensitive,
/// as RFC 7235 has it).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim_start();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// True when the body is declared `application/json` (parameters allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// Huawei rejects a token with a stray space in it; an empty one names no device.
fn is_illegal(token: &str) -> bool {
    token.is_empty() || token.contains("illegal") || token.contains(char::is_whitespace)
}

/// Answers `code`, counting it in the inbox by its HTTP status.
fn reply(shared: &Shared, code: Code, msg: &str, request_id: &str) -> Response {
    let inbox = &shared.inbox;
    let counter = match code.status() {
        StatusCode::UNAUTHORIZED => {
            if code == Code::TokenExpired {
                inbox.expired.fetch_add(1, Ordering::Relaxed);
            }
            Some(&inbox.unauthorized)
        }
        StatusCode::BAD_REQUEST => Some(&inbox.refused),
        StatusCode::INTERNAL_SERVER_ERROR => Some(&inbox.server_errors),
        StatusCode::SERVICE_UNAVAILABLE => Some(&inbox.throttled),
        _ => None,
    };
    if let Some(counter) = counter {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    code.answer(msg, request_id)
}

/// 503 flow control, with `Retry-After` when `retry_after_s` is not zero
/// (Huawei does not promise the header; a client must cope without it).
fn flow_control(shared: &Shared, retry_after_s: u64, request_id: &str) -> Response {
    let mut response = reply(
        shared,
        Code::FlowControl,
        Code::FlowControl.message(),
        request_id,
    );
    if retry_after_s > 0 {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            shared.faults.retry_after(retry_after_s),
        );
    }
    response
}

/// The injected request-level faults, after the checks and before the tokens.
fn injected(shared: &Shared, request_id: &str) -> Option<Response> {
    match shared.clock.next(&shared.faults) {
        Injected::Throttle { retry_after_s } => {
            return Some(flow_control(shared, retry_after_s, request_id));
        }
        Injected::ServerError => {
            return Some(reply(
                shared,
                Code::InternalError,
                Code::InternalError.message(),
                request_id,
            ));
        }
        Injected::None => {}
    }
    (shared.throttle_rate > 0.0 && fastrand::f64() < shared.throttle_rate)
        .then(|| flow_control(shared, shared.faults.retry_after_s, request_id))
}

/// `POST /v1/{app_id}/messages:send`.
pub(super) async fn send(
    State(shared): State<Arc<Shared>>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.ledger.requests.fetch_add(1, Ordering::Relaxed);
    let request_id = shared.request_id();
    let Some(access_token) = bearer(&headers) else {
        return reply(
            &shared,
            Code::AuthError,
            "Missing Authorization: Bearer <access token>",
            &request_id,
        );
    };
    match shared.use_token(access_token, &app_id) {
        TokenCheck::Valid => {}
        TokenCheck::Invalid => {
            return reply(
                &shared,
                Code::AuthError,
                Code::AuthError.message(),
                &request_id,
            );
        }
        TokenCheck::Expired => {
            return reply(
                &shared,
                Code::TokenExpired,
                Code::TokenExpired.message(),
                &request_id,
            );
        }
    }
    shared.ledger.record_credential(access_token);
    if !is_json(&headers) {
        return reply(
            &shared,
            Code::ParameterError,
            "Content-Type must be application/json",
            &request_id,
        );
    }
    let request = match message::parse(&body) {
        Ok(request) => request,
        Err(refused) => return reply(&shared, refused.code, &refused.msg, &request_id),
    };

    let count = request.tokens.len();
    shared
        .ledger
        .largest_batch
        .fetch_max(count as u64, Ordering::Relaxed);
    shared.inbox.record_batch(count);
    shared.ledger.record_batch(
        request.tokens.iter().map(String::as_str),
        headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
        &body,
    );
    if let Some(response) = injected(&shared, &request_id) {
        return response;
    }
    if !request.validate_only
        && let Some(response) = marker_failure(&shared, &request, &request_id)
    {
        return response;
    }
    deliver(&shared, app_id, request, request_id)
}

/// Counts an attempt for every token and applies the request-failing
/// markers (`internal`, `flaky`, `busy`), in that order.
fn marker_failure(shared: &Shared, request: &SendRequest, request_id: &str) -> Option<Response> {
    let attempts: Vec<(&str, u32)> = request
        .tokens
        .iter()
        .map(|t| (t.as_str(), shared.ledger.record_attempt(t)))
        .collect();
    let first_try = |marker: &str| {
        attempts
            .iter()
            .any(|(t, attempt)| t.contains(marker) && *attempt <= 1)
    };
    let internal = Code::InternalError;
    if attempts.iter().any(|(t, _)| t.contains("internal")) {
        return Some(reply(shared, internal, internal.message(), request_id));
    }
    let listed_flaky = attempts
        .iter()
        .any(|(t, attempt)| *attempt <= 1 && shared.faults.flaky.contains(*t));
    if first_try("flaky") || listed_flaky {
        return Some(reply(shared, internal, internal.message(), request_id));
    }
    if first_try("busy") {
        return Some(flow_control(shared, BUSY_RETRY_AFTER_S, request_id));
    }
    None
}

/// Splits the tokens into delivered and illegal and answers
/// 80000000 / 80100000 / 80300007; records deliveries unless validate_only.
fn deliver(shared: &Shared, app_id: String, request: SendRequest, request_id: String) -> Response {
    let SendRequest {
        validate_only,
        tokens,
        data,
        notification,
        android,
    } = request;
    let (illegal, legal): (Vec<&str>, Vec<&str>) = tokens
        .iter()
        .map(String::as_str)
        .partition(|t| is_illegal(t));
    if legal.is_empty() {
        let code = Code::AllTokensInvalid;
        return reply(shared, code, code.message(), &request_id);
    }
    if validate_only {
        shared.inbox.validated.fetch_add(1, Ordering::Relaxed);
    } else {
        for token in &legal {
            shared.ledger.record_delivery(token);
        }
        let received = Arc::new(ReceivedMessage {
            request_id: request_id.clone(),
            app_id,
            data,
            notification,
            android,
        });
        shared.inbox.record(legal.iter().copied(), &received);
    }
    if illegal.is_empty() {
        return reply(shared, Code::Success, Code::Success.message(), &request_id);
    }
    // `msg` is a JSON text, written by hand to keep Huawei's key order.
    let listed = serde_json::to_string(&illegal).unwrap_or_else(|_| "[]".to_owned());
    let msg = format!(
        "{{\"success\":{},\"failure\":{},\"illegal_tokens\":{listed}}}",
        legal.len(),
        illegal.len()
    );
    reply(shared, Code::PartialSuccess, &msg, &request_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                name.clone(),
                http::HeaderValue::from_str(value).expect("header"),
            );
        }
        map
    }

    #[test]
    fn bearer_needs_the_scheme_and_a_token() {
        let auth = header::AUTHORIZATION;
        assert_eq!(
            bearer(&headers(&[(auth.clone(), "Bearer a/b+c==")])),
            Some("a/b+c==")
        );
        assert_eq!(bearer(&headers(&[(auth.clone(), "bearer x")])), Some("x"));
        assert_eq!(bearer(&headers(&[(auth.clone(), "Bearer ")])), None);
        assert_eq!(bearer(&headers(&[(auth.clone(), "Basic x")])), None);
        assert_eq!(bearer(&headers(&[(auth, "x")])), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn json_content_types_may_carry_a_charset() {
        let ct = header::CONTENT_TYPE;
        assert!(is_json(&headers(&[(ct.clone(), "application/json")])));
        assert!(is_json(&headers(&[(
            ct.clone(),
            "application/json;charset=utf-8"
        )])));
        assert!(!is_json(&headers(&[(ct, "text/plain")])));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn illegal_tokens_are_marked_empty_or_spaced() {
        assert!(is_illegal("an-illegal-one"));
        assert!(is_illegal(""));
        assert!(is_illegal("token "));
        assert!(!is_illegal("IQAAAACy0kYbAAB"));
    }
}
