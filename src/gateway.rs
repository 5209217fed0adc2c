//! Wiring: from a validated [`Config`] to a listening gateway, and back down
//! again with a drain. `main`, `pushgate demo` and the tests all start the
//! gateway through [`Gateway::start`], so they run the same code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{self, AppState, Inner};
use crate::backend::{Backend, Parts};
use crate::config::Config;
use crate::job::Family;
use crate::metrics::Metrics;
use crate::outcome::{Recorder, Sink};
use crate::pace::shared::QuotaStore;
use crate::platform::Context;
use crate::platforms;
use crate::queue::Admission;
use crate::report::Reports;
use crate::shared::credentials::RedisCredentials;
use crate::shared::quota::RedisQuota;
use crate::shared::replicas::AckFailures;
use crate::shared_credential::{self, SharedCredentials};
use crate::store::Store;
use crate::store::disk::DiskStore;
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;

pub use crate::backend::DrainReport;

/// A running gateway.
pub struct Gateway {
    /// Where the API listens (the real port when `listen` had port 0).
    pub addr: SocketAddr,
    /// The API's state: reports, services, metrics.
    pub state: AppState,
    https: bool,
    stop_http: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    /// The gRPC listener, when `[grpc] listen` is set.
    pub grpc: Option<crate::grpc::GrpcServer>,
}

impl Gateway {
    /// Starts delivery for every configured platform and the API on
    /// `config.server.listen`. Built bottom-up in one pass: the store, the
    /// books and the outcome sinks, the fan-out over them, the platform
    /// services holding the fan-out, the registry of services, and the
    /// backend over all of it; no part is patched after it is built.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        let catalog = platforms::CATALOG;
        let metrics = Arc::new(Metrics::with_catalog(catalog)?);
        let admission = Arc::new(Admission::new(config.queue_capacity));
        // The one place that knows which store it builds.
        let store: Arc<dyn Store> = match (&config.redis, &config.disk) {
            (Some(redis), _) => {
                let store = RedisStore::connect(
                    redis,
                    config.max_list,
                    config.queue_capacity,
                    config.job_retention,
                    catalog,
                    AckFailures::new(metrics.redis_replica_ack_failures.clone()),
                )
                .await?;
                tracing::info!(stream = %redis.stream, group = %redis.group, consumer = store.consumer(), sentinel = ?redis.sentinel.as_ref().map(|s| s.describe()), min_replicas = redis.replicas.min, "queue backend: redis (shared)");
                store
            }
            (None, Some(disk)) => {
                let store = DiskStore::open(
                    &disk.data_dir,
                    config.max_list,
                    config.max_jobs,
                    config.job_retention,
                    admission.clone(),
                    catalog,
                )?;
                tracing::info!(data_dir = %disk.data_dir.display(), "queue backend: disk");
                store
            }
            (None, None) => {
                tracing::info!("queue backend: memory (nothing survives a restart)");
                Arc::new(
                    MemoryStore::new(
                        admission.clone(),
                        config.max_list,
                        Some(metrics.list_dropped.clone()),
                    )
                    .retaining(config.job_retention),
                )
            }
        };
        let families: Vec<(Family, Vec<String>)> = catalog
            .families()
            .into_iter()
            .map(|family| (family, config.app_names(family)))
            .collect();
        let reports = Arc::new(
            Reports::with_apps(config.max_jobs, &families)
                .retaining(config.max_jobs, config.job_retention),
        );
        let mut sinks: Vec<Arc<dyn Sink>> =
            vec![reports.clone(), admission.clone(), metrics.clone()];
        if let Some(webhook) = &config.webhook {
            sinks.push(Arc::new(crate::webhook::start(webhook.clone(), &metrics)?));
        }
        sinks.push(store.clone());
        // Last: a waiter woken by a job's end finds its books written.
        let watch = Arc::new(crate::outcome::watch::Watch::default());
        sinks.push(watch.clone());
        let recorder = Recorder::new(sinks);
        // With redis, the cluster shares one provider token per key and one
        // pace per FCM project.
        let (credentials, quota) = match &config.redis {
            Some(redis) => {
                let acks = AckFailures::new(metrics.redis_replica_ack_failures.clone());
                let credentials = SharedCredentials::new(
                    Arc::new(RedisCredentials::new(redis)?.counting(acks.clone())),
                    Arc::new(shared_credential::SystemClock),
                );
                let quota: Arc<dyn QuotaStore> = Arc::new(RedisQuota::new(redis)?.counting(acks));
                (Some(credentials), Some(quota))
            }
            None => (None, None),
        };
        let ctx = Context {
            recorder: recorder.clone(),
            metrics: metrics.clone(),
            backoff: config.backoff,
            credentials,
            quota,
        };
        let registry = platforms::start(config, &ctx).await?;
        let backend = Backend::start(Parts {
            store,
            reports,
            admission,
            recorder,
            registry: registry.clone(),
            metrics: metrics.clone(),
            window: config.disk.as_ref().map_or(u64::MAX, |d| d.window),
        })?;
        let state = AppState::new(Inner {
            platforms: registry,
            catalog,
            backend,
            metrics,
            api_keys: config.server.api_keys.clone(),
            max_body_bytes: config.server.max_body_bytes,
            shutting_down: Default::default(),
            gorush: config.gorush.clone(),
            idempotency_ttl: config.server.idempotency_ttl,
            watch,
        });
        let listener = TcpListener::bind(config.server.listen).await.map_err(|e| {
            anyhow::anyhow!(
                "server.listen = {:?}: cannot listen: {e}",
                config.server.listen.to_string()
            )
        })?;
        let addr = listener.local_addr()?;
        let (stop_http, stopped) = oneshot::channel::<()>();
        let app = api::router(state.clone());
        let server = tokio::spawn(crate::listener::serve(
            listener,
            app,
            config.server.tls.clone(),
            config.server.limits,
            stopped,
        ));
        let platforms: Vec<&str> = state
            .platforms
            .platforms()
            .map(|r| r.platform.as_str())
            .collect();
        tracing::info!(%addr, https = config.server.tls.is_some(), ?platforms, "pushgate listening");
        let grpc = match &config.grpc {
            Some(grpc) => Some(start_grpc(grpc, config, &state).await?),
            None => None,
        };
        Ok(Self {
            addr,
            state,
            https: config.server.tls.is_some(),
            stop_http: Some(stop_http),
            server,
            grpc,
        })
    }

    /// `http://addr` (or `https://` with `server.tls_cert`).
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Graceful drain: refuse new sends (503 `shutting_down`), let the
    /// backend drain ([`Backend::drain`]: deliver until nothing is pending
    /// or `grace` runs out, then expire or keep what is left, by backend),
    /// and stop the API.
    pub async fn shutdown(mut self, grace: Duration) -> DrainReport {
        self.state.begin_shutdown();
        let report = self.state.backend.drain(grace).await;
        if let Some(stop) = self.stop_http.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.server).await;
        if let Some(grpc) = self.grpc.take() {
            grpc.stop().await;
        }
        report
    }
}

