//! HTTP to a gateway (remote, or the in-process one) for the terminal commands.

use serde_json::Value;

use super::{UsageError, usage};

/// A gateway's base URL and key.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
    idempotency_key: Option<String>,
}

impl Client {
    /// Talks to `base` (e.g. `http://127.0.0.1:8080`) with `key` as the bearer key.
    pub fn new(base: &str, key: Option<String>) -> Result<Self, UsageError> {
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| usage(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
            idempotency_key: None,
        })
    }

    /// The same, sending `Idempotency-Key: key` with every request: a
    /// retried send is answered with the first answer, never sent twice.
    pub fn with_idempotency_key(mut self, key: Option<String>) -> Self {
        self.idempotency_key = key;
        self
    }

    fn auth(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let r = match &self.idempotency_key {
            Some(k) => r.header("idempotency-key", k),
            None => r,
        };
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    /// POSTs JSON; the status and the JSON answer (`Null` when not JSON).
    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value), UsageError> {
        let r = self
            .auth(self.http.post(format!("{}{path}", self.base)).json(body))
            .send()
            .await
            .map_err(|e| usage(format!("cannot reach the gateway at {}: {e}", self.base)))?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// POSTs a streamed send (NDJSON): `header` on line 1, then `lines`
    /// (each one line, its `\n` included) as the gateway reads them; the
    /// status and the JSON answer.
    pub async fn post_lines(
        &self,
        path: &str,
        header: &Value,
        lines: Vec<bytes::Bytes>,
    ) -> Result<(u16, Value), UsageError> {
        let mut first = header.to_string().into_bytes();
        first.push(b'\n');
        let parts = std::iter::once(bytes::Bytes::from(first)).chain(lines);
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(
            parts.map(Ok::<_, std::io::Error>),
        ));
        let r = self
            .auth(self.http.post(format!("{}{path}", self.base)))
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .body(body)
            .send()
            .await
            .map_err(|e| usage(format!("cannot reach the gateway at {}: {e}", self.base)))?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// GETs JSON; fails unless 200.
    pub async fn get(&self, path: &str) -> Result<Value, UsageError> {
        let r = self
            .auth(self.http.get(format!("{}{path}", self.base)))
            .send()
            .await
            .map_err(|e| usage(format!("cannot reach the gateway at {}: {e}", self.base)))?;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(usage(format!(
                "GET {path}: {status}: {}",
                body["message"].as_str().unwrap_or("no message")
            )));
        }
        Ok(body)
    }
}
