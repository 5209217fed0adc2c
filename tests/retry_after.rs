//! `Retry-After` as an HTTP date, on every platform: each mock throttles its
//! third request with `Retry-After: <IMF-fixdate one second ahead>` (the
//! `retry_after_date` fault), and the gateway retries that token and
//! delivers it. What the date parses to is `retry::parse_retry_after`'s unit
//! test; here only that a throttled answer carrying a date is retried (one
//! retry, every token delivered).
//!
//! Leaves out: how long the wait was (no timing asserts), and HMS, whose own
//! tests (`tests/hms.rs`) cover its flow control on the same reader.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pushgate::config::{FileConfig, WebPushSection};
use pushgate::gateway::Gateway;
use pushgate::mock::{self, Faults};
use pushgate::webpush::vapid::VapidKey;
use serde_json::json;

/// The third request is throttled with a one-second HTTP date.
fn third_request_throttled_with_a_date() -> Faults {
    Faults {
        throttle_every: Some(3),
        retry_after_s: 1,
        retry_after_date: true,
        ..Faults::default()
    }
}

#[tokio::test]
async fn apns_retries_after_a_date() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup {
            faults: third_request_throttled_with_a_date(),
            ..ApnsSetup::default()
        })
        .await;
        let tokens: Vec<String> = (0..3).map(|i| apns_token("aaaa", i)).collect();
        env.send_apns(&tokens).await;
        let c = wait_done(&env.gateway, pushgate::apns::FAMILY, 3).await;
        assert_eq!((c.successes, c.retries), (3, 1), "{c:?}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn google_retries_after_a_date_on_both_apis() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        for api in [GoogleApi::V1, GoogleApi::Legacy] {
            // One id per legacy batch, so the three tokens are three requests.
            let env = google_env(api, third_request_throttled_with_a_date(), |file| {
                if let Some(gcm) = &mut file.gcm {
                    gcm.batch_size = 1;
                    gcm.concurrency = 1;
                }
            })
            .await;
            let tokens: Vec<String> = (0..3).map(|i| format!("device-{i}")).collect();
            let (status, answer) = env
                .post_gocm_form("/gcm/send", &tokens, r#"{"k":"v"}"#, &[])
                .await;
            assert_eq!(status, 202, "{api:?}: {answer}");
            let c = wait_done(&env.gateway, pushgate::fcm::FAMILY, 3).await;
            assert_eq!((c.successes, c.retries), (3, 1), "{api:?}: {c:?}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn webpush_retries_after_a_date() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        init();
        let dir = scratch("retry-after-webpush");
        let pki = mock::tls::TestPki::generate().unwrap();
        let mut options = mock::webpush::MockWebPushOptions::new(&pki);
        options.faults = third_request_throttled_with_a_date();
        let push = mock::webpush::start(options).await.unwrap();
        let key_file = dir.join("vapid.pem");
        let key = VapidKey::generate().unwrap();
        std::fs::write(&key_file, key.to_pkcs8_pem().unwrap()).unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, &pki.ca_pem).unwrap();
        let mut file = FileConfig::default();
        file.server.listen = "127.0.0.1:0".into();
        file.queue.backend = "memory".into();
        file.retry.base_ms = 5;
        file.retry.cap_ms = 50;
        file.webpush = Some(WebPushSection {
            vapid_key_file: key_file.display().to_string(),
            subject: "mailto:ops@example.com".into(),
            ca_file: ca_file.display().to_string(),
            allowed_origins: vec![push.origin()],
            // One request at a time: the third request is the third subscription.
            concurrency: 1,
            ..WebPushSection::default()
        });
        let gateway = Gateway::start(&file.validate().unwrap()).await.unwrap();
        let subscriptions: Vec<_> = (0..3)
            .map(|i| push.subscription("ok", &i.to_string()))
            .collect();
        let (status, answer) = post_json_to(
            &reqwest::Client::new(),
            &gateway.url(),
            "/webpush/send",
            &json!({"subscriptions": subscriptions, "payload": {"title": "hi"}}),
        )
        .await;
        assert_eq!(status, 202, "{answer}");
        let c = wait_done(&gateway, pushgate::webpush::FAMILY, 3).await;
        assert_eq!((c.successes, c.retries), (3, 1), "{c:?}");
    })
    .await
    .unwrap();
}
