//! One push request: headers built by a pure function, the body encrypted per
//! subscription, sent over our own HTTP/2 connection to the push service
//! (one per origin), or through a reqwest client that pools HTTP/1.1
//! connections when the service's ALPN offers no `h2`. Both connect only to
//! addresses the origin policy's
//! [`FilteringResolver`](super::origin::FilteringResolver) keeps, follow no
//! redirects and use no proxy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use rustls::pki_types::CertificateDer;

use super::ece::{self, UaKeys};
use super::origin::{Endpoint, OriginPolicy, RefusedAddress};
use super::vapid::Vapid;
use crate::http2::Declined;
use crate::upstream::Attempt;

/// RFC 8030 §5.3 urgency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// `very-low`: on power and Wi-Fi only.
    VeryLow,
    /// `low`: on power or Wi-Fi.
    Low,
    /// `normal`: the default.
    Normal,
    /// `high`: wake the device.
    High,
}

impl Urgency {
    /// Parses the header word.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "very-low" => Some(Urgency::VeryLow),
            "low" => Some(Urgency::Low),
            "normal" => Some(Urgency::Normal),
            "high" => Some(Urgency::High),
            _ => None,
        }
    }

    /// The header word.
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::VeryLow => "very-low",
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
        }
    }
}

/// Checks a `Topic` (RFC 8030 §5.4): 1..=32 characters of the base64url alphabet.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 32
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What every subscription of a job receives: the plaintext and the headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebPushMessage {
    /// The plaintext (JSON text of an object payload, or the string as given).
    pub payload: Arc<[u8]>,
    /// `TTL` in seconds.
    pub ttl: u32,
    /// `Urgency`, when given.
    pub urgency: Option<Urgency>,
    /// `Topic`, when given (checked with [`valid_topic`]).
    pub topic: Option<Arc<str>>,
}

/// One subscription, checked at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Where to POST, and its origin.
    pub endpoint: Endpoint,
    /// The browser's keys.
    pub keys: UaKeys,
}

/// The headers of one push request (pure: tested without a network). `ttl`
/// is what is left of the message's `TTL` when it is sent ([`ttl_left`]).
pub fn headers(msg: &WebPushMessage, ttl: u32, authorization: HeaderValue) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(6);
    h.insert("ttl", HeaderValue::from(ttl));
    if let Some(u) = msg.urgency {
        h.insert("urgency", HeaderValue::from_static(u.as_str()));
    }
    if let Some(t) = &msg.topic
        && let Ok(v) = HeaderValue::from_str(t)
    {
        h.insert("topic", v);
    }
    h.insert(
        http::header::CONTENT_ENCODING,
        HeaderValue::from_static("aes128gcm"),
    );
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(http::header::AUTHORIZATION, authorization);
    h
}

/// A push service's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After` in seconds, when given.
    pub retry_after: Option<Duration>,
    /// The body (error details; empty on success).
    pub body: bytes::Bytes,
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Encryption failed (the payload was checked at the API, so: never expected).
    #[error("encrypting for {origin}: {source}")]
    Encrypt {
        /// The push service.
        origin: String,
        /// Why.
        source: ece::EceError,
    },
    /// The VAPID JWT could not be signed.
    #[error("signing the VAPID JWT for {origin}")]
    Sign {
        /// The push service.
        origin: String,
    },
    /// The push service's name resolves only to addresses the origin policy
    /// refuses (loopback, private, link-local): nothing was sent.
    #[error("sending to {origin}: {reason}")]
    Refused {
        /// The push service.
        origin: String,
        /// Which name, and how to allow it.
        reason: String,
    },
    /// Connect or TLS failed, or the connection refused the stream: nothing
    /// reached the push service.
    #[error("sending to {origin}: {detail}")]
    NotSent {
        /// The push service.
        origin: String,
        /// What failed.
        detail: String,
    },
    /// Reset or timeout: the push service may have taken the message.
    #[error("sending to {origin}: {detail}")]
    Lost {
        /// The push service.
        origin: String,
        /// What failed.
        detail: String,
    },
}

/// The shared client for one `[webpush]` app: our own HTTP/2 connections
/// per push service ([`crate::http2::Transport`]), and a reqwest client for
/// the services that speak HTTP/1.1 only.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    vapid: Arc<Vapid>,
    gates: Arc<std::sync::Mutex<std::collections::HashMap<String, Gate>>>,
    services: Arc<Services>,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Per origin: `true` once a request got an answer over a pooled connection.
/// The pool only learns a connection speaks HTTP/2 after its TLS handshake,
/// so requests that start together on a cold origin would each open their
/// own connection; until the first answer, they go one at a time.
type Gate = Arc<tokio::sync::Mutex<bool>>;

