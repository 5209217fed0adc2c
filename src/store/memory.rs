//! The `memory` store: nothing outlives the process. Its lists are bounded
//! in memory here; its counters and jobs are this gateway's own books
//! ([`crate::report::Reports`]), so it reads none of its own. Its kept
//! idempotency answers and groups are maps here ([`kept`]).

mod kept;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::flights::Flights;
use super::keys::{Claim, Found, IdemKey, KeepIf, Kept, Owner, Taken};
use super::{AdmitError, Admitted, NewJob, Store, StoreError, StoreFuture, Submission};
use crate::books::{CanonicalEntry, FailureEntry, ListEntry, ListKind, UnregisteredEntry};
use crate::floor::{lock, now_ms};
use crate::job::{Family, JobId, JobProgress, TokenList};
use crate::outcome::{Finished, Sink};
use crate::queue::Admission;

/// A list with a size bound: oldest entries are dropped first, and counted.
#[derive(Debug)]
pub struct BoundedList<T> {
    entries: Mutex<VecDeque<T>>,
    max: usize,
    dropped: AtomicU64,
}

impl<T> BoundedList<T> {
    /// A list keeping at most `max` entries.
    pub fn new(max: usize) -> Self {
        Self {
            entries: Mutex::new(VecDeque::new()),
            max,
            dropped: AtomicU64::new(0),
        }
    }

    /// Appends, dropping the oldest entry when full. Returns true if one was dropped.
    pub fn push(&self, entry: T) -> bool {
        let mut entries = lock(&self.entries);
        let dropped = if entries.len() >= self.max {
            entries.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        };
        if self.max > 0 {
            entries.push_back(entry);
        }
        dropped
    }

    /// Takes every entry, leaving the list empty, in one step: nothing added
    /// concurrently is lost, it lands in the next drain.
    pub fn drain(&self) -> Vec<T> {
        lock(&self.entries).drain(..).collect()
    }

    /// Entries dropped so far because the list was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: Clone> BoundedList<T> {
    /// A copy of the entries, oldest first.
    pub fn snapshot(&self) -> Vec<T> {
        lock(&self.entries).iter().cloned().collect()
    }
}

/// One family's app's lists, in [`ListKind::ALL`] order.
#[derive(Debug)]
pub struct Lists([BoundedList<ListEntry>; 3]);

impl Lists {
    fn new(max: usize) -> Self {
        Self(ListKind::ALL.map(|_| BoundedList::new(max)))
    }

    /// One of the lists.
    pub fn get(&self, kind: ListKind) -> &BoundedList<ListEntry> {
        &self.0[kind as usize]
    }

    /// A copy of the unregistered list, oldest first.
    pub fn unregistered(&self) -> Vec<UnregisteredEntry> {
        self.snapshot(ListKind::Unregistered, |e| match e {
            ListEntry::Unregistered(u) => Some(u),
            _ => None,
        })
    }

    /// A copy of the failures list, oldest first.
    pub fn failures(&self) -> Vec<FailureEntry> {
        self.snapshot(ListKind::Failures, |e| match e {
            ListEntry::Failure(f) => Some(f),
            _ => None,
        })
    }

    /// A copy of the canonical list, oldest first.
    pub fn canonical(&self) -> Vec<CanonicalEntry> {
        self.snapshot(ListKind::Canonical, |e| match e {
            ListEntry::Canonical(c) => Some(c),
            _ => None,
        })
    }

    fn snapshot<T>(&self, kind: ListKind, pick: impl Fn(ListEntry) -> Option<T>) -> Vec<T> {
        self.get(kind)
            .snapshot()
            .into_iter()
            .filter_map(pick)
            .collect()
    }
}

/// A family's app.
type AppKey = (Family, Arc<str>);

/// Room for `n` more tokens in this gateway's bound, all or nothing.
pub(super) fn reserve(admission: &Admission, n: u64) -> Result<(), AdmitError> {
    admission.try_admit(n).map_err(|full| AdmitError::Full {
        pending: full.pending,
        capacity: full.capacity,
        wanted: full.wanted,
    })
}

/// The `memory` store.
#[derive(Debug)]
pub struct MemoryStore {
    admission: Arc<Admission>,
    max_list: usize,
    lists: Mutex<HashMap<AppKey, Arc<Lists>>>,
    list_dropped: Option<prometheus::IntCounterVec>,
    /// `server.job_retention_s`: how long a group outlives its send time.
    retention: std::time::Duration,
    flights: Flights,
    kepts: Mutex<kept::Kepts>,
}

