//! Streamed intake (`Content-Type: application/x-ndjson`): line 1 is the
//! send body without tokens, then one token a line (Web Push: one
//! subscription object a line). Tokens are taken in as they arrive and kept
//! in parts, so delivery starts at once and a stream far larger than the
//! queue is accepted whole: while the queue is full the reader stops
//! reading and TCP paces the sender.
//!
//! A token line is a JSON string (`"<token>"`), a JSON object (a Web Push
//! subscription), or the bare token (`psql -At` output); blank lines are
//! skipped. The job opens with its first valid token: a stream with none
//! queues nothing and answers 400, like a JSON body. A stream that breaks
//! (cut, silent past `server.body_timeout_s`, the gateway draining) keeps
//! every token taken before the break; its job shows `"truncated": true`.

use std::borrow::Cow;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::intake::{Taker, accepted_body, admit_error};
use super::lines::{Line, Lines, MAX_LINE};
use crate::api::extract::body_error;
use crate::api::idempotency::{Guard, KeptWithJob};
use crate::api::wait::Ask;
use crate::api::{ApiError, AppState};
use crate::backend::Stream;
use crate::floor::now_ms;
use crate::job::{Family, JobId, Platform};
use crate::platform::{Front, SendBody, TokenRefused};
use crate::store::keys::FLIGHT_LEASE;
use crate::store::{KeepIf, NewJob};

use super::intake::Rejections;

/// Tokens kept in one part (one store write): large enough that a part's
/// write costs little per token, small enough to start delivery at once.
const PART: usize = 10_000;

/// A part waits this long for more lines; then it is kept as it is, so a
/// slow sender's tokens go out without waiting for a full part.
const PART_WAIT: Duration = Duration::from_millis(50);

/// `POST /<family>/send` with an NDJSON body.
pub async fn send(
    state: &AppState,
    family: Family,
    front: &dyn Front,
    body: axum::body::Body,
    ask: &Ask,
) -> Result<Response, ApiError> {
    if ask.wait.is_some() {
        return Err(ApiError::bad_request(
            "wait_with_stream",
            "wait does not apply to a streamed send (its tokens are not known before its end): send JSON to wait for the outcomes",
        ));
    }
    let mut lines = Lines::new(body);
    let header = match lines.next().await {
        Ok(Some(Line::Text(line))) if !line.iter().all(u8::is_ascii_whitespace) => line,
        Ok(Some(Line::Text(_)) | None) => {
            return Err(ApiError::bad_request(
                "bad_header_line",
                "an NDJSON send starts with the send body without tokens on line 1, then one token a line",
            ));
        }
        Ok(Some(Line::TooLong(_))) => {
            return Err(ApiError::bad_request(
                "line_too_long",
                format!("line 1 is over {MAX_LINE} bytes; nothing was queued"),
            ));
        }
        Err(e) => return Err(body_error(&e)),
    };
    let header = SendBody::Header(header);
    let request = front.read(&header)?;
    if request.when.delay.is_some() {
        return Err(ApiError::bad_request(
            "stream_with_schedule",
            "send_at and delay_seconds do not apply to a streamed send: schedule a JSON send, or stream when it is due",
        ));
    }
    let platform = request.platform;
    let mut intake = StreamIntake {
        state,
        platform,
        taker: Taker::new(&request.keep, PART, request.bytes_each),
        rejected: Rejections::default(),
        job: Some(NewJob {
            platform,
            app: request.app.clone(),
            fields: request.fields.clone(),
            message: None,
            tokens: Default::default(),
            expires_at: request.expires_at,
            delay: None,
            notif_id: request.notif_id.clone(),
        }),
        stream: None,
        guard: ask.guard.clone(),
        part: PART
            .min(usize::try_from(state.backend.capacity() / 2).unwrap_or(PART))
            .max(1),
    };
    for token in &request.tokens {
        intake.take(token);
    }
    let end = loop {
        let next = match tokio::time::timeout(PART_WAIT, lines.next()).await {
            Ok(next) => next,
            Err(_) => {
                intake.keep_part().await?;
                lines.next().await
            }
        };
        match next {
            Ok(Some(Line::Text(line))) => intake.take_line(&line),
            Ok(Some(Line::TooLong(shown))) => {
                let shown = format!("{}…", String::from_utf8_lossy(&shown));
                intake.rejected.push(Cow::Owned(shown), "line_too_long");
            }
            Ok(None) => break End::Whole,
            Err(e) => break End::Cut(e),
        }
        if intake.taker.held() >= intake.part {
            intake.keep_part().await?;
        }
        if intake.stream.is_some() && state.is_shutting_down() {
            break End::Draining;
        }
    };
    intake.finish(end, family, lines.read()).await
}

