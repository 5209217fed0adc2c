//! `POST /send` end to end: one gateway on a real port with mock APNs, mock
//! FCM (v1), mock HMS and a mock Web Push service over TLS, each reading
//! what it received on its own (the Web Push mock decrypts with the
//! subscription's private key), so a mapping bug in the gateway cannot be
//! mirrored by the mock.
//!
//! - a mixed request (500 APNs, 500 FCM, 100 HMS, 100 Web Push targets, a
//!   tenth of them with their own data and a badge): each device gets the
//!   message as its platform places title, body, image, shared data and its
//!   own data and badge, and no other device's; the books balance per
//!   platform and for the group;
//! - targets for a platform that is not configured, malformed ones and
//!   duplicates: each refused with its index and reason, the rest sent once;
//! - Declarative Web Push through `/send`, and its 400 without `navigate`;
//! - 100,000 personalised APNs targets on the disk store: the store grows
//!   by a small trailer per target, not a copy of the message (figures
//!   printed with `--nocapture`), and each device gets its own data;
//! - `?wait`, `Idempotency-Key` and `DELETE /jobs/{group}` of a scheduled
//!   group;
//! - the Redis backend carrying personalised targets (Web Push keys
//!   included) through its stream;
//! - an NDJSON `/webpush/send` whose first line has no `subscriptions` (the
//!   same front path `/send` takes for Web Push).
//!
//! Nothing asserts how fast anything happens.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{KEY_ID, SERVER_KEY, TEAM_ID, TEST_TIMEOUT, apns_token, init, scratch, wait_done};
use pushgate::config::{ApnsSection, FcmSection, FileConfig, HmsSection, WebPushSection};
use pushgate::gateway::Gateway;
use pushgate::job::Family;
use pushgate::mock::hms::MockHms;
use pushgate::mock::webpush::MockWebPush;
use pushgate::mock::{self, MockHandle};
use pushgate::webpush::vapid::VapidKey;
use serde_json::{Map, Value, json};

/// Which platforms the gateway is configured with (every mock runs anyway,
/// so an unconfigured one can be seen to receive nothing).
#[derive(Clone, Copy)]
struct Platforms {
    apns: bool,
    fcm: bool,
    hms: bool,
    webpush: bool,
}

const ALL: Platforms = Platforms {
    apns: true,
    fcm: true,
    hms: true,
    webpush: true,
};

struct Env {
    apns: MockHandle,
    fcm: MockHandle,
    hms: MockHms,
    webpush: MockWebPush,
    gateway: Gateway,
    client: reqwest::Client,
    dir: PathBuf,
}

