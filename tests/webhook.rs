//! The outcome webhook against a local receiver: every outcome arrives once,
//! signed; a receiver that fails at first gets the batch again.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use pushgate::config::{Secret, WebhookSection};
use serde_json::{Value, json};

const SECRET: &str = "webhook-secret-0123456789";

#[derive(Clone, Default)]
struct Receiver {
    events: Arc<Mutex<Vec<Value>>>,
    failures_left: Arc<AtomicU32>,
    bad_signatures: Arc<AtomicU32>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = headers
        .get("x-pushgate-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let t: u64 = header
        .split(',')
        .next()
        .and_then(|p| p.strip_prefix("t="))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    if pushgate::webhook::signature(&Secret::new(SECRET), t, &body) != header {
        r.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    if r.failures_left.load(Ordering::Relaxed) > 0 {
        r.failures_left.fetch_sub(1, Ordering::Relaxed);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let batch: Value = serde_json::from_slice(&body).unwrap();
    r.events
        .lock()
        .unwrap()
        .extend(batch["events"].as_array().unwrap().iter().cloned());
    StatusCode::NO_CONTENT
}

#[tokio::test]
async fn every_outcome_reaches_the_receiver_once_signed_even_after_failures() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let receiver = Receiver {
            failures_left: Arc::new(AtomicU32::new(2)),
            ..Receiver::default()
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });

        let env = apns_env(ApnsSetup {
            tweak: Box::new(move |f| {
                f.webhook = Some(WebhookSection {
                    url,
                    secret: Secret::new(SECRET),
                    batch_size: 50,
                    flush_ms: 20,
                    ..WebhookSection::default()
                })
            }),
            ..ApnsSetup::default()
        })
        .await;
        let tokens: Vec<String> = (0..300)
            .map(|i| apns_token(["abcd", "dead", "bad0"][i % 3], i))
            .collect();
        let (status, answer, _) = env
            .post_json(
                "/apns/send",
                &json!({ "tokens": tokens, "payload": { "aps": {} } }),
            )
            .await;
        assert_eq!(status, 202);
        wait_done(&env.gateway, pushgate::apns::FAMILY, 300).await;

        let deadline = Instant::now() + Duration::from_secs(60);
        while receiver.events.lock().unwrap().len() < 300 {
            assert!(
                Instant::now() < deadline,
                "only {} events arrived",
                receiver.events.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let events = receiver.events.lock().unwrap().clone();
        assert_eq!(events.len(), 300, "each outcome exactly once");
        assert_eq!(receiver.bad_signatures.load(Ordering::Relaxed), 0);
        let mut by_token: HashMap<String, Value> = HashMap::new();
        for e in events {
            assert_eq!(e["job"], answer["job"]);
            assert_eq!(e["platform"], "apns");
            by_token.insert(e["token"].as_str().unwrap().to_owned(), e);
        }
        for t in &tokens {
            let e = &by_token[t];
            let want = match &t[..4] {
                "dead" => "unregistered",
                "bad0" => "failed",
                _ => "success",
            };
            assert_eq!(e["outcome"], want, "{t}");
            if want == "failed" {
                assert_eq!(e["reason"], "BadDeviceToken");
            }
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
            metrics.contains("pushgate_webhook_sent_total 300"),
            "{metrics}"
        );
    })
    .await
    .unwrap();
}
