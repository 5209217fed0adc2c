//! The disk store as the seam sees it: [`Store`] over the writer thread.

use std::sync::Arc;

use super::ops::{Op, Refused};
use super::{DiskStore, JobRecord, WriteError, counters_key, format, writer};
use crate::books::{JobFilter, JobStatus, ListKind};
use crate::floor::{lock, ms_since_epoch, now_ms};
use crate::job::{Family, JobId, JobProgress, TokenList};
use crate::store::keys::{Claim, Found, IdemKey, KeepIf, Kept, Owner};
use crate::store::memory::reserve;
use crate::store::{
    AdmitError, Admitted, NewJob, Planned, Recovered, Store, StoreError, StoreFuture, Submission,
};

/// A duration in whole ms, saturating.
fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Refused {
    /// As the seam's error.
    fn into_admit(self) -> AdmitError {
        match self {
            Refused::Write(e) => AdmitError::Store(e.into_store()),
            Refused::Taken(taken) => AdmitError::KeyTaken(taken),
        }
    }
}

impl Store for DiskStore {
    fn name(&self) -> &'static str {
        "disk"
    }

    fn fate(&self) -> &'static str {
        "kept in queue.data_dir for the next start (backend disk)"
    }

    fn keeps_unsent(&self) -> bool {
        true
    }

    fn reloads(&self) -> bool {
        true
    }

    fn reload(
        &self,
        id: JobId,
        range: std::ops::Range<u32>,
    ) -> StoreFuture<'_, Result<TokenList, StoreError>> {
        Box::pin(async move {
            self.ask(|reply| Op::Tokens {
                id: id.as_u128(),
                range,
                reply,
            })
            .await
            .map_err(WriteError::into_store)
        })
    }

    fn problem(&self) -> Option<String> {
        (!self.healthy()).then(|| {
            format!(
                "the disk store (queue.data_dir = {}) cannot write",
                self.dir.display()
            )
        })
    }

    fn recover(&self) -> Recovered {
        match lock(&self.rows).take() {
            Some(rows) => self.resume(rows),
            None => Recovered::default(),
        }
    }

    fn admit<'a>(
        &'a self,
        submission: &'a Submission,
    ) -> StoreFuture<'a, Result<Vec<Admitted>, AdmitError>> {
        Box::pin(async move {
            let total = submission.tokens();
            reserve(&self.admission, total)?;
            let mut rows = Vec::with_capacity(submission.jobs().len());
            let mut admitted = Vec::with_capacity(submission.jobs().len());
            for Planned { id, job } in submission.jobs() {
                // Workers may take tokens only below the lease, which each
                // commit raises ahead of them: a crash resends at most that far.
                let progress = Arc::new(
                    JobProgress::for_app(
                        *id,
                        job.platform,
                        job.app.clone(),
                        job.tokens.len() as u64,
                    )
                    .with_notif_id(job.notif_id.clone())
                    .with_lease(writer::LEASE_START)
                    .with_bell(self.bell()),
                );
                let record = JobRecord::encode_parts(
                    job.platform.as_str(),
                    &job.app,
                    &job.fields,
                    job.expires_at.map(ms_since_epoch),
                    job.delay.map(|d| now_ms().saturating_add(millis(d))),
                    &TokenList::default(),
                );
                // The record holds the message; the tokens go in rows the
                // queue's window reads back a part at a time.
                let parts = format::token_rows(&job.tokens);
                rows.push(Self::new_row(record, parts, progress.clone()));
                admitted.push(Admitted::Here(progress));
            }
            let group = submission.group_id().map(|g| {
                let expires =
                    now_ms().saturating_add(millis(self.retention + submission.longest_delay()));
                let members = submission.jobs().iter().map(|p| p.id.as_u128()).collect();
                (g.as_u128(), members, expires)
            });
            let claim = submission.claim();
            if let Err(refused) = self.write_admission(rows, group, claim).await {
                self.admission.release(total);
                return Err(refused.into_admit());
            }
            if let Some(claim) = claim {
                self.flights.end(&claim.key, claim.owner);
            }
            Ok(admitted)
        })
    }

    fn open_stream<'a>(
        &'a self,
        id: JobId,
        job: &'a NewJob,
        claim: Option<&'a Claim>,
    ) -> StoreFuture<'a, Result<Admitted, AdmitError>> {
        Box::pin(async move {
            let progress = Arc::new(
                JobProgress::for_app(id, job.platform, job.app.clone(), 0)
                    .with_notif_id(job.notif_id.clone())
                    .with_lease(writer::LEASE_START)
                    .with_bell(self.bell())
                    .streaming(),
            );
            // The record holds the message; the tokens come as parts.
            let record = JobRecord::encode_parts(
                job.platform.as_str(),
                &job.app,
                &job.fields,
                job.expires_at.map(ms_since_epoch),
                None,
                &TokenList::default(),
            );
            let row = Self::new_row(record, Vec::new(), progress.clone());
            self.write_admission(vec![row], None, claim)
                .await
                .map_err(Refused::into_admit)?;
            if let Some(claim) = claim {
                self.flights.end(&claim.key, claim.owner);
            }
            Ok(Admitted::Here(progress))
        })
    }

    fn group(&self, id: JobId) -> StoreFuture<'_, Result<Option<Vec<JobId>>, StoreError>> {
        Box::pin(async move {
            self.ask(|reply| Op::Group {
                id: id.as_u128(),
                reply,
            })
            .await
            .map_err(WriteError::into_store)
        })
    }

    /// The reservation first (in this process), then the kept answer on
    /// disk: a request that reserves after another's answer was written
    /// (and its reservation ended) still finds that answer.
    fn reserve<'a>(
        &'a self,
        key: &'a IdemKey,
        owner: Owner,
    ) -> StoreFuture<'a, Result<Found, StoreError>> {
        Box::pin(async move {
            if !self.flights.take(key, owner) {
                return Ok(Found::InFlight);
            }
            let read = self
                .ask(|reply| Op::Answer {
                    key: key.stored().to_owned(),
                    reply,
                })
                .await;
            match read {
                Ok(None) => Ok(Found::Reserved),
                Ok(Some(kept)) => {
                    self.flights.end(key, owner);
                    Ok(Found::Kept(kept))
                }
                Err(e) => {
                    self.flights.end(key, owner);
                    Err(e.into_store())
                }
            }
        })
    }

    fn keep<'a>(
        &'a self,
        key: &'a IdemKey,
        kept: &'a Kept,
        when: KeepIf,
    ) -> StoreFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let wrote = self
                .ask(|reply| Op::Keep {
                    key: key.stored().to_owned(),
                    kept: Box::new(kept.clone()),
                    when,
                    reply,
                })
                .await;
            if let KeepIf::Free(owner) = when {
                self.flights.end(key, owner);
            }
            wrote.map_err(WriteError::into_store)
        })
    }

    fn release<'a>(&'a self, key: &'a IdemKey, owner: Owner) -> StoreFuture<'a, ()> {
        self.flights.end(key, owner);
        Box::pin(async {})
    }

    fn append<'a>(
        &'a self,
        id: JobId,
        job: &'a NewJob,
        tokens: &'a TokenList,
    ) -> StoreFuture<'a, Result<(), AdmitError>> {
        Box::pin(async move {
            let n = tokens.len() as u64;
            reserve(&self.admission, n)?;
            let written = self
                .ask(|reply| Op::Append {
                    id: id.as_u128(),
                    rows: format::token_rows(tokens),
                    n,
                    counters_key: counters_key(job.platform.family(), &job.app),
                    reply,
                })
                .await;
            if let Err(e) = written {
                self.admission.release(n);
                return Err(e.into_store().into());
            }
            Ok(())
        })
    }

    fn close_stream(&self, id: JobId, truncated: bool) -> StoreFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.ask(|reply| Op::Close {
                id: id.as_u128(),
                truncated,
                reply: Some(reply),
            })
            .await
            .map_err(WriteError::into_store)
        })
    }

    fn list<'a>(
        &'a self,
        family: Family,
        app: &'a str,
        list: ListKind,
        drain: bool,
    ) -> StoreFuture<'a, Result<Vec<serde_json::Value>, StoreError>> {
        Box::pin(async move {
            self.read_list(family, app, list, drain)
                .await
                .map_err(WriteError::into_store)
        })
    }

    fn list_stats(&self, family: Family, app: &str, list: ListKind) -> (usize, u64) {
        let s = self.stats_of(family, app, list);
        (s.size, s.dropped)
    }

    /// Finished jobs from the finish-time index; unfinished ones are this
    /// gateway's own (its job table).
    fn jobs<'a>(
        &'a self,
        filter: JobFilter,
        limit: usize,
    ) -> Option<StoreFuture<'a, Result<Vec<JobStatus>, StoreError>>> {
        (filter == JobFilter::Done).then(|| -> StoreFuture<'a, _> {
            Box::pin(async move {
                self.read_finished(limit)
                    .await
                    .map_err(WriteError::into_store)
            })
        })
    }

    fn cancel<'a>(
        &'a self,
        id: JobId,
        local: Option<&'a JobProgress>,
    ) -> StoreFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let Some(progress) = local else {
                return Ok(false);
            };
            if progress.pending() > 0 {
                // On disk first: a restart must not send what the sender cancelled.
                self.write_cancel(id)
                    .await
                    .map_err(WriteError::into_store)?;
            }
            Ok(true)
        })
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            if let Err(e) = self.flush().await {
                tracing::error!(error = %e, "cannot write the last outcomes to the disk store; their tokens will be sent again at the next start");
            }
            self.shut();
        })
    }
}
