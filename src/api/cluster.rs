//! `GET /cluster`: the gateways sharing the `redis` backend, the chunks each
//! holds, and the stream's length and lag (see the Redis store's view).
//! `/metrics` stays per gateway; this is the cluster-wide picture.

use axum::extract::State;
use axum::response::Response;

use super::{ApiError, AppState, ok};

/// The cluster view; 404 with another backend.
pub async fn view(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(view) = state.backend.cluster_view().await else {
        return Err(ApiError::not_found(
            "this gateway does not share a queue: GET /cluster needs [queue] backend = \"redis\"",
        ));
    };
    let view = view.map_err(|e| {
        tracing::warn!(error = %e.detail(), "cluster view read failed");
        ApiError::unavailable(
            e.code(),
            "the shared queue (Redis) cannot be reached. Retry later",
            e.retry_after(),
        )
    })?;
    Ok(ok(view))
}
