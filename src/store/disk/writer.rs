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
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::oneshot;

use super::fault::FaultyFile;
use super::finished::{self, FINISHED};
use super::format::{JobRecord, JobState, decode_counters, encode_counters};
use super::{Buffer, ListStats, Shared, WriteError};
use crate::books::Counters;
use crate::floor::{lock, now_ms};
use crate::job::{JobProgress, TokenList};

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

/// A request to the writer.
pub(super) enum Op {
    /// Store a job and count it accepted.
    Admit {
        id: u128,
        /// The message and its settings; the tokens are in `parts`.
        record: Vec<u8>,
        /// The tokens as `TOKENS` rows: (the job's index of the row's first
        /// token, [`super::format::encode_tokens`] of the row).
        parts: Vec<(u32, Vec<u8>)>,
        /// Boxed: with its `notif_id` it is the largest variant by far.
        state: Box<JobState>,
        progress: Arc<JobProgress>,
        counters_key: String,
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    /// Watch a recovered job's lease, and store the one it starts this run with.
    Attach {
        id: u128,
        progress: Arc<JobProgress>,
        lease: u32,
    },
    /// Keep one part of an open stream's tokens and count them accepted.
    Append {
        id: u128,
        /// The part as `TOKENS` rows ([`super::format::token_rows`]).
        rows: Vec<(u32, Vec<u8>)>,
        /// Tokens in the part.
        n: u64,
        counters_key: String,
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    /// End a stream: no more parts (`truncated`: it was cut).
    Close {
        id: u128,
        truncated: bool,
        reply: Option<oneshot::Sender<Result<(), WriteError>>>,
    },
    /// Mark a job cancelled.
    Cancel {
        id: u128,
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    /// Read a list (and with `drain`, empty it in the same commit).
    List {
        key: String,
        drain: bool,
        reply: oneshot::Sender<Result<Vec<Vec<u8>>, WriteError>>,
    },
    /// Commit whatever is buffered now.
    Flush {
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    /// Read the newest finished jobs (no commit needed).
    Finished {
        limit: usize,
        reply: oneshot::Sender<Result<Vec<finished::FinishedJob>, WriteError>>,
    },
    /// Read back a job's tokens `range` (no commit needed).
    Tokens {
        id: u128,
        range: Range<u32>,
        reply: oneshot::Sender<Result<TokenList, WriteError>>,
    },
}

/// One list's bookkeeping: rows `first..next`, `dropped` since the start.
#[derive(Debug, Clone, Copy, Default)]
struct ListMeta {
    first: u64,
    next: u64,
    dropped: u64,
}

/// The writer's view of the file. Rebuilt from the file after any failure.
#[derive(Default)]
struct View {
    /// Unfinished jobs.
    jobs: HashMap<u128, JobState>,
    /// Finished jobs an older gateway left without a key in [`FINISHED`]:
    /// indexed (as finished now) by the next commit.
    unindexed: Vec<u128>,
    /// When the oldest indexed finished job finished, as of the last commit.
    oldest_finished: Option<u64>,
    lists: HashMap<String, ListMeta>,
    next_seq: u64,
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

    /// True when the next commit has finished jobs to index or to expire.
    fn upkeep_due(&self) -> bool {
        match &self.view {
            Some(v) => {
                !v.unindexed.is_empty() || v.oldest_finished.is_some_and(|t| t < self.cutoff())
            }
            // At start the view is loaded at once, so an idle gateway still
            // expires what it holds. After a failed commit (no database)
            // the next commit a request needs reloads it: no retry loop.
            None => self.db.is_some(),
        }
    }

    fn turn(&mut self, batch: Vec<Op>) {
        let (reads, batch): (Vec<Op>, Vec<Op>) = batch
            .into_iter()
            .partition(|op| matches!(op, Op::Finished { .. } | Op::Tokens { .. }));
        self.turn_writes(batch);
        // The file as the last commit left it; after a failed commit the
        // next commit reopens it, not a read.
        let unreadable = || WriteError::Io("the disk store cannot be read now".into());
        for op in reads {
            match op {
                Op::Finished { limit, reply } => {
                    let read = match &self.db {
                        Some(db) => finished::newest(db, limit),
                        None => Err(unreadable()),
                    };
                    let _ = reply.send(read);
                }
                Op::Tokens { id, range, reply } => {
                    let read = match &self.db {
                        Some(db) => read_tokens(db, id, range),
                        None => Err(unreadable()),
                    };
                    let _ = reply.send(read);
                }
                _ => {}
            }
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
            Ok(lists) => {
                self.shared.healthy.store(true, Ordering::Release);
                for (id, lease) in leases {
                    if let Some(p) = self.progress.get(&id) {
                        p.extend_lease(lease);
                    }
                }
                let mut lists = lists.into_iter();
                for op in batch {
                    match op {
                        Op::Admit {
                            id,
                            progress,
                            reply,
                            ..
                        } => {
                            self.progress.insert(id, progress);
                            let _ = reply.send(Ok(()));
                        }
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
                        Op::Attach { .. } | Op::Finished { .. } | Op::Tokens { .. } => {}
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
                    match op {
                        Op::Admit { reply, .. }
                        | Op::Cancel { reply, .. }
                        | Op::Flush { reply }
                        | Op::Append { reply, .. } => {
                            let _ = reply.send(Err(e.clone()));
                        }
                        Op::Close { reply, .. } => {
                            if let Some(reply) = reply {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                        Op::List { reply, .. } => {
                            let _ = reply.send(Err(e.clone()));
                        }
                        Op::Attach { .. } | Op::Finished { .. } | Op::Tokens { .. } => {}
                    }
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
                let (handed, lease) = (p.handed(), p.lease());
                (handed > 0 && handed.saturating_add(LEASE_AHEAD / 2) > lease)
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

    /// One write transaction for the turn; returns the rows each `List` read.
    // redb's own error type, on the rare path: not worth boxing.
    #[allow(clippy::result_large_err)]
    fn commit(
        &mut self,
        batch: &[Op],
        taken: &Buffer,
        leases: &[(u128, u32)],
    ) -> Result<Vec<Vec<Vec<u8>>>, WriteError> {
        let (max_list, max_jobs) = (self.max_list as u64, self.max_jobs as u64);
        let (now, cutoff) = (now_ms(), self.cutoff());
        let mut view = match self.view.take() {
            Some(v) => v,
            None => load_view(self.database()?)?,
        };
        let db = self.database()?;
        let result = (|| -> Result<Vec<Vec<Vec<u8>>>, redb::Error> {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate);
            let mut reads = Vec::new();
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
                // Admissions first: a job and its acceptance in one commit.
                for op in batch {
                    if let Op::Admit {
                        id,
                        record,
                        parts: rows,
                        state,
                        counters_key,
                        ..
                    } = op
                    {
                        jobs.insert(*id, record.as_slice())?;
                        for (base, row) in rows {
                            parts.insert((*id, *base), row.as_slice())?;
                        }
                        let mut state = JobState::clone(state);
                        state.seq = view.next_seq;
                        view.next_seq += 1;
                        deltas.entry(counters_key.clone()).or_default().accepted += state.total;
                        view.jobs.insert(*id, state);
                        touched.push(*id);
                    }
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
            Ok(reads)
        })();
        match result {
            Ok(reads) => {
                self.view = Some(view);
                Ok(reads)
            }
            Err(e) => Err(WriteError::from_redb(&e)),
        }
    }
}

/// Rebuilds the writer's view from the file.
fn load_view(db: &Database) -> Result<View, WriteError> {
    let err = |e: redb::Error| WriteError::from_redb(&e);
    let txn = db.begin_read().map_err(|e| err(e.into()))?;
    let mut view = View::default();
    let indexed = finished::all(&txn)?;
    view.oldest_finished = indexed.first().map(|(at, _)| *at);
    let indexed = finished::ids(&indexed);
    if let Ok(states) = txn.open_table(STATES) {
        for row in states.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            let Some(state) = JobState::decode(v.value()) else {
                continue;
            };
            view.next_seq = view.next_seq.max(state.seq + 1);
            if !state.finished() {
                view.jobs.insert(k.value(), state);
            } else if !indexed.contains(&k.value()) {
                view.unindexed.push(k.value());
            }
        }
    }
    if let Ok(lists) = txn.open_table(LISTS) {
        for row in lists.iter().map_err(|e| err(e.into()))? {
            let (k, _) = row.map_err(|e| err(e.into()))?;
            let (key, seq) = k.value();
            let meta = view.lists.entry(key.to_owned()).or_insert(ListMeta {
                first: seq,
                next: seq,
                dropped: 0,
            });
            meta.first = meta.first.min(seq);
            meta.next = meta.next.max(seq + 1);
        }
    }
    if let Ok(dropped) = txn.open_table(DROPPED) {
        for row in dropped.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            view.lists.entry(k.value().to_owned()).or_default().dropped = v.value();
        }
    }
    Ok(view)
}

/// What the file holds at start, for the backend to rebuild its books.
pub(super) fn recover(db: &Database) -> Result<super::Rows, WriteError> {
    let err = |e: redb::Error| WriteError::from_redb(&e);
    let view = load_view(db)?;
    let txn = db.begin_read().map_err(|e| err(e.into()))?;
    let mut out = super::Rows::default();
    if let Ok(counters) = txn.open_table(COUNTERS) {
        for row in counters.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            if let Some(c) = decode_counters(v.value()) {
                out.counters.push((k.value().to_owned(), c));
            }
        }
    }
    // Only the jobs' records: their tokens stay on disk until the queue's
    // window reads them back (an older gateway's records hold theirs).
    let jobs = txn.open_table(JOBS).ok();
    let mut skipped = 0usize;
    // Finished jobs by finish time; ones an older gateway left unindexed
    // count as finished now (the next commit indexes them so).
    let finished_at: HashMap<u128, u64> = finished::all(&txn)?
        .into_iter()
        .map(|(at, id)| (id, at))
        .collect();
    if let Ok(states) = txn.open_table(STATES) {
        out.rows = states.len().unwrap_or(0);
        for row in states.iter().map_err(|e| err(e.into()))? {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            let id = k.value();
            let Some(state) = JobState::decode(v.value()) else {
                skipped += 1;
                continue;
            };
            if state.finished() {
                let at = finished_at.get(&id).copied().unwrap_or_else(now_ms);
                out.finished.push((id, state, at));
                continue;
            }
            let record = jobs
                .as_ref()
                .and_then(|t| t.get(id).ok().flatten())
                .and_then(|v| JobRecord::decode(v.value()));
            match record {
                Some(record) => out.jobs.push((id, state, record)),
                None => skipped += 1,
            }
        }
    }
    if skipped > 0 {
        tracing::error!(
            jobs = skipped,
            "stored jobs that cannot be read (written by another version?) were skipped"
        );
    }
    out.finished.sort_by_key(|(id, _, at)| (*at, *id));
    out.jobs.sort_by_key(|(_, s, _)| s.seq);
    let _ = view;
    Ok(out)
}

/// Job `id`'s tokens `range`, from its `TOKENS` rows (the row holding the
/// first and the ones after it) or, for a job an older gateway admitted,
/// its record.
fn read_tokens(db: &Database, id: u128, range: Range<u32>) -> Result<TokenList, WriteError> {
    let err = |e: redb::Error| WriteError::from_redb(&e);
    let txn = db.begin_read().map_err(|e| err(e.into()))?;
    let mut out = TokenList::with_capacity(range.len(), 64).with_base(range.start);
    let mut next = range.start;
    if let Ok(parts) = txn.open_table(TOKENS) {
        // The row holding token `range.start` starts at or before it.
        let first = parts
            .range((id, 0)..=(id, range.start))
            .map_err(|e| err(e.into()))?
            .next_back()
            .transpose()
            .map_err(|e| err(e.into()))?
            .map_or(range.start, |(k, _)| k.value().1);
        let rows = parts
            .range((id, first)..(id, range.end))
            .map_err(|e| err(e.into()))?;
        for row in rows {
            let (k, v) = row.map_err(|e| err(e.into()))?;
            let Some(part) = super::format::decode_tokens(v.value()) else {
                continue;
            };
            let part = part.with_base(k.value().1);
            let stop = range.end.min(part.range().end);
            while next < stop && next >= part.base() {
                out.push(part.get(next));
                next += 1;
            }
        }
    }
    if next < range.end
        && let Some(record) = txn
            .open_table(JOBS)
            .ok()
            .and_then(|t| t.get(id).ok().flatten())
            .and_then(|v| JobRecord::decode(v.value()))
        && record.tokens.range().end >= range.end
    {
        while next < range.end {
            out.push(record.tokens.get(next));
            next += 1;
        }
    }
    if next < range.end {
        return Err(WriteError::Io(format!(
            "job {}: tokens {next}..{} are not in the store",
            crate::job::JobId::from_u128(id),
            range.end
        )));
    }
    Ok(out)
}
