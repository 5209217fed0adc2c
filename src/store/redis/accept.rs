//! Admission into the shared stream: a job's chunks are in Redis before the
//! 202 goes out. `queue.capacity` bounds the tokens waiting in the stream,
//! counted in whole chunks (XLEN × chunk size), cluster-wide. With
//! `queue.redis_min_replicas`, they are staged and published once enough
//! replicas hold them ([`super::staged`]).

use std::sync::atomic::Ordering;

use redis::AsyncCommands;

use super::wire::Chunk;
use super::{CHUNK_TOKENS, RedisError, RedisStore};
use crate::floor::{ms_since_epoch, now_ms};
use crate::job::JobId;
use crate::store::{AdmitError, NewJob, StoreError};

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
        self.write_chunks(id, job).await.map_err(AdmitError::Store)
    }

    /// Opens a streamed job: its status in Redis, open, with no tokens yet.
    pub(super) async fn open(&self, id: JobId, job: &NewJob) -> Result<(), RedisError> {
        let id = id.to_string();
        let key = self.job_key(&id);
        let now = now_ms();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(
                &key,
                &[
                    ("platform", job.platform.as_str()),
                    ("app", &job.app),
                    ("open", "1"),
                ],
            )
            .ignore()
            .hset(&key, "accepted_at", now)
            .ignore()
            .hincr(&key, "total", 0)
            .ignore()
            .expire(&key, self.retention_s())
            .ignore()
            // Listed (GET /jobs) as running while it grows.
            .zadd(self.live_key(), &id, now)
            .ignore();
        if let Some(n) = job.notif_id.as_deref() {
            pipe.hset(&key, "notif_id", n).ignore();
        }
        let mut conn = self.connection()?;
        let r = pipe.query_async::<()>(&mut conn).await;
        self.fail("HSET", r)
    }

    /// Closes a streamed job (`truncated`: its stream was cut).
    /// Its outcomes may all be in already: then it is done now.
    pub(super) async fn close(&self, id: JobId, truncated: bool) -> Result<(), RedisError> {
        let id = id.to_string();
        let key = self.job_key(&id);
        let mut pipe = redis::pipe();
        pipe.atomic().hset(&key, "open", "0").ignore();
        if truncated {
            pipe.hset(&key, "truncated", "1").ignore();
        }
        pipe.cmd("EVAL")
            .arg(super::jobs::DONE_SCRIPT)
            .arg(3)
            .arg(&key)
            .arg(self.live_key())
            .arg(self.done_jobs_key())
            .arg(&id)
            .arg(now_ms())
            .arg(self.cutoff())
            .arg(self.retention_s());
        let mut conn = self.connection()?;
        let r = pipe.query_async::<Vec<redis::Value>>(&mut conn).await;
        let answers = self.fail("HSET", r)?;
        if let Some(answer) = answers.last() {
            super::jobs::log_done(&id, answer);
        }
        Ok(())
    }

    async fn write_chunks(&self, id: JobId, job: &NewJob) -> Result<(), StoreError> {
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
        let all = job.tokens.range();
        let total = all.end - all.start;
        let report = self.report_key(platform.family(), app);
        // Waiting for replicas: staged, not readable, until they hold it.
        let stage = self.stage_for(id, all.start, &report, u64::from(total));
        let mut start = all.start;
        while start < all.end {
            let end = all.end.min(start.saturating_add(CHUNK_TOKENS as u32));
            // Unique per job whatever part of a streamed job it comes from.
            chunk.index = start;
            chunk.tokens = (start..end)
                .map(|i| codec.wire(job.tokens.get(i)).into_owned())
                .collect();
            let body = serde_json::to_string(&chunk).unwrap_or_default();
            match (&stage, due) {
                (Some(stage), _) => pipe.rpush(&stage.list, body).ignore(),
                (None, Some(due)) => pipe.zadd(self.delayed_key(), body, due).ignore(),
                (None, None) => pipe.xadd(&self.config.stream, "*", &[("c", body)]).ignore(),
            };
            start = end;
        }
        pipe.hincr(&report, "accepted", i64::from(total)).ignore();
        let key = self.job_key(&chunk.job);
        let now = now_ms();
        pipe.hset_multiple(&key, &[("platform", platform.as_str()), ("app", app)])
            .ignore()
            // A streamed job's later parts keep its first time.
            .hset_nx(&key, "accepted_at", now)
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
        pipe.cmd("ZADD")
            .arg(self.live_key())
            .arg("NX")
            .arg(now)
            .arg(&chunk.job)
            .ignore()
            .zrembyscore(self.live_key(), "-inf", &cutoff)
            .ignore()
            .zrembyscore(self.done_jobs_key(), "-inf", &cutoff)
            .ignore();
        if let Some(stage) = stage {
            return self.commit_staged(pipe, &[stage]).await;
        }
        let mut conn = self.connection().map_err(RedisError::into_store)?;
        let r = pipe.query_async::<()>(&mut conn).await;
        self.fail("XADD", r).map_err(RedisError::into_store)?;
        self.healthy.store(true, Ordering::Relaxed);
        Ok(())
    }
}
