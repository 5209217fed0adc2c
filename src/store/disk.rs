//! The `disk` backend's store: one redb file in `queue.data_dir`, so a
//! single gateway survives `kill -9`, OOM kills and deploys with no
//! external service.
//!
//! - A job is one row (its message), its tokens rows of 256 KiB (read back
//!   a part at a time: memory holds a window of the queue, not all of it),
//!   its progress another row (counts, one bit per token, a lease); never
//!   one row per token. Written before the 202, in a commit shared with every send
//!   that arrived meanwhile ([`writer`]: group commit, one fsync).
//! - Outcomes are buffered by the store's outcome sink and written every
//!   [`writer::FLUSH_EVERY`] with the counters and list entries they change,
//!   in one commit: after a restart a token is finished on disk or resent,
//!   never both, and the books balance at every commit.
//! - Leases: a worker may only be handed tokens below the job's lease,
//!   which each commit raises ahead of the workers. After a crash, the
//!   unfinished tokens below the lease are the ones that may have been in
//!   flight: they are resent and counted in `possible_duplicates`.
//! - A finished job's rows go (a small status stays for `GET /jobs/{id}`
//!   and `GET /jobs`, indexed by finish time in [`finished`]: the newest
//!   `report.max_jobs` of them, none older than `server.job_retention_s`),
//!   and redb reuses the freed pages.
//! - The file is locked (redb's flock): a second gateway on the same
//!   directory is refused at start.
//!
//! [`format`] holds the row formats, [`finished`] the finish-time index,
//! [`fault`] the disk-full test hook.

pub mod fault;
// redb's own error type, on the rare path: not worth boxing (as in the writer).
#[allow(clippy::result_large_err)]
mod finished;
pub mod format;
#[allow(clippy::result_large_err)]
mod keys;
#[allow(clippy::result_large_err)]
mod load;
mod ops;
mod resume;
mod seam;
#[cfg(test)]
mod tests;
pub mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::books::{Counters, JobStatus, ListKind, Posting};
use crate::floor::{lock, now_ms};
use crate::job::{Catalog, Family, JobId, JobProgress, OutcomeKind};
use crate::outcome::{Finished, Sink};
use crate::queue::Admission;
use crate::store::StoreError;
use crate::store::flights::Flights;
use crate::store::keys::Claim;

use self::format::{JobRecord, JobState};
use self::ops::{NewRow, Op, Refused};
use self::writer::WriterThread;

/// The store's file inside `queue.data_dir`.
pub const FILE_NAME: &str = "pushgate.redb";

/// The store could not start.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The directory cannot be created.
    #[error(
        "queue.data_dir = {dir:?}: cannot create the directory: {source}. Create it (and give the gateway's user write access), or point queue.data_dir (PUSHGATE_QUEUE_DATA_DIR) elsewhere"
    )]
    NotCreatable {
        /// `queue.data_dir`.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The directory exists but cannot be written.
    #[error(
        "queue.data_dir = {dir:?}: not writable: {source}. Give the gateway's user write access to it, or point queue.data_dir (PUSHGATE_QUEUE_DATA_DIR) elsewhere"
    )]
    NotWritable {
        /// `queue.data_dir`.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another gateway holds the directory.
    #[error(
        "queue.data_dir = {dir:?} is in use by another gateway (its store is locked). Give each gateway its own data_dir, or use queue.backend = \"redis\" to share one queue"
    )]
    Locked {
        /// `queue.data_dir`.
        dir: PathBuf,
    },
    /// The store cannot be opened or read.
    #[error("queue.data_dir = {dir:?}: cannot open the store: {reason}")]
    Open {
        /// `queue.data_dir`.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A write the store could not commit (cloned to every request of the
/// commit that failed).
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The disk (or its quota) is full.
    #[error("the disk holding queue.data_dir is full: {0}")]
    Full(String),
    /// Any other I/O or store error.
    #[error("the disk store cannot write: {0}")]
    Io(String),
}

impl WriteError {
    fn from_redb(e: &redb::Error) -> Self {
        let full = match e {
            redb::Error::Io(io) => io.raw_os_error() == Some(28) || io.raw_os_error() == Some(122),
            _ => false,
        };
        if full {
            WriteError::Full(e.to_string())
        } else {
            WriteError::Io(e.to_string())
        }
    }
}

/// A list's size and drops, as the writer last committed them.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListStats {
    /// Entries held.
    pub size: usize,
    /// Entries dropped because the list was full.
    pub dropped: u64,
}

