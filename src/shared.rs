//! What the gateways of one cluster share through Redis, beside the queue:
//! the connection settings and helpers ([`link`]), the provider tokens every
//! gateway uses ([`credentials`], the Redis store of
//! [`crate::shared_credential`]) and the FCM project quota ([`quota`], the
//! Redis store of [`crate::pace::shared`]). The `redis` store
//! (the Redis store) connects through [`link`] too. Every connection
//! follows the primary ([`primary`]: a URL, or Sentinel) and, with
//! `queue.redis_min_replicas`, waits for replicas after a write
//! ([`replicas`]).

pub mod credentials;
pub mod link;
pub mod primary;
pub mod quota;
pub mod replicas;
