//! Wiring: from a validated [`Config`] to a listening gateway, and back down
//! again with a drain. `main`, `pushgate demo` and the tests all start the
//! gateway through [`Gateway::start`], so they run the same code.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{self, AppState, Inner};
use crate::apns::ApnsService;
use crate::backend::{Backend, Parts, Store};
use crate::config::{Config, GoogleConfig};
use crate::delivery::Registry;
use crate::fcm::GoogleService;
use crate::floor::DEFAULT_APP;
use crate::job::Family;
use crate::metrics::Metrics;
use crate::outcome::{Recorder, Sink};
use crate::pace::shared::SharedBucket;
use crate::pace::{self, Allowance, Bucket};
use crate::queue::Admission;
use crate::queue::redis::Cluster;
use crate::queue::redis::quota::RedisQuota;
use crate::report::{ReportOptions, Reports};
use crate::webpush::WebPushService;

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
        let metrics = Arc::new(Metrics::new()?);
        let store = match (&config.redis, &config.disk) {
            (Some(redis), _) => {
                let cluster = Cluster::connect(redis, config.max_list).await?;
                tracing::info!(stream = %redis.stream, group = %redis.group, consumer = cluster.consumer(), "queue backend: redis (shared)");
                Store::Redis(cluster)
            }
            (None, Some(disk)) => {
                let (store, recovered) = crate::queue::disk::Store::open(
                    &disk.data_dir,
                    config.max_list,
                    config.max_jobs,
                )?;
                tracing::info!(data_dir = %disk.data_dir.display(), "queue backend: disk");
                Store::Disk(store, Some(recovered))
            }
            (None, None) => {
                tracing::info!("queue backend: memory (nothing survives a restart)");
                Store::Memory
            }
        };
        let apps = vec![
            (Family::Apns, config.apns_apps.keys().cloned().collect()),
            (Family::Google, config.google_apps.keys().cloned().collect()),
            (
                Family::WebPush,
                config.webpush_apps.keys().cloned().collect(),
            ),
        ];
        let options = ReportOptions {
            lists: !store.keeps_lists(),
            log_progress: !store.chunked(),
        };
        let reports = Arc::new(
            Reports::with_apps(config.max_list, config.max_jobs, &apps, options)
                .counting_drops(metrics.list_dropped.clone()),
        );
        let admission = Arc::new(Admission::new(config.queue_capacity));
        let mut sinks: Vec<Arc<dyn Sink>> =
            vec![reports.clone(), admission.clone(), metrics.clone()];
        if let Some(webhook) = &config.webhook {
            sinks.push(Arc::new(crate::webhook::start(webhook.clone(), &metrics)?));
        }
        if let Some(sink) = store.sink() {
            sinks.push(sink);
        }
        let recorder = Recorder::new(sinks);
        let mut registry = Registry::new();
        let start_apns =
            |c| ApnsService::start(c, recorder.clone(), metrics.clone(), config.backoff);
        let paces = fcm_paces(config)?;
        // Named for its metrics (`fcm_paced_seconds_total{app}`), paced by its project.
        let start_google = |c: &GoogleConfig, name: &str| {
            let pace = match c {
                GoogleConfig::Fcm(f) => paces.get(&f.account.project_id).cloned(),
                GoogleConfig::Gcm(_) => None,
            };
            GoogleService::start_for(
                c,
                recorder.clone(),
                metrics.clone(),
                config.backoff,
                name,
                pace,
            )
        };
        let apns = config.apns.as_ref().map(start_apns).transpose()?;
        let google = config
            .google
            .as_ref()
            .map(|c| start_google(c, DEFAULT_APP))
            .transpose()?;
        let mut apns_apps = std::collections::BTreeMap::new();
        for (name, app) in &config.apns_apps {
            apns_apps.insert(name.clone(), start_apns(app)?);
        }
        let mut google_apps = std::collections::BTreeMap::new();
        for (name, app) in &config.google_apps {
            google_apps.insert(name.clone(), start_google(app, name)?);
        }
        if let Some(redis) = &config.redis {
            // One provider token per key for the whole cluster.
            let store = crate::queue::redis::credentials::RedisCredentials::new(redis)?;
            let shared = crate::shared_credential::SharedCredentials::new(
                Arc::new(store),
                Arc::new(crate::shared_credential::SystemClock),
            );
            for service in apns.iter().chain(apns_apps.values()) {
                service.share_credentials(shared.clone()).await;
            }
            for service in google.iter().chain(google_apps.values()) {
                service.share_credentials(shared.clone());
            }
        }
        let start_webpush =
            |c| WebPushService::start(c, recorder.clone(), metrics.clone(), config.backoff);
        let webpush = config.webpush.as_ref().map(start_webpush).transpose()?;
        let mut webpush_apps = std::collections::BTreeMap::new();
        for (name, app) in &config.webpush_apps {
            webpush_apps.insert(name.clone(), start_webpush(app)?);
        }
        for (name, service) in webpush
            .iter()
            .map(|s| (DEFAULT_APP, s))
            .chain(webpush_apps.iter().map(|(n, s)| (n.as_str(), s)))
        {
            registry.register(name, Arc::new(service.clone()));
        }
        for (name, service) in apns
            .iter()
            .map(|s| (DEFAULT_APP, s))
            .chain(apns_apps.iter().map(|(n, s)| (n.as_str(), s)))
        {
            registry.register(name, Arc::new(service.clone()));
        }
        for (name, service) in google
            .iter()
            .map(|s| (DEFAULT_APP, s))
            .chain(google_apps.iter().map(|(n, s)| (n.as_str(), s)))
        {
            registry.register(name, Arc::new(service.clone()));
        }
        let backend = Backend::start(Parts {
            store,
            reports,
            admission,
            recorder,
            registry,
            metrics: metrics.clone(),
        })?;
        let state = AppState::new(Inner {
            apns_apps,
            google_apps,
            apns,
            google,
            webpush,
            webpush_apps,
            backend,
            metrics,
            api_keys: config.server.api_keys.clone(),
            max_body_bytes: config.server.max_body_bytes,
            shutting_down: Default::default(),
            gorush: config.gorush.clone(),
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
        tracing::info!(%addr, https = config.server.tls.is_some(), apns = state.apns.is_some(), google = state.google.as_ref().map(|g| g.platform().as_str()), "pushgate listening");
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

/// One FCM pace per Firebase project: Firebase counts `max_per_minute` per
/// project, so the apps sending for one project share one bucket (at the
/// smallest `max_per_minute` any of them asks for) and, with the `redis`
/// backend, every gateway of the cluster leases from one bucket in Redis.
fn fcm_paces(config: &Config) -> anyhow::Result<BTreeMap<String, Arc<dyn Allowance>>> {
    let mut per_minute: BTreeMap<&str, u64> = BTreeMap::new();
    for google in config.google.iter().chain(config.google_apps.values()) {
        if let GoogleConfig::Fcm(c) = google {
            let slot = per_minute
                .entry(&c.account.project_id)
                .or_insert(c.max_per_minute);
            if *slot != c.max_per_minute {
                tracing::warn!(
                    project = %c.account.project_id,
                    max_per_minute = (*slot).min(c.max_per_minute),
                    "FCM apps of one project set different max_per_minute: the project's one bucket uses the smallest"
                );
            }
            *slot = (*slot).min(c.max_per_minute);
        }
    }
    let shared = match &config.redis {
        Some(redis) if !per_minute.is_empty() => Some(Arc::new(RedisQuota::new(redis)?)),
        _ => None,
    };
    Ok(per_minute
        .into_iter()
        .map(|(project, max_per_minute)| {
            let clock = Arc::new(pace::SystemClock::default());
            let allowance: Arc<dyn Allowance> = match &shared {
                Some(store) => {
                    tracing::info!(
                        project,
                        max_per_minute,
                        "FCM pace shared by the cluster (redis)"
                    );
                    SharedBucket::start(project, max_per_minute, store.clone(), clock)
                }
                None => Arc::new(Bucket::new(max_per_minute, clock)),
            };
            (project.to_owned(), allowance)
        })
        .collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FcmSection, FileConfig};
    use crate::mock::fcm::ServiceAccountFixture;

    /// Firebase counts the quota per project: `[fcm]` and an app of the same
    /// project share one bucket (at the smaller `max_per_minute`); an app of
    /// another project has its own.
    #[tokio::test]
    async fn apps_of_one_firebase_project_share_one_pace() {
        let dir = std::env::temp_dir().join(format!("pushgate-paces-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let account = |project: &str| {
            let path = dir.join(format!("{project}.json"));
            let fixture = ServiceAccountFixture::generate(project).expect("a key");
            std::fs::write(&path, fixture.to_json("https://oauth2.example/token"))
                .expect("written");
            path.display().to_string()
        };
        let section = |file: String, max_per_minute: u64| FcmSection {
            service_account_file: file,
            max_per_minute,
            ..Default::default()
        };
        let mut file = FileConfig::default();
        file.queue.backend = "memory".into();
        let mut fcm = section(account("project-one"), 600_000);
        fcm.apps
            .insert("same".into(), section(account("project-one"), 6_000));
        fcm.apps
            .insert("other".into(), section(account("project-two"), 60_000));
        file.fcm = Some(fcm);
        let config = file.validate().expect("valid");
        let paces = fcm_paces(&config).expect("paces");
        assert_eq!(
            paces.keys().map(String::as_str).collect::<Vec<_>>(),
            ["project-one", "project-two"]
        );
        // A bucket holds a tenth of a second's worth.
        assert_eq!(paces["project-one"].available(), 10.0);
        assert_eq!(paces["project-two"].available(), 100.0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
