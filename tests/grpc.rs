//! The gRPC front end to end: a tonic client over a real socket to a gateway
//! started by the harness, delivering to the mock APNs and FCM.
//!
//! - `pushgate.v1.Push/Send` for APNs and FCM reaching the mocks; auth (no
//!   key, a wrong key, the right key); each status of the mapping a test
//!   can provoke (bad field, unknown platform, platform not configured, job
//!   too large, full queue with `retry-after`, unknown job);
//! - `WatchJob` streaming until the job is done, with its final counts;
//! - gorush's `proto.Gorush/Send` and `proto.Health/Check`;
//! - `grpc.health.v1.Health` and server reflection;
//! - `pushgate_grpc_requests_total`.
//!
//! - `SendStream` through the real NDJSON intake: every token once, a
//!   stream ten times the queue paced rather than refused, a bad header.
//!
//! Also gRPC over TLS, with `[server]`'s certificate and with `[grpc]`'s own.
//! What it leaves out: 409/422 (idempotency keys), whose mapping is
//! `src/grpc/status.rs`'s unit test. No timing asserts.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use prost_types::value::Kind;
use pushgate::config::FileConfig;
use pushgate::grpc::proto::gorush::{
    Alert, HealthCheckRequest, NotificationRequest, gorush_client::GorushClient,
    health_check_response::ServingStatus as GorushServing,
    health_client::HealthClient as GorushHealthClient,
};
use pushgate::grpc::proto::pushgate::{
    JobStatus, SendChunk, SendRequest, TokenBatch, WatchJobRequest, push_client::PushClient,
    send_chunk::Part,
};
use pushgate::mock::{self, MockHandle};
use serde_json::json;
use tonic::transport::Channel;
use tonic::{Code, Request};

const KEY: &str = "grpc-test-key-0123456789";

/// A gateway with APNs and FCM v1 on two mocks, and gRPC on a free port.
struct Env {
    apns: ApnsEnv,
    fcm: MockHandle,
    channel: Channel,
}

async fn env(tweak: impl FnOnce(&mut FileConfig) + Send + 'static) -> Env {
    init();
    let dir = scratch("grpc-fcm");
    let pki = mock::tls::TestPki::generate().unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
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
    let url = fcm.url();
    let apns = apns_env(ApnsSetup {
        tweak: Box::new(move |file: &mut FileConfig| {
            file.fcm = Some(pushgate::config::FcmSection {
                service_account_file: account_file.display().to_string(),
                endpoint: url,
                ca_file: ca_file.display().to_string(),
                ..Default::default()
            });
            file.grpc.listen = "127.0.0.1:0".into();
            tweak(file);
        }),
        ..ApnsSetup::default()
    })
    .await;
    let grpc = apns.gateway.grpc.as_ref().expect("[grpc] listen is set");
    let channel = Channel::from_shared(grpc.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    Env { apns, fcm, channel }
}

impl Env {
    fn push(&self) -> PushClient<Channel> {
        PushClient::new(self.channel.clone())
    }
}

/// `value` as a `google.protobuf.Struct` (it must be an object).
fn to_struct(value: serde_json::Value) -> prost_types::Struct {
    fn to_value(v: serde_json::Value) -> prost_types::Value {
        let kind = match v {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
            serde_json::Value::String(s) => Kind::StringValue(s),
            serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
                values: a.into_iter().map(to_value).collect(),
            }),
            serde_json::Value::Object(_) => Kind::StructValue(to_struct(v)),
        };
        prost_types::Value { kind: Some(kind) }
    }
    match value {
        serde_json::Value::Object(m) => prost_types::Struct {
            fields: m.into_iter().map(|(k, v)| (k, to_value(v))).collect(),
        },
        other => panic!("not an object: {other}"),
    }
}

fn send_request(platform: &str, message: serde_json::Value, tokens: &[String]) -> SendRequest {
    SendRequest {
        platform: platform.into(),
        message: Some(to_struct(message)),
        tokens: tokens.to_vec(),
        app: String::new(),
        idempotency_key: String::new(),
    }
}

/// `message` with `authorization: Bearer <key>`.
fn with_key<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

