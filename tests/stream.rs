//! Streamed intake (NDJSON) end to end, against the real binary on its
//! durable default and a mock APNs, over a raw HTTP/1.1 chunked upload so a
//! test controls every byte: when it is sent, and when the client goes.
//!
//! - a stream ten times `queue.capacity` is taken whole and every token is
//!   delivered once, the gateway's RSS sampled meanwhile. The token count is
//!   `PUSHGATE_TEST_STREAM_TOKENS`, 500,000 unless set: a debug build takes
//!   about a minute for that on 2 cores; `bench/run` streams 2,000,000
//!   through the release binary for the figures;
//! - a stream cut midway keeps what it took: delivered, `truncated`, the
//!   books balanced; a silent one times out the same way;
//! - the job is visible while it grows;
//! - malformed streams: a bad first line (400, nothing queued), lines over
//!   64 KiB, invalid UTF-8, not JSON (each refused, the rest taken).
//!
//! No timing asserts: pacing is observed (the stream is taken whole through
//! a smaller queue), never measured.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::upload::{Upload, header_line, token_lines};
use common::*;
use pushgate::config::FileConfig;
use pushgate::mock::{Faults, MockHandle};
use serde_json::{Value, json};

/// A gateway process on the durable default (its own data dir) delivering
/// to a mock APNs.
async fn served(name: &str, tweak: impl FnOnce(&mut FileConfig)) -> (Served, MockHandle) {
    let dir = scratch(name);
    let (mock, apns) = apns_mock_for_process(&dir, Faults::default(), 1000).await;
    let mut config = FileConfig::default();
    config.server.listen = "127.0.0.1:0".into();
    config.queue.data_dir = dir.join("data").display().to_string();
    config.apns = Some(apns);
    tweak(&mut config);
    (Served::start(&dir, name, &config).await, mock)
}

