//! Tests of the mock HMS over real sockets, with reqwest (rustls, the mock's
//! CA) as the client. They leave out wall-clock expiry of a live token (a TTL
//! of zero stands in for it) and the 1000-grants-per-5-minutes OAuth flow
//! control Huawei documents, which the mock does not model.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::mock::tls::TestPki;

const TIMEOUT: Duration = Duration::from_secs(60);

fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| TestPki::generate().expect("test PKI"))
}

/// Runs a test body under the timeout every test here shares.
async fn within<F: Future<Output = ()>>(body: F) {
    tokio::time::timeout(TIMEOUT, body)
        .await
        .expect("test timed out");
}

#[derive(Clone, Copy)]
enum Proto {
    Auto,
    H1,
    H2,
}

fn client(proto: Proto) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject as _;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
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

/// A started mock and a client for it.
struct Env {
    mock: MockHms,
    http: reqwest::Client,
}

async fn env(tweak: impl FnOnce(&mut MockHmsOptions)) -> Env {
    let mut opts = MockHmsOptions::new(pki());
    tweak(&mut opts);
    Env {
        mock: start(opts).await.expect("mock HMS starts"),
        http: client(Proto::Auto),
    }
}

/// An answer: status, `Retry-After`, JSON body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

impl Answer {
    async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().expect("ascii").to_owned());
        let body = response.json().await.expect("JSON answer");
        Self {
            status,
            retry_after,
            body,
        }
    }

    /// `(HTTP status, Huawei code)`.
    fn code(&self) -> (u16, &str) {
        (self.status, self.body["code"].as_str().unwrap_or("<none>"))
    }

    /// The JSON text inside `msg` of a partial success.
    fn msg_json(&self) -> Value {
        serde_json::from_str(self.body["msg"].as_str().expect("msg")).expect("msg is JSON text")
    }
}

impl Env {
    /// Posts a raw form body to the OAuth endpoint.
    async fn post_token(&self, content_type: Option<&str>, body: String) -> Answer {
        let mut request = self.http.post(self.mock.token_uri()).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        Answer::read(request.send().await.expect("token request")).await
    }

    fn form(fields: &[(&str, &str)]) -> String {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (key, value) in fields {
            form.append_pair(key, value);
        }
        form.finish()
    }

    /// A token for `app_id` with `secret`, or the refusal.
    async fn grant_for(&self, app_id: &str, secret: &str) -> Answer {
        let body = Self::form(&[
            ("grant_type", "client_credentials"),
            ("client_id", app_id),
            ("client_secret", secret),
        ]);
        self.post_token(Some("application/x-www-form-urlencoded"), body)
            .await
    }

    /// A token for the default app.
    async fn grant(&self) -> String {
        let answer = self
            .grant_for(self.mock.app_id(), self.mock.client_secret())
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// Sends `body` to the default app's send URL.
    async fn send(&self, access: Option<&str>, body: &Value) -> Answer {
        self.send_to(self.mock.app_id(), access, body).await
    }

    async fn send_to(&self, app_id: &str, access: Option<&str>, body: &Value) -> Answer {
        let mut request = self.http.post(self.mock.send_url(app_id)).json(body);
        if let Some(access) = access {
            request = request.bearer_auth(access);
        }
        Answer::read(request.send().await.expect("send request")).await
    }
}

fn message(tokens: &[&str]) -> Value {
    json!({
        "validate_only": false,
        "message": {
            "data": "{\"order\":\"42\"}",
            "notification": {"title": "Hello", "body": "World"},
            "android": {"urgency": "HIGH", "ttl": "3600s",
                        "notification": {"click_action": {"type": 3}}},
            "token": tokens,
        }
    })
}

#[tokio::test]
async fn oauth_grants_a_bearer_token_for_the_right_secret() {
    within(async {
        let env = env(|o| o.expires_in_s = 1234).await;
        let raw = env
            .http
            .post(env.mock.token_uri())
            .header(
                "content-type",
                "application/x-www-form-urlencoded;charset=utf-8",
            )
            .body(Env::form(&[
                ("grant_type", "client_credentials"),
                ("client_id", env.mock.app_id()),
                ("client_secret", env.mock.client_secret()),
            ]))
            .send()
            .await
            .expect("token request");
        assert_eq!(raw.status(), 200);
        assert_eq!(raw.headers()["cache-control"], "no-store");
        let text = raw.text().await.expect("body");
        // `/` is escaped in the JSON text, as Huawei writes it.
        assert!(text.contains("\\/"), "{text}");
        let body: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 1234);
        let token = body["access_token"].as_str().expect("token");
        assert!(token.contains('/') && token.contains('+'), "{token}");
        assert_eq!(Ledger::get(&env.mock.handle.ledger.grants), 1);
    })
    .await;
}

