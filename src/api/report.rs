//! Report routes. GET reads; DELETE on a list returns it and empties it in one
//! step, so a poller that deletes what it read never loses an entry.

use axum::extract::{Query, State};
use axum::response::Response;
use serde_json::json;

use super::{ApiError, AppState, ok, require};
use crate::job::Family;
use crate::report::{Counters, FamilyReport};

fn app_name(q: &AppQuery) -> &str {
    q.app
        .as_deref()
        .filter(|a| !a.is_empty())
        .unwrap_or(crate::report::DEFAULT_APP)
}

fn redis_unavailable(e: crate::queue::cluster::RedisError) -> ApiError {
    tracing::warn!(error = %e, "report read failed");
    ApiError::unavailable(
        "queue_unavailable",
        "the shared queue (Redis) holds the reports and cannot be reached. Retry later",
        1,
    )
}

/// The totals: cluster-wide from Redis with backend `redis`, else this process's.
async fn totals(
    state: &AppState,
    family: Family,
    q: &AppQuery,
    report: &FamilyReport,
) -> Result<Counters, ApiError> {
    match &state.recorder.cluster {
        Some(cluster) => cluster
            .counters(family, app_name(q))
            .await
            .map_err(redis_unavailable),
        None => Ok(report.counters()),
    }
}

/// A list from Redis with backend `redis` (`None` = use the local one).
async fn shared_list(
    state: &AppState,
    family: Family,
    q: &AppQuery,
    list: &str,
    drain: bool,
) -> Result<Option<Vec<serde_json::Value>>, ApiError> {
    match &state.recorder.cluster {
        Some(cluster) => cluster
            .list(family, app_name(q), list, drain)
            .await
            .map(Some)
            .map_err(redis_unavailable),
        None => Ok(None),
    }
}

/// `?app=<name>`: which app's report; absent means `default`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct AppQuery {
    /// The app name.
    pub app: Option<String>,
}

fn report_of<'a>(
    state: &'a AppState,
    family: Family,
    q: &AppQuery,
) -> Result<&'a FamilyReport, ApiError> {
    let reports = &state.recorder.reports;
    let app = q
        .app
        .as_deref()
        .filter(|a| !a.is_empty())
        .unwrap_or(crate::report::DEFAULT_APP);
    reports.app(family, app).ok_or_else(|| {
        ApiError::bad_request(
            "unknown_app",
            format!(
                "unknown app {app:?}; known apps: {:?}",
                reports.app_names(family)
            ),
        )
    })
}

fn google<'a>(state: &'a AppState, q: &AppQuery) -> Result<&'a FamilyReport, ApiError> {
    require(state.google.is_some(), "Google (FCM/GCM)", "[fcm] or [gcm]")?;
    report_of(state, Family::Google, q)
}

fn apple<'a>(state: &'a AppState, q: &AppQuery) -> Result<&'a FamilyReport, ApiError> {
    require(state.apns.is_some(), "APNs", "[apns]")?;
    report_of(state, Family::Apple, q)
}

/// `GET /apns/report`.
pub async fn apns_totals(
    State(state): State<AppState>,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    let report = apple(&state, &q)?;
    let c = totals(&state, Family::Apple, &q, report).await?;
    Ok(ok(json!({
        "attempts": c.attempts,
        "successes": c.successes,
        "failures": c.failures,
        "pending": c.pending,
        "retries": c.retries,
        "unregistered": c.unregistered,
        "expired": c.expired,
        "cancelled": c.cancelled,
        "accepted": c.accepted,
        "unattempted": c.unattempted,
        "possible_duplicates": c.possible_duplicates,
        "app": q.app.as_deref().unwrap_or(crate::report::DEFAULT_APP),
        "apps": state.recorder.reports.app_names(Family::Apple),
        "lists": {
            "unregistered": { "size": report.unregistered.len(), "dropped": report.unregistered.dropped() },
            "failures": { "size": report.failures.len(), "dropped": report.failures.dropped() },
        },
    })))
}

/// `GET /apns/report/unregistered`.
pub async fn apns_unregistered(
    State(state): State<AppState>,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    apple(&state, &q)?;
    if let Some(shared) = shared_list(&state, Family::Apple, &q, "unregistered", false).await? {
        return Ok(ok(json!({ "tokens": shared })));
    }
    Ok(ok(
        json!({ "tokens": apple(&state, &q)?.unregistered.snapshot() }),
    ))
}

/// `DELETE /apns/report/unregistered`.
pub async fn apns_unregistered_drain(
    State(state): State<AppState>,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    apple(&state, &q)?;
    if let Some(shared) = shared_list(&state, Family::Apple, &q, "unregistered", true).await? {
        return Ok(ok(json!({ "tokens": shared })));
    }
    Ok(ok(
        json!({ "tokens": apple(&state, &q)?.unregistered.drain() }),
    ))
}

