//! What one request to an upstream produced, whichever client carried it:
//! our own HTTP/2 connections ([`crate::http2::Transport`]) or reqwest's
//! pool ([`post`]). Each platform classifies an [`Attempt`] into a verdict.

use std::time::Duration;

use bytes::Bytes;

/// What one request produced.
pub enum Attempt {
    /// The upstream answered.
    Answer {
        /// HTTP status.
        status: u16,
        /// `Retry-After`, when given.
        retry_after: Option<Duration>,
        /// The body.
        body: Bytes,
    },
    /// Nothing reached the upstream (connect or TLS failure, a refused
    /// stream): resend, and count no attempt.
    NotSent,
    /// The request may or may not have reached the upstream.
    Lost(&'static str),
}

/// Sends `request` through reqwest's pool (HTTP/1.1 upstreams, legacy GCM,
/// HMS) and reads the whole answer.
pub async fn post(client: &reqwest::Client, platform: &str, request: reqwest::Request) -> Attempt {
    let response = match client.execute(request).await {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(platform, error = %e, "request failed");
            // Checked first: a connect timeout is both, and nothing was sent.
            return if e.is_connect() {
                Attempt::NotSent
            } else if e.is_timeout() {
                Attempt::Lost("Timeout")
            } else {
                Attempt::Lost("TransportError")
            };
        }
    };
    let status = response.status().as_u16();
    let retry_after = crate::retry::retry_after(response.headers());
    match response.bytes().await {
        Ok(body) => Attempt::Answer {
            status,
            retry_after,
            body,
        },
        // The status alone could classify, but a cut-off answer is not one
        // to trust (a partial one may name tokens).
        Err(e) if e.is_timeout() => Attempt::Lost("Timeout"),
        Err(_) => Attempt::Lost("TransportError"),
    }
}
