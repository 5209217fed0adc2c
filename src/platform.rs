//! Platforms as the middle sees them, whichever they are: a platform is one
//! folder (`apns/`, `fcm/`, `webpush/`, …) and one registration line in
//! [`crate::platforms`]. It hands the gateway, per configured platform:
//!
//! - each app's delivery ([`Deliver`], written once as a [`Lane`]: its queue,
//!   and how a verdict settles into an outcome, a retry or an expiry);
//! - its [`Front`]: how it reads a send body into a [`Request`], how its
//!   upstreams are doing ([`Status`]), and how gorush reaches it
//!   ([`GorushMapping`]).
//!
//! The backend hands stored work to a platform through the [`Registry`]
//! without knowing it; the API, `/readyz`, the status page and the gorush
//! routes iterate the registry instead of keeping a field per platform.

pub mod gorush;
mod handoff;
mod lane;
mod registry;
pub mod request;
pub mod unified;

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::outcome::Recorder;
use crate::pace::shared::QuotaStore;
use crate::retry::Backoff;
use crate::shared_credential::SharedCredentials;

pub use gorush::{Fields, GorushMapping, NotificationError};
pub use handoff::{Built, Deliver, DeliverError, Handoff, Refused};
pub use lane::{Lane, LaneSettings, Settled};
pub use registry::{Front, Registered, Registry, Status};
pub use request::{Keep, Request, RequestError, SendBody, TokenRefused, When};
pub use unified::Unified;

/// What every platform is started with.
#[derive(Clone)]
pub struct Context {
    /// The outcome fan-out.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `[retry]`.
    pub backoff: Backoff,
    /// One provider token per key for every gateway of a cluster (the
    /// `redis` backend); `None`: each gateway obtains its own.
    pub credentials: Option<SharedCredentials>,
    /// A quota shared by the cluster (the `redis` backend: FCM's project
    /// pace); `None`: each gateway paces alone.
    pub quota: Option<Arc<dyn QuotaStore>>,
}
