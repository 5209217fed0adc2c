//! The one route, `POST /push/{kind}/{id}`: checks, then the path's outcome.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::Shared;
use crate::mock::faults::Injected;

fn refuse(status: StatusCode, reason: &str) -> Response {
    (status, axum::Json(serde_json::json!({"reason": reason}))).into_response()
}

#[derive(serde::Deserialize)]
struct Claims {
    #[allow(dead_code)]
    aud: String,
    exp: u64,
    sub: String,
}

/// Parses `vapid t=<jwt>, k=<key>` (parameters in any order).
fn parse_vapid(value: &str) -> Option<(&str, &str)> {
    let (scheme, params) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("vapid") {
        return None;
    }
    let (mut t, mut k) = (None, None);
    for param in params.split(',') {
        match param.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.trim()),
            Some(("k", v)) => k = Some(v.trim()),
            _ => {}
        }
    }
    Some((t?, k?))
}

/// Verifies the VAPID header; the error is the answer to send.
/// A refusal: the status and the reason word of the answer.
type Refusal = (StatusCode, &'static str);

fn check_vapid(shared: &Shared, headers: &HeaderMap) -> Result<(), Refusal> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or((StatusCode::UNAUTHORIZED, "MissingAuthorization"))?;
    let bad = || (StatusCode::FORBIDDEN, "BadJwtToken");
    let (jwt, k) = parse_vapid(value).ok_or_else(bad)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let known = crate::floor::lock(&shared.verified).get(value).copied();
    if let Some(exp) = known {
        if exp < now {
            return Err((StatusCode::FORBIDDEN, "ExpiredJwtToken"));
        }
        shared.ledger.record_credential(jwt);
        return Ok(());
    }
    let point = URL_SAFE_NO_PAD.decode(k).map_err(|_| bad())?;
    if point.len() != 65 || point[0] != 4 {
        return Err(bad());
    }
    if let Some(expected) = &shared.expected_key
        && expected != k
    {
        return Err((StatusCode::FORBIDDEN, "VapidPkHashMismatch"));
    }
    let key = DecodingKey::from_ec_components(
        &URL_SAFE_NO_PAD.encode(&point[1..33]),
        &URL_SAFE_NO_PAD.encode(&point[33..65]),
    )
    .map_err(|_| bad())?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&shared.audiences);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    validation.leeway = 0;
    let data =
        jsonwebtoken::decode::<Claims>(jwt, &key, &validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                (StatusCode::FORBIDDEN, "ExpiredJwtToken")
            }
            _ => bad(),
        })?;
    // RFC 8292 §2: no more than 24 hours ahead.
    if data.claims.exp > now + 24 * 3600 {
        return Err(bad());
    }
    let sub_ok = data.claims.sub.starts_with("mailto:") || data.claims.sub.starts_with("https://");
    if !sub_ok {
        return Err(bad());
    }
    {
        let mut verified = crate::floor::lock(&shared.verified);
        if verified.len() >= crate::mock::webpush::VERIFIED_MAX {
            verified.clear();
        }
        verified.insert(value.to_owned(), data.claims.exp);
    }
    shared.ledger.record_credential(jwt);
    Ok(())
}

/// Checks TTL, Urgency, Topic and Content-Encoding; returns the header words
/// the inbox counts.
fn check_headers(headers: &HeaderMap) -> Result<Vec<String>, Refusal> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let ttl = text("ttl")
        .and_then(|t| t.trim().parse::<u64>().ok())
        .ok_or((StatusCode::BAD_REQUEST, "MissingTTL"))?;
    let mut words = vec![format!("ttl={ttl}")];
    if let Some(u) = text("urgency") {
        if !matches!(u, "very-low" | "low" | "normal" | "high") {
            return Err((StatusCode::BAD_REQUEST, "BadUrgency"));
        }
        words.push(format!("urgency={u}"));
    }
    if let Some(t) = text("topic") {
        let ok = !t.is_empty()
            && t.len() <= 32
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err((StatusCode::BAD_REQUEST, "BadWebPushTopic"));
        }
        words.push(format!("topic={t}"));
    }
    if text("content-encoding") != Some("aes128gcm") {
        return Err((StatusCode::BAD_REQUEST, "BadContentEncoding"));
    }
    Ok(words)
}

/// `POST /push/{kind}/{id}`.
pub(crate) async fn push(
    State(shared): State<Arc<Shared>>,
    Path((kind, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_no = shared.ledger.requests.fetch_add(1, Ordering::Relaxed);
    if let Err((status, reason)) = check_vapid(&shared, &headers) {
        return refuse(status, reason);
    }
    let words = match check_headers(&headers) {
        Ok(words) => words,
        Err((status, reason)) => return refuse(status, reason),
    };
    if body.len() > 4096 {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge");
    }
    let path_id = format!("{kind}/{id}");
    let attempt = shared.ledger.record_attempt(&path_id);
    match shared.clock.next(&shared.faults) {
        Injected::None => {}
        Injected::Throttle { retry_after_s } => {
            let mut r = refuse(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests");
            r.headers_mut().insert(
                http::header::RETRY_AFTER,
                shared.faults.retry_after(retry_after_s),
            );
            return r;
        }
        Injected::ServerError => {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable");
        }
    }
    let flaky = kind == "flaky" || shared.faults.flaky.contains(&path_id);
    match kind.as_str() {
        "gone" => return refuse(StatusCode::GONE, "Unregistered"),
        "notfound" => return refuse(StatusCode::NOT_FOUND, "NotFound"),
        "toolarge" => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge"),
        "bad" => return refuse(StatusCode::BAD_REQUEST, "BadRequest"),
        "internal" => return refuse(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError"),
        "throttle" if attempt == 1 => {
            let mut r = refuse(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests");
            r.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
            return r;
        }
        _ if flaky && attempt == 1 => {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable");
        }
        _ => {}
    }
    if request_no % shared.decrypt_every == 0 {
        let plaintext = match shared.subscriber.decrypt(&path_id, &body) {
            Ok(p) => p,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, e.as_str()),
        };
        shared.inbox.record(&path_id, plaintext, &words);
    } else if let Err(e) = super::subscriber::Header::parse(&body) {
        return refuse(StatusCode::BAD_REQUEST, e.as_str());
    }
    shared.ledger.record_delivery(&path_id);
    let n = shared.sequence.fetch_add(1, Ordering::Relaxed);
    let mut r = StatusCode::CREATED.into_response();
    if let Ok(v) = http::HeaderValue::try_from(format!("/m/{n}")) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}
