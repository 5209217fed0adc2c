//! How the `redis` backend reaches Redis: the URL, TLS and AUTH.
//!
//! - `redis://` plain TCP; `rediss://` TLS through rustls on the process's
//!   one crypto provider (aws-lc-rs, installed by `main`), verified against
//!   the system's roots or, with `queue.redis_ca_file`, that CA alone (a
//!   private CA). No `ring`, no native-tls: the `redis` crate's
//!   `tokio-rustls-comp` feature brings rustls with no provider of its own.
//! - AUTH: `user:password@` in the URL (ACL user, Redis 6+) or a password
//!   alone, from `queue.redis_password_file` (which wins over the URL's).
//! - Every URL that is logged or shown goes through
//!   [`masked_url`]: the password is never printed.
//! - Sentinel (`queue.redis_sentinels` + `queue.redis_master`): the primary's
//!   address is asked of the Sentinels ([`sentinel_client`]); the URL's user,
//!   password, database and TLS apply to it as they would to the URL's host.
//!   [`super::primary`] follows it across failovers.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, TlsCertificates, TlsMode};

use super::replicas::ReplicaAcks;
use crate::settings::Secret;

/// The URL could not be turned into a client.
#[derive(Debug, thiserror::Error)]
#[error("queue.redis_url {url}: {source}")]
pub struct LinkError {
    /// `queue.redis_url`, masked.
    pub url: String,
    /// The client's error.
    #[source]
    pub source: redis::RedisError,
}

/// A client for `config`: its URL, with the password file applied and, for
/// `rediss://` with a CA file, that CA as the only root.
pub fn client(config: &RedisQueueConfig) -> Result<Client, LinkError> {
    let info = connection_info(config)?;
    let err = |source| LinkError {
        url: masked_url(&config.url),
        source,
    };
    match (&info.addr, &config.ca_pem) {
        (ConnectionAddr::TcpTls { .. }, Some(pem)) => {
            Client::build_with_tls(info, private_ca(pem)).map_err(err)
        }
        _ => Client::open(info).map_err(err),
    }
}

/// `config.url` with the password file applied.
fn connection_info(config: &RedisQueueConfig) -> Result<ConnectionInfo, LinkError> {
    let mut info = config
        .url
        .as_str()
        .into_connection_info()
        .map_err(|source| LinkError {
            url: masked_url(&config.url),
            source,
        })?;
    if let Some(password) = &config.password {
        info.redis.password = Some(password.expose().to_owned());
    }
    Ok(info)
}

fn private_ca(pem: &[u8]) -> TlsCertificates {
    TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    }
}

/// A client that asks `sentinel`'s Sentinels for the primary of its master
/// name, and connects to it with `config.url`'s user, password, database
/// and TLS (the URL's host and port are not used).
pub fn sentinel_client(
    config: &RedisQueueConfig,
    sentinel: &SentinelConfig,
) -> Result<SentinelClient, LinkError> {
    let info = connection_info(config)?;
    let err = |source| LinkError {
        url: format!("sentinel {}", sentinel.describe()),
        source,
    };
    let sentinels = sentinel
        .sentinels
        .iter()
        .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
    let mut builder = SentinelClientBuilder::new(
        sentinels,
        sentinel.master.clone(),
        SentinelServerType::Master,
    )
    .map_err(err)?
    .set_client_to_redis_db(info.redis.db)
    .set_client_to_redis_protocol(info.redis.protocol);
    if let Some(user) = info.redis.username {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = info.redis.password {
        builder = builder.set_client_to_redis_password(password);
    }
    if let ConnectionAddr::TcpTls { insecure, .. } = info.addr {
        let mode = if insecure {
            TlsMode::Insecure
        } else {
            TlsMode::Secure
        };
        builder = builder.set_client_to_redis_tls_mode(mode);
        if let Some(pem) = &config.ca_pem {
            builder = builder.set_client_to_redis_certificates(private_ca(pem));
        }
    }
    if let Some(password) = &sentinel.password {
        builder = builder.set_client_to_sentinel_password(password.expose().to_owned());
    }
    builder.build().map_err(err)
}

/// The stream's key: `queue.stream` as a hash tag, `{<stream>}`, which every
/// other key of the cluster starts with (`{<stream>}:done:<entry>`, ...), so
/// all of them hash to one slot of a Redis Cluster. A name that already has
/// a `{...}` tag is kept as written.
pub fn stream_key(stream: &str) -> String {
    if stream.contains('{') && stream.contains('}') {
        stream.to_owned()
    } else {
        format!("{{{stream}}}")
    }
}

/// How long a command may wait for Redis's answer before it fails: seconds,
/// so a send answers 503 rather than hang while Redis is gone.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting may take before it fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A self-reconnecting connection to `client`: connects within
/// [`CONNECT_TIMEOUT`], fails a command after `response_timeout`, and
/// reconnects on the next command.
pub async fn manager(
    client: Client,
    response_timeout: Duration,
) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(response_timeout)
        .set_number_of_retries(1)
        .set_max_delay(1000);
    ConnectionManager::new_with_config(client, config).await
}

