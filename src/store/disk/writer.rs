//! The one writer: a thread that owns the redb file and commits in batches.
//!
//! Each turn takes every request waiting (admissions, cancels, list reads
//! and drains, flushes) plus every buffered outcome, writes them in one
//! write transaction and commits it with `Durability::Immediate` (one
//! fsync); only then are the requests answered. Sends that arrive while a
//! commit is in flight wait for the next one, so concurrent sends share one
//! fsync (group commit). With nothing asked, a turn runs every
//! [`FLUSH_EVERY`] to write outcomes and raise leases.
//!
//! A failed commit (disk full, I/O error) changes nothing on disk; the
//! writer forgets its in-memory view, puts the outcomes back in the buffer,
//! answers the requests with the error, and on the next turn reopens the
//! file and reloads its view from what is there.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableTable, TableDefinition};

use super::fault::FaultyFile;
use super::finished::{self, FINISHED};
use super::format::{JobState, decode_counters, encode_counters};
use super::keys::Tables as KeyTables;
use super::load::load_view;
use super::ops::{Op, Refused};
use super::{Buffer, ListStats, Shared, WriteError};
use crate::books::Counters;
use crate::floor::{lock, now_ms};
use crate::job::JobProgress;
use crate::store::keys::Taken;

/// Jobs as admitted (message and settings; an older gateway's rows hold the
/// tokens too), until their last token finishes.
pub(super) const JOBS: TableDefinition<u128, &[u8]> = TableDefinition::new("jobs");
/// Job progress (counts, bitmap, lease), kept after the job for `GET /jobs/{id}`
/// (indexed by finish time in [`FINISHED`]).
pub(super) const STATES: TableDefinition<u128, &[u8]> = TableDefinition::new("states");
/// Jobs' tokens in rows of about [`super::format::ROW_BYTES`], by (job, the
/// job's index of the row's first token), until their job finishes: the
/// queue is read back from here a part at a time.
pub(super) const TOKENS: TableDefinition<(u128, u32), &[u8]> = TableDefinition::new("tokens");
/// Report counters by `family/app`.
pub(super) const COUNTERS: TableDefinition<&str, &[u8]> = TableDefinition::new("counters");
/// Report list entries by `(family/app/list, seq)`, JSON.
pub(super) const LISTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("lists");
/// Entries each list dropped because it was full, by `family/app/list`.
pub(super) const DROPPED: TableDefinition<&str, u64> = TableDefinition::new("dropped");

/// How often buffered outcomes are written when nothing else asks.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// How far past the tokens handed out a running job's lease reaches at least.
pub const LEASE_AHEAD: u32 = 4096;
/// The lease of a job no worker has reached yet (admitted, or recovered:
/// counted from its first unfinished token). Small, so a crash counts few
/// possible duplicates for jobs still waiting their turn.
pub const LEASE_START: u32 = 1024;

/// What a commit gives the requests of its batch.
struct Committed {
    /// The rows each `List` read, in order.
    lists: Vec<Vec<Vec<u8>>>,
    /// Admissions (by their place in the batch) whose key was taken.
    refused: HashMap<usize, Taken>,
    /// Whether each `Keep` wrote its answer, in order.
    kept: Vec<bool>,
}

/// The earlier of an expiry so far and another.
fn earliest(so_far: Option<u64>, at: u64) -> Option<u64> {
    Some(so_far.map_or(at, |t| t.min(at)))
}

/// One list's bookkeeping: rows `first..next`, `dropped` since the start.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ListMeta {
    pub(super) first: u64,
    pub(super) next: u64,
    pub(super) dropped: u64,
}

/// The writer's view of the file. Rebuilt from the file after any failure.
#[derive(Default)]
pub(super) struct View {
    /// Unfinished jobs.
    pub(super) jobs: HashMap<u128, JobState>,
    /// Finished jobs an older gateway left without a key in [`FINISHED`]:
    /// indexed (as finished now) by the next commit.
    pub(super) unindexed: Vec<u128>,
    /// When the oldest indexed finished job finished, as of the last commit.
    pub(super) oldest_finished: Option<u64>,
    /// When the oldest kept answer or group expires, as of the last commit.
    pub(super) oldest_expiry: Option<u64>,
    pub(super) lists: HashMap<String, ListMeta>,
    pub(super) next_seq: u64,
}