/// `GET /apns/report/failures`.
pub async fn apns_failures(
    State(state): State<AppState>,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    apple(&state, &q)?;
    if let Some(shared) = shared_list(&state, Family::Apple, &q, "failures", false).await? {
        return Ok(ok(json!({ "failures": shared })));
    }
    Ok(ok(
        json!({ "failures": apple(&state, &q)?.failures.snapshot() }),
    ))
}

/// `DELETE /apns/report/failures`.
pub async fn apns_failures_drain(
    State(state): State<AppState>,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    apple(&state, &q)?;
    if let Some(shared) = shared_list(&state, Family::Apple, &q, "failures", true).await? {
        return Ok(ok(json!({ "failures": shared })));
    }
    Ok(ok(
        json!({ "failures": apple(&state, &q)?.failures.drain() }),
    ))
}

/// `GET /gcm/report`: GoCM's fields first, then ours.
pub async fn google_totals(
    State(state): State<AppState>,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    let report = google(&state, &q)?;
    let c = totals(&state, Family::Google, &q, report).await?;
    Ok(ok(json!({
        "attempts": c.attempts,
        "failures": c.failures,
        "pending": c.pending,
        "canonicals": c.canonicals,
        "notregistered": c.unregistered,
        "successes": c.successes,
        "retries": c.retries,
        "expired": c.expired,
        "cancelled": c.cancelled,
        "accepted": c.accepted,
        "unattempted": c.unattempted,
        "possible_duplicates": c.possible_duplicates,
        "app": q.app.as_deref().unwrap_or(crate::report::DEFAULT_APP),
        "apps": state.recorder.reports.app_names(Family::Google),
        "platform": state.google.as_ref().map(|g| g.platform().as_str()),
        "lists": {
            "notregistered": { "size": report.unregistered.len(), "dropped": report.unregistered.dropped() },
            "canonical": { "size": report.canonical.len(), "dropped": report.canonical.dropped() },
            "failures": { "size": report.failures.len(), "dropped": report.failures.dropped() },
        },
    })))
}

fn token_strings(entries: Vec<crate::report::UnregisteredEntry>) -> Vec<String> {
    entries.into_iter().map(|e| e.token).collect()
}

/// `GET /gcm/report/notregistered`: plain token strings, as GoCM answers.
pub async fn google_notregistered(
    State(state): State<AppState>,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    google(&state, &q)?;
    if let Some(shared) = shared_list(&state, Family::Google, &q, "unregistered", false).await? {
        return Ok(ok(
            json!({ "tokens": shared.iter().filter_map(|e| e.get("token").and_then(|t| t.as_str()).map(str::to_owned)).collect::<Vec<_>>() }),
        ));
    }
    Ok(ok(
        json!({ "tokens": token_strings(google(&state, &q)?.unregistered.snapshot()) }),
    ))
}

/// `DELETE /gcm/report/notregistered`.
pub async fn google_notregistered_drain(
    State(state): State<AppState>,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    google(&state, &q)?;
    if let Some(shared) = shared_list(&state, Family::Google, &q, "unregistered", true).await? {
        return Ok(ok(
            json!({ "tokens": shared.iter().filter_map(|e| e.get("token").and_then(|t| t.as_str()).map(str::to_owned)).collect::<Vec<_>>() }),
        ));
    }
    Ok(ok(
        json!({ "tokens": token_strings(google(&state, &q)?.unregistered.drain()) }),
    ))
}

/// `GET /gcm/report/canonical`.
pub async fn google_canonical(
    State(state): State<AppState>,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    google(&state, &q)?;
    if let Some(shared) = shared_list(&state, Family::Google, &q, "canonical", false).await? {
        return Ok(ok(json!({ "canonical_replacements": shared })));
    }
    Ok(ok(
        json!({ "canonical_replacements": google(&state, &q)?.canonical.snapshot() }),
    ))
}

/// `DELETE /gcm/report/canonical`.
pub async fn google_canonical_drain(
    State(state): State<AppState>,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    google(&state, &q)?;
    if let Some(shared) = shared_list(&state, Family::Google, &q, "canonical", true).await? {
        return Ok(ok(json!({ "canonical_replacements": shared })));
    }
    Ok(ok(
        json!({ "canonical_replacements": google(&state, &q)?.canonical.drain() }),
    ))
}

/// `GET /gcm/report/failures`.
pub async fn google_failures(
    State(state): State<AppState>,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    google(&state, &q)?;
    if let Some(shared) = shared_list(&state, Family::Google, &q, "failures", false).await? {
        return Ok(ok(json!({ "failures": shared })));
    }
    Ok(ok(
        json!({ "failures": google(&state, &q)?.failures.snapshot() }),
    ))
}

/// `DELETE /gcm/report/failures`.
pub async fn google_failures_drain(
    State(state): State<AppState>,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    google(&state, &q)?;
    if let Some(shared) = shared_list(&state, Family::Google, &q, "failures", true).await? {
        return Ok(ok(json!({ "failures": shared })));
    }
    Ok(ok(
        json!({ "failures": google(&state, &q)?.failures.drain() }),
    ))
}
