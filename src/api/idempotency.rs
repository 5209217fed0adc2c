//! `Idempotency-Key` on the send routes: a retry of a request gets the
//! first answer again and queues nothing.
//!
//! [`guard`] wraps each send route (inside auth, so a key is scoped to the
//! API key that sent it). It reads the key, reserves it in the store, and:
//!
//! - a kept answer for the same request (route and body): replayed, with
//!   `"replayed": true` and `Idempotency-Replayed: true`;
//! - a kept answer for another request: 422 `idempotency_key_reused`;
//! - a request with the key still in flight: 409
//!   `idempotency_key_in_progress`, `Retry-After: 1`;
//! - a free key: the route runs with a [`Guard`] in its request. A route
//!   that admits a job writes the answer with the job, in the same store
//!   write ([`Guard::claim`]), so no crash can leave a job without its key,
//!   and marks its response [`KeptWithJob`]. Any other 2xx or 4xx answer is
//!   kept here after the route; a 5xx is not kept (the key is let go, so a
//!   retry runs again).

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{ApiError, AppState, store_unavailable};
use crate::backend::Backend;
use crate::floor::now_ms;
use crate::job::{JobId, hex_encode};
use crate::store::{Claim, Fingerprint, Found, IdemKey, KeepIf, Kept, Owner};

/// The request header.
pub const HEADER: &str = "idempotency-key";

/// The answer header on a replay.
pub const REPLAYED: &str = "idempotency-replayed";

/// Largest answer body kept (a send's answer lists at most a bounded
/// sample of refused tokens, so this is never reached in practice).
const MAX_KEPT_BODY: usize = 1 << 20;

/// A request's reserved key, as the route sees it.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The key, in its API key's scope.
    pub key: IdemKey,
    /// This request.
    pub owner: Owner,
    /// What the request was; `None` for a streamed body (not known before
    /// its end).
    pub fingerprint: Option<Fingerprint>,
    /// `server.idempotency_ttl_s`.
    pub ttl: std::time::Duration,
}

impl Guard {
    /// The answer `status`/`body` to keep, bound to `job`.
    pub fn kept(&self, status: u16, body: &Value, job: Option<JobId>) -> Kept {
        Kept {
            fingerprint: self.fingerprint,
            status,
            body: body.to_string(),
            job: job.map(|j| j.to_string()),
            lease_until_ms: None,
            expires_at_ms: now_ms().saturating_add(self.ttl.as_millis() as u64),
        }
    }

    /// The claim an admission writes with its jobs: `body` is the answer
    /// (202) that names `job`.
    pub fn claim(&self, status: u16, body: &Value, job: JobId) -> Claim {
        Claim {
            key: self.key.clone(),
            owner: self.owner,
            kept: self.kept(status, body, Some(job)),
        }
    }
}

/// Marks a response whose answer the route kept itself (with its job).
#[derive(Debug, Clone, Copy)]
pub struct KeptWithJob;

/// Lets a reservation go if its request ends without an answer kept (the
/// client went away, or the route answered 5xx).
struct Reservation {
    backend: Backend,
    key: Option<IdemKey>,
    owner: Owner,
}

impl Reservation {
    /// The answer is kept: nothing to let go.
    fn settle(mut self) {
        self.key = None;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let (backend, owner) = (self.backend.clone(), self.owner);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { backend.release(&key, owner).await });
            }
        }
    }
}

/// The scope of a request's keys: a digest of its `Authorization` value
/// (never the API key itself); one scope when the API is open.
fn scope(request: &Request) -> String {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map_or(&b""[..], HeaderValue::as_bytes);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, presented);
    hex_encode(&digest.as_ref()[..16])
}

/// What makes two requests the same: the route and the body (with its
/// media type). The query (`wait`) is left out: waiting or not, it is one
/// request.
pub fn fingerprint(path: &str, content_type: &[u8], body: &[u8]) -> Fingerprint {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in [path.as_bytes(), content_type, body] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Fingerprint(out)
}

fn is_stream(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(super::send::body::NDJSON))
}

