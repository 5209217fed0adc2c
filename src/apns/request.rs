//! Builds one APNs request: a pure function, checked header by header in tests.

use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderName};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Method, Request, Uri};

use super::message::ApnsMessage;

// Built once: no header name is parsed per request.
const APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
const APNS_ID: HeaderName = HeaderName::from_static("apns-id");
const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
const APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");
const DEVICE_PATH: &str = "/3/device/";
const APNS_CHANNEL_ID: HeaderName = HeaderName::from_static("apns-channel-id");
const APNS_REQUEST_ID: HeaderName = HeaderName::from_static("apns-request-id");

/// Builds `POST /4/broadcasts/apps/<bundle>` for a broadcast `message` on
/// `channel_id`: Apple requires `apns-channel-id`, `apns-push-type`,
/// `apns-expiration` and `apns-priority` on every one, and takes no topic
/// (the bundle is in the path). `request_id` goes out as `apns-request-id`.
pub fn build_broadcast(
    authority: &Authority,
    message: &ApnsMessage,
    path: &bytes::Bytes,
    channel_id: &str,
    authorization: Option<&HeaderValue>,
    request_id: &str,
) -> Result<Request<()>, http::Error> {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTPS);
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(PathAndQuery::from_maybe_shared(path.clone())?);
    let mut request = Request::new(());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = Uri::from_parts(parts).map_err(http::Error::from)?;
    let headers = request.headers_mut();
    headers.insert(
        APNS_CHANNEL_ID,
        HeaderValue::from_str(channel_id).map_err(http::Error::from)?,
    );
    headers.insert(
        APNS_PUSH_TYPE,
        HeaderValue::from_static(message.push_type.as_str()),
    );
    headers.insert(
        APNS_EXPIRATION,
        HeaderValue::from(message.expiration.unwrap_or(0)),
    );
    headers.insert(
        APNS_PRIORITY,
        message
            .priority_header()
            .unwrap_or(HeaderValue::from_static("10")),
    );
    headers.insert(APNS_REQUEST_ID, never_indexed(request_id)?);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(message.payload.len()));
    if let Some(auth) = authorization {
        headers.insert(AUTHORIZATION, auth.clone());
    }
    Ok(request)
}

/// Builds `POST /3/device/<token>` for `message`.
///
/// `authorization` is the provider-token header (`bearer <jwt>`), `None` for
/// certificate auth; `apns_id` identifies this notification in Apple's logs.
pub fn build(
    authority: &Authority,
    message: &ApnsMessage,
    token: &str,
    authorization: Option<&HeaderValue>,
    apns_id: HeaderValue,
) -> Result<Request<()>, http::Error> {
    let mut path = String::with_capacity(DEVICE_PATH.len() + token.len());
    path.push_str(DEVICE_PATH);
    path.push_str(token);
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTPS);
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(PathAndQuery::from_maybe_shared(bytes::Bytes::from(path))?);
    let mut request = Request::new(());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = Uri::from_parts(parts).map_err(http::Error::from)?;
    let headers = request.headers_mut();
    headers.reserve(9);
    headers.insert(APNS_TOPIC, message.topic.clone());
    headers.insert(
        APNS_PUSH_TYPE,
        HeaderValue::from_static(message.push_type.as_str()),
    );
    headers.insert(APNS_ID, apns_id);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(message.payload.len()));
    if let Some(auth) = authorization {
        headers.insert(AUTHORIZATION, auth.clone());
    }
    if let Some(p) = message.priority_header() {
        headers.insert(APNS_PRIORITY, p);
    }
    if let Some(e) = message.expiration {
        headers.insert(APNS_EXPIRATION, HeaderValue::from(e));
    }
    if let Some(c) = &message.collapse_id {
        headers.insert(APNS_COLLAPSE_ID, c.clone());
    }
    Ok(request)
}

