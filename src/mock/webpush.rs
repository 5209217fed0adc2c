//! Mock Web Push service (RFC 8030) over TLS, ALPN `h2` and `http/1.1`.
//!
//! Written apart from `webpush/`: it verifies each distinct VAPID JWT (once;
//! a reused one is only checked for expiry) with
//! `jsonwebtoken` from the `k=` key, and decrypts every message (or one in
//! `decrypt_every`) with the subscription's own private key
//! ([`subscriber`]), the way a browser would.
//!
//! # Checks, in order
//!
//! | check | refusal |
//! |---|---|
//! | `Authorization: vapid t=<JWT>, k=<key>` present | 401 `MissingAuthorization` |
//! | ES256 signature by `k`, `aud` = this server's origin, `exp` in the future and ≤ 24 h ahead, `sub` `mailto:`/`https:` | 403 `BadJwtToken` / `ExpiredJwtToken` |
//! | `k` = the expected application server key, when one is set | 403 `VapidPkHashMismatch` |
//! | `TTL` header, an integer | 400 `MissingTTL` |
//! | `Urgency` (if present) one of `very-low`, `low`, `normal`, `high` | 400 `BadUrgency` |
//! | `Topic` (if present) ≤ 32 base64url characters | 400 `BadWebPushTopic` |
//! | `Content-Encoding: aes128gcm` | 400 `BadContentEncoding` |
//! | body ≤ 4096 bytes | 413 `PayloadTooLarge` |
//! | the body decrypts (success paths only; with `decrypt_every` N, one request in N, and the `aes128gcm` header alone for the rest) | 400 `DecryptionFailed` (or another [`DecryptError`] word) |
//!
//! # Outcomes by endpoint path `/push/<kind>/<id>`
//!
//! | kind | answer |
//! |---|---|
//! | `ok` (and any unknown kind) | 201 Created, `Location: /m/<n>` |
//! | `gone` | 410 Gone |
//! | `notfound` | 404 Not Found |
//! | `flaky` (or the path id listed in `Faults::flaky`) | first attempt 503, then 201 |
//! | `throttle` | first attempt 429 with `Retry-After: 1`, then 201 |
//! | `toolarge` | 413 |
//! | `bad` | 400 `BadRequest` |
//! | `internal` | always 500 |
//!
//! Faults: the shared [`FaultClock`] (throttle every N with `Retry-After`,
//! error rate → 503), `latency_ms`, and per connection `drop_after` /
//! `goaway_after` as in the FCM mock.
//!
//! # Ledger
//! Token = the path id `<kind>/<id>`; `record_attempt` per request that passed
//! the checks, `record_delivery` per 201; each distinct JWT goes through
//! `record_credential`. The [`Inbox`] counts decrypted plaintexts and headers
//! (with `decrypt_every` above 1, only of the messages it decrypted).

mod handlers;
pub mod subscriber;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::routing::post;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt as _;

pub use subscriber::{DecryptError, Subscriber};

use crate::mock::faults::FaultClock;
use crate::mock::{Faults, Ledger, MockHandle};

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the mock push service needs to start.
#[derive(Clone)]
pub struct MockWebPushOptions {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Seed the subscription keys derive from.
    pub seed: Vec<u8>,
    /// When set, the only VAPID public key (base64url) accepted.
    pub expected_key: Option<String>,
    /// Faults to inject.
    pub faults: Faults,
    /// Server certificate and key.
    pub server: crate::mock::tls::Identity,
    /// CA that signed `server`.
    pub ca_pem: String,
    /// Decrypt one delivered message in this many (1: every one). A real
    /// push service never decrypts (the payload is end to end); the others
    /// get only the header checks a push service can make. A benchmark
    /// sharing its cores with the gateway raises this so the mock's ECDH is
    /// not charged to the sender.
    pub decrypt_every: u64,
    /// Offer only `http/1.1` in ALPN, as a push service without HTTP/2 would.
    pub http1_only: bool,
}

