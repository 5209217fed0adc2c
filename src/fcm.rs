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
pub mod blocks;
pub mod compose;
pub mod config;
pub mod front;
pub mod gorush;
pub mod legacy;
pub mod message;
pub mod token;
pub mod topic;
pub mod v1;
pub mod worker;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use http::HeaderValue;
use prometheus::{Histogram, IntCounter, IntGauge};
use rustls::pki_types::CertificateDer;

use self::config::GoogleConfig;
use crate::floor::Throttle;
use crate::job::{
    Family, FamilyInfo, GorushPlatform, ListKind, ListRoute, Platform, PlatformInfo, TokenCodec,
    Totals,
};
use crate::metrics::Metrics;
use crate::outcome::Recorder;
use crate::pace;
use crate::platform::{Context, Deliver, Lane, LaneSettings, Registered};
use crate::retry::Backoff;
use crate::settings::Apps;

pub use front::GoogleFront;

/// Google's report family: `/gcm/report*`, GoCM's routes, for FCM v1 and
/// legacy GCM alike (one of them is configured).
pub const FAMILY: Family = Family::new(&FamilyInfo {
    name: "gcm",
    label: "Google (FCM/GCM)",
    section: "[fcm] or [gcm]",
    send_routes: &["gcm", "fcm"],
    totals: Totals::GoCm,
    lists: &[
        ListRoute {
            list: ListKind::Unregistered,
            path: "notregistered",
            key: "tokens",
            bare_tokens: true,
        },
        ListRoute {
            list: ListKind::Canonical,
            path: "canonical",
            key: "canonical_replacements",
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
        number: 2,
        word: "android",
        label: "Android",
    }),
});

/// Firebase Cloud Messaging HTTP v1.
pub const FCM: Platform = Platform::new(&PlatformInfo {
    name: "fcm",
    family: FAMILY,
    codec: TokenCodec::Text,
});

/// The legacy GCM-compatible multicast API.
pub const GCM: Platform = Platform::new(&PlatformInfo {
    name: "gcm",
    family: FAMILY,
    codec: TokenCodec::Text,
});
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
    /// This app's queue, and how verdicts settle.
    lane: Arc<Lane<GoogleMessage>>,
    concurrency: usize,
    /// The upstream answered at least one send request.
    answered: AtomicBool,
    /// At least one send request was started.
    sent: AtomicBool,
    /// Connection failures in a row, for the requeue delay.
    connect_failures: AtomicU32,
    loud: Throttle,
    in_flight: IntGauge,
    latency: Histogram,
    requeued: IntCounter,
    /// FCM v1's pace (`max_per_minute`); legacy GCM has none.
    pace: Option<Pacing>,
    /// FCM v1 over our own HTTP/2 connections (`None`: legacy, or `http://`).
    h2: Option<V1Transport>,
    /// Per-request deadline (the h2 transport's; reqwest has its own).
    request_timeout: Duration,
}

