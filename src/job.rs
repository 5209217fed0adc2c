//! The nouns every module shares: a [`Job`] is one accepted send request (one
//! shared message, many tokens), and every token of it ends in exactly one
//! [`Outcome`].

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use crate::message::MessageError;
use crate::message::personal::{Personal, Personalise};

mod kind;
mod progress;
mod token;

pub use progress::{JobProgress, LEASE_LOW, LeaseBell};

#[cfg(test)]
pub use kind::test;
pub use kind::{
    Catalog, Family, FamilyInfo, GorushPlatform, ListKind, ListRoute, Platform, PlatformInfo,
    Totals,
};
pub use token::{Lease, SUBSCRIPTION_KEYS, TokenCodec, TokenList, decode_hex, hex_encode};

/// The state word of a job from its counts: what every store answers.
/// A streamed job still receiving tokens is running whatever its counts.
pub fn state_of(pending: u64, cancelled: bool, scheduled: bool, open: bool) -> &'static str {
    match (pending, cancelled, scheduled, open) {
        (_, true, _, true) => "cancelling",
        (_, false, _, true) => "running",
        (0, true, _, false) => "cancelled",
        (0, false, _, false) => "done",
        (_, true, _, false) => "cancelling",
        (_, false, true, false) => "scheduled",
        (_, false, false, false) => "running",
    }
}

/// A job's identifier: a random UUID, rendered without hyphens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(uuid::Uuid);

impl JobId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// The id as a number (the disk store's key).
    pub fn as_u128(&self) -> u128 {
        self.0.as_u128()
    }

    /// The id [`JobId::as_u128`] gave.
    pub fn from_u128(n: u128) -> Self {
        Self(uuid::Uuid::from_u128(n))
    }

    /// Parses the form produced by `Display` (hyphens optional).
    pub fn parse(s: &str) -> Option<Self> {
        uuid::Uuid::try_parse(s).ok().map(Self)
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.simple())
    }
}

/// One accepted send request: a message of type `M` shared by all its tokens.
#[derive(Debug)]
pub struct Job<M> {
    /// The job's id, returned in the 202 answer.
    pub id: JobId,
    /// The credential set (`app` request field); `default` is the top-level section.
    pub app: Arc<str>,
    /// The message, built once per job.
    pub message: M,
    /// The message as its platform stored it (what a personalised token's
    /// message is built from).
    pub fields: Arc<[u8]>,
    /// The tokens, validated at the API.
    pub tokens: TokenList,
    /// Live counts, shared with the job table.
    pub progress: Arc<JobProgress>,
    /// After this instant nothing more is sent; remaining tokens become `expired`.
    pub expires_at: Option<SystemTime>,
}

impl<M> Job<M> {
    /// The outcome a token gets instead of being sent now, if any: the job was
    /// cancelled, or its expiration has passed. Workers ask before every send.
    pub fn hold(&self) -> Option<Outcome> {
        if self.progress.is_cancelled() {
            Some(Outcome::Cancelled)
        } else if self.expires_at.is_some_and(|at| SystemTime::now() > at) {
            Some(Outcome::Expired {
                reason: "Expired".into(),
            })
        } else {
            None
        }
    }

    /// True when the job's expiration falls within `delay` from now: a retry
    /// that late would go out after it, so the token expires instead.
    pub fn expires_within(&self, delay: std::time::Duration) -> bool {
        self.expires_at
            .is_some_and(|at| SystemTime::now() + delay > at)
    }

    /// Token `index` as the sender knows it (its platform's codec).
    pub fn token_shown(&self, index: u32) -> std::borrow::Cow<'_, str> {
        self.progress.platform.codec().show(self.tokens.get(index))
    }

    /// The message for token `index`: the job's own, or, for a token with
    /// personal fields (`POST /send`'s per-target `data` and `badge`), a
    /// copy with them applied.
    pub fn message_for(&self, index: u32) -> Result<MessageFor<'_, M>, MessageError>
    where
        M: Personalise,
    {
        match self.personal_of(index) {
            None => Ok(MessageFor::Shared(&self.message)),
            Some(trailer) => {
                let personal = Personal::parse(trailer)?;
                let own = self.message.personalise(&self.fields, &personal)?;
                Ok(MessageFor::Own(Box::new(own)))
            }
        }
    }

    /// The personal trailer of token `index`, if it has one (tokens with the
    /// same trailer may share a batch request).
    pub fn personal_of(&self, index: u32) -> Option<&[u8]> {
        self.progress
            .platform
            .codec()
            .split(self.tokens.get(index))
            .1
    }

    /// The job's indices of every token this part of it holds.
    pub fn all(&self) -> Range<u32> {
        self.tokens.range()
    }
}

