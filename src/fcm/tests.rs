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
    fn accepted(&self, _: &Arc<crate::job::JobProgress>, n: u64, _: crate::outcome::Arrival) {
        crate::floor::lock(&self.counters).post(&Posting::accepted(n));
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
        .accepted(&progress, tokens.len() as u64, crate::outcome::Arrival::New);
    let job = Arc::new(crate::job::Job {
        id,
        app: "default".into(),
        message,
        fields: std::sync::Arc::from(&[][..]),
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
mod faults;
mod pace;
