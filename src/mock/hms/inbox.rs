//! What the mock HMS delivered, per token, and its HMS counters: what a
//! gateway test reads to check that the data, the notification and the
//! android block reached Huawei as the user sent them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Distinct tokens whose deliveries are kept; past this only the counters
/// and the ledger's per-token counts grow, so a benchmark of a million
/// tokens costs no memory here.
const MAX_KEPT_TOKENS: usize = 65_536;

/// Send requests whose token count is kept in [`Inbox::batch_sizes`].
const MAX_KEPT_BATCHES: usize = 100_000;

/// `message.notification` as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notification {
    /// `title`, when sent.
    pub title: Option<String>,
    /// `body`, when sent.
    pub body: Option<String>,
    /// `image`, when sent.
    pub image: Option<String>,
}

/// One delivered message, shared by every token of its request.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMessage {
    /// The `requestId` of the answer.
    pub request_id: String,
    /// The app id of the send path.
    pub app_id: String,
    /// `message.data`, the string as sent.
    pub data: Option<String>,
    /// `message.notification`.
    pub notification: Option<Notification>,
    /// `message.android`, as sent.
    pub android: Option<serde_json::Value>,
}

impl ReceivedMessage {
    /// The title the device shows: `android.notification.title` overrides
    /// `notification.title`, as Huawei documents.
    pub fn title(&self) -> Option<&str> {
        self.android_notification_text("title")
            .or_else(|| self.notification.as_ref()?.title.as_deref())
    }

    /// The body the device shows (`android.notification.body` first).
    pub fn body(&self) -> Option<&str> {
        self.android_notification_text("body")
            .or_else(|| self.notification.as_ref()?.body.as_deref())
    }

    fn android_notification_text(&self, key: &str) -> Option<&str> {
        self.android
            .as_ref()?
            .get("notification")?
            .get(key)?
            .as_str()
    }
}

/// Deliveries per token and the HMS counters.
#[derive(Debug, Default)]
pub struct Inbox {
    messages: Mutex<HashMap<String, Vec<Arc<ReceivedMessage>>>>,
    batches: Mutex<Vec<usize>>,
    /// Token deliveries in all (one per token per accepted send).
    pub delivered: AtomicU64,
    /// HTTP 401 answers (80200001 and 80200003).
    pub unauthorized: AtomicU64,
    /// Of those, 80200003 (expired access token).
    pub expired: AtomicU64,
    /// HTTP 503 flow-control answers (injected or the `busy` marker).
    pub throttled: AtomicU64,
    /// HTTP 500 answers (injected, `flaky`, `internal`).
    pub server_errors: AtomicU64,
    /// HTTP 400 answers (a check of the request or the message failed,
    /// `80300007` included).
    pub refused: AtomicU64,
    /// `validate_only` requests that passed every check.
    pub validated: AtomicU64,
}

impl Inbox {
    /// Records that every token in `tokens` received `message`.
    pub(super) fn record<'t>(
        &self,
        tokens: impl IntoIterator<Item = &'t str>,
        message: &Arc<ReceivedMessage>,
    ) {
        let mut messages = self.messages.lock().unwrap_or_else(|e| e.into_inner());
        for token in tokens {
            self.delivered.fetch_add(1, Ordering::Relaxed);
            if let Some(kept) = messages.get_mut(token) {
                kept.push(message.clone());
            } else if messages.len() < MAX_KEPT_TOKENS {
                messages.insert(token.to_owned(), vec![message.clone()]);
            }
        }
    }

    /// Records the token count of one send request that passed the checks.
    pub(super) fn record_batch(&self, size: usize) {
        let mut batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        if batches.len() < MAX_KEPT_BATCHES {
            batches.push(size);
        }
    }

    /// Every message `token` received, oldest first (empty when none, or
    /// when the token came after the first 65,536 distinct ones).
    pub fn messages(&self, token: &str) -> Vec<Arc<ReceivedMessage>> {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
            .unwrap_or_default()
    }

    /// The last message `token` received.
    pub fn last(&self, token: &str) -> Option<Arc<ReceivedMessage>> {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)?
            .last()
            .cloned()
    }

    /// How many times `token` was delivered (as far as kept).
    pub fn deliveries(&self, token: &str) -> usize {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .map_or(0, Vec::len)
    }

    /// Token counts of the send requests that passed the checks, in arrival
    /// order (the first 100,000).
    pub fn batch_sizes(&self) -> Vec<usize> {
        self.batches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(title: Option<&str>, android: Option<serde_json::Value>) -> Arc<ReceivedMessage> {
        Arc::new(ReceivedMessage {
            request_id: "1".to_owned(),
            app_id: "104000000".to_owned(),
            data: Some("{\"k\":\"v\"}".to_owned()),
            notification: Some(Notification {
                title: title.map(str::to_owned),
                body: Some("body".to_owned()),
                image: None,
            }),
            android,
        })
    }

    #[test]
    fn deliveries_are_kept_per_token_in_order() {
        let inbox = Inbox::default();
        let first = message(Some("one"), None);
        let second = message(Some("two"), None);
        inbox.record(["a", "b"], &first);
        inbox.record(["a"], &second);
        assert_eq!(inbox.deliveries("a"), 2);
        assert_eq!(inbox.deliveries("b"), 1);
        assert_eq!(inbox.deliveries("c"), 0);
        assert_eq!(
            inbox.last("a").and_then(|m| m.title().map(str::to_owned)),
            Some("two".to_owned())
        );
        assert_eq!(Inbox::get(&inbox.delivered), 3);
    }

    #[test]
    fn the_android_title_overrides_the_common_one() {
        let m = message(
            Some("common"),
            Some(serde_json::json!({"notification": {"title": "android"}})),
        );
        assert_eq!(m.title(), Some("android"));
        assert_eq!(m.body(), Some("body"));
        assert_eq!(message(Some("common"), None).title(), Some("common"));
    }
}
