//! The platform registry: how a backend hands stored work to a platform
//! without knowing it.
//!
//! Each platform's service implements [`Deliver`] and is registered once per
//! app at start ([`Registry::register`]). A backend keeps a job's message as
//! the platform's own bytes ([`Handoff::fields`], written by the platform's
//! API module); to send it, it looks up `(platform, app)` and calls
//! [`Deliver::deliver`], which rebuilds the message and queues the tokens.
//! A new platform implements the trait and registers itself: no backend,
//! report or other platform changes.

use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use crate::job::{JobId, JobProgress, Outcome, Platform, TokenList};
use crate::message::MessageError;
use crate::outcome::Recorder;

/// A job (or a chunk of one) handed to its platform.
#[derive(Debug)]
pub struct Handoff {
    /// The job id.
    pub id: JobId,
    /// The app (credential set).
    pub app: Arc<str>,
    /// The message as the platform stored it at the API.
    pub fields: Arc<[u8]>,
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
        let all = 0..u32::try_from(tokens.len()).unwrap_or(u32::MAX);
        vec![all]
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

/// Every registered service, by platform and app.
#[derive(Default, Clone)]
pub struct Registry {
    entries: Vec<(Platform, Arc<str>, Arc<dyn Deliver>)>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(p, a, _)| (p, a)))
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `service` for `app` of its platform.
    pub fn register(&mut self, app: &str, service: Arc<dyn Deliver>) {
        self.entries
            .push((service.platform(), Arc::from(app), service));
    }

    /// The service for `platform` and `app`.
    pub fn get(&self, platform: Platform, app: &str) -> Option<&Arc<dyn Deliver>> {
        self.entries
            .iter()
            .find(|(p, a, _)| *p == platform && &**a == app)
            .map(|(_, _, s)| s)
    }

    /// Every service with its platform and app.
    pub fn all(&self) -> impl Iterator<Item = (Platform, &str, &Arc<dyn Deliver>)> {
        self.entries.iter().map(|(p, a, s)| (*p, &**a, s))
    }

    /// Hands a job to its platform's service; one that is not configured
    /// (or whose stored message no longer builds) ends the job's tokens to
    /// send as failed (`NotConfigured`), so the books still balance.
    pub fn deliver_or_fail(&self, handoff: Handoff, recorder: &Recorder) {
        let Err(Refused { error, handoff }) = self.deliver(handoff) else {
            return;
        };
        tracing::error!(job = %handoff.id, problem = %error, "cannot deliver a job; its tokens are recorded as failed");
        let outcome = Outcome::Failed {
            reason: "NotConfigured".into(),
            status: 0,
        };
        handoff.finish(&outcome, recorder);
    }

    /// Hands a job to its platform's service.
    pub fn deliver(&self, handoff: Handoff) -> Result<(), Refused> {
        let platform = handoff.progress.platform;
        match self.get(platform, &handoff.app) {
            Some(service) => service.deliver(handoff),
            None => Err(Refused {
                error: DeliverError::NotConfigured {
                    platform,
                    app: handoff.app.to_string(),
                },
                handoff: Box::new(handoff),
            }),
        }
    }
}
