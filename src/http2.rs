//! Opens one HTTP/2 connection to an upstream (APNs, FCM v1, a Web Push
//! service): TCP, TLS with ALPN `h2`, h2 handshake. The connection is driven
//! by its own task; callers get the cloneable sender and a handle that
//! resolves when the connection ends. Platform-neutral: `apns/` builds on
//! it, and so does [`Transport`], the request-at-a-time client of FCM v1 and
//! Web Push.

mod transport;

pub use transport::{AddressFilter, Declined, Transport, TransportMetrics};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Errors opening a connection; each names the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP connect failed or timed out.
    #[error("connecting to {addr}: {source}")]
    Tcp {
        /// host:port.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The caller's policy refused every address the name resolved to.
    #[error("connecting to {addr}: {reason}")]
    Refused {
        /// host:port.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The host is not a valid TLS server name.
    #[error("{host} is not a valid TLS server name")]
    ServerName {
        /// The host.
        host: String,
    },
    /// TLS handshake failed (bad CA, certificate refused, ...).
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        /// host:port.
        addr: String,
        /// The I/O error carrying the TLS alert.
        source: std::io::Error,
    },
    /// The server did not agree to HTTP/2.
    #[error("{addr} did not negotiate HTTP/2 (ALPN)")]
    NoH2 {
        /// host:port.
        addr: String,
    },
    /// The connection offered no PING handle (only possible if taken twice).
    #[error("HTTP/2 connection to {addr} has no PING handle")]
    NoPing {
        /// host:port.
        addr: String,
    },
    /// The HTTP/2 handshake failed.
    #[error("HTTP/2 handshake with {addr}: {source}")]
    H2 {
        /// host:port.
        addr: String,
        /// The h2 error.
        source: h2::Error,
    },
}

/// An open connection.
pub struct Connection {
    /// Sends requests; clone freely.
    pub sender: h2::client::SendRequest<Bytes>,
    /// Ends when the connection is closed (GOAWAY handled, error, or peer close).
    pub driver: JoinHandle<()>,
    /// Sends HTTP/2 PINGs: how a stalled connection is told from a quiet one.
    pub ping_pong: h2::PingPong,
}

/// How long a connect may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `host:port` with `tls` (which must offer ALPN `h2`).
pub async fn connect(
    host: &str,
    port: u16,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Connection, ConnectError> {
    over_tcp(host, port, (host, port), tls).await
}

/// Connects to `host:port` at one of `addrs` (already resolved, say through
/// a filter), with `host` as the TLS server name.
pub async fn connect_to(
    host: &str,
    port: u16,
    addrs: &[SocketAddr],
    tls: Arc<rustls::ClientConfig>,
) -> Result<Connection, ConnectError> {
    over_tcp(host, port, addrs, tls).await
}

async fn over_tcp(
    host: &str,
    port: u16,
    target: impl tokio::net::ToSocketAddrs,
    tls: Arc<rustls::ClientConfig>,
) -> Result<Connection, ConnectError> {
    let addr = format!("{host}:{port}");
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| ConnectError::Tcp {
            addr: addr.clone(),
            source: std::io::ErrorKind::TimedOut.into(),
        })?
        .map_err(|source| ConnectError::Tcp {
            addr: addr.clone(),
            source,
        })?;
    // Requests are small and latency matters more than packet count.
    let _ = tcp.set_nodelay(true);
    let server_name =
        ServerName::try_from(host.to_owned()).map_err(|_| ConnectError::ServerName {
            host: host.to_owned(),
        })?;
    let tls_stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_rustls::TlsConnector::from(tls).connect(server_name, tcp),
    )
    .await
    .map_err(|_| ConnectError::Tls {
        addr: addr.clone(),
        source: std::io::ErrorKind::TimedOut.into(),
    })?
    .map_err(|source| ConnectError::Tls {
        addr: addr.clone(),
        source,
    })?;
    if tls_stream.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(ConnectError::NoH2 { addr });
    }
    let (sender, connection) = h2::client::Builder::new()
        // Until the server's SETTINGS arrive h2 would assume no stream limit,
        // and a burst past the real one is refused (and, past ~1000 refusals,
        // the server calls it abuse and drops the connection). RFC 9113 §6.5.2
        // suggests 100 as the floor any server allows.
        .initial_max_send_streams(100)
        .initial_window_size(1 << 20)
        .initial_connection_window_size(8 << 20)
        .handshake::<_, Bytes>(tls_stream)
        .await
        .map_err(|source| ConnectError::H2 {
            addr: addr.clone(),
            source,
        })?;
    let mut connection = connection;
    let ping_pong = connection.ping_pong();
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "HTTP/2 upstream connection ended");
        }
    });
    let mut ping_pong = ping_pong.ok_or_else(|| ConnectError::NoPing { addr: addr.clone() })?;
    // The server's SETTINGS come before its PONG, so once the PONG is back its
    // stream limit is in force and no first burst can exceed it.
    match tokio::time::timeout(CONNECT_TIMEOUT, ping_pong.ping(h2::Ping::opaque())).await {
        Ok(Ok(_)) => {}
        Ok(Err(source)) => {
            driver.abort();
            return Err(ConnectError::H2 { addr, source });
        }
        Err(_) => {
            driver.abort();
            return Err(ConnectError::Tcp {
                addr,
                source: std::io::ErrorKind::TimedOut.into(),
            });
        }
    }
    Ok(Connection {
        sender,
        driver,
        ping_pong,
    })
}
