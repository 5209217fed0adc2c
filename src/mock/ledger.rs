//! What a mock upstream saw, for tests and benchmarks to read.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Per-token attempt and delivery counts plus connection-level counters.
///
/// "Delivered" means the mock answered success for that token (APNs 200, FCM
/// message name, legacy `message_id`).
#[derive(Debug, Default)]
pub struct Ledger {
    tokens: Mutex<HashMap<String, TokenRecord>>,
    seen: Mutex<HashMap<String, SeenRequest>>,
    credentials: Mutex<HashSet<String>>,
    /// Requests received (APNs streams, FCM v1 messages, legacy batches).
    pub requests: AtomicU64,
    /// TLS connections accepted.
    pub connections: AtomicU64,
    /// Highest number of streams seen open at once on one connection.
    pub peak_streams: AtomicU64,
    /// Streams that arrived while the connection was already at its advertised limit.
    pub stream_limit_violations: AtomicU64,
    /// GOAWAY frames sent by the `goaway_after` fault.
    pub goaways: AtomicU64,
    /// Connections closed abruptly by the `drop_after` fault.
    pub drops: AtomicU64,
    /// Connections stalled by the `stall_after` fault (mock APNs).
    pub stalls: AtomicU64,
    /// OAuth access tokens granted (FCM `/token`).
    pub grants: AtomicU64,
    /// Largest legacy batch seen (registration ids in one request).
    pub largest_batch: AtomicU64,
}

/// One token's history at the mock.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TokenRecord {
    /// Requests that named this token.
    pub attempts: u32,
    /// Of those, the ones answered with success.
    pub deliveries: u32,
}

/// The last request the mock received for one token: what tests read to
/// check that a field reached the upstream, and where (header or body).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// Request headers (names lower-case), the `authorization` header left out.
    pub headers: Vec<(String, String)>,
    /// The request body as received (shared by the tokens of one batch).
    pub body: std::sync::Arc<str>,
}

impl SeenRequest {
    /// The value of header `name`, when sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

/// Distinct tokens whose last request is kept; beyond that only counts are
/// kept, so a benchmark of a million tokens costs no memory here.
const MAX_SEEN: usize = 4096;

impl Ledger {
    /// Keeps `headers` and `body` as the last request seen for `token` (only
    /// for the first [`MAX_SEEN`] distinct tokens).
    pub fn record_request<'h>(
        &self,
        token: &str,
        headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
        body: &[u8],
    ) {
        self.record_batch([token], headers, body);
    }

    /// [`Ledger::record_request`] for every token of one batch request (legacy
    /// multicast): the headers and the body are converted once, not once per
    /// token, so replaying one 1,000-id body (h2load) costs the mock no more
    /// than the gateway's distinct batches.
    pub fn record_batch<'t, 'h>(
        &self,
        tokens: impl IntoIterator<Item = &'t str>,
        headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
        body: &[u8],
    ) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut request: Option<SeenRequest> = None;
        let mut headers = Some(headers);
        for token in tokens {
            if seen.len() >= MAX_SEEN && !seen.contains_key(token) {
                continue;
            }
            let request = request.get_or_insert_with(|| SeenRequest {
                headers: headers
                    .take()
                    .into_iter()
                    .flatten()
                    .filter(|(name, _)| *name != "authorization")
                    .map(|(name, value)| {
                        (name.to_owned(), String::from_utf8_lossy(value).into_owned())
                    })
                    .collect(),
                body: String::from_utf8_lossy(body).into(),
            });
            match seen.get_mut(token) {
                Some(kept) => kept.clone_from(request),
                None => {
                    seen.insert(token.to_owned(), request.clone());
                }
            }
        }
    }

    /// The last request seen for `token`, when kept.
    pub fn request(&self, token: &str) -> Option<SeenRequest> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    /// Counts an attempt for `token` and returns its 1-based attempt number.
    pub fn record_attempt(&self, token: &str) -> u32 {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        // Look up before inserting: a token seen before (every retry, every benchmark
        // request) then costs no allocation.
        if let Some(record) = tokens.get_mut(token) {
            record.attempts += 1;
            return record.attempts;
        }
        tokens.insert(
            token.to_owned(),
            TokenRecord {
                attempts: 1,
                deliveries: 0,
            },
        );
        1
    }

    /// Counts a successful delivery for `token`.
    pub fn record_delivery(&self, token: &str) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        match tokens.get_mut(token) {
            Some(record) => record.deliveries += 1,
            None => {
                tokens.insert(
                    token.to_owned(),
                    TokenRecord {
                        attempts: 0,
                        deliveries: 1,
                    },
                );
            }
        }
    }

    /// Remembers a credential (JWT, access token) seen on a request. The set's size
    /// shows whether the client reuses its credentials.
    pub fn record_credential(&self, credential: &str) {
        let mut seen = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
        if !seen.contains(credential) {
            seen.insert(credential.to_owned());
        }
    }

    /// Distinct credentials seen so far.
    pub fn distinct_credentials(&self) -> usize {
        self.credentials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// One token's record (zeroes when never seen).
    pub fn token(&self, token: &str) -> TokenRecord {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .copied()
            .unwrap_or_default()
    }

    /// A copy of every token's record.
    pub fn tokens(&self) -> HashMap<String, TokenRecord> {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Raises `peak_streams` to `open` if higher.
    pub fn observe_open_streams(&self, open: u64) {
        self.peak_streams.fetch_max(open, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
