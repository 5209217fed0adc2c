//! What the writer thread is asked ([`Op`]), and what it answers.

use std::ops::Range;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::WriteError;
use super::finished;
use super::format::JobState;
use crate::job::{JobId, JobProgress, TokenList};
use crate::store::keys::{KeepIf, Kept, Taken};

/// One job of an admission, as the writer stores it.
pub(super) struct NewRow {
    pub id: u128,
    /// [`super::format::JobRecord::encode_parts`] of the job (its message
    /// and settings; the tokens are in `parts`).
    pub record: Vec<u8>,
    /// The tokens as `TOKENS` rows: (the job's index of the row's first
    /// token, [`super::format::encode_tokens`] of the row).
    pub parts: Vec<(u32, Vec<u8>)>,
    /// Boxed: with its `notif_id` it is large.
    pub state: Box<JobState>,
    pub progress: Arc<JobProgress>,
    pub counters_key: String,
}

/// Why the writer did not admit a submission.
#[derive(Debug, Clone)]
pub(super) enum Refused {
    /// The commit failed: nothing of the turn is on disk.
    Write(WriteError),
    /// Its idempotency key holds an answer: nothing of it was written.
    Taken(Taken),
}

/// A request to the writer.
pub(super) enum Op {
    /// Store a submission's jobs (counted accepted), its group and its
    /// claim, in one commit; a claim whose key holds an answer refuses it.
    Admit {
        jobs: Vec<NewRow>,
        /// The group's id, its jobs' ids, when it expires (ms).
        group: Option<(u128, Vec<u128>, u64)>,
        /// The key (stored form) and the answer to keep with the jobs.
        claim: Option<(String, Kept)>,
        reply: oneshot::Sender<Result<(), Refused>>,
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
    /// Workers near a job's lease (its [`crate::job::LeaseBell`]): commit
    /// now, which raises it, instead of on the timer.
    Raise,
    /// Commit whatever is buffered now.
    Flush {
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    /// Keep an answer under a key when `when` allows (whether it did).
    Keep {
        key: String,
        kept: Box<Kept>,
        when: KeepIf,
        reply: oneshot::Sender<Result<bool, WriteError>>,
    },
    /// Read the newest finished jobs (no commit needed).
    Finished {
        limit: usize,
        reply: oneshot::Sender<Result<Vec<finished::FinishedJob>, WriteError>>,
    },
    /// Read the live answer under a key (no commit needed).
    Answer {
        key: String,
        reply: oneshot::Sender<Result<Option<Kept>, WriteError>>,
    },
    /// Read a group's jobs (no commit needed).
    Group {
        id: u128,
        reply: oneshot::Sender<Result<Option<Vec<JobId>>, WriteError>>,
    },
    /// Read back a job's tokens `range` (no commit needed).
    Tokens {
        id: u128,
        range: Range<u32>,
        reply: oneshot::Sender<Result<TokenList, WriteError>>,
    },
}

impl Op {
    /// A read of the file as the last commit left it: answered after the
    /// turn's commit, so it sees what the same turn wrote.
    pub(super) fn is_read(&self) -> bool {
        matches!(
            self,
            Op::Finished { .. } | Op::Answer { .. } | Op::Group { .. } | Op::Tokens { .. }
        )
    }

    /// Answers a read from `db` (`None`: the file cannot be read now).
    pub(super) fn answer_read(self, db: Option<&redb::Database>, now: u64) {
        let closed = || WriteError::Io("the disk store cannot be read now".into());
        match self {
            Op::Finished { limit, reply } => {
                let _ =
                    reply.send(db.map_or_else(|| Err(closed()), |db| finished::newest(db, limit)));
            }
            Op::Answer { key, reply } => {
                let _ = reply.send(db.map_or_else(
                    || Err(closed()),
                    |db| super::keys::read_answer(db, &key, now),
                ));
            }
            Op::Group { id, reply } => {
                let _ = reply
                    .send(db.map_or_else(|| Err(closed()), |db| super::keys::read_group(db, id)));
            }
            Op::Tokens { id, range, reply } => {
                let _ = reply.send(db.map_or_else(
                    || Err(closed()),
                    |db| super::load::read_tokens(db, id, range),
                ));
            }
            _ => {}
        }
    }

    /// Answers a write whose commit failed.
    pub(super) fn fail(self, e: &WriteError) {
        match self {
            Op::Admit { reply, .. } => {
                let _ = reply.send(Err(Refused::Write(e.clone())));
            }
            Op::Cancel { reply, .. } | Op::Flush { reply } | Op::Append { reply, .. } => {
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
            Op::Keep { reply, .. } => {
                let _ = reply.send(Err(e.clone()));
            }
            Op::Attach { .. }
            | Op::Raise
            | Op::Finished { .. }
            | Op::Answer { .. }
            | Op::Group { .. }
            | Op::Tokens { .. } => {}
        }
    }
}
