//! `pushgate check-config --connect FILE`: for every configured app, one
//! real request upstream that proves the credentials, through an in-process
//! gateway (the same code that serves):
//!
//! - APNs: a push to the all-zero device token. Apple answers
//!   `BadDeviceToken` when it accepted the provider token or certificate,
//!   403 (`InvalidProviderToken`, `BadCertificate`, ...) when not.
//! - FCM v1: an access token from the service account, then one
//!   `validate_only` message (nothing is delivered).
//! - Legacy GCM: one `dry_run` message with the server key.
//! - Web Push: the VAPID key signs a JWT, verified with its public key
//!   ([`super::vapid_check`]); no request upstream.
//! - HMS: an access token from the OAuth endpoint (asked directly, so a
//!   refusal prints Huawei's `error`/`sub_error`), then one `validate_only`
//!   message (nothing is delivered; Huawei answers a token no device has as
//!   invalid, which proves the credentials as well as a delivery would).
//!
//! Prints ✔ or ✘ per app with the upstream's own reason.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::client::Client;
use super::{Exit, UsageError, local, usage};
use crate::config::FileConfig;

/// The token no device has: APNs answers `BadDeviceToken` for it.
const ZERO_TOKEN: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// A registration token no device has.
const PROBE_TOKEN: &str = "pushgate-credential-check";
/// How long one probe may take (retries of 5xx included).
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the probes for `file`; prints one line per app.
pub async fn run(file: &std::path::Path) -> Exit {
    match connect(file).await {
        Ok(exit) => exit,
        Err(e) => {
            eprintln!("pushgate check-config --connect: {e}");
            Exit::Usage
        }
    }
}

async fn connect(path: &std::path::Path) -> Result<Exit, UsageError> {
    let mut file = FileConfig::load(Some(path), std::env::vars())
        .map_err(|e| usage(format!("{}: {e}", path.display())))?;
    file.gorush.enabled = true;
    file.gorush.path_prefix = String::new();
    // A probe should answer soon: short backoff between retries.
    file.retry.cap_ms = file.retry.cap_ms.min(1000);
    let apns_apps: Vec<String> = file
        .apns
        .as_ref()
        .map(|a| {
            std::iter::once("default".to_owned())
                .chain(a.apps.keys().cloned())
                .collect()
        })
        .unwrap_or_default();
    let (google_word, google_apps): (&str, Vec<String>) = match (&file.fcm, &file.gcm) {
        (Some(f), _) => (
            "fcm",
            std::iter::once("default".to_owned())
                .chain(f.apps.keys().cloned())
                .collect(),
        ),
        (None, Some(g)) => (
            "gcm",
            std::iter::once("default".to_owned())
                .chain(g.apps.keys().cloned())
                .collect(),
        ),
        (None, None) => ("", Vec::new()),
    };
    let webpush_apps: Vec<(String, std::sync::Arc<crate::webpush::vapid::Vapid>)> =
        if file.webpush.is_some() {
            let config = file
                .clone()
                .validate()
                .map_err(|e| usage(format!("{}: {e}", path.display())))?;
            config
                .webpush
                .iter()
                .flat_map(|apps| apps.iter())
                .map(|(n, w)| (n.to_owned(), w.vapid.clone()))
                .collect()
        } else {
            Vec::new()
        };
    let hms_apps: Vec<(String, crate::config::HmsConfig)> = if file.hms.is_some() {
        let mut only = file.clone();
        (only.apns, only.fcm, only.gcm, only.webpush) = (None, None, None, None);
        let config = only
            .validate()
            .map_err(|e| usage(format!("{}: {e}", path.display())))?;
        config
            .hms
            .iter()
            .flat_map(|apps| apps.iter())
            .map(|(n, h)| (n.to_owned(), h.clone()))
            .collect()
    } else {
        Vec::new()
    };
    if apns_apps.is_empty()
        && google_apps.is_empty()
        && webpush_apps.is_empty()
        && hms_apps.is_empty()
    {
        return Err(usage(
            "no [apns], [fcm], [gcm], [webpush] or [hms] section: nothing to check",
        ));
    }
    let mut all_ok = true;
    for (app, vapid) in &webpush_apps {
        let (ok, line) = super::vapid_check::probe(vapid);
        all_ok &= ok;
        println!("{} webpush {app}: {line}", mark(ok));
    }
    // An HMS app whose token endpoint refuses is not asked for a message.
    let mut hms_send = Vec::new();
    for (app, config) in &hms_apps {
        match crate::hms::probe_access_token(config).await {
            Ok(()) => hms_send.push(app.clone()),
            Err(e) => {
                all_ok = false;
                let what = if e.is_refusal() {
                    "credentials refused"
                } else {
                    "no access token"
                };
                println!("{} hms {app}: {what}: {e}", mark(false));
            }
        }
    }
    if apns_apps.is_empty() && google_apps.is_empty() && hms_send.is_empty() {
        return Ok(if all_ok { Exit::Ok } else { Exit::SomeFailed });
    }
    file.webpush = None;
    if hms_send.is_empty() {
        file.hms = None;
    }
    let gateway = local::start(file).await?;
    let client = Client::new(&gateway.url, Some(gateway.api_key.clone()))?;
    for app in &apns_apps {
        let (ok, line) = probe(&client, Probe::Apns, app).await;
        all_ok &= ok;
        println!("{} apns {app}: {line}", mark(ok));
    }
    for app in &google_apps {
        let (ok, line) = probe(&client, Probe::Google, app).await;
        all_ok &= ok;
        println!("{} {google_word} {app}: {line}", mark(ok));
    }
    for app in &hms_send {
        let (ok, line) = probe(&client, Probe::Hms, app).await;
        all_ok &= ok;
        println!("{} hms {app}: {line}", mark(ok));
    }
    gateway.stop().await;
    Ok(if all_ok { Exit::Ok } else { Exit::SomeFailed })
}

