//! What settings are made of, below every module that has some: a
//! [`Secret`] that never prints, the errors a bad key gives ([`ConfigError`]:
//! the key, the value and the fix), the helpers every section validates
//! with, and [`Apps`]: a `default` app and named ones, for any platform. A
//! floor module: it imports nothing of ours, so a platform folder owns its
//! section and its validation without importing [`crate::config`], which
//! gathers the sections.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use serde::{Deserialize, Serialize};

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

pub fn invalid(
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

/// A platform's apps: the `default` one (its top-level section) and the
/// named ones (`[<platform>.apps.<name>]`). The one apps map of config, the
/// API and the gateway.
#[derive(Debug, Clone)]
pub struct Apps<T> {
    default: T,
    named: BTreeMap<String, T>,
}

/// The app every top-level config section describes.
pub const DEFAULT_APP: &str = "default";

/// An `app` that names no configured app.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown app {name:?}; known apps: {known:?}")]
pub struct UnknownApp {
    /// The name asked for.
    pub name: String,
    /// The apps there are, default first.
    pub known: Vec<String>,
}

impl<T> Apps<T> {
    /// The default app and the named ones.
    pub fn new(default: T, named: BTreeMap<String, T>) -> Self {
        Self { default, named }
    }

    /// The `default` app.
    pub fn default_app(&self) -> &T {
        &self.default
    }

    /// The app called `name` (`default` is the top-level section).
    pub fn get(&self, name: &str) -> Option<&T> {
        if name == DEFAULT_APP {
            Some(&self.default)
        } else {
            self.named.get(name)
        }
    }

    /// The app a request names: absent, empty or `default` is the top-level
    /// section; an unknown name is an error listing the known ones.
    pub fn pick(&self, name: Option<&str>) -> Result<(&T, Arc<str>), UnknownApp> {
        match name {
            None | Some("") | Some(DEFAULT_APP) => Ok((&self.default, Arc::from(DEFAULT_APP))),
            Some(name) => self
                .named
                .get_key_value(name)
                .map(|(k, app)| (app, Arc::from(k.as_str())))
                .ok_or_else(|| UnknownApp {
                    name: name.to_owned(),
                    known: self.names().map(str::to_owned).collect(),
                }),
        }
    }

    /// Every app with its name, default first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        std::iter::once((DEFAULT_APP, &self.default))
            .chain(self.named.iter().map(|(k, v)| (k.as_str(), v)))
    }

    /// Every app's name, default first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(name, _)| name)
    }

    /// Every app.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.iter().map(|(_, app)| app)
    }

    /// The same apps, each turned into something else.
    pub fn map<U>(&self, mut f: impl FnMut(&str, &T) -> U) -> Apps<U> {
        Apps {
            default: f(DEFAULT_APP, &self.default),
            named: self
                .named
                .iter()
                .map(|(name, app)| (name.clone(), f(name, app)))
                .collect(),
        }
    }

    /// The same apps, each turned into something else (built in name order,
    /// default first); the first error stops it.
    pub fn try_map<U, E>(&self, mut f: impl FnMut(&str, &T) -> Result<U, E>) -> Result<Apps<U>, E> {
        let default = f(DEFAULT_APP, &self.default)?;
        let mut named = BTreeMap::new();
        for (name, app) in &self.named {
            named.insert(name.clone(), f(name, app)?);
        }
        Ok(Apps { default, named })
    }
}

// ===== validation helpers =====

/// Validates a platform's section and its named apps (`[<platform>.apps.<name>]`):
/// `None` when the section is absent or its default app is invalid (the
/// problems are in `errors`).
pub fn validate_section<S, C>(
    platform: &str,
    section: Option<&S>,
    apps_of: impl Fn(&S) -> &BTreeMap<String, S>,
    validate: impl Fn(&S, &mut Vec<ConfigError>) -> Option<C>,
    errors: &mut Vec<ConfigError>,
) -> Option<Apps<C>> {
    let section = section?;
    let default = validate(section, errors);
    let named = validate_apps(
        platform,
        apps_of(section),
        |app| !apps_of(app).is_empty(),
        &validate,
        errors,
    );
    default.map(|default| Apps::new(default, named))
}

/// Validates named apps, reporting each problem under `<platform>.apps.<name>.<key>`.
pub fn validate_apps<S, C>(
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

pub fn read_file(
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

pub fn read_roots(
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
pub fn parse_url(
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
