//! Huawei Push Kit end to end: a gateway with `[hms]` against the mock HMS
//! (`pushgate::mock::hms`) over real sockets (TLS, OAuth, `messages:send`),
//! on the memory backend. The mock's ledger counts every attempt and
//! delivery per token, its inbox keeps what each delivered token received.
//!
//! - 3,000+ tokens in batches of 100: illegal tokens in partial answers
//!   (80100000), a block of only illegal ones (80300007), an access token
//!   that dies every few sends (80200003), the `flaky` (500 once) and `busy`
//!   (503 once, `Retry-After: 1`) markers and random 500/503 faults: every
//!   valid token delivered exactly once, the lists exact, the books balanced;
//! - a job of illegal tokens only: one 80300007, every token unregistered;
//! - a wrong endpoint (404): every token failed and listed with `HTTP404`;
//! - gorush's `platform: 3` through `/api/push`;
//! - bad requests refused before anything is queued.
//!
//! Left out here: kill -9 on the disk store (tests/durable.rs) and two
//! gateways on Redis (tests/cluster.rs).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use common::{TEST_TIMEOUT, init, scratch, wait_done};
use pushgate::config::{FileConfig, HmsSection};
use pushgate::gateway::Gateway;
use pushgate::mock;
use pushgate::mock::hms::{Inbox, MockHms, MockHmsOptions};
use pushgate::report::Counters;
use serde_json::{Value, json};

struct HmsEnv {
    mock: MockHms,
    gateway: Gateway,
    client: reqwest::Client,
    #[allow(dead_code)]
    dir: PathBuf,
}

/// A gateway with `[hms]` (the mock's app, its secret in a file) against a
/// fresh mock HMS; `options` and `tweak` adjust the mock and the config.
async fn hms_env(
    options: impl FnOnce(&mut MockHmsOptions),
    tweak: impl FnOnce(&mut FileConfig, &MockHms),
) -> HmsEnv {
    init();
    let dir = scratch("hms");
    let pki = mock::tls::TestPki::generate().unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let mut opts = MockHmsOptions::new(&pki);
    options(&mut opts);
    let mock = mock::hms::start(opts).await.unwrap();
    let secret_file = dir.join("hms.secret");
    std::fs::write(&secret_file, format!("{}\n", mock.client_secret())).unwrap();
    let mut file = FileConfig::default();
    file.server.listen = "127.0.0.1:0".into();
    // Durability is not the point here (tests/durable.rs is): keep nothing.
    file.queue.backend = "memory".into();
    file.retry.base_ms = 5;
    file.retry.cap_ms = 50;
    file.hms = Some(HmsSection {
        app_id: mock.app_id().to_owned(),
        client_secret_file: secret_file.display().to_string(),
        endpoint: mock.endpoint(),
        token_uri: mock.token_uri(),
        ca_file: ca_file.display().to_string(),
        ..HmsSection::default()
    });
    tweak(&mut file, &mock);
    let gateway = Gateway::start(&file.validate().unwrap()).await.unwrap();
    HmsEnv {
        mock,
        gateway,
        client: reqwest::Client::new(),
        dir,
    }
}

