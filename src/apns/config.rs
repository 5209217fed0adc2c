//! `[apns]`: the section as written and as validated. Every key checked,
//! the key file or certificate read, and every problem named with its key,
//! value and fix.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::settings::{ConfigError, Secret, Upstream, invalid, parse_url, read_file, read_roots};

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

impl ApnsSection {
    /// Validates the section and reads its key or certificate.
    pub fn validate(&self, errors: &mut Vec<ConfigError>) -> Option<ApnsConfig> {
        validate_apns(self, errors)
    }
}

fn validate_apns(a: &ApnsSection, errors: &mut Vec<ConfigError>) -> Option<ApnsConfig> {
    let before = errors.len();
    let (host, port) = match a.endpoint.as_str() {
        "production" => Some(("api.push.apple.com".to_owned(), 443)),
        "sandbox" | "development" => Some(("api.sandbox.push.apple.com".to_owned(), 443)),
        url => parse_url("apns.endpoint", url, false, errors),
    }?;
    let channels = match (a.channels_endpoint.as_str(), a.endpoint.as_str()) {
        ("", "production") => Some(("api-manage-broadcast.push.apple.com".to_owned(), 2196)),
        ("", "sandbox" | "development") => Some((
            "api-manage-broadcast.sandbox.push.apple.com".to_owned(),
            2195,
        )),
        // A test server serves both protocols.
        ("", _) => Some((host.clone(), port)),
        (url, _) => parse_url("apns.channels_endpoint", url, false, errors),
    };
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
            extra_roots: extra_roots.clone(),
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
        channels: {
            let (host, port) = channels?;
            Upstream {
                host,
                port,
                extra_roots: extra_roots.clone(),
            }
        },
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
