//! Where accepted work is kept.
//!
//! - [`disk`]: the `disk` backend (an embedded redb file in `queue.data_dir`).
//! - [`redis`]: the `redis` backend (a Redis stream several gateways share).
pub mod disk;
pub mod redis;
