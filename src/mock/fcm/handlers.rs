//! The three endpoints: `/token`, v1 `messages:send` and legacy `/fcm/send`.
//!
//! Parsing and verification here are the mock's own (see `mock.rs`): nothing is
//! shared with the gateway's FCM client.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;

use super::Shared;
use crate::mock::faults::{Faults, Injected};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Longest assertion lifetime Google accepts (`exp - iat`).
const MAX_ASSERTION_LIFETIME_S: u64 = 3600;
/// Clock skew tolerated on an assertion's `iat` being in the future.
const IAT_SKEW_S: u64 = 60;
/// FCM's limit on the data payload (keys plus values), in bytes.
const MAX_DATA_BYTES: usize = 4096;
/// Legacy limit on registration ids per request.
const MAX_LEGACY_BATCH: usize = 1000;
const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";
const BAD_REQUEST_TYPE: &str = "type.googleapis.com/google.rpc.BadRequest";
const INVALID_TOKEN_MESSAGE: &str = "The registration token is not a valid FCM registration token";

// ---------------------------------------------------------------------------
// Outcome rules

/// What the mock answers for one token, after its attempt has been counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    /// Delivered, and the legacy API hands out a new registration id.
    Canonical,
    Unregistered,
    Invalid,
    Mismatch,
    Unavailable,
    Quota,
    Internal,
}

/// The token-prefix table of the module docs. `attempt` is the 1-based attempt
/// number from the ledger, which makes `flaky`/`quota` fail only once.
fn decide(shared: &Shared, token: &str, attempt: u32) -> Outcome {
    let first = attempt <= 1;
    let once = |failure| if first { failure } else { Outcome::Delivered };
    if shared.faults.flaky.contains(token) || token.starts_with("flaky") {
        once(Outcome::Unavailable)
    } else if token.starts_with("unregistered") {
        Outcome::Unregistered
    } else if token.starts_with("invalid") {
        Outcome::Invalid
    } else if token.starts_with("mismatch") {
        Outcome::Mismatch
    } else if token.starts_with("quota") {
        once(Outcome::Quota)
    } else if token.starts_with("internal") {
        Outcome::Internal
    } else if token.starts_with("canonical") {
        Outcome::Canonical
    } else {
        Outcome::Delivered
    }
}

// ---------------------------------------------------------------------------
// Response helpers

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    respond(status, "application/json; charset=UTF-8", value.to_string())
}

fn with_retry_after(mut response: Response, value: HeaderValue) -> Response {
    response.headers_mut().insert(header::RETRY_AFTER, value);
    response
}

/// A `google.rpc.Status` error body, the shape every Google API answers with.
fn google_error(status: StatusCode, message: &str, details: Vec<Value>) -> Response {
    let status_name = match status {
        StatusCode::BAD_REQUEST => "INVALID_ARGUMENT",
        StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
        StatusCode::FORBIDDEN => "PERMISSION_DENIED",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::TOO_MANY_REQUESTS => "RESOURCE_EXHAUSTED",
        StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    let mut error = json!({
        "code": status.as_u16(),
        "message": message,
        "status": status_name,
    });
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    json_response(status, &json!({ "error": error }))
}

fn fcm_detail(error_code: &str) -> Value {
    json!({ "@type": FCM_ERROR_TYPE, "errorCode": error_code })
}

fn field_violation(field: &str, description: &str) -> Value {
    json!({
        "@type": BAD_REQUEST_TYPE,
        "fieldViolations": [{ "field": field, "description": description }],
    })
}

fn invalid_argument(message: &str, field: Option<&str>) -> Response {
    let mut details = vec![fcm_detail("INVALID_ARGUMENT")];
    if let Some(field) = field {
        details.push(field_violation(field, message));
    }
    google_error(StatusCode::BAD_REQUEST, message, details)
}

fn unauthenticated() -> Response {
    let mut response = google_error(
        StatusCode::UNAUTHORIZED,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, \
         login cookie or other valid authentication credential. See \
         https://developers.google.com/identity/sign-in/web/devconsole-project.",
        Vec::new(),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
        ),
    );
    response
}

fn quota_exceeded(retry_after: HeaderValue) -> Response {
    with_retry_after(
        google_error(
            StatusCode::TOO_MANY_REQUESTS,
            "Quota exceeded for sending messages.",
            vec![fcm_detail("QUOTA_EXCEEDED")],
        ),
        retry_after,
    )
}

