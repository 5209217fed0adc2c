//! Requests to one upstream origin over our own HTTP/2 connections (the
//! [`crate::http2`] connector APNs uses) instead of reqwest: no per-request
//! client machinery, no pool checkout, no URL re-parse, no channel hop to a
//! hidden connection task, and connections the status page can count. FCM v1
//! sends through one per app, Web Push through one per push service.
//!
//! `connections` connections are opened on first use and reopened when they
//! end; requests go round robin. A server that answers ALPN with `http/1.1`
//! is [`Declined::Http1Only`]: the caller switches to its HTTP/1.1 client
//! for good.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Request};
use prometheus::{IntCounter, IntGauge};

use super::{ConnectError, Connection};
use crate::retry;
use crate::upstream::Attempt;

/// Why a transport sent nothing, when the caller has to act on it.
#[derive(Debug)]
pub enum Declined {
    /// The server speaks HTTP/1.1 only: use an HTTP/1.1 client, from now on.
    Http1Only,
    /// The name resolves only to addresses the caller's [`AddressFilter`]
    /// refuses; the reason says which.
    AddressRefused(String),
}

/// Keeps the addresses a name resolved to that may be connected to; an
/// error (every address refused) says why.
pub type AddressFilter =
    Arc<dyn Fn(&str, Vec<SocketAddr>) -> Result<Vec<SocketAddr>, String> + Send + Sync>;

/// One connection slot.
#[derive(Default)]
struct Slot {
    sender: Mutex<Option<h2::client::SendRequest<Bytes>>>,
    /// Held while connecting, so a burst of requests opens one connection.
    connecting: tokio::sync::Mutex<()>,
}

/// The connections to one origin.
pub struct Transport {
    platform: &'static str,
    host: String,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
    addresses: Option<AddressFilter>,
    slots: Vec<Slot>,
    next: AtomicUsize,
    connected: Arc<AtomicUsize>,
    h1_only: AtomicBool,
    metrics: TransportMetrics,
}

/// The counters a transport updates (shared by every transport of a platform).
#[derive(Clone)]
pub struct TransportMetrics {
    /// `pushgate_upstream_connections{platform}`.
    pub gauge: IntGauge,
    /// `pushgate_upstream_connects_total{platform,result="ok"}`.
    pub connects_ok: IntCounter,
    /// `...{result="error"}`.
    pub connects_failed: IntCounter,
}

impl Transport {
    /// A transport for the origin of `uri` (`https://host[:port]`); `None`
    /// for a plain `http://` URI (no h2c here) or one without a host.
    pub fn new(
        platform: &'static str,
        uri: &http::Uri,
        tls: Arc<rustls::ClientConfig>,
        connections: usize,
        metrics: TransportMetrics,
    ) -> Option<Self> {
        if uri.scheme_str() != Some("https") {
            return None;
        }
        let host = uri
            .host()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Some(Self {
            platform,
            host,
            port: uri.port_u16().unwrap_or(443),
            tls,
            addresses: None,
            slots: (0..connections.max(1)).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
            connected: Arc::new(AtomicUsize::new(0)),
            h1_only: AtomicBool::new(false),
            metrics,
        })
    }

    /// Connects only to the addresses `filter` keeps.
    pub fn with_address_filter(mut self, filter: AddressFilter) -> Self {
        self.addresses = Some(filter);
        self
    }

    /// True once the server turned out to speak HTTP/1.1 only.
    pub fn h1_only(&self) -> bool {
        self.h1_only.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    /// Sends `request` (its URI absolute, on this origin) with `body`, and
    /// reads the answer within `timeout`.
    pub async fn send(
        &self,
        mut request: Request<()>,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Attempt, Declined> {
        let slot = &self.slots[self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let sender = match self.sender(slot).await {
            Ok(Some(sender)) => sender,
            Ok(None) => return Ok(Attempt::NotSent),
            Err(declined) => return Err(declined),
        };
        let mut sender = match sender.ready().await {
            Ok(sender) => sender,
            Err(_) => {
                // The connection is gone: the next request opens a new one.
                forget(slot);
                return Ok(Attempt::NotSent);
            }
        };
        request
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        let (response, mut stream) = match sender.send_request(request, false) {
            Ok(pair) => pair,
            Err(_) => {
                forget(slot);
                return Ok(Attempt::NotSent);
            }
        };
        if stream.send_data(body, true).is_err() {
            return Ok(Attempt::Lost("StreamReset"));
        }
        Ok(tokio::time::timeout(timeout, read(response))
            .await
            .unwrap_or(Attempt::Lost("Timeout")))
    }

    /// The slot's connection, opened if need be; `None` when it cannot be.
    async fn sender(
        &self,
        slot: &Slot,
    ) -> Result<Option<h2::client::SendRequest<Bytes>>, Declined> {
        if let Some(sender) = lock(&slot.sender).clone() {
            return Ok(Some(sender));
        }
        let _connecting = slot.connecting.lock().await;
        // Another request may have connected while this one waited.
        if let Some(sender) = lock(&slot.sender).clone() {
            return Ok(Some(sender));
        }
        match self.open().await {
            Ok(connection) => {
                self.metrics.connects_ok.inc();
                self.connected.fetch_add(1, Ordering::Relaxed);
                self.metrics.gauge.inc();
                let Connection { sender, driver, .. } = connection;
                let (connected, gauge) = (self.connected.clone(), self.metrics.gauge.clone());
                tokio::spawn(async move {
                    let _ = driver.await;
                    connected.fetch_sub(1, Ordering::Relaxed);
                    gauge.dec();
                });
                tracing::info!(platform = self.platform, host = %self.host, port = self.port, "HTTP/2 connection open");
                *lock(&slot.sender) = Some(sender.clone());
                Ok(Some(sender))
            }
            Err(ConnectError::NoH2 { addr }) => {
                if !self.h1_only.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        platform = self.platform,
                        addr,
                        "the upstream speaks HTTP/1.1 only: using the pooled HTTP/1.1 client"
                    );
                }
                Err(Declined::Http1Only)
            }
            Err(ConnectError::Refused { reason, .. }) => {
                self.metrics.connects_failed.inc();
                Err(Declined::AddressRefused(reason))
            }
            Err(e) => {
                self.metrics.connects_failed.inc();
                tracing::debug!(platform = self.platform, error = %e, "connect failed");
                Ok(None)
            }
        }
    }

    async fn open(&self) -> Result<Connection, ConnectError> {
        let Some(filter) = &self.addresses else {
            return super::connect(&self.host, self.port, self.tls.clone()).await;
        };
        let addr = format!("{}:{}", self.host, self.port);
        // The name lookup gets the connect timeout too, as it does inside
        // `connect`: a slot waits on it with its connect lock held.
        let lookup = tokio::net::lookup_host((self.host.as_str(), self.port));
        let found: Vec<SocketAddr> = tokio::time::timeout(super::CONNECT_TIMEOUT, lookup)
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
            .map_err(|source| ConnectError::Tcp {
                addr: addr.clone(),
                source,
            })?
            .collect();
        let kept = filter(&self.host, found).map_err(|reason| ConnectError::Refused {
            addr: addr.clone(),
            reason,
        })?;
        super::connect_to(&self.host, self.port, &kept, self.tls.clone()).await
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
