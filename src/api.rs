//! The HTTP API (axum). [`router`] builds the whole app from an [`AppState`],
//! so tests can drive it with `oneshot` or over a real socket.
//!
//! Layer order matters: the error counter wraps everything (it sees 401s
//! too); auth wraps every route but `/healthz` and the static documents
//! (`/`, the status page, and `/openapi.json`).

pub mod auth;
pub mod channels;
pub mod cluster;
pub mod error;
pub mod extract;
pub mod gorush;
pub mod openapi;
pub mod rejections;
pub mod report;
pub mod send;
pub mod status;
pub mod topic;
pub mod webpush;

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use error::ApiError;
use extract::Path;

use crate::apns::ApnsService;
use crate::backend::Backend;
use crate::fcm::GoogleService;
use crate::job::JobId;
use crate::metrics::Metrics;
use crate::settings::Secret;
use crate::store::StoreError;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The shared parts of [`AppState`].
pub struct Inner {
    /// APNs delivery, when configured.
    pub apns: Option<ApnsService>,
    /// Google delivery (FCM v1 or legacy), when configured.
    pub google: Option<GoogleService>,
    /// Named APNs apps beside the default.
    pub apns_apps: std::collections::BTreeMap<String, ApnsService>,
    /// Named Google apps beside the default.
    pub google_apps: std::collections::BTreeMap<String, GoogleService>,
    /// Web Push delivery, when `[webpush]` is configured.
    pub webpush: Option<crate::webpush::WebPushService>,
    /// Named Web Push apps beside the default.
    pub webpush_apps: std::collections::BTreeMap<String, crate::webpush::WebPushService>,
    /// Where work is kept: admission, reports, jobs, cancel, drain.
    pub backend: Backend,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `server.api_keys`.
    pub api_keys: Vec<Secret>,
    /// `server.max_body_bytes`.
    pub max_body_bytes: usize,
    /// Set on SIGTERM: sends answer 503 while queued work drains.
    pub shutting_down: AtomicBool,
    /// `[gorush]`: the gorush-compatible routes.
    pub gorush: gorush::GorushSection,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Wraps the parts.
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    /// Every APNs service, default app first.
    pub fn all_apns(&self) -> impl Iterator<Item = &ApnsService> {
        self.apns.iter().chain(self.apns_apps.values())
    }

    /// Every Google service, default app first.
    pub fn all_google(&self) -> impl Iterator<Item = &GoogleService> {
        self.google.iter().chain(self.google_apps.values())
    }

    /// Starts refusing new sends (graceful drain).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    fn refuse_if_shutting_down(&self) -> Result<(), ApiError> {
        if self.shutting_down.load(Ordering::Acquire) {
            Err(ApiError::unavailable(
                "shutting_down",
                "the gateway is shutting down and accepts no new work; send to another instance",
                5,
            ))
        } else {
            Ok(())
        }
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/apns/send", post(send::apns))
        .route("/apns/channels", post(channels::create).get(channels::list))
        .route(
            "/apns/channels/{id}",
            get(channels::read).delete(channels::delete),
        )
        .route("/apns/broadcast", post(channels::send_broadcast))
        .route("/apns/report", get(report::apns_totals))
        .route(
            "/apns/report/unregistered",
            get(report::apns_unregistered).delete(report::apns_unregistered),
        )
        .route(
            "/apns/report/failures",
            get(report::apns_failures).delete(report::apns_failures),
        )
        .route("/gcm/send", post(send::google))
        .route("/fcm/send", post(send::google))
        .route("/gcm/report", get(report::google_totals))
        .route(
            "/gcm/report/notregistered",
            get(report::google_notregistered).delete(report::google_notregistered),
        )
        .route(
            "/gcm/report/canonical",
            get(report::google_canonical).delete(report::google_canonical),
        )
        .route(
            "/gcm/report/failures",
            get(report::google_failures).delete(report::google_failures),
        )
        .route("/webpush/send", post(send::webpush))
        .route("/webpush/report", get(webpush::totals_route))
        .route(
            "/webpush/report/unregistered",
            get(webpush::unregistered).delete(webpush::unregistered),
        )
        .route(
            "/webpush/report/failures",
            get(webpush::failures).delete(webpush::failures),
        )
        .route("/jobs/{id}", get(job_status).delete(cancel_job))
        .route("/cluster", get(cluster::view))
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/status.json", get(status::json))
        .merge(gorush::routes(&state.gorush))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        // Static documents, no data: served without a key.
        .route("/", get(status::page))
        .route("/openapi.json", get(openapi::document))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Inside the counter: axum's own rejections become JSON first, then
        // the counter sees their code.
        .layer(middleware::from_fn(extract::json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), count_errors))
        .with_state(state)
}

