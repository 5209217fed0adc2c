//! Strangers and careless clients (issue 12), each over a real socket against
//! a gateway wired to the mock APNs: bounded rejection answers, listener
//! timeouts and the connection cap (HTTP/1.1 and HTTP/2, plain and TLS), a
//! rapid-reset burst, JSON for every error, status codes, Bearer in any
//! case, topic and collapse id checks, the demo's key files, and what a second
//! signal says before exiting.
//!
//! No test depends on speed: timeouts are asserted as "closed, and not before
//! the configured time" with generous upper bounds, and the connection cap by
//! counting which connections were answered. What it leaves out: memory
//! figures (allocator- and machine-dependent; `bench/rejections` measures
//! them) and long soak runs (`scripts/soak`).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use pushgate::config::FileConfig;
use pushgate::mock::Faults;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short listener timeouts for these tests.
const T: u64 = 2;

fn short_timeouts(file: &mut FileConfig) {
    file.server.header_timeout_s = T;
    file.server.body_timeout_s = T;
    file.server.idle_timeout_s = T;
}

async fn env_with(tweak: impl FnOnce(&mut FileConfig) + Send + 'static) -> ApnsEnv {
    apns_env(ApnsSetup {
        tweak: Box::new(tweak),
        ..ApnsSetup::default()
    })
    .await
}

/// Reads until the server closes (EOF or reset), at most `bound`; returns
/// what was read and how long the close took.
async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    bound: Duration,
) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = bound.checked_sub(started.elapsed()).unwrap_or_else(|| {
            panic!(
                "still open after {bound:?}; read {:?}",
                String::from_utf8_lossy(&got)
            )
        });
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, started.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "still open after {bound:?}; read {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// Not before the configured timeout (less a margin for the moment the
/// server's own clock started, just before ours).
fn assert_not_early(took: Duration, what: &str) {
    assert!(
        took >= Duration::from_secs(T) - Duration::from_millis(500),
        "{what}: closed after {took:?}, before the {T} s timeout"
    );
}

const BOUND: Duration = Duration::from_secs(30);