fn unavailable() -> Response {
    google_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "The service is currently unavailable.",
        vec![fcm_detail("UNAVAILABLE")],
    )
}

fn v1_failure(outcome: Outcome, faults: &Faults) -> Response {
    match outcome {
        Outcome::Unregistered => google_error(
            StatusCode::NOT_FOUND,
            "Requested entity was not found.",
            vec![fcm_detail("UNREGISTERED")],
        ),
        Outcome::Invalid => invalid_argument(INVALID_TOKEN_MESSAGE, Some("message.token")),
        Outcome::Mismatch => google_error(
            StatusCode::FORBIDDEN,
            "SenderId mismatch",
            vec![fcm_detail("SENDER_ID_MISMATCH")],
        ),
        Outcome::Unavailable => unavailable(),
        // The token rule's Retry-After is fixed at one second (see the module table).
        Outcome::Quota => quota_exceeded(faults.retry_after(1)),
        Outcome::Internal | Outcome::Delivered | Outcome::Canonical => google_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error encountered.",
            vec![fcm_detail("INTERNAL")],
        ),
    }
}

// ---------------------------------------------------------------------------
// POST /token

fn oauth_error(error: &str, description: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({ "error": error, "error_description": description }),
    )
}

#[derive(Deserialize)]
struct AssertionClaims {
    #[serde(default)]
    scope: Option<String>,
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
}

const SHORT_LIVED: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a \
                           reasonable timeframe. Check your iat and exp values in the JWT claim.";

/// Verifies the assertion the way Google's token endpoint does; the error is the
/// `error_description` to answer with.
fn verify_assertion(shared: &Shared, assertion: &str) -> Result<(), (&'static str, String)> {
    use jsonwebtoken::errors::ErrorKind;

    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    // Client and mock share a clock: no leeway, so an expired assertion is caught.
    validation.leeway = 0;
    validation.set_issuer(&[&shared.client_email]);
    validation.set_audience(&shared.token_urls);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let data = jsonwebtoken::decode::<AssertionClaims>(
        assertion.as_bytes(),
        &shared.assertion_key,
        &validation,
    )
    .map_err(|e| {
        let description = match e.kind() {
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                "Invalid JWT Signature.".to_owned()
            }
            ErrorKind::ExpiredSignature => SHORT_LIVED.to_owned(),
            ErrorKind::InvalidIssuer => "Invalid email or User ID".to_owned(),
            ErrorKind::InvalidAudience => format!(
                "Invalid JWT: Failed audience check. The right audience is {}",
                shared.token_urls.first().map_or("", String::as_str)
            ),
            ErrorKind::MissingRequiredClaim(claim) => {
                format!("Invalid JWT: the `{claim}` claim is required.")
            }
            _ => "Invalid JWT: the assertion could not be parsed.".to_owned(),
        };
        ("invalid_grant", description)
    })?;
    let claims = data.claims;
    let now = jsonwebtoken::get_current_timestamp();
    let Some(iat) = claims.iat else {
        return Err(("invalid_grant", SHORT_LIVED.to_owned()));
    };
    if claims.exp <= iat
        || claims.exp - iat > MAX_ASSERTION_LIFETIME_S
        || iat > now.saturating_add(IAT_SKEW_S)
    {
        return Err(("invalid_grant", SHORT_LIVED.to_owned()));
    }
    let scoped = claims
        .scope
        .as_deref()
        .is_some_and(|scope| scope.split_whitespace().any(|s| s == FCM_SCOPE));
    if !scoped {
        return Err((
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.".to_owned(),
        ));
    }
    Ok(())
}

