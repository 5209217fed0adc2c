//! End to end against the mock FCM over real sockets (TLS on 127.0.0.1:0
//! unless a test says otherwise), every test under a timeout.
//!
//! Left out: wall-clock speed (no timing asserts), and an access token
//! expiring at the mock mid-run (the client renews early, so the 401 refresh
//! path is covered by the invalidate test and the classification table).

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use super::config::{FcmConfig, GcmConfig, ServiceAccount};
use super::*;
use crate::books::{CanonicalEntry, Counters, FailureEntry, ListEntry, Posting, UnregisteredEntry};
use crate::job::{JobId, JobProgress, OutcomeKind, TokenList};
use crate::metrics::Metrics;
use crate::mock::MockHandle;
use crate::mock::fcm::{MockFcmOptions, ServiceAccountFixture};
use crate::mock::tls::TestPki;
use crate::outcome::Sink;
use crate::queue::Admission;
use crate::settings::Secret;

const SERVER_KEY: &str = "AAAA-test-server-key";
const PROJECT: &str = "pushgate-test";
const TIMEOUT: Duration = Duration::from_secs(90);

fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| TestPki::generate().expect("test PKI"))
}

fn fixture() -> &'static ServiceAccountFixture {
    static ACCOUNT: OnceLock<ServiceAccountFixture> = OnceLock::new();
    ACCOUNT.get_or_init(|| ServiceAccountFixture::generate(PROJECT).expect("service account"))
}

async fn start_mock(tweak: impl FnOnce(&mut MockFcmOptions)) -> (MockHandle, String) {
    let mut opts = MockFcmOptions::new(fixture(), SERVER_KEY, pki());
    tweak(&mut opts);
    let tls = opts.tls;
    let mock = crate::mock::fcm::start(opts)
        .await
        .expect("mock FCM starts");
    let base = if tls {
        mock.url()
    } else {
        format!("http://{}", mock.addr)
    };
    (mock, base)
}

fn roots(mock: &MockHandle) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(mock.ca_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("CA PEM")
}

/// What a gateway's books keep of these tests' outcomes: the totals and
/// the lists, through the same postings the stores apply.
#[derive(Default)]
struct Kept {
    counters: std::sync::Mutex<Counters>,
    entries: std::sync::Mutex<Vec<ListEntry>>,
}

impl Sink for Kept {
    fn accepted(&self, progress: &Arc<crate::job::JobProgress>, _: crate::outcome::Arrival) {
        crate::floor::lock(&self.counters).post(&Posting::accepted(progress.total));
    }
    fn retried(&self, _: &crate::job::JobProgress, _: &str) {
        crate::floor::lock(&self.counters).post(&Posting::retried());
    }
    fn possible_duplicates(&self, _: &crate::job::JobProgress, n: u64) {
        crate::floor::lock(&self.counters).post(&Posting::possible_duplicates(n));
    }
    fn finished(&self, f: &crate::outcome::Finished<'_>) {
        let posting = f.posting();
        crate::floor::lock(&self.counters).post(&posting);
        if let Some(entry) = posting.entry {
            crate::floor::lock(&self.entries).push(entry);
        }
    }
}

impl Kept {
    fn counters(&self) -> Counters {
        *crate::floor::lock(&self.counters)
    }
    fn unregistered(&self) -> Vec<UnregisteredEntry> {
        self.pick(|e| match e {
            ListEntry::Unregistered(u) => Some(u),
            _ => None,
        })
    }
    fn failures(&self) -> Vec<FailureEntry> {
        self.pick(|e| match e {
            ListEntry::Failure(f) => Some(f),
            _ => None,
        })
    }
    fn canonical(&self) -> Vec<CanonicalEntry> {
        self.pick(|e| match e {
            ListEntry::Canonical(c) => Some(c),
            _ => None,
        })
    }
    fn pick<T>(&self, f: impl Fn(ListEntry) -> Option<T>) -> Vec<T> {
        crate::floor::lock(&self.entries)
            .iter()
            .cloned()
            .filter_map(f)
            .collect()
    }
}

/// The books a gateway would give a service: the fan-out and its sinks.
#[derive(Clone)]
struct Books {
    recorder: Recorder,
    kept: Arc<Kept>,
    admission: Arc<Admission>,
    metrics: Arc<Metrics>,
}

fn recorder() -> Books {
    let kept = Arc::new(Kept::default());
    let admission = Arc::new(Admission::new(1_000_000));
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    Books {
        recorder: Recorder::new(vec![kept.clone(), admission.clone(), metrics.clone()]),
        kept,
        admission,
        metrics,
    }
}

fn backoff() -> Backoff {
    Backoff {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(200),
    }
}

fn account(base: &str) -> ServiceAccount {
    serde_json::from_str(&fixture().to_json(&format!("{base}/token"))).expect("account JSON")
}

