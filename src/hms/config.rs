//! `[hms]` and `[hms.apps.<name>]`: the section as written and as validated.
//! The client secret is read (from `client_secret_file`, or given inline as
//! `client_secret`) and checked here, so a bad credential is refused at start
//! with the key, the value and the fix, never at the first send.

use std::collections::BTreeMap;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::settings::{ConfigError, Secret, invalid, parse_url, read_file, read_roots};

/// Huawei's push API.
pub const DEFAULT_ENDPOINT: &str = "https://push-api.cloud.huawei.com";
/// Huawei's OAuth 2.0 token endpoint (Account Kit server).
pub const DEFAULT_TOKEN_URI: &str = "https://oauth-login.cloud.huawei.com/oauth2/v3/token";
/// Most tokens one `messages:send` request may name (Huawei's limit).
pub const MAX_BATCH: u32 = 1000;

/// `[hms]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HmsSection {
    /// The AppGallery Connect app id: the OAuth `client_id` and the `{app_id}`
    /// of the send URL.
    pub app_id: String,
    /// A file holding the app's OAuth client secret (surrounding whitespace
    /// ignored).
    pub client_secret_file: String,
    /// Or the client secret itself (`PUSHGATE_HMS_CLIENT_SECRET`).
    pub client_secret: Secret,
    /// Base URL of the push API.
    pub endpoint: String,
    /// The OAuth token endpoint.
    pub token_uri: String,
    /// Extra trusted root (PEM) for every request of this section, the token
    /// endpoint's included.
    pub ca_file: String,
    /// Retries per token before it expires.
    pub max_retries: u32,
    /// Requests (batches) in flight at once.
    pub concurrency: u32,
    /// Seconds an upstream answer may take.
    pub request_timeout_s: u64,
    /// Tokens per `messages:send` request (1..=1000).
    pub batch_size: u32,
    /// More apps: `[hms.apps.<name>]`, same keys, unset ones inherited from `[hms]`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub apps: BTreeMap<String, HmsSection>,
}

impl Default for HmsSection {
    fn default() -> Self {
        Self {
            app_id: String::new(),
            client_secret_file: String::new(),
            client_secret: Secret::default(),
            endpoint: DEFAULT_ENDPOINT.into(),
            token_uri: DEFAULT_TOKEN_URI.into(),
            ca_file: String::new(),
            max_retries: 5,
            concurrency: 16,
            request_timeout_s: 30,
            batch_size: MAX_BATCH,
            apps: BTreeMap::new(),
        }
    }
}

/// Validated `[hms]` (one app).
#[derive(Debug, Clone)]
pub struct HmsConfig {
    /// `app_id`.
    pub app_id: String,
    /// The client secret, read and trimmed.
    pub client_secret: Secret,
    /// Base URL, no trailing slash.
    pub endpoint: String,
    /// `token_uri`.
    pub token_uri: String,
    /// Roots trusted beside the public ones (also for `token_uri`).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Retries per token.
    pub max_retries: u32,
    /// Batches in flight.
    pub concurrency: u32,
    /// Per-request deadline.
    pub request_timeout: Duration,
    /// Tokens per request.
    pub batch_size: u32,
}

impl HmsSection {
    /// Validates the section and reads its client secret.
    pub fn validate(&self, errors: &mut Vec<ConfigError>) -> Option<HmsConfig> {
        validate_hms(self, errors)
    }
}

const APP_ID_FIX: &str =
    "set hms.app_id to the App ID of AppGallery Connect > Project settings > App information";
const SECRET_FIX: &str = "set hms.client_secret_file to a file holding the App Secret (AppGallery Connect > Project settings > App information), or hms.client_secret (PUSHGATE_HMS_CLIENT_SECRET)";

/// Huawei issues app ids of digits only (`^[0-9]{1,64}$`).
fn is_app_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit())
}

/// The client secret from `client_secret_file` or `client_secret`
/// (exactly one of them), checked to be one line of printable ASCII.
fn read_secret(h: &HmsSection, errors: &mut Vec<ConfigError>) -> Option<Secret> {
    let secret = match (h.client_secret_file.is_empty(), h.client_secret.is_empty()) {
        (false, false) => {
            errors.push(invalid(
                "hms.client_secret",
                "<redacted>",
                "both hms.client_secret_file and hms.client_secret are set",
                "keep one of them",
            ));
            return None;
        }
        (true, true) => {
            errors.push(invalid(
                "hms.client_secret_file",
                "",
                "no client secret",
                SECRET_FIX,
            ));
            return None;
        }
        (false, true) => {
            let bytes = read_file(
                "hms.client_secret_file",
                &h.client_secret_file,
                "the client secret",
                SECRET_FIX,
                errors,
            )?;
            match String::from_utf8(bytes) {
                Ok(text) => Secret::new(text.trim()),
                Err(_) => {
                    errors.push(invalid(
                        "hms.client_secret_file",
                        &h.client_secret_file,
                        "is not text",
                        SECRET_FIX,
                    ));
                    return None;
                }
            }
        }
        (true, false) => Secret::new(h.client_secret.expose().trim()),
    };
    // The key named is where the secret came from; its value is never shown.
    let (key, shown) = if h.client_secret_file.is_empty() {
        ("hms.client_secret", "<redacted>")
    } else {
        ("hms.client_secret_file", h.client_secret_file.as_str())
    };
    if secret.is_empty() {
        errors.push(invalid(
            key,
            shown,
            "the client secret is empty",
            SECRET_FIX,
        ));
        return None;
    }
    if !secret.expose().bytes().all(|b| b.is_ascii_graphic()) {
        errors.push(invalid(
            key,
            shown,
            "the client secret holds spaces or characters outside printable ASCII",
            "copy the App Secret exactly as AppGallery Connect shows it, on one line",
        ));
        return None;
    }
    Some(secret)
}

