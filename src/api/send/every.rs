//! `POST /send`: one message to every platform. The body names mixed
//! `targets` (an APNs token, an FCM or GCM token, an HMS token, a Web Push
//! subscription, each with its own `data` and `badge` if any), a common
//! `notification` and `data`, and a block per platform.
//!
//! Each platform present maps the common message to its own send body
//! ([`crate::platform::Front::compose`]) and reads it as its own route
//! would; its targets are taken in by its own token check. One job per
//! platform is admitted, all together as one group: the answer's `job` is
//! the group (`GET /jobs/{id}` sums it and adds `by_platform`; `DELETE`
//! cancels every part). A target's own fields are kept beside its token,
//! never as a copy of the message ([`crate::message::personal`]).
//!
//! A target is refused alone, with its index, its platform and a reason:
//! malformed, an unknown or unconfigured platform, a token its platform
//! refuses. A bad common message or block refuses the request (400, naming
//! the field, nothing queued).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::Body;
use super::intake::{Taker, admit_error, keep_final};
use crate::api::idempotency::KeptWithJob;
use crate::api::rejections::MAX_LISTED;
use crate::api::wait::{Ask, result_json};
use crate::api::{ApiError, AppState};
use crate::job::{JobId, Platform};
use crate::message::personal::Personal;
use crate::platform::{Registered, RequestError, SendBody, Unified};
use crate::store::{NewJob, Planned, Submission};

/// One target as read from the body, before its platform takes it.
struct Target<'a> {
    index: u32,
    raw: Cow<'a, str>,
    personal: Option<Personal>,
}

/// The refused targets: the first [`MAX_LISTED`] listed, all counted.
#[derive(Default)]
struct Refused {
    listed: Vec<Value>,
    count: u64,
    by_reason: BTreeMap<&'static str, u64>,
    /// For the metrics: per platform (`unknown` when the target named
    /// none) and reason.
    by_platform: BTreeMap<(&'static str, &'static str), u64>,
}

impl Refused {
    fn push(&mut self, index: u32, platform: Option<Platform>, reason: &'static str) {
        if self.listed.len() < MAX_LISTED {
            let mut entry = Map::new();
            entry.insert("target".into(), index.into());
            if let Some(p) = platform {
                entry.insert("platform".into(), p.as_str().into());
            }
            entry.insert("reason".into(), reason.into());
            self.listed.push(Value::Object(entry));
        }
        self.count += 1;
        *self.by_reason.entry(reason).or_default() += 1;
        let word = platform.map_or("unknown", |p| p.as_str());
        *self.by_platform.entry((word, reason)).or_default() += 1;
    }

    fn fields(&self, body: &mut Value) {
        body["rejected"] = Value::Array(self.listed.clone());
        body["rejected_count"] = json!(self.count);
        body["rejected_by_reason"] = json!(self.by_reason);
        body["rejected_truncated"] = json!(self.count > self.listed.len() as u64);
    }
}

/// The body's common fields.
struct Common {
    notification: Map<String, Value>,
    data: Map<String, Value>,
    blocks: HashMap<Platform, Map<String, Value>>,
    app: Option<String>,
    send_at: Option<String>,
}

/// `POST /send`.
pub async fn send(
    State(state): State<AppState>,
    ask: Ask,
    body: Body,
) -> Result<Response, ApiError> {
    let timer = state.metrics.api_latency.start_timer();
    state.refuse_if_shutting_down()?;
    let bytes = match body {
        Body::Whole(SendBody::Json(bytes)) => bytes,
        _ => return Err(RequestError::json_only().into()),
    };
    let answer = send_json(&state, &bytes, &ask).await;
    timer.observe_duration();
    answer
}

