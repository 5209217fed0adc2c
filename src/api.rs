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
pub mod idempotency;
pub mod jobs;
pub mod openapi;
pub mod rejections;
pub mod report;
pub mod send;
pub mod status;
pub mod wait;

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

use crate::backend::Backend;
use crate::job::{Catalog, Family};
use crate::metrics::Metrics;
use crate::platform::{Registered, Registry};
use crate::settings::Secret;
use crate::store::StoreError;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The shared parts of [`AppState`].
pub struct Inner {
    /// The configured platforms, each with its apps.
    pub platforms: Registry,
    /// Every platform this build knows, configured or not: their routes
    /// answer 404 naming the section that turns them on.
    pub catalog: Catalog,
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
    /// `server.idempotency_ttl_s`.
    pub idempotency_ttl: std::time::Duration,
    /// The jobs someone waits for (`?wait`, gorush's sync mode); one of the
    /// recorder's sinks.
    pub watch: Arc<crate::outcome::watch::Watch>,
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

    /// The configured platform of `family`, or the 404 that names the
    /// section to add.
    pub fn registered(&self, family: Family) -> Result<&Registered, ApiError> {
        self.platforms.of_family(family).ok_or_else(|| {
            let info = family.info();
            ApiError::not_configured(info.label, info.section)
        })
    }

    /// Starts refusing new sends (graceful drain).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// True once the gateway began to drain.
    fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
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

/// Each known family's send and report routes: `POST /<word>/send` for each
/// of its words, `GET /<family>/report`, `GET|DELETE /<family>/report/<list>`.
fn platform_routes(state: &AppState) -> Router<AppState> {
    let catalog = state.catalog;
    let mut router = Router::new();
    for family in catalog.families() {
        let info = family.info();
        for word in info.send_routes {
            router = router.route(
                &format!("/{word}/send"),
                post(
                    move |State(state): State<AppState>, ask: wait::Ask, body: send::Body| {
                        send::send(state, family, ask, body)
                    },
                )
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    idempotency::guard,
                )),
            );
        }
        router = router.route(
            &format!("/{}/report", info.name),
            get(move |state, query| report::totals(state, family, query)),
        );
        for list in info.lists {
            let read =
                move |state, method, query| report::entries(state, method, family, list, query);
            router = router.route(
                &format!("/{}/report/{}", info.name, list.path),
                get(read).delete(read),
            );
        }
    }
    router
}

/// One route the API serves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    /// Its method, lower case (`get`, `post`, `delete`).
    pub method: &'static str,
    /// Its path, with `{id}` for a parameter.
    pub path: String,
}

/// Every route [`router`] serves for a gateway of this build: what the docs
/// and the OpenAPI document are checked against. Written beside the router
/// from the same data (the catalog's families, gorush's prefix), and a unit
/// test asks the router for each one.
pub fn route_table(catalog: Catalog, gorush: &gorush::GorushSection) -> Vec<Route> {
    let mut table = Vec::new();
    let mut add = |method, path: String| table.push(Route { method, path });
    for family in catalog.families() {
        let info = family.info();
        for word in info.send_routes {
            add("post", format!("/{word}/send"));
        }
        add("get", format!("/{}/report", info.name));
        for list in info.lists {
            add("get", format!("/{}/report/{}", info.name, list.path));
            add("delete", format!("/{}/report/{}", info.name, list.path));
        }
    }
    for (method, path) in FIXED_ROUTES {
        add(method, (*path).to_owned());
    }
    for (method, path) in gorush::paths(gorush) {
        add(method, path);
    }
    table
}

/// The routes that are the same in every build (`route_table`'s rest).
const FIXED_ROUTES: &[(&str, &str)] = &[
    ("post", "/send"),
    ("post", "/apns/channels"),
    ("get", "/apns/channels"),
    ("get", "/apns/channels/{id}"),
    ("delete", "/apns/channels/{id}"),
    ("post", "/apns/broadcast"),
    ("get", "/jobs"),
    ("get", "/jobs/{id}"),
    ("delete", "/jobs/{id}"),
    ("get", "/cluster"),
    ("get", "/metrics"),
    ("get", "/readyz"),
    ("get", "/status.json"),
    ("get", "/healthz"),
    ("get", "/"),
    ("get", "/openapi.json"),
];

/// The whole API.
pub fn router(state: AppState) -> Router {
    let protected = platform_routes(&state)
        .route("/apns/channels", post(channels::create).get(channels::list))
        .route(
            "/apns/channels/{id}",
            get(channels::read).delete(channels::delete),
        )
        .route(
            "/apns/broadcast",
            post(channels::send_broadcast).layer(middleware::from_fn_with_state(
                state.clone(),
                idempotency::guard,
            )),
        )
        .route(
            "/send",
            post(send::every::send).layer(middleware::from_fn_with_state(
                state.clone(),
                idempotency::guard,
            )),
        )
        .route("/jobs", get(jobs::list))
        .route("/jobs/{id}", get(jobs::status).delete(jobs::cancel))
        .route("/cluster", get(cluster::view))
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/status.json", get(status::json))
        .merge(gorush::routes(&state))
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
    let mut platforms = serde_json::Map::new();
    for registered in state.platforms.platforms() {
        let status = registered.front.status();
        platforms.insert(
            registered.platform.family().name().to_owned(),
            json!({
                "platform": registered.platform.as_str(),
                "connections": status.connections,
                "ready": status.problem.is_none(),
            }),
        );
        problems.extend(status.problem);
    }
    if let Some(problem) = state.backend.problem() {
        problems.push(problem);
    }
    if !problems.is_empty() {
        return ApiError::unavailable("not_ready", problems.join("; "), 1).into_response();
    }
    // The first release's two fields, read from the families that had them.
    let apns_connections = platforms.get("apns").map(|p| p["connections"].clone());
    let google = platforms.get("gcm").map(|p| p["ready"].clone());
    Json(json!({
        "status": "ready",
        "apns_connections": apns_connections,
        "google": google,
        "backend": state.backend.name(),
        "platforms": platforms,
    }))
    .into_response()
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
    m.queue_capacity
        .set(i64::try_from(state.backend.capacity()).unwrap_or(i64::MAX));
    let oldest = state.backend.oldest_pending_since().map_or(0.0, |since| {
        crate::floor::now_ms().saturating_sub(since) as f64 / 1000.0
    });
    m.oldest_pending_seconds.set(oldest);
    if let Some((held, _, parked)) = state.backend.window() {
        m.window_tokens.set(i64::try_from(held).unwrap_or(i64::MAX));
        m.stored_tokens
            .set(i64::try_from(parked).unwrap_or(i64::MAX));
    }
    match m.render() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
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

/// Answers `StatusCode::OK` JSON.
fn ok(body: serde_json::Value) -> Response {
    (StatusCode::OK, Json(body)).into_response()
}
