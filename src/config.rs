//! Configuration: a TOML file, then `PUSHGATE_<SECTION>_<KEY>` environment
//! overrides, then validation that reads every key file and certificate up
//! front. A bad config is refused at start with the key, the value and the fix,
//! all problems at once rather than one per restart.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::api::gorush::GorushSection;
pub use crate::apns::config::{ApnsAuth, ApnsConfig, ApnsSection};
pub use crate::fcm::config::{
    FcmConfig, FcmSection, GcmConfig, GcmSection, GoogleConfig, ServiceAccount,
};
pub use crate::hms::config::{HmsConfig, HmsSection};
use crate::retry::Backoff;
pub use crate::settings::{Apps, ConfigError, ConfigErrors, Secret, Upstream, invalid};
pub use crate::shared::link::{RedisQueueConfig, SentinelConfig, masked_url};
pub use crate::shared::replicas::ReplicaAcks;
pub use crate::webpush::config::{WebPushConfig, WebPushSection};

// ===== file format =====

/// The file as written: every key optional, defaults filled in. Unknown keys
/// are refused so that a typo is an error, not a silently ignored setting.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// `[server]`.
    pub server: ServerSection,
    /// `[queue]`.
    pub queue: QueueSection,
    /// `[report]`.
    pub report: ReportSection,
    /// `[retry]`.
    pub retry: RetrySection,
    /// `[apns]`; absent disables APNs.
    pub apns: Option<ApnsSection>,
    /// `[fcm]`; absent disables FCM v1.
    pub fcm: Option<FcmSection>,
    /// `[gcm]`; absent disables legacy GCM.
    pub gcm: Option<GcmSection>,
    /// `[webhook]`; absent (or an empty url) sends no outcome events.
    pub webhook: Option<WebhookSection>,
    /// `[webpush]`; absent disables Web Push.
    pub webpush: Option<WebPushSection>,
    /// `[gorush]`: the gorush-compatible routes (on by default).
    pub gorush: GorushSection,
    /// `[grpc]`: the gRPC listener (off unless `listen` is set).
    pub grpc: GrpcSection,
    /// `[hms]`; absent disables Huawei Push Kit.
    pub hms: Option<HmsSection>,
    /// `[log]`: how log lines are written.
    pub log: LogSection,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `text` (one readable line per event) or `json` (one JSON object per
    /// line, for log shippers). `--log-format` wins over it.
    pub format: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: "text".into(),
        }
    }
}

/// How log lines are written (`[log] format`, `--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The format a `[log] format` value names (`human` is `text`, as the
    /// command line first called it); `None` for another word.
    pub fn parse(word: &str) -> Option<Self> {
        match word.trim().to_ascii_lowercase().as_str() {
            "text" | "human" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// `[webhook]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSection {
    /// Where outcome batches are POSTed; empty disables the webhook.
    pub url: String,
    /// HMAC-SHA256 key for `X-Pushgate-Signature`.
    pub secret: Secret,
    /// Events per POST.
    pub batch_size: u32,
    /// Milliseconds an event waits for its batch to fill.
    pub flush_ms: u64,
    /// Events buffered at most; more are dropped and counted.
    pub max_buffer: u32,
    /// POST attempts per batch.
    pub max_attempts: u32,
    /// Extra trusted root (PEM) for a private receiver.
    pub ca_file: String,
}

impl Default for WebhookSection {
    fn default() -> Self {
        Self {
            url: String::new(),
            secret: Secret::default(),
            batch_size: 500,
            flush_ms: 1000,
            max_buffer: 100_000,
            max_attempts: 5,
            ca_file: String::new(),
        }
    }
}

/// Default `server.max_body_bytes`: 80 MiB, so `queue.capacity`'s default of
/// 1,000,000 APNs tokens fits in one request as JSON (67–70 MB with the
/// quotes, commas and a space) or as a form (72 MB), with room for the payload.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 80 * 1024 * 1024;

/// `[server]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address the API listens on.
    pub listen: String,
    /// Bearer keys accepted on every route but `/healthz`; empty leaves the API open.
    pub api_keys: Vec<Secret>,
    /// Largest request body accepted.
    pub max_body_bytes: u64,
    /// Seconds to keep delivering after SIGTERM before giving up.
    pub shutdown_grace: u64,
    /// PEM certificate chain for HTTPS on `listen` (with `tls_key`); empty = plain HTTP.
    pub tls_cert: String,
    /// PEM private key for `tls_cert`.
    pub tls_key: String,
    /// Seconds a client has to send a request's headers (and, on HTTPS, to
    /// finish the TLS handshake) before the connection is closed.
    pub header_timeout_s: u64,
    /// Seconds a request body may stop arriving before the request is
    /// answered 408 and the connection closed.
    pub body_timeout_s: u64,
    /// Seconds a connection may stay open with nothing sent either way
    /// (keep-alive, or a client that never sends a request) before it is closed.
    pub idle_timeout_s: u64,
    /// Open client connections at most; a connection above it is closed at
    /// once, so the process never runs out of file descriptors.
    pub max_connections: u64,
    /// HTTP/2: concurrent streams per client connection.
    pub max_streams_per_connection: u32,
    /// Seconds a finished job stays readable (`GET /jobs/{id}`, `GET
    /// /jobs`) before it expires, on every backend.
    pub job_retention_s: u64,
    /// Seconds the first answer to a request with an `Idempotency-Key` is
    /// kept (per API key) and replayed to a retry with the same key.
    pub idempotency_ttl_s: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            api_keys: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            shutdown_grace: 30,
            tls_cert: String::new(),
            tls_key: String::new(),
            header_timeout_s: 15,
            body_timeout_s: 30,
            idle_timeout_s: 60,
            max_connections: 10_000,
            max_streams_per_connection: 128,
            job_retention_s: 7 * 24 * 3600,
            idempotency_ttl_s: 24 * 3600,
        }
    }
}

