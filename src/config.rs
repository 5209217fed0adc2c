//! Configuration: a TOML file, then `PUSHGATE_<SECTION>_<KEY>` environment
//! overrides, then validation that reads every key file and certificate up
//! front. A bad config is refused at start with the key, the value and the fix,
//! all problems at once rather than one per restart.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::retry::Backoff;

/// A value that must never be printed: `Debug` and `Display` show `<redacted>`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: call only where it is sent or compared.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no value was given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "<redacted>"
        })
    }
}

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
}

/// `[gorush]`: `POST /api/push` and `GET /api/stat/*`, as gorush serves them.
/// Also the validated form (nothing in it can be wrong but the prefix).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct GorushSection {
    /// Serve the gorush routes at all.
    pub enabled: bool,
    /// Mount them under this path (`""` = at the root, as gorush does).
    pub path_prefix: String,
    /// Notifications per `POST /api/push` (gorush's `core.max_notification`).
    pub max_notifications: u32,
}

impl Default for GorushSection {
    fn default() -> Self {
        Self {
            enabled: true,
            path_prefix: String::new(),
            max_notifications: 100,
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
    /// `redis://[user:password@]host:port[/db]` of the shared queue (backend
    /// `redis`); `rediss://` for TLS (rustls, aws-lc-rs).
    pub redis_url: String,
    /// A file holding the Redis password (AUTH); overrides one in the URL.
    pub redis_password_file: String,
    /// A PEM file with the CA that signed a `rediss://` server's certificate
    /// (a private CA); "" = the system's roots.
    pub redis_ca_file: String,
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
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_password_file: String::new(),
            redis_ca_file: String::new(),
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
}

/// Validated `[queue]` settings of the `redis` backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisQueueConfig {
    /// `queue.redis_url`. May hold a password: log [`masked_url`] of it.
    pub url: String,
    /// The password read from `queue.redis_password_file`, if set.
    pub password: Option<Secret>,
    /// The PEM of `queue.redis_ca_file`, if set (`rediss://` only).
    pub ca_pem: Option<Vec<u8>>,
    /// `queue.stream`.
    pub stream: String,
    /// `queue.group`.
    pub group: String,
    /// `queue.consumer`, defaulted to `hostname-pid`.
    pub consumer: String,
    /// `queue.claim_idle_ms`.
    pub claim_idle: Duration,
}

/// `redis://user:secret@host` → `redis://user:********@host`: a URL as it
/// may be logged or shown (`check-config`, errors). A URL without a password
/// is returned as is.
pub fn masked_url(url: &str) -> String {
    let Some(scheme) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    // The userinfo ends at the last '@' before the path.
    let authority_end = url[scheme..].find('/').map_or(url.len(), |i| scheme + i);
    let Some(at) = url[scheme..authority_end].rfind('@').map(|i| scheme + i) else {
        return url.to_owned();
    };
    let userinfo = &url[scheme..at];
    // `redis://name@host` names an ACL user and no password: nothing to hide.
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:********{}",
        &url[..scheme],
        &userinfo[..colon],
        &url[at..]
    )
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

/// `[apns]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApnsSection {
    /// `production`, `sandbox` or `https://host:port`.
    pub endpoint: String,
    /// Extra trusted root (PEM) for a test upstream.
    pub ca_file: String,
    /// Default `apns-topic`.
    pub topic: String,
    /// Token auth: the `.p8` key.
    pub key_file: String,
    /// Token auth: the key's id (JWT `kid`).
    pub key_id: String,
    /// Token auth: the team id (JWT `iss`).
    pub team_id: String,
    /// Certificate auth: PEM certificate (chain).
    pub cert_file: String,
    /// Certificate auth: PEM private key.
    pub cert_key_file: String,
    /// Certificate auth: PKCS#12 bundle instead of the PEM pair.
    pub pkcs12_file: String,
    /// Password of `pkcs12_file`.
    pub pkcs12_password: Secret,
    /// Retries per token before it expires.
    pub max_retries: u32,
    /// Connections kept open at least.
    pub min_connections: u32,
    /// Connections opened at most.
    pub max_connections: u32,
    /// Seconds an upstream answer may take before the attempt counts as failed.
    pub request_timeout_s: u64,
    /// More apps: `[apns.apps.<name>]`, same keys, unset ones inherited from `[apns]`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub apps: BTreeMap<String, ApnsSection>,
    /// Milliseconds between pool growth steps: at most one connection is added
    /// per interval while more tokens are ready than the pool can have in flight.
    pub grow_interval_ms: u64,
    /// Seconds of low demand before the pool closes one connection above
    /// `min_connections`.
    pub idle_shrink_s: u64,
    /// Seconds without an answer on a connection with streams in flight before
    /// an HTTP/2 PING checks that the peer is still there.
    pub ping_interval_s: u64,
    /// Broadcast channel management host (`https://host:port`); "" = Apple's
    /// management host for the endpoint's environment, or the endpoint itself
    /// when that is a test server.
    pub channels_endpoint: String,
    /// Seconds a PING may wait for its PONG before the connection counts as
    /// dead (its in-flight streams are retried and counted as possible duplicates).
    pub ping_timeout_s: u64,
}