pub(super) struct WriterThread {
    pub path: PathBuf,
    pub faults: Option<PathBuf>,
    pub db: Option<Database>,
    pub max_list: usize,
    pub max_jobs: usize,
    /// `server.job_retention_s`, in ms.
    pub retention_ms: u64,
    pub shared: Arc<Shared>,
    view: Option<View>,
    /// Live jobs' progress, for leases.
    progress: HashMap<u128, Arc<JobProgress>>,
    last_error_log: Option<Instant>,
}

/// Opens (or creates) the file through the fault hook.
pub(super) fn open_db(
    path: &PathBuf,
    faults: &Option<PathBuf>,
) -> Result<Database, redb::DatabaseError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let backend = FaultyFile::new(file, faults.clone())?;
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create_with_backend(backend)
}

/// redb's page cache. Its default (1 GiB) lets the gateway's memory grow
/// with the file; pages past this are read back through the OS's page
/// cache instead, which the writer rarely needs (it appends jobs and
/// outcomes and reads back only at start).
const CACHE_BYTES: usize = 16 * 1024 * 1024;

impl WriterThread {
    pub(super) fn new(
        path: PathBuf,
        faults: Option<PathBuf>,
        db: Database,
        max_list: usize,
        max_jobs: usize,
        retention: Duration,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            path,
            faults,
            db: Some(db),
            max_list: max_list.max(1),
            max_jobs: max_jobs.max(1),
            retention_ms: u64::try_from(retention.as_millis()).unwrap_or(u64::MAX),
            shared,
            view: None,
            progress: HashMap::new(),
            last_error_log: None,
        }
    }

    /// Runs until every sender is gone, then commits what is left.
    pub(super) fn run(mut self, ops: Receiver<Op>) {
        loop {
            let mut batch = Vec::new();
            let closed = match ops.recv_timeout(FLUSH_EVERY) {
                Ok(op) => {
                    batch.push(op);
                    false
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            while batch.len() < 10_000 {
                match ops.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            self.turn(batch);
            if closed {
                // One last turn for outcomes buffered after the last request.
                self.turn(Vec::new());
                return;
            }
        }
    }

    /// Finished jobs that finished before this (ms) have expired.
    fn cutoff(&self) -> u64 {
        now_ms().saturating_sub(self.retention_ms)
    }

    /// True when the next commit has finished jobs to index or to expire,
    /// or kept answers and groups to expire.
    fn upkeep_due(&self) -> bool {
        match &self.view {
            Some(v) => {
                !v.unindexed.is_empty()
                    || v.oldest_finished.is_some_and(|t| t < self.cutoff())
                    || v.oldest_expiry.is_some_and(|t| t <= now_ms())
            }
            // At start the view is loaded at once, so an idle gateway still
            // expires what it holds. After a failed commit (no database)
            // the next commit a request needs reloads it: no retry loop.
            None => self.db.is_some(),
        }
    }

    fn turn(&mut self, batch: Vec<Op>) {
        let (reads, batch): (Vec<Op>, Vec<Op>) = batch.into_iter().partition(Op::is_read);
        self.turn_writes(batch);
        // The file as the last commit left it; after a failed commit the
        // next commit reopens it, not a read.
        let now = now_ms();
        for op in reads {
            op.answer_read(self.db.as_ref(), now);
        }
    }

    fn turn_writes(&mut self, batch: Vec<Op>) {
        for op in &batch {
            if let Op::Attach { id, progress, .. } = op {
                self.progress.insert(*id, progress.clone());
            }
        }
        let taken = std::mem::take(&mut *lock(&self.shared.buffer));
        let leases = self.leases_due();
        let needed =
            !batch.is_empty() || !taken.is_empty() || !leases.is_empty() || self.upkeep_due();
        if !needed {
            return;
        }
        match self.commit(&batch, &taken, &leases) {
            Ok(done) => {
                self.shared.healthy.store(true, Ordering::Release);
                for (id, lease) in leases {
                    if let Some(p) = self.progress.get(&id) {
                        p.extend_lease(lease);
                    }
                }
                let Committed {
                    lists,
                    mut refused,
                    kept,
                } = done;
                let mut lists = lists.into_iter();
                let mut kept = kept.into_iter();
                for (i, op) in batch.into_iter().enumerate() {
                    match op {
                        Op::Admit { jobs, reply, .. } => match refused.remove(&i) {
                            Some(taken) => {
                                let _ = reply.send(Err(Refused::Taken(taken)));
                            }
                            None => {
                                for row in jobs {
                                    self.progress.insert(row.id, row.progress);
                                }
                                let _ = reply.send(Ok(()));
                            }
                        },
                        Op::Cancel { reply, .. }
                        | Op::Flush { reply }
                        | Op::Append { reply, .. } => {
                            let _ = reply.send(Ok(()));
                        }
                        Op::Close { reply, .. } => {
                            if let Some(reply) = reply {
                                let _ = reply.send(Ok(()));
                            }
                        }
                        Op::List { reply, .. } => {
                            let _ = reply.send(Ok(lists.next().unwrap_or_default()));
                        }
                        Op::Keep { reply, .. } => {
                            let _ = reply.send(Ok(kept.next().unwrap_or(false)));
                        }
                        Op::Attach { .. }
                        | Op::Raise
                        | Op::Finished { .. }
                        | Op::Answer { .. }
                        | Op::Group { .. }
                        | Op::Tokens { .. } => {}
                    }
                }
                self.forget_finished();
                self.publish_stats();
            }
            Err(e) => {
                self.shared.healthy.store(false, Ordering::Release);
                let now = Instant::now();
                if self
                    .last_error_log
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
                {
                    tracing::error!(error = %e, data_dir = %self.path.display(), "the disk store cannot commit; sends answer 503 and outcomes stay buffered until it can");
                    self.last_error_log = Some(now);
                }
                // Nothing of this turn is on disk: keep the outcomes, drop
                // the view (rebuilt from the file next turn), answer the error.
                lock(&self.shared.buffer).absorb(taken);
                self.view = None;
                self.db = None;
                for op in batch {
                    op.fail(&e);
                }
            }
        }
    }

    /// Jobs whose workers are close to their lease: the new lease for each.
    fn leases_due(&self) -> Vec<(u128, u32)> {
        self.progress
            .iter()
            .filter_map(|(id, p)| {
                // A job no worker has reached keeps its start lease.
                let handed = p.handed();
                p.near_lease()
                    .then(|| (*id, handed.saturating_add(LEASE_AHEAD.max(handed / 4))))
            })
            .collect()
    }

    fn forget_finished(&mut self) {
        if let Some(view) = &self.view {
            self.progress.retain(|id, _| view.jobs.contains_key(id));
        }
    }

    fn publish_stats(&self) {
        if let Some(view) = &self.view {
            let stats: HashMap<String, ListStats> = view
                .lists
                .iter()
                .map(|(k, m)| {
                    (
                        k.clone(),
                        ListStats {
                            size: usize::try_from(m.next - m.first).unwrap_or(usize::MAX),
                            dropped: m.dropped,
                        },
                    )
                })
                .collect();
            *lock(&self.shared.lists) = stats;
        }
    }

    fn database(&mut self) -> Result<&Database, WriteError> {
        if self.db.is_none() {
            let db =
                open_db(&self.path, &self.faults).map_err(|e| WriteError::from_redb(&e.into()))?;
            tracing::info!(data_dir = %self.path.display(), "disk store reopened");
            self.db = Some(db);
        }
        self.db
            .as_ref()
            .ok_or_else(|| WriteError::Io("no database".into()))
    }

    /// One write transaction for the turn; returns what the requests of
    /// the batch get (see [`Committed`]).
    // redb's own error type, on the rare path: not worth boxing.
    #[allow(clippy::result_large_err)]
    fn commit(
        &mut self,
        batch: &[Op],
        taken: &Buffer,
        leases: &[(u128, u32)],
    ) -> Result<Committed, WriteError> {
        let (max_list, max_jobs) = (self.max_list as u64, self.max_jobs as u64);
        let (now, cutoff) = (now_ms(), self.cutoff());
        let mut view = match self.view.take() {
            Some(v) => v,
            None => load_view(self.database()?)?,
        };
        let db = self.database()?;
        let result = (|| -> Result<Committed, redb::Error> {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate);
            let mut reads = Vec::new();
            let mut refused = HashMap::new();
            let mut kept_answers = Vec::new();
            {
                let mut jobs = txn.open_table(JOBS)?;
                let mut parts = txn.open_table(TOKENS)?;
                let mut states = txn.open_table(STATES)?;
                let mut counters = txn.open_table(COUNTERS)?;
                let mut lists = txn.open_table(LISTS)?;
                let mut dropped = txn.open_table(DROPPED)?;
                let mut done = txn.open_table(FINISHED)?;
                let mut touched: Vec<u128> = Vec::new();
                let mut deltas: HashMap<String, Counters> = taken.counters.clone();
                let mut keys = KeyTables::open(&txn)?;
                let mut expiring: Option<u64> = None;
                // Admissions first: a job, its acceptance, its group and its
                // idempotency key in one commit; a claim whose key holds an
                // answer (kept before, or earlier in this very batch) writes
                // nothing of its submission.
                for (i, op) in batch.iter().enumerate() {
                    let Op::Admit {
                        jobs: rows,
                        group,
                        claim,
                        ..
                    } = op
                    else {
                        continue;
                    };
                    if let Some((key, kept)) = claim {
                        if let Err(taken) = keys.claim(key, kept, now)? {
                            refused.insert(i, taken);
                            continue;
                        }
                        expiring = earliest(expiring, kept.expires_at_ms);
                    }
                    for row in rows {
                        jobs.insert(row.id, row.record.as_slice())?;
                        for (base, part) in &row.parts {
                            parts.insert((row.id, *base), part.as_slice())?;
                        }
                        let mut state = JobState::clone(&row.state);
                        state.seq = view.next_seq;
                        view.next_seq += 1;
                        deltas.entry(row.counters_key.clone()).or_default().accepted += state.total;
                        view.jobs.insert(row.id, state);
                        touched.push(row.id);
                    }
                    if let Some((id, members, expires)) = group {
                        keys.group(*id, members, *expires)?;
                        expiring = earliest(expiring, *expires);
                    }
                }
                for op in batch {
                    if let Op::Keep {
                        key, kept, when, ..
                    } = op
                    {
                        let wrote = keys.keep(key, kept, *when, now)?;
                        if wrote {
                            expiring = earliest(expiring, kept.expires_at_ms);
                        }
                        kept_answers.push(wrote);
                    }
                }
                if view.oldest_expiry.is_some_and(|t| t <= now) {
                    view.oldest_expiry = keys.purge(now)?;
                }
                if let Some(at) = expiring {
                    view.oldest_expiry = Some(view.oldest_expiry.map_or(at, |o| o.min(at)));
                }
                // A stream's parts after its admission, before their outcomes.
                for op in batch {
                    match op {
                        Op::Append {
                            id,
                            rows,
                            n,
                            counters_key,
                            ..
                        } => {
                            if let Some(state) = view.jobs.get_mut(id) {
                                for (base, row) in rows {
                                    parts.insert((*id, *base), row.as_slice())?;
                                }
                                state.total += n;
                                deltas.entry(counters_key.clone()).or_default().accepted += n;
                                touched.push(*id);
                            }
                        }
                        Op::Close { id, truncated, .. } => {
                            if let Some(state) = view.jobs.get_mut(id) {
                                state.open = false;
                                state.truncated |= *truncated;
                                touched.push(*id);
                            }
                        }
                        _ => {}
                    }
                }
                for (id, index, kind) in &taken.outcomes {
                    if let Some(state) = view.jobs.get_mut(id)
                        && state.set(*index)
                    {
                        state.counts[*kind as usize] += 1;
                        touched.push(*id);
                    }
                }
                for op in batch {
                    if let Op::Cancel { id, .. } = op
                        && let Some(state) = view.jobs.get_mut(id)
                    {
                        state.cancelled = true;
                        touched.push(*id);
                    }
                }
                for (id, lease) in leases {
                    if let Some(state) = view.jobs.get_mut(id) {
                        state.lease = state.lease.max(*lease);
                        touched.push(*id);
                    }
                }
                for op in batch {
                    // A recovered job starts this run with a new lease: it
                    // bounds what this run hands out (and may be lower than
                    // the last run's, whose tokens were counted at recovery).
                    if let Op::Attach { id, lease, .. } = op
                        && let Some(state) = view.jobs.get_mut(id)
                    {
                        state.lease = *lease;
                        touched.push(*id);
                    }
                }
                touched.sort_unstable();
                touched.dedup();
                for id in touched {
                    let Some(finished) = view.jobs.get(&id).map(JobState::finished) else {
                        continue;
                    };
                    if finished && let Some(mut state) = view.jobs.remove(&id) {
                        // Its tokens and message go; a small status stays,
                        // indexed by when it finished.
                        state.bits = Vec::new();
                        jobs.remove(id)?;
                        parts.retain_in((id, 0)..=(id, u32::MAX), |_, _| false)?;
                        states.insert(id, state.encode().as_slice())?;
                        finished::index(&mut done, now, id)?;
                    } else if let Some(state) = view.jobs.get(&id) {
                        states.insert(id, state.encode().as_slice())?;
                    }
                }
                for id in std::mem::take(&mut view.unindexed) {
                    finished::index(&mut done, now, id)?;
                }
                finished::trim(&mut done, &mut states, max_jobs)?;
                if view.oldest_finished.is_some_and(|t| t < cutoff) {
                    finished::purge(&mut done, &mut states, cutoff)?;
                }
                view.oldest_finished = finished::oldest(&done)?;
                for (key, delta) in &deltas {
                    let mut c = counters
                        .get(key.as_str())?
                        .and_then(|v| decode_counters(v.value()))
                        .unwrap_or_default();
                    c.add_all(delta);
                    counters.insert(key.as_str(), encode_counters(&c).as_slice())?;
                }
                for (key, entry) in &taken.lists {
                    let meta = view.lists.entry(key.clone()).or_default();
                    lists.insert((key.as_str(), meta.next), entry.as_slice())?;
                    meta.next += 1;
                    while meta.next - meta.first > max_list {
                        lists.remove((key.as_str(), meta.first))?;
                        meta.first += 1;
                        meta.dropped += 1;
                        dropped.insert(key.as_str(), meta.dropped)?;
                    }
                }
                for op in batch {
                    if let Op::List { key, drain, .. } = op {
                        let meta = view.lists.get(key).copied().unwrap_or_default();
                        let mut rows = Vec::new();
                        for row in
                            lists.range((key.as_str(), meta.first)..(key.as_str(), meta.next))?
                        {
                            let (_, v) = row?;
                            rows.push(v.value().to_vec());
                        }
                        if *drain {
                            for seq in meta.first..meta.next {
                                lists.remove((key.as_str(), seq))?;
                            }
                            if let Some(m) = view.lists.get_mut(key) {
                                m.first = m.next;
                            }
                        }
                        reads.push(rows);
                    }
                }
            }
            txn.commit()?;
            Ok(Committed {
                lists: reads,
                refused,
                kept: kept_answers,
            })
        })();
        match result {
            Ok(done) => {
                self.view = Some(view);
                Ok(done)
            }
            Err(e) => Err(WriteError::from_redb(&e)),
        }
    }
}