#[tokio::test]
async fn oauth_refusals_carry_huaweis_error_pairs() {
    within(async {
        let env = env(|_| {}).await;
        let id = env.mock.app_id().to_owned();
        let secret = env.mock.client_secret().to_owned();
        let form = "application/x-www-form-urlencoded";
        // What, Content-Type, body, Huawei's (error, sub_error).
        type Case<'a> = (&'a str, Option<&'a str>, String, (i64, i64));
        let cases: Vec<Case<'_>> = vec![
            ("no grant_type", Some(form), Env::form(&[("client_id", &id), ("client_secret", &secret)]), (1102, 20181)),
            ("JSON body", Some("application/json"), json!({"grant_type": "client_credentials", "client_id": id, "client_secret": secret}).to_string(), (1102, 20181)),
            ("wrong grant", Some(form), Env::form(&[("grant_type", "password"), ("client_id", &id), ("client_secret", &secret)]), (1101, 20182)),
            ("no client_id", Some(form), Env::form(&[("grant_type", "client_credentials"), ("client_secret", &secret)]), (1102, 20001)),
            ("bad client_id", Some(form), Env::form(&[("grant_type", "client_credentials"), ("client_id", "app-1"), ("client_secret", &secret)]), (1101, 20002)),
            ("unknown client_id", Some(form), Env::form(&[("grant_type", "client_credentials"), ("client_id", "999"), ("client_secret", &secret)]), (1203, 12303)),
            ("no secret", Some(form), Env::form(&[("grant_type", "client_credentials"), ("client_id", &id)]), (1101, 20171)),
            ("bad secret text", Some(form), Env::form(&[("grant_type", "client_credentials"), ("client_id", &id), ("client_secret", "a-b")]), (1101, 20172)),
            ("wrong secret", Some(form), Env::form(&[("grant_type", "client_credentials"), ("client_id", &id), ("client_secret", "AAAA")]), (1101, 12304)),
            // A client that forgets to form-encode sends `+` raw; it reads as a space.
            ("secret not encoded", Some(form), format!("grant_type=client_credentials&client_id={id}&client_secret={secret}"), (1101, 20172)),
        ];
        for (what, content_type, body, (error, sub_error)) in cases {
            let answer = env.post_token(content_type, body).await;
            assert_eq!(answer.status, 400, "{what}: {}", answer.body);
            assert_eq!(answer.body["error"], error, "{what}: {}", answer.body);
            assert_eq!(answer.body["sub_error"], sub_error, "{what}: {}", answer.body);
            assert!(answer.body["error_description"].is_string(), "{what}");
        }
        assert_eq!(Ledger::get(&env.mock.handle.ledger.grants), 0);
    })
    .await;
}

#[tokio::test]
async fn a_send_of_good_tokens_is_delivered_with_its_fields() {
    within(async {
        let env = env(|_| {}).await;
        let access = env.grant().await;
        let answer = env.send(Some(&access), &message(&["dev-1", "dev-2"])).await;
        assert_eq!(answer.code(), (200, "80000000"), "{}", answer.body);
        assert_eq!(answer.body["msg"], "Success");
        let request_id = answer.body["requestId"].as_str().expect("requestId");
        assert!(
            request_id.bytes().all(|b| b.is_ascii_digit()),
            "{request_id}"
        );

        let received = env.mock.inbox.last("dev-1").expect("dev-1 delivered");
        assert_eq!(received.request_id, request_id);
        assert_eq!(received.app_id, env.mock.app_id());
        assert_eq!(received.data.as_deref(), Some("{\"order\":\"42\"}"));
        assert_eq!(
            (received.title(), received.body()),
            (Some("Hello"), Some("World"))
        );
        assert_eq!(
            received.android.as_ref().map(|a| a["urgency"].clone()),
            Some(json!("HIGH"))
        );
        let ledger = &env.mock.handle.ledger;
        assert_eq!(ledger.token("dev-2").deliveries, 1);
        assert_eq!(Ledger::get(&ledger.requests), 1);
        assert_eq!(Ledger::get(&ledger.largest_batch), 2);
        assert_eq!(ledger.distinct_credentials(), 1);
        let seen = ledger.request("dev-1").expect("request kept");
        assert_eq!(seen.json()["message"]["data"], "{\"order\":\"42\"}");
        assert_eq!(env.mock.inbox.batch_sizes(), [2]);
    })
    .await;
}

