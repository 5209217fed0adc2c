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

pub mod apple;
pub mod fields;
pub mod google;
pub mod stat;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use self::fields::{Fields, NotificationError};
use super::send::Body;
use super::send::body::bad_json;
use super::send::intake::{Intake, Rejections, Submission, When, intake, pick_app, submit};
use super::{ApiError, AppState};
use crate::apns::ApnsMessage;
use crate::apns::message::ApnsFields;
use crate::fcm::{GoogleExtras, GoogleFields, GoogleMessage, Target};
use crate::job::Platform;
use crate::message::MessageError;

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
}

impl Default for GorushSection {
    fn default() -> Self {
        Self {
            enabled: true,
            path_prefix: String::new(),
            max_notifications: 100,
        }
    }
}

/// gorush's platform numbers.
const IOS: i64 = 1;
const ANDROID: i64 = 2;
const HUAWEI: i64 = 3;

/// The gorush routes under `path_prefix`, or none when disabled.
pub fn routes(config: &GorushSection) -> Router<AppState> {
    if !config.enabled {
        return Router::new();
    }
    let p = &config.path_prefix;
    Router::new()
        .route(&format!("{p}/api/push"), post(push))
        .route(&format!("{p}/api/stat/app"), get(stat::app))
        .route(&format!("{p}/api/stat/go"), get(stat::go))
}

/// A 400 for a notification, naming its index and field.
impl From<NotificationError> for ApiError {
    fn from(e: NotificationError) -> Self {
        ApiError::bad_request("bad_notification", e.to_string())
            .with(json!({ "index": e.index, "field": e.field }))
    }
}

/// A message error of notification `index`, its field named in gorush's words.
fn message_error(index: usize, platform: i64, e: MessageError) -> ApiError {
    let (field, problem, too_large) = match &e {
        MessageError::Field(f) => (f.field, f.problem.clone(), false),
        MessageError::TooLarge(t) => ("payload", t.to_string(), true),
    };
    let field = match (platform, field) {
        (ANDROID, "payload") if !too_large => "data",
        (_, other) => other,
    };
    let error = NotificationError {
        index,
        field: field.to_owned(),
        problem,
    };
    if too_large {
        ApiError::too_large(error.to_string()).with(json!({ "index": index, "field": field }))
    } else {
        error.into()
    }
}

/// One notification, validated and ready to queue.
struct Ready<'a> {
    submission: Submission<'a>,
}

/// What one notification asks for, with the tokens it owns.
struct Planned<'a> {
    index: usize,
    platform: i64,
    notif_id: Option<Arc<str>>,
    app: Option<&'a str>,
    tokens: Vec<Cow<'a, str>>,
    kind: PlannedKind<'a>,
}