fn status_of(raw: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(raw);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

fn json_body_of(raw: &[u8]) -> Value {
    let text = String::from_utf8_lossy(raw);
    let start = text
        .find('{')
        .unwrap_or_else(|| panic!("no JSON in {text:?}"));
    let end = text.rfind('}').unwrap();
    serde_json::from_str(&text[start..=end]).unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

async fn metrics_text(env: &ApnsEnv) -> String {
    env.client
        .get(env.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

// === item 1: bounded rejections ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_bad_tokens_answers_a_bounded_list_with_counts_per_reason() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = env_with(|_| {}).await;
        let n = 200_000;
        let mut tokens: Vec<String> = vec!["zz".to_owned(); n];
        tokens.push(apns_token("abcd", 1));
        let body = json!({ "tokens": tokens, "payload": apns_payload() }).to_string();
        let r = env
            .client
            .post(env.url("/apns/send"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let text = r.text().await.unwrap();
        assert!(text.len() < 64 * 1024, "answer is {} bytes", text.len());
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["accepted"], 1);
        assert_eq!(answer["rejected_count"], n as u64);
        assert_eq!(answer["rejected_by_reason"]["BadDeviceToken"], n as u64);
        assert_eq!(answer["rejected"].as_array().unwrap().len(), 1000);
        assert_eq!(answer["rejected_truncated"], true);
        assert_eq!(
            answer["rejected"][0],
            json!({ "token": "zz", "reason": "BadDeviceToken" })
        );

        // Only bad tokens: 400, bounded the same way.
        let body = json!({ "tokens": vec!["zz"; 5000], "payload": apns_payload() });
        let (status, answer, _) = env.post_json("/apns/send", &body).await;
        assert_eq!(status, 400);
        assert_eq!(answer["error"], "no_valid_tokens");
        assert_eq!(answer["rejected_count"], 5000);
        assert_eq!(answer["rejected"].as_array().unwrap().len(), 1000);
        // Every refused token is still counted in the metrics.
        let metrics = metrics_text(&env).await;
        assert!(
            metrics.contains(&format!(
                "pushgate_tokens_rejected_total{{platform=\"apns\",reason=\"BadDeviceToken\"}} {}",
                n
            )),
            "{metrics}"
        );
        wait_done(&env.gateway, pushgate::apns::FAMILY, 1).await;
    })
    .await
    .unwrap();
}

// === item 3: listener timeouts and limits ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = env_with(short_timeouts).await;
        let mut tcp = TcpStream::connect(env.gateway.addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = tcp.read(&mut buf).await.unwrap();
        assert_eq!(status_of(&buf[..n]), 200);
        let (_, took) = read_until_closed(&mut tcp, BOUND).await;
        assert_not_early(took, "idle keep-alive");
        // A connection that never sends a byte goes too.
        let mut silent = TcpStream::connect(env.gateway.addr).await.unwrap();
        let (got, took) = read_until_closed(&mut silent, BOUND).await;
        assert!(got.is_empty());
        assert_not_early(took, "silent connection");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_headers_are_closed_after_header_timeout_even_when_dribbled() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = env_with(|f| {
            short_timeouts(f);
            // Idle would close a silent connection anyway: make it long, so
            // only the header timeout can end these.
            f.server.idle_timeout_s = 600;
        })
        .await;
        let mut stalled = TcpStream::connect(env.gateway.addr).await.unwrap();
        stalled
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let (_, took) = read_until_closed(&mut stalled, BOUND).await;
        assert_not_early(took, "unfinished headers");

        // Slowloris: a header byte every 200 ms never completes the head.
        let mut slow = TcpStream::connect(env.gateway.addr).await.unwrap();
        let started = Instant::now();
        let dribble = async {
            for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
                .iter()
                .chain([b'a'; 1000].iter())
            {
                if slow.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::time::timeout(BOUND, dribble)
            .await
            .expect("slowloris still connected after 30 s");
        assert_not_early(started.elapsed(), "slowloris");
        // After a first request, later heads have the same bound.
        let mut second = TcpStream::connect(env.gateway.addr).await.unwrap();
        second
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = second.read(&mut buf).await.unwrap();
        assert_eq!(status_of(&buf[..n]), 200);
        second
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        let (_, took) = read_until_closed(&mut second, BOUND).await;
        assert_not_early(took, "second unfinished head");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_and_the_connection_closes() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = env_with(|f| {
            short_timeouts(f);
            f.server.idle_timeout_s = 600;
        })
        .await;
        let mut tcp = TcpStream::connect(env.gateway.addr).await.unwrap();
        tcp.write_all(
            b"POST /apns/send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"tokens\":[",
        )
        .await
        .unwrap();
        let (got, took) = read_until_closed(&mut tcp, BOUND).await;
        assert_eq!(status_of(&got), 408, "{}", String::from_utf8_lossy(&got));
        assert_eq!(json_body_of(&got)["error"], "body_timeout");
        assert_not_early(took, "stalled body");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_length_of_ten_gigabytes_is_refused_and_closed_at_once() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        // Timeouts far longer than the bound below: only the refusal can close.
        let env = env_with(|f| {
            f.server.header_timeout_s = 600;
            f.server.body_timeout_s = 600;
            f.server.idle_timeout_s = 600;
        })
        .await;
        let mut tcp = TcpStream::connect(env.gateway.addr).await.unwrap();
        tcp.write_all(
            b"POST /apns/send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{",
        )
        .await
        .unwrap();
        let (got, _) = read_until_closed(&mut tcp, BOUND).await;
        assert_eq!(status_of(&got), 413, "{}", String::from_utf8_lossy(&got));
        assert_eq!(json_body_of(&got)["error"], "too_large");
        // A route that reads no body answers, then closes instead of waiting
        // for ten gigabytes.
        let mut tcp = TcpStream::connect(env.gateway.addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\nx")
            .await
            .unwrap();
        let (got, _) = read_until_closed(&mut tcp, BOUND).await;
        assert_eq!(status_of(&got), 200, "{}", String::from_utf8_lossy(&got));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_closes_the_excess_at_once_and_healthz_answers_below_the_cap() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        const CAP: usize = 8;
        let env = env_with(|f| {
            f.server.max_connections = CAP as u64;
            f.server.idle_timeout_s = 600;
            f.server.header_timeout_s = 600;
        })
        .await;
        // One by one, so the gateway has accepted each before the next.
        let mut held = Vec::new();
        let mut refused = 0;
        for _ in 0..CAP + 4 {
            let mut tcp = TcpStream::connect(env.gateway.addr).await.unwrap();
            let answered = async {
                tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .ok()?;
                let mut buf = [0u8; 1024];
                let n = tcp.read(&mut buf).await.ok()?;
                (n > 0).then(|| status_of(&buf[..n]))
            };
            match tokio::time::timeout(BOUND, answered)
                .await
                .expect("neither answered nor closed")
            {
                Some(200) => held.push(tcp),
                Some(other) => panic!("status {other}"),
                None => refused += 1,
            }
        }
        assert_eq!((held.len(), refused), (CAP, 4), "the cap holds exactly");
        // Every held connection still works.
        for tcp in &mut held {
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 1024];
            let n = tcp.read(&mut buf).await.unwrap();
            assert_eq!(status_of(&buf[..n]), 200);
        }
        // One goes: a fresh client gets /healthz (once the gateway has seen
        // the close, however long that takes).
        drop(held.pop());
        let deadline = Instant::now() + BOUND;
        loop {
            let fresh = reqwest::Client::new();
            if let Ok(r) = fresh.get(env.url("/healthz")).send().await {
                assert_eq!(r.status(), 200);
                break;
            }
            assert!(Instant::now() < deadline, "no /healthz below the cap");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
}

/// A plain HTTP/2 (prior knowledge) client connection to the gateway.
async fn h2c(
    addr: std::net::SocketAddr,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    (send, tokio::spawn(conn))
}

async fn h2_get(send: &mut h2::client::SendRequest<bytes::Bytes>, path: &str) -> u16 {
    let request = http::Request::get(format!("http://localhost{path}"))
        .body(())
        .unwrap();
    let ready = send.clone().ready().await.unwrap();
    *send = ready;
    let (response, _) = send.send_request(request, true).unwrap();
    response.await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_are_capped_in_streams_and_closed_when_idle() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = env_with(|f| {
            short_timeouts(f);
            f.server.max_streams_per_connection = 16;
        })
        .await;
        let (mut send, conn) = h2c(env.gateway.addr).await;
        assert_eq!(h2_get(&mut send, "/healthz").await, 200);
        assert_eq!(send.current_max_send_streams(), 16);
        let started = Instant::now();
        // `send` stays alive: dropping every handle would close the client side.
        let ended = tokio::time::timeout(BOUND, conn)
            .await
            .expect("h2 connection still open");
        ended.unwrap().ok();
        assert_not_early(started.elapsed(), "idle h2 connection");
        drop(send);
        // A connection that sends the preface and nothing else.
        let (_send, conn) = h2c(env.gateway.addr).await;
        let started = Instant::now();
        tokio::time::timeout(BOUND, conn)
            .await
            .expect("silent h2 connection still open")
            .unwrap()
            .ok();
        assert_not_early(started.elapsed(), "silent h2 connection");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_connections_are_closed_when_silent_or_idle() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let pki = pushgate::mock::tls::TestPki::generate().unwrap();
        let dir = scratch("tls-listener");
        let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
        std::fs::write(&cert, &pki.server.cert_pem).unwrap();
        std::fs::write(&key, &pki.server.key_pem).unwrap();
        let env = env_with(move |f| {
            short_timeouts(f);
            f.server.tls_cert = cert.display().to_string();
            f.server.tls_key = key.display().to_string();
        })
        .await;
        use rustls::pki_types::pem::PemObject;
        let ca = rustls::pki_types::CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap();
        for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
            let config =
                pushgate::tls::client_config(std::slice::from_ref(&ca), None, &[alpn]).unwrap();
            let connector = tokio_rustls::TlsConnector::from(config);
            // Handshake done, no request: closed after the header timeout.
            let tcp = TcpStream::connect(env.gateway.addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name.clone(), tcp).await.unwrap();
            let (_, took) = read_until_closed(&mut tls, BOUND).await;
            assert_not_early(took, "silent TLS connection");
            // A TCP connection that never starts the handshake.
            let mut raw = TcpStream::connect(env.gateway.addr).await.unwrap();
            let (_, took) = read_until_closed(&mut raw, BOUND).await;
            assert_not_early(took, "no TLS handshake");
        }
        // One request over TLS then nothing: closed after the idle timeout.
        let config = pushgate::tls::client_config(&[ca], None, &[b"http/1.1"]).unwrap();
        let tcp = TcpStream::connect(env.gateway.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .unwrap();
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = tls.read(&mut buf).await.unwrap();
        assert_eq!(status_of(&buf[..n]), 200);
        let (_, took) = read_until_closed(&mut tls, BOUND).await;
        assert_not_early(took, "idle TLS keep-alive");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_burst_does_not_starve_other_clients() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = env_with(|_| {}).await;
        let addr = env.gateway.addr;
        let attacker = tokio::spawn(async move {
            let (mut send, conn) = h2c(addr).await;
            let mut sent = 0u64;
            for _ in 0..20_000 {
                let request = http::Request::post("http://localhost/apns/send")
                    .header("content-type", "application/json")
                    .body(())
                    .unwrap();
                let Ok(ready) = send.clone().ready().await else {
                    break;
                };
                send = ready;
                let Ok((_, mut stream)) = send.send_request(request, false) else {
                    break;
                };
                stream.send_reset(h2::Reason::CANCEL);
                sent += 1;
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
            sent
        });
        // Meanwhile another client is answered, every time.
        let mut answered = 0;
        while !attacker.is_finished() || answered < 20 {
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                env.client.get(env.url("/healthz")).send(),
            )
            .await
            .expect("/healthz took over 10 s during a rapid-reset burst")
            .unwrap();
            assert_eq!(r.status(), 200);
            answered += 1;
        }
        let sent = attacker.await.unwrap();
        assert!(sent > 0);
        // And a send still goes through.
        env.send_apns(&[apns_token("abcd", 7)]).await;
        eprintln!(
            "rapid reset: {sent} streams opened and reset; {answered} /healthz answered meanwhile"
        );
    })
    .await
    .unwrap();
}

// === item 4: JSON errors everywhere ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extractor_rejections_are_json_and_counted() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = env_with(|_| {}).await;
        for path in [
            "/apns/report?app=a&app=b",
            "/apns/report/unregistered?app=a&app=b",
            "/apns/report/failures?app=a&app=b",
        ] {
            let r = env.client.get(env.url(path)).send().await.unwrap();
            assert_eq!(r.status(), 400, "{path}");
            assert!(
                r.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("application/json"),
                "{path}"
            );
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"], "bad_query", "{body}");
            assert!(body["message"].as_str().unwrap().contains("app"), "{body}");
        }
        let metrics = metrics_text(&env).await;
        let counted = metrics
            .lines()
            .find(|l| {
                l.starts_with("pushgate_api_errors_total{")
                    && l.contains("\"bad_query\"")
                    && l.contains("\"400\"")
            })
            .unwrap_or_else(|| panic!("bad_query not counted: {metrics}"));
        assert!(counted.ends_with(" 3"), "{counted}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_encoding_is_400_bad_body() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = env_with(|_| {}).await;
        let mut tcp = TcpStream::connect(env.gateway.addr).await.unwrap();
        tcp.write_all(
            b"POST /apns/send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n",
        )
        .await
        .unwrap();
        let (got, _) = read_until_closed(&mut tcp, BOUND).await;
        assert_eq!(status_of(&got), 400, "{}", String::from_utf8_lossy(&got));
        assert_eq!(json_body_of(&got)["error"], "bad_body");
    })
    .await
    .unwrap();
}

// === items 5, 6, 7: status codes, Bearer, topic and collapse id ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_larger_than_the_queue_is_413_and_a_full_queue_stays_503() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = apns_env(ApnsSetup {
            faults: Faults {
                latency_ms: 5_000,
                ..Faults::default()
            },
            tweak: Box::new(|f| f.queue.capacity = 10),
            ..ApnsSetup::default()
        })
        .await;
        let tokens: Vec<String> = (0..11).map(|i| apns_token("abcd", i)).collect();
        let (status, answer, headers) = env
            .post_json(
                "/apns/send",
                &json!({ "tokens": tokens, "payload": apns_payload() }),
            )
            .await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (413, Some("job_too_large")),
            "{answer}"
        );
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .contains("queue.capacity"),
            "{answer}"
        );
        assert!(headers.get("retry-after").is_none());
        env.send_apns(&tokens[..10]).await;
        let (status, answer, headers) = env
            .post_json(
                "/apns/send",
                &json!({ "tokens": [apns_token("abcd", 99)], "payload": apns_payload() }),
            )
            .await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (503, Some("queue_full")),
            "{answer}"
        );
        assert!(headers.get("retry-after").is_some());
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_matched_in_any_case() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        const KEY: &str = "key-0123456789abcdef";
        let env = env_with(|f| f.server.api_keys = vec![pushgate::config::Secret::new(KEY)]).await;
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let r = env
                .client
                .get(env.url("/apns/report"))
                .header("authorization", format!("{scheme} {KEY}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{scheme}");
        }
        let r = env
            .client
            .get(env.url("/apns/report"))
            .header("authorization", format!("Basic {KEY}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_collapse_ids_outside_what_the_message_says_are_refused() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let env = env_with(|_| {}).await;
        let token = apns_token("abcd", 1);
        let huge = "a".repeat(100_000);
        for (field, value) in [
            ("topic", "com.exämple"),
            ("topic", "com.example😀"),
            ("topic", "com.\texample"),
            ("topic", "com example"),
            ("topic", huge.as_str()),
            ("collapse_id", "a b"),
            ("collapse_id", "a\tb"),
            ("collapse_id", "ä"),
            ("collapse_id", &huge[..65]),
        ] {
            let mut body = json!({ "tokens": [token], "payload": apns_payload() });
            body[field] = json!(value);
            let (status, answer, _) = env.post_json("/apns/send", &body).await;
            assert_eq!((status, answer["error"].as_str()), (400, Some("bad_field")), "{field}={value:.20?}: {answer}");
            assert!(answer["message"].as_str().unwrap().contains(field), "{answer}");
        }
        let body = json!({ "tokens": [token], "payload": apns_payload(), "topic": "com.example-app.test", "collapse_id": "thread-1!" });
        let (status, answer, _) = env.post_json("/apns/send", &body).await;
        assert_eq!(status, 202, "{answer}");
        // Only the valid request reached Apple.
        wait_done(&env.gateway, pushgate::apns::FAMILY, 1).await;
        assert_eq!(env.mock.ledger.requests.load(std::sync::atomic::Ordering::Relaxed), 1);
    })
    .await
    .unwrap();
}

