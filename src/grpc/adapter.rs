//! The adapter under every gRPC method: a call becomes the equivalent HTTP
//! request, sent through the gateway's own axum router in process
//! (`tower::ServiceExt::oneshot`, no socket), and the answer is read back.
//! Auth, admission, validation, the gorush mapping, bounded rejections,
//! idempotency and durability are therefore the HTTP API's own code, not a
//! second copy.
//!
//! What a call carries over ([`Forward`]): the metadata `authorization`
//! (`Bearer <key>`) as the `Authorization` header, which the router's auth
//! layer checks, and an idempotency key as `Idempotency-Key`.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request};
use serde_json::Value;
use tonic::Status;
use tonic::metadata::MetadataMap;
use tower::ServiceExt as _;

use super::status::{Answer, status_of};

/// Largest answer body read back (a send's answer holds a bounded sample of
/// rejections; a job status is small).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Calls the HTTP API in process.
#[derive(Clone)]
pub struct Adapter {
    router: axum::Router,
}

/// The headers a gRPC call carries over to its HTTP request.
#[derive(Debug, Clone, Default)]
pub struct Forward {
    authorization: Option<HeaderValue>,
    idempotency_key: Option<HeaderValue>,
}

impl Forward {
    /// The `authorization` metadata of a call (absent or not ASCII: none, so
    /// the router answers 401 when keys are configured).
    pub fn from_metadata(metadata: &MetadataMap) -> Self {
        let authorization = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| HeaderValue::from_str(v).ok());
        Self {
            authorization,
            idempotency_key: None,
        }
    }

    /// `Authorization: Bearer <key>`, marked sensitive (never logged); an
    /// unusable key gives no header.
    pub fn bearer(key: &str) -> Self {
        let authorization = HeaderValue::from_str(&format!("Bearer {key}"))
            .ok()
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        Self {
            authorization,
            idempotency_key: None,
        }
    }

    /// Adds `Idempotency-Key: key` (`""`: no key). A key that cannot be a
    /// header value is refused here with the field named; the API judges
    /// every other rule of the key.
    pub fn with_idempotency_key(mut self, key: &str) -> Result<Self, Status> {
        if !key.is_empty() {
            let value = HeaderValue::from_str(key).map_err(|_| {
                Status::invalid_argument("idempotency_key: must be 1-255 visible ASCII characters")
            })?;
            self.idempotency_key = Some(value);
        }
        Ok(self)
    }

    fn apply(&self, request: &mut Request<axum::body::Body>) {
        let headers = request.headers_mut();
        if let Some(v) = &self.authorization {
            headers.insert(header::AUTHORIZATION, v.clone());
        }
        if let Some(v) = &self.idempotency_key {
            headers.insert("idempotency-key", v.clone());
        }
    }
}

impl Adapter {
    /// Sends calls through `router` (the gateway's `api::router(state)`).
    pub fn new(router: axum::Router) -> Self {
        Self { router }
    }

    /// `GET path`; the answer, whatever its status.
    pub async fn get(&self, path: &str, forward: &Forward) -> Result<Answer, Status> {
        self.call(Method::GET, path, forward, None, axum::body::Body::empty())
            .await
    }

    /// `POST path` with a JSON body; the answer when it is a success, else
    /// the mapped status.
    pub async fn post_json(
        &self,
        path: &str,
        forward: &Forward,
        body: &Value,
    ) -> Result<Answer, Status> {
        let bytes = Bytes::from(body.to_string());
        let answer = self
            .call(
                Method::POST,
                path,
                forward,
                Some("application/json"),
                axum::body::Body::from(bytes),
            )
            .await?;
        success(answer)
    }

    /// `POST path` with a body of `content_type` that is still being written
    /// (NDJSON from a gRPC stream); the answer when it is a success, else the
    /// mapped status.
    pub async fn post_streamed(
        &self,
        path: &str,
        forward: &Forward,
        content_type: &'static str,
        body: axum::body::Body,
    ) -> Result<Answer, Status> {
        let answer = self
            .call(Method::POST, path, forward, Some(content_type), body)
            .await?;
        success(answer)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        forward: &Forward,
        content_type: Option<&'static str>,
        body: axum::body::Body,
    ) -> Result<Answer, Status> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .body(body)
            .map_err(|e| Status::invalid_argument(format!("{path:?} is not a usable path: {e}")))?;
        if let Some(t) = content_type {
            request
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(t));
        }
        forward.apply(&mut request);
        let response = match self.router.clone().oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, path, "cannot read the API's answer for a gRPC call");
                Status::internal("the gateway could not read its own answer")
            })?;
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Ok(Answer {
            status: parts.status,
            retry_after: header("retry-after"),
            replayed: header("idempotency-replayed").as_deref() == Some("true"),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }
}

/// A 2xx answer as is; anything else as its gRPC status.
fn success(answer: Answer) -> Result<Answer, Status> {
    if answer.status.is_success() {
        Ok(answer)
    } else {
        Err(status_of(&answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use http::StatusCode;
    use tonic::Code;

    /// A stand-in API that echoes what the adapter sent it.
    fn echo() -> axum::Router {
        axum::Router::new()
            .route(
                "/echo",
                post(|headers: http::HeaderMap, body: Bytes| async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    axum::Json(serde_json::json!({
                        "authorization": h("authorization"),
                        "idempotency_key": h("idempotency-key"),
                        "content_type": h("content-type"),
                        "body": String::from_utf8_lossy(&body),
                    }))
                }),
            )
            .route(
                "/full",
                get(|| async {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [("retry-after", "1")],
                        axum::Json(serde_json::json!({"error": "queue_full", "message": "the queue is full"})),
                    )
                }),
            )
    }

    #[tokio::test]
    async fn authorization_and_idempotency_key_become_headers() {
        let adapter = Adapter::new(echo());
        let mut metadata = MetadataMap::new();
        metadata.insert(
            "authorization",
            "Bearer 0123456789abcdef".parse().expect("ascii"),
        );
        let forward = Forward::from_metadata(&metadata)
            .with_idempotency_key("order-42")
            .expect("a header value");
        let answer = adapter
            .post_json("/echo", &forward, &serde_json::json!({"tokens": ["a"]}))
            .await
            .expect("200");
        assert_eq!(answer.body["authorization"], "Bearer 0123456789abcdef");
        assert_eq!(answer.body["idempotency_key"], "order-42");
        assert_eq!(answer.body["content_type"], "application/json");
        assert_eq!(answer.body["body"], r#"{"tokens":["a"]}"#);

        let bare = adapter
            .post_json("/echo", &Forward::default(), &Value::Null)
            .await
            .expect("200");
        assert_eq!(bare.body["authorization"], "");
        assert_eq!(bare.body["idempotency_key"], "");
    }

    #[test]
    fn a_key_that_is_no_header_value_is_refused_naming_the_field() {
        let e = Forward::default()
            .with_idempotency_key("line\nbreak")
            .expect_err("refused");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(
            e.message().starts_with("idempotency_key"),
            "{}",
            e.message()
        );
    }

    #[tokio::test]
    async fn an_error_answer_is_read_whole_for_the_mapping() {
        let adapter = Adapter::new(echo());
        let answer = adapter
            .get("/full", &Forward::default())
            .await
            .expect("read");
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.retry_after.as_deref(), Some("1"));
        let status = success(answer).expect_err("503");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "the queue is full");
    }
}