/// `POST /token`: the OAuth2 JWT-bearer grant of a service account.
pub(super) async fn token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let mut grant_type = None;
    let mut assertion = None;
    for (key, value) in form_urlencoded::parse(&body) {
        match &*key {
            "grant_type" => grant_type = Some(value.into_owned()),
            "assertion" => assertion = Some(value.into_owned()),
            _ => {}
        }
    }
    match grant_type.as_deref() {
        Some(JWT_BEARER) => {}
        Some(_) => return oauth_error("unsupported_grant_type", "Invalid grant_type."),
        None => return oauth_error("invalid_request", "Missing required parameter: grant_type"),
    }
    let Some(assertion) = assertion else {
        return oauth_error("invalid_request", "Missing required parameter: assertion");
    };
    if let Err((error, description)) = verify_assertion(&shared, &assertion) {
        return oauth_error(error, &description);
    }

    let access_token = format!(
        "ya29.mock-{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let now = Instant::now();
    let lifetime = Duration::from_secs(shared.token_lifetime_s);
    // An absurd lifetime cannot overflow the clock: cap it at a year.
    let expires = now
        .checked_add(lifetime)
        .unwrap_or(now + Duration::from_secs(365 * 24 * 3600));
    {
        let mut tokens = shared
            .access_tokens
            .write()
            .unwrap_or_else(|e| e.into_inner());
        // Forget expired tokens here, so the table stays as small as the live set.
        tokens.retain(|_, expiry| *expiry > now);
        tokens.insert(access_token.clone(), expires);
    }
    shared.ledger.grants.fetch_add(1, Ordering::Relaxed);
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "expires_in": shared.token_lifetime_s,
            "token_type": "Bearer",
        }),
    )
}

// ---------------------------------------------------------------------------
// POST /v1/projects/{project}/messages:send

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendRequest {
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    validate_only: bool,
}

/// The v1 `Message` resource. Unknown fields are rejected like Google does, which
/// catches a client sending the legacy shape to v1.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "the IgnoredAny fields are only declared so that deny_unknown_fields accepts them"
)]
struct Message {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    data: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    condition: Option<String>,
    #[serde(default)]
    name: Option<IgnoredAny>,
    #[serde(default)]
    notification: Option<IgnoredAny>,
    #[serde(default)]
    android: Option<IgnoredAny>,
    #[serde(default)]
    webpush: Option<IgnoredAny>,
    #[serde(default)]
    apns: Option<IgnoredAny>,
    #[serde(default)]
    fcm_options: Option<IgnoredAny>,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Checks the `data` map: string values only (the classic client bug is a
/// number or a nested object), no reserved keys, at most 4096 bytes.
fn check_data(data: &serde_json::Map<String, Value>) -> Result<(), Box<Response>> {
    let mut size = 0;
    for (index, (key, value)) in data.iter().enumerate() {
        let Value::String(text) = value else {
            let message =
                format!("Invalid value at 'message.data[{index}].value' (TYPE_STRING), {value}");
            return Err(Box::new(google_error(
                StatusCode::BAD_REQUEST,
                &message,
                vec![field_violation(
                    &format!("message.data[{index}].value"),
                    &message,
                )],
            )));
        };
        if key == "from"
            || key == "message_type"
            || key.starts_with("google.")
            || key.starts_with("gcm.")
        {
            return Err(Box::new(invalid_argument(
                &format!("Invalid data payload key: {key}"),
                Some("message.data"),
            )));
        }
        size += key.len() + text.len();
    }
    if size > MAX_DATA_BYTES {
        return Err(Box::new(invalid_argument(
            "Android message is too big",
            Some("message.data"),
        )));
    }
    Ok(())
}

/// FCM's topic name rule: `[a-zA-Z0-9-_.~%]+`, without the `/topics/` prefix.
fn is_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 900
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b))
}

