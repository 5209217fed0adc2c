//! Mock APNs: Apple's HTTP/2 provider API over TLS (ALPN `h2`), checking requests the
//! way Apple does so that a gateway bug shows up as the error Apple would send.
//!
//! # Checks, in order (first failure answers)
//!
//! | Check                                                        | Status | `reason`                 |
//! |--------------------------------------------------------------|--------|--------------------------|
//! | method is not `POST`                                         | 405    | `MethodNotAllowed`       |
//! | path is not `/3/device/<token>`                              | 404    | `BadPath`                |
//! | token auth: no `authorization` header                        | 403    | `MissingProviderToken`   |
//! | token auth: not `bearer`, bad signature, `alg`≠ES256, wrong `kid` or `iss`, no `iat`, `iat` > 60 s ahead | 403 | `InvalidProviderToken` |
//! | token auth: `iat` older than 3600 s                          | 403    | `ExpiredProviderToken`   |
//! | token not hex, odd length, or not 16..=100 bytes             | 400    | `BadDeviceToken`         |
//! | token auth: `apns-topic` missing or empty                    | 400    | `MissingTopic`           |
//! | `apns-push-type` missing or not a known type (stricter than Apple, which tolerates a missing one for iOS) | 400 | `InvalidPushType` |
//! | `apns-priority` not 10, 5 or 1                               | 400    | `BadPriority`            |
//! | `apns-expiration` not an unsigned integer                    | 400    | `BadExpirationDate`      |
//! | `apns-collapse-id` longer than 64 bytes                      | 400    | `BadCollapseId`          |
//! | `apns-id` not a canonical UUID                               | 400    | `BadMessageId`           |
//! | empty body                                                   | 400    | `PayloadEmpty`           |
//! | body over 4096 bytes (5120 for `voip`)                       | 413    | `PayloadTooLarge`        |
//! | body not a JSON object (Apple does not document this one)    | 400    | `BadPayload`             |
//!
//! Client-certificate auth is checked in the TLS handshake instead (no certificate
//! chaining to the configured CA: no connection).
//!
//! # Outcome once the request is valid
//!
//! The attempt is counted first (`Ledger::record_attempt`, keyed by the lowercase
//! token), then the fault plan may answer instead of the token rule:
//!
//! | Fault (`Faults`)                      | Status | `reason`             |
//! |---------------------------------------|--------|----------------------|
//! | `throttle_every` hits                 | 429    | `TooManyRequests`, with `retry-after: <retry_after_s>` |
//! | `error_rate` hits                     | 503    | `ServiceUnavailable` |
//! | token in `flaky`, first attempt       | 503    | `ServiceUnavailable` |
//!
//! Otherwise the lowercase token prefix selects the answer:
//!
//! | Token prefix | Answer                                                              |
//! |--------------|---------------------------------------------------------------------|
//! | `dead`       | 410 `{"reason":"Unregistered","timestamp":<now, ms since epoch>}`   |
//! | `bad0`       | 400 `BadDeviceToken`                                                |
//! | `bad1`       | 400 `DeviceTokenNotForTopic`                                        |
//! | `f1a0`       | 503 `ServiceUnavailable` on the first attempt, then 200             |
//! | `4290`       | 429 `TooManyRequests` on the first attempt, then 200                |
//! | `5000`       | 500 `InternalServerError`, always                                   |
//! | anything else| 200 (counted by `Ledger::record_delivery`)                          |
//!
//! Every answer carries `apns-id` (the request's, or a fresh UUID); errors carry
//! `{"reason":"<Reason>"}`.
//!
//! # Connection-level faults
//!
//! - `latency_ms`: each stream sleeps before answering; other streams go on.
//! - `goaway_after: Some(n)`: when the connection accepts its n-th stream it sends
//!   GOAWAY (graceful); streams already accepted are answered (`Ledger::goaways`).
//! - `drop_after: Some(n)`: when the connection accepts its n-th stream the TCP
//!   connection is reset; that stream and every unanswered one get no answer
//!   (`Ledger::drops`). With `goaway_after` set as well, connections alternate:
//!   the 1st, 3rd, ... get the GOAWAY, the 2nd, 4th, ... the drop.
//! - `stall_after: Some(n)`: when the connection accepts its n-th stream the mock
//!   stops reading and answering (PINGs included) but keeps TCP open, like a peer
//!   that hung or a path that black-holes packets; it lets go after
//!   [`STALL_HOLD`] (`Ledger::stalls`). Streams whose delivery was already
//!   recorded stay recorded: the client cannot know, exactly as with a drop.
//! - `max_concurrent_streams` is advertised in SETTINGS. h2 refuses a stream beyond
//!   it with RST_STREAM(REFUSED_STREAM) before the mock sees the request; the mock
//!   watches its own outgoing frames for those resets and counts each one (plus any
//!   stream it sees while already at the limit) in `Ledger::stream_limit_violations`.

