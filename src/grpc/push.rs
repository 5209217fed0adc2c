//! `pushgate.v1.Push` (`proto/pushgate/v1/push.proto`):
//!
//! - `Send`: the platform's send route (`/apns/send`, `/fcm/send`,
//!   `/gcm/send`, `/webpush/send`, `/hms/send`) with `message` as the JSON
//!   body plus `tokens` (Web Push: `subscriptions`) and `app`; the 202 body
//!   becomes the `SendReply`.
//! - `SendStream`: the same route as one streamed NDJSON request
//!   ([`super::stream`]).
//! - `WatchJob`: `GET /jobs/{id}` every [`WATCH_EVERY`], a `JobStatus`
//!   whenever it changes, until the job is `done` or `cancelled`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tonic::{Code, Request, Response, Status, Streaming};

use super::adapter::{Adapter, Forward};
use super::convert::{self, Route};
use super::proto::pushgate::push_server::Push;
use super::proto::pushgate::{JobStatus, SendChunk, SendReply, SendRequest, WatchJobRequest};
use super::status::status_of;
use super::{Observed, observe};
use crate::metrics::Metrics;

const WATCH_JOB: &str = "pushgate.v1.Push/WatchJob";

/// How often `WatchJob` reads the job.
pub const WATCH_EVERY: Duration = Duration::from_millis(200);

/// `pushgate.v1.Push`.
#[derive(Clone)]
pub struct PushService {
    adapter: Adapter,
    metrics: Arc<Metrics>,
    watch_every: Duration,
}

impl PushService {
    /// Sends through `adapter`.
    pub fn new(adapter: Adapter, metrics: Arc<Metrics>) -> Self {
        Self {
            adapter,
            metrics,
            watch_every: WATCH_EVERY,
        }
    }

    async fn send_one(&self, request: Request<SendRequest>) -> Result<SendReply, Status> {
        let req = request.get_ref();
        let forward = Forward::from_metadata(request.metadata())
            .with_idempotency_key(&req.idempotency_key)?;
        let route = Route::parse(&req.platform)?;
        let body = convert::send_body(route, req)?;
        let answer = self
            .adapter
            .post_json(route.path(), &forward, &body)
            .await?;
        Ok(convert::send_reply(&answer))
    }

    /// The first status of a job, and the stream of its changes after it.
    async fn watch(&self, request: Request<WatchJobRequest>) -> Result<Watch, Status> {
        let id = &request.get_ref().job;
        if id.is_empty() {
            return Err(Status::invalid_argument("job: required"));
        }
        if !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Status::invalid_argument(format!(
                "job: {id:?} is not a job id"
            )));
        }
        let forward = Forward::from_metadata(request.metadata());
        let path = format!("/jobs/{id}");
        let first = self.adapter.get(&path, &forward).await?;
        if !first.status.is_success() {
            return Err(status_of(&first));
        }
        Ok(Watch {
            adapter: self.adapter.clone(),
            forward,
            path,
            every: self.watch_every,
            next: Some(convert::job_status(&first.body)),
            last: None,
            finished: false,
            // Counted when the stream ends (or the client drops it).
            observed: Observed::new(self.metrics.clone(), WATCH_JOB),
        })
    }
}

/// One `WatchJob` call in progress.
struct Watch {
    adapter: Adapter,
    forward: Forward,
    path: String,
    every: Duration,
    /// A status read but not yet sent.
    next: Option<JobStatus>,
    last: Option<JobStatus>,
    finished: bool,
    observed: Observed,
}

/// The states after which a job changes no more.
fn is_final(status: &JobStatus) -> bool {
    matches!(status.state.as_str(), "done" | "cancelled")
}

impl Watch {
    /// The next status to send: the one already read, else the next change.
    async fn next(&mut self) -> Option<Result<JobStatus, Status>> {
        if self.finished {
            return None;
        }
        loop {
            if let Some(status) = self.next.take()
                && self.last.as_ref() != Some(&status)
            {
                if is_final(&status) {
                    self.finished = true;
                    self.observed.finish(Code::Ok);
                }
                self.last = Some(status.clone());
                return Some(Ok(status));
            }
            tokio::time::sleep(self.every).await;
            let read = self.adapter.get(&self.path, &self.forward).await;
            match read {
                Ok(answer) if answer.status.is_success() => {
                    self.next = Some(convert::job_status(&answer.body));
                }
                Ok(answer) => return Some(Err(self.fail(status_of(&answer)))),
                Err(status) => return Some(Err(self.fail(status))),
            }
        }
    }

    fn fail(&mut self, status: Status) -> Status {
        self.finished = true;
        self.observed.finish(status.code());
        status
    }
}

/// `WatchJob`'s answer stream.
pub type JobStream = Pin<Box<dyn Stream<Item = Result<JobStatus, Status>> + Send>>;

#[tonic::async_trait]
impl Push for PushService {
    async fn send(&self, request: Request<SendRequest>) -> Result<Response<SendReply>, Status> {
        let result = self.send_one(request).await.map(Response::new);
        observe(&self.metrics, "pushgate.v1.Push/Send", &result);
        result
    }

    async fn send_stream(
        &self,
        request: Request<Streaming<SendChunk>>,
    ) -> Result<Response<SendReply>, Status> {
        let (metadata, _, stream) = request.into_parts();
        let result = super::stream::send(&self.adapter, &metadata, stream)
            .await
            .map(Response::new);
        observe(&self.metrics, "pushgate.v1.Push/SendStream", &result);
        result
    }

    type WatchJobStream = JobStream;

    async fn watch_job(
        &self,
        request: Request<WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let watch = match self.watch(request).await {
            Ok(w) => w,
            Err(status) => {
                // Counted here: the stream that would count it never starts.
                observe::<()>(&self.metrics, WATCH_JOB, &Err(status.clone()));
                return Err(status);
            }
        };
        let stream = futures_util::stream::unfold(watch, |mut w| async move {
            w.next().await.map(|item| (item, w))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