/// `[queue]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSection {
    /// Tokens accepted and unfinished, all platforms, before `/…/send` answers 503.
    pub capacity: u64,
    /// `disk` (default: an embedded store in `data_dir`, survives restarts),
    /// `memory` (one process, nothing survives it) or `redis` (a Redis
    /// stream shared by several gateways).
    pub backend: String,
    /// The `disk` backend's directory, relative to the working directory
    /// unless absolute. One gateway per directory (it is locked).
    pub data_dir: String,
    /// The `disk` backend: queued tokens held in memory at most; the rest
    /// wait on disk and are read back as workers drain the queue.
    pub window: u64,
    /// `redis://[user:password@]host:port[/db]` of the shared queue (backend
    /// `redis`); `rediss://` for TLS (rustls, aws-lc-rs).
    pub redis_url: String,
    /// A file holding the Redis password (AUTH); overrides one in the URL.
    pub redis_password_file: String,
    /// A PEM file with the CA that signed a `rediss://` server's certificate
    /// (a private CA); "" = the system's roots.
    pub redis_ca_file: String,
    /// `host:port` of each Redis Sentinel; when set, the primary is asked of
    /// them (and asked again after a failover) instead of taken from
    /// `redis_url`, whose user, password, database and TLS still apply.
    pub redis_sentinels: Vec<String>,
    /// The name the Sentinels monitor (required with `redis_sentinels`).
    pub redis_master: String,
    /// A file holding the Sentinels' own password (their `requirepass`);
    /// "" = none.
    pub redis_sentinel_password_file: String,
    /// Replicas that must hold a job before its 202 (`WAIT`); 0 = do not wait.
    pub redis_min_replicas: u32,
    /// How long the 202 waits for those replicas before the answer is 503.
    pub redis_replica_timeout_ms: u64,
    /// Stream key; every other key of the cluster starts with it.
    pub stream: String,
    /// Consumer group shared by every gateway of the cluster.
    pub group: String,
    /// This gateway's consumer name; empty = `hostname-pid`.
    pub consumer: String,
    /// A chunk unacknowledged this long (its gateway died) is reclaimed by another.
    pub claim_idle_ms: u64,
}

impl Default for QueueSection {
    fn default() -> Self {
        Self {
            capacity: 1_000_000,
            backend: "disk".into(),
            data_dir: "pushgate-data".into(),
            window: 100_000,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_password_file: String::new(),
            redis_ca_file: String::new(),
            redis_sentinels: Vec::new(),
            redis_master: String::new(),
            redis_sentinel_password_file: String::new(),
            redis_min_replicas: 0,
            redis_replica_timeout_ms: 500,
            stream: "pushgate".into(),
            group: "pushgate".into(),
            consumer: String::new(),
            claim_idle_ms: 30_000,
        }
    }
}

/// Validated `[queue]` settings of the `disk` backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskQueueConfig {
    /// `queue.data_dir`.
    pub data_dir: std::path::PathBuf,
    /// `queue.window`.
    pub window: u64,
}

