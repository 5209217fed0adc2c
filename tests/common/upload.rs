//! A raw HTTP/1.1 chunked NDJSON upload, so a test controls every byte of a
//! streamed send: when it is sent, and when the client goes.

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{apns_payload, apns_token};

/// A chunked NDJSON upload to `POST {path}` over one connection.
pub struct Upload {
    socket: TcpStream,
}

impl Upload {
    pub async fn start(base: &str, path: &str) -> Self {
        let addr = base.trim_start_matches("http://");
        let mut socket = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        Self { socket }
    }

    /// Sends `bytes` as one chunk.
    pub async fn send(&mut self, bytes: &[u8]) {
        let mut chunk = format!("{:x}\r\n", bytes.len()).into_bytes();
        chunk.extend_from_slice(bytes);
        chunk.extend_from_slice(b"\r\n");
        self.socket.write_all(&chunk).await.unwrap();
    }

    /// Ends the body and reads the answer.
    pub async fn finish(mut self) -> (u16, Value) {
        self.socket.write_all(b"0\r\n\r\n").await.unwrap();
        self.answer().await
    }

    /// Reads the answer (the connection closes after it).
    pub async fn answer(mut self) -> (u16, Value) {
        let mut raw = Vec::new();
        self.socket.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }
}

/// The header line and token lines of an APNs stream.
pub fn header_line() -> Vec<u8> {
    let mut line = json!({ "payload": apns_payload() })
        .to_string()
        .into_bytes();
    line.push(b'\n');
    line
}

pub fn token_lines(prefix: &str, range: std::ops::Range<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(range.len() * 67);
    for i in range {
        out.push(b'"');
        out.extend_from_slice(apns_token(prefix, i).as_bytes());
        out.extend_from_slice(b"\"\n");
    }
    out
}