/// The message one token is sent with (see [`Job::message_for`]).
#[derive(Debug)]
pub enum MessageFor<'a, M> {
    /// The job's message.
    Shared(&'a M),
    /// A personalised copy.
    Own(Box<M>),
}

impl<M> std::ops::Deref for MessageFor<'_, M> {
    type Target = M;

    fn deref(&self) -> &M {
        match self {
            MessageFor::Shared(m) => m,
            MessageFor::Own(m) => m,
        }
    }
}

/// A terminal outcome for one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered (APNs 200, FCM message name, legacy message_id).
    Success,
    /// The token is no longer valid (APNs 410, FCM UNREGISTERED, legacy NotRegistered):
    /// the back end should delete it. APNs gives the time it became invalid.
    Unregistered {
        /// Milliseconds since the epoch, when the upstream said.
        timestamp_ms: Option<u64>,
    },
    /// Delivered, and legacy GCM named a newer token to use from now on.
    Canonical {
        /// The replacement registration id.
        new_token: String,
    },
    /// Refused for good; retrying would not help.
    Failed {
        /// The upstream's reason (e.g. `BadDeviceToken`) or ours.
        reason: Arc<str>,
        /// The HTTP status, 0 when none (transport errors).
        status: u16,
    },
    /// Not delivered before retries or the message's expiration ran out.
    Expired {
        /// The last retryable reason seen, or `Expired` when the deadline passed first.
        reason: Arc<str>,
    },
    /// The sender cancelled the job (`DELETE /jobs/{id}`) before this token was sent.
    Cancelled,
}

impl Outcome {
    /// The metrics label and job-count bucket for this outcome.
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Success => OutcomeKind::Success,
            Outcome::Unregistered { .. } => OutcomeKind::Unregistered,
            Outcome::Canonical { .. } => OutcomeKind::Canonical,
            Outcome::Failed { .. } => OutcomeKind::Failed,
            Outcome::Expired { .. } => OutcomeKind::Expired,
            Outcome::Cancelled => OutcomeKind::Cancelled,
        }
    }
}

/// An [`Outcome`] without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeKind {
    /// See [`Outcome::Success`].
    Success,
    /// See [`Outcome::Unregistered`].
    Unregistered,
    /// See [`Outcome::Canonical`].
    Canonical,
    /// See [`Outcome::Failed`].
    Failed,
    /// See [`Outcome::Expired`].
    Expired,
    /// See [`Outcome::Cancelled`].
    Cancelled,
}

impl OutcomeKind {
    /// Every kind, in report order.
    pub const ALL: [OutcomeKind; 6] = [
        OutcomeKind::Success,
        OutcomeKind::Unregistered,
        OutcomeKind::Canonical,
        OutcomeKind::Failed,
        OutcomeKind::Expired,
        OutcomeKind::Cancelled,
    ];

    /// Lower-case label.
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Success => "success",
            OutcomeKind::Unregistered => "unregistered",
            OutcomeKind::Canonical => "canonical",
            OutcomeKind::Failed => "failed",
            OutcomeKind::Expired => "expired",
            OutcomeKind::Cancelled => "cancelled",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_progress_counts_pending() {
        let p = JobProgress::new(JobId::new(), test::PLATFORM, 3);
        p.record(OutcomeKind::Success);
        p.record(OutcomeKind::Failed);
        assert_eq!(p.pending(), 1);
        assert_eq!(p.count(OutcomeKind::Success), 1);
    }

    #[test]
    fn job_id_round_trips() {
        let id = JobId::new();
        assert_eq!(JobId::parse(&id.to_string()), Some(id));
        assert_eq!(JobId::parse("nope"), None);
    }
}