async fn send_json(state: &AppState, bytes: &[u8], ask: &Ask) -> Result<Response, ApiError> {
    let top: HashMap<Cow<'_, str>, &RawValue> =
        serde_json::from_slice(bytes).map_err(crate::platform::request::bad_json)?;
    let (common, targets) = read_top(state, top)?;
    let mut refused = Refused::default();
    let by_platform = read_targets(state, &targets, &mut refused)?;

    // Each configured platform's own body, composed from the common message.
    let mut bodies: Vec<(&Registered, SendBody)> = Vec::new();
    let mut pending: Vec<Vec<Target<'_>>> = Vec::new();
    for (platform, list) in by_platform {
        let Some(registered) = state.platforms.get(platform) else {
            for t in &list {
                refused.push(t.index, Some(platform), "PlatformNotConfigured");
            }
            continue;
        };
        let unified = Unified {
            notification: &common.notification,
            data: &common.data,
            block: common.blocks.get(&platform),
            app: common.app.as_deref(),
            send_at: common.send_at.as_deref(),
        };
        let header = registered
            .front
            .compose(platform, &unified)
            .map_err(|e| named(platform, e))?;
        bodies.push((registered, SendBody::Header(header.into())));
        pending.push(list);
    }

    // Each platform reads its body and takes its targets in.
    let group = JobId::new();
    let mut planned = Vec::with_capacity(bodies.len());
    let mut accepted_by = Map::new();
    let mut jobs = Map::new();
    let (mut total, mut duplicates, mut delay) = (0u64, 0usize, None);
    for ((registered, body), list) in bodies.iter().zip(pending) {
        let platform = &registered.platform;
        let request = registered
            .front
            .read(body)
            .map_err(|e| named(*platform, e))?;
        let mut taker = Taker::new(&request.keep, list.len(), request.bytes_each);
        for target in &list {
            let taken = match &target.personal {
                Some(personal) => taker.take_personal(&target.raw, personal),
                None => taker.take(&target.raw),
            };
            if let Err(e) = taken {
                refused.push(target.index, Some(*platform), e.reason);
            }
        }
        duplicates += taker.duplicates;
        let tokens = taker.take_part();
        if tokens.is_empty() {
            continue;
        }
        let id = JobId::new();
        total += tokens.len() as u64;
        accepted_by.insert(platform.as_str().into(), json!(tokens.len()));
        jobs.insert(platform.as_str().into(), json!(id.to_string()));
        delay = request.when.delay;
        planned.push(Planned {
            id,
            job: NewJob {
                platform: *platform,
                app: request.app,
                fields: request.fields,
                message: request.message,
                tokens,
                expires_at: request.expires_at,
                delay: request.when.delay,
                notif_id: None,
            },
        });
    }
    if planned.is_empty() {
        let mut e = json!({});
        refused.fields(&mut e);
        return Err(ApiError::bad_request(
            "no_valid_targets",
            "none of the targets can be sent; nothing was queued",
        )
        .with(e));
    }
    ask.check(total, delay.is_some())?;
    let mut body = json!({
        "job": group.to_string(),
        "accepted": total,
        "accepted_by_platform": accepted_by,
        "duplicates": duplicates,
        "jobs": jobs,
    });
    refused.fields(&mut body);
    if let Some(delay) = delay {
        body["scheduled_in_s"] = json!(delay.as_secs());
    }
    if ask.wait.is_some() {
        body["state"] = json!("running");
    }
    let parts: Vec<(JobId, Platform)> = planned.iter().map(|p| (p.id, p.job.platform)).collect();
    let first = planned.remove(0);
    let mut submission = Submission::group(group, first, planned);
    if let Some(guard) = &ask.guard {
        submission = submission.with_claim(guard.claim(202, &body, group));
    }
    // Watched before they are admitted, so no outcome comes first.
    let waiters: Vec<_> = match ask.wait {
        Some(_) => {
            submission = submission.watched();
            parts.iter().map(|(id, _)| state.watch.watch(*id)).collect()
        }
        None => Vec::new(),
    };
    state
        .backend
        .submit(submission)
        .await
        .map_err(admit_error)?;
    for ((platform, reason), n) in &refused.by_platform {
        state
            .metrics
            .rejected
            .with_label_values(&[platform, reason])
            .inc_by(*n);
    }
    tracing::info!(job = %group, platform = "multi", parts = parts.len(), tokens = total, rejected = refused.count, delay_s = delay.map(|d| d.as_secs()), backend = state.backend.name(), "job accepted");
    let mut status = StatusCode::ACCEPTED;
    if let Some(within) = ask.wait {
        let deadline = tokio::time::Instant::now() + within;
        let mut results = Vec::new();
        let mut done = true;
        for (waiter, (_, platform)) in waiters.into_iter().zip(&parts) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match waiter.wait(left).await {
                Some(finished) => results.extend(finished.iter().map(|r| {
                    let mut entry = result_json(platform.family(), r);
                    entry["platform"] = json!(platform.as_str());
                    entry
                })),
                None => done = false,
            }
        }
        if done {
            status = StatusCode::OK;
            body["state"] = json!("done");
            body["results"] = Value::Array(results);
            if let Some(guard) = &ask.guard {
                keep_final(state, guard, &body, group).await;
            }
        }
    }
    let mut response = (status, Json(body)).into_response();
    if ask.guard.is_some() {
        response.extensions_mut().insert(KeptWithJob);
    }
    Ok(response)
}

