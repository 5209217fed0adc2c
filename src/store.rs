//! Where accepted work is kept: one small trait, [`Store`], and its three
//! implementations, each owning its encoding, its recovery and its keys.
//!
//! - [`memory`]: this process only; nothing outlives it.
//! - [`disk`]: an embedded redb file in `queue.data_dir` (the default): one
//!   gateway survives `kill -9`, OOM kills and deploys with no other service.
//! - [`redis`]: a Redis stream several gateways share.
//!
//! The [`crate::backend::Backend`] above them holds what they share (the
//! admission bound, the scheduler of delayed jobs, the hand-off to the
//! platforms, this gateway's own books) and asks the store only what differs:
//! how a job is kept before its 202, what it held at start, where reports are
//! read from, and what happens to unsent work at shutdown. It never asks
//! which store it has. A store is also an outcome [`Sink`]: it keeps the
//! outcomes it is responsible for.
//!
//! A trait rather than an enum: the three differ in most methods (each is a
//! few lines over its own module), so a `match` per method would be three
//! long arms; boxed futures cost one allocation per request, none per token.

pub mod disk;
mod flights;
pub mod keys;
pub mod memory;
pub mod redis;
pub mod submission;

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::books::{Counters, JobFilter, JobStatus, ListKind};
use crate::job::{Family, JobId, JobProgress, Platform, TokenList};
use crate::outcome::{Recorder, Sink};
use crate::platform::{Built, Handoff, Registry};

pub use keys::{Claim, Fingerprint, Found, IdemKey, KeepIf, Kept, Owner, Taken};
pub use submission::{Planned, Submission};

/// A store's answer, later.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A validated send request, as the API hands it over.
#[derive(Debug)]
pub struct NewJob {
    /// Where it goes.
    pub platform: Platform,
    /// Whose credentials.
    pub app: Arc<str>,
    /// The message as its platform stores it ([`crate::platform`]).
    pub fields: Vec<u8>,
    /// The message as its platform built it, when delivered here.
    pub message: Option<Built>,
    /// The validated, deduplicated tokens (kept form).
    pub tokens: TokenList,
    /// Nothing is sent after this.
    pub expires_at: Option<SystemTime>,
    /// Hold the job this long first (`send_at` / `delay_seconds`).
    pub delay: Option<Duration>,
    /// The sender's correlation id (gorush `notif_id`), shown on the job
    /// status and carried on its webhook events.
    pub notif_id: Option<Arc<str>>,
}

/// Where an admitted job goes next.
#[derive(Debug)]
pub enum Admitted {
    /// This gateway delivers it: counted as accepted here, then handed to its
    /// platform (or held until due). The store built its progress.
    Here(Arc<JobProgress>),
    /// Kept for whichever gateway of the cluster takes it.
    Shared,
}

/// A store could not do what was asked. The detail (with its source) is for
/// the log; a client gets [`StoreError::code`] and a sentence without it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk holding the store (or its quota) is full.
    #[error("the {store} store's disk is full")]
    Full {
        /// The store's name.
        store: &'static str,
        /// What the disk said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The store cannot be reached, read or written now.
    #[error("the {store} store cannot be used now")]
    Unavailable {
        /// The store's name.
        store: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Too few replicas acknowledged the job in time
    /// (`queue.redis_min_replicas`); it was taken back, not accepted.
    #[error("the {store} store could not copy the job to enough replicas in time")]
    Unreplicated {
        /// The store's name.
        store: &'static str,
        /// What the replicas answered and what became of the job.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// The stable error code a client sees.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Full { .. } => "storage_full",
            StoreError::Unavailable { .. } => "queue_unavailable",
            StoreError::Unreplicated { .. } => "queue_unreplicated",
        }
    }

    /// Seconds a client should wait before trying again.
    pub fn retry_after(&self) -> u64 {
        match self {
            StoreError::Full { .. } => 5,
            StoreError::Unavailable { .. } | StoreError::Unreplicated { .. } => 1,
        }
    }

    /// The sentence a client sees (no detail of the store's).
    pub fn client_message(&self) -> &'static str {
        match self {
            StoreError::Full { .. } | StoreError::Unavailable { .. } => {
                "the queue backend cannot keep this job now; nothing was queued. Retry later"
            }
            StoreError::Unreplicated { .. } => {
                "too few Redis replicas acknowledged this job in time (queue.redis_min_replicas); it was not accepted. Retry later"
            }
        }
    }

    /// The error and every source under it, for a log line.
    pub fn detail(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            out.push_str(": ");
            out.push_str(&e.to_string());
            source = e.source();
        }
        out
    }
}

