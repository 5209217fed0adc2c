//! gorush's REST API, served the way gorush serves it, so a gorush client
//! switches by changing one URL:
//!
//! - `POST /api/push`: gorush's body unchanged; each notification becomes one
//!   pushgate job (iOS → APNs, Android → FCM v1 or legacy). Every
//!   notification is validated before any is queued: one bad notification
//!   refuses the whole request with a 400 naming its index and field.
//!   The answer is gorush's `{"counts","logs","success":"ok"}` plus `jobs`.
//! - `GET /api/stat/app`: gorush's statistics shape, from our reports.
//! - `GET /api/stat/go`: honest process statistics (there is no Go runtime).
//!
//! Never `GET /api/config` (gorush #877: it leaks configuration). The routes
//! sit behind the same API keys, under `[gorush] path_prefix`.

pub mod stat;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::idempotency::KeptWithJob;
use super::send::Body;
use super::send::intake::{
    Intake, accepted_fields, admit_error, count_rejected, intake, keep_final,
};
use super::wait::{Ask, result_json};
use super::{ApiError, AppState};
use crate::job::{Family, JobId, Outcome};
use crate::outcome::watch::Waiter;
use crate::platform::request::bad_json;
use crate::platform::{Fields, NotificationError, Registered, Request, SendBody};
use crate::store::{NewJob, Planned as Admitted, Submission};
use std::time::Duration;

/// `[gorush]`: `POST /api/push` and `GET /api/stat/*`, as gorush serves them.
/// Also the validated form (nothing in it can be wrong but the prefix).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct GorushSection {
    /// Serve the gorush routes at all.
    pub enabled: bool,
    /// Mount them under this path (`""` = at the root, as gorush does).
    pub path_prefix: String,
    /// Notifications per `POST /api/push` (gorush's `core.max_notification`).
    pub max_notifications: u32,
    /// Answer `/api/push` once its jobs finished (gorush's `core.sync`),
    /// listing failed tokens in `logs`; a body's `"sync": true` asks the
    /// same for one request.
    pub sync: bool,
    /// Seconds a synchronous `/api/push` waits at most (1–30); then it
    /// answers with what finished so far.
    pub sync_timeout_s: u64,
}

impl Default for GorushSection {
    fn default() -> Self {
        Self {
            enabled: true,
            path_prefix: String::new(),
            max_notifications: 100,
            sync: false,
            sync_timeout_s: 10,
        }
    }
}

/// The gorush routes' methods and paths (see [`super::route_table`]).
pub fn paths(config: &GorushSection) -> Vec<(&'static str, String)> {
    if !config.enabled {
        return Vec::new();
    }
    let p = &config.path_prefix;
    vec![
        ("post", format!("{p}/api/push")),
        ("get", format!("{p}/api/stat/app")),
        ("get", format!("{p}/api/stat/go")),
    ]
}

/// The gorush routes under `path_prefix`, or none when disabled.
pub fn routes(state: &AppState) -> Router<AppState> {
    let config = &state.gorush;
    if !config.enabled {
        return Router::new();
    }
    let p = &config.path_prefix;
    Router::new()
        .route(
            &format!("{p}/api/push"),
            post(push).layer(axum::middleware::from_fn_with_state(
                state.clone(),
                super::idempotency::guard,
            )),
        )
        .route(&format!("{p}/api/stat/app"), get(stat::app))
        .route(&format!("{p}/api/stat/go"), get(stat::go))
}

/// One notification, read by its platform.
struct Planned<'a> {
    index: usize,
    family: Family,
    request: Request<'a>,
}

