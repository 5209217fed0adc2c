//! Outcomes of this gateway's chunks, buffered and written to Redis every
//! [`FLUSH_EVERY`](super::FLUSH_EVERY) in one MULTI/EXEC. The cluster is an
//! outcome [`Sink`]: the fan-out tells it every outcome, retry and possible
//! duplicate.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::floor::{lock, now_ms};
use crate::job::{JobProgress, Outcome};
use crate::outcome::{Finished, Sink};

use super::wire::counter_field;
use super::{Cluster, FLUSH_EVERY, InFlight, RedisError, backoff};

/// Records a chunk's outcomes: KEYS = done set, stream; ARGV = max_list,
/// entry id, then per token: token, report key, outcome field, attempt
/// field, job key, job field, list key ('' = none), list entry. A token
/// already in the done set, or any token of a chunk already acked and
/// deleted, is skipped, so outcomes are counted once whatever the retries.
const FLUSH_SCRIPT: &str = r"
if #redis.call('XRANGE', KEYS[2], ARGV[2], ARGV[2]) == 0 then return 0 end
local max = tonumber(ARGV[1])
for i = 3, #ARGV, 8 do
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then
    redis.call('HINCRBY', ARGV[i+1], ARGV[i+2], 1)
    redis.call('HINCRBY', ARGV[i+1], ARGV[i+3], 1)
    redis.call('HINCRBY', ARGV[i+4], ARGV[i+5], 1)
    if ARGV[i+6] ~= '' then
      redis.call('LPUSH', ARGV[i+6], ARGV[i+7])
      redis.call('LTRIM', ARGV[i+6], 0, max - 1)
    end
  end
end
return 0
";

/// Writes not yet sent to Redis.
#[derive(Default)]
pub(super) struct Buffer {
    pub(super) done: HashMap<String, Vec<String>>,
    pub(super) increments: HashMap<String, HashMap<&'static str, i64>>,
    pub(super) lists: HashMap<String, Vec<String>>,
    pub(super) acks: Vec<String>,
    pub(super) finished: Vec<Arc<InFlight>>,
}

impl Buffer {
    fn is_empty(&self) -> bool {
        self.done.is_empty()
            && self.increments.is_empty()
            && self.lists.is_empty()
            && self.acks.is_empty()
    }

    fn add(&mut self, key: String, field: &'static str, n: i64) {
        *self
            .increments
            .entry(key)
            .or_default()
            .entry(field)
            .or_default() += n;
    }

    /// Puts back writes whose flush failed, ahead of newer ones.
    fn absorb(&mut self, older: Buffer) {
        for (k, mut v) in older.done {
            let slot = self.done.entry(k).or_default();
            v.append(slot);
            *slot = v;
        }
        for (k, fields) in older.increments {
            let slot = self.increments.entry(k).or_default();
            for (f, n) in fields {
                *slot.entry(f).or_default() += n;
            }
        }
        for (k, mut v) in older.lists {
            let slot = self.lists.entry(k).or_default();
            v.append(slot);
            *slot = v;
        }
        let mut acks = older.acks;
        acks.append(&mut self.acks);
        self.acks = acks;
        let mut finished = older.finished;
        finished.append(&mut self.finished);
        self.finished = finished;
    }
}

