//! The nouns of the books, shared by every backend and the reports: the
//! running [`Counters`], the entries of the drainable lists ([`ListKind`]),
//! and a job's status as `GET /jobs/{id}` shows it ([`JobStatus`]).

use serde::{Deserialize, Serialize};

use crate::job::{JobProgress, OutcomeKind};

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

impl Counters {
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

    /// Counts one terminal outcome of `kind`.
    pub fn add(&mut self, kind: OutcomeKind) {
        match kind {
            OutcomeKind::Success => self.successes += 1,
            OutcomeKind::Failed => self.failures += 1,
            OutcomeKind::Unregistered => self.unregistered += 1,
            OutcomeKind::Canonical => self.canonicals += 1,
            OutcomeKind::Expired => self.expired += 1,
            OutcomeKind::Cancelled => self.cancelled += 1,
        }
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

/// A drainable report list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    /// Tokens to purge (`/apns/report/unregistered`, `/gcm/report/notregistered`).
    Unregistered,
    /// Permanent failures.
    Failures,
    /// Canonical replacements (legacy GCM).
    Canonical,
}

impl ListKind {
    /// Every list.
    pub const ALL: [ListKind; 3] = [
        ListKind::Unregistered,
        ListKind::Failures,
        ListKind::Canonical,
    ];

    /// Its name in stored keys.
    pub fn name(self) -> &'static str {
        match self {
            ListKind::Unregistered => "unregistered",
            ListKind::Failures => "failures",
            ListKind::Canonical => "canonical",
        }
    }

    /// The list called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.name() == name)
    }
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

    /// The state word from the counts: what every backend answers.
    pub fn state_of(pending: u64, cancelled: bool, scheduled: bool) -> &'static str {
        match (pending, cancelled, scheduled) {
            (0, true, _) => "cancelled",
            (0, false, _) => "done",
            (_, true, _) => "cancelling",
            (_, false, true) => "scheduled",
            (_, false, false) => "running",
        }
    }

    /// A live job's status.
    pub fn of(progress: &JobProgress) -> Self {
        Self {
            job: progress.id.to_string(),
            platform: progress.platform.as_str().to_owned(),
            state: progress.state(),
            total: progress.total,
            counts: OutcomeKind::ALL.map(|k| progress.count(k)),
            notif_id: progress.notif_id.as_deref().map(str::to_owned),
            unique_ids: progress.unique_ids(),
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
        answer
    }
}