impl std::fmt::Debug for MockWebPushOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockWebPushOptions")
            .field("listen", &self.listen)
            .field("expected_key", &self.expected_key)
            .field("faults", &self.faults)
            .field("decrypt_every", &self.decrypt_every)
            .field("http1_only", &self.http1_only)
            .finish_non_exhaustive()
    }
}

impl MockWebPushOptions {
    /// A healthy mock on `127.0.0.1:0` with a random seed.
    pub fn new(pki: &crate::mock::tls::TestPki) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: fastrand::u64(..).to_be_bytes().to_vec(),
            expected_key: None,
            faults: Faults::default(),
            server: pki.server.clone(),
            ca_pem: pki.ca_pem.clone(),
            decrypt_every: 1,
            http1_only: false,
        }
    }
}

/// What the mock decrypted, for tests to compare with what was sent.
#[derive(Debug, Default)]
pub struct Inbox {
    payloads: Mutex<HashMap<Vec<u8>, u64>>,
    headers: Mutex<HashMap<String, u64>>,
    /// The plaintexts each subscription received (the first
    /// [`MAX_KEPT_SUBSCRIPTIONS`] distinct ones), so a test can tell which
    /// device got which message.
    by_subscription: Mutex<HashMap<String, Vec<Vec<u8>>>>,
    /// Requests over HTTP/2 (the rest came over HTTP/1.1).
    pub h2_requests: AtomicU64,
}

/// Subscriptions whose plaintexts [`Inbox::received`] keeps; past this only
/// the counts grow, so a benchmark of a million costs no memory here.
const MAX_KEPT_SUBSCRIPTIONS: usize = 65_536;

impl Inbox {
    fn record(&self, path_id: &str, plaintext: Vec<u8>, headers: &[String]) {
        {
            let mut kept = self
                .by_subscription
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(list) = kept.get_mut(path_id) {
                list.push(plaintext.clone());
            } else if kept.len() < MAX_KEPT_SUBSCRIPTIONS {
                kept.insert(path_id.to_owned(), vec![plaintext.clone()]);
            }
        }
        *self
            .payloads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(plaintext)
            .or_default() += 1;
        let mut seen = self.headers.lock().unwrap_or_else(|e| e.into_inner());
        for h in headers {
            *seen.entry(h.clone()).or_default() += 1;
        }
    }

    /// How many delivered messages decrypted to exactly `plaintext`.
    pub fn count(&self, plaintext: &[u8]) -> u64 {
        self.payloads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(plaintext)
            .copied()
            .unwrap_or(0)
    }

    /// The plaintexts delivered to subscription `<kind>/<id>` (its endpoint's
    /// path after `/push/`), oldest first; empty when none, or when it came
    /// after the first 65,536 distinct subscriptions.
    pub fn received(&self, path_id: &str) -> Vec<Vec<u8>> {
        self.by_subscription
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Delivered messages in all.
    pub fn total(&self) -> u64 {
        self.payloads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }

    /// Delivered messages that carried `header` (`"ttl=60"`, `"urgency=high"`, `"topic=news"`).
    pub fn header_count(&self, header: &str) -> u64 {
        self.headers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(header)
            .copied()
            .unwrap_or(0)
    }
}

/// A running mock push service.
#[derive(Debug)]
pub struct MockWebPush {
    /// Address, ledger and CA.
    pub handle: MockHandle,
    /// Decrypted plaintexts.
    pub inbox: Arc<Inbox>,
    /// The key source, to make subscriptions.
    pub subscriber: Subscriber,
}

impl MockWebPush {
    /// A ready-made subscription (the JSON a browser's
    /// `PushSubscription.toJSON()` gives) for endpoint `/push/<kind>/<id>`.
    pub fn subscription(&self, kind: &str, id: &str) -> serde_json::Value {
        subscription(&self.handle.url(), &self.subscriber, kind, id)
    }

