//! The configuration of `pushgate send`'s in-process gateway: the
//! operator's file (when given), the credentials given as flags on top, and
//! only the section the chosen platform needs.

use std::path::PathBuf;

use clap::Args;

use super::{SendArgs, SendPlatform};
use crate::config::{ApnsSection, FcmSection, FileConfig, GcmSection, HmsSection, Secret};
use crate::terminal::{UsageError, usage};

/// Credentials given on the command line instead of (or over) a config file.
#[derive(Debug, Args, Default)]
pub struct CredentialArgs {
    /// APNs `.p8` key (with --key-id and --team-id).
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// APNs key id.
    #[arg(long)]
    pub key_id: Option<String>,
    /// APNs team id.
    #[arg(long)]
    pub team_id: Option<String>,
    /// FCM service account JSON.
    #[arg(long, value_name = "FILE")]
    pub service_account_file: Option<PathBuf>,
    /// Legacy GCM server key.
    #[arg(long, env = "PUSHGATE_GCM_SERVER_KEY", hide_env_values = true)]
    pub server_key: Option<String>,
    /// HMS: the AppGallery Connect app id (with --client-secret-file, or the
    /// secret in PUSHGATE_HMS_CLIENT_SECRET).
    #[arg(long, value_name = "ID")]
    pub app_id: Option<String>,
    /// HMS: a file holding the app's client secret.
    #[arg(long, value_name = "FILE")]
    pub client_secret_file: Option<PathBuf>,
    /// HMS: the OAuth token endpoint (default Huawei's).
    #[arg(long, value_name = "URL")]
    pub token_uri: Option<String>,
    /// Upstream endpoint (APNs: production, sandbox or https://host:port; Google, HMS: a URL).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Extra trusted root (PEM) for the upstream.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// The operator's config (when given) with the command-line credentials on
/// top, keeping only the section this platform needs.
pub(super) fn in_process_config(args: &SendArgs) -> Result<FileConfig, UsageError> {
    let mut file = match &args.config {
        Some(path) => FileConfig::load(Some(path), std::env::vars())
            .map_err(|e| usage(format!("{}: {e}", path.display())))?,
        None => FileConfig::load(None, std::env::vars()).map_err(|e| usage(e.to_string()))?,
    };
    let c = &args.credentials;
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    match args.platform() {
        SendPlatform::Apns => {
            let given = c.key_file.is_some() || c.endpoint.is_some() || c.ca_file.is_some();
            if given && file.apns.is_none() {
                file.apns = Some(ApnsSection::default());
            }
            if let Some(a) = file.apns.as_mut() {
                if let Some(k) = path(&c.key_file) {
                    a.key_file = k;
                }
                if let Some(k) = &c.key_id {
                    a.key_id = k.clone();
                }
                if let Some(t) = &c.team_id {
                    a.team_id = t.clone();
                }
                if let Some(e) = &c.endpoint {
                    a.endpoint = e.clone();
                }
                if let Some(ca) = path(&c.ca_file) {
                    a.ca_file = ca;
                }
                if let Some(topic) = &args.topic {
                    a.topic = topic.clone();
                }
            }
            if file.apns.is_none() {
                return Err(usage(
                    "no APNs credentials: give --config with an [apns] section, or --key-file/--key-id/--team-id",
                ));
            }
        }
        SendPlatform::Fcm => {
            if c.service_account_file.is_some() && file.fcm.is_none() {
                file.fcm = Some(FcmSection::default());
            }
            if let Some(f) = file.fcm.as_mut() {
                if let Some(s) = path(&c.service_account_file) {
                    f.service_account_file = s;
                }
                if let Some(e) = &c.endpoint {
                    f.endpoint = e.clone();
                }
                if let Some(ca) = path(&c.ca_file) {
                    f.ca_file = ca;
                }
            }
            if file.fcm.is_none() {
                return Err(usage(
                    "no FCM credentials: give --config with an [fcm] section, or --service-account-file",
                ));
            }
        }
        SendPlatform::Gcm => {
            if c.server_key.is_some() && file.gcm.is_none() {
                file.gcm = Some(GcmSection::default());
            }
            if let Some(g) = file.gcm.as_mut() {
                if let Some(k) = &c.server_key {
                    g.server_key = Secret::new(k.clone());
                }
                if let Some(e) = &c.endpoint {
                    g.endpoint = e.clone();
                }
                if let Some(ca) = path(&c.ca_file) {
                    g.ca_file = ca;
                }
            }
            if file.gcm.is_none() {
                return Err(usage(
                    "no GCM credentials: give --config with a [gcm] section, or --server-key",
                ));
            }
        }
        SendPlatform::Webpush => {
            if file.webpush.is_none() {
                return Err(usage(
                    "no Web Push credentials: give --config with a [webpush] section (vapid_key_file, subject)",
                ));
            }
            if let Some(w) = file.webpush.as_mut()
                && let Some(ca) = path(&c.ca_file)
            {
                w.ca_file = ca;
            }
        }
        SendPlatform::Hms => {
            if c.app_id.is_some() && file.hms.is_none() {
                file.hms = Some(HmsSection::default());
            }
            if let Some(h) = file.hms.as_mut() {
                if let Some(id) = &c.app_id {
                    h.app_id = id.clone();
                }
                if let Some(f) = path(&c.client_secret_file) {
                    // The file wins over a secret from the config or the environment.
                    h.client_secret_file = f;
                    h.client_secret = Secret::default();
                }
                if let Some(e) = &c.endpoint {
                    h.endpoint = e.clone();
                }
                if let Some(t) = &c.token_uri {
                    h.token_uri = t.clone();
                }
                if let Some(ca) = path(&c.ca_file) {
                    h.ca_file = ca;
                }
            }
            if file.hms.is_none() {
                return Err(usage(
                    "no HMS credentials: give --config with an [hms] section, or --app-id with --client-secret-file (or PUSHGATE_HMS_CLIENT_SECRET)",
                ));
            }
        }
    }
    // Only the chosen platform's section: the others' credentials are not
    // needed, and need not be valid.
    let keep = args.platform();
    if keep != SendPlatform::Apns {
        file.apns = None;
    }
    if keep != SendPlatform::Fcm {
        file.fcm = None;
    }
    if keep != SendPlatform::Gcm {
        file.gcm = None;
    }
    if keep != SendPlatform::Webpush {
        file.webpush = None;
    }
    if keep != SendPlatform::Hms {
        file.hms = None;
    }
    Ok(file)
}
