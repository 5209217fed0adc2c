//! `[grpc]`: the gRPC listener beside the HTTP API (src/grpc.rs). Off unless
//! `listen` is set. TLS and the limits default to `[server]`'s: a key left
//! at `0` (or `""`) takes the `[server]` value.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, ServerSection, invalid};
use crate::listener::{Keepalive, Limits};
use crate::settings::read_file;

/// `[grpc]` as written.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcSection {
    /// `IP:port` of the gRPC listener; `""` = no gRPC.
    pub listen: String,
    /// PEM certificate chain for TLS; `""` = `server.tls_cert` (plain h2c
    /// when neither is set).
    pub tls_cert: String,
    /// PEM private key for `tls_cert`; `""` = `server.tls_key`.
    pub tls_key: String,
    /// Largest gRPC message, each way; `0` = `server.max_body_bytes`.
    pub max_message_bytes: u64,
    /// Open client connections at most; `0` = `server.max_connections`.
    pub max_connections: u64,
    /// HTTP/2 concurrent streams (calls) per connection; `0` =
    /// `server.max_streams_per_connection`.
    pub max_streams_per_connection: u32,
    /// Seconds without a byte from a client before a keepalive PING; `0` =
    /// no PINGs.
    pub keepalive_interval_s: u64,
    /// Seconds a keepalive PING may go unanswered before the connection is closed.
    pub keepalive_timeout_s: u64,
}

impl Default for GrpcSection {
    fn default() -> Self {
        Self {
            listen: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            max_message_bytes: 0,
            max_connections: 0,
            max_streams_per_connection: 0,
            keepalive_interval_s: 60,
            keepalive_timeout_s: 20,
        }
    }
}

/// Validated `[grpc]`, when it is on.
#[derive(Debug, Clone)]
pub struct GrpcConfig {
    /// `grpc.listen`.
    pub listen: SocketAddr,
    /// TLS, limits and the largest message.
    pub settings: crate::grpc::Settings,
}

/// Validates `[grpc]` against the validated `[server]` parts it defaults to:
/// `server_limits` and `server_tls`.
pub(super) fn validate_grpc(
    g: &GrpcSection,
    server: &ServerSection,
    server_limits: Option<Limits>,
    server_tls: Option<&Arc<rustls::ServerConfig>>,
    errors: &mut Vec<ConfigError>,
) -> Option<GrpcConfig> {
    if g.listen.trim().is_empty() {
        return None;
    }
    let before = errors.len();
    let listen = match g.listen.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(invalid(
                "grpc.listen",
                &g.listen,
                "not an IP:port address",
                "e.g. \"127.0.0.1:9090\", or \"\" for no gRPC",
            ));
            None
        }
    };
    if let (Some(a), Ok(s)) = (listen, server.listen.parse::<SocketAddr>())
        && a == s
        && a.port() != 0
    {
        errors.push(invalid(
            "grpc.listen",
            &g.listen,
            "the same address as server.listen; gRPC has its own listener",
            "give gRPC another port, e.g. \"127.0.0.1:9090\"",
        ));
    }
    if g.max_message_bytes != 0 && g.max_message_bytes < 1024 {
        errors.push(invalid(
            "grpc.max_message_bytes",
            g.max_message_bytes,
            "too small to carry a request",
            "use at least 1024, or 0 for server.max_body_bytes",
        ));
    }
    if g.keepalive_interval_s != 0 && g.keepalive_timeout_s == 0 {
        errors.push(invalid(
            "grpc.keepalive_timeout_s",
            g.keepalive_timeout_s,
            "must be at least 1 while keepalive_interval_s is set",
            "e.g. keepalive_timeout_s = 20, or keepalive_interval_s = 0 for no PINGs",
        ));
    }
    let tls = match (g.tls_cert.is_empty(), g.tls_key.is_empty()) {
        (true, true) => server_tls.cloned(),
        (false, true) | (true, false) => {
            errors.push(invalid(
                "grpc.tls_cert",
                &g.tls_cert,
                "tls_cert and tls_key go together",
                "set both, or neither to use [server]'s TLS (plain h2c when it has none)",
            ));
            None
        }
        (false, false) => own_tls(g, errors),
    };
    let limits = server_limits?;
    let pick = |own: u64, server: u64| if own == 0 { server } else { own };
    let settings = crate::grpc::Settings {
        tls,
        limits: Limits {
            max_connections: usize::try_from(pick(
                g.max_connections,
                limits.max_connections as u64,
            ))
            .unwrap_or(usize::MAX),
            max_streams_per_connection: if g.max_streams_per_connection == 0 {
                limits.max_streams_per_connection
            } else {
                g.max_streams_per_connection
            },
            keepalive: (g.keepalive_interval_s != 0).then(|| Keepalive {
                interval: Duration::from_secs(g.keepalive_interval_s),
                timeout: Duration::from_secs(g.keepalive_timeout_s),
            }),
            ..limits
        },
        max_message_bytes: usize::try_from(pick(g.max_message_bytes, server.max_body_bytes))
            .unwrap_or(usize::MAX),
    };
    (errors.len() == before).then_some(GrpcConfig {
        listen: listen?,
        settings,
    })
}

