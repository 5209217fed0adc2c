//! Broadcast channel management (iOS 18 Live Activities) on Apple's
//! management host (`api-manage-broadcast[.sandbox].push.apple.com`, or
//! `[apns] channels_endpoint`), with the same provider token or certificate
//! as device pushes:
//!
//! | operation | request | success |
//! |---|---|---|
//! | create | `POST /1/apps/<bundle>/channels` `{"message-storage-policy","push-type":"LiveActivity"}` | 201, `apns-channel-id` |
//! | read   | `GET /1/apps/<bundle>/channels` + `apns-channel-id` | 200 `{"message-storage-policy","push-type"}` |
//! | list   | `GET /1/apps/<bundle>/all-channels` | 200 `{"channels":[...]}` |
//! | delete | `DELETE /1/apps/<bundle>/channels` + `apns-channel-id` | 204 |
//!
//! Every answer carries `apns-request-id`; errors carry `{"reason"}`. Both
//! are kept in [`ChannelError::Refused`] for the API to pass on. Requests are
//! rare (an operator's, not per token), so one lazily opened h2 connection
//! serves them all; a dead one is replaced on the next request.
//!
//! The storage policy of every channel created or read here is remembered
//! ([`Channels::known_policy`]) so a broadcast with a nonzero expiration on a
//! channel that stores nothing is refused before it is queued.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderName};
use http::{HeaderValue, Method, Request};
use serde::Deserialize;

use super::auth::ProviderToken;
use super::conn;
use crate::settings::Upstream;

const APNS_CHANNEL_ID: HeaderName = HeaderName::from_static("apns-channel-id");
const APNS_REQUEST_ID: HeaderName = HeaderName::from_static("apns-request-id");

/// Apple's limit of channels per app and environment.
pub const MAX_CHANNELS: usize = 10_000;

/// Policies remembered at most (Apple's limit, twice: a deleted channel's
/// entry is dropped, so this only bounds a misbehaving upstream).
const MAX_REMEMBERED: usize = 2 * MAX_CHANNELS;

/// `message-storage-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoragePolicy {
    /// 0: nothing stored; a device offline at send time misses the update.
    NoStorage = 0,
    /// 1: the latest message is stored for offline devices.
    MostRecent = 1,
}

impl StoragePolicy {
    /// Parses 0 or 1.
    pub fn from_number(n: i64) -> Option<Self> {
        match n {
            0 => Some(Self::NoStorage),
            1 => Some(Self::MostRecent),
            _ => None,
        }
    }

    /// The wire number.
    pub fn number(self) -> u8 {
        self as u8
    }
}

/// Why a channel request did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChannelError {
    /// APNs answered with an error.
    #[error("APNs answered {status} {reason}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Apple's `reason` (or `HTTP<status>` without one).
        reason: String,
        /// `apns-request-id` of the answer.
        request_id: Option<String>,
    },
    /// The management host could not be asked (connect, TLS, stream reset, timeout).
    #[error("cannot reach the APNs channel management host {addr}: {message}")]
    Unreachable {
        /// host:port.
        addr: String,
        /// What failed.
        message: String,
    },
}

/// A created channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// Apple's opaque base64 id.
    pub channel_id: String,
    /// `apns-request-id`.
    pub request_id: Option<String>,
}

/// A channel as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// The id asked about.
    pub channel_id: String,
    /// `message-storage-policy`.
    pub message_storage_policy: i64,
    /// `push-type` (`LiveActivity`).
    pub push_type: String,
    /// `apns-request-id`.
    pub request_id: Option<String>,
}

/// Every channel of the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The ids.
    pub channels: Vec<String>,
    /// `apns-request-id`.
    pub request_id: Option<String>,
}

/// One raw answer.
struct Answer {
    status: u16,
    request_id: Option<String>,
    channel_id: Option<String>,
    body: Bytes,
}

/// The channel management client of one APNs app.
pub struct Channels {
    host: String,
    port: u16,
    authority: http::uri::Authority,
    tls: Arc<rustls::ClientConfig>,
    signer: Option<Arc<ProviderToken>>,
    timeout: Duration,
    conn: tokio::sync::Mutex<Option<h2::client::SendRequest<Bytes>>>,
    policies: Mutex<HashMap<String, StoragePolicy>>,
    requests: prometheus::IntCounterVec,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct ReadBody {
    #[serde(rename = "message-storage-policy", default)]
    policy: Option<i64>,
    #[serde(rename = "push-type", default)]
    push_type: Option<String>,
}

#[derive(Deserialize)]
struct ListBody {
    #[serde(default)]
    channels: Vec<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    reason: Option<String>,
}

impl Channels {
    /// A client for `upstream`, sharing the push connections' TLS settings
    /// (client certificate included) and provider token.
    pub fn new(
        upstream: &Upstream,
        tls: Arc<rustls::ClientConfig>,
        signer: Option<Arc<ProviderToken>>,
        timeout: Duration,
        requests: prometheus::IntCounterVec,
    ) -> Result<Self, http::uri::InvalidUri> {
        let authority =
            http::uri::Authority::try_from(format!("{}:{}", upstream.host, upstream.port))?;
        Ok(Self {
            host: upstream.host.clone(),
            port: upstream.port,
            authority,
            tls,
            signer,
            timeout,
            conn: tokio::sync::Mutex::new(None),
            policies: Mutex::new(HashMap::new()),
            requests,
        })
    }

