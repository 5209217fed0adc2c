//! Mock Google FCM: the OAuth2 token endpoint, the HTTP v1 send API and the
//! legacy (GCM-compatible) batch API, on one server.
//!
//! The server speaks TLS with ALPN offering `h2` and `http/1.1` (or plain HTTP/1.1
//! and h2c prior knowledge when `tls` is false), so a client that only does one
//! of them is still served the way Google would serve it.
//!
//! | Endpoint | What it checks |
//! |---|---|
//! | `POST /token` | form `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`; RS256 signature against the service account's public key, `iss` = client email, `aud` = this server's `/token` URL, `scope` has `…/auth/firebase.messaging`, `exp - iat` ≤ 3600, not expired |
//! | `POST /v1/projects/{project}/messages:send` | `Authorization: Bearer <granted, unexpired token>`, project = the configured one, `message.token` present, every `message.data` value a string, data ≤ 4096 bytes, no unknown fields |
//! | `POST /fcm/send` | `Authorization: key=<server key>`, `Content-Type: application/json`, `to` or 1..=1000 `registration_ids` |
//!
//! # Outcomes by token
//!
//! Tokens are opaque strings; their prefix selects the outcome. Tokens listed in
//! `Faults::flaky` behave like `flaky…`. "First attempt" counts per token across
//! both APIs (the ledger's attempt number).
//!
//! | Token prefix | v1 (`messages:send`) | legacy (`/fcm/send` result) |
//! |---|---|---|
//! | `unregistered` | 404 `NOT_FOUND`, errorCode `UNREGISTERED` | `{"error":"NotRegistered"}` |
//! | `invalid` | 400 `INVALID_ARGUMENT`, errorCode `INVALID_ARGUMENT` ("The registration token is not a valid FCM registration token") | `{"error":"InvalidRegistration"}` |
//! | `mismatch` | 403 `PERMISSION_DENIED`, errorCode `SENDER_ID_MISMATCH` | `{"error":"MismatchSenderId"}` |
//! | `flaky` | first attempt 503 `UNAVAILABLE`, errorCode `UNAVAILABLE`; then success | first attempt `{"error":"Unavailable"}`; then success |
//! | `quota` | first attempt 429 `RESOURCE_EXHAUSTED`, errorCode `QUOTA_EXCEEDED`, `Retry-After: 1`; then success | first attempt `{"error":"Unavailable"}`; then success |
//! | `internal` | always 500 `INTERNAL`, errorCode `INTERNAL` | always `{"error":"InternalServerError"}` |
//! | `canonical` | success | success with `"registration_id": "new-<token>"` |
//! | anything else | success | success |
//!
//! An empty v1 token is answered like `invalid`; a v1 message without `token`
//! gets 400 `INVALID_ARGUMENT` ("Recipient of the message is not set."): topics
//! and conditions are not modelled. Data over 4096 bytes gets 400
//! `INVALID_ARGUMENT` (v1) or `MessageTooBig` for every id (legacy).
//!
//! # Faults
//!
//! Per send request (v1 or legacy, never `/token`), after authentication and
//! before the token rules, the [`crate::mock::faults::FaultClock`]
//! may inject: a throttle (v1: 429 `RESOURCE_EXHAUSTED` / `QUOTA_EXCEEDED`; legacy:
//! a whole-request 503; both with `Retry-After`), or a server error (v1: 503
//! `UNAVAILABLE`; legacy: a whole-request 500 or 503). `latency_ms` delays every
//! answer. Per connection: `drop_after = n` serves n requests and closes the
//! socket without an answer when request n+1 arrives (ledger `drops`);
//! `goaway_after = n` starts a graceful shutdown once the n-th request arrives
//! (HTTP/2 GOAWAY; HTTP/1.1 answers it with `connection: close`), counted in
//! ledger `goaways`.
//!
//! # Ledger
//!
//! `requests` counts send requests (one per v1 message, one per legacy batch),
//! `connections` accepted connections (after the TLS handshake), `grants` access
//! tokens granted; every token considered gets `record_attempt` and every
//! success `record_delivery`; every valid access token seen on v1 goes through
//! `record_credential`, so tests can see whether the client reuses it.

mod account;
mod handlers;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::routing::post;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower::ServiceExt as _;

pub use account::ServiceAccountFixture;

use crate::mock::faults::FaultClock;
use crate::mock::{Faults, Ledger, MockHandle};