/// The gRPC listener (`[grpc]`): a front over the same API router, so it
/// needs only the router, the metrics, where gorush's `/api/push` is, and a
/// key for its `/readyz` probe.
async fn start_grpc(
    grpc: &crate::config::GrpcConfig,
    config: &Config,
    state: &AppState,
) -> anyhow::Result<crate::grpc::GrpcServer> {
    let gorush = &config.gorush;
    let parts = crate::grpc::Parts {
        api: api::router(state.clone()),
        metrics: state.metrics.clone(),
        gorush_push: gorush
            .enabled
            .then(|| format!("{}/api/push", gorush.path_prefix)),
        probe: config
            .server
            .api_keys
            .first()
            .map(|k| crate::grpc::adapter::Forward::bearer(k.expose()))
            .unwrap_or_default(),
    };
    Ok(crate::grpc::GrpcServer::start(grpc.listen, grpc.settings.clone(), parts).await?)
}

/// SIGTERM and SIGINT listeners, registered once. Unlike calling
/// [`wait_for_signal`] twice, a signal that arrives between two `recv` calls is
/// kept, so "a second signal exits at once" holds however fast it follows.
pub struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Registers the listeners. One that cannot be registered is skipped (the
    /// other still works; with neither, `recv` never resolves).
    pub fn new() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate())
            .inspect_err(|e| tracing::warn!(error = %e, "cannot listen for SIGTERM"))
            .ok();
        let int = signal(SignalKind::interrupt())
            .inspect_err(|e| tracing::warn!(error = %e, "cannot listen for SIGINT"))
            .ok();
        Self { term, int }
    }

    /// Resolves on the next SIGTERM or SIGINT.
    pub async fn recv(&mut self) {
        async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.term) => {}
            _ = next(&mut self.int) => {}
        }
    }
}

impl Default for Signals {
    fn default() -> Self {
        Self::new()
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