/// `POST /v1/projects/{project}/messages:send`: one message to one token.
pub(super) async fn send_v1(
    State(shared): State<Arc<Shared>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.ledger.requests.fetch_add(1, Ordering::Relaxed);
    let Some(access_token) = bearer(&headers) else {
        return unauthenticated();
    };
    let valid = shared
        .access_tokens
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(access_token)
        .is_some_and(|expiry| *expiry > Instant::now());
    if !valid {
        return unauthenticated();
    }
    shared.ledger.record_credential(access_token);
    if project != shared.project_id {
        return google_error(
            StatusCode::FORBIDDEN,
            &format!(
                "Permission 'cloudmessaging.messages.create' denied on resource \
                 '//cloudresourcemanager.googleapis.com/projects/{project}' (or it may not exist)."
            ),
            vec![fcm_detail("SENDER_ID_MISMATCH")],
        );
    }

    let request: SendRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return google_error(
                StatusCode::BAD_REQUEST,
                &format!("Invalid JSON payload received. {e}"),
                vec![field_violation("", &e.to_string())],
            );
        }
    };
    let Some(message) = request.message else {
        return invalid_argument("Message must be set.", Some("message"));
    };
    if let Some(data) = &message.data
        && let Err(response) = check_data(data)
    {
        return *response;
    }
    // The ledger keys a topic as `/topics/<name>` and a condition as written.
    let token = match (message.token, message.topic, message.condition) {
        (Some(token), None, None) => token,
        (None, Some(topic), None) => {
            if !is_topic_name(&topic) {
                return invalid_argument(
                    &format!("Invalid topic name: {topic}"),
                    Some("message.topic"),
                );
            }
            format!("/topics/{topic}")
        }
        (None, None, Some(condition)) => {
            if condition.trim().is_empty() || condition.matches("in topics").count() > 5 {
                return invalid_argument(
                    "Invalid condition: empty or more than five topics",
                    Some("message.condition"),
                );
            }
            condition
        }
        (None, None, None) => {
            return invalid_argument("Recipient of the message is not set.", None);
        }
        _ => {
            return invalid_argument(
                "Exactly one of token, topic or condition must be set.",
                Some("message"),
            );
        }
    };
    shared.ledger.record_request(
        &token,
        headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
        &body,
    );
    if token.is_empty() {
        return invalid_argument(INVALID_TOKEN_MESSAGE, Some("message.token"));
    }

    match shared.clock.next(&shared.faults) {
        Injected::None => {}
        Injected::Throttle { retry_after_s } => {
            return quota_exceeded(shared.faults.retry_after(retry_after_s));
        }
        Injected::ServerError => return unavailable(),
    }

    let attempt = shared.ledger.record_attempt(&token);
    match decide(&shared, &token, attempt) {
        Outcome::Delivered | Outcome::Canonical => {
            // validate_only checks the message without delivering it, like Google.
            let id = if request.validate_only {
                "fake_message_id".to_owned()
            } else {
                shared.ledger.record_delivery(&token);
                shared.message_id()
            };
            json_response(
                StatusCode::OK,
                &json!({ "name": format!("projects/{}/messages/{id}", shared.project_id) }),
            )
        }
        failure => v1_failure(failure, &shared.faults),
    }
}

// ---------------------------------------------------------------------------
// POST /fcm/send (legacy)

#[derive(Deserialize)]
struct LegacyRequest {
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    registration_ids: Option<Vec<String>>,
    #[serde(default)]
    condition: Option<String>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    notification: Option<Value>,
}

fn legacy_text(status: StatusCode, text: String) -> Response {
    respond(status, "text/plain; charset=UTF-8", text)
}

/// What the legacy endpoint answered for a missing or wrong server key: an HTML
/// page, not JSON, which a client must cope with.
fn legacy_unauthorized() -> Response {
    respond(
        StatusCode::UNAUTHORIZED,
        "text/html; charset=UTF-8",
        "<HTML>\n<HEAD>\n<TITLE>Unauthorized</TITLE>\n</HEAD>\n\
         <BODY BGCOLOR=\"#FFFFFF\" TEXT=\"#000000\">\n<H1>Unauthorized</H1>\n\
         <H2>Error 401</H2>\n</BODY>\n</HTML>\n",
    )
}

fn legacy_key_ok(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(key) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("key="))
    else {
        return false;
    };
    // Constant time: the key is a credential.
    bool::from(key.as_bytes().ct_eq(shared.server_key.as_bytes()))
}

/// Serialized size of the legacy `data` plus `notification`, the part FCM limits.
fn legacy_payload_size(request: &LegacyRequest) -> usize {
    let size = |v: &Option<Value>| v.as_ref().map_or(0, |v| v.to_string().len());
    size(&request.data) + size(&request.notification)
}

