//! The platforms of a running gateway: each registered once with its apps'
//! deliveries (the backend's view) and its [`Front`] (the API's view). The
//! API, `/readyz`, the status page, the metrics and the gorush routes take
//! this set; no module keeps a field per platform.

use std::any::Any;
use std::sync::Arc;

use super::gorush::GorushMapping;
use super::handoff::{Deliver, DeliverError, Handoff, Refused};
use super::request::{Request, RequestError, SendBody};
use super::unified::Unified;
use crate::job::{Family, Outcome, Platform};
use crate::outcome::Recorder;
use crate::settings::Apps;

/// What a platform's upstreams look like now, for `/readyz` and the status page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Connections open, when the platform can count them (HTTP/2 pools);
    /// `None` when they live inside an HTTP client that does not say.
    pub connections: Option<usize>,
    /// Why it cannot deliver now, if it cannot (no connection, credentials
    /// never granted): `/readyz` answers 503 with it.
    pub problem: Option<String>,
}

/// A configured platform as the API sees it.
pub trait Front: Send + Sync + 'static {
    /// Reads a send body (JSON, form, or a stream's header line) for one of
    /// its apps: the message checked the way the upstream would, the
    /// tokens raw, each checked by [`Request::keep`].
    fn read<'a>(&self, body: &'a SendBody) -> Result<Request<'a>, RequestError>;

    /// Maps `POST /send`'s common message to this platform's own send body
    /// (as JSON, without tokens: a stream's header), for `platform` (one of
    /// this front's). Read with [`Front::read`] like any other body.
    fn compose(&self, platform: Platform, message: &Unified<'_>) -> Result<Vec<u8>, RequestError>;

    /// How its upstreams are doing.
    fn status(&self) -> Status;

    /// How gorush's `/api/push` reaches it, when gorush has a platform number
    /// for it.
    fn gorush(&self) -> Option<&dyn GorushMapping> {
        None
    }

    /// The platform itself, for a route that only it serves (APNs channels).
    fn as_any(&self) -> &dyn Any;
}

/// One configured platform.
#[derive(Clone)]
pub struct Registered {
    /// Which.
    pub platform: Platform,
    /// Each app's delivery.
    pub apps: Apps<Arc<dyn Deliver>>,
    /// The API's view of it.
    pub front: Arc<dyn Front>,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("platform", &self.platform)
            .field("apps", &self.apps.names().collect::<Vec<_>>())
            .finish()
    }
}

/// Every registered platform. Cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    platforms: Arc<[Registered]>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.platforms.iter()).finish()
    }
}

impl Registry {
    /// A registry of `platforms`, in registration order.
    pub fn new(platforms: Vec<Registered>) -> Self {
        Self {
            platforms: platforms.into(),
        }
    }

    /// Every registered platform, in registration order.
    pub fn platforms(&self) -> impl Iterator<Item = &Registered> {
        self.platforms.iter()
    }

    /// The registered platform `platform`.
    pub fn get(&self, platform: Platform) -> Option<&Registered> {
        self.platforms.iter().find(|r| r.platform == platform)
    }

    /// The registered platform of `family` (a family has one configured
    /// platform: FCM v1 or legacy GCM, never both).
    pub fn of_family(&self, family: Family) -> Option<&Registered> {
        self.platforms
            .iter()
            .find(|r| r.platform.family() == family)
    }

    /// The front of the platform whose type is `T`, when registered.
    pub fn front<T: 'static>(&self) -> Option<&T> {
        self.platforms
            .iter()
            .find_map(|r| r.front.as_any().downcast_ref::<T>())
    }

    /// Every app's delivery, with its platform and app.
    pub fn all(&self) -> impl Iterator<Item = (Platform, &str, &Arc<dyn Deliver>)> {
        self.platforms.iter().flat_map(|r| {
            r.apps
                .iter()
                .map(move |(app, deliver)| (r.platform, app, deliver))
        })
    }

    /// Hands a job to its platform's app.
    pub fn deliver(&self, handoff: Handoff) -> Result<(), Refused> {
        let platform = handoff.progress.platform;
        match self.get(platform).and_then(|r| r.apps.get(&handoff.app)) {
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

    /// Hands a job to its platform's app; one that is not configured (or
    /// whose stored message no longer builds) ends the job's tokens to send
    /// as failed (`NotConfigured`), so the books still balance.
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
}
