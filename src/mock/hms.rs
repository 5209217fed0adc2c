//! Mock Huawei Push Kit (HMS Core server API v1): the OAuth 2.0 client
//! credentials endpoint of the Account Kit server and the downlink
//! `messages:send` API, on one TLS server offering ALPN `h2` and `http/1.1`.
//!
//! Written apart from any HMS client: its own form, header and JSON parsing,
//! its own table of Huawei result codes ([`codes::Code`]), so a client bug is
//! not mirrored, and so hidden, by the mock.
//!
//! | Endpoint | What it checks |
//! |---|---|
//! | `POST /oauth2/v3/token` | `Content-Type: application/x-www-form-urlencoded`; `grant_type=client_credentials`; `client_id` digits only (1..=64) and a configured app; `client_secret` in `[0-9a-zA-Z=/+]` and equal to that app's secret |
//! | `POST /v1/{app_id}/messages:send` | `Authorization: Bearer <granted token>`, not expired, granted to `{app_id}`; `Content-Type: application/json`; the body shape below; 1..=1000 tokens; message without its tokens ≤ 4096 bytes |
//!
//! # OAuth answers
//!
//! Success: 200 `{"access_token","expires_in","token_type":"Bearer"}`. The
//! token contains `/`, `+` and `=`, and `/` is written `\/` in the JSON (as
//! Huawei's server does), so a client that does not parse the JSON properly or
//! mangles the header value is caught. Refusals are HTTP 400 with Huawei's
//! `{"error":<int>,"sub_error":<int>,"error_description":"…"}`:
//!
//! | Request | `error` / `sub_error` |
//! |---|---|
//! | no `grant_type` (also: the body is not form-encoded) | 1102 / 20181 |
//! | `grant_type` not `client_credentials` | 1101 / 20182 |
//! | no `client_id` | 1102 / 20001 |
//! | `client_id` not 1..=64 digits | 1101 / 20002 |
//! | `client_id` not a configured app | 1203 / 12303 |
//! | no `client_secret` | 1101 / 20171 |
//! | `client_secret` outside `[0-9a-zA-Z=/+]` | 1101 / 20172 |
//! | wrong `client_secret` | 1101 / 12304 |
//!
//! Secrets made by [`MockHmsOptions::new`] contain `+`, `/` and `=`: a client
//! that forgets to form-encode the secret sends `+`, which a form decodes as
//! a space, and is refused (20172), as Huawei would refuse it.
//!
//! # Send answers
//!
//! Every answer is `{"code":"<8 digits>","msg":"…","requestId":"…"}`; the HTTP
//! status follows Huawei's table (200 success, 400 parameter error, 401
//! authentication, 500 internal, 503 flow control), see [`codes::Code`]:
//!
//! | Check, in order | HTTP | `code` |
//! |---|---|---|
//! | no `Authorization: Bearer …`, unknown token, or a token granted to another app | 401 | `80200001` |
//! | token expired (`token_ttl_s` elapsed or `token_max_sends` used up) | 401 | `80200003` |
//! | `Content-Type` not `application/json` (a `charset` is fine) | 400 | `80100001` |
//! | body not a JSON object | 400 | `80100001` |
//! | no `message` key (a misspelt one included: Huawei then finds no token) | 400 | `80300010` |
//! | `validate_only` not a boolean, a top-level field other than `validate_only` / `message` / `review` | 400 | `80100001` |
//! | `message` not an object | 400 | `80100003` |
//! | `message.topic` / `message.condition` (not modelled by the mock) | 400 | `80100001` |
//! | `message.token` missing (misspelt), empty or over 1000 | 400 | `80300010` |
//! | `token` not an array of strings, an unknown `message` field, `data` not a string, a bad `notification` or `android` block, no payload at all | 400 | `80100003` |
//! | `android.collapse_key` outside -1..=100 | 400 | `80100013` |
//! | `message` without `token` over 4096 bytes (compact JSON) | 400 | `80300008` |
//! | injected throttle (`faults.throttle_every`, `throttle_rate`) | 503 | `81000001`, `Retry-After` when `faults.retry_after_s` > 0 |
//! | injected server error (`faults.error_rate`) | 500 | `81000001` |
//!
//! The `android` block is checked where Huawei documents a rule (`urgency`
//! `HIGH`/`NORMAL`, `ttl` like `86400s`, `collapse_key`, `data` a string, a
//! `notification` needing `click_action` with `type` 1..=3, a title and a body
//! here or in `message.notification`); its other fields pass through.
//!
//! # Outcomes by token
//!
//! Tokens are opaque strings; an ASCII substring selects the outcome. When a
//! request holds several markers, the first rule that fails it wins, in this
//! order. "First attempt" counts per token (the ledger's attempt number).
//! Tokens listed in `Faults::flaky` behave like `flaky`.
//!
//! | Token contains | Answer |
//! |---|---|
//! | `internal` | the whole request: always 500 `81000001` |
//! | `flaky` | the whole request: 500 `81000001` on the token's first attempt, then normal |
//! | `busy` | the whole request: 503 `81000001` flow control with `Retry-After: 1` on the token's first attempt, then normal |
//! | `illegal` (or the token is empty or holds whitespace) | not delivered, listed in `illegal_tokens` |
//! | anything else | delivered |
//!
//! With no illegal token: 200 `80000000` `"Success"`. With some: 200
//! `80100000` whose `msg` is a JSON *text*
//! `{"success":N,"failure":M,"illegal_tokens":[…]}` (request order). With only
//! illegal tokens: 400 `80300007`. `validate_only: true` runs every check and
//! the `illegal` rule (and the injected faults), answers the same codes, and
//! records no attempt and no delivery (only the request itself: `requests`,
//! `largest_batch`, the kept request per token, the batch size).
//!
//! `faults.latency_ms` delays every answer, the OAuth endpoint's included.
//!
//! # Ledger and inbox
//!
//! [`Ledger`]: `requests` counts send requests, `connections` TLS connections,
//! `grants` access tokens granted, `largest_batch` the most tokens in one
//! accepted request; every token that reaches the outcome rules gets
//! `record_attempt`, every delivered one `record_delivery`, and the request is
//! kept per token (`Ledger::request`). Every access token accepted goes
//! through `record_credential`. The [`Inbox`] keeps what each delivered token
//! received (data, notification, android block) and the HMS counters (401s,
//! expired tokens, throttles, server errors, refusals, batch sizes).

