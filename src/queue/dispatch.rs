//! [`DispatchQueue`]: one upstream's FIFO of [`Work`] (ranges of a job's
//! tokens, so a 100k-token job is one entry, not 100k), with a timer heap
//! for retries, so no task sleeps per token.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::job::{Job, Outcome};
use crate::outcome::Recorder;

/// How long a queue waits before looking again at a job held by its lease.
const LEASE_WAIT: Duration = Duration::from_millis(10);

/// Some consecutive tokens of one job, all at the same attempt number.
#[derive(Debug)]
pub struct Work<M> {
    /// The job, shared with every other piece of it.
    pub job: Arc<Job<M>>,
    /// Token indices into `job.tokens`.
    pub tokens: Range<u32>,
    /// Attempts already made for these tokens (0 for fresh work).
    pub attempts: u32,
}

impl<M> Work<M> {
    /// Every token of a fresh job.
    pub fn whole(job: Arc<Job<M>>) -> Self {
        let tokens = job.all();
        Self {
            job,
            tokens,
            attempts: 0,
        }
    }

    /// One token of `job`.
    pub fn single(job: Arc<Job<M>>, index: u32, attempts: u32) -> Self {
        Self {
            job,
            tokens: index..index + 1,
            attempts,
        }
    }

    fn len(&self) -> usize {
        self.tokens.len()
    }
}

/// A FIFO of work for one upstream, with a timer heap for retries.
#[derive(Debug)]
pub struct DispatchQueue<M> {
    state: Mutex<State<M>>,
    notify: Notify,
    closed: AtomicBool,
}

#[derive(Debug)]
struct State<M> {
    ready: VecDeque<Work<M>>,
    ready_tokens: usize,
    delayed: BinaryHeap<Delayed<M>>,
    delayed_tokens: usize,
    sequence: u64,
}

#[derive(Debug)]
struct Delayed<M> {
    due: Instant,
    sequence: u64,
    work: Work<M>,
}

// Min-heap on (due, sequence): the earliest retry first, FIFO among equals.
impl<M> Ord for Delayed<M> {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.due, other.sequence).cmp(&(self.due, self.sequence))
    }
}
impl<M> PartialOrd for Delayed<M> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl<M> PartialEq for Delayed<M> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl<M> Eq for Delayed<M> {}

