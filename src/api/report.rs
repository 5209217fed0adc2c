//! Report routes, for every family the same way, in the shape its
//! [`crate::job::FamilyInfo`] gives: `GET /<family>/report` (the totals) and
//! `GET|DELETE /<family>/report/<list>`. GET reads; DELETE on a list returns
//! it and empties it in one step, so a poller that deletes what it read never
//! loses an entry.

use axum::extract::State;
use axum::http::Method;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::extract::Query;
use super::{ApiError, AppState, ok, store_unavailable};
use crate::books::Counters;
use crate::floor::DEFAULT_APP;
use crate::job::{Family, ListRoute, Totals};

/// `?app=<name>`: which app's report; absent means `default`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct AppQuery {
    /// The app name.
    pub app: Option<String>,
}

pub(super) fn app_name(q: &AppQuery) -> &str {
    q.app
        .as_deref()
        .filter(|a| !a.is_empty())
        .unwrap_or(DEFAULT_APP)
}

/// The family is configured and the `app` of the query is one of its apps.
fn check(state: &AppState, family: Family, q: &AppQuery) -> Result<(), ApiError> {
    state.registered(family)?;
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

/// The totals, from the backend (cluster-wide with `redis`).
pub(super) async fn counters(
    state: &AppState,
    family: Family,
    app: &str,
) -> Result<Counters, ApiError> {
    state
        .backend
        .counters(family, app)
        .await
        .map_err(store_unavailable)
}

/// `{"size","dropped"}` of each of a family's lists, by their route names.
pub(super) fn list_stats(state: &AppState, family: Family, app: &str) -> Value {
    let mut lists = Map::new();
    for route in family.info().lists {
        let (size, dropped) = state.backend.list_stats(family, app, route.list);
        lists.insert(
            route.path.to_owned(),
            json!({ "size": size, "dropped": dropped }),
        );
    }
    Value::Object(lists)
}

/// `GET /<family>/report`.
pub async fn totals(
    State(state): State<AppState>,
    family: Family,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    check(&state, family, &q)?;
    let app = app_name(&q);
    let c = counters(&state, family, app).await?;
    let apps = state.backend.reports().app_names(family);
    let lists = list_stats(&state, family, app);
    Ok(ok(match family.info().totals {
        Totals::Plain => json!({
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
            "app": app,
            "apps": apps,
            "lists": lists,
        }),
        // GoCM's fields first, then ours.
        Totals::GoCm => json!({
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
            "app": app,
            "apps": apps,
            "platform": state.platforms.of_family(family).map(|r| r.platform.as_str()),
            "lists": lists,
        }),
    }))
}

/// `GET|DELETE /<family>/report/<list>`: read on GET, read and emptied in
/// one step on DELETE; each entry's token under the family's key (`token`,
/// or `endpoint` for Web Push), or bare token strings where GoCM has them.
pub async fn entries(
    State(state): State<AppState>,
    method: Method,
    family: Family,
    route: &'static ListRoute,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    check(&state, family, &q)?;
    let drain = method == Method::DELETE;
    let entries = state
        .backend
        .list(family, app_name(&q), route.list, drain)
        .await
        .map_err(store_unavailable)?;
    let key = family.info().token_key;
    let entries: Vec<Value> = entries
        .into_iter()
        .filter_map(|mut entry| {
            if route.bare_tokens {
                return entry.get_mut("token").map(Value::take);
            }
            if key != "token"
                && let Some(obj) = entry.as_object_mut()
                && let Some(token) = obj.remove("token")
            {
                obj.insert(key.to_owned(), token);
            }
            Some(entry)
        })
        .collect();
    Ok(ok(json!({ route.key: entries })))
}
