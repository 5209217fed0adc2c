//! Reading a send body: JSON or the GoCM form, within `server.max_body_bytes`,
//! as the platform-neutral [`SendBody`] every platform reads.

use axum::extract::{FromRequest, Request};
use axum::http::header;

use crate::api::{ApiError, AppState};
use crate::platform::SendBody;

/// A request body, read within `server.max_body_bytes`.
pub struct Body(pub SendBody);

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
            _ => return Err(ApiError::unsupported_media_type()),
        };
        let bytes = crate::api::extract::read_body(req, state.max_body_bytes).await?;
        Ok(Body(if is_form {
            SendBody::Form(bytes)
        } else {
            SendBody::Json(bytes)
        }))
    }
}