/// The four mocks and a gateway configured with `platforms` on the memory
/// store; `tweak` adjusts the config before it is validated.
async fn env(platforms: Platforms, tweak: impl FnOnce(&mut FileConfig)) -> Env {
    init();
    let dir = scratch("every");
    let pki = mock::tls::TestPki::generate().unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let ca_file = ca_file.display().to_string();

    let (p8, public_key_pem) = mock::apns::generate_provider_key().unwrap();
    let key_file = dir.join("AuthKey.p8");
    std::fs::write(&key_file, p8).unwrap();
    let check = mock::apns::ApnsAuthCheck::Token {
        team_id: TEAM_ID.into(),
        key_id: KEY_ID.into(),
        public_key_pem,
    };
    let apns = mock::apns::start(mock::apns::MockApnsOptions::new(check, &pki))
        .await
        .unwrap();

    let account = mock::fcm::ServiceAccountFixture::generate("pushgate-test").unwrap();
    let fcm = mock::fcm::start(mock::fcm::MockFcmOptions::new(&account, SERVER_KEY, &pki))
        .await
        .unwrap();
    let account_file = dir.join("service-account.json");
    std::fs::write(
        &account_file,
        account.to_json(&format!("{}/token", fcm.url())),
    )
    .unwrap();

    let hms = mock::hms::start(mock::hms::MockHmsOptions::new(&pki))
        .await
        .unwrap();
    let secret_file = dir.join("hms.secret");
    std::fs::write(&secret_file, hms.client_secret()).unwrap();

    let vapid = VapidKey::generate().unwrap();
    let mut options = mock::webpush::MockWebPushOptions::new(&pki);
    options.expected_key = Some(vapid.public_key_b64().to_owned());
    let webpush = mock::webpush::start(options).await.unwrap();
    let vapid_file = dir.join("vapid.pem");
    std::fs::write(&vapid_file, vapid.to_pkcs8_pem().unwrap()).unwrap();

    let mut file = FileConfig::default();
    file.server.listen = "127.0.0.1:0".into();
    file.queue.backend = "memory".into();
    file.retry.base_ms = 5;
    file.retry.cap_ms = 50;
    if platforms.apns {
        file.apns = Some(ApnsSection {
            endpoint: apns.url(),
            ca_file: ca_file.clone(),
            topic: "com.example.test".into(),
            key_file: key_file.display().to_string(),
            key_id: KEY_ID.into(),
            team_id: TEAM_ID.into(),
            ..ApnsSection::default()
        });
    }
    if platforms.fcm {
        file.fcm = Some(FcmSection {
            service_account_file: account_file.display().to_string(),
            endpoint: fcm.url(),
            ca_file: ca_file.clone(),
            ..FcmSection::default()
        });
    }
    if platforms.hms {
        file.hms = Some(HmsSection {
            app_id: hms.app_id().to_owned(),
            client_secret_file: secret_file.display().to_string(),
            endpoint: hms.endpoint(),
            token_uri: hms.token_uri(),
            ca_file: ca_file.clone(),
            ..HmsSection::default()
        });
    }
    if platforms.webpush {
        file.webpush = Some(WebPushSection {
            vapid_key_file: vapid_file.display().to_string(),
            subject: "mailto:ops@example.com".into(),
            ca_file: ca_file.clone(),
            allowed_origins: vec![webpush.origin()],
            ..WebPushSection::default()
        });
    }
    tweak(&mut file);
    let gateway = Gateway::start(&file.validate().unwrap()).await.unwrap();
    Env {
        apns,
        fcm,
        hms,
        webpush,
        gateway,
        client: reqwest::Client::new(),
        dir,
    }
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.url())
    }

    /// POSTs `body` to `path`, with `Idempotency-Key: key` when given.
    async fn post_keyed(&self, path: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
        let mut r = self.client.post(self.url(path)).json(body);
        if let Some(key) = key {
            r = r.header("idempotency-key", key);
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_keyed(path, None, body).await
    }

    async fn get(&self, path: &str) -> Value {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    async fn delete(&self, path: &str) -> Value {
        let r = self.client.delete(self.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "DELETE {path}");
        r.json().await.unwrap()
    }

    /// Polls `GET /jobs/{group}` until nothing is pending; every answer on
    /// the way must balance.
    async fn group_done(&self, group: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let g = self.get(&format!("/jobs/{group}")).await;
            assert_balanced(&g);
            if g["pending"] == 0 {
                return g;
            }
            assert!(Instant::now() < deadline, "still pending: {g}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A job's or a group's body: total = every outcome + pending, and a
/// group's by-platform parts sum to it.
fn assert_balanced(status: &Value) {
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    let parts = [
        "successes",
        "failures",
        "unregistered",
        "canonicals",
        "expired",
        "cancelled",
        "pending",
    ];
    let sum = |v: &Value| parts.iter().map(|k| n(v, k)).sum::<u64>();
    assert_eq!(n(status, "total"), sum(status), "out of balance: {status}");
    if let Some(by) = status["by_platform"].as_object() {
        for key in ["total"].iter().chain(&parts) {
            let summed: u64 = by.values().map(|p| n(p, key)).sum();
            assert_eq!(summed, n(status, key), "by_platform's {key}: {status}");
        }
        for p in by.values() {
            assert_eq!(n(p, "total"), sum(p), "out of balance: {p}");
        }
    }
}

/// The object of `v` (a `json!` literal).
fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// What every mixed-request test sends besides its targets.
fn mixed_common() -> Value {
    json!({
        "notification": {"title": "Order update", "body": "Your order moved",
                         "image": "https://img.example/o.png"},
        "data": {"order": "42", "shop": "north"},
        "apns": {"sound": "default", "thread_id": "orders", "collapse_id": "order-42"},
        "fcm": {"android": {"direct_boot_ok": true}, "fcm_options": {"analytics_label": "orders"}},
        "hms": {"android": {"urgency": "HIGH", "ttl": "3600s",
                            "notification": {"click_action": {"type": 3},
                                             "badge": {"class": "com.example.Main", "add_num": 1}}}},
        "webpush": {"ttl": 600, "urgency": "high", "topic": "orders"},
    })
}

/// Target `i`'s own fields: every tenth (3, 13, …) an `unread` count and a
/// badge, every tenth (7, 17, …) an `order` of its own over the shared one.
fn personal(i: usize) -> (Option<Value>, Option<u32>) {
    match i % 10 {
        3 => (
            Some(json!({"unread": format!("u{i}")})),
            Some(i as u32 % 9 + 1),
        ),
        7 => (Some(json!({"order": format!("mine-{i}")})), None),
        _ => (None, None),
    }
}

/// The data target `i` should receive: the shared data with its own over it.
fn expected_data(i: usize) -> Map<String, Value> {
    let mut data = obj(json!({"order": "42", "shop": "north"}));
    if let (Some(own), _) = personal(i) {
        data.extend(obj(own));
    }
    data
}

/// `{"<platform>": token}` plus target `i`'s own fields.
fn target(platform: &str, token: Value, i: usize) -> Value {
    let mut t = Map::new();
    t.insert(platform.into(), token);
    let (data, badge) = personal(i);
    if let Some(data) = data {
        t.insert("data".into(), data);
    }
    if let Some(badge) = badge {
        t.insert("badge".into(), badge.into());
    }
    Value::Object(t)
}

fn fcm_token(i: usize) -> String {
    format!("fcm-device-{i}:APA91b")
}

fn hms_token(i: usize) -> String {
    format!("IQAAAAC-hms-{i}")
}

/// The mixed request: 500 APNs, 500 FCM, 100 HMS and 100 Web Push targets,
/// interleaved, a fifth of each with its own fields. Each device receives
/// exactly its platform's mapping of the message with its own data and
/// badge, and no other's; the books balance per platform and for the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_request_reaches_every_platform_each_device_with_its_own_data() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let e = env(ALL, |_| {}).await;
        let mut targets = Vec::new();
        for i in 0..500 {
            targets.push(target("apns", json!(apns_token("a0a0", i)), i));
            targets.push(target("fcm", json!(fcm_token(i)), i));
            if i < 100 {
                targets.push(target("hms", json!(hms_token(i)), i));
                let sub = e.webpush.subscription("ok", &format!("w{i}"));
                targets.push(target("webpush", sub, i));
            }
        }
        let mut body = mixed_common();
        body["targets"] = json!(targets);
        let (status, answer) = e.post("/send", &body).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["accepted"], 1200, "{answer}");
        assert_eq!(
            answer["accepted_by_platform"],
            json!({"apns": 500, "fcm": 500, "hms": 100, "webpush": 100})
        );
        assert_eq!(answer["rejected"], json!([]));
        assert_eq!(answer["rejected_count"], 0);
        assert_eq!(answer["duplicates"], 0);
        let group = answer["job"].as_str().unwrap().to_owned();
        let jobs = answer["jobs"].as_object().unwrap().clone();
        assert_eq!(jobs.len(), 4, "{answer}");
        assert!(jobs.values().all(|j| j.as_str() != Some(group.as_str())));

        // The group's books, and each platform's.
        let g = e.group_done(&group).await;
        assert_eq!(g["state"], "done", "{g}");
        assert_eq!((g["total"].as_u64(), g["successes"].as_u64()), (Some(1200), Some(1200)), "{g}");
        let listed: HashSet<&str> = g["jobs"].as_array().unwrap().iter().map(|j| j.as_str().unwrap()).collect();
        let given: HashSet<&str> = jobs.values().map(|j| j.as_str().unwrap()).collect();
        assert_eq!(listed, given);
        for (platform, n, family, report) in [
            ("apns", 500, pushgate::apns::FAMILY, "/apns/report"),
            ("fcm", 500, pushgate::fcm::FAMILY, "/gcm/report"),
            ("hms", 100, pushgate::hms::FAMILY, "/hms/report"),
            ("webpush", 100, pushgate::webpush::FAMILY, "/webpush/report"),
        ] {
            let part = &g["by_platform"][platform];
            assert_eq!(part["job"], jobs[platform], "{g}");
            assert_eq!((part["total"].as_u64(), part["successes"].as_u64()), (Some(n), Some(n)), "{platform}: {g}");
            assert_eq!(part["state"], "done");
            let own = e.get(&format!("/jobs/{}", jobs[platform].as_str().unwrap())).await;
            assert_eq!((own["platform"].as_str(), own["total"].as_u64()), (Some(platform), Some(n)), "{own}");
            assert_eq!(own["successes"], n);
            let c = wait_done(&e.gateway, family, n).await;
            assert_eq!((c.accepted, c.successes, c.pending), (n, n, 0), "{platform}: {c:?}");
            let r = e.get(report).await;
            assert_eq!((r["accepted"].as_u64(), r["successes"].as_u64()), (Some(n), Some(n)), "{report}: {r}");
        }

        // APNs: title and body in aps.alert, the image beside aps with
        // mutable-content, shared and own data beside aps, the badge in aps.
        for i in 0..500 {
            let token = apns_token("a0a0", i);
            assert_eq!(e.apns.ledger.token(&token).deliveries, 1, "{token}");
            let seen = e.apns.ledger.request(&token).unwrap();
            assert_eq!(seen.header("apns-collapse-id"), Some("order-42"));
            let mut aps = obj(json!({"alert": {"title": "Order update", "body": "Your order moved"},
                                      "sound": "default", "thread-id": "orders", "mutable-content": 1}));
            if let (_, Some(badge)) = personal(i) {
                aps.insert("badge".into(), badge.into());
            }
            let mut want = expected_data(i);
            want.insert("image".into(), json!("https://img.example/o.png"));
            want.insert("aps".into(), Value::Object(aps));
            assert_eq!(seen.json(), Value::Object(want), "APNs {i}");
        }
        // FCM v1: message.notification, message.data (strings), the blocks;
        // a badge in android.notification and the apns block.
        for i in 0..500 {
            let token = fcm_token(i);
            assert_eq!(e.fcm.ledger.token(&token).deliveries, 1, "{token}");
            let m = e.fcm.ledger.request(&token).unwrap().json()["message"].clone();
            assert_eq!(m["token"], token.as_str());
            assert_eq!(m["notification"], json!({"title": "Order update", "body": "Your order moved",
                                                 "image": "https://img.example/o.png"}));
            assert_eq!(m["data"], Value::Object(expected_data(i)), "FCM {i}: {m}");
            assert_eq!(m["fcm_options"], json!({"analytics_label": "orders"}));
            assert_eq!(m["android"]["direct_boot_ok"], true, "{m}");
            match personal(i).1 {
                Some(badge) => {
                    assert_eq!(m["android"]["notification"]["notification_count"], badge, "{m}");
                    assert_eq!(m["apns"]["payload"]["aps"]["badge"], badge, "{m}");
                }
                None => {
                    assert!(m["android"].get("notification").is_none(), "{m}");
                    assert!(m.get("apns").is_none(), "{m}");
                }
            }
        }
        // HMS: message.notification, message.data as the JSON text of the
        // data, the badge as set_num in place of the block's add_num.
        for i in 0..100 {
            let token = hms_token(i);
            let got = e.hms.inbox.messages(&token);
            assert_eq!(got.len(), 1, "{token}");
            let m = &got[0];
            let n = m.notification.as_ref().unwrap();
            assert_eq!((n.title.as_deref(), n.body.as_deref(), n.image.as_deref()),
                       (Some("Order update"), Some("Your order moved"), Some("https://img.example/o.png")));
            let data: Value = serde_json::from_str(m.data.as_deref().unwrap()).unwrap();
            assert_eq!(data, Value::Object(expected_data(i)), "HMS {i}");
            let android = m.android.as_ref().unwrap();
            assert_eq!((android["urgency"].as_str(), android["ttl"].as_str()), (Some("HIGH"), Some("3600s")));
            let badge = &android["notification"]["badge"];
            match personal(i).1 {
                Some(n) => assert_eq!(badge, &json!({"class": "com.example.Main", "set_num": n}), "HMS {i}"),
                None => assert_eq!(badge, &json!({"class": "com.example.Main", "add_num": 1}), "HMS {i}"),
            }
        }
        // Web Push: each subscription decrypts to {title, body, image, data}
        // with its own data merged and its badge as app_badge.
        for i in 0..100 {
            let id = format!("ok/w{i}");
            let got = e.webpush.inbox.received(&id);
            assert_eq!(got.len(), 1, "{id}");
            let mut want = obj(json!({"title": "Order update", "body": "Your order moved",
                                      "image": "https://img.example/o.png"}));
            want.insert("data".into(), Value::Object(expected_data(i)));
            if let (_, Some(badge)) = personal(i) {
                want.insert("app_badge".into(), badge.into());
            }
            let plain: Value = serde_json::from_slice(&got[0]).unwrap();
            assert_eq!(plain, Value::Object(want), "Web Push {i}");
        }
        assert_eq!(e.webpush.inbox.total(), 100);
        assert_eq!(e.webpush.inbox.header_count("urgency=high"), 100);
        assert_eq!(e.webpush.inbox.header_count("topic=orders"), 100);
        // The 80 without fields of their own got the shared message, byte for byte.
        let mut shared = obj(json!({"title": "Order update", "body": "Your order moved",
                                    "image": "https://img.example/o.png"}));
        shared.insert("data".into(), Value::Object(expected_data(0)));
        assert_eq!(e.webpush.inbox.count(&serde_json::to_vec(&shared).unwrap()), 80);
    })
    .await
    .unwrap();
}

