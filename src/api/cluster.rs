//! `GET /cluster`: the gateways sharing the `redis` backend, the chunks each
//! holds, and the stream's length and lag (see [`crate::queue::cluster_view`]).
//! `/metrics` stays per gateway; this is the cluster-wide picture.

use axum::extract::State;
use axum::response::Response;

use super::{ApiError, AppState, ok};

/// The cluster view; 404 with another backend.
pub async fn view(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(cluster) = &state.recorder.cluster else {
        return Err(ApiError::not_found(
            "this gateway does not share a queue: GET /cluster needs [queue] backend = \"redis\"",
        ));
    };
    let view = crate::queue::cluster_view::read(cluster)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "cluster view read failed");
            ApiError::unavailable(
                "queue_unavailable",
                "the shared queue (Redis) cannot be reached. Retry later",
                1,
            )
        })?;
    let body = serde_json::to_value(&view).map_err(ApiError::internal)?;
    Ok(ok(body))
}
