//! Finished jobs by finish time: the `finished` table, keyed by
//! `(finished_at_ms, job id)`, beside `states` (which keeps each finished
//! job's small status). A job's key is written in the commit that marks it
//! finished, so the index and the statuses never disagree.
//!
//! It is what keeps finished jobs bounded without a scan: `GET /jobs`
//! reads its newest `limit` keys; `report.max_jobs` pops its oldest;
//! `server.job_retention_s` removes the keys older than the cutoff, at most
//! [`PURGE_BATCH`] per commit, so a backlog of a million expired jobs is
//! worked off in small commits instead of one long one.

use std::collections::HashSet;

use redb::{ReadableTable, ReadableTableMetadata, Table, TableDefinition};

use super::WriteError;
use super::format::JobState;
use super::writer::STATES;

/// Finished jobs: `(finished_at_ms, id)` → nothing.
pub(super) const FINISHED: TableDefinition<(u64, u128), ()> = TableDefinition::new("finished");

/// Expired finished jobs removed per commit at most.
pub const PURGE_BATCH: usize = 500;

/// Notes a job as finished at `at` (ms since the epoch).
pub(super) fn index(
    finished: &mut Table<'_, (u64, u128), ()>,
    at: u64,
    id: u128,
) -> Result<(), redb::Error> {
    finished.insert((at, id), ())?;
    Ok(())
}

/// Forgets the oldest finished jobs (index key and status) until at most
/// `max` are left.
pub(super) fn trim(
    finished: &mut Table<'_, (u64, u128), ()>,
    states: &mut Table<'_, u128, &[u8]>,
    max: u64,
) -> Result<(), redb::Error> {
    while finished.len()? > max {
        let Some((key, _)) = finished.pop_first()? else {
            break;
        };
        let (_, id) = key.value();
        states.remove(id)?;
    }
    Ok(())
}

/// Forgets up to [`PURGE_BATCH`] jobs that finished before `cutoff` (ms),
/// oldest first. Returns how many.
pub(super) fn purge(
    finished: &mut Table<'_, (u64, u128), ()>,
    states: &mut Table<'_, u128, &[u8]>,
    cutoff: u64,
) -> Result<usize, redb::Error> {
    let mut expired = Vec::new();
    for row in finished.range((0u64, 0u128)..(cutoff, 0u128))? {
        if expired.len() >= PURGE_BATCH {
            break;
        }
        let (key, _) = row?;
        expired.push(key.value());
    }
    for (at, id) in &expired {
        finished.remove((*at, *id))?;
        states.remove(*id)?;
    }
    Ok(expired.len())
}

/// When the oldest finished job finished, if any is kept.
pub(super) fn oldest(finished: &Table<'_, (u64, u128), ()>) -> Result<Option<u64>, redb::Error> {
    Ok(finished.first()?.map(|(key, _)| key.value().0))
}

/// Every indexed job with its finish time, oldest first (read at start).
pub(super) fn all(txn: &redb::ReadTransaction) -> Result<Vec<(u64, u128)>, WriteError> {
    let err = |e: redb::Error| WriteError::from_redb(&e);
    let table = match txn.open_table(FINISHED) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(err(e.into())),
    };
    let mut out = Vec::new();
    for row in table.iter().map_err(|e| err(e.into()))? {
        let (key, _) = row.map_err(|e| err(e.into()))?;
        out.push(key.value());
    }
    Ok(out)
}

/// The ids of `all`, for finding finished statuses an older gateway left
/// without an index key.
pub(super) fn ids(all: &[(u64, u128)]) -> HashSet<u128> {
    all.iter().map(|(_, id)| *id).collect()
}

/// A finished job as read: when it finished (ms), its id, its status.
pub(super) type FinishedJob = (u64, u128, JobState);

/// The newest `limit` finished jobs with their statuses, newest first.
pub(super) fn newest(db: &redb::Database, limit: usize) -> Result<Vec<FinishedJob>, WriteError> {
    let err = |e: redb::Error| WriteError::from_redb(&e);
    let txn = db.begin_read().map_err(|e| err(e.into()))?;
    let (finished, states) = match (txn.open_table(FINISHED), txn.open_table(STATES)) {
        (Ok(f), Ok(s)) => (f, s),
        (Err(redb::TableError::TableDoesNotExist(_)), _)
        | (_, Err(redb::TableError::TableDoesNotExist(_))) => return Ok(Vec::new()),
        (Err(e), _) | (_, Err(e)) => return Err(err(e.into())),
    };
    let mut out = Vec::with_capacity(limit.min(1024));
    for row in finished.iter().map_err(|e| err(e.into()))?.rev() {
        if out.len() >= limit {
            break;
        }
        let (key, _) = row.map_err(|e| err(e.into()))?;
        let (at, id) = key.value();
        let state = states
            .get(id)
            .map_err(|e| err(e.into()))?
            .and_then(|v| JobState::decode(v.value()));
        if let Some(state) = state {
            out.push((at, id, state));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(total: u64) -> JobState {
        JobState {
            seq: 0,
            platform: "apns".into(),
            app: "default".into(),
            total,
            counts: [total, 0, 0, 0, 0, 0],
            cancelled: false,
            open: false,
            truncated: false,
            lease: 0,
            bits: Vec::new(),
            notif_id: None,
        }
    }

    /// 1,200 finished jobs, one a millisecond from `t = 1`: a list reads the
    /// newest, the count bound pops the oldest, and an expiry takes at most
    /// a batch per call, oldest first.
    #[test]
    fn the_index_lists_trims_and_purges_from_its_ends() {
        let dir = std::env::temp_dir().join(format!(
            "pushgate-finished-{}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let db = redb::Database::create(dir.join("t.redb")).expect("db");
        let txn = db.begin_write().expect("txn");
        {
            let mut done = txn.open_table(FINISHED).expect("table");
            let mut states = txn.open_table(STATES).expect("table");
            for i in 0..1200u128 {
                states
                    .insert(i, state(1).encode().as_slice())
                    .expect("state");
                index(&mut done, 1 + i as u64, i).expect("index");
            }
            trim(&mut done, &mut states, 1100).expect("trim");
            assert_eq!(oldest(&done).expect("oldest"), Some(101));
            assert_eq!(
                purge(&mut done, &mut states, 1000).expect("purge"),
                PURGE_BATCH
            );
            assert_eq!(oldest(&done).expect("oldest"), Some(601));
            assert_eq!(purge(&mut done, &mut states, 1000).expect("purge"), 399);
            assert_eq!(purge(&mut done, &mut states, 1000).expect("purge"), 0);
            assert_eq!(done.len().expect("len"), 201);
            assert_eq!(states.len().expect("len"), 201);
        }
        txn.commit().expect("commit");
        let newest = newest(&db, 3).expect("read");
        let seen: Vec<(u64, u128)> = newest.iter().map(|(at, id, _)| (*at, *id)).collect();
        assert_eq!(seen, vec![(1200, 1199), (1199, 1198), (1198, 1197)]);
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
