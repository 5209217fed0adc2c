//! `GET /api/stat/app` and `GET /api/stat/go` in gorush's shapes.
//!
//! gorush counts tasks (notifications) and pushes (tokens); pushgate counts
//! tokens, so every number here is in tokens: `push_success` is `success`
//! plus `canonical` (delivered), `push_error` every other terminal outcome.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::{ApiError, AppState};
use crate::books::Counters;

fn delivered(c: &Counters) -> u64 {
    c.successes + c.canonicals
}

fn not_delivered(c: &Counters) -> u64 {
    c.failures + c.unregistered + c.expired + c.cancelled
}

/// `GET /api/stat/app`: gorush's `status.App`, plus the `queue_max` and
/// `queue_usage` of gorush releases before the golang-queue rewrite.
pub async fn app(State(state): State<AppState>) -> Json<serde_json::Value> {
    let reports = state.backend.reports();
    let mut answer = json!({
        "version": concat!("pushgate-", env!("CARGO_PKG_VERSION")),
        "queue_max": state.backend.capacity(),
        "queue_usage": state.backend.pending(),
        // gorush always answers its three platforms.
        "ios": { "push_success": 0, "push_error": 0 },
        "android": { "push_success": 0, "push_error": 0 },
        "huawei": { "push_success": 0, "push_error": 0 },
    });
    let (mut busy, mut success, mut failure, mut submitted) = (0, 0, 0, 0);
    for family in state.catalog.families() {
        let Some(gorush) = family.info().gorush.as_ref() else {
            continue;
        };
        let c = reports.family(family).counters();
        busy += c.pending;
        success += delivered(&c);
        failure += not_delivered(&c);
        submitted += c.accepted;
        answer[gorush.word] =
            json!({ "push_success": delivered(&c), "push_error": not_delivered(&c) });
    }
    answer["busy_workers"] = json!(busy);
    answer["success_tasks"] = json!(success);
    answer["failure_tasks"] = json!(failure);
    answer["submitted_tasks"] = json!(submitted);
    answer["total_count"] = json!(submitted);
    Json(answer)
}

/// `GET /api/stat/go`: there is no Go runtime, so no goroutines or GC
/// pauses; this answers what is true of the process instead (Linux `/proc`),
/// or 404 where `/proc` is not there.
pub async fn go() -> Response {
    match process_stats() {
        Some(stats) => Json(stats).into_response(),
        None => ApiError::not_found(
            "/api/stat/go reports Go runtime statistics; pushgate is not a Go program and this system has no /proc to read process statistics from. Use /metrics",
        )
        .into_response(),
    }
}

/// Uptime, resident memory and threads from `/proc/self`.
fn process_stats() -> Option<serde_json::Value> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let rss_kib = field("VmRSS:")?;
    let threads = field("Threads:")?;
    // starttime (field 22 of /proc/self/stat) is in clock ticks since boot;
    // Linux's USER_HZ is 100 on every architecture Rust targets.
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    let start_ticks: u64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot_uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let uptime = (boot_uptime - start_ticks as f64 / 100.0).max(0.0);
    Some(json!({
        "runtime": "rust",
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_seconds": (uptime * 10.0).round() / 10.0,
        "memory_rss_bytes": rss_kib * 1024,
        "threads": threads,
    }))
}
