//! The status page: `GET /` serves one static HTML file (markup, style and
//! script inline, no CDN) embedded in the binary; it polls `GET /status.json`
//! every second. `/status.json` gathers, per platform, what an operator looks
//! at first (totals, queue depth, in flight, connections, list sizes), the
//! running and scheduled jobs, and each platform's tokens/s over the last ten
//! minutes (sampled by the backend, so the chart is full on the first load),
//! so the page needs one request per tick instead of one per report.
//!
//! The page itself holds no data, so it is served without an API key; the
//! JSON it reads sits behind the key like every other report.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{AppState, ok};
use crate::books::{Counters, JobFilter};
use crate::floor::{DEFAULT_APP, now_ms};

/// The page: markup, style and script in one file.
const PAGE: &str = include_str!("status.html");

/// `GET /`: the status page.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Everything the page needs is in the page; nothing may load from elsewhere.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}

fn counters(c: &Counters) -> Value {
    json!({
        "accepted": c.accepted,
        "attempts": c.attempts,
        "retries": c.retries,
        "pending": c.pending,
        "successes": c.successes,
        "failures": c.failures,
        "unregistered": c.unregistered,
        "canonicals": c.canonicals,
        "expired": c.expired,
        "cancelled": c.cancelled,
        "unattempted": c.unattempted,
        "possible_duplicates": c.possible_duplicates,
        "finished": c.finished(),
    })
}

fn in_flight(state: &AppState, platform: &str) -> i64 {
    state.metrics.in_flight.with_label_values(&[platform]).get()
}

/// Running jobs, then scheduled ones, shown at most (each).
pub const JOBS_SHOWN: usize = 20;

/// `GET /status.json`: one snapshot for the status page: per known family,
/// its configured platform's totals, queue, connections and lists (`null`
/// when none is configured); the running and scheduled jobs; the tokens/s
/// history of every registered platform.
pub async fn json(State(state): State<AppState>) -> Response {
    let mut platforms = serde_json::Map::new();
    for family in state.catalog.families() {
        let info = family.info();
        let Some(registered) = state.platforms.of_family(family) else {
            platforms.insert(info.name.to_owned(), Value::Null);
            continue;
        };
        // The backend's totals (cluster-wide with redis, as on `/…/report`);
        // if they cannot be read, this gateway's own, rather than no page.
        let local = state.backend.reports().family(family).counters();
        let totals = state
            .backend
            .counters(family, DEFAULT_APP)
            .await
            .unwrap_or(local);
        let platform = registered.platform.as_str();
        let status = registered.front.status();
        let queue_depth: usize = registered.apps.values().map(|d| d.queue_depth()).sum();
        platforms.insert(
            info.name.to_owned(),
            json!({
                "platform": platform,
                "label": info.label,
                "report": format!("/{}/report", info.name),
                "queue_depth": queue_depth,
                "in_flight": in_flight(&state, platform),
                // Counted where the platform can (HTTP/2 pools); null where
                // the connections live inside an HTTP client that does not say.
                "connections": status.connections,
                "ready": status.problem.is_none(),
                "counters": counters(&totals),
                "lists": super::report::list_stats(&state, family, DEFAULT_APP),
            }),
        );
    }
    // A store that cannot be read leaves the list empty rather than the page.
    let mut jobs = Vec::new();
    for filter in [JobFilter::Running, JobFilter::Scheduled] {
        if let Ok(found) = state.backend.jobs(filter, JOBS_SHOWN).await {
            jobs.extend(found.iter().map(|s| s.to_json()));
        }
    }
    ok(json!({
        "time_ms": now_ms(),
        "jobs": jobs,
        "history": history(&state),
        "version": env!("CARGO_PKG_VERSION"),
        "shutting_down": state.shutting_down.load(Ordering::Acquire),
        "queue": {
            "pending": state.backend.pending(),
            "capacity": state.backend.capacity(),
            "backend": state.backend.name(),
        },
        "platforms": platforms,
    }))
}

/// The tokens/s chart's data: one point per sample interval, per registered
/// platform (keyed by family, as `platforms` is).
fn history(state: &AppState) -> Value {
    let (every, window) = state.backend.rate_window();
    let rates = state.backend.rates();
    let series: serde_json::Map<String, Value> = rates
        .tokens_per_s
        .into_iter()
        .map(|(family, points)| (family.name().to_owned(), json!(points)))
        .collect();
    json!({
        "interval_s": every.as_secs(),
        "window_s": window.as_secs(),
        "time_ms": rates.time_ms,
        "tokens_per_s": series,
    })
}
