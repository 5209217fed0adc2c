//! `Idempotency-Key` and `?wait` end to end: a gateway on a real port (the
//! `memory` store; `tests/durable.rs` and `tests/cluster.rs` cover the key
//! across a kill -9 and across two gateways) and a mock APNs that counts
//! every delivery.
//!
//! - a retry with the key answers the first answer (`replayed`), and each
//!   token reaches the mock once; concurrent retries make one job;
//! - the key with another body: 422; a 4xx first answer is kept too;
//! - the key while its first request is still being read (a stream): 409
//!   with `Retry-After`;
//! - the TTL expires;
//! - `wait`: 200 with the per-token outcomes (Apple's reasons), 202
//!   `running` against a slow upstream, the refusals (nothing queued);
//! - gorush's sync mode lists failed tokens in `logs`.
//!
//! What it leaves out: timing. Nothing asserts how fast an answer comes.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use pushgate::mock::Faults;
use serde_json::{Value, json};

const KEY: &str = "idempotency-key";

async fn post_keyed(
    env: &ApnsEnv,
    path: &str,
    key: Option<&str>,
    body: &Value,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut r = env.client.post(env.url(path)).json(body);
    if let Some(key) = key {
        r = r.header(KEY, key);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.json().await.unwrap_or(Value::Null), headers)
}