/// `POST /api/push`.
pub async fn push(
    State(state): State<AppState>,
    ask: Ask,
    body: Body,
) -> Result<Response, ApiError> {
    state.refuse_if_shutting_down()?;
    let Body::Whole(SendBody::Json(bytes)) = body else {
        return Err(ApiError::unsupported_media_type());
    };
    let request: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::from(bad_json(e)))?;
    // gorush's own messages for these three.
    let Some(Value::Array(notifications)) = request.get("notifications") else {
        return Err(ApiError::bad_request(
            "bad_request",
            "Missing notifications field.",
        ));
    };
    if notifications.is_empty() {
        return Err(ApiError::bad_request(
            "bad_request",
            "Notifications field is empty.",
        ));
    }
    let max = state.gorush.max_notifications as usize;
    if notifications.len() > max {
        return Err(ApiError::bad_request(
            "too_many_notifications",
            format!(
                "Number of notifications({}) over limit({max})",
                notifications.len()
            ),
        ));
    }
    let mut planned = notifications
        .iter()
        .enumerate()
        .map(|(i, n)| plan(&state, i, n))
        .collect::<Result<Vec<_>, ApiError>>()?;
    // Taken out first: the intakes below borrow the requests' tokens.
    let mut messages: Vec<_> = planned
        .iter_mut()
        .map(|p| p.request.message.take())
        .collect();
    // Every notification checked and its tokens taken in before any is queued.
    let mut intakes: Vec<Intake<'_>> = Vec::with_capacity(planned.len());
    let mut total = 0u64;
    for p in &planned {
        let taken = intake(&p.request.tokens, p.request.bytes_each, &p.request.keep);
        if taken.tokens.is_empty() {
            let key = p.family.info().token_key;
            return Err(ApiError::from(NotificationError {
                index: p.index,
                field: "tokens".into(),
                problem: "none of the tokens is valid".into(),
            })
            .with(json!({
                "field": "tokens",
                "rejected": taken.rejected.fields(key)["rejected"],
                "rejected_count": taken.rejected.count(),
            })));
        }
        total += taken.tokens.len() as u64;
        intakes.push(taken);
    }
    let backend = &state.backend;
    if backend.pending().saturating_add(total) > backend.capacity() {
        return Err(ApiError::unavailable(
            "queue_full",
            format!(
                "the queue holds {} of {} tokens; this request's {total} do not fit. Nothing was queued; retry later",
                backend.pending(),
                backend.capacity()
            ),
            1,
        ));
    }
    // gorush's `core.sync`, or this request's `"sync": true`; `?wait` too.
    let sync = state.gorush.sync || request.get("sync") == Some(&Value::Bool(true));
    let wait = ask
        .wait
        .or_else(|| sync.then(|| Duration::from_secs(state.gorush.sync_timeout_s)));
    let ask = Ask {
        guard: ask.guard,
        wait,
    };
    ask.check(total, false)?;
    let mut jobs = Vec::with_capacity(planned.len());
    let mut logs = Vec::new();
    let mut counts = 0u64;
    let mut submitted = Vec::with_capacity(planned.len());
    let mut refused = Vec::with_capacity(planned.len());
    for ((taken, p), message) in intakes.into_iter().zip(&planned).zip(messages.drain(..)) {
        let id = JobId::new();
        let Intake {
            tokens,
            rejected,
            duplicates,
        } = taken;
        let platform = p.request.platform;
        let answer = accepted_fields(
            platform,
            &id.to_string(),
            tokens.len() as u64,
            duplicates,
            &rejected,
        );
        refused.push((platform, rejected));
        counts += tokens.len() as u64;
        let word = p.family.info().gorush.as_ref().map_or("", |g| g.word);
        let key = p.family.info().token_key;
        for rejected in answer["rejected"].as_array().into_iter().flatten() {
            logs.push(json!({
                "type": "failed-push",
                "platform": word,
                "token": rejected[key],
                "message": "token refused before sending; nothing was queued for it",
                "error": rejected["reason"],
                "notif_id": p.request.notif_id.as_deref(),
            }));
        }
        jobs.push(json!(id.to_string()));
        submitted.push(Admitted {
            id,
            job: NewJob {
                platform,
                app: p.request.app.clone(),
                fields: p.request.fields.clone(),
                message,
                tokens,
                expires_at: p.request.expires_at,
                delay: None,
                notif_id: p.request.notif_id.clone(),
            },
        });
    }
    let mut body = json!({
        "counts": counts,
        "logs": logs,
        "success": "ok",
        "jobs": jobs,
    });
    if ask.wait.is_some() {
        body["state"] = json!("running");
    }
    let waited: Vec<_> = submitted
        .iter()
        .zip(&planned)
        .map(|(s, p)| (s.id, p.family, p.request.notif_id.clone()))
        .collect();
    let first = submitted.remove(0);
    let first_id = first.id;
    let mut submission = Submission::apart(first, submitted);
    if let Some(guard) = &ask.guard {
        submission = submission.with_claim(guard.claim(200, &body, first_id));
    }
    // Watched before they are admitted, so no outcome comes first.
    let waiters: Vec<_> = match ask.wait {
        Some(_) => {
            submission = submission.watched();
            waited
                .iter()
                .map(|(id, _, _)| state.watch.watch(*id))
                .collect()
        }
        None => Vec::new(),
    };
    backend.submit(submission).await.map_err(admit_error)?;
    for (platform, rejected) in &refused {
        count_rejected(&state, *platform, rejected);
    }
    if let Some(within) = ask.wait
        && sync_logs(waiters, &waited, within, &mut body).await
    {
        body["state"] = json!("done");
        if let Some(guard) = &ask.guard {
            keep_final(&state, guard, &body, first_id).await;
        }
    }
    let mut response = Json(body).into_response();
    if ask.guard.is_some() {
        response.extensions_mut().insert(KeptWithJob);
    }
    Ok(response)
}