mod codes;
mod inbox;
mod message;
mod oauth;
mod send;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

pub use codes::Code;
pub use inbox::{Inbox, Notification, ReceivedMessage};

use crate::mock::faults::FaultClock;
use crate::mock::tls::{Identity, TestPki};
use crate::mock::{Faults, Ledger, MockHandle};

/// How long a client may take to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The OAuth path, as on `oauth-login.cloud.huawei.com`.
pub const TOKEN_PATH: &str = "/oauth2/v3/token";

/// Access tokens kept for telling "expired" (80200003) from "unknown"
/// (80200001); past this, expired ones are forgotten at the next grant.
const MAX_KEPT_GRANTS: usize = 10_000;

/// One AppGallery Connect app: its OAuth client id (the app id in the send
/// path) and client secret.
#[derive(Clone, PartialEq, Eq)]
pub struct HmsApp {
    /// Digits only, as Huawei issues them (`^[0-9]{1,64}$`).
    pub app_id: String,
    /// The OAuth client secret (`[0-9a-zA-Z=/+]+`).
    pub client_secret: String,
}

impl HmsApp {
    /// An app with `app_id` and a fresh random secret that contains `+`, `/`
    /// and `=`, the characters a client must form-encode.
    pub fn generate(app_id: &str) -> Self {
        Self {
            app_id: app_id.to_owned(),
            client_secret: random_secret(),
        }
    }
}