mod channels;
mod tap;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::future::Either;
use futures_util::stream::FuturesUnordered;
use h2::RecvStream;
use h2::server::SendResponse;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Method, Response, StatusCode, Uri};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::mock::faults::{FaultClock, Injected};
use crate::mock::tls::{Identity, TestPki, server_config};
use crate::mock::{Faults, Ledger, MockHandle};

/// How a mock APNs server is set up.
#[derive(Debug, Clone)]
pub struct MockApnsOptions {
    /// Address to bind; port 0 picks a free one (tests use `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// How providers must authenticate.
    pub auth: ApnsAuthCheck,
    /// Faults to inject; `Faults::default()` answers like a healthy APNs.
    pub faults: Faults,
    /// SETTINGS_MAX_CONCURRENT_STREAMS advertised on every connection (Apple: 1000).
    pub max_concurrent_streams: u32,
    /// The server certificate and key.
    pub server: Identity,
    /// PEM of the CA that signed `server`; handed back in `MockHandle::ca_pem`.
    pub ca_pem: String,
    /// Answer like the sandbox (development) environment: device pushes'
    /// 200s carry `apns-unique-id`, as Apple's sandbox does.
    pub sandbox: bool,
}

/// How the mock authenticates providers.
#[derive(Clone)]
pub enum ApnsAuthCheck {
    /// Provider-token auth: verify the ES256 JWT in `authorization: bearer <jwt>` with
    /// this public key.
    Token {
        /// Expected `iss` claim.
        team_id: String,
        /// Expected `kid` header.
        key_id: String,
        /// SPKI PEM of the provider key (the public half of the `.p8`).
        public_key_pem: String,
    },
    /// Certificate auth: the TLS client certificate must chain to this CA.
    ClientCert {
        /// PEM of the CA that signs accepted client certificates.
        ca_pem: String,
    },
    /// Accept anything (for h2load benchmarks, which send one fixed header and cannot
    /// sign a JWT per run).
    None,
}

impl std::fmt::Debug for ApnsAuthCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token {
                team_id, key_id, ..
            } => f
                .debug_struct("Token")
                .field("team_id", team_id)
                .field("key_id", key_id)
                .finish_non_exhaustive(),
            Self::ClientCert { .. } => f.debug_struct("ClientCert").finish_non_exhaustive(),
            Self::None => f.write_str("None"),
        }
    }
}

impl MockApnsOptions {
    /// Options on `127.0.0.1:0` with no faults and Apple's 1000 streams, serving the
    /// server certificate of `pki`.
    pub fn new(auth: ApnsAuthCheck, pki: &TestPki) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            auth,
            faults: Faults::default(),
            max_concurrent_streams: 1000,
            server: pki.server.clone(),
            ca_pem: pki.ca_pem.clone(),
            sandbox: false,
        }
    }
}

/// Generates an ES256 provider key like Apple's `AuthKey_XXXX.p8`: returns the PKCS#8
/// PEM private key and the SPKI PEM public key.
pub fn generate_provider_key() -> anyhow::Result<(String, String)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("generating an ES256 provider key")?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

