//! One connection actor: owns one HTTP/2 connection, pulls tokens from the
//! dispatch queue while the connection has stream capacity, and turns every
//! answer into a verdict. When the connection ends it reconnects with backoff;
//! anything taken but not sent goes back to the front of the queue.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use http::HeaderValue;
use tokio::sync::watch;

use super::Shared;
use super::conn::{self, Connection};
use super::message::ApnsMessage;
use super::request;
use super::response;
use crate::job::{Job, Outcome};
use crate::platform::Settled;
use crate::queue::Work;
use crate::retry::{self, Backoff, Verdict};

/// Tokens taken from the queue at once: amortizes the queue lock without
/// holding back much work from other connections.
const TAKE: usize = 32;

/// Reconnect backoff: 1 s doubling to 60 s (as Pushy does), with jitter.
const RECONNECT: Backoff = Backoff {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(60),
};

/// Why [`drive`] returned.
enum End {
    /// The connection ended; open another. `answered` says whether the peer
    /// answered any stream on it: a connection that dies before answering
    /// anything counts as a failed connect, so the reconnect backs off.
    Reconnect { answered: bool },
    /// The queue was closed (shutdown) or the pool retired this actor; stop.
    Stop,
}

/// What one stream produced.
struct Done {
    job: Arc<Job<ApnsMessage>>,
    index: u32,
    attempts: u32,
    auth: Option<HeaderValue>,
    started: Instant,
    result: StreamResult,
}

enum StreamResult {
    Answer {
        status: u16,
        retry_after: Option<Duration>,
        body: Bytes,
        /// `apns-unique-id` (sandbox device pushes and broadcasts).
        unique_id: Option<Box<str>>,
    },
    /// The server never processed the stream (REFUSED_STREAM, above GOAWAY's
    /// last stream id): safe to resend without counting an attempt.
    NotProcessed,
    /// The stream may or may not have reached APNs.
    Lost(&'static str),
}

/// Resolves once the pool retires this actor. A dropped switch (the
/// supervisor is gone) is not a retirement: the actor then runs until the
/// queue closes, as it did before pools existed.
async fn retired(retire: &mut watch::Receiver<bool>) {
    if retire.wait_for(|retired| *retired).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs a connection actor until the queue closes or the pool retires it.
pub async fn run(shared: Arc<Shared>, id: usize, mut retire: watch::Receiver<bool>) {
    let mut failures = 0u32;
    loop {
        if shared.lane.queue().is_closed() || *retire.borrow() {
            return;
        }
        let tls = shared.tls.clone();
        let connected = tokio::select! {
            connected = conn::connect(&shared.host, shared.port, tls) => connected,
            _ = retired(&mut retire) => return,
        };
        let error = match connected {
            Ok(connection) => {
                shared
                    .metrics
                    .connects
                    .with_label_values(&["apns", "ok"])
                    .inc();
                shared.connected.fetch_add(1, Ordering::Relaxed);
                shared.connections_gauge.inc();
                tracing::info!(connection = id, upstream = %shared.authority, "APNs connection open");
                let end = drive(&shared, connection, &mut retire).await;
                shared.connections_gauge.dec();
                shared.connected.fetch_sub(1, Ordering::Relaxed);
                tracing::info!(connection = id, "APNs connection closed");
                match end {
                    End::Stop => return,
                    End::Reconnect { answered: true } => {
                        failures = 0;
                        continue;
                    }
                    End::Reconnect { answered: false } => {
                        "the connection closed before answering any request".to_owned()
                    }
                }
            }
            Err(e) => {
                shared
                    .metrics
                    .connects
                    .with_label_values(&["apns", "error"])
                    .inc();
                e.to_string()
            }
        };
        failures += 1;
        let delay = RECONNECT.reconnect_delay(failures);
        tracing::warn!(
            connection = id,
            error,
            retry_in_ms = delay.as_millis() as u64,
            "APNs connect failed"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shared.lane.queue().closed() => return,
            _ = retired(&mut retire) => return,
        }
    }
}

/// This connection's share of [`Shared::stream_capacity`], kept equal to the
/// peer's current stream limit and withdrawn when the connection ends.
struct CapacityShare<'a> {
    shared: &'a Shared,
    mine: usize,
}

impl CapacityShare<'_> {
    fn set(&mut self, limit: usize) {
        if limit > self.mine {
            self.shared
                .stream_capacity
                .fetch_add(limit - self.mine, Ordering::Relaxed);
        } else if limit < self.mine {
            self.shared
                .stream_capacity
                .fetch_sub(self.mine - limit, Ordering::Relaxed);
        }
        self.mine = limit;
    }
}

