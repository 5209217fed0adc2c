//! Mock of Apple's broadcast protocols (iOS 18 Live Activities), served on the
//! same listener as device pushes: channel management
//! (`/1/apps/<bundle>/channels`, `/1/apps/<bundle>/all-channels`) and
//! broadcast sends (`/4/broadcasts/apps/<bundle>`). Channels live in memory,
//! per bundle id; every answer carries `apns-request-id` (the request's when
//! it is a UUID, else a fresh one).
//!
//! # Management
//!
//! | request | check (first failure answers) | answer |
//! |---|---|---|
//! | any | provider token (token auth), as for device pushes | 403 `MissingProviderToken` / `InvalidProviderToken` / `ExpiredProviderToken` |
//! | `POST .../channels` | body `{"message-storage-policy": 0\|1, "push-type": "LiveActivity"}` | 400 `BadMessageStoragePolicy`, 400 `InvalidPushType`, 400 `CannotCreateChannelConfig` past 10,000 channels; else 201 + `apns-channel-id` |
//! | `GET .../channels` | `apns-channel-id` present, base64, known | 400 `MissingChannelId`, 400 `BadChannelId`, 404 `ChannelNotRegistered`; else 200 `{"message-storage-policy","push-type"}` |
//! | `DELETE .../channels` | as `GET` | 204 |
//! | `GET .../all-channels` | | 200 `{"channels":[...]}` |
//! | other method | | 405 `MethodNotAllowed` |
//!
//! # Broadcast (`POST /4/broadcasts/apps/<bundle>`)
//!
//! Provider token; `apns-channel-id` present, base64 and a channel of this
//! bundle (400 `MissingChannelId`, 400 `BadChannelId`, 404
//! `ChannelNotRegistered`); `apns-push-type: liveactivity` (400
//! `InvalidPushType`); `apns-priority` 10, 5 or 1 (400 `BadPriority`);
//! `apns-expiration` present and digits (400 `BadExpirationDate`), and 0 on
//! a no-storage channel (400 `BadExpirationDate`); body non-empty (400
//! `PayloadEmpty`), at most 5,120 bytes (413 `PayloadTooLarge`), and an
//! `aps` with `event`, `timestamp` and `content-state` (400 `BadPayload`).
//! Then the fault plan (`throttle_every`, `error_rate`, `flaky` channel ids)
//! may answer 429/503; otherwise 200 with `apns-unique-id`. Attempts and
//! deliveries are counted per channel id in the ledger.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Method, Response, StatusCode};

use super::{Reason, Server, new_apns_id, read_body};
use crate::mock::faults::Injected;

const APNS_CHANNEL_ID: HeaderName = HeaderName::from_static("apns-channel-id");
const APNS_REQUEST_ID: HeaderName = HeaderName::from_static("apns-request-id");
const APNS_UNIQUE_ID: HeaderName = HeaderName::from_static("apns-unique-id");
const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
/// Apple's limit per app and environment.
const MAX_CHANNELS: usize = 10_000;
const BROADCAST_PAYLOAD_LIMIT: usize = 5120;
const MANAGE_PREFIX: &str = "/1/apps/";
const BROADCAST_PREFIX: &str = "/4/broadcasts/apps/";

/// The channels every bundle has: id → storage policy.
#[derive(Debug, Default)]
pub(super) struct Store {
    apps: Mutex<HashMap<String, BTreeMap<String, u8>>>,
}

impl Store {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeMap<String, u8>>> {
        self.apps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn policy(&self, bundle: &str, id: &str) -> Option<u8> {
        self.lock().get(bundle).and_then(|c| c.get(id)).copied()
    }
}

/// Where a request for the broadcast protocols goes.
pub(super) enum Route {
    /// `/1/apps/<bundle>/channels`.
    Channel(String),
    /// `/1/apps/<bundle>/all-channels`.
    AllChannels(String),
    /// `/4/broadcasts/apps/<bundle>`.
    Broadcast(String),
    /// Under one of the prefixes, but no such resource.
    BadPath,
}

/// The route of `path`, `None` when it is not a broadcast-protocol path.
pub(super) fn route(path: &str) -> Option<Route> {
    let valid = |b: &str| !b.is_empty() && !b.contains('/');
    if let Some(rest) = path.strip_prefix(MANAGE_PREFIX) {
        return Some(match rest.rsplit_once('/') {
            Some((bundle, "channels")) if valid(bundle) => Route::Channel(bundle.to_owned()),
            Some((bundle, "all-channels")) if valid(bundle) => {
                Route::AllChannels(bundle.to_owned())
            }
            _ => Route::BadPath,
        });
    }
    if let Some(bundle) = path.strip_prefix(BROADCAST_PREFIX) {
        return Some(if valid(bundle) {
            Route::Broadcast(bundle.to_owned())
        } else {
            Route::BadPath
        });
    }
    None
}

/// An answer of the broadcast protocols.
enum Answer {
    Error(Reason),
    Throttled(u64),
    Created(String),
    Json(String),
    NoContent,
    Broadcast,
}

/// Serves one stream. `auth` is the provider-token verdict, checked by the
/// connection before the stream was handed over.
pub(super) async fn handle(
    server: &Server,
    auth: Result<(), Reason>,
    route: Route,
    parts: http::request::Parts,
    mut body: RecvStream,
    respond: SendResponse<Bytes>,
) {
    let request_id = match parts.headers.get(APNS_REQUEST_ID) {
        Some(id) if super::is_uuid(id.as_bytes()) => id.clone(),
        _ => new_apns_id(),
    };
    let answer = match auth {
        Err(reason) => Answer::Error(reason),
        Ok(()) => match decide(server, route, &parts, &mut body).await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::debug!(error = %e, "mock APNs broadcast stream failed before the answer");
                return;
            }
        },
    };
    if let Err(e) = send(respond, answer, request_id) {
        tracing::debug!(error = %e, "mock APNs could not answer a broadcast stream");
    }
}