/// `hostname-pid`: unique per process on a host, readable in `XINFO CONSUMERS`.
fn default_consumer() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "pushgate".into());
    format!("{host}-{}", std::process::id())
}

/// `[report]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportSection {
    /// Entries kept per report list.
    pub max_list: u64,
    /// Jobs remembered for `/jobs/{id}`.
    pub max_jobs: u64,
}

impl Default for ReportSection {
    fn default() -> Self {
        Self {
            max_list: 100_000,
            max_jobs: 10_000,
        }
    }
}

/// `[retry]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySection {
    /// First backoff ceiling in milliseconds.
    pub base_ms: u64,
    /// Longest backoff in milliseconds.
    pub cap_ms: u64,
}

impl Default for RetrySection {
    fn default() -> Self {
        Self {
            base_ms: 200,
            cap_ms: 30_000,
        }
    }
}

// ===== validated configuration =====

/// The validated configuration the gateway runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// API server settings.
    pub server: ServerConfig,
    /// `queue.capacity`.
    pub queue_capacity: u64,
    /// The shared queue, when `queue.backend = "redis"`.
    pub redis: Option<RedisQueueConfig>,
    /// The embedded store, when `queue.backend = "disk"` (the default).
    /// Neither this nor `redis`: memory.
    pub disk: Option<DiskQueueConfig>,
    /// `report.max_list`.
    pub max_list: usize,
    /// `report.max_jobs`.
    pub max_jobs: usize,
    /// `server.job_retention_s`: how long a finished job is kept.
    pub job_retention: Duration,
    /// `[log] format`.
    pub log_format: LogFormat,
    /// Backoff for every upstream.
    pub backoff: Backoff,
    /// APNs, when configured: `[apns]` and `[apns.apps.<name>]`.
    pub apns: Option<Apps<ApnsConfig>>,
    /// Google delivery, when configured (FCM v1 or legacy, never both).
    pub google: Option<Apps<GoogleConfig>>,
    /// The outcome webhook, when configured.
    pub webhook: Option<crate::webhook::WebhookConfig>,
    /// `[gorush]`, validated.
    pub gorush: GorushSection,
    /// Web Push, when configured.
    pub webpush: Option<Apps<WebPushConfig>>,
    /// The gRPC listener, when `[grpc] listen` is set.
    pub grpc: Option<GrpcConfig>,
    /// Huawei Push Kit, when configured: `[hms]` and `[hms.apps.<name>]`.
    pub hms: Option<Apps<HmsConfig>>,
}

impl Config {
    /// Every configured platform with its app names, default first.
    pub fn platforms(&self) -> Vec<(crate::job::Platform, Vec<String>)> {
        fn names<T>(apps: &Apps<T>) -> Vec<String> {
            apps.names().map(str::to_owned).collect()
        }
        let mut out = Vec::new();
        if let Some(apps) = &self.apns {
            out.push((crate::apns::PLATFORM, names(apps)));
        }
        if let Some(apps) = &self.google {
            let platform = match apps.default_app() {
                GoogleConfig::Fcm(_) => crate::fcm::FCM,
                GoogleConfig::Gcm(_) => crate::fcm::GCM,
            };
            out.push((platform, names(apps)));
        }
        if let Some(apps) = &self.webpush {
            out.push((crate::webpush::PLATFORM, names(apps)));
        }
        if let Some(apps) = &self.hms {
            out.push((crate::hms::PLATFORM, names(apps)));
        }
        out
    }

    /// The app names of `family`'s configured platform, default first
    /// (none when it is not configured).
    pub fn app_names(&self, family: crate::job::Family) -> Vec<String> {
        self.platforms()
            .into_iter()
            .find(|(p, _)| p.family() == family)
            .map(|(_, names)| names)
            .unwrap_or_default()
    }
}

/// Validated `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Accepted bearer keys.
    pub api_keys: Vec<Secret>,
    /// Body limit.
    pub max_body_bytes: usize,
    /// Drain time after SIGTERM.
    pub shutdown_grace: Duration,
    /// HTTPS for the API (ALPN h2 and http/1.1), when `tls_cert` is set.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// Timeouts and connection limits of the listener.
    pub limits: crate::listener::Limits,
    /// `server.idempotency_ttl_s`: how long a first answer is kept.
    pub idempotency_ttl: Duration,
}

mod grpc;
mod load;
mod validate;

pub use grpc::{GrpcConfig, GrpcSection};

#[cfg(test)]
mod tests;
