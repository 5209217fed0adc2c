//! Reading a send body: JSON or the GoCM form, within `server.max_body_bytes`,
//! as the platform-neutral [`SendBody`] every platform reads; or NDJSON,
//! left unread for the streamed intake.

use axum::extract::{FromRequest, Request};
use axum::http::header;

use crate::api::{ApiError, AppState};
use crate::platform::SendBody;

/// The streamed intake's media type.
pub const NDJSON: &str = "application/x-ndjson";

/// A send request's body.
pub enum Body {
    /// JSON or form, read whole within `server.max_body_bytes`.
    Whole(SendBody),
    /// NDJSON: read line by line as it arrives, without the body limit.
    Lines(axum::body::Body),
}

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let is_form = match content_type.as_str() {
            "application/json" => false,
            // curl -d sends this by default; GoCM clients rely on it.
            "application/x-www-form-urlencoded" => true,
            NDJSON => return Ok(Body::Lines(req.into_body())),
            _ => return Err(ApiError::unsupported_media_type()),
        };
        let bytes = crate::api::extract::read_body(req, state.max_body_bytes).await?;
        Ok(Body::Whole(if is_form {
            SendBody::Form(bytes)
        } else {
            SendBody::Json(bytes)
        }))
    }
}
