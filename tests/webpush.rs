//! Web Push end to end: the gateway on a real port, the mock push service
//! over TLS (h2), 3,000+ subscriptions with gone, not-found, flaky and invalid
//! ones mixed in; and the SSRF refusals at the API.
//!
//! Leaves out: real push services (the mock decrypts with the subscription's
//! private key and verifies VAPID on its own, so it cannot agree with a
//! client bug), and name-based private-address refusal through DNS, which is
//! covered by `webpush::origin` unit tests against the real resolver.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pushgate::config::{FileConfig, WebPushSection};
use pushgate::gateway::Gateway;
use pushgate::mock::tls::TestPki;
use pushgate::mock::webpush::{MockWebPush, MockWebPushOptions};
use pushgate::webpush::vapid::VapidKey;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(120);

fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "pushgate-test-webpush-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Env {
    mock: MockWebPush,
    gateway: Gateway,
    http: reqwest::Client,
    public_key: String,
    _dir: PathBuf,
}

async fn env(allowed: impl FnOnce(&MockWebPush) -> Vec<String>) -> Env {
    env_with(allowed, |_| {}).await
}

async fn env_with(
    allowed: impl FnOnce(&MockWebPush) -> Vec<String>,
    tweak: impl FnOnce(&mut FileConfig),
) -> Env {
    init();
    let dir = scratch();
    let pki = TestPki::generate().unwrap();
    let key = VapidKey::generate().unwrap();
    let public_key = key.public_key_b64().to_owned();
    let mut opts = MockWebPushOptions::new(&pki);
    // Like a real service: subscriptions are bound to the applicationServerKey.
    opts.expected_key = Some(public_key.clone());
    let mock = pushgate::mock::webpush::start(opts).await.unwrap();
    let key_file = dir.join("vapid.pem");
    std::fs::write(&key_file, key.to_pkcs8_pem().unwrap()).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let mut config = FileConfig::default();
    config.server.listen = "127.0.0.1:0".into();
    // The default disk backend would share ./pushgate-data (and its lock).
    config.queue.backend = "memory".into();
    config.retry.base_ms = 5;
    config.retry.cap_ms = 50;
    config.webpush = Some(WebPushSection {
        vapid_key_file: key_file.display().to_string(),
        subject: "mailto:ops@example.com".into(),
        ca_file: ca_file.display().to_string(),
        allowed_origins: allowed(&mock),
        max_retries: 3,
        concurrency: 64,
        ..WebPushSection::default()
    });
    tweak(&mut config);
    let gateway = Gateway::start(&config.validate().unwrap()).await.unwrap();
    Env {
        mock,
        gateway,
        http: reqwest::Client::new(),
        public_key,
        _dir: dir,
    }
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.addr)
    }

    async fn post(&self, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url("/webpush/send"))
            .json(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn delete(&self, path: &str) -> Value {
        self.http
            .delete(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn wait_done(&self) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let r = self.get("/webpush/report").await;
            if r["accepted"].as_u64() > Some(0) && r["pending"] == 0 {
                return r;
            }
            assert!(Instant::now() < deadline, "not done: {r}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn listed(mock: &MockWebPush) -> Vec<String> {
    vec![mock.origin()]
}

/// 2,700 live, 100 gone (410), 100 not found (404), 100 flaky (503 once),
/// 50 invalid (bad keys, plain http, origins not allowed), 20 duplicates.
#[tokio::test]
async fn three_thousand_subscriptions_every_live_one_gets_exactly_one_decryptable_message() {
    tokio::time::timeout(TIMEOUT, async {
        let e = env(listed).await;
        let payload = json!({"title": "Sale", "body": "50% off", "n": 3000});
        let mut subs = Vec::new();
        let mut live = Vec::new();
        let mut gone = HashSet::new();
        for i in 0..2700 {
            subs.push(e.mock.subscription("ok", &format!("s{i}")));
            live.push(format!("ok/s{i}"));
        }
        for i in 0..100 {
            subs.push(e.mock.subscription("gone", &format!("g{i}")));
            gone.insert(format!("{}/push/gone/g{i}", e.mock.origin()));
            subs.push(e.mock.subscription("notfound", &format!("n{i}")));
            gone.insert(format!("{}/push/notfound/n{i}", e.mock.origin()));
            subs.push(e.mock.subscription("flaky", &format!("f{i}")));
            live.push(format!("flaky/f{i}"));
        }
        for i in 0..20 {
            subs.push(e.mock.subscription("ok", &format!("s{i}")));
        }
        let mut invalid = 0;
        for i in 0..10 {
            let mut bad_key = e.mock.subscription("ok", &format!("x{i}"));
            bad_key["keys"]["p256dh"] = json!("BAAA");
            let mut bad_auth = e.mock.subscription("ok", &format!("y{i}"));
            bad_auth["keys"]["auth"] = json!("c2hvcnQ");
            let mut http = e.mock.subscription("ok", &format!("z{i}"));
            http["endpoint"] = json!(format!("http://{}/push/ok/z{i}", e.mock.handle.addr));
            let mut other = e.mock.subscription("ok", &format!("w{i}"));
            other["endpoint"] = json!(format!("https://push.example.net/w{i}"));
            let metadata = json!({"endpoint": "https://169.254.169.254/latest/meta-data", "keys": bad_key["keys"].clone()});
            subs.extend([bad_key, bad_auth, http, other, metadata]);
            invalid += 5;
        }
        fastrand::shuffle(&mut subs);
        let (status, answer) = e
            .post(&json!({"subscriptions": subs, "payload": payload, "ttl": 3600, "urgency": "high", "topic": "sale"}))
            .await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["accepted"], 3000);
        assert_eq!(answer["duplicates"], 20);
        let rejected = answer["rejected"].as_array().unwrap();
        assert_eq!(rejected.len(), invalid);
        let reasons: HashSet<&str> = rejected.iter().map(|r| r["reason"].as_str().unwrap()).collect();
        let want: HashSet<&str> = ["InvalidP256dh", "InvalidAuthSecret", "EndpointNotHttps", "OriginNotAllowed"].into();
        assert_eq!(reasons, want);
        assert!(rejected.iter().all(|r| r["endpoint"].is_string()));

        let report = e.wait_done().await;
        assert_eq!(report["accepted"], 3000);
        assert_eq!(report["successes"], 2800);
        assert_eq!(report["unregistered"], 200);
        assert_eq!(report["failures"], 0);
        assert_eq!(report["expired"], 0);
        assert_eq!(report["retries"], 100);
        // attempts = one per subscription + one per retry.
        assert_eq!(report["attempts"], 3100);

        // Every live subscription: exactly one delivery, decrypted to the payload.
        let ledger = e.mock.handle.ledger.tokens();
        for id in &live {
            assert_eq!(ledger.get(id).map(|r| r.deliveries), Some(1), "{id}");
        }
        let plaintext = serde_json::to_vec(&payload).unwrap();
        assert_eq!(e.mock.inbox.count(&plaintext), 2800);
        assert_eq!(e.mock.inbox.total(), 2800);
        // Each carries what is left of its hour after its time in the queue.
        let ttls: u64 = (3000..=3600)
            .map(|t| e.mock.inbox.header_count(&format!("ttl={t}")))
            .sum();
        assert_eq!(ttls, 2800);
        assert_eq!(e.mock.inbox.header_count("urgency=high"), 2800);
        assert_eq!(e.mock.inbox.header_count("topic=sale"), 2800);
        // One VAPID JWT for the one origin, cached; HTTP/2 multiplexes the
        // 64 requests in flight over one pooled connection (HTTP/1.1 would need 64).
        assert_eq!(e.mock.handle.ledger.distinct_credentials(), 1);
        let connections = pushgate::mock::Ledger::get(&e.mock.handle.ledger.connections);
        let h2 = e.mock.inbox.h2_requests.load(std::sync::atomic::Ordering::Relaxed);
        assert!(connections <= 2, "{connections} connections, {h2} h2 requests: not pooled over HTTP/2");
        assert_eq!(h2, 3100, "every request over HTTP/2");

        // The unregistered list names exactly the gone and not-found endpoints.
        let list = e.get("/webpush/report/unregistered").await;
        let listed: HashSet<String> = list["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                assert!(s["timestamp"].as_u64().unwrap() > 0);
                s["endpoint"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(listed, gone);
        let drained = e.delete("/webpush/report/unregistered").await;
        assert_eq!(drained["subscriptions"].as_array().unwrap().len(), 200);
        let empty = e.get("/webpush/report/unregistered").await;
        assert_eq!(empty["subscriptions"].as_array().unwrap().len(), 0);
        assert_eq!(e.get("/webpush/report/failures").await["failures"], json!([]));

        let job = e.get(&format!("/jobs/{}", answer["job"].as_str().unwrap())).await;
        assert_eq!(job["platform"], "webpush");
        assert_eq!(job["state"], "done");
        assert_eq!(job["successes"], 2800);
        assert_eq!(job["unregistered"], 200);
        assert_eq!(job["pending"], 0);

        let metrics = e.http.get(e.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(
            metrics.lines().any(|l| l.contains("platform=\"webpush\"") && l.contains("outcome=\"success\"") && l.ends_with(" 2800")),
            "no webpush success metric"
        );
        let _ = &e.public_key;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn failures_are_listed_with_reason_and_status_and_too_large_payloads_are_refused() {
    tokio::time::timeout(TIMEOUT, async {
        let e = env(listed).await;
        let subs = vec![
            e.mock.subscription("bad", "1"),
            e.mock.subscription("toolarge", "1"),
            e.mock.subscription("internal", "1"),
        ];
        let (status, answer) = e.post(&json!({"subscriptions": subs, "payload": "hi"})).await;
        assert_eq!(status, 202, "{answer}");
        let report = e.wait_done().await;
        assert_eq!(report["failures"], 2);
        assert_eq!(report["expired"], 1, "internal: retried 3 times, then expired");
        let failures = e.get("/webpush/report/failures").await;
        let mut got: Vec<(String, String, u64)> = failures["failures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                assert!(f["at"].as_u64().unwrap() > 0);
                (
                    f["endpoint"].as_str().unwrap().rsplit('/').nth(1).unwrap().to_owned(),
                    f["reason"].as_str().unwrap().to_owned(),
                    f["status"].as_u64().unwrap(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("bad".into(), "BadRequest".into(), 400),
                ("toolarge".into(), "PayloadTooLarge".into(), 413)
            ]
        );
        let big = "x".repeat(3994);
        let (status, body) = e
            .post(&json!({"subscriptions": [e.mock.subscription("ok", "big")], "payload": big}))
            .await;
        assert_eq!(status, 413, "{body}");
        let (status, body) = e
            .post(&json!({"subscriptions": [e.mock.subscription("ok", "u")], "payload": "x", "urgency": "asap"}))
            .await;
        assert_eq!((status, body["error"].as_str()), (400, Some("bad_field")));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_default_allow_list_refuses_the_mock_and_every_private_target() {
    tokio::time::timeout(TIMEOUT, async {
        let e = env(|_| Vec::new()).await;
        let keys = e.mock.subscription("ok", "1")["keys"].clone();
        let port = e.mock.handle.addr.port();
        let targets = [
            (
                format!("https://127.0.0.1:{port}/push/ok/1"),
                "OriginNotAllowed",
            ),
            (
                format!("https://localhost:{port}/push/ok/1"),
                "OriginNotAllowed",
            ),
            (
                "https://169.254.169.254/latest/meta-data".to_owned(),
                "OriginNotAllowed",
            ),
            ("https://[::1]/x".to_owned(), "OriginNotAllowed"),
            (
                "http://fcm.googleapis.com/fcm/send/x".to_owned(),
                "EndpointNotHttps",
            ),
            (
                "https://user:pw@fcm.googleapis.com/fcm/send/x".to_owned(),
                "InvalidEndpoint",
            ),
        ];
        let subs: Vec<Value> = targets
            .iter()
            .map(|(endpoint, _)| json!({"endpoint": endpoint, "keys": keys}))
            .collect();
        let (status, body) = e
            .post(&json!({"subscriptions": subs, "payload": "x"}))
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "no_valid_tokens");
        let reasons: Vec<&str> = body["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["reason"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = targets.iter().map(|(_, r)| *r).collect();
        assert_eq!(reasons, want);
        assert_eq!(
            pushgate::mock::Ledger::get(&e.mock.handle.ledger.connections),
            0
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_explicit_list_allows_exactly_the_named_origin() {
    tokio::time::timeout(TIMEOUT, async {
        let e = env(listed).await;
        let keys = e.mock.subscription("ok", "1")["keys"].clone();
        let port = e.mock.handle.addr.port();
        let (status, body) = e
            .post(&json!({"subscriptions": [
                e.mock.subscription("ok", "1"),
                {"endpoint": format!("https://localhost:{port}/push/ok/2"), "keys": keys},
                {"endpoint": format!("https://127.0.0.2:{port}/push/ok/3"), "keys": keys},
                {"endpoint": "https://fcm.googleapis.com/fcm/send/x", "keys": keys},
            ], "payload": {"hello": "world"}}))
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["accepted"], 1);
        assert_eq!(body["rejected"].as_array().unwrap().len(), 3);
        e.wait_done().await;
        assert_eq!(e.mock.inbox.count(br#"{"hello":"world"}"#), 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn without_a_webpush_section_the_route_answers_404() {
    init();
    let mut config = FileConfig::default();
    config.server.listen = "127.0.0.1:0".into();
    config.queue.backend = "memory".into();
    let gateway = Gateway::start(&config.validate().unwrap()).await.unwrap();
    let r = reqwest::Client::new()
        .post(format!("http://{}/webpush/send", gateway.addr))
        .json(&json!({"subscriptions": [], "payload": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// A `redis-server` of the test's own on a free port, nothing persisted;
/// killed when dropped.
struct Redis {
    child: std::process::Child,
    port: u16,
}

impl Redis {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With `queue.backend = "redis"` the job, its fields and its subscriptions
/// (keys included) travel through the shared stream, and the lists name
/// endpoints only.
#[tokio::test]
async fn a_webpush_job_goes_through_the_redis_queue() {
    tokio::time::timeout(TIMEOUT, async {
        let redis = Redis::start().await;
        let url = format!("redis://127.0.0.1:{}", redis.port);
        let e = env_with(listed, move |c| {
            c.queue.backend = "redis".into();
            c.queue.redis_url = url;
            c.queue.stream = format!("wp-{}", fastrand::u32(..));
        })
        .await;
        let mut subs: Vec<Value> = (0..300).map(|i| e.mock.subscription("ok", &format!("r{i}"))).collect();
        subs.extend((0..20).map(|i| e.mock.subscription("gone", &format!("r{i}"))));
        let payload = "plain text, é and all";
        let (status, answer) = e
            .post(&json!({"subscriptions": subs, "payload": payload, "urgency": "low", "topic": "t1"}))
            .await;
        assert_eq!(status, 202, "{answer}");
        let report = e.wait_done().await;
        assert_eq!((report["successes"].as_u64(), report["unregistered"].as_u64()), (Some(300), Some(20)), "{report}");
        assert_eq!(e.mock.inbox.count(payload.as_bytes()), 300);
        assert_eq!(e.mock.inbox.header_count("urgency=low"), 300);
        assert_eq!(e.mock.inbox.header_count("topic=t1"), 300);
        let list = e.get("/webpush/report/unregistered").await;
        let endpoints: Vec<&str> = list["subscriptions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["endpoint"].as_str().unwrap())
            .collect();
        assert_eq!(endpoints.len(), 20, "{list}");
        assert!(endpoints.iter().all(|ep| ep.starts_with(&format!("{}/push/gone/", e.mock.origin()))), "{endpoints:?}");
        drop(redis);
    })
    .await
    .unwrap();
}

/// Backend `disk`: a job accepted while the push service is down survives
/// a gateway restart (its fields and every subscription's keys come back
/// from the store) and is delivered, decryptably, by the next gateway.
#[tokio::test]
async fn a_webpush_job_kept_on_disk_is_delivered_after_a_restart() {
    tokio::time::timeout(TIMEOUT, async {
        init();
        let dir = scratch();
        let pki = TestPki::generate().unwrap();
        let key = VapidKey::generate().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let seed = b"restart-seed".to_vec();
        let subscriber = pushgate::mock::webpush::Subscriber::new(&seed);
        let base = format!("https://127.0.0.1:{port}");
        let subs: Vec<Value> = (0..50)
            .map(|i| {
                pushgate::mock::webpush::subscription(&base, &subscriber, "ok", &format!("d{i}"))
            })
            .collect();
        let key_file = dir.join("vapid.pem");
        std::fs::write(&key_file, key.to_pkcs8_pem().unwrap()).unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, &pki.ca_pem).unwrap();
        let mut config = FileConfig::default();
        config.server.listen = "127.0.0.1:0".into();
        config.queue.backend = "disk".into();
        config.queue.data_dir = dir.join("data").display().to_string();
        // Slow retries: the first gateway keeps trying a dead port until it stops.
        config.retry.base_ms = 2_000;
        config.retry.cap_ms = 2_000;
        config.webpush = Some(WebPushSection {
            vapid_key_file: key_file.display().to_string(),
            subject: "mailto:ops@example.com".into(),
            ca_file: ca_file.display().to_string(),
            allowed_origins: vec![base.clone()],
            max_retries: 50,
            ..WebPushSection::default()
        });
        let validated = config.validate().unwrap();
        let first = Gateway::start(&validated).await.unwrap();
        let http = reqwest::Client::new();
        let r = http
            .post(format!("http://{}/webpush/send", first.addr))
            .json(&json!({"subscriptions": subs, "payload": {"kept": true}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let drained = first.shutdown(Duration::ZERO).await;
        assert!(drained.kept > 0, "{drained:?}");

        let mut opts = MockWebPushOptions::new(&pki);
        opts.listen = format!("127.0.0.1:{port}").parse().unwrap();
        opts.seed = seed;
        opts.expected_key = Some(key.public_key_b64().to_owned());
        let mock = pushgate::mock::webpush::start(opts).await.unwrap();
        let second = Gateway::start(&validated).await.unwrap();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let report: Value = http
                .get(format!("http://{}/webpush/report", second.addr))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if report["pending"] == 0 && report["successes"] == 50 {
                assert_eq!(report["accepted"], 50, "{report}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not delivered after restart: {report}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(mock.inbox.count(br#"{"kept":true}"#), 50);
        second.shutdown(Duration::from_secs(1)).await;
    })
    .await
    .unwrap();
}

/// Declarative Web Push end to end: `"declarative": true` wraps the
/// notification, a payload already in that shape goes as it is, and each
/// decrypts at the mock to exactly that JSON; a bad one is a 400 naming the
/// member, nothing queued. Leaves out a real Safari (the mock only decrypts).
#[tokio::test]
async fn declarative_web_push_reaches_the_push_service_and_bad_ones_are_refused() {
    tokio::time::timeout(TIMEOUT, async {
        let e = env(listed).await;
        let (status, answer) = e
            .post(&json!({
                "subscriptions": [e.mock.subscription("ok", "decl-1")],
                "declarative": true,
                "payload": {"title": "Order shipped", "body": "On its way",
                            "navigate": "https://shop.example/orders/42", "app_badge": 2}
            }))
            .await;
        assert_eq!(status, 202, "{answer}");
        let given = json!({"web_push": 8030, "mutable": true,
                           "notification": {"title": "Sale", "navigate": "https://shop.example/sale"}});
        let (status, answer) = e
            .post(&json!({"subscriptions": [e.mock.subscription("ok", "decl-2")], "payload": given}))
            .await;
        assert_eq!(status, 202, "{answer}");
        e.wait_done().await;
        let mut wrapped = serde_json::Map::new();
        wrapped.insert("web_push".into(), json!(8030));
        wrapped.insert(
            "notification".into(),
            json!({"title": "Order shipped", "body": "On its way",
                   "navigate": "https://shop.example/orders/42"}),
        );
        wrapped.insert("app_badge".into(), json!(2));
        let wrapped = serde_json::to_vec(&wrapped).unwrap();
        assert_eq!(e.mock.inbox.count(&wrapped), 1, "{}", String::from_utf8_lossy(&wrapped));
        assert_eq!(e.mock.inbox.count(given.to_string().as_bytes()), 1);

        for (body, field) in [
            (json!({"declarative": true, "payload": {"title": "no link"}}), "payload.notification.navigate"),
            (json!({"declarative": true, "payload": {"navigate": "https://a.example/"}}), "payload.notification.title"),
            (json!({"declarative": true, "payload": "text"}), "payload"),
            (json!({"payload": {"web_push": 8031, "notification": {"title": "t", "navigate": "https://a.example/"}}}), "payload.web_push"),
            (json!({"payload": {"web_push": 8030, "notification": {"title": "t", "navigate": "/relative"}}}), "payload.notification.navigate"),
        ] {
            let mut body = body;
            body["subscriptions"] = json!([e.mock.subscription("ok", "decl-bad")]);
            let (status, answer) = e.post(&body).await;
            assert_eq!(status, 400, "{body}: {answer}");
            assert_eq!(answer["field"], field, "{body}: {answer}");
        }
        assert_eq!(e.mock.inbox.total(), 2);
    })
    .await
    .unwrap();
}

/// The `TTL` header carries what is left after the message's time in the
/// queue: a message held back a second by a 429 `Retry-After: 1` goes with
/// less than it was given, and one whose TTL ran out while it waited expires
/// unsent and is counted as expired. Uses the real clock (the wait is the
/// mock's one-second `Retry-After`); `webpush::message` tests the
/// arithmetic with fixed instants.
#[tokio::test]
async fn the_ttl_sent_shrinks_with_queue_time_and_a_message_past_it_expires() {
    tokio::time::timeout(TIMEOUT, async {
        let e = env(listed).await;
        let (status, answer) = e
            .post(
                &json!({"subscriptions": [e.mock.subscription("throttle", "ttl-60")],
                          "payload": "late", "ttl": 60}),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
        let report = e.wait_done().await;
        assert_eq!(report["successes"], 1, "{report}");
        assert_eq!(e.mock.inbox.header_count("ttl=60"), 0);
        assert_eq!(
            e.mock.inbox.header_count("ttl=59") + e.mock.inbox.header_count("ttl=58"),
            1
        );

        let (status, answer) = e
            .post(
                &json!({"subscriptions": [e.mock.subscription("throttle", "ttl-1")],
                          "payload": "too late", "ttl": 1}),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
        let job = answer["job"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            let s = e.get(&format!("/jobs/{job}")).await;
            if s["pending"] == 0 {
                break s;
            }
            assert!(Instant::now() < deadline, "not done: {s}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(status["expired"], 1, "{status}");
        assert_eq!(e.mock.inbox.count(b"too late"), 0);
        let report = e.get("/webpush/report").await;
        assert_eq!(report["expired"], 1, "{report}");
    })
    .await
    .unwrap();
}
