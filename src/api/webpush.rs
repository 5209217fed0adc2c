//! The `/webpush/report*` routes: the same totals as `/apns/report`, and the
//! lists keyed by `endpoint` (a subscription is shown as its endpoint).

use axum::extract::{Query, State};
use axum::http::Method;
use axum::response::Response;
use serde_json::{Value, json};

use super::report::{AppQuery, entries, family_totals, webpush};
use super::{ApiError, AppState, ok};
use crate::books::ListKind;
use crate::job::Family;

/// Renames a key of a JSON object in place.
pub(crate) fn rename(entry: &mut Value, from: &str, to: &str) {
    if let Some(obj) = entry.as_object_mut()
        && let Some(v) = obj.remove(from)
    {
        obj.insert(to.to_owned(), v);
    }
}

/// `GET /webpush/report`.
pub async fn totals_route(
    State(state): State<AppState>,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    webpush(&state, &q)?;
    family_totals(&state, Family::WebPush, &q).await
}

/// `GET|DELETE /webpush/report/unregistered`: `{"subscriptions":[{"endpoint","timestamp"}]}`.
pub async fn unregistered(
    State(state): State<AppState>,
    method: Method,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    let mut subs = entries(&state, &method, Family::WebPush, &q, ListKind::Unregistered).await?;
    subs.iter_mut().for_each(|e| rename(e, "token", "endpoint"));
    Ok(ok(json!({ "subscriptions": subs })))
}

/// `GET|DELETE /webpush/report/failures`: `{"failures":[{"endpoint","reason","status","at"}]}`.
pub async fn failures(
    State(state): State<AppState>,
    method: Method,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    let mut list = entries(&state, &method, Family::WebPush, &q, ListKind::Failures).await?;
    list.iter_mut().for_each(|e| rename(e, "token", "endpoint"));
    Ok(ok(json!({ "failures": list })))
}