/// Binds, spawns the accept loop and returns at once with the real address.
pub async fn start(opts: MockApnsOptions) -> anyhow::Result<MockHandle> {
    let client_ca = match &opts.auth {
        ApnsAuthCheck::ClientCert { ca_pem } => Some(ca_pem.as_str()),
        _ => None,
    };
    let tls = server_config(&opts.server, &[b"h2"], client_ca)
        .context("building the mock APNs TLS configuration")?;
    let auth = match opts.auth {
        ApnsAuthCheck::Token {
            team_id,
            key_id,
            public_key_pem,
        } => {
            let key = DecodingKey::from_ec_pem(public_key_pem.as_bytes())
                .context("reading the provider public key (SPKI PEM)")?;
            let mut validation = Validation::new(Algorithm::ES256);
            // Apple's JWTs carry only iss and iat; age is checked against iat here.
            validation.validate_exp = false;
            validation.validate_aud = false;
            validation.required_spec_claims.clear();
            Auth::Token(Box::new(TokenAuth {
                team_id,
                key_id,
                key,
                validation,
            }))
        }
        ApnsAuthCheck::ClientCert { .. } => Auth::ClientCert,
        ApnsAuthCheck::None => Auth::None,
    };
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("binding the mock APNs on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let ledger = Arc::new(Ledger::default());
    let server = Arc::new(Server {
        auth,
        faults: opts.faults,
        clock: FaultClock::default(),
        ledger: ledger.clone(),
        max_streams: opts.max_concurrent_streams,
        channels: channels::Store::default(),
        sandbox: opts.sandbox,
    });
    let task = tokio::spawn(accept_loop(listener, TlsAcceptor::from(tls), server));
    Ok(MockHandle::new(addr, ledger, opts.ca_pem, task))
}

/// How long a stalled connection (`stall_after`) is held open before the mock
/// lets go of it, so stalled sockets do not outlive a test run.
pub const STALL_HOLD: Duration = Duration::from_secs(120);
/// Longest a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Apple refuses provider tokens older than an hour.
const TOKEN_MAX_AGE_S: u64 = 3600;
/// Clock skew tolerated for an `iat` in the future.
const TOKEN_FUTURE_SKEW_S: u64 = 60;
/// Verified JWTs remembered per connection; a client rotating its token has at most
/// two in use at once, a few more cover tests that send several on purpose.
const JWT_CACHE: usize = 4;
const PAYLOAD_LIMIT: usize = 4096;
const VOIP_PAYLOAD_LIMIT: usize = 5120;
const DEVICE_PATH: &str = "/3/device/";

const APNS_ID: HeaderName = HeaderName::from_static("apns-id");
const APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
const APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");
const AUTHORIZATION: HeaderName = http::header::AUTHORIZATION;

const PUSH_TYPES: &[&str] = &[
    "alert",
    "background",
    "location",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "pushtotalk",
    "widgets",
    "controls",
];

struct Server {
    auth: Auth,
    faults: Faults,
    clock: FaultClock,
    ledger: Arc<Ledger>,
    max_streams: u32,
    /// Broadcast channels, per bundle id.
    channels: channels::Store,
    /// `MockApnsOptions::sandbox`.
    sandbox: bool,
}

enum Auth {
    // Boxed: the verification key and its settings dwarf the other variants.
    Token(Box<TokenAuth>),
    ClientCert,
    None,
}

struct TokenAuth {
    team_id: String,
    key_id: String,
    key: DecodingKey,
    validation: Validation,
}

/// The claims Apple reads; optional so that a missing one is our error, not serde's.
#[derive(serde::Deserialize)]
struct ProviderClaims {
    iss: Option<String>,
    iat: Option<u64>,
}

macro_rules! reasons {
    ($($name:ident => $status:ident),* $(,)?) => {
        /// An APNs error reason and the status Apple pairs it with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Reason { $($name),* }

        impl Reason {
            fn status(self) -> StatusCode {
                match self { $(Reason::$name => StatusCode::$status),* }
            }

            /// The error body, built at compile time so answering allocates nothing.
            fn body(self) -> &'static str {
                match self {
                    $(Reason::$name => concat!("{\"reason\":\"", stringify!($name), "\"}")),*
                }
            }
        }
    };
}

