//! Terminal tools: `pushgate send` (one command that delivers a message to
//! many tokens, with a progress bar and a summary) and
//! `pushgate check-config --connect` (proves each app's credentials
//! upstream).
//!
//! Both talk HTTP to a gateway: a running one (`--server`), or one started
//! in this process on `127.0.0.1:0` with a random API key. So the terminal
//! path is the server path: the same validation, queue, workers and
//! reports, and the same follow-the-job code for both modes.

pub mod client;
pub mod connect;
pub mod local;
pub mod progress;
pub mod send;

/// Exit status of the terminal commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every token delivered (or every app proven).
    Ok = 0,
    /// Some tokens failed, expired or were unregistered (or an app failed).
    SomeFailed = 1,
    /// Bad usage, a refused request, or credentials that do not work.
    Usage = 2,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// A terminal command's error: printed, then the process exits with [`Exit::Usage`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Shorthand for a [`UsageError`].
pub fn usage(message: impl Into<String>) -> UsageError {
    UsageError(message.into())
}
