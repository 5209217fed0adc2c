//! Bearer API keys. Keys are compared in constant time, so response timing
//! tells an attacker nothing about how much of a guess was right.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

/// Refuses requests without a configured key (when any key is configured).
pub async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.api_keys.is_empty() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(presented) = presented else {
        return ApiError::unauthorized().into_response();
    };
    // Check every key (no early exit) so timing does not reveal which matched.
    let matched = state
        .api_keys
        .iter()
        .fold(subtle::Choice::from(0), |acc, key| {
            acc | key.expose().as_bytes().ct_eq(presented.as_bytes())
        });
    if bool::from(matched) {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}
