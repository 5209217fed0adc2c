//! Prometheus metrics, owned by one [`Metrics`] value passed to whoever records
//! (no global registry). Gauges that mirror state (queue depth, pending) are
//! set at scrape time by the `/metrics` handler, so the hot path never touches them.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::job::{Catalog, OutcomeKind, Platform};

/// Every metric the gateway exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Tokens accepted by `/…/send`, by platform.
    pub accepted: IntCounterVec,
    /// Tokens refused at the API, by platform and reason.
    pub rejected: IntCounterVec,
    /// Terminal outcomes, by platform, outcome and reason.
    pub outcomes: IntCounterVec,
    /// Upstream answers received (one per token attempt), by platform.
    pub attempts: IntCounterVec,
    /// `attempts` per platform of the catalog, resolved once: counted for
    /// every token, so no label lookup per token.
    attempts_by_platform: Vec<(Platform, IntCounter)>,
    /// Attempts that will be retried, by platform and reason.
    pub retries: IntCounterVec,
    /// Work put back without counting an attempt (GOAWAY, refused streams).
    pub requeued: IntCounterVec,
    /// Tokens possibly delivered twice (in flight on a connection that dropped).
    pub possible_duplicates: IntCounterVec,
    /// API requests answered with an error, by HTTP status and error code.
    pub api_errors: IntCounterVec,
    /// Upstream round-trip time per request.
    pub upstream_latency: HistogramVec,
    /// Upstream connections open now.
    pub connections: IntGaugeVec,
    /// Upstream connections opened, by platform and result (ok, error).
    pub connects: IntCounterVec,
    /// Requests in flight to the upstream now.
    pub in_flight: IntGaugeVec,
    /// Tokens waiting in the dispatch queue (ready or scheduled for retry).
    pub queue_depth: IntGaugeVec,
    /// Tokens accepted and not yet in a terminal outcome, all platforms.
    pub pending: IntGauge,
    /// `queue.capacity`: what `pending` may reach.
    pub queue_capacity: IntGauge,
    /// Seconds the oldest unfinished token here has been due (0 when none).
    pub oldest_pending_seconds: prometheus::Gauge,
    /// Queued tokens held in memory (the disk store's window of its queue).
    pub window_tokens: IntGauge,
    /// Queued tokens waiting in the disk store for room in the window.
    pub stored_tokens: IntGauge,
    /// Report list entries dropped because the list was full.
    pub list_dropped: IntCounterVec,
    /// Credential refreshes (APNs provider token, OAuth access token).
    pub credential_refreshes: IntCounterVec,
    /// POST /…/send handling time.
    pub api_latency: Histogram,
    /// Webhook events dropped, by reason (buffer_full, receiver_failed).
    pub webhook_dropped: IntCounterVec,
    /// Webhook events delivered.
    pub webhook_sent: IntCounter,
    /// Upstream connections declared dead after an unanswered PING, by platform.
    pub stalled: IntCounterVec,
    /// Tokens still undelivered when a shutdown's grace ran out, by platform:
    /// recorded as expired (`Shutdown`), exported so the loss is visible.
    pub shutdown_abandoned: IntCounterVec,
    /// APNs broadcasts (one per channel push) by app and outcome: the
    /// `push_kind="broadcast"` view of `pushgate_outcomes_total{platform="apns"}`.
    pub broadcasts: IntCounterVec,
    /// APNs channel management requests, by operation and HTTP status.
    pub channel_requests: IntCounterVec,
    /// Seconds FCM sends waited for the project's pace (`max_per_minute`), by app.
    pub fcm_paced_seconds: prometheus::CounterVec,
    /// Messages the FCM pacer would let go at once now, by app.
    pub fcm_allowance: prometheus::GaugeVec,
    /// gRPC calls answered, by method (`package.Service/Method`) and status
    /// code (`OK`, `INVALID_ARGUMENT`, …).
    pub grpc_requests: IntCounterVec,
    /// Redis writes too few replicas acknowledged (`queue.redis_min_replicas`),
    /// by what was written: `job` (the send answered 503), `credential`,
    /// `quota` (kept all the same).
    pub redis_replica_ack_failures: IntCounterVec,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        Self::with_catalog(Catalog::new(&[]))
    }

    /// The connection counters of `platform`'s HTTP/2 transports.
    pub fn transport(&self, platform: &str) -> crate::http2::TransportMetrics {
        crate::http2::TransportMetrics {
            gauge: self.connections.with_label_values(&[platform]),
            connects_ok: self.connects.with_label_values(&[platform, "ok"]),
            connects_failed: self.connects.with_label_values(&[platform, "error"]),
        }
    }

    /// Registers every metric, with the per-token counters of `catalog`'s
    /// platforms resolved up front.
    pub fn with_catalog(catalog: Catalog) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let gauge =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
                let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(g.clone()))?;
                Ok(g)
            };
        let accepted = counter(
            "pushgate_tokens_accepted_total",
            "Tokens accepted for delivery",
            &["platform", "app"],
        )?;
        let rejected = counter(
            "pushgate_tokens_rejected_total",
            "Tokens refused at the API",
            &["platform", "reason"],
        )?;
        let outcomes = counter(
            "pushgate_outcomes_total",
            "Terminal outcomes per token",
            &["platform", "app", "outcome", "reason"],
        )?;
        let attempts = counter(
            "pushgate_attempts_total",
            "Upstream answers received, one per token attempt",
            &["platform"],
        )?;
        let retries = counter(
            "pushgate_retries_total",
            "Attempts scheduled for retry",
            &["platform", "reason"],
        )?;
        let requeued = counter(
            "pushgate_requeued_total",
            "Tokens put back without an attempt (GOAWAY, refused stream)",
            &["platform"],
        )?;
        let possible_duplicates = counter(
            "pushgate_possible_duplicates_total",
            "Tokens in flight on a connection that dropped, resent",
            &["platform"],
        )?;
        let api_errors = counter(
            "pushgate_api_errors_total",
            "API requests answered with an error",
            &["status", "error"],
        )?;
        let connects = counter(
            "pushgate_upstream_connects_total",
            "Upstream connection attempts",
            &["platform", "result"],
        )?;
        let list_dropped = counter(
            "pushgate_report_list_dropped_total",
            "Report list entries dropped (list full)",
            &["platform", "list"],
        )?;
        let webhook_dropped = counter(
            "pushgate_webhook_dropped_total",
            "Webhook events dropped",
            &["reason"],
        )?;
        let webhook_sent =
            IntCounter::new("pushgate_webhook_sent_total", "Webhook events delivered")?;
        registry.register(Box::new(webhook_sent.clone()))?;
        let credential_refreshes = counter(
            "pushgate_credential_refreshes_total",
            "Provider or access token refreshes",
            &["platform"],
        )?;
        let redis_replica_ack_failures = counter(
            "pushgate_redis_replica_ack_failures_total",
            "Redis writes too few replicas acknowledged in time (queue.redis_min_replicas)",
            &["write"],
        )?;
        let stalled = counter(
            "pushgate_upstream_stalled_total",
            "Upstream connections closed because a PING went unanswered",
            &["platform"],
        )?;
        let shutdown_abandoned = counter(
            "pushgate_shutdown_abandoned_total",
            "Tokens left undelivered when the shutdown grace ran out (recorded as expired: Shutdown)",
            &["platform"],
        )?;
        let broadcasts = counter(
            "pushgate_apns_broadcasts_total",
            "APNs broadcast pushes (push_kind=broadcast), by terminal outcome",
            &["app", "push_kind", "outcome"],
        )?;
        let channel_requests = counter(
            "pushgate_apns_channel_requests_total",
            "APNs broadcast channel management requests, by operation and status",
            &["operation", "status"],
        )?;
        let fcm_paced_seconds = prometheus::CounterVec::new(
            Opts::new(
                "pushgate_fcm_paced_seconds_total",
                "Seconds FCM sends waited for the project's max_per_minute",
            ),
            &["app"],
        )?;
        registry.register(Box::new(fcm_paced_seconds.clone()))?;
        let fcm_allowance = prometheus::GaugeVec::new(
            Opts::new(
                "pushgate_fcm_allowance",
                "Messages the FCM pacer lets go at once now (token bucket level)",
            ),
            &["app"],
        )?;
        registry.register(Box::new(fcm_allowance.clone()))?;
        let connections = gauge(
            "pushgate_upstream_connections",
            "Upstream connections open",
            &["platform"],
        )?;
        let in_flight = gauge(
            "pushgate_in_flight",
            "Upstream requests in flight",
            &["platform"],
        )?;
        let queue_depth = gauge(
            "pushgate_queue_depth",
            "Tokens waiting in the dispatch queue",
            &["platform"],
        )?;
        let pending = IntGauge::new(
            "pushgate_pending_tokens",
            "Tokens accepted and not yet in a terminal outcome",
        )?;
        registry.register(Box::new(pending.clone()))?;
        let queue_capacity = IntGauge::new(
            "pushgate_queue_capacity",
            "queue.capacity: the tokens pending may reach before sends answer 503",
        )?;
        registry.register(Box::new(queue_capacity.clone()))?;
        let oldest_pending_seconds = prometheus::Gauge::new(
            "pushgate_oldest_pending_seconds",
            "Age of the oldest unfinished accepted job or chunk here (scheduled ones count from their send time); 0 when none",
        )?;
        registry.register(Box::new(oldest_pending_seconds.clone()))?;
        let window_tokens = IntGauge::new(
            "pushgate_queue_window_tokens",
            "Queued tokens held in memory: with the disk store, a window of its queue of at most queue.window",
        )?;
        registry.register(Box::new(window_tokens.clone()))?;
        let stored_tokens = IntGauge::new(
            "pushgate_queue_stored_tokens",
            "Queued tokens waiting in the disk store for room in the window (read back as workers drain it)",
        )?;
        registry.register(Box::new(stored_tokens.clone()))?;
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(
                "pushgate_upstream_latency_seconds",
                "Upstream request round trip",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["platform"],
        )?;
        registry.register(Box::new(upstream_latency.clone()))?;
        let api_latency = Histogram::with_opts(
            HistogramOpts::new(
                "pushgate_api_send_seconds",
                "Time to validate and enqueue a send request",
            )
            .buckets(vec![
                0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
        )?;
        registry.register(Box::new(api_latency.clone()))?;
        let grpc_requests = counter(
            "pushgate_grpc_requests_total",
            "gRPC calls answered, by method and status code",
            &["method", "code"],
        )?;
        let attempts_by_platform = catalog
            .platforms()
            .map(|p| (p, attempts.with_label_values(&[p.as_str()])))
            .collect();
        Ok(Self {
            registry,
            accepted,
            rejected,
            outcomes,
            attempts,
            attempts_by_platform,
            retries,
            requeued,
            possible_duplicates,
            api_errors,
            upstream_latency,
            connections,
            connects,
            in_flight,
            queue_depth,
            pending,
            queue_capacity,
            oldest_pending_seconds,
            window_tokens,
            stored_tokens,
            list_dropped,
            credential_refreshes,
            api_latency,
            webhook_dropped,
            webhook_sent,
            stalled,
            shutdown_abandoned,
            broadcasts,
            channel_requests,
            fcm_paced_seconds,
            fcm_allowance,
            grpc_requests,
            redis_replica_ack_failures,
        })
    }

    /// Counts one terminal outcome.
    pub fn outcome(&self, platform: Platform, app: &str, kind: OutcomeKind, reason: &str) {
        self.outcomes
            .with_label_values(&[platform.as_str(), app, kind.as_str(), reason])
            .inc();
    }

    fn attempted(&self, platform: Platform) {
        match self
            .attempts_by_platform
            .iter()
            .find(|(p, _)| *p == platform)
        {
            Some((_, counter)) => counter.inc(),
            None => self.attempts.with_label_values(&[platform.as_str()]).inc(),
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

impl crate::outcome::Sink for Metrics {
    fn accepted(
        &self,
        progress: &std::sync::Arc<crate::job::JobProgress>,
        n: u64,
        arrival: crate::outcome::Arrival,
    ) {
        use crate::outcome::Arrival;
        if matches!(arrival, Arrival::New | Arrival::Grown) {
            self.accepted
                .with_label_values(&[progress.platform.as_str(), &progress.app])
                .inc_by(n);
        }
    }

    fn retried(&self, progress: &crate::job::JobProgress, reason: &str) {
        self.attempted(progress.platform);
        self.retries
            .with_label_values(&[progress.platform.as_str(), reason])
            .inc();
    }

    fn possible_duplicates(&self, progress: &crate::job::JobProgress, n: u64) {
        self.possible_duplicates
            .with_label_values(&[progress.platform.as_str()])
            .inc_by(n);
    }

    fn finished(&self, f: &crate::outcome::Finished<'_>) {
        let platform = f.progress.platform;
        if f.attempted {
            self.attempted(platform);
        }
        let reason = match f.outcome {
            crate::job::Outcome::Failed { reason, .. }
            | crate::job::Outcome::Expired { reason } => reason.as_ref(),
            _ => "",
        };
        self.outcome(platform, &f.progress.app, f.outcome.kind(), reason);
    }
}
