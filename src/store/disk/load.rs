//! Reading the file back: the writer's view after a failed commit (or at
//! start), and what the file holds for the backend to resume at start.

use std::collections::HashMap;

use redb::{Database, ReadableTable, ReadableTableMetadata};

use super::WriteError;
use super::finished;
use super::format::{JobRecord, JobState, decode_counters};
use super::writer::{COUNTERS, DROPPED, JOBS, LISTS, ListMeta, STATES, TOKENS, View};
use crate::floor::now_ms;

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
    let jobs = txn.open_table(JOBS).ok();
    let parts = txn.open_table(TOKENS).ok();
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
            let record = match (record, &parts) {
                // A streamed job's tokens are its record's, then its parts'.
                (Some(mut record), Some(parts)) if state.total > record.tokens.len() as u64 => {
                    append_parts(&mut record.tokens, parts, id).map_err(|e| err(e.into()))?;
                    Some(record)
                }
                (record, _) => record,
            };
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

/// Appends the parts of job `id` (rows of `TOKENS`, in order) to `tokens`.
fn append_parts(
    tokens: &mut crate::job::TokenList,
    parts: &redb::ReadOnlyTable<(u128, u32), &[u8]>,
    id: u128,
) -> Result<(), redb::StorageError> {
    for row in parts.range((id, 0)..=(id, u32::MAX))? {
        let (_, v) = row?;
        if let Some(part) = super::format::decode_tokens(v.value()) {
            for i in part.range() {
                tokens.push(part.get(i));
            }
        }
    }
    Ok(())
}
