//! The connection pool: a supervisor that keeps between `min_connections` and
//! `max_connections` connection actors ([`worker::run`]) and sizes the set to
//! the work waiting.
//!
//! Policy, checked every `grow_interval`:
//! - grow by one while more tokens are ready in the queue than the open
//!   connections can have in flight (the sum of the peer's
//!   SETTINGS_MAX_CONCURRENT_STREAMS) and have been for a whole interval (a
//!   burst the open connections clear within one interval is not worth a TLS
//!   handshake), every actor is connected (an actor still
//!   connecting or backing off means the upstream is the bottleneck, and more
//!   sockets would only hammer it), and the pool is below its ceiling;
//! - shrink by one after `idle_shrink` of continuous low demand: nothing ready
//!   and the streams in flight would fill at most half of the pool without one
//!   connection. The retired actor finishes its in-flight streams first.
//!
//! Readiness stays truthful because only actors with an open connection count
//! in [`Shared::connected`](super::Shared); a retiring actor counts until its
//! connection is closed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Shared;
use super::worker;

/// Pool bounds and pace (`[apns]` min/max_connections, grow_interval_ms, idle_shrink_s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Actors kept at least (≥ 1).
    pub min: usize,
    /// Actors opened at most (≥ `min`).
    pub max: usize,
    /// At most one connection is added per interval.
    pub grow_interval: Duration,
    /// Low demand this long retires one connection.
    pub idle_shrink: Duration,
}

/// What the supervisor sees at one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Demand {
    /// Actors running (connected, connecting, or backing off).
    pub actors: usize,
    /// Actors with an open connection.
    pub connected: usize,
    /// Sum of the open connections' stream limits.
    pub capacity: usize,
    /// Streams in flight over all connections.
    pub in_flight: usize,
    /// Tokens ready to send now (retries not yet due are not demand).
    pub ready: usize,
}

impl Demand {
    /// More is ready than the open connections could carry at once.
    pub fn wants_more(&self) -> bool {
        self.ready > self.capacity
    }

    /// The pool would cope with one connection fewer, at most half full.
    pub fn is_low(&self) -> bool {
        if self.ready > 0 || self.connected <= 1 {
            return false;
        }
        let per_connection = self.capacity / self.connected;
        self.in_flight.saturating_mul(2) <= self.capacity.saturating_sub(per_connection)
    }
}

/// One decision of the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Open one more connection.
    Grow,
    /// Retire one connection.
    Shrink,
    /// Leave the pool as it is.
    Hold,
}

/// How long demand has been high or low without a break (zero when it is
/// neither now).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Streak {
    /// [`Demand::wants_more`] held this long.
    pub high_for: Duration,
    /// [`Demand::is_low`] held this long.
    pub low_for: Duration,
}

/// Decides the next step. Pure, so the policy is unit-tested.
pub fn plan(limits: &Limits, demand: &Demand, streak: Streak) -> Step {
    if demand.actors < limits.min {
        return Step::Grow;
    }
    // Half an interval of slack: checks run once per interval, give or take
    // timer jitter, so "high at two checks in a row" is what this asks.
    let sustained = streak.high_for >= limits.grow_interval / 2;
    if demand.actors < limits.max
        && demand.connected == demand.actors
        && demand.wants_more()
        && sustained
    {
        return Step::Grow;
    }
    let low_for = streak.low_for;
    if demand.actors > limits.min && demand.is_low() && low_for >= limits.idle_shrink {
        return Step::Shrink;
    }
    Step::Hold
}

