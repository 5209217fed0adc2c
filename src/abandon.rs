//! What a process that stops *now* leaves behind: on a second SIGTERM/SIGINT
//! the drain is cut short, and before exiting the gateway says so — the
//! totals of every app, and the tokens still unfinished per platform and app,
//! which this process drops (the memory backend keeps nothing).

use std::collections::BTreeMap;

use crate::api::AppState;
use crate::job::Family;

/// Unfinished tokens per platform (`apns`, `fcm`, `gcm`) at the moment of
/// the second signal.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Abandoned {
    /// Platform → tokens accepted and without an outcome.
    pub per_platform: BTreeMap<&'static str, u64>,
    /// Every platform together.
    pub total: u64,
}

/// Logs the final totals of every app and a warning naming what is abandoned
/// (per platform and per app), and returns the counts.
pub fn log_abandoned(state: &AppState) -> Abandoned {
    let mut abandoned = Abandoned::default();
    let google = state
        .google
        .as_ref()
        .map_or("google", |g| g.platform().as_str());
    for (family, platform) in [(Family::Apple, "apns"), (Family::Google, google)] {
        let reports = &state.recorder.reports;
        for app in reports.app_names(family) {
            let Some(report) = reports.app(family, app) else {
                continue;
            };
            let c = report.counters();
            if c.accepted == 0 {
                continue;
            }
            tracing::info!(
                platform,
                app,
                accepted = c.accepted,
                pending = c.pending,
                successes = c.successes,
                failures = c.failures,
                unregistered = c.unregistered,
                expired = c.expired,
                cancelled = c.cancelled,
                "final totals"
            );
            if c.pending > 0 {
                tracing::warn!(
                    platform,
                    app,
                    tokens = c.pending,
                    "abandoned by the second signal: accepted, no outcome recorded, dropped with this process"
                );
            }
            *abandoned.per_platform.entry(platform).or_default() += c.pending;
            abandoned.total += c.pending;
        }
    }
    let scheduled = state.scheduler.len();
    tracing::warn!(
        abandoned = abandoned.total,
        apns = abandoned.per_platform.get("apns").copied().unwrap_or(0),
        fcm = abandoned.per_platform.get("fcm").copied().unwrap_or(0),
        gcm = abandoned.per_platform.get("gcm").copied().unwrap_or(0),
        delayed_jobs = scheduled,
        "second signal: exiting now without finishing the drain"
    );
    abandoned
}
