//! `[queue] backend = "disk"` (the default): the real `pushgate serve`
//! binary, a real directory, `kill -9` and `SIGTERM` mid-run, then a
//! restart on the same `data_dir`. Every deliverable token is delivered,
//! duplicates stay within what a batch window (the leases) can hold and are
//! counted, and the reports, lists and job statuses continue.
//!
//! Also: a truncated or corrupted store file, a full disk (through the
//! store's own `PUSHGATE_DISK_FAULTS` hook, which always runs), a second
//! gateway on the same directory, an unusable `data_dir`, and a loop of 20
//! `kill -9` at random moments with the books checked after every restart.
//!
//! What it leaves out: a real power cut (the page cache survives `kill -9`;
//! redb's own crash tests cover torn writes below the file system).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    Served, TEST_TIMEOUT, apns_mock_for_process, apns_payload, apns_token, hms_mock_for_process,
    scratch,
};
use pushgate::config::{ApnsSection, FileConfig};
use pushgate::mock::ledger::Ledger;
use pushgate::mock::{Faults, MockHandle};
use serde_json::{Value, json};

fn disk_config(apns: &ApnsSection, data_dir: &Path, grace_s: u64) -> FileConfig {
    let mut file = FileConfig::default();
    file.server.listen = "127.0.0.1:0".into();
    file.server.shutdown_grace = grace_s;
    file.queue.backend = "disk".into();
    file.queue.data_dir = data_dir.display().to_string();
    file.retry.base_ms = 5;
    file.retry.cap_ms = 50;
    file.apns = Some(apns.clone());
    file
}

/// `n` tokens: every 50th unregistered (`dead`), the rest deliverable.
fn tokens(tag: u16, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            if i % 50 == 7 {
                apns_token("dead", usize::from(tag) << 40 | i)
            } else {
                apns_token(&format!("{tag:04x}"), i)
            }
        })
        .collect()
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    body: &Value,
) -> (u16, Value, Option<String>) {
    let r = client
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, r.json().await.unwrap_or(Value::Null), retry)
}

