//! Report routes. GET reads; DELETE on a list returns it and empties it in one
//! step, so a poller that deletes what it read never loses an entry.

use axum::extract::State;
use axum::http::Method;
use axum::response::Response;
use serde_json::{Value, json};

use super::extract::Query;
use super::{ApiError, AppState, ok, require, store_unavailable};
use crate::books::{Counters, ListKind};
use crate::floor::DEFAULT_APP;
use crate::job::Family;

pub(super) fn app_name(q: &AppQuery) -> &str {
    q.app
        .as_deref()
        .filter(|a| !a.is_empty())
        .unwrap_or(DEFAULT_APP)
}

/// The totals, from the backend (cluster-wide with `redis`).
pub(super) async fn totals(
    state: &AppState,
    family: Family,
    q: &AppQuery,
) -> Result<Counters, ApiError> {
    state
        .backend
        .counters(family, app_name(q))
        .await
        .map_err(store_unavailable)
}

/// `{"size","dropped"}` of a list.
pub(super) fn stats(state: &AppState, family: Family, q: &AppQuery, list: ListKind) -> Value {
    let (size, dropped) = state.backend.list_stats(family, app_name(q), list);
    json!({ "size": size, "dropped": dropped })
}

/// `?app=<name>`: which app's report; absent means `default`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct AppQuery {
    /// The app name.
    pub app: Option<String>,
}

/// Checks the `app` of a family's report route exists.
fn check_app(state: &AppState, family: Family, q: &AppQuery) -> Result<(), ApiError> {
    let reports = state.backend.reports();
    let app = app_name(q);
    match reports.app(family, app) {
        Some(_) => Ok(()),
        None => Err(ApiError::bad_request(
            "unknown_app",
            format!(
                "unknown app {app:?}; known apps: {:?}",
                reports.app_names(family)
            ),
        )),
    }
}

fn google(state: &AppState, q: &AppQuery) -> Result<(), ApiError> {
    require(state.google.is_some(), "Google (FCM/GCM)", "[fcm] or [gcm]")?;
    check_app(state, Family::Google, q)
}

pub(super) fn webpush(state: &AppState, q: &AppQuery) -> Result<(), ApiError> {
    require(state.webpush.is_some(), "Web Push", "[webpush]")?;
    check_app(state, Family::WebPush, q)
}

fn apple(state: &AppState, q: &AppQuery) -> Result<(), ApiError> {
    require(state.apns.is_some(), "APNs", "[apns]")?;
    check_app(state, Family::Apns, q)
}

/// `GET /apns/report`.
pub async fn apns_totals(
    State(state): State<AppState>,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    apple(&state, &q)?;
    family_totals(&state, Family::Apns, &q).await
}

/// The totals answer of a family reported the APNs way (`/apns/report`,
/// `/webpush/report`): the same fields, that family's counters and lists.
pub(super) async fn family_totals(
    state: &AppState,
    family: Family,
    q: &AppQuery,
) -> Result<Response, ApiError> {
    let c = totals(state, family, q).await?;
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
        "app": app_name(q),
        "apps": state.backend.reports().app_names(family),
        "lists": {
            "unregistered": stats(state, family, q, ListKind::Unregistered),
            "failures": stats(state, family, q, ListKind::Failures),
        },
    })))
}

/// `GET /gcm/report`: GoCM's fields first, then ours.
pub async fn google_totals(
    State(state): State<AppState>,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    google(&state, &q)?;
    let c = totals(&state, Family::Google, &q).await?;
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
        "apps": state.backend.reports().app_names(Family::Google),
        "platform": state.google.as_ref().map(|g| g.platform().as_str()),
        "lists": {
            "notregistered": stats(&state, Family::Google, &q, ListKind::Unregistered),
            "canonical": stats(&state, Family::Google, &q, ListKind::Canonical),
            "failures": stats(&state, Family::Google, &q, ListKind::Failures),
        },
    })))
}

/// A list's entries: read on GET, read and emptied in one step on DELETE.
pub(super) async fn entries(
    state: &AppState,
    method: &Method,
    family: Family,
    q: &AppQuery,
    list: ListKind,
) -> Result<Vec<Value>, ApiError> {
    match family {
        Family::Apns => apple(state, q)?,
        Family::Google => google(state, q)?,
        Family::WebPush => webpush(state, q)?,
    }
    let drain = method == Method::DELETE;
    state
        .backend
        .list(family, app_name(q), list, drain)
        .await
        .map_err(store_unavailable)
}

/// `GET|DELETE /apns/report/unregistered`: `{"tokens":[{"token","timestamp"}]}`.
pub async fn apns_unregistered(
    State(state): State<AppState>,
    method: Method,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    let tokens = entries(&state, &method, Family::Apns, &q, ListKind::Unregistered).await?;
    Ok(ok(json!({ "tokens": tokens })))
}

/// `GET|DELETE /apns/report/failures`.
pub async fn apns_failures(
    State(state): State<AppState>,
    method: Method,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    let failures = entries(&state, &method, Family::Apns, &q, ListKind::Failures).await?;
    Ok(ok(json!({ "failures": failures })))
}

/// `GET|DELETE /gcm/report/notregistered`: plain token strings, as GoCM answers.
pub async fn google_notregistered(
    State(state): State<AppState>,
    method: Method,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    let tokens: Vec<Value> = entries(&state, &method, Family::Google, &q, ListKind::Unregistered)
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
    let pairs = entries(&state, &method, Family::Google, &q, ListKind::Canonical).await?;
    Ok(ok(json!({ "canonical_replacements": pairs })))
}

/// `GET|DELETE /gcm/report/failures`.
pub async fn google_failures(
    State(state): State<AppState>,
    method: Method,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    let failures = entries(&state, &method, Family::Google, &q, ListKind::Failures).await?;
    Ok(ok(json!({ "failures": failures })))
}
