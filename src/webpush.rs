//! Web Push (RFC 8030 push, RFC 8291 message encryption, RFC 8292 VAPID):
//! browsers as the third platform.
//!
//! [`ece`] encrypts one message per subscription (`aes128gcm`), [`vapid`]
//! signs the per-origin JWT, [`origin`] keeps the gateway from being steered
//! into the operator's own network, and [`response`] is the outcome table.

pub mod client;
pub mod ece;
pub mod origin;
pub mod response;
pub mod vapid;