fn body(tokens: &[String]) -> Value {
    json!({ "tokens": tokens, "payload": apns_payload() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_key_gets_the_first_answer_and_sends_nothing_twice() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup::default()).await;
        let tokens: Vec<String> = (0..20).map(|i| apns_token("a1a1", i)).collect();
        let (first, answer, headers) =
            post_keyed(&env, "/apns/send", Some("order-1"), &body(&tokens)).await;
        assert_eq!(first, 202, "{answer}");
        assert!(headers.get("idempotency-replayed").is_none());
        assert!(answer.get("replayed").is_none());
        wait_done(&env.gateway, pushgate::apns::FAMILY, 20).await;
        let (again, replay, headers) =
            post_keyed(&env, "/apns/send", Some("order-1"), &body(&tokens)).await;
        assert_eq!(again, 202, "{replay}");
        assert_eq!(replay["job"], answer["job"]);
        assert_eq!(replay["accepted"], 20);
        assert_eq!(replay["replayed"], true);
        assert_eq!(headers["idempotency-replayed"], "true");
        // Nothing was queued again: the books and the mock say so.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(env.counters().accepted, 20);
        for token in &tokens {
            assert_eq!(env.mock.ledger.token(token).deliveries, 1, "{token}");
        }
        // Another key, the same body: a new job.
        let (other, fresh, _) =
            post_keyed(&env, "/apns/send", Some("order-2"), &body(&tokens)).await;
        assert_eq!(other, 202);
        assert_ne!(fresh["job"], answer["job"]);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_with_another_request_is_422_and_a_4xx_answer_is_kept() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup::default()).await;
        let tokens = vec![apns_token("b1b1", 1)];
        let (first, _, _) = post_keyed(&env, "/apns/send", Some("k"), &body(&tokens)).await;
        assert_eq!(first, 202);
        let other = vec![apns_token("b1b1", 2)];
        let (reused, answer, _) = post_keyed(&env, "/apns/send", Some("k"), &body(&other)).await;
        assert_eq!(
            (reused, answer["error"].as_str()),
            (422, Some("idempotency_key_reused")),
            "{answer}"
        );
        // The same body on another route is another request too.
        let (route, _, _) = post_keyed(&env, "/apns/broadcast", Some("k"), &body(&tokens)).await;
        assert_eq!(route, 422);
        // A first answer that is a 400 is kept and replayed.
        let bad = json!({ "tokens": ["zz"], "payload": apns_payload() });
        let (refused, first_400, _) = post_keyed(&env, "/apns/send", Some("bad"), &bad).await;
        assert_eq!(refused, 400, "{first_400}");
        let (again, replay, headers) = post_keyed(&env, "/apns/send", Some("bad"), &bad).await;
        assert_eq!(again, 400);
        assert_eq!(replay["error"], first_400["error"]);
        assert_eq!(replay["replayed"], true);
        assert_eq!(headers["idempotency-replayed"], "true");
        // A key that is not 1–255 visible ASCII is refused, nothing queued.
        let (badkey, answer, _) =
            post_keyed(&env, "/apns/send", Some(&"k".repeat(256)), &body(&other)).await;
        assert_eq!(
            (badkey, answer["error"].as_str()),
            (400, Some("bad_idempotency_key"))
        );
        assert_eq!(env.counters().accepted, 1);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_one_key_make_one_job() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup::default()).await;
        let tokens: Vec<String> = (0..50).map(|i| apns_token("c1c1", i)).collect();
        let b = body(&tokens);
        let answers = futures_util::future::join_all(
            (0..16).map(|_| post_keyed(&env, "/apns/send", Some("same"), &b)),
        )
        .await;
        let mut jobs = std::collections::HashSet::new();
        for (status, answer, headers) in &answers {
            match status {
                202 => {
                    jobs.insert(answer["job"].as_str().unwrap().to_owned());
                }
                409 => {
                    assert_eq!(answer["error"], "idempotency_key_in_progress");
                    assert_eq!(headers["retry-after"], "1");
                }
                other => panic!("{other}: {answer}"),
            }
        }
        assert_eq!(jobs.len(), 1, "{answers:?}");
        wait_done(&env.gateway, pushgate::apns::FAMILY, 50).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(env.counters().accepted, 50);
        for token in &tokens {
            assert_eq!(env.mock.ledger.token(token).deliveries, 1, "{token}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_of_a_stream_still_being_read_is_409_then_replays() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup::default()).await;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
        let lines = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let header = format!("{}\n", json!({ "payload": apns_payload() }));
        tx.send(Ok(header.into_bytes())).await.unwrap();
        tx.send(Ok(format!("{}\n", apns_token("d1d1", 1)).into_bytes()))
            .await
            .unwrap();
        let stream = env
            .client
            .post(env.url("/apns/send"))
            .header(KEY, "stream-1")
            .header("content-type", "application/x-ndjson")
            .body(reqwest::Body::wrap_stream(lines))
            .send();
        let stream = tokio::spawn(stream);
        // The stream's job opened with its first token: the key is held.
        let deadline = Instant::now() + Duration::from_secs(60);
        while env.counters().accepted == 0 {
            assert!(Instant::now() < deadline, "the stream's job never opened");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (busy, answer, headers) = post_keyed(
            &env,
            "/apns/send",
            Some("stream-1"),
            &body(&[apns_token("d1d1", 1)]),
        )
        .await;
        assert_eq!(
            (busy, answer["error"].as_str()),
            (409, Some("idempotency_key_in_progress")),
            "{answer}"
        );
        assert_eq!(headers["retry-after"], "1");
        tx.send(Ok(format!("{}\n", apns_token("d1d1", 2)).into_bytes()))
            .await
            .unwrap();
        drop(tx);
        let done = stream.await.unwrap().unwrap();
        assert_eq!(done.status(), 202);
        let done: Value = done.json().await.unwrap();
        assert_eq!(done["accepted"], 2, "{done}");
        // Once the stream's answer is kept, a retry gets it.
        let header = format!("{}\n", json!({ "payload": apns_payload() }));
        let retry = env
            .client
            .post(env.url("/apns/send"))
            .header(KEY, "stream-1")
            .header("content-type", "application/x-ndjson")
            .body(header)
            .send()
            .await
            .unwrap();
        assert_eq!(retry.status(), 202);
        let retry: Value = retry.json().await.unwrap();
        assert_eq!(
            (&retry["job"], &retry["replayed"]),
            (&done["job"], &json!(true))
        );
        wait_done(&env.gateway, pushgate::apns::FAMILY, 2).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_answer_expires_with_the_ttl() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup {
            tweak: Box::new(|f| f.server.idempotency_ttl_s = 1),
            ..ApnsSetup::default()
        })
        .await;
        let tokens = vec![apns_token("e1e1", 1)];
        let (_, first, _) = post_keyed(&env, "/apns/send", Some("ttl"), &body(&tokens)).await;
        let (_, replay, _) = post_keyed(&env, "/apns/send", Some("ttl"), &body(&tokens)).await;
        assert_eq!(replay["job"], first["job"]);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let (status, later, headers) =
            post_keyed(&env, "/apns/send", Some("ttl"), &body(&tokens)).await;
        assert_eq!(status, 202, "{later}");
        assert_ne!(later["job"], first["job"], "an expired key is free again");
        assert!(headers.get("idempotency-replayed").is_none());
        wait_done(&env.gateway, pushgate::apns::FAMILY, 2).await;
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_answers_200_with_each_tokens_outcome_and_apples_reasons() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup::default()).await;
        let (good, dead, bad) = (
            apns_token("f1f1", 1),
            apns_token("dead", 1),
            apns_token("bad0", 1),
        );
        let (status, answer, _) = post_keyed(
            &env,
            "/apns/send?wait=20",
            Some("w1"),
            &body(&[good.clone(), dead.clone(), bad.clone()]),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["state"], "done");
        let results = answer["results"].as_array().unwrap();
        let of = |token: &str| {
            results
                .iter()
                .find(|r| r["token"] == token)
                .unwrap_or_else(|| panic!("{token} not in {answer}"))
                .clone()
        };
        assert_eq!(of(&good), json!({ "token": good, "outcome": "success" }));
        assert_eq!(
            of(&dead),
            json!({ "token": dead, "outcome": "unregistered", "reason": "Unregistered", "status": 410 })
        );
        assert_eq!(
            of(&bad),
            json!({ "token": bad, "outcome": "failed", "reason": "BadDeviceToken", "status": 400 })
        );
        // The final answer is the one kept under the key.
        let (again, replay, _) = post_keyed(
            &env,
            "/apns/send?wait=20",
            Some("w1"),
            &body(&[good.clone(), dead.clone(), bad.clone()]),
        )
        .await;
        assert_eq!(again, 200);
        assert_eq!((&replay["results"], &replay["replayed"]), (&answer["results"], &json!(true)));
        assert_eq!(env.mock.ledger.token(&good).deliveries, 1);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_refuses_large_and_scheduled_jobs_and_queues_nothing() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup::default()).await;
        let many: Vec<String> = (0..1_001).map(|i| apns_token("a2a2", i)).collect();
        let (status, answer, _) = post_keyed(&env, "/apns/send?wait=5", None, &body(&many)).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("wait_too_large")),
            "{answer}"
        );
        let mut scheduled = body(&many[..1]);
        scheduled["delay_seconds"] = json!(60);
        let (status, answer, _) = post_keyed(&env, "/apns/send?wait=5", None, &scheduled).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("wait_with_schedule"))
        );
        for bad in ["0", "31", "soon"] {
            let (status, answer, _) = post_keyed(
                &env,
                &format!("/apns/send?wait={bad}"),
                None,
                &body(&many[..1]),
            )
            .await;
            assert_eq!((status, answer["error"].as_str()), (400, Some("bad_wait")));
        }
        assert_eq!(env.counters().accepted, 0, "nothing was queued");
        // Exactly 1,000 may wait.
        let (status, answer, _) =
            post_keyed(&env, "/apns/send?wait=30", None, &body(&many[..1_000])).await;
        assert!(status == 200 || status == 202, "{status} {answer}");
        assert_eq!(answer["accepted"], 1_000);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_gives_202_running() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup {
            faults: Faults {
                latency_ms: 3_000,
                ..Faults::default()
            },
            ..ApnsSetup::default()
        })
        .await;
        let token = apns_token("a3a3", 1);
        let (status, answer, _) = post_keyed(
            &env,
            "/apns/send?wait=1",
            None,
            &body(std::slice::from_ref(&token)),
        )
        .await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["state"], "running");
        assert!(answer["job"].is_string());
        wait_done(&env.gateway, pushgate::apns::FAMILY, 1).await;
        assert_eq!(env.mock.ledger.token(&token).deliveries, 1);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gorush_sync_lists_failed_tokens_in_logs() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup::default()).await;
        let (good, dead) = (apns_token("a4a4", 1), apns_token("dead", 2));
        let push = json!({
            "sync": true,
            "notifications": [{
                "tokens": [good, dead, "zz"],
                "platform": 1,
                "message": "hi",
                "topic": "com.example.test",
            }],
        });
        let (status, answer, _) = post_keyed(&env, "/api/push", Some("g1"), &push).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            (&answer["success"], &answer["counts"]),
            (&json!("ok"), &json!(2))
        );
        assert_eq!(answer["state"], "done");
        let logs = answer["logs"].as_array().unwrap();
        let failed: Vec<(&str, &str)> = logs
            .iter()
            .map(|l| {
                assert_eq!(
                    (&l["type"], &l["platform"]),
                    (&json!("failed-push"), &json!("ios"))
                );
                (l["token"].as_str().unwrap(), l["error"].as_str().unwrap())
            })
            .collect();
        assert!(
            failed.contains(&(dead.as_str(), "Unregistered")),
            "{answer}"
        );
        assert!(failed.contains(&("zz", "BadDeviceToken")), "{answer}");
        assert!(!failed.iter().any(|(t, _)| *t == good), "{answer}");
        // Replayed with the key: the same jobs, nothing sent again.
        let (again, replay, _) = post_keyed(&env, "/api/push", Some("g1"), &push).await;
        assert_eq!(again, 200);
        assert_eq!(
            (&replay["jobs"], &replay["replayed"]),
            (&answer["jobs"], &json!(true))
        );
        assert_eq!(env.mock.ledger.token(&good).deliveries, 1);
    })
    .await
    .unwrap();
}

