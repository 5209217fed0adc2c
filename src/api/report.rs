//! Report routes. GET reads; DELETE on a list returns it and empties it in one
//! step, so a poller that deletes what it read never loses an entry.

use axum::extract::State;
use axum::response::Response;
use serde_json::json;

use super::{ApiError, AppState, ok, require};
use crate::job::Family;
use crate::report::FamilyReport;

fn apple(state: &AppState) -> Result<&FamilyReport, ApiError> {
    require(state.apns.is_some(), "APNs", "[apns]")?;
    Ok(state.recorder.reports.family(Family::Apple))
}

/// `GET /apns/report`.
pub async fn apns_totals(State(state): State<AppState>) -> Result<Response, ApiError> {
    let report = apple(&state)?;
    let c = report.counters();
    Ok(ok(json!({
        "attempts": c.attempts,
        "successes": c.successes,
        "failures": c.failures,
        "pending": c.pending,
        "retries": c.retries,
        "unregistered": c.unregistered,
        "expired": c.expired,
        "accepted": c.accepted,
        "unattempted": c.unattempted,
        "possible_duplicates": c.possible_duplicates,
        "lists": {
            "unregistered": { "size": report.unregistered.len(), "dropped": report.unregistered.dropped() },
            "failures": { "size": report.failures.len(), "dropped": report.failures.dropped() },
        },
    })))
}

/// `GET /apns/report/unregistered`.
pub async fn apns_unregistered(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(ok(
        json!({ "tokens": apple(&state)?.unregistered.snapshot() }),
    ))
}

/// `DELETE /apns/report/unregistered`.
pub async fn apns_unregistered_drain(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(ok(json!({ "tokens": apple(&state)?.unregistered.drain() })))
}

/// `GET /apns/report/failures`.
pub async fn apns_failures(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(ok(
        json!({ "failures": apple(&state)?.failures.snapshot() }),
    ))
}

/// `DELETE /apns/report/failures`.
pub async fn apns_failures_drain(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(ok(json!({ "failures": apple(&state)?.failures.drain() })))
}
