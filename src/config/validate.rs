//! Validating the configuration: every key checked, every referenced key,
//! certificate and service account read, and every problem reported at once
//! with the key, the value and the fix.

use super::*;
use crate::settings::{parse_url, read_file, read_roots, validate_section};

/// The smallest `queue.window`: enough for every stream of a few upstream
/// connections at once.
const MIN_WINDOW: u64 = 10_000;

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
        let apns = validate_section(
            "apns",
            self.apns.as_ref(),
            |a| &a.apps,
            ApnsSection::validate,
            &mut errors,
        );
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
            (Some(f), None) => validate_section(
                "fcm",
                Some(f),
                |f| &f.apps,
                |app, e| app.validate(e).map(GoogleConfig::Fcm),
                &mut errors,
            ),
            (None, Some(g)) => validate_section(
                "gcm",
                Some(g),
                |g| &g.apps,
                |app, e| app.validate(e).map(GoogleConfig::Gcm),
                &mut errors,
            ),
            (None, None) => None,
        };
        let webhook = self
            .webhook
            .as_ref()
            .filter(|w| !w.url.is_empty())
            .and_then(|w| validate_webhook(w, &mut errors));
        let gorush = validate_gorush(&self.gorush, &mut errors);
        let webpush = validate_section(
            "webpush",
            self.webpush.as_ref(),
            |w| &w.apps,
            crate::webpush::config::validate_webpush,
            &mut errors,
        );
        let hms = validate_section(
            "hms",
            self.hms.as_ref(),
            |h| &h.apps,
            HmsSection::validate,
            &mut errors,
        );
        let grpc = super::grpc::validate_grpc(
            &self.grpc,
            &self.server,
            server.as_ref().map(|s| s.limits),
            server.as_ref().and_then(|s| s.tls.as_ref()),
            &mut errors,
        );
        let log_format = LogFormat::parse(&self.log.format).unwrap_or_else(|| {
            errors.push(invalid(
                "log.format",
                &self.log.format,
                "unknown log format",
                "use \"text\" (readable lines) or \"json\" (one JSON object per line, for log shippers)",
            ));
            LogFormat::Text
        });
        if self.server.idempotency_ttl_s == 0 {
            errors.push(invalid(
                "server.idempotency_ttl_s",
                self.server.idempotency_ttl_s,
                "an answer would be forgotten as it is given, so a retry would send twice",
                "keep answers at least a second; the default is 86400 (a day)",
            ));
        }
        if self.server.job_retention_s == 0 {
            errors.push(invalid(
                "server.job_retention_s",
                self.server.job_retention_s,
                "a finished job would be forgotten as it finishes",
                "keep finished jobs at least a second; the default is 604800 (7 days)",
            ));
        }
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
                job_retention: Duration::from_secs(self.server.job_retention_s),
                log_format,
                backoff: Backoff {
                    base: Duration::from_millis(self.retry.base_ms),
                    cap: Duration::from_millis(self.retry.cap_ms),
                },
                apns,
                google,
                webhook,
                gorush,
                webpush,
                grpc,
                hms,
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
        if q.window < MIN_WINDOW {
            errors.push(invalid(
                "queue.window",
                q.window,
                format!("must be at least {MIN_WINDOW}: every connection needs work in memory"),
                "keep the default, 100000, unless memory is very tight",
            ));
        }
        Some(DiskQueueConfig {
            data_dir: std::path::PathBuf::from(&q.data_dir),
            window: q.window,
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
        let password = read_password("queue.redis_password_file", &q.redis_password_file, errors);
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
        let sentinel = self.validate_sentinel(errors);
        if !(1..=MAX_REPLICA_TIMEOUT_MS).contains(&q.redis_replica_timeout_ms) {
            errors.push(invalid(
                "queue.redis_replica_timeout_ms",
                q.redis_replica_timeout_ms,
                format!("must be 1 to {MAX_REPLICA_TIMEOUT_MS}: a send waits this long for replicas before it answers"),
                "e.g. redis_replica_timeout_ms = 500",
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
            sentinel,
            replicas: ReplicaAcks {
                min: q.redis_min_replicas,
                timeout: Duration::from_millis(q.redis_replica_timeout_ms),
            },
        })
    }

    /// `queue.redis_sentinels`, `queue.redis_master` and
    /// `queue.redis_sentinel_password_file`, together or not at all.
    fn validate_sentinel(&self, errors: &mut Vec<ConfigError>) -> Option<SentinelConfig> {
        let q = &self.queue;
        if q.redis_sentinels.is_empty() {
            for (key, value) in [
                ("queue.redis_master", &q.redis_master),
                (
                    "queue.redis_sentinel_password_file",
                    &q.redis_sentinel_password_file,
                ),
            ] {
                if !value.is_empty() {
                    errors.push(invalid(
                        key,
                        value,
                        "only used with queue.redis_sentinels",
                        "list the Sentinels in redis_sentinels = [\"host:26379\", ...], or remove it",
                    ));
                }
            }
            return None;
        }
        let before = errors.len();
        let mut sentinels = Vec::new();
        for entry in &q.redis_sentinels {
            match sentinel_address(entry) {
                Some(address) => sentinels.push(address),
                None => errors.push(invalid(
                    "queue.redis_sentinels",
                    entry,
                    "not a host:port address",
                    "e.g. redis_sentinels = [\"10.0.0.5:26379\", \"10.0.0.6:26379\"]",
                )),
            }
        }
        if q.redis_master.trim().is_empty() || q.redis_master.contains(char::is_whitespace) {
            errors.push(invalid(
                "queue.redis_master",
                &q.redis_master,
                "required with queue.redis_sentinels: the name the Sentinels monitor",
                "e.g. redis_master = \"pushgate\" (as in sentinel.conf's `sentinel monitor pushgate ...`)",
            ));
        }
        let password = read_password(
            "queue.redis_sentinel_password_file",
            &q.redis_sentinel_password_file,
            errors,
        );
        (errors.len() == before).then(|| SentinelConfig {
            sentinels,
            master: q.redis_master.clone(),
            password,
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
            idempotency_ttl: Duration::from_secs(s.idempotency_ttl_s),
        })
    }
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
    if !(1..=30).contains(&g.sync_timeout_s) {
        errors.push(invalid(
            "gorush.sync_timeout_s",
            g.sync_timeout_s,
            "a synchronous /api/push waits 1 to 30 seconds",
            "use the default, 10",
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

/// The longest `queue.redis_replica_timeout_ms`: a send never waits longer
/// for replicas.
const MAX_REPLICA_TIMEOUT_MS: u64 = 5000;

/// `host:port` (`[v6]:port` too) with a port above 0.
fn sentinel_address(entry: &str) -> Option<(String, u16)> {
    let (host, port) = entry.trim().rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    (!host.is_empty() && !host.contains(char::is_whitespace)).then(|| (host.to_owned(), port))
}

/// A password file's text, without the editor's trailing newline; `None`
/// when `path` is empty (or unreadable, which is recorded in `errors`).
fn read_password(key: &str, path: &str, errors: &mut Vec<ConfigError>) -> Option<Secret> {
    if path.is_empty() {
        return None;
    }
    let raw = read_file(
        key,
        path,
        "the password file",
        "point it at a file holding the password alone, or set it to \"\"",
        errors,
    )?;
    match String::from_utf8(raw) {
        Ok(text) if !text.trim_end_matches(['\r', '\n']).is_empty() => {
            Some(Secret::new(text.trim_end_matches(['\r', '\n'])))
        }
        _ => {
            errors.push(invalid(
                key,
                path,
                "empty or not UTF-8",
                "write the password alone into the file",
            ));
            None
        }
    }
}
