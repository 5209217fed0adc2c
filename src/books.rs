//! The nouns of the books, shared by every backend and the reports: the
//! running [`Counters`], the entries of the drainable lists ([`ListKind`]),
//! and a job's status as `GET /jobs/{id}` shows it ([`JobStatus`]).

use serde::{Deserialize, Serialize};

pub use crate::job::ListKind;
use crate::job::{JobProgress, Outcome, OutcomeKind};

/// Running totals for one family since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Tokens accepted.
    pub accepted: u64,
    /// Upstream answers (or transport failures) received, one per token attempt.
    pub attempts: u64,
    /// Attempts that were scheduled again.
    pub retries: u64,
    /// Accepted tokens without a terminal outcome yet.
    pub pending: u64,
    /// Outcome `success`.
    pub successes: u64,
    /// Outcome `failed`.
    pub failures: u64,
    /// Outcome `unregistered`.
    pub unregistered: u64,
    /// Outcome `canonical`.
    pub canonicals: u64,
    /// Outcome `expired`.
    pub expired: u64,
    /// Outcome `cancelled`.
    pub cancelled: u64,
    /// Terminal outcomes reached without an attempt (expired while queued,
    /// left when the process shut down).
    pub unattempted: u64,
    /// Tokens resent after their connection dropped mid-request.
    pub possible_duplicates: u64,
}

/// One running total, by the name every keeper of the books uses for it
/// (the JSON answers, the Redis hash fields, the disk row's order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// See [`Counters::accepted`].
    Accepted,
    /// See [`Counters::attempts`].
    Attempts,
    /// See [`Counters::retries`].
    Retries,
    /// See [`Counters::successes`].
    Successes,
    /// See [`Counters::failures`].
    Failures,
    /// See [`Counters::unregistered`].
    Unregistered,
    /// See [`Counters::canonicals`].
    Canonicals,
    /// See [`Counters::expired`].
    Expired,
    /// See [`Counters::cancelled`].
    Cancelled,
    /// See [`Counters::unattempted`].
    Unattempted,
    /// See [`Counters::possible_duplicates`].
    PossibleDuplicates,
}

impl Counter {
    /// Every counter, in the disk row's order.
    pub const ALL: [Counter; 11] = [
        Counter::Accepted,
        Counter::Attempts,
        Counter::Retries,
        Counter::Successes,
        Counter::Failures,
        Counter::Unregistered,
        Counter::Canonicals,
        Counter::Expired,
        Counter::Cancelled,
        Counter::Unattempted,
        Counter::PossibleDuplicates,
    ];

    /// Its field name (`successes`, `possible_duplicates`, …).
    pub fn name(self) -> &'static str {
        match self {
            Counter::Accepted => "accepted",
            Counter::Attempts => "attempts",
            Counter::Retries => "retries",
            Counter::Successes => "successes",
            Counter::Failures => "failures",
            Counter::Unregistered => "unregistered",
            Counter::Canonicals => "canonicals",
            Counter::Expired => "expired",
            Counter::Cancelled => "cancelled",
            Counter::Unattempted => "unattempted",
            Counter::PossibleDuplicates => "possible_duplicates",
        }
    }

    /// The counter a terminal outcome of `kind` adds to.
    pub fn of(kind: OutcomeKind) -> Self {
        match kind {
            OutcomeKind::Success => Counter::Successes,
            OutcomeKind::Failed => Counter::Failures,
            OutcomeKind::Unregistered => Counter::Unregistered,
            OutcomeKind::Canonical => Counter::Canonicals,
            OutcomeKind::Expired => Counter::Expired,
            OutcomeKind::Cancelled => Counter::Cancelled,
        }
    }
}

impl Counters {
    /// Counters read counter by counter (`pending` derived).
    pub fn from_fn(mut read: impl FnMut(Counter) -> u64) -> Self {
        let mut c = Counters::default();
        for counter in Counter::ALL {
            *c.slot(counter) = read(counter);
        }
        c.pending = c.accepted.saturating_sub(c.finished());
        c
    }

    /// The value of one counter.
    pub fn get(&self, counter: Counter) -> u64 {
        match counter {
            Counter::Accepted => self.accepted,
            Counter::Attempts => self.attempts,
            Counter::Retries => self.retries,
            Counter::Successes => self.successes,
            Counter::Failures => self.failures,
            Counter::Unregistered => self.unregistered,
            Counter::Canonicals => self.canonicals,
            Counter::Expired => self.expired,
            Counter::Cancelled => self.cancelled,
            Counter::Unattempted => self.unattempted,
            Counter::PossibleDuplicates => self.possible_duplicates,
        }
    }

