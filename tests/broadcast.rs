//! APNs broadcast channels end to end: the gateway on an ephemeral port, the
//! mock APNs (which serves the management and broadcast paths on its one
//! listener) over TLS + HTTP/2. No test asserts on speed.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use pushgate::mock::Faults;
use serde_json::{Value, json};

fn update() -> Value {
    json!({"aps": {"event": "update", "timestamp": 1_700_000_000u64,
                   "content-state": {"home": 1, "away": 0}}})
}

impl ApnsEnv {
    async fn delete(&self, path: &str) -> (u16, Value) {
        let r = self.client.delete(self.url(path)).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn create_channel(&self, policy: i64, app: Option<&str>) -> String {
        let (status, answer, _) = self
            .post_json(
                "/apns/channels",
                &json!({"message_storage_policy": policy, "app": app}),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
        assert!(answer["request_id"].as_str().is_some(), "{answer}");
        answer["channel_id"].as_str().unwrap().to_owned()
    }

    async fn broadcast(&self, body: Value) -> (u16, Value) {
        let (status, answer, _) = self.post_json("/apns/broadcast", &body).await;
        (status, answer)
    }

    async fn job_done(&self, job: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (_, status) = self.get(&format!("/jobs/{job}")).await;
            if status["pending"] == 0 {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "{status}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn metric(&self, line_start: &str) -> Option<f64> {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

#[tokio::test]
async fn channels_are_created_listed_read_and_deleted_with_apples_answers() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup::default()).await;
        let stored = env.create_channel(1, None).await;
        let unstored = env.create_channel(0, None).await;
        assert_ne!(stored, unstored);

        let (status, list) = env.get("/apns/channels").await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["channels_used"], 2);
        assert_eq!(list["channels_limit"], 10_000);
        let ids: Vec<&str> = list["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            ids.contains(&stored.as_str()) && ids.contains(&unstored.as_str()),
            "{list}"
        );

        let (status, read) = env
            .get(&format!("/apns/channels/{}", urlenc(&unstored)))
            .await;
        assert_eq!(status, 200, "{read}");
        assert_eq!(read["message_storage_policy"], 0);
        assert_eq!(read["push_type"], "LiveActivity");
        assert_eq!(read["channel_id"], unstored.as_str());

        let (status, _) = env
            .delete(&format!("/apns/channels/{}", urlenc(&unstored)))
            .await;
        assert_eq!(status, 204);
        // Apple's answer for a channel that is gone: 404 ChannelNotRegistered,
        // with its request id, passed on.
        let (status, gone) = env
            .get(&format!("/apns/channels/{}", urlenc(&unstored)))
            .await;
        assert_eq!(status, 404, "{gone}");
        assert_eq!(gone["reason"], "ChannelNotRegistered");
        assert!(
            gone["request_id"].as_str().is_some_and(|r| r.len() == 36),
            "{gone}"
        );
        let (status, gone) = env
            .delete(&format!("/apns/channels/{}", urlenc(&unstored)))
            .await;
        assert_eq!(
            (status, gone["reason"].as_str()),
            (404, Some("ChannelNotRegistered"))
        );
        let (_, list) = env.get("/apns/channels").await;
        assert_eq!(list["channels_used"], 1);

        // Refused by the gateway before asking Apple.
        let (status, bad) = env.get("/apns/channels/not%20base64").await;
        assert_eq!(
            (status, bad["error"].as_str()),
            (400, Some("bad_channel_id"))
        );
        let (status, bad, _) = env
            .post_json("/apns/channels", &json!({"message_storage_policy": 2}))
            .await;
        assert_eq!((status, bad["error"].as_str()), (400, Some("bad_field")));
        let (status, bad, _) = env
            .post_json(
                "/apns/channels",
                &json!({"message_storage_policy": 1, "app": "nope"}),
            )
            .await;
        assert_eq!((status, bad["error"].as_str()), (400, Some("unknown_app")));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn credentials_apple_refuses_are_a_502_with_apples_reason() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        // The gateway signs with another key id than the mock expects.
        let env = apns_env(ApnsSetup {
            tweak: Box::new(|f| f.apns.as_mut().unwrap().key_id = "OTHERKEY01".into()),
            ..ApnsSetup::default()
        })
        .await;
        let (status, answer, _) = env
            .post_json("/apns/channels", &json!({"message_storage_policy": 1}))
            .await;
        assert_eq!(status, 502, "{answer}");
        assert_eq!(answer["reason"], "InvalidProviderToken");
        assert_eq!(answer["status"], 403);
        assert!(answer["request_id"].as_str().is_some(), "{answer}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_broadcast_reaches_its_channel_once_and_is_reported() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup::default()).await;
        let channel = env.create_channel(1, None).await;
        let (status, answer) = env
            .broadcast(json!({"channel_id": channel, "payload": update(), "priority": 5,
                              "expiration": 4_000_000_000u64}))
            .await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["accepted"], 1);
        let job = env.job_done(answer["job"].as_str().unwrap()).await;
        assert_eq!(job["successes"], 1, "{job}");
        assert_eq!(job["total"], 1);
        let ids = job["apns_unique_ids"].as_array().unwrap();
        assert_eq!(ids.len(), 1, "{job}");
        assert_eq!(ids[0].as_str().unwrap().len(), 36);
        assert_eq!(env.mock.ledger.token(&channel).deliveries, 1);
        let (_, report) = env.get("/apns/report").await;
        assert_eq!((report["attempts"].as_u64(), report["successes"].as_u64()), (Some(1), Some(1)), "{report}");
        let sent = env
            .metric("pushgate_apns_broadcasts_total{app=\"default\",outcome=\"success\",push_kind=\"broadcast\"}")
            .await;
        assert_eq!(sent, Some(1.0));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn bad_broadcasts_are_400_before_anything_is_queued() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup::default()).await;
        let channel = env.create_channel(0, None).await;
        let big = json!({"aps": {"event": "update", "timestamp": 1, "content-state": {"x": "y".repeat(5200)}}});
        let cases = [
            (json!({"channel_id": channel, "payload": {"aps": {"event": "update", "timestamp": 1}}}), 400, "bad_field"),
            (json!({"channel_id": channel, "payload": {"aps": {"alert": "hi"}}}), 400, "bad_field"),
            (json!({"channel_id": channel, "payload": update(), "priority": 7}), 400, "bad_field"),
            (json!({"channel_id": "no spaces", "payload": update()}), 400, "bad_channel_id"),
            (json!({"payload": update()}), 400, "bad_channel_id"),
            (json!({"channel_id": channel}), 400, "no_payload"),
            (json!({"channel_id": channel, "payload": big}), 413, "too_large"),
            // The channel stores nothing, so it cannot take an expiration.
            (json!({"channel_id": channel, "payload": update(), "expiration": 4_000_000_000u64}), 400, "expiration_not_allowed"),
        ];
        for (body, want_status, want_error) in cases {
            let (status, answer) = env.broadcast(body.clone()).await;
            assert_eq!((status, answer["error"].as_str()), (want_status, Some(want_error)), "{body} -> {answer}");
        }
        assert_eq!(env.counters().accepted, 0);
        assert_eq!(env.mock.ledger.token(&channel).attempts, 0);
        // Expiration 0 on the same channel is fine.
        let (status, answer) = env.broadcast(json!({"channel_id": channel, "payload": update(), "expiration": 0})).await;
        assert_eq!(status, 202, "{answer}");
        let job = env.job_done(answer["job"].as_str().unwrap()).await;
        assert_eq!(job["successes"], 1, "{job}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn apples_refusals_fail_the_broadcast_and_list_the_channel() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        // App "other" shares the bundle but not the gateway's memory of
        // channel policies, so the storage rule is Apple's (the mock's) to
        // enforce.
        let env = apns_env(ApnsSetup {
            tweak: Box::new(|f| {
                let base = f.apns.clone().unwrap();
                f.apns.as_mut().unwrap().apps.insert("other".into(), base);
            }),
            ..ApnsSetup::default()
        })
        .await;
        let channel = env.create_channel(0, None).await;
        let (status, answer) = env
            .broadcast(json!({"channel_id": channel, "payload": update(), "expiration": 4_000_000_000u64, "app": "other"}))
            .await;
        assert_eq!(status, 202, "{answer}");
        let job = env.job_done(answer["job"].as_str().unwrap()).await;
        assert_eq!(job["failures"], 1, "{job}");
        // A channel the mock never created: 404 ChannelNotRegistered.
        let (status, answer) = env.broadcast(json!({"channel_id": "bm9zdWNoY2hhbm5lbA==", "payload": update()})).await;
        assert_eq!(status, 202, "{answer}");
        env.job_done(answer["job"].as_str().unwrap()).await;
        // Each app has its own lists.
        let (_, failures) = env.get("/apns/report/failures").await;
        let (_, other) = env.get("/apns/report/failures?app=other").await;
        let list: Vec<Value> = failures["failures"].as_array().unwrap().iter().chain(other["failures"].as_array().unwrap()).cloned().collect();
        let found = |token: &str, reason: &str, code: u64| {
            list.iter().any(|f| f["token"] == token && f["reason"] == reason && f["status"] == code)
        };
        assert!(found(&channel, "BadExpirationDate", 400), "{other}");
        assert!(found("bm9zdWNoY2hhbm5lbA==", "ChannelNotRegistered", 404), "{failures}");
        let c = env.counters();
        assert!(c.balanced(), "{c:?}");
        assert_eq!(c.failures, 1);
        let (_, report) = env.get("/apns/report?app=other").await;
        assert_eq!((report["failures"].as_u64(), report["pending"].as_u64()), (Some(1), Some(0)), "{report}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn broadcasts_are_retried_on_429_and_expire_after_repeated_5xx() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        // Every second broadcast request is throttled (Retry-After: 0).
        let env = apns_env(ApnsSetup {
            faults: Faults {
                throttle_every: Some(2),
                retry_after_s: 0,
                ..Faults::default()
            },
            ..ApnsSetup::default()
        })
        .await;
        let channel = env.create_channel(1, None).await;
        for _ in 0..2 {
            let (status, answer) = env
                .broadcast(json!({"channel_id": channel, "payload": update()}))
                .await;
            assert_eq!(status, 202, "{answer}");
            let job = env.job_done(answer["job"].as_str().unwrap()).await;
            assert_eq!(job["successes"], 1, "{job}");
        }
        let record = env.mock.ledger.token(&channel);
        assert_eq!((record.attempts, record.deliveries), (3, 2));
        assert_eq!(env.counters().retries, 1);
    })
    .await
    .unwrap();
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup {
            faults: Faults {
                error_rate: 1.0,
                ..Faults::default()
            },
            ..ApnsSetup::default()
        })
        .await;
        let channel = env.create_channel(1, None).await;
        let (status, answer) = env
            .broadcast(json!({"channel_id": channel, "payload": update()}))
            .await;
        assert_eq!(status, 202, "{answer}");
        let job = env.job_done(answer["job"].as_str().unwrap()).await;
        assert_eq!(job["expired"], 1, "{job}");
        // max_retries = 3 in the harness: the first attempt and three retries.
        assert_eq!(env.mock.ledger.token(&channel).attempts, 4);
        let c = env.counters();
        assert_eq!((c.retries, c.expired), (3, 1), "{c:?}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn sandbox_device_pushes_keep_apns_unique_id() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup {
            sandbox: true,
            ..ApnsSetup::default()
        })
        .await;
        let tokens: Vec<String> = (0..3).map(|i| apns_token("abcd", i)).collect();
        let answer = env.send_apns(&tokens).await;
        let job = env.job_done(answer["job"].as_str().unwrap()).await;
        assert_eq!(job["successes"], 3, "{job}");
        let ids = job["apns_unique_ids"].as_array().unwrap();
        assert_eq!(ids.len(), 3, "{job}");
        // The production mock sends none, and the status then has no such field.
        let env = apns_env(ApnsSetup::default()).await;
        let answer = env.send_apns(&tokens).await;
        let job = env.job_done(answer["job"].as_str().unwrap()).await;
        assert!(job.get("apns_unique_ids").is_none(), "{job}");
    })
    .await
    .unwrap();
}

