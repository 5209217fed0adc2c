//! FCM v1 over our own HTTP/2 connections (the [`crate::http2`] connector
//! APNs uses) instead of reqwest: no per-request client machinery, no pool
//! checkout, no channel hop to a hidden connection task, and connections
//! the status page can count.
//!
//! `fcm.connections` connections (default 1) are opened on first use and
//! reopened when they end; requests go round robin. A server that answers
//! ALPN with `http/1.1` (or a plain `http://` endpoint) is left to the
//! reqwest client: [`Attempt::NoH2`] tells the worker to switch for good.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, Request};
use prometheus::{IntCounter, IntGauge};

use crate::http2::{self, ConnectError};
use crate::retry;

/// What one request produced.
pub(crate) enum Attempt {
    /// FCM answered.
    Answer {
        status: u16,
        retry_after: Option<Duration>,
        body: Bytes,
    },
    /// Nothing was sent (connect failed, or the connection refused the stream).
    NotSent,
    /// The request may or may not have reached FCM.
    Lost(&'static str),
    /// The server speaks HTTP/1.1 only: use the pooled HTTP/1.1 client.
    NoH2,
}

/// One connection slot.
#[derive(Default)]
struct Slot {
    sender: Mutex<Option<h2::client::SendRequest<Bytes>>>,
    /// Held while connecting, so a burst of requests opens one connection.
    connecting: tokio::sync::Mutex<()>,
}

/// The connections of one FCM v1 app.
pub(crate) struct Transport {
    host: String,
    port: u16,
    uri: http::Uri,
    tls: Arc<rustls::ClientConfig>,
    slots: Vec<Slot>,
    next: AtomicUsize,
    connected: Arc<AtomicUsize>,
    h1_only: AtomicBool,
    gauge: IntGauge,
    connects_ok: IntCounter,
    connects_failed: IntCounter,
}

/// The counters a transport updates.
pub(crate) struct TransportMetrics {
    /// `pushgate_upstream_connections{platform="fcm"}`.
    pub gauge: IntGauge,
    /// `pushgate_upstream_connects_total{platform="fcm",result="ok"}`.
    pub connects_ok: IntCounter,
    /// `...{result="error"}`.
    pub connects_failed: IntCounter,
}

impl Transport {
    /// A transport for `https://host:port` + `path`; `None` for a plain
    /// `http://` endpoint (no h2c here) or a URL without a host.
    pub fn new(
        send_url: &str,
        tls: Arc<rustls::ClientConfig>,
        connections: usize,
        metrics: TransportMetrics,
    ) -> Option<Self> {
        let uri: http::Uri = send_url.parse().ok()?;
        if uri.scheme_str() != Some("https") {
            return None;
        }
        let host = uri
            .host()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        Some(Self {
            host,
            port,
            uri,
            tls,
            slots: (0..connections.max(1)).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
            connected: Arc::new(AtomicUsize::new(0)),
            h1_only: AtomicBool::new(false),
            gauge: metrics.gauge,
            connects_ok: metrics.connects_ok,
            connects_failed: metrics.connects_failed,
        })
    }

    /// True once the server turned out to speak HTTP/1.1 only.
    pub fn h1_only(&self) -> bool {
        self.h1_only.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    /// POSTs one `messages:send` body.
    pub async fn post(&self, auth: &HeaderValue, body: Bytes, timeout: Duration) -> Attempt {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let sender = match self.sender(slot).await {
            Ok(sender) => sender,
            Err(attempt) => return attempt,
        };
        let mut sender = match sender.ready().await {
            Ok(sender) => sender,
            Err(_) => {
                // The connection is gone: the next request opens a new one.
                forget(slot);
                return Attempt::NotSent;
            }
        };
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(AUTHORIZATION, auth.clone());
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        let (response, mut stream) = match sender.send_request(request, false) {
            Ok(pair) => pair,
            Err(_) => {
                forget(slot);
                return Attempt::NotSent;
            }
        };
        if stream.send_data(body, true).is_err() {
            return Attempt::Lost("StreamReset");
        }
        match tokio::time::timeout(timeout, read(response)).await {
            Ok(attempt) => attempt,
            Err(_) => Attempt::Lost("Timeout"),
        }
    }

    async fn sender(&self, slot: &Slot) -> Result<h2::client::SendRequest<Bytes>, Attempt> {
        if let Some(sender) = lock(&slot.sender).clone() {
            return Ok(sender);
        }
        let _connecting = slot.connecting.lock().await;
        // Another request may have connected while this one waited.
        if let Some(sender) = lock(&slot.sender).clone() {
            return Ok(sender);
        }
        match http2::connect(&self.host, self.port, self.tls.clone()).await {
            Ok(connection) => {
                self.connects_ok.inc();
                self.connected.fetch_add(1, Ordering::Relaxed);
                self.gauge.inc();
                let http2::Connection { sender, driver, .. } = connection;
                let (connected, gauge) = (self.connected.clone(), self.gauge.clone());
                tokio::spawn(async move {
                    let _ = driver.await;
                    connected.fetch_sub(1, Ordering::Relaxed);
                    gauge.dec();
                });
                tracing::info!(upstream = %self.uri.authority().map_or("", |a| a.as_str()), "FCM HTTP/2 connection open");
                *lock(&slot.sender) = Some(sender.clone());
                Ok(sender)
            }
            Err(ConnectError::NoH2 { addr }) => {
                if !self.h1_only.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        addr,
                        "the FCM endpoint speaks HTTP/1.1 only: using the pooled HTTP/1.1 client"
                    );
                }
                Err(Attempt::NoH2)
            }
            Err(e) => {
                self.connects_failed.inc();
                tracing::debug!(error = %e, "FCM connect failed");
                Err(Attempt::NotSent)
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn forget(slot: &Slot) {
    *lock(&slot.sender) = None;
}

async fn read(response: h2::client::ResponseFuture) -> Attempt {
    let response = match response.await {
        Ok(r) => r,
        Err(e) => {
            return if e.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (e.is_go_away() && e.is_remote())
            {
                Attempt::NotSent
            } else {
                Attempt::Lost("TransportError")
            };
        }
    };
    let status = response.status().as_u16();
    let retry_after = retry::retry_after(response.headers());
    let mut body = response.into_body();
    let mut first: Option<Bytes> = None;
    let mut joined = Vec::new();
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(chunk) => {
                let _ = body.flow_control().release_capacity(chunk.len());
                match &first {
                    None => first = Some(chunk),
                    Some(head) if joined.len() < 64 * 1024 => {
                        if joined.is_empty() {
                            joined.extend_from_slice(head);
                        }
                        joined.extend_from_slice(&chunk);
                    }
                    Some(_) => {}
                }
            }
            // A cut-off answer is not one to trust.
            Err(_) => return Attempt::Lost("TransportError"),
        }
    }
    let body = if joined.is_empty() {
        first.unwrap_or_default()
    } else {
        Bytes::from(joined)
    };
    Attempt::Answer {
        status,
        retry_after,
        body,
    }
}