impl std::fmt::Debug for HmsApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is a credential, even a mock's.
        f.debug_struct("HmsApp")
            .field("app_id", &self.app_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

/// 40 base64 characters with `+`, `/` and `=` always among them.
fn random_secret() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 24];
    fastrand::fill(&mut bytes);
    let body = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
    format!("{}+{}/{}=", &body[..12], &body[12..24], &body[24..])
}

/// Everything the mock HMS server needs to start.
#[derive(Clone)]
pub struct MockHmsOptions {
    /// Address to bind (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// The apps the OAuth endpoint knows; at least one. Tokens are bound to
    /// the app they were granted to.
    pub apps: Vec<HmsApp>,
    /// `expires_in` announced with each access token, in seconds (Huawei: 3600).
    pub expires_in_s: u64,
    /// How long a token really stays valid, when shorter (or longer) than
    /// announced; `None` means `expires_in_s`. `Some(0)` expires tokens at once.
    pub token_ttl_s: Option<u64>,
    /// Send requests one token may authorize; the next one gets 80200003.
    pub token_max_sends: Option<u64>,
    /// Fraction (0.0..=1.0) of send requests answered 503 flow control.
    pub throttle_rate: f64,
    /// Shared faults: `error_rate` (500), `throttle_every` (503),
    /// `retry_after_s`, `latency_ms`, `flaky`. The connection faults
    /// (`goaway_after`, `drop_after`, `stall_after`) are not modelled and
    /// refused by [`start`].
    pub faults: Faults,
    /// Server certificate and key.
    pub server: Identity,
    /// PEM of the CA that signed `server`, handed back in the [`MockHandle`].
    pub ca_pem: String,
}

impl MockHmsOptions {
    /// A healthy mock on `127.0.0.1:0` with one app (`104000000`, random
    /// secret), served with `pki`'s server certificate.
    pub fn new(pki: &TestPki) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            apps: vec![HmsApp::generate("104000000")],
            expires_in_s: 3600,
            token_ttl_s: None,
            token_max_sends: None,
            throttle_rate: 0.0,
            faults: Faults::default(),
            server: pki.server.clone(),
            ca_pem: pki.ca_pem.clone(),
        }
    }
}

impl std::fmt::Debug for MockHmsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockHmsOptions")
            .field("listen", &self.listen)
            .field("apps", &self.apps)
            .field("expires_in_s", &self.expires_in_s)
            .field("token_ttl_s", &self.token_ttl_s)
            .field("token_max_sends", &self.token_max_sends)
            .field("throttle_rate", &self.throttle_rate)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

