//! APNs broadcast channels (iOS 18 Live Activities): `/apns/channels*`
//! manage channels on Apple's management host, `POST /apns/broadcast` queues
//! one broadcast (a job of one "token", the channel). The bundle id is the
//! app's `apns.topic`.
//!
//! | route | Apple request | answer |
//! |---|---|---|
//! | `POST /apns/channels` `{"message_storage_policy","app"}` | `POST /1/apps/<bundle>/channels` | 201 `{"channel_id","request_id"}` |
//! | `GET /apns/channels?app=` | `GET /1/apps/<bundle>/all-channels` | 200 `{"channels","channels_used","channels_limit","request_id"}` |
//! | `GET /apns/channels/{id}?app=` | `GET /1/apps/<bundle>/channels` + `apns-channel-id` | 200 `{"channel_id","message_storage_policy","push_type","request_id"}` |
//! | `DELETE /apns/channels/{id}?app=` | `DELETE /1/apps/<bundle>/channels` + `apns-channel-id` | 204 |
//!
//! Apple's refusals keep their status where it is the caller's to fix (400,
//! 404, 413) and become 502 where it is the gateway's or Apple's (403, 429,
//! 5xx); every one carries Apple's `reason` and `request_id`.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::send::intake::{Intake, Job, admit};
use super::{ApiError, AppState};
use crate::apns::broadcast::{self, BroadcastFields};
use crate::apns::channels::{ChannelError, MAX_CHANNELS, StoragePolicy};
use crate::apns::message::broadcast_to_stored;
use crate::apns::{ApnsFront, ApnsService};
use crate::job::TokenList;
use crate::platform::request::{bad_json, parse_when};

/// `?app=` on the GET and DELETE routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppQuery {
    #[serde(default)]
    app: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateJson {
    message_storage_policy: Option<i64>,
    #[serde(default)]
    app: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastJson<'a> {
    #[serde(default)]
    channel_id: Option<String>,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    expiration: Option<i64>,
    #[serde(default)]
    app: Option<String>,
    #[serde(default)]
    send_at: Option<String>,
    #[serde(default)]
    delay_seconds: Option<i64>,
}

/// APNs, or the 404 naming `[apns]`.
fn apns(state: &AppState) -> Result<&ApnsFront, ApiError> {
    state.registered(crate::apns::FAMILY)?;
    state
        .platforms
        .front::<ApnsFront>()
        .ok_or_else(|| ApiError::not_configured("APNs", "[apns]"))
}

/// The app's service and bundle id.
fn app_of<'a>(
    state: &'a AppState,
    app: Option<&str>,
) -> Result<(&'a ApnsService, Arc<str>, String), ApiError> {
    let (service, name) = apns(state)?.pick(app)?;
    let bundle = service.bundle().filter(|b| !b.is_empty()).ok_or_else(|| {
        ApiError::bad_request(
            "no_bundle_id",
            format!(
                "app {name:?} has no apns.topic: broadcast channels need the bundle id, which is taken from it"
            ),
        )
    })?;
    Ok((service, name, bundle.to_owned()))
}

fn body_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| bad_json(e).into())
}

/// Apple's answer as ours.
fn upstream_error(e: ChannelError) -> ApiError {
    match e {
        ChannelError::Refused {
            status,
            reason,
            request_id,
        } => {
            let (code, ours) = match status {
                400 => ("apns_bad_request", StatusCode::BAD_REQUEST),
                404 => ("apns_not_found", StatusCode::NOT_FOUND),
                413 => ("apns_payload_too_large", StatusCode::PAYLOAD_TOO_LARGE),
                _ => ("apns_refused", StatusCode::BAD_GATEWAY),
            };
            if ours == StatusCode::BAD_GATEWAY {
                tracing::warn!(status, reason, "APNs refused a channel request");
            }
            ApiError {
                status: ours,
                code,
                message: format!("APNs answered {status} {reason}"),
                retry_after: None,
                extra: Some(json!({"reason": reason, "status": status, "request_id": request_id})),
            }
        }
        ChannelError::Unreachable { .. } => {
            tracing::warn!(error = %e, "channel request failed");
            ApiError {
                status: StatusCode::BAD_GATEWAY,
                code: "apns_unreachable",
                message: e.to_string(),
                retry_after: None,
                extra: None,
            }
        }
    }
}

fn checked_id(id: &str) -> Result<(), ApiError> {
    broadcast::check_channel_id(id)
        .map_err(|e| ApiError::bad_request("bad_channel_id", e.to_string()))
}

