//! The Web Push part of `pushgate demo`: a mock push service, a fresh VAPID
//! key, and a sample job of browser subscriptions with every outcome mixed in.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::config::{FileConfig, WebPushSection};
use crate::mock;
use crate::mock::webpush::MockWebPush;
use crate::webpush::vapid::VapidKey;

/// Starts the mock push service and fills `[webpush]` in `file`.
pub async fn setup(
    dir: &Path,
    pki: &mock::tls::TestPki,
    ca_file: &Path,
    file: &mut FileConfig,
) -> anyhow::Result<MockWebPush> {
    let key = VapidKey::generate().map_err(|_| anyhow::anyhow!("generating a VAPID key"))?;
    let key_file = dir.join("vapid.pem");
    let pem = key
        .to_pkcs8_pem()
        .map_err(|_| anyhow::anyhow!("encoding the VAPID key"))?;
    super::private_file(&key_file, &pem)
        .with_context(|| format!("writing {}", key_file.display()))?;
    let mut opts = mock::webpush::MockWebPushOptions::new(pki);
    opts.expected_key = Some(key.public_key_b64().to_owned());
    let push = mock::webpush::start(opts).await?;
    file.webpush = Some(WebPushSection {
        vapid_key_file: key_file.display().to_string(),
        subject: "mailto:demo@example.com".into(),
        ca_file: ca_file.display().to_string(),
        allowed_origins: vec![push.origin()],
        ..WebPushSection::default()
    });
    Ok(push)
}

/// Sample subscriptions: mostly live, some gone (410), not found (404) and
/// flaky (503 once), plus two refused at the API.
pub fn sample_subscriptions(push: &MockWebPush, n: usize) -> Vec<Value> {
    let mut subs: Vec<Value> = (0..n)
        .map(|i| {
            let kind = match i {
                i if i % 50 == 7 => "gone",
                i if i % 97 == 5 => "notfound",
                i if i % 31 == 3 => "flaky",
                _ => "ok",
            };
            push.subscription(kind, &format!("b{i}"))
        })
        .collect();
    subs.push(json!({"endpoint": "http://insecure.example/x", "keys": subs[0]["keys"].clone()}));
    subs.push(json!({"endpoint": "https://169.254.169.254/latest/meta-data", "keys": subs[0]["keys"].clone()}));
    subs
}

/// Sends the sample job and prints what happened.
pub async fn send_sample(
    client: &reqwest::Client,
    base: &str,
    push: &MockWebPush,
    n: usize,
) -> anyhow::Result<()> {
    let subs = sample_subscriptions(push, n);
    let started = Instant::now();
    let answer: Value = client
        .post(format!("{base}/webpush/send"))
        .json(&json!({
            "subscriptions": subs,
            "payload": {"title": "Hello from pushgate", "body": "Web Push, encrypted per browser"},
            "ttl": 3600, "urgency": "normal", "topic": "demo",
        }))
        .send()
        .await
        .context("posting the sample Web Push job")?
        .json()
        .await?;
    let accepted = answer["accepted"].as_u64().unwrap_or(0);
    println!(
        "\nPOST /webpush/send ({} subscriptions) -> 202 {}",
        subs.len(),
        super::compact(&answer, 300)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        let report: Value = client
            .get(format!("{base}/webpush/report"))
            .send()
            .await?
            .json()
            .await?;
        if report["pending"] == 0 || Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let took = started.elapsed();
    println!("GET /webpush/report -> {report}");
    let unregistered: Value = client
        .get(format!("{base}/webpush/report/unregistered"))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "GET /webpush/report/unregistered -> {} subscriptions to delete, e.g. {}",
        unregistered["subscriptions"].as_array().map_or(0, Vec::len),
        super::compact(&unregistered["subscriptions"][0], 200)
    );
    println!(
        "{accepted} browser subscriptions reached an outcome in {:.0} ms ({:.0}/s); the mock push service decrypted {} messages",
        took.as_secs_f64() * 1000.0,
        accepted as f64 / took.as_secs_f64().max(1e-9),
        push.inbox.total()
    );
    Ok(())
}
