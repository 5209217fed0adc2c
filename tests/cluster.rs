//! `[queue] backend = "redis"`: several real `pushgate serve` processes share
//! one Redis stream (a `redis-server` of the test's own on a free port) and
//! one mock APNs, whose ledger counts every delivery of every token.
//!
//! - three gateways, 100,000 tokens posted across them: each token delivered
//!   exactly once, and every gateway did part of the work;
//! - `kill -9` of one gateway mid-run: every token delivered, duplicates no
//!   more than what that gateway held in flight, and reported;
//! - Redis restarted mid-run: sends answer 503 and `/readyz` fails while it is
//!   away, then work resumes and nothing is lost.
//!
//! Figures (tokens, duplicates, time to reclaim, tokens/s) are printed with
//! `eprintln!` (`cargo test --test cluster -- --nocapture`); none is asserted
//! on, since CI machines differ. Left out: Redis Cluster and Redis with TLS
//! (`tests/redis_managed.rs` runs TLS).
//!
//! FCM through the shared queue: legacy jobs, and v1 paced by one
//! cluster-wide bucket (two gateways together hold `max_per_minute`).
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pushgate::config::{ApnsSection, FileConfig};
use pushgate::gateway::Gateway;
use pushgate::mock::{Faults, Ledger, MockHandle};
use serde_json::{Value, json};

/// These runs move 100k tokens through debug builds: more room than the default.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(400);
const CLAIM_IDLE_MS: u64 = 2000;

