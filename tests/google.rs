//! Google end to end through the HTTP API: a GoCM user's exact requests against
//! both back ends (FCM v1 and legacy), mock FCM over TLS. No timing asserts.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use common::*;
use pushgate::mock::Faults;
use serde_json::{Value, json};

fn mixed_tokens(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 25 {
            0 => format!("unregistered-{i}"),
            1 => format!("invalid-{i}"),
            2 => format!("canonical-{i}"),
            3 => format!("flaky-{i}"),
            4 => format!("quota-{i}"),
            5 => format!("mismatch-{i}"),
            _ => format!("dev-{i}:APA91bH_{}", "x".repeat(i % 100)),
        })
        .collect()
}

async fn gocm_run(api: GoogleApi) {
    let env = google_env(api, Faults::default(), |_| {}).await;
    let mut tokens = mixed_tokens(2500);
    tokens.push("bad token with spaces".into());
    let (status, answer) = env
        .post_gocm_form(
            "/gcm/send",
            &tokens,
            r#"{"title":"hi","n":1,"nested":{"a":[1,2]}}"#,
            &[],
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 2500);
    assert_eq!(
        answer["rejected"],
        json!([{ "token": "bad token with spaces", "reason": "InvalidRegistration" }])
    );
    let c = wait_done(&env.gateway, pushgate::fcm::FAMILY, 2500).await;
    let count = |prefix: &str| {
        tokens[..2500]
            .iter()
            .filter(|t| t.starts_with(prefix))
            .count() as u64
    };
    let (unregistered, invalid, canonical, mismatch) = (
        count("unregistered"),
        count("invalid"),
        count("canonical"),
        count("mismatch"),
    );
    assert_eq!(c.unregistered, unregistered, "{c:?}");
    assert_eq!(c.failures, invalid + mismatch, "{c:?}");
    match api {
        GoogleApi::Legacy => assert_eq!(
            (c.canonicals, c.successes),
            (
                canonical,
                2500 - unregistered - invalid - mismatch - canonical
            )
        ),
        GoogleApi::V1 => assert_eq!(
            (c.canonicals, c.successes),
            (0, 2500 - unregistered - invalid - mismatch)
        ),
    }
    assert!(c.retries > 0, "flaky and quota tokens are retried: {c:?}");

    // Every deliverable token reached the mock exactly once.
    for t in &tokens[..2500] {
        let deliverable = !(t.starts_with("unregistered")
            || t.starts_with("invalid")
            || t.starts_with("mismatch"));
        assert_eq!(
            env.mock.ledger.token(t).deliveries,
            u32::from(deliverable),
            "{t}"
        );
    }
    match api {
        GoogleApi::V1 => assert_eq!(
            pushgate::mock::Ledger::get(&env.mock.ledger.grants),
            1,
            "one OAuth grant serves the run"
        ),
        GoogleApi::Legacy => {
            assert!(pushgate::mock::Ledger::get(&env.mock.ledger.largest_batch) <= 1000)
        }
    }

    // GoCM's report shapes.
    let (_, report) = env.get("/gcm/report").await;
    for key in [
        "attempts",
        "failures",
        "pending",
        "canonicals",
        "notregistered",
        "successes",
    ] {
        assert!(report[key].is_u64(), "{key} missing: {report}");
    }
    assert_eq!(report["pending"], 0);
    assert_eq!(report["notregistered"], unregistered);
    let (_, listed) = env.get("/gcm/report/notregistered").await;
    let listed: HashSet<&str> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let want: HashSet<&str> = tokens
        .iter()
        .filter(|t| t.starts_with("unregistered"))
        .map(String::as_str)
        .collect();
    assert_eq!(listed, want);
    let (_, pairs) = env.get("/gcm/report/canonical").await;
    let pairs = pairs["canonical_replacements"].as_array().unwrap();
    match api {
        GoogleApi::Legacy => {
            assert_eq!(pairs.len() as u64, canonical);
            assert!(pairs.iter().all(|p| p["canonical"].as_str().unwrap()
                == format!("new-{}", p["original"].as_str().unwrap())));
        }
        GoogleApi::V1 => assert!(pairs.is_empty(), "an empty list, not null"),
    }
    let (_, failures) = env.get("/gcm/report/failures").await;
    assert_eq!(
        failures["failures"].as_array().unwrap().len() as u64,
        invalid + mismatch
    );

    // DELETE drains atomically.
    let drained: Value = env
        .client
        .delete(env.url("/gcm/report/notregistered"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        drained["tokens"].as_array().unwrap().len() as u64,
        unregistered
    );
    let (_, after) = env.get("/gcm/report/notregistered").await;
    assert_eq!(after["tokens"], json!([]));
}

#[tokio::test]
async fn gocm_form_through_fcm_v1() {
    tokio::time::timeout(TEST_TIMEOUT, gocm_run(GoogleApi::V1))
        .await
        .unwrap();
}

#[tokio::test]
async fn gocm_form_through_legacy_gcm() {
    tokio::time::timeout(TEST_TIMEOUT, gocm_run(GoogleApi::Legacy))
        .await
        .unwrap();
}

#[tokio::test]
async fn fcm_alias_and_json_body_work_with_options() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = google_env(GoogleApi::V1, Faults::default(), |_| {}).await;
        let body = json!({
            "tokens": ["dev-1", "dev-2"],
            "payload": { "k": "v", "n": 3 },
            "notification": { "title": "hello", "body": "world" },
            "collapse_key": "c1",
            "priority": "high",
            "time_to_live": 3600
        });
        let r = env
            .client
            .post(env.url("/fcm/send"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let c = wait_done(&env.gateway, pushgate::fcm::FAMILY, 2).await;
        assert_eq!(c.successes, 2);
        let r: Value = env
            .client
            .get(env.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .map(|t| json!(t))
            .unwrap();
        assert!(r.as_str().unwrap().contains(
            "pushgate_outcomes_total{app=\"default\",outcome=\"success\",platform=\"fcm\",reason=\"\"} 2"
        ));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn bad_google_input_is_refused_and_changes_nothing() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = google_env(GoogleApi::Legacy, Faults::default(), |_| {}).await;
        let before = env
            .gateway
            .state
            .backend
            .reports()
            .family(pushgate::fcm::FAMILY)
            .counters();
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(5000));
        /// tokens, payload, extra form fields, expected status, expected error code.
        type Case<'a> = (Vec<String>, &'a str, Vec<(&'a str, &'a str)>, u16, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (vec![], r#"{"a":"b"}"#, vec![], 400, "no_tokens"),
            (vec!["t".into()], "{broken", vec![], 400, "bad_payload"),
            (
                vec!["t".into()],
                r#"{"a":"b"}"#,
                vec![("time_to_live", "-5")],
                400,
                "bad_field",
            ),
            (
                vec!["t".into()],
                r#"{"a":"b"}"#,
                vec![("time_to_live", "soon")],
                400,
                "bad_field",
            ),
            (
                vec!["t".into()],
                r#"{"a":"b"}"#,
                vec![("priority", "urgent")],
                400,
                "bad_field",
            ),
            (
                vec!["t".into()],
                r#"{"a":"b"}"#,
                vec![("app", "other")],
                400,
                "unknown_app",
            ),
            (vec!["t".into()], &big, vec![], 413, "too_large"),
            (
                vec![" ".into(), "".into()],
                r#"{"a":"b"}"#,
                vec![],
                400,
                "no_valid_tokens",
            ),
        ];
        for (tokens, payload, extra, want_status, want_code) in cases {
            let (status, answer) = env
                .post_gocm_form("/gcm/send", &tokens, payload, &extra)
                .await;
            assert_eq!(
                (status, answer["error"].as_str().unwrap_or("")),
                (want_status, want_code),
                "{extra:?}: {answer}"
            );
        }
        assert_eq!(
            env.gateway
                .state
                .backend
                .reports()
                .family(pushgate::fcm::FAMILY)
                .counters(),
            before
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn google_routes_answer_404_when_not_configured() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup::default()).await;
        for path in [
            "/gcm/report",
            "/gcm/report/canonical",
            "/gcm/report/notregistered",
        ] {
            let (status, body) = env.get(path).await;
            assert_eq!(status, 404, "{path}");
            assert_eq!(body["error"], "platform_not_configured");
            assert!(body["message"].as_str().unwrap().contains("[fcm] or [gcm]"));
        }
        let (status, body, _) = env
            .post_json("/gcm/send", &json!({ "tokens": ["a"], "payload": {} }))
            .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (404, Some("platform_not_configured"))
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn cancelling_a_running_job_stops_what_was_not_sent() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = google_env(
            GoogleApi::V1,
            Faults {
                latency_ms: 100,
                ..Faults::default()
            },
            |_| {},
        )
        .await;
        let tokens: Vec<String> = (0..3000).map(|i| format!("dev-{i}")).collect();
        let r = env
            .client
            .post(env.url("/gcm/send"))
            .json(&json!({ "tokens": tokens, "payload": { "k": "v" } }))
            .send()
            .await
            .unwrap();
        let job = r.json::<Value>().await.unwrap()["job"]
            .as_str()
            .unwrap()
            .to_owned();
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let answer: Value = env
            .client
            .delete(env.url(&format!("/jobs/{job}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            ["cancelling", "cancelled"].contains(&answer["state"].as_str().unwrap()),
            "{answer}"
        );
        let c = wait_done(&env.gateway, pushgate::fcm::FAMILY, 3000).await;
        assert!(c.cancelled > 0, "{c:?}");
        assert_eq!(c.successes + c.cancelled, 3000, "{c:?}");
        let delivered: u64 = tokens
            .iter()
            .map(|t| u64::from(env.mock.ledger.token(t).deliveries))
            .sum();
        assert_eq!(delivered, c.successes, "a cancelled token is never sent");
        let (_, done) = env.get(&format!("/jobs/{job}")).await;
        assert_eq!(done["state"], "cancelled");
        assert_eq!(done["cancelled"], c.cancelled);
    })
    .await
    .unwrap();
}

/// The FCM v1 blocks of issue 22 reach the mock as sent, `android` merged
/// over what the GoCM fields put there; a bad member is a 400 naming it, and
/// legacy GCM refuses a block instead of dropping it. Leaves out `/send`.
#[tokio::test]
async fn fcm_v1_blocks_reach_the_upstream_as_sent() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = google_env(GoogleApi::V1, Faults::default(), |_| {}).await;
        let android = json!({
            "direct_boot_ok": true, "bandwidth_constrained_ok": true, "restricted_satellite_ok": false,
            "ttl": "120s",
            "notification": {"channel_id": "news", "color": "#ff0000", "visibility": "PUBLIC"}
        });
        let apns = json!({
            "live_activity_token": "la-token-1",
            "headers": {"apns-priority": "10", "apns-push-type": "liveactivity"},
            "payload": {"aps": {"event": "update", "timestamp": 1_800_000_000u64,
                                "content-state": {"score": "2-1"}}}
        });
        let webpush = json!({
            "headers": {"Urgency": "high", "TTL": "60"},
            "fcm_options": {"link": "https://example.com/news"}
        });
        let body = json!({
            "tokens": ["dev-blocks-1"],
            "notification": {"title": "hello"},
            "priority": "high",
            "android": android, "apns": apns, "webpush": webpush,
            "fcm_options": {"analytics_label": "spring-2026"}
        });
        let r = env.client.post(env.url("/fcm/send")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 202);
        let c = wait_done(&env.gateway, pushgate::fcm::FAMILY, 1).await;
        assert_eq!(c.successes, 1);
        let sent = env.mock.ledger.request("dev-blocks-1").expect("seen").json();
        let message = &sent["message"];
        assert_eq!(message["notification"]["title"], "hello");
        assert_eq!(message["android"]["priority"], "HIGH");
        assert_eq!(message["android"]["direct_boot_ok"], true);
        assert_eq!(message["android"]["bandwidth_constrained_ok"], true);
        assert_eq!(message["android"]["restricted_satellite_ok"], false);
        assert_eq!(message["android"]["ttl"], "120s");
        assert_eq!(message["android"]["notification"]["channel_id"], "news");
        assert_eq!(message["android"]["notification"]["color"], "#ff0000");
        assert_eq!(message["apns"], apns);
        assert_eq!(message["webpush"], webpush);
        assert_eq!(message["fcm_options"]["analytics_label"], "spring-2026");

        for (block, value, field) in [
            ("android", json!({"priority": "urgent"}), "android.priority"),
            ("android", json!({"notification": {"color": "red"}}), "android.notification.color"),
            ("apns", json!({"live_activity_token": "t"}), "apns.payload"),
            ("webpush", json!({"fcm_options": {"link": "http://x"}}), "webpush.fcm_options.link"),
            ("fcm_options", json!({"analytics_label": "a b"}), "fcm_options.analytics_label"),
        ] {
            let mut bad = json!({"tokens": ["dev-blocks-2"], "payload": {"k": "v"}});
            bad[block] = value;
            let r = env.client.post(env.url("/fcm/send")).json(&bad).send().await.unwrap();
            assert_eq!(r.status(), 400, "{bad}");
            let answer: Value = r.json().await.unwrap();
            assert_eq!(answer["field"], field, "{answer}");
        }
        assert!(env.mock.ledger.request("dev-blocks-2").is_none());

        let legacy = google_env(GoogleApi::Legacy, Faults::default(), |_| {}).await;
        let r = legacy
            .client
            .post(legacy.url("/gcm/send"))
            .json(&json!({"tokens": ["dev-3"], "payload": {"k": "v"}, "android": {"direct_boot_ok": true}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["field"], "android", "{answer}");
    })
    .await
    .unwrap();
}