impl<M> Default for DispatchQueue<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M> DispatchQueue<M> {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                ready: VecDeque::new(),
                ready_tokens: 0,
                delayed: BinaryHeap::new(),
                delayed_tokens: 0,
                sequence: 0,
            }),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<M>> {
        crate::floor::lock(&self.state)
    }

    /// Queues fresh work: `ranges` of `job`'s tokens, none attempted yet.
    pub fn push_ranges(&self, job: &Arc<Job<M>>, ranges: Vec<Range<u32>>) {
        for tokens in ranges {
            self.push(Work {
                job: job.clone(),
                tokens,
                attempts: 0,
            });
        }
    }

    /// Appends work at the back.
    pub fn push(&self, work: Work<M>) {
        if work.len() == 0 {
            return;
        }
        {
            let mut state = self.lock();
            state.ready_tokens += work.len();
            state.ready.push_back(work);
        }
        self.notify.notify_waiters();
    }

    /// Puts work back at the front: it was taken but never reached the upstream
    /// (GOAWAY, connection lost before sending), so it keeps its place in line.
    pub fn push_front(&self, work: Work<M>) {
        if work.len() == 0 {
            return;
        }
        {
            let mut state = self.lock();
            state.ready_tokens += work.len();
            state.ready.push_front(work);
        }
        self.notify.notify_waiters();
    }

    /// Schedules work to become ready after `delay`.
    pub fn push_after(&self, work: Work<M>, delay: Duration) {
        if delay.is_zero() {
            return self.push(work);
        }
        {
            let mut state = self.lock();
            state.sequence += 1;
            let sequence = state.sequence;
            state.delayed_tokens += work.len();
            state.delayed.push(Delayed {
                due: Instant::now() + delay,
                sequence,
                work,
            });
        }
        // A waiter may be sleeping until a later due time: let it recompute.
        self.notify.notify_waiters();
    }

    /// Takes up to `max_tokens` tokens of one job from the front, without waiting.
    pub fn try_pop(&self, max_tokens: usize) -> Option<Work<M>> {
        self.try_pop_or_next_due(max_tokens).ok()
    }

    fn try_pop_or_next_due(&self, max_tokens: usize) -> Result<Work<M>, Option<Instant>> {
        let mut state = self.lock();
        let now = Instant::now();
        while state.delayed.peek().is_some_and(|d| d.due <= now) {
            if let Some(d) = state.delayed.pop() {
                state.delayed_tokens -= d.work.len();
                state.ready_tokens += d.work.len();
                state.ready.push_back(d.work);
            }
        }
        let Some(front) = state.ready.front_mut() else {
            return Err(state.delayed.peek().map(|d| d.due));
        };
        // A durable backend bounds how far into a job work may be handed
        // out before it has recorded that; it raises the bound within one
        // flush. Retries (below the bound) are never held.
        let lease = front.job.progress.lease();
        if front.tokens.start >= lease {
            return Err(Some(now + LEASE_WAIT));
        }
        let max = max_tokens.max(1).min((lease - front.tokens.start) as usize);
        let work = if front.len() <= max {
            state.ready.pop_front()
        } else {
            let start = front.tokens.start;
            let split = start + u32::try_from(max).unwrap_or(u32::MAX);
            front.tokens.start = split;
            Some(Work {
                job: front.job.clone(),
                tokens: start..split,
                attempts: front.attempts,
            })
        };
        match work {
            Some(work) => {
                state.ready_tokens -= work.len();
                work.job.progress.hand_out(work.tokens.end);
                Ok(work)
            }
            None => Err(None),
        }
    }

    /// Waits for up to `max_tokens` tokens of one job. Returns `None` once the
    /// queue is closed. Cancel-safe: dropping the future loses nothing.
    pub async fn pop(&self, max_tokens: usize) -> Option<Work<M>> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register before looking, so a push between the look and the wait
            // still wakes us.
            notified.as_mut().enable();
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            match self.try_pop_or_next_due(max_tokens) {
                Ok(work) => return Some(work),
                Err(Some(due)) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(due) => {}
                    }
                }
                Err(None) => notified.await,
            }
        }
    }

    /// [`DispatchQueue::pop`] for a worker that sends its work as one
    /// request: the work ends before the first token whose personal fields
    /// (`POST /send`'s per-target `data`) differ from its first token's,
    /// and the rest goes back to the front.
    pub async fn pop_alike(&self, max_tokens: usize) -> Option<Work<M>> {
        let mut work = self.pop(max_tokens).await?;
        let first = work.job.personal_of(work.tokens.start);
        let cut =
            (work.tokens.start + 1..work.tokens.end).find(|&i| work.job.personal_of(i) != first);
        if let Some(cut) = cut {
            let rest = Work {
                job: work.job.clone(),
                tokens: cut..work.tokens.end,
                attempts: work.attempts,
            };
            work.tokens.end = cut;
            self.push_front(rest);
        }
        Some(work)
    }

    /// Tokens waiting: ready plus scheduled for retry.
    pub fn depth(&self) -> usize {
        let state = self.lock();
        state.ready_tokens + state.delayed_tokens
    }

    /// Tokens ready to send now.
    pub fn ready_depth(&self) -> usize {
        self.lock().ready_tokens
    }

    /// Wakes every waiter with `None`; work still queued stays where it is.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// True once [`DispatchQueue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Resolves once the queue is closed.
    pub async fn closed(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Ends everything still queued (ready and delayed) as expired, reason
    /// `Shutdown`, so the books balance when the process exits with work left.
    /// Returns how many tokens.
    pub fn abandon(&self, recorder: &Recorder) -> u64 {
        let shutdown = Outcome::Expired {
            reason: "Shutdown".into(),
        };
        self.drain_all()
            .into_iter()
            .map(|work| recorder.finish_unsent(&work.job, work.tokens, &shutdown))
            .sum()
    }

    /// Drops everything still queued without recording an outcome: the
    /// backend keeps those tokens for the next start. Returns how many.
    pub fn forget(&self) -> u64 {
        self.drain_all().iter().map(|w| w.len() as u64).sum()
    }

    /// Takes everything still queued (ready and delayed), for shutdown accounting.
    pub fn drain_all(&self) -> Vec<Work<M>> {
        let mut state = self.lock();
        state.ready_tokens = 0;
        state.delayed_tokens = 0;
        let mut all: Vec<Work<M>> = state.ready.drain(..).collect();
        all.extend(state.delayed.drain().map(|d| d.work));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobId, JobProgress, TokenList};

    fn job(n: usize) -> Arc<Job<()>> {
        let mut tokens = TokenList::default();
        for i in 0..n {
            tokens.push(&i.to_le_bytes());
        }
        let id = JobId::new();
        Arc::new(Job {
            id,
            app: "default".into(),
            message: (),
            fields: Arc::from(&[][..]),
            tokens,
            progress: Arc::new(JobProgress::new(id, crate::job::test::PLATFORM, n as u64)),
            expires_at: None,
        })
    }

    #[test]
    fn pop_splits_ranges_without_losing_tokens() {
        let q = DispatchQueue::new();
        q.push(Work::whole(job(2500)));
        let mut seen = 0;
        while let Some(w) = q.try_pop(1000) {
            assert!(w.tokens.len() <= 1000);
            seen += w.tokens.len();
        }
        assert_eq!(seen, 2500);
        assert_eq!(q.depth(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_work_becomes_ready_when_due() {
        let q = DispatchQueue::new();
        q.push_after(Work::single(job(1), 0, 1), Duration::from_secs(5));
        assert_eq!(q.depth(), 1);
        assert!(q.try_pop(10).is_none());
        let w = q.pop(10).await.expect("due work");
        assert_eq!(w.attempts, 1);
        assert_eq!(q.depth(), 0);
    }

    #[tokio::test]
    async fn pop_wakes_on_push_and_returns_none_when_closed() {
        let q = Arc::new(DispatchQueue::new());
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.pop(10).await.map(|w| w.tokens.len()) }
        });
        tokio::task::yield_now().await;
        q.push(Work::whole(job(3)));
        assert_eq!(waiter.await.expect("join"), Some(3));
        q.close();
        assert!(q.pop(1).await.is_none());
    }

    #[test]
    fn push_front_keeps_requeued_work_first() {
        let q = DispatchQueue::new();
        let a = job(1);
        let b = job(1);
        q.push(Work::whole(a.clone()));
        q.push_front(Work::whole(b.clone()));
        let first = q.try_pop(1).expect("work");
        assert!(Arc::ptr_eq(&first.job, &b));
    }

    #[tokio::test]
    async fn pop_alike_keeps_tokens_with_other_personal_fields_out_of_a_batch() {
        let mut tokens = TokenList::default();
        for t in [&b"a"[..], b"b\0{\"badge\":1}", b"c\0{\"badge\":1}", b"d"] {
            tokens.push(t);
        }
        let id = JobId::new();
        let job = Arc::new(Job {
            id,
            app: "default".into(),
            message: (),
            fields: Arc::from(&[][..]),
            tokens,
            progress: Arc::new(JobProgress::new(id, crate::job::test::PLATFORM, 4)),
            expires_at: None,
        });
        let q = DispatchQueue::new();
        q.push(Work::whole(job));
        let mut batches = Vec::new();
        while q.depth() > 0 {
            batches.push(q.pop_alike(10).await.expect("work").tokens);
        }
        assert_eq!(batches, vec![0..1, 1..3, 3..4]);
    }
}
