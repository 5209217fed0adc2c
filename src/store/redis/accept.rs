//! Admission into the shared stream: a submission's chunks are in Redis
//! before the 202 goes out. `queue.capacity` bounds the tokens waiting in
//! the stream, counted in whole chunks (XLEN × chunk size), cluster-wide.
//!
//! A submission is one write: its jobs' chunks, counters and statuses, its
//! group and its idempotency key go in one MULTI/EXEC, or, with a key, in
//! one script that first checks the key ([`super::keys`]).

use std::sync::atomic::Ordering;

use redis::AsyncCommands;

use super::wire::Chunk;
use super::{CHUNK_TOKENS, RedisError, RedisStore};
use crate::floor::{ms_since_epoch, now_ms};
use crate::job::JobId;
use crate::store::keys::Claim;
use crate::store::{AdmitError, NewJob, Submission};

impl RedisStore {
    /// Chunks waiting in the stream (sent or not), counted by XLEN: acked
    /// chunks are deleted, so this is the cluster's unfinished work.
    pub async fn queued_chunks(&self) -> Result<u64, RedisError> {
        let mut conn = self.connection()?;
        let r = conn.xlen(&self.config.stream).await;
        self.fail("XLEN", r)
    }

    /// Admits a submission if the stream has room for it: its jobs' chunks
    /// are written (to the stream, or to the delayed set when a job has a
    /// delay) and counted accepted, with its group and its claim, in one
    /// write: all of it is in Redis before the caller answers 202, or none.
    pub(super) async fn accept(&self, submission: &Submission) -> Result<(), AdmitError> {
        self.room_for(submission.tokens()).await?;
        let mut pipe = redis::pipe();
        for planned in submission.jobs() {
            self.add_job(&mut pipe, planned.id, &planned.job, submission.is_watched());
        }
        if let Some(group) = submission.group_id() {
            let jobs: Vec<String> = submission.jobs().iter().map(|p| p.id.to_string()).collect();
            let key = self.group_key(&group.to_string());
            let keep = self.retention + submission.longest_delay();
            pipe.hset(&key, "jobs", jobs.join(" "))
                .ignore()
                .expire(
                    &key,
                    i64::try_from(keep.as_secs().max(1)).unwrap_or(i64::MAX),
                )
                .ignore();
        }
        self.write(pipe, submission.claim()).await
    }

    /// Admits one part of a streamed job (no claim: the stream's was kept
    /// when it opened).
    pub(super) async fn accept_part(&self, id: JobId, part: &NewJob) -> Result<(), AdmitError> {
        self.room_for(part.tokens.len() as u64).await?;
        let mut pipe = redis::pipe();
        self.add_job(&mut pipe, id, part, false);
        self.write(pipe, None).await
    }

    /// Refuses `total` more tokens when the stream has no room for them.
    async fn room_for(&self, total: u64) -> Result<(), AdmitError> {
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
        Ok(())
    }

    /// Writes `pipe` in one MULTI/EXEC, or with a claim in one script that
    /// writes nothing when the claim's key is taken.
    async fn write(
        &self,
        mut pipe: redis::Pipeline,
        claim: Option<&Claim>,
    ) -> Result<(), AdmitError> {
        let Some(claim) = claim else {
            let mut conn = self.connection().map_err(RedisError::into_store)?;
            let r = pipe.atomic().query_async::<()>(&mut conn).await;
            self.fail("XADD", r).map_err(RedisError::into_store)?;
            self.healthy.store(true, Ordering::Relaxed);
            return Ok(());
        };
        match self
            .guarded(&pipe, claim)
            .await
            .map_err(RedisError::into_store)?
        {
            None => {
                self.healthy.store(true, Ordering::Relaxed);
                Ok(())
            }
            Some(taken) => Err(AdmitError::KeyTaken(taken)),
        }
    }

    /// Opens a streamed job: its status in Redis, open, with no tokens yet
    /// (and its claim, in the same write).
    pub(super) async fn open(
        &self,
        id: JobId,
        job: &NewJob,
        claim: Option<&Claim>,
    ) -> Result<(), AdmitError> {
        let id = id.to_string();
        let key = self.job_key(&id);
        let now = now_ms();
        let mut pipe = redis::pipe();
        pipe.hset_multiple(
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
        self.write(pipe, claim).await
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

    /// Adds a job's writes to `pipe`: its chunks, its acceptance, its
    /// status and its place in `GET /jobs`. `watched`: someone waits for
    /// its per-token results (the chunk says so to whichever gateway reads
    /// it).
    fn add_job(&self, pipe: &mut redis::Pipeline, id: JobId, job: &NewJob, watched: bool) {
        let (platform, app) = (job.platform, &*job.app);
        let codec = platform.codec();
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
        let mut start = all.start;
        while start < all.end {
            let end = all.end.min(start.saturating_add(CHUNK_TOKENS as u32));
            // Unique per job whatever part of a streamed job it comes from.
            chunk.index = start;
            chunk.tokens = (start..end)
                .map(|i| codec.wire(job.tokens.get(i)).into_owned())
                .collect();
            let body = serde_json::to_string(&chunk).unwrap_or_default();
            match due {
                Some(due) => pipe.zadd(self.delayed_key(), body, due).ignore(),
                None => pipe.xadd(&self.config.stream, "*", &[("c", body)]).ignore(),
            };
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
        let _ = watched;
    }
}