/// A gateway with APNs and FCM only. Targets for HMS, Web Push and legacy
/// GCM are refused as `PlatformNotConfigured`; malformed targets each get
/// their own reason at their own index; a device named twice (with or
/// without fields of its own, in either order) gets one message, with the
/// first target's fields; the rest are sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfigured_platforms_and_malformed_targets_are_refused_one_by_one() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let e = env(
            Platforms {
                hms: false,
                webpush: false,
                ..ALL
            },
            |_| {},
        )
        .await;
        let t = |i: usize| apns_token("b0b0", i);
        let f = fcm_token;
        let sub = e.webpush.subscription("ok", "nowhere");
        let targets = json!([
            /* 0 */ {"apns": t(0)},
            /* 1 */ {"hms": hms_token(1)},
            /* 2 */ "just-a-string",
            /* 3 */ {"apns": t(3), "fcm": f(3)},
            /* 4 */ {"apns": t(4), "colour": "red"},
            /* 5 */ {"apns": "not-hex-at-all"},
            /* 6 */ {"fcm": f(6), "data": [1, 2]},
            /* 7 */ {"apns": t(7), "badge": -1},
            /* 8 */ {"fcm": f(8)},
            /* 9 */ {"hms": hms_token(9), "data": {"a": "b"}},
            /* 10 */ {"webpush": sub},
            /* 11 */ {"apns": 42},
            /* 12 */ {"data": {"a": "b"}},
            /* 13 */ {"fcm": f(13), "data": {"big": "x".repeat(3000)}},
            /* 14 */ {"apns": t(0)},
            /* 15 */ {"apns": t(15), "data": {"who": "first"}, "badge": 2},
            /* 16 */ {"apns": t(15)},
            /* 17 */ {"fcm": f(17)},
            /* 18 */ {"fcm": f(17), "data": {"who": "second"}},
            /* 19 */ {"apns": t(19), "badge": 1.5},
            /* 20 */ {"gcm": "legacy-device"},
            /* 21 */ {"fcm": "has space"},
            /* 22 */ {},
            /* 23 */ {"apns": t(23), "data": null},
        ]);
        let body = json!({"targets": targets, "notification": {"title": "T", "body": "B"},
                          "data": {"shared": "yes"}});
        let (status, answer) = e.post("/send", &body).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["accepted"], 5, "{answer}");
        assert_eq!(answer["accepted_by_platform"], json!({"apns": 3, "fcm": 2}));
        assert_eq!(answer["duplicates"], 3, "{answer}");
        let want: BTreeMap<u64, (Option<&str>, &str)> = [
            (1, (Some("hms"), "PlatformNotConfigured")),
            (2, (None, "BadTarget")),
            (4, (Some("apns"), "BadTarget")),
            (5, (Some("apns"), "BadDeviceToken")),
            (6, (Some("fcm"), "BadTargetData")),
            (7, (Some("apns"), "BadTargetData")),
            (9, (Some("hms"), "PlatformNotConfigured")),
            (10, (Some("webpush"), "PlatformNotConfigured")),
            (11, (Some("apns"), "BadTarget")),
            (12, (None, "BadTarget")),
            (13, (Some("fcm"), "TargetDataTooLarge")),
            (19, (Some("apns"), "BadTargetData")),
            (20, (Some("gcm"), "PlatformNotConfigured")),
            (21, (Some("fcm"), "InvalidRegistration")),
            (22, (None, "BadTarget")),
        ]
        .into();
        let mut got: BTreeMap<u64, (Option<&str>, &str)> = BTreeMap::new();
        for r in answer["rejected"].as_array().unwrap() {
            let index = r["target"].as_u64().unwrap();
            let entry = (r["platform"].as_str(), r["reason"].as_str().unwrap());
            assert!(got.insert(index, entry).is_none(), "{index} listed twice: {answer}");
        }
        // Two platform keys: refused, under whichever key was read first.
        let two = got.remove(&3).unwrap_or_else(|| panic!("target 3 not refused: {answer}"));
        assert_eq!(two.1, "BadTarget");
        assert_eq!(got, want, "{answer}");
        assert_eq!(answer["rejected_count"], 16);

        let g = e.group_done(answer["job"].as_str().unwrap()).await;
        assert_eq!((g["total"].as_u64(), g["successes"].as_u64()), (Some(5), Some(5)), "{g}");
        assert_eq!(wait_done(&e.gateway, pushgate::apns::FAMILY, 3).await.accepted, 3);
        assert_eq!(wait_done(&e.gateway, pushgate::fcm::FAMILY, 2).await.accepted, 2);
        for token in [t(0), t(15), t(23)] {
            assert_eq!(e.apns.ledger.token(&token).deliveries, 1, "{token}");
        }
        for token in [t(3), t(4), t(7), t(19)] {
            assert_eq!(e.apns.ledger.token(&token).attempts, 0, "{token}");
        }
        for token in [f(8), f(17)] {
            assert_eq!(e.fcm.ledger.token(&token).deliveries, 1, "{token}");
        }
        for token in [f(3), f(6), f(13)] {
            assert_eq!(e.fcm.ledger.token(&token).attempts, 0, "{token}");
        }
        // A duplicate keeps the first target's fields.
        let first = e.apns.ledger.request(&t(15)).unwrap().json();
        assert_eq!((first["who"].as_str(), first["aps"]["badge"].as_u64()), (Some("first"), Some(2)), "{first}");
        let plain = e.fcm.ledger.request(&f(17)).unwrap().json();
        assert_eq!(plain["message"]["data"], json!({"shared": "yes"}), "{plain}");
        // The unconfigured platforms' services heard nothing.
        assert_eq!(pushgate::mock::hms::Inbox::get(&e.hms.inbox.delivered), 0);
        assert_eq!(e.webpush.inbox.total(), 0);

        // Only unconfigured targets: 400, each listed, nothing queued.
        let (status, answer) = e
            .post("/send", &json!({"targets": [{"hms": hms_token(1)}, {"webpush": e.webpush.subscription("ok", "x")}],
                                    "notification": {"title": "T"}}))
            .await;
        assert_eq!((status, answer["error"].as_str()), (400, Some("no_valid_targets")), "{answer}");
        assert_eq!(answer["rejected"], json!([
            {"target": 0, "platform": "hms", "reason": "PlatformNotConfigured"},
            {"target": 1, "platform": "webpush", "reason": "PlatformNotConfigured"},
        ]));
        // A bad block or top-level field refuses the whole request.
        for (extra, field) in [
            (json!({"apns": {"topc": "x"}}), "apns.topc"),
            (json!({"colour": "red"}), "colour"),
            (json!({"notification": {"title": 5}}), "notification.title"),
        ] {
            let mut body = json!({"targets": [{"apns": t(40)}, {"fcm": f(40)}], "notification": {"title": "T"}});
            for (k, v) in extra.as_object().unwrap() {
                body[k] = v.clone();
            }
            let (status, answer) = e.post("/send", &body).await;
            assert_eq!(status, 400, "{body}: {answer}");
            assert_eq!(answer["field"], field, "{answer}");
        }
        let apns = e.gateway.state.backend.reports().family(pushgate::apns::FAMILY).counters();
        let fcm = e.gateway.state.backend.reports().family(pushgate::fcm::FAMILY).counters();
        assert_eq!((apns.accepted, fcm.accepted), (3, 2), "nothing more was queued");
    })
    .await
    .unwrap();
}