async fn decide(
    server: &Server,
    route: Route,
    parts: &http::request::Parts,
    body: &mut RecvStream,
) -> Result<Answer, h2::Error> {
    let method = &parts.method;
    let store = &server.channels;
    Ok(match route {
        Route::BadPath => Answer::Error(Reason::BadPath),
        Route::AllChannels(bundle) => {
            if method != Method::GET {
                return Ok(Answer::Error(Reason::MethodNotAllowed));
            }
            let ids: Vec<String> = store
                .lock()
                .get(&bundle)
                .map(|c| c.keys().cloned().collect())
                .unwrap_or_default();
            Answer::Json(serde_json::json!({ "channels": ids }).to_string())
        }
        Route::Channel(bundle) => match *method {
            Method::POST => create(store, &bundle, body).await?,
            Method::GET | Method::DELETE => {
                let id = match channel_id(parts) {
                    Ok(id) => id,
                    Err(reason) => return Ok(Answer::Error(reason)),
                };
                let mut apps = store.lock();
                let channels = apps.entry(bundle).or_default();
                match (method == Method::DELETE, channels.get(&id).copied()) {
                    (_, None) => Answer::Error(Reason::ChannelNotRegistered),
                    (false, Some(policy)) => Answer::Json(
                        serde_json::json!({"message-storage-policy": policy, "push-type": "LiveActivity"})
                            .to_string(),
                    ),
                    (true, Some(_)) => {
                        channels.remove(&id);
                        Answer::NoContent
                    }
                }
            }
            _ => Answer::Error(Reason::MethodNotAllowed),
        },
        Route::Broadcast(bundle) => {
            if method != Method::POST {
                return Ok(Answer::Error(Reason::MethodNotAllowed));
            }
            broadcast(server, &bundle, parts, body).await?
        }
    })
}

async fn create(store: &Store, bundle: &str, body: &mut RecvStream) -> Result<Answer, h2::Error> {
    let Some(bytes) = read_body(body, 4096).await? else {
        return Ok(Answer::Error(Reason::PayloadTooLarge));
    };
    let value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return Ok(Answer::Error(Reason::BadPayload)),
    };
    let policy = match value.get("message-storage-policy").and_then(|p| p.as_u64()) {
        Some(p @ (0 | 1)) => p as u8,
        _ => return Ok(Answer::Error(Reason::BadMessageStoragePolicy)),
    };
    if value.get("push-type").and_then(|p| p.as_str()) != Some("LiveActivity") {
        return Ok(Answer::Error(Reason::InvalidPushType));
    }
    let mut apps = store.lock();
    let channels = apps.entry(bundle.to_owned()).or_default();
    if channels.len() >= MAX_CHANNELS {
        return Ok(Answer::Error(Reason::CannotCreateChannelConfig));
    }
    // 16 random bytes, base64: opaque, like Apple's.
    let id = loop {
        let id = base64_encode(&fastrand::u128(..).to_le_bytes());
        if !channels.contains_key(&id) {
            break id;
        }
    };
    channels.insert(id.clone(), policy);
    Ok(Answer::Created(id))
}