    fn slot(&mut self, counter: Counter) -> &mut u64 {
        match counter {
            Counter::Accepted => &mut self.accepted,
            Counter::Attempts => &mut self.attempts,
            Counter::Retries => &mut self.retries,
            Counter::Successes => &mut self.successes,
            Counter::Failures => &mut self.failures,
            Counter::Unregistered => &mut self.unregistered,
            Counter::Canonicals => &mut self.canonicals,
            Counter::Expired => &mut self.expired,
            Counter::Cancelled => &mut self.cancelled,
            Counter::Unattempted => &mut self.unattempted,
            Counter::PossibleDuplicates => &mut self.possible_duplicates,
        }
    }

    /// Every counter with its value (without `pending`, which is derived).
    pub fn iter(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        Counter::ALL.into_iter().map(|c| (c, self.get(c)))
    }

    /// Adds the counts of a posting; `pending` stays `accepted − finished`.
    pub fn post(&mut self, posting: &Posting) {
        for (counter, n) in posting.counts() {
            *self.slot(counter) += n;
        }
        self.pending = self.accepted.saturating_sub(self.finished());
    }

    /// Adds every count of `delta` (a sum of postings).
    pub fn add_all(&mut self, delta: &Counters) {
        for (counter, n) in delta.iter() {
            *self.slot(counter) += n;
        }
        self.pending = self.accepted.saturating_sub(self.finished());
    }

    /// Sum of terminal outcomes.
    pub fn finished(&self) -> u64 {
        self.successes
            + self.failures
            + self.unregistered
            + self.canonicals
            + self.expired
            + self.cancelled
    }

    /// True when the books balance: every accepted token is pending or finished,
    /// and every attempt either finished a token or was retried.
    pub fn balanced(&self) -> bool {
        self.accepted == self.pending + self.finished()
            && self.attempts == self.retries + self.finished() - self.unattempted
    }
}

/// What one event changes in a family's books: one or two counters, and for
/// an outcome the sender must act on, one list entry. [`Posting::finished`]
/// and its siblings are the one mapping from events to the books; the
/// in-memory reports, the disk store and the Redis store each apply it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    counts: [(Counter, u64); 2],
    /// The list entry, for `unregistered`, `canonical` and `failed`.
    pub entry: Option<ListEntry>,
}

impl Posting {
    fn of(first: (Counter, u64), second: Option<(Counter, u64)>) -> Self {
        Self {
            counts: [first, second.unwrap_or((first.0, 0))],
            entry: None,
        }
    }

    /// `n` tokens accepted.
    pub fn accepted(n: u64) -> Self {
        Self::of((Counter::Accepted, n), None)
    }

    /// One attempt that will be retried.
    pub fn retried() -> Self {
        Self::of((Counter::Attempts, 1), Some((Counter::Retries, 1)))
    }

    /// `n` tokens resent after their connection dropped mid-request.
    pub fn possible_duplicates(n: u64) -> Self {
        Self::of((Counter::PossibleDuplicates, n), None)
    }

    /// A token that reached `outcome` (`token` as its codec shows it):
    /// its outcome's counter, `attempts` or `unattempted`, and its list
    /// entry if the outcome has one (stamped `now_ms` unless the upstream
    /// gave a time).
    pub fn finished(token: &str, outcome: &Outcome, attempted: bool, now_ms: u64) -> Self {
        let attempt = if attempted {
            Counter::Attempts
        } else {
            Counter::Unattempted
        };
        let mut posting = Self::of((Counter::of(outcome.kind()), 1), Some((attempt, 1)));
        posting.entry = ListEntry::of(token, outcome, now_ms);
        posting
    }

    /// The counters it adds to, with how much (zero-sized counts left out).
    pub fn counts(&self) -> impl Iterator<Item = (Counter, u64)> + '_ {
        self.counts.iter().copied().filter(|(_, n)| *n > 0)
    }
}

/// An entry of a drainable list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ListEntry {
    /// A token to purge.
    Unregistered(UnregisteredEntry),
    /// A permanent failure.
    Failure(FailureEntry),
    /// A canonical replacement.
    Canonical(CanonicalEntry),
}