/// Outcomes not yet written, filled by the sink, taken by the writer.
#[derive(Debug, Default)]
pub(crate) struct Buffer {
    /// `(job, token index, outcome kind)`.
    outcomes: Vec<(u128, u32, OutcomeKind)>,
    /// Counter increments by `family/app`.
    counters: HashMap<String, Counters>,
    /// List entries (JSON) by `family/app/list`, in order.
    lists: Vec<(String, Vec<u8>)>,
}

impl Buffer {
    fn is_empty(&self) -> bool {
        self.outcomes.is_empty() && self.counters.is_empty() && self.lists.is_empty()
    }

    /// Puts back what a failed commit took, ahead of anything newer.
    fn absorb(&mut self, mut older: Buffer) {
        older.outcomes.append(&mut self.outcomes);
        self.outcomes = older.outcomes;
        for (k, d) in older.counters {
            self.counters.entry(k).or_default().add_all(&d);
        }
        older.lists.append(&mut self.lists);
        self.lists = older.lists;
    }

    fn delta(&mut self, progress: &JobProgress) -> &mut Counters {
        let key = counters_key(progress.platform.family(), &progress.app);
        self.counters.entry(key).or_default()
    }
}

/// What the writer thread and the handles share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    buffer: Mutex<Buffer>,
    lists: Mutex<HashMap<String, ListStats>>,
    healthy: AtomicBool,
}

/// What the file held at start, as rows ([`resume`] turns them into jobs).
#[derive(Debug, Default)]
pub struct Rows {
    /// Counters by `family/app`.
    pub counters: Vec<(String, Counters)>,
    /// Unfinished jobs, in admission order.
    pub jobs: Vec<(u128, JobState, JobRecord)>,
    /// Finished jobs' statuses with when they finished (ms), oldest first.
    pub finished: Vec<(u128, JobState, u64)>,
    /// Job status rows found.
    pub rows: u64,
}

/// Opens the file and reads what it holds. redb refuses a damaged file with
/// an error, or (a file shorter than its header says) with a panic: both
/// come back as an error here, so the caller can move the file aside.
fn open_and_read(
    path: &PathBuf,
    faults: &Option<PathBuf>,
) -> Result<(redb::Database, Rows), redb::DatabaseError> {
    let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let db = writer::open_db(path, faults)?;
        let recovered = load::recover(&db).map_err(|e| {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(e.to_string()))
        })?;
        Ok((db, recovered))
    }));
    attempt.unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic in the store".into());
        Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(
            what,
        )))
    })
}

/// The key of a family's app's counters.
pub fn counters_key(family: Family, app: &str) -> String {
    format!("{}/{app}", family.name())
}

/// The key of a family's app's list.
pub fn list_key(family: Family, app: &str, list: ListKind) -> String {
    format!("{}/{app}/{}", family.name(), list.name())
}

