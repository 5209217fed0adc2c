//! The queue: where work waits in this process.
//!
//! - [`dispatch`]: one upstream's in-process FIFO of token ranges, with retries.
//! - [`admission`]: the gateway-wide bound on unfinished tokens.
//!
//! Nothing here knows a platform, the reports or the API; where accepted
//! work is kept (memory, disk, Redis) is [`crate::store`]'s, and
//! [`crate::backend`] puts both behind the one seam the API and the gateway
//! use.

pub mod admission;
pub mod dispatch;

pub use admission::{Admission, QueueFull};
pub use dispatch::{DispatchQueue, Work};