/// `grpc.tls_cert` and `grpc.tls_key`, read and checked (ALPN `h2` only:
/// gRPC is HTTP/2).
fn own_tls(g: &GrpcSection, errors: &mut Vec<ConfigError>) -> Option<Arc<rustls::ServerConfig>> {
    let fix = "point grpc.tls_cert at a PEM certificate chain and grpc.tls_key at its PEM private key, or set both to \"\" to use [server]'s";
    let cert = read_file("grpc.tls_cert", &g.tls_cert, "the certificate", fix, errors);
    let key = read_file("grpc.tls_key", &g.tls_key, "the private key", fix, errors);
    let (cert, key) = (cert?, key?);
    match crate::tls::server_config(
        &String::from_utf8_lossy(&cert),
        &String::from_utf8_lossy(&key),
        &[b"h2"],
        None,
    ) {
        Ok(config) => Some(config),
        Err(e) => {
            errors.push(invalid(
                "grpc.tls_cert",
                &g.tls_cert,
                format!("unusable with grpc.tls_key ({e})"),
                fix,
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileConfig;

    fn validate(tweak: impl FnOnce(&mut FileConfig)) -> Result<crate::config::Config, String> {
        let mut file = FileConfig::default();
        file.queue.backend = "memory".into();
        tweak(&mut file);
        file.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn off_unless_listen_is_set() {
        assert!(validate(|_| {}).expect("valid").grpc.is_none());
    }

    #[test]
    fn limits_default_to_the_servers_and_can_be_set() {
        let config = validate(|f| {
            f.grpc.listen = "127.0.0.1:0".into();
            f.server.max_connections = 77;
            f.server.max_streams_per_connection = 9;
            f.server.max_body_bytes = 4096;
        })
        .expect("valid");
        let g = config.grpc.expect("on");
        assert_eq!(g.settings.limits.max_connections, 77);
        assert_eq!(g.settings.limits.max_streams_per_connection, 9);
        assert_eq!(g.settings.max_message_bytes, 4096);
        assert_eq!(
            g.settings.limits.header_timeout,
            config.server.limits.header_timeout
        );
        assert_eq!(
            g.settings.limits.keepalive,
            Some(Keepalive {
                interval: Duration::from_secs(60),
                timeout: Duration::from_secs(20)
            })
        );
        assert!(g.settings.tls.is_none());
        assert!(config.server.limits.keepalive.is_none());

        let own = validate(|f| {
            f.grpc.listen = "127.0.0.1:0".into();
            f.grpc.max_connections = 5;
            f.grpc.max_streams_per_connection = 3;
            f.grpc.max_message_bytes = 2048;
            f.grpc.keepalive_interval_s = 0;
        })
        .expect("valid")
        .grpc
        .expect("on");
        assert_eq!(own.settings.limits.max_connections, 5);
        assert_eq!(own.settings.limits.max_streams_per_connection, 3);
        assert_eq!(own.settings.max_message_bytes, 2048);
        assert_eq!(own.settings.limits.keepalive, None);
    }

    type Tweak = Box<dyn FnOnce(&mut FileConfig)>;

    #[test]
    fn each_bad_key_is_named_with_its_fix() {
        let cases: [(&str, Tweak); 5] = [
            ("grpc.listen", Box::new(|f| f.grpc.listen = "9090".into())),
            (
                "grpc.listen",
                Box::new(|f| {
                    f.server.listen = "127.0.0.1:8080".into();
                    f.grpc.listen = "127.0.0.1:8080".into();
                }),
            ),
            (
                "grpc.max_message_bytes",
                Box::new(|f| {
                    f.grpc.listen = "127.0.0.1:0".into();
                    f.grpc.max_message_bytes = 10;
                }),
            ),
            (
                "grpc.keepalive_timeout_s",
                Box::new(|f| {
                    f.grpc.listen = "127.0.0.1:0".into();
                    f.grpc.keepalive_timeout_s = 0;
                }),
            ),
            (
                "grpc.tls_cert",
                Box::new(|f| {
                    f.grpc.listen = "127.0.0.1:0".into();
                    f.grpc.tls_key = "key.pem".into();
                }),
            ),
        ];
        for (key, tweak) in cases {
            let e = validate(tweak).expect_err(key);
            assert!(e.contains(key) && e.contains("fix:"), "{key}: {e}");
        }
        let e = validate(|f| {
            f.grpc.listen = "127.0.0.1:0".into();
            f.grpc.tls_cert = "/nonexistent/cert.pem".into();
            f.grpc.tls_key = "/nonexistent/key.pem".into();
        })
        .expect_err("unreadable");
        assert!(
            e.contains("grpc.tls_cert") && e.contains("grpc.tls_key"),
            "{e}"
        );
    }

    #[test]
    fn env_overrides_reach_the_section() {
        let file = FileConfig::parse(
            "",
            "(test)",
            [
                (
                    "PUSHGATE_GRPC_LISTEN".to_owned(),
                    "127.0.0.1:9090".to_owned(),
                ),
                ("PUSHGATE_GRPC_MAX_CONNECTIONS".to_owned(), "12".to_owned()),
            ],
        )
        .expect("parsed");
        assert_eq!(file.grpc.listen, "127.0.0.1:9090");
        assert_eq!(file.grpc.max_connections, 12);
    }
}