/// The handle: the API, the backend and the sink talk to the writer through it.
#[derive(Debug)]
pub struct DiskStore {
    dir: PathBuf,
    ops: Arc<Mutex<Option<Sender<Op>>>>,
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The bound on unfinished tokens (this gateway's alone).
    admission: Arc<Admission>,
    /// What the file held at start, until [`Store::recover`] takes it.
    rows: Mutex<Option<Rows>>,
    /// How stored platform and family names are read back.
    catalog: Catalog,
    /// `server.job_retention_s`: how long a group outlives its send time.
    retention: std::time::Duration,
    /// Idempotency keys reserved by requests of this process.
    flights: Flights,
}

impl DiskStore {
    /// Opens (creating) the store in `dir`, reads what it holds, and starts
    /// the writer. Refuses a directory it cannot create or write, or one
    /// another gateway holds. A file that cannot be opened (torn or
    /// corrupted beyond redb's own repair) is moved aside, named in the
    /// log, and a fresh one started: a bad file never becomes a crash loop.
    /// Finished jobs are kept (`GET /jobs`, `GET /jobs/{id}`) for
    /// `retention`, `max_jobs` of them at most.
    pub fn open(
        dir: &Path,
        max_list: usize,
        max_jobs: usize,
        retention: std::time::Duration,
        admission: Arc<Admission>,
        catalog: Catalog,
    ) -> Result<Arc<Self>, DiskError> {
        std::fs::create_dir_all(dir).map_err(|source| DiskError::NotCreatable {
            dir: dir.to_owned(),
            source,
        })?;
        let probe = dir.join(".pushgate-write-check");
        std::fs::write(&probe, b"ok")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|source| DiskError::NotWritable {
                dir: dir.to_owned(),
                source,
            })?;
        let path = dir.join(FILE_NAME);
        let faults = std::env::var_os(fault::FAULTS_ENV).map(PathBuf::from);
        let started = std::time::Instant::now();
        let (db, recovered) = match open_and_read(&path, &faults) {
            Ok(opened) => opened,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(DiskError::Locked {
                    dir: dir.to_owned(),
                });
            }
            Err(e) => {
                let aside = dir.join(format!("{FILE_NAME}.unreadable-{}", now_ms()));
                tracing::error!(error = %e, file = %path.display(), moved_to = %aside.display(), "the disk store cannot be opened or read; it is moved aside and a fresh one started (its jobs are not recovered)");
                std::fs::rename(&path, &aside).map_err(|source| DiskError::Open {
                    dir: dir.to_owned(),
                    reason: format!("{e}; and it cannot be moved aside: {source}"),
                })?;
                open_and_read(&path, &faults).map_err(|e| match e {
                    redb::DatabaseError::DatabaseAlreadyOpen => DiskError::Locked {
                        dir: dir.to_owned(),
                    },
                    e => DiskError::Open {
                        dir: dir.to_owned(),
                        reason: e.to_string(),
                    },
                })?
            }
        };
        let pending: u64 = recovered
            .jobs
            .iter()
            .map(|(_, s, _)| s.total - s.done())
            .sum();
        tracing::info!(
            data_dir = %dir.display(),
            jobs = recovered.jobs.len(),
            pending_tokens = pending,
            finished_jobs = recovered.finished.len(),
            took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "disk store opened"
        );
        let shared = Arc::new(Shared {
            healthy: AtomicBool::new(true),
            ..Shared::default()
        });
        let (tx, rx) = channel();
        let writer = WriterThread::new(
            path,
            faults,
            db,
            max_list,
            max_jobs,
            retention,
            shared.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("pushgate-disk".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| DiskError::Open {
                dir: dir.to_owned(),
                reason: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Arc::new(Self {
            dir: dir.to_owned(),
            ops: Arc::new(Mutex::new(Some(tx))),
            shared,
            thread: Mutex::new(Some(thread)),
            admission,
            rows: Mutex::new(Some(recovered)),
            catalog,
            retention,
            flights: Flights::default(),
        }))
    }

    /// `queue.data_dir`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// False after a failed commit, until one succeeds.
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    /// The bell a job rings when its workers near its lease: it asks the
    /// writer for a commit now. It holds the writer's channel only while
    /// the store is open, so it never keeps a stopped writer waiting.
    fn bell(&self) -> crate::job::LeaseBell {
        let ops = self.ops.clone();
        crate::job::LeaseBell::new(move || {
            if let Some(tx) = lock(&ops).as_ref() {
                let _ = tx.send(Op::Raise);
            }
        })
    }

    fn send(&self, op: Op) -> bool {
        lock(&self.ops)
            .as_ref()
            .is_some_and(|tx| tx.send(op).is_ok())
    }

    async fn ask<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, WriteError>>) -> Op,
    ) -> Result<T, WriteError> {
        let (reply, answer) = oneshot::channel();
        if !self.send(op(reply)) {
            return Err(WriteError::Io("the disk store is closed".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(WriteError::Io("the disk store's writer stopped".into())))
    }

    /// A job's row for the writer (`record`: [`JobRecord::encode_parts`],
    /// without its tokens; `parts`: its tokens as rows).
    fn new_row(record: Vec<u8>, parts: Vec<(u32, Vec<u8>)>, progress: Arc<JobProgress>) -> NewRow {
        let state = Box::new(JobState {
            seq: 0,
            platform: progress.platform.as_str().to_owned(),
            app: progress.app.to_string(),
            total: progress.total(),
            counts: [0; 6],
            cancelled: false,
            open: progress.is_open(),
            truncated: false,
            lease: progress.lease(),
            bits: Vec::new(),
            notif_id: progress.notif_id.as_deref().map(str::to_owned),
        });
        NewRow {
            id: progress.id.as_u128(),
            counters_key: counters_key(progress.platform.family(), &progress.app),
            record,
            parts,
            state,
            progress,
        }
    }

    /// Stores jobs (counted accepted), their group and their claim in one
    /// commit; returns once that is on disk, or why nothing was written.
    async fn write_admission(
        &self,
        jobs: Vec<NewRow>,
        group: Option<(u128, Vec<u128>, u64)>,
        claim: Option<&Claim>,
    ) -> Result<(), Refused> {
        let (reply, answer) = oneshot::channel();
        let claim = claim.map(|c| (c.key.stored().to_owned(), c.kept.clone()));
        let op = Op::Admit {
            jobs,
            group,
            claim,
            reply,
        };
        if !self.send(op) {
            return Err(Refused::Write(WriteError::Io(
                "the disk store is closed".into(),
            )));
        }
        answer.await.unwrap_or_else(|_| {
            Err(Refused::Write(WriteError::Io(
                "the disk store's writer stopped".into(),
            )))
        })
    }

    /// Watches a recovered job's lease and stores the one it starts this
    /// run with (its `progress.lease()`). Safe before that is on disk: the
    /// stored lease is the last run's, which is higher.
    fn attach(&self, id: JobId, progress: Arc<JobProgress>) {
        let lease = progress.lease();
        self.send(Op::Attach {
            id: id.as_u128(),
            progress,
            lease,
        });
    }

    /// Marks a stream the last run left open as cut (in the next commit).
    fn close_cut(&self, id: u128) {
        self.send(Op::Close {
            id,
            truncated: true,
            reply: None,
        });
    }

    /// Records a cancellation; returns once that is on disk.
    async fn write_cancel(&self, id: JobId) -> Result<(), WriteError> {
        self.ask(|reply| Op::Cancel {
            id: id.as_u128(),
            reply,
        })
        .await
    }

    /// A list's entries, oldest first, with what is buffered; with `drain`,
    /// emptied in the same commit.
    async fn read_list(
        &self,
        family: Family,
        app: &str,
        list: ListKind,
        drain: bool,
    ) -> Result<Vec<serde_json::Value>, WriteError> {
        let key = list_key(family, app, list);
        let rows = self.ask(|reply| Op::List { key, drain, reply }).await?;
        Ok(rows
            .iter()
            .filter_map(|r| serde_json::from_slice(r).ok())
            .collect())
    }

    /// The newest `limit` finished jobs on disk, newest first.
    async fn read_finished(&self, limit: usize) -> Result<Vec<JobStatus>, WriteError> {
        let rows = self.ask(|reply| Op::Finished { limit, reply }).await?;
        Ok(rows
            .into_iter()
            .map(|(at, id, state)| JobStatus {
                job: JobId::from_u128(id).to_string(),
                platform: state.platform,
                state: crate::job::state_of(0, state.cancelled, false, false),
                total: state.total,
                counts: state.counts,
                notif_id: state.notif_id,
                unique_ids: Vec::new(),
                truncated: state.truncated,
                accepted_at: None,
                finished_at: Some(at),
            })
            .collect())
    }

    /// A list's size and drops at the last commit.
    fn stats_of(&self, family: Family, app: &str, list: ListKind) -> ListStats {
        lock(&self.shared.lists)
            .get(&list_key(family, app, list))
            .copied()
            .unwrap_or_default()
    }

    /// Commits what is buffered; returns once it is on disk.
    pub async fn flush(&self) -> Result<(), WriteError> {
        self.ask(|reply| Op::Flush { reply }).await
    }

    /// Commits what is left and stops the writer (at shutdown).
    fn shut(&self) {
        lock(&self.ops).take();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }

    /// Bytes the store's file takes now.
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(self.dir.join(FILE_NAME)).map_or(0, |m| m.len())
    }
}