/// `"webpush": {"declarative": true, "navigate": …}`: each subscription
/// decrypts to Declarative Web Push JSON (RFC 8030 magic number, the
/// notification with its navigate URL, the data, a target's own data and
/// badge); without `navigate` the request is a 400 naming the field, and
/// nothing is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declarative_web_push_through_send_and_its_400_without_navigate() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let e = env(
            Platforms {
                apns: false,
                fcm: false,
                hms: false,
                webpush: true,
            },
            |_| {},
        )
        .await;
        let body = json!({
            "targets": [
                {"webpush": e.webpush.subscription("ok", "d1"), "data": {"seen": "no"}, "badge": 4},
                {"webpush": e.webpush.subscription("ok", "d2")},
            ],
            "notification": {"title": "Order shipped", "body": "On its way",
                             "image": "https://img.example/box.png"},
            "data": {"order": "42"},
            "webpush": {"declarative": true, "navigate": "https://shop.example/orders/42"},
        });
        let (status, answer) = e.post("/send", &body).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["accepted_by_platform"], json!({"webpush": 2}));
        let g = e.group_done(answer["job"].as_str().unwrap()).await;
        assert_eq!(g["successes"], 2, "{g}");
        let notification = json!({"title": "Order shipped", "body": "On its way",
                                  "navigate": "https://shop.example/orders/42",
                                  "image": "https://img.example/box.png"});
        let plain =
            json!({"web_push": 8030, "notification": notification, "data": {"order": "42"}});
        let own = json!({"web_push": 8030, "notification": notification,
                         "data": {"order": "42", "seen": "no"}, "app_badge": 4});
        for (id, want) in [("ok/d1", &own), ("ok/d2", &plain)] {
            let got = e.webpush.inbox.received(id);
            assert_eq!(got.len(), 1, "{id}");
            let text: Value = serde_json::from_slice(&got[0]).unwrap();
            assert_eq!(&text, want, "{id}: {}", String::from_utf8_lossy(&got[0]));
        }
        // The shared one byte for byte: compact JSON, nothing else.
        assert_eq!(
            e.webpush.inbox.count(&serde_json::to_vec(&plain).unwrap()),
            1
        );

        let mut bad = body.clone();
        bad["webpush"] = json!({"declarative": true});
        bad["targets"] = json!([{"webpush": e.webpush.subscription("ok", "d3")}]);
        let (status, answer) = e.post("/send", &bad).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["field"], "webpush.navigate", "{answer}");
        let report = e.get("/webpush/report").await;
        assert_eq!(report["accepted"], 2, "{report}");
        assert_eq!(e.webpush.inbox.total(), 2);
        assert!(e.webpush.inbox.received("ok/d3").is_empty());
    })
    .await
    .unwrap();
}