impl HmsEnv {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.url())
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    async fn done(&self, accepted: u64) -> Counters {
        wait_done(&self.gateway, pushgate::hms::FAMILY, accepted).await
    }

    /// The token strings of a report list.
    async fn listed(&self, path: &str) -> HashSet<String> {
        let list = self.get(path).await;
        let key = if path.ends_with("failures") {
            "failures"
        } else {
            "tokens"
        };
        list[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["token"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn count(counter: &std::sync::atomic::AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// 3,000 accepted tokens: 100 illegal in one aligned block (a batch of only
/// illegal tokens: 80300007), every 37th illegal among valid ones (partial
/// answers), one `flaky` in every even batch, one `busy` in every odd one
/// (bar the illegal block); plus refused and
/// duplicate tokens the API keeps out. The mock's access tokens die after 7
/// sends, and 3% of requests get a 500 and 3% a 503.
#[tokio::test]
async fn three_thousand_tokens_partial_all_invalid_expiring_token_and_5xx() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let e = hms_env(
            |o| {
                o.token_max_sends = Some(7);
                o.throttle_rate = 0.03;
                o.faults.error_rate = 0.03;
            },
            |file, _| {
                let hms = file.hms.as_mut().unwrap();
                hms.batch_size = 100;
                hms.concurrency = 4;
                // 401s (a dead access token), random 500/503 and the markers
                // all spend a retry: room for an unlucky batch.
                hms.max_retries = 12;
            },
        )
        .await;
        let mut tokens = Vec::new();
        let (mut valid, mut illegal) = (Vec::new(), HashSet::new());
        for i in 0..3000 {
            let t = match i {
                100..200 => format!("illegal-block-{i}"),
                i if i % 37 == 5 => format!("illegal-{i}"),
                // One marker per batch of 100: flaky in even batches, busy
                // in odd ones (flaky's 500 would hide busy's 503).
                i if i % 100 == 3 && (i / 100) % 2 == 0 => format!("flaky-{i}:APA91b"),
                i if i % 100 == 9 && (i / 100) % 2 == 1 => format!("busy-{i}:APA91b"),
                _ => format!("IQAAAAC-{i}-device/+="),
            };
            if t.starts_with("illegal") {
                illegal.insert(t.clone());
            } else {
                valid.push(t.clone());
            }
            tokens.push(t);
        }
        // Refused at the API, never queued; duplicates kept out.
        tokens.extend(["has space".to_owned(), String::new(), tokens[0].clone()]);
        let busy = valid.iter().filter(|t| t.starts_with("busy")).count() as u64;
        let data = json!({"order": 42, "kind": "receipt"});
        let started = std::time::Instant::now();
        let (status, answer) = e
            .post(
                "/hms/send",
                &json!({
                    "tokens": tokens,
                    "data": data,
                    "notification": {"title": "Hello", "body": "From pushgate"},
                    "android": {"urgency": "HIGH", "ttl": "3600s", "collapse_key": 1},
                }),
            )
            .await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["accepted"], 3000);
        assert_eq!(answer["duplicates"], 1);
        let rejected = answer["rejected"].as_array().unwrap();
        assert_eq!(rejected.len(), 2, "{answer}");
        assert!(
            rejected.iter().all(|r| r["reason"] == "IllegalToken"),
            "{answer}"
        );

        let c = e.done(3000).await;
        // `busy` batches waited for their `Retry-After: 1`.
        assert!(started.elapsed() >= std::time::Duration::from_secs(1));
        assert!(c.balanced(), "{c:?}");
        assert_eq!(c.pending, 0);
        assert_eq!(c.successes, valid.len() as u64, "{c:?}");
        assert_eq!(c.unregistered, illegal.len() as u64, "{c:?}");
        assert_eq!((c.failures, c.expired), (0, 0), "{c:?}");

        // Every valid token delivered exactly once; no illegal one delivered.
        let ledger = e.mock.handle.ledger.tokens();
        for t in &valid {
            assert_eq!(ledger.get(t).map(|r| r.deliveries), Some(1), "{t}");
        }
        for t in &illegal {
            assert_eq!(ledger.get(t).map_or(0, |r| r.deliveries), 0, "{t}");
        }
        assert_eq!(count(&e.mock.inbox.delivered), valid.len() as u64);
        // data reached Huawei as a string: the JSON text of what was sent.
        for t in [&valid[0], &valid[valid.len() - 1]] {
            let got = e.mock.inbox.last(t).unwrap();
            let text = got.data.as_deref().expect("data as a string");
            assert_eq!(serde_json::from_str::<Value>(text).unwrap(), data);
            assert_eq!(
                (got.title(), got.body()),
                (Some("Hello"), Some("From pushgate"))
            );
            let android = got.android.as_ref().unwrap();
            assert_eq!(android["urgency"], "HIGH");
            assert_eq!(android["notification"]["click_action"], json!({"type": 3}));
        }

        // The mock saw what the test provoked.
        let inbox = &e.mock.inbox;
        assert!(
            count(&inbox.expired) >= 1,
            "no access token expired mid-run"
        );
        assert!(count(&e.mock.handle.ledger.grants) >= 2);
        assert!(count(&inbox.refused) >= 1, "no 80300007 answer");
        assert!(count(&inbox.server_errors) >= 1);
        assert!(count(&inbox.throttled) >= busy, "{busy} busy batches");
        let largest = count(&e.mock.handle.ledger.largest_batch);
        assert!((1..=100).contains(&largest), "largest batch {largest}");
        assert!(Inbox::get(&inbox.validated) == 0);

        // The lists: exactly the illegal tokens, no failure.
        assert_eq!(e.listed("/hms/report/unregistered").await, illegal);
        let list = e.get("/hms/report/unregistered").await;
        assert!(list["tokens"][0]["timestamp"].as_u64().unwrap() > 0);
        assert!(e.listed("/hms/report/failures").await.is_empty());
        let report = e.get("/hms/report").await;
        assert_eq!(report["successes"], valid.len() as u64);
        assert_eq!(report["unregistered"], illegal.len() as u64);

        let job = e
            .get(&format!("/jobs/{}", answer["job"].as_str().unwrap()))
            .await;
        assert_eq!(job["platform"], "hms");
        assert_eq!(job["state"], "done");
        assert_eq!(job["pending"], 0);

        let metrics = e
            .client
            .get(e.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let line = metrics
            .lines()
            .find(|l| l.contains("platform=\"hms\"") && l.contains("outcome=\"success\""))
            .expect("an hms success metric");
        assert!(line.ends_with(&format!(" {}", valid.len())), "{line}");
        assert!(metrics.contains("pushgate_credential_refreshes_total{platform=\"hms\"}"));
    })
    .await
    .expect("test timed out");
}

/// A job of illegal tokens only is one 80300007 answer: every token
/// unregistered, none resent.
#[tokio::test]
async fn a_batch_of_only_illegal_tokens_is_unregistered_once() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let e = hms_env(|_| {}, |_, _| {}).await;
        let tokens: Vec<String> = (0..50).map(|i| format!("illegal-{i}")).collect();
        let (status, answer) = e
            .post("/hms/send", &json!({"tokens": tokens, "data": "ping"}))
            .await;
        assert_eq!(status, 202, "{answer}");
        let c = e.done(50).await;
        assert_eq!(
            (c.unregistered, c.attempts, c.retries),
            (50, 50, 0),
            "{c:?}"
        );
        assert_eq!(count(&e.mock.handle.ledger.requests), 1);
        assert_eq!(count(&e.mock.inbox.refused), 1);
        let listed = e.listed("/hms/report/unregistered").await;
        assert_eq!(listed, tokens.into_iter().collect());
    })
    .await
    .expect("test timed out");
}

