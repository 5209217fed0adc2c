//! The dispatch loop: one task pulls work from the queue and keeps at most
//! `concurrency` requests in flight (v1: one token each; legacy: one batch of
//! up to `batch_size` ids of one job each). Each request settles its own
//! tokens when it ends: an outcome, a retry through the queue's timer heap (no
//! task sleeps per token), or a requeue when the request never left.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::HeaderValue;

use super::message::GoogleMessage;
use super::{Api, Shared, legacy, v1};
use crate::http2;
use crate::job::{Job, Outcome};
use crate::queue::Work;
use crate::retry::{Backoff, Verdict};
use crate::upstream::{self, Attempt};

/// Tokens taken from the queue at once for v1: amortizes the queue lock.
const TAKE: usize = 32;

/// Delay before resending work that never reached the upstream (connection
/// refused, token endpoint unreachable), growing with consecutive failures.
/// Such work keeps its retries: the token was never tried.
const REQUEUE: Backoff = Backoff {
    base: Duration::from_millis(500),
    cap: Duration::from_secs(10),
};

/// Runs the worker until the queue is closed and in-flight requests ended.
pub(crate) async fn run(shared: Arc<Shared>) {
    match &shared.api {
        Api::V1 { .. } => run_v1(shared).await,
        Api::Legacy { batch_size, .. } => {
            let batch_size = *batch_size;
            run_legacy(shared, batch_size).await
        }
    }
}

async fn run_v1(shared: Arc<Shared>) {
    let mut in_flight = FuturesUnordered::new();
    let mut held: Option<Work<GoogleMessage>> = None;
    // Waiting for the project's pace: the sleep, and since when (pace clock).
    let mut paced: Option<crate::pace::Sleep> = None;
    let mut paced_since: Option<Duration> = None;
    let mut granted = 0u64;
    loop {
        // Start as many single-token requests as the bound and the pace allow.
        while in_flight.len() < shared.concurrency && paced.is_none() {
            let Some(work) = held.as_mut() else { break };
            let index = work.tokens.start;
            let job = work.job.clone();
            let attempts = work.attempts;
            if let Some(outcome) = job.hold() {
                // Cancelled or expired: settled without a request, so
                // without spending the project's quota.
                work.tokens.start += 1;
                if work.tokens.is_empty() {
                    held = None;
                }
                shared
                    .lane
                    .recorder()
                    .finish_unsent(&job, index..index + 1, &outcome);
                continue;
            }
            if let Some(pace) = &shared.pace {
                let clock = pace.allowance.clock();
                match pace.allowance.take() {
                    Ok(()) => {
                        if let Some(since) = paced_since.take() {
                            pace.paced_seconds
                                .inc_by(clock.now().saturating_sub(since).as_secs_f64());
                        }
                        granted += 1;
                        if granted.is_multiple_of(64) {
                            pace.level.set(pace.allowance.available());
                        }
                    }
                    Err(at) => {
                        paced_since.get_or_insert_with(|| clock.now());
                        pace.level.set(pace.allowance.available());
                        paced = Some(clock.sleep_until(at));
                        break;
                    }
                }
            }
            work.tokens.start += 1;
            if work.tokens.is_empty() {
                held = None;
            }
            shared.in_flight.inc();
            in_flight.push(send_v1(shared.clone(), job, index, attempts));
        }
        // After the loop above, either nothing is held or the bound is reached
        // (so `in_flight` is not empty): one branch is always enabled.
        let can_take = held.is_none() && in_flight.len() < shared.concurrency;
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            Some(()) = futures_util::future::OptionFuture::from(paced.as_mut()), if paced.is_some() => {
                paced = None;
            }
            work = shared.lane.queue().pop(TAKE), if can_take => match work {
                Some(work) => held = Some(work),
                None => break,
            },
        }
    }
    if let Some(work) = held {
        shared.lane.queue().push_front(work);
    }
    // Closed: let what is in flight finish and record its outcomes.
    while in_flight.next().await.is_some() {}
}

