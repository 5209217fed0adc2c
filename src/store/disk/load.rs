//! Reading the file back: the writer's view after a failed commit (or at
//! start), and what the file holds for the backend to resume at start.

use std::collections::HashMap;
use std::ops::Range;

use redb::{Database, ReadableTable, ReadableTableMetadata};

use super::WriteError;
use super::finished;
use super::format::{JobRecord, JobState, decode_counters};
use super::writer::{COUNTERS, DROPPED, JOBS, LISTS, ListMeta, STATES, TOKENS, View};
use crate::floor::now_ms;
use crate::job::TokenList;

/// Rebuilds the writer's view from the file.
pub(super) fn load_view(db: &Database) -> Result<View, WriteError> {
    let err = |e: redb::Error| WriteError::from_redb(&e);
    let txn = db.begin_read().map_err(|e| err(e.into()))?;
    let mut view = View::default();
    let indexed = finished::all(&txn)?;
    view.oldest_finished = indexed.first().map(|(at, _)| *at);
    view.oldest_expiry = super::keys::oldest(&txn)?;
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
pub(super) fn read_tokens(
    db: &Database,
    id: u128,
    range: Range<u32>,
) -> Result<TokenList, WriteError> {
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
