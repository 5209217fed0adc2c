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
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            api_keys: Vec::new(),
            max_body_bytes: 64 * 1024 * 1024,
            shutdown_grace: 30,
            tls_cert: String::new(),
            tls_key: String::new(),
        }
    }
}

/// `[queue]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSection {
    /// Tokens accepted and unfinished, all platforms, before `/…/send` answers 503.
    pub capacity: u64,
    /// `memory` (one process) or `redis` (a Redis stream shared by several gateways).
    pub backend: String,
    /// `redis://host:port[/db]` of the shared queue (backend `redis`).
    pub redis_url: String,
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
            backend: "memory".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            stream: "pushgate".into(),
            group: "pushgate".into(),
            consumer: String::new(),
            claim_idle_ms: 30_000,
        }
    }
}

/// Validated `[queue]` settings of the `redis` backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisQueueConfig {
    /// `queue.redis_url`.
    pub url: String,
    /// `queue.stream`.
    pub stream: String,
    /// `queue.group`.
    pub group: String,
    /// `queue.consumer`, defaulted to `hostname-pid`.
    pub consumer: String,
    /// `queue.claim_idle_ms`.
    pub claim_idle: Duration,
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
    /// The shared queue, when `queue.backend = "redis"`; `None` = memory.
    pub redis: Option<RedisQueueConfig>,
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

// ===== loading =====

const ENV_PREFIX: &str = "PUSHGATE_";
const SECTIONS: [&str; 8] = [
    "server", "queue", "report", "retry", "apns", "fcm", "gcm", "webhook",
];

