//! Tests of the mock FCM over real sockets, with reqwest as the client and the
//! assertion signed here with jsonwebtoken (independent of the gateway's client).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::mock::tls::TestPki;

const SERVER_KEY: &str = "AAAA-test-server-key";
const PROJECT: &str = "pushgate-demo";
const TIMEOUT: Duration = Duration::from_secs(60);

fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| TestPki::generate().expect("test PKI"))
}

fn account() -> &'static ServiceAccountFixture {
    static ACCOUNT: OnceLock<ServiceAccountFixture> = OnceLock::new();
    ACCOUNT.get_or_init(|| ServiceAccountFixture::generate(PROJECT).expect("service account"))
}

/// Same project and email, different key: its assertions must fail the signature.
fn impostor() -> &'static ServiceAccountFixture {
    static IMPOSTOR: OnceLock<ServiceAccountFixture> = OnceLock::new();
    IMPOSTOR.get_or_init(|| ServiceAccountFixture::generate(PROJECT).expect("service account"))
}

#[derive(Clone, Copy)]
enum Proto {
    Auto,
    H1,
    H2,
}

fn client(proto: Proto) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject as _;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pki().ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA cert");
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = match proto {
        Proto::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        Proto::H1 => vec![b"http/1.1".to_vec()],
        Proto::H2 => vec![b"h2".to_vec()],
    };
    let builder = reqwest::Client::builder().tls_backend_preconfigured(tls);
    let builder = match proto {
        Proto::Auto => builder,
        Proto::H1 => builder.http1_only(),
        Proto::H2 => builder.http2_prior_knowledge(),
    };
    builder.build().expect("reqwest client")
}

async fn start_mock(tweak: impl FnOnce(&mut MockFcmOptions)) -> MockHandle {
    let mut opts = MockFcmOptions::new(account(), SERVER_KEY, pki());
    tweak(&mut opts);
    start(opts).await.expect("mock FCM starts")
}

