//! Reading the configuration: the TOML file, then `PUSHGATE_<SECTION>_<KEY>`
//! overrides typed against the defaults, then app tables filled from their
//! section. Also the masked rendering `check-config` prints.

use super::*;

const ENV_PREFIX: &str = "PUSHGATE_";
const SECTIONS: [&str; 13] = [
    "server", "queue", "report", "retry", "apns", "fcm", "gcm", "webhook", "webpush", "gorush",
    "grpc", "hms", "log",
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
        if let Some(h) = masked.hms.as_mut() {
            mask(&mut h.client_secret);
            h.apps
                .values_mut()
                .for_each(|app| mask(&mut app.client_secret));
        }
        if let Some(w) = masked.webhook.as_mut() {
            mask(&mut w.secret);
        }
        masked.queue.redis_url = crate::config::masked_url(&masked.queue.redis_url);
        toml::to_string_pretty(&masked).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Keys an app does not inherit once it names any of them: mixing the
/// top-level token key with an app's certificate would be two auth modes.
const AUTH_KEYS: [&str; 12] = [
    "key_file",
    "key_id",
    "team_id",
    "cert_file",
    "cert_key_file",
    "pkcs12_file",
    "pkcs12_password",
    "service_account_file",
    "server_key",
    "app_id",
    "client_secret_file",
    "client_secret",
];

/// Fills every `[<platform>.apps.<name>]` table with the keys it leaves unset,
/// taken from `[<platform>]`, so an app states only what differs.
fn inherit_app_keys(table: &mut toml::Table) -> Result<(), ConfigErrors> {
    for platform in ["apns", "fcm", "gcm", "webpush", "hms"] {
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

/// Keys whose values are never echoed in an error.
fn is_secret_key(key: &str) -> bool {
    matches!(
        key,
        "api_keys" | "pkcs12_password" | "server_key" | "secret" | "client_secret"
    )
}

/// Every section filled with defaults, serialized: the schema env overrides are typed against.
fn template() -> toml::Table {
    let full = FileConfig {
        apns: Some(ApnsSection::default()),
        fcm: Some(FcmSection::default()),
        gcm: Some(GcmSection::default()),
        webhook: Some(WebhookSection::default()),
        webpush: Some(WebPushSection::default()),
        hms: Some(HmsSection::default()),
        ..FileConfig::default()
    };
    toml::Table::try_from(full).unwrap_or_default()
}