/// A running actor and the switch that retires it.
struct Actor {
    id: usize,
    retire: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Runs the pool until the queue closes; actors stop on their own then.
pub async fn supervise(shared: Arc<Shared>, limits: Limits) {
    let mut actors: Vec<Actor> = Vec::new();
    let mut next_id = 0usize;
    let mut spawn = |actors: &mut Vec<Actor>| {
        let (retire, retired) = watch::channel(false);
        let task = tokio::spawn(worker::run(shared.clone(), next_id, retired));
        actors.push(Actor {
            id: next_id,
            retire,
            task,
        });
        next_id += 1;
    };
    for _ in 0..limits.min.max(1) {
        spawn(&mut actors);
    }
    let mut tick = tokio::time::interval(limits.grow_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut low_since: Option<Instant> = None;
    let mut high_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.lane.queue().closed() => return,
        }
        // An actor only ends by itself when the queue closes or it was retired;
        // forget finished ones so the count is what really runs.
        actors.retain(|a| !a.task.is_finished());
        let demand = Demand {
            actors: actors.len(),
            connected: shared.connected.load(Ordering::Relaxed),
            capacity: shared.stream_capacity.load(Ordering::Relaxed),
            in_flight: shared.in_flight.load(Ordering::Relaxed),
            ready: shared.lane.queue().ready_depth(),
        };
        let now = Instant::now();
        let since = |on: bool, start: &mut Option<Instant>| {
            if on {
                now - *start.get_or_insert(now)
            } else {
                *start = None;
                Duration::ZERO
            }
        };
        let streak = Streak {
            high_for: since(demand.wants_more(), &mut high_since),
            low_for: since(demand.is_low(), &mut low_since),
        };
        match plan(&limits, &demand, streak) {
            Step::Grow => {
                spawn(&mut actors);
                tracing::info!(
                    connections = actors.len(),
                    ready = demand.ready,
                    capacity = demand.capacity,
                    "APNs pool grows"
                );
            }
            Step::Shrink => {
                // The newest actor goes: the oldest connections have proven stable.
                if let Some(actor) = actors.pop() {
                    let _ = actor.retire.send(true);
                    tracing::info!(
                        connection = actor.id,
                        connections = actors.len(),
                        "APNs pool shrinks after low demand"
                    );
                }
                // The next shrink needs another full quiet period.
                low_since = Some(now);
            }
            Step::Hold => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        min: 1,
        max: 4,
        grow_interval: Duration::from_millis(500),
        idle_shrink: Duration::from_secs(60),
    };

    fn high(d: Duration) -> Streak {
        Streak {
            high_for: d,
            low_for: Duration::ZERO,
        }
    }

    fn low(d: Duration) -> Streak {
        Streak {
            high_for: Duration::ZERO,
            low_for: d,
        }
    }

    const SUSTAINED: Duration = Duration::from_millis(500);

    fn demand(actors: usize, connected: usize, in_flight: usize, ready: usize) -> Demand {
        Demand {
            actors,
            connected,
            capacity: connected * 100,
            in_flight,
            ready,
        }
    }

    #[test]
    fn grows_while_more_is_ready_than_the_pool_can_carry() {
        assert_eq!(
            plan(&LIMITS, &demand(1, 1, 100, 101), high(SUSTAINED)),
            Step::Grow
        );
        assert_eq!(
            plan(&LIMITS, &demand(3, 3, 300, 301), high(SUSTAINED)),
            Step::Grow
        );
        // A burst seen at one check only: hold.
        assert_eq!(
            plan(&LIMITS, &demand(1, 1, 100, 101), high(Duration::ZERO)),
            Step::Hold
        );
        // Enough room for what is ready: hold.
        assert_eq!(
            plan(&LIMITS, &demand(1, 1, 100, 100), high(SUSTAINED)),
            Step::Hold
        );
    }

    #[test]
    fn never_grows_past_max_nor_while_a_connection_is_still_opening() {
        assert_eq!(
            plan(&LIMITS, &demand(4, 4, 400, 10_000), high(SUSTAINED)),
            Step::Hold
        );
        // One actor is connecting or backing off: the upstream is the limit.
        assert_eq!(
            plan(&LIMITS, &demand(2, 1, 100, 10_000), high(SUSTAINED)),
            Step::Hold
        );
        assert_eq!(
            plan(&LIMITS, &demand(0, 0, 0, 0), Streak::default()),
            Step::Grow
        );
    }

    #[test]
    fn shrinks_only_after_a_full_quiet_period_and_never_below_min() {
        let quiet = demand(3, 3, 10, 0);
        assert!(quiet.is_low());
        assert_eq!(
            plan(&LIMITS, &quiet, low(Duration::from_secs(59))),
            Step::Hold
        );
        assert_eq!(
            plan(&LIMITS, &quiet, low(Duration::from_secs(60))),
            Step::Shrink
        );
        let floor = demand(1, 1, 0, 0);
        assert_eq!(
            plan(&LIMITS, &floor, low(Duration::from_secs(600))),
            Step::Hold
        );
        // Busy: the remaining connections would be more than half full.
        let busy = demand(3, 3, 150, 0);
        assert!(!busy.is_low());
        // Work ready is never low demand.
        assert!(!demand(3, 3, 0, 1).is_low());
    }
}
