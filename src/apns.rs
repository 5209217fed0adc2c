//! Apple delivery: the HTTP/2 provider API over TLS.
//!
//! - [`message`]: the per-job payload and headers, validated at the API.
//! - [`request`]: builds one request (pure).
//! - [`response`]: Apple's reasons and their classification.
//! - [`auth`]: the cached ES256 provider token.
//! - [`conn`]: opens one h2 connection.
//! - [`worker`]: one actor per connection, pulling from the queue.
//! - [`pool`]: the supervisor that grows and shrinks the set of actors.
//!
//! [`ApnsService`] ties them together: the API pushes jobs into its queue, the
//! actors deliver them and record outcomes.

pub mod auth;
pub mod broadcast;
pub mod channels;
pub mod compose;
pub mod config;
pub mod conn;
pub mod front;
pub mod gorush;
pub mod live_activity;
pub mod message;
pub mod pool;
pub mod request;
pub mod response;
pub mod token;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus::{Histogram, IntCounter, IntGauge};

use self::config::{ApnsAuth, ApnsConfig};
use crate::floor::Throttle;
use crate::job::{
    Family, FamilyInfo, GorushPlatform, ListKind, ListRoute, Platform, PlatformInfo, TokenCodec,
    Totals,
};
use crate::metrics::Metrics;
use crate::outcome::Recorder;
use crate::platform::{Context, Deliver, Lane, LaneSettings, Registered};
use crate::retry::Backoff;
use crate::settings::Apps;

pub use front::ApnsFront;
pub use message::ApnsMessage;

/// APNs' report family: `/apns/report*`.
pub const FAMILY: Family = Family::new(&FamilyInfo {
    name: "apns",
    label: "APNs",
    section: "[apns]",
    send_routes: &["apns"],
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
        number: 1,
        word: "ios",
        label: "iOS",
    }),
});

/// Apple APNs, HTTP/2 provider API. Device tokens and broadcast channel ids
/// are kept as the text they are sent as.
pub const PLATFORM: Platform = Platform::new(&PlatformInfo {
    name: "apns",
    family: FAMILY,
    codec: TokenCodec::Text,
});

/// Starts every APNs app (`[apns]` and its named apps) and registers them.
pub async fn start(config: &Apps<ApnsConfig>, ctx: &Context) -> Result<Registered, StartError> {
    let apps = config.try_map(|_, c| {
        ApnsService::start(c, ctx.recorder.clone(), ctx.metrics.clone(), ctx.backoff)
    })?;
    if let Some(shared) = &ctx.credentials {
        for service in apps.values() {
            service.share_credentials(shared.clone()).await;
        }
    }
    Ok(Registered {
        platform: crate::apns::PLATFORM,
        apps: apps.map(|_, s| s.deliver()),
        front: Arc::new(ApnsFront::new(apps)),
    })
}

/// Errors starting APNs delivery.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The provider key could not be loaded.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    /// The TLS configuration was refused.
    #[error("APNs TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// host:port is not a valid URI authority.
    #[error("apns.endpoint does not make a valid host:port: {0}")]
    Endpoint(#[from] http::uri::InvalidUri),
}

/// State shared by every connection actor.
pub struct Shared {
    host: String,
    port: u16,
    authority: http::uri::Authority,
    tls: Arc<rustls::ClientConfig>,
    signer: Option<Arc<auth::ProviderToken>>,
    /// This app's queue, and how verdicts settle.
    lane: Arc<Lane<ApnsMessage>>,
    metrics: Arc<crate::metrics::Metrics>,
    request_timeout: Duration,
    /// Quiet time with streams in flight before a PING.
    ping_interval: Duration,
    /// How long a PING may wait for its PONG.
    ping_timeout: Duration,
    /// Connections open now (what `/readyz` reads).
    connected: AtomicUsize,
    /// Streams in flight over all connections.
    in_flight: AtomicUsize,
    /// Sum of the open connections' stream limits (the peer's
    /// SETTINGS_MAX_CONCURRENT_STREAMS): what the pool can have in flight.
    stream_capacity: AtomicUsize,
    credential_warnings: Throttle,
    in_flight_gauge: IntGauge,
    connections_gauge: IntGauge,
    latency: Histogram,
    requeued: IntCounter,
    stalled: IntCounter,
}

impl Shared {
    /// Logs a credential refusal at error level, at most once per 10 s so a
    /// burst of 100k refusals is one line, not 100k.
    fn warn_credentials(&self, reason: &str, status: u16) {
        if self.credential_warnings.ready() {
            tracing::error!(
                reason,
                status,
                "APNs refused the gateway's credentials: check apns.key_file, key_id, team_id (or the certificate) and the endpoint's environment"
            );
        }
    }
}