/// Waits (at most `within` for all) for the jobs of a synchronous
/// `/api/push` and lists each token that did not succeed in `body`'s
/// `logs` as gorush does. Returns whether every job finished.
async fn sync_logs(
    waiters: Vec<Waiter>,
    waited: &[(JobId, Family, Option<std::sync::Arc<str>>)],
    within: Duration,
    body: &mut Value,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut done = true;
    for (waiter, (_, family, notif_id)) in waiters.into_iter().zip(waited) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(results) = waiter.wait(left).await else {
            done = false;
            continue;
        };
        let word = family.info().gorush.as_ref().map_or("", |g| g.word);
        for r in results
            .iter()
            .filter(|r| !matches!(r.outcome, Outcome::Success))
        {
            let shown = result_json(*family, r);
            let kind = r.outcome.kind().as_str();
            if let Some(logs) = body["logs"].as_array_mut() {
                logs.push(json!({
                    "type": "failed-push",
                    "platform": word,
                    "token": r.token,
                    "message": format!("{kind} by the upstream"),
                    "error": shown.get("reason").cloned().unwrap_or_else(|| json!(kind)),
                    "notif_id": notif_id.as_deref(),
                }));
            }
        }
    }
    done
}

/// Reads one notification: its platform (gorush's number), then the
/// platform's own mapping of its fields and tokens.
fn plan<'a>(state: &AppState, index: usize, value: &'a Value) -> Result<Planned<'a>, ApiError> {
    let f = Fields::new(index, value)?;
    let number = f.int("platform")?.ok_or_else(|| {
        f.error(
            "platform",
            format!("required: {}", known_numbers(state).join(", ")),
        )
    })?;
    let Some(family) = state.catalog.families().into_iter().find(|fam| {
        fam.info()
            .gorush
            .as_ref()
            .is_some_and(|g| g.number == number)
    }) else {
        let gorush_name = GORUSH_NUMBERS
            .iter()
            .find(|(n, _)| *n == number)
            .map_or(String::new(), |(_, name)| format!(" ({name})"));
        return Err(f
            .error(
                "platform",
                format!(
                    "{number}{gorush_name} is not a platform this gateway delivers to ({}); nothing was queued",
                    known_numbers(state).join(", ")
                ),
            )
            .into());
    };
    let Some(Registered { front, .. }) = state.platforms.of_family(family) else {
        return Err(platform_missing(index, family));
    };
    let Some(mapping) = front.gorush() else {
        return Err(platform_missing(index, family));
    };
    let request = mapping.read(&f)?;
    Ok(Planned {
        index,
        family,
        request,
    })
}

/// gorush's own platform numbers, for naming one this build cannot send to.
const GORUSH_NUMBERS: [(i64, &str); 3] = [(1, "iOS"), (2, "Android"), (3, "Huawei")];

/// `1 = iOS, 2 = Android, …` for the platforms this build knows.
fn known_numbers(state: &AppState) -> Vec<String> {
    state
        .catalog
        .families()
        .into_iter()
        .filter_map(|f| f.info().gorush.as_ref())
        .map(|g| format!("{} = {}", g.number, g.label))
        .collect()
}

fn platform_missing(index: usize, family: Family) -> ApiError {
    let info = family.info();
    let gorush = info.gorush.as_ref();
    ApiError::bad_request(
        "platform_not_configured",
        format!(
            "notifications[{index}].platform: {} (platform {}) needs {} in the gateway's config; nothing was queued",
            gorush.map_or(info.label, |g| g.label),
            gorush.map_or(0, |g| g.number),
            info.section
        ),
    )
    .with(json!({ "index": index, "field": "platform" }))
}

/// A 400 for a notification, naming its index and field.
impl From<NotificationError> for ApiError {
    fn from(e: NotificationError) -> Self {
        ApiError::from(crate::platform::RequestError::from(e))
    }
}
