//! Bearer API keys. Keys are compared in constant time, so response timing
//! tells an attacker nothing about how much of a guess was right.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

/// The credentials of `Authorization: Bearer <token>`; the scheme is matched
/// case-insensitively (RFC 7235 §2.1), so `BEARER` and `bearer` work too.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// Refuses requests without a configured key (when any key is configured).
pub async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.api_keys.is_empty() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
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

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_is_kept_as_sent() {
        for header in ["Bearer k3y", "bearer k3y", "BEARER k3y", "bEaReR   k3y  "] {
            assert_eq!(bearer_token(header), Some("k3y"), "{header:?}");
        }
        for header in ["Basic k3y", "Bearer", "Bearer ", "Bearerk3y", ""] {
            assert_eq!(bearer_token(header), None, "{header:?}");
        }
    }
}
