//! Validation errors shared by every platform's message type: a bad field is
//! a 400 naming the field, an oversized payload a 413 naming the limit.

pub mod personal;

use std::borrow::Cow;

/// A field of a send request that cannot be used as given (answered 400,
/// naming the field in the message and as `field`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    /// The request field, dotted for a nested one (`android.notification.color`).
    pub field: Cow<'static, str>,
    /// What is wrong with it.
    pub problem: String,
}

/// Builds a [`FieldError`].
pub fn field_error(field: impl Into<Cow<'static, str>>, problem: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// The payload exceeds the upstream's limit (answered 413).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{what} is {size} bytes serialized; {upstream} accepts at most {limit}")]
pub struct PayloadTooLarge {
    /// What was measured (e.g. "payload", "data and notification").
    pub what: &'static str,
    /// Serialized size.
    pub size: usize,
    /// The limit.
    pub limit: usize,
    /// Whose limit it is.
    pub upstream: &'static str,
}

/// Why a message could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// A bad field (400).
    #[error(transparent)]
    Field(#[from] FieldError),
    /// Too large (413).
    #[error(transparent)]
    TooLarge(#[from] PayloadTooLarge),
}
