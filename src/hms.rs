//! Huawei Push Kit (HMS Core server API v1): the fourth platform.
//!
//! - [`config`]: `[hms]` and its apps, validated (the client secret read).
//! - [`auth`]: the OAuth 2.0 client-credentials access token, cached and
//!   renewed on demand, shared by the cluster with the `redis` backend.
//! - [`message`]: the message checked as Huawei checks it, `data` sent as
//!   a string, its stored form.
//! - [`request`]: the pure `messages:send` request builder.
//! - [`response`]: one classification table for Huawei's answers.
//! - [`worker`]: batches of up to `batch_size` tokens of one job per
//!   request, a bounded number in flight, settled through the [`Lane`].
//! - [`front`]: `POST /hms/send` and gorush's `platform: 3` ([`gorush`]).
//!
//! [`HmsService`] ties one app's parts together; [`start`] starts every app
//! and registers the platform.

pub mod auth;
pub mod compose;
pub mod config;
pub mod front;
pub mod gorush;
pub mod message;
pub mod request;
pub mod response;
pub mod token;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use prometheus::{Histogram, IntCounter, IntGauge};

use self::config::HmsConfig;
use crate::floor::Throttle;
use crate::job::{
    Family, FamilyInfo, GorushPlatform, ListKind, ListRoute, Platform, PlatformInfo, TokenCodec,
    Totals,
};
use crate::platform::{Context, Deliver, Lane, LaneSettings, Registered};
use crate::settings::Apps;

pub use front::HmsFront;
pub use message::{HmsFields, HmsMessage};

/// Huawei's report family: `/hms/report*`, plain totals, tokens to purge and
/// failures.
pub const FAMILY: Family = Family::new(&FamilyInfo {
    name: "hms",
    label: "Huawei Push Kit",
    section: "[hms]",
    send_routes: &["hms"],
    totals: Totals::Plain,
    lists: &[
        ListRoute {
            list: ListKind::Unregistered,
            path: "unregistered",
            key: "tokens",
            bare_tokens: false,
        },
        ListRoute {
            list: ListKind::Failures,
            path: "failures",
            key: "failures",
            bare_tokens: false,
        },
    ],
    token_key: "token",
    gorush: Some(GorushPlatform {
        number: 3,
        word: "huawei",
        label: "Huawei",
    }),
});

/// Huawei Push Kit: tokens are opaque text, kept and shown as sent.
pub const PLATFORM: Platform = Platform::new(&PlatformInfo {
    name: "hms",
    family: FAMILY,
    codec: TokenCodec::Text,
});

/// Errors starting HMS delivery.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The TLS configuration was refused.
    #[error("HMS TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The HTTP client could not be built.
    #[error("HMS HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// State shared by one app's worker and its handle.
pub(crate) struct Shared {
    /// `{endpoint}/v1/{app_id}/messages:send`.
    url: String,
    token: auth::AccessToken,
    client: reqwest::Client,
    /// This app's queue, and how verdicts settle.
    lane: Arc<Lane<HmsMessage>>,
    concurrency: usize,
    batch_size: usize,
    /// Push Kit answered at least one send request.
    answered: AtomicBool,
    /// Connection failures in a row, for the requeue delay.
    connect_failures: AtomicU32,
    loud: Throttle,
    in_flight: IntGauge,
    latency: Histogram,
    requeued: IntCounter,
}

impl Shared {
    /// Logs a gateway-wide problem (credentials, a message every batch will
    /// fail on) at error level, at most once per 10 s.
    fn loud(&self, what: &str, code: &str, status: u16) {
        if self.loud.ready() {
            tracing::error!(platform = "hms", code, status, "{what}");
        }
    }
}

/// Builds the HTTP client every request of the app uses (`token_uri`
/// included): our rustls config with `ca_file` roots, ALPN h2 and http/1.1,
/// the per-request deadline.
fn http_client(config: &HmsConfig) -> Result<reqwest::Client, StartError> {
    let tls = crate::tls::client_config(&config.extra_roots, None, &[b"h2", b"http/1.1"])?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(Arc::unwrap_or_clone(tls))
        .timeout(config.request_timeout)
        .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
        // An HTTP/1.1 server needs one connection per request in flight.
        .pool_max_idle_per_host(config.concurrency.max(1) as usize)
        .build()
        .map_err(StartError::Client)
}