impl Sink for Cluster {
    /// Records a terminal outcome cluster-wide. Chunks of this gateway also
    /// note the token done, and are acked once every token is.
    fn finished(&self, f: &Finished<'_>) {
        let (progress, token, outcome, attempted) = (f.progress, f.token, f.outcome, f.attempted);
        if !attempted && self.detached.load(Ordering::Acquire) {
            // Shutting down: what is left stays pending in the stream for
            // another gateway, rather than being recorded as expired.
            return;
        }
        let in_flight = lock(&self.chunks)
            .get(&(progress as *const JobProgress as usize))
            .cloned();
        let family = progress.platform.family();
        let kind = outcome.kind();
        let report = self.report_key(family, &progress.app);
        let attempt_field = if attempted { "attempts" } else { "unattempted" };
        let job = self.job_key(&progress.id.to_string());
        let list = match outcome {
            Outcome::Unregistered { timestamp_ms } => Some((
                "unregistered",
                serde_json::json!({"token": token, "timestamp": timestamp_ms.unwrap_or_else(now_ms)}),
            )),
            Outcome::Canonical { new_token } => Some((
                "canonical",
                serde_json::json!({"original": token, "canonical": new_token}),
            )),
            Outcome::Failed { reason, status } => Some((
                "failures",
                serde_json::json!({"token": token, "reason": reason.as_ref(), "status": status, "at": now_ms()}),
            )),
            _ => None,
        }
        .map(|(name, entry)| (self.list_key(family, &progress.app, name), entry.to_string()));
        let mut buffer = lock(&self.buffer);
        let Some(chunk) = in_flight else {
            // Not a chunk of the shared queue: count it as it comes.
            buffer.add(report.clone(), attempt_field, 1);
            buffer.add(report, counter_field(kind), 1);
            buffer.add(job, kind.as_str(), 1);
            if let Some((key, entry)) = list {
                buffer.lists.entry(key).or_default().push(entry);
            }
            return;
        };
        // Written by FLUSH_SCRIPT, which counts a token only the first time
        // its outcome reaches the chunk's done set: a flush retried after an
        // ambiguous failure, or a chunk finished by two gateways, counts once.
        let (list_key, list_entry) = list.unwrap_or_default();
        buffer.done.entry(chunk.entry.clone()).or_default().extend([
            token.to_owned(),
            report,
            counter_field(kind).to_owned(),
            attempt_field.to_owned(),
            job,
            kind.as_str().to_owned(),
            list_key,
            list_entry,
        ]);
        if chunk.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            lock(&self.chunks).remove(&(progress as *const JobProgress as usize));
            buffer.acks.push(chunk.entry.clone());
            buffer.finished.push(chunk);
        }
    }

    /// Counts an attempt that will be retried.
    fn retried(&self, progress: &JobProgress, _reason: &str) {
        let key = self.report_key(progress.platform.family(), &progress.app);
        let mut buffer = lock(&self.buffer);
        buffer.add(key.clone(), "attempts", 1);
        buffer.add(key, "retries", 1);
    }

    /// Counts tokens that may have been delivered twice.
    fn possible_duplicates(&self, progress: &JobProgress, n: u64) {
        let key = self.report_key(progress.platform.family(), &progress.app);
        lock(&self.buffer).add(key, "possible_duplicates", n as i64);
    }

    fn needs_token(&self, _kind: crate::job::OutcomeKind) -> bool {
        true
    }
}

impl Cluster {
    /// Writes the buffered outcomes in one MULTI/EXEC. On failure they stay
    /// buffered for the next try, so nothing is lost while Redis is away.
    pub async fn flush(&self) -> Result<(), RedisError> {
        // One flush at a time (the loop and the shutdown both call it): a
        // chunk's done-set writes must reach Redis before its ack and DEL.
        let _one = self.flushing.lock().await;
        let taken = std::mem::take(&mut *lock(&self.buffer));
        if taken.is_empty() {
            // Chunks with nothing to write (all done before) still free a slot.
            drop(taken);
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        let max = self.max_list.max(1);
        for (entry, outcomes) in &taken.done {
            pipe.cmd("EVAL")
                .arg(FLUSH_SCRIPT)
                .arg(2)
                .arg(self.done_key(entry))
                .arg(&self.config.stream)
                .arg(max)
                .arg(entry)
                .arg(outcomes)
                .ignore();
        }
        for (key, fields) in &taken.increments {
            for (field, n) in fields {
                pipe.hincr(key, *field, *n).ignore();
            }
        }
        let max = max as isize;
        for (key, entries) in &taken.lists {
            pipe.lpush(key, entries)
                .ignore()
                .ltrim(key, 0, max - 1)
                .ignore();
        }
        if !taken.acks.is_empty() {
            pipe.xack(&self.config.stream, &self.config.group, &taken.acks)
                .ignore()
                .xdel(&self.config.stream, &taken.acks)
                .ignore();
            for entry in &taken.acks {
                pipe.del(self.done_key(entry)).ignore();
            }
        }
        let mut conn = self.conn.clone();
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => {
                self.healthy.store(true, Ordering::Relaxed);
                let mut entries = lock(&self.entries);
                for chunk in &taken.finished {
                    entries.remove(&chunk.entry);
                }
                // Dropping `taken` returns the finished chunks' slots.
                Ok(())
            }
            Err(source) => {
                lock(&self.buffer).absorb(taken);
                self.fail("MULTI (outcomes)", Err(source))
            }
        }
    }

    /// Runs until the process exits, the drain included: outcomes of the
    /// chunks finished during a shutdown are written (and acked) as they come.
    pub(super) async fn flush_loop(self: Arc<Self>) {
        let mut failures = 0u32;
        loop {
            match self.flush().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(50) {
                        tracing::warn!(error = %e, "cannot write outcomes to Redis; keeping them and retrying");
                    }
                }
            }
            tokio::time::sleep(backoff(failures).max(FLUSH_EVERY)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_absorb_keeps_every_write() {
        let mut newer = Buffer::default();
        newer.add("k".into(), "successes", 2);
        newer.acks.push("2-0".into());
        let mut older = Buffer::default();
        older.add("k".into(), "successes", 3);
        older.acks.push("1-0".into());
        older.done.insert("1-0".into(), vec!["a".into()]);
        newer.absorb(older);
        assert_eq!(newer.increments["k"]["successes"], 5);
        assert_eq!(newer.acks, vec!["1-0".to_owned(), "2-0".to_owned()]);
        assert_eq!(newer.done["1-0"], vec!["a".to_owned()]);
    }
}