/// Channel ids are base64: `+`, `/` and `=` must be escaped in a path.
fn urlenc(id: &str) -> String {
    id.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

/// A broadcast's one "token" is its channel id, and every way a broadcast
/// can end shows that id exactly as the sender gave it, in the lists and in
/// the webhook events: answered by Apple, refused by Apple, cancelled while
/// scheduled, and expired while waiting for its `send_at` (none of these
/// may show it re-encoded, as hex once did). Runs on the disk store, so the
/// channel id also goes through the stored job record. What it leaves out:
/// the Redis store, which carries tokens through the same codec.
#[tokio::test]
async fn every_end_of_a_broadcast_shows_its_channel_id() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (hook, events) = hook_receiver().await;
        let data_dir = scratch("broadcast-ids");
        let env = apns_env(ApnsSetup {
            tweak: Box::new(move |f| {
                f.queue.backend = "disk".into();
                f.queue.data_dir = data_dir.display().to_string();
                f.webhook = Some(pushgate::config::WebhookSection {
                    url: hook,
                    secret: pushgate::config::Secret::new("a-webhook-secret-of-32-characters"),
                    flush_ms: 50,
                    ..Default::default()
                });
            }),
            ..ApnsSetup::default()
        })
        .await;
        let answered = env.create_channel(1, None).await;
        let scheduled = env.create_channel(1, None).await;
        let late = env.create_channel(1, None).await;
        // Never created: Apple answers 404 ChannelNotRegistered.
        let unknown = "bm9zdWNoY2hhbm5lbA==";
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let rfc3339 = |secs: u64| {
            time::OffsetDateTime::from_unix_timestamp(secs as i64)
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let mut jobs = Vec::new();
        for body in [
            json!({"channel_id": answered, "payload": update()}),
            json!({"channel_id": unknown, "payload": update()}),
            json!({"channel_id": scheduled, "payload": update(), "send_at": rfc3339(now + 3600)}),
            // Due after its own expiration: it expires in the queue, unsent.
            json!({"channel_id": late, "payload": update(), "expiration": now + 1,
                   "send_at": rfc3339(now + 2)}),
        ] {
            let (status, answer) = env.broadcast(body.clone()).await;
            assert_eq!(status, 202, "{body} -> {answer}");
            jobs.push(answer["job"].as_str().unwrap().to_owned());
        }
        let (status, cancelled) = env.delete(&format!("/jobs/{}", jobs[2])).await;
        assert_eq!(
            (status, cancelled["cancelled"].as_u64()),
            (200, Some(1)),
            "{cancelled}"
        );
        for job in &jobs {
            env.job_done(job).await;
        }
        let events = events_for(&events, 4).await;
        let outcome_of = |channel: &str| {
            let shown: Vec<&Value> = events.iter().filter(|e| e["token"] == channel).collect();
            assert_eq!(shown.len(), 1, "{channel} in {events:?}");
            shown[0]["outcome"].as_str().unwrap().to_owned()
        };
        assert_eq!(outcome_of(&answered), "success");
        assert_eq!(outcome_of(unknown), "failed");
        assert_eq!(outcome_of(&scheduled), "cancelled");
        assert_eq!(outcome_of(&late), "expired");
        let (_, failures) = env.get("/apns/report/failures").await;
        assert_eq!(failures["failures"][0]["token"], unknown, "{failures}");
        assert_eq!(env.mock.ledger.token(&late).attempts, 0);
        let c = env.counters();
        assert!(c.balanced(), "{c:?}");
        assert_eq!(
            (c.successes, c.failures, c.cancelled, c.expired),
            (1, 1, 1, 1),
            "{c:?}"
        );
    })
    .await
    .unwrap();
}