fn base_url(handle: &MockHandle, tls: bool) -> String {
    if tls {
        handle.url()
    } else {
        format!("http://{}", handle.addr)
    }
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

fn assertion(signer: &ServiceAccountFixture, claims: &Claims<'_>) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(signer.private_key_id.clone());
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(signer.private_key_pem.as_bytes())
        .expect("RSA private key");
    jsonwebtoken::encode(&header, claims, &key).expect("sign assertion")
}

fn good_assertion(signer: &ServiceAccountFixture, token_url: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    assertion(
        signer,
        &Claims {
            iss: &signer.client_email,
            scope: "https://www.googleapis.com/auth/firebase.messaging",
            aud: token_url,
            iat: now,
            exp: now + 3600,
        },
    )
}

async fn post_token(client: &reqwest::Client, base: &str, assertion: &str) -> (u16, Value) {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
        .append_pair("assertion", assertion)
        .finish();
    let response = client
        .post(format!("{base}/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("token request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("token JSON"))
}

async fn grant(client: &reqwest::Client, base: &str) -> String {
    let (status, body) = post_token(
        client,
        base,
        &good_assertion(account(), &format!("{base}/token")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

async fn send_v1(
    client: &reqwest::Client,
    base: &str,
    access: Option<&str>,
    project: &str,
    body: &Value,
) -> reqwest::Response {
    let mut request = client
        .post(format!("{base}/v1/projects/{project}/messages:send"))
        .json(body);
    if let Some(access) = access {
        request = request.bearer_auth(access);
    }
    request.send().await.expect("v1 send")
}

fn message(token: &str) -> Value {
    json!({"message": {"token": token, "data": {"k": "v"}, "notification": {"title": "hi"}}})
}

fn error_code(body: &Value) -> Option<&str> {
    body["error"]["details"]
        .as_array()?
        .iter()
        .find(|d| d["@type"] == "type.googleapis.com/google.firebase.fcm.v1.FcmError")?["errorCode"]
        .as_str()
}

async fn send_legacy(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    client
        .post(format!("{base}/fcm/send"))
        .header("authorization", format!("key={key}"))
        .json(body)
        .send()
        .await
        .expect("legacy send")
}

#[tokio::test]
async fn token_grant_succeeds_and_a_bad_signature_is_refused() {
    tokio::time::timeout(TIMEOUT, async {
        let mock = start_mock(|o| o.token_lifetime_s = 1234).await;
        let base = mock.url();
        let client = client(Proto::Auto);
        let token_url = format!("{base}/token");

        let (status, body) =
            post_token(&client, &base, &good_assertion(account(), &token_url)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 1234);
        assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()));
        assert_eq!(Ledger::get(&mock.ledger.grants), 1);

        let (status, body) =
            post_token(&client, &base, &good_assertion(impostor(), &token_url)).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_grant");
        assert_eq!(body["error_description"], "Invalid JWT Signature.");

        let now = jsonwebtoken::get_current_timestamp();
        let email = &account().client_email;
        let scope = "https://www.googleapis.com/auth/firebase.messaging";
        let bad = [
            (
                "wrong audience",
                Claims {
                    iss: email,
                    scope,
                    aud: "https://oauth2.googleapis.com/token",
                    iat: now,
                    exp: now + 60,
                },
                "invalid_grant",
            ),
            (
                "wrong issuer",
                Claims {
                    iss: "someone@else.iam.gserviceaccount.com",
                    scope,
                    aud: &token_url,
                    iat: now,
                    exp: now + 60,
                },
                "invalid_grant",
            ),
            (
                "too long",
                Claims {
                    iss: email,
                    scope,
                    aud: &token_url,
                    iat: now,
                    exp: now + 7200,
                },
                "invalid_grant",
            ),
            (
                "expired",
                Claims {
                    iss: email,
                    scope,
                    aud: &token_url,
                    iat: now - 4000,
                    exp: now - 400,
                },
                "invalid_grant",
            ),
            (
                "no FCM scope",
                Claims {
                    iss: email,
                    scope: "https://www.googleapis.com/auth/cloud-platform.read-only",
                    aud: &token_url,
                    iat: now,
                    exp: now + 60,
                },
                "invalid_scope",
            ),
        ];
        for (what, claims, error) in bad {
            let (status, body) = post_token(&client, &base, &assertion(account(), &claims)).await;
            assert_eq!(status, 400, "{what}: {body}");
            assert_eq!(body["error"], error, "{what}: {body}");
        }
        assert_eq!(Ledger::get(&mock.ledger.grants), 1);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn v1_send_succeeds_with_a_granted_token() {
    tokio::time::timeout(TIMEOUT, async {
        let mock = start_mock(|_| {}).await;
        let base = mock.url();
        let client = client(Proto::Auto);
        let access = grant(&client, &base).await;

        for _ in 0..2 {
            let response =
                send_v1(&client, &base, Some(&access), PROJECT, &message("device-1")).await;
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.expect("JSON");
            let name = body["name"].as_str().expect("name");
            assert!(
                name.starts_with("projects/pushgate-demo/messages/0:"),
                "{name}"
            );
        }
        let record = mock.ledger.token("device-1");
        assert_eq!((record.attempts, record.deliveries), (2, 2));
        assert_eq!(mock.ledger.distinct_credentials(), 1);
        assert_eq!(Ledger::get(&mock.ledger.requests), 2);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn v1_token_prefixes_select_google_error_bodies() {
    tokio::time::timeout(TIMEOUT, async {
        let mock = start_mock(|o| {
            o.faults.flaky.insert("listed-as-flaky".to_owned());
        })
        .await;
        let base = mock.url();
        let client = client(Proto::Auto);
        let access = grant(&client, &base).await;

        let cases = [
            ("unregistered-1", 404, "NOT_FOUND", "UNREGISTERED"),
            ("invalid-1", 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
            ("mismatch-1", 403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH"),
            ("internal-1", 500, "INTERNAL", "INTERNAL"),
            ("flaky-1", 503, "UNAVAILABLE", "UNAVAILABLE"),
            ("listed-as-flaky", 503, "UNAVAILABLE", "UNAVAILABLE"),
            ("quota-1", 429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
        ];
        for (token, code, status, error_code_want) in cases {
            let response = send_v1(&client, &base, Some(&access), PROJECT, &message(token)).await;
            assert_eq!(response.status().as_u16(), code, "{token}");
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().expect("ascii").to_owned());
            let body: Value = response.json().await.expect("JSON");
            assert_eq!(body["error"]["code"], code, "{token}: {body}");
            assert_eq!(body["error"]["status"], status, "{token}: {body}");
            assert_eq!(error_code(&body), Some(error_code_want), "{token}: {body}");
            if token.starts_with("quota") {
                assert_eq!(retry_after.as_deref(), Some("1"));
            }
            if token.starts_with("invalid") {
                assert_eq!(
                    body["error"]["message"],
                    "The registration token is not a valid FCM registration token"
                );
            }
        }
        // Second attempts: the one-shot failures now succeed, the others stay.
        for (token, code) in [
            ("flaky-1", 200),
            ("listed-as-flaky", 200),
            ("quota-1", 200),
            ("internal-1", 500),
            ("unregistered-1", 404),
        ] {
            let response = send_v1(&client, &base, Some(&access), PROJECT, &message(token)).await;
            assert_eq!(response.status().as_u16(), code, "{token} second attempt");
        }
        assert_eq!(mock.ledger.token("flaky-1").attempts, 2);
        assert_eq!(mock.ledger.token("flaky-1").deliveries, 1);
        assert_eq!(mock.ledger.token("internal-1").deliveries, 0);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn v1_rejects_bad_messages_and_credentials() {
    tokio::time::timeout(TIMEOUT, async {
        let mock = start_mock(|_| {}).await;
        let base = mock.url();
        let client = client(Proto::Auto);
        let access = grant(&client, &base).await;

        // A client that forgets to stringify data values.
        let body = json!({"message": {"token": "device-1", "data": {"badge": 3}}});
        let response = send_v1(&client, &base, Some(&access), PROJECT, &body).await;
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
        let text = body["error"]["message"].as_str().expect("message");
        assert!(
            text.contains("message.data[0].value") && text.contains("TYPE_STRING"),
            "{text}"
        );

        // No recipient.
        let body = json!({"message": {"data": {"k": "v"}}});
        let response = send_v1(&client, &base, Some(&access), PROJECT, &body).await;
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");

        // The legacy shape sent to v1 is refused, not silently accepted.
        let body = json!({"message": {"token": "device-1", "registration_ids": ["a"]}});
        let response = send_v1(&client, &base, Some(&access), PROJECT, &body).await;
        assert_eq!(response.status(), 400);

        // Missing and unknown bearer tokens.
        for access in [None, Some("ya29.not-granted")] {
            let response = send_v1(&client, &base, access, PROJECT, &message("device-1")).await;
            assert_eq!(response.status(), 401);
            let body: Value = response.json().await.expect("JSON");
            assert_eq!(body["error"]["code"], 401);
            assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
        }

        // Another project.
        let response = send_v1(
            &client,
            &base,
            Some(&access),
            "someone-else",
            &message("device-1"),
        )
        .await;
        assert_eq!(response.status(), 403);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
        assert_eq!(error_code(&body), Some("SENDER_ID_MISMATCH"));

        assert_eq!(mock.ledger.token("device-1").deliveries, 0);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn v1_access_tokens_expire() {
    tokio::time::timeout(TIMEOUT, async {
        let mock = start_mock(|o| o.token_lifetime_s = 0).await;
        let base = mock.url();
        let client = client(Proto::Auto);
        let access = grant(&client, &base).await;
        let response = send_v1(&client, &base, Some(&access), PROJECT, &message("device-1")).await;
        assert_eq!(response.status(), 401);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn legacy_batch_answers_each_id_in_order() {
    tokio::time::timeout(TIMEOUT, async {
        let mock = start_mock(|_| {}).await;
        let base = mock.url();
        let client = client(Proto::Auto);
        let ids = [
            "device-1",
            "unregistered-1",
            "canonical-1",
            "invalid-1",
            "mismatch-1",
            "flaky-1",
            "quota-1",
            "internal-1",
        ];
        let body = json!({"registration_ids": ids, "data": {"k": "v"}});
        let response = send_legacy(&client, &base, SERVER_KEY, &body).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("JSON");
        assert!(body["multicast_id"].as_i64().is_some_and(|id| id > 0));
        assert_eq!(body["success"], 2);
        assert_eq!(body["failure"], 6);
        assert_eq!(body["canonical_ids"], 1);
        let results = body["results"].as_array().expect("results");
        assert_eq!(results.len(), ids.len());
        assert!(
            results[0]["message_id"]
                .as_str()
                .is_some_and(|m| m.starts_with("0:"))
        );
        assert_eq!(results[1]["error"], "NotRegistered");
        assert!(results[2]["message_id"].is_string());
        assert_eq!(results[2]["registration_id"], "new-canonical-1");
        assert_eq!(results[3]["error"], "InvalidRegistration");
        assert_eq!(results[4]["error"], "MismatchSenderId");
        assert_eq!(results[5]["error"], "Unavailable");
        assert_eq!(results[6]["error"], "Unavailable");
        assert_eq!(results[7]["error"], "InternalServerError");
        assert_eq!(Ledger::get(&mock.ledger.largest_batch), ids.len() as u64);
        assert_eq!(Ledger::get(&mock.ledger.requests), 1);

        // The retryable ones succeed on the second attempt (single `to`).
        for token in ["flaky-1", "quota-1"] {
            let response = send_legacy(&client, &base, SERVER_KEY, &json!({"to": token})).await;
            let body: Value = response.json().await.expect("JSON");
            assert_eq!(body["success"], 1, "{token}: {body}");
            assert_eq!(mock.ledger.token(token).deliveries, 1);
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn legacy_refuses_oversized_batches_and_bad_keys() {
    tokio::time::timeout(TIMEOUT, async {
        let mock = start_mock(|_| {}).await;
        let base = mock.url();
        let client = client(Proto::Auto);

        let ids: Vec<String> = (0..1001).map(|i| format!("device-{i}")).collect();
        let response = send_legacy(
            &client,
            &base,
            SERVER_KEY,
            &json!({"registration_ids": ids}),
        )
        .await;
        assert_eq!(response.status(), 400);
        let text = response.text().await.expect("text");
        assert_eq!(
            text,
            "Number of messages on bulk (1001) exceeds maximum allowed (1000)"
        );

        let ids: Vec<String> = (0..1000).map(|i| format!("device-{i}")).collect();
        let response = send_legacy(
            &client,
            &base,
            SERVER_KEY,
            &json!({"registration_ids": ids}),
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(Ledger::get(&mock.ledger.largest_batch), 1000);

        let response = send_legacy(&client, &base, "wrong-key", &json!({"to": "device-1"})).await;
        assert_eq!(response.status(), 401);
        let text = response.text().await.expect("text");
        assert!(text.contains("Unauthorized"), "{text}");

        let response = client
            .post(format!("{base}/fcm/send"))
            .json(&json!({"to": "device-1"}))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 401);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn http1_and_http2_are_both_served_over_tls() {
    tokio::time::timeout(TIMEOUT, async {
        let mock = start_mock(|_| {}).await;
        let base = mock.url();
        for (proto, version) in [
            (Proto::H1, reqwest::Version::HTTP_11),
            (Proto::H2, reqwest::Version::HTTP_2),
            (Proto::Auto, reqwest::Version::HTTP_2),
        ] {
            let client = client(proto);
            let access = grant(&client, &base).await;
            let response =
                send_v1(&client, &base, Some(&access), PROJECT, &message("device-1")).await;
            assert_eq!(response.version(), version);
            assert_eq!(response.status(), 200);
            let response =
                send_legacy(&client, &base, SERVER_KEY, &json!({"to": "device-2"})).await;
            assert_eq!(response.version(), version);
            assert_eq!(response.status(), 200);
        }
        assert_eq!(Ledger::get(&mock.ledger.connections), 3);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn plain_http_mode_serves_http_endpoints() {
    tokio::time::timeout(TIMEOUT, async {
        let mock = start_mock(|o| o.tls = false).await;
        let base = base_url(&mock, false);
        let client = client(Proto::Auto);
        // The audience is the plain-HTTP token URL.
        let access = grant(&client, &base).await;
        let response = send_v1(&client, &base, Some(&access), PROJECT, &message("device-1")).await;
        assert_eq!(response.status(), 200);
        let response = send_legacy(&client, &base, SERVER_KEY, &json!({"to": "device-2"})).await;
        assert_eq!(response.status(), 200);
        assert_eq!(mock.ledger.token("device-2").deliveries, 1);
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn throttle_fault_answers_retry_after() {
    tokio::time::timeout(TIMEOUT, async {
        let mock = start_mock(|o| {
            o.faults.throttle_every = Some(2);
            o.faults.retry_after_s = 7;
        })
        .await;
        let base = mock.url();
        let client = client(Proto::Auto);
        let access = grant(&client, &base).await;

        let first = send_v1(&client, &base, Some(&access), PROJECT, &message("device-1")).await;
        assert_eq!(first.status(), 200);
        let second = send_v1(&client, &base, Some(&access), PROJECT, &message("device-1")).await;
        assert_eq!(second.status(), 429);
        assert_eq!(second.headers()["retry-after"], "7");
        let body: Value = second.json().await.expect("JSON");
        assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(error_code(&body), Some("QUOTA_EXCEEDED"));
        // Throttled before the token rules: no attempt counted.
        assert_eq!(mock.ledger.token("device-1").attempts, 1);

        let third = send_legacy(&client, &base, SERVER_KEY, &json!({"to": "device-2"})).await;
        assert_eq!(third.status(), 200);
        let fourth = send_legacy(&client, &base, SERVER_KEY, &json!({"to": "device-2"})).await;
        assert_eq!(fourth.status(), 503);
        assert_eq!(fourth.headers()["retry-after"], "7");
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn connection_faults_drop_and_drain() {
    tokio::time::timeout(TIMEOUT, async {
        // drop_after: the second request on a connection gets no answer.
        let mock = start_mock(|o| o.faults.drop_after = Some(1)).await;
        let base = mock.url();
        let h1 = client(Proto::H1);
        let body = json!({"to": "device-1"});
        let first = send_legacy(&h1, &base, SERVER_KEY, &body).await;
        assert_eq!(first.status(), 200);
        let second = h1
            .post(format!("{base}/fcm/send"))
            .header("authorization", format!("key={SERVER_KEY}"))
            .json(&body)
            .send()
            .await;
        assert!(second.is_err(), "dropped request must not be answered");
        assert_eq!(Ledger::get(&mock.ledger.drops), 1);

        // goaway_after over HTTP/2: the connection drains and the client reconnects.
        let mock = start_mock(|o| o.faults.goaway_after = Some(1)).await;
        let base = mock.url();
        let h2 = client(Proto::H2);
        for _ in 0..3 {
            // A request racing the GOAWAY may be refused; a client retries it, so
            // does this test (once).
            let mut outcome = None;
            for _ in 0..2 {
                let sent = h2
                    .post(format!("{base}/fcm/send"))
                    .header("authorization", format!("key={SERVER_KEY}"))
                    .json(&body)
                    .send()
                    .await;
                if let Ok(response) = sent {
                    outcome = Some(response.status());
                    break;
                }
            }
            assert_eq!(outcome, Some(reqwest::StatusCode::OK));
            // Let the GOAWAY reach the client before the next request.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(Ledger::get(&mock.ledger.goaways) >= 2);
        assert!(Ledger::get(&mock.ledger.connections) >= 2);

        // goaway_after over HTTP/1.1: `connection: close` on the n-th answer.
        let h1 = client(Proto::H1);
        let response = send_legacy(&h1, &base, SERVER_KEY, &body).await;
        assert_eq!(response.headers()["connection"], "close");
    })
    .await
    .expect("test timed out");
}

#[test]
fn fixtures_do_not_print_private_keys() {
    let account = account();
    let debug = format!("{account:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    let options = MockFcmOptions::new(account, SERVER_KEY, pki());
    let debug = format!("{options:?}");
    assert!(
        !debug.contains(SERVER_KEY) && !debug.contains("PRIVATE KEY"),
        "{debug}"
    );

    let file: Value = serde_json::from_str(&account.to_json("https://127.0.0.1:1/token"))
        .expect("service account JSON");
    assert_eq!(file["type"], "service_account");
    assert_eq!(file["project_id"], PROJECT);
    assert_eq!(file["token_uri"], "https://127.0.0.1:1/token");
    assert_eq!(file["client_email"], account.client_email);
    assert_eq!(file["private_key_id"], account.private_key_id);
    assert!(
        file["private_key"]
            .as_str()
            .is_some_and(|k| k.contains("BEGIN PRIVATE KEY"))
    );
}
