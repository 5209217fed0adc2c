#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use jsonwebtoken::{EncodingKey, Header};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::*;
use crate::mock::Ledger;

const TEAM: &str = "TEAM123456";
const KID: &str = "KEY1234567";
const TOPIC: &str = "com.example.app";
const LIMIT: Duration = Duration::from_secs(20);

fn token(prefix: &str) -> String {
    let mut t = prefix.to_owned();
    while t.len() < 64 {
        t.push('a');
    }
    t
}

fn now_s() -> u64 {
    unix_now().as_secs()
}

fn jwt(p8: &str, kid: &str, iss: &str, iat: u64) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    let claims = serde_json::json!({ "iss": iss, "iat": iat });
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_ec_pem(p8.as_bytes()).unwrap(),
    )
    .unwrap()
}

struct Setup {
    p8: String,
    handle: MockHandle,
}

async fn token_server(faults: Faults) -> Setup {
    let pki = TestPki::generate().unwrap();
    let (p8, public) = generate_provider_key().unwrap();
    let mut opts = MockApnsOptions::new(
        ApnsAuthCheck::Token {
            team_id: TEAM.to_owned(),
            key_id: KID.to_owned(),
            public_key_pem: public,
        },
        &pki,
    );
    opts.faults = faults;
    let handle = start(opts).await.unwrap();
    Setup { p8, handle }
}

impl Setup {
    fn jwt(&self) -> String {
        jwt(&self.p8, KID, TEAM, now_s())
    }

    fn ledger(&self) -> &Ledger {
        &self.handle.ledger
    }

    async fn client(&self) -> Client {
        connect(&self.handle, None).await.unwrap()
    }
}

struct Client {
    send: h2::client::SendRequest<Bytes>,
    conn: tokio::task::JoinHandle<Result<(), h2::Error>>,
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: serde_json::Value,
}

async fn connect(handle: &MockHandle, cert: Option<&Identity>) -> anyhow::Result<Client> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(handle.ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match cert {
        Some(id) => {
            let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()?;
            let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes())?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(handle.addr).await?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (send, conn) = h2::client::handshake(tls).await?;
    let conn = tokio::spawn(conn);
    Ok(Client { send, conn })
}

impl Client {
    /// A POST with the usual headers; `extra` overrides or adds (an empty value removes).
    async fn post(
        &self,
        jwt: Option<&str>,
        token: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<Answer> {
        self.request("POST", &format!("/3/device/{token}"), jwt, extra, body)
            .await
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        jwt: Option<&str>,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> anyhow::Result<Answer> {
        let mut headers = vec![("apns-topic", TOPIC), ("apns-push-type", "alert")];
        for (name, value) in extra {
            headers.retain(|(n, _)| n != name);
            if !value.is_empty() {
                headers.push((name, value));
            }
        }
        let mut req = Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"));
        let bearer;
        if let Some(jwt) = jwt {
            bearer = format!("bearer {jwt}");
            req = req.header("authorization", bearer.as_str());
        }
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let mut send = self.send.clone().ready().await?;
        let (response, mut stream) = send.send_request(req.body(())?, body.is_empty())?;
        if !body.is_empty() {
            stream.send_data(Bytes::copy_from_slice(body), true)?;
        }
        let response = response.await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut recv = response.into_body();
        let mut raw = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            raw.extend_from_slice(&chunk);
        }
        let body = if raw.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&raw)?
        };
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

const PAYLOAD: &[u8] = br#"{"aps":{"alert":"hi"}}"#;

fn reason(answer: &Answer) -> &str {
    answer.body["reason"].as_str().unwrap_or("")
}

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test timed out")
}

#[tokio::test]
async fn delivers_echoes_apns_id_and_verifies_a_reused_jwt_once() {
    within(async {
        let s = token_server(Faults::default()).await;
        let c = s.client().await;
        let jwt = s.jwt();
        let tok = token("0123");
        let id = "123E4567-e89b-12d3-a456-426614174000";
        let a = c
            .post(Some(&jwt), &tok, &[("apns-id", id)], PAYLOAD)
            .await
            .unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.headers["apns-id"], id);
        let b = c.post(Some(&jwt), &tok, &[], PAYLOAD).await.unwrap();
        assert_eq!(b.status, 200);
        assert!(is_uuid(b.headers["apns-id"].as_bytes()));
        // Upper-case tokens are the same device: the ledger keys on lowercase.
        let c2 = c
            .post(Some(&jwt), &tok.to_ascii_uppercase(), &[], PAYLOAD)
            .await
            .unwrap();
        assert_eq!(c2.status, 200);
        let rec = s.ledger().token(&tok);
        assert_eq!((rec.attempts, rec.deliveries), (3, 3));
        assert_eq!(s.ledger().distinct_credentials(), 1);
        assert_eq!(Ledger::get(&s.ledger().requests), 3);
        assert_eq!(Ledger::get(&s.ledger().connections), 1);
    })
    .await;
}

