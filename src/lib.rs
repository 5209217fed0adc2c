//! pushgate: an HTTP push gateway for APNs and FCM.
//!
//! A request becomes a [`job::Job`] (one shared message, many tokens) in
//! [`api`], waits in [`queue`], is sent per token by an [`apns`] or [`fcm`]
//! worker, and ends as one [`job::Outcome`] recorded by [`report::Recorder`].
//! [`gateway`] wires them together; [`mock`] holds the test upstreams.
//!
//! Beside that path: [`config`] (TOML and `PUSHGATE_*` → validated `Config`),
//! [`schedule`] (delayed sends), [`webhook`] (outcome events pushed to the
//! operator), [`queue::cluster`] (the Redis backend several gateways share),
//! [`retry`] (backoff, platform-agnostic), [`metrics`] and [`tls`].

pub mod api;
pub mod apns;
pub mod config;
pub mod demo;
pub mod fcm;
pub mod gateway;
pub mod http2;
pub mod job;
pub mod message;
pub mod metrics;
pub mod mock;
pub mod queue;
pub mod report;
pub mod retry;
pub mod schedule;
pub mod tls;
pub mod webhook;
