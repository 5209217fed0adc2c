//! The dispatch loop of one app: one task pulls work from the lane's queue
//! and keeps at most `concurrency` requests in flight, each one batch of up
//! to `batch_size` (≤ 1,000) tokens of one job. Each request settles its own
//! tokens when it ends: per token from a partial answer, or one verdict for
//! the batch through the [`Lane`](crate::platform::Lane) (an outcome, a retry
//! through the queue's timer heap, an expiry), or a requeue when the request
//! never left.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::response::{self, Classified};
use super::{HmsMessage, Shared, request};
use crate::job::Outcome;
use crate::queue::Work;
use crate::retry::{Backoff, Verdict};
use crate::upstream::{self, Attempt};

/// Delay before resending work that never reached Push Kit (connection
/// refused, token endpoint unreachable), growing with consecutive failures.
/// Such work keeps its retries: its tokens were never tried.
const REQUEUE: Backoff = Backoff {
    base: Duration::from_millis(500),
    cap: Duration::from_secs(10),
};

/// Runs the worker until the queue is closed and in-flight requests ended.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        let can_take = in_flight.len() < shared.concurrency;
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            // pop gives tokens of one job only, so a batch shares one message.
            work = shared.lane.queue().pop_alike(shared.batch_size), if can_take => match work {
                Some(work) => {
                    if let Some(outcome) = work.job.hold() {
                        // Cancelled or expired: settled without a request.
                        shared.lane.recorder().finish_unsent(&work.job, work.tokens.clone(), &outcome);
                        continue;
                    }
                    shared.in_flight.inc();
                    in_flight.push(send_batch(shared.clone(), work));
                }
                None => break,
            },
        }
    }
    // Closed: let what is in flight finish and record its outcomes.
    while in_flight.next().await.is_some() {}
}

async fn post(shared: &Shared, request: http::Request<Bytes>) -> Attempt {
    match reqwest::Request::try_from(request) {
        Ok(request) => upstream::post(&shared.client, "hms", request).await,
        // Only a malformed URL gets here, and config refused those.
        Err(_) => Attempt::Lost("BadRequestUrl"),
    }
}

async fn send_batch(shared: Arc<Shared>, work: Work<HmsMessage>) {
    settle_batch(&shared, work).await;
    shared.in_flight.dec();
}

async fn settle_batch(shared: &Shared, work: Work<HmsMessage>) {
    let job = work.job.clone();
    let range = work.tokens.clone();
    let lane = &shared.lane;
    let auth = match shared.token.header().await {
        Ok(auth) => auth,
        Err(e) if e.is_refusal() => {
            // Bad credentials will not fix themselves: spend the tokens' retries.
            shared.loud(
                "Huawei refused the OAuth credentials: check hms.app_id and the client secret",
                &e.to_string(),
                0,
            );
            let verdict = Verdict::Retry {
                reason: "AccessTokenRefused".into(),
                retry_after: None,
            };
            lane.settle(&job, range, work.attempts, verdict, None);
            return;
        }
        Err(e) => {
            // The token endpoint is unreachable: nothing was sent to Push Kit.
            shared.loud(
                "no HMS access token (token endpoint unreachable); delivery waits",
                &e.to_string(),
                0,
            );
            requeue(shared, work);
            return;
        }
    };
    // A batch's tokens share their personal fields, if any (`pop_alike`).
    let message = match job.message_for(range.start) {
        Ok(message) => message,
        Err(e) => {
            let verdict = Verdict::Done(Outcome::Failed {
                reason: crate::message::personal::failure_reason(&e).into(),
                status: 0,
            });
            lane.settle(&job, range, work.attempts, verdict, None);
            return;
        }
    };
    let tokens: Vec<Cow<'_, str>> = range.clone().map(|i| job.token_shown(i)).collect();
    let body = message.body(tokens.iter().map(|t| t.as_ref()));
    drop(message);
    let request = match request::build(&shared.url, &auth, body) {
        Ok(request) => request,
        Err(e) => {
            shared.loud("cannot build the HMS request", &e.to_string(), 0);
            let verdict = Verdict::Done(Outcome::Failed {
                reason: "BadRequestUrl".into(),
                status: 0,
            });
            lane.settle(&job, range, work.attempts, verdict, None);
            return;
        }
    };
    let started = Instant::now();
    match post(shared, request).await {
        Attempt::Answer {
            status,
            retry_after,
            body,
        } => {
            shared.answered.store(true, Ordering::Relaxed);
            shared.connect_failures.store(0, Ordering::Relaxed);
            shared.latency.observe(started.elapsed().as_secs_f64());
            let classified = response::classify(status, &body, retry_after);
            if classified.loud {
                shared.loud(
                    "Push Kit refused a batch for a reason every batch shares: check hms.app_id, the endpoint and the message",
                    &classified.code,
                    status,
                );
            }
            match classified.outcome {
                Classified::Partial { illegal } => {
                    for (index, token) in range.zip(&tokens) {
                        let outcome = if illegal.contains(token.as_ref()) {
                            Outcome::Unregistered { timestamp_ms: None }
                        } else {
                            Outcome::Success
                        };
                        lane.finish(&job, index, outcome, None);
                    }
                }
                Classified::All(verdict) => {
                    if let Verdict::RefreshCredentials { .. } = verdict {
                        // Only the rejected token is dropped: a burst of 401s
                        // on it causes one refresh.
                        shared.token.invalidate(&auth);
                    }
                    lane.settle(&job, range, work.attempts, verdict, None);
                }
            }
        }
        Attempt::NotSent => requeue(shared, work),
        Attempt::Lost(reason) => {
            lane.recorder()
                .possible_duplicates(&job.progress, range.len() as u64);
            let verdict = Verdict::Retry {
                reason: reason.into(),
                retry_after: None,
            };
            lane.settle(&job, range, work.attempts, verdict, None);
        }
    }
}

/// Puts work that never reached Push Kit back, later, without counting an
/// attempt.
fn requeue(shared: &Shared, work: Work<HmsMessage>) {
    let failures = shared.connect_failures.fetch_add(1, Ordering::Relaxed) + 1;
    shared.requeued.inc_by(work.tokens.len() as u64);
    shared
        .lane
        .queue()
        .push_after(work, REQUEUE.reconnect_delay(failures));
}