/// How a stream ended.
enum End {
    /// After its last line.
    Whole,
    /// The body broke (cut, or silent too long).
    Cut(axum::Error),
    /// The gateway began to drain.
    Draining,
}

/// One stream's intake: the tokens taken in, the part being filled, and the
/// job once it is open.
struct StreamIntake<'s, 'k> {
    state: &'s AppState,
    platform: Platform,
    taker: Taker<'k>,
    rejected: Rejections<'static>,
    /// The job to open with the first part (no tokens: they come in parts).
    job: Option<NewJob>,
    /// The open job, from its first kept part on.
    stream: Option<Stream>,
    /// The request's reserved `Idempotency-Key`: kept with the job.
    guard: Option<Guard>,
    /// Tokens a part holds before it is kept.
    part: usize,
}

impl StreamIntake<'_, '_> {
    /// Takes one token line.
    fn take_line(&mut self, line: &[u8]) {
        let Ok(text) = std::str::from_utf8(line) else {
            let shown = String::from_utf8_lossy(&line[..line.len().min(64)]).into_owned();
            self.rejected.push(Cow::Owned(shown), "not_utf8");
            return;
        };
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        match token_of(text) {
            Ok(token) => self.take(&token),
            Err(_) => self.rejected.push(Cow::Owned(text.to_owned()), "not_json"),
        }
    }

    /// Takes one raw token.
    fn take(&mut self, token: &str) {
        if let Err(refused) = self.taker.take(token) {
            self.refuse(refused, token);
        }
    }

    fn refuse(&mut self, refused: TokenRefused, token: &str) {
        self.rejected
            .refuse(refused, || Cow::Owned(token.to_owned()));
    }

    /// Keeps the tokens held as the job's next part, opening the job with
    /// its first. Waits while the queue is full.
    async fn keep_part(&mut self) -> Result<(), ApiError> {
        if self.taker.held() == 0 {
            return Ok(());
        }
        let part = self.taker.take_part();
        if let Some(job) = self.job.take() {
            let id = JobId::new();
            // Kept with the job: until the stream's end a retry gets 409;
            // if this gateway dies first, the answer as it opened.
            let claim = self.guard.as_ref().map(|guard| {
                let opening = json!({"job": id.to_string(), "accepted": 0, "duplicates": 0, "truncated": true});
                let mut claim = guard.claim(202, &opening, id);
                claim.kept.lease_until_ms =
                    Some(now_ms().saturating_add(FLIGHT_LEASE.as_millis() as u64));
                claim
            });
            let opened = self.state.backend.open_stream(id, job, claim.as_ref());
            let opened = opened.await.map_err(admit_error)?;
            tracing::info!(job = %opened.id(), platform = %self.platform, "streamed job opened");
            self.stream = Some(opened);
        }
        let Some(stream) = &mut self.stream else {
            return Ok(());
        };
        let Err(e) = stream.append(part).await else {
            return Ok(());
        };
        let (id, total) = (stream.id(), stream.total());
        tracing::warn!(job = %id, error = %e, "a streamed job's part could not be kept; the job ends truncated");
        let mut fields = self.fields(self.state, total, Some(id.to_string()));
        fields["truncated"] = json!(true);
        if let Some(stream) = self.stream.take() {
            let _ = stream.close(true).await;
        }
        Err(admit_error(e).with(fields))
    }

