//! The send routes: read the body (JSON or form), validate every field and
//! token, admit the job through the backend, answer 202. Nothing here waits
//! on an upstream.
//!
//! - [`body`]: reading the body, the form parser, shared field helpers.
//! - [`intake`]: token intake, `send_at`, `app`, and [`intake::submit`], the
//!   one path from a validated request to the 202 for every platform.
//! - [`apns`], [`google`]: one module per platform's fields.

pub mod apns;
pub mod body;
#[doc(hidden)]
pub mod fuzzing;
pub mod google;
pub mod intake;
pub mod webpush;

pub use apns::apns;
pub use body::Body;
pub use google::google;
pub use intake::{MAX_DELAY, When, parse_when};
pub use webpush::webpush;
