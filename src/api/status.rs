//! The status page: `GET /` serves one static HTML file (markup, style and
//! script inline, no CDN) embedded in the binary; it polls `GET /status.json`
//! every second. `/status.json` gathers, per platform, what an operator looks
//! at first (totals, queue depth, in flight, connections, list sizes) so the
//! page needs one request per tick instead of one per report.
//!
//! The page itself holds no data, so it is served without an API key; the
//! JSON it reads sits behind the key like every other report.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{AppState, ok};
use crate::books::{Counters, ListKind};
use crate::floor::{DEFAULT_APP, now_ms};
use crate::job::Family;

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

fn list(state: &AppState, family: Family, list: ListKind) -> Value {
    let (size, dropped) = state.backend.list_stats(family, DEFAULT_APP, list);
    json!({ "size": size, "dropped": dropped })
}

fn in_flight(state: &AppState, platform: &str) -> i64 {
    state.metrics.in_flight.with_label_values(&[platform]).get()
}

/// `GET /status.json`: one snapshot for the status page.
pub async fn json(State(state): State<AppState>) -> Response {
    // The backend's totals (cluster-wide with redis, as on `/…/report`); if
    // they cannot be read, this gateway's own, rather than no page.
    let totals = |family: Family| {
        let state = state.clone();
        async move {
            let local = state.backend.reports().family(family).counters();
            state
                .backend
                .counters(family, DEFAULT_APP)
                .await
                .unwrap_or(local)
        }
    };
    let apple_totals = totals(Family::Apns).await;
    let google_totals = totals(Family::Google).await;
    let apns = state.apns.as_ref().map(|service| {
        json!({
            "platform": "apns",
            "report": "/apns/report",
            "queue_depth": service.queue_depth(),
            "in_flight": in_flight(&state, "apns"),
            "connections": service.connected(),
            "counters": counters(&apple_totals),
            "lists": {
                "unregistered": list(&state, Family::Apns, ListKind::Unregistered),
                "failures": list(&state, Family::Apns, ListKind::Failures),
            },
        })
    });
    let google = state.google.as_ref().map(|service| {
        let platform = service.platform().as_str();
        json!({
            "platform": platform,
            "report": "/gcm/report",
            "queue_depth": service.queue_depth(),
            "in_flight": in_flight(&state, platform),
            // FCM v1 over our own HTTP/2 connections: counted. Legacy GCM
            // (and FCM over HTTP/1.1) rides reqwest's pool, which does not
            // expose a count: null, shown as "n/a".
            "connections": state
                .all_google()
                .map(crate::fcm::GoogleService::connected)
                .sum::<Option<usize>>(),
            "ready": service.ready(),
            "counters": counters(&google_totals),
            "lists": {
                "notregistered": list(&state, Family::Google, ListKind::Unregistered),
                "canonical": list(&state, Family::Google, ListKind::Canonical),
                "failures": list(&state, Family::Google, ListKind::Failures),
            },
        })
    });
    let webpush_totals = totals(Family::WebPush).await;
    let webpush = state.webpush.as_ref().map(|service| {
        json!({
            "platform": "webpush",
            "report": "/webpush/report",
            "queue_depth": service.queue_depth(),
            "in_flight": in_flight(&state, "webpush"),
            // One HTTP pool per push service origin, inside reqwest: no count.
            "connections": Value::Null,
            "counters": counters(&webpush_totals),
            "lists": {
                "unregistered": list(&state, Family::WebPush, ListKind::Unregistered),
                "failures": list(&state, Family::WebPush, ListKind::Failures),
            },
        })
    });
    ok(json!({
        "time_ms": now_ms(),
        "version": env!("CARGO_PKG_VERSION"),
        "shutting_down": state.shutting_down.load(Ordering::Acquire),
        "queue": {
            "pending": state.backend.pending(),
            "capacity": state.backend.capacity(),
            "backend": state.backend.name(),
        },
        "platforms": { "apns": apns, "google": google, "webpush": webpush },
    }))
}
