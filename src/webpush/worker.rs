//! The dispatch loop: one task pulls subscriptions from the queue and keeps
//! at most `concurrency` requests in flight, each one encrypted for its own
//! subscription. Each request settles its subscription when it ends: an
//! outcome, or a retry through the queue's timer heap.
//!
//! Each request is a task of its own: its ECDH (about 50 µs, the floor of a
//! Web Push message) then runs on any of the runtime's threads, where one
//! task polling every request kept all the encryption on one core.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::task::{Id, JoinError, JoinSet};

use super::Shared;
use super::client::{SendError, WebPushMessage};
use super::{message, response};
use crate::job::{Job, Outcome};
use crate::queue::Work;
use crate::retry::Verdict;

/// Subscriptions taken from the queue at once: amortizes the queue lock.
const TAKE: usize = 32;

/// Runs until the queue is closed and the requests in flight ended.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut in_flight = Tasks::default();
    let mut held: Option<Work<WebPushMessage>> = None;
    loop {
        while in_flight.len() < shared.concurrency {
            let Some(work) = held.as_mut() else { break };
            let index = work.tokens.start;
            work.tokens.start += 1;
            let job = work.job.clone();
            let attempts = work.attempts;
            if work.tokens.is_empty() {
                held = None;
            }
            if let Some(outcome) = job.hold() {
                shared
                    .lane
                    .recorder()
                    .finish_unsent(&job, index..index + 1, &outcome);
                continue;
            }
            shared.in_flight.inc();
            let sending = Sending {
                job: job.clone(),
                index,
                attempts,
            };
            in_flight.spawn(sending, send_one(shared.clone(), job, index, attempts));
        }
        let can_take = held.is_none() && in_flight.len() < shared.concurrency;
        tokio::select! {
            biased;
            Some((sending, ended)) = in_flight.next(), if !in_flight.is_empty() => {
                request_ended(&shared, sending, ended);
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
    while let Some((sending, ended)) = in_flight.next().await {
        request_ended(&shared, sending, ended);
    }
}

/// Tasks that each carry what they work on, handed back when the task ends
/// however it ends: a panicking task's work is not lost with it.
struct Tasks<T> {
    set: JoinSet<()>,
    work: HashMap<Id, T>,
}

impl<T> Default for Tasks<T> {
    fn default() -> Self {
        Self {
            set: JoinSet::new(),
            work: HashMap::new(),
        }
    }
}

impl<T> Tasks<T> {
    fn len(&self) -> usize {
        self.set.len()
    }

    fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    fn spawn(&mut self, work: T, task: impl Future<Output = ()> + Send + 'static) {
        let id = self.set.spawn(task).id();
        self.work.insert(id, work);
    }

    /// The next task to end, with its work; `None` when there is none.
    async fn next(&mut self) -> Option<(T, Result<(), JoinError>)> {
        loop {
            let (id, ended) = match self.set.join_next_with_id().await? {
                Ok((id, ())) => (id, Ok(())),
                Err(e) => (e.id(), Err(e)),
            };
            if let Some(work) = self.work.remove(&id) {
                return Some((work, ended));
            }
        }
    }
}

/// The subscription a request's task is sending.
struct Sending {
    job: Arc<Job<WebPushMessage>>,
    index: u32,
    attempts: u32,
}

/// A request's task ended. It settles its own subscription, except when it
/// panicked: the subscription is then settled here, failed as
/// `InternalError`, so the books still count it (not resent: the panic may
/// have come after the push service took the message, and a bug that
/// panics once would panic again).
fn request_ended(shared: &Shared, sending: Sending, ended: Result<(), JoinError>) {
    let Err(e) = ended else { return };
    let Sending {
        job,
        index,
        attempts,
    } = sending;
    tracing::error!(error = %e, job = %job.id, "a Web Push request's task failed; its subscription is recorded as failed (InternalError)");
    let verdict = Verdict::Done(Outcome::Failed {
        reason: Arc::from("InternalError"),
        status: 0,
    });
    shared
        .lane
        .settle(&job, index..index + 1, attempts, verdict, None);
    shared.in_flight.dec();
}

async fn send_one(shared: Arc<Shared>, job: Arc<Job<WebPushMessage>>, index: u32, attempts: u32) {
    let verdict = attempt(&shared, &job, index).await;
    shared
        .lane
        .settle(&job, index..index + 1, attempts, verdict, None);
    shared.in_flight.dec();
}

async fn attempt(shared: &Shared, job: &Job<WebPushMessage>, index: u32) -> Verdict {
    let codec = job.progress.platform.codec();
    let Some(sub) = message::load(codec.split(job.tokens.get(index)).0) else {
        return Verdict::Done(Outcome::Failed {
            reason: Arc::from("InvalidSubscription"),
            status: 0,
        });
    };
    // The push service keeps the message only for what is left of its TTL
    // after its time in our queue (RFC 8030 §5.2 counts from the push).
    let ttl = message::ttl_left(job.message.ttl, job.expires_at, SystemTime::now());
    let message = match job.message_for(index) {
        Ok(message) => message,
        Err(e) => {
            return Verdict::Done(Outcome::Failed {
                reason: Arc::from(crate::message::personal::failure_reason(&e)),
                status: 0,
            });
        }
    };
    let started = Instant::now();
    match shared.client.send(&sub, &message, ttl).await {
        Ok(answer) => {
            shared.latency.observe(started.elapsed().as_secs_f64());
            let classified = response::classify(answer.status, &answer.body, answer.retry_after);
            if classified.loud {
                shared.client.vapid().forget(&sub.endpoint.origin);
                shared.loud(&sub.endpoint.origin, answer.status, &answer.body);
            }
            classified.verdict
        }
        Err(SendError::Refused { origin, reason }) => {
            tracing::warn!(%origin, reason, "Web Push endpoint resolves only to private addresses; refused");
            Verdict::Done(Outcome::Failed {
                reason: Arc::from("PrivateAddress"),
                status: 0,
            })
        }
        Err(e @ SendError::NotSent { .. }) => {
            tracing::debug!(error = %e, "Web Push request not sent");
            response::transport_error()
        }
        Err(e @ SendError::Lost { .. }) => {
            tracing::debug!(error = %e, "Web Push request failed");
            shared.lane.recorder().possible_duplicates(&job.progress, 1);
            response::transport_error()
        }
        Err(e) => {
            tracing::error!(error = %e, "Web Push message could not be built");
            Verdict::Done(Outcome::Failed {
                reason: Arc::from("EncryptionFailed"),
                status: 0,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Tasks;

    #[tokio::test]
    async fn a_task_that_panics_hands_back_its_work() {
        let mut tasks = Tasks::default();
        tasks.spawn("sent", async {});
        tasks.spawn("panicked", async { panic!("a bug in a request") });
        let mut ended = Vec::new();
        while let Some((work, result)) = tasks.next().await {
            ended.push((work, result.is_ok()));
        }
        ended.sort();
        assert_eq!(ended, [("panicked", false), ("sent", true)]);
        assert!(tasks.is_empty());
        assert!(tasks.work.is_empty(), "no work left behind");
    }
}
