//! Google delivery: FCM HTTP v1 (one token per request, OAuth2 service
//! account) or the legacy GCM-compatible multicast API (up to 1000 ids per
//! request, server key), whichever `[fcm]` / `[gcm]` configures.
//!
//! - [`message`]: the per-job data and options, validated at the API and
//!   pre-serialized for both APIs.
//! - [`auth`]: the cached OAuth2 access token.
//! - [`v1`]: v1 URL and answer classification.
//! - [`legacy`]: legacy answer classification.
//! - [`worker`]: the dispatch loop, pulling from the queue with a bounded
//!   number of requests in flight.
//!
//! [`GoogleService`] ties them together, in the shape of
//! [`ApnsService`](crate::apns::ApnsService): the API pushes jobs into its
//! queue, the worker delivers them and records outcomes.

pub mod auth;
pub mod config;
pub mod h2client;
pub mod legacy;
pub mod message;
pub mod token;
pub mod topic;
pub mod v1;
pub mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderValue;
use prometheus::{Histogram, IntCounter, IntGauge};
use rustls::pki_types::CertificateDer;

use self::config::GoogleConfig;
use crate::delivery::{Deliver, Handoff, Refused};
use crate::floor::now_ms;
use crate::job::{Job, Platform};
use crate::metrics::Metrics;
use crate::outcome::Recorder;
use crate::pace;
use crate::queue::{DispatchQueue, Work};
use crate::retry::Backoff;

pub use message::{
    FieldError, GoogleExtras, GoogleFields, GoogleMessage, MessageError, PayloadTooLarge, Target,
};

/// Errors starting Google delivery.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The service account key could not be loaded.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    /// The TLS configuration was refused.
    #[error("Google TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The HTTP client could not be built.
    #[error("Google HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The legacy server key cannot be sent as a header.
    #[error("gcm.server_key holds characters not allowed in an HTTP header")]
    ServerKey,
}

/// Which API, with what it needs.
pub(crate) enum Api {
    /// FCM v1: the send URL and the access token source.
    V1 {
        url: String,
        // Boxed: it dwarfs the legacy variant.
        token: Box<auth::AccessToken>,
    },
    /// Legacy: the send URL, `key=<server key>` and ids per request.
    Legacy {
        url: String,
        key: HeaderValue,
        batch_size: usize,
    },
}

/// State shared by the worker and the handle.
pub(crate) struct Shared {
    api: Api,
    platform: Platform,
    client: reqwest::Client,
    queue: Arc<DispatchQueue<GoogleMessage>>,
    recorder: Recorder,
    backoff: Backoff,
    max_retries: u32,
    concurrency: usize,
    /// The upstream answered at least one send request.
    answered: AtomicBool,
    /// At least one send request was started.
    sent: AtomicBool,
    /// Connection failures in a row, for the requeue delay.
    connect_failures: AtomicU32,
    last_loud_ms: AtomicU64,
    in_flight: IntGauge,
    latency: Histogram,
    requeued: IntCounter,
    /// FCM v1's pace (`max_per_minute`); legacy GCM has none.
    pace: Option<Pacing>,
    /// FCM v1 over our own HTTP/2 connections (`None`: legacy, or `http://`).
    h2: Option<h2client::Transport>,
    /// Per-request deadline (the h2 transport's; reqwest has its own).
    request_timeout: Duration,
}

/// The allowance every v1 request asks first, and its metrics.
pub(crate) struct Pacing {
    allowance: Arc<dyn pace::Allowance>,
    paced_seconds: prometheus::Counter,
    level: prometheus::Gauge,
}

impl Shared {
    /// Logs a gateway-wide problem (credentials, a message every token will
    /// fail on) at error level, at most once per 10 s so a burst of refusals is
    /// one line, not 100k.
    fn loud(&self, what: &str, reason: &str, status: u16) {
        let now = now_ms();
        let last = self.last_loud_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 10_000
            && self
                .last_loud_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(platform = %self.platform, reason, status, "{what}");
        }
    }
}