    /// The storage policy of `channel_id`, when a create or read here saw it.
    pub fn known_policy(&self, channel_id: &str) -> Option<StoragePolicy> {
        self.lock_policies().get(channel_id).copied()
    }

    fn lock_policies(&self) -> std::sync::MutexGuard<'_, HashMap<String, StoragePolicy>> {
        self.policies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember(&self, channel_id: &str, policy: StoragePolicy) {
        let mut known = self.lock_policies();
        if known.len() < MAX_REMEMBERED || known.contains_key(channel_id) {
            known.insert(channel_id.to_owned(), policy);
        }
    }

    /// `POST /1/apps/<bundle>/channels`.
    pub async fn create(
        &self,
        bundle: &str,
        policy: StoragePolicy,
    ) -> Result<Created, ChannelError> {
        let body = Bytes::from(format!(
            "{{\"message-storage-policy\":{},\"push-type\":\"LiveActivity\"}}",
            policy.number()
        ));
        let answer = self
            .call("create", Method::POST, &channels_path(bundle), None, body)
            .await?;
        if answer.status != 201 && answer.status != 200 {
            return Err(refused(answer));
        }
        let Some(channel_id) = answer.channel_id.clone() else {
            return Err(ChannelError::Refused {
                status: answer.status,
                reason: "MissingChannelIdInAnswer".into(),
                request_id: answer.request_id,
            });
        };
        self.remember(&channel_id, policy);
        Ok(Created {
            channel_id,
            request_id: answer.request_id,
        })
    }

    /// `GET /1/apps/<bundle>/channels` with `apns-channel-id`.
    pub async fn read(&self, bundle: &str, channel_id: &str) -> Result<Channel, ChannelError> {
        let answer = self
            .call(
                "read",
                Method::GET,
                &channels_path(bundle),
                Some(channel_id),
                Bytes::new(),
            )
            .await?;
        if answer.status != 200 {
            if answer.status == 404 {
                self.lock_policies().remove(channel_id);
            }
            return Err(refused(answer));
        }
        let body: ReadBody =
            serde_json::from_slice(&answer.body).map_err(|_| ChannelError::Refused {
                status: answer.status,
                reason: "MalformedAnswer".into(),
                request_id: answer.request_id.clone(),
            })?;
        let policy = body.policy.unwrap_or(-1);
        if let Some(p) = StoragePolicy::from_number(policy) {
            self.remember(channel_id, p);
        }
        Ok(Channel {
            channel_id: channel_id.to_owned(),
            message_storage_policy: policy,
            push_type: body.push_type.unwrap_or_default(),
            request_id: answer.request_id,
        })
    }

    /// `GET /1/apps/<bundle>/all-channels`.
    pub async fn list(&self, bundle: &str) -> Result<Listed, ChannelError> {
        let path = format!("/1/apps/{bundle}/all-channels");
        let answer = self
            .call("list", Method::GET, &path, None, Bytes::new())
            .await?;
        if answer.status != 200 {
            return Err(refused(answer));
        }
        let body: ListBody =
            serde_json::from_slice(&answer.body).map_err(|_| ChannelError::Refused {
                status: answer.status,
                reason: "MalformedAnswer".into(),
                request_id: answer.request_id.clone(),
            })?;
        Ok(Listed {
            channels: body.channels,
            request_id: answer.request_id,
        })
    }

    /// `DELETE /1/apps/<bundle>/channels` with `apns-channel-id`.
    pub async fn delete(
        &self,
        bundle: &str,
        channel_id: &str,
    ) -> Result<Option<String>, ChannelError> {
        let answer = self
            .call(
                "delete",
                Method::DELETE,
                &channels_path(bundle),
                Some(channel_id),
                Bytes::new(),
            )
            .await?;
        if answer.status != 204 && answer.status != 200 {
            return Err(refused(answer));
        }
        self.lock_policies().remove(channel_id);
        Ok(answer.request_id)
    }