/// How long a client may take to finish the TLS handshake before the mock gives up
/// on it; keeps half-open connections from piling up during long benchmarks.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the mock FCM server needs to start.
#[derive(Clone)]
pub struct MockFcmOptions {
    /// Address to bind (`127.0.0.1:0` in tests picks a free port).
    pub listen: SocketAddr,
    /// The only project `messages:send` accepts (others get 403).
    pub project_id: String,
    /// Service account email the OAuth assertion must carry as `iss`.
    pub client_email: String,
    /// RSA public key (SPKI PEM) that verifies the OAuth assertion (RS256).
    pub public_key_pem: String,
    /// Legacy server key expected as `Authorization: key=<server_key>`.
    pub server_key: String,
    /// Faults to inject.
    pub faults: Faults,
    /// Server certificate and key for TLS.
    pub server: crate::mock::tls::Identity,
    /// PEM of the CA that signed `server`, handed back in the [`MockHandle`].
    pub ca_pem: String,
    /// `false` serves plain HTTP (for `http://` test endpoints).
    pub tls: bool,
    /// `expires_in` of granted access tokens, in seconds (Google's is 3600).
    pub token_lifetime_s: u64,
}

impl MockFcmOptions {
    /// Options for a healthy mock on `127.0.0.1:0` that accepts `account`'s
    /// assertions and `server_key`, served over TLS with `pki`'s server certificate.
    pub fn new(
        account: &ServiceAccountFixture,
        server_key: &str,
        pki: &crate::mock::tls::TestPki,
    ) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            project_id: account.project_id.clone(),
            client_email: account.client_email.clone(),
            public_key_pem: account.public_key_pem.clone(),
            server_key: server_key.to_owned(),
            faults: Faults::default(),
            server: pki.server.clone(),
            ca_pem: pki.ca_pem.clone(),
            tls: true,
            token_lifetime_s: 3600,
        }
    }
}

impl std::fmt::Debug for MockFcmOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The server key is a credential: never print it.
        f.debug_struct("MockFcmOptions")
            .field("listen", &self.listen)
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("server_key", &"<redacted>")
            .field("faults", &self.faults)
            .field("server", &self.server)
            .field("tls", &self.tls)
            .field("token_lifetime_s", &self.token_lifetime_s)
            .finish_non_exhaustive()
    }
}

/// State shared by every connection and handler of one server.
pub(crate) struct Shared {
    project_id: String,
    client_email: String,
    assertion_key: jsonwebtoken::DecodingKey,
    server_key: String,
    faults: Faults,
    clock: FaultClock,
    ledger: Arc<Ledger>,
    token_lifetime_s: u64,
    /// Audiences the assertion may name: this server's own `/token` URL(s).
    token_urls: Vec<String>,
    /// Granted access tokens and when they stop being valid.
    access_tokens: RwLock<HashMap<String, Instant>>,
    /// Source of unique message ids.
    sequence: AtomicU64,
    /// Random per-server suffix so ids from two mock runs never collide.
    salt: u64,
}

impl Shared {
    /// A fresh id in the shape Google uses (`0:<digits>%<hex>`).
    fn message_id(&self) -> String {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        format!("0:{n}%{:016x}", self.salt)
    }
}

/// Per-connection fault state: how many requests the connection carried and the
/// signals that ask the connection task to drop or drain it.
#[derive(Default)]
struct ConnCtl {
    requests: AtomicU64,
    drop_now: Notify,
    goaway_now: Notify,
}

/// Starts the mock FCM server and returns once it is listening.
pub async fn start(opts: MockFcmOptions) -> anyhow::Result<MockHandle> {
    let assertion_key = jsonwebtoken::DecodingKey::from_rsa_pem(opts.public_key_pem.as_bytes())
        .context("mock FCM: public_key_pem is not an RSA public key in PEM")?;
    let tls = if opts.tls {
        let config = crate::mock::tls::server_config(&opts.server, &[b"h2", b"http/1.1"], None)
            .context("mock FCM: building the TLS server configuration")?;
        Some(tokio_rustls::TlsAcceptor::from(config))
    } else {
        None
    };
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("mock FCM: binding {}", opts.listen))?;
    let addr = listener
        .local_addr()
        .context("mock FCM: reading the bound address")?;

    let ledger = Arc::new(Ledger::default());
    let shared = Arc::new(Shared {
        project_id: opts.project_id,
        client_email: opts.client_email,
        assertion_key,
        server_key: opts.server_key,
        faults: opts.faults,
        clock: FaultClock::default(),
        ledger: ledger.clone(),
        token_lifetime_s: opts.token_lifetime_s,
        token_urls: token_urls(addr, opts.tls),
        access_tokens: RwLock::new(HashMap::new()),
        sequence: AtomicU64::new(now_micros()),
        salt: fastrand::u64(..),
    });
    let router = Router::new()
        .route("/token", post(handlers::token))
        .route(
            "/v1/projects/{project}/messages:send",
            post(handlers::send_v1),
        )
        .route("/fcm/send", post(handlers::send_legacy))
        .with_state(shared.clone());

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);

    let task = tokio::spawn(accept_loop(listener, tls, builder, router, shared));
    Ok(MockHandle::new(addr, ledger, opts.ca_pem, task))
}

