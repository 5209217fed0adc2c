//! Web Push (RFC 8030 push, RFC 8291 message encryption, RFC 8292 VAPID):
//! browsers as the third platform.
//!
//! [`ece`] encrypts one message per subscription (`aes128gcm`), [`vapid`]
//! signs the per-origin JWT, [`origin`] keeps the gateway from being steered
//! into the operator's own network, [`response`] is the outcome table,
//! [`client`] sends one request, [`message`] holds the checked request and its
//! stored forms, [`worker`] is the dispatch loop, and [`WebPushService`] ties
//! them to the queue as a [`Deliver`] platform.

pub mod client;
pub mod compose;
pub mod config;
pub mod declarative;
pub mod ece;
pub mod front;
pub mod message;
pub mod origin;
pub mod response;
pub mod vapid;
pub mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use prometheus::{Histogram, IntGauge};

use self::config::WebPushConfig;
use crate::floor::Throttle;
use crate::job::{
    Family, FamilyInfo, ListKind, ListRoute, Platform, PlatformInfo, TokenCodec, Totals,
};
use crate::metrics::Metrics;
use crate::outcome::Recorder;
use crate::platform::{Context, Deliver, Lane, LaneSettings, Registered};
use crate::retry::Backoff;
use crate::settings::Apps;

pub use client::WebPushMessage;
pub use front::WebPushFront;

/// Web Push's report family: `/webpush/report*`, a subscription shown as
/// its endpoint.
pub const FAMILY: Family = Family::new(&FamilyInfo {
    name: "webpush",
    label: "Web Push",
    section: "[webpush]",
    send_routes: &["webpush"],
    totals: Totals::Plain,
    lists: &[
        ListRoute {
            list: ListKind::Unregistered,
            path: "unregistered",
            key: "subscriptions",
            bare_tokens: false,
        },
        ListRoute {
            list: ListKind::Failures,
            path: "failures",
            key: "failures",
            bare_tokens: false,
        },
    ],
    token_key: "endpoint",
    gorush: None,
});

/// Web Push (RFC 8030) to browsers, encrypted per subscription.
pub const PLATFORM: Platform = Platform::new(&PlatformInfo {
    name: "webpush",
    family: FAMILY,
    codec: TokenCodec::Subscription,
});

/// State shared by the worker and the handle.
pub(crate) struct Shared {
    client: client::Client,
    /// This app's queue, and how verdicts settle.
    lane: Arc<Lane<WebPushMessage>>,
    concurrency: usize,
    loud: Throttle,
    in_flight: IntGauge,
    latency: Histogram,
}

impl Shared {
    /// A push service refused our VAPID credentials (401/403): every message
    /// to it will fail the same way, so say so at error level, at most once
    /// per 10 s.
    fn loud(&self, origin: &str, status: u16, body: &[u8]) {
        if self.loud.ready() {
            let detail = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            tracing::error!(
                platform = "webpush",
                origin,
                status,
                detail,
                "a push service refused the VAPID credentials: check webpush.vapid_key_file (subscriptions are bound to the applicationServerKey they were made with) and webpush.subject"
            );
        }
    }
}

/// Errors starting Web Push delivery.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The HTTP client.
    #[error("Web Push HTTP client: {0}")]
    Client(#[from] client::ClientError),
}

/// The handle the API holds: where Web Push jobs go.
#[derive(Clone)]
pub struct WebPushService {
    shared: Arc<Shared>,
    policy: origin::OriginPolicy,
}

impl WebPushService {
    /// Builds the client and spawns the worker.
    pub fn start(
        config: &WebPushConfig,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        backoff: Backoff,
    ) -> Result<Self, StartError> {
        let concurrency = config.concurrency.max(1) as usize;
        let label = [crate::webpush::PLATFORM.as_str()];
        let client = client::Client::new(
            config.vapid.clone(),
            &config.policy,
            &config.extra_roots,
            config.request_timeout,
            concurrency,
            metrics.transport(label[0]),
        )?;
        let lane = Lane::new(LaneSettings {
            platform: crate::webpush::PLATFORM,
            recorder,
            backoff,
            max_retries: config.max_retries,
            // A retry after the message's TTL would be refused: it ends unsent.
            deadline_reason: Some("TtlExpired"),
            rebuild: Box::new(message::decode_fields),
        });
        let shared = Arc::new(Shared {
            client,
            lane,
            concurrency,
            loud: Throttle::new(std::time::Duration::from_secs(10)),
            in_flight: metrics.in_flight.with_label_values(&label),
            latency: metrics.upstream_latency.with_label_values(&label),
        });
        tokio::spawn(worker::run(shared.clone()));
        Ok(Self {
            shared,
            policy: config.policy.clone(),
        })
    }

    /// The allow-list subscriptions are checked against.
    pub fn policy(&self) -> &origin::OriginPolicy {
        &self.policy
    }

    /// The VAPID public key (base64url): the site's `applicationServerKey`.
    pub fn public_key(&self) -> &str {
        self.shared.client.vapid().key().public_key_b64()
    }

    /// Subscriptions waiting (ready or scheduled for retry).
    pub fn queue_depth(&self) -> usize {
        self.shared.lane.queue().depth()
    }

    /// This app's delivery, for the registry.
    pub fn deliver(&self) -> Arc<dyn Deliver> {
        self.shared.lane.clone()
    }
}

/// Starts every Web Push app (`[webpush]` and its named apps) and registers them.
pub fn start(config: &Apps<WebPushConfig>, ctx: &Context) -> Result<Registered, StartError> {
    let apps = config.try_map(|_, c| {
        WebPushService::start(c, ctx.recorder.clone(), ctx.metrics.clone(), ctx.backoff)
    })?;
    Ok(Registered {
        platform: crate::webpush::PLATFORM,
        apps: apps.map(|_, s| s.deliver()),
        front: Arc::new(WebPushFront::new(apps)),
    })
}