reasons! {
    MethodNotAllowed => METHOD_NOT_ALLOWED,
    BadPath => NOT_FOUND,
    BadDeviceToken => BAD_REQUEST,
    DeviceTokenNotForTopic => BAD_REQUEST,
    MissingTopic => BAD_REQUEST,
    InvalidPushType => BAD_REQUEST,
    BadPriority => BAD_REQUEST,
    BadExpirationDate => BAD_REQUEST,
    BadCollapseId => BAD_REQUEST,
    BadMessageId => BAD_REQUEST,
    PayloadEmpty => BAD_REQUEST,
    BadPayload => BAD_REQUEST,
    PayloadTooLarge => PAYLOAD_TOO_LARGE,
    MissingProviderToken => FORBIDDEN,
    InvalidProviderToken => FORBIDDEN,
    ExpiredProviderToken => FORBIDDEN,
    TooManyRequests => TOO_MANY_REQUESTS,
    InternalServerError => INTERNAL_SERVER_ERROR,
    ServiceUnavailable => SERVICE_UNAVAILABLE,
    MissingChannelId => BAD_REQUEST,
    BadChannelId => BAD_REQUEST,
    ChannelNotRegistered => NOT_FOUND,
    CannotCreateChannelConfig => BAD_REQUEST,
    BadMessageStoragePolicy => BAD_REQUEST,
}

/// What a stream is answered.
enum Answer {
    Delivered,
    Error(Reason),
    Throttled { retry_after: HeaderValue },
    Unregistered,
}

/// Results of JWT checks on one connection, so a client reusing its token costs one
/// signature verification per connection, not one per stream.
#[derive(Default)]
struct JwtCache {
    entries: Vec<(HeaderValue, Result<u64, Reason>)>,
    next: usize,
}

impl JwtCache {
    fn lookup(&self, value: &HeaderValue) -> Option<Result<u64, Reason>> {
        self.entries
            .iter()
            .find(|(seen, _)| seen == value)
            .map(|(_, verdict)| *verdict)
    }

    fn insert(&mut self, value: HeaderValue, verdict: Result<u64, Reason>) {
        if self.entries.len() < JWT_CACHE {
            self.entries.push((value, verdict));
        } else {
            self.entries[self.next] = (value, verdict);
            self.next = (self.next + 1) % JWT_CACHE;
        }
    }
}

/// A stream counted as open on its connection until dropped, which happens just
/// before its answer is queued: h2 frees the slot at that moment too, so this count
/// never runs ahead of what the client may legally have open.
struct OpenStream<'a>(&'a AtomicU64);

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the header checks leave for the body stage.
struct Checked {
    uri: Uri,
    voip: bool,
    /// Kept for the ledger's [`Ledger::record_request`].
    headers: http::HeaderMap,
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, server: Arc<Server>) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let acceptor = acceptor.clone();
                let server = server.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(server, acceptor, tcp).await {
                        tracing::debug!(%peer, error = %format!("{e:#}"), "mock APNs connection ended");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "mock APNs accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(
    server: Arc<Server>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
) -> anyhow::Result<()> {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "set_nodelay failed");
    }
    if server.faults.drop_after.is_some() {
        // A zero linger turns the close into a reset, the abrupt loss the fault models.
        if let Err(e) = tcp.set_zero_linger() {
            tracing::debug!(error = %e, "set_zero_linger failed");
        }
    }
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .context("TLS handshake timed out")?
        .context("TLS handshake failed")?;
    let index = server.ledger.connections.fetch_add(1, Ordering::Relaxed);
    // Both connection-ending faults set: alternate, so a run sees both kinds.
    let (goaway_after, drop_after) = match (server.faults.goaway_after, server.faults.drop_after) {
        (Some(g), Some(_)) if index.is_multiple_of(2) => (Some(g), None),
        (Some(_), Some(d)) => (None, Some(d)),
        pair => pair,
    };
    let io = tap::RefusalTap::new(tls, &server.ledger.stream_limit_violations);
    let mut conn = h2::server::Builder::new()
        .max_concurrent_streams(server.max_streams)
        // Thousands of small bodies in flight would otherwise stall on the 64 KiB default.
        .initial_connection_window_size(4 << 20)
        .handshake::<_, Bytes>(io)
        .await
        .context("HTTP/2 handshake failed")?;

    let server = &*server;
    let open = AtomicU64::new(0);
    let mut accepted: u64 = 0;
    let mut goaway_sent = false;
    let mut jwts = JwtCache::default();
    let mut streams = FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(()) = streams.next(), if !streams.is_empty() => {}
            next = conn.accept() => {
                let (request, respond) = match next {
                    None => break,
                    Some(Ok(stream)) => stream,
                    Some(Err(e)) => return Err(e).context("HTTP/2 connection failed"),
                };
                server.ledger.requests.fetch_add(1, Ordering::Relaxed);
                accepted += 1;
                if let Some(n) = drop_after
                    && accepted >= n
                {
                    server.ledger.drops.fetch_add(1, Ordering::Relaxed);
                    // Returning drops the connection and every unanswered stream with it.
                    return Ok(());
                }
                if let Some(n) = server.faults.stall_after
                    && accepted >= n
                {
                    server.ledger.stalls.fetch_add(1, Ordering::Relaxed);
                    // Polling nothing: no frame is read, no answer or PONG written,
                    // and holding `conn` keeps the socket open.
                    tokio::time::sleep(STALL_HOLD).await;
                    drop((conn, streams));
                    return Ok(());
                }
                if let Some(n) = goaway_after
                    && accepted >= n
                    && !goaway_sent
                {
                    goaway_sent = true;
                    conn.graceful_shutdown();
                    server.ledger.goaways.fetch_add(1, Ordering::Relaxed);
                }
                let before = open.fetch_add(1, Ordering::Relaxed);
                if before >= u64::from(server.max_streams) {
                    server
                        .ledger
                        .stream_limit_violations
                        .fetch_add(1, Ordering::Relaxed);
                }
                server.ledger.observe_open_streams(before + 1);
                let guard = OpenStream(&open);
                let (parts, body) = request.into_parts();
                if let Some(route) = channels::route(parts.uri.path()) {
                    let auth = match &server.auth {
                        Auth::Token(auth) => check_provider_token(
                            auth,
                            &mut jwts,
                            parts.headers.get(AUTHORIZATION),
                            &server.ledger,
                        ),
                        _ => Ok(()),
                    };
                    streams.push(Either::Right(async move {
                        channels::handle(server, auth, route, parts, body, respond).await;
                        drop(guard);
                    }));
                    continue;
                }
                let (apns_id, id_ok) = match parts.headers.get(APNS_ID) {
                    Some(id) if is_uuid(id.as_bytes()) => (id.clone(), true),
                    Some(_) => (new_apns_id(), false),
                    None => (new_apns_id(), true),
                };
                let checked = check_request(server, &mut jwts, parts, id_ok);
                streams.push(Either::Left(handle_stream(server, guard, checked, body, respond, apns_id)));
            }
        }
    }
    Ok(())
}

