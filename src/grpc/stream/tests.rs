//! `SendStream`'s framing, back-pressure and cut streams against a stand-in
//! NDJSON route (the real intake is tests/grpc.rs's business once it lands).
//! What it leaves out: HTTP/2 flow control between a real client and the
//! listener; here the chunk source is polled directly.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::routing::post;
use futures_util::StreamExt as _;
use http::StatusCode;
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify};
use tonic::Code;

use super::*;
use crate::grpc::proto::pushgate::{SendRequest, TokenBatch};

/// What the stand-in route saw.
#[derive(Default)]
struct Seen {
    lines: Mutex<Vec<String>>,
    content_type: Mutex<String>,
    cut: Mutex<Option<String>>,
    cut_seen: Notify,
}

/// `POST /apns/send` and `/webpush/send` reading NDJSON line by line, after
/// `gate` lets them go on past the first line.
fn ndjson_route(seen: Arc<Seen>, gate: Arc<Notify>) -> axum::Router {
    let handler = move |headers: http::HeaderMap, body: Body| {
        let seen = seen.clone();
        let gate = gate.clone();
        async move {
            *seen.content_type.lock().await = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let mut frames = body.into_data_stream();
            let mut pending = String::new();
            let mut gated = true;
            while let Some(frame) = frames.next().await {
                match frame {
                    Ok(bytes) => pending.push_str(&String::from_utf8_lossy(&bytes)),
                    Err(e) => {
                        *seen.cut.lock().await = Some(e.to_string());
                        seen.cut_seen.notify_one();
                        return (
                            StatusCode::ACCEPTED,
                            axum::Json(json!({"job": "j", "truncated": true})),
                        );
                    }
                }
                while let Some(i) = pending.find('\n') {
                    let line: String = pending.drain(..=i).collect();
                    seen.lines.lock().await.push(line.trim_end().to_owned());
                }
                if gated {
                    gate.notified().await;
                    gated = false;
                }
            }
            let n = seen.lines.lock().await.len().saturating_sub(1);
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({"job": "j", "accepted": n, "duplicates": 0})),
            )
        }
    };
    axum::Router::new()
        .route("/apns/send", post(handler.clone()))
        .route("/webpush/send", post(handler))
}

fn header(platform: &str, tokens: &[&str]) -> SendChunk {
    SendChunk {
        part: Some(Part::Header(SendRequest {
            platform: platform.into(),
            message: None,
            tokens: tokens.iter().map(|t| (*t).to_owned()).collect(),
            app: "watch".into(),
            idempotency_key: String::new(),
        })),
    }
}

fn batch(tokens: &[String]) -> SendChunk {
    SendChunk {
        part: Some(Part::Tokens(TokenBatch {
            tokens: tokens.to_vec(),
        })),
    }
}

fn open_gate() -> Arc<Notify> {
    let gate = Arc::new(Notify::new());
    gate.notify_one();
    gate
}

#[tokio::test]
async fn the_header_then_one_token_a_line() {
    let seen = Arc::new(Seen::default());
    let adapter = Adapter::new(ndjson_route(seen.clone(), open_gate()));
    let chunks = vec![
        Ok(header("apns", &["aa"])),
        Ok(batch(&["bb".into(), "cc".into()])),
        Ok(SendChunk { part: None }),
        Ok(batch(&[])),
        Ok(batch(&["dd".into()])),
    ];
    let reply = send(
        &adapter,
        &MetadataMap::new(),
        futures_util::stream::iter(chunks),
    )
    .await
    .expect("202");
    assert_eq!((reply.job.as_str(), reply.accepted), ("j", 4));
    assert_eq!(*seen.content_type.lock().await, NDJSON);
    assert_eq!(
        *seen.lines.lock().await,
        [
            r#"{"app":"watch"}"#,
            r#""aa""#,
            r#""bb""#,
            r#""cc""#,
            r#""dd""#
        ]
    );
    assert!(seen.cut.lock().await.is_none());
}

#[tokio::test]
async fn webpush_lines_are_subscription_objects() {
    let seen = Arc::new(Seen::default());
    let adapter = Adapter::new(ndjson_route(seen.clone(), open_gate()));
    let sub = r#"{"endpoint": "https://push.example/1", "keys": {"p256dh": "P", "auth": "A"}}"#;
    let chunks = vec![Ok(header("webpush", &[])), Ok(batch(&[sub.to_owned()]))];
    send(
        &adapter,
        &MetadataMap::new(),
        futures_util::stream::iter(chunks),
    )
    .await
    .expect("202");
    let lines = seen.lines.lock().await.clone();
    let line: Value = serde_json::from_str(&lines[1]).expect("JSON");
    assert_eq!(line["endpoint"], "https://push.example/1");
}