/// True when the URL asks for TLS.
pub fn is_tls(client: &Client) -> bool {
    matches!(
        client.get_connection_info().addr,
        ConnectionAddr::TcpTls { .. }
    )
}

/// Validated `[queue]` settings of the `redis` backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisQueueConfig {
    /// `queue.redis_url`. May hold a password: log [`masked_url`] of it.
    pub url: String,
    /// The password read from `queue.redis_password_file`, if set.
    pub password: Option<Secret>,
    /// The PEM of `queue.redis_ca_file`, if set (`rediss://` only).
    pub ca_pem: Option<Vec<u8>>,
    /// `queue.stream`.
    pub stream: String,
    /// `queue.group`.
    pub group: String,
    /// `queue.consumer`, defaulted to `hostname-pid`.
    pub consumer: String,
    /// `queue.claim_idle_ms`.
    pub claim_idle: Duration,
    /// `queue.redis_sentinels` and `queue.redis_master`, when set.
    pub sentinel: Option<SentinelConfig>,
    /// `queue.redis_min_replicas` and `queue.redis_replica_timeout_ms`.
    pub replicas: ReplicaAcks,
}

/// Validated `queue.redis_sentinels`, `queue.redis_master` and
/// `queue.redis_sentinel_password_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelConfig {
    /// Each Sentinel's host and port.
    pub sentinels: Vec<(String, u16)>,
    /// The name they monitor.
    pub master: String,
    /// The Sentinels' own password, if they ask for one.
    pub password: Option<Secret>,
}

impl SentinelConfig {
    /// `master@host:port,host:port`, for logs and errors.
    pub fn describe(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect();
        format!("{}@{}", self.master, hosts.join(","))
    }
}

/// `redis://user:secret@host` → `redis://user:********@host`: a URL as it
/// may be logged or shown (`check-config`, errors). A URL without a password
/// is returned as is.
pub fn masked_url(url: &str) -> String {
    let Some(scheme) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    // The userinfo ends at the last '@' before the path.
    let authority_end = url[scheme..].find('/').map_or(url.len(), |i| scheme + i);
    let Some(at) = url[scheme..authority_end].rfind('@').map(|i| scheme + i) else {
        return url.to_owned();
    };
    let userinfo = &url[scheme..at];
    // `redis://name@host` names an ACL user and no password: nothing to hide.
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:********{}",
        &url[..scheme],
        &userinfo[..colon],
        &url[at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(url: &str) -> RedisQueueConfig {
        RedisQueueConfig {
            url: url.into(),
            password: None,
            ca_pem: None,
            stream: "s".into(),
            group: "g".into(),
            consumer: "c".into(),
            claim_idle: Duration::from_secs(30),
            sentinel: None,
            replicas: ReplicaAcks::default(),
        }
    }

    #[test]
    fn password_file_wins_over_the_url() {
        let mut c = config("redis://alice:fromurl@127.0.0.1:6379/2");
        c.password = Some(Secret::new("fromfile"));
        let client = client(&c).expect("client");
        let info = client.get_connection_info();
        assert_eq!(info.redis.username.as_deref(), Some("alice"));
        assert_eq!(info.redis.password.as_deref(), Some("fromfile"));
        assert_eq!(info.redis.db, 2);
        assert!(!is_tls(&client));
    }

    #[test]
    fn rediss_is_tls_with_or_without_a_private_ca() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let plain = client(&config("rediss://127.0.0.1:6380")).expect("system roots");
        assert!(is_tls(&plain));
        let pki = crate::mock::tls::TestPki::generate().expect("pki");
        let mut c = config("rediss://:pw@127.0.0.1:6380");
        c.ca_pem = Some(pki.ca_pem.into_bytes());
        let private = client(&c).expect("private CA");
        assert!(is_tls(&private));
        assert_eq!(
            private.get_connection_info().redis.password.as_deref(),
            Some("pw")
        );
    }

    #[test]
    fn every_key_of_a_stream_shares_its_hash_tag() {
        assert_eq!(stream_key("pushgate"), "{pushgate}");
        assert_eq!(stream_key("{app}.queue"), "{app}.queue");
    }

    #[test]
    fn errors_never_show_the_password() {
        let e = client(&config("redis://:hunter2@host:notaport")).expect_err("bad port");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
