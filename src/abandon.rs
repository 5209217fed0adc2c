//! What a process that stops *now* leaves behind: on a second SIGTERM/SIGINT
//! the drain is cut short, and before exiting the gateway says so — the
//! totals of every app, and the tokens still unfinished per platform and app,
//! with where they go (the memory backend drops them; disk keeps them for the
//! next start; redis leaves them in the stream for another gateway).

use std::collections::BTreeMap;

use crate::api::AppState;

/// Unfinished tokens per platform at the moment of the second signal.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Abandoned {
    /// Platform (`apns`, `fcm`, `gcm`, …) → tokens accepted and without an outcome.
    pub per_platform: BTreeMap<&'static str, u64>,
    /// Every platform together.
    pub total: u64,
}

/// Logs the final totals of every app and a warning naming what is abandoned
/// (per platform and per app), and returns the counts.
pub fn log_abandoned(state: &AppState) -> Abandoned {
    let mut abandoned = Abandoned::default();
    let fate = state.backend.fate();
    let reports = state.backend.reports();
    for family in reports.families() {
        // The family's configured platform (`fcm` or `gcm` for Google).
        let platform = state
            .platforms
            .of_family(family)
            .map_or(family.name(), |r| r.platform.as_str());
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
                    fate,
                    "abandoned by the second signal: accepted, no outcome recorded yet"
                );
            }
            *abandoned.per_platform.entry(platform).or_default() += c.pending;
            abandoned.total += c.pending;
        }
    }
    let of = |p: &str| abandoned.per_platform.get(p).copied().unwrap_or(0);
    tracing::warn!(
        abandoned = abandoned.total,
        apns = of("apns"),
        fcm = of("fcm"),
        gcm = of("gcm"),
        per_platform = ?abandoned.per_platform,
        backend = state.backend.name(),
        fate,
        "second signal: exiting now without finishing the drain"
    );
    abandoned
}
