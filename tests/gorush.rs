//! gorush's REST API end to end: gorush's own README examples posted to
//! `/api/push` reach the mock APNs and mock FCM, and every documented field
//! lands where gorush puts it (header or payload), read from the mock's
//! ledger. Also `/api/stat/*`, bad input, and topics on `/gcm/send`.
//!
//! The README examples are posted unchanged except for the device tokens:
//! gorush's placeholders (`"ios_device_token"`) are not tokens APNs would
//! take, so each is replaced by a real-looking one. No timing asserts.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use pushgate::config::FileConfig;
use pushgate::mock::{self, Faults, MockHandle};
use serde_json::{Value, json};

/// A gateway with both APNs and Google (through `api`) on two mocks.
struct Both {
    apns: ApnsEnv,
    fcm: MockHandle,
}

async fn both(api: GoogleApi, tweak: impl FnOnce(&mut FileConfig) + Send + 'static) -> Both {
    init();
    let dir = scratch("gorush-fcm");
    let pki = mock::tls::TestPki::generate().unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let account = mock::fcm::ServiceAccountFixture::generate("pushgate-test").unwrap();
    let options = mock::fcm::MockFcmOptions::new(&account, SERVER_KEY, &pki);
    let fcm = mock::fcm::start(options).await.unwrap();
    let account_file = dir.join("service-account.json");
    std::fs::write(
        &account_file,
        account.to_json(&format!("{}/token", fcm.url())),
    )
    .unwrap();
    let url = fcm.url();
    let apns = apns_env(ApnsSetup {
        tweak: Box::new(move |file: &mut FileConfig| {
            match api {
                GoogleApi::V1 => {
                    file.fcm = Some(pushgate::config::FcmSection {
                        service_account_file: account_file.display().to_string(),
                        endpoint: url,
                        ca_file: ca_file.display().to_string(),
                        ..Default::default()
                    })
                }
                GoogleApi::Legacy => {
                    file.gcm = Some(pushgate::config::GcmSection {
                        server_key: pushgate::config::Secret::new(SERVER_KEY),
                        endpoint: format!("{url}/fcm/send"),
                        ca_file: ca_file.display().to_string(),
                        ..Default::default()
                    })
                }
            }
            tweak(file);
        }),
        ..ApnsSetup::default()
    })
    .await;
    Both { apns, fcm }
}

impl Both {
    async fn push(&self, body: Value) -> (u16, Value) {
        let (status, answer, _) = self.apns.post_json("/api/push", &body).await;
        (status, answer)
    }

    async fn done(&self, apple: u64, google: u64) {
        wait_done(&self.apns.gateway, pushgate::apns::FAMILY, apple).await;
        wait_done(&self.apns.gateway, pushgate::fcm::FAMILY, google).await;
    }

    fn apns_seen(&self, token: &str) -> pushgate::mock::ledger::SeenRequest {
        self.apns
            .mock
            .ledger
            .request(token)
            .unwrap_or_else(|| panic!("mock APNs never saw {token}"))
    }

    fn fcm_seen(&self, token: &str) -> pushgate::mock::ledger::SeenRequest {
        self.fcm
            .ledger
            .request(token)
            .unwrap_or_else(|| panic!("mock FCM never saw {token}"))
    }
}

fn ios(i: usize) -> String {
    apns_token("a0a0", i)
}

fn android(i: usize) -> String {
    format!("android-{i}:APA91bH_example")
}