/// A push service unused this long is dropped, with its connection, when
/// the next new one is added: subscriptions spread over many hosts (one
/// per WNS region, say) should not keep a connection to each for ever.
const IDLE: Duration = Duration::from_secs(300);

/// The HTTP/2 transports, one per push service origin, made on first use.
struct Services {
    tls: Arc<rustls::ClientConfig>,
    filter: crate::http2::AddressFilter,
    metrics: crate::http2::TransportMetrics,
    by_origin: std::sync::Mutex<std::collections::HashMap<String, Service>>,
}

struct Service {
    transport: Arc<crate::http2::Transport>,
    used: Instant,
}

impl Services {
    /// The transport for `origin`; `None` when it cannot have one (not a
    /// URI `http` parses). Unused transports are dropped when one is added.
    fn get(&self, origin: &str) -> Option<Arc<crate::http2::Transport>> {
        let now = Instant::now();
        let mut by_origin = self.by_origin.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(service) = by_origin.get_mut(origin) {
            service.used = now;
            return Some(service.transport.clone());
        }
        by_origin.retain(|_, s| now.duration_since(s.used) < IDLE);
        let uri: http::Uri = origin.parse().ok()?;
        let transport = crate::http2::Transport::new(
            "webpush",
            &uri,
            self.tls.clone(),
            1,
            self.metrics.clone(),
        )?
        .with_address_filter(self.filter.clone());
        let transport = Arc::new(transport);
        by_origin.insert(
            origin.to_owned(),
            Service {
                transport: transport.clone(),
                used: now,
            },
        );
        Some(transport)
    }

    /// HTTP/2 connections open now, over every push service.
    fn connected(&self) -> usize {
        let by_origin = self.by_origin.lock().unwrap_or_else(|e| e.into_inner());
        by_origin.values().map(|s| s.transport.connected()).sum()
    }
}