/// One app's delivery: where its jobs go.
#[derive(Clone)]
pub struct HmsService {
    shared: Arc<Shared>,
}

impl HmsService {
    /// Builds the client, starts fetching an access token (so bad
    /// credentials are logged at start and `/readyz` turns ready early) and
    /// spawns the worker.
    pub fn start(config: &HmsConfig, ctx: &Context) -> Result<Self, StartError> {
        let client = http_client(config)?;
        let token = auth::AccessToken::new(
            &config.app_id,
            config.client_secret.clone(),
            &config.token_uri,
            client.clone(),
            ctx.metrics.credential_refreshes.with_label_values(&["hms"]),
        );
        if let Some(shared) = &ctx.credentials {
            token.share(shared.clone());
        }
        let lane = Lane::new(LaneSettings {
            platform: PLATFORM,
            recorder: ctx.recorder.clone(),
            backoff: ctx.backoff,
            max_retries: config.max_retries,
            deadline_reason: None,
            rebuild: Box::new(HmsMessage::from_stored),
        });
        let label = [PLATFORM.as_str()];
        let shared = Arc::new(Shared {
            url: request::send_url(&config.endpoint, &config.app_id),
            token,
            client,
            lane,
            concurrency: config.concurrency.max(1) as usize,
            batch_size: config.batch_size.clamp(1, config::MAX_BATCH) as usize,
            answered: AtomicBool::new(false),
            connect_failures: AtomicU32::new(0),
            loud: Throttle::new(Duration::from_secs(10)),
            in_flight: ctx.metrics.in_flight.with_label_values(&label),
            latency: ctx.metrics.upstream_latency.with_label_values(&label),
            requeued: ctx.metrics.requeued.with_label_values(&label),
        });
        tokio::spawn(warm_up(shared.clone()));
        tokio::spawn(worker::run(shared.clone()));
        Ok(Self { shared })
    }

    /// This app's delivery, for the registry.
    pub fn deliver(&self) -> Arc<dyn Deliver> {
        self.shared.lane.clone()
    }

    /// Tokens waiting (ready or scheduled for retry).
    pub fn queue_depth(&self) -> usize {
        self.shared.lane.queue().depth()
    }

    /// For `/readyz`: an access token was granted, or Push Kit answered a send.
    pub fn ready(&self) -> bool {
        self.shared.answered.load(Ordering::Relaxed) || self.shared.token.obtained()
    }
}

/// Fetches the first access token right away; a failure is logged, and the
/// first send tries again.
async fn warm_up(shared: Arc<Shared>) {
    if let Err(e) = shared.token.header().await {
        if e.is_refusal() {
            shared.loud(
                "Huawei refused the OAuth credentials: check hms.app_id and the client secret",
                &e.to_string(),
                0,
            );
        } else {
            tracing::warn!(error = %e, "cannot obtain an HMS access token yet");
        }
    }
}

/// Why [`probe_access_token`] got no access token.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The HTTP client could not be built.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The token endpoint refused or could not be reached.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    /// The probe's own counter could not be made.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl ProbeError {
    /// True when Huawei said no to the credentials (not a network problem).
    pub fn is_refusal(&self) -> bool {
        matches!(self, ProbeError::Auth(e) if e.is_refusal())
    }
}

/// Asks `config`'s token endpoint for one access token with its credentials,
/// through the client a service would use (`check-config --connect`).
pub async fn probe_access_token(config: &HmsConfig) -> Result<(), ProbeError> {
    let client = http_client(config)?;
    let grants = IntCounter::new("hms_probe_grants", "access tokens a probe obtained")?;
    let token = auth::AccessToken::new(
        &config.app_id,
        config.client_secret.clone(),
        &config.token_uri,
        client,
        grants,
    );
    token.header().await?;
    Ok(())
}

/// Starts every HMS app (`[hms]` and its named apps) and registers them.
pub fn start(config: &Apps<HmsConfig>, ctx: &Context) -> Result<Registered, StartError> {
    let apps = config.try_map(|_, c| HmsService::start(c, ctx))?;
    Ok(Registered {
        platform: PLATFORM,
        apps: apps.map(|_, s| s.deliver()),
        front: Arc::new(HmsFront::new(apps)),
    })
}
