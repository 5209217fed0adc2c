//! The Huawei Push Kit part of `pushgate demo`: a mock HMS (OAuth and
//! `messages:send`), its client secret in a file, and a sample job of push
//! tokens with Huawei's answers mixed in (partial answers naming illegal
//! tokens, a 500 and a flow-control 503 that are retried).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::config::{FileConfig, HmsSection};
use crate::mock;
use crate::mock::hms::MockHms;

/// Starts the mock HMS and fills `[hms]` in `file`.
pub async fn setup(
    dir: &Path,
    pki: &mock::tls::TestPki,
    ca_file: &Path,
    file: &mut FileConfig,
) -> anyhow::Result<MockHms> {
    let hms = mock::hms::start(mock::hms::MockHmsOptions::new(pki)).await?;
    let secret_file = dir.join("hms.secret");
    super::private_file(&secret_file, hms.client_secret())
        .with_context(|| format!("writing {}", secret_file.display()))?;
    file.hms = Some(HmsSection {
        app_id: hms.app_id().to_owned(),
        client_secret_file: secret_file.display().to_string(),
        endpoint: hms.endpoint(),
        token_uri: hms.token_uri(),
        ca_file: ca_file.display().to_string(),
        ..HmsSection::default()
    });
    Ok(hms)
}

/// Sample push tokens: mostly deliverable, some illegal (listed in a partial
/// answer), some `flaky` (500 once) and `busy` (503 once), plus one refused
/// at the API (a token with a space).
pub fn sample_tokens(n: usize) -> Vec<String> {
    let mut tokens: Vec<String> = (0..n)
        .map(|i| match i {
            i if i % 50 == 7 => format!("illegal-{i}"),
            i if i % 400 == 3 => format!("flaky-{i}"),
            i if i % 600 == 5 => format!("busy-{i}"),
            _ => format!("IQAAAACy0kYb-{i}"),
        })
        .collect();
    tokens.push("has a space".into());
    tokens
}

/// Sends the sample job and prints what happened.
pub async fn send_sample(
    client: &reqwest::Client,
    base: &str,
    hms: &MockHms,
    n: usize,
) -> anyhow::Result<()> {
    let tokens = sample_tokens(n);
    let started = Instant::now();
    let answer: Value = client
        .post(format!("{base}/hms/send"))
        .json(&json!({
            "tokens": tokens,
            "data": {"order": "42", "kind": "receipt"},
            "notification": {"title": "Hello from pushgate", "body": "Huawei Push Kit, in batches of up to 1,000"},
            "android": {"urgency": "HIGH", "ttl": "3600s"},
        }))
        .send()
        .await
        .context("posting the sample HMS job")?
        .json()
        .await?;
    let accepted = answer["accepted"].as_u64().unwrap_or(0);
    println!(
        "\nPOST /hms/send ({} tokens) -> 202 {}",
        tokens.len(),
        super::compact(&answer, 300)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        let report: Value = client
            .get(format!("{base}/hms/report"))
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
    println!("GET /hms/report -> {report}");
    let unregistered: Value = client
        .get(format!("{base}/hms/report/unregistered"))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "GET /hms/report/unregistered -> {} tokens to purge, e.g. {}",
        unregistered["tokens"].as_array().map_or(0, Vec::len),
        super::compact(&unregistered["tokens"][0], 200)
    );
    println!(
        "{accepted} Huawei tokens reached an outcome in {:.0} ms ({:.0}/s); the mock HMS took {} requests and delivered {} messages",
        took.as_secs_f64() * 1000.0,
        accepted as f64 / took.as_secs_f64().max(1e-9),
        crate::mock::Ledger::get(&hms.handle.ledger.requests),
        crate::mock::hms::Inbox::get(&hms.inbox.delivered)
    );
    Ok(())
}
