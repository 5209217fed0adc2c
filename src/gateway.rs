//! Wiring: from a validated [`Config`] to a listening gateway, and back down
//! again with a drain. `main`, `pushgate demo` and the tests all start the
//! gateway through [`Gateway::start`], so they run the same code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{self, AppState, Inner};
use crate::apns::ApnsService;
use crate::config::Config;
use crate::fcm::GoogleService;
use crate::job::Family;
use crate::metrics::Metrics;
use crate::queue::Admission;
use crate::queue::cluster::{Cluster, Targets};
use crate::report::{Recorder, Reports};

/// A running gateway.
pub struct Gateway {
    /// Where the API listens (the real port when `listen` had port 0).
    pub addr: SocketAddr,
    /// The API's state: reports, services, metrics.
    pub state: AppState,
    https: bool,
    stop_http: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

/// What a shutdown left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Tokens that reached an outcome during the drain.
    pub finished_during_drain: u64,
    /// Tokens still queued when the grace period ended, recorded as expired (`Shutdown`).
    pub abandoned: u64,
    /// Tokens whose stream was still unanswered when the drain gave up: no
    /// outcome was recorded for them (they may or may not have been delivered).
    pub still_pending: u64,
    /// How long the drain took.
    pub took: Duration,
}

impl Gateway {
    /// Starts delivery for every configured platform and the API on `config.server.listen`.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new()?);
        let apple_apps: Vec<String> = config.apns_apps.keys().cloned().collect();
        let google_apps: Vec<String> = config.google_apps.keys().cloned().collect();
        let mut recorder = Recorder::new(
            Arc::new(Reports::with_apps(
                config.max_list,
                config.max_jobs,
                &apple_apps,
                &google_apps,
            )),
            Arc::new(Admission::new(config.queue_capacity)),
            metrics.clone(),
        );
        if let Some(webhook) = &config.webhook {
            recorder.webhook = Some(crate::webhook::start(webhook.clone(), &metrics)?);
        }
        if let Some(redis) = &config.redis {
            let cluster = Cluster::connect(redis, config.max_list).await?;
            tracing::info!(stream = %redis.stream, group = %redis.group, consumer = cluster.consumer(), "queue backend: redis (shared)");
            recorder.cluster = Some(cluster);
        }
        let apns = match &config.apns {
            Some(apns) => Some(ApnsService::start(apns, recorder.clone(), config.backoff)?),
            None => None,
        };
        let google = match &config.google {
            Some(google) => Some(GoogleService::start(
                google,
                recorder.clone(),
                config.backoff,
            )?),
            None => None,
        };
        let mut apns_apps = std::collections::BTreeMap::new();
        for (name, app) in &config.apns_apps {
            apns_apps.insert(
                name.clone(),
                ApnsService::start(app, recorder.clone(), config.backoff)?,
            );
        }
        let mut google_apps = std::collections::BTreeMap::new();
        for (name, app) in &config.google_apps {
            google_apps.insert(
                name.clone(),
                GoogleService::start_for(app, recorder.clone(), config.backoff, name, None)?,
            );
        }
        if let Some(cluster) = &recorder.cluster {
            // Services exist now: start taking chunks from the shared stream.
            cluster.start(
                recorder.clone(),
                Targets {
                    apns: apns.clone(),
                    apns_apps: apns_apps.clone(),
                    google: google.clone(),
                    google_apps: google_apps.clone(),
                },
            )?;
        }
        let state = AppState::new(Inner {
            apns_apps,
            google_apps,
            apns,
            google,
            recorder,
            api_keys: config.server.api_keys.clone(),
            max_body_bytes: config.server.max_body_bytes,
            scheduler: crate::schedule::Scheduler::start(),
            shutting_down: Default::default(),
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
        let server = match config.server.tls.clone() {
            None => tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
            }),
            Some(tls) => tokio::spawn(serve_tls(listener, app, tls, stopped)),
        };
        tracing::info!(%addr, https = config.server.tls.is_some(), apns = state.apns.is_some(), google = state.google.as_ref().map(|g| g.platform().as_str()), "pushgate listening");
        Ok(Self {
            addr,
            state,
            https: config.server.tls.is_some(),
            stop_http: Some(stop_http),
            server,
        })
    }

    /// `http://addr` (or `https://` with `server.tls_cert`).
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Graceful drain: refuse new sends (503 `shutting_down`), keep delivering
    /// until nothing is pending or `grace` runs out, then stop taking work, let
    /// the streams in flight settle, record what is left as expired
    /// (`Shutdown`), count it in `pushgate_shutdown_abandoned_total`, log the
    /// totals, and stop the API.
    pub async fn shutdown(mut self, grace: Duration) -> DrainReport {
        let started = Instant::now();
        self.state.begin_shutdown();
        let held = self.state.scheduler.expire_all();
        if held > 0 {
            tracing::warn!(
                jobs = held,
                "delayed jobs not yet due were dropped by the shutdown (recorded as expired: Shutdown)"
            );
        }
        let cluster = self.state.recorder.cluster.clone();
        if let Some(cluster) = &cluster {
            // Take no more chunks; what is in the stream waits for the others.
            cluster.stop_reading();
        }
        let admission = self.state.recorder.admission.clone();
        let before = admission.pending();
        tracing::info!(
            pending = before,
            grace_s = grace.as_secs(),
            "draining: new sends are refused"
        );
        let deadline = started + grace;
        let mut last_log = Instant::now();
        while admission.pending() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if last_log.elapsed() >= Duration::from_secs(5) {
                tracing::info!(pending = admission.pending(), "draining");
                last_log = Instant::now();
            }
        }
        // Stop taking work. Streams in flight still finish, and tokens an actor
        // had taken but not sent come back to the queue, so sweep the queues
        // until nothing is pending or the streams had their moment.
        for apns in self.state.all_apns() {
            apns.close();
        }
        for google in self.state.all_google() {
            google.close();
        }
        if let Some(cluster) = &cluster {
            // Unfinished tokens stay pending in the stream (another gateway
            // reclaims them after claim_idle_ms) instead of ending as expired.
            cluster.detach();
        }
        let metrics = self.state.recorder.metrics.clone();
        let mut abandoned = 0;
        let settle_deadline = Instant::now() + SETTLE;
        loop {
            for apns in self.state.all_apns() {
                let left = apns.abandon_queued();
                metrics
                    .shutdown_abandoned
                    .with_label_values(&["apns"])
                    .inc_by(left);
                abandoned += left;
            }
            for google in self.state.all_google() {
                let left = google.abandon_queued();
                metrics
                    .shutdown_abandoned
                    .with_label_values(&[google.platform().as_str()])
                    .inc_by(left);
                abandoned += left;
            }
            if admission.pending() == 0 || Instant::now() >= settle_deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(cluster) = &cluster {
            for _ in 0..20 {
                match cluster.flush().await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot write the last outcomes to Redis; retrying");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }
        }
        let still_pending = admission.pending();
        let finished = before.saturating_sub(still_pending + abandoned);
        let report = DrainReport {
            finished_during_drain: finished,
            abandoned,
            still_pending,
            took: started.elapsed(),
        };
        for family in [Family::Apple, Family::Google] {
            let c = self.state.recorder.reports.family(family).counters();
            if c.accepted > 0 {
                tracing::info!(
                    ?family,
                    accepted = c.accepted,
                    pending = c.pending,
                    successes = c.successes,
                    failures = c.failures,
                    unregistered = c.unregistered,
                    expired = c.expired,
                    possible_duplicates = c.possible_duplicates,
                    "final totals"
                );
            }
        }
        if abandoned > 0 || still_pending > 0 {
            tracing::warn!(
                abandoned,
                still_pending,
                finished,
                took_ms = report.took.as_millis() as u64,
                "shutdown left work undelivered: abandoned tokens are recorded as expired (Shutdown), still_pending ones were in flight when the process stopped"
            );
        } else {
            tracing::info!(
                abandoned,
                still_pending,
                finished,
                took_ms = report.took.as_millis() as u64,
                "drained: nothing left pending"
            );
        }
        if let Some(stop) = self.stop_http.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.server).await;
        report
    }
}

/// Serves the API over TLS (ALPN h2 or http/1.1) until `stop` fires. A client
/// that fails its handshake only costs its own task.
async fn serve_tls(
    listener: TcpListener,
    app: axum::Router,
    tls: Arc<rustls::ServerConfig>,
    stop: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;

    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => return Ok(()),
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                };
            let service = TowerToHyperService::new(app);
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "API connection ended with an error");
            }
        });
    }
}

/// After the grace period: how long streams already in flight may take to be
/// answered before the process stops without their outcome.
const SETTLE: Duration = Duration::from_secs(3);

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
