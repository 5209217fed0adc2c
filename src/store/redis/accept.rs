//! Admission into the shared stream: a job's chunks are in Redis before the
//! 202 goes out. `queue.capacity` bounds the tokens waiting in the stream,
//! counted in whole chunks (XLEN × chunk size), cluster-wide.

use std::sync::atomic::Ordering;

use redis::AsyncCommands;

use super::wire::Chunk;
use super::{CHUNK_TOKENS, RedisError, RedisStore};
use crate::floor::{ms_since_epoch, now_ms};
use crate::job::JobId;
use crate::store::{AdmitError, NewJob};

impl RedisStore {
    /// Chunks waiting in the stream (sent or not), counted by XLEN: acked
    /// chunks are deleted, so this is the cluster's unfinished work.
    pub async fn queued_chunks(&self) -> Result<u64, RedisError> {
        let mut conn = self.connection()?;
        let r = conn.xlen(&self.config.stream).await;
        self.fail("XLEN", r)
    }

    /// Admits a job if the stream has room for it: its chunks are written
    /// (to the stream, or to the delayed set when it has a delay) and it is
    /// counted accepted, in one MULTI/EXEC: all of it is in Redis before the
    /// caller answers 202, or none of it is.
    pub(super) async fn accept(&self, id: JobId, job: &NewJob) -> Result<(), AdmitError> {
        let total = job.tokens.len() as u64;
        let queued = self
            .queued_chunks()
            .await
            .map_err(RedisError::into_store)?
            .saturating_mul(CHUNK_TOKENS as u64);
        if queued.saturating_add(total) > self.capacity {
            return Err(AdmitError::Full {
                pending: queued,
                capacity: self.capacity,
                wanted: total,
            });
        }
        self.write_chunks(id, job)
            .await
            .map_err(|e| RedisError::into_store(e).into())
    }

    async fn write_chunks(&self, id: JobId, job: &NewJob) -> Result<(), RedisError> {
        let (platform, app) = (job.platform, &*job.app);
        let codec = platform.codec();
        let mut pipe = redis::pipe();
        pipe.atomic();
        let due = job
            .delay
            .map(|d| now_ms().saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
        let mut chunk = Chunk {
            job: id.to_string(),
            platform: platform.as_str().to_owned(),
            app: app.to_owned(),
            index: 0,
            fields: String::from_utf8_lossy(&job.fields).into_owned(),
            expires_at_ms: job.expires_at.map(ms_since_epoch),
            tokens: Vec::new(),
            notif_id: job.notif_id.as_deref().map(str::to_owned),
        };
        let total = u32::try_from(job.tokens.len()).unwrap_or(u32::MAX);
        let mut start = 0u32;
        while start < total {
            let end = total.min(start.saturating_add(CHUNK_TOKENS as u32));
            chunk.tokens = (start..end)
                .map(|i| codec.wire(job.tokens.get(i)).into_owned())
                .collect();
            let body = serde_json::to_string(&chunk).unwrap_or_default();
            match due {
                Some(due) => pipe.zadd(self.delayed_key(), body, due).ignore(),
                None => pipe.xadd(&self.config.stream, "*", &[("c", body)]).ignore(),
            };
            chunk.index += 1;
            start = end;
        }
        pipe.hincr(
            self.report_key(platform.family(), app),
            "accepted",
            i64::from(total),
        )
        .ignore();
        let key = self.job_key(&chunk.job);
        let now = now_ms();
        pipe.hset_multiple(&key, &[("platform", platform.as_str()), ("app", app)])
            .ignore()
            .hset(&key, "accepted_at", now)
            .ignore()
            .hincr(&key, "total", i64::from(total))
            .ignore()
            // Restarted when the job finishes: kept that long after it.
            .expire(&key, self.retention_s())
            .ignore();
        if let Some(n) = job.notif_id.as_deref() {
            pipe.hset(&key, "notif_id", n).ignore();
        }
        if let Some(due) = due {
            pipe.hset(&key, "due", due).ignore();
        }
        // Listed (GET /jobs) from now; the sets are trimmed by score here
        // too, so a cluster that only accepts still expires old entries.
        let cutoff = format!("({}", self.cutoff());
        pipe.zadd(self.live_key(), &chunk.job, now)
            .ignore()
            .zrembyscore(self.live_key(), "-inf", &cutoff)
            .ignore()
            .zrembyscore(self.done_jobs_key(), "-inf", &cutoff)
            .ignore();
        let mut conn = self.connection()?;
        let r = pipe.query_async::<()>(&mut conn).await;
        self.fail("XADD", r)?;
        self.healthy.store(true, Ordering::Relaxed);
        Ok(())
    }
}
