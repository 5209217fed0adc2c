//! pushgate: an HTTP push gateway for APNs and FCM.
//!
//! A request becomes a [`backend::NewJob`] (the platform's stored message,
//! many tokens) in [`api`], is admitted by the [`backend::Backend`] seam
//! (memory, disk or redis), handed through the [`delivery`] registry to an
//! [`apns`] or [`fcm`] worker, and every token ends as one [`job::Outcome`]
//! told to the [`outcome::Recorder`] fan-out, whose sinks are the
//! [`report`]s, the [`metrics`], the [`webhook`], the admission bound and
//! the backend's store. [`gateway`] builds it all in one pass; [`mock`]
//! holds the test upstreams.
//!
//! The floor every module may use: [`floor`] (time, the default app, the
//! lock helper), [`job`] (the shared nouns), [`books`] (counters, lists,
//! job status), [`message`] (validation errors). Beside the main path:
//! [`config`], [`schedule`] (delayed sends), [`queue`] (dispatch queues,
//! admission, the stores), [`retry`] (backoff, platform-agnostic),
//! [`shared_credential`] (one provider token for a cluster), [`oauth`] (an
//! access token cached once for FCM and HMS), [`tls`].
//! `tests/layering.rs` checks the import rules.
//! [`terminal`] (`pushgate send`, `check-config --connect`) drives a gateway over HTTP;
//! [`logging`] sets up the log lines of every command.

pub mod abandon;
pub mod api;
pub mod apns;
pub mod backend;
pub mod books;
pub mod config;
pub mod demo;
pub mod fcm;
pub mod floor;
pub mod gateway;
pub mod grpc;
pub mod hms;
pub mod http2;
pub mod job;
pub mod listener;
pub mod logging;
pub mod message;
pub mod metrics;
pub mod mock;
pub mod oauth;
pub mod outcome;
pub mod pace;
pub mod platform;
pub mod platforms;
pub mod queue;
pub mod report;
pub mod retry;
pub mod schedule;
pub mod settings;
pub mod shared;
pub mod shared_credential;
pub mod store;
pub mod terminal;
pub mod tls;
pub mod upstream;
pub mod webhook;
pub mod webpush;
