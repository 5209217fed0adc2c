//! Delivery that survives the real network: the pool growing and shrinking,
//! stalled connections found by PING, a SIGTERM drain of the real binary, and
//! the big run with every fault on at once.
//!
//! No test asserts on speed; each runs under a timeout. Left out: a real
//! network partition (the mock's `stall_after` stands in for it) and Redis.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use pushgate::job::Family;
use pushgate::mock::{Faults, Ledger};
use pushgate::report::Counters;
use serde_json::{Value, json};

fn get(counter: &std::sync::atomic::AtomicU64) -> u64 {
    Ledger::get(counter)
}

/// Sum over tokens of deliveries beyond the first: deliveries the gateway may
/// only cause when it resent a stream whose fate it could not know.
fn extra_deliveries(ledger: &Ledger) -> u64 {
    ledger
        .tokens()
        .values()
        .map(|r| u64::from(r.deliveries.saturating_sub(1)))
        .sum()
}

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_grows_under_load_up_to_max_and_shrinks_back_to_min_when_idle() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup {
            faults: Faults {
                latency_ms: 40,
                ..Faults::default()
            },
            max_streams: 10,
            tweak: Box::new(|f| {
                let apns = f.apns.as_mut().unwrap();
                apns.min_connections = 1;
                apns.max_connections = 3;
                apns.grow_interval_ms = 50;
                apns.idle_shrink_s = 1;
            }),
            ..ApnsSetup::default()
        })
        .await;
        let front = env
            .gateway
            .state
            .platforms
            .front::<pushgate::apns::ApnsFront>()
            .unwrap();
        let apns = front.apps().default_app().clone();
        eventually("first connection", || apns.connected() == 1).await;
        let tokens: Vec<String> = (0..2000).map(|i| apns_token("abcd", i)).collect();
        env.send_apns(&tokens).await;
        let mut peak = 0;
        loop {
            let open = apns.connected();
            assert!(open <= 3, "{open} connections, max 3");
            peak = peak.max(open);
            if env.counters().pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let c = wait_done(&env.gateway, pushgate::apns::FAMILY, 2000).await;
        assert_eq!(c.successes, 2000);
        assert_eq!(
            peak, 3,
            "the pool never reached max_connections under a backlog"
        );
        let ledger = &env.mock.ledger;
        assert_eq!(get(&ledger.stream_limit_violations), 0);
        assert!(get(&ledger.peak_streams) <= 10);
        // Idle: back to the floor, one connection at a time, never to zero, so
        // readiness holds throughout.
        loop {
            let open = apns.connected();
            assert!(open >= 1, "the pool shrank below min_connections");
            let (status, _) = env.get("/readyz").await;
            assert_eq!(status, 200);
            if open == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let metrics = env
            .client
            .get(env.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("pushgate_upstream_connections{platform=\"apns\"} 1"),
            "{metrics}"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_is_found_by_ping_and_its_streams_resent() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup {
            faults: Faults {
                stall_after: Some(120),
                latency_ms: 5,
                ..Faults::default()
            },
            max_streams: 20,
            tweak: Box::new(|f| {
                let apns = f.apns.as_mut().unwrap();
                // One connection, so every stall is on the path of the work.
                apns.max_connections = 1;
                apns.ping_interval_s = 1;
                apns.ping_timeout_s = 1;
                // Long enough that only the PING can be what notices the stall.
                apns.request_timeout_s = 600;
                apns.max_retries = 10;
            }),
            ..ApnsSetup::default()
        })
        .await;
        let first: Vec<String> = (0..200).map(|i| apns_token("abcd", i)).collect();
        env.send_apns(&first).await;
        eventually("a stall", || get(&env.mock.ledger.stalls) >= 1).await;
        // A stalled upstream never stalls the API.
        let second: Vec<String> = (200..300).map(|i| apns_token("abcd", i)).collect();
        env.send_apns(&second).await;
        let (status, report) = env.get("/apns/report").await;
        assert_eq!(status, 200, "{report}");

        let c = wait_done(&env.gateway, pushgate::apns::FAMILY, 300).await;
        assert_eq!(c.successes, 300, "{c:?}");
        let ledger = &env.mock.ledger;
        assert!(get(&ledger.stalls) >= 2, "stalls: {}", get(&ledger.stalls));
        for t in first.iter().chain(&second) {
            assert!(ledger.token(t).deliveries >= 1, "{t} never delivered");
        }
        // Streams on a stalled connection may have been delivered: resent and counted.
        assert!(c.possible_duplicates > 0, "{c:?}");
        assert!(extra_deliveries(ledger) <= c.possible_duplicates);
        let metrics = env
            .client
            .get(env.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let stalled = metric(
            &metrics,
            "pushgate_upstream_stalled_total{platform=\"apns\"}",
        );
        assert!(stalled >= 2.0, "{stalled}");
    })
    .await
    .unwrap();
}

