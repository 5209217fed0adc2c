//! The gRPC listener: the services as one axum router (tonic's `Routes`),
//! served by the same accept loop as the HTTP API ([`crate::listener::serve`]),
//! so TLS is our rustls config and the limits are the HTTP listener's:
//! connection cap, header/idle timeouts, HTTP/2 stream limit, rapid-reset
//! guard, plus HTTP/2 keepalive and a largest message.
//!
//! `grpc.health.v1.Health` follows the HTTP API's `/readyz`, read in process
//! every [`READINESS_EVERY`]: `SERVING` while the gateway is ready, for the
//! whole server (`""`) and for each of our services. Reflection (v1 and
//! v1alpha) describes both our packages and the health service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::adapter::{Adapter, Forward};
use super::gorush::GorushService;
use super::proto;
use super::proto::gorush::gorush_server::GorushServer;
use super::proto::gorush::health_server::HealthServer as GorushHealthServer;
use super::proto::pushgate::push_server::PushServer;
use super::push::PushService;
use crate::listener::Limits;
use crate::metrics::Metrics;

/// How often `grpc.health.v1.Health` reads `/readyz`.
pub const READINESS_EVERY: Duration = Duration::from_secs(1);

/// How the gRPC listener runs (validated `[grpc]`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// TLS (ALPN `h2`), when `grpc.tls_cert` or `server.tls_cert` is set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The listener's limits, keepalive included.
    pub limits: Limits,
    /// Largest message a call may send or receive (`grpc.max_message_bytes`).
    pub max_message_bytes: usize,
}

/// What the services need from the gateway: its HTTP API and its metrics.
pub struct Parts {
    /// The HTTP API (`api::router(state)`), called in process.
    pub api: axum::Router,
    /// Where `pushgate_grpc_requests_total` is counted.
    pub metrics: Arc<Metrics>,
    /// gorush's `/api/push` under `[gorush] path_prefix`; `None` when the
    /// gorush routes are off.
    pub gorush_push: Option<String>,
    /// The credentials the readiness probe shows `/readyz` (one of
    /// `server.api_keys`, when there are any).
    pub probe: Forward,
}

/// The gRPC server could not start.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The address cannot be bound.
    #[error("grpc.listen = {addr:?}: cannot listen: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The descriptors built into the binary cannot be read (a build fault).
    #[error("server reflection cannot read the built-in proto descriptors: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// A running gRPC listener.
pub struct GrpcServer {
    addr: SocketAddr,
    tls: bool,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    health: JoinHandle<()>,
}

impl GrpcServer {
    /// Binds `listen` and serves every service on it.
    pub async fn start(
        listen: SocketAddr,
        settings: Settings,
        parts: Parts,
    ) -> Result<Self, GrpcError> {
        let Settings {
            tls,
            limits,
            max_message_bytes,
        } = settings;
        let Parts {
            api,
            metrics,
            gorush_push,
            probe,
        } = parts;
        let adapter = Adapter::new(api);
        let (reporter, health) = tonic_health::server::health_reporter();
        // Not serving until the first probe says so.
        for name in SERVICES {
            reporter
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        let gorush = GorushService::new(adapter.clone(), metrics.clone(), gorush_push);
        let push = PushService::new(adapter.clone(), metrics);
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let mut routes = tonic::service::Routes::builder();
        routes
            .add_service(
                GorushServer::new(gorush.clone())
                    .max_decoding_message_size(max_message_bytes)
                    .max_encoding_message_size(max_message_bytes),
            )
            .add_service(GorushHealthServer::new(gorush))
            .add_service(
                PushServer::new(push)
                    .max_decoding_message_size(max_message_bytes)
                    .max_encoding_message_size(max_message_bytes),
            )
            .add_service(health)
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?);
        let router = routes.routes().prepare().into_axum_router();

        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| GrpcError::Listen {
                addr: listen.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| GrpcError::Listen {
            addr: listen.to_string(),
            source,
        })?;
        let (stop, stopped) = oneshot::channel();
        let https = tls.is_some();
        let server = tokio::spawn(crate::listener::serve(
            listener, router, tls, limits, stopped,
        ));
        let health = tokio::spawn(follow_readiness(adapter, probe, reporter));
        tracing::info!(%addr, tls = https, "gRPC listening");
        Ok(Self {
            addr,
            tls: https,
            stop: Some(stop),
            server,
            health,
        })
    }

    /// Where it listens (the real port when `listen` had port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr` (or `https://` with TLS), for a client to dial.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops accepting, lets open calls finish (HTTP/2 GOAWAY), and returns.
    pub async fn stop(mut self) {
        self.health.abort();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.server).await;
    }
}

/// The names `grpc.health.v1.Health` answers for: the whole server and ours.
const SERVICES: [&str; 3] = [
    "",
    <GorushServer<GorushService> as NamedService>::NAME,
    <PushServer<PushService> as NamedService>::NAME,
];

/// Sets every name in [`SERVICES`] to what `/readyz` says, whenever it changes.
async fn follow_readiness(adapter: Adapter, probe: Forward, reporter: HealthReporter) {
    let mut last = None;
    loop {
        let ready = adapter
            .get("/readyz", &probe)
            .await
            .is_ok_and(|a| a.status.is_success());
        if last != Some(ready) {
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for name in SERVICES {
                reporter.set_service_status(name, status).await;
            }
            tracing::info!(ready, "gRPC health follows /readyz");
            last = Some(ready);
        }
        tokio::time::sleep(READINESS_EVERY).await;
    }
}
