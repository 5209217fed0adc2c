//! Outcomes of this gateway's chunks, buffered and written to Redis in one
//! MULTI/EXEC as soon as a chunk completes (its ack frees a slot of the
//! window), and at least every [`FLUSH_EVERY`](super::FLUSH_EVERY). The cluster is an
//! outcome [`Sink`]: the fan-out tells it every outcome, retry and possible
//! duplicate.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::books::Posting;
use crate::floor::lock;
use crate::job::JobProgress;
use crate::outcome::{Finished, Sink};

use super::{FLUSH_EVERY, InFlight, RedisError, RedisStore, backoff};

/// Records a chunk's outcomes: KEYS = done set, stream; ARGV = max_list,
/// entry id, the group when this call also acks the chunk ('' = not yet),
/// the chunk's report key and job key, its size (tokens in the entry), then
/// per token: token, outcome kind (the job's field,
/// [`OutcomeKind::as_str`](crate::job::OutcomeKind::as_str)), the two report
/// counters its [`Posting`] adds to, list key ('' = none), list entry. The
/// counters are named by the caller, from the one mapping in
/// [`crate::books`]; the script only adds them. A token already in the done
/// set, or any token of a chunk already acked and deleted, is skipped, so
/// outcomes are counted once whatever the retries. A chunk acked with all
/// its outcomes in this one call and no done set yet is counted without
/// one; counter increments are summed first, list entries pushed together.
///
/// The ack is written only when the done set holds the whole chunk. Redis
/// replicates asynchronously, so a failover can lose an earlier call of
/// this chunk (its outcomes and its done-set members) while this gateway
/// has moved on. Acking then would leave those tokens pending for ever; the
/// chunk stays in the stream instead, idles, and is reclaimed by a gateway
/// that sends again only the tokens not in the done set (counted as
/// possible duplicates). Returns 1 when it withheld the ack, else 0.
const FLUSH_SCRIPT: &str = r"
if #redis.call('XRANGE', KEYS[2], ARGV[2], ARGV[2]) == 0 then return 0 end
local max = tonumber(ARGV[1])
local ack = ARGV[3] ~= ''
local report, job, size = ARGV[4], ARGV[5], tonumber(ARGV[6])
local fresh = ack and (#ARGV - 6) / 6 == size and redis.call('EXISTS', KEYS[1]) == 0
local sums, order, lists, lorder = {}, {}, {}, {}
local function add(key, field)
  if field == '' then return end
  local k = key .. '\n' .. field
  if sums[k] == nil then
    sums[k] = 0
    order[#order + 1] = {key, field, k}
  end
  sums[k] = sums[k] + 1
end
for i = 7, #ARGV, 6 do
  if fresh or redis.call('SADD', KEYS[1], ARGV[i]) == 1 then
    add(job, ARGV[i+1])
    add(report, ARGV[i+2])
    add(report, ARGV[i+3])
    if ARGV[i+4] ~= '' then
      local l = lists[ARGV[i+4]]
      if l == nil then
        l = {}
        lists[ARGV[i+4]] = l
        lorder[#lorder + 1] = ARGV[i+4]
      end
      l[#l + 1] = ARGV[i+5]
    end
  end
end
for _, o in ipairs(order) do redis.call('HINCRBY', o[1], o[2], sums[o[3]]) end
for _, key in ipairs(lorder) do
  local l = lists[key]
  for j = 1, #l, 500 do redis.call('LPUSH', key, unpack(l, j, math.min(j + 499, #l))) end
  redis.call('LTRIM', key, 0, max - 1)
end
if ack then
  if not fresh and redis.call('SCARD', KEYS[1]) < size then return 1 end
  redis.call('XACK', KEYS[2], ARGV[3], ARGV[2])
  redis.call('XDEL', KEYS[2], ARGV[2])
  redis.call('DEL', KEYS[1])
end
return 0
";

/// What [`FLUSH_SCRIPT`] needs of a chunk besides its outcomes.
pub(super) struct Head {
    report: String,
    job: String,
    size: u64,
}

/// Writes not yet sent to Redis.
#[derive(Default)]
pub(super) struct Buffer {
    pub(super) done: HashMap<String, Vec<String>>,
    /// Per chunk with outcomes in `done`: its report key, job key and size.
    pub(super) heads: HashMap<String, Head>,
    pub(super) increments: HashMap<String, HashMap<&'static str, i64>>,
    pub(super) lists: HashMap<String, Vec<String>>,
    pub(super) acks: Vec<String>,
    pub(super) finished: Vec<Arc<InFlight>>,
    /// Jobs with outcomes in this buffer: each may finish with them.
    pub(super) touched: HashSet<String>,
}

impl Buffer {
    fn is_empty(&self) -> bool {
        self.done.is_empty()
            && self.increments.is_empty()
            && self.lists.is_empty()
            && self.acks.is_empty()
    }

    /// Adds a posting's counts to `key`'s increments.
    fn post(&mut self, key: &str, posting: &Posting) {
        for (counter, n) in posting.counts() {
            self.add(
                key.to_owned(),
                counter.name(),
                i64::try_from(n).unwrap_or(i64::MAX),
            );
        }
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
        for (k, head) in older.heads {
            self.heads.entry(k).or_insert(head);
        }
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
        self.touched.extend(older.touched);
    }
}

impl Sink for RedisStore {
    /// Records a terminal outcome cluster-wide. Chunks of this gateway also
    /// note the token done, and are acked once every token is.
    fn finished(&self, f: &Finished<'_>) {
        let progress = f.progress;
        if !f.attempted && self.detached.load(Ordering::Acquire) {
            // Shutting down: what is left stays pending in the stream for
            // another gateway, rather than being recorded as expired.
            return;
        }
        let in_flight = lock(&self.chunks)
            .get(&(progress as *const JobProgress as usize))
            .cloned();
        let family = progress.platform.family();
        let kind = f.outcome.kind();
        let posting = f.posting();
        let list = posting.entry.as_ref().map(|entry| {
            (
                self.list_key(family, &progress.app, entry.list().name()),
                entry.to_json(),
            )
        });
        let mut buffer = lock(&self.buffer);
        buffer.touched.insert(progress.id.to_string());
        let Some(chunk) = in_flight else {
            // Not a chunk of the shared queue: count it as it comes.
            let report = self.report_key(family, &progress.app);
            let job = self.job_key(&progress.id.to_string());
            buffer.post(&report, &posting);
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
        let now = Instant::now();
        let _ = chunk.first_outcome.set(now);
        if !buffer.heads.contains_key(&chunk.entry) {
            let head = Head {
                report: self.report_key(family, &progress.app),
                job: self.job_key(&progress.id.to_string()),
                size: chunk.size,
            };
            buffer.heads.insert(chunk.entry.clone(), head);
        }
        // A finished token posts exactly two counters (its outcome's, and
        // `attempts` or `unattempted`); the chunk's keys go once per call.
        let mut counters = posting.counts().map(|(c, _)| c.name().to_owned());
        let (first, second) = (counters.next(), counters.next());
        buffer.done.entry(chunk.entry.clone()).or_default().extend([
            f.token.to_owned(),
            kind.as_str().to_owned(),
            first.unwrap_or_default(),
            second.unwrap_or_default(),
            list_key,
            list_entry,
        ]);
        if chunk.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = chunk.finished_at.set(now);
            lock(&self.chunks).remove(&(progress as *const JobProgress as usize));
            buffer.acks.push(chunk.entry.clone());
            buffer.finished.push(chunk);
            drop(buffer);
            self.flush_now.notify_one();
        }
    }

    /// Counts an attempt that will be retried.
    fn retried(&self, progress: &JobProgress, _reason: &str) {
        let key = self.report_key(progress.platform.family(), &progress.app);
        lock(&self.buffer).post(&key, &Posting::retried());
    }

    /// Counts tokens that may have been delivered twice.
    fn possible_duplicates(&self, progress: &JobProgress, n: u64) {
        let key = self.report_key(progress.platform.family(), &progress.app);
        lock(&self.buffer).post(&key, &Posting::possible_duplicates(n));
    }
}

impl RedisStore {
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
        // Chunks completed in this flush are acked by the script call that
        // writes their last outcomes; the others (nothing left to write) below.
        let mut acked_by_script: HashSet<&str> = HashSet::new();
        // The chunks this flush asks the script to ack, in call order.
        let mut acking: Vec<&str> = Vec::new();
        for (entry, outcomes) in &taken.done {
            let ack = taken.acks.iter().any(|a| a == entry);
            let Some(head) = taken.heads.get(entry) else {
                // Every push to `done` records its head first.
                tracing::error!(%entry, "outcomes without their chunk's keys; not written");
                continue;
            };
            if ack {
                acked_by_script.insert(entry.as_str());
                acking.push(entry);
            }
            pipe.cmd("EVAL")
                .arg(FLUSH_SCRIPT)
                .arg(2)
                .arg(self.done_key(entry))
                .arg(&self.config.stream)
                .arg(max)
                .arg(entry)
                .arg(if ack { self.config.group.as_str() } else { "" })
                .arg(&head.report)
                .arg(&head.job)
                .arg(head.size)
                .arg(outcomes);
            if !ack {
                pipe.ignore();
            }
        }
        let other_acks: Vec<&String> = taken
            .acks
            .iter()
            .filter(|a| !acked_by_script.contains(a.as_str()))
            .collect();
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
        if !other_acks.is_empty() {
            pipe.xack(&self.config.stream, &self.config.group, &other_acks)
                .ignore()
                .xdel(&self.config.stream, &other_acks)
                .ignore();
            for entry in &other_acks {
                pipe.del(self.done_key(entry)).ignore();
            }
        }
        // Last, after their outcomes: the jobs those finish move to the
        // finished set (and each gets its one "job done" line, here).
        let touched: Vec<&String> = taken.touched.iter().collect();
        let (live, done) = (self.live_key(), self.done_jobs_key());
        let (now, cutoff, ttl) = (crate::floor::now_ms(), self.cutoff(), self.retention_s());
        for id in &touched {
            pipe.cmd("EVAL")
                .arg(super::jobs::DONE_SCRIPT)
                .arg(3)
                .arg(self.job_key(id))
                .arg(&live)
                .arg(&done)
                .arg(id.as_str())
                .arg(now)
                .arg(cutoff)
                .arg(ttl);
        }
        let sent = match self.link() {
            Ok(mut conn) => pipe.query_async::<Vec<redis::Value>>(&mut conn).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(answers) => {
                let (acks, done) = answers.split_at(acking.len().min(answers.len()));
                for (entry, answer) in acking.iter().zip(acks) {
                    if matches!(answer, redis::Value::Int(1)) {
                        tracing::warn!(%entry, "Redis lost earlier outcomes of a chunk (a failover before its replicas had them): not acked, so a gateway reclaims it and sends the tokens without an outcome again");
                    }
                }
                for (id, answer) in touched.iter().zip(done) {
                    super::jobs::log_done(id, answer);
                }
                self.healthy.store(true, Ordering::Relaxed);
                let now = Instant::now();
                let mut entries = lock(&self.entries);
                for chunk in &taken.finished {
                    entries.remove(&chunk.entry);
                }
                drop(entries);
                self.measure(&taken.finished, now);
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
            if failures > 0 {
                tokio::time::sleep(backoff(failures).max(FLUSH_EVERY)).await;
            } else {
                // A completed chunk is acked at once (freeing its slot for the
                // next); partial progress is written every FLUSH_EVERY.
                tokio::select! {
                    _ = tokio::time::sleep(FLUSH_EVERY) => {}
                    _ = self.flush_now.notified() => {}
                }
            }
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

/// [`FLUSH_SCRIPT`] against a `redis-server` of the test's own
/// (`PUSHGATE_TEST_REDIS_SERVER` names another, as in `tests/cluster.rs`).
#[cfg(test)]
mod script {
    use std::process::{Child, Command, Stdio};
    use std::time::Duration;

    use redis::aio::MultiplexedConnection;

    use super::FLUSH_SCRIPT;

    struct Server(Child);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    async fn redis() -> (Server, MultiplexedConnection) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let bin = std::env::var("PUSHGATE_TEST_REDIS_SERVER").unwrap_or("redis-server".into());
        let child = Command::new(&bin)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin} (scripts/test installs it): {e}"));
        let server = Server(child);
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("url");
        for _ in 0..200 {
            if let Ok(conn) = client.get_multiplexed_async_connection().await {
                return (server, conn);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{bin} never answered on port {port}");
    }

    /// Adds entry `id` to stream `s` and has consumer `c` of group `g` read it.
    async fn read_entry(c: &mut MultiplexedConnection, id: &str) {
        let _: () = redis::cmd("XADD")
            .arg("s")
            .arg(id)
            .arg("c")
            .arg("{}")
            .query_async(c)
            .await
            .expect("XADD");
        let _: redis::Value = redis::cmd("XREADGROUP")
            .arg(&["GROUP", "g", "c", "COUNT", "1", "STREAMS", "s", ">"])
            .query_async(c)
            .await
            .expect("XREADGROUP");
    }

    /// Runs the script for `tokens` of chunk `entry` (`size` tokens), each a
    /// success, acking it when `ack`.
    async fn flush(
        c: &mut MultiplexedConnection,
        entry: &str,
        size: u64,
        tokens: &[&str],
        ack: bool,
    ) -> i64 {
        let mut call = redis::cmd("EVAL");
        call.arg(FLUSH_SCRIPT)
            .arg(2)
            .arg(format!("done:{entry}"))
            .arg("s")
            .arg(100)
            .arg(entry)
            .arg(if ack { "g" } else { "" })
            .arg("report")
            .arg("job")
            .arg(size);
        for token in tokens {
            call.arg(&[*token, "success", "success", "attempts", "", ""]);
        }
        call.query_async(c).await.expect("EVAL")
    }

    async fn counted(c: &mut MultiplexedConnection) -> (i64, i64, u64) {
        let report: Option<i64> = redis::cmd("HGET")
            .arg(&["report", "success"])
            .query_async(c)
            .await
            .expect("HGET");
        let job: Option<i64> = redis::cmd("HGET")
            .arg(&["job", "success"])
            .query_async(c)
            .await
            .expect("HGET");
        let stream: u64 = redis::cmd("XLEN")
            .arg("s")
            .query_async(c)
            .await
            .expect("XLEN");
        (report.unwrap_or(0), job.unwrap_or(0), stream)
    }

    #[tokio::test]
    async fn a_chunk_is_acked_only_once_its_done_set_holds_every_token() {
        let (_server, mut c) = redis().await;
        let _: () = redis::cmd("XGROUP")
            .arg(&["CREATE", "s", "g", "$", "MKSTREAM"])
            .query_async(&mut c)
            .await
            .expect("XGROUP");

        // All three outcomes in the acking call: counted, acked, deleted.
        read_entry(&mut c, "1-0").await;
        assert_eq!(flush(&mut c, "1-0", 3, &["a", "b", "c"], true).await, 0);
        assert_eq!(counted(&mut c).await, (3, 3, 0));

        // Across two calls, as when a chunk outlives a flush tick.
        read_entry(&mut c, "2-0").await;
        assert_eq!(flush(&mut c, "2-0", 3, &["a", "b"], false).await, 0);
        assert_eq!(counted(&mut c).await, (5, 5, 1));
        assert_eq!(flush(&mut c, "2-0", 3, &["c"], true).await, 0);
        assert_eq!(counted(&mut c).await, (6, 6, 0));

        // The first call was lost (a failover before the replica had it):
        // the last call counts its own token and leaves the chunk pending.
        read_entry(&mut c, "3-0").await;
        assert_eq!(flush(&mut c, "3-0", 3, &["c"], true).await, 1);
        assert_eq!(counted(&mut c).await, (7, 7, 1));
        let done: Vec<String> = redis::cmd("SMEMBERS")
            .arg("done:3-0")
            .query_async(&mut c)
            .await
            .expect("SMEMBERS");
        assert_eq!(done, ["c"]);
        let pending: Vec<redis::Value> = redis::cmd("XPENDING")
            .arg(&["s", "g", "-", "+", "10"])
            .query_async(&mut c)
            .await
            .expect("XPENDING");
        assert_eq!(pending.len(), 1, "the chunk stays pending, to be reclaimed");
        // The reclaiming gateway sends `a` and `b`; `c` counts once.
        assert_eq!(flush(&mut c, "3-0", 3, &["a", "b", "c"], true).await, 0);
        assert_eq!(counted(&mut c).await, (9, 9, 0));
    }
}