/// The fix `POST /send` needed on Web Push serves its streams too: the
/// Web Push front reads a body without `subscriptions` (a stream's first
/// line, or `/send`'s composed body), so an NDJSON `/webpush/send` whose
/// header has only the message is taken, and each subscription line
/// delivered; a JSON body without subscriptions is still a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_push_stream_header_needs_no_subscriptions() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let e = env(
            Platforms {
                apns: false,
                fcm: false,
                hms: false,
                webpush: true,
            },
            |_| {},
        )
        .await;
        let mut lines = json!({"payload": {"title": "streamed"}}).to_string();
        for i in 0..3 {
            lines.push('\n');
            lines.push_str(&e.webpush.subscription("ok", &format!("s{i}")).to_string());
        }
        lines.push('\n');
        let r = e
            .client
            .post(e.url("/webpush/send"))
            .header("content-type", "application/x-ndjson")
            .body(lines)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let answer: Value = r.json().await.unwrap();
        assert_eq!(
            (status, answer["accepted"].as_u64()),
            (202, Some(3)),
            "{answer}"
        );
        e.group_done(answer["job"].as_str().unwrap()).await;
        let plaintext = serde_json::to_vec(&json!({"title": "streamed"})).unwrap();
        assert_eq!(e.webpush.inbox.count(&plaintext), 3);
        let (status, answer) = e.post("/webpush/send", &json!({"payload": "x"})).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("no_tokens")),
            "{answer}"
        );
    })
    .await
    .unwrap();
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// 100,000 APNs targets, each with its own small data (`{"n": "<i>"}`), on
/// the disk store (the default backend) with a message padded to about a
/// kilobyte: the store grows by a trailer per target, far less than 100,000
/// copies of the message would take, and every device receives the message
/// with its own `n`. The figures are printed (`-- --nocapture`); only the
/// bound is asserted. RSS is not measured: the gateway, the mock and the
/// 10 MB request all live in this test's process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personalising_100k_targets_stores_the_message_once_not_per_target() {
    const N: usize = 100_000;
    tokio::time::timeout(Duration::from_secs(240), async {
        let data = scratch("every-disk").join("data");
        let data_dir = data.display().to_string();
        let e = env(
            Platforms {
                apns: true,
                fcm: false,
                hms: false,
                webpush: false,
            },
            move |file| {
                file.queue.backend = "disk".into();
                file.queue.data_dir = data_dir;
            },
        )
        .await;
        let before = dir_bytes(&data);
        let pad = "p".repeat(900);
        // The body is written as text: 100k `json!` targets would cost the
        // test more than the gateway.
        let mut body = String::with_capacity(N * 100);
        body.push_str(r#"{"targets":["#);
        for i in 0..N {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&format!(r#"{{"apns":"{}","data":{{"n":"{i}"}}}}"#, apns_token("c0c0", i)));
        }
        body.push_str(&format!(
            r#"],"notification":{{"title":"Weekly digest","body":"Five things you missed"}},"data":{{"pad":"{pad}"}}}}"#
        ));
        let r = e
            .client
            .post(e.url("/send"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["accepted"], N, "{answer}");
        // Written (and synced) before the 202: what the job takes on disk,
        // at least its 100k tokens (so the measure cannot come out empty).
        let growth = dir_bytes(&data).saturating_sub(before);
        assert!(growth >= (N * 64) as u64, "the store grew {growth} bytes for {N} tokens");

        let g = e.group_done(answer["job"].as_str().unwrap()).await;
        assert_eq!((g["successes"].as_u64(), g["state"].as_str()), (Some(N as u64), Some("done")), "{g}");
        assert_eq!(g["by_platform"]["apns"]["successes"], N);
        let c = wait_done(&e.gateway, pushgate::apns::FAMILY, N as u64).await;
        assert_eq!(c.successes, N as u64);
        let after = dir_bytes(&data);

        // Every device once; each kept request (the mock keeps the first
        // 4,096 tokens' last request) carries that device's own n.
        let ledger = e.apns.ledger.tokens();
        let mut message = 0;
        let mut sampled = 0;
        for i in 0..N {
            let token = apns_token("c0c0", i);
            assert_eq!(ledger.get(&token).map(|r| r.deliveries), Some(1), "{token}");
            if let Some(seen) = e.apns.ledger.request(&token) {
                let p = seen.json();
                assert_eq!(p["n"], i.to_string(), "{token}: {p}");
                assert_eq!(p["pad"], pad.as_str());
                assert_eq!(p["aps"]["alert"]["title"], "Weekly digest");
                message = message.max(seen.body.len());
                sampled += 1;
            }
        }
        assert!(sampled >= 1000, "only {sampled} requests kept by the mock");
        let copies = (N * message) as u64;
        println!(
            "personalisation on disk: {N} targets, a {message}-byte message at the device; \
             the store grew {growth} bytes at the 202 ({:.1} bytes per target, {:.1}% of {copies} bytes for {N} copies); \
             {after} bytes in the store once done (from {before})",
            growth as f64 / N as f64,
            100.0 * growth as f64 / copies as f64,
        );
        assert!(
            growth * 10 < copies * 4,
            "the store grew {growth} bytes: not far below {N} copies of a {message}-byte message ({copies})"
        );
        let _ = std::fs::remove_dir_all(data.parent().unwrap());
        let _ = std::fs::remove_dir_all(&e.dir);
    })
    .await
    .unwrap();
}

/// `?wait` answers 200 `done` with each target's outcome and platform; an
/// `Idempotency-Key` retry answers the first answer (same group) and sends
/// nothing again; `DELETE /jobs/{group}` of a group due in an hour cancels
/// every platform's part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_idempotency_and_cancel_work_on_the_whole_group() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let e = env(Platforms { hms: false, ..ALL }, |_| {}).await;
        let targets = |tag: &str, n: usize| -> Vec<Value> {
            let mut t = Vec::new();
            for i in 0..n {
                t.push(json!({"apns": apns_token(tag, i), "data": {"i": i.to_string()}}));
                t.push(json!({"fcm": format!("{tag}-fcm-{i}")}));
                t.push(json!({"webpush": e.webpush.subscription("ok", &format!("{tag}-{i}")), "badge": 1}));
            }
            t
        };
        let counts = || {
            [pushgate::apns::FAMILY, pushgate::fcm::FAMILY, pushgate::webpush::FAMILY]
                .map(|f: Family| e.gateway.state.backend.reports().family(f).counters().accepted)
        };

        // ?wait: 200 `done` with nine results. The longest wait allowed, so
        // the answer does not hang on how fast this machine sends nine
        // messages (the shape is the point, not the speed).
        let body = json!({"targets": targets("d1d1", 3), "notification": {"title": "T", "body": "B"}});
        let (status, answer) = e.post_keyed("/send?wait=30", Some("every-wait"), &body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["state"], "done");
        let results = answer["results"].as_array().unwrap();
        assert_eq!(results.len(), 9, "{answer}");
        let mut by: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for r in results {
            assert_eq!(r["outcome"], "success", "{r}");
            by.entry(r["platform"].as_str().unwrap()).or_default().push(r);
        }
        assert_eq!(by.keys().copied().collect::<Vec<_>>(), ["apns", "fcm", "webpush"]);
        // Tokens as sent: a target's own fields are not part of its token.
        let shown: HashSet<String> = by["apns"].iter().map(|r| r["token"].as_str().unwrap().to_owned()).collect();
        let sent: HashSet<String> = (0..3).map(|i| apns_token("d1d1", i)).collect();
        assert_eq!(shown, sent);
        assert!(by["webpush"].iter().all(|r| r["endpoint"].as_str().unwrap().contains("/push/ok/d1d1-")));
        assert!(by["fcm"].iter().all(|r| r["token"].as_str().unwrap().starts_with("d1d1-fcm-")));
        // The waited answer is what the key replays.
        let (again, replay) = e.post_keyed("/send?wait=30", Some("every-wait"), &body).await;
        assert_eq!((again, &replay["job"], replay["replayed"].as_bool()), (200, &answer["job"], Some(true)), "{replay}");
        assert_eq!(replay["results"].as_array().map(Vec::len), Some(9));
        assert_eq!(counts(), [3, 3, 3]);

        // Idempotency-Key without wait: the retry gets the same group and
        // queues nothing.
        let body = json!({"targets": targets("e1e1", 4), "data": {"k": "v"}});
        let (status, first) = e.post_keyed("/send", Some("every-1"), &body).await;
        assert_eq!(status, 202, "{first}");
        let group = first["job"].as_str().unwrap().to_owned();
        e.group_done(&group).await;
        let (again, replay) = e.post_keyed("/send", Some("every-1"), &body).await;
        assert_eq!(again, 202, "{replay}");
        assert_eq!(replay["job"], group.as_str());
        assert_eq!(replay["jobs"], first["jobs"]);
        assert_eq!(replay["replayed"], true);
        let (reused, other) = e.post_keyed("/send", Some("every-1"), &json!({"targets": targets("e2e2", 1), "data": {"k": "v"}})).await;
        assert_eq!((reused, other["error"].as_str()), (422, Some("idempotency_key_reused")), "{other}");
        assert_eq!(counts(), [7, 7, 7]);
        for i in 0..4 {
            assert_eq!(e.apns.ledger.token(&apns_token("e1e1", i)).deliveries, 1);
            assert_eq!(e.fcm.ledger.token(&format!("e1e1-fcm-{i}")).deliveries, 1);
            assert_eq!(e.webpush.inbox.received(&format!("ok/e1e1-{i}")).len(), 1);
        }

        // Due in an hour: scheduled as a whole, cancelled as a whole.
        let at = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let body = json!({"targets": targets("f1f1", 2), "notification": {"title": "Later"}, "send_at": at});
        let (status, answer) = e.post("/send", &body).await;
        assert_eq!(status, 202, "{answer}");
        assert!((3500..=3600).contains(&answer["scheduled_in_s"].as_u64().unwrap()), "{answer}");
        let group = answer["job"].as_str().unwrap().to_owned();
        let g = e.get(&format!("/jobs/{group}")).await;
        assert_eq!((g["state"].as_str(), g["pending"].as_u64()), (Some("scheduled"), Some(6)), "{g}");
        assert_balanced(&g);
        let cancelled = e.delete(&format!("/jobs/{group}")).await;
        assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
        let g = e.group_done(&group).await;
        assert_eq!((g["state"].as_str(), g["cancelled"].as_u64(), g["total"].as_u64()), (Some("cancelled"), Some(6), Some(6)), "{g}");
        for platform in ["apns", "fcm", "webpush"] {
            let part = &g["by_platform"][platform];
            assert_eq!((part["state"].as_str(), part["cancelled"].as_u64()), (Some("cancelled"), Some(2)), "{g}");
            let own = e.get(&format!("/jobs/{}", answer["jobs"][platform].as_str().unwrap())).await;
            assert_eq!(own["state"], "cancelled", "{own}");
        }
        for i in 0..2 {
            assert_eq!(e.apns.ledger.token(&apns_token("f1f1", i)).attempts, 0);
            assert_eq!(e.fcm.ledger.token(&format!("f1f1-fcm-{i}")).attempts, 0);
            assert!(e.webpush.inbox.received(&format!("ok/f1f1-{i}")).is_empty());
        }
        for family in [pushgate::apns::FAMILY, pushgate::fcm::FAMILY, pushgate::webpush::FAMILY] {
            let c = wait_done(&e.gateway, family, 9).await;
            assert_eq!((c.accepted, c.successes, c.cancelled), (9, 7, 2), "{c:?}");
        }
    })
    .await
    .unwrap();
}