/// A wrong endpoint answers 404: every token fails at once with `HTTP404`
/// (never retried, nothing delivered) and is listed in the failures.
#[tokio::test]
async fn a_wrong_endpoint_fails_every_token_and_lists_it() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let e = hms_env(
            |_| {},
            |file, mock| file.hms.as_mut().unwrap().endpoint = format!("{}/nope", mock.endpoint()),
        )
        .await;
        let tokens: Vec<String> = (0..30).map(|i| format!("device-{i}")).collect();
        let (status, answer) = e
            .post("/hms/send", &json!({"tokens": tokens, "data": {"a": "b"}}))
            .await;
        assert_eq!(status, 202, "{answer}");
        let c = e.done(30).await;
        assert_eq!((c.failures, c.retries), (30, 0), "{c:?}");
        let failures = e.get("/hms/report/failures").await;
        let entries = failures["failures"].as_array().unwrap();
        assert_eq!(entries.len(), 30);
        assert!(
            entries
                .iter()
                .all(|f| f["reason"] == "HTTP404" && f["status"] == 404),
            "{failures}"
        );
        assert_eq!(
            e.listed("/hms/report/failures").await,
            tokens.into_iter().collect()
        );
        assert_eq!(count(&e.mock.inbox.delivered), 0);
    })
    .await
    .expect("test timed out");
}

/// gorush's Huawei notification (`platform: 3`) becomes an HMS job: its
/// fields reach Push Kit where Huawei wants them, and each token gets its
/// own outcome (gorush itself cannot tell them apart).
#[tokio::test]
async fn gorush_platform_3_reaches_push_kit_with_per_token_outcomes() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let e = hms_env(|_| {}, |_, _| {}).await;
        let tokens = ["hms-a", "illegal-b", "hms-c", "flaky-d"];
        let (status, answer) = e
            .post(
                "/api/push",
                &json!({"notifications": [{
                    "platform": 3,
                    "tokens": tokens,
                    "title": "Title",
                    "message": "Body",
                    "data": {"k": "v"},
                    "priority": "high",
                    "huawei_ttl": "600s",
                    "category": "IM",
                    "notif_id": "n-1",
                }]}),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["counts"], 4);
        let c = e.done(4).await;
        assert_eq!((c.successes, c.unregistered), (3, 1), "{c:?}");
        for t in ["hms-a", "hms-c", "flaky-d"] {
            assert_eq!(e.mock.handle.ledger.token(t).deliveries, 1, "{t}");
        }
        let got = e.mock.inbox.last("hms-a").unwrap();
        assert_eq!(got.data.as_deref(), Some("{\"k\":\"v\"}"));
        assert_eq!((got.title(), got.body()), (Some("Title"), Some("Body")));
        let android = got.android.as_ref().unwrap();
        assert_eq!(android["urgency"], "HIGH");
        assert_eq!(android["ttl"], "600s");
        assert_eq!(android["category"], "IM");
        assert_eq!(
            e.listed("/hms/report/unregistered").await,
            HashSet::from(["illegal-b".to_owned()])
        );
        let stat = e.get("/api/stat/app").await;
        assert_eq!(
            stat["huawei"],
            json!({"push_success": 3, "push_error": 1}),
            "{stat}"
        );
    })
    .await
    .expect("test timed out");
}