/// Why the mock could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `apps` is empty.
    #[error("mock HMS: no app configured (apps is empty)")]
    NoApp,
    /// An app id Huawei would never issue.
    #[error("mock HMS: app id {0:?} must be 1 to 64 digits")]
    BadAppId(String),
    /// Two apps with one id.
    #[error("mock HMS: app id {0} is configured twice")]
    DuplicateAppId(String),
    /// A secret Huawei's OAuth server would refuse as malformed.
    #[error("mock HMS: the client secret of app {0} must be non-empty [0-9a-zA-Z=/+]")]
    BadSecret(String),
    /// A rate outside 0.0..=1.0.
    #[error("mock HMS: {name} = {value} must be within 0.0..=1.0")]
    BadRate {
        /// The option.
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// A shared fault this mock does not model.
    #[error("mock HMS: the {0} fault is not modelled by this mock; leave it unset")]
    UnsupportedFault(&'static str),
    /// The TLS configuration could not be built.
    #[error("mock HMS: building the TLS server configuration")]
    Tls(#[source] crate::mock::tls::TlsError),
    /// The listener could not be bound.
    #[error("mock HMS: binding {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// A running mock HMS server.
#[derive(Debug)]
pub struct MockHms {
    /// Address, ledger and CA.
    pub handle: MockHandle,
    /// What delivered tokens received, and the HMS counters.
    pub inbox: Arc<Inbox>,
    /// The configured apps (ids and secrets), first one the default.
    pub apps: Vec<HmsApp>,
}

impl MockHms {
    /// `https://127.0.0.1:port`: the client's push `endpoint`.
    pub fn endpoint(&self) -> String {
        self.handle.url()
    }

    /// `https://127.0.0.1:port/oauth2/v3/token`: the client's `token_uri`.
    pub fn token_uri(&self) -> String {
        format!("{}{TOKEN_PATH}", self.handle.url())
    }

    /// The send URL for `app_id`.
    pub fn send_url(&self, app_id: &str) -> String {
        format!("{}/v1/{app_id}/messages:send", self.handle.url())
    }

    /// The first app's id.
    pub fn app_id(&self) -> &str {
        self.apps.first().map_or("", |a| a.app_id.as_str())
    }

    /// The first app's client secret.
    pub fn client_secret(&self) -> &str {
        self.apps.first().map_or("", |a| a.client_secret.as_str())
    }
}

/// One granted access token.
#[derive(Debug)]
struct Grant {
    app_id: String,
    /// When it stops being valid.
    expires: Instant,
    /// Sends it may still authorize (`None`: unlimited).
    sends_left: Option<u64>,
}

/// What the token table says about a bearer token.
#[derive(Debug, PartialEq, Eq)]
enum TokenCheck {
    Valid,
    /// Unknown, or granted to another app: 80200001.
    Invalid,
    /// Known but past its time or its sends: 80200003.
    Expired,
}

/// State shared by every connection and handler of one server.
pub(crate) struct Shared {
    apps: HashMap<String, String>,
    expires_in_s: u64,
    token_ttl: Duration,
    token_max_sends: Option<u64>,
    throttle_rate: f64,
    faults: Faults,
    clock: FaultClock,
    ledger: Arc<Ledger>,
    inbox: Arc<Inbox>,
    grants: RwLock<HashMap<String, Grant>>,
    /// Source of request ids.
    sequence: AtomicU64,
}

impl Shared {
    /// A request id in Huawei's shape: the millisecond clock then a counter,
    /// all digits.
    fn request_id(&self) -> String {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed) % 100_000_000_000;
        format!("{}{n:011}", crate::floor::now_ms())
    }

    /// Stores a new access token for `app_id`.
    fn grant(&self, app_id: &str, token: &str) {
        let now = Instant::now();
        // An absurd TTL cannot overflow the clock: cap it at a year.
        let expires = now
            .checked_add(self.token_ttl)
            .unwrap_or(now + Duration::from_secs(365 * 24 * 3600));
        let mut grants = self.grants.write().unwrap_or_else(|e| e.into_inner());
        if grants.len() >= MAX_KEPT_GRANTS {
            grants.retain(|_, g| g.expires > now && g.sends_left != Some(0));
        }
        grants.insert(
            token.to_owned(),
            Grant {
                app_id: app_id.to_owned(),
                expires,
                sends_left: self.token_max_sends,
            },
        );
    }

    /// Checks `token` for a send to `app_id`, using up one of its sends
    /// when valid.
    fn use_token(&self, token: &str, app_id: &str) -> TokenCheck {
        let mut grants = self.grants.write().unwrap_or_else(|e| e.into_inner());
        let Some(grant) = grants.get_mut(token) else {
            return TokenCheck::Invalid;
        };
        if grant.app_id != app_id {
            // Huawei: a token of app A used for app B is an authentication error.
            return TokenCheck::Invalid;
        }
        if grant.expires <= Instant::now() {
            return TokenCheck::Expired;
        }
        match &mut grant.sends_left {
            Some(0) => TokenCheck::Expired,
            Some(left) => {
                *left -= 1;
                TokenCheck::Valid
            }
            None => TokenCheck::Valid,
        }
    }
}

/// Starts the mock HMS server and returns once it is listening.
pub async fn start(opts: MockHmsOptions) -> Result<MockHms, StartError> {
    // Destructured so a new option breaks the build here until it is used.
    let MockHmsOptions {
        listen,
        apps,
        expires_in_s,
        token_ttl_s,
        token_max_sends,
        throttle_rate,
        faults,
        server,
        ca_pem,
    } = opts;
    let app_table = check_apps(&apps)?;
    for (name, value) in [
        ("throttle_rate", throttle_rate),
        ("error_rate", faults.error_rate),
    ] {
        if !(0.0..=1.0).contains(&value) {
            return Err(StartError::BadRate { name, value });
        }
    }
    for (name, set) in [
        ("goaway_after", faults.goaway_after.is_some()),
        ("drop_after", faults.drop_after.is_some()),
        ("stall_after", faults.stall_after.is_some()),
    ] {
        if set {
            return Err(StartError::UnsupportedFault(name));
        }
    }

    let config = crate::mock::tls::server_config(&server, &[b"h2", b"http/1.1"], None)
        .map_err(StartError::Tls)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: listen,
        source,
    })?;

    let ledger = Arc::new(Ledger::default());
    let inbox = Arc::new(Inbox::default());
    let shared = Arc::new(Shared {
        apps: app_table,
        expires_in_s,
        token_ttl: Duration::from_secs(token_ttl_s.unwrap_or(expires_in_s)),
        token_max_sends,
        throttle_rate,
        faults,
        clock: FaultClock::default(),
        ledger: ledger.clone(),
        inbox: inbox.clone(),
        grants: RwLock::new(HashMap::new()),
        sequence: AtomicU64::new(0),
    });
    let router = Router::new()
        .route(TOKEN_PATH, post(oauth::token))
        .route("/v1/{app_id}/messages:send", post(send::send))
        .with_state(shared.clone());

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let task = tokio::spawn(accept_loop(listener, acceptor, builder, router, shared));
    Ok(MockHms {
        handle: MockHandle::new(addr, ledger, ca_pem, task),
        inbox,
        apps,
    })
}