/// A `redis-server` of the test's own, nothing persisted; killed when dropped.
struct Redis(std::process::Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn redis() -> (Redis, String) {
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
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (Debian package redis-server; scripts/test installs it)");
    let redis = Redis(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "redis-server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (redis, format!("redis://127.0.0.1:{port}"))
}

/// `queue.backend = "redis"`: a group of personalised targets travels
/// through the shared stream (a Web Push target's binary keys and its own
/// fields included) and each device still gets its own data; the group's
/// books are kept in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personalised_targets_go_through_the_redis_queue() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (redis, url) = redis().await;
        let e = env(Platforms { hms: false, ..ALL }, move |file| {
            file.queue.backend = "redis".into();
            file.queue.redis_url = url;
            file.queue.stream = format!("every-{}", fastrand::u32(..));
        })
        .await;
        let mut targets = Vec::new();
        for i in 0..50 {
            targets.push(target("apns", json!(apns_token("e0e0", i)), i));
            targets.push(target("fcm", json!(fcm_token(i)), i));
            if i < 20 {
                targets.push(target(
                    "webpush",
                    e.webpush.subscription("ok", &format!("r{i}")),
                    i,
                ));
            }
        }
        let mut body = mixed_common();
        body.as_object_mut().unwrap().remove("hms");
        body["targets"] = json!(targets);
        let (status, answer) = e.post("/send", &body).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(
            answer["accepted_by_platform"],
            json!({"apns": 50, "fcm": 50, "webpush": 20})
        );
        let g = e.group_done(answer["job"].as_str().unwrap()).await;
        assert_eq!(
            (g["state"].as_str(), g["successes"].as_u64()),
            (Some("done"), Some(120)),
            "{g}"
        );
        for i in 0..50 {
            let apns = e
                .apns
                .ledger
                .request(&apns_token("e0e0", i))
                .unwrap()
                .json();
            let badge = apns["aps"].get("badge").and_then(Value::as_u64);
            assert_eq!(badge, personal(i).1.map(u64::from), "APNs {i}: {apns}");
            for (k, v) in expected_data(i) {
                assert_eq!(apns[&k], v, "APNs {i}: {apns}");
            }
            let fcm = e.fcm.ledger.request(&fcm_token(i)).unwrap().json();
            assert_eq!(
                fcm["message"]["data"],
                Value::Object(expected_data(i)),
                "FCM {i}"
            );
        }
        for i in 0..20 {
            let got = e.webpush.inbox.received(&format!("ok/r{i}"));
            assert_eq!(got.len(), 1, "r{i}");
            let plain: Value = serde_json::from_slice(&got[0]).unwrap();
            assert_eq!(
                plain["data"],
                Value::Object(expected_data(i)),
                "Web Push {i}"
            );
            assert_eq!(
                plain.get("app_badge").and_then(Value::as_u64),
                personal(i).1.map(u64::from)
            );
        }
        // The family's books, kept in Redis, agree with the group's.
        let r = e.get("/webpush/report").await;
        assert_eq!(
            (r["accepted"].as_u64(), r["successes"].as_u64()),
            (Some(20), Some(20)),
            "{r}"
        );
        drop(e);
        drop(redis);
    })
    .await
    .unwrap();
}