impl Default for ApnsSection {
    fn default() -> Self {
        Self {
            endpoint: "production".into(),
            ca_file: String::new(),
            topic: String::new(),
            key_file: String::new(),
            key_id: String::new(),
            team_id: String::new(),
            cert_file: String::new(),
            cert_key_file: String::new(),
            pkcs12_file: String::new(),
            pkcs12_password: Secret::default(),
            max_retries: 5,
            min_connections: 1,
            max_connections: 8,
            request_timeout_s: 30,
            apps: BTreeMap::new(),
            grow_interval_ms: 500,
            idle_shrink_s: 60,
            ping_interval_s: 10,
            ping_timeout_s: 5,
            channels_endpoint: String::new(),
        }
    }
}

/// `[fcm]` (HTTP v1).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FcmSection {
    /// Google service account JSON.
    pub service_account_file: String,
    /// Base URL of the FCM API.
    pub endpoint: String,
    /// Extra trusted root (PEM) for every request of this section.
    pub ca_file: String,
    /// Retries per token before it expires.
    pub max_retries: u32,
    /// Requests in flight at once.
    pub concurrency: u32,
    /// Seconds an upstream answer may take.
    pub request_timeout_s: u64,
    /// Messages per minute the project may send (Firebase's quota: 600,000);
    /// the gateway paces itself to it with a token bucket.
    pub max_per_minute: u64,
    /// HTTP/2 connections per app (each carries up to the server's stream
    /// limit); 0 sends through the pooled reqwest client instead.
    pub connections: u32,
    /// More apps: `[fcm.apps.<name>]`, same keys, unset ones inherited from `[fcm]`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub apps: BTreeMap<String, FcmSection>,
}

impl Default for FcmSection {
    fn default() -> Self {
        Self {
            service_account_file: String::new(),
            endpoint: "https://fcm.googleapis.com".into(),
            ca_file: String::new(),
            max_retries: 5,
            concurrency: 256,
            request_timeout_s: 30,
            max_per_minute: 600_000,
            connections: 1,
            apps: BTreeMap::new(),
        }
    }
}

/// `[gcm]` (legacy multicast).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcmSection {
    /// `Authorization: key=…`.
    pub server_key: Secret,
    /// The send URL.
    pub endpoint: String,
    /// Extra trusted root (PEM).
    pub ca_file: String,
    /// Registration ids per request (1..=1000).
    pub batch_size: u32,
    /// Retries per token before it expires.
    pub max_retries: u32,
    /// Batches in flight at once.
    pub concurrency: u32,
    /// Seconds an upstream answer may take.
    pub request_timeout_s: u64,
    /// More apps: `[gcm.apps.<name>]`, same keys, unset ones inherited from `[gcm]`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub apps: BTreeMap<String, GcmSection>,
}

