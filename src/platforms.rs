//! The registration list: every platform this build knows, one line each in
//! [`ALL`] and one in [`start`]. A platform is its folder (`src/apns/`, …)
//! plus these lines; nothing else in the gateway names it.

use crate::config::Config;
use crate::job::{Catalog, Platform};
use crate::platform::{Context, Registry};

/// Every platform this build can deliver to, configured or not.
pub const ALL: &[Platform] = &[
    crate::apns::PLATFORM,
    crate::fcm::FCM,
    crate::fcm::GCM,
    crate::webpush::PLATFORM,
    crate::hms::PLATFORM,
];

/// [`ALL`], for reading stored platform and family names back.
pub const CATALOG: Catalog = Catalog::new(ALL);

/// Starts every configured platform (each with its apps) and registers it.
pub async fn start(config: &Config, ctx: &Context) -> anyhow::Result<Registry> {
    let mut registered = Vec::new();
    if let Some(apns) = &config.apns {
        registered.push(crate::apns::start(apns, ctx).await?);
    }
    if let Some(google) = &config.google {
        registered.push(crate::fcm::start(google, ctx)?);
    }
    if let Some(webpush) = &config.webpush {
        registered.push(crate::webpush::start(webpush, ctx)?);
    }
    if let Some(hms) = &config.hms {
        registered.push(crate::hms::start(hms, ctx)?);
    }
    Ok(Registry::new(registered))
}