/// Replaces the README's placeholder tokens, keeping everything else.
fn with_tokens(mut body: Value, tokens: &[&[String]]) -> Value {
    for (n, t) in body["notifications"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .zip(tokens)
    {
        n["tokens"] = json!(t);
    }
    body
}

#[tokio::test]
async fn readme_ios_and_android_basics_are_delivered() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = both(GoogleApi::V1, |_| {}).await;
        let (i, a) = (vec![ios(1)], vec![android(1)]);
        let (status, answer) = env
            .push(with_tokens(
                json!({"notifications": [{
                    "tokens": ["ios_device_token"], "platform": 1,
                    "title": "Hello iOS", "message": "Hello World iOS!"
                }]}),
                &[&i],
            ))
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["success"], "ok");
        assert_eq!(answer["counts"], 1);
        assert_eq!(answer["logs"], json!([]));
        assert_eq!(answer["jobs"].as_array().unwrap().len(), 1);
        let (status, answer) = env
            .push(with_tokens(
                json!({"notifications": [{
                    "tokens": ["android_device_token"], "platform": 2,
                    "title": "Hello Android", "message": "Hello World Android!"
                }]}),
                &[&a],
            ))
            .await;
        assert_eq!(status, 200, "{answer}");
        env.done(1, 1).await;

        let seen = env.apns_seen(&i[0]);
        assert_eq!(seen.header("apns-topic"), Some("com.example.test"));
        assert_eq!(seen.header("apns-push-type"), Some("alert"));
        assert_eq!(
            seen.json(),
            json!({"aps": {"alert": {"title": "Hello iOS", "body": "Hello World iOS!"}}})
        );
        let seen = env.fcm_seen(&a[0]);
        assert_eq!(
            seen.json()["message"],
            json!({"token": a[0], "notification": {"title": "Hello Android", "body": "Hello World Android!"}})
        );
        // The job carries the notification's outcome.
        let job = answer["jobs"][0].as_str().unwrap();
        let (_, status) = env.apns.get(&format!("/jobs/{job}")).await;
        assert_eq!((status["platform"].as_str(), status["successes"].as_u64()), (Some("fcm"), Some(1)));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn readme_multiple_platforms_make_one_job_each() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = both(GoogleApi::Legacy, |_| {}).await;
        let (i, a) = (vec![ios(2)], vec![android(2)]);
        let (status, answer) = env
            .push(with_tokens(
                json!({"notifications": [
                    {"tokens": ["ios_token"], "platform": 1, "message": "Hello iOS!"},
                    {"tokens": ["android_token"], "platform": 2, "message": "Hello Android!"}
                ]}),
                &[&i, &a],
            ))
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["counts"], 2);
        let jobs = answer["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), 2);
        assert_ne!(jobs[0], jobs[1]);
        env.done(1, 1).await;
        assert_eq!(
            env.apns_seen(&i[0]).json(),
            json!({"aps": {"alert": "Hello iOS!"}})
        );
        let legacy = env.fcm_seen(&a[0]).json();
        assert_eq!(legacy["registration_ids"], json!(a));
        assert_eq!(legacy["notification"], json!({"body": "Hello Android!"}));
        let (_, stat) = env.apns.get("/api/stat/app").await;
        assert_eq!(stat["ios"], json!({"push_success": 1, "push_error": 0}));
        assert_eq!(stat["android"], json!({"push_success": 1, "push_error": 0}));
        assert_eq!(stat["total_count"], 2);
        assert_eq!(stat["huawei"]["push_success"], 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn readme_critical_sounds_reach_aps_sound() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = both(GoogleApi::V1, |_| {}).await;
        let (a, b) = (vec![ios(3)], vec![ios(4)]);
        // "iOS Example": a sound dictionary with badge and message.
        let (status, answer) = env
            .push(with_tokens(
                json!({"notifications": [{
                    "tokens": ["token_a", "token_b"], "platform": 1,
                    "message": "You got your emails.", "badge": 9,
                    "sound": {"critical": 1, "name": "default", "volume": 1.0}
                }]}),
                &[&a],
            ))
            .await;
        assert_eq!(status, 200, "{answer}");
        // "iOS with Custom Sound": the sound given as an FCM-style apns payload.
        let (status, answer) = env
            .push(with_tokens(
                json!({"notifications": [{
                    "tokens": ["ios_device_token"], "platform": 1,
                    "title": "Important Alert", "message": "Critical notification",
                    "apns": {"payload": {"aps": {"sound": {"name": "custom.wav", "critical": 1, "volume": 0.8}}}}
                }]}),
                &[&b],
            ))
            .await;
        assert_eq!(status, 200, "{answer}");
        env.done(2, 0).await;
        assert_eq!(
            env.apns_seen(&a[0]).json(),
            json!({"aps": {"alert": "You got your emails.", "badge": 9,
                           "sound": {"critical": 1, "name": "default", "volume": 1.0}}})
        );
        assert_eq!(
            env.apns_seen(&b[0]).json(),
            json!({"aps": {"alert": {"title": "Important Alert", "body": "Critical notification"},
                           "sound": {"name": "custom.wav", "critical": 1, "volume": 0.8}}})
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn readme_live_activity_start_goes_out_as_liveactivity() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = both(GoogleApi::V1, |_| {}).await;
        let t = vec![ios(5)];
        let (status, answer) = env
            .push(with_tokens(
                json!({"notifications": [{
                    "tokens": ["push_to_start_token"], "platform": 1,
                    "push_type": "liveactivity",
                    "topic": "com.example.app.push-type.liveactivity",
                    "event": "start", "timestamp": 1685952000,
                    "content-state": {"homeScore": 0, "awayScore": 0, "minute": 1, "period": "1H"},
                    "attributes-type": "FootballMatchAttributes",
                    "attributes": {"homeTeam": "Team 1", "awayTeam": "Team 2", "league": "Premier League"},
                    "alert": {"title": "Team 1 vs Team 2", "body": "Kick-off! The match has started."}
                }]}),
                &[&t],
            ))
            .await;
        assert_eq!(status, 200, "{answer}");
        env.done(1, 0).await;
        let seen = env.apns_seen(&t[0]);
        assert_eq!(seen.header("apns-push-type"), Some("liveactivity"));
        assert_eq!(seen.header("apns-topic"), Some("com.example.app.push-type.liveactivity"));
        assert_eq!(
            seen.json(),
            json!({"aps": {
                "event": "start", "timestamp": 1685952000,
                "content-state": {"homeScore": 0, "awayScore": 0, "minute": 1, "period": "1H"},
                "attributes-type": "FootballMatchAttributes",
                "attributes": {"homeTeam": "Team 1", "awayTeam": "Team 2", "league": "Premier League"},
                "alert": {"title": "Team 1 vs Team 2", "body": "Kick-off! The match has started."}
            }})
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn readme_topic_message_is_one_fcm_message_both_apis() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        for api in [GoogleApi::V1, GoogleApi::Legacy] {
            let env = both(api, |_| {}).await;
            let (status, answer) = env
                .push(json!({"notifications": [{
                    "topic": "highScores", "platform": 2,
                    "message": "This is a Firebase Cloud Messaging Topic Message"
                }]}))
                .await;
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["counts"], 1);
            env.done(0, 1).await;
            let seen = env.fcm_seen("/topics/highScores").json();
            let notification = json!({"body": "This is a Firebase Cloud Messaging Topic Message"});
            match api {
                GoogleApi::V1 => assert_eq!(
                    seen["message"],
                    json!({"topic": "highScores", "notification": notification})
                ),
                GoogleApi::Legacy => {
                    assert_eq!(seen["to"], "/topics/highScores");
                    assert_eq!(seen["notification"], notification);
                }
            }
            let job = answer["jobs"][0].as_str().unwrap();
            let (_, status) = env.apns.get(&format!("/jobs/{job}")).await;
            assert_eq!(
                (status["total"].as_u64(), status["successes"].as_u64()),
                (Some(1), Some(1)),
                "{status}"
            );
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn every_ios_field_reaches_apns_where_gorush_puts_it() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = both(GoogleApi::V1, |_| {}).await;
        let t = vec![ios(6)];
        let (status, answer) = env
            .push(json!({"notifications": [{
                "notif_id": "corr-42",
                "tokens": t, "platform": 1,
                "topic": "com.example.other", "push_type": "alert",
                "priority": "normal", "expiration": 4_102_444_800_i64,
                "collapse_id": "scores", "apns_id": "123e4567-e89b-12d3-a456-426614174000",
                "title": "T", "message": "M", "badge": 0, "category": "GAME",
                "thread-id": "thread-1", "url-args": ["a", "b"],
                "mutable_content": true, "content_available": true,
                "interruption_level": "time-sensitive",
                "sound": "ping.aiff", "volume": 0.5,
                "alert": {"subtitle": "S", "loc-key": "LK", "loc-args": ["x"],
                          "title-loc-key": "TLK", "title-loc-args": ["y"],
                          "action-loc-key": "PLAY", "launch-image": "l.png",
                          "action": "Go", "summary-arg": "sa", "summary-arg-count": 2},
                "relevance-score": 0.75, "stale-date": 1_700_000_100, "dismissal-date": 1_700_000_200,
                "data": {"key1": "welcome", "key2": 2}
            }]}))
            .await;
        assert_eq!(status, 200, "{answer}");
        env.done(1, 0).await;
        let seen = env.apns_seen(&t[0]);
        for (header, value) in [
            ("apns-topic", "com.example.other"),
            ("apns-push-type", "alert"),
            ("apns-priority", "5"),
            ("apns-expiration", "4102444800"),
            ("apns-collapse-id", "scores"),
        ] {
            assert_eq!(seen.header(header), Some(value), "{header}: {seen:?}");
        }
        assert_eq!(
            seen.json(),
            json!({
                "aps": {
                    "alert": {"title": "T", "body": "M", "subtitle": "S", "loc-key": "LK",
                              "loc-args": ["x"], "title-loc-key": "TLK", "title-loc-args": ["y"],
                              "action-loc-key": "PLAY", "launch-image": "l.png", "action": "Go",
                              "summary-arg": "sa", "summary-arg-count": 2},
                    "badge": 0, "category": "GAME", "thread-id": "thread-1", "url-args": ["a", "b"],
                    "mutable-content": 1, "content-available": 1,
                    "interruption-level": "time-sensitive",
                    "sound": {"name": "ping.aiff", "volume": 0.5},
                    "relevance-score": 0.75, "stale-date": 1_700_000_100, "dismissal-date": 1_700_000_200
                },
                "key1": "welcome", "key2": 2
            })
        );
        assert_eq!(answer["jobs"].as_array().unwrap().len(), 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn every_android_field_reaches_fcm_v1_and_legacy() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        for api in [GoogleApi::V1, GoogleApi::Legacy] {
            let env = both(api, |_| {}).await;
            let a = vec![android(7)];
            let (status, answer) = env
                .push(json!({"notifications": [{
                    "tokens": a, "platform": 2,
                    "title": "You got message", "message": "Hello World Android!",
                    "image": "https://example.com/i.png", "sound": "bell",
                    "notification": {"icon": "myicon", "color": "#112244", "tag": "t1",
                                     "click_action": "OPEN", "body_loc_key": "BLK",
                                     "body_loc_args": ["1"], "title_loc_key": "TLK",
                                     "title_loc_args": ["2"]},
                    "data": {"Nick": "Mario", "Room": 7},
                    "priority": "high", "collapse_key": "scores", "time_to_live": 60,
                    "restricted_package_name": "com.example.app",
                    "fcm_options": {"analytics_label": "example"},
                    "delay_while_idle": true
                }]}))
                .await;
            assert_eq!(status, 200, "{answer}");
            env.done(0, 1).await;
            let seen = env.fcm_seen(&a[0]).json();
            match api {
                GoogleApi::V1 => assert_eq!(
                    seen,
                    json!({"message": {
                        "token": a[0],
                        "data": {"Nick": "Mario", "Room": "7"},
                        "notification": {"title": "You got message", "body": "Hello World Android!",
                                         "image": "https://example.com/i.png"},
                        "android": {
                            "collapse_key": "scores", "priority": "HIGH", "ttl": "60s",
                            "restricted_package_name": "com.example.app",
                            "notification": {"icon": "myicon", "color": "#112244", "tag": "t1",
                                             "click_action": "OPEN", "body_loc_key": "BLK",
                                             "body_loc_args": ["1"], "title_loc_key": "TLK",
                                             "title_loc_args": ["2"], "sound": "bell"}
                        }
                    }})
                ),
                GoogleApi::Legacy => {
                    assert_eq!(seen["data"], json!({"Nick": "Mario", "Room": "7"}));
                    assert_eq!(seen["notification"]["icon"], "myicon");
                    assert_eq!(seen["notification"]["sound"], "bell");
                    assert_eq!(seen["notification"]["title"], "You got message");
                    assert_eq!(seen["priority"], "high");
                    assert_eq!(seen["collapse_key"], "scores");
                    assert_eq!(seen["time_to_live"], 60);
                    assert_eq!(seen["restricted_package_name"], "com.example.app");
                }
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn dry_run_is_validate_only_and_delivers_nothing() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = both(GoogleApi::V1, |_| {}).await;
        let a = vec![android(8)];
        let (status, answer) = env
            .push(json!({"notifications": [{"tokens": a, "platform": 2, "message": "x", "dry_run": true}]}))
            .await;
        assert_eq!(status, 200, "{answer}");
        env.done(0, 1).await;
        assert_eq!(env.fcm_seen(&a[0]).json()["validate_only"], true);
        assert_eq!(env.fcm.ledger.token(&a[0]).deliveries, 0);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_bad_notification_refuses_the_whole_request_and_queues_nothing() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = both(GoogleApi::V1, |file| file.gorush.max_notifications = 3).await;
        let good = json!({"tokens": [ios(9)], "platform": 1, "message": "ok"});
        let cases = [
            (
                json!({"tokens": [ios(9)], "platform": 1, "badge": "five"}),
                "badge",
            ),
            (
                json!({"tokens": [ios(9)], "platform": 1, "priority": "urgent"}),
                "priority",
            ),
            (
                json!({"tokens": [ios(9)], "platform": 1, "sound": {"loud": 1}}),
                "sound.loud",
            ),
            (
                json!({"tokens": ["zz"], "platform": 1, "message": "x"}),
                "tokens",
            ),
            (
                json!({"tokens": [], "platform": 1, "message": "x"}),
                "tokens",
            ),
            (
                json!({"platform": 2, "topic": "bad topic!", "message": "x"}),
                "topic",
            ),
            (json!({"tokens": ["t"], "platform": 2}), "data"),
            (
                json!({"tokens": ["t"], "platform": 2, "message": "x", "android": {}}),
                "android",
            ),
            (
                json!({"tokens": ["t"], "platform": 3, "message": "x"}),
                "platform",
            ),
            (
                json!({"tokens": ["t"], "platform": 9, "message": "x"}),
                "platform",
            ),
        ];
        for (bad, field) in cases {
            let (status, answer) = env.push(json!({"notifications": [good, bad]})).await;
            assert_eq!(status, 400, "{field}: {answer}");
            assert_eq!(
                (answer["index"].as_u64(), answer["field"].as_str()),
                (Some(1), Some(field)),
                "{answer}"
            );
            assert!(
                answer["message"]
                    .as_str()
                    .unwrap()
                    .contains("notifications[1]"),
                "{answer}"
            );
        }
        let (status, answer) = env
            .push(json!({"notifications": [{"tokens": ["t"], "platform": 3}]}))
            .await;
        assert_eq!(status, 400);
        assert!(
            answer["message"].as_str().unwrap().contains("Huawei"),
            "{answer}"
        );
        let (status, answer) = env
            .push(json!({"notifications": [good, good, good, good]}))
            .await;
        assert_eq!(
            (status, answer["message"].as_str()),
            (400, Some("Number of notifications(4) over limit(3)"))
        );
        let (status, answer) = env.push(json!({"nope": []})).await;
        assert_eq!(
            (status, answer["message"].as_str()),
            (400, Some("Missing notifications field."))
        );
        let (status, _) = env.push(json!({"notifications": []})).await;
        assert_eq!(status, 400);
        assert_eq!(env.apns.counters().accepted, 0, "nothing was queued");
        // gorush's /api/config is never served.
        let (status, _) = env.apns.get("/api/config").await;
        assert_eq!(status, 404);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn gorush_routes_use_the_api_keys_and_the_prefix_and_can_be_disabled() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = both(GoogleApi::V1, |file| {
            file.server.api_keys = vec![pushgate::config::Secret::new("k1-0123456789abcdef")];
            file.gorush.path_prefix = "/gorush".into();
        })
        .await;
        let (status, _) = env.apns.get("/gorush/api/stat/app").await;
        assert_eq!(status, 401);
        let r = env
            .apns
            .client
            .get(env.apns.url("/gorush/api/stat/go"))
            .bearer_auth("k1-0123456789abcdef")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let go: Value = r.json().await.unwrap();
        assert!(
            go["memory_rss_bytes"].as_u64().unwrap() > 0 && go["threads"].as_u64().unwrap() > 0,
            "{go}"
        );
        let r = env
            .apns
            .client
            .get(env.apns.url("/api/stat/app"))
            .bearer_auth("k1-0123456789abcdef")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "only under the prefix");

        let off = both(GoogleApi::V1, |file| file.gorush.enabled = false).await;
        let (status, _) = off
            .push(json!({"notifications": [{"tokens": [ios(1)], "platform": 1, "message": "x"}]}))
            .await;
        assert_eq!(status, 404);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn gcm_send_takes_a_topic_or_a_condition() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        for api in [GoogleApi::V1, GoogleApi::Legacy] {
            let env = google_env(api, Faults::default(), |_| {}).await;
            let condition = "'stock-GOOG' in topics && ('news' in topics || 'sports' in topics)";
            for body in [
                json!({"topic": "news", "payload": {"k": "v"}}),
                json!({"condition": condition, "notification": {"title": "hi"}}),
            ] {
                let r = env
                    .client
                    .post(env.url("/fcm/send"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                let answer: Value = r.json().await.unwrap();
                assert_eq!(answer["accepted"], 1, "{answer}");
            }
            let (status, answer) = env
                .post_gocm_form(
                    "/gcm/send",
                    &[],
                    r#"{"k":"v"}"#,
                    &[("topic", "/topics/forms")],
                )
                .await;
            assert_eq!(status, 202, "{answer}");
            let c = wait_done(&env.gateway, pushgate::fcm::FAMILY, 3).await;
            assert_eq!(c.successes, 3, "{c:?}");
            let news = env.mock.ledger.request("/topics/news").unwrap().json();
            let cond = env.mock.ledger.request(condition).unwrap().json();
            match api {
                GoogleApi::V1 => {
                    assert_eq!(news["message"]["topic"], "news");
                    assert_eq!(cond["message"]["condition"], condition);
                }
                GoogleApi::Legacy => {
                    assert_eq!(news["to"], "/topics/news");
                    assert_eq!(cond["condition"], condition);
                }
            }
            assert!(env.mock.ledger.request("/topics/forms").is_some());
            for (body, field) in [
                (
                    json!({"topic": "no spaces", "payload": {"k": "v"}}),
                    "topic",
                ),
                (
                    json!({"condition": "'a' in topics &&", "payload": {"k": "v"}}),
                    "condition",
                ),
                (
                    json!({"topic": "a", "condition": "'b' in topics", "payload": {"k": "v"}}),
                    "topic",
                ),
                (
                    json!({"topic": "a", "tokens": ["t"], "payload": {"k": "v"}}),
                    "tokens",
                ),
            ] {
                let r = env
                    .client
                    .post(env.url("/gcm/send"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 400);
                let answer: Value = r.json().await.unwrap();
                assert_eq!(answer["field"], field, "{answer}");
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn notif_id_reaches_the_job_status_and_the_webhook_and_survives_a_disk_restart() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        for backend in ["memory", "disk"] {
            let (url, events) = hook_receiver().await;
            let data_dir = scratch("gorush-notif-disk");
            let kept = std::sync::Arc::new(std::sync::Mutex::new(None::<FileConfig>));
            let keep = kept.clone();
            let env = both(GoogleApi::V1, move |f| {
                f.queue.backend = backend.into();
                f.queue.data_dir = data_dir.display().to_string();
                f.webhook = Some(pushgate::config::WebhookSection {
                    url,
                    secret: pushgate::config::Secret::new("webhook-secret-0123456789"),
                    batch_size: 10,
                    flush_ms: 20,
                    ..Default::default()
                });
                *keep.lock().unwrap() = Some(f.clone());
            })
            .await;
            let (i, a) = (vec![ios(20), ios(21)], vec![android(20)]);
            let (status, answer) = env
                .push(json!({"notifications": [
                    {"notif_id": "corr-ios", "tokens": i, "platform": 1, "message": "hi"},
                    {"notif_id": "corr-android", "tokens": a, "platform": 2, "message": "hi"},
                    {"tokens": [ios(22)], "platform": 1, "message": "no id"}
                ]}))
                .await;
            assert_eq!(status, 200, "{backend}: {answer}");
            let jobs: Vec<String> = answer["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j.as_str().unwrap().to_owned())
                .collect();
            env.done(3, 1).await;
            let want = [Some("corr-ios"), Some("corr-android"), None];
            for (job, want) in jobs.iter().zip(want) {
                let (code, status) = env.apns.get(&format!("/jobs/{job}")).await;
                assert_eq!(code, 200, "{backend}: {status}");
                assert_eq!(status["notif_id"].as_str(), want, "{backend}: {status}");
                assert_eq!(
                    status.get("notif_id").is_some(),
                    want.is_some(),
                    "{backend}: absent = omitted"
                );
            }
            let got = events_for(&events, 4).await;
            for e in &got {
                let job = e["job"].as_str().unwrap();
                let k = jobs.iter().position(|j| j == job).unwrap();
                assert_eq!(e["notif_id"].as_str(), want[k], "{backend}: {e}");
                assert_eq!(
                    e.get("notif_id").is_some(),
                    want[k].is_some(),
                    "{backend}: {e}"
                );
            }
            if backend == "disk" {
                let Both { apns, fcm: _fcm } = env;
                let _ = apns
                    .gateway
                    .shutdown(std::time::Duration::from_secs(5))
                    .await;
                let file = kept.lock().unwrap().take().unwrap();
                let again = pushgate::gateway::Gateway::start(&file.validate().unwrap())
                    .await
                    .unwrap();
                for (job, want) in jobs.iter().zip(want) {
                    let status: Value = reqwest::get(format!("{}/jobs/{job}", again.url()))
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    assert_eq!(status["notif_id"].as_str(), want, "after restart: {status}");
                    assert_eq!(
                        status["successes"],
                        if want == Some("corr-ios") { 2 } else { 1 }
                    );
                }
                let _ = again.shutdown(std::time::Duration::from_secs(5)).await;
            }
        }
    })
    .await
    .unwrap();
}