/// The value of one sample line in the Prometheus text format (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_records_and_exports_what_it_abandons() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup {
            faults: Faults {
                latency_ms: 200,
                ..Faults::default()
            },
            max_streams: 10,
            tweak: Box::new(|f| f.apns.as_mut().unwrap().max_connections = 1),
            ..ApnsSetup::default()
        })
        .await;
        let tokens: Vec<String> = (0..2000).map(|i| apns_token("abcd", i)).collect();
        env.post_json(
            "/apns/send",
            &json!({ "tokens": tokens, "payload": apns_payload() }),
        )
        .await;
        eventually("work in flight", || {
            env.gateway
                .state
                .platforms
                .front::<pushgate::apns::ApnsFront>()
                .unwrap()
                .apps()
                .default_app()
                .in_flight()
                > 0
        })
        .await;
        let state = env.gateway.state.clone();
        let report = env.gateway.shutdown(Duration::from_millis(300)).await;
        let c = state
            .backend
            .reports()
            .family(pushgate::apns::FAMILY)
            .counters();
        assert!(c.balanced(), "{c:?}");
        assert!(report.abandoned > 0, "{report:?}");
        assert_eq!(report.still_pending, 0, "{report:?}");
        assert_eq!(c.pending, 0);
        assert_eq!(c.expired, report.abandoned);
        assert_eq!(c.successes + c.expired, 2000);
        let delivered = tokens
            .iter()
            .filter(|t| env.mock.ledger.token(t).deliveries > 0)
            .count() as u64;
        assert_eq!(delivered, c.successes);
        let metrics = state.metrics.render().unwrap();
        let exported = metric(
            &metrics,
            "pushgate_shutdown_abandoned_total{platform=\"apns\"}",
        );
        assert_eq!(exported as u64, report.abandoned);
    })
    .await
    .unwrap();
}

// === the real binary ===

fn serve_config(apns: pushgate::config::ApnsSection, grace_s: u64) -> pushgate::config::FileConfig {
    let mut file = pushgate::config::FileConfig::default();
    file.server.listen = "127.0.0.1:0".into();
    // Durability is not the point here (tests/durable.rs is): keep nothing.
    file.queue.backend = "memory".into();
    file.server.shutdown_grace = grace_s;
    file.apns = Some(apns);
    file
}

