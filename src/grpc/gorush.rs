//! gorush's gRPC services (package `proto`), as gorush serves them:
//!
//! - `proto.Gorush/Send`: the request becomes gorush's REST notification
//!   ([`convert::notification`]) and is POSTed as `{"notifications":[…]}`
//!   to the gorush route `/api/push` (under `[gorush] path_prefix`), so the
//!   field mapping, validation and admission are that route's. The reply is
//!   `success: true` and `counts` = tokens accepted.
//! - `proto.Health/Check`: gorush's answer: the whole server (`service` =
//!   `""`) is `SERVING`; any other name is `NOT_FOUND` "unknown service".
//!   `grpc.health.v1.Health` is the one that follows readiness.

use std::sync::Arc;

use serde_json::json;
use tonic::{Request, Response, Status};

use super::adapter::{Adapter, Forward};
use super::convert;
use super::observe;
use super::proto::gorush::health_check_response::ServingStatus;
use super::proto::gorush::{
    HealthCheckRequest, HealthCheckResponse, NotificationReply, NotificationRequest,
    gorush_server::Gorush, health_server::Health,
};
use crate::metrics::Metrics;

/// `proto.Gorush` and `proto.Health`.
#[derive(Clone)]
pub struct GorushService {
    adapter: Adapter,
    metrics: Arc<Metrics>,
    /// `/api/push` under the gorush prefix; `None` when `[gorush]` is off.
    push_path: Option<String>,
}

impl GorushService {
    /// Sends through `adapter` to `push_path` (`None`: the gorush routes
    /// are off, and so is `Send`).
    pub fn new(adapter: Adapter, metrics: Arc<Metrics>, push_path: Option<String>) -> Self {
        Self {
            adapter,
            metrics,
            push_path,
        }
    }

    async fn send_one(
        &self,
        request: Request<NotificationRequest>,
    ) -> Result<NotificationReply, Status> {
        let Some(path) = &self.push_path else {
            return Err(Status::unimplemented(
                "proto.Gorush/Send follows the gorush routes, which are off: set [gorush] enabled = true",
            ));
        };
        let forward = Forward::from_metadata(request.metadata());
        let body = json!({ "notifications": [convert::notification(request.get_ref())] });
        let answer = self.adapter.post_json(path, &forward, &body).await?;
        let counts = answer.body["counts"].as_u64().unwrap_or(0);
        Ok(NotificationReply {
            success: true,
            counts: i32::try_from(counts).unwrap_or(i32::MAX),
        })
    }
}

#[tonic::async_trait]
impl Gorush for GorushService {
    async fn send(
        &self,
        request: Request<NotificationRequest>,
    ) -> Result<Response<NotificationReply>, Status> {
        let result = self.send_one(request).await.map(Response::new);
        observe(&self.metrics, "proto.Gorush/Send", &result);
        result
    }
}

#[tonic::async_trait]
impl Health for GorushService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let result = if request.get_ref().service.is_empty() {
            Ok(Response::new(HealthCheckResponse {
                status: ServingStatus::Serving as i32,
            }))
        } else {
            Err(Status::not_found("unknown service"))
        };
        observe(&self.metrics, "proto.Health/Check", &result);
        result
    }
}