impl ListEntry {
    /// The entry `outcome` of `token` leaves, if any.
    pub fn of(token: &str, outcome: &Outcome, now_ms: u64) -> Option<Self> {
        match outcome {
            Outcome::Success | Outcome::Expired { .. } | Outcome::Cancelled => None,
            Outcome::Unregistered { timestamp_ms } => {
                Some(ListEntry::Unregistered(UnregisteredEntry {
                    token: token.to_owned(),
                    timestamp: timestamp_ms.unwrap_or(now_ms),
                }))
            }
            Outcome::Canonical { new_token } => Some(ListEntry::Canonical(CanonicalEntry {
                original: token.to_owned(),
                canonical: new_token.clone(),
            })),
            Outcome::Failed { reason, status } => Some(ListEntry::Failure(FailureEntry {
                token: token.to_owned(),
                reason: reason.to_string(),
                status: *status,
                at: now_ms,
            })),
        }
    }

    /// The list it goes to.
    pub fn list(&self) -> ListKind {
        match self {
            ListEntry::Unregistered(_) => ListKind::Unregistered,
            ListEntry::Failure(_) => ListKind::Failures,
            ListEntry::Canonical(_) => ListKind::Canonical,
        }
    }

    /// Its JSON text, as the stores keep it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A token the upstream says is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnregisteredEntry {
    /// The token as the sender gave it (APNs: lower-case hex).
    pub token: String,
    /// When it became invalid (APNs' timestamp) or when we learned it, ms since epoch.
    pub timestamp: u64,
}

/// A token that failed for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureEntry {
    /// The token.
    pub token: String,
    /// The upstream's reason.
    pub reason: String,
    /// The HTTP status (0 for transport errors).
    pub status: u16,
    /// When, ms since epoch.
    pub at: u64,
}

/// A legacy GCM canonical id: use `canonical` instead of `original` from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanonicalEntry {
    /// The token that was sent.
    pub original: String,
    /// The token to store instead.
    pub canonical: String,
}

/// A job's counts, as `GET /jobs/{id}` answers them, whichever backend holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    /// The job id.
    pub job: String,
    /// The platform name.
    pub platform: String,
    /// `scheduled`, `running`, `cancelling`, `cancelled` or `done`.
    pub state: &'static str,
    /// Tokens accepted.
    pub total: u64,
    /// Outcome counts, in [`OutcomeKind::ALL`] order.
    pub counts: [u64; 6],
    /// The sender's correlation id (gorush `notif_id`), if one was given.
    pub notif_id: Option<String>,
    /// `apns-unique-id`s of deliveries (broadcasts, sandbox pushes), when kept.
    pub unique_ids: Vec<String>,
    /// A streamed job whose stream was cut before its end.
    pub truncated: bool,
    /// When it was accepted, ms since the epoch, when the keeper knows.
    pub accepted_at: Option<u64>,
    /// When its last token finished, ms since the epoch, once it has.
    pub finished_at: Option<u64>,
}

impl JobStatus {
    /// Tokens without an outcome.
    pub fn pending(&self) -> u64 {
        self.total.saturating_sub(self.counts.iter().sum())
    }

    /// The count of one outcome.
    pub fn count(&self, kind: OutcomeKind) -> u64 {
        self.counts[kind as usize]
    }

    /// A live job's status.
    pub fn of(progress: &JobProgress) -> Self {
        Self {
            job: progress.id.to_string(),
            platform: progress.platform.as_str().to_owned(),
            state: progress.state(),
            total: progress.total(),
            counts: OutcomeKind::ALL.map(|k| progress.count(k)),
            notif_id: progress.notif_id.as_deref().map(str::to_owned),
            unique_ids: progress.unique_ids(),
            truncated: progress.is_truncated(),
            accepted_at: Some(progress.accepted_ms()),
            finished_at: progress.finished_ms(),
        }
    }

