//! Validating the configuration: every key checked, every referenced key,
//! certificate and service account read, and every problem reported at once
//! with the key, the value and the fix.

use super::*;

impl FileConfig {
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
        let disk = self.validate_disk(&mut errors);
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
        let gorush = validate_gorush(&self.gorush, &mut errors);
        let webpush = self
            .webpush
            .as_ref()
            .and_then(|w| super::webpush::validate_webpush(w, &mut errors));
        let webpush_apps = self.webpush.as_ref().map_or_else(BTreeMap::new, |w| {
            validate_apps(
                "webpush",
                &w.apps,
                |app| !app.apps.is_empty(),
                super::webpush::validate_webpush,
                &mut errors,
            )
        });
        let grpc = super::grpc::validate_grpc(
            &self.grpc,
            &self.server,
            server.as_ref().map(|s| s.limits),
            server.as_ref().and_then(|s| s.tls.as_ref()),
            &mut errors,
        );
        match server {
            Some(server) if errors.is_empty() => Ok(Config {
                server,
                queue_capacity: self.queue.capacity,
                redis,
                disk,
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
                gorush,
                webpush,
                webpush_apps,
                grpc,
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }

    fn validate_disk(&self, errors: &mut Vec<ConfigError>) -> Option<DiskQueueConfig> {
        let q = &self.queue;
        if q.backend != "disk" {
            return None;
        }
        if q.data_dir.trim().is_empty() {
            errors.push(invalid(
                "queue.data_dir",
                &q.data_dir,
                "must name a directory for the disk backend",
                "e.g. data_dir = \"/var/lib/pushgate\" (or backend = \"memory\" to keep nothing)",
            ));
            return None;
        }
        Some(DiskQueueConfig {
            data_dir: std::path::PathBuf::from(&q.data_dir),
        })
    }

    fn validate_queue_backend(&self, errors: &mut Vec<ConfigError>) -> Option<RedisQueueConfig> {
        let q = &self.queue;
        match q.backend.as_str() {
            "memory" | "disk" => return None,
            "redis" => {}
            _ => {
                errors.push(invalid(
                    "queue.backend",
                    &q.backend,
                    "unknown queue backend",
                    "use \"disk\" (one gateway, survives restarts), \"memory\" (one process, keeps nothing) or \"redis\" (shared by several gateways)",
                ));
                return None;
            }
        }
        let before = errors.len();
        let tls = q.redis_url.starts_with("rediss://");
        if !(q.redis_url.starts_with("redis://") || tls || q.redis_url.starts_with("unix://"))
            || redis::Client::open(q.redis_url.as_str()).is_err()
        {
            errors.push(invalid(
                "queue.redis_url",
                crate::config::masked_url(&q.redis_url),
                "not a usable redis URL",
                "e.g. \"redis://127.0.0.1:6379\", \"rediss://user:password@host:6380/0\" (TLS)",
            ));
        }
        let password = if q.redis_password_file.is_empty() {
            None
        } else {
            read_file(
                "queue.redis_password_file",
                &q.redis_password_file,
                "the Redis password file",
                "point it at a file holding the password alone, or set it to \"\"",
                errors,
            )
            .and_then(|raw| match String::from_utf8(raw) {
                // A trailing newline is the editor's, not the password's.
                Ok(text) if !text.trim_end_matches(['\r', '\n']).is_empty() => Some(
                    crate::config::Secret::new(text.trim_end_matches(['\r', '\n'])),
                ),
                _ => {
                    errors.push(invalid(
                        "queue.redis_password_file",
                        &q.redis_password_file,
                        "empty or not UTF-8",
                        "write the password alone into the file",
                    ));
                    None
                }
            })
        };
        let ca_pem = if q.redis_ca_file.is_empty() {
            None
        } else if !tls {
            errors.push(invalid(
                "queue.redis_ca_file",
                &q.redis_ca_file,
                "a CA file needs a TLS URL",
                "use a rediss:// redis_url, or set redis_ca_file = \"\"",
            ));
            None
        } else {
            let roots = read_roots("queue.redis_ca_file", &q.redis_ca_file, errors);
            (!roots.is_empty())
                .then(|| std::fs::read(&q.redis_ca_file).ok())
                .flatten()
        };
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
            password,
            ca_pem,
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
                "use at least 1024 (default 83886080)",
            ));
        }
        for (key, value) in [
            ("server.header_timeout_s", s.header_timeout_s),
            ("server.body_timeout_s", s.body_timeout_s),
            ("server.idle_timeout_s", s.idle_timeout_s),
            ("server.max_connections", s.max_connections),
            (
                "server.max_streams_per_connection",
                u64::from(s.max_streams_per_connection),
            ),
        ] {
            if value == 0 {
                errors.push(invalid(
                    key,
                    value,
                    "must be at least 1",
                    "leave it out for the default (see config/pushgate.toml)",
                ));
            }
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
            limits: crate::listener::Limits {
                header_timeout: Duration::from_secs(s.header_timeout_s),
                body_timeout: Duration::from_secs(s.body_timeout_s),
                idle_timeout: Duration::from_secs(s.idle_timeout_s),
                max_connections: usize::try_from(s.max_connections).unwrap_or(usize::MAX),
                max_streams_per_connection: s.max_streams_per_connection,
                keepalive: None,
            },
        })
    }
}

/// Validates named apps, reporting each problem under `<platform>.apps.<name>.<key>`.
pub(super) fn validate_apps<S, C>(
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

pub(super) fn read_file(
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

pub(super) fn read_roots(
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

/// `[gorush]`: the prefix is a path (`""` or `/x`, no trailing slash) and
/// at least one notification fits in a request.
fn validate_gorush(g: &GorushSection, errors: &mut Vec<ConfigError>) -> GorushSection {
    let prefix = &g.path_prefix;
    if !prefix.is_empty()
        && (!prefix.starts_with('/')
            || prefix.ends_with('/')
            || prefix.contains(|c: char| c.is_whitespace() || c == '{' || c == '}' || c == '*'))
    {
        errors.push(invalid(
            "gorush.path_prefix",
            prefix,
            "must be empty or a path like \"/gorush\" (leading slash, no trailing slash, no braces)",
            "write path_prefix = \"/gorush\", or \"\" to serve /api/push at the root as gorush does",
        ));
    }
    if g.max_notifications == 0 {
        errors.push(invalid(
            "gorush.max_notifications",
            g.max_notifications,
            "no request could ever be served",
            "use gorush's default, 100",
        ));
    }
    g.clone()
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
