//! Google delivery under faults: throttling, refused credentials, expiry,
//! retries running out, shutdown, dropped connections.

use super::*;

#[tokio::test]
async fn throttled_runs_still_deliver_everything() {
    tokio::time::timeout(TIMEOUT, async {
        let throttle = |o: &mut MockFcmOptions| {
            o.faults.throttle_every = Some(5);
            o.faults.retry_after_s = 0;
        };
        let tokens: Vec<String> = mixed_tokens()[..500].to_vec();

        let (mock, base) = start_mock(throttle).await;
        let recorder = recorder();
        let service = GoogleService::start(
            &fcm_config(&mock, &base),
            recorder.recorder.clone(),
            recorder.metrics.clone(),
            backoff(),
        )
        .expect("start v1");
        submit(&service, &recorder, message(br#"{"k":"v"}"#), &tokens, None);
        let c = settled(&recorder).await;
        assert!(c.balanced(), "{c:?}");
        assert_eq!(c.expired, 0, "{c:?}");
        assert!(c.retries > 100, "throttling happened: {c:?}");
        assert_delivered_once(&mock, &tokens);
        service.deliver().close();

        let (mock, base) = start_mock(throttle).await;
        let recorder = recorder_fresh();
        let mut config = gcm_config(&mock, &base, SERVER_KEY);
        if let GoogleConfig::Gcm(c) = &mut config {
            // Small batches so that several requests (and throttles) happen.
            c.batch_size = 20;
        }
        let service = GoogleService::start(
            &config,
            recorder.recorder.clone(),
            recorder.metrics.clone(),
            backoff(),
        )
        .expect("start legacy");
        submit(&service, &recorder, message(br#"{"k":"v"}"#), &tokens, None);
        let c = settled(&recorder).await;
        assert!(c.balanced(), "{c:?}");
        assert_eq!(c.expired, 0, "{c:?}");
        assert_delivered_once(&mock, &tokens);
        assert!(crate::mock::Ledger::get(&mock.ledger.largest_batch) <= 20);
        service.deliver().close();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn legacy_wrong_server_key_fails_every_token_as_unauthorized() {
    tokio::time::timeout(TIMEOUT, async {
        let (mock, base) = start_mock(|_| {}).await;
        let recorder = recorder();
        let service = GoogleService::start(
            &gcm_config(&mock, &base, "wrong-key"),
            recorder.recorder.clone(),
            recorder.metrics.clone(),
            backoff(),
        )
        .expect("start");
        let tokens: Vec<String> = (0..50).map(|i| format!("device-{i}")).collect();
        submit(&service, &recorder, message(br#"{"k":"v"}"#), &tokens, None);
        let c = settled(&recorder).await;
        assert!(c.balanced(), "{c:?}");
        assert_eq!((c.failures, c.retries), (50, 0));
        let failures = recorder.kept.failures();
        assert!(
            failures
                .iter()
                .all(|f| f.reason == "Unauthorized" && f.status == 401)
        );
        service.deliver().close();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn expired_jobs_are_never_sent() {
    tokio::time::timeout(TIMEOUT, async {
        let (mock, base) = start_mock(|_| {}).await;
        let recorder = recorder();
        let service = GoogleService::start(
            &fcm_config(&mock, &base),
            recorder.recorder.clone(),
            recorder.metrics.clone(),
            backoff(),
        )
        .expect("start");
        let tokens: Vec<String> = (0..10).map(|i| format!("device-{i}")).collect();
        let past = SystemTime::now() - Duration::from_secs(1);
        submit(
            &service,
            &recorder,
            message(br#"{"k":"v"}"#),
            &tokens,
            Some(past),
        );
        let c = settled(&recorder).await;
        assert!(c.balanced(), "{c:?}");
        assert_eq!((c.expired, c.unattempted, c.attempts), (10, 10, 0));
        assert_eq!(crate::mock::Ledger::get(&mock.ledger.requests), 0);
        service.deliver().close();
    })
    .await
    .expect("test timed out");
}

/// Tokens that always fail with a retryable error end as expired after
/// max_retries, with the upstream's reason.
#[tokio::test]
async fn retries_run_out_as_expired() {
    tokio::time::timeout(TIMEOUT, async {
        let (mock, base) = start_mock(|_| {}).await;
        let recorder = recorder();
        let mut config = fcm_config(&mock, &base);
        if let GoogleConfig::Fcm(c) = &mut config {
            c.max_retries = 2;
        }
        let service = GoogleService::start(
            &config,
            recorder.recorder.clone(),
            recorder.metrics.clone(),
            backoff(),
        )
        .expect("start");
        let tokens: Vec<String> = (0..5).map(|i| format!("internal-{i}")).collect();
        submit(&service, &recorder, message(br#"{"k":"v"}"#), &tokens, None);
        let c = settled(&recorder).await;
        assert!(c.balanced(), "{c:?}");
        assert_eq!((c.expired, c.retries, c.attempts), (5, 10, 15));
        for t in &tokens {
            assert_eq!(mock.ledger.token(t).attempts, 3);
        }
        service.deliver().close();
    })
    .await
    .expect("test timed out");
}

/// Shutdown with work still queued: abandoned tokens are recorded, the books balance.
#[tokio::test]
async fn abandon_queued_balances_the_books() {
    tokio::time::timeout(TIMEOUT, async {
        let (mock, base) = start_mock(|_| {}).await;
        let recorder = recorder();
        let service = GoogleService::start(
            &fcm_config(&mock, &base),
            recorder.recorder.clone(),
            recorder.metrics.clone(),
            backoff(),
        )
        .expect("start");
        service.deliver().close();
        let tokens: Vec<String> = (0..30).map(|i| format!("device-{i}")).collect();
        submit(&service, &recorder, message(br#"{"k":"v"}"#), &tokens, None);
        // The worker may have taken some before seeing the close; the rest stay queued.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let left = service.deliver().abandon_queued();
        let c = settled(&recorder).await;
        assert!(c.balanced(), "{c:?}");
        assert_eq!(c.expired, left);
        assert_eq!(c.successes + c.expired, 30);
        drop(mock);
    })
    .await
    .expect("test timed out");
}

/// Concurrent callers share one grant; an invalidated token is replaced once,
/// and invalidating a token already replaced does nothing.
#[tokio::test]
async fn access_token_is_single_flight_and_invalidated_once() {
    tokio::time::timeout(TIMEOUT, async {
        let (mock, base) = start_mock(|_| {}).await;
        let client = http_client(&roots(&mock), Duration::from_secs(10), 4).expect("client");
        let refreshes = prometheus::IntCounter::new("r", "r").expect("counter");
        let token = Arc::new(
            auth::AccessToken::new(&account(&base), client, refreshes.clone()).expect("key"),
        );
        let callers: Vec<_> = (0..16)
            .map(|_| {
                let token = token.clone();
                tokio::spawn(async move { token.header().await.expect("granted") })
            })
            .collect();
        let mut seen = HashSet::new();
        for c in callers {
            seen.insert(c.await.expect("join"));
        }
        assert_eq!(seen.len(), 1);
        assert_eq!(crate::mock::Ledger::get(&mock.ledger.grants), 1);
        let first = seen.into_iter().next().expect("one token");
        assert!(first.to_str().expect("ascii").starts_with("Bearer "));
        assert!(token.obtained());

        token.invalidate(&HeaderValue::from_static("Bearer someone-else"));
        assert_eq!(token.header().await.expect("cached"), first);
        token.invalidate(&first);
        token.invalidate(&first);
        let second = token.header().await.expect("refreshed");
        assert_ne!(second, first);
        assert_eq!(token.header().await.expect("cached"), second);
        assert_eq!(crate::mock::Ledger::get(&mock.ledger.grants), 2);
        assert_eq!(refreshes.get(), 2);
    })
    .await
    .expect("test timed out");
}

/// The assertion carries what Google checks, verified with the public key.
#[test]
fn assertion_has_the_documented_claims() {
    let account = account("https://oauth.example");
    let client = http_client(&[], Duration::from_secs(10), 1).expect("client");
    let refreshes = prometheus::IntCounter::new("r", "r").expect("counter");
    let token = auth::AccessToken::new(&account, client, refreshes).expect("key");
    let jwt = token.assertion().expect("signed");
    let header = jsonwebtoken::decode_header(&jwt).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    assert_eq!(
        header.kid.as_deref(),
        Some(fixture().private_key_id.as_str())
    );
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(fixture().public_key_pem.as_bytes())
        .expect("public key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["https://oauth.example/token"]);
    validation.set_issuer(&[fixture().client_email.as_str()]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(&jwt, &key, &validation)
        .expect("verifies")
        .claims;
    assert_eq!(claims["scope"], auth::SCOPE);
    let iat = claims["iat"].as_u64().expect("iat");
    assert_eq!(claims["exp"].as_u64(), Some(iat + 3600));
    // Debug output never shows the key.
    assert!(!format!("{token:?}").contains("PRIVATE"));
}

/// A refused assertion is reported as a refusal (loud), not a network blip.
#[tokio::test]
async fn refused_credentials_are_a_refusal() {
    tokio::time::timeout(TIMEOUT, async {
        let (mock, base) = start_mock(|_| {}).await;
        let client = http_client(&roots(&mock), Duration::from_secs(10), 4).expect("client");
        let mut account = account(&base);
        let other = ServiceAccountFixture::generate(PROJECT).expect("other key");
        account.private_key = Secret::new(other.private_key_pem.clone());
        let refreshes = prometheus::IntCounter::new("r", "r").expect("counter");
        let token = auth::AccessToken::new(&account, client, refreshes).expect("key");
        let e = token.header().await.expect_err("refused");
        assert!(e.is_refusal(), "{e}");
        assert!(
            matches!(e, auth::AuthError::Refused { status: 400, .. }),
            "{e}"
        );
        // A second caller within the hold window gets the same answer without a request.
        let again = token.header().await.expect_err("held");
        assert!(again.is_refusal());
        assert!(!token.obtained());
    })
    .await
    .expect("test timed out");
}

/// Connections dropped mid-request (v1) and GOAWAY (legacy over HTTP/2):
/// nothing is lost, answers that never came are retried and counted as
/// possible duplicates, and the books balance. Exactly-once cannot hold here:
/// the mock may have delivered a request whose answer the drop swallowed.
#[tokio::test]
async fn dropped_connections_lose_nothing() {
    tokio::time::timeout(TIMEOUT, async {
        let tokens: Vec<String> = (0..400).map(|i| format!("device-{i}")).collect();

        let (mock, base) = start_mock(|o| o.faults.drop_after = Some(40)).await;
        let recorder = recorder();
        let mut config = fcm_config(&mock, &base);
        if let GoogleConfig::Fcm(c) = &mut config {
            // A drop kills every request in flight on the connection (all of
            // them, over HTTP/2): keep few in flight so most get answers.
            c.concurrency = 4;
            c.max_retries = 30;
        }
        let service = GoogleService::start(
            &config,
            recorder.recorder.clone(),
            recorder.metrics.clone(),
            backoff(),
        )
        .expect("start v1");
        submit(&service, &recorder, message(br#"{"k":"v"}"#), &tokens, None);
        let c = settled(&recorder).await;
        assert!(c.balanced(), "{c:?}");
        assert_eq!((c.successes, c.expired), (400, 0), "{c:?}");
        assert!(c.possible_duplicates > 0, "{c:?}");
        assert!(crate::mock::Ledger::get(&mock.ledger.drops) > 0);
        for t in &tokens {
            assert!(mock.ledger.token(t).deliveries >= 1, "{t}");
        }
        service.deliver().close();

        let (mock, base) = start_mock(|o| o.faults.goaway_after = Some(3)).await;
        let recorder = recorder_fresh();
        let mut config = gcm_config(&mock, &base, SERVER_KEY);
        if let GoogleConfig::Gcm(c) = &mut config {
            c.batch_size = 10;
        }
        let service = GoogleService::start(
            &config,
            recorder.recorder.clone(),
            recorder.metrics.clone(),
            backoff(),
        )
        .expect("start legacy");
        submit(&service, &recorder, message(br#"{"k":"v"}"#), &tokens, None);
        let c = settled(&recorder).await;
        assert!(c.balanced(), "{c:?}");
        assert_eq!((c.successes, c.expired), (400, 0), "{c:?}");
        assert!(crate::mock::Ledger::get(&mock.ledger.goaways) > 0);
        for t in &tokens {
            assert!(mock.ledger.token(t).deliveries >= 1, "{t}");
        }
        service.deliver().close();
    })
    .await
    .expect("test timed out");
}
