//! The Redis store as the seam sees it: [`Store`] over the shared stream.

use std::sync::atomic::Ordering;

use super::{RedisError, RedisStore, consume, view};
use crate::books::{Counters, JobFilter, JobStatus, ListKind};
use crate::job::{Family, JobId, JobProgress, TokenList};
use crate::shared::link;
use crate::shared::primary::Primary;
use crate::store::keys::{Claim, Found, IdemKey, KeepIf, Kept, Owner};
use crate::store::{
    AdmitError, Admitted, Hand, NewJob, Store, StoreError, StoreFuture, Submission,
};

impl RedisError {
    /// As the seam's error: the client sees its code, the log its detail.
    pub(super) fn into_store(self) -> StoreError {
        StoreError::Unavailable {
            store: "redis",
            source: Box::new(self),
        }
    }
}

impl Store for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn fate(&self) -> &'static str {
        "left in the shared stream for another gateway (backend redis)"
    }

    fn keeps_unsent(&self) -> bool {
        true
    }

    fn problem(&self) -> Option<String> {
        (!self.healthy()).then(|| "the shared queue (Redis) is unreachable".to_owned())
    }

    /// Starts the reader, the reclaimer, the delayed-chunk mover and the
    /// flusher. Chunks go to the platforms through `hand`; their outcomes
    /// reach this store as one of the recorder's sinks.
    fn start(&self, hand: &Hand) -> Result<(), StoreError> {
        let Some(me) = self.me.upgrade() else {
            return Ok(());
        };
        // A connection of its own: a blocking read would hold up every
        // other command on a shared one.
        let reader = Primary::new(&self.config, "reader", link::RESPONSE_TIMEOUT).map_err(|e| {
            RedisError {
                what: "URL",
                url: self.url.clone(),
                source: e.source,
            }
            .into_store()
        })?;
        let consumer = consume::Consumer {
            cluster: me.clone(),
            hand: hand.clone(),
        };
        tokio::spawn(consumer.clone().read(reader));
        tokio::spawn(consumer.clone().reclaim());
        tokio::spawn(consumer.move_delayed());
        tokio::spawn(me.flush_loop());
        Ok(())
    }

    fn admit<'a>(
        &'a self,
        submission: &'a Submission,
    ) -> StoreFuture<'a, Result<Vec<Admitted>, AdmitError>> {
        Box::pin(async move {
            self.accept(submission).await.inspect_err(|e| {
                if let AdmitError::Store(e) = e {
                    tracing::warn!(error = %e.detail(), "send refused by the shared queue");
                }
            })?;
            Ok(submission.jobs().iter().map(|_| Admitted::Shared).collect())
        })
    }

    fn open_stream<'a>(
        &'a self,
        id: JobId,
        job: &'a NewJob,
        claim: Option<&'a Claim>,
    ) -> StoreFuture<'a, Result<Admitted, AdmitError>> {
        Box::pin(async move {
            self.open(id, job, claim).await?;
            Ok(Admitted::Shared)
        })
    }

    /// A part goes to the stream like a whole job's chunks (the job's total
    /// grows by it), when the stream has room for it.
    fn append<'a>(
        &'a self,
        id: JobId,
        job: &'a NewJob,
        tokens: &'a TokenList,
    ) -> StoreFuture<'a, Result<(), AdmitError>> {
        Box::pin(async move {
            let part = NewJob {
                platform: job.platform,
                app: job.app.clone(),
                fields: job.fields.clone(),
                message: None,
                tokens: tokens.clone(),
                expires_at: job.expires_at,
                delay: None,
                notif_id: job.notif_id.clone(),
            };
            self.accept_part(id, &part).await
        })
    }

    fn group(&self, id: JobId) -> StoreFuture<'_, Result<Option<Vec<JobId>>, StoreError>> {
        Box::pin(async move { self.read_group(id).await.map_err(RedisError::into_store) })
    }

    fn reserve<'a>(
        &'a self,
        key: &'a IdemKey,
        owner: Owner,
    ) -> StoreFuture<'a, Result<Found, StoreError>> {
        Box::pin(async move {
            self.reserve_key(key, owner)
                .await
                .map_err(RedisError::into_store)
        })
    }

    fn keep<'a>(
        &'a self,
        key: &'a IdemKey,
        kept: &'a Kept,
        when: KeepIf,
    ) -> StoreFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            self.keep_answer(key, kept, when)
                .await
                .map_err(RedisError::into_store)
        })
    }

    /// Best effort: a reservation Redis cannot drop now lapses after
    /// [`crate::store::keys::FLIGHT_LEASE`].
    fn release<'a>(&'a self, key: &'a IdemKey, owner: Owner) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if let Err(e) = self.release_key(key, owner).await {
                tracing::debug!(error = %e, "cannot release an idempotency key; it lapses on its own");
            }
        })
    }

    fn close_stream(&self, id: JobId, truncated: bool) -> StoreFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.close(id, truncated)
                .await
                .map_err(RedisError::into_store)
        })
    }

    fn counters<'a>(
        &'a self,
        family: Family,
        app: &'a str,
    ) -> Option<StoreFuture<'a, Result<Counters, StoreError>>> {
        Some(Box::pin(async move {
            self.read_counters(family, app)
                .await
                .map_err(RedisError::into_store)
        }))
    }

    fn list<'a>(
        &'a self,
        family: Family,
        app: &'a str,
        list: ListKind,
        drain: bool,
    ) -> StoreFuture<'a, Result<Vec<serde_json::Value>, StoreError>> {
        Box::pin(async move {
            self.read_list(family, app, list.name(), drain)
                .await
                .map_err(RedisError::into_store)
        })
    }

    /// Not counted here: the lists are trimmed in Redis by the flush script.
    fn list_stats(&self, _family: Family, _app: &str, _list: ListKind) -> (usize, u64) {
        (0, 0)
    }

    fn job<'a>(
        &'a self,
        id: JobId,
    ) -> Option<StoreFuture<'a, Result<Option<JobStatus>, StoreError>>> {
        Some(Box::pin(async move {
            self.read_job(&id.to_string())
                .await
                .map_err(RedisError::into_store)
        }))
    }

    /// Every job of the cluster, from the time-ordered sets ([`jobs`]).
    fn jobs<'a>(
        &'a self,
        filter: JobFilter,
        limit: usize,
    ) -> Option<StoreFuture<'a, Result<Vec<JobStatus>, StoreError>>> {
        Some(Box::pin(async move {
            self.list_jobs(filter, limit)
                .await
                .map_err(RedisError::into_store)
        }))
    }

    /// Cancels a job on every gateway: each cancels its chunks of it within
    /// half a second (a chunk read later, too, within half a second of being
    /// read).
    fn cancel<'a>(
        &'a self,
        id: JobId,
        _local: Option<&'a JobProgress>,
    ) -> StoreFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            self.write_cancel(&id.to_string())
                .await
                .map_err(RedisError::into_store)
        })
    }

    /// Takes no more chunks; what is in the stream waits for the others.
    fn stop_taking(&self) {
        self.stopping.store(true, Ordering::Release);
        self.stop.notify_waiters();
    }

    /// Unfinished tokens stay pending in the stream (another gateway
    /// reclaims them after `claim_idle_ms`) instead of ending as expired.
    fn detach(&self) {
        self.detached.store(true, Ordering::Release);
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.flush_at_close())
    }

    fn cluster_view(&self) -> Option<StoreFuture<'_, Result<serde_json::Value, StoreError>>> {
        Some(Box::pin(async move {
            let view = view::read(self).await.map_err(RedisError::into_store)?;
            serde_json::to_value(&view).map_err(|e| StoreError::Unavailable {
                store: "redis",
                source: Box::new(e),
            })
        }))
    }
}
