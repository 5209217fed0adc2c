//! From the rows the file held at start to what the backend resumes: the
//! counters, finished jobs' statuses, and unfinished jobs with the token
//! ranges still to send. Tokens below a job's lease without an outcome may
//! have been in flight when the process died: they are resent and counted as
//! possible duplicates.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::format::JobState;
use super::writer::LEASE_START;
use super::{DiskStore, Rows};
use crate::floor::now_ms;
use crate::job::{Catalog, JobId, JobProgress};
use crate::platform::Handoff;
use crate::store::{Recovered, Resumed};

impl DiskStore {
    /// Turns the rows into resumable jobs; each unfinished job's progress is
    /// watched for its lease from now on.
    pub(super) fn resume(&self, rows: Rows) -> Recovered {
        let mut out = Recovered::default();
        for (key, counters) in rows.counters {
            let Some((family, app)) = key.split_once('/') else {
                continue;
            };
            if let Some(family) = self.catalog.family(family) {
                out.counters.push((family, app.to_owned(), counters));
            }
        }
        for (id, state, at) in &rows.finished {
            if let Some(p) = progress_of(self.catalog, *id, state) {
                out.finished.push(Arc::new(p.finished_at(*at)));
            }
        }
        for (id, state, record) in rows.jobs {
            let Some(progress) = progress_of(self.catalog, id, &state) else {
                tracing::error!(job = %JobId::from_u128(id), platform = state.platform, "a stored job names an unknown platform; left on disk");
                continue;
            };
            if state.open {
                // Its stream died with the process: what arrived is sent,
                // nothing more will come.
                progress.close(true);
                self.close_cut(id);
            }
            let send = state.unfinished();
            // This run's lease counts from the first token left to send.
            let first = send.first().map_or(0, |r| r.start);
            let progress = Arc::new(
                progress
                    .with_lease(first.saturating_add(LEASE_START))
                    .with_bell(self.bell()),
            );
            self.attach(progress.id, progress.clone());
            let possible_duplicates = send
                .iter()
                .map(|r| u64::from(r.end.min(state.lease).saturating_sub(r.start)))
                .sum();
            let wait = record
                .due_ms
                .map(|due| due.saturating_sub(now_ms()))
                .filter(|&wait| wait > 0 && !progress.is_cancelled())
                .map(Duration::from_millis);
            out.jobs.push(Resumed {
                handoff: Handoff {
                    id: progress.id,
                    app: progress.app.clone(),
                    fields: Arc::from(record.fields),
                    built: None,
                    tokens: record.tokens,
                    send,
                    progress,
                    expires_at: record
                        .expires_at_ms
                        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
                },
                wait,
                possible_duplicates,
            });
        }
        out
    }
}

/// A stored job's progress as its row describes it.
fn progress_of(catalog: Catalog, id: u128, state: &JobState) -> Option<JobProgress> {
    let platform = catalog.platform(&state.platform)?;
    let p = JobProgress::for_app(
        JobId::from_u128(id),
        platform,
        Arc::from(state.app.as_str()),
        state.total,
    )
    .with_notif_id(state.notif_id.as_deref().map(Arc::from));
    p.restore(state.counts);
    if state.cancelled {
        p.cancel();
    }
    if state.truncated {
        p.close(true);
    }
    Some(p)
}