impl Drop for CapacityShare<'_> {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// Liveness of a connection with streams in flight: when nothing has been
/// heard for `ping_interval`, a PING goes out; no PONG within `ping_timeout`
/// means the peer (or the path to it) is gone even though TCP looks open.
struct Liveness {
    heard_at: Instant,
    ping_sent_at: Option<Instant>,
    interval: Duration,
    timeout: Duration,
}

impl Liveness {
    /// When the timer must fire next, if at all.
    fn deadline(&self, busy: bool) -> Option<Instant> {
        match self.ping_sent_at {
            Some(sent) => Some(sent + self.timeout),
            None if busy => Some(self.heard_at + self.interval),
            None => None,
        }
    }
}

async fn drive(
    shared: &Arc<Shared>,
    connection: Connection,
    retire: &mut watch::Receiver<bool>,
) -> End {
    let Connection {
        mut sender,
        mut driver,
        mut ping_pong,
    } = connection;
    let mut capacity = CapacityShare { shared, mine: 0 };
    capacity.set(sender.current_max_send_streams());
    let mut in_flight: FuturesUnordered<StreamFuture> = FuturesUnordered::new();
    let mut held: Option<Work<ApnsMessage>> = None;
    let mut closing = false;
    let mut answered = false;
    let mut stop = false;
    let mut liveness = Liveness {
        heard_at: Instant::now(),
        ping_sent_at: None,
        interval: shared.ping_interval,
        timeout: shared.ping_timeout,
    };
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut timer_at: Option<Instant> = None;
    loop {
        if closing && in_flight.is_empty() {
            break;
        }
        let deadline = liveness.deadline(!in_flight.is_empty());
        if deadline != timer_at {
            if let Some(at) = deadline {
                timer.as_mut().reset(at.into());
            }
            timer_at = deadline;
        }
        tokio::select! {
            biased;
            Some(done) = in_flight.next() => {
                shared.in_flight_gauge.dec();
                shared.in_flight.fetch_sub(1, Ordering::Relaxed);
                if matches!(done.result, StreamResult::Answer { .. }) {
                    answered = true;
                    liveness.heard_at = Instant::now();
                }
                settle(shared, done);
            }
            pong = poll_fn(|cx| ping_pong.poll_pong(cx)), if liveness.ping_sent_at.is_some() => {
                liveness.ping_sent_at = None;
                if pong.is_ok() {
                    liveness.heard_at = Instant::now();
                }
                // An error means the connection is ending; the driver says so.
            }
            _ = &mut timer, if timer_at.is_some() => {
                timer_at = None;
                if liveness.ping_sent_at.is_some() {
                    shared.stalled.inc();
                    tracing::warn!(
                        upstream = %shared.authority,
                        in_flight = in_flight.len(),
                        timeout_s = liveness.timeout.as_secs(),
                        "APNs connection stalled: no PONG; closing it and resending its streams"
                    );
                    // Dropping the connection fails every open stream with a
                    // broken pipe, so each is settled as lost: retried and
                    // counted as a possible duplicate.
                    driver.abort();
                    liveness.ping_sent_at = None;
                    liveness.heard_at = Instant::now();
                    closing = true;
                } else if ping_pong.send_ping(h2::Ping::opaque()).is_ok() {
                    liveness.ping_sent_at = Some(Instant::now());
                } else {
                    // Only fails when the connection is already gone.
                    liveness.heard_at = Instant::now();
                    closing = true;
                }
            }
            _ = &mut driver, if !closing => closing = true,
            _ = retired(retire), if !closing => {
                stop = true;
                closing = true;
            }
            // h2 counts a stream against the peer's limit only once its
            // connection task has sent it, so a burst of `send_request` calls
            // would all pass `poll_ready` and queue inside h2: a whole job pulled
            // onto one connection, invisible to the pool and the drain, and
            // timing out in h2's queue. Hold the limit here instead.
            ready = poll_fn(|cx| sender.poll_ready(cx)), if held.is_some() && !closing && in_flight.len() < capacity.mine.max(1) => {
                if ready.is_err() {
                    closing = true;
                    continue;
                }
                let Some(work) = held.as_mut() else { continue };
                let index = work.tokens.start;
                work.tokens.start += 1;
                let job = work.job.clone();
                let attempts = work.attempts;
                if work.tokens.is_empty() {
                    held = None;
                }
                if let Some(outcome) = job.hold() {
                    shared.lane.recorder().finish_unsent(&job, index..index + 1, &outcome);
                    continue;
                }
                match start(shared, &mut sender, job, index, attempts) {
                    Ok(None) => {}
                    Ok(Some(stream)) => {
                        if in_flight.is_empty() {
                            // Quiet time before now was not the peer's silence.
                            liveness.heard_at = Instant::now();
                        }
                        shared.in_flight_gauge.inc();
                        shared.in_flight.fetch_add(1, Ordering::Relaxed);
                        in_flight.push(stream);
                    }
                    Err(work) => {
                        // The connection refused a new stream: it is going away.
                        shared.lane.queue().push_front(work);
                        closing = true;
                    }
                }
            }
            work = shared.lane.queue().pop(TAKE), if held.is_none() && !closing => match work {
                Some(work) => {
                    // The peer may have changed its limit with a SETTINGS frame.
                    capacity.set(sender.current_max_send_streams());
                    held = Some(work);
                }
                None => {
                    stop = true;
                    closing = true;
                }
            },
        }
    }
    if let Some(work) = held {
        shared.lane.queue().push_front(work);
    }
    if stop {
        End::Stop
    } else {
        End::Reconnect { answered }
    }
}

type StreamFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Done> + Send>>;

/// Opens one stream. `Ok(None)`: the token was settled without a stream (it
/// cannot be signed or built), so nothing is in flight for it. On failure hands
/// the token back as work to requeue.
fn start(
    shared: &Arc<Shared>,
    sender: &mut h2::client::SendRequest<Bytes>,
    job: Arc<Job<ApnsMessage>>,
    index: u32,
    attempts: u32,
) -> Result<Option<StreamFuture>, Work<ApnsMessage>> {
    let auth = match shared.signer.as_ref().map(|s| s.header()).transpose() {
        Ok(auth) => auth,
        Err(e) => {
            // The key was checked at start; failing now is a bug worth hearing about.
            tracing::error!(error = %e, "cannot sign APNs provider token");
            let outcome = Outcome::Failed {
                reason: "ProviderTokenSigning".into(),
                status: 0,
            };
            shared.lane.recorder().finish(&job, index, outcome, false);
            return Ok(None);
        }
    };
    let apns_id = request::apns_id(&job.id, index);
    // Kept as sent: a device token as lower-case hex, a channel id as its text.
    let token = job.token_shown(index);
    let message = match job.message_for(index) {
        Ok(message) => message,
        Err(e) => {
            // Only a target's own fields can fail here (too large with them).
            let outcome = Outcome::Failed {
                reason: crate::message::personal::failure_reason(&e).into(),
                status: 0,
            };
            shared.lane.recorder().finish(&job, index, outcome, false);
            return Ok(None);
        }
    };
    let built = match &message.broadcast {
        None => request::build(&shared.authority, &message, &token, auth.as_ref(), apns_id),
        Some(path) => request::build_broadcast(
            &shared.authority,
            &message,
            path,
            &token,
            auth.as_ref(),
            apns_id.to_str().unwrap_or_default(),
        ),
    };
    let Ok(req) = built else {
        let outcome = Outcome::Failed {
            reason: "BadRequest".into(),
            status: 0,
        };
        shared.lane.recorder().finish(&job, index, outcome, false);
        return Ok(None);
    };
    let (response, mut body_tx) = match sender.send_request(req, false) {
        Ok(pair) => pair,
        Err(_) => return Err(Work::single(job, index, attempts)),
    };
    let payload = message.payload.clone();
    drop(message);
    if body_tx.send_data(payload, true).is_err() {
        return Err(Work::single(job, index, attempts));
    }
    let timeout = shared.request_timeout;
    Ok(Some(Box::pin(async move {
        let started = Instant::now();
        let result = match tokio::time::timeout(timeout, read_answer(response)).await {
            Ok(result) => result,
            Err(_) => StreamResult::Lost("Timeout"),
        };
        Done {
            job,
            index,
            attempts,
            auth,
            started,
            result,
        }
    })))
}

