//! The send routes: `POST /<platform>/send` for every platform this build
//! knows. The body is read by the platform ([`crate::platform::Front::read`]:
//! every field checked the way its upstream would), its tokens taken in, the
//! job admitted through the backend, and 202 answered. Nothing here waits on
//! an upstream, and nothing here knows a platform.
//!
//! - [`body`]: reading the body (JSON or form) within the body limit.
//! - [`intake`]: token intake and [`intake::submit`], the one path from a
//!   read request to the 202.
//! - [`every`]: `POST /send`, one message to every platform.
//! - [`lines`] and [`stream`]: the streamed intake (NDJSON), its tokens
//!   kept in parts as they arrive.

pub mod body;
pub mod every;
#[doc(hidden)]
pub mod fuzzing;
pub mod intake;
pub mod lines;
pub mod stream;

use axum::response::Response;

pub use body::Body;

use super::wait::Ask;
use super::{ApiError, AppState};
use crate::job::Family;

/// `POST /<word>/send` for `family` (`/gcm/send` and `/fcm/send` are
/// Google's): 404 when no platform of the family is configured.
pub async fn send(
    state: AppState,
    family: Family,
    ask: Ask,
    body: Body,
) -> Result<Response, ApiError> {
    let timer = state.metrics.api_latency.start_timer();
    let registered = state.registered(family)?;
    state.refuse_if_shutting_down()?;
    let answer = match body {
        Body::Whole(body) => {
            let request = registered.front.read(&body)?;
            intake::submit(&state, family, request, &ask).await
        }
        Body::Lines(body) => stream::send(&state, family, &*registered.front, body, &ask).await,
    };
    timer.observe_duration();
    answer
}
