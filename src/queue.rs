//! The queue: where accepted work waits, and the backends that keep it.
//!
//! - [`dispatch`]: one upstream's in-process FIFO of token ranges, with retries.
//! - [`admission`]: the gateway-wide bound on unfinished tokens.
//! - [`redis`]: the `redis` backend's store (a Redis stream several gateways share).
//! - [`disk`]: the `disk` backend's store (an embedded redb file).
//!
//! Nothing here knows a platform, the reports or the API: stored jobs carry
//! their message as the platform's own bytes, and the platforms registered
//! in [`crate::platform`] rebuild them. [`crate::backend`] puts these parts
//! behind the one seam the API and the gateway use.

pub mod admission;
pub mod dispatch;

pub use admission::{Admission, QueueFull};
pub use dispatch::{DispatchQueue, Work};