/// A header value HPACK sends as a never-indexed literal: `apns-id` and the
/// path differ on every request, and indexing them would only churn the
/// dynamic table and evict the entries that do repeat (topic, provider token).
fn never_indexed(value: &str) -> Result<HeaderValue, http::Error> {
    let mut value = HeaderValue::from_str(value).map_err(http::Error::from)?;
    value.set_sensitive(true);
    Ok(value)
}

/// A canonical UUID for `apns-id`: the job id's first 12 bytes and the
/// token's index, so one notification keeps one id across retries and can
/// be traced. Written on the stack (this runs once per request), and sent
/// as a never-indexed literal.
pub fn apns_id(job: &crate::job::JobId, index: u32) -> HeaderValue {
    let mut bytes = job.as_u128().to_be_bytes();
    bytes[12..].copy_from_slice(&index.to_be_bytes());
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::from_bytes(bytes)
        .hyphenated()
        .encode_lower(&mut text);
    let mut value = HeaderValue::from_str(text)
        .unwrap_or_else(|_| HeaderValue::from_static("00000000-0000-0000-0000-000000000000"));
    value.set_sensitive(true);
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apns::message::{ApnsFields, ApnsMessage};

    #[test]
    fn every_header_is_set_from_the_message() {
        let msg = ApnsMessage::new(
            ApnsFields {
                payload: br#"{"aps":{"alert":"hi"}}"#,
                topic: Some("com.example.app"),
                push_type: Some("alert"),
                priority: Some(5),
                expiration: Some(1_700_000_000),
                collapse_id: Some("group-1"),
            },
            None,
        )
        .expect("valid");
        let auth = HeaderValue::from_static("bearer abc.def.ghi");
        let req = build(
            &Authority::from_static("api.push.apple.com:443"),
            &msg,
            "00ff",
            Some(&auth),
            HeaderValue::from_static("123e4567-e89b-12d3-a456-426614174000"),
        )
        .expect("request");
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), "/3/device/00ff");
        assert_eq!(
            req.uri().authority().map(|a| a.as_str()),
            Some("api.push.apple.com:443")
        );
        let h = req.headers();
        assert_eq!(h["apns-topic"], "com.example.app");
        assert_eq!(h["apns-push-type"], "alert");
        assert_eq!(h["apns-priority"], "5");
        assert_eq!(h["apns-expiration"], "1700000000");
        assert_eq!(h["apns-collapse-id"], "group-1");
        assert_eq!(h["apns-id"], "123e4567-e89b-12d3-a456-426614174000");
        assert_eq!(h["authorization"], "bearer abc.def.ghi");
        assert_eq!(h["content-length"], "22");
    }

    #[test]
    fn optional_headers_are_absent_when_not_given() {
        let msg = ApnsMessage::new(
            ApnsFields {
                payload: b"{}",
                ..Default::default()
            },
            Some("t"),
        )
        .expect("valid");
        let req = build(
            &Authority::from_static("h:1"),
            &msg,
            "00",
            None,
            HeaderValue::from_static("00000000-0000-0000-0000-000000000000"),
        )
        .expect("request");
        for absent in [
            "authorization",
            "apns-priority",
            "apns-expiration",
            "apns-collapse-id",
        ] {
            assert!(!req.headers().contains_key(absent), "{absent}");
        }
    }

    #[test]
    fn apns_id_is_a_uuid_unique_per_token() {
        let job = crate::job::JobId::new();
        let a = apns_id(&job, 0);
        let b = apns_id(&job, 0x0102_0304);
        assert_ne!(a, b);
        let a = a.to_str().expect("ascii");
        let b = b.to_str().expect("ascii");
        assert!(uuid::Uuid::try_parse(a).is_ok(), "{a}");
        // The job's first 12 bytes, then the index: one id across retries.
        let job = job.to_string();
        assert_eq!(a.replace('-', "")[..24], job[..24]);
        assert!(b.ends_with("01020304"), "{b}");
    }
}
