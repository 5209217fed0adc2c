//! Reading a request body line by line (NDJSON) without holding it: only
//! the line being read is buffered, and a line longer than [`MAX_LINE`] is
//! skipped to its end, its first bytes kept to show what it was.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;

/// Longest line, without its line break.
pub const MAX_LINE: usize = 64 * 1024;

/// Bytes of an over-long line kept to show it.
const SHOWN: usize = 64;

/// One line of the body.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line within [`MAX_LINE`], without its `\n` (or `\r\n`).
    Text(Bytes),
    /// A line over [`MAX_LINE`]: its first bytes.
    TooLong(Bytes),
}

/// The lines of a body, read as they arrive.
pub struct Lines {
    body: axum::body::Body,
    /// Bytes read and not yet split off as a line.
    buffer: BytesMut,
    /// How far `buffer` has been searched for a line break.
    searched: usize,
    /// Inside an over-long line: its first bytes, and the rest is dropped
    /// up to its line break.
    skipping: Option<Bytes>,
    /// The body has ended.
    ended: bool,
    /// Line breaks seen (the lines read so far, blank ones included).
    read: u64,
}

impl Lines {
    /// The lines of `body`.
    pub fn new(body: axum::body::Body) -> Self {
        Self {
            body,
            buffer: BytesMut::new(),
            searched: 0,
            skipping: None,
            ended: false,
            read: 0,
        }
    }

    /// True when a line is complete in what was already read: the next
    /// [`Lines::next`] returns without waiting on the client.
    pub fn has_line(&self) -> bool {
        self.buffer[self.searched..].contains(&b'\n')
    }

    /// The next line; `None` at the body's end (a last line without a line
    /// break counts). A body error (the client cut the upload, or went
    /// silent past `server.body_timeout_s`) ends the lines.
    pub async fn next(&mut self) -> Result<Option<Line>, axum::Error> {
        loop {
            if let Some(at) = self.buffer[self.searched..]
                .iter()
                .position(|&b| b == b'\n')
            {
                let mut line = self.buffer.split_to(self.searched + at + 1);
                self.searched = 0;
                self.read += 1;
                line.truncate(line.len() - 1);
                if line.last() == Some(&b'\r') {
                    line.truncate(line.len() - 1);
                }
                return Ok(Some(match self.skipping.take() {
                    Some(shown) => Line::TooLong(shown),
                    None if line.len() > MAX_LINE => Line::TooLong(shown(&line)),
                    None => Line::Text(line.freeze()),
                }));
            }
            self.searched = self.buffer.len();
            if self.buffer.len() > MAX_LINE {
                if self.skipping.is_none() {
                    self.skipping = Some(shown(&self.buffer));
                }
                self.buffer.clear();
                self.searched = 0;
            }
            if self.ended {
                if self.buffer.is_empty() && self.skipping.is_none() {
                    return Ok(None);
                }
                // The last line, without a line break.
                self.buffer.extend_from_slice(b"\n");
                continue;
            }
            match self.body.frame().await {
                None => self.ended = true,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(e),
            }
        }
    }

    /// Lines read so far.
    pub fn read(&self) -> u64 {
        self.read
    }
}

fn shown(line: &[u8]) -> Bytes {
    Bytes::copy_from_slice(&line[..line.len().min(SHOWN)])
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(chunks: Vec<&'static [u8]>) -> Vec<Line> {
        let stream = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))),
        );
        let mut lines = Lines::new(axum::body::Body::from_stream(stream));
        let mut out = Vec::new();
        while let Some(line) = lines.next().await.expect("no body error") {
            out.push(line);
        }
        out
    }

    fn text(s: &'static str) -> Line {
        Line::Text(Bytes::from_static(s.as_bytes()))
    }

    #[tokio::test]
    async fn lines_split_across_chunks_and_crlf_and_a_last_line_without_a_break() {
        let got = all(vec![b"{\"a\"", b":1}\r\n\"t1\"\n", b"\n\"t", b"2\""]).await;
        assert_eq!(
            got,
            vec![text("{\"a\":1}"), text("\"t1\""), text(""), text("\"t2\"")]
        );
    }

    #[tokio::test]
    async fn an_over_long_line_is_skipped_to_its_end_and_the_next_one_is_read() {
        let long: &'static [u8] = Box::leak(vec![b'x'; MAX_LINE + 10].into_boxed_slice());
        let got = all(vec![b"\"a\"\n", &long[..1000], &long[1000..], b"\n\"b\"\n"]).await;
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], text("\"a\""));
        assert_eq!(got[1], Line::TooLong(Bytes::from(vec![b'x'; SHOWN])));
        assert_eq!(got[2], text("\"b\""));
        // Exactly the limit is a line; one more byte is not.
        let edge: &'static [u8] = Box::leak(vec![b'y'; MAX_LINE].into_boxed_slice());
        let got = all(vec![edge, b"\n"]).await;
        assert!(matches!(&got[..], [Line::Text(t)] if t.len() == MAX_LINE));
        let over: &'static [u8] = Box::leak(vec![b'y'; MAX_LINE + 1].into_boxed_slice());
        let got = all(vec![over]).await;
        assert!(matches!(&got[..], [Line::TooLong(_)]));
    }
}