/// Every check that needs only the request head, in the order of the table above.
fn check_request(
    server: &Server,
    jwts: &mut JwtCache,
    parts: http::request::Parts,
    id_ok: bool,
) -> Result<Checked, Reason> {
    if parts.method != Method::POST {
        return Err(Reason::MethodNotAllowed);
    }
    let token = parts
        .uri
        .path()
        .strip_prefix(DEVICE_PATH)
        .ok_or(Reason::BadPath)?;
    if token.is_empty() || token.contains('/') {
        return Err(Reason::BadPath);
    }
    let headers = &parts.headers;
    if let Auth::Token(auth) = &server.auth {
        check_provider_token(auth, jwts, headers.get(AUTHORIZATION), &server.ledger)?;
    }
    if !is_device_token(token) {
        return Err(Reason::BadDeviceToken);
    }
    if matches!(server.auth, Auth::Token(_)) && headers.get(APNS_TOPIC).is_none_or(|t| t.is_empty())
    {
        return Err(Reason::MissingTopic);
    }
    let push_type = headers
        .get(APNS_PUSH_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| PUSH_TYPES.contains(v))
        .ok_or(Reason::InvalidPushType)?;
    if let Some(priority) = headers.get(APNS_PRIORITY)
        && !matches!(priority.as_bytes(), b"10" | b"5" | b"1")
    {
        return Err(Reason::BadPriority);
    }
    if let Some(expiration) = headers.get(APNS_EXPIRATION)
        && (expiration.is_empty() || !expiration.as_bytes().iter().all(u8::is_ascii_digit))
    {
        return Err(Reason::BadExpirationDate);
    }
    if let Some(collapse) = headers.get(APNS_COLLAPSE_ID)
        && collapse.len() > 64
    {
        return Err(Reason::BadCollapseId);
    }
    if !id_ok {
        return Err(Reason::BadMessageId);
    }
    let voip = push_type == "voip";
    Ok(Checked {
        uri: parts.uri,
        voip,
        headers: parts.headers,
    })
}