impl MemoryStore {
    /// A store bounded by `admission`, keeping `max_list` entries per list;
    /// entries dropped because a list was full are counted in `list_dropped`
    /// (labels: platform, outcome).
    pub fn new(
        admission: Arc<Admission>,
        max_list: usize,
        list_dropped: Option<prometheus::IntCounterVec>,
    ) -> Self {
        Self {
            admission,
            max_list,
            lists: Mutex::default(),
            list_dropped,
            retention: std::time::Duration::from_secs(7 * 24 * 3600),
            flights: Flights::default(),
            kepts: Mutex::default(),
        }
    }

    /// The same, keeping groups `retention` (`server.job_retention_s`)
    /// past their send time.
    pub fn retaining(mut self, retention: std::time::Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Writes a submission's claim and group, if its key is free; under the
    /// one lock, so two claims of one key never both succeed.
    fn keep_submission(&self, submission: &Submission) -> Result<(), Taken> {
        let now = now_ms();
        let mut kepts = lock(&self.kepts);
        if let Some(claim) = submission.claim() {
            if let Some(kept) = kepts.answer(&claim.key, now) {
                return Err(Taken::Kept(Box::new(kept.clone())));
            }
            kepts.put(&claim.key, claim.kept.clone(), now);
            self.flights.end(&claim.key, claim.owner);
        }
        if let Some(group) = submission.group_id() {
            let ids = submission.jobs().iter().map(|p| p.id).collect();
            let keep = self.retention + submission.longest_delay();
            let expires = now.saturating_add(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX));
            kepts.put_group(group, ids, expires, now);
        }
        Ok(())
    }

    /// Writes a stream's claim when its key is free.
    fn keep_claim(&self, claim: Option<&Claim>) -> Result<(), Taken> {
        let Some(claim) = claim else {
            return Ok(());
        };
        let now = now_ms();
        let mut kepts = lock(&self.kepts);
        if let Some(kept) = kepts.answer(&claim.key, now) {
            return Err(Taken::Kept(Box::new(kept.clone())));
        }
        kepts.put(&claim.key, claim.kept.clone(), now);
        self.flights.end(&claim.key, claim.owner);
        Ok(())
    }

    /// The lists of a family's app (empty ones if it never had an entry).
    pub fn lists(&self, family: Family, app: &str) -> Arc<Lists> {
        let mut lists = lock(&self.lists);
        if let Some(l) = lists.get(&(family, Arc::from(app))) {
            return l.clone();
        }
        let l = Arc::new(Lists::new(self.max_list));
        lists.insert((family, Arc::from(app)), l.clone());
        l
    }
}

impl MemoryStore {
    /// [`Store::reserve`], at once: the reservation first, then the kept
    /// answer, so a request that reserves after another's answer was kept
    /// (and its reservation ended) still finds that answer.
    fn reserve_now(&self, key: &IdemKey, owner: Owner) -> Found {
        if !self.flights.take(key, owner) {
            return Found::InFlight;
        }
        match lock(&self.kepts).answer(key, now_ms()) {
            Some(kept) => {
                let kept = kept.clone();
                self.flights.end(key, owner);
                Found::Kept(kept)
            }
            None => Found::Reserved,
        }
    }
}

impl Sink for MemoryStore {
    fn finished(&self, f: &Finished<'_>) {
        let Some(entry) = f.posting().entry else {
            return;
        };
        let lists = self.lists(f.progress.platform.family(), &f.progress.app);
        if lists.get(entry.list()).push(entry)
            && let Some(counter) = &self.list_dropped
        {
            counter
                .with_label_values(&[f.progress.platform.as_str(), f.outcome.kind().as_str()])
                .inc();
        }
    }
}

impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn fate(&self) -> &'static str {
        "dropped with this process (backend memory)"
    }

    fn keeps_unsent(&self) -> bool {
        false
    }

    fn problem(&self) -> Option<String> {
        None
    }

    fn admit<'a>(
        &'a self,
        submission: &'a Submission,
    ) -> StoreFuture<'a, Result<Vec<Admitted>, AdmitError>> {
        Box::pin(async move {
            let total = submission.tokens();
            reserve(&self.admission, total)?;
            if let Err(taken) = self.keep_submission(submission) {
                self.admission.release(total);
                return Err(AdmitError::KeyTaken(taken));
            }
            Ok(submission
                .jobs()
                .iter()
                .map(|p| {
                    let job = &p.job;
                    let progress = JobProgress::for_app(
                        p.id,
                        job.platform,
                        job.app.clone(),
                        job.tokens.len() as u64,
                    )
                    .with_notif_id(job.notif_id.clone());
                    Admitted::Here(Arc::new(progress))
                })
                .collect())
        })
    }

    fn open_stream<'a>(
        &'a self,
        id: JobId,
        job: &'a NewJob,
        claim: Option<&'a Claim>,
    ) -> StoreFuture<'a, Result<Admitted, AdmitError>> {
        Box::pin(async move {
            self.keep_claim(claim).map_err(AdmitError::KeyTaken)?;
            let progress = JobProgress::for_app(id, job.platform, job.app.clone(), 0)
                .with_notif_id(job.notif_id.clone())
                .streaming();
            Ok(Admitted::Here(Arc::new(progress)))
        })
    }

    fn group(&self, id: JobId) -> StoreFuture<'_, Result<Option<Vec<JobId>>, StoreError>> {
        Box::pin(async move { Ok(lock(&self.kepts).group(id, now_ms())) })
    }

    fn reserve<'a>(
        &'a self,
        key: &'a IdemKey,
        owner: Owner,
    ) -> StoreFuture<'a, Result<Found, StoreError>> {
        Box::pin(async move { Ok(self.reserve_now(key, owner)) })
    }

    fn keep<'a>(
        &'a self,
        key: &'a IdemKey,
        kept: &'a Kept,
        when: KeepIf,
    ) -> StoreFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let now = now_ms();
            let mut kepts = lock(&self.kepts);
            let allowed = match (when, kepts.answer(key, now)) {
                (KeepIf::Free(_), None) => true,
                (KeepIf::Bound(job), Some(old)) => old.is_bound_to(job),
                _ => false,
            };
            if allowed {
                kepts.put(key, kept.clone(), now);
            }
            if let KeepIf::Free(owner) = when {
                self.flights.end(key, owner);
            }
            Ok(allowed)
        })
    }

    fn release<'a>(&'a self, key: &'a IdemKey, owner: Owner) -> StoreFuture<'a, ()> {
        self.flights.end(key, owner);
        Box::pin(async {})
    }

    fn append<'a>(
        &'a self,
        _id: JobId,
        _job: &'a NewJob,
        tokens: &'a TokenList,
    ) -> StoreFuture<'a, Result<(), AdmitError>> {
        Box::pin(async move { reserve(&self.admission, tokens.len() as u64) })
    }

    fn close_stream(
        &self,
        _id: JobId,
        _truncated: bool,
    ) -> StoreFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn list<'a>(
        &'a self,
        family: Family,
        app: &'a str,
        list: ListKind,
        drain: bool,
    ) -> StoreFuture<'a, Result<Vec<Value>, StoreError>> {
        Box::pin(async move {
            let lists = self.lists(family, app);
            let list = lists.get(list);
            let taken = if drain { list.drain() } else { list.snapshot() };
            Ok(taken
                .into_iter()
                .filter_map(|e| serde_json::to_value(e).ok())
                .collect())
        })
    }

    fn list_stats(&self, family: Family, app: &str, list: ListKind) -> (usize, u64) {
        let lists = self.lists(family, app);
        let list = lists.get(list);
        (list.len(), list.dropped())
    }

    fn cancel<'a>(
        &'a self,
        _id: JobId,
        local: Option<&'a JobProgress>,
    ) -> StoreFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move { Ok(local.is_some()) })
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::floor::DEFAULT_APP;
    use crate::job::Outcome;
    use crate::outcome::Recorder;

    #[test]
    fn lists_keep_the_entries_the_books_map_outcomes_to() {
        let store = Arc::new(MemoryStore::new(Arc::new(Admission::new(10)), 10, None));
        let recorder = Recorder::new(vec![store.clone()]);
        let p = JobProgress::new(JobId::new(), crate::job::test::PLATFORM, 3);
        recorder.finish_shown(&p, 0, "t0", Outcome::Success, true, None);
        let gone = Outcome::Unregistered {
            timestamp_ms: Some(7),
        };
        recorder.finish_shown(&p, 1, "t1", gone, true, None);
        let failed = Outcome::Failed {
            reason: "InvalidRegistration".into(),
            status: 400,
        };
        recorder.finish_shown(&p, 2, "t2", failed, true, None);
        let lists = store.lists(crate::job::test::FAMILY, DEFAULT_APP);
        assert_eq!(
            lists.unregistered(),
            vec![UnregisteredEntry {
                token: "t1".into(),
                timestamp: 7
            }]
        );
        assert_eq!(lists.failures().len(), 1);
        assert_eq!(lists.failures()[0].token, "t2");
        assert_eq!(
            store.list_stats(crate::job::test::FAMILY, DEFAULT_APP, ListKind::Canonical),
            (0, 0)
        );
    }

    #[test]
    fn bounded_list_drops_oldest_and_drains_atomically() {
        let list = BoundedList::new(2);
        assert!(!list.push(1));
        assert!(!list.push(2));
        assert!(list.push(3));
        assert_eq!(list.dropped(), 1);
        assert_eq!(list.drain(), vec![2, 3]);
        assert!(list.is_empty());
    }
}