fn u64_field(v: &Value, key: &str) -> u64 {
    v["fields"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_refuses_new_sends_accounts_for_every_token_and_exits_0() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = scratch("drain");
        let faults = Faults {
            latency_ms: 200,
            ..Faults::default()
        };
        let (mock, mut section) = apns_mock_for_process(&dir, faults, 100).await;
        section.max_connections = 2;
        let mut served = Served::start(&dir, "pushgate", &serve_config(section, 2)).await;
        let client = reqwest::Client::new();
        let tokens: Vec<String> = (0..20_000).map(|i| apns_token("abcd", i)).collect();
        let (status, answer) = post_json_to(&client, &served.url, "/apns/send", &json!({ "tokens": tokens, "payload": apns_payload() })).await;
        assert_eq!(status, 202, "{answer}");
        eventually("deliveries under way", || get(&mock.ledger.requests) > 0).await;

        served.signal("TERM");
        served.wait_for_log("draining").await;
        // New work is refused while the drain runs.
        let more = json!({ "tokens": [apns_token("abcd", 99_999)], "payload": apns_payload() });
        let (status, refused) = post_json_to(&client, &served.url, "/apns/send", &more).await;
        assert_eq!((status, refused["error"].as_str()), (503, Some("shutting_down")), "{refused}");

        let status = served.wait_exit().await;
        assert_eq!(status.code(), Some(0), "{:#?}", served.lines.lock().unwrap());
        let totals = served.logs("final totals").pop().expect("final totals logged");
        let drained = served
            .logs("shutdown left work undelivered")
            .pop()
            .or_else(|| served.logs("drained").pop())
            .expect("drain result logged");
        let stopped = served.logs("pushgate stopped").pop().expect("stop logged");
        let accepted = u64_field(&totals, "accepted");
        let successes = u64_field(&totals, "successes");
        let expired = u64_field(&totals, "expired");
        let pending = u64_field(&totals, "pending");
        let abandoned = u64_field(&drained, "abandoned");
        let still_pending = u64_field(&drained, "still_pending");
        assert_eq!(u64_field(&stopped, "abandoned"), abandoned);
        // Every accepted token (the refused one never was) is accounted for.
        assert_eq!(accepted, 20_000);
        assert_eq!(successes + expired + pending, accepted, "{totals}");
        assert_eq!(expired, abandoned, "only the shutdown expires tokens here");
        assert_eq!(pending, still_pending);
        // Nothing silently lost: every token is delivered, or abandoned and said so.
        let ledger = mock.ledger.tokens();
        let delivered = tokens.iter().filter(|t| ledger.get(*t).is_some_and(|r| r.deliveries > 0)).count() as u64;
        assert!(delivered >= successes && delivered <= successes + pending, "{delivered} delivered, {totals}");
        assert!(!ledger.contains_key(&apns_token("abcd", 99_999)), "a refused token was sent");
        assert!(successes > 0 && abandoned > 0, "the drain should both deliver and abandon: {totals}");
        eprintln!(
            "drain run: accepted {accepted}, delivered {successes}, abandoned (expired: Shutdown) {abandoned}, still in flight {still_pending}, mock saw {delivered} delivered, exit code 0"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_with_130() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = scratch("second-signal");
        let faults = Faults {
            latency_ms: 500,
            ..Faults::default()
        };
        let (mock, section) = apns_mock_for_process(&dir, faults, 10).await;
        // A grace far longer than the test: only the second signal can end it.
        let mut served = Served::start(&dir, "pushgate", &serve_config(section, 3600)).await;
        let client = reqwest::Client::new();
        let tokens: Vec<String> = (0..5_000).map(|i| apns_token("abcd", i)).collect();
        let (status, _) = post_json_to(
            &client,
            &served.url,
            "/apns/send",
            &json!({ "tokens": tokens, "payload": apns_payload() }),
        )
        .await;
        assert_eq!(status, 202);
        eventually("deliveries under way", || get(&mock.ledger.requests) > 0).await;
        served.signal("TERM");
        served.wait_for_log("draining").await;
        served.signal("INT");
        let status = served.wait_exit().await;
        assert_eq!(
            status.code(),
            Some(130),
            "{:#?}",
            served.lines.lock().unwrap()
        );
        assert!(!served.logs("second signal").is_empty());
    })
    .await
    .unwrap();
}

// === the big fault run ===

/// APNs tokens of the big run: what the mock will do with each, by prefix.
fn apns_expected(token: &str) -> &'static str {
    match &token[..4] {
        "dead" => "unregistered",
        "bad0" => "failed",
        "5000" => "expired",
        _ => "success",
    }
}