async fn get(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// Waits until the APNs report has nothing pending and `accepted` accepted;
/// the books must balance at every look.
async fn report_done(base: &str, accepted: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let r = get(&format!("{base}/apns/report")).await;
        let finished: u64 = [
            "successes",
            "failures",
            "unregistered",
            "expired",
            "cancelled",
        ]
        .iter()
        .map(|k| r[k].as_u64().unwrap_or(0))
        .sum::<u64>()
            + r["canonicals"].as_u64().unwrap_or(0);
        assert_eq!(
            r["accepted"].as_u64().unwrap(),
            finished + r["pending"].as_u64().unwrap(),
            "books out of balance: {r}"
        );
        if r["accepted"] == accepted && r["pending"] == 0 {
            return r;
        }
        assert!(Instant::now() < deadline, "not done: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The job id a gateway logged when the stream's job opened.
async fn opened_job(served: &mut Served) -> String {
    let line = served.wait_for_log("streamed job opened").await;
    line["fields"]["job"].as_str().unwrap().to_owned()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_stream_ten_times_the_queue_is_taken_whole_and_each_token_delivered_once() {
    let n: usize = std::env::var("PUSHGATE_TEST_STREAM_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let capacity = (n / 10) as u64;
    let (served, mock) = served("stream-volume", |c| c.queue.capacity = capacity).await;
    let pid = served.child.id();
    let idle = rss_kib(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(idle));
    let sampler = tokio::spawn({
        let peak = peak.clone();
        async move {
            loop {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let mut upload = Upload::start(&served.url, "/apns/send").await;
    upload.send(&header_line()).await;
    for start in (0..n).step_by(1000) {
        upload
            .send(&token_lines("5a5a", start..(start + 1000).min(n)))
            .await;
    }
    let (status, answer) = upload.finish().await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], n as u64, "{answer}");
    assert_eq!(answer["rejected_count"], 0, "{answer}");
    let report = report_done(&served.url, n as u64).await;
    assert_eq!(report["successes"], n as u64, "{report}");
    sampler.abort();
    let tokens = mock.ledger.tokens();
    assert_eq!(tokens.len(), n);
    assert!(
        tokens.values().all(|t| t.deliveries == 1),
        "a token delivered other than once"
    );
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "streamed {n} tokens through queue.capacity {capacity}: RSS idle {} MiB, peak {} MiB",
        idle / 1024,
        peak / 1024
    );
}

#[tokio::test]
async fn a_cut_stream_keeps_what_it_took_and_shows_truncated() {
    tokio::time::timeout(Duration::from_secs(300), async {
        let (mut served, mock) = served("stream-cut", |_| {}).await;
        let mut upload = Upload::start(&served.url, "/apns/send").await;
        upload.send(&header_line()).await;
        upload.send(&token_lines("5b5b", 0..30_000)).await;
        let job = opened_job(&mut served).await;
        // Half a token line, then the client is gone.
        upload.send(b"\"5b5b00").await;
        // Wait until every whole line is taken before cutting, so the count is exact.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = get(&format!("{}/jobs/{job}", served.url)).await;
            if status["total"] == 30_000 {
                assert_eq!(status["state"], "running", "{status}");
                let running = get(&format!("{}/jobs?state=running", served.url)).await;
                assert!(
                    running["jobs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|j| j["job"] == job.as_str()),
                    "an open stream is listed as running: {running}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "{status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(upload);
        let report = report_done(&served.url, 30_000).await;
        assert_eq!(report["successes"], 30_000, "{report}");
        let status = get(&format!("{}/jobs/{job}", served.url)).await;
        assert_eq!(status["truncated"], true, "{status}");
        assert_eq!(status["state"], "done", "{status}");
        assert_eq!(status["total"], 30_000, "{status}");
        assert_eq!(mock.ledger.tokens().len(), 30_000);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_silent_client_times_out_and_keeps_what_it_sent() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let (served, _mock) = served("stream-silent", |c| c.server.body_timeout_s = 1).await;
        let mut upload = Upload::start(&served.url, "/apns/send").await;
        upload.send(&header_line()).await;
        upload.send(&token_lines("5c5c", 0..500)).await;
        let (status, answer) = upload.answer().await;
        assert_eq!(status, 408, "{answer}");
        assert_eq!(answer["error"], "body_timeout", "{answer}");
        assert_eq!(answer["accepted"], 500, "{answer}");
        assert_eq!(answer["truncated"], true, "{answer}");
        assert_eq!(answer["lines_read"], 501, "{answer}");
        let job = answer["job"].as_str().unwrap();
        report_done(&served.url, 500).await;
        let status = get(&format!("{}/jobs/{job}", served.url)).await;
        assert_eq!(status["truncated"], true, "{status}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_bad_first_line_is_refused_before_any_token_is_read() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let (served, _mock) = served("stream-bad-header", |_| {}).await;
        for (header, code) in [
            (b"{\"payload\": \n".to_vec(), "bad_json"),
            (b"\n".to_vec(), "bad_header_line"),
            (
                json!({ "payload": apns_payload(), "priority": 7 })
                    .to_string()
                    .into_bytes(),
                "bad_field",
            ),
            (
                json!({ "payload": apns_payload(), "delay_seconds": 60 })
                    .to_string()
                    .into_bytes(),
                "stream_with_schedule",
            ),
            (vec![b'x'; 70_000], "line_too_long"),
        ] {
            let mut upload = Upload::start(&served.url, "/apns/send").await;
            let mut first = header;
            first.push(b'\n');
            upload.send(&first).await;
            // The body is still open: the answer comes after line 1 alone.
            let (status, answer) = upload.answer().await;
            assert_eq!(status, 400, "{answer}");
            assert_eq!(answer["error"], code, "{answer}");
        }
        let report = get(&format!("{}/apns/report", served.url)).await;
        assert_eq!(report["accepted"], 0, "{report}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn bad_token_lines_are_refused_and_the_rest_taken() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let (served, mock) = served("stream-bad-lines", |_| {}).await;
        let mut upload = Upload::start(&served.url, "/apns/send").await;
        upload.send(&header_line()).await;
        upload.send(&token_lines("5e5e", 0..100)).await;
        let mut bad = Vec::new();
        bad.extend_from_slice(&vec![b'f'; 70_000]);
        bad.extend_from_slice(b"\n\xff\xfe\"\n\"not-hex\"\n\"unterminated\n\n\r\n");
        // The same token as a bare line and again quoted: one delivery.
        bad.extend_from_slice(format!("{}\n", apns_token("5e5e", 100)).as_bytes());
        bad.extend_from_slice(format!("\"{}\"\n", apns_token("5e5e", 100)).as_bytes());
        bad.extend_from_slice(format!("\"{}\"\n", apns_token("5e5e", 0)).as_bytes());
        upload.send(&bad).await;
        upload.send(&token_lines("5e5e", 101..200)).await;
        let (status, answer) = upload.finish().await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["accepted"], 200, "{answer}");
        assert_eq!(answer["duplicates"], 2, "{answer}");
        assert_eq!(answer["rejected_count"], 4, "{answer}");
        let by_reason = &answer["rejected_by_reason"];
        assert_eq!(by_reason["line_too_long"], 1, "{answer}");
        assert_eq!(by_reason["not_utf8"], 1, "{answer}");
        assert_eq!(by_reason["BadDeviceToken"], 1, "{answer}");
        assert_eq!(by_reason["not_json"], 1, "{answer}");
        assert!(answer.get("truncated").is_none(), "{answer}");
        report_done(&served.url, 200).await;
        assert_eq!(mock.ledger.tokens().len(), 200);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_stream_without_a_valid_token_queues_nothing() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let (served, _mock) = served("stream-empty", |_| {}).await;
        let mut upload = Upload::start(&served.url, "/apns/send").await;
        upload.send(&header_line()).await;
        upload.send(b"\"zz\"\n").await;
        let (status, answer) = upload.finish().await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"], "no_valid_tokens", "{answer}");
        assert_eq!(answer["rejected"][0]["token"], "zz", "{answer}");
        let report = get(&format!("{}/apns/report", served.url)).await;
        assert_eq!(report["accepted"], 0, "{report}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_stream_open_at_a_kill_9_is_recovered_truncated_and_its_tokens_delivered() {
    tokio::time::timeout(Duration::from_secs(300), async {
        let dir = scratch("stream-kill");
        // An upstream that never answers: nothing leaves the queue before the kill.
        let (_mock, mut apns) = apns_mock_for_process(&dir, Faults::default(), 1000).await;
        let live = apns.endpoint.clone();
        apns.endpoint = "https://127.0.0.1:9".into();
        let mut config = FileConfig::default();
        config.server.listen = "127.0.0.1:0".into();
        config.queue.data_dir = dir.join("data").display().to_string();
        config.apns = Some(apns.clone());
        let mut served = Served::start(&dir, "stream-kill", &config).await;
        let mut upload = Upload::start(&served.url, "/apns/send").await;
        upload.send(&header_line()).await;
        upload.send(&token_lines("5f5f", 0..20_000)).await;
        let job = opened_job(&mut served).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while get(&format!("{}/jobs/{job}", served.url)).await["total"] != 20_000 {
            assert!(Instant::now() < deadline, "the parts were not kept");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        served.kill();
        drop(upload);
        apns.endpoint = live;
        config.apns = Some(apns);
        let served = Served::start(&dir, "stream-kill-2", &config).await;
        let report = report_done(&served.url, 20_000).await;
        assert_eq!(report["successes"], 20_000, "{report}");
        let status = get(&format!("{}/jobs/{job}", served.url)).await;
        assert_eq!(status["truncated"], true, "{status}");
        assert_eq!(status["state"], "done", "{status}");
        assert_eq!(status["total"], 20_000, "{status}");
    })
    .await
    .unwrap();
}
