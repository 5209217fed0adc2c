//! The client against the mock push service over TLS on a port-0 socket
//! (the mock decrypts and verifies VAPID on its own). Leaves out: the worker
//! and the API (see tests/webpush.rs).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::http2::TransportMetrics;
use crate::mock::tls::TestPki;
use crate::mock::webpush::{MockWebPush, MockWebPushOptions, start};
use crate::webpush::client::{Client, SendError, Subscription, Urgency, WebPushMessage};
use crate::webpush::ece::UaKeys;
use crate::webpush::origin::OriginPolicy;
use crate::webpush::vapid::{Vapid, VapidKey};

struct Env {
    mock: MockWebPush,
    client: Client,
    policy: OriginPolicy,
}

async fn env(tweak: impl FnOnce(&mut MockWebPushOptions)) -> Env {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pki = TestPki::generate().expect("pki");
    let mut opts = MockWebPushOptions::new(&pki);
    tweak(&mut opts);
    let mock = start(opts).await.expect("mock starts");
    let policy = OriginPolicy::new(&[mock.origin()]).expect("policy");
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("CA");
    let vapid = Vapid::new(VapidKey::generate().expect("key"), "mailto:t@example.com").expect("v");
    let client = Client::new(
        Arc::new(vapid),
        &policy,
        &roots,
        Duration::from_secs(10),
        8,
        metrics(),
    )
    .expect("client");
    Env {
        mock,
        client,
        policy,
    }
}