fn check_provider_token(
    auth: &TokenAuth,
    jwts: &mut JwtCache,
    header: Option<&HeaderValue>,
    ledger: &Ledger,
) -> Result<(), Reason> {
    let header = header.ok_or(Reason::MissingProviderToken)?;
    let iat = match jwts.lookup(header) {
        Some(verdict) => verdict?,
        None => {
            let verdict = verify_provider_token(auth, header, ledger);
            jwts.insert(header.clone(), verdict);
            verdict?
        }
    };
    // Age is rechecked on every stream: a cached token still expires on time.
    let now = unix_now().as_secs();
    if iat > now + TOKEN_FUTURE_SKEW_S {
        return Err(Reason::InvalidProviderToken);
    }
    if now.saturating_sub(iat) > TOKEN_MAX_AGE_S {
        return Err(Reason::ExpiredProviderToken);
    }
    Ok(())
}

/// Verifies signature, `alg`, `kid` and `iss`; returns `iat`.
fn verify_provider_token(
    auth: &TokenAuth,
    header: &HeaderValue,
    ledger: &Ledger,
) -> Result<u64, Reason> {
    let value = header.to_str().map_err(|_| Reason::InvalidProviderToken)?;
    let (scheme, jwt) = value.split_once(' ').ok_or(Reason::InvalidProviderToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Reason::InvalidProviderToken);
    }
    let jwt = jwt.trim();
    ledger.record_credential(jwt);
    let jwt_header = jsonwebtoken::decode_header(jwt).map_err(|_| Reason::InvalidProviderToken)?;
    if jwt_header.alg != Algorithm::ES256 || jwt_header.kid.as_deref() != Some(&auth.key_id) {
        return Err(Reason::InvalidProviderToken);
    }
    let data = jsonwebtoken::decode::<ProviderClaims>(jwt, &auth.key, &auth.validation)
        .map_err(|_| Reason::InvalidProviderToken)?;
    if data.claims.iss.as_deref() != Some(auth.team_id.as_str()) {
        return Err(Reason::InvalidProviderToken);
    }
    data.claims.iat.ok_or(Reason::InvalidProviderToken)
}

async fn handle_stream(
    server: &Server,
    guard: OpenStream<'_>,
    checked: Result<Checked, Reason>,
    body: RecvStream,
    respond: SendResponse<Bytes>,
    apns_id: HeaderValue,
) {
    let answer = match decide(server, checked, body).await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::debug!(error = %e, "mock APNs stream failed before the answer");
            return;
        }
    };
    if server.faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(server.faults.latency_ms)).await;
    }
    drop(guard);
    if let Err(e) = send_answer(respond, answer, apns_id, server.sandbox) {
        tracing::debug!(error = %e, "mock APNs could not answer a stream");
    }
}

async fn decide(
    server: &Server,
    checked: Result<Checked, Reason>,
    mut body: RecvStream,
) -> Result<Answer, h2::Error> {
    let checked = match checked {
        Ok(checked) => checked,
        // Dropping the body unread makes h2 reset the rest of the request with
        // NO_ERROR once the answer is out, as RFC 9113 §8.1 allows.
        Err(reason) => return Ok(Answer::Error(reason)),
    };
    let limit = if checked.voip {
        VOIP_PAYLOAD_LIMIT
    } else {
        PAYLOAD_LIMIT
    };
    let payload = match read_body(&mut body, limit).await? {
        Some(payload) => payload,
        None => return Ok(Answer::Error(Reason::PayloadTooLarge)),
    };
    if payload.is_empty() {
        return Ok(Answer::Error(Reason::PayloadEmpty));
    }
    if !is_json_object(&payload) {
        return Ok(Answer::Error(Reason::BadPayload));
    }
    let raw = checked.uri.path().get(DEVICE_PATH.len()..).unwrap_or("");
    let token: Cow<'_, str> = if raw.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(raw.to_ascii_lowercase())
    } else {
        Cow::Borrowed(raw)
    };
    let ledger = &server.ledger;
    ledger.record_request(
        &token,
        checked
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
        &payload,
    );
    let attempt = ledger.record_attempt(&token);
    let answer = match server.clock.next(&server.faults) {
        Injected::Throttle { retry_after_s } => Answer::Throttled {
            retry_after: server.faults.retry_after(retry_after_s),
        },
        Injected::ServerError => Answer::Error(Reason::ServiceUnavailable),
        Injected::None if attempt == 1 && server.faults.flaky.contains(token.as_ref()) => {
            Answer::Error(Reason::ServiceUnavailable)
        }
        Injected::None => token_rule(&token, attempt),
    };
    if matches!(answer, Answer::Delivered) {
        // Recorded before the answer leaves so a client reading the ledger after its
        // 200 always sees the delivery.
        ledger.record_delivery(&token);
    }
    Ok(answer)
}