enum PlannedKind<'a> {
    Apple(apple::ApplePlan<'a>),
    Google(google::GooglePlan<'a>, Target),
}

/// `POST /api/push`.
pub async fn push(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    state.refuse_if_shutting_down()?;
    let Body::Json(bytes) = body else {
        return Err(ApiError::unsupported_media_type());
    };
    let request: Value = serde_json::from_slice(&bytes).map_err(bad_json)?;
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
    let planned = notifications
        .iter()
        .enumerate()
        .map(|(i, n)| plan(&state, i, n))
        .collect::<Result<Vec<_>, ApiError>>()?;
    // Every notification checked and its tokens validated before any is queued.
    let mut ready = Vec::with_capacity(planned.len());
    let mut total = 0u64;
    for p in &planned {
        let r = prepare(&state, p)?;
        total += r.submission.intake.tokens.len() as u64;
        ready.push(r);
    }
    let admission = &state.backend;
    if admission.pending().saturating_add(total) > admission.capacity() {
        return Err(ApiError::unavailable(
            "queue_full",
            format!(
                "the queue holds {} of {} tokens; this request's {total} do not fit. Nothing was queued; retry later",
                admission.pending(),
                admission.capacity()
            ),
            1,
        ));
    }
    let mut jobs = Vec::with_capacity(ready.len());
    let mut logs = Vec::new();
    let mut counts = 0u64;
    for (r, p) in ready.into_iter().zip(&planned) {
        let answer = submit(&state, r.submission).await;
        let answer = match answer {
            Ok(answer) => read_answer(answer).await?,
            Err(e) => {
                // Only a race with other senders for the last queue room gets here.
                return Err(e.with(json!({ "queued_jobs": jobs })));
            }
        };
        counts += answer["accepted"].as_u64().unwrap_or(0);
        let platform = if p.platform == IOS { "ios" } else { "android" };
        for rejected in answer["rejected"].as_array().into_iter().flatten() {
            logs.push(json!({
                "type": "failed-push",
                "platform": platform,
                "token": rejected["token"],
                "message": "token refused before sending; nothing was queued for it",
                "error": rejected["reason"],
                "notif_id": p.notif_id.as_deref(),
            }));
        }
        jobs.push(answer["job"].clone());
    }
    Ok(Json(json!({
        "counts": counts,
        "logs": logs,
        "success": "ok",
        "jobs": jobs,
    }))
    .into_response())
}

/// The JSON of a 202 answer from [`submit`].
async fn read_answer(response: Response) -> Result<Value, ApiError> {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(ApiError::internal)?;
    serde_json::from_slice(&bytes).map_err(ApiError::internal)
}

/// Reads one notification: its platform, tokens and the platform's mapping.
fn plan<'a>(state: &AppState, index: usize, value: &'a Value) -> Result<Planned<'a>, ApiError> {
    let f = Fields::new(index, value)?;
    let platform = f
        .int("platform")?
        .ok_or_else(|| f.error("platform", "required: 1 = iOS, 2 = Android"))?;
    let tokens: Vec<Cow<'a, str>> = f
        .strings("tokens")?
        .into_iter()
        .map(Cow::Borrowed)
        .collect();
    let notif_id = f.str("notif_id")?.map(Arc::from);
    let app = f.str("app")?;
    let kind = match platform {
        IOS => {
            if state.apns.is_none() {
                return Err(platform_missing(index, "iOS (platform 1)", "[apns]"));
            }
            if tokens.is_empty() {
                return Err(f
                    .error("tokens", "please provide at least one device token")
                    .into());
            }
            PlannedKind::Apple(apple::plan(&f)?)
        }
        ANDROID => {
            if state.google.is_none() {
                return Err(platform_missing(
                    index,
                    "Android (platform 2)",
                    "[fcm] or [gcm]",
                ));
            }
            let plan = google::plan(&f, Vec::new())?;
            let mut plan = plan;
            let mut tokens = tokens;
            tokens.append(&mut plan.tokens);
            let target = match super::topic::target(plan.topic, plan.condition, &tokens)
                .map_err(|e| retag(e, index))?
            {
                Some((target, one)) => {
                    tokens = vec![one];
                    target
                }
                None if tokens.is_empty() => {
                    return Err(f
                        .error(
                            "tokens",
                            "please provide at least one device token, or a topic or condition",
                        )
                        .into());
                }
                None => Target::Tokens,
            };
            return Ok(Planned {
                index,
                platform,
                notif_id,
                app,
                tokens,
                kind: PlannedKind::Google(plan, target),
            });
        }
        HUAWEI => {
            return Err(ApiError::bad_request(
                "platform_not_supported",
                format!(
                    "notifications[{index}].platform: 3 is Huawei (HMS), which pushgate does not deliver to; nothing was queued. Send Huawei devices through another gateway"
                ),
            )
            .with(json!({ "index": index, "field": "platform" })));
        }
        other => {
            return Err(f
                .error("platform", format!("{other} is not 1 (iOS) or 2 (Android)"))
                .into());
        }
    };
    Ok(Planned {
        index,
        platform,
        notif_id,
        app,
        tokens,
        kind,
    })
}

/// Adds the notification index to a topic error.
fn retag(mut e: ApiError, index: usize) -> ApiError {
    let field = e
        .extra
        .as_ref()
        .and_then(|x| x["field"].as_str())
        .map(|f| format!(".{f}"))
        .unwrap_or_default();
    e.message = format!("notifications[{index}]{field}: {}", e.message);
    e.with(json!({ "index": index }))
}

