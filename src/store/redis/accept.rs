//! Admission into the shared stream: a submission's chunks are in Redis
//! before the 202 goes out. `queue.capacity` bounds the tokens waiting in
//! the stream, counted in whole chunks (XLEN × chunk size), cluster-wide.
//!
//! A submission is one write: its jobs' chunks, counters and statuses, its
//! group and its idempotency key go in one MULTI/EXEC, or, with a key, in
//! one script that first checks the key ([`super::keys`]). With
//! `queue.redis_min_replicas`, the chunks are staged and published once
//! enough replicas hold them ([`super::staged`]); the key is then written
//! in the staging MULTI, guarded by its reservation only.

use std::sync::atomic::Ordering;

use redis::AsyncCommands;

use super::staged::Stage;
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
        let mut stages = Vec::new();
        for planned in submission.jobs() {
            stages.extend(self.add_job(
                &mut pipe,
                planned.id,
                &planned.job,
                submission.is_watched(),
            ));
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
        if !stages.is_empty() {
            return self.write_staged(pipe, &stages, submission.claim()).await;
        }
        self.write(pipe, submission.claim()).await
    }

    /// Writes a staged admission (`queue.redis_min_replicas`): its chunks in
    /// their stages' lists and its claim's answer in one MULTI, then waits
    /// for the replicas (see [`super::staged`]). The key is guarded by its
    /// reservation here, not by a script (the staging MULTI cannot hold
    /// one); an admission withdrawn for too few replicas lets its key go.
    async fn write_staged(
        &self,
        mut pipe: redis::Pipeline,
        stages: &[Stage],
        claim: Option<&Claim>,
    ) -> Result<(), AdmitError> {
        let kept = claim.map(|c| (self.idem_key(&c.key), super::keys::kept_record(&c.kept)));
        if let Some((key, (value, px))) = &kept {
            pipe.cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(*px)
                .ignore();
        }
        let written = self.commit_staged(pipe, stages).await;
        if let (Err(_), Some((key, (value, _)))) = (&written, &kept) {
            self.release_value(key, value).await;
        }
        written.map_err(AdmitError::Store)
    }

    /// Admits one part of a streamed job (no claim: the stream's was kept
    /// when it opened).
    pub(super) async fn accept_part(&self, id: JobId, part: &NewJob) -> Result<(), AdmitError> {
        self.room_for(part.tokens.len() as u64).await?;
        let mut pipe = redis::pipe();
        if let Some(stage) = self.add_job(&mut pipe, id, part, false) {
            return self.write_staged(pipe, &[stage], None).await;
        }
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
    /// it). Returns its stage when admissions wait for replicas: its chunks
    /// are then in the stage's list, not the stream.
    fn add_job(
        &self,
        pipe: &mut redis::Pipeline,
        id: JobId,
        job: &NewJob,
        watched: bool,
    ) -> Option<Stage> {
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
        let _ = watched;
        stage
    }
}