async fn run_legacy(shared: Arc<Shared>, batch_size: usize) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        let can_take = in_flight.len() < shared.concurrency;
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            // pop gives tokens of one job only, so a batch shares one message.
            work = shared.lane.queue().pop_alike(batch_size), if can_take => match work {
                Some(work) => {
                    if let Some(outcome) = work.job.hold() {
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
    while in_flight.next().await.is_some() {}
}

async fn post(shared: &Shared, url: &str, auth: HeaderValue, body: Bytes) -> Attempt {
    let request = shared
        .client
        .post(url)
        .header(http::header::AUTHORIZATION, auth)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .build();
    match request {
        Ok(request) => upstream::post(&shared.client, shared.platform.as_str(), request).await,
        // Only a malformed URL gets here, and config refused those.
        Err(_) => Attempt::Lost("BadRequestUrl"),
    }
}

async fn send_v1(shared: Arc<Shared>, job: Arc<Job<GoogleMessage>>, index: u32, attempts: u32) {
    let Api::V1 { url, token } = &shared.api else {
        return;
    };
    let auth = match token.header().await {
        Ok(auth) => auth,
        Err(e) if e.is_refusal() => {
            // Bad credentials will not fix themselves: spend the token's retries.
            shared.loud(
                "FCM credentials refused: check fcm.service_account_file",
                &e.to_string(),
                0,
            );
            let verdict = Verdict::Retry {
                reason: "AccessTokenRefused".into(),
                retry_after: None,
            };
            shared
                .lane
                .settle(&job, index..index + 1, attempts, verdict, None);
            shared.in_flight.dec();
            return;
        }
        Err(e) => {
            // The token endpoint is unreachable: nothing was sent to FCM.
            // Rate-limited: every request in flight lands here during an outage.
            shared.loud(
                "no FCM access token (token endpoint unreachable); delivery waits",
                &e.to_string(),
                0,
            );
            requeue(&shared, Work::single(job, index, attempts));
            shared.in_flight.dec();
            return;
        }
    };
    let body = match job.message_for(index) {
        Ok(message) => message.v1_body(&job.token_shown(index)),
        Err(e) => {
            let verdict = Verdict::Done(Outcome::Failed {
                reason: crate::message::personal::failure_reason(&e).into(),
                status: 0,
            });
            shared
                .lane
                .settle(&job, index..index + 1, attempts, verdict, None);
            shared.in_flight.dec();
            return;
        }
    };
    shared.sent.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let attempt = match shared.h2.as_ref().filter(|t| !t.connections.h1_only()) {
        Some(h2) => {
            let mut request = http::Request::new(());
            *request.method_mut() = http::Method::POST;
            *request.uri_mut() = h2.uri.clone();
            let headers = request.headers_mut();
            headers.insert(http::header::AUTHORIZATION, auth.clone());
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            match h2
                .connections
                .send(request, body.clone(), shared.request_timeout)
                .await
            {
                Ok(attempt) => attempt,
                Err(http2::Declined::Http1Only) => post(&shared, url, auth.clone(), body).await,
                // No address filter here: never refused.
                Err(http2::Declined::AddressRefused(_)) => Attempt::NotSent,
            }
        }
        None => post(&shared, url, auth.clone(), body).await,
    };
    let verdict = match attempt {
        Attempt::Answer {
            status,
            retry_after,
            body,
        } => {
            answered(&shared, started);
            if status == 429
                && let Some(pace) = &shared.pace
            {
                // The project may be over its quota: everything waits, not
                // only this token (unless it is the cool-down of a pause).
                let pause = retry_after.unwrap_or(Duration::from_secs(1));
                if pace.allowance.pause(pause) {
                    tracing::debug!(
                        pause_ms = pause.as_millis() as u64,
                        "FCM answered 429: the project's sends pause"
                    );
                }
            }
            let classified = v1::classify(status, &body, retry_after);
            if classified.loud {
                let code = classified.code.map_or("", |c| c.as_str());
                shared.loud(
                    "FCM refused a request for a reason every token shares: check the service account, project_id and the message",
                    code,
                    status,
                );
            }
            if let Verdict::RefreshCredentials { .. } = classified.verdict {
                // Only the rejected token is dropped: a burst of 401s on it
                // causes one refresh.
                token.invalidate(&auth);
            }
            classified.verdict
        }
        Attempt::NotSent => {
            requeue(&shared, Work::single(job, index, attempts));
            shared.in_flight.dec();
            return;
        }
        Attempt::Lost(reason) => {
            shared.lane.recorder().possible_duplicates(&job.progress, 1);
            Verdict::Retry {
                reason: reason.into(),
                retry_after: None,
            }
        }
    };
    shared
        .lane
        .settle(&job, index..index + 1, attempts, verdict, None);
    shared.in_flight.dec();
}

async fn send_batch(shared: Arc<Shared>, work: Work<GoogleMessage>) {
    let Api::Legacy { url, key, .. } = &shared.api else {
        return;
    };
    let job = work.job.clone();
    let range = work.tokens.clone();
    let count = range.len();
    let tokens: Vec<String> = range
        .clone()
        .map(|i| job.token_shown(i).into_owned())
        .collect();
    // A batch's tokens share their personal fields, if any (`pop_alike`).
    let body = match job.message_for(range.start) {
        Ok(message) => message.legacy_body(tokens.iter().map(String::as_str)),
        Err(e) => {
            let verdict = Verdict::Done(Outcome::Failed {
                reason: crate::message::personal::failure_reason(&e).into(),
                status: 0,
            });
            shared
                .lane
                .settle(&job, range, work.attempts, verdict, None);
            shared.in_flight.dec();
            return;
        }
    };
    shared.sent.store(true, Ordering::Relaxed);
    let started = Instant::now();
    match post(&shared, url, key.clone(), body).await {
        Attempt::Answer {
            status: 200,
            retry_after,
            body,
        } => {
            answered(&shared, started);
            match legacy::parse_answer(&body, count) {
                Some(results) => {
                    let mut retries = Vec::new();
                    for (index, entry) in range.zip(results) {
                        match legacy::classify_result(&entry, retry_after) {
                            Verdict::Done(outcome) => {
                                shared.lane.finish(&job, index, outcome, None)
                            }
                            Verdict::Retry { reason, .. }
                            | Verdict::RefreshCredentials { reason } => {
                                retries.push((index, reason));
                            }
                        }
                    }
                    if !retries.is_empty() {
                        shared.lane.retry(&job, retries, work.attempts, retry_after);
                    }
                }
                None => {
                    // Results that cannot be matched to the ids: try the batch
                    // once more, then give up rather than guess.
                    let reason: Arc<str> = "MalformedResponse".into();
                    let verdict = if work.attempts == 0 {
                        Verdict::Retry {
                            reason,
                            retry_after,
                        }
                    } else {
                        Verdict::Done(Outcome::Failed {
                            reason,
                            status: 200,
                        })
                    };
                    tracing::warn!(ids = count, "legacy answer does not match the batch");
                    shared
                        .lane
                        .settle(&job, work.tokens, work.attempts, verdict, None);
                }
            }
        }
        Attempt::Answer {
            status,
            retry_after,
            ..
        } => {
            answered(&shared, started);
            let batch = legacy::classify_batch(status, retry_after);
            if batch.loud {
                let what = if status == 401 {
                    "the legacy endpoint refused gcm.server_key: every token fails until it is fixed"
                } else {
                    "the legacy endpoint refused the request as malformed"
                };
                shared.loud(what, "", status);
            }
            shared
                .lane
                .settle(&job, work.tokens, work.attempts, batch.verdict, None);
        }
        Attempt::NotSent => requeue(&shared, work),
        Attempt::Lost(reason) => {
            shared
                .lane
                .recorder()
                .possible_duplicates(&job.progress, count as u64);
            let verdict = Verdict::Retry {
                reason: reason.into(),
                retry_after: None,
            };
            shared
                .lane
                .settle(&job, work.tokens, work.attempts, verdict, None);
        }
    }
    shared.in_flight.dec();
}

fn answered(shared: &Shared, started: Instant) {
    shared.answered.store(true, Ordering::Relaxed);
    shared.connect_failures.store(0, Ordering::Relaxed);
    shared.latency.observe(started.elapsed().as_secs_f64());
}

/// Puts work that never reached the upstream back, later, without counting an
/// attempt.
fn requeue(shared: &Shared, work: Work<GoogleMessage>) {
    let failures = shared.connect_failures.fetch_add(1, Ordering::Relaxed) + 1;
    shared.requeued.inc_by(work.tokens.len() as u64);
    shared
        .lane
        .queue()
        .push_after(work, REQUEUE.reconnect_delay(failures));
}