fn fcm_config(mock: &MockHandle, base: &str) -> GoogleConfig {
    GoogleConfig::Fcm(FcmConfig {
        account: account(base),
        endpoint: base.to_owned(),
        extra_roots: roots(mock),
        max_retries: 8,
        concurrency: 64,
        request_timeout: Duration::from_secs(10),
        max_per_minute: 600_000,
        connections: 1,
    })
}

fn gcm_config(mock: &MockHandle, base: &str, key: &str) -> GoogleConfig {
    GoogleConfig::Gcm(GcmConfig {
        server_key: Secret::new(key),
        endpoint: format!("{base}/fcm/send"),
        extra_roots: roots(mock),
        batch_size: 1000,
        max_retries: 8,
        concurrency: 4,
        request_timeout: Duration::from_secs(10),
    })
}

fn message(payload: &[u8]) -> GoogleMessage {
    GoogleMessage::new(GoogleFields {
        payload: Some(payload),
        ..Default::default()
    })
    .expect("valid message")
}

/// Admits, records and queues a job the way the API does.
fn submit(
    service: &GoogleService,
    recorder: &Books,
    message: GoogleMessage,
    tokens: &[String],
    expires_at: Option<SystemTime>,
) -> Arc<crate::job::Job<GoogleMessage>> {
    let mut list = TokenList::default();
    for t in tokens {
        list.push(t.as_bytes());
    }
    let id = JobId::new();
    let progress = Arc::new(JobProgress::new(
        id,
        service.platform(),
        tokens.len() as u64,
    ));
    recorder
        .admission
        .try_admit(tokens.len() as u64)
        .expect("room");
    recorder
        .recorder
        .accepted(&progress, crate::outcome::Arrival::New);
    let job = Arc::new(crate::job::Job {
        id,
        app: "default".into(),
        message,
        tokens: list,
        progress,
        expires_at,
    });
    service
        .shared
        .lane
        .queue()
        .push(crate::queue::Work::whole(job.clone()));
    job
}