async fn broadcast(
    server: &Server,
    bundle: &str,
    parts: &http::request::Parts,
    body: &mut RecvStream,
) -> Result<Answer, h2::Error> {
    let headers = &parts.headers;
    let id = match channel_id(parts) {
        Ok(id) => id,
        Err(reason) => return Ok(Answer::Error(reason)),
    };
    let Some(policy) = server.channels.policy(bundle, &id) else {
        return Ok(Answer::Error(Reason::ChannelNotRegistered));
    };
    if headers.get(APNS_PUSH_TYPE).map(HeaderValue::as_bytes) != Some(b"liveactivity") {
        return Ok(Answer::Error(Reason::InvalidPushType));
    }
    if !headers
        .get(APNS_PRIORITY)
        .is_some_and(|p| matches!(p.as_bytes(), b"10" | b"5" | b"1"))
    {
        return Ok(Answer::Error(Reason::BadPriority));
    }
    let expiration = headers
        .get(APNS_EXPIRATION)
        .and_then(|e| e.to_str().ok())
        .filter(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|e| e.parse::<u64>().ok());
    match expiration {
        None => return Ok(Answer::Error(Reason::BadExpirationDate)),
        // A channel that stores nothing cannot hold a message until it expires.
        Some(e) if e != 0 && policy == 0 => return Ok(Answer::Error(Reason::BadExpirationDate)),
        Some(_) => {}
    }
    let Some(payload) = read_body(body, BROADCAST_PAYLOAD_LIMIT).await? else {
        return Ok(Answer::Error(Reason::PayloadTooLarge));
    };
    if payload.is_empty() {
        return Ok(Answer::Error(Reason::PayloadEmpty));
    }
    if !is_live_activity_update(&payload) {
        return Ok(Answer::Error(Reason::BadPayload));
    }
    let ledger = &server.ledger;
    let attempt = ledger.record_attempt(&id);
    let answer = match server.clock.next(&server.faults) {
        Injected::Throttle { retry_after_s } => Answer::Throttled(retry_after_s),
        Injected::ServerError => Answer::Error(Reason::ServiceUnavailable),
        Injected::None if attempt == 1 && server.faults.flaky.contains(&id) => {
            Answer::Error(Reason::ServiceUnavailable)
        }
        Injected::None => Answer::Broadcast,
    };
    if matches!(answer, Answer::Broadcast) {
        ledger.record_delivery(&id);
    }
    Ok(answer)
}

/// `apns-channel-id`: present and base64.
fn channel_id(parts: &http::request::Parts) -> Result<String, Reason> {
    let value = parts
        .headers
        .get(APNS_CHANNEL_ID)
        .ok_or(Reason::MissingChannelId)?;
    let text = value.to_str().map_err(|_| Reason::BadChannelId)?;
    let body = text.trim_end_matches('=');
    let base64 = !body.is_empty()
        && text.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'));
    if base64 {
        Ok(text.to_owned())
    } else {
        Err(Reason::BadChannelId)
    }
}

fn is_live_activity_update(payload: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return false;
    };
    let Some(aps) = value.get("aps").and_then(|a| a.as_object()) else {
        return false;
    };
    aps.get("event").is_some_and(|e| e.is_string())
        && aps.get("timestamp").is_some_and(|t| t.is_u64())
        && aps.get("content-state").is_some_and(|c| c.is_object())
}

fn send(
    mut respond: SendResponse<Bytes>,
    answer: Answer,
    request_id: HeaderValue,
) -> Result<(), h2::Error> {
    let mut response = Response::new(());
    response.headers_mut().insert(APNS_REQUEST_ID, request_id);
    let body = match answer {
        Answer::Created(id) => {
            *response.status_mut() = StatusCode::CREATED;
            if let Ok(v) = HeaderValue::from_str(&id) {
                response.headers_mut().insert(APNS_CHANNEL_ID, v);
            }
            None
        }
        Answer::NoContent => {
            *response.status_mut() = StatusCode::NO_CONTENT;
            None
        }
        Answer::Broadcast => {
            response.headers_mut().insert(APNS_UNIQUE_ID, new_apns_id());
            None
        }
        Answer::Json(text) => Some(Bytes::from(text)),
        Answer::Error(reason) => {
            *response.status_mut() = reason.status();
            Some(Bytes::from_static(reason.body().as_bytes()))
        }
        Answer::Throttled(retry_after_s) => {
            *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_s));
            Some(Bytes::from_static(
                Reason::TooManyRequests.body().as_bytes(),
            ))
        }
    };
    match body {
        None => {
            respond.send_response(response, true)?;
            Ok(())
        }
        Some(body) => {
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            let mut stream = respond.send_response(response, false)?;
            stream.send_data(body, true)
        }
    }
}

/// Standard base64 with padding (the mock's own, sharing nothing with the client).
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn routes_cover_both_hosts_paths() {
        assert!(matches!(route("/1/apps/com.x/channels"), Some(Route::Channel(b)) if b == "com.x"));
        assert!(matches!(
            route("/1/apps/com.x/all-channels"),
            Some(Route::AllChannels(_))
        ));
        assert!(matches!(
            route("/4/broadcasts/apps/com.x"),
            Some(Route::Broadcast(_))
        ));
        assert!(matches!(route("/1/apps/com.x/other"), Some(Route::BadPath)));
        assert!(route("/3/device/abcd").is_none());
    }
}