    /// The origin (`https://127.0.0.1:port`): what `allowed_origins` must list.
    pub fn origin(&self) -> String {
        self.handle.url()
    }
}

/// A subscription for `base` + `/push/<kind>/<id>` with keys from `subscriber`.
pub fn subscription(
    base: &str,
    subscriber: &Subscriber,
    kind: &str,
    id: &str,
) -> serde_json::Value {
    let path_id = format!("{kind}/{id}");
    let (p256dh, auth) = subscriber.keys(&path_id).unwrap_or_default();
    serde_json::json!({
        "endpoint": format!("{base}/push/{path_id}"),
        "keys": {"p256dh": p256dh, "auth": auth},
    })
}

pub(crate) struct Shared {
    subscriber: Subscriber,
    expected_key: Option<String>,
    faults: Faults,
    clock: FaultClock,
    ledger: Arc<Ledger>,
    inbox: Arc<Inbox>,
    /// `aud` values accepted: this server's origin by address and as localhost.
    audiences: Vec<String>,
    sequence: AtomicU64,
    /// See [`MockWebPushOptions::decrypt_every`] (at least 1).
    decrypt_every: u64,
    /// VAPID headers whose signature was verified, with their `exp`: a
    /// sender that reuses its JWT (as it should, for up to 24 h) is not
    /// verified again, only checked for expiry. Bounded by
    /// [`VERIFIED_MAX`].
    verified: Mutex<HashMap<String, u64>>,
}

/// VAPID headers remembered as verified, at most (then forgotten at once).
pub(crate) const VERIFIED_MAX: usize = 4096;

#[derive(Default)]
struct ConnCtl {
    requests: AtomicU64,
    drop_now: Notify,
    goaway_now: Notify,
}

/// Starts the mock and returns once it is listening.
pub async fn start(opts: MockWebPushOptions) -> anyhow::Result<MockWebPush> {
    let alpn: &[&[u8]] = if opts.http1_only {
        &[b"http/1.1"]
    } else {
        &[b"h2", b"http/1.1"]
    };
    let config = crate::mock::tls::server_config(&opts.server, alpn, None)
        .context("mock Web Push: building the TLS server configuration")?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("mock Web Push: binding {}", opts.listen))?;
    let addr = listener
        .local_addr()
        .context("mock Web Push: reading the bound address")?;
    let ledger = Arc::new(Ledger::default());
    let inbox = Arc::new(Inbox::default());
    let subscriber = Subscriber::new(&opts.seed);
    let mut audiences = vec![format!("https://{addr}")];
    if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        audiences.push(format!("https://localhost:{}", addr.port()));
        audiences.push(format!("https://127.0.0.1:{}", addr.port()));
    }
    let shared = Arc::new(Shared {
        subscriber: subscriber.clone(),
        expected_key: opts.expected_key,
        faults: opts.faults,
        clock: FaultClock::default(),
        ledger: ledger.clone(),
        inbox: inbox.clone(),
        audiences,
        sequence: AtomicU64::new(0),
        decrypt_every: opts.decrypt_every.max(1),
        verified: Mutex::new(HashMap::new()),
    });
    let router = Router::new()
        .route("/push/{kind}/{id}", post(handlers::push))
        .with_state(shared.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1000);
    let builder = Arc::new(builder);
    let task = tokio::spawn(accept_loop(listener, acceptor, builder, router, shared));
    Ok(MockWebPush {
        handle: MockHandle::new(addr, ledger, opts.ca_pem, task),
        inbox,
        subscriber,
    })
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    shared: Arc<Shared>,
) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let router = router.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            shared.ledger.connections.fetch_add(1, Ordering::Relaxed);
            serve(tls, builder, router, shared).await;
        });
    }
}

async fn serve<IO>(
    io: IO,
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    shared: Arc<Shared>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
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
            _ = conn.as_mut() => return,
            () = ctl.drop_now.notified() => {
                shared.ledger.drops.fetch_add(1, Ordering::Relaxed);
                return;
            }
            () = ctl.goaway_now.notified(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
                shared.ledger.goaways.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

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
        ctl.drop_now.notify_one();
        return std::future::pending().await;
    }
    let goaway = shared.faults.goaway_after == Some(n);
    let h2 = req.version() == http::Version::HTTP_2;
    if h2 {
        shared.inbox.h2_requests.fetch_add(1, Ordering::Relaxed);
    }
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
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        shared.ledger.goaways.fetch_add(1, Ordering::Relaxed);
    }
    response
}