impl Client {
    /// Builds the HTTP clients: our rustls config (Mozilla roots plus
    /// `extra_roots`), ALPN h2 and http/1.1, the address filter of `policy`
    /// (its resolver, for reqwest), no redirects, no proxies, `timeout` per
    /// request.
    pub fn new(
        vapid: Arc<Vapid>,
        policy: &OriginPolicy,
        extra_roots: &[CertificateDer<'static>],
        timeout: Duration,
        concurrency: usize,
        metrics: crate::http2::TransportMetrics,
    ) -> Result<Self, ClientError> {
        let tls = crate::tls::client_config(extra_roots, None, &[b"h2", b"http/1.1"])?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(rustls::ClientConfig::clone(&tls))
            .dns_resolver(Arc::new(policy.resolver()))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(true)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            // HTTP/1.1 services need one connection per request in flight.
            .pool_max_idle_per_host(concurrency)
            .build()
            .map_err(ClientError::Build)?;
        let resolver = policy.resolver();
        let filter: crate::http2::AddressFilter =
            Arc::new(move |host, addrs| resolver.filter(host, addrs).map_err(|e| e.to_string()));
        Ok(Self {
            http,
            vapid,
            gates: Default::default(),
            services: Arc::new(Services {
                tls,
                filter,
                metrics,
                by_origin: Default::default(),
            }),
            timeout,
        })
    }

    fn gate(&self, origin: &str) -> Gate {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        gates.entry(origin.to_owned()).or_default().clone()
    }

    /// The VAPID signer.
    pub fn vapid(&self) -> &Vapid {
        &self.vapid
    }

    /// HTTP/2 connections open now, over every push service.
    pub fn connected(&self) -> usize {
        self.services.connected()
    }

    /// Encrypts `msg` for `sub` and POSTs it.
    pub async fn send(
        &self,
        sub: &Subscription,
        msg: &WebPushMessage,
        ttl: u32,
    ) -> Result<Answer, SendError> {
        let origin = &sub.endpoint.origin;
        let body = ece::encrypt(&msg.payload, &sub.keys).map_err(|source| SendError::Encrypt {
            origin: origin.clone(),
            source,
        })?;
        let auth = self
            .vapid
            .authorization(origin)
            .map_err(|_| SendError::Sign {
                origin: origin.clone(),
            })?;
        let body = Bytes::from(body);
        let uri = http::Uri::try_from(sub.endpoint.url.as_str()).ok();
        if let Some((transport, uri)) = self.services.get(origin).zip(uri)
            && !transport.h1_only()
        {
            let mut request = http::Request::new(());
            *request.method_mut() = http::Method::POST;
            *request.uri_mut() = uri;
            *request.headers_mut() = headers(msg, ttl, auth.clone());
            match transport.send(request, body.clone(), self.timeout).await {
                Ok(Attempt::Answer {
                    status,
                    retry_after,
                    body,
                }) => {
                    return Ok(Answer {
                        status,
                        retry_after,
                        body,
                    });
                }
                Ok(Attempt::NotSent) => {
                    return Err(SendError::NotSent {
                        origin: origin.clone(),
                        detail: "no HTTP/2 connection".into(),
                    });
                }
                Ok(Attempt::Lost(reason)) => {
                    return Err(SendError::Lost {
                        origin: origin.clone(),
                        detail: reason.into(),
                    });
                }
                Err(Declined::AddressRefused(reason)) => {
                    return Err(SendError::Refused {
                        origin: origin.clone(),
                        reason,
                    });
                }
                // The service speaks HTTP/1.1 only: reqwest's pool, from now on.
                Err(Declined::Http1Only) => {}
            }
        }
        self.send_http1(&sub.endpoint.url, origin, headers(msg, ttl, auth), body)
            .await
    }

    /// Sends through reqwest's pool, one request at a time until the
    /// origin's first answer.
    async fn send_http1(
        &self,
        url: &str,
        origin: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Answer, SendError> {
        let failed = |e: reqwest::Error| {
            let origin = origin.to_owned();
            if let Some(reason) = refusal(&e) {
                SendError::Refused { origin, reason }
            } else if e.is_connect() {
                SendError::NotSent {
                    origin,
                    detail: ErrorChain(&e).to_string(),
                }
            } else {
                SendError::Lost {
                    origin,
                    detail: ErrorChain(&e).to_string(),
                }
            }
        };
        let gate = self.gate(origin);
        let mut cold = Some(gate.lock().await);
        if cold.as_deref() == Some(&true) {
            // Warm: release at once, requests run side by side.
            cold = None;
        }
        let sent = self.http.post(url).headers(headers).body(body).send().await;
        match (&sent, cold) {
            (Ok(_), Some(mut first)) => *first = true,
            // The connection is gone: the next requests warm the origin again.
            (Err(_), None) => *gate.lock().await = false,
            _ => {}
        }
        let response = sent.map_err(failed)?;
        let status = response.status().as_u16();
        let retry_after = crate::retry::retry_after(response.headers());
        let body = response.bytes().await.map_err(failed)?;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
}

/// Our resolver's refusal, when the error chain holds one.
fn refusal(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(refused) = err.downcast_ref::<RefusedAddress>() {
            return Some(refused.to_string());
        }
        cur = err.source();
    }
    None
}

/// An error with its sources, `: `-joined (reqwest's own text leaves them out).
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cur = self.0.source();
        while let Some(err) = cur {
            write!(f, ": {err}")?;
            cur = err.source();
        }
        Ok(())
    }
}

/// Why the client could not be built (refused at start).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TLS configuration.
    #[error("building the TLS client configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// reqwest refused the settings.
    #[error("building the HTTP client: {0}")]
    Build(reqwest::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_carry_ttl_urgency_topic_encoding_and_vapid() {
        let msg = WebPushMessage {
            payload: Arc::from(&b"{}"[..]),
            ttl: 3600,
            urgency: Some(Urgency::High),
            topic: Some(Arc::from("news")),
        };
        let h = headers(
            &msg,
            msg.ttl,
            HeaderValue::from_static("vapid t=a.b.c, k=BK"),
        );
        assert_eq!(h["ttl"], "3600");
        assert_eq!(h["urgency"], "high");
        assert_eq!(h["topic"], "news");
        assert_eq!(h["content-encoding"], "aes128gcm");
        assert_eq!(h["authorization"], "vapid t=a.b.c, k=BK");
        let bare = headers(
            &WebPushMessage {
                urgency: None,
                topic: None,
                ..msg
            },
            60,
            HeaderValue::from_static("x"),
        );
        assert!(bare.get("urgency").is_none() && bare.get("topic").is_none());
        assert_eq!(bare["ttl"], "60", "the TTL left, not the message's own");
    }

    #[test]
    fn urgency_words_and_topics() {
        for u in [
            Urgency::VeryLow,
            Urgency::Low,
            Urgency::Normal,
            Urgency::High,
        ] {
            assert_eq!(Urgency::parse(u.as_str()), Some(u));
        }
        assert_eq!(Urgency::parse("urgent"), None);
        assert!(valid_topic("news-1_a"));
        assert!(!valid_topic(""));
        assert!(!valid_topic("has space"));
        assert!(!valid_topic(&"a".repeat(33)));
    }
}
