//! `[fcm]` (HTTP v1) and `[gcm]` (the legacy multicast API): the sections as
//! written and as validated, the service account read and checked.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::settings::{ConfigError, Secret, invalid, parse_url, read_file, read_roots};

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

impl FcmSection {
    /// Validates the section and reads its service account.
    pub fn validate(&self, errors: &mut Vec<ConfigError>) -> Option<FcmConfig> {
        validate_fcm(self, errors)
    }
}

impl GcmSection {
    /// Validates the section.
    pub fn validate(&self, errors: &mut Vec<ConfigError>) -> Option<GcmConfig> {
        validate_gcm(self, errors)
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
    if f.max_per_minute == 0 {
        errors.push(invalid(
            "fcm.max_per_minute",
            0,
            "must be at least 1",
            "Firebase's quota is 600000 per project",
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
        max_per_minute: f.max_per_minute,
        connections: f.connections.min(64),
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