async fn get(client: &reqwest::Client, base: &str, path: &str) -> (u16, Value) {
    let r = client.get(format!("{base}{path}")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn send(client: &reqwest::Client, base: &str, tokens: &[String], extra: Value) -> String {
    let mut body =
        json!({ "tokens": tokens, "payload": apns_payload(), "topic": "com.example.test" });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let (status, answer, _) = post(client, base, "/apns/send", &body).await;
    assert_eq!(status, 202, "{answer}");
    answer["job"].as_str().unwrap().to_owned()
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// The report's books balance.
fn balanced(r: &Value) -> bool {
    let finished = [
        "successes",
        "failures",
        "unregistered",
        "expired",
        "cancelled",
    ]
    .iter()
    .map(|k| n(r, k))
    .sum::<u64>();
    n(r, "accepted") == n(r, "pending") + finished
        && n(r, "attempts") == n(r, "retries") + finished - n(r, "unattempted")
}

/// Waits until the report has nothing pending and at least `accepted` accepted.
async fn settled(client: &reqwest::Client, base: &str, accepted: u64) -> Value {
    settled_at(client, base, "/apns/report", accepted).await
}

/// [`settled`] for the report at `path`.
async fn settled_at(client: &reqwest::Client, base: &str, path: &str, accepted: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, r) = get(client, base, path).await;
        assert_eq!(status, 200, "{r}");
        assert!(balanced(&r), "books out of balance: {r}");
        if n(&r, "accepted") >= accepted && n(&r, "pending") == 0 {
            return r;
        }
        assert!(Instant::now() < deadline, "still pending: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Tokens delivered more than once, and deliverable tokens never delivered.
fn duplicates_and_lost(ledger: &Ledger, tokens: &[String]) -> (u64, u64) {
    let (mut dupes, mut lost) = (0, 0);
    for t in tokens {
        let r = ledger.token(t);
        if t.starts_with("dead") {
            lost += u64::from(r.attempts == 0);
        } else {
            dupes += u64::from(r.deliveries.saturating_sub(1));
            lost += u64::from(r.deliveries == 0);
        }
    }
    (dupes, lost)
}

/// `/readyz`, once the upstream connection had its moment (5 s at most).
async fn ready(client: &reqwest::Client, base: &str) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = get(client, base, "/readyz").await;
        if answer.0 == 200 || Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_delivered(ledger: &Ledger, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Ledger::get(&ledger.requests) < at_least {
        assert!(Instant::now() < deadline, "deliveries never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn slow_mock(dir: &Path) -> (MockHandle, ApnsSection) {
    // 2 ms per answer and 50 streams: about 20k tokens/s, so a kill lands mid-run.
    let faults = Faults {
        latency_ms: 2,
        ..Faults::default()
    };
    apns_mock_for_process(dir, faults, 50).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_then_restart_loses_nothing_and_keeps_reports_lists_and_jobs() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = scratch("disk-kill9");
        let data = dir.join("data");
        let (mock, apns) = slow_mock(&dir).await;
        let config = disk_config(&apns, &data, 10);
        let client = reqwest::Client::new();
        let mut gw = Served::start(&dir, "a", &config).await;
        let run = tokens(1, 20_000);
        let delayed = tokens(2, 500);
        let cancelled = tokens(3, 300);
        let run_job = send(&client, &gw.url, &run, json!({})).await;
        let delayed_job = send(&client, &gw.url, &delayed, json!({ "delay_seconds": 3 })).await;
        let cancelled_job = send(&client, &gw.url, &cancelled, json!({ "delay_seconds": 60 })).await;
        let (status, c) = client
            .delete(format!("{}/jobs/{cancelled_job}", gw.url))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map(|s| (s, ()))
            .unwrap();
        assert_eq!(status, 200, "{c:?}");
        wait_delivered(&mock.ledger, 5_000).await;
        gw.kill();
        let sent_before = Ledger::get(&mock.ledger.requests);
        assert!(sent_before < 20_000, "the kill came too late to test anything: {sent_before}");

        let restarted = Instant::now();
        let mut gw = Served::start(&dir, "a", &config).await;
        let recovered = gw.wait_for_log("disk store recovered").await;
        let recovery_ms = restarted.elapsed().as_millis();
        let r = settled(&client, &gw.url, 20_800).await;
        // The delayed job goes out after its send_at, not at the restart.
        let (_, d) = get(&client, &gw.url, &format!("/jobs/{delayed_job}")).await;
        assert_eq!(d["state"], "done", "{d}");
        let all: Vec<String> = run.iter().chain(&delayed).cloned().collect();
        let (dupes, lost) = duplicates_and_lost(&mock.ledger, &all);
        assert_eq!(lost, 0, "tokens never sent");
        let possible = n(&r, "possible_duplicates");
        assert!(dupes <= possible, "{dupes} duplicates but {possible} counted");
        // The leases bound what a crash can resend: 4096 ahead of the workers.
        assert!(possible <= 2 * 4096 + 50, "{possible} possible duplicates");
        for t in &cancelled {
            assert_eq!(mock.ledger.token(t).attempts, 0, "a cancelled token was sent");
        }
        assert_eq!(n(&r, "accepted"), 20_800);
        assert_eq!(n(&r, "cancelled"), 300);
        assert_eq!(n(&r, "expired"), 0, "{r}");
        let (_, job) = get(&client, &gw.url, &format!("/jobs/{run_job}")).await;
        assert_eq!((job["state"].as_str(), n(&job, "total"), n(&job, "pending")), (Some("done"), 20_000, 0), "{job}");
        let (_, job) = get(&client, &gw.url, &format!("/jobs/{cancelled_job}")).await;
        assert_eq!(job["state"], "cancelled", "{job}");
        // Every unregistered token once in the list, whichever side of the crash it was found on.
        let drained = client
            .delete(format!("{}/apns/report/unregistered", gw.url))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        let listed: HashSet<&str> = drained["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["token"].as_str())
            .collect();
        let dead: HashSet<&str> = all.iter().filter(|t| t.starts_with("dead")).map(String::as_str).collect();
        assert_eq!(listed, dead);
        assert_eq!(n(&r, "unregistered"), dead.len() as u64);
        println!(
            "kill -9 after {sent_before} of 20,800 requests: lost {lost}, duplicates {dupes}, counted possible_duplicates {possible}, restart to listening+recovered {recovery_ms} ms (store recovery {} ms)",
            recovered["fields"]["took_ms"]
        );
        // The drained list stays drained across another restart (DELETE is durable).
        gw.terminate().await;
        let gw = Served::start(&dir, "a", &config).await;
        let (_, list) = get(&client, &gw.url, "/apns/report/unregistered").await;
        assert_eq!(list["tokens"].as_array().map(Vec::len), Some(0), "{list}");
        let (_, again) = get(&client, &gw.url, "/apns/report").await;
        assert_eq!(n(&again, "accepted"), 20_800);
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_what_is_left_on_disk_instead_of_expiring_it() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = scratch("disk-sigterm");
        let data = dir.join("data");
        let (mock, apns) = slow_mock(&dir).await;
        let config = disk_config(&apns, &data, 1);
        let client = reqwest::Client::new();
        let mut gw = Served::start(&dir, "a", &config).await;
        let run = tokens(4, 16_000);
        send(&client, &gw.url, &run, json!({})).await;
        wait_delivered(&mock.ledger, 2_000).await;
        let status = gw.terminate().await;
        assert!(status.success(), "{status}");
        let kept_line = gw
            .logs("drained:")
            .pop()
            .or_else(|| gw.logs("shutdown left work undelivered").pop())
            .expect("a drain summary");
        let kept = kept_line["fields"]["kept"].as_u64().unwrap_or(0);
        assert!(kept > 0, "nothing kept: {kept_line}");
        let gw = Served::start(&dir, "a", &config).await;
        let r = settled(&client, &gw.url, 16_000).await;
        assert_eq!(n(&r, "expired"), 0, "SIGTERM expired tokens: {r}");
        let (dupes, lost) = duplicates_and_lost(&mock.ledger, &run);
        assert_eq!(lost, 0);
        assert!(dupes <= n(&r, "possible_duplicates"), "{dupes} {r}");
        println!("SIGTERM with shutdown_grace = 1: {kept} tokens kept on disk, then delivered after the restart ({dupes} duplicates)");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_storage_full_and_loses_nothing_accepted() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = scratch("disk-full");
        let data = dir.join("data");
        let switch = dir.join("disk-full");
        let (mock, apns) = slow_mock(&dir).await;
        let config = disk_config(&apns, &data, 10);
        let client = reqwest::Client::new();
        let env = [("PUSHGATE_DISK_FAULTS", switch.as_os_str())];
        let mut gw = Served::start_with_env(&dir, "a", &config, &env).await;
        let accepted = tokens(5, 5_000);
        send(&client, &gw.url, &accepted, json!({})).await;
        std::fs::write(&switch, b"full").unwrap();
        let body = json!({ "tokens": tokens(6, 10), "payload": apns_payload(), "topic": "com.example.test" });
        let (status, answer, retry_after) = post(&client, &gw.url, "/apns/send", &body).await;
        assert_eq!((status, answer["error"].as_str()), (503, Some("storage_full")), "{answer}");
        assert!(retry_after.is_some(), "no Retry-After");
        let (not_ready, _) = get(&client, &gw.url, "/readyz").await;
        assert_eq!(not_ready, 503);
        // Delivery goes on; outcomes wait in memory for the disk.
        tokio::time::sleep(Duration::from_millis(500)).await;
        std::fs::remove_file(&switch).unwrap();
        let r = settled(&client, &gw.url, 5_000).await;
        assert_eq!(n(&r, "accepted"), 5_000, "{r}");
        // What was accepted made it to disk once the disk had room again.
        tokio::time::sleep(Duration::from_millis(300)).await;
        gw.kill();
        let gw = Served::start_with_env(&dir, "a", &config, &env).await;
        let r = settled(&client, &gw.url, 5_000).await;
        assert_eq!(n(&r, "accepted"), 5_000, "{r}");
        let (dupes, lost) = duplicates_and_lost(&mock.ledger, &accepted);
        assert_eq!((lost, dupes), (0, 0));
        let (status, body) = ready(&client, &gw.url).await;
        assert_eq!(status, 200, "{body}");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .expect("test timed out");
}

/// Runs the binary on `config` expecting it to refuse to start; its stderr.
fn refused(dir: &Path, name: &str, config: &FileConfig) -> String {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, toml::to_string(config).unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args(["serve", "--config"])
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "it started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_or_an_unusable_data_dir_is_refused_at_start() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = scratch("disk-refused");
        let (_mock, apns) = slow_mock(&dir).await;
        let data = dir.join("data");
        let config = disk_config(&apns, &data, 1);
        let _first = Served::start(&dir, "a", &config).await;
        let err = refused(&dir, "b", &config);
        assert!(
            err.contains("queue.data_dir") && err.contains("in use by another gateway"),
            "{err}"
        );
        std::fs::write(dir.join("a-file"), b"x").unwrap();
        let bad = disk_config(&apns, &dir.join("a-file").join("data"), 1);
        let err = refused(&dir, "c", &bad);
        assert!(
            err.contains("queue.data_dir") && err.contains("cannot create"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_or_corrupted_store_is_recovered_at_start_not_a_crash_loop() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = scratch("disk-corrupt");
        let (_mock, apns) = slow_mock(&dir).await;
        let client = reqwest::Client::new();
        for damage in ["truncate", "garbage"] {
            let data = dir.join(format!("data-{damage}"));
            let config = disk_config(&apns, &data, 1);
            let mut gw = Served::start(&dir, damage, &config).await;
            send(&client, &gw.url, &tokens(7, 3_000), json!({})).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            gw.kill();
            let file = data.join("pushgate.redb");
            let len = std::fs::metadata(&file).unwrap().len();
            match damage {
                "truncate" => {
                    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
                    f.set_len(len / 2).unwrap();
                }
                _ => {
                    use std::io::{Seek, SeekFrom, Write};
                    let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
                    f.seek(SeekFrom::Start(len / 3)).unwrap();
                    f.write_all(&vec![0xa5; 64 * 1024]).unwrap();
                }
            }
            // Starts, serves, and says what it did; twice, so not a loop.
            for round in 0..2 {
                let mut gw = Served::start(&dir, damage, &config).await;
                gw.wait_for_log("disk store opened").await;
                send(&client, &gw.url, &tokens(8, 10), json!({})).await;
                let (status, body) = ready(&client, &gw.url).await;
                assert_eq!(status, 200, "{damage} round {round}: {body}");
                gw.terminate().await;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_kill_9_at_random_moments_keep_the_books_after_every_restart() {
    tokio::time::timeout(Duration::from_secs(170), async {
        let dir = scratch("disk-kill-loop");
        let data = dir.join("data");
        let (mock, apns) = slow_mock(&dir).await;
        let config = disk_config(&apns, &data, 10);
        let client = reqwest::Client::new();
        let mut all: Vec<String> = Vec::new();
        let mut jobs: Vec<(String, u64)> = Vec::new();
        let mut accepted = 0u64;
        for round in 0..20u16 {
            let mut gw = Served::start(&dir, "a", &config).await;
            // After each restart: every accepted token is finished or pending.
            let (_, r) = get(&client, &gw.url, "/apns/report").await;
            assert!(balanced(&r), "round {round}: {r}");
            assert_eq!(n(&r, "accepted"), accepted, "round {round}: {r}");
            let batch = tokens(0x100 + round, 1_000 + usize::from(round) * 37);
            jobs.push((send(&client, &gw.url, &batch, json!({})).await, batch.len() as u64));
            accepted += batch.len() as u64;
            all.extend(batch);
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..400))).await;
            gw.kill();
        }
        let gw = Served::start(&dir, "a", &config).await;
        let r = settled(&client, &gw.url, accepted).await;
        assert_eq!(n(&r, "accepted"), accepted);
        for (job, total) in &jobs {
            let (_, j) = get(&client, &gw.url, &format!("/jobs/{job}")).await;
            assert_eq!((j["state"].as_str(), n(&j, "total")), (Some("done"), *total), "{j}");
        }
        let (dupes, lost) = duplicates_and_lost(&mock.ledger, &all);
        assert_eq!(lost, 0);
        assert!(dupes <= n(&r, "possible_duplicates"), "{dupes} {r}");
        println!(
            "20 kill -9: {accepted} tokens accepted, lost 0, duplicates {dupes}, counted possible_duplicates {}",
            n(&r, "possible_duplicates")
        );
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .expect("test timed out");
}

/// Huawei Push Kit on the disk store: `kill -9` while batches are in flight
/// at a slow mock HMS, then a restart on the same directory. Every valid
/// token is delivered (duplicates no more than counted), every illegal one
/// is in the unregistered list exactly once, and the books balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hms_kill_9_mid_run_then_restart_loses_nothing() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = scratch("disk-hms-kill9");
        let data = dir.join("data");
        // 20 ms per answer, two batches of 50 in flight: about 5k tokens/s,
        // so the kill lands mid-run.
        let (mock, mut hms) = hms_mock_for_process(&dir, |o| o.faults.latency_ms = 20).await;
        hms.batch_size = 50;
        hms.concurrency = 2;
        let mut config = FileConfig::default();
        config.server.listen = "127.0.0.1:0".into();
        config.server.shutdown_grace = 10;
        config.queue.data_dir = data.display().to_string();
        config.retry.base_ms = 5;
        config.retry.cap_ms = 50;
        config.hms = Some(hms);
        let client = reqwest::Client::new();
        let all: Vec<String> = (0..20_000)
            .map(|i| {
                if i % 50 == 7 { format!("illegal-{i}") } else { format!("hms-{i}-device") }
            })
            .collect();
        let mut gw = Served::start(&dir, "a", &config).await;
        let (status, answer, _) = post(
            &client,
            &gw.url,
            "/hms/send",
            &json!({"tokens": all, "data": {"k": "v"}, "notification": {"title": "T", "body": "B"}}),
        )
        .await;
        assert_eq!(status, 202, "{answer}");
        let job = answer["job"].as_str().unwrap().to_owned();
        wait_delivered(&mock.handle.ledger, 40).await;
        gw.kill();
        let sent_before = Ledger::get(&mock.handle.ledger.requests);
        assert!(sent_before < 400, "the kill came too late to test anything: {sent_before} requests");

        let mut gw = Served::start(&dir, "a", &config).await;
        gw.wait_for_log("disk store recovered").await;
        let r = settled_at(&client, &gw.url, "/hms/report", 20_000).await;
        assert_eq!(n(&r, "accepted"), 20_000);
        let illegal: HashSet<&str> =
            all.iter().filter(|t| t.starts_with("illegal")).map(String::as_str).collect();
        let (mut lost, mut dupes) = (0u64, 0u64);
        for t in &all {
            let record = mock.handle.ledger.token(t);
            if t.starts_with("illegal") {
                assert_eq!(record.deliveries, 0, "{t}");
                lost += u64::from(record.attempts == 0);
            } else {
                lost += u64::from(record.deliveries == 0);
                dupes += u64::from(record.deliveries.saturating_sub(1));
            }
        }
        assert_eq!(lost, 0, "tokens never sent");
        let possible = n(&r, "possible_duplicates");
        assert!(dupes <= possible, "{dupes} duplicates but {possible} counted");
        assert_eq!(n(&r, "successes"), (all.len() - illegal.len()) as u64, "{r}");
        assert_eq!(n(&r, "unregistered"), illegal.len() as u64, "{r}");
        assert_eq!((n(&r, "failures"), n(&r, "expired")), (0, 0), "{r}");
        let drained = client
            .delete(format!("{}/hms/report/unregistered", gw.url))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        let listed: Vec<&str> = drained["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["token"].as_str())
            .collect();
        assert_eq!(listed.len(), illegal.len(), "an unregistered token listed twice");
        assert_eq!(listed.into_iter().collect::<HashSet<_>>(), illegal);
        let (_, status) = get(&client, &gw.url, &format!("/jobs/{job}")).await;
        assert_eq!((status["state"].as_str(), n(&status, "pending")), (Some("done"), 0), "{status}");
        println!(
            "hms kill -9 after {sent_before} requests of 400: lost 0, duplicates {dupes}, counted possible_duplicates {possible}"
        );
        gw.terminate().await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .expect("test timed out");
}

/// POSTs `body` to `/apns/send` with `Idempotency-Key: key`; the status,
/// the answer and whether it was a replay.
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

/// The key is kept in the commit that keeps the job: `kill -9` right after
/// the 202 and a restart still replay it (one job, not two), and a commit
/// the disk refuses keeps neither the job nor the key, so the retry that
/// follows makes the one job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_survives_kill_9_and_a_refused_commit_keeps_neither_job_nor_key() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = scratch("disk-idem");
        let data = dir.join("data");
        let switch = dir.join("disk-full");
        let (mock, apns) = slow_mock(&dir).await;
        let config = disk_config(&apns, &data, 10);
        let client = reqwest::Client::new();
        let env = [("PUSHGATE_DISK_FAULTS", switch.as_os_str())];
        let mut gw = Served::start_with_env(&dir, "a", &config, &env).await;
        let first = tokens(7, 2_000);
        let body = json!({ "tokens": first, "payload": apns_payload(), "topic": "com.example.test" });
        let (status, answer, replayed) = post_keyed(&client, &gw.url, "order-7", &body).await;
        assert_eq!((status, replayed), (202, false), "{answer}");
        let job = answer["job"].clone();
        gw.kill();

        let mut gw = Served::start_with_env(&dir, "a", &config, &env).await;
        gw.wait_for_log("disk store recovered").await;
        let (status, again, replayed) = post_keyed(&client, &gw.url, "order-7", &body).await;
        assert_eq!((status, replayed), (202, true), "{again}");
        assert_eq!((&again["job"], &again["replayed"]), (&job, &json!(true)));
        let other = json!({ "tokens": tokens(8, 1), "payload": apns_payload(), "topic": "com.example.test" });
        let (status, reused, _) = post_keyed(&client, &gw.url, "order-7", &other).await;
        assert_eq!((status, reused["error"].as_str()), (422, Some("idempotency_key_reused")));

        // The disk refuses every commit: a 503 (`storage_full`, or
        // `queue_unavailable` when the key's read is refused first), and
        // neither job nor key.
        std::fs::write(&switch, b"full").unwrap();
        let second = tokens(9, 100);
        let body2 = json!({ "tokens": second, "payload": apns_payload(), "topic": "com.example.test" });
        let (status, refused, _) = post_keyed(&client, &gw.url, "order-9", &body2).await;
        assert_eq!(status, 503, "{refused}");
        assert!(
            ["storage_full", "queue_unavailable"].contains(&refused["error"].as_str().unwrap_or("")),
            "{refused}"
        );
        std::fs::remove_file(&switch).unwrap();
        // Retried as a sender would: 503s (the store reopening its file)
        // are never kept, so the key stays free until a job is made.
        let deadline = Instant::now() + Duration::from_secs(30);
        let (status, made, replayed) = loop {
            let answer = post_keyed(&client, &gw.url, "order-9", &body2).await;
            if answer.0 != 503 || Instant::now() > deadline {
                break answer;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!((status, replayed), (202, false), "the refused commit left the key: {made}");
        let (status, kept, replayed) = post_keyed(&client, &gw.url, "order-9", &body2).await;
        assert_eq!((status, replayed, &kept["job"]), (202, true, &made["job"]));

        let r = settled(&client, &gw.url, 2_100).await;
        assert_eq!(n(&r, "accepted"), 2_100, "one job per key: {r}");
        let all: Vec<String> = first.iter().chain(&second).cloned().collect();
        let (dupes, lost) = duplicates_and_lost(&mock.ledger, &all);
        assert_eq!(lost, 0, "tokens never sent");
        assert!(dupes <= n(&r, "possible_duplicates"), "{dupes} duplicates: {r}");
        gw.kill();
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .expect("test timed out");
}

/// A gauge's value in a Prometheus text page.
fn gauge(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {name} in the metrics")) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_six_times_the_window_waits_on_disk_and_survives_kill_9_once_each() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = scratch("disk-window");
        let data = dir.join("data");
        let (mock, apns) = slow_mock(&dir).await;
        let mut config = disk_config(&apns, &data, 10);
        config.queue.window = 10_000;
        let client = reqwest::Client::new();
        let mut gw = Served::start(&dir, "a", &config).await;
        let jobs: Vec<Vec<String>> = (0..4).map(|i| tokens(10 + i, 15_000)).collect();
        for job in &jobs {
            send(&client, &gw.url, job, json!({})).await;
        }
        // Memory holds the window; the rest waits on disk, read back as
        // workers drain it.
        let page = client.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
        let (held, stored) = (gauge(&page, "pushgate_queue_window_tokens"), gauge(&page, "pushgate_queue_stored_tokens"));
        assert!(held <= 10_000, "{held} tokens in memory, window 10,000");
        assert!(stored > 0, "nothing waits on disk with 60,000 queued: held {held}");
        wait_delivered(&mock.ledger, 15_000).await;
        gw.kill();
        let sent_before = Ledger::get(&mock.ledger.requests);
        assert!(sent_before < 60_000, "the kill came too late to test anything: {sent_before}");

        // The restart reads back only what it hands out: the rest stays on disk.
        let mut gw = Served::start(&dir, "a", &config).await;
        gw.wait_for_log("disk store recovered").await;
        let page = client.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
        assert!(gauge(&page, "pushgate_queue_window_tokens") <= 10_000, "{page}");
        let r = settled(&client, &gw.url, 60_000).await;
        let all: Vec<String> = jobs.concat();
        let (dupes, lost) = duplicates_and_lost(&mock.ledger, &all);
        assert_eq!(lost, 0, "tokens never sent");
        let possible = n(&r, "possible_duplicates");
        assert!(dupes <= possible, "{dupes} duplicates but {possible} counted");
        assert_eq!((n(&r, "accepted"), n(&r, "pending")), (60_000, 0), "{r}");
        println!("window 10,000 over 60,000 queued: {stored} waited on disk; kill -9 after {sent_before}: lost {lost}, duplicates {dupes} (counted {possible})");
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .expect("test timed out");
}