/// `POST /apns/channels`.
pub async fn create(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let json: CreateJson = body_json(&body)?;
    let policy = json
        .message_storage_policy
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_field",
                "message_storage_policy is required: 0 (no storage) or 1 (most recent message stored)",
            )
        })
        .and_then(|n| {
            StoragePolicy::from_number(n).ok_or_else(|| {
                ApiError::bad_request(
                    "bad_field",
                    format!("message_storage_policy must be 0 or 1, got {n}"),
                )
            })
        })?;
    let (service, app, bundle) = app_of(&state, json.app.as_deref())?;
    let created = service
        .channels
        .create(&bundle, policy)
        .await
        .map_err(upstream_error)?;
    tracing::info!(app = %app, bundle, channel = created.channel_id, "APNs channel created");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "channel_id": created.channel_id,
            "request_id": created.request_id,
            "message_storage_policy": policy.number(),
        })),
    )
        .into_response())
}

/// `GET /apns/channels`.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    let (service, _, bundle) = app_of(&state, q.app.as_deref())?;
    let listed = service
        .channels
        .list(&bundle)
        .await
        .map_err(upstream_error)?;
    Ok(Json(json!({
        "channels_used": listed.channels.len(),
        "channels_limit": MAX_CHANNELS,
        "channels": listed.channels,
        "request_id": listed.request_id,
    }))
    .into_response())
}

/// `GET /apns/channels/{id}`.
pub async fn read(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    checked_id(&id)?;
    let (service, _, bundle) = app_of(&state, q.app.as_deref())?;
    let channel = service
        .channels
        .read(&bundle, &id)
        .await
        .map_err(upstream_error)?;
    Ok(Json(json!({
        "channel_id": channel.channel_id,
        "message_storage_policy": channel.message_storage_policy,
        "push_type": channel.push_type,
        "request_id": channel.request_id,
    }))
    .into_response())
}

/// `DELETE /apns/channels/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<AppQuery>,
) -> Result<Response, ApiError> {
    checked_id(&id)?;
    let (service, app, bundle) = app_of(&state, q.app.as_deref())?;
    service
        .channels
        .delete(&bundle, &id)
        .await
        .map_err(upstream_error)?;
    tracing::info!(app = %app, bundle, channel = id, "APNs channel deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /apns/broadcast`: validated in full here (payload shape and size,
/// priority, expiration against the channel's known storage policy), then
/// queued as a job of one token.
pub async fn send_broadcast(
    State(state): State<AppState>,
    ask: super::wait::Ask,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    apns(&state)?;
    state.refuse_if_shutting_down()?;
    let json: BroadcastJson<'_> = body_json(&body)?;
    let channel_id = json.channel_id.as_deref().unwrap_or("");
    checked_id(channel_id)?;
    let payload = json.payload.ok_or_else(|| {
        ApiError::bad_request(
            "no_payload",
            "the request has no payload: send \"payload\": {\"aps\": {\"event\": \"update\", \"timestamp\": <unix s>, \"content-state\": {...}}}",
        )
    })?;
    let when = parse_when(json.send_at.as_deref(), json.delay_seconds)?;
    let (service, app, bundle) = app_of(&state, json.app.as_deref())?;
    let fields = BroadcastFields {
        payload: payload.get().as_bytes(),
        priority: json.priority,
        expiration: json.expiration,
    };
    // Built here to refuse a bad broadcast with a 400; the APNs service
    // rebuilds it from the stored fields when it takes the job.
    let message = broadcast::message(fields.clone(), &bundle)?;
    let expiration = message.expiration.unwrap_or(0);
    if expiration != 0
        && service.channels.known_policy(channel_id) == Some(StoragePolicy::NoStorage)
    {
        return Err(ApiError::bad_request(
            "expiration_not_allowed",
            format!(
                "channel {channel_id} was created with message_storage_policy 0 (no storage): APNs refuses a nonzero expiration on it; send expiration 0"
            ),
        ));
    }
    let expires_at = (expiration > 0).then(|| UNIX_EPOCH + Duration::from_secs(expiration));
    let mut tokens = TokenList::with_capacity(1, channel_id.len());
    tokens.push(channel_id.as_bytes());
    let intake = Intake {
        tokens,
        rejected: Default::default(),
        duplicates: 0,
    };
    let job = Job {
        app,
        fields: broadcast_to_stored(&fields, &bundle),
        message: Some(crate::platform::Built::new(message)),
        expires_at,
        delay: when.delay,
        notif_id: None,
    };
    admit(
        &state,
        crate::apns::FAMILY,
        crate::apns::PLATFORM,
        intake,
        job,
        &ask,
    )
    .await
}