/// The handle the API holds: where APNs jobs go, and the default topic.
#[derive(Clone)]
pub struct ApnsService {
    shared: Arc<Shared>,
    /// `apns.topic`, used when a request names none.
    pub default_topic: Option<String>,
    /// Broadcast channel management on the management host.
    pub channels: Arc<channels::Channels>,
}

impl ApnsService {
    /// Builds the client side and starts the pool supervisor, which opens
    /// `min_connections` connection actors at once and more under load.
    /// Outcomes go to `recorder`.
    pub fn start(
        config: &ApnsConfig,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        backoff: Backoff,
    ) -> Result<Self, StartError> {
        let default_topic = config.topic.clone();
        let lane = Lane::new(LaneSettings {
            platform: crate::apns::PLATFORM,
            recorder,
            backoff,
            max_retries: config.max_retries,
            deadline_reason: None,
            rebuild: Box::new(move |stored| {
                ApnsMessage::from_stored(stored, default_topic.as_deref())
            }),
        });
        let (signer, identity) = match &config.auth {
            ApnsAuth::Token {
                key_pem,
                key_id,
                team_id,
            } => (
                Some(Arc::new(auth::ProviderToken::new(
                    key_pem.expose().as_bytes(),
                    key_id,
                    team_id,
                )?)),
                None,
            ),
            ApnsAuth::Certificate { chain, key } => {
                (None, Some((chain.clone(), key.as_ref().clone_key())))
            }
        };
        // Parsed once here, not per request.
        let authority = http::uri::Authority::try_from(format!(
            "{}:{}",
            config.upstream.host, config.upstream.port
        ))?;
        let tls = crate::tls::client_config(&config.upstream.extra_roots, identity, &[b"h2"])?;
        let channels = Arc::new(channels::Channels::new(
            &config.channels,
            tls.clone(),
            signer.clone(),
            config.request_timeout,
            metrics.channel_requests.clone(),
        )?);
        let shared = Arc::new(Shared {
            host: config.upstream.host.clone(),
            port: config.upstream.port,
            authority,
            tls,
            signer,
            lane,
            request_timeout: config.request_timeout,
            ping_interval: config.ping_interval,
            ping_timeout: config.ping_timeout,
            connected: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            stream_capacity: AtomicUsize::new(0),
            credential_warnings: Throttle::new(Duration::from_secs(10)),
            in_flight_gauge: metrics.in_flight.with_label_values(&["apns"]),
            connections_gauge: metrics.connections.with_label_values(&["apns"]),
            latency: metrics.upstream_latency.with_label_values(&["apns"]),
            requeued: metrics.requeued.with_label_values(&["apns"]),
            stalled: metrics.stalled.with_label_values(&["apns"]),
            metrics,
        });
        tokio::spawn(pool::supervise(
            shared.clone(),
            pool::Limits {
                min: config.min_connections.max(1) as usize,
                max: config.max_connections.max(config.min_connections).max(1) as usize,
                grow_interval: config.grow_interval,
                idle_shrink: config.idle_shrink,
            },
        ));
        Ok(Self {
            shared,
            default_topic: config.topic.clone(),
            channels,
        })
    }

    /// The bundle id broadcasts and channels of this app use: `apns.topic`
    /// without Apple's push-type suffixes.
    pub fn bundle(&self) -> Option<&str> {
        self.default_topic.as_deref().map(broadcast::bundle_of)
    }

    /// This app's delivery, for the registry.
    pub fn deliver(&self) -> Arc<dyn Deliver> {
        self.shared.lane.clone()
    }

    /// Tokens waiting (ready or scheduled for retry).
    pub fn queue_depth(&self) -> usize {
        self.shared.lane.queue().depth()
    }

    /// Connections open now; `/readyz` wants at least one.
    pub fn connected(&self) -> usize {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Streams in flight to APNs now, over all connections.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Token auth: uses the cluster's provider token (one per key for every
    /// gateway) instead of signing its own. Reads it once now, then every
    /// [`auth::SYNC_EVERY`] while the service lives. Certificate auth: no-op.
    pub async fn share_credentials(&self, shared: crate::shared_credential::SharedCredentials) {
        let Some(signer) = &self.shared.signer else {
            return;
        };
        signer.share(shared);
        signer.sync().await;
        let weak = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(auth::SYNC_EVERY).await;
                let Some(shared) = weak.upgrade() else { return };
                if let Some(signer) = &shared.signer {
                    signer.sync().await;
                }
            }
        });
    }
}