fn platform_missing(index: usize, platform: &str, section: &str) -> ApiError {
    ApiError::bad_request(
        "platform_not_configured",
        format!(
            "notifications[{index}].platform: {platform} needs {section} in the gateway's config; nothing was queued"
        ),
    )
    .with(json!({ "index": index, "field": "platform" }))
}

/// Builds the message and validates the tokens of one planned notification.
fn prepare<'a>(state: &AppState, p: &'a Planned<'a>) -> Result<Ready<'a>, ApiError> {
    let index = p.index;
    let no_valid_token = |rejected: &Rejections<'_>| {
        NotificationError {
            index,
            field: "tokens".into(),
            problem: "none of the tokens is valid".into(),
        }
        .into_api()
        .with(json!({ "index": index, "field": "tokens", "rejected": rejected.listed(), "rejected_count": rejected.count() }))
    };
    match &p.kind {
        PlannedKind::Apple(plan) => {
            let Some(default) = state.apns.as_ref() else {
                return Err(platform_missing(index, "iOS (platform 1)", "[apns]"));
            };
            let (service, app) =
                pick_app(default, &state.apns_apps, p.app).map_err(|e| retag(e, index))?;
            let fields = ApnsFields {
                payload: &plan.payload,
                topic: plan.topic,
                push_type: plan.push_type,
                priority: plan.priority,
                expiration: plan.expiration,
                collapse_id: plan.collapse_id,
            };
            let stored = fields.to_stored();
            let expires_at = fields
                .expiration
                .filter(|&e| e > 0)
                .map(|e| UNIX_EPOCH + Duration::from_secs(e.unsigned_abs()));
            let message = ApnsMessage::new(fields, service.default_topic.as_deref())
                .map_err(|e| message_error(index, p.platform, e))?;
            let intake: Intake<'a> = intake(&p.tokens, 64, crate::apns::token::keep);
            if intake.tokens.is_empty() {
                return Err(no_valid_token(&intake.rejected));
            }
            drop(message);
            Ok(Ready {
                submission: Submission {
                    platform: Platform::Apns,
                    app,
                    fields: stored,
                    intake,
                    expires_at,
                    when: When::default(),
                    notif_id: p.notif_id.clone(),
                },
            })
        }
        PlannedKind::Google(plan, target) => {
            let Some(default) = state.google.as_ref() else {
                return Err(platform_missing(
                    index,
                    "Android (platform 2)",
                    "[fcm] or [gcm]",
                ));
            };
            let (service, app) =
                pick_app(default, &state.google_apps, p.app).map_err(|e| retag(e, index))?;
            let fields = GoogleFields {
                payload: plan.data.as_deref(),
                notification: plan.notification.as_deref(),
                collapse_key: plan.collapse_key,
                priority: plan.priority,
                time_to_live: plan.time_to_live,
            };
            let extras = GoogleExtras {
                target: *target,
                dry_run: plan.dry_run,
                restricted_package_name: plan.restricted_package_name,
            };
            let stored = fields.to_stored_with(extras);
            let message = GoogleMessage::with_extras(fields, extras)
                .map_err(|e| message_error(index, p.platform, e))?;
            let expires_at = message.expires_at(SystemTime::now());
            let check_tokens = *target == Target::Tokens;
            let intake: Intake<'a> = intake(&p.tokens, 160, |token, buf| {
                if check_tokens {
                    return crate::fcm::token::keep(token, buf);
                }
                buf.extend_from_slice(token.as_bytes());
                Ok(())
            });
            if intake.tokens.is_empty() {
                return Err(no_valid_token(&intake.rejected));
            }
            Ok(Ready {
                submission: Submission {
                    platform: service.platform(),
                    app,
                    fields: stored,
                    intake,
                    expires_at,
                    when: When::default(),
                    notif_id: p.notif_id.clone(),
                },
            })
        }
    }
}

impl NotificationError {
    fn into_api(self) -> ApiError {
        ApiError::bad_request("bad_notification", self.to_string())
    }
}