#[tokio::test]
async fn mixed_tokens_list_exactly_the_illegal_ones() {
    within(async {
        let env = env(|_| {}).await;
        let access = env.grant().await;
        let tokens = ["good-1", "illegal-1", "good-2", "illegal-2", "with space"];
        let answer = env.send(Some(&access), &message(&tokens)).await;
        assert_eq!(answer.code(), (200, "80100000"), "{}", answer.body);
        let msg = answer.msg_json();
        assert_eq!(msg["success"], 2);
        assert_eq!(msg["failure"], 3);
        assert_eq!(
            msg["illegal_tokens"],
            json!(["illegal-1", "illegal-2", "with space"])
        );
        // Huawei's key order in the JSON text.
        let text = answer.body["msg"].as_str().expect("msg");
        assert!(text.starts_with("{\"success\":2,\"failure\":3,"), "{text}");
        assert_eq!(env.mock.inbox.deliveries("good-1"), 1);
        assert_eq!(env.mock.inbox.deliveries("illegal-1"), 0);
        assert_eq!(env.mock.handle.ledger.token("illegal-2").attempts, 1);

        let answer = env
            .send(Some(&access), &message(&["illegal-a", "illegal-b"]))
            .await;
        assert_eq!(answer.code(), (400, "80300007"), "{}", answer.body);
        assert_eq!(Inbox::get(&env.mock.inbox.delivered), 2);
    })
    .await;
}