#[tokio::test]
async fn unregistered_answers_410_with_a_timestamp() {
    within(async {
        let s = token_server(Faults::default()).await;
        let c = s.client().await;
        let before = unix_now().as_millis() as u64;
        let a = c
            .post(Some(&s.jwt()), &token("DEAD"), &[], PAYLOAD)
            .await
            .unwrap();
        assert_eq!(a.status, 410);
        assert_eq!(reason(&a), "Unregistered");
        assert!(a.body["timestamp"].as_u64().unwrap() >= before);
        assert!(a.headers.contains_key("apns-id"));
        assert_eq!(s.ledger().token(&token("dead")).deliveries, 0);
    })
    .await;
}

#[tokio::test]
async fn device_token_errors() {
    within(async {
        let s = token_server(Faults::default()).await;
        let c = s.client().await;
        let jwt = s.jwt();
        for bad in [
            "zz".repeat(32),
            "abc".to_owned(),
            "a".repeat(63),
            "ab".repeat(101),
        ] {
            let a = c.post(Some(&jwt), &bad, &[], PAYLOAD).await.unwrap();
            assert_eq!((a.status, reason(&a)), (400, "BadDeviceToken"), "{bad}");
        }
        let a = c
            .post(Some(&jwt), &token("bad0"), &[], PAYLOAD)
            .await
            .unwrap();
        assert_eq!((a.status, reason(&a)), (400, "BadDeviceToken"));
        let a = c
            .post(Some(&jwt), &token("bad1"), &[], PAYLOAD)
            .await
            .unwrap();
        assert_eq!((a.status, reason(&a)), (400, "DeviceTokenNotForTopic"));
        let a = c
            .post(Some(&jwt), &token("5000"), &[], PAYLOAD)
            .await
            .unwrap();
        assert_eq!((a.status, reason(&a)), (500, "InternalServerError"));
        // 16 bytes is the shortest accepted token.
        let a = c
            .post(Some(&jwt), &"ab".repeat(16), &[], PAYLOAD)
            .await
            .unwrap();
        assert_eq!(a.status, 200);
    })
    .await;
}