async fn count_errors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(code) = response.extensions().get::<error::ErrorCode>() {
        state
            .metrics
            .api_errors
            .with_label_values(&[response.status().as_str(), code.0])
            .inc();
    }
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see the README for the API")
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let mut problems = Vec::new();
    if state.shutting_down.load(Ordering::Acquire) {
        problems.push("shutting down".to_owned());
    }
    let apns = state.apns.as_ref().map(|_| {
        state
            .all_apns()
            .map(ApnsService::connected)
            .collect::<Vec<_>>()
    });
    if apns.as_ref().is_some_and(|c| c.contains(&0)) {
        problems.push("an APNs app has no open connection".to_owned());
    }
    // Every app must be connected; the answer reports the total.
    let apns = apns.map(|per_app| per_app.iter().sum::<usize>());
    let google = state
        .google
        .as_ref()
        .map(|_| state.all_google().all(GoogleService::ready));
    if google == Some(false) {
        problems.push("Google delivery has not reached its upstream yet".to_owned());
    }
    if let Some(problem) = state.backend.problem() {
        problems.push(problem);
    }
    if problems.is_empty() {
        Json(json!({ "status": "ready", "apns_connections": apns, "google": google, "backend": state.backend.name() }))
            .into_response()
    } else {
        ApiError::unavailable("not_ready", problems.join("; "), 1).into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let m = &state.metrics;
    // Mirrors of live state are set here, at scrape time, not on the hot path.
    for (platform, depth) in state.backend.queue_depths() {
        m.queue_depth
            .with_label_values(&[platform.as_str()])
            .set(depth as i64);
    }
    m.pending.set(state.backend.pending() as i64);
    match m.render() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

fn parse_job_id(id: &str) -> Result<JobId, ApiError> {
    JobId::parse(id)
        .ok_or_else(|| ApiError::bad_request("bad_job_id", format!("{id:?} is not a job id")))
}

fn no_job(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no job {id} (unknown, or older than the last report.max_jobs jobs)"
    ))
}

/// A read the store could not answer: 503 with the store's stable code;
/// the detail goes to the log, not to the client.
pub(crate) fn store_unavailable(e: StoreError) -> ApiError {
    tracing::warn!(error = %e.detail(), "store read failed");
    ApiError::unavailable(
        e.code(),
        "the queue backend cannot be read now. Retry later",
        e.retry_after(),
    )
}

/// `DELETE /jobs/{id}`: tokens not yet sent end as `cancelled`; a scheduled
/// job is cancelled whole at once, a running one as workers reach its tokens.
async fn cancel_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let parsed = parse_job_id(&id)?;
    match state
        .backend
        .cancel(parsed)
        .await
        .map_err(store_unavailable)?
    {
        Some(status) => Ok(Json(status.to_json())),
        None => Err(no_job(&id)),
    }
}

async fn job_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let parsed = parse_job_id(&id)?;
    match state.backend.job(parsed).await.map_err(store_unavailable)? {
        Some(status) => Ok(Json(status.to_json())),
        None => Err(no_job(&id)),
    }
}

/// 404 for reports of a platform that is not configured.
fn require(configured: bool, platform: &str, section: &str) -> Result<(), ApiError> {
    if configured {
        Ok(())
    } else {
        Err(ApiError::not_configured(platform, section))
    }
}

/// Answers `StatusCode::OK` JSON.
fn ok(body: serde_json::Value) -> Response {
    (StatusCode::OK, Json(body)).into_response()
}