fn token_rule(token: &str, attempt: u32) -> Answer {
    match token.get(..4).unwrap_or("") {
        "dead" => Answer::Unregistered,
        "bad0" => Answer::Error(Reason::BadDeviceToken),
        "bad1" => Answer::Error(Reason::DeviceTokenNotForTopic),
        "f1a0" if attempt == 1 => Answer::Error(Reason::ServiceUnavailable),
        "4290" if attempt == 1 => Answer::Error(Reason::TooManyRequests),
        "5000" => Answer::Error(Reason::InternalServerError),
        _ => Answer::Delivered,
    }
}

/// Reads the request body, giving up (`None`) as soon as it passes `limit`. A body
/// in one DATA frame, the usual case, is returned without a copy.
async fn read_body(body: &mut RecvStream, limit: usize) -> Result<Option<Bytes>, h2::Error> {
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        // Give the window back at once: the client may be waiting on it for other streams.
        let _ = body.flow_control().release_capacity(chunk.len());
        total += chunk.len();
        if total > limit {
            return Ok(None);
        }
        match &first {
            None => first = Some(chunk),
            Some(head) => {
                if joined.is_empty() {
                    joined.extend_from_slice(head);
                }
                joined.extend_from_slice(&chunk);
            }
        }
    }
    if joined.is_empty() {
        Ok(Some(first.unwrap_or_default()))
    } else {
        Ok(Some(Bytes::from(joined)))
    }
}

/// A JSON object: starts with `{` and parses, without building any value.
fn is_json_object(payload: &[u8]) -> bool {
    payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(payload).is_ok()
}

fn send_answer(
    mut respond: SendResponse<Bytes>,
    answer: Answer,
    apns_id: HeaderValue,
    sandbox: bool,
) -> Result<(), h2::Error> {
    let mut response = Response::new(());
    response.headers_mut().insert(APNS_ID, apns_id);
    let body: Bytes = match answer {
        Answer::Delivered => {
            if sandbox {
                response
                    .headers_mut()
                    .insert(HeaderName::from_static("apns-unique-id"), new_apns_id());
            }
            respond.send_response(response, true)?;
            return Ok(());
        }
        Answer::Error(reason) => {
            *response.status_mut() = reason.status();
            Bytes::from_static(reason.body().as_bytes())
        }
        Answer::Throttled { retry_after } => {
            *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            response.headers_mut().insert(RETRY_AFTER, retry_after);
            Bytes::from_static(Reason::TooManyRequests.body().as_bytes())
        }
        Answer::Unregistered => {
            *response.status_mut() = StatusCode::GONE;
            let ms = unix_now().as_millis();
            Bytes::from(format!(
                "{{\"reason\":\"Unregistered\",\"timestamp\":{ms}}}"
            ))
        }
    };
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut stream = respond.send_response(response, false)?;
    stream.send_data(body, true)
}

/// Hex, even length, 16..=100 bytes once decoded.
fn is_device_token(token: &str) -> bool {
    (32..=200).contains(&token.len())
        && token.len().is_multiple_of(2)
        && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Canonical 8-4-4-4-12 UUID, either case.
fn is_uuid(id: &[u8]) -> bool {
    id.len() == 36
        && id.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// A random (v4) UUID from `fastrand`, which avoids a getrandom call per answer.
fn new_apns_id() -> HeaderValue {
    let bytes = fastrand::u128(..).to_le_bytes();
    let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid.hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(text)
        .unwrap_or_else(|_| HeaderValue::from_static("00000000-0000-4000-8000-000000000000"))
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