async fn settled(recorder: &Books) -> Counters {
    loop {
        let c = recorder.kept.counters();
        if c.pending == 0 {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// 2,500 tokens: every tenth is unregistered, invalid, canonical, flaky or
/// quota-limited; the rest plain.
fn mixed_tokens() -> Vec<String> {
    (0..2500)
        .map(|i| match i % 10 {
            0 => format!("unregistered-{i}"),
            1 => format!("invalid-{i}"),
            2 => format!("canonical-{i}"),
            3 => format!("flaky-{i}"),
            4 => format!("quota-{i}"),
            _ => format!("device-{i}"),
        })
        .collect()
}

fn deliverable(token: &str) -> bool {
    !token.starts_with("unregistered") && !token.starts_with("invalid")
}

/// Every deliverable token reached the device exactly once; the others never.
fn assert_delivered_once(mock: &MockHandle, tokens: &[String]) {
    let ledger = mock.ledger.tokens();
    for t in tokens {
        let deliveries = ledger.get(t).map_or(0, |r| r.deliveries);
        let want = u32::from(deliverable(t));
        assert_eq!(deliveries, want, "{t}");
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn v1_delivers_mixed_tokens_with_one_oauth_grant() {
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
        assert_eq!(service.platform(), crate::fcm::FCM);
        let tokens = mixed_tokens();
        let job = submit(&service, &recorder, message(br#"{"k":"v"}"#), &tokens, None);
        let c = settled(&recorder).await;

        assert!(c.balanced(), "{c:?}");
        assert_eq!(c.accepted, 2500);
        assert_eq!(c.unregistered, 250);
        assert_eq!(c.failures, 250);
        // v1 has no canonical ids: canonical… tokens are plain successes.
        assert_eq!(c.canonicals, 0);
        assert_eq!(c.successes, 2000);
        assert_eq!(c.expired, 0);
        // flaky and quota tokens each failed once before succeeding.
        assert_eq!(c.retries, 500);
        assert_eq!(job.progress.count(OutcomeKind::Success), 2000);
        assert_delivered_once(&mock, &tokens);
        assert_eq!(crate::mock::Ledger::get(&mock.ledger.grants), 1);
        assert_eq!(mock.ledger.distinct_credentials(), 1);

        let google = recorder.kept;
        let unregistered: Vec<String> =
            google.unregistered().into_iter().map(|e| e.token).collect();
        let want: Vec<String> = tokens
            .iter()
            .filter(|t| t.starts_with("unregistered"))
            .cloned()
            .collect();
        assert_eq!(sorted(unregistered), sorted(want));
        let failures = google.failures();
        assert!(failures.iter().all(|f| f.token.starts_with("invalid")
            && f.reason == "INVALID_ARGUMENT"
            && f.status == 400));
        assert!(service.ready());
        assert_eq!(service.queue_depth(), 0);
        let refreshes = recorder
            .metrics
            .credential_refreshes
            .with_label_values(&["fcm"])
            .get();
        assert_eq!(refreshes, 1);
        service.deliver().close();
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn legacy_delivers_mixed_tokens_in_batches_of_at_most_1000() {
    tokio::time::timeout(TIMEOUT, async {
        let (mock, base) = start_mock(|_| {}).await;
        let recorder = recorder();
        let service = GoogleService::start(
            &gcm_config(&mock, &base, SERVER_KEY),
            recorder.recorder.clone(),
            recorder.metrics.clone(),
            backoff(),
        )
        .expect("start");
        assert_eq!(service.platform(), crate::fcm::GCM);
        assert!(service.ready(), "nothing sent yet: ready");
        let tokens = mixed_tokens();
        submit(&service, &recorder, message(br#"{"k":"v"}"#), &tokens, None);
        let c = settled(&recorder).await;

        assert!(c.balanced(), "{c:?}");
        assert_eq!(c.unregistered, 250);
        assert_eq!(c.failures, 250);
        assert_eq!(c.canonicals, 250);
        assert_eq!(c.successes, 1750);
        assert_eq!(c.expired, 0);
        assert_eq!(c.retries, 500);
        assert_delivered_once(&mock, &tokens);
        let largest = crate::mock::Ledger::get(&mock.ledger.largest_batch);
        assert!(largest <= 1000 && largest > 1, "{largest}");

        let google = recorder.kept;
        let canonical = google.canonical();
        assert_eq!(canonical.len(), 250);
        for entry in &canonical {
            assert!(entry.original.starts_with("canonical"), "{entry:?}");
            assert_eq!(entry.canonical, format!("new-{}", entry.original));
        }
        let unregistered: HashSet<String> =
            google.unregistered().into_iter().map(|e| e.token).collect();
        let want: HashSet<String> = tokens
            .iter()
            .filter(|t| t.starts_with("unregistered"))
            .cloned()
            .collect();
        assert_eq!(unregistered, want);
        assert!(
            google
                .failures()
                .iter()
                .all(|f| f.reason == "InvalidRegistration")
        );
        assert!(service.ready());
        service.deliver().close();
    })
    .await
    .expect("test timed out");
}

/// The mock refuses non-string data values (as FCM does): a number and a
/// nested object must arrive converted.
#[tokio::test]
async fn v1_data_values_arrive_as_strings() {
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
        let tokens: Vec<String> = (0..20).map(|i| format!("device-{i}")).collect();
        let payload = br#"{"count":3,"ok":true,"nested":{"a":[1,2]},"text":"hi"}"#;
        submit(&service, &recorder, message(payload), &tokens, None);
        let c = settled(&recorder).await;
        assert_eq!((c.successes, c.failures), (20, 0), "{c:?}");
        assert_delivered_once(&mock, &tokens);
        service.deliver().close();
    })
    .await
    .expect("test timed out");
}

/// Plain `http://` endpoints (a local test server), which means HTTP/1.1:
/// one connection per request in flight.
#[tokio::test]
async fn both_apis_work_over_plain_http1() {
    tokio::time::timeout(TIMEOUT, async {
        let (mock, base) = start_mock(|o| o.tls = false).await;
        assert!(base.starts_with("http://"));
        let tokens = mixed_tokens()[..300].to_vec();

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
        assert_eq!((c.successes, c.unregistered, c.failures), (240, 30, 30));
        service.deliver().close();

        // Fresh mock so attempt counts (flaky/quota) start over.
        let (mock, base) = start_mock(|o| o.tls = false).await;
        let recorder = recorder_fresh();
        let service = GoogleService::start(
            &gcm_config(&mock, &base, SERVER_KEY),
            recorder.recorder.clone(),
            recorder.metrics.clone(),
            backoff(),
        )
        .expect("start legacy");
        submit(&service, &recorder, message(br#"{"k":"v"}"#), &tokens, None);
        let c = settled(&recorder).await;
        assert!(c.balanced(), "{c:?}");
        assert_eq!(
            (c.successes, c.canonicals, c.unregistered, c.failures),
            (210, 30, 30, 30)
        );
        assert_delivered_once(&mock, &tokens);
        service.deliver().close();
    })
    .await
    .expect("test timed out");
}

fn recorder_fresh() -> Books {
    recorder()
}

/// Every 5th send request is throttled (429 / whole-batch 503 with
/// Retry-After): everything is still delivered exactly once.
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

/// Waits (real time, bounded) until every message the bucket let through
/// has reached the mock and the worker is waiting for the pace again, so
/// moving the test clock next cannot race a request still on its way.
async fn quiescent(mock: &MockHandle, bucket: &pace::Bucket) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = crate::mock::Ledger::get(&mock.ledger.requests);
        if bucket.blocked() && seen == bucket.granted() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not quiescent: mock saw {seen}, bucket granted {}",
            bucket.granted()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A v1 service on `config` paced by a bucket of `max_per_minute` on a clock
/// the test moves.
fn paced_service(
    config: &GoogleConfig,
    max_per_minute: u64,
) -> (
    GoogleService,
    Books,
    Arc<pace::ManualClock>,
    Arc<pace::Bucket>,
) {
    let clock = Arc::new(pace::ManualClock::default());
    let bucket = Arc::new(pace::Bucket::new(max_per_minute, clock.clone()));
    let recorder = recorder();
    let service = GoogleService::start_for(
        config,
        recorder.recorder.clone(),
        recorder.metrics.clone(),
        backoff(),
        "default",
        Some(bucket.clone() as Arc<dyn pace::Allowance>),
    )
    .expect("start v1");
    (service, recorder, clock, bucket)
}

/// `max_per_minute = 600` against the mock, in test-clock time: the worker
/// runs for real, the pacer's clock moves only in 10 ms steps taken once
/// every granted request has reached the mock. Over 20 s of that clock the
/// mock sees 200 ± 5% messages, however fast or slow the machine is.
/// The cluster's bucket (Redis) is tested in `pace::shared`,
/// `tests/redis_managed.rs` and `tests/cluster.rs`.
#[tokio::test]
async fn v1_holds_max_per_minute_over_20_s_of_test_clock() {
    tokio::time::timeout(TIMEOUT, async {
        let (mock, base) = start_mock(|_| {}).await;
        let mut config = fcm_config(&mock, &base);
        if let GoogleConfig::Fcm(c) = &mut config {
            c.max_per_minute = 600;
            c.concurrency = 16;
        }
        let (service, recorder, clock, bucket) = paced_service(&config, 600);
        let tokens: Vec<String> = (0..260).map(|i| format!("device-paced-{i}")).collect();
        let job = submit(&service, &recorder, message(br#"{"k":"v"}"#), &tokens, None);
        for _ in 0..2000 {
            quiescent(&mock, &bucket).await;
            clock.advance(Duration::from_millis(10));
        }
        quiescent(&mock, &bucket).await;
        let sent = crate::mock::Ledger::get(&mock.ledger.requests) as f64;
        assert!(
            (sent - 200.0).abs() <= 10.0,
            "{sent} messages in 20 s at 10/s"
        );
        // The rest ends as cancelled without spending the quota.
        job.progress.cancel();
        clock.advance(Duration::from_secs(1));
        let c = settled(&recorder).await;
        assert!(c.balanced(), "{c:?}");
        assert_eq!(c.successes + c.cancelled, 260, "{c:?}");
        assert_eq!(c.successes, crate::mock::Ledger::get(&mock.ledger.requests));
        let paced = recorder
            .metrics
            .fcm_paced_seconds
            .with_label_values(&["default"])
            .get();
        assert!(paced > 15.0, "paced {paced} s of 20");
        service.deliver().close();
    })
    .await
    .expect("test timed out");
}

/// A 429 with `Retry-After: 2` pauses every send of the project for 2 s of
/// the pacer's clock, not only the throttled token.
#[tokio::test]
async fn v1_a_429_pauses_the_whole_project() {
    tokio::time::timeout(TIMEOUT, async {
        let (mock, base) = start_mock(|o| {
            o.faults.throttle_every = Some(5);
            o.faults.retry_after_s = 2;
        })
        .await;
        let mut config = fcm_config(&mock, &base);
        if let GoogleConfig::Fcm(c) = &mut config {
            c.concurrency = 1;
        }
        let (service, recorder, clock, bucket) = paced_service(&config, 60_000);
        let tokens: Vec<String> = (0..8).map(|i| format!("device-pause-{i}")).collect();
        submit(&service, &recorder, message(br#"{"k":"v"}"#), &tokens, None);
        // Requests 1-4 pass, the 5th is throttled: then nothing more goes.
        quiescent(&mock, &bucket).await;
        assert_eq!(crate::mock::Ledger::get(&mock.ledger.requests), 5);
        assert_eq!(pace::Allowance::available(&*bucket), 0.0);
        tokio::time::sleep(Duration::from_millis(300)).await;
        clock.advance(Duration::from_millis(1900));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            crate::mock::Ledger::get(&mock.ledger.requests),
            5,
            "a request went out during the pause"
        );
        // Once the pause is over, everything is delivered (the throttled
        // token on its retry).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            clock.advance(Duration::from_millis(500));
            let c = recorder.kept.counters();
            if c.pending == 0 {
                assert_eq!(c.successes, 8, "{c:?}");
                assert!(c.retries >= 1, "{c:?}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{c:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_delivered_once(&mock, &tokens);
        service.deliver().close();
    })
    .await
    .expect("test timed out");
}