impl Sink for DiskStore {
    fn retried(&self, progress: &JobProgress, _reason: &str) {
        lock(&self.shared.buffer)
            .delta(progress)
            .post(&Posting::retried());
    }

    fn possible_duplicates(&self, progress: &JobProgress, n: u64) {
        lock(&self.shared.buffer)
            .delta(progress)
            .post(&Posting::possible_duplicates(n));
    }

    fn finished(&self, f: &Finished<'_>) {
        let progress = f.progress;
        let posting = f.posting();
        let mut b = lock(&self.shared.buffer);
        b.outcomes
            .push((progress.id.as_u128(), f.index, f.outcome.kind()));
        b.delta(progress).post(&posting);
        if let Some(entry) = posting.entry {
            let key = list_key(progress.platform.family(), &progress.app, entry.list());
            b.lists.push((key, entry.to_json().into_bytes()));
        }
    }
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        self.shut();
    }
}

impl WriteError {
    /// As the seam's error: the client sees its code, the log its detail.
    fn into_store(self) -> StoreError {
        match self {
            WriteError::Full(_) => StoreError::Full {
                store: "disk",
                source: Box::new(self),
            },
            WriteError::Io(_) => StoreError::Unavailable {
                store: "disk",
                source: Box::new(self),
            },
        }
    }
}
