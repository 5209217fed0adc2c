//! The job table: this gateway's recent jobs, by id (`GET /jobs/{id}`), in
//! order (`GET /jobs`): unfinished ones by admission, finished ones by finish
//! time. Bounded twice: `report.max_jobs` entries (the oldest finished job
//! goes first, then the oldest unfinished one) and `server.job_retention_s`
//! (a finished job older than that is forgotten the next time the table is
//! touched). Nothing here scans the finished jobs: a list reads the newest
//! `limit` of them, a prune pops the oldest.
//!
//! It also keeps, for `pushgate_oldest_pending_seconds`, the chunks of shared
//! jobs this gateway holds (backend `redis`): not jobs, never listed.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::books::JobFilter;
use crate::floor::{lock, now_ms};
use crate::job::{JobId, JobProgress};

/// Unfinished jobs looked at, at most, to find the oldest pending one.
const OLDEST_SCAN: usize = 10_000;

/// See the module documentation.
#[derive(Debug)]
pub struct JobTable {
    inner: Mutex<Inner>,
    max: usize,
    retention_ms: u64,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<JobId, (u64, Arc<JobProgress>)>,
    /// Unfinished jobs by admission order (their sequence number).
    live: BTreeMap<u64, JobId>,
    /// Finished jobs in the order they finished, with when (ms).
    done: VecDeque<(u64, JobId)>,
    next_seq: u64,
    /// Chunks of shared jobs held here: (due since, the chunk's address).
    chunks: BTreeSet<(u64, usize)>,
}

impl Inner {
    fn forget_oldest(&mut self) {
        if let Some((_, id)) = self.done.pop_front() {
            self.by_id.remove(&id);
        } else if let Some((_, id)) = self.live.pop_first() {
            self.by_id.remove(&id);
        }
    }

    /// Forgets finished jobs that finished before `cutoff` (ms).
    fn prune(&mut self, cutoff: u64) {
        while let Some(&(at, id)) = self.done.front() {
            if at >= cutoff {
                break;
            }
            self.done.pop_front();
            self.by_id.remove(&id);
        }
    }
}

