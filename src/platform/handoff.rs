//! What a store hands a platform: a job (or a chunk of one) with the token
//! ranges to send, and the one trait a platform's delivery implements.

use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use crate::job::{JobId, JobProgress, Outcome, Platform, TokenList};
use crate::message::MessageError;
use crate::outcome::Recorder;

/// A platform's message as its front built it from the request: handed to
/// the platform's lane with the job, so a job admitted here is not built
/// twice (a job read back from a store is rebuilt from its stored bytes).
pub struct Built(Box<dyn std::any::Any + Send + Sync>);

impl Built {
    /// Wraps a built message.
    pub fn new<M: Send + Sync + 'static>(message: M) -> Self {
        Self(Box::new(message))
    }

    /// The message, if it is an `M`.
    pub fn take<M: 'static>(self) -> Option<M> {
        self.0.downcast::<M>().ok().map(|m| *m)
    }
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Built")
    }
}

/// A job (or a chunk of one) handed to its platform.
#[derive(Debug)]
pub struct Handoff {
    /// The job id.
    pub id: JobId,
    /// The app (credential set).
    pub app: Arc<str>,
    /// The message as the platform stored it at the API.
    pub fields: Arc<[u8]>,
    /// The message itself, when the API just built it.
    pub built: Option<Built>,
    /// The tokens, in stored form.
    pub tokens: TokenList,
    /// Which token ranges to send now (all of them for a fresh job; the
    /// unfinished ones after a restart).
    pub send: Vec<Range<u32>>,
    /// Live counts, shared with the job table.
    pub progress: Arc<JobProgress>,
    /// After this nothing more is sent.
    pub expires_at: Option<SystemTime>,
}

impl Handoff {
    /// The job this handoff carries, with its platform's rebuilt message,
    /// and the token ranges to send.
    pub fn into_job<M>(self, message: M) -> (Arc<crate::job::Job<M>>, Vec<Range<u32>>) {
        let job = Arc::new(crate::job::Job {
            id: self.id,
            app: self.app,
            message,
            fields: self.fields,
            tokens: self.tokens,
            progress: self.progress,
            expires_at: self.expires_at,
        });
        (job, self.send)
    }

    /// Ends every token still to send with `outcome`, unattempted.
    pub fn finish(&self, outcome: &Outcome, recorder: &Recorder) {
        let codec = self.progress.platform.codec();
        for index in self.send.iter().flat_map(Range::clone) {
            let token = codec.show(self.tokens.get(index));
            recorder.finish_shown(&self.progress, index, &token, outcome.clone(), false, None);
        }
    }

    /// Every token of `tokens`.
    pub fn all(tokens: &TokenList) -> Vec<Range<u32>> {
        vec![tokens.range()]
    }
}

/// Why a handoff could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// No service is registered for the job's platform and app.
    #[error("this gateway has no {platform} app {app:?}")]
    NotConfigured {
        /// The job's platform.
        platform: Platform,
        /// The job's app.
        app: String,
    },
    /// The stored message no longer builds (written by another version?).
    #[error("stored message no longer valid: {0}")]
    Message(#[from] MessageError),
}

/// A handoff a platform could not take, given back with the reason.
#[derive(Debug)]
pub struct Refused {
    /// Why.
    pub error: DeliverError,
    /// The job, untouched (boxed: it is the rare path).
    pub handoff: Box<Handoff>,
}

impl Refused {
    /// A handoff whose stored message does not build.
    pub fn message(error: MessageError, handoff: Handoff) -> Self {
        Self {
            error: DeliverError::Message(error),
            handoff: Box::new(handoff),
        }
    }
}

/// One platform service, as the backends see it.
pub trait Deliver: Send + Sync + 'static {
    /// The platform its jobs carry.
    fn platform(&self) -> Platform;
    /// Rebuilds the message from `handoff.fields` and queues `handoff.send`;
    /// a message that no longer builds hands the job back with the error.
    fn deliver(&self, handoff: Handoff) -> Result<(), Refused>;
    /// Tokens waiting in its queue (ready or scheduled for retry).
    fn queue_depth(&self) -> usize;
    /// Stops its workers once their in-flight requests finish.
    fn close(&self);
    /// Records everything still queued as expired (`Shutdown`); returns how many.
    fn abandon_queued(&self) -> u64;
    /// Drops everything still queued without an outcome (the backend keeps
    /// it for the next start); returns how many.
    fn forget_queued(&self) -> u64;
}