/// Builds the HTTP client every request of the section uses (`token_uri`
/// included): our rustls config with `ca_file` roots, ALPN offering h2 and
/// http/1.1 so either server works, and the per-request deadline.
fn http_client(
    extra_roots: &[CertificateDer<'static>],
    timeout: Duration,
    concurrency: usize,
) -> Result<reqwest::Client, StartError> {
    let tls = crate::tls::client_config(extra_roots, None, &[b"h2", b"http/1.1"])?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(Arc::unwrap_or_clone(tls))
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        // HTTP/1.1 servers need one connection per request in flight; keep them.
        .pool_max_idle_per_host(concurrency)
        .build()
        .map_err(StartError::Client)
}

/// The handle the API holds: where Google jobs go.
#[derive(Clone)]
pub struct GoogleService {
    shared: Arc<Shared>,
}

impl GoogleService {
    /// Builds the client for whichever API `config` names and spawns its
    /// worker. FCM v1 also starts fetching an access token at once, so bad
    /// credentials are logged at start and `/readyz` turns ready early.
    pub fn start(
        config: &GoogleConfig,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        backoff: Backoff,
    ) -> Result<Self, StartError> {
        Self::start_for(
            config,
            recorder,
            metrics,
            backoff,
            crate::floor::DEFAULT_APP,
            None,
        )
    }

    /// [`GoogleService::start`] for app `app` (the metrics label), paced by
    /// `allowance`, or by a [`pace::Bucket`] of `fcm.max_per_minute` on the
    /// runtime's clock when `None`.
    pub fn start_for(
        config: &GoogleConfig,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        backoff: Backoff,
        app: &str,
        allowance: Option<Arc<dyn pace::Allowance>>,
    ) -> Result<Self, StartError> {
        let pace = match config {
            GoogleConfig::Fcm(c) => Some(Pacing {
                allowance: allowance.unwrap_or_else(|| {
                    Arc::new(pace::Bucket::new(
                        c.max_per_minute,
                        Arc::new(pace::SystemClock::default()),
                    ))
                }),
                paced_seconds: metrics.fcm_paced_seconds.with_label_values(&[app]),
                level: metrics.fcm_allowance.with_label_values(&[app]),
            }),
            GoogleConfig::Gcm(_) => None,
        };
        let (api, platform, client, max_retries, concurrency) = match config {
            GoogleConfig::Fcm(c) => {
                let concurrency = c.concurrency.max(1) as usize;
                let client = http_client(&c.extra_roots, c.request_timeout, concurrency)?;
                let token = Box::new(auth::AccessToken::new(
                    &c.account,
                    client.clone(),
                    metrics.credential_refreshes.with_label_values(&["fcm"]),
                )?);
                let url = v1::send_url(&c.endpoint, &c.account.project_id);
                (
                    Api::V1 { url, token },
                    Platform::Fcm,
                    client,
                    c.max_retries,
                    concurrency,
                )
            }
            GoogleConfig::Gcm(c) => {
                let concurrency = c.concurrency.max(1) as usize;
                let client = http_client(&c.extra_roots, c.request_timeout, concurrency)?;
                let mut key = HeaderValue::from_str(&format!("key={}", c.server_key.expose()))
                    .map_err(|_| StartError::ServerKey)?;
                key.set_sensitive(true);
                let api = Api::Legacy {
                    url: c.endpoint.clone(),
                    key,
                    batch_size: c.batch_size.clamp(1, 1000) as usize,
                };
                (api, Platform::Gcm, client, c.max_retries, concurrency)
            }
        };
        let label = [platform.as_str()];
        let (h2, request_timeout) = match (config, &api) {
            (GoogleConfig::Fcm(c), Api::V1 { url, .. }) if c.connections > 0 => {
                let tls = crate::tls::client_config(&c.extra_roots, None, &[b"h2", b"http/1.1"])?;
                let transport = h2client::Transport::new(
                    url,
                    tls,
                    c.connections as usize,
                    h2client::TransportMetrics {
                        gauge: metrics.connections.with_label_values(&label),
                        connects_ok: metrics.connects.with_label_values(&[label[0], "ok"]),
                        connects_failed: metrics.connects.with_label_values(&[label[0], "error"]),
                    },
                );
                (transport, c.request_timeout)
            }
            (GoogleConfig::Fcm(c), _) => (None, c.request_timeout),
            (GoogleConfig::Gcm(c), _) => (None, c.request_timeout),
        };
        let shared = Arc::new(Shared {
            api,
            platform,
            client,
            queue: Arc::new(DispatchQueue::new()),
            recorder,
            backoff,
            max_retries,
            concurrency,
            answered: AtomicBool::new(false),
            sent: AtomicBool::new(false),
            connect_failures: AtomicU32::new(0),
            last_loud_ms: AtomicU64::new(0),
            in_flight: metrics.in_flight.with_label_values(&label),
            latency: metrics.upstream_latency.with_label_values(&label),
            requeued: metrics.requeued.with_label_values(&label),
            pace,
            h2,
            request_timeout,
        });
        if matches!(shared.api, Api::V1 { .. }) {
            tokio::spawn(warm_up(shared.clone()));
        }
        tokio::spawn(worker::run(shared.clone()));
        Ok(Self { shared })
    }

    /// `Fcm` (v1) or `Gcm` (legacy): the platform jobs must carry.
    pub fn platform(&self) -> Platform {
        self.shared.platform
    }

    /// Queues a whole job. The caller has already admitted and recorded it.
    pub fn enqueue(&self, job: Arc<Job<GoogleMessage>>) {
        self.shared.queue.push(Work::whole(job));
    }

    /// HTTP/2 connections open to FCM now; `None` when requests go through
    /// the pooled HTTP/1.1 client (legacy GCM, `http://`, an HTTP/1.1 server),
    /// whose connections are not visible.
    pub fn connected(&self) -> Option<usize> {
        self.shared
            .h2
            .as_ref()
            .filter(|t| !t.h1_only())
            .map(h2client::Transport::connected)
    }

    /// Tokens waiting (ready or scheduled for retry).
    pub fn queue_depth(&self) -> usize {
        self.shared.queue.depth()
    }

    /// For `/readyz`. v1: an access token was granted or FCM answered a send.
    /// Legacy (no credential to check up front): the endpoint answered a send,
    /// or nothing was sent yet.
    pub fn ready(&self) -> bool {
        let answered = self.shared.answered.load(Ordering::Relaxed);
        match &self.shared.api {
            Api::V1 { token, .. } => answered || token.obtained(),
            Api::Legacy { .. } => answered || !self.shared.sent.load(Ordering::Relaxed),
        }
    }

    /// Stops the worker after its in-flight requests finish. Work still queued
    /// stays queued (see [`GoogleService::abandon_queued`]).
    pub fn close(&self) {
        self.shared.queue.close();
    }

    /// Records everything still queued as expired (reason `Shutdown`), so the
    /// books balance when the process exits with work left.
    pub fn abandon_queued(&self) -> u64 {
        self.shared.queue.abandon(&self.shared.recorder)
    }

    /// FCM v1: uses the cluster's access token (one per service account for
    /// every gateway); a refresh asks Google only under the cluster's mint
    /// lock. Legacy (a static server key): no-op.
    pub fn share_credentials(&self, shared: crate::shared_credential::SharedCredentials) {
        if let Api::V1 { token, .. } = &self.shared.api {
            token.share(shared);
        }
    }
}

/// Fetches the first access token right away; failures are logged, and the
/// first send tries again.
async fn warm_up(shared: Arc<Shared>) {
    if let Api::V1 { token, .. } = &shared.api
        && let Err(e) = token.header().await
    {
        if e.is_refusal() {
            shared.loud(
                "FCM credentials refused: check fcm.service_account_file",
                &e.to_string(),
                0,
            );
        } else {
            tracing::warn!(error = %e, "cannot obtain an FCM access token yet");
        }
    }
}

impl Deliver for GoogleService {
    fn platform(&self) -> Platform {
        self.shared.platform
    }

    fn deliver(&self, handoff: Handoff) -> Result<(), Refused> {
        let message = match GoogleMessage::from_stored(&handoff.fields) {
            Ok(m) => m,
            Err(e) => return Err(Refused::message(e, handoff)),
        };
        let (job, send) = handoff.into_job(message);
        self.shared.queue.push_ranges(&job, send);
        Ok(())
    }

    fn queue_depth(&self) -> usize {
        GoogleService::queue_depth(self)
    }

    fn close(&self) {
        GoogleService::close(self);
    }

    fn abandon_queued(&self) -> u64 {
        GoogleService::abandon_queued(self)
    }

    fn forget_queued(&self) -> u64 {
        self.shared.queue.forget()
    }
}
