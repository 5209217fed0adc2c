//! Counts the RST_STREAM(REFUSED_STREAM) frames the server writes.
//!
//! h2 refuses a stream beyond SETTINGS_MAX_CONCURRENT_STREAMS on its own, before the
//! request ever reaches the mock, so the only place a client exceeding the limit can
//! be seen is the server's outgoing frames. The tap reads just the 9-byte frame
//! headers (and the 4-byte code of RST_STREAM) of the plaintext h2 writes into TLS,
//! skipping payloads, so it costs next to nothing per write.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const FRAME_HEADER: usize = 9;
const RST_STREAM: u8 = 0x3;
const REFUSED_STREAM: u32 = 0x7;

/// Wraps the server side of a connection and counts refused streams into `counter`.
pub(super) struct RefusalTap<'a, T> {
    io: T,
    scan: FrameScan,
    counter: &'a AtomicU64,
}

impl<'a, T> RefusalTap<'a, T> {
    pub(super) fn new(io: T, counter: &'a AtomicU64) -> Self {
        Self {
            io,
            scan: FrameScan::default(),
            counter,
        }
    }
}

/// Incremental parser over the outgoing byte stream (a server sends no preface, so
/// the stream starts at a frame header).
#[derive(Default)]
pub(super) struct FrameScan {
    header: [u8; FRAME_HEADER],
    header_len: usize,
    /// Payload bytes of the current frame still to pass.
    remaining: usize,
    /// Whether the current frame is RST_STREAM, whose first 4 payload bytes are read.
    rst: bool,
    code: [u8; 4],
    code_len: usize,
}

impl FrameScan {
    /// Feeds written bytes; returns how many REFUSED_STREAM resets they completed.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut refused = 0;
        while !bytes.is_empty() {
            if self.remaining == 0 {
                let take = (FRAME_HEADER - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + take]
                    .copy_from_slice(&bytes[..take]);
                self.header_len += take;
                bytes = &bytes[take..];
                if self.header_len == FRAME_HEADER {
                    self.header_len = 0;
                    self.remaining = usize::from(self.header[0]) << 16
                        | usize::from(self.header[1]) << 8
                        | usize::from(self.header[2]);
                    self.rst = self.header[3] == RST_STREAM;
                    self.code_len = 0;
                }
                continue;
            }
            let take = self.remaining.min(bytes.len());
            if self.rst && self.code_len < 4 {
                let need = (4 - self.code_len).min(take);
                self.code[self.code_len..self.code_len + need].copy_from_slice(&bytes[..need]);
                self.code_len += need;
                if self.code_len == 4 && u32::from_be_bytes(self.code) == REFUSED_STREAM {
                    refused += 1;
                }
            }
            self.remaining -= take;
            bytes = &bytes[take..];
        }
        refused
    }
}

impl<T> RefusalTap<'_, T> {
    fn count(&mut self, written: &[u8]) {
        let refused = self.scan.feed(written);
        if refused > 0 {
            self.counter.fetch_add(refused, Ordering::Relaxed);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for RefusalTap<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for RefusalTap<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        this.count(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for buf in bufs {
            if left == 0 {
                break;
            }
            let take = left.min(buf.len());
            this.count(&buf[..take]);
            left -= take;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, 0];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn counts_refused_resets_split_across_writes_and_ignores_others() {
        let mut bytes = frame(0x4, 0, &[0; 6]); // SETTINGS
        bytes.extend(frame(0x0, 1, &[7, 0, 0, 0, 7])); // DATA that looks like a code
        bytes.extend(frame(RST_STREAM, 3, &0u32.to_be_bytes())); // NO_ERROR
        bytes.extend(frame(RST_STREAM, 5, &REFUSED_STREAM.to_be_bytes()));
        bytes.extend(frame(RST_STREAM, 7, &REFUSED_STREAM.to_be_bytes()));
        for split in 1..bytes.len() {
            let mut scan = FrameScan::default();
            let mut refused = 0;
            for chunk in bytes.chunks(split) {
                refused += scan.feed(chunk);
            }
            assert_eq!(refused, 2, "chunk size {split}");
        }
    }
}