/// Bad requests are refused with the field named, before anything is queued.
#[tokio::test]
async fn bad_requests_are_refused_before_anything_is_queued() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let e = hms_env(|_| {}, |_, _| {}).await;
        let cases = [
            (json!({"tokens": [], "data": "x"}), 400, "no_tokens"),
            (json!({"tokens": ["t"]}), 400, "bad_field"),
            (json!({"tokens": ["t"], "data": [1]}), 400, "bad_field"),
            (json!({"tokens": ["t"], "notification": {"title": "only"}}), 400, "bad_field"),
            (json!({"tokens": ["t"], "data": "x", "android": {"urgency": "now"}}), 400, "bad_field"),
            (json!({"tokens": ["t"], "data": "x", "topic": "news"}), 400, "bad_json"),
            (json!({"tokens": ["t"], "data": "x", "app": "nope"}), 400, "unknown_app"),
            (json!({"tokens": ["t"], "data": "x".repeat(5000)}), 413, "too_large"),
            (json!({"tokens": ["has space"], "data": "x"}), 400, "no_valid_tokens"),
        ];
        for (body, want, code) in cases {
            let (status, answer) = e.post("/hms/send", &body).await;
            assert_eq!((status, answer["error"].as_str()), (want, Some(code)), "{body}: {answer}");
        }
        let form = e
            .client
            .post(e.url("/hms/send"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("tokens=a&payload=%7B%7D")
            .send()
            .await
            .unwrap();
        assert_eq!(form.status(), 415);
        let (status, answer) = e
            .post("/api/push", &json!({"notifications": [{"platform": 3, "tokens": ["t"], "message": "m", "badge": 1}]}))
            .await;
        assert_eq!((status, answer["field"].as_str()), (400, Some("badge")), "{answer}");
        assert_eq!(e.gateway.state.backend.reports().family(pushgate::hms::FAMILY).counters().accepted, 0);
        assert_eq!(count(&e.mock.handle.ledger.requests), 0);
    })
    .await
    .expect("test timed out");
}

/// `[hms.apps.<name>]` inherits `[hms]`'s keys, except the credentials once
/// it names any of them; the secret never prints; every problem names its key.
#[test]
fn apps_inherit_settings_not_credentials_and_the_secret_never_prints() {
    let dir = scratch("hms-config");
    let secret_file = dir.join("other.secret");
    std::fs::write(&secret_file, "other+secret/=\n").unwrap();
    let text = format!(
        r#"
[hms]
app_id = "104000000"
client_secret = "top+secret/="
batch_size = 500
[hms.apps.same]
concurrency = 2
[hms.apps.other]
app_id = "104000001"
client_secret_file = "{}"
"#,
        secret_file.display()
    );
    let file = FileConfig::parse(&text, "test", Vec::new()).unwrap();
    let config = file.validate().unwrap();
    let apps = config.hms.as_ref().unwrap();
    assert_eq!(
        apps.names().collect::<Vec<_>>(),
        ["default", "other", "same"]
    );
    let same = apps.get("same").unwrap();
    assert_eq!(
        (same.app_id.as_str(), same.client_secret.expose()),
        ("104000000", "top+secret/=")
    );
    assert_eq!((same.batch_size, same.concurrency), (500, 2));
    let other = apps.get("other").unwrap();
    assert_eq!(
        (other.app_id.as_str(), other.client_secret.expose()),
        ("104000001", "other+secret/=")
    );
    assert_eq!(other.batch_size, 500);
    let masked = file.to_masked_toml();
    assert!(!masked.contains("top+secret"), "{masked}");
    assert!(!format!("{config:?}").contains("top+secret"));
    assert!(
        config
            .platforms()
            .iter()
            .any(|(p, _)| *p == pushgate::hms::PLATFORM)
    );

    // From the environment, as every key.
    let env = vec![(
        "PUSHGATE_HMS_CLIENT_SECRET".to_owned(),
        "env+secret".to_owned(),
    )];
    let file = FileConfig::parse("[hms]\napp_id = \"1\"\n", "test", env).unwrap();
    let config = file.validate().unwrap();
    assert_eq!(
        config.hms.unwrap().default_app().client_secret.expose(),
        "env+secret"
    );

    // An app naming its own app id must name its own secret too.
    let text = "[hms]\napp_id = \"1\"\nclient_secret = \"s\"\nbatch_size = 2000\n[hms.apps.x]\napp_id = \"2\"\n";
    let errors = FileConfig::parse(text, "test", Vec::new())
        .unwrap()
        .validate()
        .unwrap_err();
    let shown = errors.to_string();
    assert!(shown.contains("hms.batch_size = 2000"), "{shown}");
    assert!(shown.contains("hms.apps.x.client_secret_file"), "{shown}");
    assert!(!shown.contains("= \"s\""), "{shown}");
}