/// `redis-server`, or what `PUSHGATE_TEST_REDIS_SERVER` names
/// (`valkey-server`: scripts/test runs these tests against both when it can).
fn redis_server_bin() -> String {
    std::env::var("PUSHGATE_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` of the test's own, persisting every write (appendfsync
/// always) in `dir` so that a restart keeps the stream.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl RedisServer {
    async fn start(dir: &Path) -> Self {
        let mut server = Self {
            child: None,
            port: free_port(),
            dir: dir.join("redis"),
        };
        std::fs::create_dir_all(&server.dir).unwrap();
        server.spawn().await;
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new(redis_server_bin())
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; scripts/test installs it)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut c)
                    .await
                    .is_ok()
            {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: Redis finishes its append-only file and exits.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn cluster_config(apns: &ApnsSection, redis: &RedisServer, name: &str) -> FileConfig {
    let mut file = FileConfig::default();
    file.server.listen = "127.0.0.1:0".into();
    file.server.shutdown_grace = 2;
    file.apns = Some(apns.clone());
    file.queue.backend = "redis".into();
    file.queue.redis_url = redis.url();
    file.queue.consumer = name.into();
    file.queue.claim_idle_ms = CLAIM_IDLE_MS;
    file
}

async fn start_gateways(
    dir: &Path,
    apns: &ApnsSection,
    redis: &RedisServer,
    names: &[&str],
) -> Vec<Served> {
    let mut all = Vec::new();
    for name in names {
        all.push(Served::start(dir, name, &cluster_config(apns, redis, name)).await);
    }
    all
}

/// Posts `tokens` in requests of `per_request`, round-robin over `gateways`.
async fn post_across(
    client: &reqwest::Client,
    gateways: &[&Served],
    tokens: &[String],
    per_request: usize,
) {
    for (i, batch) in tokens.chunks(per_request).enumerate() {
        let g = gateways[i % gateways.len()];
        let (status, answer) = post_json_to(
            client,
            &g.url,
            "/apns/send",
            &json!({ "tokens": batch, "payload": apns_payload() }),
        )
        .await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["accepted"].as_u64(), Some(batch.len() as u64));
    }
}

/// Tokens of `tokens` the mock has delivered at least once.
fn delivered(ledger: &Ledger, tokens: &[String]) -> usize {
    let seen = ledger.tokens();
    tokens
        .iter()
        .filter(|t| seen.get(*t).is_some_and(|r| r.deliveries > 0))
        .count()
}

/// Deliveries beyond the first, over `tokens`.
fn duplicates(ledger: &Ledger, tokens: &[String]) -> u64 {
    let seen = ledger.tokens();
    tokens
        .iter()
        .filter_map(|t| seen.get(t))
        .map(|r| u64::from(r.deliveries.saturating_sub(1)))
        .sum()
}

/// Waits until every token of `tokens` was delivered; returns how long it took.
async fn wait_delivered(mock: &MockHandle, tokens: &[String], limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let n = delivered(&mock.ledger, tokens);
        if n == tokens.len() {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "only {n} of {} delivered after {limit:?}",
            tokens.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a gateway's cluster-wide `/apns/report` shows nothing pending.
async fn settled_report(client: &reqwest::Client, g: &Served, accepted: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client
            .get(format!("{}/apns/report", g.url))
            .send()
            .await
            .unwrap();
        let report: Value = r.json().await.unwrap_or(Value::Null);
        if report["accepted"].as_u64() == Some(accepted) && report["pending"].as_u64() == Some(0) {
            return report;
        }
        assert!(Instant::now() < deadline, "report never settled: {report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sum of `series` (every label set) on the gateway at `base`.
async fn metric(client: &reqwest::Client, base: &str, series: &str) -> f64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn tokens(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| apns_token(prefix, i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_share_one_queue_and_send_each_token_once() {
    tokio::time::timeout(CLUSTER_TIMEOUT, async {
        let dir = scratch("cluster-three");
        let redis = RedisServer::start(&dir).await;
        let (mock, apns) = apns_mock_for_process(&dir, Faults::default(), 100).await;
        let client = reqwest::Client::new();
        let gateways = start_gateways(&dir, &apns, &redis, &["g1", "g2", "g3"]).await;

        // 100,000 tokens posted across the three.
        let all = tokens("b2b2", 100_000);
        let started = Instant::now();
        let refs: Vec<&Served> = gateways.iter().collect();
        post_across(&client, &refs, &all, 10_000).await;
        let took = wait_delivered(&mock, &all, Duration::from_secs(300)).await.max(started.elapsed());
        let dupes = duplicates(&mock.ledger, &all);
        assert_eq!(dupes, 0, "a token was delivered twice without any crash");
        // Any gateway tells the whole truth.
        for g in &gateways {
            let report = settled_report(&client, g, 100_000).await;
            assert_eq!(report["successes"].as_u64(), Some(100_000), "{report}");
            assert_eq!(report["possible_duplicates"].as_u64(), Some(0), "{report}");
        }
        let mut shares = Vec::new();
        for g in &gateways {
            let share = metric(&client, &g.url, "pushgate_outcomes_total").await;
            assert!(share > 0.0, "a gateway took no work");
            shares.push(share as u64);
        }
        eprintln!(
            "cluster: 3 gateways, 100000 tokens posted across them, {} delivered, {dupes} duplicates, {:.1} s ({:.0} tokens/s); per-gateway outcomes {shares:?}",
            delivered(&mock.ledger, &all),
            took.as_secs_f64(),
            all.len() as f64 / took.as_secs_f64(),
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gateway_alone_for_the_throughput_baseline() {
    tokio::time::timeout(CLUSTER_TIMEOUT, async {
        let dir = scratch("cluster-one");
        let redis = RedisServer::start(&dir).await;
        let (mock, apns) = apns_mock_for_process(&dir, Faults::default(), 100).await;
        let client = reqwest::Client::new();
        let gateways = start_gateways(&dir, &apns, &redis, &["solo"]).await;
        let all = tokens("c3c3", 100_000);
        let started = Instant::now();
        post_across(&client, &[&gateways[0]], &all, 10_000).await;
        let took = wait_delivered(&mock, &all, Duration::from_secs(300)).await.max(started.elapsed());
        assert_eq!(duplicates(&mock.ledger, &all), 0);
        let report = settled_report(&client, &gateways[0], 100_000).await;
        assert_eq!(report["successes"].as_u64(), Some(100_000), "{report}");
        eprintln!(
            "cluster: 1 gateway, 100000 tokens, {} delivered, 0 duplicates, {:.1} s ({:.0} tokens/s)",
            delivered(&mock.ledger, &all),
            took.as_secs_f64(),
            all.len() as f64 / took.as_secs_f64()
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_gateway_loses_nothing_and_bounds_duplicates() {
    tokio::time::timeout(CLUSTER_TIMEOUT, async {
        let dir = scratch("cluster-kill");
        let redis = RedisServer::start(&dir).await;
        // Latency keeps work in flight when the kill lands.
        let faults = Faults {
            latency_ms: 20,
            ..Faults::default()
        };
        let (mock, apns) = apns_mock_for_process(&dir, faults, 100).await;
        let client = reqwest::Client::new();
        let mut gateways = start_gateways(&dir, &apns, &redis, &["k1", "k2", "k3"]).await;
        let all = tokens("d4d4", 30_000);
        let refs: Vec<&Served> = gateways.iter().collect();
        post_across(&client, &refs, &all, 5_000).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        while Ledger::get(&mock.ledger.requests) < 5_000 {
            assert!(Instant::now() < deadline, "deliveries never got going");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The window the victim holds when it dies (sized from round trips).
        let view: Value = client
            .get(format!("{}/cluster", gateways[0].url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let window_at_kill = view["this_gateway_window"].as_u64().unwrap();
        gateways[0].kill();
        let killed_at = Instant::now();
        // Time to reclaim: from the kill to the first chunk a survivor took over.
        let mut reclaim_after = None;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if reclaim_after.is_none()
                && gateways[1..].iter().any(|g| !g.logs("reclaimed a chunk").is_empty())
            {
                reclaim_after = Some(killed_at.elapsed());
            }
            if delivered(&mock.ledger, &all) == all.len() && reclaim_after.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "not all delivered / reclaimed: {} of {}", delivered(&mock.ledger, &all), all.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = killed_at.elapsed();
        let reclaimed: usize = gateways[1..].iter().map(|g| g.logs("reclaimed a chunk").len()).sum();
        let dupes = duplicates(&mock.ledger, &all);
        let report = settled_report(&client, &gateways[1], 30_000).await;
        assert_eq!(report["successes"].as_u64(), Some(30_000), "{report}");
        let reported = report["possible_duplicates"].as_u64().unwrap();
        let in_flight_bound = (pushgate::store::redis::CHUNKS_IN_FLIGHT
            * pushgate::store::redis::CHUNK_TOKENS) as u64;
        assert!(dupes <= reported, "{dupes} duplicates, only {reported} reported");
        assert!(reported <= in_flight_bound, "{reported} resent, more than one gateway holds");
        let mut metric_total = 0.0;
        for g in &gateways[1..] {
            metric_total += metric(&client, &g.url, "pushgate_possible_duplicates_total").await;
        }
        assert_eq!(metric_total as u64, reported, "the metric and the report disagree");
        eprintln!(
            "kill -9: 30000 tokens over 3 gateways, one killed mid-run; {} delivered, {dupes} duplicates (reported possible: {reported}, window at the kill {window_at_kill} chunks, bound {in_flight_bound}), {reclaimed} chunks reclaimed, first reclaim {:.1} s after the kill (claim_idle_ms = {CLAIM_IDLE_MS}), all delivered {:.1} s after the kill",
            delivered(&mock.ledger, &all),
            reclaim_after.unwrap_or_default().as_secs_f64(),
            took.as_secs_f64(),
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_run_answers_503_then_resumes_losing_nothing() {
    tokio::time::timeout(CLUSTER_TIMEOUT, async {
        let dir = scratch("cluster-restart");
        let mut redis = RedisServer::start(&dir).await;
        let faults = Faults {
            latency_ms: 20,
            ..Faults::default()
        };
        let (mock, apns) = apns_mock_for_process(&dir, faults, 100).await;
        let client = reqwest::Client::new();
        let gateways = start_gateways(&dir, &apns, &redis, &["r1"]).await;
        let g = &gateways[0];
        let all = tokens("e5e5", 20_000);
        post_across(&client, &[g], &all, 5_000).await;
        let deadline = Instant::now() + Duration::from_secs(120);
        while Ledger::get(&mock.ledger.requests) < 2_000 {
            assert!(Instant::now() < deadline, "deliveries never got going");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        redis.stop();
        let (status, answer) = post_json_to(
            &client,
            &g.url,
            "/apns/send",
            &json!({ "tokens": [apns_token("e5e5", 99_999)], "payload": apns_payload() }),
        )
        .await;
        assert_eq!((status, answer["error"].as_str()), (503, Some("queue_unavailable")), "{answer}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = client.get(format!("{}/readyz", g.url)).send().await.unwrap();
            if r.status().as_u16() == 503 {
                break;
            }
            assert!(Instant::now() < deadline, "/readyz stayed ready without Redis");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        redis.spawn().await;
        let took = wait_delivered(&mock, &all, Duration::from_secs(200)).await;
        let report = settled_report(&client, g, 20_000).await;
        assert_eq!(report["successes"].as_u64(), Some(20_000), "{report}");
        let dupes = duplicates(&mock.ledger, &all);
        assert!(dupes <= report["possible_duplicates"].as_u64().unwrap(), "{dupes} duplicates, {report}");
        assert!(!mock.ledger.tokens().contains_key(&apns_token("e5e5", 99_999)), "a refused token was sent");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = client.get(format!("{}/readyz", g.url)).send().await.unwrap();
            if r.status().as_u16() == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "/readyz never recovered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "redis restart: 20000 tokens, {} delivered, {dupes} duplicates, all delivered {:.1} s after Redis came back; sends during the outage answered 503 queue_unavailable",
            delivered(&mock.ledger, &all),
            took.as_secs_f64()
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_jobs_delays_and_cancels_are_cluster_wide() {
    tokio::time::timeout(CLUSTER_TIMEOUT, async {
        let dir = scratch("cluster-lists");
        let redis = RedisServer::start(&dir).await;
        let (mock, apns) = apns_mock_for_process(&dir, Faults::default(), 100).await;
        let client = reqwest::Client::new();
        let gateways = start_gateways(&dir, &apns, &redis, &["l1", "l2"]).await;
        let (a, b) = (&gateways[0], &gateways[1]);

        // Outcomes that land in lists, posted to one gateway, read on the other.
        let mixed: Vec<String> = (0..10)
            .map(|i| apns_token("dead", i))
            .chain((0..5).map(|i| apns_token("bad0", i)))
            .chain((0..85).map(|i| apns_token("f0f0", i)))
            .collect();
        let (status, answer) = post_json_to(&client, &a.url, "/apns/send", &json!({ "tokens": mixed, "payload": apns_payload() })).await;
        assert_eq!(status, 202, "{answer}");
        let job = answer["job"].as_str().unwrap().to_owned();
        let report = settled_report(&client, b, 100).await;
        assert_eq!((report["successes"].as_u64(), report["unregistered"].as_u64(), report["failures"].as_u64()), (Some(85), Some(10), Some(5)), "{report}");
        let (_, status) = post_get(&client, &b.url, &format!("/jobs/{job}")).await;
        assert_eq!((status["state"].as_str(), status["total"].as_u64(), status["pending"].as_u64()), (Some("done"), Some(100), Some(0)), "{status}");
        let (_, listed) = post_get(&client, &b.url, "/apns/report/unregistered").await;
        assert_eq!(listed["tokens"].as_array().map(Vec::len), Some(10), "{listed}");
        // DELETE on one gateway empties the list for all.
        let drained: Value = client.delete(format!("{}/apns/report/unregistered", a.url)).send().await.unwrap().json().await.unwrap();
        assert_eq!(drained["tokens"].as_array().map(Vec::len), Some(10), "{drained}");
        let (_, listed) = post_get(&client, &b.url, "/apns/report/unregistered").await;
        assert_eq!(listed["tokens"].as_array().map(Vec::len), Some(0), "{listed}");
        let (_, failures) = post_get(&client, &b.url, "/apns/report/failures").await;
        assert_eq!(failures["failures"][0]["reason"].as_str(), Some("BadDeviceToken"), "{failures}");

        // A delayed send waits in Redis, then goes out once.
        let later: Vec<String> = (0..50).map(|i| apns_token("aaaa", i)).collect();
        let posted = Instant::now();
        let (status, answer) = post_json_to(&client, &b.url, "/apns/send", &json!({ "tokens": later, "payload": apns_payload(), "delay_seconds": 2 })).await;
        assert_eq!((status, answer["scheduled_in_s"].as_u64()), (202, Some(2)), "{answer}");
        wait_delivered(&mock, &later, Duration::from_secs(60)).await;
        assert!(posted.elapsed() >= Duration::from_secs(2), "a delayed send went out early");
        assert_eq!(duplicates(&mock.ledger, &later), 0);

        // A cancel on one gateway reaches the job wherever it runs.
        let held: Vec<String> = (0..50).map(|i| apns_token("cccc", i)).collect();
        let (status, answer) = post_json_to(&client, &a.url, "/apns/send", &json!({ "tokens": held, "payload": apns_payload(), "delay_seconds": 1 })).await;
        assert_eq!(status, 202, "{answer}");
        let job = answer["job"].as_str().unwrap().to_owned();
        let cancelled: Value = client.delete(format!("{}/jobs/{job}", b.url)).send().await.unwrap().json().await.unwrap();
        assert_eq!(cancelled["job"].as_str(), Some(job.as_str()), "{cancelled}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, status) = post_get(&client, &a.url, &format!("/jobs/{job}")).await;
            if status["state"].as_str() == Some("cancelled") {
                assert_eq!(status["cancelled"].as_u64(), Some(50), "{status}");
                break;
            }
            assert!(Instant::now() < deadline, "never cancelled: {status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(delivered(&mock.ledger, &held), 0, "a cancelled job was sent");
        eprintln!("cluster lists: 10 unregistered and 5 failures seen from the other gateway; delayed 50 tokens delivered after {:.1} s", posted.elapsed().as_secs_f64());
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_unfinished_chunks_to_the_other_gateways() {
    tokio::time::timeout(CLUSTER_TIMEOUT, async {
        let dir = scratch("cluster-term");
        let redis = RedisServer::start(&dir).await;
        // Slow enough that the 2 s grace cannot finish what g1 holds.
        let faults = Faults {
            latency_ms: 200,
            ..Faults::default()
        };
        let (mock, mut apns) = apns_mock_for_process(&dir, faults, 100).await;
        apns.max_connections = 1;
        let client = reqwest::Client::new();
        let mut gateways = start_gateways(&dir, &apns, &redis, &["t1", "t2"]).await;
        let all = tokens("fafa", 6_000);
        post_across(&client, &[&gateways[0]], &all, 3_000).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Ledger::get(&mock.ledger.requests) < 100 {
            assert!(Instant::now() < deadline, "deliveries never got going");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let status = gateways[0].terminate().await;
        assert_eq!(status.code(), Some(0));
        let left = gateways[0].logs("shutdown left work undelivered");
        // What t1 left is reclaimed by t2: nothing ends as expired.
        wait_delivered(&mock, &all, Duration::from_secs(300)).await;
        let report = settled_report(&client, &gateways[1], 6_000).await;
        assert_eq!(report["successes"].as_u64(), Some(6_000), "{report}");
        assert_eq!(report["expired"].as_u64(), Some(0), "{report}");
        let dupes = duplicates(&mock.ledger, &all);
        assert!(dupes <= report["possible_duplicates"].as_u64().unwrap(), "{dupes} duplicates, {report}");
        eprintln!(
            "sigterm: 6000 tokens, gateway t1 stopped mid-run ({} left in the stream), all delivered, {dupes} duplicates, 0 expired",
            left.first().map(|l| l["fields"]["abandoned"].clone()).unwrap_or(Value::Null)
        );
    })
    .await
    .unwrap();
}

async fn post_get(client: &reqwest::Client, base: &str, path: &str) -> (u16, Value) {
    let r = client.get(format!("{base}{path}")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Google delivery through the shared queue (in-process gateway): the GoCM
/// form's fields survive the trip through Redis, and the Google lists are
/// cluster-wide. FCM v1 takes the same path (`StoredFields::Google`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_legacy_jobs_go_through_the_shared_queue() {
    tokio::time::timeout(CLUSTER_TIMEOUT, async {
        let dir = scratch("cluster-google");
        let redis = RedisServer::start(&dir).await;
        let url = redis.url();
        let env = google_env(GoogleApi::Legacy, Faults::default(), move |file| {
            file.queue.backend = "redis".into();
            file.queue.redis_url = url;
            file.queue.claim_idle_ms = CLAIM_IDLE_MS;
        })
        .await;
        let tokens: Vec<String> = (0..1_500)
            .map(|i| format!("regid-{i}"))
            .chain((0..20).map(|i| format!("unregistered-{i}")))
            .collect();
        let (status, answer) = env
            .post_gocm_form(
                "/gcm/send",
                &tokens,
                r#"{"title":"hi"}"#,
                &[("time_to_live", "3600")],
            )
            .await;
        assert_eq!(status, 202, "{answer}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let report = loop {
            let (_, report) = env.get("/gcm/report").await;
            if report["pending"].as_u64() == Some(0) && report["accepted"].as_u64() == Some(1_520) {
                break report;
            }
            assert!(Instant::now() < deadline, "never settled: {report}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(
            (
                report["successes"].as_u64(),
                report["notregistered"].as_u64()
            ),
            (Some(1_500), Some(20)),
            "{report}"
        );
        let (_, gone) = env.get("/gcm/report/notregistered").await;
        assert_eq!(gone["tokens"].as_array().map(Vec::len), Some(20), "{gone}");
        assert!(
            gone["tokens"][0]
                .as_str()
                .is_some_and(|t| t.starts_with("unregistered-")),
            "{gone}"
        );
        assert_eq!(duplicates(&env.mock.ledger, &tokens[..1_500]), 0);
        assert_eq!(delivered(&env.mock.ledger, &tokens[..1_500]), 1_500);
    })
    .await
    .unwrap();
}

/// gorush's `notif_id` goes through the shared queue: the chunk carries it to
/// whichever gateway delivers (its webhook events), and `/jobs/{id}` (read
/// from Redis) shows it; a notification without one omits the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gorush_notif_id_is_carried_through_redis_to_the_job_and_the_webhook() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = scratch("cluster-notif");
        let redis = RedisServer::start(&dir).await;
        let (url, events) = hook_receiver().await;
        let redis_url = redis.url();
        let env = apns_env(ApnsSetup {
            tweak: Box::new(move |f| {
                f.queue.backend = "redis".into();
                f.queue.redis_url = redis_url;
                f.queue.consumer = "notif".into();
                f.webhook = Some(pushgate::config::WebhookSection {
                    url,
                    secret: pushgate::config::Secret::new("webhook-secret-0123456789"),
                    batch_size: 10,
                    flush_ms: 20,
                    ..Default::default()
                });
            }),
            ..ApnsSetup::default()
        })
        .await;
        let (status, answer, _) = env
            .post_json(
                "/api/push",
                &json!({"notifications": [
                    {"notif_id": "corr-redis", "tokens": [apns_token("abcd", 1), apns_token("abcd", 2)], "platform": 1, "message": "hi"},
                    {"tokens": [apns_token("abcd", 3)], "platform": 1, "message": "no id"}
                ]}),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        let jobs: Vec<String> = answer["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j.as_str().unwrap().to_owned())
            .collect();
        let want = [Some("corr-redis"), None];
        for e in &events_for(&events, 3).await {
            let k = jobs.iter().position(|j| e["job"] == j.as_str()).unwrap();
            assert_eq!(e["notif_id"].as_str(), want[k], "{e}");
            assert_eq!(e.get("notif_id").is_some(), want[k].is_some(), "{e}");
        }
        for (job, want) in jobs.iter().zip(want) {
            let (code, status) = env.get(&format!("/jobs/{job}")).await;
            assert_eq!(code, 200, "{status}");
            assert_eq!(status["notif_id"].as_str(), want, "{status}");
            assert_eq!(status.get("notif_id").is_some(), want.is_some(), "{status}");
        }
    })
    .await
    .unwrap();
}

/// `[fcm] max_per_minute` is the project's, not each gateway's: two gateways
/// on one Redis lease from one bucket, so together they send no faster than
/// the quota. 1,800/min is 30/s: 240 tokens take at least
/// (240 − slack) / 30 s, where slack is the cluster bucket (3) plus each
/// gateway's reserve (1 each); two buckets of their own would take half as
/// long. Only the lower bound on time (an upper bound on the rate) is
/// asserted: a slow machine takes longer, never less.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_fcm_quota_through_redis() {
    tokio::time::timeout(CLUSTER_TIMEOUT, async {
        let dir = scratch("cluster-fcm-pace");
        let redis = RedisServer::start(&dir).await;
        let url = redis.url();
        let per_minute = 1_800;
        let tweak = |name: &'static str| {
            let url = url.clone();
            move |file: &mut FileConfig| {
                file.queue.backend = "redis".into();
                file.queue.redis_url = url;
                file.queue.consumer = name.into();
                file.queue.claim_idle_ms = CLAIM_IDLE_MS;
                if let Some(fcm) = file.fcm.as_mut() {
                    fcm.max_per_minute = per_minute;
                }
            }
        };
        let a = google_env(GoogleApi::V1, Faults::default(), tweak("a")).await;
        // The second gateway sends to the first one's mock, as the same project.
        let mut b_config = a.file.clone();
        tweak("b")(&mut b_config);
        let b = Gateway::start(&b_config.validate().unwrap()).await.unwrap();
        let tokens: Vec<String> = (0..240).map(|i| format!("fcm-token-{i}")).collect();
        let started = Instant::now();
        for (i, batch) in tokens.chunks(20).enumerate() {
            let base = if i % 2 == 0 { a.gateway.url() } else { b.url() };
            let (status, answer) = post_json_to(
                &a.client,
                &base,
                "/fcm/send",
                &json!({ "tokens": batch, "payload": { "k": "v" }, "notification": { "title": "paced" } }),
            )
            .await;
            assert_eq!(status, 202, "{answer}");
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while delivered(&a.mock.ledger, &tokens) < tokens.len() {
            assert!(Instant::now() < deadline, "never delivered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = started.elapsed();
        let slack = 3 + 2;
        let floor = Duration::from_secs_f64((tokens.len() - slack) as f64 / 30.0 / 1.05);
        let mut sent = Vec::new();
        for base in [a.gateway.url(), b.url()] {
            let series = "pushgate_attempts_total{platform=\"fcm\"}";
            sent.push(metric(&a.client, &base, series).await);
        }
        eprintln!(
            "fcm pace through redis: {} tokens in {took:?} ({:.1}/s, quota 30/s), sent by a/b: {sent:?}",
            tokens.len(),
            tokens.len() as f64 / took.as_secs_f64()
        );
        assert!(took >= floor, "{took:?} < {floor:?}: faster than the shared quota");
        assert!(sent.iter().all(|&n| n > 0.0), "both gateways sent: {sent:?}");
        assert_eq!(duplicates(&a.mock.ledger, &tokens), 0);
    })
    .await
    .unwrap();
}

/// A streamed send through Redis: its parts are chunks any gateway takes,
/// the job grows as one, and a cut stream shows truncated everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_send_is_shared_through_redis_and_a_cut_one_shows_truncated() {
    use common::upload::{Upload, header_line, token_lines};
    tokio::time::timeout(CLUSTER_TIMEOUT, async {
        let dir = scratch("cluster-stream");
        let redis = RedisServer::start(&dir).await;
        let (mock, apns) = apns_mock_for_process(&dir, Faults::default(), 100).await;
        let client = reqwest::Client::new();
        let gateways = start_gateways(&dir, &apns, &redis, &["s1", "s2"]).await;

        let mut upload = Upload::start(&gateways[0].url, "/apns/send").await;
        upload.send(&header_line()).await;
        for start in (0..30_000).step_by(1000) {
            upload.send(&token_lines("b7b7", start..start + 1000)).await;
        }
        let (status, answer) = upload.finish().await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["accepted"], 30_000, "{answer}");
        let job = answer["job"].as_str().unwrap().to_owned();
        let all = tokens("b7b7", 30_000);
        wait_delivered(&mock, &all, Duration::from_secs(300)).await;
        assert_eq!(duplicates(&mock.ledger, &all), 0);
        let (_, status) = post_get(&client, &gateways[1].url, &format!("/jobs/{job}")).await;
        assert_eq!(status["total"], 30_000, "{status}");
        assert!(
            status.get("truncated").is_none_or(|t| t == false),
            "{status}"
        );
        for g in &gateways {
            assert!(
                metric(&client, &g.url, "pushgate_outcomes_total").await > 0.0,
                "a gateway took no part of the stream"
            );
        }

        // Cut after 5,000 whole lines and half of one.
        let mut upload = Upload::start(&gateways[1].url, "/apns/send").await;
        upload.send(&header_line()).await;
        upload.send(&token_lines("b8b8", 0..5000)).await;
        upload.send(b"\"b8b8").await;
        let cut = tokens("b8b8", 5000);
        wait_delivered(&mock, &cut, Duration::from_secs(120)).await;
        drop(upload);
        let report = settled_report(&client, &gateways[0], 35_000).await;
        assert_eq!(report["successes"], 35_000, "{report}");
        let opened = gateways[1].logs("streamed job opened");
        let cut_job = opened.last().unwrap()["fields"]["job"].as_str().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, status) =
                post_get(&client, &gateways[0].url, &format!("/jobs/{cut_job}")).await;
            if status["truncated"] == true {
                assert_eq!(status["total"], 5000, "{status}");
                assert_eq!(status["state"], "done", "{status}");
                break;
            }
            assert!(Instant::now() < deadline, "{status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
}

/// Huawei Push Kit on the shared queue: two `pushgate serve` processes on one
/// Redis and one mock HMS, 6,000 tokens posted across both. Every valid
/// token is delivered exactly once, both gateways did part of the work, the
/// unregistered list (cluster-wide) is exactly the illegal tokens, and the
/// two share one access token (one grant at the mock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_deliver_hms_through_redis_each_token_once() {
    tokio::time::timeout(CLUSTER_TIMEOUT, async {
        let dir = scratch("cluster-hms");
        let redis = RedisServer::start(&dir).await;
        // A little latency so that both gateways hold work at once.
        let (mock, mut hms) = hms_mock_for_process(&dir, |o| o.faults.latency_ms = 5).await;
        hms.batch_size = 100;
        let client = reqwest::Client::new();
        let mut gateways = Vec::new();
        for name in ["h1", "h2"] {
            let mut file = FileConfig::default();
            file.server.listen = "127.0.0.1:0".into();
            file.server.shutdown_grace = 2;
            file.queue.backend = "redis".into();
            file.queue.redis_url = redis.url();
            file.queue.consumer = name.into();
            file.queue.claim_idle_ms = CLAIM_IDLE_MS;
            file.hms = Some(hms.clone());
            gateways.push(Served::start(&dir, name, &file).await);
        }
        let all: Vec<String> = (0..6_000)
            .map(|i| {
                if i % 40 == 3 {
                    format!("illegal-{i}")
                } else {
                    format!("hms-{i}")
                }
            })
            .collect();
        let (illegal, valid): (Vec<String>, Vec<String>) =
            all.iter().cloned().partition(|t| t.starts_with("illegal"));
        for (i, batch) in all.chunks(500).enumerate() {
            let g = &gateways[i % 2];
            let (status, answer) = post_json_to(
                &client,
                &g.url,
                "/hms/send",
                &json!({"tokens": batch, "data": {"n": i}}),
            )
            .await;
            assert_eq!(status, 202, "{answer}");
        }
        wait_delivered(&mock.handle, &valid, Duration::from_secs(120)).await;
        assert_eq!(duplicates(&mock.handle.ledger, &valid), 0);
        for g in &gateways {
            let deadline = Instant::now() + Duration::from_secs(60);
            let report = loop {
                let (_, r) = post_get(&client, &g.url, "/hms/report").await;
                if r["accepted"].as_u64() == Some(6_000) && r["pending"].as_u64() == Some(0) {
                    break r;
                }
                assert!(Instant::now() < deadline, "never settled: {r}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            assert_eq!(
                report["successes"].as_u64(),
                Some(valid.len() as u64),
                "{report}"
            );
            assert_eq!(
                report["unregistered"].as_u64(),
                Some(illegal.len() as u64),
                "{report}"
            );
            let text = client
                .get(format!("{}/metrics", g.url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let share: f64 = text
                .lines()
                .filter(|l| {
                    l.starts_with("pushgate_outcomes_total") && l.contains("platform=\"hms\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            assert!(share > 0.0, "a gateway took no HMS work");
        }
        let (_, list) = post_get(&client, &gateways[0].url, "/hms/report/unregistered").await;
        let listed: std::collections::HashSet<&str> = list["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["token"].as_str())
            .collect();
        assert_eq!(listed, illegal.iter().map(String::as_str).collect());
        assert_eq!(
            Ledger::get(&mock.handle.ledger.grants),
            1,
            "the cluster shares one access token"
        );
    })
    .await
    .unwrap();
}

/// POSTs `body` to `base`'s `/apns/send` with `Idempotency-Key: key`: the
/// status, the answer and whether it was a replay.
async fn post_keyed(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: &Value,
) -> (u16, Value, bool) {
    let r = client
        .post(format!("{base}/apns/send"))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let replayed = r.headers().get("idempotency-replayed").is_some();
    (status, r.json().await.unwrap_or(Value::Null), replayed)
}

/// Keys live in Redis, shared by every gateway: a key used on one gateway
/// replays on the other; another body is 422 there; the same key sent to
/// both at once makes one job; each token reaches the mock once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_used_on_one_gateway_replays_on_another() {
    tokio::time::timeout(CLUSTER_TIMEOUT, async {
        let dir = scratch("cluster-idem");
        let redis = RedisServer::start(&dir).await;
        let (mock, apns) = apns_mock_for_process(&dir, Faults::default(), 100).await;
        let client = reqwest::Client::new();
        let gateways = start_gateways(&dir, &apns, &redis, &["a", "b"]).await;
        let (a, b) = (&gateways[0], &gateways[1]);

        let first = tokens("e3e3", 300);
        let body = json!({ "tokens": first, "payload": apns_payload() });
        let (status, answer, replayed) = post_keyed(&client, &a.url, "order-1", &body).await;
        assert_eq!((status, replayed), (202, false), "{answer}");
        let (status, again, replayed) = post_keyed(&client, &b.url, "order-1", &body).await;
        assert_eq!((status, replayed), (202, true), "{again}");
        assert_eq!(
            (&again["job"], &again["replayed"]),
            (&answer["job"], &json!(true))
        );
        let other = json!({ "tokens": tokens("e4e4", 1), "payload": apns_payload() });
        let (status, reused, _) = post_keyed(&client, &b.url, "order-1", &other).await;
        assert_eq!(
            (status, reused["error"].as_str()),
            (422, Some("idempotency_key_reused"))
        );

        // One key to both gateways at once, a few times over: one job.
        let second = tokens("e5e5", 200);
        let body2 = json!({ "tokens": second, "payload": apns_payload() });
        let answers = futures_util::future::join_all((0..8).map(|i| {
            let base = if i % 2 == 0 { &a.url } else { &b.url };
            post_keyed(&client, base, "order-2", &body2)
        }))
        .await;
        let mut jobs = std::collections::HashSet::new();
        for (status, answer, _) in &answers {
            match status {
                202 => {
                    jobs.insert(answer["job"].as_str().unwrap().to_owned());
                }
                409 => assert_eq!(answer["error"], "idempotency_key_in_progress"),
                other => panic!("{other}: {answer}"),
            }
        }
        assert_eq!(jobs.len(), 1, "{answers:?}");

        let all: Vec<String> = first.iter().chain(&second).cloned().collect();
        wait_delivered(&mock, &all, Duration::from_secs(60)).await;
        let report = settled_report(&client, a, 500).await;
        assert_eq!(report["accepted"], 500, "one job per key: {report}");
        assert_eq!(duplicates(&mock.ledger, &all), 0);
    })
    .await
    .expect("test timed out");
}