    /// Keeps the last part, closes the job and answers.
    async fn finish(mut self, end: End, family: Family, lines: u64) -> Result<Response, ApiError> {
        self.keep_part().await?;
        let truncated = !matches!(end, End::Whole);
        let Some(stream) = self.stream.take() else {
            return Err(match end {
                End::Cut(e) => body_error(&e),
                _ => ApiError::bad_request(
                    "no_valid_tokens",
                    "none of the tokens is valid; nothing was queued",
                ),
            }
            .with(self.rejected.fields(family.info().token_key)));
        };
        let (id, total) = (stream.id(), stream.total());
        if let Err(e) = stream.close(truncated).await {
            tracing::warn!(job = %id, error = %e.detail(), "a streamed job's end could not be kept; a restart shows it truncated");
        }
        tracing::info!(job = %id, platform = %self.platform, tokens = total, rejected = self.rejected.count(), lines, truncated, backend = self.state.backend.name(), "streamed job accepted");
        let mut body = self.fields(self.state, total, Some(id.to_string()));
        match end {
            End::Whole => {
                let mut response = (StatusCode::ACCEPTED, Json(&body)).into_response();
                if let Some(guard) = &self.guard {
                    let kept = guard.kept(202, &body, Some(id));
                    match self
                        .state
                        .backend
                        .keep(&guard.key, &kept, KeepIf::Bound(id))
                        .await
                    {
                        Ok(_) => {
                            response.extensions_mut().insert(KeptWithJob);
                        }
                        Err(e) => {
                            tracing::warn!(job = %id, error = %e.detail(), "a streamed job's answer could not be kept under its Idempotency-Key")
                        }
                    }
                }
                Ok(response)
            }
            End::Cut(e) => {
                // The client is usually gone; a silent one still reads this.
                body["truncated"] = json!(true);
                body["lines_read"] = json!(lines);
                Err(body_error(&e).with(body))
            }
            End::Draining => {
                body["truncated"] = json!(true);
                body["lines_read"] = json!(lines);
                Err(ApiError::unavailable(
                    "shutting_down",
                    "the gateway began to shut down during the stream: the lines read were taken in (see lines_read); send the rest to another instance",
                    5,
                )
                .with(body))
            }
        }
    }

    /// The answer's fields so far.
    fn fields(&self, state: &AppState, accepted: u64, job: Option<String>) -> Value {
        let job = job.or_else(|| self.stream.as_ref().map(|s| s.id().to_string()));
        accepted_body(
            state,
            self.platform,
            job.as_deref().unwrap_or_default(),
            accepted,
            self.taker.duplicates,
            &self.rejected,
        )
    }
}

/// The raw token of a token line: a JSON string's text, a JSON object's own
/// text (a Web Push subscription), or the bare line.
fn token_of(line: &str) -> Result<Cow<'_, str>, serde_json::Error> {
    match line.as_bytes()[0] {
        b'"' => {
            let inner = &line[1..line.len().max(2) - 1];
            if line.len() >= 2 && line.ends_with('"') && !inner.contains(['\\', '"']) {
                Ok(Cow::Borrowed(inner))
            } else {
                serde_json::from_str::<String>(line).map(Cow::Owned)
            }
        }
        b'{' => {
            serde_json::from_str::<&serde_json::value::RawValue>(line).map(|_| Cow::Borrowed(line))
        }
        _ => Ok(Cow::Borrowed(line)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_line_is_a_json_string_an_object_or_the_bare_token() {
        assert_eq!(token_of("\"ab12\"").expect("a token"), "ab12");
        assert_eq!(token_of("\"a\\u0062\"").expect("a token"), "ab");
        assert_eq!(token_of("ab12").expect("a token"), "ab12");
        let sub = r#"{"endpoint":"https://e/x","keys":{}}"#;
        assert_eq!(token_of(sub).expect("a token"), sub);
        assert!(token_of("\"unterminated").is_err());
        assert!(token_of("\"").is_err());
        assert!(token_of("{not json").is_err());
    }
}
