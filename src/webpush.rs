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
pub mod config;
pub mod ece;
pub mod message;
pub mod origin;
pub mod response;
pub mod vapid;
pub mod worker;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{Histogram, IntGauge};

use self::config::WebPushConfig;
use crate::delivery::{Deliver, Handoff, Refused};
use crate::floor::now_ms;
use crate::job::Platform;
use crate::metrics::Metrics;
use crate::outcome::Recorder;
use crate::queue::DispatchQueue;
use crate::retry::Backoff;

pub use client::WebPushMessage;

/// State shared by the worker and the handle.
pub(crate) struct Shared {
    client: client::Client,
    queue: Arc<DispatchQueue<WebPushMessage>>,
    recorder: Recorder,
    backoff: Backoff,
    max_retries: u32,
    concurrency: usize,
    last_loud_ms: AtomicU64,
    in_flight: IntGauge,
    latency: Histogram,
}

impl Shared {
    /// A push service refused our VAPID credentials (401/403): every message
    /// to it will fail the same way, so say so at error level, at most once
    /// per 10 s.
    fn loud(&self, origin: &str, status: u16, body: &[u8]) {
        let now = now_ms();
        let last = self.last_loud_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 10_000
            && self
                .last_loud_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
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
        let client = client::Client::new(
            config.vapid.clone(),
            &config.policy,
            &config.extra_roots,
            config.request_timeout,
            concurrency,
        )?;
        let label = [Platform::WebPush.as_str()];
        let shared = Arc::new(Shared {
            client,
            queue: Arc::new(DispatchQueue::new()),
            recorder,
            backoff,
            max_retries: config.max_retries,
            concurrency,
            last_loud_ms: AtomicU64::new(0),
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
        self.shared.queue.depth()
    }

    /// Stops the worker after its in-flight requests finish.
    pub fn close(&self) {
        self.shared.queue.close();
    }

    /// Records everything still queued as expired (`Shutdown`).
    pub fn abandon_queued(&self) -> u64 {
        self.shared.queue.abandon(&self.shared.recorder)
    }
}

impl Deliver for WebPushService {
    fn platform(&self) -> Platform {
        Platform::WebPush
    }

    fn deliver(&self, handoff: Handoff) -> Result<(), Refused> {
        let message = match message::decode_fields(&handoff.fields) {
            Ok(m) => m,
            Err(e) => return Err(Refused::message(e, handoff)),
        };
        let (job, send) = handoff.into_job(message);
        self.shared.queue.push_ranges(&job, send);
        Ok(())
    }

    fn queue_depth(&self) -> usize {
        WebPushService::queue_depth(self)
    }

    fn close(&self) {
        WebPushService::close(self);
    }

    fn abandon_queued(&self) -> u64 {
        WebPushService::abandon_queued(self)
    }

    fn forget_queued(&self) -> u64 {
        self.shared.queue.forget()
    }
}