impl Env {
    /// Requests the mock took over HTTP/2.
    fn h2_requests(&self) -> u64 {
        let inbox = &self.mock.inbox;
        inbox.h2_requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn sub(&self, kind: &str, id: &str) -> Subscription {
        let json = self.mock.subscription(kind, id);
        Subscription {
            endpoint: self
                .policy
                .check(json["endpoint"].as_str().expect("endpoint"))
                .expect("allowed"),
            keys: UaKeys::parse(
                json["keys"]["p256dh"].as_str().expect("p256dh"),
                json["keys"]["auth"].as_str().expect("auth"),
            )
            .expect("keys"),
        }
    }
}

/// Connection counters of a client under test (registered nowhere).
fn metrics() -> TransportMetrics {
    let counter = |name: &str| prometheus::IntCounter::new(name, name).expect("counter");
    TransportMetrics {
        gauge: prometheus::IntGauge::new("connections", "connections").expect("gauge"),
        connects_ok: counter("connects_ok"),
        connects_failed: counter("connects_failed"),
    }
}

fn msg(text: &str) -> WebPushMessage {
    WebPushMessage {
        payload: Arc::from(text.as_bytes()),
        ttl: 60,
        urgency: Some(Urgency::High),
        topic: Some(Arc::from("news")),
    }
}

#[tokio::test]
async fn a_message_is_decrypted_to_its_plaintext_and_the_path_picks_the_outcome() {
    let e = env(|_| {}).await;
    let ok = e
        .client
        .send(&e.sub("ok", "1"), &msg("hello"), 60)
        .await
        .expect("answer");
    assert_eq!(ok.status, 201);
    assert_eq!(e.mock.inbox.count(b"hello"), 1);
    assert_eq!(e.mock.inbox.header_count("ttl=60"), 1);
    assert_eq!(e.mock.inbox.header_count("urgency=high"), 1);
    assert_eq!(e.mock.inbox.header_count("topic=news"), 1);
    for (kind, status) in [
        ("gone", 410),
        ("notfound", 404),
        ("toolarge", 413),
        ("bad", 400),
        ("internal", 500),
    ] {
        let a = e
            .client
            .send(&e.sub(kind, "1"), &msg("x"), 60)
            .await
            .expect("answer");
        assert_eq!(a.status, status, "{kind}");
    }
    let flaky = e.sub("flaky", "1");
    assert_eq!(
        e.client
            .send(&flaky, &msg("f"), 60)
            .await
            .expect("a")
            .status,
        503
    );
    assert_eq!(
        e.client
            .send(&flaky, &msg("f"), 60)
            .await
            .expect("a")
            .status,
        201
    );
    let throttle = e.sub("throttle", "1");
    let first = e.client.send(&throttle, &msg("t"), 60).await.expect("a");
    assert_eq!(
        (first.status, first.retry_after),
        (429, Some(Duration::from_secs(1)))
    );
    assert_eq!(
        e.client
            .send(&throttle, &msg("t"), 60)
            .await
            .expect("a")
            .status,
        201
    );
    assert_eq!(e.mock.handle.ledger.token("ok/1").deliveries, 1);
    // One JWT for the one origin, reused by every request.
    assert_eq!(e.mock.handle.ledger.distinct_credentials(), 1);
}

#[tokio::test]
async fn keys_of_another_subscription_do_not_decrypt() {
    let e = env(|_| {}).await;
    let mut sub = e.sub("ok", "1");
    sub.keys = e.sub("ok", "2").keys;
    let a = e
        .client
        .send(&sub, &msg("hello"), 60)
        .await
        .expect("answer");
    assert_eq!(a.status, 400);
    assert_eq!(
        std::str::from_utf8(&a.body).expect("utf8"),
        r#"{"reason":"DecryptionFailed"}"#
    );
    assert_eq!(e.mock.inbox.total(), 0);
}

#[tokio::test]
async fn a_different_vapid_key_than_expected_is_refused() {
    let e = env(|o| o.expected_key = Some("BNotTheKey".into())).await;
    let a = e
        .client
        .send(&e.sub("ok", "1"), &msg("x"), 60)
        .await
        .expect("answer");
    assert_eq!(a.status, 403);
    assert!(
        std::str::from_utf8(&a.body)
            .expect("utf8")
            .contains("VapidPkHashMismatch")
    );
}

#[tokio::test]
async fn missing_or_wrong_audience_vapid_is_refused() {
    let e = env(|_| {}).await;
    let sub = e.sub("ok", "1");
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(Arc::unwrap_or_clone(
            crate::tls::client_config(
                &CertificateDer::pem_slice_iter(e.mock.handle.ca_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("CA"),
                None,
                &[b"h2"],
            )
            .expect("tls"),
        ))
        .build()
        .expect("client");
    let body = crate::webpush::ece::encrypt(b"x", &sub.keys).expect("enc");
    let no_auth = http
        .post(&sub.endpoint.url)
        .header("ttl", "0")
        .header("content-encoding", "aes128gcm")
        .body(body.clone())
        .send()
        .await
        .expect("answer");
    assert_eq!(no_auth.status(), 401);
    let wrong_aud = e
        .client
        .vapid()
        .authorization("https://push.example.com")
        .expect("signs");
    let a = http
        .post(&sub.endpoint.url)
        .header("ttl", "0")
        .header("content-encoding", "aes128gcm")
        .header("authorization", wrong_aud)
        .body(body)
        .send()
        .await
        .expect("answer");
    assert_eq!(a.status(), 403);
}

/// "Even after DNS": an endpoint that names a host (not an IP literal) which
/// resolves to loopback is refused by the client's resolver before any
/// connection is made, unless an exact allowed origin names that host.
#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_at_connect_unless_named() {
    let e = env(|_| {}).await;
    let port = e.mock.handle.addr.port();
    let keys = e.sub("ok", "dns").keys;
    let sub = Subscription {
        // Built by hand: the API's allow-list would refuse it first.
        endpoint: crate::webpush::origin::Endpoint {
            url: format!("https://localhost:{port}/push/ok/dns"),
            origin: format!("https://localhost:{port}"),
        },
        keys,
    };
    let pki_roots: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(e.mock.handle.ca_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("CA");
    let client = |policy: &OriginPolicy| {
        let vapid = Vapid::new(VapidKey::generate().expect("key"), "mailto:t@example.com");
        let vapid = Arc::new(vapid.expect("vapid"));
        Client::new(
            vapid,
            policy,
            &pki_roots,
            Duration::from_secs(10),
            4,
            metrics(),
        )
        .expect("client")
    };
    let wildcard = OriginPolicy::new(&["https://*.example.com".to_string()]).expect("policy");
    let refusing = client(&wildcard);
    match refusing.send(&sub, &msg("x"), 60).await {
        Err(SendError::Refused { reason, .. }) => {
            assert!(reason.contains("localhost resolves only to"), "{reason}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        crate::mock::Ledger::get(&e.mock.handle.ledger.connections),
        0
    );
    let named = OriginPolicy::new(&[format!("https://localhost:{port}")]).expect("policy");
    let allowed = client(&named);
    let answer = allowed
        .send(&sub, &msg("by name"), 60)
        .await
        .expect("answer");
    assert_eq!(answer.status, 201);
    assert_eq!(e.mock.inbox.count(b"by name"), 1);
}

#[tokio::test]
async fn a_mock_decrypting_one_in_n_delivers_every_message_and_decrypts_those_right() {
    let e = env(|o| o.decrypt_every = 4).await;
    for i in 0..8 {
        let a = e
            .client
            .send(&e.sub("ok", &format!("s{i}")), &msg("hello"), 60)
            .await
            .expect("answer");
        assert_eq!(a.status, 201, "message {i}");
    }
    let delivered: u32 = (0..8)
        .map(|i| e.mock.handle.ledger.token(&format!("ok/s{i}")).deliveries)
        .sum();
    assert_eq!(delivered, 8);
    // Requests 0 and 4 were decrypted, and decrypted right.
    assert_eq!(e.mock.inbox.count(b"hello"), 2);
    assert_eq!(e.mock.inbox.total(), 2);
}

#[tokio::test]
async fn a_push_service_gets_one_http2_connection_of_our_own() {
    let e = env(|_| {}).await;
    let sends = (0..16).map(|i| {
        let sub = e.sub("ok", &format!("h2-{i}"));
        let client = e.client.clone();
        async move { client.send(&sub, &msg("together"), 60).await }
    });
    for answer in futures_util::future::join_all(sends).await {
        assert_eq!(answer.expect("answer").status, 201);
    }
    assert_eq!(e.mock.inbox.count(b"together"), 16);
    assert_eq!(e.h2_requests(), 16, "every request over HTTP/2");
    assert_eq!(
        crate::mock::Ledger::get(&e.mock.handle.ledger.connections),
        1,
        "16 requests started together share one connection"
    );
    assert_eq!(e.client.connected(), 1);
}

#[tokio::test]
async fn a_push_service_without_http2_is_reached_over_http1() {
    let e = env(|o| o.http1_only = true).await;
    for i in 0..3 {
        let a = e
            .client
            .send(&e.sub("ok", &format!("h1-{i}")), &msg("old school"), 60)
            .await
            .expect("answer");
        assert_eq!(a.status, 201, "message {i}");
    }
    let gone = e
        .client
        .send(&e.sub("gone", "h1"), &msg("x"), 60)
        .await
        .expect("answer");
    assert_eq!(gone.status, 410);
    assert_eq!(e.mock.inbox.count(b"old school"), 3);
    assert_eq!(e.h2_requests(), 0, "no request over HTTP/2");
    assert_eq!(e.client.connected(), 0, "no HTTP/2 connection held");
}