    /// Sends one request, reconnecting once if the cached connection is gone.
    async fn call(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        channel_id: Option<&str>,
        body: Bytes,
    ) -> Result<Answer, ChannelError> {
        let mut last = None;
        for _ in 0..2 {
            let sender = self.sender().await?;
            let request = self.build(method.clone(), path, channel_id, &body)?;
            match tokio::time::timeout(self.timeout, send(sender, request, body.clone())).await {
                Ok(Ok(answer)) => {
                    let status = answer.status.to_string();
                    self.requests.with_label_values(&[operation, &status]).inc();
                    if answer.status == 403
                        && let (Some(signer), Ok(auth)) =
                            (self.signer.as_ref(), self.authorization())
                        && reason_of(&answer.body).as_deref() == Some("ExpiredProviderToken")
                    {
                        // Sign a fresh token and ask once more.
                        if let Some(auth) = auth {
                            signer.invalidate(&auth);
                        }
                        last = Some(refused(answer));
                        continue;
                    }
                    return Ok(answer);
                }
                Ok(Err(message)) => {
                    // The connection is dead: forget it, try a new one.
                    *self.conn.lock().await = None;
                    last = Some(self.unreachable(message));
                }
                Err(_) => {
                    *self.conn.lock().await = None;
                    last = Some(self.unreachable("no answer within the request timeout".into()));
                }
            }
        }
        self.requests.with_label_values(&[operation, "error"]).inc();
        Err(last.unwrap_or_else(|| self.unreachable("no attempt made".into())))
    }

    fn unreachable(&self, message: String) -> ChannelError {
        ChannelError::Unreachable {
            addr: self.authority.to_string(),
            message,
        }
    }

    fn authorization(&self) -> Result<Option<HeaderValue>, ChannelError> {
        self.signer
            .as_ref()
            .map(|s| s.header())
            .transpose()
            .map_err(|e| self.unreachable(format!("cannot sign the provider token: {e}")))
    }

    fn build(
        &self,
        method: Method,
        path: &str,
        channel_id: Option<&str>,
        body: &Bytes,
    ) -> Result<Request<()>, ChannelError> {
        let bad = |what: &str| ChannelError::Refused {
            status: 400,
            reason: what.to_owned(),
            request_id: None,
        };
        let uri = http::Uri::builder()
            .scheme("https")
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()
            .map_err(|_| bad("BadPath"))?;
        let mut request = Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        if let Some(auth) = self.authorization()? {
            headers.insert(AUTHORIZATION, auth);
        }
        if let Some(id) = channel_id {
            headers.insert(
                APNS_CHANNEL_ID,
                HeaderValue::from_str(id).map_err(|_| bad("BadChannelId"))?,
            );
        }
        let request_id = uuid::Uuid::new_v4().hyphenated().to_string();
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            headers.insert(APNS_REQUEST_ID, v);
        }
        if !body.is_empty() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        Ok(request)
    }

    /// The open connection's sender, opening one when there is none.
    async fn sender(&self) -> Result<h2::client::SendRequest<Bytes>, ChannelError> {
        let mut guard = self.conn.lock().await;
        if let Some(sender) = guard.as_ref() {
            return Ok(sender.clone());
        }
        let connection = conn::connect(&self.host, self.port, self.tls.clone())
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        // The driver task keeps running on its own; when the connection dies,
        // the next request fails and opens a new one.
        let conn::Connection { sender, .. } = connection;
        *guard = Some(sender.clone());
        Ok(sender)
    }
}

fn channels_path(bundle: &str) -> String {
    format!("/1/apps/{bundle}/channels")
}

fn reason_of(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.reason)
}

fn refused(answer: Answer) -> ChannelError {
    ChannelError::Refused {
        status: answer.status,
        reason: reason_of(&answer.body).unwrap_or_else(|| format!("HTTP{}", answer.status)),
        request_id: answer.request_id,
    }
}

async fn send(
    sender: h2::client::SendRequest<Bytes>,
    request: Request<()>,
    body: Bytes,
) -> Result<Answer, String> {
    let mut sender = sender.ready().await.map_err(|e| e.to_string())?;
    let end = body.is_empty();
    let (response, mut stream) = sender
        .send_request(request, end)
        .map_err(|e| e.to_string())?;
    if !end {
        stream.send_data(body, true).map_err(|e| e.to_string())?;
    }
    let response = response.await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let header = |name: &HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let request_id = header(&APNS_REQUEST_ID);
    let channel_id = header(&APNS_CHANNEL_ID);
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if bytes.len() < 4 << 20 {
            bytes.extend_from_slice(&chunk);
        }
    }
    Ok(Answer {
        status,
        request_id,
        channel_id,
        body: bytes.into(),
    })
}
