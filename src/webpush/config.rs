//! `[webpush]` and `[webpush.apps.<name>]`: the file format and its
//! validation (the VAPID key read and checked, the subject, the allow-list).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::origin::OriginPolicy;
use super::vapid::{
    APPLE_PUSH_ORIGIN, Vapid, VapidError, VapidKey, apple_refuses_subject, check_subject,
};
use crate::settings::ConfigError;

/// `[webpush]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebPushSection {
    /// EC P-256 private key, PEM (PKCS#8 or SEC1).
    pub vapid_key_file: String,
    /// VAPID `sub`: `mailto:` or `https:`.
    pub subject: String,
    /// Extra trusted root (PEM), for a test push service.
    pub ca_file: String,
    /// `[]` = the public push services only; else exactly these origins.
    pub allowed_origins: Vec<String>,
    /// Retries per subscription before it expires.
    pub max_retries: u32,
    /// Requests in flight at once.
    pub concurrency: u32,
    /// Seconds a push service's answer may take.
    pub request_timeout_s: u64,
    /// More apps: `[webpush.apps.<name>]`, same keys, unset ones inherited.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub apps: BTreeMap<String, WebPushSection>,
}

impl Default for WebPushSection {
    fn default() -> Self {
        Self {
            vapid_key_file: String::new(),
            subject: String::new(),
            ca_file: String::new(),
            allowed_origins: Vec::new(),
            max_retries: 5,
            concurrency: 256,
            request_timeout_s: 30,
            apps: BTreeMap::new(),
        }
    }
}

/// Validated `[webpush]` (one app).
#[derive(Debug, Clone)]
pub struct WebPushConfig {
    /// The signer (key and subject).
    pub vapid: Arc<Vapid>,
    /// The allow-list.
    pub policy: OriginPolicy,
    /// Roots from `ca_file`.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// `max_retries`.
    pub max_retries: u32,
    /// `concurrency`.
    pub concurrency: u32,
    /// `request_timeout_s`.
    pub request_timeout: Duration,
}

const KEY_FIX: &str = "create one with `openssl ecparam -name prime256v1 -genkey -noout -out vapid.pem` and set webpush.vapid_key_file to its path";

/// Validates one `[webpush]` table.
pub fn validate_webpush(
    w: &WebPushSection,
    errors: &mut Vec<ConfigError>,
) -> Option<WebPushConfig> {
    let before = errors.len();
    let key = if w.vapid_key_file.is_empty() {
        errors.push(crate::settings::invalid(
            "webpush.vapid_key_file",
            "",
            "is required: the VAPID key identifies this server to push services",
            KEY_FIX,
        ));
        None
    } else {
        crate::settings::read_file(
            "webpush.vapid_key_file",
            &w.vapid_key_file,
            "the VAPID key",
            KEY_FIX,
            errors,
        )
        .and_then(|pem| match VapidKey::from_pem(&pem) {
            Ok(k) => Some(k),
            Err(e) => {
                let problem = match e {
                    VapidError::NotP256 => "is not an EC P-256 (prime256v1) private key".to_owned(),
                    other => other.to_string(),
                };
                errors.push(crate::settings::invalid(
                    "webpush.vapid_key_file",
                    &w.vapid_key_file,
                    problem,
                    KEY_FIX,
                ));
                None
            }
        })
    };
    if check_subject(&w.subject).is_err() {
        errors.push(crate::settings::invalid(
            "webpush.subject",
            &w.subject,
            "must be a mailto: address or an https: URL (RFC 8292), so push services can reach the operator",
            "e.g. subject = \"mailto:ops@example.com\"",
        ));
    }
    let policy = match OriginPolicy::new(&w.allowed_origins) {
        Ok(p) => {
            // Apple checks `sub` more strictly than the others: refused here,
            // at start, rather than as a 403 on every Safari subscription.
            if p.check(&format!("{APPLE_PUSH_ORIGIN}/")).is_ok()
                && check_subject(&w.subject).is_ok()
                && let Some(host) = apple_refuses_subject(&w.subject)
            {
                errors.push(crate::settings::invalid(
                    "webpush.subject",
                    &w.subject,
                    format!(
                        "names {host:?}, a host that does not resolve publicly; Apple's push service (web.push.apple.com, allowed here) refuses such a VAPID subject with 403 BadJwtToken"
                    ),
                    "use a real contact: subject = \"mailto:ops@your-domain.com\" or \"https://your-domain.com\"",
                ));
            }
            Some(p)
        }
        Err(e) => {
            errors.push(crate::settings::invalid(
                "webpush.allowed_origins",
                &e.entry,
                "is not an https origin",
                "write origins as \"https://host\", \"https://host:port\" or \"https://*.domain\"; [] allows the public push services",
            ));
            None
        }
    };
    let extra_roots = crate::settings::read_roots("webpush.ca_file", &w.ca_file, errors);
    if w.concurrency == 0 {
        errors.push(crate::settings::invalid(
            "webpush.concurrency",
            0,
            "must be at least 1",
            "e.g. 256",
        ));
    }
    if errors.len() > before {
        return None;
    }
    let vapid = Vapid::new(key?, &w.subject).ok()?;
    Some(WebPushConfig {
        vapid: Arc::new(vapid),
        policy: policy?,
        extra_roots,
        max_retries: w.max_retries,
        concurrency: w.concurrency,
        request_timeout: Duration::from_secs(w.request_timeout_s.max(1)),
    })
}