/// Tokens per second for `n` fresh tokens sent as one job (until done).
async fn bulk_rate(env: &ApnsEnv, prefix: &str, n: usize, accepted_before: u64) -> f64 {
    let tokens: Vec<String> = (0..n).map(|i| apns_token(prefix, i)).collect();
    let started = Instant::now();
    env.send_apns(&tokens).await;
    wait_done(
        &env.gateway,
        pushgate::apns::FAMILY,
        accepted_before + n as u64,
    )
    .await;
    n as f64 / started.elapsed().as_secs_f64()
}

/// 200 requests waiting at once hold no worker: a bulk job sent meanwhile
/// is delivered in full, and every waiter gets its outcome. The waiters'
/// tokens are refused once by the mock (503) and retried three seconds later,
/// so they are still waiting while the bulk job starts. Prints the p50
/// and p99 of a one-token `wait` and the bulk rate with and without the
/// waiters (`-- --nocapture`); asserts no speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_waiters_hold_no_worker() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup {
            tweak: Box::new(|f| {
                f.retry.base_ms = 3_000;
                f.retry.cap_ms = 3_000;
            }),
            ..ApnsSetup::default()
        })
        .await;
        // One token, waited for: p50 and p99 over 200 in a row.
        let mut took = Vec::new();
        for i in 0..200 {
            let started = Instant::now();
            let (status, answer, _) = post_keyed(
                &env,
                "/apns/send?wait=10",
                None,
                &body(&[apns_token("a5a5", i)]),
            )
            .await;
            took.push(started.elapsed());
            assert_eq!((status, &answer["results"][0]["outcome"]), (200, &json!("success")));
        }
        took.sort();
        eprintln!(
            "wait, one token against the mock: p50 {:?}, p99 {:?}",
            took[took.len() / 2],
            took[took.len() * 99 / 100]
        );
        let alone = bulk_rate(&env, "a6a6", 5_000, 200).await;
        let waiters: Vec<_> = (0..200)
            .map(|i| {
                let client = env.client.clone();
                let url = env.url("/apns/send?wait=30");
                let b = body(&[apns_token("f1a0", i)]);
                tokio::spawn(async move {
                    let r = client.post(url).json(&b).send().await.unwrap();
                    (r.status().as_u16(), r.json::<Value>().await.unwrap())
                })
            })
            .collect();
        // Every waiter's job admitted (each watched before its admission).
        let deadline = Instant::now() + Duration::from_secs(60);
        while env.counters().accepted < 5_400 {
            assert!(Instant::now() < deadline, "the waiters' jobs were never all admitted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let waiting = env.gateway.state.watch.watched();
        let beside = bulk_rate(&env, "a7a7", 5_000, 5_400).await;
        eprintln!(
            "bulk job of 5,000 tokens: {alone:.0} tokens/s alone, {beside:.0} tokens/s beside {waiting} waiters"
        );
        for waiter in waiters {
            let (status, answer) = waiter.await.unwrap();
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["results"][0]["outcome"], "success", "{answer}");
        }
        assert_eq!(env.gateway.state.watch.watched(), 0);
    })
    .await
    .unwrap();
}