/// FCM v1 over our own HTTP/2 connections: the connections, and the one
/// URI every request goes to.
struct V1Transport {
    connections: crate::http2::Transport,
    uri: http::Uri,
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
        if self.loud.ready() {
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
                    crate::fcm::FCM,
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
                (api, crate::fcm::GCM, client, c.max_retries, concurrency)
            }
        };
        let label = [platform.as_str()];
        let (h2, request_timeout) = match (config, &api) {
            (GoogleConfig::Fcm(c), Api::V1 { url, .. }) if c.connections > 0 => {
                let tls = crate::tls::client_config(&c.extra_roots, None, &[b"h2", b"http/1.1"])?;
                let uri: Option<http::Uri> = url.parse().ok();
                let transport = uri.and_then(|uri| {
                    let connections = crate::http2::Transport::new(
                        platform.as_str(),
                        &uri,
                        tls,
                        c.connections as usize,
                        metrics.transport(label[0]),
                    )?;
                    Some(V1Transport { connections, uri })
                });
                (transport, c.request_timeout)
            }
            (GoogleConfig::Fcm(c), _) => (None, c.request_timeout),
            (GoogleConfig::Gcm(c), _) => (None, c.request_timeout),
        };
        let lane = Lane::new(LaneSettings {
            platform,
            recorder,
            backoff,
            max_retries,
            deadline_reason: None,
            rebuild: Box::new(GoogleMessage::from_stored),
        });
        let shared = Arc::new(Shared {
            api,
            platform,
            client,
            lane,
            concurrency,
            answered: AtomicBool::new(false),
            sent: AtomicBool::new(false),
            connect_failures: AtomicU32::new(0),
            loud: Throttle::new(Duration::from_secs(10)),
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

    /// This app's delivery, for the registry.
    pub fn deliver(&self) -> Arc<dyn Deliver> {
        self.shared.lane.clone()
    }

    /// HTTP/2 connections open to FCM now; `None` when requests go through
    /// the pooled HTTP/1.1 client (legacy GCM, `http://`, an HTTP/1.1 server),
    /// whose connections are not visible.
    pub fn connected(&self) -> Option<usize> {
        self.shared
            .h2
            .as_ref()
            .filter(|t| !t.connections.h1_only())
            .map(|t| t.connections.connected())
    }

    /// Tokens waiting (ready or scheduled for retry).
    pub fn queue_depth(&self) -> usize {
        self.shared.lane.queue().depth()
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

/// Starts every Google app (`[fcm]` or `[gcm]`, and its named apps) and
/// registers them. FCM apps of one Firebase project share one pace.
pub fn start(config: &Apps<GoogleConfig>, ctx: &Context) -> Result<Registered, StartError> {
    let paces = paces(config, ctx.quota.as_ref());
    let apps = config.try_map(|name, c| {
        let pace = match c {
            GoogleConfig::Fcm(f) => paces.get(&f.account.project_id).cloned(),
            GoogleConfig::Gcm(_) => None,
        };
        // Named for its metrics (`fcm_paced_seconds_total{app}`), paced by its project.
        GoogleService::start_for(
            c,
            ctx.recorder.clone(),
            ctx.metrics.clone(),
            ctx.backoff,
            name,
            pace,
        )
    })?;
    if let Some(shared) = &ctx.credentials {
        for service in apps.values() {
            service.share_credentials(shared.clone());
        }
    }
    let platform = apps.default_app().platform();
    Ok(Registered {
        platform,
        apps: apps.map(|_, s| s.deliver()),
        front: Arc::new(GoogleFront::new(platform, apps)),
    })
}

/// One FCM pace per Firebase project: Firebase counts `max_per_minute` per
/// project, so the apps sending for one project share one bucket (at the
/// smallest `max_per_minute` any of them asks for) and, when the cluster
/// shares a quota store, every gateway leases from one bucket in it.
fn paces(
    config: &Apps<GoogleConfig>,
    shared: Option<&Arc<dyn pace::shared::QuotaStore>>,
) -> BTreeMap<String, Arc<dyn pace::Allowance>> {
    let mut per_minute: BTreeMap<&str, u64> = BTreeMap::new();
    for google in config.values() {
        if let GoogleConfig::Fcm(c) = google {
            let slot = per_minute
                .entry(&c.account.project_id)
                .or_insert(c.max_per_minute);
            if *slot != c.max_per_minute {
                tracing::warn!(
                    project = %c.account.project_id,
                    max_per_minute = (*slot).min(c.max_per_minute),
                    "FCM apps of one project set different max_per_minute: the project's one bucket uses the smallest"
                );
            }
            *slot = (*slot).min(c.max_per_minute);
        }
    }
    per_minute
        .into_iter()
        .map(|(project, max_per_minute)| {
            let clock = Arc::new(pace::SystemClock::default());
            let allowance: Arc<dyn pace::Allowance> = match shared {
                Some(store) => {
                    tracing::info!(
                        project,
                        max_per_minute,
                        "FCM pace shared by the cluster (redis)"
                    );
                    pace::shared::SharedBucket::start(project, max_per_minute, store.clone(), clock)
                }
                None => Arc::new(pace::Bucket::new(max_per_minute, clock)),
            };
            (project.to_owned(), allowance)
        })
        .collect()
}

#[cfg(test)]
mod pace_tests {
    use super::*;
    use crate::fcm::config::FcmSection;
    use crate::mock::fcm::ServiceAccountFixture;

    /// Firebase counts the quota per project: `[fcm]` and an app of the same
    /// project share one bucket (at the smaller `max_per_minute`); an app of
    /// another project has its own.
    #[tokio::test]
    async fn apps_of_one_firebase_project_share_one_pace() {
        let dir = std::env::temp_dir().join(format!("pushgate-paces-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let app = |project: &str, max_per_minute: u64| {
            let path = dir.join(format!("{project}.json"));
            let fixture = ServiceAccountFixture::generate(project).expect("a key");
            std::fs::write(&path, fixture.to_json("https://oauth2.example/token"))
                .expect("written");
            let section = FcmSection {
                service_account_file: path.display().to_string(),
                max_per_minute,
                ..Default::default()
            };
            let mut errors = Vec::new();
            let config = section.validate(&mut errors).expect("valid");
            assert!(errors.is_empty(), "{errors:?}");
            GoogleConfig::Fcm(config)
        };
        let apps = Apps::new(
            app("project-one", 600_000),
            BTreeMap::from([
                ("same".to_owned(), app("project-one", 6_000)),
                ("other".to_owned(), app("project-two", 60_000)),
            ]),
        );
        let paces = paces(&apps, None);
        assert_eq!(
            paces.keys().map(String::as_str).collect::<Vec<_>>(),
            ["project-one", "project-two"]
        );
        // A bucket holds a tenth of a second's worth.
        assert_eq!(paces["project-one"].available(), 10.0);
        assert_eq!(paces["project-two"].available(), 100.0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
