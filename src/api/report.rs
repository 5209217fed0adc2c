//! Report routes. GET reads; DELETE on a list returns it and empties it in one
//! step, so a poller that deletes what it read never loses an entry.

use axum::extract::State;
use axum::http::Method;
use axum::response::Response;
use serde_json::{Value, json};

use super::extract::Query;
use super::{ApiError, AppState, ok, require};
use crate::job::Family;
use crate::report::{BoundedList, Counters, FamilyReport};

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
    let app = app_name(q);
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
        "app": app_name(&q),
        "apps": state.recorder.reports.app_names(Family::Apple),
        "lists": {
            "unregistered": { "size": report.unregistered.len(), "dropped": report.unregistered.dropped() },
            "failures": { "size": report.failures.len(), "dropped": report.failures.dropped() },
        },
    })))
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
        "app": app_name(&q),
        "apps": state.recorder.reports.app_names(Family::Google),
        "platform": state.google.as_ref().map(|g| g.platform().as_str()),
        "lists": {
            "notregistered": { "size": report.unregistered.len(), "dropped": report.unregistered.dropped() },
            "canonical": { "size": report.canonical.len(), "dropped": report.canonical.dropped() },
            "failures": { "size": report.failures.len(), "dropped": report.failures.dropped() },
        },
    })))
}

/// A drainable list.
#[derive(Debug, Clone, Copy)]
enum List {
    Unregistered,
    Failures,
    Canonical,
}

impl List {
    fn name(self) -> &'static str {
        match self {
            List::Unregistered => "unregistered",
            List::Failures => "failures",
            List::Canonical => "canonical",
        }
    }
}

/// A list's entries: read on GET, read and emptied in one step on DELETE.
/// From Redis with backend `redis`, else from this process.
async fn entries(
    state: &AppState,
    method: &Method,
    family: Family,
    q: &AppQuery,
    list: List,
) -> Result<Vec<Value>, ApiError> {
    let report = match family {
        Family::Apple => apple(state, q)?,
        Family::Google => google(state, q)?,
    };
    let drain = method == Method::DELETE;
    if let Some(shared) = shared_list(state, family, q, list.name(), drain).await? {
        return Ok(shared);
    }
    fn take<T: serde::Serialize + Clone>(list: &BoundedList<T>, drain: bool) -> Vec<Value> {
        let taken = if drain { list.drain() } else { list.snapshot() };
        taken
            .into_iter()
            .filter_map(|e| serde_json::to_value(e).ok())
            .collect()
    }
    Ok(match list {
        List::Unregistered => take(&report.unregistered, drain),
        List::Failures => take(&report.failures, drain),
        List::Canonical => take(&report.canonical, drain),
    })
}

/// `GET|DELETE /apns/report/unregistered`: `{"tokens":[{"token","timestamp"}]}`.
pub async fn apns_unregistered(
    State(state): State<AppState>,
    method: Method,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    let tokens = entries(&state, &method, Family::Apple, &q, List::Unregistered).await?;
    Ok(ok(json!({ "tokens": tokens })))
}

/// `GET|DELETE /apns/report/failures`.
pub async fn apns_failures(
    State(state): State<AppState>,
    method: Method,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    let failures = entries(&state, &method, Family::Apple, &q, List::Failures).await?;
    Ok(ok(json!({ "failures": failures })))
}

/// `GET|DELETE /gcm/report/notregistered`: plain token strings, as GoCM answers.
pub async fn google_notregistered(
    State(state): State<AppState>,
    method: Method,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    let tokens: Vec<Value> = entries(&state, &method, Family::Google, &q, List::Unregistered)
        .await?
        .into_iter()
        .filter_map(|mut e| e.get_mut("token").map(Value::take))
        .collect();
    Ok(ok(json!({ "tokens": tokens })))
}

/// `GET|DELETE /gcm/report/canonical`.
pub async fn google_canonical(
    State(state): State<AppState>,
    method: Method,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    let pairs = entries(&state, &method, Family::Google, &q, List::Canonical).await?;
    Ok(ok(json!({ "canonical_replacements": pairs })))
}

/// `GET|DELETE /gcm/report/failures`.
pub async fn google_failures(
    State(state): State<AppState>,
    method: Method,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    let failures = entries(&state, &method, Family::Google, &q, List::Failures).await?;
    Ok(ok(json!({ "failures": failures })))
}
