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
pub mod config;
pub mod conn;
pub mod message;
pub mod pool;
pub mod request;
pub mod response;
pub mod token;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus::{Histogram, IntCounter, IntGauge};

use self::config::{ApnsAuth, ApnsConfig};
use crate::delivery::{Deliver, Handoff, Refused};
use crate::floor::now_ms;
use crate::job::{Job, Platform};
use crate::metrics::Metrics;
use crate::outcome::Recorder;
use crate::queue::{DispatchQueue, Work};
use crate::retry::Backoff;

pub use message::ApnsMessage;

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
    queue: Arc<DispatchQueue<ApnsMessage>>,
    recorder: Recorder,
    metrics: Arc<crate::metrics::Metrics>,
    backoff: Backoff,
    max_retries: u32,
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
    last_credential_warning_ms: AtomicU64,
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
        let now = now_ms();
        let last = self.last_credential_warning_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 10_000
            && self
                .last_credential_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
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
            queue: Arc::new(DispatchQueue::new()),
            recorder,
            backoff,
            max_retries: config.max_retries,
            request_timeout: config.request_timeout,
            ping_interval: config.ping_interval,
            ping_timeout: config.ping_timeout,
            connected: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            stream_capacity: AtomicUsize::new(0),
            last_credential_warning_ms: AtomicU64::new(0),
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

    /// Queues a whole job. The caller has already admitted and recorded it.
    pub fn enqueue(&self, job: Arc<Job<ApnsMessage>>) {
        self.shared.queue.push(Work::whole(job));
    }

    /// The bundle id broadcasts and channels of this app use: `apns.topic`
    /// without Apple's push-type suffixes.
    pub fn bundle(&self) -> Option<&str> {
        self.default_topic.as_deref().map(broadcast::bundle_of)
    }

    /// Tokens waiting (ready or scheduled for retry).
    pub fn queue_depth(&self) -> usize {
        self.shared.queue.depth()
    }

    /// Connections open now; `/readyz` wants at least one.
    pub fn connected(&self) -> usize {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Streams in flight to APNs now, over all connections.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Stops the actors after their in-flight streams finish. Work still
    /// queued stays queued (see [`ApnsService::abandon_queued`]).
    pub fn close(&self) {
        self.shared.queue.close();
    }

    /// Records everything still queued as expired (reason `Shutdown`), so the
    /// books balance when the process exits with work left.
    pub fn abandon_queued(&self) -> u64 {
        self.shared.queue.abandon(&self.shared.recorder)
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

impl Deliver for ApnsService {
    fn platform(&self) -> Platform {
        Platform::Apns
    }

    fn deliver(&self, handoff: Handoff) -> Result<(), Refused> {
        let message = match ApnsMessage::from_stored(&handoff.fields, self.default_topic.as_deref())
        {
            Ok(m) => m,
            Err(e) => return Err(Refused::message(e, handoff)),
        };
        let (job, send) = handoff.into_job(message);
        self.shared.queue.push_ranges(&job, send);
        Ok(())
    }

    fn queue_depth(&self) -> usize {
        ApnsService::queue_depth(self)
    }

    fn close(&self) {
        ApnsService::close(self);
    }

    fn abandon_queued(&self) -> u64 {
        ApnsService::abandon_queued(self)
    }

    fn forget_queued(&self) -> u64 {
        self.shared.queue.forget()
    }
}