/// The URLs an assertion's `aud` may name. The bound address is the canonical
/// one; `localhost` is the same server, and an unspecified bind address is
/// reached through loopback.
fn token_urls(addr: SocketAddr, tls: bool) -> Vec<String> {
    let scheme = if tls { "https" } else { "http" };
    let port = addr.port();
    let mut urls = vec![format!("{scheme}://{addr}/token")];
    if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        urls.push(format!("{scheme}://localhost:{port}/token"));
    }
    if addr.ip().is_unspecified() {
        urls.push(format!("{scheme}://127.0.0.1:{port}/token"));
    }
    urls
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    shared: Arc<Shared>,
) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                // Out of file descriptors or a connection reset before accept:
                // back off a little instead of spinning, and keep serving.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Small JSON answers: waiting for Nagle only adds latency.
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let builder = builder.clone();
        let router = router.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            handle_tcp(tcp, tls, builder, router, shared).await;
        });
    }
}

async fn handle_tcp(
    tcp: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    shared: Arc<Shared>,
) {
    match tls {
        Some(acceptor) => {
            let stream =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    // A failed handshake is the client's problem (wrong CA, no
                    // ALPN overlap); the client sees the TLS alert.
                    _ => return,
                };
            shared.ledger.connections.fetch_add(1, Ordering::Relaxed);
            serve(stream, builder, router, shared).await;
        }
        None => {
            shared.ledger.connections.fetch_add(1, Ordering::Relaxed);
            serve(tcp, builder, router, shared).await;
        }
    }
}

/// Serves one connection until the client closes it or a fault ends it.
async fn serve<IO>(
    io: IO,
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    shared: Arc<Shared>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ctl = Arc::new(ConnCtl::default());
    let svc = {
        let ctl = ctl.clone();
        let shared = shared.clone();
        tower::service_fn(move |req: http::Request<Incoming>| {
            let ctl = ctl.clone();
            let shared = shared.clone();
            let router = router.clone();
            async move { Ok::<_, Infallible>(per_request(req, ctl, shared, router).await) }
        })
    };
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(svc));
    let mut conn = std::pin::pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            // Client closed, protocol error, or graceful shutdown finished.
            _ = conn.as_mut() => return,
            () = ctl.drop_now.notified() => {
                // Returning drops the connection: the socket closes with no TLS
                // close_notify, no GOAWAY and no answer for what is in flight.
                shared.ledger.drops.fetch_add(1, Ordering::Relaxed);
                return;
            }
            () = ctl.goaway_now.notified(), if !draining => {
                // HTTP/2: GOAWAY, in-flight streams finish, new ones are refused.
                conn.as_mut().graceful_shutdown();
                draining = true;
                shared.ledger.goaways.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Connection-level faults around the router: `drop_after`, `goaway_after`,
/// `latency_ms`.
async fn per_request(
    req: http::Request<Incoming>,
    ctl: Arc<ConnCtl>,
    shared: Arc<Shared>,
    router: Router,
) -> http::Response<axum::body::Body> {
    let n = ctl.requests.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(limit) = shared.faults.drop_after
        && n > limit
    {
        // This request never gets an answer: the connection task drops the socket.
        ctl.drop_now.notify_one();
        return std::future::pending().await;
    }
    let goaway = shared.faults.goaway_after == Some(n);
    let h2 = req.version() == http::Version::HTTP_2;
    if goaway && h2 {
        ctl.goaway_now.notify_one();
    }
    if shared.faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(shared.faults.latency_ms)).await;
    }
    let mut response = match router.oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if goaway && !h2 {
        // HTTP/1.1 has no GOAWAY; `connection: close` makes hyper close the
        // connection after this answer, which is what a draining server does.
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        shared.ledger.goaways.fetch_add(1, Ordering::Relaxed);
    }
    response
}