async fn read_answer(response: h2::client::ResponseFuture) -> StreamResult {
    let response = match response.await {
        Ok(r) => r,
        Err(e) => return classify_stream_error(&e),
    };
    let status = response.status().as_u16();
    let retry_after = retry::retry_after(response.headers());
    let unique_id = response
        .headers()
        .get("apns-unique-id")
        .and_then(|v| v.to_str().ok())
        .map(Box::from);
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        match chunk {
            Ok(chunk) => {
                // Give the window back, or the connection stalls after 64 KiB of answers.
                let _ = body.flow_control().release_capacity(chunk.len());
                if bytes.len() < 64 * 1024 {
                    bytes.extend_from_slice(&chunk);
                }
            }
            // The status is what classifies; a truncated reason body still counts.
            Err(_) => break,
        }
    }
    StreamResult::Answer {
        status,
        retry_after,
        body: bytes.into(),
        unique_id,
    }
}

fn classify_stream_error(e: &h2::Error) -> StreamResult {
    if e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote()) {
        StreamResult::NotProcessed
    } else if e.is_io() {
        StreamResult::Lost("ConnectionLost")
    } else {
        StreamResult::Lost("StreamReset")
    }
}

/// Turns a finished stream into an outcome, a retry, or a requeue.
fn settle(shared: &Arc<Shared>, done: Done) {
    let Done {
        job,
        index,
        attempts,
        auth,
        started,
        result,
    } = done;
    let mut unique = None;
    let verdict = match result {
        StreamResult::Answer {
            status,
            retry_after,
            body,
            unique_id,
        } => {
            unique = unique_id;
            shared.latency.observe(started.elapsed().as_secs_f64());
            let classified = response::classify(status, &body, retry_after);
            if classified.loud {
                shared.warn_credentials(classified.reason.as_str(), status);
            }
            classified.verdict
        }
        StreamResult::NotProcessed => {
            shared.requeued.inc();
            shared
                .lane
                .queue()
                .push_front(Work::single(job, index, attempts));
            return;
        }
        StreamResult::Lost(reason) => {
            shared.lane.recorder().possible_duplicates(&job.progress, 1);
            Verdict::Retry {
                reason: reason.into(),
                retry_after: None,
            }
        }
    };
    if let (Verdict::RefreshCredentials { .. }, Some(signer), Some(auth)) =
        (&verdict, shared.signer.as_ref(), auth.as_ref())
    {
        signer.invalidate(auth);
        shared
            .metrics
            .credential_refreshes
            .with_label_values(&["apns"])
            .inc();
    }
    let settled = shared
        .lane
        .settle(&job, index..index + 1, attempts, verdict, unique.as_deref());
    if job.message.broadcast.is_some() {
        match settled {
            Settled::Finished(kind) => count_broadcast(shared, &job, kind.as_str()),
            Settled::Expired => count_broadcast(shared, &job, "expired"),
            Settled::Retried => {}
        }
    }
}

/// `pushgate_apns_broadcasts_total{push_kind="broadcast"}`.
fn count_broadcast(shared: &Shared, job: &Job<ApnsMessage>, outcome: &str) {
    shared
        .metrics
        .broadcasts
        .with_label_values(&[&job.app, "broadcast", outcome])
        .inc();
}