impl JobTable {
    /// A table of at most `max` jobs, finished ones kept for `retention`.
    pub fn new(max: usize, retention: Duration) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            max: max.max(1),
            retention_ms: u64::try_from(retention.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The oldest finish time a job may have and still be kept, now.
    fn cutoff(&self) -> u64 {
        now_ms().saturating_sub(self.retention_ms)
    }

    /// Remembers a job: an unfinished one by admission, a finished one (as
    /// a store recovered it: give them oldest first) by its finish time.
    pub fn insert(&self, progress: Arc<JobProgress>) {
        let cutoff = self.cutoff();
        let mut inner = lock(&self.inner);
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let id = progress.id;
        match progress.finished_ms() {
            Some(at) if progress.pending() == 0 => {
                if at < cutoff {
                    return;
                }
                inner.done.push_back((at, id));
            }
            _ => {
                inner.live.insert(seq, id);
            }
        }
        if let Some((old_seq, _)) = inner.by_id.insert(id, (seq, progress)) {
            // The same job again (a recovered one re-inserted): one entry.
            inner.live.remove(&old_seq);
        }
        while inner.by_id.len() > self.max {
            inner.forget_oldest();
        }
        inner.prune(cutoff);
    }

    /// Moves a job whose last token just finished to the finished ones.
    pub fn finished(&self, progress: &JobProgress) {
        let cutoff = self.cutoff();
        let mut inner = lock(&self.inner);
        let Some(&(seq, _)) = inner.by_id.get(&progress.id) else {
            return;
        };
        if inner.live.remove(&seq).is_some() {
            let at = progress.finished_ms().unwrap_or_else(now_ms);
            inner.done.push_back((at, progress.id));
        }
        inner.prune(cutoff);
    }

    /// A job's progress, if still remembered.
    pub fn get(&self, id: &JobId) -> Option<Arc<JobProgress>> {
        let cutoff = self.cutoff();
        let mut inner = lock(&self.inner);
        inner.prune(cutoff);
        inner.by_id.get(id).map(|(_, p)| p.clone())
    }

    /// Up to `limit` jobs `filter` admits, newest first: unfinished ones by
    /// admission, then finished ones by finish time. Reads at most `limit`
    /// finished jobs, whatever the table holds.
    pub fn list(&self, filter: JobFilter, limit: usize) -> Vec<Arc<JobProgress>> {
        let cutoff = self.cutoff();
        let mut inner = lock(&self.inner);
        inner.prune(cutoff);
        let mut out = Vec::new();
        if filter != JobFilter::Done {
            for id in inner.live.values().rev() {
                if out.len() >= limit {
                    break;
                }
                if let Some((_, p)) = inner.by_id.get(id)
                    && filter.admits(p.state())
                {
                    out.push(p.clone());
                }
            }
        }
        if matches!(filter, JobFilter::Done | JobFilter::All) {
            for (_, id) in inner.done.iter().rev() {
                if out.len() >= limit {
                    break;
                }
                if let Some((_, p)) = inner.by_id.get(id) {
                    out.push(p.clone());
                }
            }
        }
        out
    }

    /// Unfinished jobs in the table, and finished ones.
    pub fn sizes(&self) -> (usize, usize) {
        let inner = lock(&self.inner);
        (inner.live.len(), inner.done.len())
    }

    /// Notes a chunk of a shared job taken here, until its last token finishes.
    pub fn hold_chunk(&self, progress: &JobProgress) {
        let key = (progress.running_since_ms(), chunk_key(progress));
        lock(&self.inner).chunks.insert(key);
    }

    /// Forgets a chunk whose last token finished.
    pub fn release_chunk(&self, progress: &JobProgress) {
        let key = (progress.running_since_ms(), chunk_key(progress));
        lock(&self.inner).chunks.remove(&key);
    }

    /// Since when (ms since the epoch) the oldest unfinished token here has
    /// been due: the oldest job that is not waiting for its `send_at`, or
    /// the oldest chunk held. `None` when nothing is pending.
    pub fn oldest_pending_since(&self) -> Option<u64> {
        let inner = lock(&self.inner);
        let mut oldest = inner.chunks.first().map(|(since, _)| *since);
        // By admission: a job never held is due since its acceptance, so no
        // later one can be older; one released from `send_at` may be newer.
        for id in inner.live.values().take(OLDEST_SCAN) {
            let Some((_, p)) = inner.by_id.get(id) else {
                continue;
            };
            if p.is_scheduled() || p.pending() == 0 {
                continue;
            }
            let since = p.running_since_ms();
            oldest = Some(oldest.map_or(since, |o| o.min(since)));
            if since <= p.accepted_ms() {
                break;
            }
        }
        oldest
    }
}

/// A chunk's identity while it is held: its progress' address.
fn chunk_key(progress: &JobProgress) -> usize {
    progress as *const JobProgress as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{OutcomeKind, test::PLATFORM};

    fn job(total: u64) -> Arc<JobProgress> {
        Arc::new(JobProgress::new(JobId::new(), PLATFORM, total))
    }

    fn finish(table: &JobTable, p: &JobProgress) {
        while p.pending() > 0 {
            p.record(OutcomeKind::Success);
        }
        table.finished(p);
    }

    #[test]
    fn forgets_the_oldest_finished_job_first_then_the_oldest_unfinished() {
        let table = JobTable::new(2, Duration::from_secs(3600));
        let (a, b, c) = (job(1), job(1), job(1));
        table.insert(a.clone());
        table.insert(b.clone());
        finish(&table, &b);
        table.insert(c.clone());
        assert!(table.get(&b.id).is_none(), "the finished one went first");
        assert!(table.get(&a.id).is_some() && table.get(&c.id).is_some());
        table.insert(job(1));
        assert!(table.get(&a.id).is_none(), "then the oldest unfinished one");
    }

    #[test]
    fn lists_newest_first_by_state() {
        let table = JobTable::new(100, Duration::from_secs(3600));
        let jobs: Vec<_> = (0..5).map(|_| job(2)).collect();
        for p in &jobs {
            table.insert(p.clone());
        }
        jobs[4].set_scheduled(true);
        finish(&table, &jobs[1]);
        finish(&table, &jobs[0]);
        let ids = |f, n| -> Vec<JobId> { table.list(f, n).iter().map(|p| p.id).collect() };
        assert_eq!(ids(JobFilter::Running, 10), vec![jobs[3].id, jobs[2].id]);
        assert_eq!(ids(JobFilter::Running, 1), vec![jobs[3].id]);
        assert_eq!(ids(JobFilter::Scheduled, 10), vec![jobs[4].id]);
        assert_eq!(ids(JobFilter::Done, 10), vec![jobs[0].id, jobs[1].id]);
        assert_eq!(
            ids(JobFilter::All, 10),
            vec![jobs[4].id, jobs[3].id, jobs[2].id, jobs[0].id, jobs[1].id]
        );
        assert_eq!(ids(JobFilter::All, 4).len(), 4);
    }

    #[test]
    fn finished_jobs_past_retention_are_forgotten() {
        let table = JobTable::new(100, Duration::ZERO);
        let p = job(1);
        table.insert(p.clone());
        assert!(table.get(&p.id).is_some(), "a running job stays");
        p.record(OutcomeKind::Success);
        table.finished(&p);
        std::thread::sleep(Duration::from_millis(2));
        assert!(table.get(&p.id).is_none());
        assert_eq!(table.sizes(), (0, 0));
        // A recovered job that finished long ago is not even kept.
        let old =
            Arc::new(JobProgress::new(JobId::new(), PLATFORM, 1).finished_at(now_ms() - 10_000));
        old.restore([1, 0, 0, 0, 0, 0]);
        table.insert(old.clone());
        assert!(table.get(&old.id).is_none());
    }

    #[test]
    fn the_oldest_pending_counts_from_release_and_includes_chunks() {
        let table = JobTable::new(100, Duration::from_secs(3600));
        assert_eq!(table.oldest_pending_since(), None);
        let held = job(1);
        held.set_scheduled(true);
        table.insert(held.clone());
        assert_eq!(
            table.oldest_pending_since(),
            None,
            "a scheduled job is not due"
        );
        let running = job(1);
        table.insert(running.clone());
        assert_eq!(
            table.oldest_pending_since(),
            Some(running.running_since_ms())
        );
        let chunk = JobProgress::new(JobId::new(), PLATFORM, 1).as_chunk();
        table.hold_chunk(&chunk);
        let since = table.oldest_pending_since().unwrap_or(u64::MAX);
        assert!(since <= running.running_since_ms());
        table.release_chunk(&chunk);
        finish(&table, &running);
        assert_eq!(table.oldest_pending_since(), None);
    }
}