impl Default for GcmSection {
    fn default() -> Self {
        Self {
            server_key: Secret::default(),
            endpoint: "https://fcm.googleapis.com/fcm/send".into(),
            ca_file: String::new(),
            batch_size: 1000,
            max_retries: 5,
            concurrency: 16,
            request_timeout_s: 30,
            apps: BTreeMap::new(),
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
    /// Backoff for every upstream.
    pub backoff: Backoff,
    /// APNs, when configured: the `default` app.
    pub apns: Option<ApnsConfig>,
    /// Named APNs apps (`[apns.apps.<name>]`).
    pub apns_apps: BTreeMap<String, ApnsConfig>,
    /// Google delivery, when configured (FCM v1 or legacy, never both): the `default` app.
    pub google: Option<GoogleConfig>,
    /// Named Google apps (`[fcm.apps.<name>]` or `[gcm.apps.<name>]`).
    pub google_apps: BTreeMap<String, GoogleConfig>,
    /// The outcome webhook, when configured.
    pub webhook: Option<crate::webhook::WebhookConfig>,
    /// `[gorush]`, validated.
    pub gorush: GorushSection,
    /// Web Push, when configured: the `default` app.
    pub webpush: Option<WebPushConfig>,
    /// Named Web Push apps (`[webpush.apps.<name>]`).
    pub webpush_apps: BTreeMap<String, WebPushConfig>,
    /// The gRPC listener, when `[grpc] listen` is set.
    pub grpc: Option<GrpcConfig>,
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
}

/// Where an upstream is and which roots to trust for it.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Host name for TLS SNI and `:authority`.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Roots from `ca_file`, trusted beside the public web roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

/// Validated `[apns]`.
#[derive(Debug, Clone)]
pub struct ApnsConfig {
    /// The APNs server.
    pub upstream: Upstream,
    /// Default topic (`None`: every request must carry one).
    pub topic: Option<String>,
    /// How the gateway proves who it is.
    pub auth: ApnsAuth,
    /// Retries per token.
    pub max_retries: u32,
    /// Pool floor.
    pub min_connections: u32,
    /// Pool ceiling.
    pub max_connections: u32,
    /// Per-request deadline.
    pub request_timeout: Duration,
    /// Pool growth step (`grow_interval_ms`).
    pub grow_interval: Duration,
    /// Low demand this long closes one connection (`idle_shrink_s`).
    pub idle_shrink: Duration,
    /// Quiet time with streams in flight before a PING (`ping_interval_s`).
    pub ping_interval: Duration,
    /// PONG deadline (`ping_timeout_s`).
    pub ping_timeout: Duration,
    /// The broadcast channel management host (`channels_endpoint`).
    pub channels: Upstream,
}

/// APNs authentication, read and checked at start.
#[derive(Clone)]
pub enum ApnsAuth {
    /// ES256 provider tokens signed with a `.p8` key.
    Token {
        /// The PKCS#8 PEM key.
        key_pem: Secret,
        /// JWT `kid`.
        key_id: String,
        /// JWT `iss`.
        team_id: String,
    },
    /// A TLS client certificate.
    Certificate {
        /// Certificate chain, leaf first.
        chain: Vec<CertificateDer<'static>>,
        /// Its private key.
        key: std::sync::Arc<PrivateKeyDer<'static>>,
    },
}

impl fmt::Debug for ApnsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApnsAuth::Token {
                key_id, team_id, ..
            } => f
                .debug_struct("Token")
                .field("key_id", key_id)
                .field("team_id", team_id)
                .finish_non_exhaustive(),
            ApnsAuth::Certificate { chain, .. } => f
                .debug_struct("Certificate")
                .field("chain_len", &chain.len())
                .finish_non_exhaustive(),
        }
    }
}

/// Google delivery: exactly one of FCM v1 and legacy GCM.
#[derive(Debug, Clone)]
pub enum GoogleConfig {
    /// FCM HTTP v1.
    Fcm(FcmConfig),
    /// Legacy multicast.
    Gcm(GcmConfig),
}

/// A Google service account, as read from its JSON file.
#[derive(Clone, Deserialize)]
pub struct ServiceAccount {
    /// The Firebase project.
    pub project_id: String,
    /// The account, used as the assertion's `iss`.
    pub client_email: String,
    /// RSA private key, PKCS#8 PEM.
    pub private_key: Secret,
    /// Key id (assertion `kid`).
    #[serde(default)]
    pub private_key_id: String,
    /// OAuth token endpoint (assertion `aud`).
    pub token_uri: String,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// Validated `[fcm]`.
#[derive(Debug, Clone)]
pub struct FcmConfig {
    /// The service account.
    pub account: ServiceAccount,
    /// Base URL, no trailing slash.
    pub endpoint: String,
    /// Roots trusted beside the public ones (also for `token_uri`).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Retries per token.
    pub max_retries: u32,
    /// Requests in flight.
    pub concurrency: u32,
    /// Per-request deadline.
    pub request_timeout: Duration,
    /// `max_per_minute`: the project's pace.
    pub max_per_minute: u64,
    /// HTTP/2 connections (`connections`).
    pub connections: u32,
}

/// Validated `[gcm]`.
#[derive(Debug, Clone)]
pub struct GcmConfig {
    /// The server key.
    pub server_key: Secret,
    /// Send URL.
    pub endpoint: String,
    /// Roots trusted beside the public ones.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Ids per request.
    pub batch_size: u32,
    /// Retries per token.
    pub max_retries: u32,
    /// Batches in flight.
    pub concurrency: u32,
    /// Per-request deadline.
    pub request_timeout: Duration,
}

// ===== errors =====

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {problem}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        problem: String,
    },
    /// The file is not valid TOML or has keys of the wrong type.
    #[error("config file {path}: {problem}")]
    Parse {
        /// The path given.
        path: String,
        /// The parser's message (with line and column).
        problem: String,
    },
    /// A key has a value that cannot work.
    #[error("{key} = {value}: {problem}; fix: {fix}")]
    Invalid {
        /// `section.key`.
        key: String,
        /// The value, quoted; secrets are never shown.
        value: String,
        /// What is wrong.
        problem: String,
        /// What to do.
        fix: String,
    },
}

/// Every problem found, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

fn invalid(
    key: &str,
    value: impl fmt::Debug,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        value: format!("{value:?}"),
        problem: problem.into(),
        fix: fix.into(),
    }
}

mod grpc;
mod load;
mod validate;
mod webpush;

pub use grpc::{GrpcConfig, GrpcSection};
pub use webpush::{WebPushConfig, WebPushSection};

#[cfg(test)]
mod tests;