fn validate_hms(h: &HmsSection, errors: &mut Vec<ConfigError>) -> Option<HmsConfig> {
    let before = errors.len();
    if !is_app_id(&h.app_id) {
        let problem = if h.app_id.is_empty() {
            "no app id"
        } else {
            "an app id is 1 to 64 digits"
        };
        errors.push(invalid("hms.app_id", &h.app_id, problem, APP_ID_FIX));
    }
    let client_secret = read_secret(h, errors);
    parse_url("hms.endpoint", &h.endpoint, true, errors);
    parse_url("hms.token_uri", &h.token_uri, true, errors);
    let extra_roots = read_roots("hms.ca_file", &h.ca_file, errors);
    if h.concurrency == 0 {
        errors.push(invalid(
            "hms.concurrency",
            0,
            "must be at least 1",
            "e.g. 16",
        ));
    }
    if !(1..=MAX_BATCH).contains(&h.batch_size) {
        errors.push(invalid(
            "hms.batch_size",
            h.batch_size,
            "Push Kit takes 1 to 1000 tokens per request",
            "use 1000",
        ));
    }
    if errors.len() > before {
        return None;
    }
    Some(HmsConfig {
        app_id: h.app_id.clone(),
        client_secret: client_secret?,
        endpoint: h.endpoint.trim_end_matches('/').to_owned(),
        token_uri: h.token_uri.clone(),
        extra_roots,
        max_retries: h.max_retries,
        concurrency: h.concurrency,
        request_timeout: Duration::from_secs(h.request_timeout_s.max(1)),
        batch_size: h.batch_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section() -> HmsSection {
        HmsSection {
            app_id: "104000000".into(),
            client_secret: Secret::new("a+b/c="),
            ..HmsSection::default()
        }
    }

    fn keys(errors: &[ConfigError]) -> Vec<String> {
        errors
            .iter()
            .map(|e| match e {
                ConfigError::Invalid { key, .. } => key.clone(),
                other => other.to_string(),
            })
            .collect()
    }

    fn check(h: &HmsSection) -> (Option<HmsConfig>, Vec<ConfigError>) {
        let mut errors = Vec::new();
        let config = h.validate(&mut errors);
        (config, errors)
    }

    #[test]
    fn a_minimal_section_is_valid_with_huaweis_endpoints() {
        let (config, errors) = check(&section());
        assert!(errors.is_empty(), "{errors:?}");
        let config = config.expect("valid");
        assert_eq!(config.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(config.token_uri, DEFAULT_TOKEN_URI);
        assert_eq!(config.batch_size, 1000);
        assert_eq!(config.client_secret.expose(), "a+b/c=");
    }

    #[test]
    fn the_secret_comes_from_a_file_trimmed() {
        let path = std::env::temp_dir().join(format!("pushgate-hms-secret-{}", std::process::id()));
        std::fs::write(&path, "s3cr+t/==\n").expect("written");
        let h = HmsSection {
            client_secret: Secret::default(),
            client_secret_file: path.display().to_string(),
            ..section()
        };
        let (config, errors) = check(&h);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(config.expect("valid").client_secret.expose(), "s3cr+t/==");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn every_bad_key_is_named_with_a_fix() {
        let h = HmsSection {
            app_id: "com.example".into(),
            client_secret: Secret::default(),
            endpoint: "ftp://push".into(),
            token_uri: "not a url".into(),
            concurrency: 0,
            batch_size: 1001,
            ..HmsSection::default()
        };
        let (config, errors) = check(&h);
        assert!(config.is_none());
        assert_eq!(
            keys(&errors),
            [
                "hms.app_id",
                "hms.client_secret_file",
                "hms.endpoint",
                "hms.token_uri",
                "hms.concurrency",
                "hms.batch_size"
            ]
        );
        for e in &errors {
            let ConfigError::Invalid { fix, .. } = e else {
                panic!("{e}")
            };
            assert!(!fix.is_empty(), "{e}");
        }
    }

    #[test]
    fn two_secrets_a_missing_file_and_a_spaced_secret_are_refused_unshown() {
        let both = HmsSection {
            client_secret_file: "hms.secret".into(),
            ..section()
        };
        assert_eq!(keys(&check(&both).1), ["hms.client_secret"]);
        let missing = HmsSection {
            client_secret: Secret::default(),
            client_secret_file: "/nonexistent/hms.secret".into(),
            ..section()
        };
        assert_eq!(keys(&check(&missing).1), ["hms.client_secret_file"]);
        let spaced = HmsSection {
            client_secret: Secret::new("two words"),
            ..section()
        };
        let errors = check(&spaced).1;
        assert_eq!(keys(&errors), ["hms.client_secret"]);
        assert!(
            !errors[0].to_string().contains("two words"),
            "{}",
            errors[0]
        );
        assert!(
            check(&HmsSection {
                batch_size: 0,
                ..section()
            })
            .0
            .is_none()
        );
    }
}