/// Why a job was not admitted. Nothing was queued; the sender may try again.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// `queue.capacity` would be exceeded.
    #[error(
        "the queue holds {pending} of {capacity} tokens; this request's {wanted} do not fit. Retry later"
    )]
    Full {
        /// Tokens pending (or, with redis, about that many queued).
        pending: u64,
        /// `queue.capacity`.
        capacity: u64,
        /// Tokens the request carried.
        wanted: u64,
    },
    /// The store refused the write or cannot be reached.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The submission's idempotency key holds another request's answer (or
    /// another request holds it): nothing was written.
    #[error("the idempotency key is taken by another request")]
    KeyTaken(Taken),
}

/// A job a store held at start, ready to resume.
#[derive(Debug)]
pub struct Resumed {
    /// The job, with the token ranges still to send. Its tokens are empty
    /// when they stayed in the store, to be read back as there is room
    /// ([`Store::reload`]).
    pub handoff: Handoff,
    /// Still to wait before it is due (`send_at`), if any.
    pub wait: Option<Duration>,
    /// Tokens that may have been in flight when the process died: resent,
    /// and counted as possible duplicates.
    pub possible_duplicates: u64,
}

/// What a store held at start, for the backend to rebuild its books from.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Report counters per family and app.
    pub counters: Vec<(Family, String, Counters)>,
    /// Finished jobs, for `GET /jobs/{id}`, oldest first.
    pub finished: Vec<Arc<JobProgress>>,
    /// Unfinished jobs, in admission order.
    pub jobs: Vec<Resumed>,
}

/// Hands work to the platforms: what a store that takes work from elsewhere
/// (the shared stream) is given at start.
#[derive(Clone, Debug)]
pub struct Hand {
    /// The platforms, by platform and app.
    pub registry: Registry,
    /// The outcome fan-out.
    pub recorder: Recorder,
}

impl Hand {
    /// Hands `handoff` to its platform; one that is not configured (or whose
    /// message no longer builds) ends its tokens as failed, so the books
    /// still balance.
    pub fn deliver(&self, handoff: Handoff) {
        self.registry.deliver_or_fail(handoff, &self.recorder);
    }
}

/// Where accepted work is kept. See the module documentation.
pub trait Store: Sink {
    /// `memory`, `disk` or `redis`, for logs, `/readyz` and the status page.
    fn name(&self) -> &'static str;

    /// What becomes of unsent tokens when the process stops now (logged at a
    /// second signal).
    fn fate(&self) -> &'static str;

    /// True when unsent tokens outlive the process (kept for the next start
    /// or for another gateway); false when a shutdown records them expired.
    fn keeps_unsent(&self) -> bool;

    /// Why the store cannot work now, for `/readyz`; `None` when it can.
    fn problem(&self) -> Option<String>;

    /// What the store held at start (asked once).
    fn recover(&self) -> Recovered {
        Recovered::default()
    }

    /// True when the store keeps every token it admitted where
    /// [`Store::reload`] reads it back: memory then holds only a window of
    /// the queue.
    fn reloads(&self) -> bool {
        false
    }