/// Validates the configured apps and indexes their secrets by app id.
fn check_apps(apps: &[HmsApp]) -> Result<HashMap<String, String>, StartError> {
    if apps.is_empty() {
        return Err(StartError::NoApp);
    }
    let mut table = HashMap::new();
    for app in apps {
        if !oauth::is_client_id(&app.app_id) {
            return Err(StartError::BadAppId(app.app_id.clone()));
        }
        if !oauth::is_secret_text(&app.client_secret) {
            return Err(StartError::BadSecret(app.app_id.clone()));
        }
        if table
            .insert(app.app_id.clone(), app.client_secret.clone())
            .is_some()
        {
            return Err(StartError::DuplicateAppId(app.app_id.clone()));
        }
    }
    Ok(table)
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
                // Out of descriptors or a reset before accept: back off a
                // little instead of spinning, and keep serving.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Small JSON answers: waiting for Nagle only adds latency.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let router = router.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            // A failed handshake (wrong CA, no ALPN overlap) is the client's
            // to see in the TLS alert.
            let Ok(Ok(tls)) =
                tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            shared.ledger.connections.fetch_add(1, Ordering::Relaxed);
            let latency = Duration::from_millis(shared.faults.latency_ms);
            let svc = tower::service_fn(move |req: http::Request<Incoming>| {
                let router = router.clone();
                async move {
                    if !latency.is_zero() {
                        tokio::time::sleep(latency).await;
                    }
                    let response = match router.oneshot(req).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            // The connection ends when the client closes it; errors are the
            // client's protocol mistakes and need no answer here.
            let _ = builder
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(svc))
                .await;
        });
    }
}