#[tokio::test]
async fn provider_token_errors() {
    within(async {
        let s = token_server(Faults::default()).await;
        let c = s.client().await;
        let tok = token("0");
        let a = c.post(None, &tok, &[], PAYLOAD).await.unwrap();
        assert_eq!((a.status, reason(&a)), (403, "MissingProviderToken"));

        let (other_p8, _) = generate_provider_key().unwrap();
        let now = now_s();
        let invalid = [
            jwt(&other_p8, KID, TEAM, now),      // signed by another key
            jwt(&s.p8, "OTHERKEY00", TEAM, now), // wrong kid
            jwt(&s.p8, KID, "OTHERTEAM0", now),  // wrong iss
            jwt(&s.p8, KID, TEAM, now + 3600),   // from the future
            "not.a.jwt".to_owned(),
        ];
        for bad in &invalid {
            let a = c.post(Some(bad), &tok, &[], PAYLOAD).await.unwrap();
            assert_eq!((a.status, reason(&a)), (403, "InvalidProviderToken"));
        }
        // alg must be ES256, even with a valid HMAC.
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = Some(KID.to_owned());
        let hs = jsonwebtoken::encode(
            &hs,
            &serde_json::json!({ "iss": TEAM, "iat": now }),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        let a = c.post(Some(&hs), &tok, &[], PAYLOAD).await.unwrap();
        assert_eq!((a.status, reason(&a)), (403, "InvalidProviderToken"));

        let old = jwt(&s.p8, KID, TEAM, now - 3700);
        let a = c.post(Some(&old), &tok, &[], PAYLOAD).await.unwrap();
        assert_eq!((a.status, reason(&a)), (403, "ExpiredProviderToken"));

        // The same (cached) bad token is still refused.
        let a = c.post(Some(&invalid[0]), &tok, &[], PAYLOAD).await.unwrap();
        assert_eq!(a.status, 403);
        assert_eq!(s.ledger().token(&tok).attempts, 0);
    })
    .await;
}

#[tokio::test]
async fn payload_limits() {
    within(async {
        let s = token_server(Faults::default()).await;
        let c = s.client().await;
        let jwt = s.jwt();
        let tok = token("0");
        let json_of = |len: usize| {
            let mut body = br#"{"aps":{},"pad":""#.to_vec();
            body.resize(len - 2, b'x');
            body.extend_from_slice(br#""}"#);
            body
        };
        let a = c.post(Some(&jwt), &tok, &[], &json_of(4096)).await.unwrap();
        assert_eq!(a.status, 200);
        let a = c.post(Some(&jwt), &tok, &[], &json_of(4097)).await.unwrap();
        assert_eq!((a.status, reason(&a)), (413, "PayloadTooLarge"));
        let voip = [
            ("apns-push-type", "voip"),
            ("apns-topic", "com.example.app.voip"),
        ];
        let a = c
            .post(Some(&jwt), &tok, &voip, &json_of(5000))
            .await
            .unwrap();
        assert_eq!(a.status, 200);
        let a = c
            .post(Some(&jwt), &tok, &voip, &json_of(5121))
            .await
            .unwrap();
        assert_eq!((a.status, reason(&a)), (413, "PayloadTooLarge"));
        let a = c.post(Some(&jwt), &tok, &[], b"").await.unwrap();
        assert_eq!((a.status, reason(&a)), (400, "PayloadEmpty"));
        for bad in [&b"[1,2]"[..], b"{\"aps\":", b"\"x\""] {
            let a = c.post(Some(&jwt), &tok, &[], bad).await.unwrap();
            assert_eq!((a.status, reason(&a)), (400, "BadPayload"));
        }
        // The connection survived the early answers.
        let a = c.post(Some(&jwt), &tok, &[], PAYLOAD).await.unwrap();
        assert_eq!(a.status, 200);
    })
    .await;
}

#[tokio::test]
async fn header_and_path_errors() {
    within(async {
        let s = token_server(Faults::default()).await;
        let c = s.client().await;
        let jwt = s.jwt();
        let tok = token("0");
        type Case<'a> = (&'a [(&'a str, &'a str)], u16, &'a str);
        let cases: &[Case] = &[
            (&[("apns-topic", "")], 400, "MissingTopic"),
            (&[("apns-priority", "7")], 400, "BadPriority"),
            (&[("apns-push-type", "banner")], 400, "InvalidPushType"),
            (&[("apns-push-type", "")], 400, "InvalidPushType"),
            (&[("apns-expiration", "soon")], 400, "BadExpirationDate"),
            (
                &[("apns-collapse-id", &"c".repeat(65))],
                400,
                "BadCollapseId",
            ),
            (&[("apns-id", "not-a-uuid")], 400, "BadMessageId"),
        ];
        for (extra, status, why) in cases {
            let a = c.post(Some(&jwt), &tok, extra, PAYLOAD).await.unwrap();
            assert_eq!((a.status, reason(&a)), (*status, *why), "{extra:?}");
            assert!(is_uuid(a.headers["apns-id"].as_bytes()));
        }
        let fine = [
            ("apns-priority", "5"),
            ("apns-expiration", "0"),
            ("apns-collapse-id", "c"),
        ];
        let a = c.post(Some(&jwt), &tok, &fine, PAYLOAD).await.unwrap();
        assert_eq!(a.status, 200);
        let path = format!("/3/device/{tok}");
        let a = c.request("GET", &path, Some(&jwt), &[], b"").await.unwrap();
        assert_eq!((a.status, reason(&a)), (405, "MethodNotAllowed"));
        let a = c
            .request("POST", "/3/devices/abc", Some(&jwt), &[], PAYLOAD)
            .await
            .unwrap();
        assert_eq!((a.status, reason(&a)), (404, "BadPath"));
    })
    .await;
}

#[tokio::test]
async fn flaky_tokens_fail_first_then_deliver() {
    within(async {
        let flaky = token("c0ffee");
        let faults = Faults {
            flaky: [flaky.clone()].into_iter().collect(),
            ..Faults::default()
        };
        let s = token_server(faults).await;
        let c = s.client().await;
        let jwt = s.jwt();
        for (tok, status, why) in [
            (flaky, 503, "ServiceUnavailable"),
            (token("f1a0"), 503, "ServiceUnavailable"),
            (token("4290"), 429, "TooManyRequests"),
        ] {
            let a = c.post(Some(&jwt), &tok, &[], PAYLOAD).await.unwrap();
            assert_eq!((a.status, reason(&a)), (status, why));
            let a = c.post(Some(&jwt), &tok, &[], PAYLOAD).await.unwrap();
            assert_eq!(a.status, 200);
            let rec = s.ledger().token(&tok);
            assert_eq!((rec.attempts, rec.deliveries), (2, 1));
        }
    })
    .await;
}

#[tokio::test]
async fn throttle_fault_sends_retry_after() {
    within(async {
        let faults = Faults {
            throttle_every: Some(2),
            retry_after_s: 7,
            ..Faults::default()
        };
        let s = token_server(faults).await;
        let c = s.client().await;
        let jwt = s.jwt();
        let a = c.post(Some(&jwt), &token("0"), &[], PAYLOAD).await.unwrap();
        assert_eq!(a.status, 200);
        let a = c.post(Some(&jwt), &token("0"), &[], PAYLOAD).await.unwrap();
        assert_eq!((a.status, reason(&a)), (429, "TooManyRequests"));
        assert_eq!(a.headers["retry-after"], "7");
    })
    .await;
}

#[tokio::test]
async fn goaway_after_n_streams_answers_the_accepted_ones() {
    within(async {
        let faults = Faults {
            goaway_after: Some(2),
            latency_ms: 50,
            ..Faults::default()
        };
        let s = token_server(faults).await;
        let mut c = s.client().await;
        let jwt = s.jwt();
        let tok = token("0");
        let (a, b) = tokio::join!(
            c.post(Some(&jwt), &tok, &[], PAYLOAD),
            c.post(Some(&jwt), &tok, &[], PAYLOAD)
        );
        assert_eq!(a.unwrap().status, 200);
        assert_eq!(b.unwrap().status, 200);
        // Once both are answered the server closes the connection.
        let _ = (&mut c.conn).await.unwrap();
        assert_eq!(Ledger::get(&s.ledger().goaways), 1);
        assert_eq!(s.ledger().token(&tok).deliveries, 2);
        assert!(c.post(Some(&jwt), &tok, &[], PAYLOAD).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn drop_after_n_streams_leaves_them_unanswered() {
    within(async {
        let faults = Faults {
            drop_after: Some(2),
            ..Faults::default()
        };
        let s = token_server(faults).await;
        let c = s.client().await;
        let jwt = s.jwt();
        let a = c.post(Some(&jwt), &token("0"), &[], PAYLOAD).await.unwrap();
        assert_eq!(a.status, 200);
        assert!(c.post(Some(&jwt), &token("0"), &[], PAYLOAD).await.is_err());
        assert_eq!(Ledger::get(&s.ledger().drops), 1);
        assert_eq!(s.ledger().token(&token("0")).attempts, 1);
    })
    .await;
}

#[tokio::test]
async fn stall_after_n_streams_stops_answering_but_keeps_the_socket() {
    within(async {
        let faults = Faults {
            stall_after: Some(2),
            ..Faults::default()
        };
        let s = token_server(faults).await;
        let c = s.client().await;
        let jwt = s.jwt();
        let a = c.post(Some(&jwt), &token("0"), &[], PAYLOAD).await.unwrap();
        assert_eq!(a.status, 200);
        // No answer and no reset: the request just hangs.
        let hung = tokio::time::timeout(
            Duration::from_millis(500),
            c.post(Some(&jwt), &token("0"), &[], PAYLOAD),
        )
        .await;
        assert!(hung.is_err(), "a stalled connection answered");
        assert_eq!(Ledger::get(&s.ledger().stalls), 1);
        assert!(!c.conn.is_finished(), "the socket was closed");
    })
    .await;
}

#[tokio::test]
async fn refused_streams_beyond_the_limit_are_counted_and_peak_tracked() {
    within(async {
        let pki = TestPki::generate().unwrap();
        let mut opts = MockApnsOptions::new(ApnsAuthCheck::None, &pki);
        opts.max_concurrent_streams = 3;
        opts.faults.latency_ms = 100;
        let handle = start(opts).await.unwrap();
        let c = connect(&handle, None).await.unwrap();
        let tok = token("1");
        let burst = || {
            futures_util::future::join_all(
                (0..8).map(|_| c.post(None, &tok, &[("apns-topic", "")], PAYLOAD)),
            )
        };
        let ledger = &handle.ledger;
        // Fired before the client has read SETTINGS, some streams may exceed the
        // limit: h2 refuses them and the mock must count exactly those.
        let mut refused = 0;
        for a in burst().await {
            match a {
                Ok(a) => assert_eq!(a.status, 200),
                Err(e) => {
                    let e = e.downcast_ref::<h2::Error>().expect("an h2 error");
                    assert_eq!(e.reason(), Some(h2::Reason::REFUSED_STREAM));
                    refused += 1;
                }
            }
        }
        assert_eq!(Ledger::get(&ledger.stream_limit_violations), refused);
        // Now the client knows the limit and queues instead.
        for a in burst().await {
            assert_eq!(a.unwrap().status, 200);
        }
        assert_eq!(Ledger::get(&ledger.peak_streams), 3);
        assert_eq!(Ledger::get(&ledger.stream_limit_violations), refused);
        assert_eq!(Ledger::get(&ledger.requests), 16 - refused);
    })
    .await;
}

#[tokio::test]
async fn client_certificate_mode() {
    within(async {
        let pki = TestPki::generate().unwrap();
        let opts = MockApnsOptions::new(
            ApnsAuthCheck::ClientCert {
                ca_pem: pki.ca_pem.clone(),
            },
            &pki,
        );
        let handle = start(opts).await.unwrap();
        let c = connect(&handle, Some(&pki.client)).await.unwrap();
        // Topic is optional with a certificate: Apple takes it from the certificate.
        let a = c
            .post(None, &token("0"), &[("apns-topic", "")], PAYLOAD)
            .await
            .unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(Ledger::get(&handle.ledger.connections), 1);

        // Without a certificate the server aborts the handshake; with TLS 1.3 the
        // client may only notice on its first read, so any step may be the one failing.
        let refused = async {
            let c = connect(&handle, None).await?;
            c.post(None, &token("0"), &[], PAYLOAD).await
        };
        assert!(refused.await.is_err());
        assert_eq!(Ledger::get(&handle.ledger.connections), 1);
    })
    .await;
}

#[test]
fn provider_key_round_trip() {
    let (p8, public) = generate_provider_key().unwrap();
    assert!(p8.contains("BEGIN PRIVATE KEY"));
    assert!(public.contains("BEGIN PUBLIC KEY"));
    let signed = jwt(&p8, KID, TEAM, 1_700_000_000);
    let key = DecodingKey::from_ec_pem(public.as_bytes()).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<serde_json::Value>(&signed, &key, &validation).unwrap();
    assert_eq!(data.header.kid.as_deref(), Some(KID));
    assert_eq!(data.claims["iss"], TEAM);
    let (_, other_public) = generate_provider_key().unwrap();
    let other = DecodingKey::from_ec_pem(other_public.as_bytes()).unwrap();
    assert!(jsonwebtoken::decode::<serde_json::Value>(&signed, &other, &validation).is_err());
}

#[test]
fn uuid_and_token_syntax() {
    assert!(is_uuid(b"123e4567-e89b-12d3-a456-426614174000"));
    assert!(!is_uuid(b"123e4567e89b12d3a456426614174000"));
    assert!(!is_uuid(b"123e4567-e89b-12d3-a456-42661417400g"));
    assert!(is_uuid(new_apns_id().as_bytes()));
    assert!(is_device_token(&"Ab".repeat(32)));
    assert!(!is_device_token(&"ab".repeat(15)));
    assert!(is_json_object(b" {\"a\":1} "));
    assert!(!is_json_object(b"{\"a\":1} x"));
}
