//! Web Push as the API sees it: `POST /webpush/send` bodies (JSON only), the
//! message checked as a whole (bad fields 400, a payload over one record
//! 413), then each subscription against its app's allow-list (see
//! [`super::message::check_one`]): refused ones are listed with the endpoint
//! and a reason and never queued.

use std::any::Any;
use std::borrow::Cow;
use std::time::SystemTime;

use super::WebPushService;
use super::message::{self, MessageError, SendRequest};
use crate::platform::request::{bad_json, parse_when};
use crate::platform::{Built, Front, Request, RequestError, SendBody, Status, TokenRefused};
use crate::settings::Apps;

/// Every Web Push app, and what the API asks of them.
pub struct WebPushFront {
    apps: Apps<WebPushService>,
}

impl WebPushFront {
    /// The front over `apps`.
    pub fn new(apps: Apps<WebPushService>) -> Self {
        Self { apps }
    }

    /// Every app's service.
    pub fn apps(&self) -> &Apps<WebPushService> {
        &self.apps
    }
}

impl Front for WebPushFront {
    fn compose(
        &self,
        _platform: crate::job::Platform,
        message: &crate::platform::Unified<'_>,
    ) -> Result<Vec<u8>, crate::platform::RequestError> {
        super::compose::compose(message)
    }

    fn read<'a>(&self, body: &'a SendBody) -> Result<Request<'a>, RequestError> {
        let Some(bytes) = body.json() else {
            return Err(RequestError::json_only());
        };
        let req: SendRequest<'_> = serde_json::from_slice(bytes).map_err(bad_json)?;
        if req.subscriptions.is_empty() && !body.is_header() {
            return Err(RequestError::bad(
                "no_tokens",
                "the request has no subscriptions: send \"subscriptions\": [{\"endpoint\": …, \"keys\": {…}}, …]",
            ));
        }
        let (service, app) = self
            .apps
            .pick(req.app.as_deref())
            .map_err(|e| RequestError::bad("unknown_app", e.to_string()))?;
        let msg = message::message(&req).map_err(|e| match e {
            MessageError::TooLarge { .. } => RequestError::too_large(e.to_string()),
            other => {
                let field = other.field().map(|f| serde_json::json!({ "field": f }));
                let error = RequestError::bad(other.code(), other.to_string());
                match field {
                    Some(f) => error.with(f),
                    None => error,
                }
            }
        })?;
        let when = parse_when(req.send_at.as_deref(), req.delay_seconds)?;
        // The TTL counts from when the message is due: one that waits past
        // it (a backlog, retries) expires unsent, and each send carries what
        // is left of it (`message::ttl_left`).
        let life = message::queue_life(msg.ttl) + when.delay.unwrap_or_default();
        let policy = service.policy().clone();
        Ok(Request {
            platform: crate::webpush::PLATFORM,
            app,
            fields: message::encode_fields(&msg),
            message: Some(Built::new(msg)),
            expires_at: Some(SystemTime::now() + life),
            when,
            notif_id: None,
            tokens: req
                .subscriptions
                .iter()
                .map(|s| Cow::Borrowed(s.get()))
                .collect(),
            keep: Box::new(move |raw, out| {
                let stored = message::check_one(raw, &policy).map_err(|r| TokenRefused {
                    shown: Some(r.endpoint),
                    reason: r.reason,
                })?;
                out.extend_from_slice(&stored);
                Ok(())
            }),
            bytes_each: 200,
        })
    }

    /// Each push service's connections live inside its HTTP client: no count.
    fn status(&self) -> Status {
        Status::default()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