    /// The `GET /jobs/{id}` body.
    pub fn to_json(&self) -> serde_json::Value {
        let mut answer = serde_json::json!({
            "job": self.job,
            "platform": self.platform,
            "state": self.state,
            "total": self.total,
            "successes": self.count(OutcomeKind::Success),
            "failures": self.count(OutcomeKind::Failed),
            "unregistered": self.count(OutcomeKind::Unregistered),
            "canonicals": self.count(OutcomeKind::Canonical),
            "expired": self.count(OutcomeKind::Expired),
            "cancelled": self.count(OutcomeKind::Cancelled),
            "pending": self.pending(),
        });
        if let Some(n) = &self.notif_id {
            answer["notif_id"] = serde_json::Value::from(n.as_str());
        }
        if !self.unique_ids.is_empty() {
            answer["apns_unique_ids"] = serde_json::json!(self.unique_ids);
        }
        if self.truncated {
            answer["truncated"] = serde_json::Value::Bool(true);
        }
        if let Some(at) = self.accepted_at {
            answer["accepted_at"] = serde_json::Value::from(at);
        }
        if let Some(at) = self.finished_at {
            answer["finished_at"] = serde_json::Value::from(at);
        }
        answer
    }
}

/// A group's status (one message to several platforms): its jobs' counts
/// summed, and each platform's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    /// The group's id.
    pub group: String,
    /// Its jobs still known, in the group's order.
    pub jobs: Vec<JobStatus>,
}

impl GroupStatus {
    /// The status of group `group` with `jobs`.
    pub fn of(group: String, jobs: Vec<JobStatus>) -> Self {
        Self { group, jobs }
    }

    /// The state word over the jobs: `done`/`cancelled` once nothing is
    /// pending; else `cancelling` if any is, `scheduled` if every job with
    /// tokens pending is, else `running`.
    pub fn state(&self) -> &'static str {
        let pending: u64 = self.jobs.iter().map(JobStatus::pending).sum();
        let any = |words: &[&str]| self.jobs.iter().any(|j| words.contains(&j.state));
        if pending == 0 {
            return if any(&["cancelled", "cancelling"]) {
                "cancelled"
            } else {
                "done"
            };
        }
        if any(&["cancelling"]) {
            "cancelling"
        } else if self
            .jobs
            .iter()
            .filter(|j| j.pending() > 0)
            .all(|j| j.state == "scheduled")
        {
            "scheduled"
        } else {
            "running"
        }
    }

    /// The `GET /jobs/{id}` body of a group: the summed counts, the jobs'
    /// ids and `by_platform` (each platform's counts, as a job's body).
    pub fn to_json(&self) -> serde_json::Value {
        let mut sum = JobStatus {
            job: self.group.clone(),
            platform: "multi".into(),
            state: self.state(),
            total: 0,
            counts: [0; 6],
            notif_id: None,
            unique_ids: Vec::new(),
            truncated: false,
            accepted_at: self.jobs.iter().filter_map(|j| j.accepted_at).min(),
            finished_at: None,
        };
        let mut by_platform = serde_json::Map::new();
        for job in &self.jobs {
            sum.total += job.total;
            for (s, c) in sum.counts.iter_mut().zip(job.counts) {
                *s += c;
            }
            let mut one = job.to_json();
            if let Some(map) = one.as_object_mut() {
                map.remove("platform");
            }
            by_platform.insert(job.platform.clone(), one);
        }
        if sum.pending() == 0 {
            sum.finished_at = self.jobs.iter().filter_map(|j| j.finished_at).max();
        }
        let mut answer = sum.to_json();
        answer["jobs"] = serde_json::json!(self.jobs.iter().map(|j| &j.job).collect::<Vec<_>>());
        answer["by_platform"] = serde_json::Value::Object(by_platform);
        answer
    }
}

/// Which jobs `GET /jobs` lists, by the state words of [`JobStatus::state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobFilter {
    /// Every job: unfinished ones first, then finished ones.
    All,
    /// Tokens pending and due: `running`, and `cancelling` (cancelled, its
    /// in-flight tokens still finishing).
    Running,
    /// Held until its `send_at`: `scheduled`.
    Scheduled,
    /// Nothing pending: `done` and `cancelled`.
    Done,
}

impl JobFilter {
    /// The filter a `state` query value names; `None` for another word.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "running" => Some(JobFilter::Running),
            "scheduled" => Some(JobFilter::Scheduled),
            "done" => Some(JobFilter::Done),
            _ => None,
        }
    }

    /// True when a job in `state` (a [`JobStatus::state`] word) is listed.
    pub fn admits(self, state: &str) -> bool {
        match self {
            JobFilter::All => true,
            JobFilter::Running => matches!(state, "running" | "cancelling"),
            JobFilter::Scheduled => state == "scheduled",
            JobFilter::Done => matches!(state, "done" | "cancelled"),
        }
    }
}