/// Reads the top-level fields: the common message, each platform's block
/// (any other key is refused), and the raw targets.
fn read_top<'a>(
    state: &AppState,
    top: HashMap<Cow<'a, str>, &'a RawValue>,
) -> Result<(Common, Vec<&'a RawValue>), ApiError> {
    let mut common = Common {
        notification: Map::new(),
        data: Map::new(),
        blocks: HashMap::new(),
        app: None,
        send_at: None,
    };
    let mut targets = None;
    for (key, raw) in top {
        let bad = |what: &str| {
            ApiError::bad_request("bad_field", format!("{key} must be {what}"))
                .with(json!({ "field": key }))
        };
        match &*key {
            "targets" => {
                targets = Some(
                    serde_json::from_str::<Vec<&RawValue>>(raw.get())
                        .map_err(|_| bad("an array of targets"))?,
                );
            }
            "notification" => {
                common.notification = object(raw).ok_or_else(|| bad("a JSON object"))?;
                for (k, v) in &common.notification {
                    if !v.is_string() {
                        return Err(ApiError::bad_request(
                            "bad_field",
                            format!("notification.{k} must be a string"),
                        )
                        .with(json!({ "field": format!("notification.{k}") })));
                    }
                }
            }
            "data" => common.data = object(raw).ok_or_else(|| bad("a JSON object"))?,
            "app" | "send_at" => {
                let text = serde_json::from_str::<Option<String>>(raw.get())
                    .map_err(|_| bad("a string"))?;
                if key == "app" {
                    common.app = text;
                } else {
                    common.send_at = text;
                }
            }
            name => match state.catalog.platform(name) {
                Some(platform) => {
                    let block = object(raw).ok_or_else(|| bad("a JSON object"))?;
                    common.blocks.insert(platform, block);
                }
                None => {
                    return Err(ApiError::bad_request(
                        "unknown_field",
                        format!(
                            "unknown field {name:?}: /send takes targets, notification, data, app, send_at and a block per platform ({})",
                            state.catalog.platforms().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                    )
                    .with(json!({ "field": name })));
                }
            },
        }
    }
    let targets = targets.filter(|t| !t.is_empty()).ok_or_else(|| {
        ApiError::bad_request("no_targets", "give targets: a non-empty array of targets")
            .with(json!({ "field": "targets" }))
    })?;
    if common.notification.is_empty() && common.data.is_empty() && common.blocks.is_empty() {
        return Err(ApiError::bad_request(
            "bad_field",
            "nothing to send: give a notification, data or a platform block",
        )
        .with(json!({ "field": "notification" })));
    }
    Ok((common, targets))
}

/// Reads every target, grouping them by platform in the order platforms
/// first appear; a malformed one is refused alone.
fn read_targets<'a>(
    state: &AppState,
    targets: &[&'a RawValue],
    refused: &mut Refused,
) -> Result<Vec<(Platform, Vec<Target<'a>>)>, ApiError> {
    let mut by_platform: Vec<(Platform, Vec<Target<'a>>)> = Vec::new();
    for (index, raw) in targets.iter().enumerate() {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        let Ok(fields) = serde_json::from_str::<HashMap<Cow<'a, str>, &'a RawValue>>(raw.get())
        else {
            refused.push(index, None, "BadTarget");
            continue;
        };
        let (mut platform, mut token, mut data, mut badge) = (None, None, None, None);
        let mut malformed = false;
        for (key, value) in fields {
            match &*key {
                "data" => data = serde_json::from_str::<Value>(value.get()).ok(),
                "badge" => badge = serde_json::from_str::<Value>(value.get()).ok(),
                name => match state.catalog.platform(name) {
                    Some(p) if platform.is_none() => {
                        platform = Some(p);
                        token = Some(token_text(value));
                    }
                    _ => malformed = true,
                },
            }
        }
        let (Some(platform), Some(Some(raw)), false) = (platform, token, malformed) else {
            refused.push(index, platform, "BadTarget");
            continue;
        };
        let personal = match Personal::from_target(data.as_ref(), badge.as_ref()) {
            Ok(personal) => personal,
            Err(_) => {
                refused.push(index, Some(platform), "BadTargetData");
                continue;
            }
        };
        let target = Target {
            index,
            raw,
            personal,
        };
        match by_platform.iter_mut().find(|(p, _)| *p == platform) {
            Some((_, list)) => list.push(target),
            None => by_platform.push((platform, vec![target])),
        }
    }
    Ok(by_platform)
}

/// A target's token as its platform's check takes it: a JSON string's
/// text, or an object's JSON text (a Web Push subscription).
fn token_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    match raw.get().as_bytes().first() {
        Some(b'"') => serde_json::from_str::<Cow<'_, str>>(raw.get()).ok(),
        Some(b'{') => Some(Cow::Borrowed(raw.get())),
        _ => None,
    }
}

fn object(raw: &RawValue) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Object(map)) => Some(map),
        Ok(Value::Null) => Some(Map::new()),
        _ => None,
    }
}

/// A platform's refusal of the common message, naming the platform.
fn named(platform: Platform, e: RequestError) -> ApiError {
    let word = platform.as_str();
    let mut e = e;
    e.message = format!("{word}: {}", e.message);
    if let Some(Value::Object(extra)) = &mut e.extra
        && let Some(Value::String(field)) = extra.get_mut("field")
        && !field.starts_with(&format!("{word}."))
    {
        *field = format!("{word}.{field}");
    }
    e.into()
}
