//! Outcome webhook: every terminal outcome becomes an event, batched and
//! POSTed to `[webhook] url` with an HMAC-SHA256 signature, retried with
//! backoff. The buffer is bounded: when the receiver cannot keep up, events
//! are dropped and counted (`pushgate_webhook_dropped_total`), never queued
//! without limit.
//!
//! The body is `{"events":[{"job","platform","token","outcome","reason","canonical"}]}`.
//! The header `X-Pushgate-Signature: t=<unix seconds>,v1=<hex>` carries
//! `HMAC-SHA256(secret, "<t>.<body>")`, so a receiver can check both origin and
//! freshness.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::IntCounterVec;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::retry::Backoff;
use crate::settings::Secret;

/// One outcome, as sent.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    /// Job id.
    pub job: String,
    /// `apns`, `fcm` or `gcm`.
    pub platform: &'static str,
    /// The token as the sender gave it.
    pub token: String,
    /// `success`, `unregistered`, `canonical`, `failed`, `expired`.
    pub outcome: &'static str,
    /// The upstream's reason, for failures and expiries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The replacement token, for `canonical`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canonical: Option<String>,
    /// The sender's correlation id (gorush `notif_id`), if one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notif_id: Option<String>,
    /// APNs' `apns-unique-id` for this delivery (sandbox pushes, broadcasts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apns_unique_id: Option<String>,
}

/// Validated `[webhook]`.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Where batches go.
    pub url: String,
    /// HMAC key.
    pub secret: Secret,
    /// Events per POST.
    pub batch_size: usize,
    /// Longest an event waits for its batch to fill.
    pub flush: Duration,
    /// Events held at most; more are dropped and counted.
    pub max_buffer: usize,
    /// POST attempts per batch before it is dropped.
    pub max_attempts: u32,
    /// Roots trusted beside the public ones.
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// Where the recorder drops events: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct WebhookSink {
    events: mpsc::Sender<Event>,
    dropped: IntCounterVec,
}

impl WebhookSink {
    /// Offers an event; a full buffer drops it (counted).
    pub fn offer(&self, event: Event) {
        if self.events.try_send(event).is_err() {
            self.dropped.with_label_values(&["buffer_full"]).inc();
        }
    }
}

/// Errors starting the webhook.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// TLS configuration refused.
    #[error("webhook TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// HTTP client could not be built.
    #[error("webhook HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Signs `body` sent at `timestamp` (unix seconds): the header value.
pub fn signature(secret: &Secret, timestamp: u64, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.expose().as_bytes());
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!(
        "t={timestamp},v1={}",
        crate::job::hex_encode(ctx.sign().as_ref())
    )
}

/// Starts the sender task; returns the sink the recorder writes to.
pub fn start(
    config: WebhookConfig,
    metrics: &crate::metrics::Metrics,
) -> Result<WebhookSink, WebhookError> {
    let tls = crate::tls::client_config(&config.extra_roots, None, &[b"h2", b"http/1.1"])?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .timeout(Duration::from_secs(30))
        .build()?;
    let (tx, rx) = mpsc::channel(config.max_buffer.max(1));
    let dropped = metrics.webhook_dropped.clone();
    let sent = metrics.webhook_sent.clone();
    tokio::spawn(run(config, client, rx, dropped.clone(), sent));
    Ok(WebhookSink {
        events: tx,
        dropped,
    })
}

async fn run(
    config: WebhookConfig,
    client: reqwest::Client,
    mut rx: mpsc::Receiver<Event>,
    dropped: IntCounterVec,
    sent: prometheus::IntCounter,
) {
    let backoff = Backoff {
        base: Duration::from_millis(500),
        cap: Duration::from_secs(30),
    };
    let mut batch = Vec::with_capacity(config.batch_size);
    loop {
        // Wait for the first event, then give the batch `flush` to fill.
        match rx.recv().await {
            Some(event) => batch.push(event),
            None => return,
        }
        let deadline = tokio::time::Instant::now() + config.flush;
        while batch.len() < config.batch_size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(event)) => batch.push(event),
                Ok(None) | Err(_) => break,
            }
        }
        let body = match serde_json::to_vec(&serde_json::json!({ "events": &batch })) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize webhook batch");
                batch.clear();
                continue;
            }
        };
        let mut delivered = false;
        for attempt in 1..=config.max_attempts {
            let timestamp = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let result = client
                .post(&config.url)
                .header("content-type", "application/json")
                .header(
                    "x-pushgate-signature",
                    signature(&config.secret, timestamp, &body),
                )
                .body(body.clone())
                .send()
                .await;
            match result {
                Ok(r) if r.status().is_success() => {
                    delivered = true;
                    break;
                }
                Ok(r) => tracing::warn!(
                    status = r.status().as_u16(),
                    attempt,
                    "webhook receiver refused a batch"
                ),
                Err(e) => tracing::warn!(error = %e, attempt, "webhook POST failed"),
            }
            if attempt < config.max_attempts {
                tokio::time::sleep(backoff.reconnect_delay(attempt)).await;
            }
        }
        if delivered {
            sent.inc_by(batch.len() as u64);
        } else {
            dropped
                .with_label_values(&["receiver_failed"])
                .inc_by(batch.len() as u64);
            tracing::error!(events = batch.len(), "webhook batch dropped after retries");
        }
        batch.clear();
    }
}

impl crate::outcome::Sink for WebhookSink {
    fn finished(&self, f: &crate::outcome::Finished<'_>) {
        use crate::job::Outcome;
        let kind = f.outcome.kind();
        let reason = match f.outcome {
            Outcome::Failed { reason, .. } | Outcome::Expired { reason } => {
                Some(reason.to_string())
            }
            _ => None,
        };
        self.offer(Event {
            job: f.progress.id.to_string(),
            platform: f.progress.platform.as_str(),
            token: f.token.to_owned(),
            outcome: kind.as_str(),
            reason,
            canonical: match f.outcome {
                Outcome::Canonical { new_token } => Some(new_token.clone()),
                _ => None,
            },
            notif_id: f.progress.notif_id.as_deref().map(str::to_owned),
            apns_unique_id: f.unique_id.map(str::to_owned),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_of_timestamp_dot_body() {
        let secret = Secret::new("s3cret");
        let sig = signature(&secret, 1_700_000_000, b"{}");
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"s3cret");
        let hex = sig.strip_prefix("t=1700000000,v1=").expect("format");
        let tag: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        assert!(aws_lc_rs::hmac::verify(&key, b"1700000000.{}", &tag).is_ok());
        assert_ne!(sig, signature(&secret, 1_700_000_001, b"{}"));
    }
}