fn mark(ok: bool) -> &'static str {
    if ok { "✔" } else { "✘" }
}

/// Which upstream a probe goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// APNs: a push to the all-zero token.
    Apns,
    /// FCM v1 or legacy GCM: a `dry_run` message.
    Google,
    /// Huawei Push Kit: a `validate_only` message.
    Hms,
}

impl Probe {
    /// The gorush notification that makes the probe's job.
    fn notification(self, app: &str) -> Value {
        let message = "pushgate credential check";
        match self {
            Probe::Apns => {
                json!({"platform": 1, "tokens": [ZERO_TOKEN], "message": message, "app": app})
            }
            Probe::Google => {
                json!({"platform": 2, "tokens": [PROBE_TOKEN], "message": message, "dry_run": true, "app": app})
            }
            Probe::Hms => {
                json!({"platform": 3, "tokens": [PROBE_TOKEN], "title": message, "message": message, "dry_run": true, "app": app})
            }
        }
    }

    /// The report family whose failures name the probe token.
    fn family(self) -> &'static str {
        match self {
            Probe::Apns => "apns",
            Probe::Google => "gcm",
            Probe::Hms => "hms",
        }
    }

    fn token(self) -> &'static str {
        match self {
            Probe::Apns => ZERO_TOKEN,
            Probe::Google | Probe::Hms => PROBE_TOKEN,
        }
    }
}

/// One probe; `(credentials proven, what to print)`.
async fn probe(client: &Client, platform: Probe, app: &str) -> (bool, String) {
    match try_probe(client, platform, app).await {
        Ok(r) => r,
        Err(e) => (false, e.to_string()),
    }
}

async fn try_probe(
    client: &Client,
    platform: Probe,
    app: &str,
) -> Result<(bool, String), UsageError> {
    let apple = platform == Probe::Apns;
    let notification = platform.notification(app);
    let (status, answer) = client
        .post("/api/push", &json!({ "notifications": [notification] }))
        .await?;
    if status != 200 {
        return Ok((
            false,
            format!(
                "refused before sending: {}",
                answer["message"].as_str().unwrap_or("?")
            ),
        ));
    }
    let Some(job) = answer["jobs"][0].as_str() else {
        return Ok((false, "the gateway answered without a job".into()));
    };
    let started = Instant::now();
    let status = loop {
        let s = client.get(&format!("/jobs/{job}")).await?;
        if s["pending"].as_u64() == Some(0) {
            break s;
        }
        if started.elapsed() > PROBE_TIMEOUT {
            return Ok((
                false,
                format!(
                    "no final answer from the upstream within {} s (unreachable, or only retryable errors)",
                    PROBE_TIMEOUT.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let n = |k: &str| status[k].as_u64().unwrap_or(0);
    if n("successes") + n("canonicals") == 1 {
        return Ok((
            true,
            if apple {
                "credentials accepted (the upstream delivered the probe)".into()
            } else {
                "credentials accepted (access granted; validate_only message accepted)".into()
            },
        ));
    }
    if n("expired") == 1 {
        return Ok((
            false,
            "the probe expired: the upstream kept answering with retryable errors".into(),
        ));
    }
    let family = platform.family();
    let failures = client.get(&format!("/{family}/report/failures")).await?;
    let token = platform.token();
    let entry: Option<&Value> = failures["failures"]
        .as_array()
        .and_then(|l| l.iter().rev().find(|f| f["token"] == token));
    let (reason, code) = entry
        .map(|f| {
            (
                f["reason"].as_str().unwrap_or("?").to_owned(),
                f["status"].as_u64().unwrap_or(0),
            )
        })
        .unwrap_or_else(|| ("no reason recorded".into(), 0));
    let credential = code == 401 || code == 403 || reason == "AccessTokenRefused";
    Ok(if credential {
        (false, format!("credentials refused: {reason} ({code})"))
    } else if n("unregistered") == 1 {
        (
            true,
            "credentials accepted (the probe token was answered as unregistered)".into(),
        )
    } else {
        (
            true,
            format!("credentials accepted (the probe token was refused as expected: {reason})"),
        )
    })
}