fn apns_message() -> serde_json::Value {
    json!({ "payload": apns_payload() })
}

fn fcm_token(i: usize) -> String {
    format!("grpc-{i}:APA91bH_example")
}

#[tokio::test]
async fn send_reaches_apns_and_fcm_and_bad_tokens_are_listed() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = env(|_| {}).await;
        let mut push = env.push();
        let mut tokens: Vec<String> = (0..3).map(|i| apns_token("9a9a", i)).collect();
        tokens.push("zz".into());
        let reply = push
            .send(send_request("apns", apns_message(), &tokens))
            .await
            .unwrap()
            .into_inner();
        assert!(!reply.job.is_empty());
        assert_eq!((reply.accepted, reply.rejected_count), (3, 1));
        assert_eq!(reply.rejected[0].token, "zz");
        assert!(!reply.rejected[0].reason.is_empty());
        assert!(!reply.replayed);

        let android: Vec<String> = (0..2).map(fcm_token).collect();
        let reply = push
            .send(send_request(
                "fcm",
                json!({ "notification": { "title": "hi", "body": "from gRPC" }, "payload": { "order": "42" } }),
                &android,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.accepted, 2);

        wait_done(&env.apns.gateway, pushgate::apns::FAMILY, 3).await;
        wait_done(&env.apns.gateway, pushgate::fcm::FAMILY, 2).await;
        for t in &tokens[..3] {
            assert_eq!(env.apns.mock.ledger.token(t).deliveries, 1, "{t}");
        }
        for t in &android {
            let seen = env.fcm.ledger.request(t).unwrap_or_else(|| panic!("FCM never saw {t}"));
            let body = seen.json();
            assert_eq!(body["message"]["notification"]["title"], "hi", "{body}");
            assert_eq!(body["message"]["data"]["order"], "42", "{body}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_api_keys_guard_every_method() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = env(|f| f.server.api_keys = vec![pushgate::config::Secret::new(KEY)]).await;
        let mut push = env.push();
        let tokens = [apns_token("7b7b", 1)];
        let request = || send_request("apns", apns_message(), &tokens);

        let e = push.send(request()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        assert!(e.message().contains("Authorization"), "{}", e.message());
        let e = push
            .send(with_key(request(), "wrong-key-0123456789"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        let e = push
            .watch_job(WatchJobRequest {
                job: "0".repeat(32),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        let e = GorushClient::new(env.channel.clone())
            .send(NotificationRequest {
                tokens: tokens.to_vec(),
                platform: 1,
                message: "hi".into(),
                ..NotificationRequest::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

        // The scheme is matched as HTTP matches it.
        let mut right = Request::new(request());
        right
            .metadata_mut()
            .insert("authorization", format!("bearer {KEY}").parse().unwrap());
        let reply = push.send(right).await.unwrap().into_inner();
        assert_eq!(reply.accepted, 1);
        wait_done(&env.apns.gateway, pushgate::apns::FAMILY, 1).await;
        assert_eq!(env.apns.mock.ledger.token(&tokens[0]).deliveries, 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn http_errors_become_their_grpc_codes_with_the_fields_named() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = env(|f| f.queue.capacity = 10).await;
        let mut push = env.push();
        let one = [apns_token("5c5c", 0)];

        // A bad field: INVALID_ARGUMENT, the message naming it.
        let e = push
            .send(send_request(
                "apns",
                json!({ "payload": apns_payload(), "priority": 7 }),
                &one,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("priority"), "{}", e.message());
        assert_eq!(e.metadata().get("pushgate-error").unwrap(), "bad_field");

        // Not a platform at all, and a platform without its section.
        let e = push
            .send(send_request("ios", apns_message(), &one))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().starts_with("platform:"), "{}", e.message());
        let e = push
            .send(send_request("webpush", json!({ "payload": "hi" }), &[]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert!(e.message().contains("[webpush]"), "{}", e.message());

        // More tokens than the queue could ever hold: 413, INVALID_ARGUMENT.
        let many: Vec<String> = (0..11).map(|i| apns_token("5d5d", i)).collect();
        let e = push
            .send(send_request("apns", apns_message(), &many))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

        // A full queue: 8 tokens held for an hour, then 5 more do not fit.
        let held: Vec<String> = (0..8).map(|i| apns_token("5e5e", i)).collect();
        let scheduled = push
            .send(send_request(
                "apns",
                json!({ "payload": apns_payload(), "delay_seconds": 3600 }),
                &held,
            ))
            .await
            .unwrap()
            .into_inner();
        let five: Vec<String> = (0..5).map(|i| apns_token("5f5f", i)).collect();
        let e = push
            .send(send_request("apns", apns_message(), &five))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(e.metadata().get("retry-after").is_some(), "{e:?}");
        assert_eq!(e.metadata().get("pushgate-error").unwrap(), "queue_full");

        // An unknown job, and one that is no job id.
        let e = push
            .watch_job(WatchJobRequest {
                job: pushgate::job::JobId::new().to_string(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        let e = push
            .watch_job(WatchJobRequest { job: "nope".into() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

        // Cancel the held job so nothing waits an hour.
        let (status, _) = env.apns.get(&format!("/jobs/{}", scheduled.job)).await;
        assert_eq!(status, 200);
        let r = env
            .apns
            .client
            .delete(env.apns.url(&format!("/jobs/{}", scheduled.job)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn watch_job_streams_until_the_job_is_done() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = env(|_| {}).await;
        let mut push = env.push();
        let mut tokens: Vec<String> = (0..5).map(|i| apns_token("6a6a", i)).collect();
        // One the mock answers 410: the final counts show it.
        tokens.push(format!("dead{}", &apns_token("0000", 9)[4..]));
        let job = push
            .send(send_request("apns", apns_message(), &tokens))
            .await
            .unwrap()
            .into_inner()
            .job;
        let mut stream = push
            .watch_job(WatchJobRequest { job: job.clone() })
            .await
            .unwrap()
            .into_inner();
        let mut seen: Vec<JobStatus> = Vec::new();
        while let Some(status) = stream.message().await.unwrap() {
            seen.push(status);
        }
        let last = seen.last().expect("at least one status");
        assert_eq!(last.job, job);
        assert_eq!(last.platform, "apns");
        assert_eq!(last.state, "done", "{seen:?}");
        assert_eq!(last.total, 6);
        assert_eq!(last.pending, 0);
        assert_eq!(
            last.successes + last.unregistered + last.failures + last.expired,
            6,
            "{last:?}"
        );
        // Only changes are sent.
        for pair in seen.windows(2) {
            assert_ne!(pair[0], pair[1], "{seen:?}");
        }
        // A finished job: one status, then the end.
        let again: Vec<JobStatus> = {
            let mut s = push
                .watch_job(WatchJobRequest { job })
                .await
                .unwrap()
                .into_inner();
            let mut all = Vec::new();
            while let Some(status) = s.message().await.unwrap() {
                all.push(status);
            }
            all
        };
        assert_eq!(again, std::slice::from_ref(last));
    })
    .await
    .unwrap();
}

/// A watched job that does not change for longer than
/// `server.idle_timeout_s` keeps its stream: a call whose answer is still
/// being sent is not an idle connection. (Waits 2.5 s for nothing to
/// happen; a slow machine cannot make it fail, only pass more easily.)
#[tokio::test]
async fn a_quiet_watch_outlives_the_idle_timeout() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = env(|f| {
            f.server.idle_timeout_s = 1;
            f.grpc.keepalive_interval_s = 0;
        })
        .await;
        let mut push = env.push();
        let job = push
            .send(send_request(
                "apns",
                json!({ "payload": apns_payload(), "delay_seconds": 3600 }),
                &[apns_token("1d1d", 0)],
            ))
            .await
            .unwrap()
            .into_inner()
            .job;
        let mut stream = push
            .watch_job(WatchJobRequest { job: job.clone() })
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert_eq!(first.state, "scheduled");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let r = env
            .apns
            .client
            .delete(env.apns.url(&format!("/jobs/{job}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let last = stream.message().await.unwrap().unwrap();
        assert_eq!((last.state.as_str(), last.cancelled), ("cancelled", 1));
        assert!(stream.message().await.unwrap().is_none());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn gorush_send_and_health_check_answer_as_gorush_does() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = env(|_| {}).await;
        let mut gorush = GorushClient::new(env.channel.clone());
        let ios: Vec<String> = (0..2).map(|i| apns_token("8b8b", i)).collect();
        let reply = gorush
            .send(NotificationRequest {
                tokens: ios.clone(),
                platform: 1,
                message: "hello".into(),
                title: "gRPC".into(),
                badge: 4,
                sound: "default".into(),
                thread_id: "t1".into(),
                category: "news".into(),
                alert: Some(Alert {
                    subtitle: "sub".into(),
                    ..Alert::default()
                }),
                data: Some(to_struct(json!({ "order": 42 }))),
                priority: 1,
                id: "notif-7".into(),
                ..NotificationRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(reply.success);
        assert_eq!(reply.counts, 2);

        let android = [fcm_token(7)];
        let reply = gorush
            .send(NotificationRequest {
                tokens: android.to_vec(),
                platform: 2,
                message: "body".into(),
                title: "title".into(),
                data: Some(to_struct(json!({ "count": 3 }))),
                ..NotificationRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((reply.success, reply.counts), (true, 1));

        wait_done(&env.apns.gateway, pushgate::apns::FAMILY, 2).await;
        wait_done(&env.apns.gateway, pushgate::fcm::FAMILY, 1).await;
        let seen = env.apns.mock.ledger.request(&ios[0]).expect("APNs saw it");
        // priority HIGH is gorush's "high": apns-priority 10.
        assert_eq!(seen.header("apns-priority"), Some("10"));
        let payload = seen.json();
        assert_eq!(
            payload,
            json!({
                "aps": {
                    "alert": { "title": "gRPC", "body": "hello", "subtitle": "sub" },
                    "badge": 4, "sound": "default", "thread-id": "t1", "category": "news",
                },
                "order": 42,
            })
        );
        let seen = env.fcm.ledger.request(&android[0]).expect("FCM saw it");
        let body = seen.json();
        assert_eq!(body["message"]["notification"]["title"], "title", "{body}");
        assert_eq!(body["message"]["notification"]["body"], "body", "{body}");
        // Struct numbers are doubles; FCM data carries "3", as over JSON.
        assert_eq!(body["message"]["data"]["count"], "3", "{body}");

        // A bad notification: the route's 400, its message naming the field.
        let e = gorush
            .send(NotificationRequest {
                tokens: ios.clone(),
                platform: 9,
                ..NotificationRequest::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("platform"), "{}", e.message());

        let mut health = GorushHealthClient::new(env.channel.clone());
        let answer = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status, GorushServing::Serving as i32);
        let e = health
            .check(HealthCheckRequest {
                service: "proto.Gorush".into(),
            })
            .await
            .unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::NotFound, "unknown service"));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn grpc_health_follows_readiness_and_reflection_lists_every_service() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = env(|_| {}).await;
        let mut health = HealthClient::new(env.channel.clone());
        for service in ["", "pushgate.v1.Push", "proto.Gorush"] {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let status = health
                    .check(HealthCheckRequest {
                        service: service.into(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .status;
                if status == ServingStatus::Serving as i32 {
                    break;
                }
                assert!(Instant::now() < deadline, "{service:?} never SERVING");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        let mut reflection = ServerReflectionClient::new(env.channel.clone());
        let ask = |message: MessageRequest| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(message),
        };
        let mut answers = reflection
            .server_reflection_info(futures_util::stream::iter([
                ask(MessageRequest::ListServices(String::new())),
                ask(MessageRequest::FileContainingSymbol(
                    "pushgate.v1.Push".into(),
                )),
                ask(MessageRequest::FileContainingSymbol("proto.Gorush".into())),
                ask(MessageRequest::FileByFilename(
                    "google/protobuf/struct.proto".into(),
                )),
            ]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("no service list");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for expected in [
            "proto.Gorush",
            "proto.Health",
            "pushgate.v1.Push",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} not in {names:?}"
            );
        }
        for file in ["pushgate/v1/push.proto", "gorush/gorush.proto"] {
            let Some(MessageResponse::FileDescriptorResponse(files)) =
                answers.message().await.unwrap().unwrap().message_response
            else {
                panic!("no descriptor for {file}");
            };
            let names: Vec<String> = files
                .file_descriptor_proto
                .iter()
                .map(|bytes| {
                    <prost_types::FileDescriptorProto as prost::Message>::decode(&bytes[..])
                        .unwrap()
                        .name()
                        .to_owned()
                })
                .collect();
            assert!(names.iter().any(|n| n == file), "{file} not in {names:?}");
        }
        // The import is there too, so a client can resolve Struct.
        let Some(MessageResponse::FileDescriptorResponse(files)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("no google/protobuf/struct.proto");
        };
        assert_eq!(files.file_descriptor_proto.len(), 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn grpc_calls_are_counted_by_method_and_code() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = env(|_| {}).await;
        let mut push = env.push();
        push.send(send_request("apns", apns_message(), &[apns_token("4e4e", 1)]))
            .await
            .unwrap();
        push.send(send_request("nope", apns_message(), &[])).await.unwrap_err();
        let text = env
            .apns
            .client
            .get(env.apns.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for series in [
            r#"pushgate_grpc_requests_total{code="OK",method="pushgate.v1.Push/Send"} 1"#,
            r#"pushgate_grpc_requests_total{code="INVALID_ARGUMENT",method="pushgate.v1.Push/Send"} 1"#,
        ] {
            assert!(text.contains(series), "no {series} in:\n{text}");
        }
    })
    .await
    .unwrap();
}

/// `[grpc]` without its own certificate serves TLS with `[server]`'s; with
/// `grpc.tls_cert` its own, while HTTP stays plain.
#[tokio::test]
async fn grpc_over_tls_with_the_servers_certificate_or_its_own() {
    use tonic::transport::{Certificate, ClientTlsConfig};
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = scratch("grpc-tls");
        let pki = mock::tls::TestPki::generate().unwrap();
        let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::write(&cert, &pki.server.cert_pem).unwrap();
        std::fs::write(&key, &pki.server.key_pem).unwrap();
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        for own in [false, true] {
            let (cert, key) = (cert.clone(), key.clone());
            let apns = apns_env(ApnsSetup {
                tweak: Box::new(move |f: &mut FileConfig| {
                    f.grpc.listen = "127.0.0.1:0".into();
                    if own {
                        (f.grpc.tls_cert, f.grpc.tls_key) = (cert, key);
                    } else {
                        (f.server.tls_cert, f.server.tls_key) = (cert, key);
                    }
                }),
                ..ApnsSetup::default()
            })
            .await;
            assert_eq!(apns.gateway.url().starts_with("https"), !own);
            let grpc = apns.gateway.grpc.as_ref().unwrap();
            assert!(grpc.url().starts_with("https://"), "{}", grpc.url());
            let channel = Channel::from_shared(grpc.url())
                .unwrap()
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
                        .domain_name("localhost"),
                )
                .unwrap()
                .connect()
                .await
                .unwrap();
            let token = apns_token("2f2f", usize::from(own));
            let reply = PushClient::new(channel)
                .send(send_request(
                    "apns",
                    apns_message(),
                    std::slice::from_ref(&token),
                ))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(reply.accepted, 1);
            wait_done(&apns.gateway, pushgate::apns::FAMILY, 1).await;
            assert_eq!(apns.mock.ledger.token(&token).deliveries, 1);
            // Plain h2c to a TLS port gets nowhere.
            let plain = Channel::from_shared(format!("http://{}", grpc.addr()))
                .unwrap()
                .connect()
                .await;
            if let Ok(plain) = plain {
                let e = PushClient::new(plain)
                    .send(send_request("apns", apns_message(), &[]))
                    .await
                    .unwrap_err();
                assert_ne!(e.code(), Code::Ok);
            }
        }
    })
    .await
    .unwrap();
}

// === SendStream: needs the NDJSON intake (issue 21 part 2) ===

fn chunks(platform: &str, tokens: Vec<String>, per_batch: usize) -> Vec<SendChunk> {
    let mut out = vec![SendChunk {
        part: Some(Part::Header(send_request(platform, apns_message(), &[]))),
    }];
    for batch in tokens.chunks(per_batch) {
        out.push(SendChunk {
            part: Some(Part::Tokens(TokenBatch {
                tokens: batch.to_vec(),
            })),
        });
    }
    out
}

#[tokio::test]
async fn send_stream_delivers_every_token_once() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = env(|_| {}).await;
        let tokens: Vec<String> = (0..1000).map(|i| apns_token("3c3c", i)).collect();
        let reply = env
            .push()
            .send_stream(futures_util::stream::iter(chunks(
                "apns",
                tokens.clone(),
                100,
            )))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.accepted, 1000);
        wait_done(&env.apns.gateway, pushgate::apns::FAMILY, 1000).await;
        for t in &tokens {
            assert_eq!(env.apns.mock.ledger.token(t).deliveries, 1, "{t}");
        }
    })
    .await
    .unwrap();
}

/// Ten times `queue.capacity` in one stream: back-pressure, not
/// RESOURCE_EXHAUSTED.
#[tokio::test]
async fn send_stream_larger_than_the_queue_is_paced_not_refused() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = env(|f| f.queue.capacity = 200).await;
        let tokens: Vec<String> = (0..2000).map(|i| apns_token("3d3d", i)).collect();
        let reply = env
            .push()
            .send_stream(futures_util::stream::iter(chunks(
                "apns",
                tokens.clone(),
                50,
            )))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.accepted, 2000);
        let c = wait_done(&env.apns.gateway, pushgate::apns::FAMILY, 2000).await;
        assert_eq!(c.successes, 2000);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn send_stream_bad_header_is_invalid_argument_and_watch_job_sees_it_grow() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = env(|_| {}).await;
        let mut push = env.push();
        let bad = vec![SendChunk {
            part: Some(Part::Header(send_request(
                "apns",
                json!({ "payload": apns_payload(), "priority": 7 }),
                &[],
            ))),
        }];
        let e = push
            .send_stream(futures_util::stream::iter(bad))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("priority"), "{}", e.message());

        let tokens: Vec<String> = (0..300).map(|i| apns_token("3e3e", i)).collect();
        let reply = push
            .send_stream(futures_util::stream::iter(chunks("apns", tokens, 30)))
            .await
            .unwrap()
            .into_inner();
        let mut watch = push
            .watch_job(WatchJobRequest { job: reply.job })
            .await
            .unwrap()
            .into_inner();
        let mut last = None;
        while let Some(s) = watch.message().await.unwrap() {
            last = Some(s);
        }
        let last = last.unwrap();
        assert_eq!(
            (last.state.as_str(), last.total, last.successes),
            ("done", 300, 300)
        );
    })
    .await
    .unwrap();
}

/// `idempotency_key` is the HTTP route's `Idempotency-Key`: a retried Send
/// replays the first reply (the same job, `replayed`), another message with
/// the key is `FAILED_PRECONDITION`, and each token reaches the mock once.
#[tokio::test]
async fn a_send_retried_with_its_idempotency_key_replays_the_first_reply() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = env(|_| {}).await;
        let mut push = env.push();
        let tokens: Vec<String> = (0..3).map(|i| apns_token("6c6c", i)).collect();
        let keyed = |tokens: &[String]| SendRequest {
            idempotency_key: "grpc-order-1".into(),
            ..send_request("apns", apns_message(), tokens)
        };
        let first = push.send(keyed(&tokens)).await.unwrap().into_inner();
        assert!(!first.replayed);
        let again = push.send(keyed(&tokens)).await.unwrap().into_inner();
        assert_eq!(
            (&again.job, again.accepted, again.replayed),
            (&first.job, 3, true)
        );
        let e = push.send(keyed(&tokens[..1])).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        wait_done(&env.apns.gateway, pushgate::apns::FAMILY, 3).await;
        for t in &tokens {
            assert_eq!(env.apns.mock.ledger.token(t).deliveries, 1, "{t}");
        }
    })
    .await
    .unwrap();
}