    /// Reads back job `id`'s tokens `range` (a list based at
    /// `range.start`); an error when the store does not hold them all. Only
    /// asked of a store that [`Store::reloads`].
    fn reload(
        &self,
        _id: JobId,
        _range: Range<u32>,
    ) -> StoreFuture<'_, Result<TokenList, StoreError>> {
        Box::pin(async {
            Err(StoreError::Unavailable {
                store: self.name(),
                source: "this store does not keep tokens to read back".into(),
            })
        })
    }

    /// Starts the store's own loops; work it takes from elsewhere goes
    /// through `hand`.
    fn start(&self, _hand: &Hand) -> Result<(), StoreError> {
        Ok(())
    }

    /// Keeps a submission's jobs, their group and their idempotency claim
    /// as durably as the store can, within its bound, in one write: all of
    /// it or none. Once this returns, they survive whatever the store
    /// survives. One [`Admitted`] per job, in order. A claim whose key
    /// already holds an answer (or, with a shared store, another request's
    /// reservation) writes nothing: [`AdmitError::KeyTaken`].
    fn admit<'a>(
        &'a self,
        submission: &'a Submission,
    ) -> StoreFuture<'a, Result<Vec<Admitted>, AdmitError>>;

    /// Opens a job whose tokens arrive in parts (a stream): `job` carries
    /// none. `Admitted::Here` carries its progress, open. A claim is
    /// written with it, as with [`Store::admit`].
    fn open_stream<'a>(
        &'a self,
        id: JobId,
        job: &'a NewJob,
        claim: Option<&'a Claim>,
    ) -> StoreFuture<'a, Result<Admitted, AdmitError>>;

    /// The jobs of group `id` (see [`Submission::group`]), when the store
    /// knows it: it keeps a group `server.job_retention_s` past its last
    /// job's send time.
    fn group(&self, id: JobId) -> StoreFuture<'_, Result<Option<Vec<JobId>>, StoreError>>;

    /// Reads an idempotency key and, when it is free, reserves it for
    /// `owner` (in flight: [`Found::Reserved`]) until the owner's answer is
    /// kept ([`Store::admit`], [`Store::keep`]) or let go
    /// ([`Store::release`]).
    fn reserve<'a>(
        &'a self,
        key: &'a IdemKey,
        owner: Owner,
    ) -> StoreFuture<'a, Result<Found, StoreError>>;

    /// Keeps an answer under `key` when `when` allows; returns whether it
    /// did. Expired answers count as absent.
    fn keep<'a>(
        &'a self,
        key: &'a IdemKey,
        kept: &'a Kept,
        when: KeepIf,
    ) -> StoreFuture<'a, Result<bool, StoreError>>;

    /// Ends `owner`'s reservation of `key` without an answer (the request
    /// failed with a 5xx, or went away); a kept answer is left alone.
    fn release<'a>(&'a self, key: &'a IdemKey, owner: Owner) -> StoreFuture<'a, ()>;

    /// Keeps one part of an open stream (`tokens`, based at the job's index
    /// of its first) as durably as the store can, within its bound; once
    /// this returns, the part survives whatever the store survives.
    /// `AdmitError::Full` means "not now": the caller waits and asks again.
    fn append<'a>(
        &'a self,
        id: JobId,
        job: &'a NewJob,
        tokens: &'a TokenList,
    ) -> StoreFuture<'a, Result<(), AdmitError>>;

    /// Closes an open stream: no more parts come (`truncated`: its stream
    /// was cut before its end).
    fn close_stream(&self, id: JobId, truncated: bool) -> StoreFuture<'_, Result<(), StoreError>>;

    /// A family's app's counters when the store keeps its own; `None` when
    /// this gateway's books are the store's (restored into them at start).
    fn counters<'a>(
        &'a self,
        _family: Family,
        _app: &'a str,
    ) -> Option<StoreFuture<'a, Result<Counters, StoreError>>> {
        None
    }

    /// A drainable list's entries, oldest first; with `drain`, emptied in
    /// the same step (nothing added meanwhile is lost).
    fn list<'a>(
        &'a self,
        family: Family,
        app: &'a str,
        list: ListKind,
        drain: bool,
    ) -> StoreFuture<'a, Result<Vec<Value>, StoreError>>;

    /// A list's size and how many entries it dropped because it was full.
    fn list_stats(&self, family: Family, app: &str, list: ListKind) -> (usize, u64);

    /// A job's status when the store keeps job statuses of its own (any
    /// gateway may deliver a shared job); `None`: this gateway's table.
    fn job<'a>(
        &'a self,
        _id: JobId,
    ) -> Option<StoreFuture<'a, Result<Option<JobStatus>, StoreError>>> {
        None
    }

    /// Up to `limit` jobs `filter` admits, newest first (unfinished ones by
    /// admission, then finished ones by finish time), when the store lists
    /// them itself; `None`: this gateway's job table answers. A store that
    /// lists finished jobs keeps them indexed by finish time, so a list
    /// reads `limit` of them, never all. `server.job_retention_s` bounds
    /// how long a finished job stays listed (and readable).
    fn jobs<'a>(
        &'a self,
        _filter: JobFilter,
        _limit: usize,
    ) -> Option<StoreFuture<'a, Result<Vec<JobStatus>, StoreError>>> {
        None
    }

    /// Records a cancellation before anything else acts on it (on disk, so a
    /// restart does not send what was cancelled; in Redis, for every
    /// gateway). `local` is the job's progress here, if this gateway has it.
    /// Returns whether the store knows the job.
    fn cancel<'a>(
        &'a self,
        id: JobId,
        local: Option<&'a JobProgress>,
    ) -> StoreFuture<'a, Result<bool, StoreError>>;

    /// The drain began: take no more work from elsewhere.
    fn stop_taking(&self) {}

    /// The workers stopped: from now on unsent tokens stay with the store
    /// (for another gateway) instead of being recorded.
    fn detach(&self) {}

    /// Writes what the store still buffers and closes it (at shutdown).
    fn close(&self) -> StoreFuture<'_, ()>;

    /// The gateways sharing the store (`GET /cluster`); `None` when the
    /// store is not shared.
    fn cluster_view(&self) -> Option<StoreFuture<'_, Result<Value, StoreError>>> {
        None
    }
}
