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

impl Ledger {
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