fn summary(name: &str, c: &Counters, connections: u64, took: Duration) {
    eprintln!(
        "fault run {name}: accepted {}, delivered {}, retried {}, expired {}, unregistered {}, failed {}, possible duplicates {}, reconnects (mock connections) {connections}, wall {:.1} s",
        c.accepted,
        c.successes + c.canonicals,
        c.retries,
        c.expired,
        c.unregistered,
        c.failures,
        c.possible_duplicates,
        took.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apns_100k_tokens_through_every_fault_at_once() {
    const TOTAL: usize = 100_000;
    tokio::time::timeout(Duration::from_secs(600), async {
        let tokens: Vec<String> = (0..TOTAL)
            .map(|i| {
                let prefix = match i % 1000 {
                    0..=9 => "dead",
                    10..=14 => "bad0",
                    15 => "5000",
                    _ => "abcd",
                };
                apns_token(prefix, i)
            })
            .collect();
        let flaky: HashSet<String> = tokens.iter().step_by(50).cloned().collect();
        let env = apns_env(ApnsSetup {
            faults: Faults {
                error_rate: 0.02,
                throttle_every: Some(199),
                retry_after_s: 1,
                goaway_after: Some(1500),
                drop_after: Some(1000),
                latency_ms: 2,
                flaky,
                ..Faults::default()
            },
            max_streams: 64,
            tweak: Box::new(|f| {
                let apns = f.apns.as_mut().unwrap();
                apns.max_retries = 30;
                apns.min_connections = 1;
                apns.max_connections = 4;
                apns.grow_interval_ms = 100;
                f.retry.base_ms = 5;
                f.retry.cap_ms = 100;
            }),
            ..ApnsSetup::default()
        })
        .await;
        let started = Instant::now();
        for chunk in tokens.chunks(10_000) {
            env.send_apns(chunk).await;
        }
        let c = wait_done_within(&env.gateway, pushgate::apns::FAMILY, TOTAL as u64, Duration::from_secs(540)).await;
        let took = started.elapsed();
        let ledger = &env.mock.ledger;
        summary("APNs", &c, get(&ledger.connections), took);
        eprintln!(
            "  mock: requests {}, goaways {}, drops {}, peak streams {} (max 64), limit violations {}",
            get(&ledger.requests),
            get(&ledger.goaways),
            get(&ledger.drops),
            get(&ledger.peak_streams),
            get(&ledger.stream_limit_violations)
        );
        check_apns_books(&c, &tokens, ledger);
        assert!(get(&ledger.goaways) >= 1 && get(&ledger.drops) >= 1, "both connection faults fired");
        assert_eq!(get(&ledger.stream_limit_violations), 0);
        assert!(get(&ledger.peak_streams) <= 64);
    })
    .await
    .unwrap();
}

fn check_apns_books(c: &Counters, tokens: &[String], ledger: &Ledger) {
    assert!(c.balanced(), "{c:?}");
    assert_eq!(c.pending, 0);
    assert_eq!(c.accepted, tokens.len() as u64);
    let records = ledger.tokens();
    let mut want = [0u64; 4];
    for t in tokens {
        let deliveries = records.get(t).map_or(0, |r| r.deliveries);
        let kind = apns_expected(t);
        want[match kind {
            "success" => 0,
            "unregistered" => 1,
            "failed" => 2,
            _ => 3,
        }] += 1;
        if kind == "success" {
            assert!(deliveries >= 1, "{t} never delivered");
        } else {
            assert_eq!(deliveries, 0, "{t} ({kind}) delivered");
        }
    }
    // Exactly one terminal outcome each, of the kind the token asked for.
    assert_eq!(
        [c.successes, c.unregistered, c.failures, c.expired],
        want,
        "{c:?}"
    );
    let extra = extra_deliveries(ledger);
    assert!(
        extra <= c.possible_duplicates,
        "{extra} duplicate deliveries, {} counted",
        c.possible_duplicates
    );
}

/// Like `wait_done` with a longer bound, for the big runs.
async fn wait_done_within(
    gateway: &pushgate::gateway::Gateway,
    family: Family,
    accepted: u64,
    limit: Duration,
) -> Counters {
    let deadline = Instant::now() + limit;
    loop {
        let c = gateway.state.backend.reports().family(family).counters();
        assert!(c.balanced(), "books out of balance: {c:?}");
        if c.accepted >= accepted && c.pending == 0 {
            return c;
        }
        assert!(Instant::now() < deadline, "still pending: {c:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Google tokens of the big run and what each should end as.
fn google_tokens(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 100 {
            0 => format!("unregistered-{i}"),
            1 => format!("invalid-{i}"),
            2 => format!("canonical-{i}"),
            3 => format!("flaky-{i}"),
            4 => format!("quota-{i}"),
            _ => format!("device-{i}"),
        })
        .collect()
}

async fn google_fault_run(kind: GoogleApi) {
    const TOTAL: usize = 20_000;
    let tokens = google_tokens(TOTAL);
    let flaky: HashSet<String> = tokens.iter().skip(7).step_by(40).cloned().collect();
    let faults = Faults {
        error_rate: 0.02,
        throttle_every: Some(if kind == GoogleApi::V1 { 97 } else { 7 }),
        retry_after_s: 1,
        latency_ms: 2,
        flaky,
        ..Faults::default()
    };
    let env = google_env(kind, faults, |f| {
        f.retry.base_ms = 5;
        f.retry.cap_ms = 100;
        if let Some(fcm) = f.fcm.as_mut() {
            fcm.max_retries = 30;
        }
        if let Some(gcm) = f.gcm.as_mut() {
            gcm.max_retries = 30;
        }
    })
    .await;
    let base = env.gateway.url();
    let started = Instant::now();
    for chunk in tokens.chunks(5_000) {
        let (status, answer) = post_json_to(
            &env.client,
            &base,
            "/gcm/send",
            &json!({ "tokens": chunk, "payload": { "title": "hi" } }),
        )
        .await;
        assert_eq!(status, 202, "{answer}");
    }
    let c = wait_done_within(
        &env.gateway,
        pushgate::fcm::FAMILY,
        TOTAL as u64,
        Duration::from_secs(540),
    )
    .await;
    let took = started.elapsed();
    let ledger = &env.mock.ledger;
    summary(&format!("{kind:?}"), &c, get(&ledger.connections), took);
    assert!(c.balanced(), "{c:?}");
    assert_eq!((c.accepted, c.pending), (TOTAL as u64, 0));
    let records = ledger.tokens();
    let (mut unregistered, mut invalid, mut canonical) = (0, 0, 0);
    for t in &tokens {
        let deliveries = records.get(t).map_or(0, |r| r.deliveries);
        if t.starts_with("unregistered") {
            unregistered += 1;
            assert_eq!(deliveries, 0, "{t}");
        } else if t.starts_with("invalid") {
            invalid += 1;
            assert_eq!(deliveries, 0, "{t}");
        } else {
            canonical += u64::from(t.starts_with("canonical"));
            assert!(deliveries >= 1, "{t} never delivered");
        }
    }
    assert_eq!(
        (c.unregistered, c.failures, c.expired),
        (unregistered, invalid, 0),
        "{c:?}"
    );
    match kind {
        GoogleApi::V1 => assert_eq!(c.successes, TOTAL as u64 - unregistered - invalid),
        GoogleApi::Legacy => {
            assert_eq!(c.canonicals, canonical);
            assert_eq!(
                c.successes + c.canonicals,
                TOTAL as u64 - unregistered - invalid
            );
        }
    }
    let extra = extra_deliveries(ledger);
    assert!(
        extra <= c.possible_duplicates,
        "{extra} duplicate deliveries, {} counted",
        c.possible_duplicates
    );
    assert!(c.retries > 0, "the faults fired: {c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fcm_v1_20k_tokens_through_throttling_and_errors() {
    tokio::time::timeout(Duration::from_secs(600), google_fault_run(GoogleApi::V1))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcm_legacy_20k_tokens_through_throttling_and_errors() {
    tokio::time::timeout(
        Duration::from_secs(600),
        google_fault_run(GoogleApi::Legacy),
    )
    .await
    .unwrap();
}
