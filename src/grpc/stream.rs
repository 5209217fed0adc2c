//! `SendStream`: a gRPC client stream as one streamed HTTP request. The
//! header chunk and the token batches become NDJSON (DESIGN "Streamed
//! intake": line 1 the body without tokens, then one token a line; Web Push
//! one subscription object a line), POSTed in process to the platform's send
//! route while the client is still sending.
//!
//! The lines go through a channel of [`LINES_IN_FLIGHT`] batches: when the
//! route stops reading its body (the queue is full), the channel fills, this
//! side stops reading the gRPC stream, and HTTP/2 flow control paces the
//! client. Nothing is buffered beyond those batches.
//!
//! A stream that breaks (the client cancels, the connection drops) or breaks
//! the protocol (a second header) is passed to the route as a body error, so
//! the route keeps what it admitted and marks the job truncated, as it does
//! for a cut HTTP upload. The body ends cleanly only on an explicit end: if
//! the call itself is dropped (hyper drops a handler whose client reset the
//! stream), the body fails too, and the HTTP request, which runs on its own
//! task, still reaches its end.

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use tokio::sync::mpsc;
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::adapter::{Adapter, Forward};
use super::convert::{self, Route};
use super::proto::pushgate::send_chunk::Part;
use super::proto::pushgate::{SendChunk, SendReply};

/// Token batches written ahead of the route's reading.
pub const LINES_IN_FLIGHT: usize = 4;

use crate::api::send::body::NDJSON;

/// Why a streamed body ended before its end.
#[derive(Debug, thiserror::Error)]
#[error("the gRPC stream ended early: {0}")]
pub struct StreamCut(String);

/// What the feeding side hands the body.
enum Frame {
    /// Lines to send.
    Lines(Bytes),
    /// The client's stream ended after its last chunk: the body ends.
    End,
    /// The client's stream broke: the body fails.
    Cut(StreamCut),
}

/// Runs one `SendStream` call over `chunks` (tonic's `Streaming`, or any
/// stream of chunks).
pub async fn send<S>(
    adapter: &Adapter,
    metadata: &MetadataMap,
    mut chunks: S,
) -> Result<SendReply, Status>
where
    S: Stream<Item = Result<SendChunk, Status>> + Unpin + Send,
{
    let header = match chunks.next().await.transpose()? {
        Some(SendChunk {
            part: Some(Part::Header(header)),
        }) => header,
        Some(_) => {
            return Err(Status::invalid_argument(
                "SendChunk 1: the first chunk must be the header (a SendRequest), then token batches",
            ));
        }
        None => {
            return Err(Status::invalid_argument(
                "the stream ended before its header (a SendRequest)",
            ));
        }
    };
    let forward = Forward::from_metadata(metadata).with_idempotency_key(&header.idempotency_key)?;
    let route = Route::parse(&header.platform)?;
    let mut first = vec![convert::ndjson_header(route, &header)?];
    if !header.tokens.is_empty() {
        first.push(convert::ndjson_tokens(route, &header.tokens));
    }
    let (lines, body) = channel_body();
    // Its own task: the route reads the body to its end (or its break) even
    // when this call is dropped.
    let answer = tokio::spawn({
        let adapter = adapter.clone();
        async move {
            adapter
                .post_streamed(route.path(), &forward, NDJSON, body)
                .await
        }
    });
    let feeding = feed(lines, first, route, chunks);
    tokio::pin!(answer, feeding);
    let mut fed: Option<Result<(), Status>> = None;
    loop {
        tokio::select! {
            answer = &mut answer => {
                let answer = answer.map_err(|e| {
                    tracing::warn!(error = %e, "a SendStream's HTTP request failed");
                    Status::internal("the gateway's own request failed")
                })?;
                return match (fed, answer) {
                    (Some(Err(e)), _) => Err(e),
                    (_, answer) => answer.map(|a| convert::send_reply(&a)),
                };
            }
            done = &mut feeding, if fed.is_none() => fed = Some(done),
        }
    }
}

/// A body fed from a bounded channel: the sender waits while the reader
/// does not read. It ends on [`Frame::End`] only; a sender gone without one
/// is a cut.
fn channel_body() -> (mpsc::Sender<Frame>, axum::body::Body) {
    let (tx, rx) = mpsc::channel::<Frame>(LINES_IN_FLIGHT);
    let stream = futures_util::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        let item = match rx.recv().await {
            Some(Frame::Lines(bytes)) => return Some((Ok(bytes), Some(rx))),
            Some(Frame::End) => return None,
            Some(Frame::Cut(cut)) => cut,
            None => StreamCut("the call ended before its stream did".into()),
        };
        Some((Err(item), None))
    });
    (tx, axum::body::Body::from_stream(stream))
}

/// Writes the first lines, then each token batch as it arrives, until the
/// client's stream ends (the body ends with it), breaks (the body fails), or
/// the route stops wanting the body (it has answered; its answer decides).
async fn feed<S>(
    lines: mpsc::Sender<Frame>,
    first: Vec<Bytes>,
    route: Route,
    mut chunks: S,
) -> Result<(), Status>
where
    S: Stream<Item = Result<SendChunk, Status>> + Unpin + Send,
{
    for line in first {
        if lines.send(Frame::Lines(line)).await.is_err() {
            return Ok(());
        }
    }
    loop {
        let (cut, status) = match chunks.next().await.transpose() {
            Ok(None) => {
                let _ = lines.send(Frame::End).await;
                return Ok(());
            }
            Ok(Some(SendChunk {
                part: Some(Part::Tokens(batch)),
            })) => {
                if !batch.tokens.is_empty()
                    && lines
                        .send(Frame::Lines(convert::ndjson_tokens(route, &batch.tokens)))
                        .await
                        .is_err()
                {
                    return Ok(());
                }
                continue;
            }
            Ok(Some(SendChunk { part: None })) => continue,
            Ok(Some(SendChunk {
                part: Some(Part::Header(_)),
            })) => (
                "a second header".to_owned(),
                Status::invalid_argument(
                    "SendChunk: only the first chunk may be a header; what came before it was kept and the job is truncated",
                ),
            ),
            Err(status) => (status.message().to_owned(), status),
        };
        let _ = lines.send(Frame::Cut(StreamCut(cut))).await;
        return Err(status);
    }
}

#[cfg(test)]
mod tests;