#[tokio::test]
async fn message_checks_answer_their_codes() {
    within(async {
        let env = env(|_| {}).await;
        let access = env.grant().await;
        let many: Vec<String> = (0..1001).map(|i| format!("dev-{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let mut data_object = message(&["dev-1"]);
        data_object["message"]["data"] = json!({"order": "42"});
        let mut too_big = message(&["dev-1"]);
        too_big["message"]["data"] = json!("x".repeat(4096));
        let mut collapse = message(&["dev-1"]);
        collapse["message"]["android"]["collapse_key"] = json!(101);
        let cases = [
            ("1001 tokens", message(&many), "80300010"),
            ("no tokens", message(&[]), "80300010"),
            (
                "misspelt message",
                json!({"mesage": message(&["dev-1"])["message"]}),
                "80300010",
            ),
            ("data as an object", data_object, "80100003"),
            ("over 4096 bytes", too_big, "80300008"),
            ("collapse_key", collapse, "80100013"),
        ];
        for (what, body, code) in cases {
            let answer = env.send(Some(&access), &body).await;
            assert_eq!(answer.code(), (400, code), "{what}: {}", answer.body);
        }
        // No Content-Type: a parameter error.
        let raw = env
            .http
            .post(env.mock.send_url(env.mock.app_id()))
            .bearer_auth(&access)
            .body(message(&["dev-1"]).to_string())
            .send()
            .await
            .expect("send");
        assert_eq!(Answer::read(raw).await.code(), (400, "80100001"));
        assert_eq!(Inbox::get(&env.mock.inbox.refused), 7);
        assert_eq!(Inbox::get(&env.mock.inbox.delivered), 0);
        assert_eq!(Ledger::get(&env.mock.handle.ledger.largest_batch), 0);
    })
    .await;
}

#[tokio::test]
async fn missing_foreign_and_unknown_access_tokens_are_80200001() {
    within(async {
        let second = HmsApp::generate("105000000");
        let env = env(|o| o.apps.push(second.clone())).await;
        let access = env.grant().await;
        let foreign = env.grant_for(&second.app_id, &second.client_secret).await;
        let foreign = foreign.body["access_token"]
            .as_str()
            .expect("token")
            .to_owned();
        for (what, token) in [
            ("none", None),
            ("unknown", Some("DgEAAnot-granted")),
            ("other app", Some(foreign.as_str())),
        ] {
            let answer = env.send(token, &message(&["dev-1"])).await;
            assert_eq!(answer.code(), (401, "80200001"), "{what}: {}", answer.body);
        }
        // The second app's token works on its own path only.
        let answer = env
            .send_to(&second.app_id, Some(&foreign), &message(&["dev-1"]))
            .await;
        assert_eq!(answer.code(), (200, "80000000"));
        let answer = env
            .send_to(&second.app_id, Some(&access), &message(&["dev-1"]))
            .await;
        assert_eq!(answer.code(), (401, "80200001"));
        assert_eq!(Inbox::get(&env.mock.inbox.unauthorized), 4);
        assert_eq!(Inbox::get(&env.mock.inbox.expired), 0);
    })
    .await;
}

#[tokio::test]
async fn an_expired_token_is_80200003_and_a_fresh_grant_works() {
    within(async {
        let env = env(|o| o.token_max_sends = Some(2)).await;
        let access = env.grant().await;
        for _ in 0..2 {
            let answer = env.send(Some(&access), &message(&["dev-1"])).await;
            assert_eq!(answer.code(), (200, "80000000"));
        }
        let answer = env.send(Some(&access), &message(&["dev-1"])).await;
        assert_eq!(answer.code(), (401, "80200003"), "{}", answer.body);
        let fresh = env.grant().await;
        assert_ne!(fresh, access);
        let answer = env.send(Some(&fresh), &message(&["dev-1"])).await;
        assert_eq!(answer.code(), (200, "80000000"));
        assert_eq!(env.mock.inbox.deliveries("dev-1"), 3);
        assert_eq!(Inbox::get(&env.mock.inbox.expired), 1);
        assert_eq!(Ledger::get(&env.mock.handle.ledger.grants), 2);

        // A zero TTL stands in for the clock running out.
        let env = self::env(|o| o.token_ttl_s = Some(0)).await;
        let access = env.grant().await;
        let answer = env.send(Some(&access), &message(&["dev-1"])).await;
        assert_eq!(answer.code(), (401, "80200003"));
    })
    .await;
}

#[tokio::test]
async fn injected_faults_throttle_and_fail() {
    within(async {
        let env = env(|o| {
            o.faults.throttle_every = Some(2);
            o.faults.retry_after_s = 7;
        })
        .await;
        let access = env.grant().await;
        let first = env.send(Some(&access), &message(&["dev-1"])).await;
        assert_eq!(first.code(), (200, "80000000"));
        let second = env.send(Some(&access), &message(&["dev-1"])).await;
        assert_eq!(second.code(), (503, "81000001"), "{}", second.body);
        assert_eq!(second.retry_after.as_deref(), Some("7"));
        // Throttled before the token rules: no attempt counted.
        assert_eq!(env.mock.handle.ledger.token("dev-1").attempts, 1);

        let env = self::env(|o| o.throttle_rate = 1.0).await;
        let access = env.grant().await;
        let answer = env.send(Some(&access), &message(&["dev-1"])).await;
        assert_eq!(answer.code(), (503, "81000001"));
        // retry_after_s = 0: no header, which a client must cope with.
        assert_eq!(answer.retry_after, None);

        let env = self::env(|o| o.faults.error_rate = 1.0).await;
        let access = env.grant().await;
        let answer = env.send(Some(&access), &message(&["dev-1"])).await;
        assert_eq!(answer.code(), (500, "81000001"));
        assert_eq!(Inbox::get(&env.mock.inbox.server_errors), 1);
    })
    .await;
}

#[tokio::test]
async fn token_markers_fail_the_request_once_or_always() {
    within(async {
        let env = env(|o| {
            o.faults.flaky.insert("listed-dev".to_owned());
        })
        .await;
        let access = env.grant().await;
        for (tokens, first) in [
            (["busy-1", "dev-a"], (503, "81000001")),
            (["flaky-1", "dev-b"], (500, "81000001")),
            (["listed-dev", "dev-c"], (500, "81000001")),
        ] {
            let answer = env.send(Some(&access), &message(&tokens)).await;
            assert_eq!(answer.code(), first, "{tokens:?}: {}", answer.body);
            if tokens[0].starts_with("busy") {
                assert_eq!(answer.retry_after.as_deref(), Some("1"));
            }
            // The resend of the same batch goes through.
            let answer = env.send(Some(&access), &message(&tokens)).await;
            assert_eq!(answer.code(), (200, "80000000"), "{tokens:?} resent");
            assert_eq!(env.mock.inbox.deliveries(tokens[1]), 1);
        }
        for _ in 0..2 {
            let answer = env
                .send(Some(&access), &message(&["internal-1", "dev-d"]))
                .await;
            assert_eq!(answer.code(), (500, "81000001"));
        }
        assert_eq!(env.mock.inbox.deliveries("dev-d"), 0);
        assert_eq!(env.mock.handle.ledger.token("dev-d").attempts, 2);
    })
    .await;
}

#[tokio::test]
async fn validate_only_checks_everything_and_records_nothing() {
    within(async {
        let env = env(|_| {}).await;
        let access = env.grant().await;
        let mut body = message(&["dev-1", "illegal-1", "flaky-1"]);
        body["validate_only"] = json!(true);
        let answer = env.send(Some(&access), &body).await;
        assert_eq!(answer.code(), (200, "80100000"), "{}", answer.body);
        assert_eq!(answer.msg_json()["illegal_tokens"], json!(["illegal-1"]));
        body["message"]["data"] = json!({"not": "text"});
        let answer = env.send(Some(&access), &body).await;
        assert_eq!(answer.code(), (400, "80100003"));

        let ledger = &env.mock.handle.ledger;
        assert_eq!(ledger.token("dev-1"), Default::default());
        assert_eq!(env.mock.inbox.deliveries("dev-1"), 0);
        assert_eq!(Inbox::get(&env.mock.inbox.delivered), 0);
        assert_eq!(Inbox::get(&env.mock.inbox.validated), 1);
    })
    .await;
}

#[tokio::test]
async fn http1_and_http2_are_both_served() {
    within(async {
        let mut env = env(|_| {}).await;
        for (proto, version) in [
            (Proto::H1, reqwest::Version::HTTP_11),
            (Proto::H2, reqwest::Version::HTTP_2),
            (Proto::Auto, reqwest::Version::HTTP_2),
        ] {
            env.http = client(proto);
            let access = env.grant().await;
            let response = env
                .http
                .post(env.mock.send_url(env.mock.app_id()))
                .bearer_auth(&access)
                .json(&message(&["dev-1"]))
                .send()
                .await
                .expect("send");
            assert_eq!(response.version(), version);
            assert_eq!(response.status(), 200);
        }
        assert_eq!(Ledger::get(&env.mock.handle.ledger.connections), 3);
    })
    .await;
}

#[tokio::test]
async fn start_refuses_what_huawei_would_never_issue_or_the_mock_cannot_do() {
    within(async {
        type Tweak = Box<dyn Fn(&mut MockHmsOptions)>;
        let bad: [(&str, Tweak); 6] = [
            ("no app", Box::new(|o| o.apps.clear())),
            ("app id", Box::new(|o| o.apps[0].app_id = "app".to_owned())),
            (
                "secret",
                Box::new(|o| o.apps[0].client_secret = "a b".to_owned()),
            ),
            ("twice", Box::new(|o| o.apps.push(o.apps[0].clone()))),
            ("rate", Box::new(|o| o.throttle_rate = 1.5)),
            ("goaway", Box::new(|o| o.faults.goaway_after = Some(1))),
        ];
        for (what, tweak) in bad {
            let mut opts = MockHmsOptions::new(pki());
            tweak(&mut opts);
            assert!(start(opts).await.is_err(), "{what}");
        }
    })
    .await;
}

#[test]
fn options_and_apps_do_not_print_secrets() {
    let opts = MockHmsOptions::new(pki());
    let secret = opts.apps[0].client_secret.clone();
    for c in ['+', '/', '='] {
        assert!(secret.contains(c), "{secret}");
    }
    let debug = format!("{opts:?}");
    assert!(
        !debug.contains(&secret) && !debug.contains("PRIVATE KEY"),
        "{debug}"
    );
}