impl FileConfig {
    /// Reads `path` (when given), applies environment overrides from `env`, and
    /// deserializes.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigErrors> {
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                    path: p.display().to_string(),
                    problem: e.to_string(),
                })?,
                p.display().to_string(),
            ),
            None => (String::new(), "(no file)".to_owned()),
        };
        Self::parse(&text, &origin, env)
    }

    /// Parses TOML text, then applies environment overrides.
    pub fn parse(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigErrors> {
        let mut table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: origin.to_owned(),
                    problem: e.to_string(),
                })?;
        apply_env(&mut table, env)?;
        inherit_app_keys(&mut table)?;
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                ConfigError::Parse {
                    path: origin.to_owned(),
                    problem: e.to_string(),
                }
                .into()
            })
    }

    /// The configuration as TOML with every secret masked (`check-config`).
    pub fn to_masked_toml(&self) -> String {
        let mut masked = self.clone();
        let mask = |s: &mut Secret| {
            if !s.is_empty() {
                *s = Secret::new("********");
            }
        };
        masked.server.api_keys.iter_mut().for_each(mask);
        if let Some(a) = masked.apns.as_mut() {
            mask(&mut a.pkcs12_password);
            a.apps
                .values_mut()
                .for_each(|app| mask(&mut app.pkcs12_password));
        }
        if let Some(g) = masked.gcm.as_mut() {
            mask(&mut g.server_key);
            g.apps
                .values_mut()
                .for_each(|app| mask(&mut app.server_key));
        }
        if let Some(w) = masked.webhook.as_mut() {
            mask(&mut w.secret);
        }
        toml::to_string_pretty(&masked).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Validates and loads every referenced file.
    pub fn validate(&self) -> Result<Config, ConfigErrors> {
        let mut errors = Vec::new();
        let server = self.validate_server(&mut errors);
        if self.queue.capacity == 0 {
            errors.push(invalid(
                "queue.capacity",
                self.queue.capacity,
                "must be at least 1",
                "set queue.capacity to the number of tokens the gateway may hold, e.g. 1000000",
            ));
        }
        let redis = self.validate_queue_backend(&mut errors);
        if self.retry.base_ms == 0 || self.retry.cap_ms < self.retry.base_ms {
            errors.push(invalid(
                "retry.base_ms",
                self.retry.base_ms,
                format!("needs 0 < base_ms <= cap_ms ({})", self.retry.cap_ms),
                "e.g. base_ms = 200, cap_ms = 30000",
            ));
        }
        let apns = self
            .apns
            .as_ref()
            .and_then(|a| validate_apns(a, &mut errors));
        let apns_apps = self.apns.as_ref().map_or_else(BTreeMap::new, |a| {
            validate_apps(
                "apns",
                &a.apps,
                |app| !app.apps.is_empty(),
                validate_apns,
                &mut errors,
            )
        });
        let google_apps = match (&self.fcm, &self.gcm) {
            (Some(f), None) => validate_apps(
                "fcm",
                &f.apps,
                |app| !app.apps.is_empty(),
                |app, e| validate_fcm(app, e).map(GoogleConfig::Fcm),
                &mut errors,
            ),
            (None, Some(g)) => validate_apps(
                "gcm",
                &g.apps,
                |app| !app.apps.is_empty(),
                |app, e| validate_gcm(app, e).map(GoogleConfig::Gcm),
                &mut errors,
            ),
            _ => BTreeMap::new(),
        };
        let google = match (&self.fcm, &self.gcm) {
            (Some(_), Some(_)) => {
                errors.push(invalid(
                    "fcm/gcm",
                    "both sections present",
                    "[fcm] and [gcm] both deliver /gcm/send; only one may be configured",
                    "remove [gcm] to use FCM HTTP v1, or remove [fcm] to use the legacy API",
                ));
                None
            }
            (Some(f), None) => validate_fcm(f, &mut errors).map(GoogleConfig::Fcm),
            (None, Some(g)) => validate_gcm(g, &mut errors).map(GoogleConfig::Gcm),
            (None, None) => None,
        };
        let webhook = self
            .webhook
            .as_ref()
            .filter(|w| !w.url.is_empty())
            .and_then(|w| validate_webhook(w, &mut errors));
        match server {
            Some(server) if errors.is_empty() => Ok(Config {
                server,
                queue_capacity: self.queue.capacity,
                redis,
                max_list: usize::try_from(self.report.max_list).unwrap_or(usize::MAX),
                max_jobs: usize::try_from(self.report.max_jobs)
                    .unwrap_or(usize::MAX)
                    .max(1),
                backoff: Backoff {
                    base: Duration::from_millis(self.retry.base_ms),
                    cap: Duration::from_millis(self.retry.cap_ms),
                },
                apns,
                apns_apps,
                google,
                google_apps,
                webhook,
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }

    fn validate_queue_backend(&self, errors: &mut Vec<ConfigError>) -> Option<RedisQueueConfig> {
        let q = &self.queue;
        match q.backend.as_str() {
            "memory" => return None,
            "redis" => {}
            _ => {
                errors.push(invalid(
                    "queue.backend",
                    &q.backend,
                    "unknown queue backend",
                    "use \"memory\" (one process) or \"redis\" (shared by several gateways)",
                ));
                return None;
            }
        }
        let before = errors.len();
        if !(q.redis_url.starts_with("redis://") || q.redis_url.starts_with("unix://"))
            || redis::Client::open(q.redis_url.as_str()).is_err()
        {
            errors.push(invalid(
                "queue.redis_url",
                &q.redis_url,
                "not a usable redis URL (TLS rediss:// is not built in)",
                "e.g. \"redis://127.0.0.1:6379\" or \"redis://:password@host:6379/0\"",
            ));
        }
        for (key, value) in [("queue.stream", &q.stream), ("queue.group", &q.group)] {
            if value.is_empty() || value.contains(char::is_whitespace) {
                errors.push(invalid(
                    key,
                    value,
                    "must be a non-empty name without spaces",
                    "e.g. \"pushgate\"",
                ));
            }
        }
        if q.claim_idle_ms < 100 {
            errors.push(invalid(
                "queue.claim_idle_ms",
                q.claim_idle_ms,
                "must be at least 100: a live gateway's chunks would be taken from it",
                "e.g. claim_idle_ms = 30000",
            ));
        }
        (errors.len() == before).then(|| RedisQueueConfig {
            url: q.redis_url.clone(),
            stream: q.stream.clone(),
            group: q.group.clone(),
            consumer: if q.consumer.is_empty() {
                default_consumer()
            } else {
                q.consumer.clone()
            },
            claim_idle: Duration::from_millis(q.claim_idle_ms),
        })
    }

    fn validate_server(&self, errors: &mut Vec<ConfigError>) -> Option<ServerConfig> {
        let s = &self.server;
        let listen = match s.listen.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errors.push(invalid(
                    "server.listen",
                    &s.listen,
                    "not an IP:port address",
                    "e.g. \"127.0.0.1:8080\" or \"0.0.0.0:8080\"",
                ));
                None
            }
        };
        if s.api_keys.iter().any(|k| k.expose().len() < 16) {
            errors.push(invalid(
                "server.api_keys",
                "<redacted>",
                "every key must be at least 16 characters",
                "generate keys with e.g. `openssl rand -hex 32`",
            ));
        }
        if s.max_body_bytes < 1024 {
            errors.push(invalid(
                "server.max_body_bytes",
                s.max_body_bytes,
                "too small to carry a request",
                "use at least 1024 (default 67108864)",
            ));
        }
        let tls = match (s.tls_cert.is_empty(), s.tls_key.is_empty()) {
            (true, true) => None,
            (false, true) | (true, false) => {
                errors.push(invalid(
                    "server.tls_cert",
                    &s.tls_cert,
                    "tls_cert and tls_key go together",
                    "set both (HTTPS) or neither (plain HTTP behind a proxy)",
                ));
                None
            }
            (false, false) => {
                let fix = "point server.tls_cert at a PEM certificate chain and server.tls_key at its PEM private key";
                let cert = read_file(
                    "server.tls_cert",
                    &s.tls_cert,
                    "the certificate",
                    fix,
                    errors,
                );
                let key = read_file("server.tls_key", &s.tls_key, "the private key", fix, errors);
                match (cert, key) {
                    (Some(cert), Some(key)) => {
                        match crate::tls::server_config(
                            &String::from_utf8_lossy(&cert),
                            &String::from_utf8_lossy(&key),
                            &[b"h2", b"http/1.1"],
                            None,
                        ) {
                            Ok(config) => Some(config),
                            Err(e) => {
                                errors.push(invalid(
                                    "server.tls_cert",
                                    &s.tls_cert,
                                    format!("unusable with server.tls_key ({e})"),
                                    fix,
                                ));
                                None
                            }
                        }
                    }
                    _ => None,
                }
            }
        };
        Some(ServerConfig {
            listen: listen?,
            api_keys: s.api_keys.clone(),
            max_body_bytes: usize::try_from(s.max_body_bytes).unwrap_or(usize::MAX),
            shutdown_grace: Duration::from_secs(s.shutdown_grace),
            tls,
        })
    }
}

/// Keys an app does not inherit once it names any of them: mixing the
/// top-level token key with an app's certificate would be two auth modes.
const AUTH_KEYS: [&str; 9] = [
    "key_file",
    "key_id",
    "team_id",
    "cert_file",
    "cert_key_file",
    "pkcs12_file",
    "pkcs12_password",
    "service_account_file",
    "server_key",
];

/// Fills every `[<platform>.apps.<name>]` table with the keys it leaves unset,
/// taken from `[<platform>]`, so an app states only what differs.
fn inherit_app_keys(table: &mut toml::Table) -> Result<(), ConfigErrors> {
    for platform in ["apns", "fcm", "gcm"] {
        let Some(toml::Value::Table(section)) = table.get_mut(platform) else {
            continue;
        };
        let Some(toml::Value::Table(apps)) = section.get("apps").cloned() else {
            continue;
        };
        let mut filled = toml::Table::new();
        for (name, app) in apps {
            let toml::Value::Table(mut app) = app else {
                return Err(invalid(
                    &format!("{platform}.apps.{name}"),
                    "<not a table>",
                    "each app is a table",
                    format!("write it as [{platform}.apps.{name}]"),
                )
                .into());
            };
            if name == "default" {
                return Err(invalid(&format!("{platform}.apps.default"), "default", "the top-level section is the default app", format!("put the default app's keys directly in [{platform}] and give this app another name")).into());
            }
            let names_auth = app.keys().any(|k| AUTH_KEYS.contains(&k.as_str()));
            for (key, value) in section.iter() {
                if key == "apps" || (names_auth && AUTH_KEYS.contains(&key.as_str())) {
                    continue;
                }
                app.entry(key.clone()).or_insert_with(|| value.clone());
            }
            filled.insert(name, toml::Value::Table(app));
        }
        section.insert("apps".to_owned(), toml::Value::Table(filled));
    }
    Ok(())
}

/// Validates named apps, reporting each problem under `<platform>.apps.<name>.<key>`.
fn validate_apps<S, C>(
    platform: &str,
    apps: &BTreeMap<String, S>,
    nests: impl Fn(&S) -> bool,
    validate: impl Fn(&S, &mut Vec<ConfigError>) -> Option<C>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, C> {
    let mut valid = BTreeMap::new();
    for (name, app) in apps {
        let prefix = format!("{platform}.apps.{name}");
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            || name.is_empty()
        {
            errors.push(invalid(
                &prefix,
                name,
                "app names are letters, digits, '-' and '_'",
                "rename the app",
            ));
            continue;
        }
        if nests(app) {
            errors.push(invalid(
                &format!("{prefix}.apps"),
                "<table>",
                "apps cannot have apps",
                format!("move them up to [{platform}.apps.<name>]"),
            ));
            continue;
        }
        let mut own = Vec::new();
        if let Some(config) = validate(app, &mut own) {
            valid.insert(name.clone(), config);
        }
        errors.extend(own.into_iter().map(|e| match e {
            ConfigError::Invalid {
                key,
                value,
                problem,
                fix,
            } => ConfigError::Invalid {
                key: key.replacen(&format!("{platform}."), &format!("{prefix}."), 1),
                value,
                problem,
                fix,
            },
            other => other,
        }));
    }
    valid
}

/// Applies `PUSHGATE_<SECTION>_<KEY>` variables to the parsed table. The value
/// is read as the type the key has in the defaults (string, integer, boolean,
/// or a comma-separated list), so `PUSHGATE_APNS_KEY_ID=1234567890` stays a string.
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigErrors> {
    let template = template();
    let mut errors = Vec::new();
    let mut overrides: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    overrides.sort();
    for (var, raw) in overrides {
        let rest = var[ENV_PREFIX.len()..].to_ascii_lowercase();
        let Some(section) = SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_"))) else {
            continue; // PUSHGATE_LOG and friends belong to the CLI, not the file.
        };
        let key = &rest[section.len() + 1..];
        let Some(kind) = template.get(*section).and_then(|s| s.get(key)) else {
            errors.push(invalid(
                &var,
                "<env>",
                format!("{section}.{key} is not a configuration key"),
                "check the spelling against config/pushgate.toml",
            ));
            continue;
        };
        let value = match kind {
            toml::Value::String(_) => Ok(toml::Value::String(raw.clone())),
            toml::Value::Integer(_) => raw
                .trim()
                .parse::<i64>()
                .map(toml::Value::Integer)
                .map_err(|_| "an integer"),
            toml::Value::Boolean(_) => raw
                .trim()
                .parse::<bool>()
                .map(toml::Value::Boolean)
                .map_err(|_| "true or false"),
            toml::Value::Array(_) => Ok(toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            )),
            _ => Err("a supported type"),
        };
        match value {
            Ok(v) => {
                let entry = table
                    .entry(section.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let toml::Value::Table(t) = entry {
                    t.insert(key.to_owned(), v);
                }
            }
            Err(expected) => {
                let shown = if is_secret_key(key) {
                    "<redacted>".to_owned()
                } else {
                    raw
                };
                errors.push(invalid(
                    &var,
                    shown,
                    format!("expected {expected}"),
                    format!("set {var} to {expected}"),
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

fn is_secret_key(key: &str) -> bool {
    matches!(
        key,
        "api_keys" | "pkcs12_password" | "server_key" | "secret"
    )
}

/// Every section filled with defaults, serialized: the schema env overrides are typed against.
fn template() -> toml::Table {
    let full = FileConfig {
        apns: Some(ApnsSection::default()),
        fcm: Some(FcmSection::default()),
        gcm: Some(GcmSection::default()),
        webhook: Some(WebhookSection::default()),
        ..FileConfig::default()
    };
    toml::Table::try_from(full).unwrap_or_default()
}

fn read_file(
    key: &str,
    path: &str,
    what: &str,
    fix: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            errors.push(invalid(key, path, format!("cannot read {what}: {e}"), fix));
            None
        }
    }
}

fn read_roots(
    key: &str,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<CertificateDer<'static>> {
    if path.is_empty() {
        return Vec::new();
    }
    let Some(pem) = read_file(
        key,
        path,
        "the CA file",
        "point it at a PEM file holding the upstream's CA certificate, or set it to \"\"",
        errors,
    ) else {
        return Vec::new();
    };
    match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
        Ok(certs) if !certs.is_empty() => certs,
        _ => {
            errors.push(invalid(
                key,
                path,
                "holds no PEM certificate",
                "use a file with -----BEGIN CERTIFICATE----- blocks",
            ));
            Vec::new()
        }
    }
}

/// Parses an `https://host:port` (or `http://`, when `allow_http`) URL into host and port.
fn parse_url(
    key: &str,
    url: &str,
    allow_http: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<(String, u16)> {
    let bad = |errors: &mut Vec<ConfigError>, problem: &str| {
        let fix = if allow_http {
            "use an https:// URL (http:// only for a local test server)"
        } else {
            "use \"production\", \"sandbox\" or \"https://host:port\""
        };
        errors.push(invalid(key, url, problem, fix));
        None
    };
    let Ok(uri) = url.parse::<http::Uri>() else {
        return bad(errors, "not a URL");
    };
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        Some("http") if allow_http => 80,
        _ => return bad(errors, "unsupported scheme"),
    };
    let Some(host) = uri.host() else {
        return bad(errors, "no host");
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Some((host, uri.port_u16().unwrap_or(default_port)))
}

fn validate_apns(a: &ApnsSection, errors: &mut Vec<ConfigError>) -> Option<ApnsConfig> {
    let before = errors.len();
    let (host, port) = match a.endpoint.as_str() {
        "production" => Some(("api.push.apple.com".to_owned(), 443)),
        "sandbox" | "development" => Some(("api.sandbox.push.apple.com".to_owned(), 443)),
        url => parse_url("apns.endpoint", url, false, errors),
    }?;
    let extra_roots = read_roots("apns.ca_file", &a.ca_file, errors);
    let token_auth = !a.key_file.is_empty();
    let cert_auth = !a.cert_file.is_empty() || !a.pkcs12_file.is_empty();
    let auth = match (token_auth, cert_auth) {
        (true, true) => {
            errors.push(invalid("apns.key_file", &a.key_file, "both token auth (key_file) and certificate auth (cert_file/pkcs12_file) are set", "keep one: key_file + key_id + team_id, or cert_file + cert_key_file, or pkcs12_file"));
            None
        }
        (false, false) => {
            errors.push(invalid("apns.key_file", "", "no APNs credentials", "set key_file + key_id + team_id (token auth) or cert_file + cert_key_file / pkcs12_file (certificate auth)"));
            None
        }
        (true, false) => apns_token_auth(a, errors),
        (false, true) => apns_cert_auth(a, errors),
    };
    if a.max_connections == 0 || a.min_connections > a.max_connections {
        errors.push(invalid(
            "apns.max_connections",
            a.max_connections,
            format!(
                "needs 1 <= min_connections ({}) <= max_connections",
                a.min_connections
            ),
            "e.g. min_connections = 1, max_connections = 8",
        ));
    }
    if a.request_timeout_s == 0 {
        errors.push(invalid(
            "apns.request_timeout_s",
            0,
            "must be at least 1",
            "e.g. 30",
        ));
    }
    // Zero would make the supervisor, the shrink clock or the PING timer spin.
    for (key, value, example) in [
        ("apns.grow_interval_ms", a.grow_interval_ms, "e.g. 500"),
        ("apns.idle_shrink_s", a.idle_shrink_s, "e.g. 60"),
        ("apns.ping_interval_s", a.ping_interval_s, "e.g. 10"),
        ("apns.ping_timeout_s", a.ping_timeout_s, "e.g. 5"),
    ] {
        if value == 0 {
            errors.push(invalid(key, 0, "must be at least 1", example));
        }
    }
    if errors.len() > before {
        return None;
    }
    Some(ApnsConfig {
        upstream: Upstream {
            host,
            port,
            extra_roots,
        },
        topic: (!a.topic.is_empty()).then(|| a.topic.clone()),
        auth: auth?,
        max_retries: a.max_retries,
        min_connections: a.min_connections.max(1),
        max_connections: a.max_connections,
        request_timeout: Duration::from_secs(a.request_timeout_s),
        grow_interval: Duration::from_millis(a.grow_interval_ms),
        idle_shrink: Duration::from_secs(a.idle_shrink_s),
        ping_interval: Duration::from_secs(a.ping_interval_s),
        ping_timeout: Duration::from_secs(a.ping_timeout_s),
    })
}

fn apns_token_auth(a: &ApnsSection, errors: &mut Vec<ConfigError>) -> Option<ApnsAuth> {
    let before = errors.len();
    let key_fix = "download the key from Apple Developer > Certificates, IDs & Profiles > Keys and point apns.key_file at the AuthKey_<KEYID>.p8 file";
    let key_pem = read_file("apns.key_file", &a.key_file, "the .p8 key", key_fix, errors)?;
    if jsonwebtoken::EncodingKey::from_ec_pem(&key_pem).is_err() {
        errors.push(invalid(
            "apns.key_file",
            &a.key_file,
            "not an EC (P-256) private key in PEM",
            key_fix,
        ));
    }
    if a.key_id.len() != 10 || !a.key_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        errors.push(invalid(
            "apns.key_id",
            &a.key_id,
            "an APNs key id is 10 letters and digits",
            "copy the Key ID shown beside the key in Apple Developer",
        ));
    }
    if a.team_id.len() != 10 || !a.team_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        errors.push(invalid(
            "apns.team_id",
            &a.team_id,
            "an Apple team id is 10 letters and digits",
            "copy the Team ID from Apple Developer > Membership",
        ));
    }
    if errors.len() > before {
        return None;
    }
    Some(ApnsAuth::Token {
        key_pem: Secret::new(String::from_utf8_lossy(&key_pem).into_owned()),
        key_id: a.key_id.clone(),
        team_id: a.team_id.clone(),
    })
}

fn apns_cert_auth(a: &ApnsSection, errors: &mut Vec<ConfigError>) -> Option<ApnsAuth> {
    if !a.pkcs12_file.is_empty() {
        if !a.cert_file.is_empty() {
            errors.push(invalid(
                "apns.pkcs12_file",
                &a.pkcs12_file,
                "both pkcs12_file and cert_file are set",
                "keep one of them",
            ));
            return None;
        }
        let data = read_file(
            "apns.pkcs12_file",
            &a.pkcs12_file,
            "the PKCS#12 file",
            "export the push certificate and its key from Keychain Access as .p12",
            errors,
        )?;
        let store = match p12_keystore::KeyStore::from_pkcs12(
            &data,
            a.pkcs12_password.expose(),
            p12_keystore::Pkcs12ImportPolicy::Relaxed,
        ) {
            Ok(store) => store,
            Err(e) => {
                errors.push(invalid("apns.pkcs12_file", &a.pkcs12_file, format!("cannot open the PKCS#12 bundle ({e})"), "check apns.pkcs12_password, or convert the bundle to PEM and use cert_file + cert_key_file"));
                return None;
            }
        };
        let Some((_, chain)) = store.private_key_chain() else {
            errors.push(invalid(
                "apns.pkcs12_file",
                &a.pkcs12_file,
                "holds no private key with a certificate",
                "export the certificate together with its private key",
            ));
            return None;
        };
        let certs: Vec<CertificateDer<'static>> = chain
            .certs()
            .iter()
            .map(|c| CertificateDer::from(c.as_der().to_vec()))
            .collect();
        if certs.is_empty() {
            errors.push(invalid(
                "apns.pkcs12_file",
                &a.pkcs12_file,
                "the private key has no certificate",
                "export the certificate together with its private key",
            ));
            return None;
        }
        let key = PrivateKeyDer::Pkcs8(chain.key().as_der().to_vec().into());
        return Some(ApnsAuth::Certificate {
            chain: certs,
            key: std::sync::Arc::new(key),
        });
    }
    if a.cert_key_file.is_empty() {
        errors.push(invalid(
            "apns.cert_key_file",
            "",
            "cert_file needs its private key",
            "set apns.cert_key_file to the PEM key of the push certificate",
        ));
        return None;
    }
    let cert_pem = read_file(
        "apns.cert_file",
        &a.cert_file,
        "the certificate",
        "point it at the push certificate in PEM",
        errors,
    )?;
    let key_pem = read_file(
        "apns.cert_key_file",
        &a.cert_key_file,
        "the private key",
        "point it at the certificate's private key in PEM",
        errors,
    )?;
    let chain: Vec<_> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        errors.push(invalid(
            "apns.cert_file",
            &a.cert_file,
            "holds no PEM certificate",
            "use a file with a -----BEGIN CERTIFICATE----- block",
        ));
        return None;
    }
    match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(key) => Some(ApnsAuth::Certificate {
            chain,
            key: std::sync::Arc::new(key),
        }),
        Err(_) => {
            errors.push(invalid(
                "apns.cert_key_file",
                &a.cert_key_file,
                "holds no PEM private key",
                "use a file with a -----BEGIN PRIVATE KEY----- block",
            ));
            None
        }
    }
}

fn validate_fcm(f: &FcmSection, errors: &mut Vec<ConfigError>) -> Option<FcmConfig> {
    let before = errors.len();
    let fix = "download a service account key (Firebase console > Project settings > Service accounts) and point fcm.service_account_file at it";
    let bytes = read_file(
        "fcm.service_account_file",
        &f.service_account_file,
        "the service account JSON",
        fix,
        errors,
    )?;
    let account: ServiceAccount = match serde_json::from_slice(&bytes) {
        Ok(a) => a,
        Err(e) => {
            errors.push(invalid(
                "fcm.service_account_file",
                &f.service_account_file,
                format!("not a service account JSON ({e})"),
                fix,
            ));
            return None;
        }
    };
    if jsonwebtoken::EncodingKey::from_rsa_pem(account.private_key.expose().as_bytes()).is_err() {
        errors.push(invalid(
            "fcm.service_account_file",
            &f.service_account_file,
            "its private_key is not an RSA key in PEM",
            fix,
        ));
    }
    parse_url(
        "fcm.service_account_file (token_uri)",
        &account.token_uri,
        true,
        errors,
    );
    parse_url("fcm.endpoint", &f.endpoint, true, errors);
    let extra_roots = read_roots("fcm.ca_file", &f.ca_file, errors);
    if f.concurrency == 0 {
        errors.push(invalid(
            "fcm.concurrency",
            0,
            "must be at least 1",
            "e.g. 256",
        ));
    }
    if errors.len() > before {
        return None;
    }
    Some(FcmConfig {
        account,
        endpoint: f.endpoint.trim_end_matches('/').to_owned(),
        extra_roots,
        max_retries: f.max_retries,
        concurrency: f.concurrency,
        request_timeout: Duration::from_secs(f.request_timeout_s.max(1)),
    })
}

fn validate_gcm(g: &GcmSection, errors: &mut Vec<ConfigError>) -> Option<GcmConfig> {
    let before = errors.len();
    if g.server_key.is_empty() {
        errors.push(invalid(
            "gcm.server_key",
            "",
            "no server key",
            "set gcm.server_key (or PUSHGATE_GCM_SERVER_KEY) to the legacy server key",
        ));
    }
    parse_url("gcm.endpoint", &g.endpoint, true, errors);
    if !(1..=1000).contains(&g.batch_size) {
        errors.push(invalid(
            "gcm.batch_size",
            g.batch_size,
            "the legacy API takes 1 to 1000 registration ids per request",
            "use 1000",
        ));
    }
    if g.concurrency == 0 {
        errors.push(invalid(
            "gcm.concurrency",
            0,
            "must be at least 1",
            "e.g. 16",
        ));
    }
    let extra_roots = read_roots("gcm.ca_file", &g.ca_file, errors);
    if errors.len() > before {
        return None;
    }
    Some(GcmConfig {
        server_key: g.server_key.clone(),
        endpoint: g.endpoint.clone(),
        extra_roots,
        batch_size: g.batch_size,
        max_retries: g.max_retries,
        concurrency: g.concurrency,
        request_timeout: Duration::from_secs(g.request_timeout_s.max(1)),
    })
}

fn validate_webhook(
    w: &WebhookSection,
    errors: &mut Vec<ConfigError>,
) -> Option<crate::webhook::WebhookConfig> {
    let before = errors.len();
    parse_url("webhook.url", &w.url, true, errors);
    if w.secret.expose().len() < 16 {
        errors.push(invalid(
            "webhook.secret",
            "<redacted>",
            "receivers check the signature with this key; it must be at least 16 characters",
            "generate one with e.g. `openssl rand -hex 32`",
        ));
    }
    if w.batch_size == 0 || w.max_buffer == 0 || w.max_attempts == 0 {
        errors.push(invalid(
            "webhook.batch_size",
            w.batch_size,
            "batch_size, max_buffer and max_attempts must be at least 1",
            "e.g. batch_size = 500, max_buffer = 100000, max_attempts = 5",
        ));
    }
    let extra_roots = read_roots("webhook.ca_file", &w.ca_file, errors);
    if errors.len() > before {
        return None;
    }
    Some(crate::webhook::WebhookConfig {
        url: w.url.clone(),
        secret: w.secret.clone(),
        batch_size: w.batch_size as usize,
        flush: Duration::from_millis(w.flush_ms.max(1)),
        max_buffer: w.max_buffer as usize,
        max_attempts: w.max_attempts,
        extra_roots,
    })
}

#[cfg(test)]
mod tests;
