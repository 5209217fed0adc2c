//! `[webpush]` and `[webpush.apps.<name>]`: the file format and its
//! validation (the VAPID key read and checked, the subject, the allow-list).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::webpush::origin::OriginPolicy;
use crate::webpush::vapid::{Vapid, VapidError, VapidKey, check_subject};

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
pub(super) fn validate_webpush(
    w: &WebPushSection,
    errors: &mut Vec<ConfigError>,
) -> Option<WebPushConfig> {
    let before = errors.len();
    let key = if w.vapid_key_file.is_empty() {
        errors.push(super::invalid(
            "webpush.vapid_key_file",
            "",
            "is required: the VAPID key identifies this server to push services",
            KEY_FIX,
        ));
        None
    } else {
        super::validate::read_file(
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
                errors.push(super::invalid(
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
        errors.push(super::invalid(
            "webpush.subject",
            &w.subject,
            "must be a mailto: address or an https: URL (RFC 8292), so push services can reach the operator",
            "e.g. subject = \"mailto:ops@example.com\"",
        ));
    }
    let policy = match OriginPolicy::new(&w.allowed_origins) {
        Ok(p) => Some(p),
        Err(e) => {
            errors.push(super::invalid(
                "webpush.allowed_origins",
                &e.entry,
                "is not an https origin",
                "write origins as \"https://host\", \"https://host:port\" or \"https://*.domain\"; [] allows the public push services",
            ));
            None
        }
    };
    let extra_roots = super::validate::read_roots("webpush.ca_file", &w.ca_file, errors);
    if w.concurrency == 0 {
        errors.push(super::invalid(
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

#[cfg(test)]
mod tests {
    use crate::config::FileConfig;

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "pushgate-webpush-config-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&d).expect("scratch dir");
        d
    }

    fn errors_of(toml: &str) -> String {
        let file =
            FileConfig::parse(toml, "test.toml", Vec::<(String, String)>::new()).expect("parses");
        match file.validate() {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_good_section_validates_and_apps_inherit_the_subject() {
        let d = dir();
        let key = d.join("vapid.pem");
        let pem = crate::webpush::vapid::VapidKey::generate()
            .expect("key")
            .to_pkcs8_pem()
            .expect("pem");
        std::fs::write(&key, pem).expect("write");
        let other = d.join("other.pem");
        std::fs::write(
            &other,
            crate::webpush::vapid::VapidKey::generate()
                .expect("key")
                .to_pkcs8_pem()
                .expect("pem"),
        )
        .expect("write");
        let toml = format!(
            "[webpush]\nvapid_key_file = {key:?}\nsubject = \"mailto:ops@example.com\"\nallowed_origins = [\"https://push.example.com\"]\n[webpush.apps.shop]\nvapid_key_file = {other:?}\n"
        );
        let config = FileConfig::parse(&toml, "t", Vec::<(String, String)>::new())
            .expect("parses")
            .validate()
            .expect("valid");
        let main = config.webpush.expect("webpush on");
        let shop = config.webpush_apps.get("shop").expect("app");
        assert_ne!(
            main.vapid.key().public_key_b64(),
            shop.vapid.key().public_key_b64()
        );
        assert!(shop.policy.check("https://push.example.com/x").is_ok());
        assert!(shop.policy.check("https://fcm.googleapis.com/x").is_err());
    }

    #[test]
    fn missing_unreadable_and_wrong_curve_keys_are_refused_naming_the_key_and_fix() {
        let e = errors_of("[webpush]\nsubject = \"mailto:a@b.c\"\n");
        assert!(
            e.contains("webpush.vapid_key_file") && e.contains("openssl ecparam"),
            "{e}"
        );
        let e = errors_of(
            "[webpush]\nvapid_key_file = \"/nonexistent/vapid.pem\"\nsubject = \"mailto:a@b.c\"\n",
        );
        assert!(
            e.contains("webpush.vapid_key_file") && e.contains("cannot read"),
            "{e}"
        );
        let d = dir();
        let p384 = d.join("p384.pem");
        std::fs::write(&p384, "-----BEGIN EC PRIVATE KEY-----\nMIGkAgEBBDAzLwKQrJbPHBwXaiqrQmpJrAumalziSrY0EI5WG/7/m96cfAx3LIGx\nJ4ssKaZvfBCgBwYFK4EEACKhZANiAATRq1u4lMKbWLtPk4UPzNGEQP4TkuJJvTaU\nzGteU6RicOFvddU9k3jgJeizSje46oUpwvGZBQO/lYXNpF/UAMhfIRc+sMJEdcjI\nBBvWFy3/+ut3eaDAs7QBvgCIu1aYtOU=\n-----END EC PRIVATE KEY-----\n").expect("write");
        let e = errors_of(&format!(
            "[webpush]\nvapid_key_file = {p384:?}\nsubject = \"mailto:a@b.c\"\n"
        ));
        assert!(
            e.contains("not an EC P-256") && e.contains("prime256v1"),
            "{e}"
        );
    }

    #[test]
    fn bad_subjects_and_origins_are_refused() {
        let d = dir();
        let key = d.join("vapid.pem");
        std::fs::write(
            &key,
            crate::webpush::vapid::VapidKey::generate()
                .expect("key")
                .to_pkcs8_pem()
                .expect("pem"),
        )
        .expect("write");
        let e = errors_of(&format!(
            "[webpush]\nvapid_key_file = {key:?}\nsubject = \"ops@example.com\"\n"
        ));
        assert!(
            e.contains("webpush.subject") && e.contains("mailto:"),
            "{e}"
        );
        let e = errors_of(&format!(
            "[webpush]\nvapid_key_file = {key:?}\nsubject = \"https://example.com\"\nallowed_origins = [\"http://push.example.com\"]\n"
        ));
        assert!(e.contains("webpush.allowed_origins"), "{e}");
    }
}
