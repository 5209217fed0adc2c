//! The `messages:send` request, built without a network: `POST
//! {endpoint}/v1/{app_id}/messages:send` with `Authorization: Bearer <access
//! token>`, `Content-Type: application/json` and the batch's body
//! ([`super::message::HmsMessage::body`]). Checked header by header in the
//! tests below; the worker only sends what this builds.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};

/// The send URL of `app_id` under `endpoint` (no trailing slash).
pub fn send_url(endpoint: &str, app_id: &str) -> String {
    format!("{endpoint}/v1/{app_id}/messages:send")
}

/// One `messages:send` request.
pub fn build(
    url: &str,
    authorization: &HeaderValue,
    body: Bytes,
) -> Result<Request<Bytes>, http::Error> {
    Request::builder()
        .method(Method::POST)
        .uri(url)
        .header(header::AUTHORIZATION, authorization.clone())
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=UTF-8"),
        )
        .body(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_a_bearer_json_post_to_the_apps_send_url() {
        let url = send_url("https://push-api.cloud.huawei.com", "104000000");
        assert_eq!(
            url,
            "https://push-api.cloud.huawei.com/v1/104000000/messages:send"
        );
        let mut auth = HeaderValue::from_static("Bearer a/b+c=");
        auth.set_sensitive(true);
        let body =
            Bytes::from_static(br#"{"validate_only":false,"message":{"token":["t"],"data":"x"}}"#);
        let request = build(&url, &auth, body.clone()).expect("a request");
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri().path(), "/v1/104000000/messages:send");
        assert_eq!(request.uri().host(), Some("push-api.cloud.huawei.com"));
        let headers = request.headers();
        assert_eq!(headers[header::AUTHORIZATION], "Bearer a/b+c=");
        assert!(headers[header::AUTHORIZATION].is_sensitive());
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "application/json; charset=UTF-8"
        );
        assert_eq!(headers.len(), 2);
        assert_eq!(request.body(), &body);
    }
}