// === item 9: demo key files ===

#[test]
fn the_demo_writes_its_keys_0600_in_a_0700_directory() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = scratch("demo-perms");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pushgate"))
        .args([
            "demo",
            "--exit",
            "--listen",
            "127.0.0.1:0",
            "--tokens",
            "10",
        ])
        .env("TMPDIR", &tmp)
        .env("PUSHGATE_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dir = std::fs::read_dir(&tmp)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("pushgate-demo-")
        })
        .expect("the demo's directory")
        .path();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            // The disk backend's store: inside the 0700 directory.
            continue;
        }
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        files += 1;
    }
    assert!(files >= 3, "key, CA and service account");
    let _ = std::fs::remove_dir_all(&tmp);
}

// === item 8: a second signal says what it abandons ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_logs_totals_and_what_it_abandons_per_platform_then_exits_130() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = scratch("second-signal-abandon");
        let faults = Faults {
            latency_ms: 500,
            ..Faults::default()
        };
        let (mock, section) = apns_mock_for_process(&dir, faults, 10).await;
        let mut file = FileConfig::default();
        file.server.listen = "127.0.0.1:0".into();
        file.server.shutdown_grace = 3600;
        // The memory backend: what the second signal abandons is lost, and says so.
        file.queue.backend = "memory".into();
        file.apns = Some(section);
        let mut served = Served::start(&dir, "pushgate", &file).await;
        let client = reqwest::Client::new();
        let tokens: Vec<String> = (0..20_000).map(|i| apns_token("abcd", i)).collect();
        let (status, _) = post_json_to(
            &client,
            &served.url,
            "/apns/send",
            &json!({ "tokens": tokens, "payload": apns_payload() }),
        )
        .await;
        assert_eq!(status, 202);
        let deadline = Instant::now() + BOUND;
        while mock
            .ledger
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            assert!(Instant::now() < deadline, "no delivery started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        served.signal("TERM");
        served.wait_for_log("draining").await;
        served.signal("TERM");
        let status = served.wait_exit().await;
        assert_eq!(
            status.code(),
            Some(130),
            "{:#?}",
            served.lines.lock().unwrap()
        );
        let totals = served
            .logs("final totals")
            .into_iter()
            .find(|v| v["fields"]["platform"] == "apns")
            .expect("final totals per platform");
        let abandoned = served
            .logs("second signal")
            .pop()
            .expect("second signal line");
        let by_app = served
            .logs("abandoned by the second signal")
            .pop()
            .expect("per-app line");
        let f = |v: &Value, k: &str| {
            v["fields"][k]
                .as_u64()
                .unwrap_or_else(|| panic!("no {k} in {v}"))
        };
        assert_eq!(f(&totals, "accepted"), 20_000);
        let left = f(&abandoned, "apns");
        assert!(left > 0, "{abandoned}");
        assert_eq!(f(&abandoned, "abandoned"), left);
        assert_eq!(f(&by_app, "tokens"), left);
        assert_eq!(by_app["fields"]["app"], "default");
        assert!(
            by_app["fields"]["fate"]
                .as_str()
                .unwrap()
                .contains("dropped"),
            "{by_app}"
        );
        // The books of that moment balance: what is abandoned is what had no outcome.
        assert_eq!(f(&totals, "pending"), left);
        let finished = f(&totals, "successes")
            + f(&totals, "failures")
            + f(&totals, "unregistered")
            + f(&totals, "expired")
            + f(&totals, "cancelled");
        assert_eq!(finished + left, 20_000, "{totals}");
    })
    .await
    .unwrap();
}