/// `POST /fcm/send`: the legacy HTTP API, one payload to up to 1000 ids.
pub(super) async fn send_legacy(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.ledger.requests.fetch_add(1, Ordering::Relaxed);
    if !legacy_key_ok(&shared, &headers) {
        return legacy_unauthorized();
    }
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !json_body {
        // The real service would read the body as its plain-text form encoding and
        // fail in confusing ways; the mock says what is wrong instead.
        return legacy_text(
            StatusCode::BAD_REQUEST,
            "Content-Type must be application/json (the mock does not model the \
             plain-text form)"
                .to_owned(),
        );
    }
    let request: LegacyRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return legacy_text(StatusCode::BAD_REQUEST, format!("JSON_PARSING_ERROR: {e}")),
    };
    let too_big = legacy_payload_size(&request) > MAX_DATA_BYTES;
    let topic = request
        .to
        .as_deref()
        .and_then(|to| to.strip_prefix("/topics/"));
    if topic.is_some() || request.condition.is_some() {
        // A topic or condition send: one answer object, `message_id` a number.
        let (key, valid) = match (topic, &request.condition) {
            (Some(name), None) => (format!("/topics/{name}"), is_topic_name(name)),
            (None, Some(condition)) => (condition.clone(), !condition.trim().is_empty()),
            _ => (String::new(), false),
        };
        if !valid || request.registration_ids.is_some() {
            return json_response(StatusCode::OK, &json!({ "error": "InvalidParameters" }));
        }
        shared.ledger.record_request(
            &key,
            headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
            &body,
        );
        shared.ledger.record_attempt(&key);
        if too_big {
            return json_response(StatusCode::OK, &json!({ "error": "MessageTooBig" }));
        }
        shared.ledger.record_delivery(&key);
        return json_response(
            StatusCode::OK,
            &json!({ "message_id": fastrand::u64(1..i64::MAX as u64) }),
        );
    }
    let ids = match (request.to, request.registration_ids) {
        (Some(_), Some(_)) => {
            return legacy_text(
                StatusCode::BAD_REQUEST,
                "Must use either \"registration_ids\" field or \"to\", not both".to_owned(),
            );
        }
        (None, None) => {
            return legacy_text(
                StatusCode::BAD_REQUEST,
                "Missing \"to\" or \"registration_ids\" field".to_owned(),
            );
        }
        (Some(to), None) => vec![to],
        (None, Some(ids)) if ids.is_empty() => {
            return legacy_text(
                StatusCode::BAD_REQUEST,
                "\"registration_ids\" field cannot be empty".to_owned(),
            );
        }
        (None, Some(ids)) if ids.len() > MAX_LEGACY_BATCH => {
            return legacy_text(
                StatusCode::BAD_REQUEST,
                format!(
                    "Number of messages on bulk ({}) exceeds maximum allowed ({MAX_LEGACY_BATCH})",
                    ids.len()
                ),
            );
        }
        (None, Some(ids)) => ids,
    };
    shared
        .ledger
        .largest_batch
        .fetch_max(ids.len() as u64, Ordering::Relaxed);

    match shared.clock.next(&shared.faults) {
        Injected::None => {}
        Injected::Throttle { retry_after_s } => {
            return with_retry_after(
                legacy_text(StatusCode::SERVICE_UNAVAILABLE, String::new()),
                shared.faults.retry_after(retry_after_s),
            );
        }
        Injected::ServerError => {
            // Google answered both; a client must retry the whole batch on either.
            let status = if fastrand::bool() {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return legacy_text(status, String::new());
        }
    }

    let (mut success, mut failure, mut canonical_ids) = (0u64, 0u64, 0u64);
    shared.ledger.record_batch(
        ids.iter().filter(|t| !t.is_empty()).map(String::as_str),
        headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
        &body,
    );
    let results: Vec<Value> = ids
        .iter()
        .map(|token| {
            if token.is_empty() {
                failure += 1;
                return json!({ "error": "MissingRegistration" });
            }
            let attempt = shared.ledger.record_attempt(token);
            if too_big {
                failure += 1;
                return json!({ "error": "MessageTooBig" });
            }
            let error = match decide(&shared, token, attempt) {
                Outcome::Delivered => {
                    shared.ledger.record_delivery(token);
                    success += 1;
                    return json!({ "message_id": shared.message_id() });
                }
                Outcome::Canonical => {
                    shared.ledger.record_delivery(token);
                    success += 1;
                    canonical_ids += 1;
                    return json!({
                        "message_id": shared.message_id(),
                        "registration_id": format!("new-{token}"),
                    });
                }
                Outcome::Unregistered => "NotRegistered",
                Outcome::Invalid => "InvalidRegistration",
                Outcome::Mismatch => "MismatchSenderId",
                Outcome::Unavailable | Outcome::Quota => "Unavailable",
                Outcome::Internal => "InternalServerError",
            };
            failure += 1;
            json!({ "error": error })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "multicast_id": fastrand::i64(1..i64::MAX),
            "success": success,
            "failure": failure,
            "canonical_ids": canonical_ids,
            "results": results,
        }),
    )
}