/// While the route does not read, at most [`LINES_IN_FLIGHT`] batches (plus
/// the one waiting to be written) are taken from the client's stream.
#[tokio::test(flavor = "current_thread")]
async fn a_route_that_stops_reading_stops_the_client_stream() {
    let seen = Arc::new(Seen::default());
    let gate = Arc::new(Notify::new());
    let adapter = Adapter::new(ndjson_route(seen.clone(), gate.clone()));
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    let batches = (0..200).map(|i| Ok(batch(&[format!("t{i}")])));
    let chunks =
        futures_util::stream::iter(std::iter::once(Ok(header("apns", &[]))).chain(batches))
            .inspect(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            });
    let call = tokio::spawn(async move { send(&adapter, &MetadataMap::new(), chunks).await });
    // One thread: every step of the call happens inside these yields.
    for _ in 0..1000 {
        tokio::task::yield_now().await;
    }
    let taken = pulled.load(Ordering::SeqCst);
    assert!(
        taken <= 1 + LINES_IN_FLIGHT + 2,
        "{taken} chunks taken while the route read nothing past line 1"
    );
    gate.notify_one();
    let reply = call.await.expect("joined").expect("202");
    assert_eq!(reply.accepted, 200);
    assert_eq!(pulled.load(Ordering::SeqCst), 201);
}

#[tokio::test]
async fn a_broken_client_stream_cuts_the_body_and_the_call_fails() {
    let seen = Arc::new(Seen::default());
    let adapter = Adapter::new(ndjson_route(seen.clone(), open_gate()));
    let chunks = vec![
        Ok(header("apns", &[])),
        Ok(batch(&["aa".into()])),
        Err(Status::cancelled("client went away")),
    ];
    let e = send(
        &adapter,
        &MetadataMap::new(),
        futures_util::stream::iter(chunks),
    )
    .await
    .expect_err("cut");
    assert_eq!(e.code(), Code::Cancelled);
    let cut = seen
        .cut
        .lock()
        .await
        .clone()
        .expect("the route saw the cut");
    assert!(cut.contains("client went away"), "{cut}");
    assert_eq!(*seen.lines.lock().await, [r#"{"app":"watch"}"#, r#""aa""#]);
}

/// hyper drops a handler whose client reset its stream: the route, on its
/// own task, still sees the body break rather than end.
#[tokio::test]
async fn a_dropped_call_cuts_the_body_rather_than_ending_it() {
    let seen = Arc::new(Seen::default());
    let adapter = Adapter::new(ndjson_route(seen.clone(), open_gate()));
    let chunks =
        futures_util::stream::iter(vec![Ok(header("apns", &[])), Ok(batch(&["aa".into()]))])
            .chain(futures_util::stream::pending());
    let call = tokio::spawn(async move { send(&adapter, &MetadataMap::new(), chunks).await });
    while seen.lines.lock().await.len() < 2 {
        tokio::task::yield_now().await;
    }
    call.abort();
    seen.cut_seen.notified().await;
    let cut = seen.cut.lock().await.clone().expect("a cut");
    assert!(cut.contains("ended before"), "{cut}");
}

#[tokio::test]
async fn a_second_header_is_refused_and_cuts_the_body() {
    let seen = Arc::new(Seen::default());
    let adapter = Adapter::new(ndjson_route(seen.clone(), open_gate()));
    let chunks = vec![Ok(header("apns", &[])), Ok(header("apns", &[]))];
    let e = send(
        &adapter,
        &MetadataMap::new(),
        futures_util::stream::iter(chunks),
    )
    .await
    .expect_err("refused");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(seen.cut.lock().await.is_some());
}

#[tokio::test]
async fn the_first_chunk_must_be_a_header() {
    let adapter = Adapter::new(axum::Router::new());
    for chunks in [vec![Ok(batch(&["aa".into()]))], vec![]] {
        let e = send(
            &adapter,
            &MetadataMap::new(),
            futures_util::stream::iter(chunks),
        )
        .await
        .expect_err("refused");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
}

/// The route answering before the stream ends (here 415, as today's routes
/// do for NDJSON) ends the call with that answer, however much the client
/// still has to send.
#[tokio::test]
async fn an_early_answer_ends_the_call() {
    let router = axum::Router::new().route(
        "/fcm/send",
        post(|| async {
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                axum::Json(json!({"error": "unsupported_media_type", "message": "send JSON"})),
            )
        }),
    );
    let adapter = Adapter::new(router);
    let chunks = futures_util::stream::iter(vec![Ok(header("fcm", &["aa"]))])
        .chain(futures_util::stream::pending());
    let e = send(&adapter, &MetadataMap::new(), chunks)
        .await
        .expect_err("415");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "send JSON");
}