/// The middleware. See the module documentation.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(value) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    let key = match value
        .to_str()
        .map_err(|_| crate::store::keys::KeyError::NotVisible(0))
        .and_then(|k| IdemKey::new(&scope(&request), k))
    {
        Ok(key) => key,
        Err(e) => {
            return ApiError::bad_request("bad_idempotency_key", e.to_string()).into_response();
        }
    };
    let (request, fingerprint) = if is_stream(&request) {
        (request, None)
    } else {
        let path = request.uri().path().to_owned();
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes().to_ascii_lowercase())
            .unwrap_or_default();
        let mut request = request;
        let mut whole = Request::new(std::mem::take(request.body_mut()));
        *whole.headers_mut() = request.headers().clone();
        let bytes = match super::extract::read_body(whole, state.max_body_bytes).await {
            Ok(bytes) => bytes,
            Err(e) => return e.into_response(),
        };
        let fp = fingerprint(&path, &content_type, &bytes);
        *request.body_mut() = Body::from(bytes);
        (request, Some(fp))
    };
    let owner = Owner::new();
    match state.backend.reserve(&key, owner).await {
        Err(e) => return store_unavailable(e).into_response(),
        Ok(Found::InFlight) => return ApiError::key_in_progress().into_response(),
        Ok(Found::Kept(kept)) => return replay(&kept, fingerprint),
        Ok(Found::Reserved) => {}
    }
    let reservation = Reservation {
        backend: state.backend.clone(),
        key: Some(key.clone()),
        owner,
    };
    let guard = Guard {
        key,
        owner,
        fingerprint,
        ttl: state.idempotency_ttl,
    };
    let mut request = request;
    request.extensions_mut().insert(guard.clone());
    let response = next.run(request).await;
    if response.extensions().get::<KeptWithJob>().is_some() {
        reservation.settle();
        return response;
    }
    if response.status().is_server_error() {
        // Dropped: the key is let go, and a retry runs again.
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_KEPT_BODY).await else {
        return ApiError::internal("an answer too large to keep under its Idempotency-Key")
            .into_response();
    };
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let kept = guard.kept(parts.status.as_u16(), &body, None);
    match state
        .backend
        .keep(&guard.key, &kept, KeepIf::Free(owner))
        .await
    {
        Ok(_) => reservation.settle(),
        Err(e) => {
            tracing::warn!(error = %e.detail(), key = %guard.key, "an answer could not be kept under its Idempotency-Key; a retry will run again");
        }
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The answer to a request whose key holds `kept`.
fn replay(kept: &Kept, fingerprint: Option<Fingerprint>) -> Response {
    if kept.lease_until_ms.is_some_and(|until| until > now_ms()) {
        return ApiError::key_in_progress().into_response();
    }
    if let Some(first) = kept.fingerprint
        && fingerprint != Some(first)
    {
        return ApiError::key_reused().into_response();
    }
    let mut body: Value = serde_json::from_str(&kept.body).unwrap_or(Value::Null);
    if let Some(map) = body.as_object_mut() {
        map.insert("replayed".into(), Value::Bool(true));
    }
    let status =
        axum::http::StatusCode::from_u16(kept.status).unwrap_or(axum::http::StatusCode::ACCEPTED);
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Bytes::from(body.to_string()),
    )
        .into_response();
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    if !status.is_success() {
        // Already our JSON error body: counted under this code, not rewritten.
        response
            .extensions_mut()
            .insert(super::error::ErrorCode("replayed"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(fp: Option<Fingerprint>, lease: Option<u64>) -> Kept {
        Kept {
            fingerprint: fp,
            status: 202,
            body: r#"{"job":"j","accepted":1}"#.into(),
            job: Some("j".into()),
            lease_until_ms: lease,
            expires_at_ms: u64::MAX,
        }
    }

    #[tokio::test]
    async fn a_replay_is_the_kept_answer_marked_and_another_request_is_refused() {
        let a = fingerprint("/apns/send", b"application/json", b"{}");
        let b = fingerprint("/apns/send", b"application/json", b"{ }");
        assert_ne!(a, b);
        assert_ne!(a, fingerprint("/fcm/send", b"application/json", b"{}"));
        let same = replay(&kept(Some(a), None), Some(a));
        assert_eq!(same.status(), 202);
        assert_eq!(same.headers()[REPLAYED], "true");
        let body = axum::body::to_bytes(same.into_body(), 1 << 16)
            .await
            .expect("body");
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            (body["job"].as_str(), body["replayed"].as_bool()),
            (Some("j"), Some(true))
        );
        assert_eq!(replay(&kept(Some(a), None), Some(b)).status(), 422);
        assert_eq!(replay(&kept(Some(a), None), None).status(), 422);
        assert_eq!(replay(&kept(None, None), Some(b)).status(), 202);
        let leased = replay(&kept(None, Some(u64::MAX)), None);
        assert_eq!(leased.status(), 409);
        assert_eq!(leased.headers()[header::RETRY_AFTER], "1");
    }
}
