//! APNs end to end: gateway on an ephemeral port, mock APNs over TLS + HTTP/2.
//! No test asserts on speed; each is bounded by a timeout.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use pushgate::mock::Faults;
use serde_json::{Value, json};

/// What the mock will do with a token, by prefix (see src/mock/apns.rs).
fn expected(token: &str) -> &'static str {
    match &token[..4] {
        "dead" => "unregistered",
        "bad0" | "bad1" => "failed",
        "5000" => "expired",
        _ => "success",
    }
}

#[tokio::test]
async fn two_thousand_tokens_each_reach_exactly_one_outcome() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup::default()).await;
        let mut tokens: Vec<String> = (0..2400)
            .map(|i| {
                let prefix = match i % 40 {
                    0 => "dead",
                    1 => "bad0",
                    2 => "bad1",
                    3 => "f1a0",
                    4 => "4290",
                    5 if i % 400 == 5 => "5000",
                    _ => "abcd",
                };
                apns_token(prefix, i)
            })
            .collect();
        tokens.push("zz-not-hex".into());
        tokens.push(tokens[10].to_uppercase()); // a duplicate in another case
        let answer = env.send_apns(&tokens).await;
        assert_eq!(answer["accepted"], 2400);
        assert_eq!(answer["duplicates"], 1);
        assert_eq!(answer["rejected"], json!([{ "token": "zz-not-hex", "reason": "BadDeviceToken" }]));

        let c = wait_done(&env.gateway, pushgate::apns::FAMILY, 2400).await;
        let mut want: HashMap<&str, u64> = HashMap::new();
        for t in &tokens[..2400] {
            *want.entry(expected(t)).or_default() += 1;
        }
        assert_eq!(c.successes, want["success"]);
        assert_eq!(c.unregistered, want["unregistered"]);
        assert_eq!(c.failures, want["failed"]);
        assert_eq!(c.expired, want["expired"]);
        assert_eq!(c.accepted, c.pending + c.finished());
        assert_eq!(c.attempts, c.retries + c.finished() - c.unattempted);
        assert!(c.retries > 0);

        // The mock saw every deliverable token delivered exactly once.
        for t in &tokens[..2400] {
            let record = env.mock.ledger.token(t);
            let deliveries = if expected(t) == "success" { 1 } else { 0 };
            assert_eq!(record.deliveries, deliveries, "{t}: {record:?}");
        }
        // One provider token served every request.
        assert_eq!(env.mock.ledger.distinct_credentials(), 1);

        // The report endpoints agree with the counters.
        let (_, report) = env.get("/apns/report").await;
        assert_eq!(report["successes"], c.successes);
        assert_eq!(report["pending"], 0);
        let (_, unregistered) = env.get("/apns/report/unregistered").await;
        let list = unregistered["tokens"].as_array().unwrap();
        assert_eq!(list.len() as u64, want["unregistered"]);
        assert!(list.iter().all(|e| e["token"].as_str().unwrap().starts_with("dead") && e["timestamp"].as_u64().unwrap() > 1_600_000_000_000));
        let (_, failures) = env.get("/apns/report/failures").await;
        let failures = failures["failures"].as_array().unwrap();
        assert!(failures.iter().any(|f| f["reason"] == "BadDeviceToken" && f["status"] == 400));
        assert!(failures.iter().any(|f| f["reason"] == "DeviceTokenNotForTopic"));

        // The job is done and its counts match.
        let (status, job) = env.get(&format!("/jobs/{}", answer["job"].as_str().unwrap())).await;
        assert_eq!(status, 200);
        assert_eq!(job["state"], "done");
        assert_eq!(job["total"], 2400);
        assert_eq!(job["successes"], c.successes);
        assert_eq!(job["pending"], 0);

        // Metrics carry platform, outcome and reason.
        let metrics = env.client.get(env.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains(&format!("pushgate_outcomes_total{{app=\"default\",outcome=\"success\",platform=\"apns\",reason=\"\"}} {}", c.successes)), "{metrics}");
        assert!(metrics.contains("pushgate_outcomes_total{app=\"default\",outcome=\"failed\",platform=\"apns\",reason=\"BadDeviceToken\"}"));
        assert!(metrics.contains("pushgate_upstream_latency_seconds_bucket{platform=\"apns\""));
        assert!(metrics.contains("pushgate_upstream_connections{platform=\"apns\"} 1"));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn gocm_style_form_body_is_accepted() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup::default()).await;
        let (a, b) = (apns_token("abcd", 1), apns_token("dead", 2));
        let body = format!("tokens={a}&tokens={b}&payload=%7B%22aps%22%3A%7B%22alert%22%3A%22hi%22%7D%7D&priority=5&topic=com.example.other");
        let r = env.client.post(env.url("/apns/send")).header("content-type", "application/x-www-form-urlencoded").body(body).send().await.unwrap();
        assert_eq!(r.status(), 202);
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["accepted"], 2);
        let c = wait_done(&env.gateway, pushgate::apns::FAMILY, 2).await;
        assert_eq!((c.successes, c.unregistered), (1, 1));
        assert_eq!(env.mock.ledger.token(&a).deliveries, 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn bad_input_is_refused_with_json_and_changes_nothing() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup {
            tweak: Box::new(|f| f.server.max_body_bytes = 64 * 1024),
            ..ApnsSetup::default()
        })
        .await;
        let good = apns_token("abcd", 1);
        // One good job first: nothing after it may disturb it.
        let (status, _, _) = env
            .post_json(
                "/apns/send",
                &json!({ "tokens": [good], "payload": apns_payload() }),
            )
            .await;
        assert_eq!(status, 202);
        wait_done(&env.gateway, pushgate::apns::FAMILY, 1).await;
        let before = env.counters();

        let send = |body: String, content_type: &'static str| {
            let request = env
                .client
                .post(env.url("/apns/send"))
                .header("content-type", content_type)
                .body(body);
            async move {
                let r = request.send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap())
            }
        };
        let json_ct = "application/json";
        let big_payload =
            json!({ "tokens": [good], "payload": { "aps": { "alert": "x".repeat(5000) } } })
                .to_string();
        let huge_body =
            json!({ "tokens": vec![good.clone(); 2000], "payload": apns_payload() }).to_string();
        let cases: Vec<(String, &str, u16, &str)> = vec![
            ("{not json".into(), json_ct, 400, "bad_json"),
            (
                json!({ "payload": apns_payload() }).to_string(),
                json_ct,
                400,
                "no_tokens",
            ),
            (
                json!({ "tokens": [good] }).to_string(),
                json_ct,
                400,
                "no_payload",
            ),
            (
                json!({ "tokens": [good], "payload": [1, 2] }).to_string(),
                json_ct,
                400,
                "bad_field",
            ),
            (
                json!({ "tokens": [good], "payload": apns_payload(), "priority": 7 }).to_string(),
                json_ct,
                400,
                "bad_field",
            ),
            (
                json!({ "tokens": [good], "payload": apns_payload(), "push_type": "sms" }).to_string(),
                json_ct,
                400,
                "bad_field",
            ),
            (
                // A Live Activity start without its attributes: ActivityKit
                // would drop it silently, so it is refused here.
                json!({ "tokens": [good], "push_type": "liveactivity", "payload": {"aps": {
                    "event": "start", "timestamp": 1767225600, "content-state": {"eta": 5}}} })
                    .to_string(),
                json_ct,
                400,
                "bad_field",
            ),
            (
                json!({ "tokens": [good], "payload": apns_payload(), "collapse_id": "c".repeat(65) })
                    .to_string(),
                json_ct,
                400,
                "bad_field",
            ),
            (
                json!({ "tokens": [good], "payload": apns_payload(), "tokenz": [] }).to_string(),
                json_ct,
                400,
                "bad_json",
            ),
            (
                json!({ "tokens": [good], "payload": apns_payload(), "app": "nope" }).to_string(),
                json_ct,
                400,
                "unknown_app",
            ),
            (
                json!({ "tokens": ["xyz", "12"], "payload": apns_payload() }).to_string(),
                json_ct,
                400,
                "no_valid_tokens",
            ),
            (big_payload, json_ct, 413, "too_large"),
            (huge_body, json_ct, 413, "too_large"),
            (
                "tokens=a".into(),
                "text/plain",
                415,
                "unsupported_media_type",
            ),
            (
                format!("tokens={good}&payload=%7Bbroken"),
                "application/x-www-form-urlencoded",
                400,
                "bad_payload",
            ),
            (
                format!("tokens={good}&payload=%7B%7D&priority=high"),
                "application/x-www-form-urlencoded",
                400,
                "bad_field",
            ),
            (
                format!("tokens={good}&payload=%7B%7D&colour=red"),
                "application/x-www-form-urlencoded",
                400,
                "unknown_field",
            ),
        ];
        for (body, content_type, want_status, want_code) in cases {
            let shown = body.chars().take(80).collect::<String>();
            let (status, answer) = send(body, content_type).await;
            assert_eq!(
                (status, answer["error"].as_str().unwrap_or("")),
                (want_status, want_code),
                "{shown}: {answer}"
            );
            assert!(
                answer["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{answer}"
            );
        }
        let (status, answer) = env.get("/nowhere").await;
        assert_eq!((status, answer["error"].as_str()), (404, Some("not_found")));
        let r = env.client.put(env.url("/apns/send")).send().await.unwrap();
        assert_eq!(r.status(), 405);
        let (status, answer) = env.get("/jobs/not-a-job").await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("bad_job_id"))
        );
        let (status, _) = env
            .get(&format!("/jobs/{}", pushgate::job::JobId::new()))
            .await;
        assert_eq!(status, 404);

        assert_eq!(
            env.counters(),
            before,
            "a refused request changed the books"
        );
        assert_eq!(env.gateway.state.backend.pending(), 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn unconfigured_platform_answers_404_saying_so() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        init();
        let mut file = pushgate::config::FileConfig::default();
        file.server.listen = "127.0.0.1:0".into();
        // Durability is not the point here (tests/durable.rs is): keep nothing.
        file.queue.backend = "memory".into();
        let gateway = pushgate::gateway::Gateway::start(&file.validate().unwrap())
            .await
            .unwrap();
        let client = reqwest::Client::new();
        for path in ["/apns/report", "/apns/report/unregistered"] {
            let r = client
                .get(format!("{}{path}", gateway.url()))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404);
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"], "platform_not_configured");
            assert!(body["message"].as_str().unwrap().contains("[apns]"));
        }
        let r = client
            .post(format!("{}/apns/send", gateway.url()))
            .json(&json!({"tokens": ["00"], "payload": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn api_keys_guard_every_route_but_healthz() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let key = "k-0123456789abcdef-secret";
        let env = apns_env(ApnsSetup {
            tweak: Box::new(move |f| f.server.api_keys = vec![pushgate::config::Secret::new(key)]),
            ..ApnsSetup::default()
        })
        .await;
        let r = env.client.get(env.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        for path in ["/apns/report", "/metrics", "/readyz"] {
            let r = env.client.get(env.url(path)).send().await.unwrap();
            assert_eq!(r.status(), 401, "{path}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"], "unauthorized");
            let r = env
                .client
                .get(env.url(path))
                .bearer_auth("k-0123456789abcdef-wrong!")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "{path}");
            let text = r.text().await.unwrap();
            assert!(!text.contains(key));
        }
        let r = env
            .client
            .post(env.url("/apns/send"))
            .bearer_auth(key)
            .json(&json!({ "tokens": [apns_token("abcd", 9)], "payload": apns_payload() }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let r = env
            .client
            .get(env.url("/apns/report"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn delete_drains_a_list_atomically() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup::default()).await;
        let tokens: Vec<String> = (0..30)
            .map(|i| apns_token(if i % 3 == 0 { "dead" } else { "bad0" }, i))
            .collect();
        env.post_json(
            "/apns/send",
            &json!({ "tokens": tokens, "payload": apns_payload() }),
        )
        .await;
        wait_done(&env.gateway, pushgate::apns::FAMILY, 30).await;
        let drained = env
            .client
            .delete(env.url("/apns/report/unregistered"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        assert_eq!(drained["tokens"].as_array().unwrap().len(), 10);
        let (_, after) = env.get("/apns/report/unregistered").await;
        assert_eq!(after["tokens"], json!([]));
        let drained = env
            .client
            .delete(env.url("/apns/report/failures"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        assert_eq!(drained["failures"].as_array().unwrap().len(), 20);
        let (_, after) = env.get("/apns/report/failures").await;
        assert_eq!(after["failures"], json!([]));
        // Totals are running counters: draining lists does not reset them.
        assert_eq!(env.counters().unregistered, 10);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn report_lists_are_bounded_and_count_what_they_drop() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup {
            tweak: Box::new(|f| f.report.max_list = 5),
            ..ApnsSetup::default()
        })
        .await;
        let tokens: Vec<String> = (0..12).map(|i| apns_token("dead", i)).collect();
        env.post_json(
            "/apns/send",
            &json!({ "tokens": tokens, "payload": apns_payload() }),
        )
        .await;
        wait_done(&env.gateway, pushgate::apns::FAMILY, 12).await;
        let (_, report) = env.get("/apns/report").await;
        assert_eq!(
            report["lists"]["unregistered"],
            json!({ "size": 5, "dropped": 7 })
        );
        assert_eq!(report["unregistered"], 12);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn full_queue_answers_503_with_retry_after_and_keeps_what_it_accepted() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup {
            faults: Faults {
                latency_ms: 300,
                ..Faults::default()
            },
            tweak: Box::new(|f| f.queue.capacity = 10),
            ..ApnsSetup::default()
        })
        .await;
        let first: Vec<String> = (0..8).map(|i| apns_token("abcd", i)).collect();
        env.send_apns(&first).await;
        let second: Vec<String> = (100..105).map(|i| apns_token("abcd", i)).collect();
        let (status, answer, headers) = env
            .post_json(
                "/apns/send",
                &json!({ "tokens": second, "payload": apns_payload() }),
            )
            .await;
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["error"], "queue_full");
        assert!(headers.get("retry-after").is_some());
        let c = wait_done(&env.gateway, pushgate::apns::FAMILY, 8).await;
        assert_eq!((c.accepted, c.successes), (8, 8));
        for t in &first {
            assert_eq!(env.mock.ledger.token(t).deliveries, 1);
        }
        // With room again, the same request is accepted.
        env.send_apns(&second).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn certificate_auth_with_a_pem_pair_and_with_pkcs12() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        for auth in [ApnsAuthMode::CertPem, ApnsAuthMode::Pkcs12] {
            let env = apns_env(ApnsSetup {
                auth,
                ..ApnsSetup::default()
            })
            .await;
            let tokens: Vec<String> = (0..50).map(|i| apns_token("abcd", i)).collect();
            env.send_apns(&tokens).await;
            let c = wait_done(&env.gateway, pushgate::apns::FAMILY, 50).await;
            assert_eq!(c.successes, 50);
            assert_eq!(
                env.mock.ledger.distinct_credentials(),
                0,
                "no JWT is sent with certificate auth"
            );
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn expired_messages_are_never_sent() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup::default()).await;
        let tokens: Vec<String> = (0..20).map(|i| apns_token("abcd", i)).collect();
        // Expired in 2001: nothing may reach Apple.
        let (status, _, _) = env
            .post_json(
                "/apns/send",
                &json!({ "tokens": tokens, "payload": apns_payload(), "expiration": 1_000_000_000 }),
            )
            .await;
        assert_eq!(status, 202);
        let c = wait_done(&env.gateway, pushgate::apns::FAMILY, 20).await;
        assert_eq!((c.expired, c.unattempted, c.attempts), (20, 20, 0));
        assert_eq!(env.mock.ledger.token(&tokens[0]).attempts, 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn goaway_and_stream_limits_lose_and_duplicate_nothing() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup {
            faults: Faults {
                goaway_after: Some(150),
                ..Faults::default()
            },
            max_streams: 8,
            ..ApnsSetup::default()
        })
        .await;
        let tokens: Vec<String> = (0..1500).map(|i| apns_token("abcd", i)).collect();
        env.send_apns(&tokens).await;
        let c = wait_done(&env.gateway, pushgate::apns::FAMILY, 1500).await;
        assert_eq!(c.successes, 1500, "{c:?}");
        let ledger = &env.mock.ledger;
        assert!(pushgate::mock::Ledger::get(&ledger.goaways) >= 5);
        assert!(pushgate::mock::Ledger::get(&ledger.connections) >= 5);
        assert_eq!(
            pushgate::mock::Ledger::get(&ledger.stream_limit_violations),
            0
        );
        assert!(pushgate::mock::Ledger::get(&ledger.peak_streams) <= 8);
        for t in &tokens {
            assert_eq!(ledger.token(t).deliveries, 1, "{t}");
        }
        assert_eq!(c.possible_duplicates, 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn dropped_connections_resend_and_count_possible_duplicates() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup {
            faults: Faults {
                drop_after: Some(200),
                ..Faults::default()
            },
            max_streams: 50,
            ..ApnsSetup::default()
        })
        .await;
        let tokens: Vec<String> = (0..1000).map(|i| apns_token("abcd", i)).collect();
        env.post_json(
            "/apns/send",
            &json!({ "tokens": tokens, "payload": apns_payload() }),
        )
        .await;
        let c = wait_done(&env.gateway, pushgate::apns::FAMILY, 1000).await;
        assert_eq!(c.successes + c.expired, 1000, "{c:?}");
        assert!(pushgate::mock::Ledger::get(&env.mock.ledger.drops) >= 1);
        let mut twice = 0;
        for t in &tokens {
            let d = env.mock.ledger.token(t).deliveries;
            assert!(d >= 1 || c.expired > 0, "{t} never delivered");
            twice += u64::from(d.saturating_sub(1));
        }
        assert!(
            twice <= c.possible_duplicates,
            "{twice} duplicates but only {} counted",
            c.possible_duplicates
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn readiness_follows_the_upstream_connection() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup::default()).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (status, body) = env.get("/readyz").await;
            if status == 200 {
                assert_eq!(body["status"], "ready");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never ready: {body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_api_serves_https_when_given_a_certificate() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let pki = pushgate::mock::tls::TestPki::generate().unwrap();
        let dir = scratch("listener-tls");
        let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::write(&cert, &pki.server.cert_pem).unwrap();
        std::fs::write(&key, &pki.server.key_pem).unwrap();
        let env = apns_env(ApnsSetup {
            tweak: Box::new(move |f| {
                f.server.tls_cert = cert.display().to_string();
                f.server.tls_key = key.display().to_string();
            }),
            ..ApnsSetup::default()
        })
        .await;
        assert!(env.gateway.url().starts_with("https://"));
        let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap();
        for (i, http2) in [false, true].into_iter().enumerate() {
            let mut builder = reqwest::Client::builder().tls_certs_merge([ca.clone()]);
            builder = if http2 {
                builder.http2_prior_knowledge()
            } else {
                builder.http1_only()
            };
            let client = builder.build().unwrap();
            let r = client
                .post(env.url("/apns/send"))
                .json(&json!({ "tokens": [apns_token("abcd", i)], "payload": apns_payload() }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202, "http2={http2}");
        }
        let c = wait_done(&env.gateway, pushgate::apns::FAMILY, 2).await;
        assert_eq!(c.successes, 2);
        // Plain HTTP to the TLS port gets no answer.
        let plain = format!("http://{}/healthz", env.gateway.addr);
        let answered = reqwest::get(&plain)
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        assert!(!answered);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn delayed_jobs_wait_then_deliver_and_can_be_cancelled() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup::default()).await;
        // Delayed by one second: scheduled first, then delivered.
        let soon: Vec<String> = (0..10).map(|i| apns_token("abcd", i)).collect();
        let (status, answer, _) = env.post_json("/apns/send", &json!({ "tokens": soon, "payload": apns_payload(), "delay_seconds": 1 })).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["scheduled_in_s"], 1);
        let job = answer["job"].as_str().unwrap().to_owned();
        let (_, status_now) = env.get(&format!("/jobs/{job}")).await;
        assert_eq!(status_now["state"], "scheduled");
        assert_eq!(env.counters().pending, 10, "scheduled tokens are pending");
        assert_eq!(env.mock.ledger.token(&soon[0]).attempts, 0);
        let c = wait_done(&env.gateway, pushgate::apns::FAMILY, 10).await;
        assert_eq!(c.successes, 10);
        let (_, done) = env.get(&format!("/jobs/{job}")).await;
        assert_eq!(done["state"], "done");

        // Due in an hour (RFC 3339 with an offset): cancel it.
        let later: Vec<String> = (100..120).map(|i| apns_token("abcd", i)).collect();
        let at = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        let at = at.to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap()).format(&time::format_description::well_known::Rfc3339).unwrap();
        let (status, answer, _) = env.post_json("/apns/send", &json!({ "tokens": later, "payload": apns_payload(), "send_at": at })).await;
        assert_eq!(status, 202, "{answer}");
        let job = answer["job"].as_str().unwrap().to_owned();
        let cancelled: Value = env.client.delete(env.url(&format!("/jobs/{job}"))).send().await.unwrap().json().await.unwrap();
        assert_eq!(cancelled["state"], "cancelled");
        assert_eq!(cancelled["cancelled"], 20);
        assert_eq!(cancelled["pending"], 0);
        let c = wait_done(&env.gateway, pushgate::apns::FAMILY, 30).await;
        assert_eq!((c.cancelled, c.unattempted), (20, 20));
        assert_eq!(env.mock.ledger.token(&later[0]).attempts, 0);

        // Bad schedules are refused.
        for (body, code) in [
            (json!({ "tokens": [apns_token("abcd", 1)], "payload": apns_payload(), "send_at": "tomorrow" }), "bad_field"),
            (json!({ "tokens": [apns_token("abcd", 1)], "payload": apns_payload(), "delay_seconds": 5, "send_at": at }), "bad_field"),
            (json!({ "tokens": [apns_token("abcd", 1)], "payload": apns_payload(), "delay_seconds": 99_999_999 }), "bad_field"),
        ] {
            let (status, answer, _) = env.post_json("/apns/send", &body).await;
            assert_eq!((status, answer["error"].as_str()), (400, Some(code)), "{answer}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn several_apps_use_their_own_credentials_and_reports() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        init();
        // A second APNs (its own mock, its own provider key) for app "second".
        let pki = pushgate::mock::tls::TestPki::generate().unwrap();
        let (p8, public_key_pem) = pushgate::mock::apns::generate_provider_key().unwrap();
        let check = pushgate::mock::apns::ApnsAuthCheck::Token { team_id: "TEAMSECOND".into(), key_id: "KEYSECOND1".into(), public_key_pem };
        let second = pushgate::mock::apns::start(pushgate::mock::apns::MockApnsOptions::new(check, &pki)).await.unwrap();
        let dir = scratch("second-app");
        let (key_file, ca_file) = (dir.join("second.p8"), dir.join("second-ca.pem"));
        std::fs::write(&key_file, p8).unwrap();
        std::fs::write(&ca_file, &pki.ca_pem).unwrap();
        let second_url = second.url();
        let env = apns_env(ApnsSetup {
            tweak: Box::new(move |f| {
                let base = f.apns.clone().unwrap();
                let app = pushgate::config::ApnsSection {
                    endpoint: second_url,
                    ca_file: ca_file.display().to_string(),
                    key_file: key_file.display().to_string(),
                    key_id: "KEYSECOND1".into(),
                    team_id: "TEAMSECOND".into(),
                    topic: "com.example.second".into(),
                    ..base
                };
                f.apns.as_mut().unwrap().apps.insert("second".into(), app);
            }),
            ..ApnsSetup::default()
        })
        .await;
        let tokens: Vec<String> = (0..40).map(|i| apns_token(if i % 4 == 0 { "dead" } else { "abcd" }, i)).collect();
        let (status, answer, _) = env.post_json("/apns/send", &json!({ "tokens": tokens, "payload": apns_payload(), "app": "second" })).await;
        assert_eq!(status, 202, "{answer}");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let second_report = loop {
            let (_, r) = env.get("/apns/report?app=second").await;
            if r["pending"] == 0 && r["accepted"] == 40 {
                break r;
            }
            assert!(std::time::Instant::now() < deadline, "{r}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!((second_report["successes"].as_u64(), second_report["unregistered"].as_u64()), (Some(30), Some(10)));
        assert_eq!(second_report["apps"], json!(["default", "second"]));
        for t in &tokens {
            assert_eq!(env.mock.ledger.token(t).attempts, 0, "the default app's upstream saw {t}");
            let want = u32::from(!t.starts_with("dead"));
            assert_eq!(second.ledger.token(t).deliveries, want);
        }
        assert_eq!(env.counters().accepted, 0, "the default app's books are untouched");
        let (_, list) = env.get("/apns/report/unregistered?app=second").await;
        assert_eq!(list["tokens"].as_array().unwrap().len(), 10);
        let (_, list) = env.get("/apns/report/unregistered").await;
        assert_eq!(list["tokens"], json!([]));

        let (status, answer, _) = env.post_json("/apns/send", &json!({ "tokens": tokens, "payload": apns_payload(), "app": "third" })).await;
        assert_eq!((status, answer["error"].as_str()), (400, Some("unknown_app")));
        assert!(answer["message"].as_str().unwrap().contains("second"), "{answer}");
        let (status, _) = env.get("/apns/report?app=third").await;
        assert_eq!(status, 400);
        let metrics = env.client.get(env.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("pushgate_outcomes_total{app=\"second\",outcome=\"success\",platform=\"apns\",reason=\"\"} 30"), "{metrics}");
    })
    .await
    .unwrap();
}
